//! The sans-IO signaling client: all protocol logic, no sockets, no timers. The native and wasm
//! drivers feed it bytes and events and carry out what it returns, so both behave the same.

use std::collections::BTreeSet;

use shoal_proto::identity::{Keypair, PeerId, random_bytes};
use shoal_proto::{
    self, Auth, DecodeError, ErrorCode, Frame, GetCheckpoint, Hello, InclusionPromise, MemberEvent,
    Members, Ping, RoomId, RoomRef, SendTo, SessionLimits, SubmitReceipts,
};

/// What the application asks the client to do.
#[derive(Clone, PartialEq, Eq)]
pub enum Command {
    /// Join a room (remembered: rejoined after every reconnect).
    Join(RoomId),
    /// Leave a room (forgotten).
    Leave(RoomId),
    /// Ask for a room's member list (answered by [`Event::Members`]).
    ListMembers(RoomId),
    /// Send an opaque payload to one member of a room. Dropped while disconnected.
    Send {
        /// The room both peers are in (the relay forwards only within a room).
        room: RoomId,
        /// The recipient member.
        to: PeerId,
        /// Opaque bytes (a sealed signaling message); the relay caps their size.
        payload: Vec<u8>,
    },
    /// Append encoded receipts to the relay's log (answered by [`Event::Promises`] or
    /// [`Event::AnchorError`] with the same `id`). Dropped while disconnected: resubmit after
    /// [`Event::Connected`] (appending is idempotent).
    SubmitReceipts {
        /// Caller-chosen request id, echoed in the answer.
        id: u32,
        /// Encoded receipts, one log entry each.
        receipts: Vec<Vec<u8>>,
    },
    /// Ask for the relay's latest checkpoint (answered by [`Event::Checkpoint`]).
    GetCheckpoint {
        /// Caller-chosen request id, echoed in the answer.
        id: u32,
    },
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Join(r) => write!(f, "Join({r:?})"),
            Command::Leave(r) => write!(f, "Leave({r:?})"),
            Command::ListMembers(r) => write!(f, "ListMembers({r:?})"),
            Command::Send { room, to, payload } => {
                write!(f, "Send({room:?}, {to:?}, <{} bytes>)", payload.len())
            }
            Command::SubmitReceipts { id, receipts } => {
                write!(f, "SubmitReceipts({id}, {} receipts)", receipts.len())
            }
            Command::GetCheckpoint { id } => write!(f, "GetCheckpoint({id})"),
        }
    }
}

/// What the client reports to the application.
#[derive(Clone, PartialEq, Eq)]
pub enum Event {
    /// Authenticated to a relay.
    Connected {
        /// The relay's WebSocket URL.
        url: String,
        /// The relay's key, verified in the handshake (the pinned one, if pinned).
        relay: PeerId,
        /// The relay's limits for this session, from its `Welcome`.
        limits: SessionLimits,
    },
    /// The connection ended; the client will reconnect (with backoff, trying the next relay).
    Disconnected {
        /// The relay's WebSocket URL.
        url: String,
        /// Why it ended, in words (transport error, close reason, timeout).
        reason: String,
    },
    /// A room's members (after `Join`, after every rejoin, or on `ListMembers`).
    Members {
        /// The room listed.
        room: RoomId,
        /// Everyone in the room as the relay sees it.
        members: Vec<PeerId>,
    },
    /// A member joined a room.
    MemberJoined {
        /// The room joined.
        room: RoomId,
        /// The new member.
        peer: PeerId,
    },
    /// A member left a room.
    MemberLeft {
        /// The room left.
        room: RoomId,
        /// The member that left (or disconnected).
        peer: PeerId,
    },
    /// A payload from a member.
    Message {
        /// The room it was sent in.
        room: RoomId,
        /// The sender, as authenticated by the relay.
        from: PeerId,
        /// Opaque bytes as the sender gave them (not yet unsealed).
        payload: Vec<u8>,
    },
    /// The relay reported an error.
    RelayError {
        /// What went wrong (never a fatal code: those end the session as [`SignalError::Closed`]).
        code: ErrorCode,
        /// The room the error is about, if any.
        room: Option<RoomId>,
        /// The relay's explanation, for logs.
        detail: String,
    },
    /// The receipts of `SubmitReceipts{id}` are durably in the log of `origin`.
    Promises {
        /// The `id` of the [`Command::SubmitReceipts`] answered.
        id: u32,
        /// The log's checkpoint origin line (names the log whose checkpoints redeem these).
        origin: String,
        /// One promise per submitted receipt, in submission order.
        promises: Vec<InclusionPromise>,
    },
    /// The relay's latest checkpoint (signed note text with cosignatures): verify it with
    /// `tlog::client::LightClient`.
    Checkpoint {
        /// The `id` of the [`Command::GetCheckpoint`] answered.
        id: u32,
        /// The signed checkpoint note, as text.
        note: String,
    },
    /// An anchoring request failed.
    AnchorError {
        /// The `id` of the [`Command::SubmitReceipts`] or [`Command::GetCheckpoint`] that failed.
        id: u32,
        /// What went wrong.
        code: ErrorCode,
        /// The relay's explanation, for logs.
        detail: String,
    },
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Connected { url, relay, .. } => write!(f, "Connected({url}, {relay:?})"),
            Event::Disconnected { url, reason } => write!(f, "Disconnected({url}, {reason})"),
            Event::Members { room, members } => {
                write!(f, "Members({room:?}, {} members)", members.len())
            }
            Event::MemberJoined { room, peer } => write!(f, "MemberJoined({room:?}, {peer:?})"),
            Event::MemberLeft { room, peer } => write!(f, "MemberLeft({room:?}, {peer:?})"),
            Event::Message {
                room,
                from,
                payload,
            } => {
                write!(f, "Message({room:?}, {from:?}, <{} bytes>)", payload.len())
            }
            Event::RelayError { code, room, detail } => {
                write!(f, "RelayError({code:?}, {room:?}, {detail})")
            }
            Event::Promises {
                id,
                origin,
                promises,
            } => {
                write!(f, "Promises({id}, {origin}, {} promises)", promises.len())
            }
            Event::Checkpoint { id, note } => write!(f, "Checkpoint({id}, {} bytes)", note.len()),
            Event::AnchorError { id, code, detail } => {
                write!(f, "AnchorError({id}, {code:?}, {detail})")
            }
        }
    }
}

