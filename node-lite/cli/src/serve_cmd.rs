//! `shoal-node serve`: an OpenAI-compatible endpoint on this machine (the convention
//! llama.cpp's server, Ollama and LM Studio follow, so existing clients work unchanged):
//! `POST /v1/chat/completions` (streaming SSE or not), `POST /v1/embeddings`, `GET /v1/models`.
//! Generation runs on blocking threads behind a bounded queue; bodies are size-limited;
//! every error is a JSON `{"error": {...}}` with a 4xx/5xx status.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use node_lite::model::Embedder;
use serde::Deserialize;
use serde_json::{Value, json};
use shoal_llm::{Control, Engine, Finish, GenParams, Message, Sampling};
use tokio::sync::{Semaphore, mpsc};

/// Largest request body.
pub(crate) const MAX_BODY: usize = 1 << 20;
/// Most inputs of one embeddings request.
const MAX_EMBED_INPUTS: usize = 2048;
/// Most tokens one completion may ask for.
const MAX_COMPLETION_TOKENS: usize = 4096;

/// The embedding model's id in `/v1/models`.
pub(crate) const EMBED_MODEL_ID: &str = "all-minilm-l6-v2";

struct AppState {
    chat: Arc<Engine>,
    chat_id: String,
    embedder: Option<Arc<Mutex<Embedder>>>,
    /// Generations running at once.
    running: Arc<Semaphore>,
    /// Requests allowed to wait for a slot.
    queue: Arc<Semaphore>,
    next_id: std::sync::atomic::AtomicU64,
}

/// Options of `serve`.
pub(crate) struct ServeOptions {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Generations at once.
    pub concurrency: usize,
    /// Waiting requests beyond those (then 429).
    pub queue: usize,
}

fn err(status: StatusCode, kind: &str, msg: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error": {"message": msg.into(), "type": kind, "param": null, "code": null}})
            .to_string(),
    )
        .into_response()
}

fn bad(msg: impl Into<String>) -> Response {
    err(StatusCode::BAD_REQUEST, "invalid_request_error", msg)
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `serve` until Ctrl-C.
pub(crate) fn serve(
    chat: Engine,
    chat_id: String,
    embedder: Option<Embedder>,
    opts: ServeOptions,
) -> Result<()> {
    let state = Arc::new(AppState {
        chat: Arc::new(chat),
        chat_id,
        embedder: embedder.map(|e| Arc::new(Mutex::new(e))),
        running: Arc::new(Semaphore::new(opts.concurrency.max(1))),
        queue: Arc::new(Semaphore::new(opts.concurrency.max(1) + opts.queue)),
        next_id: 0.into(),
    });
    let app = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/embeddings", post(embeddings))
        .fallback(|| async {
            err(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "no such endpoint",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .with_context(|| format!("binding {}", opts.listen))?;
        eprintln!(
            "shoal-node serve: OpenAI-compatible API at http://{}/v1 (chat/completions, embeddings, models)",
            listener.local_addr()?
        );
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        Ok(())
    })
}

async fn models(State(s): State<Arc<AppState>>) -> Response {
    let mut data =
        vec![json!({"id": s.chat_id, "object": "model", "created": 0, "owned_by": "shoal"})];
    if s.embedder.is_some() {
        data.push(
            json!({"id": EMBED_MODEL_ID, "object": "model", "created": 0, "owned_by": "shoal"}),
        );
    }
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

#[derive(Deserialize)]
struct ChatRequest {
    model: Option<String>,
    messages: Vec<ReqMessage>,
    max_tokens: Option<usize>,
    max_completion_tokens: Option<usize>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<usize>,
    repeat_penalty: Option<f32>,
    seed: Option<u64>,
    stop: Option<Value>,
    #[serde(default)]
    stream: bool,
    n: Option<u32>,
}

#[derive(Deserialize)]
struct ReqMessage {
    role: String,
    content: Value,
}

/// OpenAI content: a string or an array of parts, of which we take the text ones.
fn content_text(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                match (
                    p.get("type").and_then(Value::as_str),
                    p.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => out.push_str(t),
                    (t, _) => {
                        return Err(format!(
                            "content part of type {t:?} is not supported (text only)"
                        ));
                    }
                }
            }
            Ok(out)
        }
        _ => Err("message content must be a string or an array of text parts".into()),
    }
}

