//! The page's job driver: node-lite's sans-IO job engine ([`node_lite::jobs::Job`]) exported to
//! `web/pool.js`, which owns the Web Workers and feeds replies and time in.
//!
//! Members are `u32` ids: local model workers are their index (`0..N`), the requester itself
//! ("self", never excluded, no deadline) is [`SELF_MEMBER`] — the pool, a last-resort member with
//! a nominal rate that only gets work when no worker is left, and then runs it on whichever local
//! worker is alive (respawning one if needed). Circle members are members of the circle's job
//! (`circle.rs`), not of this one.
//!
//! Texts are ordered longest first before sharding ([`LengthOrder`]), so each shard holds similar
//! lengths; `takeOutput` returns the vectors in input order.

use js_sys::Float32Array;
use node_lite::jobs::msg::f32s_to_le;
use node_lite::jobs::{Action, Job, JobConfig, JobId, LengthOrder, MemberStatus, PeerMsg};
use serde::Serialize;
use wasm_bindgen::prelude::*;

/// Member id of the requester itself (the pool).
pub const SELF_MEMBER: u32 = u32::MAX;
/// Nominal capacity of the self member: it only gets shards when no other member can take them.
const SELF_RATE: f64 = 1e-3;

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum JsAction {
    Assign {
        to: u32,
        #[serde(rename = "isSelf")]
        is_self: bool,
        shard: u32,
        texts: Vec<String>,
    },
    Cancel {
        to: u32,
        #[serde(rename = "isSelf")]
        is_self: bool,
        shard: Option<u32>,
    },
    Progress {
        member: u32,
        #[serde(rename = "isSelf")]
        is_self: bool,
        status: String,
        #[serde(rename = "shardsDone")]
        shards_done: u32,
        #[serde(rename = "textsDone")]
        texts_done: f64,
        #[serde(rename = "inFlight")]
        in_flight: u32,
        rate: f64,
        #[serde(rename = "jobDone")]
        job_done: f64,
        #[serde(rename = "jobTotal")]
        job_total: f64,
    },
    Finished,
    Failed {
        error: String,
    },
}

fn status_text(s: &MemberStatus) -> String {
    match s {
        MemberStatus::Active => "active".into(),
        MemberStatus::Excluded(e) => format!("excluded: {e:?}"),
    }
}

fn convert(a: Action<u32>) -> JsAction {
    match a {
        Action::Assign {
            to,
            is_self,
            msg: PeerMsg::ShardRequest { shard, texts, .. },
        } => JsAction::Assign {
            to,
            is_self,
            shard,
            texts,
        },
        Action::Cancel { to, is_self, msg } => JsAction::Cancel {
            to,
            is_self,
            shard: match msg {
                PeerMsg::Cancel { shard, .. } => shard,
                _ => None,
            },
        },
        Action::Progress(p) => JsAction::Progress {
            member: p.member,
            is_self: p.is_self,
            status: status_text(&p.status),
            shards_done: p.shards_done,
            texts_done: p.texts_done as f64,
            in_flight: p.in_flight as u32,
            rate: p.rate,
            job_done: p.job_texts_done as f64,
            job_total: p.job_texts_total as f64,
        },
        Action::Finished => JsAction::Finished,
        Action::Failed(e) => JsAction::Failed {
            error: e.to_string(),
        },
        // The engine only assigns ShardRequests; anything else is a bug worth seeing.
        Action::Assign { .. } => JsAction::Failed {
            error: "internal: assign without a shard request".into(),
        },
    }
}

fn ms(now: f64) -> u64 {
    if now.is_finite() && now > 0.0 {
        now as u64
    } else {
        0
    }
}

/// One sharded embedding job on the page.
#[wasm_bindgen]
pub struct PoolJob {
    job: Job<u32>,
    order: LengthOrder,
    dim: usize,
}

