//! `relay-load`: a load generator for `shoal-relay` on loopback.
//!
//! Starts a fresh `shoal-relay` child process per row, opens N WebSocket sessions (all
//! authenticated), puts half of them in pairs (one room per pair) and sends a fixed total rate of
//! timestamped payloads across the pairs. Reports the relay's RSS per session and CPU, the
//! end-to-end forward latency (client send → client receive, through the relay) and errors.
//!
//! ```text
//! cargo build --release -p shoal-relay --bins
//! target/release/relay-load --sessions 1000,5000,10000 --rates 1000,5000 --seconds 10
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use shoal_proto::identity::{Keypair, PeerId};
use shoal_proto::{self as proto, Auth, Frame, Hello, RoomId, RoomRef, SendTo};
use tokio::sync::{Mutex, mpsc};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Debug)]
#[command(about = "Load-test shoal-relay on loopback")]
struct Args {
    /// Session counts to test (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
    sessions: Vec<usize>,
    /// Total message rates (msg/s, comma separated).
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    rates: Vec<u32>,
    /// Seconds of traffic per row.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Payload bytes per message (≥ 8).
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// The relay binary (default: `shoal-relay` next to this binary).
    #[arg(long)]
    relay_bin: Option<PathBuf>,
    /// First port to use (each row uses the next one).
    #[arg(long, default_value_t = 17800)]
    port: u16,
}

struct Row {
    sessions: usize,
    rate: u32,
    rss_base_kib: u64,
    rss_kib: u64,
    per_session: f64,
    cpu_idle: f64,
    cpu_load: f64,
    sent: u64,
    received: u64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    errors: u64,
    connect_s: f64,
}

fn proc_stat(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .context("no VmRSS")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').map(|x| x.1).context("bad stat")?;
    let f: Vec<&str> = after.split_whitespace().collect();
    // fields after ')' start at index 0 = state (field 3); utime = field 14, stime = 15
    let ut: u64 = f.get(11).context("utime")?.parse()?;
    let st: u64 = f.get(12).context("stime")?.parse()?;
    Ok((rss, ut + st))
}

fn clk_tck() -> f64 {
    100.0 // Linux USER_HZ
}