/// A checked request, or the error response (boxed: a `Response` is large).
fn parse_chat(
    s: &AppState,
    body: &[u8],
) -> Result<(ChatRequest, Vec<Message>, GenParams), Box<Response>> {
    let bad = |m: String| Box::new(bad(m));
    let req: ChatRequest =
        serde_json::from_slice(body).map_err(|e| bad(format!("malformed request body: {e}")))?;
    if let Some(m) = &req.model
        && m != &s.chat_id
        && !m.is_empty()
    {
        return Err(Box::new(err(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!(
                "model {m:?} does not exist here (this server has {:?})",
                s.chat_id
            ),
        )));
    }
    if req.n.is_some_and(|n| n != 1) {
        return Err(bad("only n = 1 is supported".into()));
    }
    if req.messages.is_empty() {
        return Err(bad("messages must not be empty".into()));
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        if !matches!(
            m.role.as_str(),
            "system" | "user" | "assistant" | "developer"
        ) {
            return Err(bad(format!("unknown message role {:?}", m.role)));
        }
        let role = if m.role == "developer" {
            "system"
        } else {
            m.role.as_str()
        };
        messages.push(Message::new(role, content_text(&m.content).map_err(bad)?));
    }
    let max_tokens = req.max_completion_tokens.or(req.max_tokens).unwrap_or(512);
    if max_tokens == 0 || max_tokens > MAX_COMPLETION_TOKENS {
        return Err(bad(format!(
            "max_tokens must be in 1..={MAX_COMPLETION_TOKENS}"
        )));
    }
    let stop = match &req.stop {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.len() <= 4 => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad("stop must be strings".into()))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("stop must be a string or up to 4 strings".into())),
    };
    let sampling = Sampling {
        temperature: req.temperature.unwrap_or(0.0),
        top_p: req.top_p.unwrap_or(1.0),
        top_k: req.top_k.unwrap_or(0),
        repeat_penalty: req.repeat_penalty.unwrap_or(1.0),
        seed: req.seed.unwrap_or(0),
        ..Sampling::default()
    };
    sampling.validate().map_err(bad)?;
    let params = GenParams {
        max_tokens,
        sampling,
        stop,
        ..GenParams::default()
    };
    Ok((req, messages, params))
}

fn finish_reason(f: Finish) -> &'static str {
    match f {
        Finish::Stop | Finish::Cancelled => "stop",
        Finish::Length => "length",
    }
}

