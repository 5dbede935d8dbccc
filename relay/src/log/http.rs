//! HTTP API of the log, as an `axum::Router` the relay mounts.
//!
//! tlog-tiles reads (static-friendly, cacheable):
//! - `GET /log/checkpoint` — latest signed checkpoint (+ collected cosignatures), text
//! - `GET /log/keys` — `{"log": verifier key, "witnesses": [cosigner keys]}` for light clients
//! - `GET /log/tile/<L>/<N>[.p/<W>]` — hash tile
//! - `GET /log/tile/entries/<N>[.p/<W>]` — entry bundle
//!
//! Shoal API (JSON unless noted):
//! - `POST /log/submit` — a batch of receipts (entry-bundle body, `application/octet-stream`,
//!   or JSON `{"receipts": [base64, ...]}`), each decoded and signature-checked; answers
//!   `{"origin", "promises": [{"index", "leaf_hash"}]}` once durably committed
//! - `GET /log/proof/inclusion?index=I[&size=S]` or `?leaf_hash=<hex>[&size=S]`
//! - `GET /log/proof/consistency?old=A[&new=B]`
//! - `GET /log/entries?start=A&end=B` — entry bundle (at most 1024)
//! - `POST /log/witness/add-checkpoint` — C2SP tlog-witness (when this relay witnesses)
//! - `GET /log/witness/checkpoint?origin=O` — latest checkpoint of O we cosigned
//! - `GET /log/witness/equivocations` — equivocation proofs caught
//!
//! Sizes default to the latest checkpoint's size.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use shoal_tlog::Hash;
use shoal_tlog::api;
use shoal_tlog::checkpoint::Checkpoint;
use shoal_tlog::note::{Note, NoteSigner};
use shoal_tlog::receipt::{MAX_RECEIPT_BYTES, verify_log_entry};
use shoal_tlog::tiles::{Tile, decode_bundle, encode_bundle};

use super::store::{Log, LogError};
use super::witness::{AddCheckpoint, MAX_ADD_CHECKPOINT_BYTES, Witness, WitnessError};

/// Most receipts in one submission.
pub const MAX_SUBMIT_RECEIPTS: usize = shoal_proto::MAX_SUBMIT_RECEIPTS;
/// Largest submission body: a full batch of maximal receipts, base64 in JSON.
pub const MAX_SUBMIT_BYTES: usize = MAX_SUBMIT_RECEIPTS * (MAX_RECEIPT_BYTES + 2) * 4 / 3 + 4096;

/// Shared state of the log routes.
#[derive(Clone)]
pub struct LogState {
    /// The relay's own log: submissions, tiles, proofs and checkpoints.
    pub log: Arc<Log>,
    /// The witness of peer logs; `None` → the `/log/witness/*` routes answer 404.
    pub witness: Option<Arc<Witness>>,
    /// Check receipt encoding and signatures on submit (on in production; the benchmark
    /// may turn it off to measure the log alone).
    pub verify_receipts: bool,
    /// TEST HOOK (`--test-equivocate`): equivocate on purpose. `None` in production.
    pub test_equivocate: Option<Equivocate>,
    /// What `/log/keys` publishes (the relay sets it; `None` → 404).
    pub keys: Option<Arc<LogKeys>>,
}

pub use shoal_tlog::api::LogKeys;

/// The equivocation test hook: once the latest honest checkpoint carries at least
/// `after_cosignatures` cosignatures, `/log/checkpoint` (HTTP and WebSocket) serves a fork
/// instead: same origin and size, another root, signed by the log key.
#[derive(Clone)]
pub struct Equivocate {
    /// Signs the fork: the log's own key, so the fork verifies like an honest checkpoint.
    pub signer: Arc<dyn NoteSigner>,
    /// Cosignatures the honest checkpoint must carry before the fork is served.
    pub after_cosignatures: usize,
}

