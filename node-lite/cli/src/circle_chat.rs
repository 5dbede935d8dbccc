//! The assistant across a circle, natively: `shoal-node chat --circle LINK` asks the circle
//! (the best member serves, the answer streams back sealed, is verified by teacher forcing on
//! this machine's own model, and continues elsewhere when a member leaves, stalls, errs or
//! lies), and `shoal-node join LINK --chat` serves answers for the others.
//!
//! The chat model runs on one thread per process ([`ChatThread`]): served requests, this
//! device's own generation and verification, one at a time; tokens go to the circle driver as
//! [`AppCmd`]s, each generation stops between two tokens when its flag is set.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use clap::Args;
use node_lite::jobs::{ChatModelCap, GenAsk, GenConfig, GenFinish, JobId};
use node_lite::rtc::app::{AppCmd, AppEvent};
use node_lite::rtc::native::{self, ComputeFn};
use node_lite::rtc::node::{GenKey, GenOut, GenTask, ServeOut};
use shoal_llm::decode::Step;
use shoal_llm::verify::{TOLERANCE, Verdict, check_answer_from};
use shoal_llm::{Engine, Finish, GenParams, Message, Sampling, Session, TextStream};
use tokio::sync::mpsc;

use crate::chat_cmd::{ChatModelArgs, GenArgs};
use crate::circle_net::{NetArgs, WaitArgs, anchor, config, jline, runtime, submit_entries};

/// A chat model a member serves: the engine and what it advertises.
pub(crate) struct ChatServing {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Model id and measured rates.
    pub cap: ChatModelCap,
    /// Test hooks of serving.
    pub hooks: ServeHooks,
}

/// TEST HOOKS of a serving member.
#[derive(Clone, Debug, Default)]
pub(crate) struct ServeHooks {
    /// Replace the answer token at every position ≡ 10 (mod N) with the next id.
    pub tamper_every: Option<usize>,
    /// Once this file exists, an answer being served stops after 8 tokens: the member
    /// prints `{"event":"holding"}` and never sends another (a test kills it there).
    pub hold_file: Option<std::path::PathBuf>,
}

impl ChatServing {
    /// Load the chat model, hash it, measure its rates.
    pub(crate) fn load(args: &ChatModelArgs, hooks: ServeHooks) -> Result<Self> {
        let (engine, model) = args.load_with_hash()?;
        let (prefill, decode) = calibrate(&engine)?;
        Ok(ChatServing {
            engine: Arc::new(engine),
            cap: ChatModelCap {
                model,
                prefill_tok_s: prefill,
                decode_tok_s: decode,
            },
            hooks,
        })
    }
}

/// Prefill and decode tokens/s of `engine` on a short chat (one warm-up, one measured).
fn calibrate(engine: &Engine) -> Result<(f32, f32)> {
    let prompt = engine.prompt_tokens(&[Message::new(
        "user",
        "Write two sentences about the sea and the wind.",
    )])?;
    let params = GenParams {
        max_tokens: 24,
        ..GenParams::default()
    };
    let t0 = Instant::now();
    let now = move || t0.elapsed().as_secs_f64() * 1000.0;
    let mut g = None;
    for _ in 0..2 {
        let mut s = engine.model.session();
        g = Some(engine.generate(&mut s, &prompt, &params, &now, |_| {
            shoal_llm::Control::Continue
        })?);
    }
    let g = g.context("calibration")?;
    Ok((g.prefill_tok_s as f32, g.decode_tok_s as f32))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn finish_of(f: Finish) -> GenFinish {
    match f {
        Finish::Stop => GenFinish::Stop,
        Finish::Length => GenFinish::Length,
        Finish::Cancelled => GenFinish::Cancelled,
    }
}

fn sampling_of(json: &str) -> Result<Sampling, String> {
    let s: Sampling = serde_json::from_str(json).map_err(|e| format!("sampling: {e}"))?;
    s.validate()?;
    Ok(s)
}

/// What to continue: `prompt ‖ prefix`, up to `max_tokens` answer tokens in all.
struct Continuation<'a> {
    prompt: &'a [u32],
    prefix: &'a [u32],
    max_tokens: u32,
    /// Sampling settings (JSON).
    sampling: &'a str,
}

