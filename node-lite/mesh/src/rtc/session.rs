//! The per-circle peer session: who connects to whom, sealed SDP exchange, the seal handshake
//! over the one data channel of each pair, and bounded, back-pressured sending of [`PeerMsg`]s.
//!
//! Sans-IO and clock-free, like the rest of the circle core: the driver (webrtc-rs natively,
//! `RTCPeerConnection` in the browser) feeds signaling events, transport events and `now_ms`,
//! and carries out the [`NetOp`]s that come out of [`Session::poll`].
//!
//! Per member pair:
//! 1. The member with the **lower peer id offers** (no glare): on seeing the other in the room it
//!    picks a random `session`, asks the transport for an offer ([`NetOp::CreateOffer`]), and
//!    sends it sealed ([`SignalMsg::Offer`]) once the transport reports the local description.
//! 2. The other side answers offers only from lower ids, only for sessions it has not answered
//!    before (a relay replaying an old offer cannot tear a working connection down).
//! 3. When the data channel opens each side sends its seal `Hello`; the first record after the
//!    peer's hello completes [`seal::Handshake`]; from then on every message is
//!    `seal::Channel::seal_message(PeerMsg::encode())`, chunked into ≤ 64 KiB records.
//! 4. The first sealed message each way is `PeerMsg::Hello(Capabilities)`; after it the peer
//!    is **up** ([`PeerEvent::Up`]).
//!
//! Failures (transport closed, a record that fails to open, connect timeout) close the
//! connection; the offerer retries after `retry_ms` while the peer is still in the room.
//!
//! Bounds: ≤ `max_peers` peers; per peer ≤ `max_outbox_bytes` of sealed records waiting and
//! ≤ `high_water` bytes handed to the transport and not yet drained (the transport reports its
//! queue with [`Session::on_buffered`]: `bufferedAmount` in the browser); ≤ 32 remembered
//! answered sessions per peer.

use std::collections::{BTreeMap, VecDeque};

use crate::circle::Circle;
use crate::jobs::{Capabilities, PeerMsg};
use crate::seal::{Channel, Handshake, PairSecret};
use shoal_proto::identity::{Keypair, PeerId};

use super::signal_msg::SignalMsg;

/// A transport connection (one `RTCPeerConnection` with its one data channel).
pub type ConnId = u64;

/// Label of the one data channel per pair.
pub const CHANNEL_LABEL: &str = "shoal";

/// Remembered answered sessions per peer (replay window for offers).
const SEEN_SESSIONS: usize = 32;

/// Tunables.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Most peers tracked at once.
    pub max_peers: usize,
    /// Sealed records waiting per peer before `send` refuses.
    pub max_outbox_bytes: usize,
    /// Bytes handed to the transport and still queued there before we hold back.
    pub high_water: usize,
    /// From offer/answer to a completed seal handshake.
    pub connect_timeout_ms: u64,
    /// Offerer's delay before retrying a failed connection.
    pub retry_ms: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_peers: crate::jobs::MAX_MEMBERS,
            max_outbox_bytes: 32 << 20,
            high_water: 4 << 20,
            connect_timeout_ms: 20_000,
            retry_ms: 2_000,
        }
    }
}

/// Errors a caller sees.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionError {
    /// The peer is not connected (or has not said hello yet).
    #[error("peer {0} is not connected")]
    NotConnected(String),
    /// The peer's outbox is full.
    #[error("outbox to {0} is full")]
    OutboxFull(String),
    /// Encoding or sealing failed.
    #[error("cannot send: {0}")]
    Encode(String),
}

