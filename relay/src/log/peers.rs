//! Witnessing between relays. One background task per configured peer relay, each round:
//!
//! 1. **Witness the peer**: `GET <peer>/log/checkpoint`, verify it with the peer's key, fetch a
//!    consistency proof from the size this relay last cosigned for it, and run it through
//!    the local [`Witness::add_checkpoint`] (the same check-and-store as the C2SP
//!    `add-checkpoint` endpoint). Same size + other root is an equivocation: the proof is
//!    stored (served at `/log/witness/equivocations`) and logged at `warn`.
//! 2. **Get cosigned by the peer** (C2SP tlog-witness, log side): `POST
//!    <peer>/log/witness/add-checkpoint` with this relay's latest checkpoint and a consistency
//!    proof from the size the peer last cosigned (learned from a `409 text/x.tlog.size`).
//!    The returned cosignature is verified with the peer's key (alg `0x04`) and attached to
//!    the served checkpoint.
//!
//! A round runs every `witness_poll_ms`, and right away when this relay issues a new
//! checkpoint. Failures back off exponentially (with jitter) up to `witness_backoff_max_ms`.
//! Every HTTP request has `witness_timeout_ms`; bodies are capped; one request in flight per
//! peer; no queues.

use std::sync::Arc;
use std::time::Duration;

use shoal_tlog::checkpoint::{CosignatureVerifier, SignedCheckpoint};
use shoal_tlog::note::{Note, NoteSignature, NoteVerifier};
use shoal_tlog::remote::{AddCheckpointReply, LogHttp};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::store::Log;
use super::witness::{AddCheckpoint, Witness, WitnessError};
use crate::config::{LogSettings, PeerConfig};
use crate::metrics::Outcome;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// A configured peer relay, keys parsed.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Base URL.
    pub url: String,
    /// Its log key (origin = name).
    pub log_key: NoteVerifier,
    /// The same key as a cosigner (alg `0x04`).
    pub cosigner: CosignatureVerifier,
}

impl Peer {
    /// Parses a configured peer.
    pub fn from_config(c: &PeerConfig) -> Result<Self, String> {
        let log_key = NoteVerifier::from_key_text(&c.key)
            .map_err(|e| format!("peer {}: key {:?}: {e}", c.url, c.key))?;
        let cosigner = CosignatureVerifier::new(&log_key.name, log_key.public_key)
            .map_err(|e| format!("peer {}: {e}", c.url))?;
        if !(c.url.starts_with("http://") || c.url.starts_with("https://")) {
            return Err(format!("peer URL {:?} must be http:// or https://", c.url));
        }
        Ok(Self {
            url: c.url.trim_end_matches('/').to_owned(),
            log_key,
            cosigner,
        })
    }
}

struct PeerWorker {
    peer: Peer,
    http: LogHttp,
    log: Arc<Log>,
    witness: Arc<Witness>,
    /// The size of our checkpoint the peer holds (its old size for add-checkpoint).
    peer_old: u64,
    /// Size of our checkpoint the peer last cosigned.
    cosigned: Option<u64>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl PeerWorker {
    fn round(&mut self) -> Result<(), String> {
        let a = self.witness_peer();
        let b = self.get_cosigned();
        match (a, b) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
            (Err(a), Err(b)) => Err(format!("{a}; {b}")),
        }
    }

