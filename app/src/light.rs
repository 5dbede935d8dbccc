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
//! All verification is `node_lite::tlog` (the same code as `shoal-node receipts`); this file
//! is only fetch and storage glue. Every body read is size-capped.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use node_lite::receipt::Receipt;
use node_lite::tlog::checkpoint::CosignatureVerifier;
use node_lite::tlog::client::{ClientError, LightClient};
use node_lite::tlog::note::NoteVerifier;
use node_lite::tlog::{Hash, api, leaf_hash};
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

/// Growth points kept.
const MAX_GROWTH: usize = 200;
/// Largest response body read.
const MAX_BODY: usize = 1 << 20;

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

fn window() -> Result<web_sys::Window, String> {
    web_sys::window().ok_or_else(|| "no window".to_owned())
}

fn js_err(e: JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| "unknown error".into())
}

fn call0(obj: &JsValue, name: &str) -> Result<JsValue, String> {
    let f: js_sys::Function = js_sys::Reflect::get(obj, &name.into())
        .map_err(js_err)?
        .dyn_into()
        .map_err(|_| format!("{name} is not a function"))?;
    f.call0(obj).map_err(js_err)
}

/// GET `path` (same origin) → (status, body text), body capped.
async fn get(path: &str) -> Result<(u16, String), String> {
    let w = window()?;
    let fetch: js_sys::Function = js_sys::Reflect::get(&w, &"fetch".into())
        .map_err(js_err)?
        .dyn_into()
        .map_err(|_| "fetch unavailable".to_owned())?;
    let resp = JsFuture::from(js_sys::Promise::from(
        fetch.call1(&w, &path.into()).map_err(js_err)?,
    ))
    .await
    .map_err(|e| format!("GET {path}: {}", js_err(e)))?;
    let status = js_sys::Reflect::get(&resp, &"status".into())
        .map_err(js_err)?
        .as_f64()
        .unwrap_or(0.0) as u16;
    let text = JsFuture::from(js_sys::Promise::from(call0(&resp, "text")?))
        .await
        .map_err(js_err)?
        .as_string()
        .unwrap_or_default();
    if text.len() > MAX_BODY {
        return Err(format!("GET {path}: response too large"));
    }
    Ok((status, text))
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

fn hashes(b64s: &[String]) -> Result<Vec<Hash>, String> {
    api::decode_proof(b64s).map_err(|e| format!("proof: {e}"))
}

/// My receipts, from IndexedDB (base64 strings; undecodable ones are skipped).
async fn my_receipts() -> Result<Vec<Receipt>, String> {
    let p = receipts_list().map_err(|_| "receipt store not loaded".to_owned())?;
    let list = JsFuture::from(p).await.map_err(js_err)?;
    let arr: Vec<String> = serde_wasm_bindgen::from_value(list).map_err(|e| e.to_string())?;
    Ok(arr
        .iter()
        .filter_map(|b| B64.decode(b).ok())
        .filter_map(|b| Receipt::decode_verified(&b).ok())
        .collect())
}

async fn trust(report: &mut Report) -> Result<Trust, String> {
    let published: Option<Trust> = match get(api::KEYS).await {
        Ok((200, body)) => serde_json::from_str(&body).ok(),
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
        (None, None) => return Err("this relay publishes no log keys (/log/keys)".into()),
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
        report.error = Some(e);
    }
    report
}

async fn check_into(report: &mut Report) -> Result<(), String> {
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
    let log = NoteVerifier::from_key_text(&t.log).map_err(|e| format!("log key: {e}"))?;
    let witnesses: Vec<CosignatureVerifier> = t
        .witnesses
        .iter()
        .filter_map(|w| CosignatureVerifier::from_key_text(w).ok())
        .collect();
    let quorum = t.quorum.unwrap_or(witnesses.len().min(2));
    report.origin = log.name.clone();
    report.quorum = quorum;
    let mut client = LightClient::new(log, None, witnesses, quorum);
    let last: Option<String> = load("shoal.checkpoint");
    if let Some(l) = &last {
        client = client.clone().with_last(l.as_bytes()).unwrap_or(client);
    }
    let (status, note) = get(api::CHECKPOINT).await?;
    if status != 200 {
        return Err(format!("no checkpoint yet (HTTP {status})"));
    }
    // Consistency proof from the last accepted checkpoint, when the tree grew.
    let proof = match client.last().map(|l| l.checkpoint.size) {
        Some(old) if old > 0 => {
            let new = node_lite::tlog::checkpoint::SignedCheckpoint::verify(
                note.as_bytes(),
                &NoteVerifier::from_key_text(&t.log).map_err(|e| e.to_string())?,
                None,
            )
            .map_err(|e| format!("checkpoint: {e}"))?
            .checkpoint
            .size;
            if new > old {
                let (s, body) = get(&api::consistency_path(old, new)).await?;
                if s != 200 {
                    return Err(format!("consistency proof: HTTP {s}"));
                }
                let c: api::ConsistencyResponse =
                    serde_json::from_str(&body).map_err(|e| e.to_string())?;
                hashes(&c.proof)?
            } else {
                Vec::new()
            }
        }
        _ => Vec::new(),
    };
    let accepted = match client.update(note.as_bytes(), &proof) {
        Ok(sc) => sc.clone(),
        Err(ClientError::Equivocation { proof, .. }) => {
            report.equivocation = Some([proof.a.clone(), proof.b.clone()]);
            save("shoal.equivocation", &[&proof.a, &proof.b]);
            return Err("the log signed two different trees of the same size".into());
        }
        Err(ClientError::Quorum { got, need }) => {
            report.cosigners = got;
            return Err(format!(
                "checkpoint has {got} witness cosignatures, {need} needed"
            ));
        }
        Err(e) => return Err(format!("checkpoint refused: {e}")),
    };
    report.size = accepted.checkpoint.size;
    report.cosigners = client.count_cosignatures(&accepted.note);
    report.witnessed = report.cosigners >= quorum;
    save("shoal.checkpoint", &accepted.note.to_text());
    let now = js_sys::Date::now();
    if report.growth.last().map(|g| g.1) != Some(report.size) || report.growth.is_empty() {
        report.growth.push((now, report.size));
    }
    let excess = report.growth.len().saturating_sub(MAX_GROWTH);
    report.growth.drain(..excess);
    save("shoal.growth", &report.growth);

    for (r, view) in receipts.iter().zip(report.receipts.iter_mut()) {
        let leaf = leaf_hash(&r.encode());
        let (s, body) = get(&api::inclusion_by_leaf_path(
            &leaf,
            accepted.checkpoint.size,
        ))
        .await?;
        if s != 200 {
            continue; // not (yet) in this log
        }
        let p: api::InclusionResponse = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        if LightClient::verify_inclusion(&accepted.checkpoint, p.index, &leaf, &hashes(&p.proof)?)
            .is_ok()
        {
            view.included = true;
            view.index = Some(p.index);
            view.witnessed = report.witnessed;
        }
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