/// What the transport must do.
#[derive(Clone, PartialEq, Eq)]
pub enum NetOp {
    /// Send this sealed signaling payload to `to` through the relay room.
    Signal {
        /// Recipient.
        to: PeerId,
        /// Sealed bytes.
        payload: Vec<u8>,
    },
    /// Create connection `conn` to `peer` with a data channel [`CHANNEL_LABEL`], make an offer,
    /// gather ICE, then call [`Session::on_local_description`].
    CreateOffer {
        /// Peer.
        peer: PeerId,
        /// Connection id.
        conn: ConnId,
    },
    /// Create connection `conn` from the remote offer, answer, gather, then call
    /// [`Session::on_local_description`].
    AcceptOffer {
        /// Peer.
        peer: PeerId,
        /// Connection id.
        conn: ConnId,
        /// The offer (`RTCSessionDescriptionInit` JSON).
        sdp: String,
    },
    /// Apply the remote answer to `conn`.
    ApplyAnswer {
        /// Connection id.
        conn: ConnId,
        /// The answer (JSON).
        sdp: String,
    },
    /// Send one record (≤ 64 KiB) on `conn`'s data channel.
    Send {
        /// Connection id.
        conn: ConnId,
        /// The record.
        data: Vec<u8>,
    },
    /// Close and forget `conn`.
    Close {
        /// Connection id.
        conn: ConnId,
    },
}

impl std::fmt::Debug for NetOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetOp::Signal { to, payload } => {
                write!(f, "Signal({}, {}B)", to.short(), payload.len())
            }
            NetOp::CreateOffer { peer, conn } => write!(f, "CreateOffer({}, {conn})", peer.short()),
            NetOp::AcceptOffer { peer, conn, .. } => {
                write!(f, "AcceptOffer({}, {conn})", peer.short())
            }
            NetOp::ApplyAnswer { conn, .. } => write!(f, "ApplyAnswer({conn})"),
            NetOp::Send { conn, data } => write!(f, "Send({conn}, {}B)", data.len()),
            NetOp::Close { conn } => write!(f, "Close({conn})"),
        }
    }
}

/// What the application learns.
#[derive(Clone, Debug, PartialEq)]
pub enum PeerEvent {
    /// The peer's sealed channel is up and it said hello.
    Up {
        /// Peer.
        peer: PeerId,
        /// Its capabilities.
        caps: Capabilities,
    },
    /// The peer's channel closed (it may come back).
    Down {
        /// Peer.
        peer: PeerId,
    },
    /// A message from the peer (already opened and validated).
    Message {
        /// Peer.
        peer: PeerId,
        /// The message.
        msg: PeerMsg,
    },
    /// Something from `peer` was refused (wrong circle key, forged record, bad message, …).
    Rejected {
        /// Claimed sender.
        peer: PeerId,
        /// Why.
        reason: String,
    },
}

/// Outputs of [`Session::poll`].
#[derive(Clone, Debug, PartialEq)]
pub enum Out {
    /// For the transport.
    Net(NetOp),
    /// For the application.
    Event(PeerEvent),
}

/// A peer's connection phase (for a live view).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// No connection.
    Idle,
    /// Offer or answer in progress.
    Connecting,
    /// Data channel open, seal handshake in progress.
    Handshaking,
    /// Sealed channel established, hello not yet received.
    Sealed,
    /// Up.
    Up,
}

/// Per-peer counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Records handed to the transport.
    pub records_sent: u64,
    /// Bytes handed to the transport (records, on the wire inside DTLS/SCTP).
    pub bytes_sent: u64,
    /// Records received.
    pub records_received: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Connections opened.
    pub connects: u32,
}

enum Link {
    /// Channel not open yet (offer/answer in progress).
    Pending,
    /// Open, our hello sent, waiting for theirs.
    Hello(Handshake),
    /// Sealed.
    Sealed(Box<Channel>),
}

struct Conn {
    id: ConnId,
    session: u64,
    offerer: bool,
    /// The answer was applied (offerer) / the local answer was sent (answerer).
    signalled: bool,
    since_ms: u64,
    link: Link,
}

struct Peer {
    pair: PairSecret,
    conn: Option<Conn>,
    seen: VecDeque<u64>,
    caps: Option<Capabilities>,
    retry_at: Option<u64>,
    outbox: VecDeque<Vec<u8>>,
    outbox_bytes: usize,
    in_transport: usize,
    stats: PeerStats,
}

