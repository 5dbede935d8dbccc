//! Prometheus metrics (text format at `/metrics`), all prefixed `shoal_relay_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label: why something was dropped or refused (an error-code name).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// Stable name, see `ErrorCode::name`.
    pub reason: &'static str,
}

/// Label: frame kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    /// Stable name, see `Frame::kind`.
    pub kind: &'static str,
}

/// Label: outcome of a witnessing round with one peer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `ok` or `error`.
    pub outcome: &'static str,
}

/// The relay's metrics.
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket sessions (handshaking included).
    pub sessions: Gauge,
    /// Authenticated sessions.
    pub sessions_authenticated: Gauge,
    /// Rooms with at least one member.
    pub rooms: Gauge,
    /// Frames received, by kind (`invalid` for undecodable ones).
    pub frames_in: Family<Kind, Counter>,
    /// Frames written to sessions.
    pub frames_out: Counter,
    /// Bytes received in frames.
    pub bytes_in: Counter,
    /// Frames dropped or sessions refused/closed, by reason.
    pub drops: Family<Reason, Counter>,
    /// Seconds from a `Send` arriving to its `Deliver` being written to the addressee's socket.
    pub forward_latency: Histogram,
    /// Committed log size (leaves).
    pub log_size: Gauge,
    /// Size of the latest signed checkpoint.
    pub log_checkpoint_size: Gauge,
    /// Verified peer cosignatures attached to the latest checkpoint.
    pub log_checkpoint_cosignatures: Gauge,
    /// Witnessing rounds with peers, by outcome.
    pub witness_rounds: Family<Outcome, Counter>,
    /// Equivocation proofs this relay holds against peers.
    pub witness_equivocation_proofs: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Register everything.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("shoal_relay");
        let m = Metrics {
            sessions: Gauge::default(),
            sessions_authenticated: Gauge::default(),
            rooms: Gauge::default(),
            frames_in: Family::default(),
            frames_out: Counter::default(),
            bytes_in: Counter::default(),
            drops: Family::default(),
            // 10 µs .. ~1.3 s
            forward_latency: Histogram::new(exponential_buckets(0.000_01, 2.0, 18)),
            log_size: Gauge::default(),
            log_checkpoint_size: Gauge::default(),
            log_checkpoint_cosignatures: Gauge::default(),
            witness_rounds: Family::default(),
            witness_equivocation_proofs: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("sessions", "Open WebSocket sessions", m.sessions.clone());
        registry.register(
            "sessions_authenticated",
            "Sessions that completed the handshake",
            m.sessions_authenticated.clone(),
        );
        registry.register("rooms", "Rooms with at least one member", m.rooms.clone());
        registry.register("frames_in", "Frames received, by kind", m.frames_in.clone());
        registry.register(
            "frames_out",
            "Frames written to sessions",
            m.frames_out.clone(),
        );
        registry.register("bytes_in", "Bytes received in frames", m.bytes_in.clone());
        registry.register(
            "drops",
            "Frames dropped or sessions refused or closed, by reason",
            m.drops.clone(),
        );
        registry.register(
            "forward_latency_seconds",
            "Time from a Send arriving to the Deliver being written to the addressee",
            m.forward_latency.clone(),
        );
        registry.register(
            "log_size",
            "Committed log size (leaves)",
            m.log_size.clone(),
        );
        registry.register(
            "log_checkpoint_size",
            "Size of the latest signed checkpoint",
            m.log_checkpoint_size.clone(),
        );
        registry.register(
            "log_checkpoint_cosignatures",
            "Verified peer cosignatures on the latest checkpoint",
            m.log_checkpoint_cosignatures.clone(),
        );
        registry.register(
            "witness_rounds",
            "Witnessing rounds with peer relays, by outcome",
            m.witness_rounds.clone(),
        );
        registry.register(
            "witness_equivocation_proofs",
            "Equivocation proofs held against peer relays",
            m.witness_equivocation_proofs.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Count one drop.
    pub fn drop(&self, reason: &'static str) {
        self.drops.get_or_create(&Reason { reason }).inc();
    }

    /// Count one received frame.
    pub fn frame_in(&self, kind: &'static str, bytes: usize) {
        self.frames_in.get_or_create(&Kind { kind }).inc();
        self.bytes_in.inc_by(bytes as u64);
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if prometheus_client::encoding::text::encode(&mut s, &self.registry).is_err() {
            s.clear();
        }
        s
    }
}
