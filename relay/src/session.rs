//! One WebSocket session: handshake, then the frame loop. Payload bytes are forwarded, never
//! logged or stored.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::Bytes;
use shoal_proto::identity::{PeerId, random_bytes};
use shoal_proto::{
    self as proto, AnchorError, Challenge, CheckpointNote, DecodeError, Deliver, ErrorCode,
    ErrorFrame, Frame, InclusionPromise, Members, Ping, Promises, RoomId, SubmitReceipts, Welcome,
};
use tokio::sync::{Semaphore, mpsc};

use crate::log::SubmitError;
use tokio::time::{sleep_until, timeout};

use crate::limits::{TokenBucket, Violations};
use crate::rooms::{Out, Peer};
use crate::state::{AdmissionGuard, AppState};

/// WebSocket close codes used by the relay.
mod close {
    pub(crate) const NORMAL: u16 = 1000;
    pub(crate) const GOING_AWAY: u16 = 1001;
    pub(crate) const POLICY: u16 = 1008;
    pub(crate) const TRY_AGAIN_LATER: u16 = 1013;
}

fn close_code(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::ShuttingDown => close::GOING_AWAY,
        ErrorCode::RelayFull | ErrorCode::TooManySessionsFromAddress => close::TRY_AGAIN_LATER,
        _ => close::POLICY,
    }
}

/// Send an error frame then close, bounded by the write timeout. Never fails.
async fn fail(ws: &mut WebSocket, state: &AppState, code: ErrorCode, detail: &str) {
    state.metrics.drop(code.name());
    let wt = state.config.limits.write_timeout();
    if let Ok(b) = Frame::error(code, None, detail).encode() {
        let _ = timeout(wt, ws.send(Message::Binary(b.into()))).await;
    }
    let cf = CloseFrame {
        code: close_code(code),
        reason: code.name().into(),
    };
    let _ = timeout(wt, ws.send(Message::Close(Some(cf)))).await;
}

/// Refuse a session at admission (limits on sessions), after the upgrade so browsers see why.
pub async fn refuse(mut ws: WebSocket, state: AppState, code: ErrorCode) {
    fail(&mut ws, &state, code, "session limit reached").await;
}

enum Read {
    Frame(Frame, usize),
    Bad(DecodeError),
    Closed,
}

/// TEST HOOK (never in production): with `SHOAL_RELAY_TEST_CAPTURE_FRAMES=FILE` every binary
/// WebSocket message the relay receives is appended to FILE as `len (u32 LE) ‖ bytes`, so a
/// test can check that nothing it relayed carries plaintext.
fn capture(bytes: &[u8]) {
    use std::io::Write as _;
    static FILE: std::sync::OnceLock<Option<std::sync::Mutex<std::fs::File>>> =
        std::sync::OnceLock::new();
    let f = FILE.get_or_init(|| {
        let path = std::env::var_os("SHOAL_RELAY_TEST_CAPTURE_FRAMES")?;
        tracing::warn!("TEST HOOK: capturing every received frame to {path:?}");
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
            .map(std::sync::Mutex::new)
    });
    if let Some(m) = f
        && let Ok(mut file) = m.lock()
    {
        let _ = file.write_all(&(bytes.len() as u32).to_le_bytes());
        let _ = file.write_all(bytes);
    }
}

