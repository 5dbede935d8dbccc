//! What a circle member's application sees, whichever driver runs it (webrtc-rs natively,
//! the browser's `RTCPeerConnection` in wasm): commands in, events out. The part of the driver
//! loop that does not touch a transport is here, written once for both drivers:
//! [`on_signal_event`] (the relay's events into the node), [`on_command`] (the application's
//! commands into the node) and [`route`] (the node's outputs split into transport work, model
//! work and application events).

use super::node::{CircleNode, GenCounters, GenKey, GenOut, Member, NodeOut, ServeOut, ShardTimes};
use super::session::{NetOp, PeerStats, Phase};
use crate::jobs::{Capabilities, GenAsk, GenFinish, JobId, Progress, Task};
use crate::signal::Event;
use shoal_proto::RoomId;
use shoal_proto::identity::PeerId;

/// What the application asks.
#[derive(Debug)]
pub enum AppCmd {
    /// Embed these texts across the circle.
    StartJob(Vec<String>),
    /// Cancel the running job.
    Cancel,
    /// Report peers and counters ([`AppEvent::Stats`]).
    Stats,
    /// Local model worker `worker` is up (`rate`: measured texts/s, if known): a member of
    /// jobs from now on (see [`CircleNode::local_up`]).
    LocalUp {
        /// The worker.
        worker: u32,
        /// Its measured rate.
        rate: Option<f64>,
    },
    /// Local model worker `worker` is gone.
    LocalDown {
        /// The worker.
        worker: u32,
    },
    /// Generate an answer across the circle ([`CircleNode::start_generation`]).
    Generate(GenAsk),
    /// Stop our answer.
    StopGeneration,
    /// The local engine's tokens for [`GenOut::RunLocal`].
    GenLocalTokens {
        /// Job.
        job: JobId,
        /// Attempt.
        attempt: u32,
        /// Position of the first.
        start: usize,
        /// Ids.
        tokens: Vec<u32>,
    },
    /// The local generation ended.
    GenLocalDone {
        /// Job.
        job: JobId,
        /// Attempt.
        attempt: u32,
        /// Why, or the error.
        outcome: Result<GenFinish, String>,
    },
    /// The outcome of [`GenOut::Verify`] for an answer of `len` tokens.
    GenVerified {
        /// Job.
        job: JobId,
        /// Answer length checked.
        len: usize,
        /// `Err(position)` of the first rejected token.
        outcome: Result<(), usize>,
    },
    /// Tokens of a generation served for a peer ([`ServeOut::Generate`]).
    GenEmit {
        /// Which.
        key: GenKey,
        /// Position of the first.
        start: usize,
        /// Ids.
        tokens: Vec<u32>,
    },
    /// A generation served for a peer ended: `Ok(finish)` or the error.
    GenServed {
        /// Which.
        key: GenKey,
        /// Outcome.
        outcome: Result<GenFinish, String>,
    },
}

