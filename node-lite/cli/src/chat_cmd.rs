//! `shoal-node chat`, `shoal-node import-gguf`: the assistant on this machine.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use node_lite::weights::chat::{ChatManifest, MAX_CHAT_BYTES};
use sha2::Digest as _;
use shoal_llm::gguf::Gguf;
use shoal_llm::{Control, Engine, GenParams, Generation, Message, Sampling};

use crate::paths;

/// Largest message accepted from the command line or standard input.
pub(crate) const MAX_PROMPT_BYTES: usize = 1 << 20;

/// Which chat model, and how to run it.
#[derive(Args, Debug, Clone)]
pub(crate) struct ChatModelArgs {
    /// Chat model: a directory written by `shoal-node import-gguf`, a .gguf file, or an
    /// http(s) URL of either. Default: $SHOAL_CHAT_MODEL or
    /// ~/.cache/shoal/models/smollm2-135m-instruct (scripts/setup imports it there).
    #[arg(long = "model", env = "SHOAL_CHAT_MODEL")]
    pub model: Option<String>,
    /// Threads for the matrix products (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl ChatModelArgs {
    /// Load and verify the model.
    pub(crate) fn load(&self) -> Result<Engine> {
        Ok(self.load_with_id()?.0)
    }

    /// Load and verify the model; also its circle id: SHA-256 of the GGUF file (the same file
    /// has the same id wherever it came from; a chat manifest's `sha256` is this value).
    pub(crate) fn load_with_hash(&self) -> Result<(Engine, [u8; 32])> {
        let loc = self
            .model
            .clone()
            .unwrap_or_else(|| paths::default_chat_model_dir().display().to_string());
        let (bytes, _) = load_bytes(&loc)?;
        let hash: [u8; 32] = sha2::Sha256::digest(&bytes).into();
        let e = Engine::from_gguf(&bytes, self.threads().max(1))
            .with_context(|| format!("loading the chat model from {loc}"))?;
        Ok((e, hash))
    }

    fn threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    /// Load and verify the model; also its id (the manifest's, or the file name's).
    pub(crate) fn load_with_id(&self) -> Result<(Engine, String)> {
        let loc = self
            .model
            .clone()
            .unwrap_or_else(|| paths::default_chat_model_dir().display().to_string());
        let threads = self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        let (bytes, id) = load_bytes(&loc)?;
        let e = Engine::from_gguf(&bytes, threads.max(1))
            .with_context(|| format!("loading the chat model from {loc}"))?;
        Ok((e, id))
    }
}

/// The GGUF bytes at `loc` (a verified import directory, a raw `.gguf` file, or a URL of
/// either) and the model's id.
fn load_bytes(loc: &str) -> Result<(Vec<u8>, String)> {
    let is_url = loc.starts_with("http://") || loc.starts_with("https://");
    if loc.ends_with(".gguf") {
        let bytes = if is_url {
            download(loc, |_| Ok(()))?
        } else {
            read_gguf_file(Path::new(loc))?
        };
        return Ok((bytes, id_from_file_name(loc)));
    }
    if !is_url && !Path::new(loc).join("manifest.json").exists() {
        bail!(
            "no chat model at {loc} (run scripts/setup, `shoal-node import-gguf FILE`, or pass --model)"
        );
    }
    let (m, bytes) = node_lite::weights::source::load_chat(loc)?;
    Ok((bytes, m.model))
}

fn read_gguf_file(p: &Path) -> Result<Vec<u8>> {
    let len = std::fs::metadata(p)
        .with_context(|| format!("{}", p.display()))?
        .len();
    if len > MAX_CHAT_BYTES {
        bail!(
            "{}: {len} bytes is over the {MAX_CHAT_BYTES}-byte limit",
            p.display()
        );
    }
    std::fs::read(p).with_context(|| format!("reading {}", p.display()))
}

/// Download a .gguf, calling `check` on the header as soon as it is complete, so an
/// unsupported model is refused before the rest is fetched.
fn download(url: &str, check: impl Fn(&Gguf) -> Result<()>) -> Result<Vec<u8>> {
    let resp = ureq::get(url)
        .timeout(std::time::Duration::from_secs(600))
        .call()
        .with_context(|| format!("fetching {url}"))?;
    let total: Option<u64> = resp.header("content-length").and_then(|v| v.parse().ok());
    if total.is_some_and(|t| t > MAX_CHAT_BYTES) {
        bail!(
            "{url}: {} bytes is over the {MAX_CHAT_BYTES}-byte limit",
            total.unwrap_or(0)
        );
    }
    let mut r = resp.into_reader().take(MAX_CHAT_BYTES + 1);
    let mut buf = Vec::new();
    let mut checked = false;
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = r
            .read(&mut chunk)
            .with_context(|| format!("reading {url}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if !checked {
            match Gguf::parse(&buf, Some(total.unwrap_or(u64::MAX))) {
                Ok(g) => {
                    check(&g)?;
                    checked = true;
                }
                Err(shoal_llm::gguf::GgufError::Truncated { .. }) => {}
                Err(e) => return Err(e).with_context(|| format!("{url} is not a usable GGUF")),
            }
        }
    }
    if buf.len() as u64 > MAX_CHAT_BYTES {
        bail!("{url}: more than {MAX_CHAT_BYTES} bytes");
    }
    Ok(buf)
}

