//! The Leptos UI. State flows one way: `shoal.subscribe` pushes snapshots into a signal; user
//! actions call `window.shoal` methods, whose promises are awaited off the render path.

use crate::state::{MemberStatus, ModelStatus as ModelState, NoticeLevel, Precision, WorkerStatus};
use crate::widgets::{MemberRow, Spark};
use leptos::prelude::*;
use leptos::task::spawn_local;
use serde::Deserialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = shoal, js_name = subscribe)]
    fn shoal_subscribe(cb: &js_sys::Function) -> JsValue;
    #[wasm_bindgen(js_namespace = shoal, js_name = addDocuments)]
    fn shoal_add_documents(docs: JsValue) -> js_sys::Promise;
    #[wasm_bindgen(js_namespace = shoal, js_name = addSamples)]
    fn shoal_add_samples() -> js_sys::Promise;
    #[wasm_bindgen(js_namespace = shoal, js_name = deleteDocument)]
    fn shoal_delete_document(id: f64) -> js_sys::Promise;
    #[wasm_bindgen(js_namespace = shoal, js_name = search)]
    fn shoal_search(query: &str, k: u32) -> js_sys::Promise;
    #[wasm_bindgen(js_namespace = shoal, js_name = configure)]
    fn shoal_configure(opts: JsValue) -> js_sys::Promise;
    #[wasm_bindgen(js_namespace = shoal, js_name = cancel)]
    fn shoal_cancel();
}

#[derive(Deserialize, Clone, Default, PartialEq, Debug)]
#[serde(rename_all = "camelCase", default)]
struct State {
    status: ModelState,
    message: String,
    backend: Option<String>,
    requested_backend: String,
    profile: String,
    profile_auto: bool,
    precision: Precision,
    webgpu: bool,
    download: Option<Download>,
    job: Option<Job>,
    notices: Vec<Notice>,
    docs: Vec<Doc>,
    timings: Option<Timings>,
    pool: Option<PoolState>,
}

/// `pool.js` snapshot: the workers and the live per-member view of the current (or last) job.
#[derive(Deserialize, Clone, Default, PartialEq, Debug)]
#[serde(default)]
struct PoolState {
    size: f64,
    workers: Vec<PoolWorker>,
    job: Option<PoolJobView>,
}

#[derive(Deserialize, Clone, Default, PartialEq, Debug)]
#[serde(default)]
struct PoolWorker {
    id: f64,
    status: WorkerStatus,
    backend: Option<String>,
}

#[derive(Deserialize, Clone, Default, PartialEq, Debug)]
#[serde(rename_all = "camelCase", default)]
struct PoolJobView {
    total: f64,
    done: f64,
    running: bool,
    elapsed_ms: f64,
    rate: f64,
    members: Vec<PoolMember>,
    history: Vec<f64>,
}

#[derive(Deserialize, Clone, Default, PartialEq, Debug)]
#[serde(rename_all = "camelCase", default)]
struct PoolMember {
    id: f64,
    label: String,
    status: MemberStatus,
    shards_done: f64,
    texts_done: f64,
    in_flight: f64,
    rate: f64,
}

#[derive(Deserialize, Clone, Default, PartialEq, Debug)]
#[serde(rename_all = "camelCase", default)]
struct Download {
    phase: String,
    loaded: f64,
    total: f64,
    net_bytes: f64,
    rate: f64,
}

#[derive(Deserialize, Clone, Default, PartialEq, Debug)]
#[serde(default)]
struct Job {
    label: String,
    done: f64,
    total: f64,
}

#[derive(Deserialize, Clone, Default, PartialEq, Debug)]
#[serde(default)]
struct Notice {
    level: NoticeLevel,
    message: String,
    at: f64,
}

#[derive(Deserialize, Clone, Default, PartialEq, Debug)]
#[serde(default)]
struct Doc {
    id: f64,
    name: String,
    chars: f64,
    passages: f64,
}

