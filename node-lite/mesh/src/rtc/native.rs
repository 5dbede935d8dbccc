//! The native driver: webrtc-rs 0.21 data channels on tokio, the signaling client, and a
//! compute thread, around one [`CircleNode`].
//!
//! One task owns the node and runs the loop; each connection is a task that owns its
//! `PeerConnection` and data channel and talks to the loop through bounded channels. Records
//! go out through `DataChannel::send`, which blocks at the send-buffer limit (4 MiB); the loop
//! counts bytes handed to a connection task and not yet accepted by the channel and reports
//! them to the session ([`CircleNode::on_buffered`]), which holds back above its high-water
//! mark. The model runs on its own thread (it is not `Send`-friendly and must not block the
//! runtime): one shard at a time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::StreamExt as _;
use tokio::sync::{Notify, mpsc};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCIceServer, RTCPeerConnectionState, RTCSessionDescription,
    SettingEngineBuilder,
};

use super::app::{AppCmd, AppEvent, Routed, on_command, on_signal_event, route};
use super::node::CircleNode;
use super::session::{CHANNEL_LABEL, ConnId, NetOp, SessionConfig};
use crate::circle::Circle;
use crate::jobs::{Capabilities, JobConfig, Task};
use crate::signal::{self, ClientConfig, Command};
use shoal_proto::identity::{Keypair, PeerId};

/// Settings of a native circle member.
#[derive(Clone, Debug)]
pub struct NativeConfig {
    /// Relay WebSocket URLs.
    pub relay_urls: Vec<String>,
    /// Our identity.
    pub keypair: Keypair,
    /// The circle.
    pub circle: Circle,
    /// What we tell peers (`texts_per_sec` from calibration).
    pub caps: Capabilities,
    /// Local UDP address to bind for ICE (`0.0.0.0:0`: every interface; `127.0.0.1:0` in a
    /// loopback-only namespace).
    pub udp_addr: String,
    /// Gather and resolve mDNS candidates (off in loopback-only namespaces: no multicast).
    pub mdns: bool,
    /// STUN/TURN URLs (none on a LAN or loopback).
    pub ice_servers: Vec<String>,
    /// Session tunables.
    pub session: SessionConfig,
    /// Job tunables (for jobs this node requests).
    pub job: JobConfig,
    /// Generation tunables (for answers this node requests).
    pub generation: crate::jobs::GenConfig,
    /// Data-channel send-buffer limit (webrtc-rs default is unbounded).
    pub send_buffer_limit: usize,
    /// Longest wait for ICE gathering before sending what we have.
    pub gather_timeout: Duration,
    /// TEST HOOK: join this room instead of the circle's (an impostor: the room of a circle
    /// whose key it does not have).
    pub room_override: Option<shoal_proto::RoomId>,
}

impl NativeConfig {
    /// Defaults for a member of `circle` talking to `relay_urls`.
    pub fn new(
        relay_urls: Vec<String>,
        keypair: Keypair,
        circle: Circle,
        caps: Capabilities,
    ) -> Self {
        NativeConfig {
            relay_urls,
            keypair,
            circle,
            caps,
            udp_addr: "0.0.0.0:0".into(),
            mdns: false,
            ice_servers: Vec::new(),
            session: SessionConfig::default(),
            job: JobConfig::default(),
            generation: crate::jobs::GenConfig::default(),
            send_buffer_limit: 4 << 20,
            gather_timeout: Duration::from_secs(3),
            room_override: None,
        }
    }
}

/// Runs the model: texts → (row-major vectors, dim).
pub type ComputeFn = Box<dyn FnMut(&[String]) -> Result<(Vec<f32>, u32), String> + Send>;

/// Errors that stop the driver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RtcError {
    /// The signaling client could not start.
    #[error("signaling: {0}")]
    Signal(#[from] signal::SignalError),
    /// No webrtc runtime.
    #[error("no webrtc-rs runtime")]
    Runtime,
}

enum ConnCmd {
    Answer(String),
    Send(Vec<u8>),
    Close,
}

enum TEvent {
    LocalSdp(ConnId, String),
    Open(ConnId),
    Record(ConnId, Vec<u8>),
    Closed(ConnId),
    Drained(ConnId),
}

struct ConnHandle {
    tx: mpsc::Sender<ConnCmd>,
    queued: Arc<AtomicUsize>,
}

/// Capacity of a connection's command queue (records; the session's high-water mark bounds
/// the bytes).
const CONN_QUEUE: usize = 4096;

