//! `shoal-node join` and `shoal-node embed --circle`: a circle member over WebRTC.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use node_lite::jobs::MemberStatus;
use node_lite::model::Embedder;
use node_lite::rtc::app::{AppCmd, AppEvent};
use node_lite::rtc::native::{self, ComputeFn};
use tokio::sync::mpsc;

use crate::circle_net::{NetArgs, WaitArgs, anchor, config, jline, runtime};

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
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Write a JSON summary (members, shard timing, bytes) to this file.
    #[arg(long)]
    pub stats: Option<std::path::PathBuf>,
    /// Keep the countersigned receipts of this job here (`shoal-node receipts` checks them).
    #[arg(long, env = "SHOAL_RECEIPTS", default_value_os_t = crate::paths::default_receipts())]
    pub receipts: std::path::PathBuf,
    #[command(flatten)]
    pub net: NetArgs,
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
        let mut up = args.wait.members(&mut ev_rx, |peer, caps| {
            eprintln!("member up: {} ({}, {}, {:.1} texts/s)", caps.name, peer.short(), caps.backend, caps.texts_per_sec);
        }).await?;
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