/// The session of one node in one circle.
pub struct Session {
    me: Keypair,
    my_id: PeerId,
    circle: Circle,
    caps: Capabilities,
    cfg: SessionConfig,
    peers: BTreeMap<PeerId, Peer>,
    conns: BTreeMap<ConnId, PeerId>,
    next_conn: ConnId,
    out: VecDeque<Out>,
    rejected: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Session({}, {:?}, {} peers)",
            self.my_id.short(),
            self.circle,
            self.peers.len()
        )
    }
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // A failing OS random source leaves zeros: session ids only need to differ from the
    // previous ones of this pair, and the counter below keeps them distinct.
    let _ = shoal_proto::identity::random_bytes(&mut b);
    u64::from_le_bytes(b)
}

impl Session {
    /// A session for `me` in `circle`, announcing `caps` to every peer.
    pub fn new(me: Keypair, circle: Circle, caps: Capabilities, cfg: SessionConfig) -> Self {
        let my_id = me.peer_id();
        Session {
            me,
            my_id,
            circle,
            caps,
            cfg,
            peers: BTreeMap::new(),
            conns: BTreeMap::new(),
            next_conn: 1,
            out: VecDeque::new(),
            rejected: 0,
        }
    }

    /// Our peer id.
    pub fn my_id(&self) -> PeerId {
        self.my_id
    }

    /// The circle.
    pub fn circle(&self) -> &Circle {
        &self.circle
    }

    /// Next output.
    pub fn poll(&mut self) -> Option<Out> {
        self.out.pop_front()
    }

    /// Inputs refused so far (wrong key, forged records, bad messages).
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Peers that are up, with their capabilities.
    pub fn up_peers(&self) -> Vec<(PeerId, Capabilities)> {
        self.peers
            .iter()
            .filter_map(|(id, p)| p.caps.clone().map(|c| (*id, c)))
            .collect()
    }

    /// Every known peer with its phase, capabilities and counters.
    pub fn peers(&self) -> Vec<(PeerId, Phase, Option<Capabilities>, PeerStats)> {
        self.peers
            .iter()
            .map(|(id, p)| (*id, Self::phase(p), p.caps.clone(), p.stats.clone()))
            .collect()
    }

    fn phase(p: &Peer) -> Phase {
        match &p.conn {
            None => Phase::Idle,
            Some(c) => match &c.link {
                Link::Pending => Phase::Connecting,
                Link::Hello(_) => Phase::Handshaking,
                Link::Sealed(_) if p.caps.is_some() => Phase::Up,
                Link::Sealed(_) => Phase::Sealed,
            },
        }
    }

    /// The earliest time [`Session::tick`] has something to do.
    pub fn next_wake(&self) -> Option<u64> {
        self.peers
            .values()
            .filter_map(|p| match &p.conn {
                Some(c) if !matches!(c.link, Link::Sealed(_)) => {
                    Some(c.since_ms + self.cfg.connect_timeout_ms)
                }
                Some(_) => None,
                None => p.retry_at,
            })
            .min()
    }

    fn ensure_peer(&mut self, id: PeerId) -> bool {
        if id == self.my_id {
            return false;
        }
        if self.peers.contains_key(&id) {
            return true;
        }
        if self.peers.len() >= self.cfg.max_peers {
            return false;
        }
        match PairSecret::new(&self.me, &id) {
            Ok(pair) => {
                self.peers.insert(
                    id,
                    Peer {
                        pair,
                        conn: None,
                        seen: VecDeque::new(),
                        caps: None,
                        retry_at: None,
                        outbox: VecDeque::new(),
                        outbox_bytes: 0,
                        in_transport: 0,
                        stats: PeerStats::default(),
                    },
                );
                true
            }
            Err(_) => {
                self.reject(id, "peer key unusable for key agreement".into());
                false
            }
        }
    }

    fn reject(&mut self, peer: PeerId, reason: String) {
        self.rejected += 1;
        self.out
            .push_back(Out::Event(PeerEvent::Rejected { peer, reason }));
    }

    /// The room's member list (after joining or rejoining).
    pub fn on_members(&mut self, members: &[PeerId], now_ms: u64) {
        let gone: Vec<PeerId> = self
            .peers
            .keys()
            .filter(|p| !members.contains(p))
            .copied()
            .collect();
        for p in gone {
            self.on_member_left(&p);
        }
        for m in members {
            self.on_member_joined(*m, now_ms);
        }
    }

