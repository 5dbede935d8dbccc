//! The tab's light client for the receipt log of the relay that serves the page.
//!
//! - **Trust**: the log key and the witnesses' cosigner keys come from `/log/keys` on first use
//!   and are pinned in `localStorage` (`shoal.trust`); later changes are reported, never
//!   adopted silently. `?quorum=N` (or `shoal.trust.quorum`) sets the witness quorum; the
//!   default is min(2, witnesses).
//! - **Checkpoint**: `/log/checkpoint` must carry the log's signature and a quorum of witness
//!   cosignatures, and be consistent (RFC 9162 proof from `/log/proof/consistency`) with the
//!   last checkpoint this tab accepted (`shoal.checkpoint`). Same size, other root → an
//!   equivocation, shown and kept.
//! - **Receipts**: each of my receipts (IndexedDB, `app/web/receipts.js`) gets an inclusion
//!   proof (`/log/proof/inclusion?leaf_hash=…&size=…`) verified against that checkpoint.
//! - Log growth: (time, size) of each accepted checkpoint, last [`MAX_GROWTH`] kept.
//!
//! All verification is `node_lite::tlog`: the sans-IO [`Audit`] flow, the same code
//! `shoal-node receipts` drives with `ureq`; this file is only fetch and storage glue. Every
//! body read is size-capped.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use node_lite::receipt::Receipt;
use node_lite::tlog::audit::{Audit, AuditError};
use node_lite::tlog::checkpoint::CosignatureVerifier;
use node_lite::tlog::note::{NoteError, NoteVerifier};
use node_lite::tlog::{api, leaf_hash};
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

/// Growth points kept.
const MAX_GROWTH: usize = 200;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(catch, js_namespace = shoalReceipts, js_name = list)]
    fn receipts_list() -> Result<js_sys::Promise, JsValue>;
}

/// Pinned trust settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Trust {
    pub log: String,
    pub witnesses: Vec<String>,
    pub quorum: Option<usize>,
}

/// One receipt's status.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct ReceiptView {
    pub job: String,
    pub shard: u32,
    pub worker: String,
    pub ms: u64,
    pub leaf_hash: String,
    pub included: bool,
    pub index: Option<u64>,
    pub witnessed: bool,
}

/// What the Receipts view shows (and `shoalLight.check()` returns).
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub origin: String,
    pub size: u64,
    pub cosigners: usize,
    pub quorum: usize,
    pub witnessed: bool,
    /// The two signed notes, if the log was caught equivocating.
    pub equivocation: Option<[String; 2]>,
    pub error: Option<String>,
    /// The relay now publishes other keys than the pinned ones.
    pub keys_changed: bool,
    pub growth: Vec<(f64, u64)>,
    pub receipts: Vec<ReceiptView>,
}

/// Why a check could not complete (shown in the Receipts view as `Report::error`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LightError {
    /// Not running in a window (a worker has no page to check for).
    #[error("no window")]
    NoWindow,
    /// A browser API was missing or threw.
    #[error("{api}: {message}")]
    Js {
        /// The API or call.
        api: String,
        /// What it threw.
        message: String,
    },
    /// A response body over [`api::MAX_BODY_BYTES`].
    #[error("GET {0}: response too large")]
    TooLarge(String),
    /// The tab's receipt store (`app/web/receipts.js`) is not there or failed.
    #[error("receipt store: {0}")]
    ReceiptStore(String),
    /// No pinned keys, and the relay publishes none.
    #[error("this relay publishes no log keys ({})", api::KEYS)]
    NoKeys,
    /// The pinned log key does not parse.
    #[error("log key: {0}")]
    LogKey(NoteError),
    /// The audit of the log failed (transport, status, a refused checkpoint, equivocation).
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The checkpoint carries too few witness cosignatures.
    #[error("checkpoint has {got} witness cosignatures, {need} needed")]
    Quorum {
        /// Distinct configured witnesses that cosigned.
        got: usize,
        /// The quorum.
        need: usize,
    },
}

fn window() -> Result<web_sys::Window, LightError> {
    web_sys::window().ok_or(LightError::NoWindow)
}

fn js_message(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| "unknown error".into())
}

fn js_err(api: &str) -> impl Fn(JsValue) -> LightError + '_ {
    move |e| LightError::Js {
        api: api.to_owned(),
        message: js_message(&e),
    }
}

