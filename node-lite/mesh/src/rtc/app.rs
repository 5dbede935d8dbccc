//! What a circle member's application sees, whichever driver runs it (webrtc-rs natively,
//! the browser's `RTCPeerConnection` in wasm): commands in, events out, and [`route`], which
//! splits the node's outputs into transport work, model work and application events.

use super::node::{NodeOut, ShardTimes};
use super::session::{NetOp, PeerStats, Phase};
use crate::jobs::{Capabilities, Progress, Task};
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
    Progress(Progress<PeerId>),
    /// Our job finished.
    JobDone {
        /// Vectors in input order.
        vectors: Vec<Vec<f32>>,
        /// Every member's final progress.
        members: Vec<Progress<PeerId>>,
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
    },
}

/// Where one [`NodeOut`] goes.
#[derive(Debug)]
pub enum Routed {
    /// To the transport.
    Net(NetOp),
    /// To the model.
    Compute(Task<PeerId>),
    /// To the application.
    App(AppEvent),
}

/// Split a node output by destination.
pub fn route(o: NodeOut) -> Routed {
    match o {
        NodeOut::Net(op) => Routed::Net(op),
        NodeOut::Compute(task) => Routed::Compute(task),
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
    }
}