    /// A member joined the room.
    pub fn on_member_joined(&mut self, peer: PeerId, now_ms: u64) {
        if !self.ensure_peer(peer) {
            return;
        }
        self.maybe_offer(peer, now_ms);
    }

    /// A member left the room: close and forget it.
    pub fn on_member_left(&mut self, peer: &PeerId) {
        if let Some(mut p) = self.peers.remove(peer) {
            if let Some(c) = p.conn.take() {
                self.conns.remove(&c.id);
                self.out.push_back(Out::Net(NetOp::Close { conn: c.id }));
            }
            if p.caps.is_some() {
                self.out
                    .push_back(Out::Event(PeerEvent::Down { peer: *peer }));
            }
        }
    }

    fn i_offer(&self, peer: &PeerId) -> bool {
        self.my_id < *peer
    }

    fn maybe_offer(&mut self, peer: PeerId, now_ms: u64) {
        if !self.i_offer(&peer) {
            return;
        }
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if p.conn.is_some() || p.retry_at.is_some_and(|t| t > now_ms) {
            return;
        }
        let conn = self.next_conn;
        self.next_conn += 1;
        let session = random_u64() ^ conn;
        p.retry_at = None;
        p.conn = Some(Conn {
            id: conn,
            session,
            offerer: true,
            signalled: false,
            since_ms: now_ms,
            link: Link::Pending,
        });
        self.conns.insert(conn, peer);
        self.out
            .push_back(Out::Net(NetOp::CreateOffer { peer, conn }));
    }

    /// The transport's local description for `conn` is ready (after ICE gathering).
    pub fn on_local_description(&mut self, conn: ConnId, sdp: String) {
        let Some(&peer) = self.conns.get(&conn) else {
            return;
        };
        let Some(c) = self.peers.get(&peer).and_then(|p| p.conn.as_ref()) else {
            return;
        };
        let msg = if c.offerer {
            SignalMsg::Offer {
                session: c.session,
                sdp,
            }
        } else {
            SignalMsg::Answer {
                session: c.session,
                sdp,
            }
        };
        self.signal(peer, &msg);
    }

    fn signal(&mut self, to: PeerId, msg: &SignalMsg) {
        let sealed = msg.encode().map_err(|e| e.to_string()).and_then(|b| {
            self.circle
                .seal_signal(&self.my_id, &to, &b)
                .map_err(|e| e.to_string())
        });
        match sealed {
            Ok(payload) => self.out.push_back(Out::Net(NetOp::Signal { to, payload })),
            Err(e) => tracing::warn!(error = %e, "signaling message not sent"),
        }
    }

    /// A sealed signaling payload from `from` (as the relay reported it).
    pub fn on_signal(&mut self, from: PeerId, payload: &[u8], now_ms: u64) {
        let msg = match self
            .circle
            .open_signal(&from, &self.my_id, payload)
            .map_err(|e| e.to_string())
            .and_then(|b| SignalMsg::decode(&b).map_err(|e| e.to_string()))
        {
            Ok(m) => m,
            Err(e) => return self.reject(from, format!("signaling: {e}")),
        };
        if !self.ensure_peer(from) {
            return;
        }
        match msg {
            SignalMsg::Offer { session, sdp } => {
                if self.i_offer(&from) {
                    return self.reject(from, "offer from the higher peer id".into());
                }
                let Some(p) = self.peers.get_mut(&from) else {
                    return;
                };
                if p.seen.contains(&session) {
                    return; // replayed or duplicate offer
                }
                p.seen.push_back(session);
                while p.seen.len() > SEEN_SESSIONS {
                    p.seen.pop_front();
                }
                // A new offer replaces whatever we had (the offerer restarted or gave up).
                self.drop_conn(&from, false, now_ms);
                let conn = self.next_conn;
                self.next_conn += 1;
                let Some(p) = self.peers.get_mut(&from) else {
                    return;
                };
                p.conn = Some(Conn {
                    id: conn,
                    session,
                    offerer: false,
                    signalled: true,
                    since_ms: now_ms,
                    link: Link::Pending,
                });
                self.conns.insert(conn, from);
                self.out.push_back(Out::Net(NetOp::AcceptOffer {
                    peer: from,
                    conn,
                    sdp,
                }));
            }
            SignalMsg::Answer { session, sdp } => {
                let Some(c) = self.peers.get_mut(&from).and_then(|p| p.conn.as_mut()) else {
                    return;
                };
                if !c.offerer || c.session != session || c.signalled {
                    return; // stale, replayed or duplicate
                }
                c.signalled = true;
                let conn = c.id;
                self.out
                    .push_back(Out::Net(NetOp::ApplyAnswer { conn, sdp }));
            }
            SignalMsg::Bye { session } => {
                let current = self
                    .peers
                    .get(&from)
                    .and_then(|p| p.conn.as_ref())
                    .is_some_and(|c| c.session == session);
                if current {
                    self.drop_conn(&from, false, now_ms);
                }
            }
        }
    }

