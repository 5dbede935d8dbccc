//! The tab's own jobs (no circle): node-lite's sans-IO job engine ([`node_lite::jobs::Job`])
//! driven here, in the page's wasm, by one `spawn_local` loop. `web/pool.js` only runs shards on
//! its Web Workers (the `compute` callback) and says which workers are up or gone; everything
//! else — sharding, deadlines, exclusion, reassignment, cancellation, the order of the output —
//! is the engine's, driven by the same kind of loop as the circle's (`circle.rs`).
//!
//! Members are `u32`: local model worker `i` is member `i`; the requester ("self", never
//! excluded, no deadline) is [`SELF_MEMBER`], a last-resort member with a nominal rate that only
//! gets work when no worker can take it, run on whichever worker is alive (`compute(null, …)`).
//! Texts are ordered longest first before sharding ([`LengthOrder`]), so each shard holds similar
//! lengths; the output is in input order.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use futures_channel::mpsc;
use futures_util::StreamExt as _;
use futures_util::future::{Either, select};
use js_sys::{Float32Array, Function, Promise};
use node_lite::jobs::{Action, Job, JobConfig, JobId, LengthOrder, PeerMsg, Progress};
use serde::Serialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, future_to_promise, spawn_local};

use crate::state::MemberStatus;

/// Member id of the requester itself (the pool's fallback).
pub const SELF_MEMBER: u32 = u32::MAX;
/// Nominal capacity of the self member: it only gets shards when no other member can take them.
const SELF_RATE: f64 = 1e-3;

/// Progress of one member, as `pool.js` shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsProgress {
    member: u32,
    is_self: bool,
    status: MemberStatus,
    shards_done: u32,
    texts_done: f64,
    in_flight: u32,
    rate: f64,
    job_done: f64,
    job_total: f64,
}

fn js_progress(p: &Progress<u32>) -> JsProgress {
    JsProgress {
        member: p.member,
        is_self: p.is_self,
        status: MemberStatus::of(&p.status),
        shards_done: p.shards_done,
        texts_done: p.texts_done as f64,
        in_flight: p.in_flight as u32,
        rate: p.rate,
        job_done: p.job_texts_done as f64,
        job_total: p.job_texts_total as f64,
    }
}

enum In {
    Done(u32, u32, Result<Vec<f32>, String>),
    Up(u32, Option<f64>),
    Down(u32),
    Cancel,
}

fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