impl LogState {
    /// A log state with receipt verification on and no test hook.
    pub fn new(log: Arc<Log>, witness: Option<Arc<Witness>>) -> Self {
        Self {
            log,
            witness,
            verify_receipts: true,
            test_equivocate: None,
            keys: None,
        }
    }

    /// The checkpoint served at `/log/checkpoint` (and over the WebSocket): the latest
    /// signed checkpoint with the witness cosignatures collected for it.
    pub fn served_checkpoint(&self) -> Option<String> {
        if let Some(eq) = &self.test_equivocate
            && let Some((size, note, cosigs)) = self.log.latest()
            && size > 0
            && cosigs >= eq.after_cosignatures
            && let Ok(n) = Note::parse(note.as_bytes())
            && let Ok(cp) = Checkpoint::parse_body(&n.text)
        {
            let fork = Checkpoint::new(&cp.origin, size, shoal_tlog::node_hash(&cp.root, &cp.root));
            if let Ok(f) = fork.sign(eq.signer.as_ref()) {
                return Some(f.to_text());
            }
        }
        self.log.checkpoint()
    }

    /// Decodes and verifies (both signatures, off the async workers) a batch of encoded
    /// receipts and misbehaviour records ([`verify_log_entry`]), appends it, and resolves once durably committed. Shared by `POST
    /// /log/submit` and the WebSocket `SubmitReceipts` frame, so both enforce the same rules.
    pub async fn submit(&self, receipts: Vec<Vec<u8>>) -> Result<Vec<Promise>, SubmitError> {
        if receipts.is_empty() {
            return Err(SubmitError::Invalid("empty batch".into()));
        }
        if receipts.len() > MAX_SUBMIT_RECEIPTS {
            return Err(SubmitError::TooLarge(format!(
                "at most {MAX_SUBMIT_RECEIPTS} receipts per batch"
            )));
        }
        let receipts = if self.verify_receipts {
            let checked = tokio::task::spawn_blocking(move || {
                for (i, r) in receipts.iter().enumerate() {
                    if let Err(e) = verify_log_entry(r) {
                        return Err(format!("receipt {i}: {e}"));
                    }
                }
                Ok(receipts)
            })
            .await;
            match checked {
                Ok(Ok(r)) => r,
                Ok(Err(msg)) => return Err(SubmitError::Invalid(msg)),
                Err(_) => {
                    return Err(SubmitError::Log(LogError::BadRequest(
                        "verifier task failed".into(),
                    )));
                }
            }
        } else {
            if let Some(i) = receipts.iter().position(|r| r.len() > MAX_RECEIPT_BYTES) {
                return Err(SubmitError::Invalid(format!("receipt {i}: too large")));
            }
            receipts
        };
        let hashes: Vec<Hash> = receipts.iter().map(|r| shoal_tlog::leaf_hash(r)).collect();
        let idx = self.log.append(receipts).await.map_err(SubmitError::Log)?;
        Ok(idx
            .into_iter()
            .zip(hashes)
            .map(|(index, h)| Promise {
                index,
                leaf_hash: hex::encode(h),
            })
            .collect())
    }
}

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// A receipt does not decode or a signature does not verify; or the batch is empty.
    #[error("{0}")]
    Invalid(String),
    /// Too many receipts in one batch.
    #[error("{0}")]
    TooLarge(String),
    /// The log could not take it.
    #[error(transparent)]
    Log(LogError),
}

/// The log's routes, all under `/log`.
pub fn routes(state: LogState) -> Router {
    Router::new()
        .route(api::CHECKPOINT, get(checkpoint))
        .route(api::KEYS, get(keys))
        .route(&format!("{}{{*path}}", api::TILE), get(tile))
        .route(
            api::SUBMIT,
            post(submit).layer(DefaultBodyLimit::max(MAX_SUBMIT_BYTES)),
        )
        .route(api::PROOF_INCLUSION, get(inclusion))
        .route(api::PROOF_CONSISTENCY, get(consistency))
        .route(api::ENTRIES, get(entries))
        .route(
            api::WITNESS_ADD_CHECKPOINT,
            post(add_checkpoint).layer(DefaultBodyLimit::max(MAX_ADD_CHECKPOINT_BYTES)),
        )
        .route(api::WITNESS_CHECKPOINT, get(witnessed))
        .route(api::WITNESS_EQUIVOCATIONS, get(equivocations))
        .route(api::EQUIVOCATIONS, get(equivocations))
        .with_state(state)
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": msg.into() })),
    )
        .into_response()
}