/// Errors that end a connection attempt.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// Could not connect / transport failure.
    #[error("transport: {0}")]
    Transport(String),
    /// The relay sent something we cannot decode.
    #[error("bad frame from relay: {0}")]
    Decode(#[from] DecodeError),
    /// The relay broke the protocol (bad signature, unexpected frame).
    #[error("protocol: {0}")]
    Protocol(String),
    /// The relay closed the session with a fatal error.
    #[error("relay closed the session: {code:?} {detail}")]
    Closed {
        /// The fatal error code.
        code: ErrorCode,
        /// The relay's explanation, for logs.
        detail: String,
    },
    /// Identity / randomness failure.
    #[error("identity: {0}")]
    Identity(#[from] shoal_proto::identity::IdentityError),
    /// Nothing heard from the relay in time.
    #[error("relay silent for too long")]
    Timeout,
    /// The relay list is empty.
    #[error("no relay URLs configured")]
    NoRelays,
}

#[derive(Debug)]
enum State {
    Disconnected,
    AwaitChallenge { client_nonce: [u8; 32] },
    AwaitWelcome,
    Ready,
}

/// Outputs of the state machine.
#[derive(Debug)]
pub enum Output {
    /// Bytes to write to the socket.
    Send(Vec<u8>),
    /// An event for the application.
    Event(Event),
}

/// The sans-IO client.
#[derive(Debug)]
pub struct ClientCore {
    keypair: Keypair,
    rooms: BTreeSet<RoomId>,
    state: State,
    url: String,
    /// If set, the relay must present this key.
    pinned_relay: Option<PeerId>,
}

impl ClientCore {
    /// A client for `keypair`, in no rooms.
    pub fn new(keypair: Keypair) -> Self {
        ClientCore {
            keypair,
            rooms: BTreeSet::new(),
            state: State::Disconnected,
            url: String::new(),
            pinned_relay: None,
        }
    }

    /// Require the relay's key for the current connection (call before [`Self::on_open`]).
    pub fn pin_relay(&mut self, relay: Option<PeerId>) {
        self.pinned_relay = relay;
    }

    /// Our identity.
    pub fn peer_id(&self) -> PeerId {
        self.keypair.peer_id()
    }

    /// Rooms we want to be in.
    pub fn rooms(&self) -> impl Iterator<Item = &RoomId> {
        self.rooms.iter()
    }

    /// Whether the handshake has completed.
    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Ready)
    }

    /// The socket to `url` opened: returns the `Hello` to send.
    pub fn on_open(&mut self, url: &str) -> Result<Vec<u8>, SignalError> {
        let mut client_nonce = [0u8; 32];
        random_bytes(&mut client_nonce)?;
        self.state = State::AwaitChallenge { client_nonce };
        self.url = url.to_string();
        Ok(Frame::Hello(Hello {
            peer: self.keypair.peer_id(),
            client_nonce,
        })
        .encode()?)
    }

    /// The socket closed.
    pub fn on_close(&mut self, reason: &str) -> Event {
        self.state = State::Disconnected;
        Event::Disconnected {
            url: self.url.clone(),
            reason: reason.to_string(),
        }
    }

    /// Bytes arrived from the relay.
    pub fn on_bytes(&mut self, bytes: &[u8], out: &mut Vec<Output>) -> Result<(), SignalError> {
        let frame = Frame::decode(bytes)?;
        self.on_frame(frame, out)
    }

    fn send(out: &mut Vec<Output>, f: Frame) -> Result<(), SignalError> {
        out.push(Output::Send(f.encode()?));
        Ok(())
    }

    /// A decoded frame arrived from the relay.
    pub fn on_frame(&mut self, frame: Frame, out: &mut Vec<Output>) -> Result<(), SignalError> {
        match (&self.state, frame) {
            (_, Frame::Ping(p)) => Self::send(out, Frame::Pong(p))?,
            (_, Frame::Pong(_)) => {}
            (_, Frame::Error(e)) => {
                if e.code.is_fatal() {
                    return Err(SignalError::Closed {
                        code: e.code,
                        detail: e.detail,
                    });
                }
                out.push(Output::Event(Event::RelayError {
                    code: e.code,
                    room: e.room,
                    detail: e.detail,
                }));
            }
            (State::AwaitChallenge { client_nonce }, Frame::Challenge(c)) => {
                let me = self.keypair.peer_id();
                if let Some(pin) = self.pinned_relay
                    && pin != c.relay
                {
                    return Err(SignalError::Protocol(format!(
                        "relay key {} is not the pinned {}",
                        c.relay, pin
                    )));
                }
                c.relay
                    .verify(
                        &shoal_proto::hello_message(client_nonce, &c.nonce, &me),
                        &c.relay_sig,
                    )
                    .map_err(|_| SignalError::Protocol("relay signature does not verify".into()))?;
                let sig = self
                    .keypair
                    .sign(&shoal_proto::auth_message(&c.relay, &c.nonce, &me));
                self.pinned_relay = Some(c.relay);
                self.state = State::AwaitWelcome;
                Self::send(out, Frame::Auth(Auth { sig }))?;
            }
            (State::AwaitWelcome, Frame::Welcome(w)) => {
                self.state = State::Ready;
                let relay = self.pinned_relay.unwrap_or(PeerId([0; 32]));
                out.push(Output::Event(Event::Connected {
                    url: self.url.clone(),
                    relay,
                    limits: w.limits,
                }));
                for room in &self.rooms {
                    Self::send(out, Frame::Join(RoomRef { room: *room }))?;
                }
            }
            (State::Ready, Frame::Members(Members { room, members })) => {
                out.push(Output::Event(Event::Members { room, members }));
            }
            (State::Ready, Frame::MemberJoined(MemberEvent { room, peer })) => {
                out.push(Output::Event(Event::MemberJoined { room, peer }));
            }
            (State::Ready, Frame::MemberLeft(MemberEvent { room, peer })) => {
                out.push(Output::Event(Event::MemberLeft { room, peer }));
            }
            (State::Ready, Frame::Deliver(d)) => out.push(Output::Event(Event::Message {
                room: d.room,
                from: d.from,
                payload: d.payload,
            })),
            (State::Ready, Frame::Promises(p)) => out.push(Output::Event(Event::Promises {
                id: p.id,
                origin: p.origin,
                promises: p.promises,
            })),
            (State::Ready, Frame::CheckpointNote(c)) => {
                out.push(Output::Event(Event::Checkpoint {
                    id: c.id,
                    note: c.note,
                }));
            }
            (State::Ready, Frame::AnchorError(e)) => out.push(Output::Event(Event::AnchorError {
                id: e.id,
                code: e.code,
                detail: e.detail,
            })),
            (state, f) => {
                return Err(SignalError::Protocol(format!(
                    "unexpected {} frame in state {state:?}",
                    f.kind()
                )));
            }
        }
        Ok(())
    }

    /// An application command. Returns the bytes to send now, if connected.
    pub fn on_command(&mut self, cmd: Command) -> Result<Option<Vec<u8>>, SignalError> {
        let frame = match cmd {
            Command::Join(room) => {
                self.rooms.insert(room);
                Frame::Join(RoomRef { room })
            }
            Command::Leave(room) => {
                self.rooms.remove(&room);
                Frame::Leave(RoomRef { room })
            }
            Command::ListMembers(room) => Frame::ListMembers(RoomRef { room }),
            Command::Send { room, to, payload } => Frame::Send(SendTo { room, to, payload }),
            Command::SubmitReceipts { id, receipts } => Frame::SubmitReceipts(SubmitReceipts {
                id,
                receipts: receipts
                    .into_iter()
                    .map(serde_bytes::ByteBuf::from)
                    .collect(),
            }),
            Command::GetCheckpoint { id } => Frame::GetCheckpoint(GetCheckpoint { id }),
        };
        if self.is_ready() {
            Ok(Some(frame.encode()?))
        } else {
            Ok(None)
        }
    }

    /// A keep-alive ping to send.
    pub fn ping(&self, nonce: u64) -> Result<Vec<u8>, SignalError> {
        Ok(Frame::Ping(Ping { nonce }).encode()?)
    }
}
