//! The Assistant card: a conversation with the chat model running in the tab (its own Web
//! Worker: `web/chat.js` + `chat_core.rs`), streamed token by token, with Stop, New chat, the
//! saved conversations (IndexedDB: reopen, delete), the model picker (SmolLM2 built in, or a
//! `.gguf` the user brings by file or same-origin URL), "Answer from my documents" (the tab's
//! own index; the numbered sources are listed under the answer, the ones it cites or quotes
//! marked), live
//! prefill progress and tokens/s, and the download progress. State comes from
//! `window.shoalChat` (`subscribe`); actions call its methods.

use crate::state::ChatStatus;
use leptos::prelude::*;
use leptos::task::spawn_local;
use serde::Deserialize;
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = shoalChat, js_name = subscribe)]
    fn chat_subscribe(cb: &js_sys::Function) -> JsValue;
    #[wasm_bindgen(js_namespace = shoalChat, js_name = send)]
    fn chat_send(text: &str) -> js_sys::Promise;
    #[wasm_bindgen(js_namespace = shoalChat, js_name = stop)]
    fn chat_stop();
    #[wasm_bindgen(js_namespace = shoalChat, js_name = newChat)]
    fn chat_new();
    #[wasm_bindgen(js_namespace = shoalChat, js_name = open)]
    fn chat_open(id: f64) -> js_sys::Promise;
    #[wasm_bindgen(js_namespace = shoalChat, js_name = remove)]
    fn chat_remove(id: f64) -> js_sys::Promise;
    #[wasm_bindgen(js_namespace = shoalChat, js_name = setRag)]
    fn chat_set_rag(on: bool);
    #[wasm_bindgen(js_namespace = shoalChat, js_name = load)]
    fn chat_load() -> js_sys::Promise;
    #[wasm_bindgen(js_namespace = shoalChat, js_name = selectModel)]
    fn chat_select_model(key: &str) -> js_sys::Promise;
    #[wasm_bindgen(js_namespace = shoalChat, js_name = importFile)]
    fn chat_import_file(file: &web_sys::File) -> js_sys::Promise;
    #[wasm_bindgen(js_namespace = shoalChat, js_name = importUrl)]
    fn chat_import_url(url: &str) -> js_sys::Promise;
    #[wasm_bindgen(js_namespace = shoalChat, js_name = deleteModel)]
    fn chat_delete_model(key: &str) -> js_sys::Promise;
}

#[derive(Deserialize, Clone, Default, PartialEq, Debug)]
#[serde(default)]
struct ChatState {
    status: ChatStatus,
    message: String,
    model: ChatModel,
    models: Vec<ChatModel>,
    download: Option<Download>,
    info: Option<ChatInfo>,
    generating: bool,
    live: Option<Live>,
    rag: bool,
    conversations: Vec<ConvSummary>,
    current: Option<Conversation>,
    error: Option<String>,
    notice: Option<String>,
}

#[derive(Deserialize, Clone, Default, PartialEq, Debug)]
#[serde(default)]
struct ChatModel {
    key: String,
    name: String,
    size: f64,
    builtin: bool,
    arch: Option<String>,
    available: Option<bool>,
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
struct ChatInfo {
    name: String,
    arch: String,
    context: f64,
    kernel: String,
    /// `"webgpu"` for the GPU engine (chat_gpu.rs); empty for the CPU one.
    device: String,
    adapter: String,
    wasm: String,
    #[serde(rename = "loadMs")]
    load_ms: f64,
}

#[derive(Deserialize, Clone, Default, PartialEq, Debug)]
#[serde(rename_all = "camelCase", default)]
struct Live {
    phase: String,
    done: f64,
    total: f64,
    tokens: f64,
    tok_s: f64,
}

#[derive(Deserialize, Clone, Default, PartialEq, Debug)]
#[serde(default)]
struct ConvSummary {
    id: f64,
    title: String,
    turns: f64,
}

#[derive(Deserialize, Clone, Default, PartialEq, Debug)]
#[serde(default)]
struct Conversation {
    id: Option<f64>,
    title: String,
    messages: Vec<ChatMessage>,
}

#[derive(Deserialize, Clone, Default, PartialEq, Debug)]
#[serde(default)]
struct ChatMessage {
    role: String,
    content: String,
    streaming: bool,
    error: Option<String>,
    finish: Option<String>,
    sources: Option<Vec<SourceView>>,
    stats: Option<Stats>,
}

#[derive(Deserialize, Clone, Default, PartialEq, Debug)]
#[serde(default)]
struct SourceView {
    label: String,
    text: String,
    score: f64,
    /// The answer refers to it (`[n]`).
    cited: bool,
    /// The answer repeats a run of its words.
    quoted: bool,
}

#[derive(Deserialize, Clone, Default, PartialEq, Debug)]
#[serde(rename_all = "camelCase", default)]
struct Stats {
    prompt_tokens: f64,
    tokens: f64,
    prefill_tok_s: f64,
    decode_tok_s: f64,
    first_token_ms: f64,
}

fn mb(bytes: f64) -> String {
    format!("{:.0} MB", bytes / 1e6)
}

fn js_error(e: JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| "unknown error".into())
}