/// Run a circle member until `cmds` closes. Events go to `events` (bounded; the loop waits
/// for the application to take them).
pub async fn run(
    cfg: NativeConfig,
    compute: ComputeFn,
    mut cmds: mpsc::Receiver<AppCmd>,
    events: mpsc::Sender<AppEvent>,
) -> Result<(), RtcError> {
    let runtime = webrtc::runtime::default_runtime().ok_or(RtcError::Runtime)?;
    let room = cfg.room_override.unwrap_or_else(|| cfg.circle.room());
    let (mut sig, mut sig_events) = signal::spawn(ClientConfig::new(
        cfg.relay_urls.clone(),
        cfg.keypair.clone(),
    ))?;
    let _ = sig.try_command(Command::Join(room));
    let mut node =
        CircleNode::for_driver(&cfg.keypair, &cfg.circle, &cfg.caps, &cfg.session, &cfg.job);
    let start = Instant::now();
    let now = move || start.elapsed().as_millis() as u64;
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    node.set_unix_clock(unix, now());
    node.set_gen_config(cfg.generation.clone());

    // The compute thread: one task at a time.
    let (task_tx, task_rx) = std::sync::mpsc::sync_channel::<Task<PeerId>>(4);
    let (done_tx, mut done_rx) =
        mpsc::channel::<(Task<PeerId>, Result<(Vec<f32>, u32), String>, u64)>(4);
    std::thread::Builder::new()
        .name("shoal-compute".into())
        .spawn(move || {
            let mut compute = compute;
            while let Ok(task) = task_rx.recv() {
                let t0 = Instant::now();
                let r = compute(&task.texts);
                let ms = t0.elapsed().as_millis() as u64;
                if done_tx.blocking_send((task, r, ms)).is_err() {
                    return;
                }
            }
        })
        .map_err(|_| RtcError::Runtime)?;

    let (tev_tx, mut tev_rx) = mpsc::channel::<TEvent>(1024);
    let mut conns: BTreeMap<ConnId, ConnHandle> = BTreeMap::new();
    let shared = Arc::new(ConnSettings {
        runtime,
        udp_addr: cfg.udp_addr.clone(),
        mdns: cfg.mdns,
        ice_servers: cfg.ice_servers.clone(),
        send_buffer_limit: cfg.send_buffer_limit,
        gather_timeout: cfg.gather_timeout,
    });

    loop {
        let wake = node
            .next_wake()
            .map(|w| w.saturating_sub(now()))
            .unwrap_or(1000)
            .min(1000);
        tokio::select! {
            ev = sig_events.next() => {
                let Some(ev) = ev else { break };
                if let Some(ev) = on_signal_event(&mut node, room, ev, now()) {
                    let _ = events.send(ev).await;
                }
            }
            ev = tev_rx.recv() => {
                let Some(ev) = ev else { break };
                let t = now();
                match ev {
                    TEvent::LocalSdp(c, sdp) => node.on_local_description(c, sdp, t),
                    TEvent::Open(c) => node.on_open(c, t),
                    TEvent::Record(c, d) => node.on_record(c, &d, t),
                    TEvent::Closed(c) => {
                        conns.remove(&c);
                        node.on_closed(c, t);
                    }
                    TEvent::Drained(c) => {
                        if let Some(h) = conns.get(&c) {
                            node.on_buffered(c, h.queued.load(Ordering::Acquire), t);
                        }
                    }
                }
            }
            done = done_rx.recv() => {
                let Some((task, outcome, ms)) = done else { break };
                node.computed(&task, outcome, ms, now());
            }
            cmd = cmds.recv() => {
                let Some(cmd) = cmd else { break };
                if let Some(ev) = on_command(&mut node, cmd, now()) {
                    let _ = events.send(ev).await;
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(wake)) => node.tick(now()),
        }
        while let Some(o) = node.poll() {
            match route(o) {
                Routed::Net(op) => {
                    if let Some(closed) = net(op, &mut conns, &mut sig, room, &shared, &tev_tx) {
                        node.on_closed(closed, now());
                    }
                }
                Routed::Compute(task) => {
                    if task_tx.try_send(task.clone()).is_err() {
                        node.computed(&task, Err("compute thread busy".into()), 0, now());
                    }
                }
                // The native node registers no local workers (its one model is the compute
                // thread); should one be registered, its shards fail over to the others.
                Routed::RunLocal {
                    worker, job, shard, ..
                } => {
                    node.local_done(
                        worker,
                        job,
                        shard,
                        Err("no such local worker".into()),
                        now(),
                    );
                }
                Routed::App(ev) => {
                    let _ = events.send(ev).await;
                }
            }
        }
    }
    for (_, h) in conns {
        let _ = h.tx.try_send(ConnCmd::Close);
    }
    Ok(())
}

/// Carry out one transport op; returns a connection that failed at once.
fn net(
    op: NetOp,
    conns: &mut BTreeMap<ConnId, ConnHandle>,
    sig: &mut signal::SignalHandle,
    room: shoal_proto::RoomId,
    shared: &Arc<ConnSettings>,
    tev: &mpsc::Sender<TEvent>,
) -> Option<ConnId> {
    match op {
        NetOp::Signal { to, payload } => {
            if sig
                .try_command(Command::Send { room, to, payload })
                .is_err()
            {
                tracing::warn!("signaling queue full: payload dropped");
            }
            None
        }
        NetOp::CreateOffer { conn, .. } => {
            spawn_conn(conn, None, conns, shared, tev);
            None
        }
        NetOp::AcceptOffer { conn, sdp, .. } => {
            spawn_conn(conn, Some(sdp), conns, shared, tev);
            None
        }
        NetOp::ApplyAnswer { conn, sdp } => {
            let h = conns.get(&conn)?;
            h.tx.try_send(ConnCmd::Answer(sdp)).is_err().then_some(conn)
        }
        NetOp::Send { conn, data } => {
            let h = conns.get(&conn)?;
            let len = data.len();
            h.queued.fetch_add(len, Ordering::AcqRel);
            if h.tx.try_send(ConnCmd::Send(data)).is_err() {
                conns.remove(&conn);
                return Some(conn);
            }
            None
        }
        NetOp::Close { conn } => {
            if let Some(h) = conns.remove(&conn) {
                let _ = h.tx.try_send(ConnCmd::Close);
            }
            None
        }
    }
}

struct ConnSettings {
    runtime: Arc<dyn webrtc::runtime::Runtime>,
    udp_addr: String,
    mdns: bool,
    ice_servers: Vec<String>,
    send_buffer_limit: usize,
    gather_timeout: Duration,
}

fn spawn_conn(
    conn: ConnId,
    offer: Option<String>,
    conns: &mut BTreeMap<ConnId, ConnHandle>,
    shared: &Arc<ConnSettings>,
    tev: &mpsc::Sender<TEvent>,
) {
    let (tx, rx) = mpsc::channel(CONN_QUEUE);
    let queued = Arc::new(AtomicUsize::new(0));
    conns.insert(
        conn,
        ConnHandle {
            tx,
            queued: queued.clone(),
        },
    );
    let shared = shared.clone();
    let tev = tev.clone();
    tokio::spawn(async move {
        if let Err(e) = conn_task(conn, offer, &shared, rx, tev.clone(), queued).await {
            tracing::debug!(conn, error = %e, "connection ended");
        }
        let _ = tev.send(TEvent::Closed(conn)).await;
    });
}

struct Handler {
    conn: ConnId,
    gathered: Arc<Notify>,
    dc_tx: mpsc::Sender<Arc<dyn DataChannel>>,
    tev: mpsc::Sender<TEvent>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.notify_one();
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        tracing::debug!(conn = self.conn, %state, "connection state");
        if matches!(
            state,
            RTCPeerConnectionState::Failed
                | RTCPeerConnectionState::Closed
                | RTCPeerConnectionState::Disconnected
        ) {
            let _ = self.tev.send(TEvent::Closed(self.conn)).await;
        }
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        let _ = self.dc_tx.send(dc).await;
    }
}