fn call0(obj: &JsValue, name: &str) -> Result<JsValue, LightError> {
    let f: js_sys::Function = js_sys::Reflect::get(obj, &name.into())
        .map_err(js_err(name))?
        .dyn_into()
        .map_err(|_| LightError::Js {
            api: name.to_owned(),
            message: "not a function".into(),
        })?;
    f.call0(obj).map_err(js_err(name))
}

/// GET `path` (same origin) → (status, body bytes), body capped. A failed fetch is an `Err`
/// whose message the audit reports as a transport error.
async fn get(path: &str) -> Result<(u16, Vec<u8>), LightError> {
    let w = window()?;
    let fetch: js_sys::Function = js_sys::Reflect::get(&w, &"fetch".into())
        .map_err(js_err("fetch"))?
        .dyn_into()
        .map_err(|_| LightError::Js {
            api: "fetch".into(),
            message: "unavailable".into(),
        })?;
    let resp = JsFuture::from(js_sys::Promise::from(
        fetch.call1(&w, &path.into()).map_err(js_err("fetch"))?,
    ))
    .await
    .map_err(js_err("fetch"))?;
    let status = js_sys::Reflect::get(&resp, &"status".into())
        .map_err(js_err("fetch"))?
        .as_f64()
        .unwrap_or(0.0) as u16;
    let buf = JsFuture::from(js_sys::Promise::from(call0(&resp, "arrayBuffer")?))
        .await
        .map_err(js_err("arrayBuffer"))?;
    let body = js_sys::Uint8Array::new(&buf);
    if u64::from(body.length()) > api::MAX_BODY_BYTES {
        return Err(LightError::TooLarge(path.to_owned()));
    }
    Ok((status, body.to_vec()))
}

/// `window.localStorage` (absent or throwing in some private modes: then nothing persists).
fn storage() -> Option<JsValue> {
    let w = window().ok()?;
    js_sys::Reflect::get(&w, &"localStorage".into())
        .ok()
        .filter(|s| s.is_object())
}

fn load<T: for<'de> Deserialize<'de>>(key: &str) -> Option<T> {
    let st = storage()?;
    let get: js_sys::Function = js_sys::Reflect::get(&st, &"getItem".into())
        .ok()?
        .dyn_into()
        .ok()?;
    let s = get.call1(&st, &key.into()).ok()?.as_string()?;
    serde_json::from_str(&s).ok()
}

fn save<T: Serialize>(key: &str, v: &T) {
    let (Some(st), Ok(s)) = (storage(), serde_json::to_string(v)) else {
        return;
    };
    if let Some(set) = js_sys::Reflect::get(&st, &"setItem".into())
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
    {
        let _ = set.call2(&st, &key.into(), &s.into());
    }
}

fn query_quorum() -> Option<usize> {
    let w = window().ok()?;
    let loc = js_sys::Reflect::get(&w, &"location".into()).ok()?;
    let search = js_sys::Reflect::get(&loc, &"search".into())
        .ok()?
        .as_string()?;
    search
        .trim_start_matches('?')
        .split('&')
        .find_map(|kv| kv.strip_prefix("quorum="))
        .and_then(|v| v.parse().ok())
}

/// My receipts, from IndexedDB (base64 strings; undecodable ones are skipped).
async fn my_receipts() -> Result<Vec<Receipt>, LightError> {
    let p = receipts_list().map_err(|_| LightError::ReceiptStore("not loaded".into()))?;
    let list = JsFuture::from(p)
        .await
        .map_err(|e| LightError::ReceiptStore(js_message(&e)))?;
    let arr: Vec<String> = serde_wasm_bindgen::from_value(list)
        .map_err(|e| LightError::ReceiptStore(e.to_string()))?;
    Ok(arr
        .iter()
        .filter_map(|b| B64.decode(b).ok())
        .filter_map(|b| Receipt::decode_verified(&b).ok())
        .collect())
}

async fn trust(report: &mut Report) -> Result<Trust, LightError> {
    let published: Option<Trust> = match get(api::KEYS).await {
        Ok((200, body)) => serde_json::from_slice(&body).ok(),
        _ => None,
    };
    let mut t = match (load::<Trust>("shoal.trust"), published) {
        (Some(pinned), Some(p)) => {
            report.keys_changed = pinned.log != p.log || pinned.witnesses != p.witnesses;
            pinned
        }
        (Some(pinned), None) => pinned,
        (None, Some(p)) => {
            save("shoal.trust", &p);
            p
        }
        (None, None) => return Err(LightError::NoKeys),
    };
    if let Some(q) = query_quorum() {
        t.quorum = Some(q);
    }
    Ok(t)
}

