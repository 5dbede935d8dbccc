//! `shoal-node join` and `shoal-node embed --circle`: a circle member over WebRTC.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use node_lite::circle::CircleKey;
use node_lite::identity::Keypair;
use node_lite::jobs::{Capabilities, JobConfig, MemberStatus};
use node_lite::model::Embedder;
use node_lite::rtc::app::{AppCmd, AppEvent};
use node_lite::rtc::native::{self, ComputeFn, NativeConfig};
use tokio::sync::mpsc;

/// Default relay: the one `scripts/run` starts.
pub(crate) const DEFAULT_RELAY: &str = "ws://127.0.0.1:7070/v1/signal";

#[derive(Args, Debug, Clone)]
pub(crate) struct NetArgs {
    /// Relay WebSocket URL (repeat for fallbacks). An http(s) URL of a relay serving the app
    /// works too: it becomes ws(s)://host/v1/signal.
    #[arg(long = "relay", env = "SHOAL_RELAY", value_delimiter = ',', default_value = DEFAULT_RELAY)]
    pub relays: Vec<String>,
    /// Local UDP address for ICE (`127.0.0.1:0` inside a loopback-only network namespace).
    #[arg(long, default_value = "0.0.0.0:0")]
    pub udp: String,
    /// Gather/resolve mDNS ICE candidates.
    #[arg(long)]
    pub mdns: bool,
    /// STUN server URL(s), e.g. stun:stun.example.org:3478 (none by default: LAN/loopback).
    #[arg(long = "stun")]
    pub stun: Vec<String>,
    /// Name shown to the other members.
    #[arg(long)]
    pub name: Option<String>,
    /// Announce this throughput (texts/s) instead of measuring it.
    #[arg(long)]
    pub rate: Option<f32>,
    /// Texts per shard (requester).
    #[arg(long, default_value_t = 32)]
    pub shard_texts: usize,
    /// TEST HOOK: sit in the link's room with a random circle key (an impostor).
    #[arg(long, hide = true)]
    pub test_impostor: bool,
    /// TEST HOOK: once this file exists, the next shard this member receives is never
    /// answered: it prints `{"event":"holding"}` and keeps the shard until killed, so a test
    /// kills it at a point it observed (holding unfinished work), whatever the machine's speed.
    #[arg(long, hide = true)]
    pub test_hold_file: Option<std::path::PathBuf>,
}

fn relay_url(u: &str) -> String {
    let u = u.trim_end_matches('/');
    if let Some(rest) = u.strip_prefix("http://") {
        format!("ws://{rest}/v1/signal")
    } else if let Some(rest) = u.strip_prefix("https://") {
        format!("wss://{rest}/v1/signal")
    } else {
        u.to_string()
    }
}

fn calibrate(e: &Embedder) -> Result<f32> {
    let sample: Vec<String> = (0..16)
        .map(|i| format!("calibration sentence {i} about the weather and a cat on a mat"))
        .collect();
    e.embed(&sample)?; // warm up
    let t0 = Instant::now();
    e.embed(&sample)?;
    Ok(sample.len() as f32 / t0.elapsed().as_secs_f32().max(1e-3))
}

