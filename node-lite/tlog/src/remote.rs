//! Talking to relay logs over HTTP (native, feature `fetch`, blocking `ureq`): the log API
//! client used by the relay's witness tasks and by `shoal-node receipts`, and
//! [`receipt_status`] (the [`crate::audit`] flow over HTTP), which answers "is each of my
//! receipts included, and witnessed?".
//!
//! Every body read is capped ([`MAX_BODY_BYTES`]) and every request has a timeout.

use std::io::Read as _;
use std::time::Duration;

use serde::Deserialize;

use super::api::{self, ConsistencyResponse, Equivocation, InclusionResponse, SubmitResponse};
use super::audit::{Audit, AuditReport};
use super::checkpoint::{CosignatureVerifier, EquivocationProof, SignedCheckpoint};
use super::note::NoteVerifier;
use super::{Hash, leaf_hash};

pub use api::MAX_BODY_BYTES;

/// Failures talking to a relay's log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The relay answered with an error status.
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        /// The full URL requested.
        url: String,
        /// The non-2xx HTTP status code.
        status: u16,
        /// The error body, lossily decoded as UTF-8 and cut to 512 bytes.
        body: String,
    },
    /// Connection, timeout or I/O trouble.
    #[error("{url}: {message}")]
    Transport {
        /// The full URL requested.
        url: String,
        /// The HTTP client's error message.
        message: String,
    },
    /// The body is not what the API promises.
    #[error("{url}: malformed response: {message}")]
    Malformed {
        /// The full URL requested.
        url: String,
        /// What was wrong (too large, not UTF-8, bad JSON or proof hashes, …).
        message: String,
    },
}

impl FetchError {
    /// The HTTP status, if the relay answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            FetchError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The answer to a C2SP tlog-witness `add-checkpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddCheckpointReply {
    /// 200: the witness's cosignature line(s) (`— name base64\n`).
    Cosigned(String),
    /// 409 with `text/x.tlog.size`: the witness's latest size for this log differs from `old`.
    Conflict(u64),
}

/// One relay's log API at `base` (e.g. `http://relay.example:7070`; paths are under `/log`).
#[derive(Clone)]
pub struct LogHttp {
    base: String,
    agent: ureq::Agent,
}

impl LogHttp {
    /// A client with a per-request timeout (connect + whole response).
    pub fn new(base: &str, timeout: Duration) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            agent: ureq::AgentBuilder::new().timeout(timeout).build(),
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn read(url: &str, resp: ureq::Response) -> Result<Vec<u8>, FetchError> {
        let mut body = Vec::new();
        resp.into_reader()
            .take(MAX_BODY_BYTES + 1)
            .read_to_end(&mut body)
            .map_err(|e| FetchError::Transport {
                url: url.to_owned(),
                message: e.to_string(),
            })?;
        if body.len() as u64 > MAX_BODY_BYTES {
            return Err(FetchError::Malformed {
                url: url.to_owned(),
                message: "body too large".into(),
            });
        }
        Ok(body)
    }

    fn result(
        url: &str,
        r: Result<ureq::Response, ureq::Error>,
    ) -> Result<(u16, Option<String>, Vec<u8>), FetchError> {
        match r {
            Ok(resp) => {
                let ct = resp.header("content-type").map(str::to_owned);
                Ok((resp.status(), ct, Self::read(url, resp)?))
            }
            Err(ureq::Error::Status(status, resp)) => {
                let ct = resp.header("content-type").map(str::to_owned);
                Ok((status, ct, Self::read(url, resp)?))
            }
            Err(e) => Err(FetchError::Transport {
                url: url.to_owned(),
                message: e.to_string(),
            }),
        }
    }

    /// `GET path`: the status and the (capped) body, whatever the status.
    pub fn get_raw(&self, path: &str) -> Result<(u16, Vec<u8>), FetchError> {
        let url = format!("{}{path}", self.base);
        let (status, _, body) = Self::result(&url, self.agent.get(&url).call())?;
        Ok((status, body))
    }

    fn get(&self, path: &str) -> Result<Vec<u8>, FetchError> {
        let url = format!("{}{path}", self.base);
        let (status, _, body) = Self::result(&url, self.agent.get(&url).call())?;
        ok(url, status, body)
    }

    fn json<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<T, FetchError> {
        let url = format!("{}{path}", self.base);
        let body = self.get(path)?;
        serde_json::from_slice(&body).map_err(|e| FetchError::Malformed {
            url,
            message: e.to_string(),
        })
    }