/// Runs one check: trust, checkpoint, consistency, inclusion of every receipt.
pub async fn check() -> Report {
    let mut report = Report {
        growth: load::<Vec<(f64, u64)>>("shoal.growth").unwrap_or_default(),
        ..Report::default()
    };
    if let Err(e) = check_into(&mut report).await {
        report.error = Some(e.to_string());
    }
    report
}

/// The [`Audit`] flow (the same code as `shoal-node receipts`), driven with `fetch()`.
async fn check_into(report: &mut Report) -> Result<(), LightError> {
    let receipts = my_receipts().await?;
    report.receipts = receipts
        .iter()
        .map(|r| ReceiptView {
            job: hex::encode(&r.body.job_id[..6]),
            shard: r.body.shard,
            worker: hex::encode(&r.body.worker[..6]),
            ms: r.body.finished_ms.saturating_sub(r.body.started_ms),
            leaf_hash: hex::encode(r.leaf_hash()),
            included: false,
            index: None,
            witnessed: false,
        })
        .collect();
    let t = trust(report).await?;
    let log = NoteVerifier::from_key_text(&t.log).map_err(LightError::LogKey)?;
    let witnesses: Vec<CosignatureVerifier> = t
        .witnesses
        .iter()
        .filter_map(|w| CosignatureVerifier::from_key_text(w).ok())
        .collect();
    let quorum = t.quorum.unwrap_or(witnesses.len().min(2));
    report.origin = log.name.clone();
    report.quorum = quorum;
    let last: Option<String> = load("shoal.checkpoint");
    let leaves = receipts.iter().map(|r| leaf_hash(&r.encode())).collect();
    let mut audit = Audit::new(log, witnesses, quorum, last.as_deref(), leaves);
    while let Some(path) = audit.next_request() {
        match get(&path).await {
            Ok((status, body)) => audit.on_response(status, &body),
            Err(e) => audit.on_transport_error(e.to_string()),
        }
    }
    let a = audit.finish();
    report.size = a.checkpoint.as_ref().map_or(0, |c| c.checkpoint.size);
    report.cosigners = a.cosigners.len();
    report.witnessed = a.witnessed;
    for (view, index) in report.receipts.iter_mut().zip(&a.included) {
        if let Some(i) = index {
            view.included = true;
            view.index = Some(*i);
            view.witnessed = a.witnessed;
        }
    }
    if let Some(proof) = &a.equivocation {
        report.equivocation = Some([proof.a.clone(), proof.b.clone()]);
        save("shoal.equivocation", &[&proof.a, &proof.b]);
    }
    if let Some(e) = a.error {
        return Err(e.into());
    }
    if let Some((got, need)) = a.short_of_quorum() {
        return Err(LightError::Quorum { got, need });
    }
    // Witnessed and consistent with what this tab saw before: the new baseline.
    if let Some(cp) = &a.checkpoint {
        save("shoal.checkpoint", &cp.note.to_text());
        let now = js_sys::Date::now();
        if report.growth.last().map(|g| g.1) != Some(report.size) || report.growth.is_empty() {
            report.growth.push((now, report.size));
        }
        let excess = report.growth.len().saturating_sub(MAX_GROWTH);
        report.growth.drain(..excess);
        save("shoal.growth", &report.growth);
    }
    Ok(())
}

/// `window.shoalLight.check()` → Promise<Report> (for pages and tests).
pub fn install_js_api() {
    let Ok(w) = window() else { return };
    let obj = js_sys::Object::new();
    let f = Closure::<dyn Fn() -> js_sys::Promise>::new(|| {
        wasm_bindgen_futures::future_to_promise(async {
            let r = check().await;
            serde_wasm_bindgen::to_value(&r).map_err(|e| JsValue::from_str(&e.to_string()))
        })
    });
    let _ = js_sys::Reflect::set(&obj, &"check".into(), f.as_ref());
    f.forget();
    let _ = js_sys::Reflect::set(&w, &"shoalLight".into(), &obj);
}