/// What the application hears.
#[derive(Debug)]
pub enum AppEvent {
    /// Connected to a relay.
    Connected {
        /// The relay URL.
        url: String,
    },
    /// A peer is up.
    PeerUp {
        /// Peer.
        peer: PeerId,
        /// Capabilities.
        caps: Capabilities,
    },
    /// A peer went down.
    PeerDown {
        /// Peer.
        peer: PeerId,
    },
    /// Something from a peer was refused.
    Rejected {
        /// Peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// Live progress of our job.
    Progress(Progress<Member>),
    /// Our job finished.
    JobDone {
        /// Vectors in input order.
        vectors: Vec<Vec<f32>>,
        /// Every member's final progress.
        members: Vec<Progress<Member>>,
    },
    /// A countersigned receipt of a shard a peer computed for our job (to anchor and keep).
    Receipt(Box<shoal_tlog::receipt::Receipt>),
    /// Our job failed.
    JobFailed(String),
    /// Answer to [`AppCmd::Stats`].
    Stats {
        /// Peers with their counters.
        peers: Vec<(PeerId, Phase, Option<Capabilities>, PeerStats)>,
        /// Shard timing.
        times: ShardTimes,
        /// Inputs refused so far.
        rejected: u64,
        /// Generation counters.
        generation: GenCounters,
    },
    /// Our answer (see [`GenOut`]).
    Gen(GenOut),
    /// Generation for a peer (see [`ServeOut`]): run it, or stop it.
    Serve(ServeOut),
    /// A member's answer failed verification: the signed record (to keep and anchor).
    Misbehaviour(Box<shoal_tlog::receipt::Misbehaviour>),
}

/// Where one [`NodeOut`] goes.
#[derive(Debug)]
pub enum Routed {
    /// To the transport.
    Net(NetOp),
    /// To the model (any local worker); the outcome goes to [`CircleNode::computed`].
    Compute(Task<PeerId>),
    /// To local worker `worker`; the outcome goes to [`CircleNode::local_done`].
    RunLocal {
        /// The worker.
        worker: u32,
        /// Job.
        job: JobId,
        /// Shard.
        shard: u32,
        /// Texts.
        texts: Vec<String>,
    },
    /// To the application.
    App(AppEvent),
}

/// Split a node output by destination.
pub fn route(o: NodeOut) -> Routed {
    match o {
        NodeOut::Net(op) => Routed::Net(op),
        NodeOut::Compute(task) => Routed::Compute(task),
        NodeOut::RunLocal {
            worker,
            job,
            shard,
            texts,
        } => Routed::RunLocal {
            worker,
            job,
            shard,
            texts,
        },
        NodeOut::PeerUp { peer, caps } => Routed::App(AppEvent::PeerUp { peer, caps }),
        NodeOut::PeerDown { peer } => Routed::App(AppEvent::PeerDown { peer }),
        NodeOut::Rejected { peer, reason } => {
            tracing::info!(peer = %peer.short(), %reason, "rejected");
            Routed::App(AppEvent::Rejected { peer, reason })
        }
        NodeOut::Progress(p) => Routed::App(AppEvent::Progress(p)),
        NodeOut::JobDone {
            vectors, members, ..
        } => Routed::App(AppEvent::JobDone { vectors, members }),
        NodeOut::Receipt(r) => Routed::App(AppEvent::Receipt(r)),
        NodeOut::JobFailed { error, .. } => Routed::App(AppEvent::JobFailed(error.to_string())),
        NodeOut::Gen(g) => Routed::App(AppEvent::Gen(g)),
        NodeOut::Serve(s) => Routed::App(AppEvent::Serve(s)),
        NodeOut::Misbehaviour(m) => Routed::App(AppEvent::Misbehaviour(m)),
    }
}

/// A signaling event for `room` into the node; `Connected` is for the application.
pub fn on_signal_event(
    node: &mut CircleNode,
    room: RoomId,
    ev: Event,
    now_ms: u64,
) -> Option<AppEvent> {
    match ev {
        Event::Connected { url, .. } => return Some(AppEvent::Connected { url }),
        Event::Members { room: r, members } if r == room => node.on_members(&members, now_ms),
        Event::MemberJoined { room: r, peer } if r == room => node.on_member_joined(peer, now_ms),
        Event::MemberLeft { room: r, peer } if r == room => node.on_member_left(&peer, now_ms),
        Event::Message {
            room: r,
            from,
            payload,
        } if r == room => node.on_signal(from, &payload, now_ms),
        other => tracing::debug!(event = ?other, "signaling event"),
    }
    None
}

/// An application command into the node; the answer, if any, is for the application.
pub fn on_command(node: &mut CircleNode, cmd: AppCmd, now_ms: u64) -> Option<AppEvent> {
    match cmd {
        AppCmd::StartJob(texts) => {
            if let Err(e) = node.start_job(texts, now_ms) {
                return Some(AppEvent::JobFailed(e.to_string()));
            }
        }
        AppCmd::Cancel => node.cancel_job(now_ms),
        AppCmd::Stats => {
            let s = node.session();
            return Some(AppEvent::Stats {
                peers: s.peers(),
                times: node.times().clone(),
                rejected: s.rejected(),
                generation: node.gen_counters().clone(),
            });
        }
        AppCmd::Generate(ask) => {
            if let Err(e) = node.start_generation(ask, now_ms) {
                return Some(AppEvent::Gen(GenOut::Failed {
                    error: e.to_string(),
                }));
            }
        }
        AppCmd::StopGeneration => node.cancel_generation(now_ms),
        AppCmd::GenLocalTokens {
            job,
            attempt,
            start,
            tokens,
        } => node.gen_local_tokens(job, attempt, start, &tokens, now_ms),
        AppCmd::GenLocalDone {
            job,
            attempt,
            outcome,
        } => node.gen_local_done(job, attempt, outcome, now_ms),
        AppCmd::GenVerified { job, len, outcome } => node.gen_verified(job, len, outcome, now_ms),
        AppCmd::GenEmit { key, start, tokens } => {
            if !node.gen_emit(&key, start, &tokens, now_ms) {
                return Some(AppEvent::Serve(ServeOut::Stop(key)));
            }
        }
        AppCmd::GenServed { key, outcome } => node.gen_served(&key, outcome, now_ms),
        AppCmd::LocalUp { worker, rate } => node.local_up(worker, rate, now_ms),
        AppCmd::LocalDown { worker } => node.local_down(worker, now_ms),
    }
    None
}