/// Generate `c`; `emit(position, tokens)` sees every new token (the stop token included) and
/// returns `false` to stop.
fn generate(
    engine: &Engine,
    session: &mut Session,
    c: &Continuation<'_>,
    stop: &AtomicBool,
    mut emit: impl FnMut(usize, &[u32]) -> bool,
) -> Result<(usize, GenFinish), String> {
    let Continuation {
        prompt,
        prefix,
        max_tokens,
        sampling,
    } = *c;
    let sampling = sampling_of(sampling)?;
    let remaining = (max_tokens as usize).saturating_sub(prefix.len());
    if remaining == 0 {
        return Ok((prefix.len(), GenFinish::Length));
    }
    let full: Vec<u32> = prompt.iter().chain(prefix).copied().collect();
    let params = GenParams {
        max_tokens: remaining,
        sampling,
        ..GenParams::default()
    };
    let t0 = Instant::now();
    let now = move || t0.elapsed().as_secs_f64() * 1000.0;
    let mut g = engine
        .start(session, &full, &params, &now)
        .map_err(|e| e.to_string())?;
    let mut sent = 0;
    loop {
        if stop.load(Ordering::Acquire) {
            g.cancel();
        }
        let step = g.step(engine, session, &now).map_err(|e| e.to_string())?;
        let total = g.tokens().len();
        if total > sent {
            let new = g.tokens()[sent..].to_vec();
            if !emit(prefix.len() + sent, &new) {
                g.cancel();
            }
            sent = total;
        }
        if let Step::Done(f) = step {
            return Ok((prefix.len() + sent, finish_of(f)));
        }
    }
}

enum ChatJob {
    Serve {
        task: GenTask,
        stop: Arc<AtomicBool>,
    },
    Local {
        job: JobId,
        attempt: u32,
        prompt: Vec<u32>,
        prefix: Vec<u32>,
        max_tokens: u32,
        sampling: String,
        stop: Arc<AtomicBool>,
    },
    Verify {
        job: JobId,
        prompt: Vec<u32>,
        answer: Vec<u32>,
        from: usize,
        sampling: String,
    },
}

/// Most served generations whose stop flag is kept.
const STOP_FLAGS: usize = 16;

/// The chat model's thread, as the circle loop sees it.
pub(crate) struct ChatThread {
    /// Microseconds spent verifying, in all.
    verify_us: Arc<std::sync::atomic::AtomicU64>,
    jobs: std::sync::mpsc::SyncSender<ChatJob>,
    stops: VecDeque<(GenKey, Arc<AtomicBool>)>,
    local_stop: Arc<AtomicBool>,
    cmd: mpsc::Sender<AppCmd>,
}

impl ChatThread {
    /// Start the thread; its results go to the circle driver through `cmd`.
    pub(crate) fn spawn(engine: Arc<Engine>, cmd: mpsc::Sender<AppCmd>, hooks: ServeHooks) -> Self {
        let (jobs, rx) = std::sync::mpsc::sync_channel::<ChatJob>(8);
        let out = cmd.clone();
        let verify_us = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let spent = verify_us.clone();
        let spawned = std::thread::Builder::new()
            .name("shoal-chat".into())
            .spawn(move || chat_thread(&engine, &rx, &out, &hooks, &spent));
        if let Err(e) = spawned {
            eprintln!("shoal-node: chat thread: {e}");
        }
        ChatThread {
            verify_us,
            jobs,
            stops: VecDeque::new(),
            local_stop: Arc::new(AtomicBool::new(false)),
            cmd,
        }
    }

    /// A worker-side request: run it, or stop it.
    pub(crate) fn serve(&mut self, s: ServeOut) {
        match s {
            ServeOut::Generate(task) => {
                let stop = Arc::new(AtomicBool::new(false));
                self.stops.push_back((task.key(), stop.clone()));
                while self.stops.len() > STOP_FLAGS {
                    self.stops.pop_front();
                }
                let key = task.key();
                if self.jobs.try_send(ChatJob::Serve { task, stop }).is_err() {
                    let _ = self.cmd.try_send(AppCmd::GenServed {
                        key,
                        outcome: Err("busy".into()),
                    });
                }
            }
            ServeOut::Stop(key) => {
                if let Some((_, f)) = self.stops.iter().find(|(k, _)| *k == key) {
                    f.store(true, Ordering::Release);
                }
            }
        }
    }