fn compute_fn(e: Embedder, hold_file: Option<std::path::PathBuf>) -> ComputeFn {
    Box::new(move |texts: &[String]| {
        if hold_file.as_deref().is_some_and(std::path::Path::exists) {
            jline(serde_json::json!({"event": "holding", "texts": texts.len()}));
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        let v = e.embed(texts).map_err(|err| err.to_string())?;
        let dim = v.first().map(Vec::len).unwrap_or(node_lite::EMBEDDING_DIM) as u32;
        Ok((v.into_iter().flatten().collect(), dim))
    })
}

/// The embedding rate to announce: `--rate`, else measured.
fn embed_rate(net: &NetArgs, embedder: &Embedder) -> Result<f32> {
    match net.rate {
        Some(r) => Ok(r),
        None => calibrate(embedder),
    }
}

/// The member's settings: identity, circle, capabilities (`rate` texts/s, chat models served).
pub(crate) fn config(
    link: &str,
    net: &NetArgs,
    rate: f32,
    chat: Vec<node_lite::jobs::ChatModelCap>,
) -> Result<NativeConfig> {
    let key = CircleKey::parse(link).context("parsing the circle link")?;
    let keypair = Keypair::generate()?;
    let name = net
        .name
        .clone()
        .unwrap_or_else(|| format!("node-{}", &keypair.peer_id().short()));
    let caps = Capabilities {
        name,
        backend: "native".into(),
        texts_per_sec: rate,
        chat,
    };
    let circle = if net.test_impostor {
        CircleKey::generate()?.circle()
    } else {
        key.circle()
    };
    let mut cfg = NativeConfig::new(
        net.relays.iter().map(|u| relay_url(u)).collect(),
        keypair,
        circle,
        caps,
    );
    if net.test_impostor {
        cfg.room_override = Some(key.circle().room());
    }
    cfg.udp_addr = net.udp.clone();
    cfg.mdns = net.mdns;
    cfg.ice_servers = net.stun.clone();
    cfg.job = JobConfig {
        shard_texts: net
            .shard_texts
            .clamp(1, node_lite::jobs::msg::MAX_TEXTS_PER_SHARD),
        ..JobConfig::default()
    };
    Ok(cfg)
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

pub(crate) fn jline(v: serde_json::Value) {
    let mut out = std::io::stderr().lock();
    let _ = serde_json::to_writer(&mut out, &v);
    let _ = out.write_all(b"\n");
}

/// `shoal-node join LINK`: serve shards for the circle until killed.
pub(crate) fn join(
    link: &str,
    net: &NetArgs,
    embedder: Embedder,
    chat: Option<crate::circle_chat::ChatServing>,
) -> Result<()> {
    let rate = embed_rate(net, &embedder)?;
    let caps = chat
        .as_ref()
        .map(|c| vec![c.cap.clone()])
        .unwrap_or_default();
    let cfg = config(link, net, rate, caps)?;
    jline(
        serde_json::json!({"event": "member", "peer": cfg.keypair.peer_id().to_string(),
        "name": cfg.caps.name, "texts_per_sec": cfg.caps.texts_per_sec,
        "chat": cfg.caps.chat.iter().map(|c| serde_json::json!({"model": hex::encode(c.model),
            "prefill_tok_s": c.prefill_tok_s, "decode_tok_s": c.decode_tok_s})).collect::<Vec<_>>()}),
    );
    let rt = runtime()?;
    rt.block_on(async move {
        let (cmd_tx, cmd_rx) = mpsc::channel(256);
        let (ev_tx, mut ev_rx) = mpsc::channel(256);
        let driver = tokio::spawn(native::run(cfg, compute_fn(embedder, net.test_hold_file.clone()), cmd_rx, ev_tx));
        let mut chat = chat.map(|c| crate::circle_chat::ChatThread::spawn(c.engine, cmd_tx.clone(), c.hooks));
        let mut stats_every = tokio::time::interval(Duration::from_secs(2));
        let mut last = (0, 0);
        loop {
            tokio::select! {
                ev = ev_rx.recv() => {
                    let Some(ev) = ev else { break };
                    match ev {
                        AppEvent::Connected { url } => jline(serde_json::json!({"event": "connected", "relay": url})),
                        AppEvent::PeerUp { peer, caps } => jline(serde_json::json!({"event": "peer_up",
                            "peer": peer.to_string(), "name": caps.name, "backend": caps.backend,
                            "texts_per_sec": caps.texts_per_sec})),
                        AppEvent::PeerDown { peer } => jline(serde_json::json!({"event": "peer_down", "peer": peer.to_string()})),
                        AppEvent::Rejected { peer, reason } => jline(serde_json::json!({"event": "rejected",
                            "peer": peer.to_string(), "reason": reason})),
                        AppEvent::Stats { times, rejected, generation, .. }
                            if (times.computed, generation.tokens_served) != last =>
                        {
                            last = (times.computed, generation.tokens_served);
                            jline(serde_json::json!({"event": "stats", "computed": times.computed,
                                "served": times.served, "compute_ms": times.compute_ms,
                                "served_residence_ms": times.served_residence_ms, "rejected": rejected,
                                "tokens_served": generation.tokens_served,
                                "answers_served": generation.answers_served}));
                        }
                        AppEvent::Serve(s) => match chat.as_mut() {
                            Some(c) => c.serve(s),
                            None => {
                                if let node_lite::rtc::node::ServeOut::Generate(task) = s {
                                    let _ = cmd_tx.try_send(AppCmd::GenServed { key: task.key(),
                                        outcome: Err("this member serves no chat model".into()) });
                                }
                            }
                        },
                        _ => {}
                    }
                }
                _ = stats_every.tick() => { let _ = cmd_tx.try_send(AppCmd::Stats); }
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        drop(chat);
        drop(cmd_tx);
        let _ = driver.await;
        Ok::<_, anyhow::Error>(())
    })
}

/// Options of `embed --circle`.
#[derive(Args, Debug, Clone)]
pub(crate) struct CircleEmbedArgs {
    /// Run the job across this circle (link, shoal://circle#c=…, or the bare key).
    #[arg(long)]
    pub circle: Option<String>,
    /// Wait until this many other members are up before starting.
    #[arg(long, default_value_t = 0)]
    pub peers: usize,
    /// Longest wait for members (ms); with --peers 0, how long to collect members first.
    #[arg(long, default_value_t = 3000)]
    pub wait_ms: u64,
    /// Write a JSON summary (members, shard timing, bytes) to this file.
    #[arg(long)]
    pub stats: Option<std::path::PathBuf>,
    /// Keep the countersigned receipts of this job here (`shoal-node receipts` checks them).
    #[arg(long, env = "SHOAL_RECEIPTS", default_value_os_t = crate::paths::default_receipts())]
    pub receipts: std::path::PathBuf,
    #[command(flatten)]
    pub net: NetArgs,
}

/// Keep `receipts` in the store and submit them to the first relay that takes them (`POST
/// /log/submit`); returns how many a relay promised to include. Failures are reported, not
/// fatal: the receipts stay in the store and can be submitted again.
pub(crate) fn anchor(
    receipts: &[node_lite::receipt::Receipt],
    relays: &[String],
    store: &std::path::Path,
) -> usize {
    if receipts.is_empty() {
        return 0;
    }
    if let Err(e) = node_lite::receipt_store::ReceiptStore::new(store).append(receipts) {
        eprintln!("warning: receipts not stored in {}: {e}", store.display());
    }
    let entries: Vec<Vec<u8>> = receipts.iter().map(|r| r.encode()).collect();
    submit_entries(&entries, relays).len()
}

/// Submit encoded log entries (receipts, misbehaviour records) to the first relay that takes
/// them (`POST /log/submit`); returns its promises: (index, leaf hash in hex). Failures are
/// reported, not fatal.
pub(crate) fn submit_entries(entries: &[Vec<u8>], relays: &[String]) -> Vec<(u64, String)> {
    use base64::Engine as _;
    if entries.is_empty() {
        return Vec::new();
    }
    let body = serde_json::json!({"receipts": entries.iter()
        .map(|r| base64::engine::general_purpose::STANDARD.encode(r)).collect::<Vec<_>>()});
    for relay in relays {
        let base = relay_http(relay);
        match ureq::post(&format!("{base}/log/submit"))
            .timeout(Duration::from_secs(10))
            .set("content-type", "application/json")
            .send_string(&body.to_string())
        {
            Ok(resp) => {
                let text = resp.into_string().unwrap_or_default();
                let v: serde_json::Value = match serde_json::from_str(&text) {
                    Ok(v) => v,
                    Err(e) => {
                        eprintln!("warning: {base}/log/submit: {e}");
                        continue;
                    }
                };
                return v["promises"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|p| {
                                (
                                    p["index"].as_u64().unwrap_or(0),
                                    p["leaf_hash"].as_str().unwrap_or("").to_string(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
            }
            Err(e) => eprintln!("warning: {base}/log/submit: {e}"),
        }
    }
    Vec::new()
}

/// The HTTP base of a relay given as ws(s)://host/v1/signal or http(s)://host.
fn relay_http(u: &str) -> String {
    let u = u.trim_end_matches('/');
    let u = u.strip_suffix("/v1/signal").unwrap_or(u);
    if let Some(rest) = u.strip_prefix("ws://") {
        format!("http://{rest}")
    } else if let Some(rest) = u.strip_prefix("wss://") {
        format!("https://{rest}")
    } else {
        u.to_string()
    }
}

/// `shoal-node embed --circle LINK`: be the requester; print `{"text","vector"}` lines in
/// input order.
pub(crate) fn embed(texts: Vec<String>, args: &CircleEmbedArgs, embedder: Embedder) -> Result<()> {
    let link = args.circle.as_deref().context("--circle")?;
    let rate = embed_rate(&args.net, &embedder)?;
    let cfg = config(link, &args.net, rate, Vec::new())?;
    let rt = runtime()?;
    let n = texts.len();
    let (vectors, summary) = rt.block_on(async {
        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let (ev_tx, mut ev_rx) = mpsc::channel(1024);
        let driver = tokio::spawn(native::run(cfg, compute_fn(embedder, args.net.test_hold_file.clone()), cmd_rx, ev_tx));
        let mut up = std::collections::BTreeMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(args.wait_ms);
        // Collect members.
        loop {
            if args.peers > 0 && up.len() >= args.peers {
                break;
            }
            tokio::select! {
                ev = ev_rx.recv() => match ev {
                    Some(AppEvent::PeerUp { peer, caps }) => {
                        eprintln!("member up: {} ({}, {}, {:.1} texts/s)", caps.name, peer.short(), caps.backend, caps.texts_per_sec);
                        up.insert(peer, caps);
                    }
                    Some(AppEvent::PeerDown { peer }) => { up.remove(&peer); }
                    Some(_) => {}
                    None => bail!("circle driver stopped"),
                },
                _ = tokio::time::sleep_until(deadline) => {
                    if args.peers > 0 && up.len() < args.peers {
                        bail!("only {} of {} members came up in {} ms", up.len(), args.peers, args.wait_ms);
                    }
                    break;
                }
            }
        }
        let t0 = Instant::now();
        cmd_tx.send(AppCmd::StartJob(texts.clone())).await.ok().context("driver stopped")?;
        let mut receipts = Vec::new();
        let (vectors, members) = loop {
            match ev_rx.recv().await {
                Some(AppEvent::JobDone { vectors, members }) => break (vectors, members),
                Some(AppEvent::Receipt(r)) => receipts.push(*r),
                Some(AppEvent::JobFailed(e)) => bail!("job failed: {e}"),
                Some(AppEvent::PeerUp { peer, caps }) => { up.insert(peer, caps); }
                Some(_) => {}
                None => bail!("circle driver stopped"),
            }
        };
        let elapsed = t0.elapsed().as_secs_f64();
        // A shard's receipt signature follows its result: collect the stragglers.
        let remote_shards: u32 = members.iter().filter(|m| !m.is_self).map(|m| m.shards_done).sum();
        let straggle = tokio::time::Instant::now() + Duration::from_millis(2000);
        while receipts.len() < remote_shards as usize {
            tokio::select! {
                ev = ev_rx.recv() => match ev {
                    Some(AppEvent::Receipt(r)) => receipts.push(*r),
                    Some(_) => {}
                    None => break,
                },
                _ = tokio::time::sleep_until(straggle) => break,
            }
        }
        cmd_tx.send(AppCmd::Stats).await.ok().context("driver stopped")?;
        let (peers, times, rejected) = loop {
            match ev_rx.recv().await {
                Some(AppEvent::Stats { peers, times, rejected, .. }) => break (peers, times, rejected),
                Some(AppEvent::Receipt(r)) => receipts.push(*r),
                Some(_) => {}
                None => bail!("circle driver stopped"),
            }
        };
        let anchored = anchor(&receipts, &args.net.relays, &args.receipts);
        drop(cmd_tx);
        let _ = driver.await;
        let me_rows: Vec<serde_json::Value> = members
            .iter()
            .map(|p| {
                let name = if p.is_self { "self".to_string() } else {
                    p.member.peer().and_then(|m| up.get(m)).map(|c| c.name.clone()).unwrap_or_else(|| p.member.short())
                };
                let status = match &p.status {
                    MemberStatus::Active => "active".to_string(),
                    MemberStatus::Excluded(e) => format!("excluded: {e:?}"),
                };
                serde_json::json!({"peer": p.member.to_string(), "name": name, "is_self": p.is_self,
                    "shards": p.shards_done, "texts": p.texts_done, "rate": p.rate, "status": status})
            })
            .collect();
        let bytes_sent: u64 = peers.iter().map(|p| p.3.bytes_sent).sum();
        let bytes_received: u64 = peers.iter().map(|p| p.3.bytes_received).sum();
        let summary = serde_json::json!({
            "texts": n, "seconds": elapsed, "texts_per_sec": n as f64 / elapsed.max(1e-9),
            "members": me_rows,
            "remote_shards": times.remote_shards,
            "remote_round_trip_ms": times.remote_round_trip_ms,
            "local_shards": times.computed, "local_compute_ms": times.compute_ms,
            "bytes_sent": bytes_sent, "bytes_received": bytes_received,
            "rejected": rejected,
            "receipts": receipts.len(), "anchored": anchored,
        });
        Ok::<_, anyhow::Error>((vectors, summary))
    })?;
    if vectors.len() != n {
        bail!("job returned {} vectors for {n} texts", vectors.len());
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (text, vector) in texts.iter().zip(vectors) {
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({"text": text, "vector": vector}),
        )?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    eprintln!("{summary}");
    if let Some(p) = &args.stats {
        std::fs::write(p, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
