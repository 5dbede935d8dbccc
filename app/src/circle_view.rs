//! The Circle panel: create a circle (link + QR code; the key stays in the fragment), join one
//! by pasting a link, the peers (name, backend, measured throughput, state), and a live
//! per-member view of the running circle job with a throughput plot. State comes from
//! `web/circle.js` (`window.shoalCircle`).

use crate::state::{CircleStatus, MemberStatus, PeerState};
use crate::widgets::{MemberRow, Spark};
use leptos::prelude::*;
use leptos::task::spawn_local;
use serde::Deserialize;
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = shoalCircle, js_name = subscribe)]
    fn circle_subscribe(cb: &js_sys::Function) -> JsValue;
    #[wasm_bindgen(js_namespace = shoalCircle, js_name = create)]
    fn circle_create() -> js_sys::Promise;
    #[wasm_bindgen(js_namespace = shoalCircle, js_name = join)]
    fn circle_join(link: &str) -> js_sys::Promise;
    #[wasm_bindgen(js_namespace = shoalCircle, js_name = leave)]
    fn circle_leave();
}

#[derive(Deserialize, Clone, Default, PartialEq, Debug)]
#[serde(rename_all = "camelCase", default)]
struct CircleState {
    status: CircleStatus,
    message: String,
    link: Option<String>,
    id: Option<String>,
    peers: Vec<Peer>,
    job: Option<CircleJob>,
    last: Option<LastJob>,
    rejected: f64,
    receipts: f64,
    anchored: f64,
}

#[derive(Deserialize, Clone, Default, PartialEq, Debug)]
#[serde(rename_all = "camelCase", default)]
struct Peer {
    id: String,
    short: String,
    name: String,
    backend: String,
    rate: f64,
    state: PeerState,
}

#[derive(Deserialize, Clone, Default, PartialEq, Debug)]
#[serde(rename_all = "camelCase", default)]
struct CircleJob {
    total: f64,
    done: f64,
    members: Vec<Member>,
    rates: Vec<f64>,
}

#[derive(Deserialize, Clone, Default, PartialEq, Debug)]
#[serde(rename_all = "camelCase", default)]
struct LastJob {
    total: f64,
    ms: f64,
    members: Vec<Member>,
}

#[derive(Deserialize, Clone, Default, PartialEq, Debug)]
#[serde(rename_all = "camelCase", default)]
struct Member {
    id: String,
    short: String,
    is_self: bool,
    status: MemberStatus,
    shards_done: f64,
    texts_done: f64,
    in_flight: f64,
    rate: f64,
    /// This tab's row: its model workers, each a member of the job.
    workers: Vec<Member>,
}

/// The link as an SVG QR code in a `data:` URL (allowed by the CSP's `img-src data:`).
fn qr_data_url(link: &str) -> Option<String> {
    use base64::Engine as _;
    let code = qrcode::QrCode::new(link.as_bytes()).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(176, 176)
        .quiet_zone(true)
        .build();
    Some(format!(
        "data:image/svg+xml;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(svg)
    ))
}

fn backend_label(b: &str) -> &str {
    match b {
        "webgpu" => "WebGPU",
        "cpu" => "CPU",
        "native" => "native",
        other => other,
    }
}

fn member_label(m: &Member, peers: &[Peer]) -> String {
    if m.is_self {
        return match m.workers.len() {
            0 => "this tab".into(),
            1 => "this tab (1 worker)".into(),
            n => format!("this tab ({n} workers)"),
        };
    }
    peers
        .iter()
        .find(|p| p.id == m.id)
        .map(|p| format!("{} ({})", p.name, p.short))
        .unwrap_or_else(|| m.short.clone())
}