    /// Our own answer's work: local generation, stop, verification.
    fn own(&mut self, g: &GenOut) -> Result<()> {
        let job = match g {
            GenOut::RunLocal {
                job,
                attempt,
                prompt,
                prefix,
                max_tokens,
                sampling,
            } => {
                self.local_stop = Arc::new(AtomicBool::new(false));
                ChatJob::Local {
                    job: *job,
                    attempt: *attempt,
                    prompt: prompt.clone(),
                    prefix: prefix.clone(),
                    max_tokens: *max_tokens,
                    sampling: sampling.clone(),
                    stop: self.local_stop.clone(),
                }
            }
            GenOut::StopLocal { .. } => {
                self.local_stop.store(true, Ordering::Release);
                return Ok(());
            }
            GenOut::Verify {
                job,
                prompt,
                answer,
                from,
                sampling,
            } => ChatJob::Verify {
                job: *job,
                prompt: prompt.clone(),
                answer: answer.clone(),
                from: *from,
                sampling: sampling.clone(),
            },
            _ => return Ok(()),
        };
        // Never block the event loop: our own answer has at most one local run and one piece
        // to verify waiting, so a full queue means the thread is gone or stuck.
        self.jobs
            .try_send(job)
            .ok()
            .context("the chat thread stopped or is overloaded")
    }
}