fn desc_json(d: &RTCSessionDescription) -> Result<String, String> {
    serde_json::to_string(d).map_err(|e| e.to_string())
}

fn parse_desc(s: &str) -> Result<RTCSessionDescription, String> {
    serde_json::from_str(s).map_err(|e| format!("bad remote description: {e}"))
}

async fn conn_task(
    conn: ConnId,
    offer: Option<String>,
    s: &ConnSettings,
    mut rx: mpsc::Receiver<ConnCmd>,
    tev: mpsc::Sender<TEvent>,
    queued: Arc<AtomicUsize>,
) -> Result<(), String> {
    let gathered = Arc::new(Notify::new());
    let (dc_tx, mut dc_rx) = mpsc::channel(2);
    let handler = Arc::new(Handler {
        conn,
        gathered: gathered.clone(),
        dc_tx,
        tev: tev.clone(),
    });
    let mut config = RTCConfigurationBuilder::new();
    if !s.ice_servers.is_empty() {
        config = config.with_ice_servers(vec![RTCIceServer {
            urls: s.ice_servers.clone(),
            ..Default::default()
        }]);
    }
    let mut se = SettingEngineBuilder::new();
    if !s.mdns {
        se = se.with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled);
    }
    let pc = PeerConnectionBuilder::new()
        .with_configuration(config.build())
        .with_setting_engine(se.build())
        .with_handler(handler)
        .with_runtime(s.runtime.clone())
        .with_udp_addrs(vec![s.udp_addr.clone()])
        .with_data_channel_send_buffer_limit(s.send_buffer_limit)
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    let result = drive_conn(
        conn, offer, s, &pc, &gathered, &mut dc_rx, &mut rx, &tev, &queued,
    )
    .await;
    let _ = pc.close().await;
    result
}