    /// Close the peer's connection (if any): Down event if it was up; retry later if we offer.
    fn drop_conn(&mut self, peer: &PeerId, send_bye: bool, now_ms: u64) {
        let retry = now_ms + self.cfg.retry_ms;
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        let Some(c) = p.conn.take() else {
            return;
        };
        let was_up = p.caps.take().is_some();
        p.outbox.clear();
        p.outbox_bytes = 0;
        p.in_transport = 0;
        p.retry_at = Some(retry);
        self.conns.remove(&c.id);
        self.out.push_back(Out::Net(NetOp::Close { conn: c.id }));
        if send_bye {
            self.signal(*peer, &SignalMsg::Bye { session: c.session });
        }
        if was_up {
            self.out
                .push_back(Out::Event(PeerEvent::Down { peer: *peer }));
        }
    }

    /// `conn`'s data channel opened: start the seal handshake.
    pub fn on_open(&mut self, conn: ConnId) {
        let Some(&peer) = self.conns.get(&conn) else {
            return;
        };
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let Some(c) = p.conn.as_mut() else {
            return;
        };
        if !matches!(c.link, Link::Pending) {
            return;
        }
        match p.pair.handshake() {
            Ok((hs, hello)) => {
                c.link = Link::Hello(hs);
                p.stats.connects += 1;
                p.stats.records_sent += 1;
                p.stats.bytes_sent += hello.len() as u64;
                self.out
                    .push_back(Out::Net(NetOp::Send { conn, data: hello }));
            }
            Err(e) => tracing::warn!(error = %e, "seal handshake failed to start"),
        }
    }

    /// `conn` closed or failed.
    pub fn on_closed(&mut self, conn: ConnId, now_ms: u64) {
        if let Some(&peer) = self.conns.get(&conn) {
            self.drop_conn(&peer, true, now_ms);
        }
    }

    /// The transport's send queue for `conn` is now `queued` bytes.
    pub fn on_buffered(&mut self, conn: ConnId, queued: usize) {
        let Some(&peer) = self.conns.get(&conn) else {
            return;
        };
        if let Some(p) = self.peers.get_mut(&peer) {
            p.in_transport = queued;
        }
        self.pump(&peer);
    }