fn chat_thread(
    engine: &Engine,
    jobs: &std::sync::mpsc::Receiver<ChatJob>,
    out: &mpsc::Sender<AppCmd>,
    hooks: &ServeHooks,
    verify_us: &std::sync::atomic::AtomicU64,
) {
    let mut serve_session = engine.model.session();
    let mut own_session = engine.model.session();
    let vocab = engine.model.cfg.vocab as u32;
    while let Ok(job) = jobs.recv() {
        let sent = match job {
            ChatJob::Serve { task, stop } => {
                let key = task.key();
                let t0 = Instant::now();
                let mut emitted = Vec::new();
                let c = Continuation {
                    prompt: &task.prompt,
                    prefix: &task.prefix,
                    max_tokens: task.max_tokens,
                    sampling: &task.sampling,
                };
                let outcome = generate(engine, &mut serve_session, &c, &stop, |start, tokens| {
                    if start >= task.prefix.len() + 8
                        && hooks
                            .hold_file
                            .as_deref()
                            .is_some_and(std::path::Path::exists)
                    {
                        jline(serde_json::json!({"event": "holding", "tokens": start}));
                        loop {
                            std::thread::sleep(Duration::from_secs(3600));
                        }
                    }
                    let mut tokens = tokens.to_vec();
                    if let Some(n) = hooks.tamper_every {
                        for (i, t) in tokens.iter_mut().enumerate() {
                            if (start + i) % n.max(1) == 10 % n.max(1) {
                                *t = (*t + 1) % vocab;
                            }
                        }
                    }
                    emitted.push(unix_ms());
                    out.blocking_send(AppCmd::GenEmit { key, start, tokens })
                        .is_ok()
                });
                let ms = t0.elapsed().as_secs_f64() * 1000.0;
                if let Ok((end, _)) = &outcome {
                    let n = end - task.prefix.len();
                    jline(serde_json::json!({"event": "served", "tokens": n, "ms": ms,
                        "prefix": task.prefix.len(), "prompt": task.prompt.len(),
                        "emit_unix_ms": emitted}));
                }
                out.blocking_send(AppCmd::GenServed {
                    key,
                    outcome: outcome.map(|(_, f)| f),
                })
            }
            ChatJob::Local {
                job,
                attempt,
                prompt,
                prefix,
                max_tokens,
                sampling,
                stop,
            } => {
                let c = Continuation {
                    prompt: &prompt,
                    prefix: &prefix,
                    max_tokens,
                    sampling: &sampling,
                };
                let outcome = generate(engine, &mut own_session, &c, &stop, |start, tokens| {
                    out.blocking_send(AppCmd::GenLocalTokens {
                        job,
                        attempt,
                        start,
                        tokens: tokens.to_vec(),
                    })
                    .is_ok()
                });
                out.blocking_send(AppCmd::GenLocalDone {
                    job,
                    attempt,
                    outcome: outcome.map(|(_, f)| f),
                })
            }
            ChatJob::Verify {
                job,
                prompt,
                answer,
                from,
                sampling,
            } => {
                let t0 = Instant::now();
                let verdict = sampling_of(&sampling)
                    .map_err(anyhow::Error::msg)
                    .and_then(|s| {
                        Ok(check_answer_from(
                            &engine.model,
                            &mut own_session,
                            &prompt,
                            &answer,
                            from,
                            &s,
                            TOLERANCE,
                        )?)
                    });
                verify_us.fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
                let outcome = match verdict {
                    Ok(Verdict::Accepted { .. }) => Ok(()),
                    Ok(Verdict::Rejected { position, .. }) => Err(position),
                    // The answer cannot even be run through the model (too long, bad ids):
                    // the first token stands rejected.
                    Err(e) => {
                        eprintln!("shoal-node: verification failed: {e}");
                        Err(0)
                    }
                };
                out.blocking_send(AppCmd::GenVerified {
                    job,
                    len: answer.len(),
                    outcome,
                })
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

/// Options of `chat --circle`.
#[derive(Args, Debug, Clone)]
pub(crate) struct CircleChatArgs {
    /// Ask this circle (link, shoal://circle#c=…, or the bare key): the fastest member that
    /// holds the same model answers (or this machine, if it is faster); the answer is checked
    /// on this machine's model before it counts.
    #[arg(long)]
    pub circle: Option<String>,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Ask a member even when this machine is faster.
    #[arg(long)]
    pub prefer_remote: bool,
    /// Do not verify members' answers (they are verified by default).
    #[arg(long)]
    pub no_verify: bool,
    /// This machine's decode rate (tokens/s) for the choice, instead of measuring it.
    #[arg(long)]
    pub local_rate: Option<f32>,
    /// Longest wait for a member's next token (ms) before the answer moves on.
    #[arg(long, default_value_t = 5000)]
    pub token_deadline_ms: u64,
    /// Keep the countersigned receipts here (`shoal-node receipts` checks them).
    #[arg(long, env = "SHOAL_RECEIPTS", default_value_os_t = crate::paths::default_receipts())]
    pub receipts: std::path::PathBuf,
    /// TEST HOOK: press Stop once this many answer tokens arrived.
    #[arg(long, hide = true)]
    pub test_stop_after: Option<usize>,
    #[command(flatten)]
    pub net: NetArgs,
}

/// `shoal-node chat --circle LINK PROMPT`.
pub(crate) fn ask(
    prompt: Option<String>,
    system: Option<String>,
    json: bool,
    model: &ChatModelArgs,
    gen_args: &GenArgs,
    args: &CircleChatArgs,
) -> Result<()> {
    let Some(prompt) = prompt else {
        bail!("chat --circle needs the message as an argument");
    };
    let link = args.circle.as_deref().context("--circle")?;
    let params = gen_args.params()?;
    if !params.stop.is_empty() {
        bail!("--stop is not supported with --circle yet");
    }
    let (engine, model_id) = model.load_with_hash()?;
    let local_rate = match args.local_rate {
        Some(r) => r,
        None => calibrate(&engine)?.1,
    };
    let mut messages = Vec::new();
    if let Some(s) = system {
        messages.push(Message::new("system", s));
    }
    messages.push(Message::new("user", prompt));
    let prompt_tokens = engine.prompt_tokens(&messages)?;
    let engine = Arc::new(engine);
    let cfg = config(link, &args.net, 0.0, Vec::new())?;
    let names = std::sync::Mutex::new(std::collections::BTreeMap::new());
    let ask = GenAsk {
        model: model_id,
        prompt: prompt_tokens.clone(),
        max_tokens: params.max_tokens.min(node_lite::jobs::msg::MAX_GEN_TOKENS) as u32,
        sampling: serde_json::to_string(&params.sampling)?,
        local_decode_tok_s: f64::from(local_rate),
        prefer_remote: args.prefer_remote,
    };
    let gen_cfg = GenConfig {
        verify: !args.no_verify,
        token_gap_ms: args.token_deadline_ms.max(100),
        ..GenConfig::default()
    };
    let no_embedder: ComputeFn = Box::new(|_| Err("this member embeds nothing".into()));
    let rt = runtime()?;
    let summary = rt.block_on(async {
        let (cmd_tx, cmd_rx) = mpsc::channel(256);
        let (ev_tx, mut ev_rx) = mpsc::channel(1024);
        let mut ncfg = cfg;
        ncfg.generation = gen_cfg;
        let driver = tokio::spawn(native::run(ncfg, no_embedder, cmd_rx, ev_tx));
        let mut chat = ChatThread::spawn(engine.clone(), cmd_tx.clone(), ServeHooks::default());
        // Members first.
        args.wait.members(&mut ev_rx, |peer, caps| {
            let serves = caps.chat.iter().find(|c| c.model == model_id)
                .map(|c| format!("{:.0} tok/s", c.decode_tok_s)).unwrap_or_else(|| "no such model".into());
            eprintln!("member up: {} ({}, {}, {serves})", caps.name, peer.short(), caps.backend);
            if let Ok(mut n) = names.lock() { n.insert(*peer, (caps.name.clone(), caps.backend.clone())); }
        }).await?;
        let t0 = Instant::now();
        cmd_tx.send(AppCmd::Generate(ask)).await.ok().context("driver stopped")?;
        let mut text = TextStream::default();
        let mut shown = String::new();
        let mut out = std::io::stdout().lock();
        let mut receipts = Vec::new();
        let mut records = Vec::new();
        let mut excluded = Vec::new();
        let mut serving = Vec::new();
        let mut recv_unix_ms: Vec<u64> = Vec::new();
        let mut first_token_ms = None;
        let mut last_token_at = None;
        let mut verified_after_ms = 0.0;
        let mut stopped = false;
        let name = |p: &node_lite::identity::PeerId| {
            names.lock().ok().and_then(|n| n.get(p).map(|x| format!("{} ({})", x.0, x.1))).unwrap_or_else(|| p.short())
        };
        let (tokens, finish, verified, spans) = loop {
            let Some(ev) = ev_rx.recv().await else { bail!("circle driver stopped") };
            let AppEvent::Gen(g) = ev else {
                match ev {
                    AppEvent::Receipt(r) => receipts.push(*r),
                    AppEvent::Misbehaviour(m) => records.push(*m),
                    AppEvent::PeerUp { peer, caps } => {
                        if let Ok(mut n) = names.lock() { n.insert(peer, (caps.name, caps.backend)); }
                    }
                    _ => {}
                }
                continue;
            };
            chat.own(&g)?;
            match g {
                GenOut::Serving { by, reason } => {
                    let who = by.as_ref().map_or_else(|| "this machine".to_string(), &name);
                    eprintln!("answered by {who}: {reason}");
                    serving.push(serde_json::json!({"by": by.map(|p| p.to_string()), "name": who, "reason": reason}));
                }
                GenOut::Tokens { start, tokens } => {
                    let now = unix_ms();
                    last_token_at = Some(Instant::now());
                    first_token_ms.get_or_insert_with(|| t0.elapsed().as_secs_f64() * 1000.0);
                    recv_unix_ms.truncate(start);
                    for &t in &tokens {
                        recv_unix_ms.push(now);
                        let piece = text.push(&engine.tokenizer, t).unwrap_or_default();
                        shown.push_str(&piece);
                        if !json {
                            let _ = out.write_all(piece.as_bytes());
                            let _ = out.flush();
                        }
                    }
                    if let Some(n) = args.test_stop_after && !stopped && recv_unix_ms.len() >= n {
                        stopped = true;
                        cmd_tx.send(AppCmd::StopGeneration).await.ok().context("driver stopped")?;
                    }
                }
                GenOut::Rewind { to } => {
                    // Rebuild the text of the answer's first `to` tokens.
                    let kept: Vec<u32> = text_ids(&text, &engine, to);
                    text = TextStream::default();
                    shown.clear();
                    for t in kept {
                        shown.push_str(&text.push(&engine.tokenizer, t).unwrap_or_default());
                    }
                    recv_unix_ms.truncate(to);
                    if !json {
                        let _ = write!(out, "\n[a member's answer failed verification at token {to}; the answer continues from there:]\n{shown}");
                        let _ = out.flush();
                    }
                }
                GenOut::Excluded { peer, why } => {
                    eprintln!("excluded {}: {why:?}", name(&peer));
                    excluded.push(serde_json::json!({"peer": peer.to_string(), "name": name(&peer), "why": format!("{why:?}")}));
                }
                GenOut::Verify { .. } => {}
                GenOut::Finished { tokens, finish, verified, spans, .. } => {
                    if let Some(t) = last_token_at { verified_after_ms = Instant::elapsed(&t).as_secs_f64() * 1000.0; }
                    break (tokens, finish, verified, spans);
                }
                GenOut::Failed { error } => bail!("generation failed: {error}"),
                GenOut::RunLocal { .. } | GenOut::StopLocal { .. } => {}
            }
        };
        let elapsed_ms = t0.elapsed().as_secs_f64() * 1000.0;
        // Worker signatures follow their end of stream: collect the stragglers.
        let remote_attempts = spans.iter().filter(|s| s.1.is_some()).count();
        let straggle = tokio::time::Instant::now() + Duration::from_millis(1500);
        while receipts.len() < remote_attempts {
            tokio::select! {
                ev = ev_rx.recv() => match ev {
                    Some(AppEvent::Receipt(r)) => receipts.push(*r),
                    Some(AppEvent::Misbehaviour(m)) => records.push(*m),
                    Some(_) => {}
                    None => break,
                },
                _ = tokio::time::sleep_until(straggle) => break,
            }
        }
        let anchored = anchor(&receipts, &args.net.relays, &args.receipts);
        // Misbehaviour records go to the same log, so anyone can see the member was caught.
        let record_bytes: Vec<Vec<u8>> = records.iter().map(|m| m.encode()).collect();
        let record_promises = submit_entries(&record_bytes, &args.net.relays);
        let verify_ms = chat.verify_us.load(Ordering::Relaxed) as f64 / 1000.0;
        drop(chat);
        drop(cmd_tx);
        drop(ev_rx);
        let _ = tokio::time::timeout(Duration::from_secs(5), driver).await;
        let n = tokens.len();
        let decode_ms = match (recv_unix_ms.first(), recv_unix_ms.last()) {
            (Some(a), Some(b)) if n > 1 => (b - a) as f64,
            _ => 0.0,
        };
        let answer = engine.tokenizer.decode(strip_stop(&engine, &tokens)).unwrap_or_default();
        if !json {
            let _ = writeln!(out);
        }
        Ok::<_, anyhow::Error>(serde_json::json!({
            "prompt_tokens": prompt_tokens, "tokens": tokens, "text": answer,
            "finish": format!("{finish:?}").to_lowercase(), "verified": verified,
            "spans": spans.iter().map(|(s, by, a)| serde_json::json!({"start": s,
                "by": by.map(|p| p.to_string()), "name": by.map_or_else(|| "this machine".to_string(), |p| name(&p)),
                "attempt": a})).collect::<Vec<_>>(),
            "serving": serving, "excluded": excluded,
            "misbehaviour": record_bytes.iter().enumerate().map(|(i, b)| serde_json::json!({
                "record": base64::engine::general_purpose::STANDARD.encode(b),
                "worker": node_lite::identity::PeerId(records[i].body.worker).to_string(),
                "position": records[i].position,
                "log_index": record_promises.get(i).map(|p| p.0),
                "leaf_hash": record_promises.get(i).map(|p| p.1.clone()),
            })).collect::<Vec<_>>(),
            "receipts": receipts.len(), "anchored": anchored,
            "first_token_ms": first_token_ms, "ms": elapsed_ms,
            "tok_s": if decode_ms > 0.0 { (n - 1) as f64 * 1000.0 / decode_ms } else { 0.0 },
            "verify_ms": verify_ms,
            "verified_after_ms": verified_after_ms, "recv_unix_ms": recv_unix_ms, "local_decode_tok_s": local_rate,
        }))
    })?;
    if json {
        println!("{summary}");
    } else {
        eprintln!(
            "[{} tokens, {}; {}]",
            summary["tokens"].as_array().map_or(0, Vec::len),
            summary["finish"].as_str().unwrap_or(""),
            match summary["verified"].as_bool() {
                Some(true) => "verified on this machine",
                Some(false) => "NOT verified",
                None => "generated on this machine",
            }
        );
    }
    Ok(())
}

/// The answer's ids without its trailing stop token (for the text).
fn strip_stop<'a>(engine: &Engine, tokens: &'a [u32]) -> &'a [u32] {
    match tokens.split_last() {
        Some((last, rest)) if engine.tokenizer.is_stop(*last) => rest,
        _ => tokens,
    }
}

/// The first `n` ids a text stream was fed.
fn text_ids(t: &TextStream, _engine: &Engine, n: usize) -> Vec<u32> {
    let mut ids = t.ids().to_vec();
    ids.truncate(n);
    ids
}