    /// `GET /log/checkpoint`: signed note text (with the cosignatures the relay collected).
    pub fn checkpoint(&self) -> Result<String, FetchError> {
        let url = format!("{}{}", self.base, api::CHECKPOINT);
        let body = self.get(api::CHECKPOINT)?;
        String::from_utf8(body).map_err(|_| FetchError::Malformed {
            url,
            message: "not UTF-8".into(),
        })
    }

    /// `GET /log/proof/consistency?old=A&new=B`.
    pub fn consistency(&self, old: u64, new: u64) -> Result<Vec<Hash>, FetchError> {
        let path = api::consistency_path(old, new);
        let j: ConsistencyResponse = self.json(&path)?;
        hashes(&format!("{}{path}", self.base), &j.proof)
    }

    /// `GET /log/proof/inclusion?leaf_hash=H&size=S`: `(index, proof)`; `Ok(None)` when the
    /// log does not hold the leaf, or not below `size` yet (404).
    pub fn inclusion_by_leaf(
        &self,
        leaf: &Hash,
        size: u64,
    ) -> Result<Option<(u64, Vec<Hash>)>, FetchError> {
        let path = api::inclusion_by_leaf_path(leaf, size);
        match self.json::<InclusionResponse>(&path) {
            Ok(j) => Ok(Some((
                j.index,
                hashes(&format!("{}{path}", self.base), &j.proof)?,
            ))),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /log/submit` (entry bundle): `(origin, [(index, leaf hash)])` once committed.
    pub fn submit(&self, receipts: &[Vec<u8>]) -> Result<(String, Vec<(u64, Hash)>), FetchError> {
        let url = format!("{}{}", self.base, api::SUBMIT);
        let bad = |m: &str| FetchError::Malformed {
            url: url.clone(),
            message: m.to_owned(),
        };
        let body = super::tiles::encode_bundle(receipts.iter().map(|r| r.as_slice()))
            .ok_or_else(|| bad("receipt too large for a bundle"))?;
        let (status, _, resp) = Self::result(
            &url,
            self.agent
                .post(&url)
                .set("content-type", "application/octet-stream")
                .send_bytes(&body),
        )?;
        let resp = ok(url.clone(), status, resp)?;
        let j: SubmitResponse = serde_json::from_slice(&resp).map_err(|e| bad(&e.to_string()))?;
        let mut out = Vec::with_capacity(j.promises.len());
        for p in j.promises {
            let h = p.leaf().map_err(|e| bad(&format!("leaf hash: {e}")))?;
            out.push((p.index, h));
        }
        Ok((j.origin, out))
    }

    /// `POST /log/witness/add-checkpoint` (C2SP tlog-witness) with a body made by
    /// `AddCheckpoint::encode` (relay) or by hand: `old N\n` + proof lines + `\n` + note.
    pub fn add_checkpoint(&self, body: &str) -> Result<AddCheckpointReply, FetchError> {
        let url = format!("{}{}", self.base, api::WITNESS_ADD_CHECKPOINT);
        let (status, ct, resp) = Self::result(
            &url,
            self.agent
                .post(&url)
                .set("content-type", "text/plain")
                .send_string(body),
        )?;
        if status == 409
            && ct
                .as_deref()
                .is_some_and(|c| c.starts_with("text/x.tlog.size"))
        {
            let size = std::str::from_utf8(&resp)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| FetchError::Malformed {
                    url: url.clone(),
                    message: "bad size in 409".into(),
                })?;
            return Ok(AddCheckpointReply::Conflict(size));
        }
        let resp = ok(url.clone(), status, resp)?;
        String::from_utf8(resp)
            .map(AddCheckpointReply::Cosigned)
            .map_err(|_| FetchError::Malformed {
                url,
                message: "not UTF-8".into(),
            })
    }

    /// `GET /log/witness/checkpoint?origin=O`: the latest checkpoint of `origin` this relay
    /// cosigned, with its cosignature; `Ok(None)` if it never witnessed that log.
    pub fn witnessed(&self, origin: &str) -> Result<Option<String>, FetchError> {
        let path = api::witnessed_path(origin);
        match self.get(&path) {
            Ok(b) => Ok(String::from_utf8(b).ok()),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /log/witness/equivocations`: proofs this relay caught (unverified: check each with
    /// [`EquivocationProof::verify`] against the accused log's key).
    pub fn equivocations(&self) -> Result<Vec<EquivocationProof>, FetchError> {
        let v: Vec<Equivocation> = self.json(api::WITNESS_EQUIVOCATIONS)?;
        Ok(v.into_iter()
            .map(|e| EquivocationProof { a: e.a, b: e.b })
            .collect())
    }
}

fn ok(url: String, status: u16, body: Vec<u8>) -> Result<Vec<u8>, FetchError> {
    if (200..300).contains(&status) {
        Ok(body)
    } else {
        let mut body = String::from_utf8_lossy(&body).into_owned();
        // At most 512 bytes, cut on a character boundary (the relay controls the text).
        let end = (0..=body.len().min(512))
            .rev()
            .find(|&i| body.is_char_boundary(i))
            .unwrap_or(0);
        body.truncate(end);
        Err(FetchError::Status { url, status, body })
    }
}

fn hashes(url: &str, v: &[String]) -> Result<Vec<Hash>, FetchError> {
    api::decode_proof(v).map_err(|e| FetchError::Malformed {
        url: url.to_owned(),
        message: e.to_string(),
    })
}

/// A relay log the caller trusts to exist: where it is and its C2SP verifier key
/// (`shoal-relay key` prints it; the key name is the checkpoint origin).
#[derive(Debug, Clone)]
pub struct TrustedLog {
    /// Base URL, e.g. `http://relay.example:7070`.
    pub url: String,
    /// The log's signed-note verifier key.
    pub key: NoteVerifier,
}

/// Settings of [`receipt_status`].
#[derive(Debug, Clone)]
pub struct StatusOptions {
    /// Cosignatures needed from distinct witnesses for "witnessed". The witnesses are the
    /// *other* logs in the list (a relay's cosigner key is its log key, alg `0x04`) plus
    /// [`Self::extra_witnesses`].
    pub quorum: usize,
    /// More witness keys (`name+id+base64(0x04||key)`), e.g. witnesses that run no log.
    pub extra_witnesses: Vec<CosignatureVerifier>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Last accepted checkpoint per log (signed note text, as returned in
    /// [`LogStatus::checkpoint`] by an earlier call; match by origin). When given, the new
    /// checkpoint must be consistent with it (and an equivocation is reported).
    pub last_checkpoints: Vec<String>,
}

impl Default for StatusOptions {
    fn default() -> Self {
        Self {
            quorum: 1,
            extra_witnesses: Vec::new(),
            timeout: Duration::from_secs(10),
            last_checkpoints: Vec::new(),
        }
    }
}

/// What was learned about one log.
#[derive(Debug, Clone)]
pub struct LogStatus {
    /// Base URL.
    pub url: String,
    /// Checkpoint origin (the key name).
    pub origin: String,
    /// The latest checkpoint's signed note (log signature verified), to persist for the
    /// next call's [`StatusOptions::last_checkpoints`]. `None` if it could not be had.
    pub checkpoint: Option<String>,
    /// Tree size of that checkpoint.
    pub size: u64,
    /// Names of the configured witnesses with a valid cosignature on it.
    pub cosigners: Vec<String>,
    /// `cosigners.len() >= quorum` (and consistent with the last checkpoint, if given).
    pub witnessed: bool,
    /// An equivocation proof, if this log signed two different trees of one size.
    pub equivocation: Option<EquivocationProof>,
    /// Why the checkpoint could not be had or trusted.
    pub error: Option<String>,
}

/// The status of one receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptStatus {
    /// RFC 9162 leaf hash of the encoded receipt.
    pub leaf_hash: Hash,
    /// Origin of the log that holds it (first found in list order), if any.
    pub origin: Option<String>,
    /// Its leaf index there.
    pub index: Option<u64>,
    /// An inclusion proof against that log's signed checkpoint verified.
    pub included: bool,
    /// ... and that checkpoint carries a witness quorum.
    pub witnessed: bool,
}

/// Result of [`receipt_status`].
#[derive(Debug, Clone)]
pub struct StatusReport {
    /// One per log, in the order given.
    pub logs: Vec<LogStatus>,
    /// One per receipt, in the order given.
    pub receipts: Vec<ReceiptStatus>,
}

/// For each receipt (encoded bytes), find a log that includes it and verify: the log's
/// checkpoint signature, the witness quorum on it, consistency with the last checkpoint the
/// caller saw (if any), and the receipt's inclusion proof against that checkpoint — the
/// [`Audit`] flow, one log after the other, each asked only for the receipts no earlier log
/// proved. Network errors are reported per log, never panics; a receipt found nowhere is
/// `included: false`.
pub fn receipt_status(
    logs: &[TrustedLog],
    receipts: &[Vec<u8>],
    opts: &StatusOptions,
) -> StatusReport {
    let leaves: Vec<Hash> = receipts.iter().map(|r| leaf_hash(r)).collect();
    let mut out: Vec<ReceiptStatus> = leaves
        .iter()
        .map(|&leaf_hash| ReceiptStatus {
            leaf_hash,
            origin: None,
            index: None,
            included: false,
            witnessed: false,
        })
        .collect();
    let mut statuses = Vec::with_capacity(logs.len());
    for log in logs {
        let pending: Vec<usize> = (0..out.len()).filter(|&i| !out[i].included).collect();
        let report = audit_log(
            log,
            logs,
            opts,
            pending.iter().map(|&i| leaves[i]).collect(),
        );
        for (k, &i) in pending.iter().enumerate() {
            if let Some(index) = report.included.get(k).copied().flatten() {
                out[i] = ReceiptStatus {
                    leaf_hash: leaves[i],
                    origin: Some(report.origin.clone()),
                    index: Some(index),
                    included: true,
                    witnessed: report.witnessed,
                };
            }
        }
        statuses.push(LogStatus {
            url: log.url.clone(),
            size: report.checkpoint.as_ref().map_or(0, |c| c.checkpoint.size),
            checkpoint: report.checkpoint.as_ref().map(|c| c.note.to_text()),
            origin: report.origin,
            cosigners: report.cosigners,
            witnessed: report.witnessed,
            equivocation: report.equivocation,
            error: report.error.map(|e| e.to_string()),
        });
    }
    StatusReport {
        logs: statuses,
        receipts: out,
    }
}

/// One log's [`Audit`] over HTTP. Its witnesses are the *other* logs' keys (a relay cosigns
/// with its log key) plus the extra ones; its last checkpoint the first of
/// `opts.last_checkpoints` that this log signed.
fn audit_log(
    log: &TrustedLog,
    all: &[TrustedLog],
    opts: &StatusOptions,
    leaves: Vec<Hash>,
) -> AuditReport {
    let mut witnesses: Vec<CosignatureVerifier> = all
        .iter()
        .filter(|l| l.key.public_key != log.key.public_key)
        .filter_map(|l| CosignatureVerifier::new(&l.key.name, l.key.public_key).ok())
        .collect();
    witnesses.extend(opts.extra_witnesses.iter().cloned());
    let last = opts
        .last_checkpoints
        .iter()
        .find(|t| SignedCheckpoint::verify(t.as_bytes(), &log.key, None).is_ok());
    let http = LogHttp::new(&log.url, opts.timeout);
    let mut audit = Audit::new(
        log.key.clone(),
        witnesses,
        opts.quorum,
        last.map(String::as_str),
        leaves,
    );
    while let Some(path) = audit.next_request() {
        match http.get_raw(&path) {
            Ok((status, body)) => audit.on_response(status, &body),
            Err(e) => audit.on_transport_error(e.to_string()),
        }
    }
    audit.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::Ed25519Signer;

    /// Nothing listens: every failure is reported per log, receipts are "not included",
    /// nothing panics, and it does not hang past the timeout.
    #[test]
    fn unreachable_relay_is_reported_not_fatal() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let key = Ed25519Signer::from_seed("a.example/log", &[3; 32]).expect("key");
        let logs = vec![TrustedLog {
            url: format!("http://127.0.0.1:{port}"),
            key: NoteVerifier::from_key_text(&key.verifier_key()).expect("vk"),
        }];
        let t0 = std::time::Instant::now();
        let rep = receipt_status(
            &logs,
            &[b"receipt".to_vec()],
            &StatusOptions {
                timeout: Duration::from_secs(5),
                ..StatusOptions::default()
            },
        );
        assert!(t0.elapsed() < Duration::from_secs(30));
        assert!(rep.logs[0].error.is_some());
        assert!(rep.logs[0].checkpoint.is_none());
        assert!(!rep.logs[0].witnessed);
        assert_eq!(rep.receipts.len(), 1);
        assert!(!rep.receipts[0].included && !rep.receipts[0].witnessed);
        assert_eq!(rep.receipts[0].leaf_hash, leaf_hash(b"receipt"));
        assert_eq!(
            api::witnessed_path("a.example/log"),
            "/log/witness/checkpoint?origin=a.example%2Flog"
        );
    }

    #[test]
    fn a_long_non_ascii_error_body_is_cut_on_a_character_boundary() {
        let body = format!("a{}", "é".repeat(300)).into_bytes();
        let Err(FetchError::Status { status, body, .. }) = ok("u".into(), 500, body) else {
            panic!("an error status must be an error");
        };
        assert_eq!(status, 500);
        assert_eq!(body.len(), 511);
        assert!(body.ends_with('é'));
    }
}