/// The status line under the title: what is loaded, or what loading it costs.
fn model_line(s: &ChatState) -> String {
    match (s.status, &s.info) {
        (ChatStatus::Ready, Some(i)) => {
            let engine = if i.device == "webgpu" {
                format!("GPU ({}), {}", i.adapter, i.kernel)
            } else {
                format!("CPU, {} kernel", i.kernel)
            };
            format!(
                "{} · {} · {engine} · context {} · loaded in {:.1} s",
                s.model.name,
                i.arch,
                i.context,
                i.load_ms / 1000.0
            )
        }
        (ChatStatus::Loading, _) => {
            if s.message.is_empty() {
                format!("Loading {}…", s.model.name)
            } else {
                s.message.clone()
            }
        }
        (ChatStatus::Error, _) => format!("{} could not be loaded: {}", s.model.name, s.message),
        _ if s.model.available == Some(false) => format!(
            "{} is not in this build (scripts/build-web copies it into dist/).",
            s.model.name
        ),
        _ if s.model.size > 0.0 => format!(
            "{} · {} · downloads once, on your first message; then cached and verified on every load",
            s.model.name,
            mb(s.model.size)
        ),
        _ => format!("{} · loads on your first message", s.model.name),
    }
}

fn live_line(l: &Live) -> String {
    match l.phase.as_str() {
        "loading" => "Loading the model…".into(),
        "prefill" => format!("Reading the prompt: {} / {} tokens", l.done, l.total),
        _ => format!("{:.1} tokens/s · {} tokens", l.tok_s, l.tokens),
    }
}

fn stats_line(m: &ChatMessage) -> Option<String> {
    let st = m.stats.as_ref()?;
    let stopped = if m.finish.as_deref() == Some("cancelled") {
        " · stopped"
    } else {
        ""
    };
    Some(format!(
        "{} tokens · {:.1} tokens/s · prompt {} tokens at {:.0}/s · first token {:.0} ms{stopped}",
        st.tokens, st.decode_tok_s, st.prompt_tokens, st.prefill_tok_s, st.first_token_ms
    ))
}