/// Refuse what the engine cannot run, from the header alone.
fn check_supported(g: &Gguf) -> Result<()> {
    shoal_llm::check_supported(g)?;
    Ok(())
}

/// `shoal-node import-gguf FILE|URL --out DIR`.
pub(crate) fn import(from: &str, out: &Path) -> Result<()> {
    let is_url = from.starts_with("http://") || from.starts_with("https://");
    let bytes = if is_url {
        download(from, check_supported)?
    } else {
        read_gguf_file(Path::new(from))?
    };
    let g = Gguf::parse(&bytes, None).with_context(|| format!("{from} is not a usable GGUF"))?;
    check_supported(&g)?;
    let mut types = std::collections::BTreeMap::new();
    for t in g.tensors.values() {
        *types.entry(t.ty.name().to_string()).or_insert(0u64) += 1;
    }
    let arch = g.architecture().unwrap_or("").to_string();
    let name = match id_from_file_name(from) {
        n if !n.is_empty() => n,
        _ => slug(g.get_str("general.name").unwrap_or("model")),
    };
    // Every check the engine makes (tensor shapes, tokenizer, template), before writing.
    let engine = Engine::from_gguf(&bytes, 1).with_context(|| format!("checking {from}"))?;
    let c = &engine.model.cfg;
    let config = serde_json::json!({
        "layers": c.n_layers, "dim": c.dim, "ffn": c.ffn, "heads": c.n_heads, "kv_heads": c.n_kv_heads,
        "context": c.context, "vocab": c.vocab, "rope_theta": c.rope_theta, "tokenizer_pre": engine.tokenizer.pre,
        "name": c.name,
    });
    let (m, chunks) = ChatManifest::describe(&name, &bytes, &arch, types, config, from);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for (file, data) in &chunks {
        write_atomic(&out.join(file), data)?;
    }
    write_atomic(&out.join("manifest.json"), &serde_json::to_vec_pretty(&m)?)?;
    eprintln!(
        "imported {name} ({arch}, {} tensors: {}) into {}: {} chunks, {} bytes, sha256 {}",
        g.tensors.len(),
        m.tensor_types
            .iter()
            .map(|(k, v)| format!("{v}×{k}"))
            .collect::<Vec<_>>()
            .join(", "),
        out.display(),
        m.chunks.len(),
        m.total_size,
        m.sha256
    );
    Ok(())
}

fn write_atomic(p: &Path, data: &[u8]) -> Result<()> {
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, p).with_context(|| format!("renaming {}", tmp.display()))?;
    Ok(())
}

/// A model id from a file name, as llama.cpp's server names models:
/// `SmolLM2-135M-Instruct.Q4_1.gguf` → `smollm2-135m-instruct` (quantization tag dropped).
fn id_from_file_name(from: &str) -> String {
    let name = from
        .rsplit('/')
        .next()
        .unwrap_or(from)
        .trim_end_matches(".gguf");
    let base = match name.rsplit_once(['.', '-']) {
        Some((b, tag)) if is_quant_tag(tag) => b,
        _ => name,
    };
    slug(base)
}

fn is_quant_tag(t: &str) -> bool {
    let t = t.to_ascii_uppercase();
    t.starts_with('Q') && t[1..].starts_with(|c: char| c.is_ascii_digit())
        || ["F16", "F32", "BF16"].contains(&t.as_str())
}

fn slug(raw: &str) -> String {
    let mut id: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while id.contains("--") {
        id = id.replace("--", "-");
    }
    id.trim_matches('-').to_string()
}

/// Sampling and limits of `chat` (and `ask`).
#[derive(Args, Debug, Clone)]
pub(crate) struct GenArgs {
    /// Most tokens to generate.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// 0 = greedy (deterministic); higher = more varied.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Keep only the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Penalise tokens seen in the last 64 (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Random seed (same seed + same engine = same text).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when the answer contains this string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
}

impl GenArgs {
    pub(crate) fn params(&self) -> Result<GenParams> {
        let sampling = Sampling {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            repeat_penalty: self.repeat_penalty,
            seed: self.seed,
            ..Sampling::default()
        };
        sampling.validate().map_err(anyhow::Error::msg)?;
        if self.max_tokens == 0 {
            bail!("--max-tokens must be at least 1");
        }
        Ok(GenParams {
            max_tokens: self.max_tokens,
            sampling,
            stop: self.stop.clone(),
            ..GenParams::default()
        })
    }
}

/// Ctrl-C stops the current answer (not the program) while one is being generated.
fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let _ = std::thread::Builder::new()
        .name("ctrl-c".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                while tokio::signal::ctrl_c().await.is_ok() {
                    if f.swap(true, Ordering::SeqCst) {
                        // A second Ctrl-C before the first was handled: leave.
                        std::process::exit(130);
                    }
                }
            });
        });
    flag
}