    /// Whether `peer` can take more messages now (its outbox is below half its limit).
    pub fn writable(&self, peer: &PeerId) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|p| p.caps.is_some() && p.outbox_bytes < self.cfg.max_outbox_bytes / 2)
    }

    fn pump(&mut self, peer: &PeerId) {
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        let Some(conn) = p.conn.as_ref().map(|c| c.id) else {
            return;
        };
        while p.in_transport < self.cfg.high_water {
            let Some(rec) = p.outbox.pop_front() else {
                break;
            };
            p.outbox_bytes -= rec.len();
            p.in_transport += rec.len();
            p.stats.records_sent += 1;
            p.stats.bytes_sent += rec.len() as u64;
            self.out
                .push_back(Out::Net(NetOp::Send { conn, data: rec }));
        }
    }

    /// A record arrived on `conn`.
    pub fn on_record(&mut self, conn: ConnId, data: &[u8], now_ms: u64) {
        let Some(&peer) = self.conns.get(&conn) else {
            return;
        };
        // A record before our own "open" event: the channel is evidently open.
        if self
            .peers
            .get(&peer)
            .and_then(|p| p.conn.as_ref())
            .is_some_and(|c| matches!(c.link, Link::Pending))
        {
            self.on_open(conn);
        }
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.stats.records_received += 1;
        p.stats.bytes_received += data.len() as u64;
        let Some(c) = p.conn.as_mut() else {
            return;
        };
        let link = std::mem::replace(&mut c.link, Link::Pending);
        let result: Result<Option<Vec<u8>>, String> = match link {
            Link::Pending => Err("record on a channel that is not open".into()),
            Link::Hello(hs) => match hs.finish(data) {
                Ok(ch) => {
                    c.link = Link::Sealed(Box::new(ch));
                    // Our first sealed message: who we are.
                    let hello = PeerMsg::Hello(self.caps.clone());
                    if let Err(e) = self.send(&peer, &hello) {
                        tracing::warn!(error = %e, "hello not sent");
                    }
                    Ok(None)
                }
                Err(e) => Err(format!("seal handshake: {e}")),
            },
            Link::Sealed(mut ch) => {
                let r = ch.open_record(data).map_err(|e| format!("record: {e}"));
                c.link = Link::Sealed(ch);
                r
            }
        };
        match result {
            Ok(None) => {}
            Ok(Some(bytes)) => match PeerMsg::decode(&bytes) {
                Ok(PeerMsg::Hello(caps)) => {
                    let Some(p) = self.peers.get_mut(&peer) else {
                        return;
                    };
                    let first = p.caps.is_none();
                    p.caps = Some(caps.clone());
                    if first {
                        self.out.push_back(Out::Event(PeerEvent::Up { peer, caps }));
                    }
                }
                Ok(msg) => {
                    if self.peers.get(&peer).is_some_and(|p| p.caps.is_some()) {
                        self.out
                            .push_back(Out::Event(PeerEvent::Message { peer, msg }));
                    } else {
                        self.reject(peer, "message before hello".into());
                        self.drop_conn(&peer, true, now_ms);
                    }
                }
                Err(e) => {
                    self.reject(peer, format!("peer message: {e}"));
                    self.drop_conn(&peer, true, now_ms);
                }
            },
            Err(e) => {
                self.reject(peer, e);
                self.drop_conn(&peer, true, now_ms);
            }
        }
    }

    /// Seal `msg` to `peer` and queue its records.
    pub fn send(&mut self, peer: &PeerId, msg: &PeerMsg) -> Result<(), SessionError> {
        let not = || SessionError::NotConnected(peer.short());
        let bytes = msg
            .encode()
            .map_err(|e| SessionError::Encode(e.to_string()))?;
        let p = self.peers.get_mut(peer).ok_or_else(not)?;
        let is_hello = matches!(msg, PeerMsg::Hello(_));
        if p.caps.is_none() && !is_hello {
            return Err(not());
        }
        let Some(Link::Sealed(ch)) = p.conn.as_mut().map(|c| &mut c.link) else {
            return Err(not());
        };
        if p.outbox_bytes + bytes.len() > self.cfg.max_outbox_bytes {
            return Err(SessionError::OutboxFull(peer.short()));
        }
        let records = ch
            .seal_message(&bytes)
            .map_err(|e| SessionError::Encode(e.to_string()))?;
        for r in records {
            p.outbox_bytes += r.len();
            p.outbox.push_back(r);
        }
        self.pump(peer);
        Ok(())
    }

    /// Time passes: connect timeouts and the offerer's retries.
    pub fn tick(&mut self, now_ms: u64) {
        let timeout = self.cfg.connect_timeout_ms;
        let stuck: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.conn.as_ref().is_some_and(|c| {
                    !matches!(c.link, Link::Sealed(_)) && c.since_ms + timeout <= now_ms
                })
            })
            .map(|(id, _)| *id)
            .collect();
        for p in stuck {
            self.drop_conn(&p, true, now_ms);
        }
        let retry: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.conn.is_none() && p.retry_at.is_some_and(|t| t <= now_ms))
            .map(|(id, _)| *id)
            .collect();
        for p in retry {
            if let Some(peer) = self.peers.get_mut(&p) {
                peer.retry_at = None;
            }
            self.maybe_offer(p, now_ms);
        }
    }
}