struct RelayProc {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_relay(bin: &PathBuf, addr: SocketAddr, sessions: usize) -> anyhow::Result<RelayProc> {
    let dir = tempfile::tempdir()?;
    let child = Command::new(bin)
        .args(["--listen", &addr.to_string(), "--data-dir"])
        .arg(dir.path())
        .args(["--log", "warn"])
        .args(["--max-sessions", &(sessions + 100).to_string()])
        .args(["--max-sessions-per-ip", &(sessions + 100).to_string()])
        .args([
            "--idle-timeout-ms",
            "600000",
            "--handshake-timeout-ms",
            "60000",
        ])
        .args(["--msgs-per-sec", "1000", "--msgs-burst", "1000"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(RelayProc { child, _dir: dir })
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str, kp: &Keypair) -> anyhow::Result<Ws> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    let peer = kp.peer_id();
    ws.send(Message::Binary(
        Frame::Hello(Hello {
            peer,
            client_nonce: [0; 32],
        })
        .encode()?
        .into(),
    ))
    .await?;
    let ch = match next_frame(&mut ws).await? {
        Frame::Challenge(c) => c,
        f => bail!("expected challenge, got {}", f.kind()),
    };
    let sig = kp.sign(&proto::auth_message(&ch.relay, &ch.nonce, &peer));
    ws.send(Message::Binary(Frame::Auth(Auth { sig }).encode()?.into()))
        .await?;
    match next_frame(&mut ws).await? {
        Frame::Welcome(_) => Ok(ws),
        f => bail!("expected welcome, got {}", f.kind()),
    }
}

async fn next_frame(ws: &mut Ws) -> anyhow::Result<Frame> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => return Ok(Frame::decode(&b)?),
            Some(Ok(Message::Close(_))) | None => bail!("closed"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

struct Shared {
    base: Instant,
    latencies: Mutex<Vec<u32>>,
    received: AtomicU64,
    errors: AtomicU64,
}

/// One client session: joins its room (if paired), sends what the scheduler tells it, records
/// latencies of what it receives, answers pings.
async fn client(
    mut ws: Ws,
    room: Option<RoomId>,
    mut rx: mpsc::Receiver<(PeerId, Vec<u8>)>,
    shared: Arc<Shared>,
) {
    if let Some(room) = room
        && ws
            .send(Message::Binary(
                Frame::Join(RoomRef { room })
                    .encode()
                    .unwrap_or_default()
                    .into(),
            ))
            .await
            .is_err()
    {
        shared.errors.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut local = Vec::new();
    loop {
        tokio::select! {
            cmd = rx.recv() => {
                let Some((to, payload)) = cmd else { break };
                let Some(room) = room else { continue };
                let f = Frame::Send(SendTo { room, to, payload });
                if let Ok(b) = f.encode()
                    && ws.send(Message::Binary(b.into())).await.is_err()
                {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            m = ws.next() => match m {
                Some(Ok(Message::Binary(b))) => match Frame::decode(&b) {
                    Ok(Frame::Deliver(d)) if d.payload.len() >= 8 => {
                        let mut t = [0u8; 8];
                        t.copy_from_slice(&d.payload[..8]);
                        let sent = u64::from_le_bytes(t);
                        let now = shared.base.elapsed().as_micros() as u64;
                        local.push(now.saturating_sub(sent).min(u64::from(u32::MAX)) as u32);
                        shared.received.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Frame::Ping(p)) => {
                        let _ = ws.send(Message::Binary(Frame::Pong(p).encode().unwrap_or_default().into())).await;
                    }
                    Ok(Frame::Error(_)) => { shared.errors.fetch_add(1, Ordering::Relaxed); }
                    Ok(_) => {}
                    Err(_) => { shared.errors.fetch_add(1, Ordering::Relaxed); }
                },
                Some(Ok(_)) => {}
                _ => { shared.errors.fetch_add(1, Ordering::Relaxed); break; }
            }
        }
    }
    shared.latencies.lock().await.extend(local);
    let _ = ws.close(None).await;
}

async fn run_row(
    bin: &PathBuf,
    port: u16,
    sessions: usize,
    rate: u32,
    seconds: u64,
    payload: usize,
) -> anyhow::Result<Row> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let relay = spawn_relay(bin, addr, sessions)?;
    let pid = relay.child.id();
    // Wait for the listener.
    let t = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if t.elapsed() > Duration::from_secs(20) {
            bail!("relay did not start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (rss_base, _) = proc_stat(pid)?;
    let url = format!("ws://{addr}/v1/signal");
    let shared = Arc::new(Shared {
        base: Instant::now(),
        latencies: Mutex::new(Vec::new()),
        received: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });

    // Open sessions, 256 handshakes in flight at a time.
    let t_connect = Instant::now();
    let keys: Vec<Keypair> = (0..sessions)
        .map(|_| Keypair::generate())
        .collect::<Result<_, _>>()?;
    let peers: Vec<PeerId> = keys.iter().map(|k| k.peer_id()).collect();
    let wss: Vec<anyhow::Result<Ws>> = futures_util::stream::iter(keys.iter().map(|kp| {
        let url = url.clone();
        async move { connect(&url, kp).await }
    }))
    .buffered(256)
    .collect()
    .await;
    let connect_s = t_connect.elapsed().as_secs_f64();
    let paired = (sessions / 2) & !1;
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    for (i, ws) in wss.into_iter().enumerate() {
        let Ok(ws) = ws else {
            shared.errors.fetch_add(1, Ordering::Relaxed);
            senders.push(None);
            continue;
        };
        let room = (i < paired).then(|| {
            let mut r = [0u8; 32];
            r[..8].copy_from_slice(&((i / 2) as u64).to_le_bytes());
            RoomId(r)
        });
        let (tx, rx) = mpsc::channel(64);
        senders.push(Some(tx));
        tasks.push(tokio::spawn(client(ws, room, rx, shared.clone())));
    }
    // Let joins settle, then measure the idle footprint.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss, cpu0) = proc_stat(pid)?;
    let t_idle = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, cpu1) = proc_stat(pid)?;
    let cpu_idle = (cpu1 - cpu0) as f64 / clk_tck() / t_idle.elapsed().as_secs_f64();

    // Traffic: `rate` messages per second, round-robin over the pairs, alternating direction.
    let pairs = paired / 2;
    let mut sent = 0u64;
    let t0 = Instant::now();
    let (_, cpu_a) = proc_stat(pid)?;
    let total = u64::from(rate) * seconds;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut k = 0usize;
    while sent < total && pairs > 0 {
        tick.tick().await;
        let due = ((t0.elapsed().as_secs_f64() * f64::from(rate)) as u64).min(total);
        while sent < due {
            let pair = k % pairs;
            let dir = (k / pairs) % 2;
            let (from, to) = if dir == 0 {
                (2 * pair, 2 * pair + 1)
            } else {
                (2 * pair + 1, 2 * pair)
            };
            k += 1;
            let mut p = vec![0u8; payload.max(8)];
            p[..8].copy_from_slice(&(shared.base.elapsed().as_micros() as u64).to_le_bytes());
            if let Some(Some(tx)) = senders.get(from) {
                if tx.try_send((peers[to], p)).is_err() {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                }
            } else {
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
            sent += 1;
        }
    }
    let traffic_s = t0.elapsed().as_secs_f64();
    let (_, cpu_b) = proc_stat(pid)?;
    // Drain in-flight deliveries.
    let t_drain = Instant::now();
    while shared.received.load(Ordering::Relaxed) < sent
        && t_drain.elapsed() < Duration::from_secs(5)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(senders);
    for t in tasks {
        let _ = t.await;
    }
    let mut lat = std::mem::take(&mut *shared.latencies.lock().await);
    lat.sort_unstable();
    let pct = |p: f64| -> u64 {
        if lat.is_empty() {
            0
        } else {
            u64::from(lat[((lat.len() - 1) as f64 * p) as usize])
        }
    };
    let received = shared.received.load(Ordering::Relaxed);
    Ok(Row {
        sessions,
        rate,
        rss_base_kib: rss_base,
        rss_kib: rss,
        per_session: (rss.saturating_sub(rss_base)) as f64 * 1024.0 / sessions as f64,
        cpu_idle,
        cpu_load: (cpu_b - cpu_a) as f64 / clk_tck() / traffic_s,
        sent,
        received,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        max_us: lat.last().copied().map(u64::from).unwrap_or(0),
        errors: shared.errors.load(Ordering::Relaxed) + sent.saturating_sub(received),
        connect_s,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let nofile = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    let bin = match &args.relay_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("shoal-relay"),
    };
    eprintln!("relay-load: nofile={nofile}, relay={}", bin.display());
    println!(
        "| sessions | msg/s | relay RSS base→loaded (MiB) | RSS/session (KiB) | CPU idle | CPU under load | sent | delivered | p50 (ms) | p99 (ms) | max (ms) | errors | connect (s) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut port = args.port;
    for &n in &args.sessions {
        for &rate in &args.rates {
            match run_row(&bin, port, n, rate, args.seconds, args.payload).await {
                Ok(r) => println!(
                    "| {} | {} | {:.1}→{:.1} | {:.1} | {:.0}% | {:.0}% | {} | {} | {:.2} | {:.2} | {:.1} | {} | {:.1} |",
                    r.sessions,
                    r.rate,
                    r.rss_base_kib as f64 / 1024.0,
                    r.rss_kib as f64 / 1024.0,
                    r.per_session / 1024.0,
                    r.cpu_idle * 100.0,
                    r.cpu_load * 100.0,
                    r.sent,
                    r.received,
                    r.p50_us as f64 / 1000.0,
                    r.p99_us as f64 / 1000.0,
                    r.max_us as f64 / 1000.0,
                    r.errors,
                    r.connect_s
                ),
                Err(e) => println!("| {n} | {rate} | failed: {e:#} |"),
            }
            port = port.wrapping_add(1);
            // Let the kernel reap the previous row's sockets.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    Ok(())
}