#[derive(Deserialize, Clone, Default, PartialEq, Debug)]
#[serde(rename_all = "camelCase", default)]
struct Timings {
    total_ms: f64,
}

#[derive(Deserialize, Clone, Default, PartialEq, Debug)]
#[serde(rename_all = "camelCase", default)]
struct Hit {
    text: String,
    score: f64,
    source: String,
}

fn js_error(e: JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| "unknown error".into())
}

async fn await_promise(p: js_sys::Promise) -> Result<JsValue, String> {
    JsFuture::from(p).await.map_err(js_error)
}

fn mb(bytes: f64) -> String {
    format!("{:.1} MB", bytes / 1e6)
}

/// Split `text` into (segment, highlighted) runs: words of the query (3+ letters) are marked.
fn highlight(text: &str, query: &str) -> Vec<(String, bool)> {
    let terms: Vec<String> = query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| t.chars().count() >= 3)
        .map(str::to_lowercase)
        .collect();
    let matches = |word: &str| {
        let w = word.to_lowercase();
        let long = w.chars().count() >= 4;
        terms.iter().any(|t| {
            w == *t
                || (long
                    && t.chars().count() >= 4
                    && (w.starts_with(t.as_str()) || t.starts_with(&w)))
        })
    };
    let mut out: Vec<(String, bool)> = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<(String, bool)>| {
        if word.is_empty() {
            return;
        }
        let m = matches(word);
        match out.last_mut() {
            Some((s, false)) if !m => s.push_str(word),
            _ => out.push((word.clone(), m)),
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            match out.last_mut() {
                Some((s, false)) => s.push(c),
                _ => out.push((c.to_string(), false)),
            }
        }
    }
    flush(&mut word, &mut out);
    out
}

#[component]
pub fn App() -> impl IntoView {
    let (state, set_state) = signal(State::default());
    let on_state = Closure::<dyn Fn(JsValue)>::new(move |v: JsValue| {
        match serde_wasm_bindgen::from_value::<State>(v) {
            Ok(s) => set_state.set(s),
            Err(e) => web_sys::console::error_1(&format!("bad state from shoal.js: {e}").into()),
        }
    });
    shoal_subscribe(on_state.as_ref().unchecked_ref());
    on_state.forget(); // lives as long as the page

    let (error, set_error) = signal(None::<String>);
    let report = move |r: Result<JsValue, String>| {
        if let Err(e) = r {
            set_error.set(Some(e));
        }
    };

    view! {
        <header class="top">
            <div class="brand">
                <span class="logo" aria-hidden="true">"◗"</span>
                <div>
                    <h1>"Shoal"</h1>
                    <p class="tag">"A private assistant and semantic search. The models run in this tab — your messages and documents never leave this device."</p>
                </div>
            </div>
            <Settings state=state report=report />
        </header>
        <ModelStatus state=state />
        <PoolView state=state />
        <Show when=move || error.get().is_some()>
            <div class="notice warn" role="alert">
                <span>{move || error.get().unwrap_or_default()}</span>
                <button class="link" on:click=move |_| set_error.set(None)>"Dismiss"</button>
            </div>
        </Show>
        <For
            each=move || state.get().notices
            key=|n| (n.at as u64, n.message.clone())
            children=move |n| view! { <div class=format!("notice {}", n.level.label())>{n.message}</div> }
        />
        <main class="grid">
            <section class="card wide" aria-labelledby="assistant-h">
                <h2 id="assistant-h">"Assistant"</h2>
                <crate::assistant_view::AssistantPanel />
            </section>
            <section class="card" aria-labelledby="search-h">
                <h2 id="search-h">"Search"</h2>
                <SearchPanel state=state />
            </section>
            <section class="card" aria-labelledby="docs-h">
                <h2 id="docs-h">"Your documents"</h2>
                <AddDocuments state=state report=report />
                <DocList state=state report=report />
            </section>
            <section class="card wide" aria-labelledby="circle-h">
                <h2 id="circle-h">"Circle"</h2>
                <crate::circle_view::CirclePanel />
            </section>
            <section class="card wide" aria-labelledby="receipts-h">
                <h2 id="receipts-h">"Receipts"</h2>
                <crate::receipts_view::ReceiptsPanel />
            </section>
        </main>
        <footer class="foot">
            "SmolLM2-135M-Instruct · all-MiniLM-L6-v2 · weights verified (SHA-256 + BLAKE2b) and cached in this browser · no third-party requests"
        </footer>
    }
}