#[component]
pub fn AssistantPanel() -> impl IntoView {
    let (st, set_st) = signal(ChatState::default());
    let on_state = Closure::<dyn Fn(JsValue)>::new(move |v: JsValue| {
        match serde_wasm_bindgen::from_value::<ChatState>(v) {
            Ok(s) => set_st.set(s),
            Err(e) => web_sys::console::error_1(&format!("bad state from chat.js: {e}").into()),
        }
    });
    chat_subscribe(on_state.as_ref().unchecked_ref());
    on_state.forget(); // lives as long as the page

    let (input, set_input) = signal(String::new());
    let (url, set_url) = signal(String::new());
    let (err, set_err) = signal(None::<String>);
    let run = move |p: js_sys::Promise| {
        set_err.set(None);
        spawn_local(async move {
            if let Err(e) = wasm_bindgen_futures::JsFuture::from(p).await {
                set_err.set(Some(js_error(e)));
            }
        });
    };
    // Failures of the promise-returning calls are shown under the title; the plain calls
    // (newChat, stop, setRag) never throw (chat.js).
    let send = move || {
        let text = input.get_untracked();
        if text.trim().is_empty() || st.get_untracked().generating {
            return;
        }
        set_input.set(String::new());
        run(chat_send(&text));
    };

    let messages_ref = NodeRef::<leptos::html::Ol>::new();
    Effect::new(move |_| {
        st.track();
        if let Some(el) = messages_ref.get() {
            el.set_scroll_top(el.scroll_height());
        }
    });

    let busy = move || st.get().generating;
    let loading = move || st.get().status == ChatStatus::Loading;

    view! {
        <div class="assistant" data-testid="assistant">
            <div class="assistant-model">
                <label class="grow">
                    <span class="sr">"Chat model"</span>
                    <select
                        aria-label="Chat model"
                        data-testid="chat-model"
                        disabled=move || busy() || loading()
                        prop:value=move || st.get().model.key
                        on:change=move |ev| run(chat_select_model(&event_target_value(&ev)))
                    >
                        {move || { let s = st.get(); let chosen = s.model.key.clone(); s.models.into_iter().map(move |m| {
                            let selected = m.key == chosen;
                            let label = if m.builtin {
                                format!("{} (built in)", m.name)
                            } else {
                                format!("{} · {} · {}", m.name, m.arch.clone().unwrap_or_default(), mb(m.size))
                            };
                            view! { <option value=m.key.clone() selected=selected>{label}</option> }
                        }).collect_view() }}
                    </select>
                </label>
                <Show when=move || !st.get().model.builtin>
                    <button type="button" class="secondary" disabled=busy
                        on:click=move |_| run(chat_delete_model(&st.get_untracked().model.key))>
                        "Remove model"
                    </button>
                </Show>
                <Show when=move || !matches!(st.get().status, ChatStatus::Ready | ChatStatus::Loading) && st.get().model.available != Some(false)>
                    <button type="button" class="secondary" data-testid="chat-load" on:click=move |_| run(chat_load())>"Load now"</button>
                </Show>
            </div>
            <details class="byo">
                <summary>"Bring your own .gguf"</summary>
                <div class="byo-body">
                    <label class="file">
                        "Choose a .gguf file"
                        <input type="file" accept=".gguf" data-testid="gguf-file" disabled=move || busy() || loading()
                            on:change=move |ev| {
                                let input: web_sys::HtmlInputElement = event_target(&ev);
                                if let Some(f) = input.files().and_then(|l| l.get(0)) {
                                    run(chat_import_file(&f));
                                }
                                input.set_value("");
                            } />
                    </label>
                    <form class="row wrap" on:submit=move |ev| {
                        ev.prevent_default();
                        let u = url.get_untracked();
                        if !u.trim().is_empty() { run(chat_import_url(u.trim())); }
                    }>
                        <input type="text" placeholder="…or its address on this site (same origin)" aria-label="GGUF address"
                            prop:value=url on:input=move |ev| set_url.set(event_target_value(&ev)) />
                        <button type="submit" class="secondary" disabled=move || busy() || loading()>"Add"</button>
                    </form>
                    <p class="muted">
                        "Llama and Qwen2 models (SmolLM2, TinyLlama, Llama 3.x, Qwen2.5) in F32, F16, Q8_0, Q4_0, Q4_1, Q4_K or Q6_K. The header is checked before the rest is read; the file is then split into hashed chunks, kept in this browser and verified on every load. Nothing is uploaded."
                    </p>
                </div>
            </details>
            <div class="status-line">
                <span data-testid="chat-status">{move || model_line(&st.get())}</span>
                <span class="muted">
                    {move || st.get().download.filter(|d| d.total > 0.0 && st.get().status == ChatStatus::Loading).map(|d| {
                        let rate = if d.net_bytes > 0.0 && d.rate > 0.0 { format!(" · {:.1} MB/s", d.rate / 1e6) } else { String::new() };
                        format!("{:.1} / {:.1} MB{rate}", d.loaded / 1e6, d.total / 1e6)
                    })}
                </span>
            </div>
            <Show when=loading>
                <progress
                    max="1"
                    prop:value=move || st.get().download.filter(|d| d.total > 0.0).map(|d| d.loaded / d.total).unwrap_or(0.0)
                ></progress>
            </Show>
            {move || st.get().error.map(|e| view! { <div class="notice warn" role="alert" data-testid="assistant-error">{e}</div> })}
            {move || err.get().map(|e| view! { <div class="notice warn" role="alert" data-testid="assistant-action-error">{e}</div> })}
            {move || st.get().notice.map(|e| view! { <div class="notice">{e}</div> })}
            <div class="assistant-body">
                <aside class="convs" aria-label="Conversations">
                    <button type="button" class="secondary" data-testid="new-chat" disabled=busy
                        on:click=move |_| chat_new()>"New chat"</button>
                    <ul data-testid="conversations">
                        <For
                            each=move || st.get().conversations
                            key=|c| (c.id as u64, c.title.clone(), c.turns as u64)
                            children=move |c| {
                                let id = c.id;
                                let current = move || st.get().current.and_then(|x| x.id) == Some(id);
                                view! {
                                    <li class=move || if current() { "conv current" } else { "conv" }>
                                        <button type="button" class="link conv-open" disabled=busy
                                            on:click=move |_| run(chat_open(id))>
                                            {c.title.clone()}
                                        </button>
                                        <button type="button" class="icon" title="Delete" aria-label=format!("Delete conversation {}", c.title)
                                            on:click=move |_| run(chat_remove(id))>"✕"</button>
                                    </li>
                                }
                            }
                        />
                    </ul>
                </aside>
                <div class="chat">
                    <ol class="messages" data-testid="messages" node_ref=messages_ref aria-live="polite">
                        <For
                            each={move || st.get().current.map(|c| c.messages).unwrap_or_default().into_iter().enumerate().collect::<Vec<_>>()}
                            key={|(i, m): &(usize, ChatMessage)| (*i, m.content.clone(), m.streaming, m.error.clone(), m.sources.as_ref().map(|s| s.iter().filter(|x| x.cited || x.quoted).count()), m.stats.is_some())}
                            children={move |(_, m): (usize, ChatMessage)| {
                                let class = format!("msg {}{}", m.role, if m.streaming { " streaming" } else { "" });
                                let stats = stats_line(&m);
                                let sources = m.sources.clone().unwrap_or_default();
                                view! {
                                    <li class=class data-role=m.role.clone()>
                                        <div class="bubble">
                                            <span class="text">{m.content.clone()}</span>
                                            {m.streaming.then(|| view! { <span class="caret" aria-hidden="true">"▍"</span> })}
                                        </div>
                                        {m.error.clone().map(|e| view! { <p class="msg-error" role="alert">{e}</p> })}
                                        {(!sources.is_empty()).then(|| view! {
                                            <ol class="sources" data-testid="sources">
                                                {sources.into_iter().enumerate().map(|(i, s)| view! {
                                                    <li class=if s.cited || s.quoted { "source-item cited" } else { "source-item" } data-cited=s.cited.to_string() data-quoted=s.quoted.to_string()>
                                                        <div class="hit-head">
                                                            <span class="source">{format!("[{}] {}", i + 1, s.label)}</span>
                                                            <span class="score">{match (s.cited, s.quoted) {
                                                                (true, _) => "cited".to_string(),
                                                                (false, true) => "quoted".to_string(),
                                                                _ => format!("{:.2}", s.score),
                                                            }}</span>
                                                        </div>
                                                        <p class="passage">{s.text}</p>
                                                    </li>
                                                }).collect_view()}
                                            </ol>
                                        })}
                                        {stats.map(|s| view! { <p class="muted msg-stats">{s}</p> })}
                                    </li>
                                }
                            }}
                        />
                    </ol>
                    <Show when=move || st.get().current.is_none_or(|c| c.messages.is_empty())>
                        <p class="empty">"Ask anything. The model runs in this tab: your messages never leave this device."</p>
                    </Show>
                    <p class="muted live" data-testid="chat-live">{move || st.get().live.filter(|_| st.get().generating).map(|l| live_line(&l))}</p>
                    <form class="compose" on:submit=move |ev| { ev.prevent_default(); send(); }>
                        <textarea rows="2" placeholder="Message the assistant… (Enter sends, Shift+Enter for a new line)" aria-label="Message"
                            data-testid="chat-input"
                            prop:value=input
                            on:input=move |ev| set_input.set(event_target_value(&ev))
                            on:keydown=move |ev: web_sys::KeyboardEvent| {
                                if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
                                    ev.prevent_default();
                                    send();
                                }
                            }></textarea>
                        <div class="row compose-row">
                            <label class="toggle">
                                <input type="checkbox" data-testid="rag-toggle"
                                    prop:checked=move || st.get().rag
                                    on:change=move |ev| {
                                        let input: web_sys::HtmlInputElement = event_target(&ev);
                                        chat_set_rag(input.checked());
                                    } />
                                " Answer from my documents"
                            </label>
                            <Show
                                when=busy
                                fallback=move || view! {
                                    <button type="submit" data-testid="chat-send" disabled=move || input.get().trim().is_empty() || st.get().model.available == Some(false)>"Send"</button>
                                }
                            >
                                <button type="button" class="stop" data-testid="chat-stop" on:click=move |_| chat_stop()>"Stop"</button>
                            </Show>
                        </div>
                    </form>
                </div>
            </div>
        </div>
    }
}