async fn read(ws: &mut WebSocket, max_frame: usize) -> Read {
    loop {
        match ws.recv().await {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Read::Closed,
            Some(Ok(Message::Binary(b))) => {
                capture(&b);
                return match Frame::decode_with_limit(&b, max_frame) {
                    Ok(f) => Read::Frame(f, b.len()),
                    Err(e) => Read::Bad(e),
                };
            }
            Some(Ok(Message::Text(_))) => {
                return Read::Bad(DecodeError::Malformed {
                    kind: "text",
                    reason: "text WebSocket message".into(),
                });
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
        }
    }
}

async fn send_frame(ws: &mut WebSocket, state: &AppState, f: &Frame) -> Result<(), ()> {
    let b = f.encode().map_err(|_| ())?;
    match timeout(
        state.config.limits.write_timeout(),
        ws.send(Message::Binary(b.into())),
    )
    .await
    {
        Ok(Ok(())) => {
            state.metrics.frames_out.inc();
            Ok(())
        }
        _ => Err(()),
    }
}

/// Handshake: Hello → Challenge → Auth. Returns the authenticated peer id.
async fn handshake(ws: &mut WebSocket, state: &AppState) -> Result<PeerId, (ErrorCode, String)> {
    let max = state.config.limits.max_frame_bytes;
    let gone = || (ErrorCode::Internal, String::from("connection closed"));
    let hello = loop {
        match read(ws, max).await {
            Read::Frame(Frame::Hello(h), n) => {
                state.metrics.frame_in("hello", n);
                break h;
            }
            Read::Frame(Frame::Ping(p), _) => {
                send_frame(ws, state, &Frame::Pong(p))
                    .await
                    .map_err(|_| gone())?;
            }
            Read::Frame(f, _) => {
                return Err((ErrorCode::Unexpected, format!("{} before hello", f.kind())));
            }
            Read::Bad(e) => return Err((ErrorCode::from(&e), e.to_string())),
            Read::Closed => return Err(gone()),
        }
    };
    let mut nonce = [0u8; 32];
    random_bytes(&mut nonce).map_err(|_| (ErrorCode::Internal, String::from("no randomness")))?;
    let relay = state.relay_key.peer_id();
    let relay_sig = state.relay_key.sign(&proto::hello_message(
        &hello.client_nonce,
        &nonce,
        &hello.peer,
    ));
    send_frame(
        ws,
        state,
        &Frame::Challenge(Challenge {
            relay,
            nonce,
            relay_sig,
        }),
    )
    .await
    .map_err(|_| gone())?;
    let auth = loop {
        match read(ws, max).await {
            Read::Frame(Frame::Auth(a), n) => {
                state.metrics.frame_in("auth", n);
                break a;
            }
            Read::Frame(Frame::Ping(p), _) => {
                send_frame(ws, state, &Frame::Pong(p))
                    .await
                    .map_err(|_| gone())?;
            }
            Read::Frame(f, _) => {
                return Err((ErrorCode::Unexpected, format!("{} before auth", f.kind())));
            }
            Read::Bad(e) => return Err((ErrorCode::from(&e), e.to_string())),
            Read::Closed => return Err(gone()),
        }
    };
    hello
        .peer
        .verify(&proto::auth_message(&relay, &nonce, &hello.peer), &auth.sig)
        .map_err(|_| {
            (
                ErrorCode::AuthFailed,
                String::from("signature does not verify"),
            )
        })?;
    Ok(hello.peer)
}

/// Run one admitted session to completion.
pub async fn run(mut ws: WebSocket, state: AppState, guard: AdmissionGuard) {
    let _guard = guard;
    let limits = state.config.limits.clone();
    let shutdown = state.shutdown.clone();

    let peer = tokio::select! {
        r = timeout(limits.handshake_timeout(), handshake(&mut ws, &state)) => match r {
            Ok(Ok(p)) => p,
            Ok(Err((ErrorCode::Internal, _))) => return,
            Ok(Err((code, detail))) => {
                tracing::debug!(code = code.name(), detail = %detail, "handshake refused");
                return fail(&mut ws, &state, code, &detail).await;
            }
            Err(_) => return fail(&mut ws, &state, ErrorCode::HandshakeTimeout, "no handshake in time").await,
        },
        _ = shutdown.cancelled() => return fail(&mut ws, &state, ErrorCode::ShuttingDown, "relay shutting down").await,
    };

    let welcome = Frame::Welcome(Welcome {
        limits: state.session_limits(),
    });
    if send_frame(&mut ws, &state, &welcome).await.is_err() {
        return;
    }
    let id = state.next_id();
    let (tx, mut rx) = mpsc::channel::<Out>(limits.send_queue);
    let me = Arc::new(Peer::new(id, peer, tx));
    state.metrics.sessions_authenticated.inc();
    tracing::debug!(session = id, peer = %peer.short(), "session authenticated");

    let mut rooms: Vec<RoomId> = Vec::new();
    let end = session_loop(&mut ws, &state, &me, &mut rooms, &mut rx).await;

    for room in rooms.drain(..) {
        state.rooms.leave(room, &me, &state.metrics);
    }
    state.metrics.sessions_authenticated.dec();
    match end {
        Some(code) => {
            tracing::debug!(
                session = id,
                reason = code.name(),
                "session closed by relay"
            );
            fail(&mut ws, &state, code, code.name()).await;
        }
        None => {
            let cf = CloseFrame {
                code: close::NORMAL,
                reason: "bye".into(),
            };
            let _ = timeout(limits.write_timeout(), ws.send(Message::Close(Some(cf)))).await;
            tracing::debug!(session = id, "session closed by peer");
        }
    }
}

/// The frame loop. Returns the error code to close with, or `None` if the peer left.
async fn session_loop(
    ws: &mut WebSocket,
    state: &AppState,
    me: &Arc<Peer>,
    rooms: &mut Vec<RoomId>,
    rx: &mut mpsc::Receiver<Out>,
) -> Option<ErrorCode> {
    let limits = &state.config.limits;
    let now = Instant::now();
    let mut msgs = TokenBucket::new(limits.msgs_per_sec, limits.msgs_burst, now);
    let mut bytes = TokenBucket::new(
        limits.bytes_per_sec,
        limits.bytes_burst.max(limits.max_frame_bytes as u32),
        now,
    );
    let mut violations = Violations::new(limits.max_violations, now);
    let idle = limits.idle_timeout();
    let mut last_heard = tokio::time::Instant::now();
    let mut pinged = false;
    let mut ping_nonce: u64 = 0;
    let inflight = Arc::new(Semaphore::new(MAX_INFLIGHT_SUBMITS));

    loop {
        let deadline = if pinged {
            last_heard + idle
        } else {
            last_heard + idle / 2
        };
        tokio::select! {
            biased;
            _ = state.shutdown.cancelled() => return Some(ErrorCode::ShuttingDown),
            code = me.kicked() => return Some(code),
            out = rx.recv() => {
                let Some(out) = out else { return Some(ErrorCode::Internal) };
                match timeout(limits.write_timeout(), ws.send(Message::Binary(out.bytes))).await {
                    Ok(Ok(())) => {
                        state.metrics.frames_out.inc();
                        if let Some(t0) = out.t0 {
                            state.metrics.forward_latency.observe(t0.elapsed().as_secs_f64());
                        }
                    }
                    Ok(Err(_)) => return None,
                    Err(_) => return Some(ErrorCode::SlowReader),
                }
            }
            r = read(ws, limits.max_frame_bytes) => {
                last_heard = tokio::time::Instant::now();
                pinged = false;
                let t0 = Instant::now();
                let reply = match r {
                    Read::Closed => return None,
                    Read::Bad(e) => {
                        state.metrics.frame_in("invalid", 0);
                        let code = ErrorCode::from(&e);
                        if code.is_fatal() {
                            return Some(code);
                        }
                        state.metrics.drop(code.name());
                        if violations.record(t0) {
                            return Some(ErrorCode::TooManyErrors);
                        }
                        Some(Frame::error(code, None, e.to_string()))
                    }
                    Read::Frame(f, n) => {
                        state.metrics.frame_in(f.kind(), n);
                        if !msgs.try_take(1, t0) || !bytes.try_take(n as u32, t0) {
                            state.metrics.drop(ErrorCode::RateLimited.name());
                            if violations.record(t0) {
                                return Some(ErrorCode::TooManyErrors);
                            }
                            Some(Frame::error(ErrorCode::RateLimited, None, format!("{} frame dropped", f.kind())))
                        } else {
                            match handle(state, me, rooms, f, t0, &inflight) {
                                Ok(reply) => reply,
                                Err(err) => {
                                    state.metrics.drop(err.code.name());
                                    if violations.record(t0) {
                                        return Some(ErrorCode::TooManyErrors);
                                    }
                                    Some(Frame::Error(err))
                                }
                            }
                        }
                    }
                };
                if let Some(reply) = reply
                    && send_frame(ws, state, &reply).await.is_err()
                {
                    return Some(ErrorCode::SlowReader);
                }
            }
            _ = sleep_until(deadline) => {
                if pinged {
                    return Some(ErrorCode::IdleTimeout);
                }
                pinged = true;
                ping_nonce = ping_nonce.wrapping_add(1);
                if send_frame(ws, state, &Frame::Ping(Ping { nonce: ping_nonce })).await.is_err() {
                    return Some(ErrorCode::SlowReader);
                }
            }
        }
    }
}

fn ef(code: ErrorCode, room: Option<RoomId>, detail: impl Into<String>) -> ErrorFrame {
    ErrorFrame {
        code,
        room,
        detail: detail.into(),
    }
}

/// Receipt submissions one session may have waiting for the durable commit.
pub const MAX_INFLIGHT_SUBMITS: usize = 4;

fn anchor_error(id: u32, code: ErrorCode, detail: impl Into<String>) -> Frame {
    Frame::AnchorError(AnchorError {
        id,
        code,
        detail: detail.into(),
    })
}

/// `SubmitReceipts`: the same checks as `POST /log/submit` (batch size, decoding, both
/// signatures), then the append; the answer is queued to this session once committed.
fn submit_receipts(
    state: &AppState,
    me: &Arc<Peer>,
    s: SubmitReceipts,
    inflight: &Arc<Semaphore>,
) -> Option<Frame> {
    let Some(log) = state.log.clone() else {
        return Some(anchor_error(
            s.id,
            ErrorCode::Unsupported,
            "no log on this relay",
        ));
    };
    let Ok(permit) = inflight.clone().try_acquire_owned() else {
        return Some(anchor_error(
            s.id,
            ErrorCode::RateLimited,
            format!("at most {MAX_INFLIGHT_SUBMITS} submissions in flight"),
        ));
    };
    let (st, me) = (state.clone(), me.clone());
    state.tracker.spawn(async move {
        let _permit = permit;
        let id = s.id;
        let receipts = s.receipts.into_iter().map(|b| b.into_vec()).collect();
        let reply = match log.submit(receipts).await {
            Ok(promises) => {
                let mut out = Vec::with_capacity(promises.len());
                for p in promises {
                    let Some(h) = hex::decode(&p.leaf_hash)
                        .ok()
                        .and_then(|v| <[u8; 32]>::try_from(v).ok())
                    else {
                        continue;
                    };
                    out.push(InclusionPromise {
                        index: p.index,
                        leaf_hash: h,
                    });
                }
                Frame::Promises(Promises {
                    id,
                    origin: log.log.origin().to_owned(),
                    promises: out,
                })
            }
            Err(SubmitError::Invalid(m)) => anchor_error(id, ErrorCode::Malformed, m),
            Err(SubmitError::TooLarge(m)) => anchor_error(id, ErrorCode::TooLarge, m),
            Err(SubmitError::Log(e)) => anchor_error(id, ErrorCode::Internal, e.to_string()),
        };
        match reply.encode() {
            Ok(b) => {
                me.push(
                    Out {
                        bytes: Bytes::from(b),
                        t0: None,
                    },
                    &st.metrics,
                );
            }
            Err(e) => tracing::warn!(error = %e, "could not encode a log reply"),
        }
    });
    None
}

/// Handle one authenticated frame. `Ok(reply)` or `Err(error frame)` (a violation).
fn handle(
    state: &AppState,
    me: &Arc<Peer>,
    rooms: &mut Vec<RoomId>,
    f: Frame,
    t0: Instant,
    inflight: &Arc<Semaphore>,
) -> Result<Option<Frame>, ErrorFrame> {
    let limits = &state.config.limits;
    match f {
        Frame::SubmitReceipts(s) => Ok(submit_receipts(state, me, s, inflight)),
        Frame::GetCheckpoint(g) => Ok(Some(
            match state.log.as_ref().map(|l| l.served_checkpoint()) {
                Some(Some(note)) => Frame::CheckpointNote(CheckpointNote { id: g.id, note }),
                Some(None) => anchor_error(g.id, ErrorCode::Unsupported, "no checkpoint yet"),
                None => anchor_error(g.id, ErrorCode::Unsupported, "no log on this relay"),
            },
        )),
        Frame::Join(r) => {
            if !rooms.contains(&r.room) && rooms.len() >= limits.max_rooms_per_session {
                return Err(ef(
                    ErrorCode::TooManyRooms,
                    Some(r.room),
                    format!("at most {} rooms", limits.max_rooms_per_session),
                ));
            }
            let members = state
                .rooms
                .join(r.room, me, limits.max_members_per_room, &state.metrics)
                .map_err(|code| {
                    ef(
                        code,
                        Some(r.room),
                        format!("at most {} members", limits.max_members_per_room),
                    )
                })?;
            if !rooms.contains(&r.room) {
                rooms.push(r.room);
            }
            Ok(Some(Frame::Members(Members {
                room: r.room,
                members,
            })))
        }
        Frame::Leave(r) => {
            rooms.retain(|x| *x != r.room);
            state.rooms.leave(r.room, me, &state.metrics);
            Ok(None)
        }
        Frame::ListMembers(r) => {
            let members = state
                .rooms
                .members(r.room, me)
                .map_err(|c| ef(c, Some(r.room), "not in room"))?;
            Ok(Some(Frame::Members(Members {
                room: r.room,
                members,
            })))
        }
        Frame::Send(s) => {
            let room = s.room;
            let target = state
                .rooms
                .target(room, me, &s.to)
                .map_err(|c| ef(c, Some(room), c.name()))?;
            let deliver = Frame::Deliver(Deliver {
                room,
                from: me.peer,
                payload: s.payload,
            });
            match deliver.encode() {
                Ok(b) => {
                    target.push(
                        Out {
                            bytes: Bytes::from(b),
                            t0: Some(t0),
                        },
                        &state.metrics,
                    );
                    Ok(None)
                }
                Err(e) => Err(ef(ErrorCode::TooLarge, Some(room), e.to_string())),
            }
        }
        Frame::Ping(p) => Ok(Some(Frame::Pong(p))),
        Frame::Pong(_) | Frame::Error(_) => Ok(None),
        other => Err(ef(
            ErrorCode::Unexpected,
            None,
            format!("{} not expected from a node", other.kind()),
        )),
    }
}
