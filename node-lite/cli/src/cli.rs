//! Command-line interface.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use node_lite::index::{FileStatus, Index, collect_files};
use node_lite::model::{Backend, Embedder, Precision};
use node_lite::weights::{Variant, VerifiedWeights, source};
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::paths;

/// Largest input line `embed` accepts.
const MAX_LINE_BYTES: usize = 64 << 20;
/// Lines embedded per round (bounds memory on endless input).
const EMBED_ROUND: usize = 256;

#[derive(Parser, Debug)]
#[command(
    name = "shoal-node",
    version,
    about = "Private sentence embeddings and semantic search, on your own machine.",
    long_about = "shoal-node runs all-MiniLM-L6-v2 locally (a fused SIMD encoder on the CPU by \
default, burn flex with --backend flex, burn wgpu with --backend gpu). Nothing you embed or search leaves this machine.\n\n\
Typical use:\n  shoal-node index ~/notes            # embed every .txt/.md file under ~/notes\n  \
shoal-node search \"how do I renew my passport\" -k 5\n  \
echo \"some text\" | shoal-node embed   # one JSON object per line: {\"text\", \"vector\"}\n\n\
The model is found in --model, $SHOAL_MODEL_DIR or ~/.cache/shoal/models/all-minilm-l6-v2 \
(scripts/setup puts it there). Weights are verified against their manifest on every load."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Embed text: one input per line (empty lines skipped), one JSON object per output line:
    /// {"text": "...", "vector": [384 floats]}.
    Embed {
        /// Input file, or - (default) for standard input.
        #[arg(default_value = "-")]
        input: String,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        circle: crate::circle_cmd::CircleEmbedArgs,
    },
    /// Join a circle (link `…#c=<key>`) and compute shards for its members until stopped.
    /// Events go to stderr as JSON lines.
    Join {
        /// The circle link, a shoal://circle#c=… URI, or the bare key.
        link: String,
        #[command(flatten)]
        net: crate::circle_net::NetArgs,
        #[command(flatten)]
        model: ModelArgs,
        /// Also answer the members' chat requests, with the default chat model (or
        /// --chat-model).
        #[arg(long)]
        chat: bool,
        /// Chat model to serve (as `chat --model`; implies --chat).
        #[arg(long = "chat-model")]
        chat_model: Option<String>,
        /// Threads for the chat model's matrix products (default: all cores).
        #[arg(long)]
        chat_threads: Option<usize>,
        /// TEST HOOK: change one answer token in N (positions ≡ 10 mod N) of every answer
        /// served.
        #[arg(long, hide = true)]
        test_tamper: Option<usize>,
    },
    /// Add .txt/.md files (directories are walked recursively) to the local index.
    /// Unchanged files are skipped; changed files are re-embedded.
    Index {
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Index file.
        #[arg(long, env = "SHOAL_INDEX", default_value_os_t = paths::default_index())]
        index: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Search the local index: best passages first, with score and file:line.
    Search {
        query: String,
        /// Number of results.
        #[arg(short, default_value_t = 5)]
        k: usize,
        /// Index file.
        #[arg(long, env = "SHOAL_INDEX", default_value_os_t = paths::default_index())]
        index: PathBuf,
        /// Print JSON lines instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Import a Hugging Face checkpoint (a directory holding model.safetensors and
    /// tokenizer.json) into Shoal's verified weight format, writing OUT/f32 and OUT/f16.
    Import {
        /// Directory with model.safetensors and tokenizer.json.
        from: PathBuf,
        /// Output directory.
        #[arg(long, default_value_os_t = paths::default_model_dir())]
        out: PathBuf,
    },
    /// Talk to the local assistant (SmolLM2 by default). With a PROMPT: one answer, streamed
    /// to stdout. Without: a conversation, one message per line of standard input (history
    /// kept; Ctrl-C stops the current answer, Ctrl-D leaves). Nothing leaves this machine.
    Chat {
        /// The message (omit for a conversation on standard input).
        prompt: Option<String>,
        /// System message (default: the one the model's chat template supplies).
        #[arg(long)]
        system: Option<String>,
        /// Print exactly one JSON line per answer: {"prompt_tokens", "tokens", "text",
        /// "prefill_tok_s", "decode_tok_s", "first_token_ms"}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        model: crate::chat_cmd::ChatModelArgs,
        #[command(flatten)]
        gen_args: crate::chat_cmd::GenArgs,
        #[command(flatten)]
        circle: crate::circle_chat::CircleChatArgs,
    },
    /// Answer a question from your own documents: the top passages of the local index (`shoal-node
    /// index`) go into the prompt as numbered sources, the answer streams, then the sources
    /// print as `[n] file:line`.
    Ask {
        question: String,
        /// Passages to retrieve.
        #[arg(short, default_value_t = 4)]
        k: usize,
        /// Index file.
        #[arg(long, env = "SHOAL_INDEX", default_value_os_t = paths::default_index())]
        index: PathBuf,
        /// Chat model (as `chat --model`).
        #[arg(long = "chat-model", env = "SHOAL_CHAT_MODEL")]
        chat_model: Option<String>,
        /// Threads for the chat model's matrix products (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        gen_args: crate::chat_cmd::GenArgs,
    },
    /// Serve an OpenAI-compatible API on this machine: POST /v1/chat/completions (streaming or
    /// not), POST /v1/embeddings, GET /v1/models. Point any OpenAI client at
    /// http://127.0.0.1:8080/v1 (any API key).
    Serve {
        /// Address to listen on (keep it on loopback unless you mean to share it).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Generations at once (each uses all --threads).
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// Requests that may wait for a slot; beyond that: 429.
        #[arg(long, default_value_t = 16)]
        queue: usize,
        /// Chat model (as `chat --model`).
        #[arg(long = "chat-model", env = "SHOAL_CHAT_MODEL")]
        chat_model: Option<String>,
        /// Threads for the chat model's matrix products (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Serve chat only (no embedding model).
        #[arg(long)]
        no_embeddings: bool,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Import a chat model (a llama or qwen2 GGUF: F32, F16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K) into
    /// verified chunks + manifest, blocks kept as they are. An unsupported architecture,
    /// tensor type or tokenizer is refused by name (for a URL, before the rest downloads).
    ImportGguf {
        /// A .gguf file or an http(s) URL of one.
        from: String,
        /// Output directory.
        #[arg(long, default_value_os_t = crate::chat_cmd::default_dir())]
        out: PathBuf,
    },
    /// Check this node's job receipts against relay logs: is each one included in a log, under
    /// a checkpoint cosigned by a quorum of witnesses and consistent with the last one seen?
    /// Prints each log (size, cosigners, growth over past runs) and each receipt (✓ included,
    /// ✓ witnessed). Exit code 3 if a log was caught equivocating.
    ///
    /// Example: shoal-node receipts --quorum 2 --log "http://a:7070 a.example+1234abcd+AQ..."
    ///   --log "http://b:7070 b.example+..." --log "http://c:7070 c.example+..."
    Receipts {
        /// A relay log: "URL KEY", KEY as printed by `shoal-relay key`. Repeat per relay;
        /// every other log's key also counts as a witness. Env: comma-separated list.
        #[arg(long = "log", env = "SHOAL_LOGS", value_delimiter = ',')]
        logs: Vec<String>,
        /// More witness keys (cosignature/v1 verifier keys) that run no log.
        #[arg(long = "witness")]
        witnesses: Vec<String>,
        /// Distinct witness cosignatures a checkpoint needs to count as witnessed.
        #[arg(long, default_value_t = 1)]
        quorum: usize,
        /// The receipt store (the light client's memory, logs.json, sits beside it).
        #[arg(long, env = "SHOAL_RECEIPTS", default_value_os_t = paths::default_receipts())]
        store: PathBuf,
        /// Per-request timeout, seconds.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// JSON lines: {"type":"log",...} then {"type":"receipt",...}.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug, Clone)]
struct ModelArgs {
    /// Model directory (holding f32/ and f16/) or one variant directory, or an http(s) URL
    /// of one variant. Default: $SHOAL_MODEL_DIR or ~/.cache/shoal/models/all-minilm-l6-v2.
    #[arg(long)]
    model: Option<String>,
    /// Weight precision: f32 (reference) or f16 (half the size, cosine ≥ 0.995).
    #[arg(long, default_value = "f32")]
    variant: Variant,
    /// Where the model runs.
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
    backend: BackendArg,
    /// How the CPU engine computes: `quantized` (integer weights on AVX-512 VNNI / AVX-VNNI /
    /// AVX2: int12 from f32 weights, min cosine ≥ 0.9999; int8 from f16) or `exact` (f32).
    #[arg(long, value_enum, default_value_t = PrecisionArg::Quantized)]
    precision: PrecisionArg,
    /// Sentences per forward pass.
    #[arg(long, default_value_t = node_lite::model::DEFAULT_BATCH)]
    batch: usize,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum PrecisionArg {
    /// Integer weights where a SIMD integer tile exists (the default).
    Quantized,
    /// f32 arithmetic throughout (the reference).
    Exact,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum BackendArg {
    /// The fast fused encoder on the CPU (SIMD GEMM, no padding, all cores).
    Cpu,
    /// burn flex on the CPU (the previous CPU path, for comparison).
    Flex,
    /// burn wgpu (Vulkan/Metal/DX12); needs a build with the `gpu` feature.
    Gpu,
}

impl ModelArgs {
    fn load(&self) -> Result<Embedder> {
        let weights = self.weights()?;
        let backend = match self.backend {
            BackendArg::Cpu => Backend::Cpu,
            BackendArg::Flex => Backend::Flex,
            BackendArg::Gpu => Backend::Gpu,
        };
        let precision = match self.precision {
            PrecisionArg::Quantized => Precision::Quantized,
            PrecisionArg::Exact => Precision::Exact,
        };
        let mut e = Embedder::load_with(&weights, backend, precision)
            .context("loading the model (rebuild with `--features gpu` to use --backend gpu)")?;
        e.batch_size = self.batch.max(1);
        Ok(e)
    }

    fn weights(&self) -> Result<VerifiedWeights> {
        let base = self
            .model
            .clone()
            .unwrap_or_else(|| paths::default_model_dir().display().to_string());
        if base.starts_with("http://") || base.starts_with("https://") {
            return Ok(source::load(&base)?);
        }
        let dir = Path::new(&base);
        let variant_dir = if dir.join("manifest.json").exists() {
            dir.to_path_buf()
        } else {
            dir.join(self.variant.as_str())
        };
        if !variant_dir.join("manifest.json").exists() {
            bail!(
                "no model at {} (run scripts/setup, or `shoal-node import`, or pass --model)",
                variant_dir.display()
            );
        }
        source::load_dir(&variant_dir)
            .with_context(|| format!("loading model from {}", variant_dir.display()))
    }
}

pub(crate) fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Receipts {
            logs,
            witnesses,
            quorum,
            store,
            timeout,
            json,
        } => {
            return crate::receipts::run(&crate::receipts::Options {
                store,
                logs,
                witnesses,
                quorum,
                timeout: std::time::Duration::from_secs(timeout.max(1)),
                json,
            });
        }
        Command::Embed {
            input,
            model,
            circle,
        } => {
            if circle.circle.is_some() {
                let texts = read_texts(&input)?;
                crate::circle_cmd::embed(texts, &circle, model.load()?)
            } else {
                embed(&input, &model)
            }
        }
        Command::Join {
            link,
            net,
            model,
            chat,
            chat_model,
            chat_threads,
            test_tamper,
        } => {
            let serving = if chat || chat_model.is_some() {
                let args = crate::chat_cmd::ChatModelArgs {
                    model: chat_model,
                    threads: chat_threads,
                };
                let hooks = crate::circle_chat::ServeHooks {
                    tamper_every: test_tamper,
                    hold_file: net.test_hold_file.clone(),
                };
                Some(crate::circle_chat::ChatServing::load(&args, hooks)?)
            } else {
                None
            };
            crate::circle_cmd::join(&link, &net, model.load()?, serving)
        }
        Command::Index {
            paths,
            index,
            model,
        } => index_files(&paths, &index, &model),
        Command::Search {
            query,
            k,
            index,
            json,
            model,
        } => search(&query, k, &index, json, &model),
        Command::Import { from, out } => import(&from, &out),
        Command::Chat {
            prompt,
            system,
            json,
            model,
            gen_args,
            circle,
        } => {
            if circle.circle.is_some() {
                crate::circle_chat::ask(prompt, system, json, &model, &gen_args, &circle)
            } else {
                crate::chat_cmd::chat(prompt, system, json, &model, &gen_args)
            }
        }
        Command::ImportGguf { from, out } => crate::chat_cmd::import(&from, &out),
        Command::Serve {
            listen,
            concurrency,
            queue,
            chat_model,
            threads,
            no_embeddings,
            model,
        } => {
            let chat = crate::chat_cmd::ChatModelArgs {
                model: chat_model,
                threads,
            };
            let (engine, id) = chat.load_with_id()?;
            let embedder = if no_embeddings {
                None
            } else {
                Some(model.load()?)
            };
            crate::serve_cmd::serve(
                engine,
                id,
                embedder,
                crate::serve_cmd::ServeOptions {
                    listen,
                    concurrency,
                    queue,
                },
            )
        }
        Command::Ask {
            question,
            k,
            index,
            chat_model,
            threads,
            model,
            gen_args,
        } => {
            let chat = crate::chat_cmd::ChatModelArgs {
                model: chat_model,
                threads,
            };
            ask(&question, k, &index, &model, &chat, &gen_args)
        }
    }
    .map(|()| 0)
}

fn embed(input: &str, model: &ModelArgs) -> Result<()> {
    let embedder = model.load()?;
    let reader: Box<dyn BufRead> = if input == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(input).with_context(|| format!("opening {input}"))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut lines = LineReader::new(reader, input);
    let mut out = BufWriter::new(std::io::stdout().lock());
    loop {
        let mut round = Vec::with_capacity(EMBED_ROUND);
        while round.len() < EMBED_ROUND {
            match lines.next_line()? {
                Some(l) if l.trim().is_empty() => continue,
                Some(l) => round.push(l),
                None => break,
            }
        }
        if round.is_empty() {
            break;
        }
        let vectors = embedder.embed(&round)?;
        for (text, vector) in round.iter().zip(vectors) {
            serde_json::to_writer(
                &mut out,
                &serde_json::json!({"text": text, "vector": vector}),
            )?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
    }
    Ok(())
}

/// Every non-empty input line (for a circle job, which needs them all up front).
fn read_texts(input: &str) -> Result<Vec<String>> {
    let reader: Box<dyn BufRead> = if input == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(input).with_context(|| format!("opening {input}"))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut lines = LineReader::new(reader, input);
    let mut texts = Vec::new();
    while let Some(l) = lines.next_line()? {
        if !l.trim().is_empty() {
            texts.push(l);
        }
    }
    Ok(texts)
}

/// Reads lines with a length cap, naming the line in every error.
struct LineReader<R> {
    inner: R,
    name: String,
    line: usize,
}

impl<R: BufRead> LineReader<R> {
    fn new(inner: R, name: &str) -> Self {
        let name = if name == "-" { "<stdin>" } else { name }.to_string();
        Self {
            inner,
            name,
            line: 0,
        }
    }

    fn next_line(&mut self) -> Result<Option<String>> {
        use std::io::Read;
        let mut buf = Vec::new();
        self.line += 1;
        let n = (&mut self.inner)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("reading {}", self.name))?;
        if n == 0 {
            return Ok(None);
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        } else if buf.len() > MAX_LINE_BYTES {
            bail!(
                "{}:{}: line longer than {} MiB",
                self.name,
                self.line,
                MAX_LINE_BYTES >> 20
            );
        }
        if buf.contains(&0) {
            bail!(
                "{}:{}: binary data (NUL byte); embed expects UTF-8 text, one input per line",
                self.name,
                self.line
            );
        }
        String::from_utf8(buf).map(Some).map_err(|e| {
            anyhow::anyhow!(
                "{}:{}: not valid UTF-8 (invalid byte at column {})",
                self.name,
                self.line,
                e.utf8_error().valid_up_to() + 1
            )
        })
    }
}

fn index_files(inputs: &[PathBuf], index_path: &Path, model: &ModelArgs) -> Result<()> {
    let files = collect_files(inputs)?;
    let mut index =
        Index::open_or_new(index_path, node_lite::MODEL_NAME, node_lite::EMBEDDING_DIM)?;
    let (statuses, pending) = index.plan(&files);
    let mut counts = [0usize; 4];
    for (path, status) in &statuses {
        match status {
            FileStatus::Unchanged => counts[0] += 1,
            FileStatus::New => counts[1] += 1,
            FileStatus::Changed => counts[2] += 1,
            FileStatus::Skipped(why) => {
                counts[3] += 1;
                eprintln!("skipping {}: {why}", path.display());
            }
        }
    }
    if !pending.is_empty() {
        let embedder = model.load()?;
        let bar = ProgressBar::new(pending.len() as u64).with_style(
            ProgressStyle::with_template(
                "{spinner} embedding [{bar:30}] {pos}/{len} passages  {per_sec}  eta {eta}",
            )?
            .progress_chars("=> "),
        );
        let texts: Vec<&str> = pending.iter().map(|p| p.text.as_str()).collect();
        let vectors = embedder.embed_with_progress(&texts, |done| bar.set_position(done as u64))?;
        bar.finish_and_clear();
        index.add(pending, vectors)?;
    }
    index.save(index_path)?;
    eprintln!(
        "indexed {} files ({} new, {} changed, {} unchanged, {} skipped); {} passages in {}",
        statuses.len() - counts[3],
        counts[1],
        counts[2],
        counts[0],
        counts[3],
        index.passages.len(),
        index_path.display()
    );
    Ok(())
}

fn search(query: &str, k: usize, index_path: &Path, json: bool, model: &ModelArgs) -> Result<()> {
    if !index_path.exists() {
        bail!(
            "no index at {} — run `shoal-node index DIR` first",
            index_path.display()
        );
    }
    let index = Index::open_or_new(index_path, node_lite::MODEL_NAME, node_lite::EMBEDDING_DIM)?;
    let embedder = model.load()?;
    let q = embedder
        .embed(&[query])?
        .pop()
        .context("model returned no vector")?;
    let mut out = std::io::stdout().lock();
    for hit in index.search(&q, k)? {
        if json {
            serde_json::to_writer(
                &mut out,
                &serde_json::json!({"score": hit.score, "path": hit.path, "line": hit.line, "text": hit.text}),
            )?;
            writeln!(out)?;
        } else {
            let snippet: String = hit.text.chars().take(160).collect();
            let more = if hit.text.chars().count() > 160 {
                "…"
            } else {
                ""
            };
            writeln!(
                out,
                "{:.4}  {}:{}\n        {snippet}{more}",
                hit.score, hit.path, hit.line
            )?;
        }
    }
    Ok(())
}

fn ask(
    question: &str,
    k: usize,
    index_path: &Path,
    model: &ModelArgs,
    chat: &crate::chat_cmd::ChatModelArgs,
    gen_args: &crate::chat_cmd::GenArgs,
) -> Result<()> {
    use shoal_llm::rag::{Source, cited, rag_messages};
    if question.len() > crate::chat_cmd::MAX_PROMPT_BYTES {
        bail!(
            "the question is over the {}-byte limit",
            crate::chat_cmd::MAX_PROMPT_BYTES
        );
    }
    if !index_path.exists() {
        bail!(
            "no index at {} — run `shoal-node index DIR` first",
            index_path.display()
        );
    }
    let params = gen_args.params()?;
    let index = Index::open_or_new(index_path, node_lite::MODEL_NAME, node_lite::EMBEDDING_DIM)?;
    let embedder = model.load()?;
    let q = embedder
        .embed(&[question])?
        .pop()
        .context("model returned no vector")?;
    let hits = index.search(&q, k.clamp(1, 16))?;
    if hits.is_empty() {
        bail!("the index at {} is empty", index_path.display());
    }
    let sources: Vec<Source> = hits
        .iter()
        .map(|h| Source {
            label: format!("{}:{}", h.path, h.line),
            text: h.text.clone(),
        })
        .collect();
    let engine = chat.load()?;
    let messages = rag_messages(question, &sources);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut session = engine.model.session();
    let g = crate::chat_cmd::answer(&engine, &mut session, &messages, &params, true, &stop)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "\n")?;
    let used = cited(&g.text, sources.len());
    for (i, s) in sources.iter().enumerate() {
        let mark = if used.contains(&(i + 1)) {
            " (cited)"
        } else {
            ""
        };
        writeln!(out, "[{}] {}{mark}", i + 1, s.label)?;
    }
    Ok(())
}

fn import(from: &Path, out: &Path) -> Result<()> {
    let st = from.join("model.safetensors");
    let tok = from.join("tokenizer.json");
    for f in [&st, &tok] {
        if !f.exists() {
            bail!("{} not found", f.display());
        }
    }
    let manifests = node_lite::model::import::import_all(&st, &tok, out)?;
    for m in manifests {
        eprintln!(
            "wrote {}/{}: {} bytes in {} chunks",
            out.display(),
            m.variant,
            m.total_size,
            m.chunks.len()
        );
    }
    Ok(())
}
