//! What every circle command shares: relay and ICE options, the member's settings, the runtime,
//! JSON event lines, waiting for members, and anchoring receipts and records in a relay's log.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use node_lite::circle::CircleKey;
use node_lite::identity::Keypair;
use node_lite::jobs::{Capabilities, JobConfig};
use node_lite::rtc::app::AppEvent;
use node_lite::rtc::native::NativeConfig;
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

/// How long a requester waits for members before it starts.
#[derive(Args, Debug, Clone)]
pub(crate) struct WaitArgs {
    /// Wait until this many other members are up before starting.
    #[arg(long, default_value_t = 0)]
    pub peers: usize,
    /// Longest wait for members (ms); with --peers 0, how long to collect members first.
    #[arg(long, default_value_t = 3000)]
    pub wait_ms: u64,
}

impl WaitArgs {
    /// Take the driver's events until `--peers` members are up (or, with `--peers 0`, for
    /// `--wait-ms`); `on_up` sees each member coming up. Returns the members up.
    pub(crate) async fn members(
        &self,
        events: &mut mpsc::Receiver<AppEvent>,
        mut on_up: impl FnMut(&node_lite::identity::PeerId, &Capabilities),
    ) -> Result<std::collections::BTreeMap<node_lite::identity::PeerId, Capabilities>> {
        let mut up = std::collections::BTreeMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.wait_ms);
        loop {
            if self.peers > 0 && up.len() >= self.peers {
                return Ok(up);
            }
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(AppEvent::PeerUp { peer, caps }) => {
                        on_up(&peer, &caps);
                        up.insert(peer, caps);
                    }
                    Some(AppEvent::PeerDown { peer }) => { up.remove(&peer); }
                    Some(_) => {}
                    None => bail!("circle driver stopped"),
                },
                _ = tokio::time::sleep_until(deadline) => {
                    if self.peers > 0 && up.len() < self.peers {
                        bail!("only {} of {} members came up in {} ms", up.len(), self.peers, self.wait_ms);
                    }
                    return Ok(up);
                }
            }
        }
    }
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