fn clock() -> impl Fn() -> f64 {
    let t0 = Instant::now();
    move || t0.elapsed().as_secs_f64() * 1000.0
}

/// Stream one answer to stdout; returns the generation.
pub(crate) fn answer(
    engine: &Engine,
    session: &mut shoal_llm::Session,
    messages: &[Message],
    params: &GenParams,
    stream: bool,
    stop: &AtomicBool,
) -> Result<Generation> {
    let prompt = engine.prompt_tokens(messages)?;
    let now = clock();
    let mut out = std::io::stdout().lock();
    let g = engine.generate(session, &prompt, params, &now, |ev| {
        if stream {
            let _ = out.write_all(ev.text.as_bytes());
            let _ = out.flush();
        }
        if stop.swap(false, Ordering::SeqCst) {
            Control::Stop
        } else {
            Control::Continue
        }
    })?;
    Ok(g)
}

fn check_len(text: &str, what: &str) -> Result<()> {
    if text.len() > MAX_PROMPT_BYTES {
        bail!(
            "{what} is {} bytes, over the {MAX_PROMPT_BYTES}-byte limit (the model's context holds far less)",
            text.len()
        );
    }
    Ok(())
}

/// The `--json` line.
pub(crate) fn json_line(g: &Generation) -> serde_json::Value {
    serde_json::json!({
        "prompt_tokens": g.prompt_tokens, "tokens": g.tokens, "text": g.text,
        "prefill_tok_s": g.prefill_tok_s, "decode_tok_s": g.decode_tok_s,
        "first_token_ms": g.first_token_ms,
    })
}

/// `shoal-node chat [PROMPT]`.
pub(crate) fn chat(
    prompt: Option<String>,
    system: Option<String>,
    json: bool,
    model: &ChatModelArgs,
    gen_args: &GenArgs,
) -> Result<()> {
    let params = gen_args.params()?;
    let mut history: Vec<Message> = Vec::new();
    if let Some(s) = system {
        check_len(&s, "--system")?;
        history.push(Message::new("system", s));
    }
    if let Some(p) = prompt {
        check_len(&p, "the prompt")?;
        let engine = model.load()?;
        history.push(Message::new("user", p));
        let stop = interrupt_flag();
        let mut session = engine.model.session();
        let g = answer(&engine, &mut session, &history, &params, !json, &stop)?;
        if json {
            println!("{}", json_line(&g));
        } else {
            println!();
            eprintln!(
                "[{} prompt tokens at {:.0} tok/s, {} generated at {:.1} tok/s{}]",
                g.prompt_tokens.len(),
                g.prefill_tok_s,
                g.tokens.len(),
                g.decode_tok_s,
                if g.finish == shoal_llm::Finish::Cancelled {
                    ", stopped"
                } else {
                    ""
                }
            );
        }
        return Ok(());
    }
    // Interactive: a conversation on standard input, one message per line.
    let engine = model.load()?;
    let stop = interrupt_flag();
    let mut session = engine.model.session();
    let stdin = std::io::stdin();
    let mut line_no = 0;
    let tty = std::io::IsTerminal::is_terminal(&stdin);
    if tty {
        eprintln!(
            "Chatting with {} (Ctrl-C stops an answer, Ctrl-D leaves).",
            engine.model.cfg.name
        );
    }
    let mut reader = stdin.lock();
    loop {
        if tty {
            eprint!("> ");
            let _ = std::io::stderr().flush();
        }
        let mut raw = Vec::new();
        let n = reader
            .by_ref()
            .take(MAX_PROMPT_BYTES as u64 + 1)
            .read_until(b'\n', &mut raw)
            .context("reading standard input")?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if raw.len() > MAX_PROMPT_BYTES {
            // Skip the rest of the oversized line.
            let mut rest = Vec::new();
            let _ = reader.read_until(b'\n', &mut rest);
            eprintln!(
                "shoal-node: line {line_no} is over the {MAX_PROMPT_BYTES}-byte limit; skipped"
            );
            continue;
        }
        let Ok(text) = String::from_utf8(raw) else {
            eprintln!("shoal-node: line {line_no} of standard input is not valid UTF-8; skipped");
            continue;
        };
        let text = text.trim_end_matches(['\n', '\r']).to_string();
        if text.trim().is_empty() {
            continue;
        }
        stop.store(false, Ordering::SeqCst);
        history.push(Message::new("user", text));
        match answer(&engine, &mut session, &history, &params, !json, &stop) {
            Ok(g) => {
                if json {
                    println!("{}", json_line(&g));
                } else {
                    println!();
                }
                history.push(Message::new("assistant", g.text));
            }
            Err(e) => {
                history.pop();
                eprintln!("shoal-node: {e}");
            }
        }
    }
    Ok(())
}

/// `$SHOAL_CHAT_MODEL`'s default location.
pub(crate) fn default_dir() -> PathBuf {
    paths::default_chat_model_dir()
}