#[component]
fn Settings(
    state: ReadSignal<State>,
    report: impl Fn(Result<JsValue, String>) + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let configure_all = move |pairs: &[(&'static str, &str)]| {
        let opts = js_sys::Object::new();
        for (key, value) in pairs {
            let _ = js_sys::Reflect::set(&opts, &(*key).into(), &(*value).into());
        }
        spawn_local(async move { report(await_promise(shoal_configure(opts.into())).await) });
    };
    let configure = move |key: &'static str, value: String| configure_all(&[(key, &value)]);
    // "f32-exact" is the full profile with f32 arithmetic on the CPU; the others use the
    // integer kernel there (held to the same accuracy bound, ≈2.5× faster).
    let choose_profile = move |value: String| match value.as_str() {
        "f32-exact" => configure_all(&[("profile", "f32"), ("precision", "exact")]),
        other => configure_all(&[("profile", other), ("precision", "fast")]),
    };
    view! {
        <div class="settings">
            <span class=move || format!("pill {}", state.get().status.label()) data-testid="backend">
                {move || {
                    let s = state.get();
                    match (s.status, s.backend) {
                        (ModelState::Ready, Some(b)) => format!(
                            "{} · {}",
                            if b == "webgpu" { "WebGPU" } else { "CPU" },
                            match (s.profile.as_str(), s.precision) {
                                ("f16", _) => "light",
                                ("f32", Precision::Exact) if b != "webgpu" => "full, exact",
                                _ => "full",
                            }
                        ),
                        (ModelState::Error, _) => "model error".to_string(),
                        _ => "loading…".to_string(),
                    }
                }}
            </span>
            <label>
                <span class="sr">"Compute"</span>
                <select
                    aria-label="Compute backend"
                    on:change=move |ev| configure("backend", event_target_value(&ev))
                    prop:value=move || state.get().requested_backend
                >
                    <option value="auto">"Auto"</option>
                    <option value="webgpu">"WebGPU"</option>
                    <option value="cpu">"CPU"</option>
                </select>
            </label>
            <label>
                <span class="sr">"Profile"</span>
                <select
                    aria-label="Model profile"
                    on:change=move |ev| choose_profile(event_target_value(&ev))
                    prop:value=move || {
                        let s = state.get();
                        match (s.profile_auto, s.profile.as_str(), s.precision) {
                            (true, _, _) => "auto".to_string(),
                            (false, "f32", Precision::Exact) => "f32-exact".to_string(),
                            _ => s.profile,
                        }
                    }
                >
                    <option value="auto">"Auto profile"</option>
                    <option value="f32">"Full (f32, 87 MB)"</option>
                    <option value="f32-exact">"Full, exact f32 math (CPU 2.5× slower)"</option>
                    <option value="f16">"Light (f16, 44 MB)"</option>
                </select>
            </label>
        </div>
    }
}

#[component]
fn ModelStatus(state: ReadSignal<State>) -> impl IntoView {
    view! {
        <Show when=move || state.get().status != ModelState::Ready>
            <div class="card status" aria-live="polite">
                <div class="status-line">
                    <span>{move || state.get().message}</span>
                    <span class="muted">
                        {move || {
                            state.get().download.filter(|d| d.total > 0.0).map(|d| {
                                let rate = if d.net_bytes > 0.0 { format!(" · {}/s", mb(d.rate)) } else { String::new() };
                                format!("{} / {}{}", mb(d.loaded), mb(d.total), rate)
                            })
                        }}
                    </span>
                </div>
                <progress
                    max="1"
                    prop:value=move || state.get().download.filter(|d| d.total > 0.0).map(|d| d.loaded / d.total).unwrap_or(0.0)
                ></progress>
            </div>
        </Show>
    }
}

/// Live compute view: every pool worker (and other job members), their shards and texts/s.
#[component]
fn PoolView(state: ReadSignal<State>) -> impl IntoView {
    let pool = move || {
        state
            .get()
            .pool
            .filter(|_| state.get().status == ModelState::Ready)
    };
    view! {
        <Show when=move || pool().is_some()>
            <section class="card pool" aria-label="Compute" data-testid="pool">
                {move || {
                    let p = pool().unwrap_or_default();
                    let job = p.job.clone();
                    let ready = p.workers.iter().filter(|w| w.status == WorkerStatus::Ready).count();
                    let kind = p.workers.first().and_then(|w| w.backend.clone()).map(|b| if b == "webgpu" { "WebGPU" } else { "CPU" }).unwrap_or("CPU");
                    let head = format!("{ready} of {} {kind} worker{}", p.size, if p.size == 1.0 { "" } else { "s" });
                    let rate = job.as_ref().map(|j| {
                        let state = if j.running { "now" } else { "last job" };
                        format!("{:.0} texts/s {state} · {} / {}", j.rate, j.done, j.total)
                    }).unwrap_or_else(|| "idle".into());
                    let total = job.as_ref().map(|j| j.total.max(1.0)).unwrap_or(1.0);
                    // One row per worker, then any other member of the job (self fallback, peers).
                    let mut rows: Vec<(String, WorkerStatus, Option<PoolMember>)> = p.workers.iter().map(|w| {
                        let m = job.as_ref().and_then(|j| j.members.iter().find(|m| m.id == w.id).cloned());
                        (format!("worker {}", w.id + 1.0), w.status, m)
                    }).collect();
                    if let Some(j) = &job {
                        for m in j.members.iter().filter(|m| !p.workers.iter().any(|w| w.id == m.id)) {
                            rows.push((m.label.clone(), WorkerStatus::Ready, Some(m.clone())));
                        }
                    }
                    let history = job.as_ref().map(|j| j.history.clone()).unwrap_or_default();
                    view! {
                        <div class="status-line">
                            <strong>{head}</strong>
                            <span class="muted" data-testid="pool-rate">{rate}</span>
                        </div>
                        <ul class="members">
                            {rows.into_iter().map(|(label, status, m)| {
                                let m = m.unwrap_or_default();
                                let excluded = m.status != MemberStatus::Active;
                                let detail = if status != WorkerStatus::Ready {
                                    status.label().to_string()
                                } else if excluded {
                                    format!("{} shards · left the job", m.shards_done)
                                } else {
                                    format!("{} shard{} · {} texts · {:.0}/s", m.shards_done, if m.shards_done == 1.0 { "" } else { "s" }, m.texts_done, m.rate)
                                };
                                let class = format!("member {}{}", status.label(), if excluded { " excluded" } else { "" });
                                view! { <MemberRow class label busy={m.in_flight > 0.0} total done=m.texts_done detail /> }
                            }).collect_view()}
                        </ul>
                        <Spark values=history label="throughput over time" />
                    }
                }}
            </section>
        </Show>
    }
}

#[component]
fn SearchPanel(state: ReadSignal<State>) -> impl IntoView {
    let (query, set_query) = signal(String::new());
    let (hits, set_hits) = signal(Vec::<Hit>::new());
    let (searched, set_searched) = signal(String::new());
    let (busy, set_busy) = signal(false);
    let (err, set_err) = signal(None::<String>);
    let seq = StoredValue::new(0u64);

    let run = move |q: String| {
        let n = seq.get_value() + 1;
        seq.set_value(n);
        if q.trim().is_empty() {
            set_hits.set(Vec::new());
            set_searched.set(String::new());
            return;
        }
        set_busy.set(true);
        spawn_local(async move {
            let r = await_promise(shoal_search(&q, 5)).await;
            if seq.get_value() != n {
                return; // a newer query is in flight
            }
            set_busy.set(false);
            match r.and_then(|v| {
                serde_wasm_bindgen::from_value::<Vec<Hit>>(v).map_err(|e| e.to_string())
            }) {
                Ok(h) => {
                    set_err.set(None);
                    set_hits.set(h);
                    set_searched.set(q);
                }
                Err(e) => set_err.set(Some(e)),
            }
        });
    };

    view! {
        <form class="search" on:submit=move |ev| { ev.prevent_default(); run(query.get_untracked()); }>
            <input
                type="search"
                placeholder="Ask about your documents…"
                aria-label="Search query"
                prop:value=query
                on:input=move |ev| { let v = event_target_value(&ev); set_query.set(v.clone()); run(v); }
            />
            <button type="submit" disabled=move || state.get().status != ModelState::Ready>"Search"</button>
        </form>
        <Show when=move || err.get().is_some()>
            <p class="notice warn">{move || err.get().unwrap_or_default()}</p>
        </Show>
        <Show
            when=move || !hits.get().is_empty()
            fallback=move || view! {
                <p class="empty">
                    {move || {
                        let s = state.get();
                        if s.docs.is_empty() { "Add a few documents, then search them by meaning — not just keywords.".to_string() }
                        else if busy.get() { "Searching…".to_string() }
                        else if !searched.get().is_empty() { "No passages found.".to_string() }
                        else { format!("{} passages ready to search.", s.docs.iter().map(|d| d.passages).sum::<f64>()) }
                    }}
                </p>
            }
        >
            <ol class="hits" data-testid="results">
                <For
                    each={move || hits.get().into_iter().enumerate().collect::<Vec<_>>()}
                    key={move |(i, h): &(usize, Hit)| (*i, h.text.clone(), searched.get_untracked())}
                    children=move |(_, h)| {
                        let q = searched.get_untracked();
                        let pct = (h.score.clamp(0.0, 1.0) * 100.0).round();
                        view! {
                            <li class="hit">
                                <div class="hit-head">
                                    <span class="source">{h.source.clone()}</span>
                                    <span class="score" title="cosine similarity">{format!("{:.3}", h.score)}</span>
                                </div>
                                <div class="bar"><span style=format!("width:{pct}%")></span></div>
                                <p class="passage">
                                    {highlight(&h.text, &q).into_iter().map(|(s, m)| if m {
                                        view! { <mark>{s}</mark> }.into_any()
                                    } else {
                                        view! { <span>{s}</span> }.into_any()
                                    }).collect_view()}
                                </p>
                            </li>
                        }
                    }
                />
            </ol>
        </Show>
    }
}

#[component]
fn AddDocuments(
    state: ReadSignal<State>,
    report: impl Fn(Result<JsValue, String>) + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let (name, set_name) = signal(String::new());
    let (text, set_text) = signal(String::new());
    let (drag, set_drag) = signal(false);

    let add = move |docs: Vec<(String, String)>| {
        let arr = js_sys::Array::new();
        for (n, t) in docs {
            let o = js_sys::Object::new();
            let _ = js_sys::Reflect::set(&o, &"name".into(), &n.into());
            let _ = js_sys::Reflect::set(&o, &"text".into(), &t.into());
            arr.push(&o);
        }
        spawn_local(async move {
            match await_promise(shoal_add_documents(arr.into())).await {
                Err(e) if e == "cancelled" => {}
                r => report(r),
            }
        });
    };

    let add_files = move |files: Option<web_sys::FileList>| {
        let Some(files) = files else { return };
        let list: Vec<web_sys::File> = (0..files.length()).filter_map(|i| files.get(i)).collect();
        spawn_local(async move {
            let mut docs = Vec::new();
            for f in list {
                let name = f.name();
                let lower = name.to_lowercase();
                if !(lower.ends_with(".txt")
                    || lower.ends_with(".md")
                    || lower.ends_with(".markdown"))
                {
                    report(Err(format!("{name}: only .txt and .md files can be added")));
                    continue;
                }
                match await_promise(f.text()).await {
                    Ok(v) => docs.push((name, v.as_string().unwrap_or_default())),
                    Err(e) => report(Err(format!("{name}: {e}"))),
                }
            }
            if !docs.is_empty() {
                add(docs);
            }
        });
    };

    let ready = move || state.get().status == ModelState::Ready;
    view! {
        <form class="add" on:submit=move |ev| {
            ev.prevent_default();
            let t = text.get_untracked();
            if t.trim().is_empty() { return; }
            let n = name.get_untracked();
            let n = if n.trim().is_empty() { t.split_whitespace().take(6).collect::<Vec<_>>().join(" ") } else { n };
            add(vec![(n, t)]);
            set_text.set(String::new());
            set_name.set(String::new());
        }>
            <input type="text" placeholder="Title (optional)" aria-label="Document title"
                prop:value=name on:input=move |ev| set_name.set(event_target_value(&ev)) />
            <textarea rows="4" placeholder="Paste text here…" aria-label="Document text"
                prop:value=text on:input=move |ev| set_text.set(event_target_value(&ev))></textarea>
            <div
                class=move || if drag.get() { "drop over" } else { "drop" }
                on:dragover=move |ev: web_sys::DragEvent| { ev.prevent_default(); set_drag.set(true); }
                on:dragleave=move |_| set_drag.set(false)
                on:drop=move |ev: web_sys::DragEvent| {
                    ev.prevent_default();
                    set_drag.set(false);
                    add_files(ev.data_transfer().and_then(|d| d.files()));
                }
            >
                <span>"Drop .txt / .md files here or "</span>
                <label class="file">
                    "choose files"
                    <input type="file" multiple accept=".txt,.md,.markdown,text/plain,text/markdown"
                        on:change=move |ev| {
                            let input: web_sys::HtmlInputElement = event_target(&ev);
                            add_files(input.files());
                            input.set_value("");
                        } />
                </label>
            </div>
            <div class="row">
                <button type="submit" disabled=move || !ready() || state.get().job.is_some()>"Add document"</button>
                <button type="button" class="secondary" disabled=move || !ready() || state.get().job.is_some()
                    on:click=move |_| spawn_local(async move { report(await_promise(shoal_add_samples()).await) })>
                    "Add sample documents"
                </button>
            </div>
        </form>
        {move || state.get().job.map(|j| view! {
            <div class="job" aria-live="polite">
                <div class="status-line">
                    <span>{j.label.clone()}</span>
                    <span class="muted">{format!("{} / {} passages", j.done, j.total)}</span>
                    <button type="button" class="link" on:click=move |_| shoal_cancel()>"Cancel"</button>
                </div>
                <progress max=j.total.max(1.0) prop:value=j.done></progress>
            </div>
        })}
    }
}

#[component]
fn DocList(
    state: ReadSignal<State>,
    report: impl Fn(Result<JsValue, String>) + Copy + Send + Sync + 'static,
) -> impl IntoView {
    view! {
        <ul class="docs" data-testid="docs">
            <For
                each=move || state.get().docs
                key=|d| d.id as u64
                children=move |d| {
                    let id = d.id;
                    view! {
                        <li class="doc">
                            <div class="doc-main">
                                <span class="doc-name">{d.name.clone()}</span>
                                <span class="muted">{format!("{} passage{} · {:.1}k characters", d.passages, if d.passages == 1.0 { "" } else { "s" }, d.chars / 1000.0)}</span>
                            </div>
                            <button class="icon" title="Delete" aria-label=format!("Delete {}", d.name)
                                on:click=move |_| spawn_local(async move { report(await_promise(shoal_delete_document(id)).await) })>
                                "✕"
                            </button>
                        </li>
                    }
                }
            />
        </ul>
    }
}
