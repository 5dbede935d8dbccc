//! The tab as a circle member: node-lite's browser WebRTC driver ([`node_lite::rtc::web`])
//! exported to `web/circle.js` as `CircleMember`, plus circle links.
//!
//! One job engine owns a circle job: the node's (Rust), whose members are the circle's peers
//! *and* this tab's model workers (`localUp(i, rate)` / `localDown(i)` from `web/pool.js`).
//! JS gives a compute callback `(worker, texts, forPeer) → Promise<{data: Float32Array, dim}>`
//! that only runs texts on a Web Worker: `worker` is a worker index (that worker's shard of our
//! job) or `null` (any free worker: a shard a peer asked for when `forPeer`, else our own
//! fallback shard). Vectors come back as floats and stay floats into the job.
//!
//! Events arrive as plain objects with a `type`: `connected`, `peerUp`, `peerDown`, `rejected`,
//! `progress`, `done` (`data` Float32Array in input order, `dim`, `members`), `failed`,
//! `receipt` (base64 log entry), `stats`. In `progress` and `done`, this tab is one member (its
//! workers' and fallback shares summed, `isSelf`), with the per-worker rows in `workers`.

use js_sys::{Float32Array, Function, Promise, Reflect};
use node_lite::circle::{Circle, CircleKey};
use node_lite::identity::{Keypair, PeerId};
use node_lite::jobs::Capabilities;
use node_lite::rtc::app::{AppCmd, AppEvent};
use node_lite::rtc::web::{self, ComputeResult, Lane, WebCircle, WebConfig};
use serde::Serialize;

use crate::members::{JsProgress, TabParts, rows};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

/// A new circle: its link under `base` (the page URL without fragment).
#[wasm_bindgen(js_name = circleCreate)]
pub fn circle_create(base: &str) -> Result<String, JsError> {
    let key = CircleKey::generate().map_err(|e| JsError::new(&e.to_string()))?;
    Ok(key.link(base))
}

/// The circle key's token from a link, a `#c=…` fragment or a bare token; an error says why not.
#[wasm_bindgen(js_name = circleToken)]
pub fn circle_token(link: &str) -> Result<String, JsError> {
    CircleKey::parse(link)
        .map(|k| k.token())
        .map_err(|e| JsError::new(&e.to_string()))
}

#[derive(serde::Deserialize)]
struct Opts {
    link: String,
    relays: Vec<String>,
    name: String,
    backend: String,
    rate: f32,
    #[serde(default)]
    ice: Vec<String>,
    /// The tab's model workers (shards served for peers at once).
    #[serde(default = "one")]
    workers: usize,
}