fn js_message(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

/// One sharded embedding job on the tab's workers. `start()` runs it; `workerUp`,
/// `workerDown` and `cancel` may come at any time.
#[wasm_bindgen]
pub struct PoolRun {
    tx: mpsc::UnboundedSender<In>,
    loop_state: Rc<RefCell<Option<Loop>>>,
}

struct Loop {
    job: Job<u32>,
    order: LengthOrder,
    dim: usize,
    compute: Function,
    on_progress: Function,
    rx: mpsc::UnboundedReceiver<In>,
    tx: mpsc::UnboundedSender<In>,
}

#[wasm_bindgen]
impl PoolRun {
    /// A job over `texts` (any order) with `shard_texts` texts per shard, at most
    /// `max_in_flight` shards per worker and deadlines of at least `min_deadline_ms`.
    /// `compute(worker, texts)` → `Promise<{data: Float32Array}>` runs a shard on worker
    /// `worker` (`null`: any live worker); `on_progress(p)` gets each member's progress
    /// (`{member, isSelf, status, shardsDone, textsDone, inFlight, rate, jobDone, jobTotal}`).
    #[wasm_bindgen(constructor)]
    pub fn new(
        texts: Vec<String>,
        shard_texts: usize,
        max_in_flight: usize,
        min_deadline_ms: f64,
        compute: Function,
        on_progress: Function,
    ) -> Result<PoolRun, JsError> {
        let mut id = [0u8; 16];
        node_lite::identity::random_bytes(&mut id).map_err(|e| JsError::new(&e.to_string()))?;
        let order = LengthOrder::longest_first(&texts);
        let sorted = order
            .sort(&texts)
            .ok_or_else(|| JsError::new("internal: order length"))?;
        let cfg = JobConfig {
            shard_texts,
            max_in_flight,
            min_deadline_ms: if min_deadline_ms.is_finite() && min_deadline_ms > 0.0 {
                min_deadline_ms as u64
            } else {
                0
            },
            ..JobConfig::default()
        };
        let dim = cfg.dim;
        let job = Job::new(JobId(id), sorted, cfg, SELF_MEMBER, SELF_RATE)
            .map_err(|e| JsError::new(&e.to_string()))?;
        let (tx, rx) = mpsc::unbounded();
        Ok(PoolRun {
            tx: tx.clone(),
            loop_state: Rc::new(RefCell::new(Some(Loop {
                job,
                order,
                dim,
                compute,
                on_progress,
                rx,
                tx,
            }))),
        })
    }

    /// Worker `worker` is up (`rate`: its measured texts/s, or NaN): a member from now on.
    #[wasm_bindgen(js_name = workerUp)]
    pub fn worker_up(&self, worker: u32, rate: f64) {
        if worker != SELF_MEMBER {
            let rate = (rate.is_finite() && rate > 0.0).then_some(rate);
            let _ = self.tx.unbounded_send(In::Up(worker, rate));
        }
    }

    /// Worker `worker` is gone (crashed, terminated): its shards go to the others.
    #[wasm_bindgen(js_name = workerDown)]
    pub fn worker_down(&self, worker: u32) {
        let _ = self.tx.unbounded_send(In::Down(worker));
    }

    /// Cancel: `start()`'s promise rejects with an `AbortError`.
    pub fn cancel(&self) {
        let _ = self.tx.unbounded_send(In::Cancel);
    }

    /// Run the job: resolves to every vector in input order, flattened (`texts × 384`
    /// floats); rejects with the engine's error (`AbortError` when cancelled). Once only.
    pub fn start(&self) -> Promise {
        let Some(lp) = self.loop_state.borrow_mut().take() else {
            return Promise::reject(&JsError::new("the job was already started").into());
        };
        future_to_promise(async move { lp.run().await })
    }
}

impl Loop {
    async fn run(mut self) -> Result<JsValue, JsValue> {
        let t = now_ms();
        // Members that are up already came as `Up` before `start()`: take them first.
        while let Ok(ev) = self.rx.try_recv() {
            self.on_input(ev, t);
        }
        self.job.start(t);
        loop {
            if let Some(end) = self.pump() {
                return end;
            }
            let t = now_ms();
            let wake = self
                .job
                .next_deadline()
                .map_or(1000, |d| d.saturating_sub(t))
                .min(1000);
            let next = select(
                self.rx.next(),
                Box::pin(gloo_timers::future::sleep(Duration::from_millis(wake))),
            )
            .await;
            let t = now_ms();
            match next {
                Either::Left((Some(ev), _)) => self.on_input(ev, t),
                Either::Left((None, _)) => return Err(JsError::new("job dropped").into()),
                Either::Right(_) => self.job.tick(t),
            }
        }
    }

    fn on_input(&mut self, ev: In, t: u64) {
        match ev {
            In::Done(member, shard, Ok(vectors)) => {
                let _ = self.job.on_vectors(&member, shard, vectors, t);
            }
            In::Done(member, shard, Err(reason)) => {
                let msg = PeerMsg::ShardError {
                    job: self.job.id(),
                    shard,
                    reason: node_lite::jobs::msg::truncate_label(reason),
                };
                let _ = self.job.on_message(&member, msg, t);
            }
            // A restarted worker is already a member: it rejoins from the next job on.
            In::Up(worker, rate) => {
                let _ = self.job.add_member(worker, rate, t);
            }
            In::Down(worker) => self.job.member_left(&worker, t),
            In::Cancel => self.job.cancel(t),
        }
    }

    /// Carry out the engine's actions; `Some` once the job ended.
    fn pump(&mut self) -> Option<Result<JsValue, JsValue>> {
        let mut end = None;
        while let Some(a) = self.job.poll_action() {
            match a {
                Action::Assign {
                    to,
                    msg: PeerMsg::ShardRequest { shard, texts, .. },
                    ..
                } if end.is_none() => self.dispatch(to, shard, texts),
                // Queued shards of a cancelled member finish and are dropped by the engine;
                // `pool.js` drops this job's queued requests once it ends.
                Action::Assign { .. } | Action::Cancel { .. } => {}
                Action::Progress(p) => {
                    let ser = serde_wasm_bindgen::Serializer::json_compatible();
                    if let Ok(v) = js_progress(&p).serialize(&ser)
                        && let Err(e) = self.on_progress.call1(&JsValue::NULL, &v)
                    {
                        web_sys::console::error_1(&e);
                    }
                }
                Action::Finished => end = Some(self.output()),
                Action::Failed(e) => {
                    let err = js_sys::Error::new(&e.to_string());
                    if matches!(e, node_lite::jobs::JobError::Cancelled) {
                        err.set_name("AbortError");
                        err.set_message("cancelled");
                    }
                    end = Some(Err(err.into()));
                }
            }
        }
        end
    }

    fn output(&mut self) -> Result<JsValue, JsValue> {
        let rows = self
            .job
            .take_output()
            .ok_or_else(|| JsError::new("job finished without output"))?;
        let flat: Vec<f32> = rows.concat();
        let back = self
            .order
            .restore_rows(&flat, self.dim)
            .ok_or_else(|| JsError::new("internal: output order"))?;
        Ok(Float32Array::from(back.as_slice()).into())
    }

    /// Run one shard on worker `to` (or any worker, for the self member).
    fn dispatch(&self, to: u32, shard: u32, texts: Vec<String>) {
        let worker = if to == SELF_MEMBER {
            JsValue::NULL
        } else {
            JsValue::from(to)
        };
        let arr: js_sys::Array = texts.iter().map(|t| JsValue::from_str(t)).collect();
        let called = self.compute.call2(&JsValue::NULL, &worker, &arr);
        let tx = self.tx.clone();
        let n = texts.len();
        spawn_local(async move {
            let r = match called {
                Ok(p) => JsFuture::from(Promise::resolve(&p)).await,
                Err(e) => Err(e),
            };
            let r = r.map_err(|e| js_message(&e)).and_then(|v| {
                let data = js_sys::Reflect::get(&v, &"data".into())
                    .ok()
                    .and_then(|d| d.dyn_into::<Float32Array>().ok())
                    .ok_or_else(|| "compute returned no data".to_string())?;
                if n == 0 || !(data.length() as usize).is_multiple_of(n) {
                    return Err("compute returned the wrong number of values".into());
                }
                Ok(data.to_vec())
            });
            let _ = tx.unbounded_send(In::Done(to, shard, r));
        });
    }
}