fn log_error(e: LogError) -> Response {
    let status = match &e {
        LogError::NotFound(_) => StatusCode::NOT_FOUND,
        LogError::BadRequest(_) | LogError::Proof(_) => StatusCode::BAD_REQUEST,
        LogError::Full | LogError::Closed => StatusCode::SERVICE_UNAVAILABLE,
        LogError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

fn binary(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response()
}

async fn checkpoint(State(s): State<LogState>) -> Response {
    match s.served_checkpoint() {
        Some(c) => text(c),
        None => error(StatusCode::NOT_FOUND, "no checkpoint yet"),
    }
}

async fn keys(State(s): State<LogState>) -> Response {
    match &s.keys {
        Some(k) => axum::Json(k.as_ref().clone()).into_response(),
        None => error(StatusCode::NOT_FOUND, "keys not published"),
    }
}

async fn tile(State(s): State<LogState>, Path(path): Path<String>) -> Response {
    let Ok(t) = Tile::parse(&format!("tile/{path}")) else {
        return error(StatusCode::NOT_FOUND, "bad tile path");
    };
    match s.log.tile(&t) {
        Ok(b) => binary(b),
        Err(e) => log_error(e),
    }
}

pub use shoal_tlog::api::{Promise, SubmitResponse};

async fn submit(State(s): State<LogState>, headers: HeaderMap, body: Bytes) -> Response {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let receipts: Vec<Vec<u8>> = if is_json {
        let Ok(j) = serde_json::from_slice::<api::SubmitRequest>(&body) else {
            return error(StatusCode::BAD_REQUEST, "malformed JSON");
        };
        if j.receipts.len() > MAX_SUBMIT_RECEIPTS {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too many receipts in one batch",
            );
        }
        let mut out = Vec::with_capacity(j.receipts.len());
        for (i, r) in j.receipts.iter().enumerate() {
            match B64.decode(r) {
                Ok(b) => out.push(b),
                Err(_) => {
                    return error(StatusCode::BAD_REQUEST, format!("receipt {i}: not base64"));
                }
            }
        }
        out
    } else {
        match decode_bundle(&body, MAX_SUBMIT_RECEIPTS) {
            Some(v) => v.into_iter().map(|r| r.to_vec()).collect(),
            None => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "malformed bundle or too many receipts in one batch",
                );
            }
        }
    };
    match s.submit(receipts).await {
        Ok(promises) => axum::Json(SubmitResponse {
            origin: s.log.origin().to_owned(),
            promises,
        })
        .into_response(),
        Err(SubmitError::Invalid(m)) => error(StatusCode::BAD_REQUEST, m),
        Err(SubmitError::TooLarge(m)) => error(StatusCode::PAYLOAD_TOO_LARGE, m),
        Err(SubmitError::Log(e)) => log_error(e),
    }
}

#[derive(Deserialize)]
struct InclusionQuery {
    index: Option<u64>,
    leaf_hash: Option<String>,
    size: Option<u64>,
}

pub use shoal_tlog::api::InclusionResponse;