/// After `set_local_description`: wait for ICE gathering (bounded), then hand the complete local
/// description to the loop.
async fn send_local(
    conn: ConnId,
    pc: &Arc<dyn PeerConnection>,
    s: &ConnSettings,
    gathered: &Notify,
    tev: &mpsc::Sender<TEvent>,
) -> Result<(), String> {
    let _ = tokio::time::timeout(s.gather_timeout, gathered.notified()).await;
    let local = pc.local_description().await.ok_or("no local description")?;
    tev.send(TEvent::LocalSdp(conn, desc_json(&local)?))
        .await
        .map_err(|_| "closed".to_string())
}

#[allow(clippy::too_many_arguments)]
async fn drive_conn(
    conn: ConnId,
    offer: Option<String>,
    s: &ConnSettings,
    pc: &Arc<dyn PeerConnection>,
    gathered: &Notify,
    dc_rx: &mut mpsc::Receiver<Arc<dyn DataChannel>>,
    rx: &mut mpsc::Receiver<ConnCmd>,
    tev: &mpsc::Sender<TEvent>,
    queued: &AtomicUsize,
) -> Result<(), String> {
    let e = |e: webrtc::error::Error| e.to_string();
    let dc = match offer {
        None => {
            let dc = pc
                .create_data_channel(CHANNEL_LABEL, None)
                .await
                .map_err(e)?;
            let o = pc.create_offer(None).await.map_err(e)?;
            pc.set_local_description(o).await.map_err(e)?;
            send_local(conn, pc, s, gathered, tev).await?;
            // Wait for the answer.
            loop {
                match rx.recv().await {
                    Some(ConnCmd::Answer(sdp)) => {
                        pc.set_remote_description(parse_desc(&sdp)?)
                            .await
                            .map_err(e)?;
                        break;
                    }
                    Some(ConnCmd::Send(_)) => {}
                    Some(ConnCmd::Close) | None => return Ok(()),
                }
            }
            dc
        }
        Some(sdp) => {
            pc.set_remote_description(parse_desc(&sdp)?)
                .await
                .map_err(e)?;
            let a = pc.create_answer(None).await.map_err(e)?;
            pc.set_local_description(a).await.map_err(e)?;
            send_local(conn, pc, s, gathered, tev).await?;
            loop {
                tokio::select! {
                    dc = dc_rx.recv() => break dc.ok_or("no data channel")?,
                    cmd = rx.recv() => match cmd {
                        Some(ConnCmd::Close) | None => return Ok(()),
                        Some(_) => {}
                    },
                }
            }
        }
    };
    // Reader: every event of the channel to the loop, in order.
    let reader_dc = dc.clone();
    let reader_tev = tev.clone();
    let answerer_open =
        dc.ready_state().await.ok() == Some(webrtc::data_channel::RTCDataChannelState::Open);
    let reader = tokio::spawn(async move {
        while let Some(ev) = reader_dc.poll().await {
            let out = match ev {
                DataChannelEvent::OnOpen => TEvent::Open(conn),
                DataChannelEvent::OnMessage(m) => TEvent::Record(conn, m.data.to_vec()),
                DataChannelEvent::OnClose => break,
                _ => continue,
            };
            if reader_tev.send(out).await.is_err() {
                return;
            }
        }
        let _ = reader_tev.send(TEvent::Closed(conn)).await;
    });
    if answerer_open {
        let _ = tev.send(TEvent::Open(conn)).await;
    }
    // Writer.
    while let Some(cmd) = rx.recv().await {
        match cmd {
            ConnCmd::Send(data) => {
                let len = data.len();
                let r = dc.send(BytesMut::from(&data[..])).await;
                queued.fetch_sub(len, Ordering::AcqRel);
                r.map_err(e)?;
                let _ = tev.send(TEvent::Drained(conn)).await;
            }
            ConnCmd::Answer(_) => {}
            ConnCmd::Close => break,
        }
    }
    reader.abort();
    let _ = dc.close().await;
    Ok(())
}