    /// Step 1: fetch the peer's checkpoint and witness it locally.
    fn witness_peer(&mut self) -> Result<(), String> {
        let note = self.http.checkpoint().map_err(|e| e.to_string())?;
        let sc = SignedCheckpoint::verify(note.as_bytes(), &self.peer.log_key, None)
            .map_err(|e| format!("peer checkpoint refused: {e}"))?;
        let origin = sc.checkpoint.origin.clone();
        let (old, old_root) = self
            .witness
            .latest(&origin)
            .map_err(|e| e.to_string())?
            .unwrap_or((0, shoal_tlog::EMPTY_ROOT));
        let new = sc.checkpoint.size;
        if new < old {
            tracing::warn!(peer = %self.peer.url, %origin, old, new, "peer log went backwards");
            return Ok(());
        }
        if new == old && sc.checkpoint.root == old_root {
            return Ok(());
        }
        let proof = if old > 0 && new > old {
            self.http.consistency(old, new).map_err(|e| e.to_string())?
        } else {
            Vec::new()
        };
        let req = AddCheckpoint {
            old_size: old,
            proof,
            note: note.into_bytes(),
        };
        match self.witness.add_checkpoint(&req, now_secs()) {
            Ok(_) => Ok(()),
            Err(WitnessError::Equivocation(size)) => {
                tracing::warn!(
                    peer = %self.peer.url,
                    %origin,
                    size,
                    "peer log EQUIVOCATED: two signed checkpoints of one size with different roots; proof stored"
                );
                Ok(())
            }
            // Raced with the peer's own add-checkpoint push; next round.
            Err(WitnessError::Conflict(_)) => Ok(()),
            Err(WitnessError::Inconsistent) => {
                tracing::warn!(peer = %self.peer.url, %origin, old, new, "peer checkpoint is not consistent with the one we cosigned");
                Err("inconsistent peer checkpoint".into())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Step 2: have the peer cosign our latest checkpoint.
    fn get_cosigned(&mut self) -> Result<(), String> {
        let Some((size, note, _)) = self.log.latest() else {
            return Ok(());
        };
        if self.cosigned == Some(size) {
            return Ok(());
        }
        let body_text = Note::parse(note.as_bytes())
            .map_err(|e| e.to_string())?
            .text;
        for _ in 0..3 {
            if self.peer_old > size {
                return Err(format!(
                    "peer holds size {} of our log, above our checkpoint {size}",
                    self.peer_old
                ));
            }
            let proof = if self.peer_old > 0 && self.peer_old < size {
                self.log
                    .consistency_proof(self.peer_old, size)
                    .map_err(|e| e.to_string())?
            } else {
                Vec::new()
            };
            let body = AddCheckpoint::encode(self.peer_old, &proof, &note);
            match self.http.add_checkpoint(&body).map_err(|e| e.to_string())? {
                AddCheckpointReply::Conflict(n) => self.peer_old = n,
                AddCheckpointReply::Cosigned(lines) => {
                    let valid: Vec<String> = lines
                        .lines()
                        .filter(|l| !l.is_empty())
                        .take(8)
                        .filter_map(|l| {
                            let sig = NoteSignature::parse_line(l).ok()?;
                            self.peer.cosigner.verify_sig(&body_text, &sig)?;
                            Some(sig.to_line())
                        })
                        .collect();
                    if valid.is_empty() {
                        return Err("peer returned no valid cosignature".into());
                    }
                    self.log.add_cosignatures(size, &valid);
                    self.cosigned = Some(size);
                    self.peer_old = size;
                    return Ok(());
                }
            }
        }
        Err("add-checkpoint kept conflicting".into())
    }
}

/// Spawns one witnessing task per peer; they stop when `shutdown` is cancelled.
pub fn spawn(
    peers: Vec<Peer>,
    log: Arc<Log>,
    witness: Arc<Witness>,
    settings: &LogSettings,
    rounds: Family<Outcome, Counter>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) {
    let poll = Duration::from_millis(settings.witness_poll_ms);
    let max = Duration::from_millis(settings.witness_backoff_max_ms);
    let timeout = Duration::from_millis(settings.witness_timeout_ms);
    for peer in peers {
        let worker = PeerWorker {
            http: LogHttp::new(&peer.url, timeout),
            peer,
            log: log.clone(),
            witness: witness.clone(),
            peer_old: 0,
            cosigned: None,
        };
        tracker.spawn(run(worker, poll, max, rounds.clone(), shutdown.clone()));
    }
}

/// Up to ±25 % jitter so peers do not poll in lockstep.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = shoal_proto::identity::random_bytes(&mut b);
    let r = f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX); // 0..=1
    d.mul_f64(0.75 + r * 0.5)
}

async fn run(
    worker: PeerWorker,
    poll: Duration,
    max: Duration,
    rounds: Family<Outcome, Counter>,
    shutdown: CancellationToken,
) {
    let mut issued = worker.log.subscribe_checkpoints();
    let url = worker.peer.url.clone();
    let mut worker = Some(worker);
    let mut backoff = poll;
    let mut failing = false;
    loop {
        let Some(mut w) = worker.take() else { return };
        let res = tokio::task::spawn_blocking(move || {
            let r = w.round();
            (w, r)
        })
        .await;
        let wait = match res {
            Ok((w, r)) => {
                worker = Some(w);
                let outcome = if r.is_ok() { "ok" } else { "error" };
                rounds.get_or_create(&Outcome { outcome }).inc();
                match r {
                    Ok(()) => {
                        if failing {
                            tracing::info!(peer = %url, "peer reachable again");
                        }
                        failing = false;
                        backoff = poll;
                        poll
                    }
                    Err(e) => {
                        if !failing {
                            tracing::info!(peer = %url, error = %e, "peer round failed; backing off");
                        } else {
                            tracing::debug!(peer = %url, error = %e, "peer round failed");
                        }
                        failing = true;
                        backoff = (backoff * 2).min(max);
                        backoff
                    }
                }
            }
            Err(e) => {
                tracing::error!(peer = %url, error = %e, "peer task panicked; stopping it");
                return;
            }
        };
        let wait = jitter(wait);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            r = issued.changed(), if !failing => {
                if r.is_err() {
                    return;
                }
            }
        }
    }
}