async fn inclusion(State(s): State<LogState>, Query(q): Query<InclusionQuery>) -> Response {
    let size = q.size.unwrap_or_else(|| s.log.checkpoint_size());
    let index = match (q.index, q.leaf_hash) {
        (Some(i), None) => i,
        (None, Some(h)) => {
            let Some(h) = hex::decode(h)
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
            else {
                return error(StatusCode::BAD_REQUEST, "leaf_hash must be 64 hex digits");
            };
            match s.log.index_of(&h) {
                Ok(Some(i)) => i,
                Ok(None) => return error(StatusCode::NOT_FOUND, "unknown leaf"),
                Err(e) => return log_error(e),
            }
        }
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "give exactly one of index, leaf_hash",
            );
        }
    };
    if index >= size {
        return error(StatusCode::NOT_FOUND, "not yet covered by that tree size");
    }
    match s.log.inclusion_proof(index, size) {
        Ok(p) => axum::Json(InclusionResponse {
            index,
            size,
            proof: api::encode_proof(&p),
        })
        .into_response(),
        Err(e) => log_error(e),
    }
}

#[derive(Deserialize)]
struct ConsistencyQuery {
    old: u64,
    new: Option<u64>,
}

pub use shoal_tlog::api::ConsistencyResponse;

async fn consistency(State(s): State<LogState>, Query(q): Query<ConsistencyQuery>) -> Response {
    let new = q.new.unwrap_or_else(|| s.log.checkpoint_size());
    if q.old > new {
        return error(StatusCode::BAD_REQUEST, "old > new");
    }
    match s.log.consistency_proof(q.old, new) {
        Ok(p) => axum::Json(ConsistencyResponse {
            old: q.old,
            new,
            proof: api::encode_proof(&p),
        })
        .into_response(),
        Err(e) => log_error(e),
    }
}

#[derive(Deserialize)]
struct RangeQuery {
    start: u64,
    end: u64,
}

async fn entries(State(s): State<LogState>, Query(q): Query<RangeQuery>) -> Response {
    match s.log.entries(q.start, q.end) {
        Ok(es) => match encode_bundle(es.iter().map(|e| e.as_slice())) {
            Some(b) => binary(b),
            None => error(StatusCode::INTERNAL_SERVER_ERROR, "entry too large"),
        },
        Err(e) => log_error(e),
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn add_checkpoint(State(s): State<LogState>, body: Bytes) -> Response {
    let Some(w) = s.witness.clone() else {
        return error(StatusCode::NOT_FOUND, "this relay is not a witness");
    };
    let req = match AddCheckpoint::parse(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let res = tokio::task::spawn_blocking(move || w.add_checkpoint(&req, now_secs())).await;
    match res {
        Ok(Ok(line)) => text(line),
        Ok(Err(WitnessError::Conflict(size))) => (
            StatusCode::CONFLICT,
            [(header::CONTENT_TYPE, "text/x.tlog.size")],
            format!("{size}\n"),
        )
            .into_response(),
        Ok(Err(e)) => {
            let status = match &e {
                WitnessError::BadRequest(_) => StatusCode::BAD_REQUEST,
                WitnessError::UnknownOrigin(_) => StatusCode::NOT_FOUND,
                WitnessError::Forbidden => StatusCode::FORBIDDEN,
                WitnessError::Equivocation(_) | WitnessError::Conflict(_) => StatusCode::CONFLICT,
                WitnessError::Inconsistent => StatusCode::UNPROCESSABLE_ENTITY,
                WitnessError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, e.to_string())
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "witness task failed"),
    }
}

#[derive(Deserialize)]
struct OriginQuery {
    origin: String,
}

async fn witnessed(State(s): State<LogState>, Query(q): Query<OriginQuery>) -> Response {
    let Some(w) = s.witness.clone() else {
        return error(StatusCode::NOT_FOUND, "this relay is not a witness");
    };
    match w.cosigned(&q.origin, now_secs()) {
        Ok(Some(n)) => text(n),
        Ok(None) => error(StatusCode::NOT_FOUND, "never witnessed that origin"),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn equivocations(State(s): State<LogState>) -> Response {
    let Some(w) = s.witness.clone() else {
        return axum::Json(Vec::<api::Equivocation>::new()).into_response();
    };
    match w.equivocations() {
        Ok(v) => axum::Json(
            v.into_iter()
                .map(|p| api::Equivocation { a: p.a, b: p.b })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
