//! Rooms: opaque 32-byte ids → members. Forwarding never blocks: each member has a bounded
//! queue, and a member whose queue is full is a slow reader and gets kicked.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Instant;

use bytes::Bytes;
use shoal_proto::identity::PeerId;
use shoal_proto::{ErrorCode, Frame, MemberEvent, RoomId};
use tokio::sync::{Notify, mpsc};

use crate::metrics::Metrics;

/// One frame queued towards a session.
#[derive(Debug)]
pub struct Out {
    /// Encoded frame.
    pub bytes: Bytes,
    /// When the `Send` that caused it arrived (for the forward-latency histogram).
    pub t0: Option<Instant>,
}

/// A session as other sessions see it: where to queue frames and how to kick it.
#[derive(Debug)]
pub struct Peer {
    /// Unique per relay process.
    pub id: u64,
    /// Authenticated identity.
    pub peer: PeerId,
    tx: mpsc::Sender<Out>,
    kick: Notify,
    kick_reason: AtomicU16,
}

impl Peer {
    /// A peer handle with its queue sender.
    pub fn new(id: u64, peer: PeerId, tx: mpsc::Sender<Out>) -> Self {
        Peer {
            id,
            peer,
            tx,
            kick: Notify::new(),
            kick_reason: AtomicU16::new(0),
        }
    }

    /// Ask the session to close with `code` (first reason wins).
    pub fn kick(&self, code: ErrorCode) {
        let _ = self.kick_reason.compare_exchange(
            0,
            code.as_u16(),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.kick.notify_one();
    }

    /// Resolves when [`Self::kick`] was called.
    pub async fn kicked(&self) -> ErrorCode {
        self.kick.notified().await;
        ErrorCode::from_u16(self.kick_reason.load(Ordering::Acquire))
    }

    /// Queue a frame without waiting. A full queue kicks the session (slow reader).
    pub fn push(&self, out: Out, metrics: &Metrics) -> bool {
        match self.tx.try_send(out) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics.drop(ErrorCode::SlowReader.name());
                self.kick(ErrorCode::SlowReader);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

fn encode(f: &Frame) -> Option<Bytes> {
    f.encode().ok().map(Bytes::from)
}

/// All rooms of this relay.
#[derive(Debug, Default)]
pub struct Rooms {
    map: Mutex<HashMap<RoomId, HashMap<PeerId, Arc<Peer>>>>,
}

type Map = HashMap<RoomId, HashMap<PeerId, Arc<Peer>>>;

impl Rooms {
    fn lock(&self) -> std::sync::MutexGuard<'_, Map> {
        // A panic while holding the lock cannot leave the map inconsistent (single inserts/removes).
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of non-empty rooms.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there are no rooms.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Join `room`; returns its members (self included). Tells the others.
    pub fn join(
        &self,
        room: RoomId,
        me: &Arc<Peer>,
        max_members: usize,
        metrics: &Metrics,
    ) -> Result<Vec<PeerId>, ErrorCode> {
        let mut map = self.lock();
        let created = !map.contains_key(&room);
        let members = map.entry(room).or_default();
        match members.get(&me.peer) {
            Some(existing) if existing.id == me.id => {}
            Some(existing) => {
                // Same identity from a newer session (e.g. a reconnect racing the old one's timeout).
                if let Some(b) = encode(&Frame::error(
                    ErrorCode::Replaced,
                    Some(room),
                    "joined from another session",
                )) {
                    existing.push(Out { bytes: b, t0: None }, metrics);
                }
                members.insert(me.peer, me.clone());
            }
            None => {
                if members.len() >= max_members {
                    if members.is_empty() {
                        map.remove(&room);
                    }
                    return Err(ErrorCode::RoomFull);
                }
                if let Some(b) = encode(&Frame::MemberJoined(MemberEvent {
                    room,
                    peer: me.peer,
                })) {
                    for m in members.values() {
                        m.push(
                            Out {
                                bytes: b.clone(),
                                t0: None,
                            },
                            metrics,
                        );
                    }
                }
                members.insert(me.peer, me.clone());
            }
        }
        if created {
            metrics.rooms.inc();
        }
        Ok(members.keys().copied().collect())
    }

    /// Leave `room` (no-op unless this very session is the member). Tells the others.
    pub fn leave(&self, room: RoomId, me: &Peer, metrics: &Metrics) -> bool {
        let mut map = self.lock();
        let Some(members) = map.get_mut(&room) else {
            return false;
        };
        match members.get(&me.peer) {
            Some(m) if m.id == me.id => {}
            _ => return false,
        }
        members.remove(&me.peer);
        if members.is_empty() {
            map.remove(&room);
            metrics.rooms.dec();
        } else if let Some(b) = encode(&Frame::MemberLeft(MemberEvent {
            room,
            peer: me.peer,
        })) {
            for m in members.values() {
                m.push(
                    Out {
                        bytes: b.clone(),
                        t0: None,
                    },
                    metrics,
                );
            }
        }
        true
    }

    /// Members of a room this session is in.
    pub fn members(&self, room: RoomId, me: &Peer) -> Result<Vec<PeerId>, ErrorCode> {
        let map = self.lock();
        let members = map.get(&room).ok_or(ErrorCode::NotInRoom)?;
        match members.get(&me.peer) {
            Some(m) if m.id == me.id => Ok(members.keys().copied().collect()),
            _ => Err(ErrorCode::NotInRoom),
        }
    }

    /// The addressee of a `Send`, if both are in `room`.
    pub fn target(&self, room: RoomId, me: &Peer, to: &PeerId) -> Result<Arc<Peer>, ErrorCode> {
        let map = self.lock();
        let members = map.get(&room).ok_or(ErrorCode::NotInRoom)?;
        match members.get(&me.peer) {
            Some(m) if m.id == me.id => {}
            _ => return Err(ErrorCode::NotInRoom),
        }
        members.get(to).cloned().ok_or(ErrorCode::NoSuchMember)
    }
}