fn one() -> usize {
    1
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsPeer {
    id: String,
    short: String,
    phase: String,
    name: Option<String>,
    backend: Option<String>,
    rate: Option<f32>,
    bytes_sent: u64,
    bytes_received: u64,
    connects: u32,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum JsEvent {
    Connected {
        url: String,
    },
    PeerUp {
        id: String,
        short: String,
        name: String,
        backend: String,
        rate: f32,
    },
    PeerDown {
        id: String,
    },
    Rejected {
        id: String,
        reason: String,
    },
    Progress(JsProgress),
    Failed {
        error: String,
    },
    /// A countersigned receipt (base64 of the log entry) of a shard a peer computed for us.
    Receipt {
        receipt: String,
    },
    #[serde(rename_all = "camelCase")]
    Stats {
        peers: Vec<JsPeer>,
        remote_shards: u64,
        remote_round_trip_ms: u64,
        served: u64,
        served_residence_ms: u64,
        computed: u64,
        compute_ms: u64,
        rejected: u64,
    },
}

fn to_js(ev: AppEvent, tab: &mut TabParts) -> JsValue {
    let ser = serde_wasm_bindgen::Serializer::json_compatible();
    let plain = |e: JsEvent| e.serialize(&ser).unwrap_or(JsValue::NULL);
    match ev {
        AppEvent::Connected { url } => plain(JsEvent::Connected { url }),
        AppEvent::PeerUp { peer, caps } => plain(JsEvent::PeerUp {
            id: peer.to_string(),
            short: peer.short(),
            name: caps.name,
            backend: caps.backend,
            rate: caps.texts_per_sec,
        }),
        AppEvent::PeerDown { peer } => plain(JsEvent::PeerDown {
            id: peer.to_string(),
        }),
        AppEvent::Rejected { peer, reason } => plain(JsEvent::Rejected {
            id: peer.to_string(),
            reason,
        }),
        AppEvent::Progress(p) => plain(JsEvent::Progress(tab.on_progress(p))),
        AppEvent::JobFailed(error) => {
            tab.clear();
            plain(JsEvent::Failed { error })
        }
        AppEvent::Receipt(r) => {
            use base64::Engine as _;
            plain(JsEvent::Receipt {
                receipt: base64::engine::general_purpose::STANDARD.encode(r.encode()),
            })
        }
        AppEvent::Stats {
            peers,
            times,
            rejected,
            ..
        } => plain(JsEvent::Stats {
            peers: peers
                .into_iter()
                .map(|(peer, phase, caps, stats)| JsPeer {
                    id: peer.to_string(),
                    short: peer.short(),
                    phase: format!("{phase:?}").to_lowercase(),
                    name: caps.as_ref().map(|c| c.name.clone()),
                    backend: caps.as_ref().map(|c| c.backend.clone()),
                    rate: caps.as_ref().map(|c| c.texts_per_sec),
                    bytes_sent: stats.bytes_sent,
                    bytes_received: stats.bytes_received,
                    connects: stats.connects,
                })
                .collect(),
            remote_shards: times.remote_shards,
            remote_round_trip_ms: times.remote_round_trip_ms,
            served: times.served,
            served_residence_ms: times.served_residence_ms,
            computed: times.computed,
            compute_ms: times.compute_ms,
            rejected,
        }),
        AppEvent::JobDone { vectors, members } => {
            tab.clear();
            // Vectors as one flat Float32Array (2,000 × 384 as nested JS arrays is slow).
            let dim = vectors.first().map_or(0, Vec::len);
            let flat: Vec<f32> = vectors.into_iter().flatten().collect();
            let o = js_sys::Object::new();
            let members = rows(&members);
            let _ = Reflect::set(&o, &"type".into(), &"done".into());
            let _ = Reflect::set(&o, &"dim".into(), &(dim as u32).into());
            let _ = Reflect::set(&o, &"data".into(), &Float32Array::from(&flat[..]));
            let _ = Reflect::set(
                &o,
                &"members".into(),
                &members.serialize(&ser).unwrap_or(JsValue::NULL),
            );
            o.into()
        }
        AppEvent::Gen(_) | AppEvent::Serve(_) | AppEvent::Misbehaviour(_) => JsValue::NULL,
    }
}

async fn run_compute(f: Function, lane: Lane, texts: Vec<String>) -> ComputeResult {
    let arr: js_sys::Array = texts.iter().map(|t| JsValue::from_str(t)).collect();
    let (worker, for_peer) = match lane {
        Lane::Worker(i) => (JsValue::from(i), false),
        Lane::Any { for_peer } => (JsValue::NULL, for_peer),
    };
    let p = f
        .call3(&JsValue::NULL, &worker, &arr, &JsValue::from(for_peer))
        .map_err(|e| format!("compute: {e:?}"))?;
    let v = JsFuture::from(Promise::resolve(&p)).await.map_err(|e| {
        match e.dyn_ref::<js_sys::Error>() {
            Some(e) => String::from(e.message()),
            None => format!("{e:?}"),
        }
    })?;
    let data = Reflect::get(&v, &"data".into())
        .ok()
        .and_then(|d| d.dyn_into::<Float32Array>().ok())
        .ok_or("compute returned no data")?;
    let dim = Reflect::get(&v, &"dim".into())
        .ok()
        .and_then(|d| d.as_f64())
        .ok_or("compute returned no dim")? as u32;
    if dim == 0 || data.length() != dim * texts.len() as u32 {
        return Err("compute returned the wrong number of values".into());
    }
    Ok((data.to_vec(), dim))
}

/// This tab in one circle. `free()` (or dropping it) leaves.
#[wasm_bindgen]
pub struct CircleMember {
    inner: WebCircle,
    me: PeerId,
    token: String,
}

#[wasm_bindgen]
impl CircleMember {
    /// Join: `opts = {link, relays: [ws URL…], name, backend, rate, ice?: [url…], workers?}`;
    /// `compute(worker, texts, forPeer)`, `onEvent(event)` as in the module docs.
    #[wasm_bindgen(constructor)]
    pub fn new(opts: JsValue, compute: Function, on_event: Function) -> Result<Self, JsError> {
        let o: Opts =
            serde_wasm_bindgen::from_value(opts).map_err(|e| JsError::new(&e.to_string()))?;
        if o.relays.is_empty() {
            return Err(JsError::new("no relay to signal through"));
        }
        let key = CircleKey::parse(&o.link).map_err(|e| JsError::new(&e.to_string()))?;
        let keypair = Keypair::generate().map_err(|e| JsError::new(&e.to_string()))?;
        let me = keypair.peer_id();
        let caps = Capabilities {
            name: o.name.chars().take(48).collect(),
            backend: o.backend.chars().take(16).collect(),
            texts_per_sec: o.rate.max(0.1),
            chat: Vec::new(),
        };
        let mut cfg = WebConfig::new(o.relays, keypair, Circle::new(key.clone()), caps);
        cfg.ice_servers = o.ice;
        cfg.compute_slots = o.workers.clamp(1, node_lite::rtc::node::MAX_LOCAL_WORKERS);
        let compute: web::ComputeFn =
            Box::new(move |lane, texts| Box::pin(run_compute(compute.clone(), lane, texts)));
        let mut tab = TabParts::default();
        let on_event: web::EventFn = Box::new(move |ev| {
            // This tab neither serves nor requests answers over the circle yet (it advertises
            // no chat model, so the node refuses requests itself): nothing to show.
            if matches!(
                ev,
                AppEvent::Gen(_) | AppEvent::Serve(_) | AppEvent::Misbehaviour(_)
            ) {
                return;
            }
            if let Err(e) = on_event.call1(&JsValue::NULL, &to_js(ev, &mut tab)) {
                web_sys::console::error_1(&e);
            }
        });
        let inner = web::spawn(cfg, compute, on_event).map_err(|e| JsError::new(&e.to_string()))?;
        Ok(CircleMember {
            inner,
            me,
            token: key.token(),
        })
    }

    /// Our member id (hex public key).
    #[wasm_bindgen(getter)]
    pub fn id(&self) -> String {
        self.me.to_string()
    }

    /// The circle's key token (what follows `#c=`).
    #[wasm_bindgen(getter)]
    pub fn token(&self) -> String {
        self.token.clone()
    }

    /// Embed `texts` across the circle; the answer is a `done` or `failed` event.
    #[wasm_bindgen(js_name = startJob)]
    pub fn start_job(&self, texts: Vec<String>) -> Result<(), JsError> {
        self.cmd(AppCmd::StartJob(texts))
    }

    /// Cancel the running job (a `failed` event follows).
    pub fn cancel(&self) -> Result<(), JsError> {
        self.cmd(AppCmd::Cancel)
    }

    /// This tab's model worker `worker` is up (`rate`: its measured texts/s, or NaN): a member
    /// of circle jobs from now on.
    #[wasm_bindgen(js_name = localUp)]
    pub fn local_up(&self, worker: u32, rate: f64) -> Result<(), JsError> {
        let rate = (rate.is_finite() && rate > 0.0).then_some(rate);
        self.cmd(AppCmd::LocalUp { worker, rate })
    }

    /// This tab's model worker `worker` is gone: its shards go to the others.
    #[wasm_bindgen(js_name = localDown)]
    pub fn local_down(&self, worker: u32) -> Result<(), JsError> {
        self.cmd(AppCmd::LocalDown { worker })
    }

    /// Ask for a `stats` event.
    pub fn stats(&self) -> Result<(), JsError> {
        self.cmd(AppCmd::Stats)
    }

    fn cmd(&self, c: AppCmd) -> Result<(), JsError> {
        self.inner
            .command(c)
            .map_err(|_| JsError::new("the circle member stopped"))
    }
}