async fn chat_completions(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    let (req, messages, params) = match parse_chat(&s, &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let prompt = match s.chat.prompt_tokens(&messages) {
        Ok(p) => p,
        Err(e) => return bad(e.to_string()),
    };
    let ctx = s.chat.model.cfg.context;
    if prompt.len() >= ctx {
        return bad(format!(
            "the prompt is {} tokens; this model's context holds {ctx}",
            prompt.len()
        ));
    }
    // Bounded queue: beyond `concurrency + queue` waiting requests, refuse at once.
    let Ok(queued) = s.queue.clone().try_acquire_owned() else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1"), (header::CONTENT_TYPE, "application/json")],
            json!({"error": {"message": "too many requests waiting; retry shortly", "type": "rate_limit_error", "param": null, "code": null}}).to_string(),
        )
            .into_response();
    };
    let Ok(permit) = s.running.clone().acquire_owned().await else {
        return err(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "shutting down",
        );
    };
    let id = format!(
        "chatcmpl-{}",
        s.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let created = now_unix();
    let model = req
        .model
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| s.chat_id.clone());
    let engine = s.chat.clone();
    if !req.stream {
        let r = tokio::task::spawn_blocking(move || {
            let _hold = (permit, queued);
            let t0 = Instant::now();
            let now = move || t0.elapsed().as_secs_f64() * 1000.0;
            let mut session = engine.model.session();
            engine.generate(&mut session, &prompt, &params, &now, |_| Control::Continue)
        })
        .await;
        return match r {
            Ok(Ok(g)) => axum::Json(json!({
                "id": id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": g.text},
                    "finish_reason": finish_reason(g.finish), "logprobs": null}],
                "usage": {"prompt_tokens": g.prompt_tokens.len(), "completion_tokens": g.tokens.len(),
                    "total_tokens": g.prompt_tokens.len() + g.tokens.len()},
                "system_fingerprint": "shoal",
            }))
            .into_response(),
            Ok(Err(e)) => bad(e.to_string()),
            Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, "server_error", e.to_string()),
        };
    }
    // Streaming: the generation thread sends SSE events through a bounded channel (a slow
    // client slows generation down); a client that goes away stops it.
    let (tx, rx) = mpsc::channel::<Bytes>(32);
    let chunk = move |delta: Value, finish: Option<&str>| -> Bytes {
        let v = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}]});
        Bytes::from(format!("data: {v}\n\n"))
    };
    tokio::task::spawn_blocking(move || {
        let _hold = (permit, queued);
        if tx
            .blocking_send(chunk(json!({"role": "assistant", "content": ""}), None))
            .is_err()
        {
            return;
        }
        let t0 = Instant::now();
        let now = move || t0.elapsed().as_secs_f64() * 1000.0;
        let mut session = engine.model.session();
        let r = engine.generate(&mut session, &prompt, &params, &now, |ev| {
            if ev.text.is_empty() {
                return Control::Continue;
            }
            match tx.blocking_send(chunk(json!({"content": ev.text}), None)) {
                Ok(()) => Control::Continue,
                Err(_) => Control::Stop,
            }
        });
        let last = match r {
            Ok(g) => chunk(json!({}), Some(finish_reason(g.finish))),
            Err(e) => Bytes::from(format!(
                "data: {}\n\n",
                json!({"error": {"message": e.to_string(), "type": "server_error"}})
            )),
        };
        let _ = tx.blocking_send(last);
        let _ = tx.blocking_send(Bytes::from_static(b"data: [DONE]\n\n"));
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| {
            err(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                e.to_string(),
            )
        })
}

#[derive(Deserialize)]
struct EmbedRequest {
    model: Option<String>,
    input: Value,
    encoding_format: Option<String>,
}

async fn embeddings(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    let req: EmbedRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad(format!("malformed request body: {e}")),
    };
    let Some(embedder) = s.embedder.clone() else {
        return err(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "no embedding model loaded",
        );
    };
    if let Some(m) = &req.model
        && m != EMBED_MODEL_ID
        && !m.is_empty()
    {
        return err(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("model {m:?} does not exist here (embeddings: {EMBED_MODEL_ID:?})"),
        );
    }
    // The official client asks for base64 (little-endian f32) by default.
    let base64_out = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(f) => return bad(format!("encoding_format {f:?} (supported: float, base64)")),
    };
    let inputs: Vec<String> = match &req.input {
        Value::String(t) => vec![t.clone()],
        Value::Array(a) => match a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
        {
            Some(v) => v,
            None => return bad("input must be a string or an array of strings"),
        },
        _ => return bad("input must be a string or an array of strings"),
    };
    if inputs.is_empty() || inputs.len() > MAX_EMBED_INPUTS {
        return bad(format!("input must hold 1..={MAX_EMBED_INPUTS} strings"));
    }
    let Ok(_queued) = s.queue.clone().try_acquire_owned() else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            "busy",
        )
            .into_response();
    };
    let r = tokio::task::spawn_blocking(move || {
        let e = embedder
            .lock()
            .map_err(|_| "embedder poisoned".to_string())?;
        e.embed(&inputs)
            .map_err(|e| e.to_string())
            .map(|v| (v, inputs))
    })
    .await;
    match r {
        Ok(Ok((vectors, inputs))) => {
            let tokens: usize = inputs.iter().map(|t| t.split_whitespace().count()).sum();
            let data: Vec<Value> = vectors
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    let embedding = if base64_out {
                        use base64::Engine as _;
                        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                        Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
                    } else {
                        json!(v)
                    };
                    json!({"object": "embedding", "index": i, "embedding": embedding})
                })
                .collect();
            axum::Json(
                json!({"object": "list", "data": data, "model": EMBED_MODEL_ID,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
            )
            .into_response()
        }
        Ok(Err(e)) => bad(e),
        Err(e) => err(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            e.to_string(),
        ),
    }
}