#[component]
pub fn CirclePanel() -> impl IntoView {
    let (st, set_st) = signal(CircleState::default());
    let on_state = Closure::<dyn Fn(JsValue)>::new(move |v: JsValue| {
        if let Ok(s) = serde_wasm_bindgen::from_value::<CircleState>(v) {
            set_st.set(s);
        }
    });
    circle_subscribe(on_state.as_ref().unchecked_ref());
    on_state.forget(); // lives as long as the page

    let (paste, set_paste) = signal(String::new());
    let (err, set_err) = signal(None::<String>);
    let run = move |p: js_sys::Promise| {
        set_err.set(None);
        spawn_local(async move {
            if let Err(e) = wasm_bindgen_futures::JsFuture::from(p).await {
                let msg = e
                    .dyn_ref::<js_sys::Error>()
                    .map(|e| String::from(e.message()))
                    .unwrap_or_else(|| format!("{e:?}"));
                set_err.set(Some(msg));
            }
        });
    };
    let active = move || st.get().status != CircleStatus::Off;

    view! {
        <div class="circle" data-testid="circle">
            <Show
                when=active
                fallback=move || view! {
                    <p class="muted">
                        "Pool this tab with your other tabs, your phone or a native node: jobs are split between members over WebRTC, sealed end to end. The relay only passes sealed handshakes."
                    </p>
                    <div class="row wrap">
                        <button on:click=move |_| run(circle_create()) data-testid="circle-create">"Create circle"</button>
                        <input type="text" placeholder="…or paste a circle link" aria-label="circle link"
                            prop:value=move || paste.get()
                            on:input=move |e| set_paste.set(event_target_value(&e)) />
                        <button class="secondary" disabled=move || paste.get().trim().is_empty()
                            on:click=move |_| run(circle_join(paste.get_untracked().trim()))>"Join"</button>
                    </div>
                }
            >
                {move || {
                    let s = st.get();
                    let link = s.link.clone().unwrap_or_default();
                    let qr = (!link.is_empty()).then(|| qr_data_url(&link)).flatten();
                    let up = s.peers.iter().filter(|p| p.state == PeerState::Up).count();
                    view! {
                        <div class="circle-head">
                            {qr.map(|src| view! { <img class="qr" src=src width="176" height="176" alt="QR code of the circle link" /> })}
                            <div class="circle-info">
                                <label class="muted" for="circle-link">"Open this link on your other devices (the key is in the part after #, which is never sent to a server):"</label>
                                <input id="circle-link" type="text" readonly prop:value=link.clone() data-testid="circle-link" />
                                <div class="status-line">
                                    <span data-testid="circle-status">{format!("{} · {up} peer{} up", s.status.label(), if up == 1 { "" } else { "s" })}</span>
                                    <button class="secondary" on:click=move |_| circle_leave()>"Leave"</button>
                                </div>
                                <span class="muted">{s.message.clone()}</span>
                                {(s.receipts > 0.0).then(|| view! {
                                    <span class="muted" data-testid="circle-receipts">{format!("{} receipts countersigned · {} anchored in the relay's log (see Receipts)", s.receipts, s.anchored)}</span>
                                })}
                            </div>
                        </div>
                        <ul class="members peers" data-testid="circle-peers">
                            {s.peers.iter().map(|p| {
                                let detail = format!("{} · {:.0} texts/s · {}", backend_label(&p.backend), p.rate, p.state.label());
                                view! {
                                    <li class=format!("member {}", p.state.label())>
                                        <span class="who">{format!("{} ({})", p.name, p.short)}</span>
                                        <span class="muted">{detail}</span>
                                    </li>
                                }
                            }).collect_view()}
                        </ul>
                        {s.job.clone().map(|j| {
                            let total = j.total.max(1.0);
                            view! {
                                <div class="status-line">
                                    <strong>{format!("Circle job: {} / {}", j.done, j.total)}</strong>
                                    <span class="muted">{j.rates.last().map(|r| format!("{r:.0} texts/s")).unwrap_or_default()}</span>
                                </div>
                                <ul class="members" data-testid="circle-job">
                                    {j.members.iter().map(|m| {
                                        let label = member_label(m, &s.peers);
                                        let detail = format!("{} shards · {} texts · {:.0}/s{}", m.shards_done, m.texts_done, m.rate,
                                            if m.status == MemberStatus::Active { String::new() } else { format!(" · {}", m.status.label()) });
                                        view! { <MemberRow class="member".to_string() label busy={m.in_flight > 0.0} total done=m.texts_done detail /> }
                                    }).collect_view()}
                                </ul>
                                <Spark values=j.rates.clone() label="circle throughput over time" />
                            }
                        })}
                        {s.last.clone().filter(|_| s.job.is_none()).map(|l| {
                            let secs = (l.ms / 1000.0).max(1e-3);
                            let who = l.members.iter().filter(|m| m.texts_done > 0.0)
                                .map(|m| format!("{} {}", member_label(m, &s.peers), m.texts_done))
                                .collect::<Vec<_>>().join(" · ");
                            view! {
                                <p class="muted" data-testid="circle-last">
                                    {format!("Last job: {} texts in {:.1} s ({:.0}/s) — {who}", l.total, secs, l.total / secs)}
                                </p>
                            }
                        })}
                    }
                }}
            </Show>
            {move || err.get().map(|e| view! { <div class="notice warn" role="alert">{e}</div> })}
        </div>
    }
}