#[wasm_bindgen]
impl PoolJob {
    /// A job over `texts` (any order) with `shard_texts` texts per shard and at most
    /// `max_in_flight` shards per member. `id` is 16 random bytes.
    #[wasm_bindgen(constructor)]
    pub fn new(
        id: &[u8],
        texts: Vec<String>,
        shard_texts: usize,
        max_in_flight: usize,
        min_deadline_ms: f64,
    ) -> Result<PoolJob, JsError> {
        let id: [u8; 16] = id
            .try_into()
            .map_err(|_| JsError::new("job id must be 16 bytes"))?;
        let order = LengthOrder::longest_first(&texts);
        let sorted = order
            .sort(&texts)
            .ok_or_else(|| JsError::new("internal: order length"))?;
        let cfg = JobConfig {
            shard_texts,
            max_in_flight,
            min_deadline_ms: ms(min_deadline_ms),
            ..JobConfig::default()
        };
        let dim = cfg.dim;
        let job = Job::new(JobId(id), sorted, cfg, SELF_MEMBER, SELF_RATE)
            .map_err(|e| JsError::new(&e.to_string()))?;
        Ok(PoolJob { job, order, dim })
    }

    /// Add a member with its measured capacity in texts/s (≤ 0 or NaN: the default).
    #[wasm_bindgen(js_name = addMember)]
    pub fn add_member(&mut self, id: u32, rate: f64, now: f64) -> Result<(), JsError> {
        if id == SELF_MEMBER {
            return Err(JsError::new("reserved member id"));
        }
        let rate = (rate.is_finite() && rate > 0.0).then_some(rate);
        self.job
            .add_member(id, rate, ms(now))
            .map_err(|e| JsError::new(&e.to_string()))
    }

    /// Assign the first shards.
    pub fn start(&mut self, now: f64) {
        self.job.start(ms(now));
    }

    /// The next action as a plain object (`{type: "assign"|"cancel"|"progress"|"finished"|
    /// "failed", …}`), or `undefined` when there is nothing to do.
    pub fn poll(&mut self) -> Result<JsValue, JsError> {
        match self.job.poll_action() {
            None => Ok(JsValue::UNDEFINED),
            Some(a) => {
                serde_wasm_bindgen::to_value(&convert(a)).map_err(|e| JsError::new(&e.to_string()))
            }
        }
    }

    /// A member returned the vectors of `shard` (`texts × 384` floats, row-major).
    #[wasm_bindgen(js_name = onResult)]
    pub fn on_result(&mut self, member: u32, shard: u32, vectors: &[f32], now: f64) -> bool {
        let msg = PeerMsg::ShardResult {
            job: self.job.id(),
            shard,
            dim: self.dim as u32,
            vectors: f32s_to_le(vectors),
        };
        self.job.on_message(&member, msg, ms(now)).is_ok()
    }

    /// A member failed `shard`.
    #[wasm_bindgen(js_name = onError)]
    pub fn on_error(&mut self, member: u32, shard: u32, reason: String, now: f64) -> bool {
        let mut reason = reason;
        if reason.len() > 200 {
            let mut cut = 200;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        let msg = PeerMsg::ShardError {
            job: self.job.id(),
            shard,
            reason,
        };
        self.job.on_message(&member, msg, ms(now)).is_ok()
    }

    /// A member is gone (worker crashed or terminated, channel closed).
    #[wasm_bindgen(js_name = memberLeft)]
    pub fn member_left(&mut self, member: u32, now: f64) {
        self.job.member_left(&member, ms(now));
    }

    /// Handle expired deadlines and assign free slots.
    pub fn tick(&mut self, now: f64) {
        self.job.tick(ms(now));
    }

    /// When to call [`PoolJob::tick`] next (ms, same clock as `now`), if any deadline is set.
    #[wasm_bindgen(js_name = nextDeadline)]
    pub fn next_deadline(&self) -> Option<f64> {
        self.job.next_deadline().map(|d| d as f64)
    }

    /// Cancel: every member with work gets a cancel action, then `failed` (cancelled).
    pub fn cancel(&mut self, now: f64) {
        self.job.cancel(ms(now));
    }

    #[wasm_bindgen(js_name = isRunning)]
    pub fn is_running(&self) -> bool {
        self.job.is_running()
    }

    /// Once finished: every vector, in input order, flattened (`texts × 384`). Taken once.
    #[wasm_bindgen(js_name = takeOutput)]
    pub fn take_output(&mut self) -> Option<Float32Array> {
        let rows = self.job.take_output()?;
        let flat: Vec<f32> = rows.concat();
        let back = self.order.restore_rows(&flat, self.dim)?;
        Some(Float32Array::from(back.as_slice()))
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Id of the self member.
    #[wasm_bindgen(js_name = selfMember)]
    pub fn self_member() -> u32 {
        SELF_MEMBER
    }
}
