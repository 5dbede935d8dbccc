//! The browser driver: `RTCPeerConnection` data channels (web-sys), the signaling client on the
//! page's WebSocket, and the model behind an async callback, around one [`CircleNode`].
//!
//! One `spawn_local` loop owns the node. Everything the browser reports (channel open, records,
//! `bufferedamountlow`, closes, finished SDP work) arrives through one queue; the JS callbacks
//! only push into it, so no `RefCell` is borrowed across an `await`. Records waiting in that
//! queue are bounded per connection ([`MAX_PENDING_RECORDS`]): a peer that outruns us is closed,
//! never buffered without limit. Back-pressure on the way out: after every batch of sends the
//! loop reports the channel's real `bufferedAmount` to the session, which holds records back
//! above its high-water mark until `bufferedamountlow` (threshold [`LOW_WATER`]) says it
//! drained. The model runs through the application's compute callback, on a [`Lane`]: a given
//! local worker (a member of our job, [`NodeOut::RunLocal`](super::NodeOut::RunLocal)) or any
//! (our fallback shard, or one a peer asked for; at most [`WebConfig::compute_slots`] at once).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::time::Duration;

use futures_channel::mpsc;
use futures_util::StreamExt as _;
use futures_util::future::{Either, select};
use wasm_bindgen::JsCast as _;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, spawn_local};
use web_sys::{
    MessageEvent, RtcDataChannel, RtcDataChannelEvent, RtcDataChannelState, RtcDataChannelType,
    RtcIceGatheringState, RtcPeerConnection, RtcPeerConnectionState,
};

use super::app::{AppCmd, AppEvent, Routed, on_command, on_signal_event, route};
use super::node::CircleNode;
use super::session::{CHANNEL_LABEL, ConnId, NetOp, SessionConfig};
use crate::circle::Circle;
use crate::jobs::{Capabilities, JobConfig, JobId, Task};
use crate::signal::{self, ClientConfig, Command, Event};
use shoal_proto::identity::{Keypair, PeerId};

/// Records received on one connection and not yet taken by the loop before it is closed.
pub const MAX_PENDING_RECORDS: usize = 512;
/// `bufferedAmountLowThreshold`: when the channel's queue drains below this, the session may
/// send again.
pub const LOW_WATER: u32 = 1 << 20;

/// Settings of a browser circle member.
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// Relay WebSocket URLs.
    pub relay_urls: Vec<String>,
    /// Our identity.
    pub keypair: Keypair,
    /// The circle.
    pub circle: Circle,
    /// What we tell peers.
    pub caps: Capabilities,
    /// STUN/TURN URLs (none on a LAN or loopback).
    pub ice_servers: Vec<String>,
    /// Session tunables (Chromium: keep `high_water` ≤ 8 MiB or `send` throws).
    pub session: SessionConfig,
    /// Job tunables (for jobs this tab requests).
    pub job: JobConfig,
    /// Longest wait for ICE gathering before sending what we have.
    pub gather_timeout: Duration,
    /// Shards computed at once on [`Lane::Any`] (the tab's worker count).
    pub compute_slots: usize,
}

impl WebConfig {
    /// Defaults for a member of `circle` talking to `relay_urls`.
    pub fn new(
        relay_urls: Vec<String>,
        keypair: Keypair,
        circle: Circle,
        caps: Capabilities,
    ) -> Self {
        WebConfig {
            relay_urls,
            keypair,
            circle,
            caps,
            ice_servers: Vec::new(),
            session: SessionConfig::default(),
            job: JobConfig::default(),
            gather_timeout: Duration::from_secs(3),
            compute_slots: 1,
        }
    }
}

/// The model's answer: `(row-major vectors, dim)` or why not.
pub type ComputeResult = Result<(Vec<f32>, u32), String>;
/// Runs the model on texts on a [`Lane`] of the tab's worker pool.
pub type ComputeFn =
    Box<dyn FnMut(Lane, Vec<String>) -> Pin<Box<dyn Future<Output = ComputeResult>>>>;

/// Where the compute callback runs a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// On local worker `n`: a member of our job ([`AppCmd::LocalUp`]).
    Worker(u32),
    /// On whichever local worker is free: a shard a peer asked for (`for_peer`), or our own
    /// job's fallback shard.
    Any {
        /// Whether a peer asked for it.
        for_peer: bool,
    },
}
/// Receives the member's events.
pub type EventFn = Box<dyn FnMut(AppEvent)>;

/// The application's handle. Dropping it stops the member (connections closed, room left).
#[derive(Debug)]
pub struct WebCircle {
    tx: mpsc::UnboundedSender<In>,
}

impl WebCircle {
    /// Ask something. Fails only once the member stopped.
    pub fn command(&self, cmd: AppCmd) -> Result<(), signal::driver::Stopped> {
        self.tx
            .unbounded_send(In::Cmd(cmd))
            .map_err(|_| signal::driver::Stopped)
    }
}

impl Drop for WebCircle {
    fn drop(&mut self) {
        let _ = self.tx.unbounded_send(In::Stop);
    }
}

/// Errors that stop the member before it starts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebRtcError {
    /// The signaling client could not start.
    #[error("signaling: {0}")]
    Signal(#[from] signal::SignalError),
}

/// A JS event handler kept alive by its connection.
type JsHandler = Closure<dyn FnMut(JsValue)>;

enum In {
    Sig(Event),
    SigEnded,
    LocalSdp(ConnId, String),
    Open(ConnId),
    Record(ConnId, Vec<u8>),
    Drained(ConnId),
    Closed(ConnId, String),
    Computed(Task<PeerId>, ComputeResult, u64),
    LocalDone(u32, JobId, u32, Result<Vec<f32>, String>),
    Cmd(AppCmd),
    Stop,
}

/// Everything the JS callbacks of one connection need; the closures live here so they are
/// dropped (and the handlers unset) with the connection.
struct ConnShared {
    conn: ConnId,
    tx: mpsc::UnboundedSender<In>,
    pending: Cell<usize>,
    closed: Cell<bool>,
    pc: RtcPeerConnection,
    dc: RefCell<Option<RtcDataChannel>>,
    closures: RefCell<Vec<JsHandler>>,
}

impl ConnShared {
    fn push(&self, ev: In) {
        let _ = self.tx.unbounded_send(ev);
    }

    fn fail(&self, why: &str) {
        if !self.closed.replace(true) {
            self.push(In::Closed(self.conn, why.to_string()));
        }
    }

    fn on(&self, f: impl FnMut(JsValue) + 'static) -> js_sys::Function {
        let c = Closure::<dyn FnMut(JsValue)>::new(f);
        let func: js_sys::Function = c.as_ref().unchecked_ref::<js_sys::Function>().clone();
        self.closures.borrow_mut().push(c);
        func
    }

    /// Install the channel's handlers at once (early messages are lost otherwise).
    fn attach(self: &Rc<Self>, dc: RtcDataChannel) {
        dc.set_binary_type(RtcDataChannelType::Arraybuffer);
        dc.set_buffered_amount_low_threshold(LOW_WATER);
        let w = Rc::downgrade(self);
        let open = self.on(move |_| with(&w, |s| s.push(In::Open(s.conn))));
        let w = Rc::downgrade(self);
        let message = self.on(move |ev| {
            with(&w, |s| {
                let Some(ev) = ev.dyn_ref::<MessageEvent>() else {
                    return;
                };
                let Ok(buf) = ev.data().dyn_into::<js_sys::ArrayBuffer>() else {
                    s.fail("text message on the data channel");
                    return;
                };
                if s.pending.get() >= MAX_PENDING_RECORDS {
                    s.fail("peer outran the receive queue");
                    return;
                }
                s.pending.set(s.pending.get() + 1);
                s.push(In::Record(s.conn, js_sys::Uint8Array::new(&buf).to_vec()));
            });
        });
        let w = Rc::downgrade(self);
        let low = self.on(move |_| with(&w, |s| s.push(In::Drained(s.conn))));
        let w = Rc::downgrade(self);
        let close = self.on(move |_| with(&w, |s| s.fail("data channel closed")));
        dc.set_onopen(Some(&open));
        dc.set_onmessage(Some(&message));
        dc.set_onbufferedamountlow(Some(&low));
        dc.set_onclose(Some(&close));
        let already_open = dc.ready_state() == RtcDataChannelState::Open;
        *self.dc.borrow_mut() = Some(dc);
        if already_open {
            self.push(In::Open(self.conn));
        }
    }

    fn shutdown(&self) {
        self.closed.set(true);
        if let Some(dc) = self.dc.borrow_mut().take() {
            dc.set_onopen(None);
            dc.set_onmessage(None);
            dc.set_onbufferedamountlow(None);
            dc.set_onclose(None);
            dc.close();
        }
        self.pc.set_onconnectionstatechange(None);
        self.pc.set_ondatachannel(None);
        self.pc.close();
        self.closures.borrow_mut().clear();
    }
}

fn with(w: &Weak<ConnShared>, f: impl FnOnce(&Rc<ConnShared>)) {
    if let Some(s) = w.upgrade() {
        f(&s);
    }
}

fn js_err(e: JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

/// Start a circle member on the page's event loop.
pub fn spawn(
    cfg: WebConfig,
    compute: ComputeFn,
    on_event: EventFn,
) -> Result<WebCircle, WebRtcError> {
    let room = cfg.circle.room();
    let (sig, sig_events) = signal::spawn(ClientConfig::new(
        cfg.relay_urls.clone(),
        cfg.keypair.clone(),
    ))?;
    let (tx, rx) = mpsc::unbounded();
    // Signaling events into the one queue (the signaling client's own queue is bounded).
    let fwd = tx.clone();
    spawn_local(async move {
        let mut sig_events = sig_events;
        while let Some(ev) = sig_events.next().await {
            if fwd.unbounded_send(In::Sig(ev)).is_err() {
                return;
            }
        }
        let _ = fwd.unbounded_send(In::SigEnded);
    });
    let mut node =
        CircleNode::for_driver(&cfg.keypair, &cfg.circle, &cfg.caps, &cfg.session, &cfg.job);
    node.set_compute_slots(cfg.compute_slots);
    let driver = Driver {
        me: cfg.keypair.peer_id(),
        node,
        sig,
        room,
        conns: BTreeMap::new(),
        tx: tx.clone(),
        compute,
        on_event,
        ice_servers: cfg.ice_servers.clone(),
        gather_timeout: cfg.gather_timeout,
    };
    spawn_local(driver.run(rx));
    Ok(WebCircle { tx })
}

struct Driver {
    me: PeerId,
    node: CircleNode,
    sig: signal::SignalHandle,
    room: shoal_proto::RoomId,
    conns: BTreeMap<ConnId, Rc<ConnShared>>,
    tx: mpsc::UnboundedSender<In>,
    compute: ComputeFn,
    on_event: EventFn,
    ice_servers: Vec<String>,
    gather_timeout: Duration,
}

impl Driver {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<In>) {
        let _ = self.sig.try_command(Command::Join(self.room));
        let t = now_ms();
        self.node.set_unix_clock(t, t);
        loop {
            let t = now_ms();
            let wake = self
                .node
                .next_wake()
                .map(|w| w.saturating_sub(t))
                .unwrap_or(1000)
                .min(1000);
            let next = select(
                rx.next(),
                Box::pin(gloo_timers::future::sleep(Duration::from_millis(wake))),
            )
            .await;
            match next {
                Either::Left((None, _)) | Either::Left((Some(In::Stop), _)) => break,
                Either::Left((Some(ev), _)) => self.on_input(ev),
                Either::Right(_) => {
                    let t = now_ms();
                    self.node.tick(t);
                    // Belt and braces: `bufferedamountlow` fires only on a downward crossing.
                    for (c, s) in &self.conns {
                        if let Some(dc) = s.dc.borrow().as_ref() {
                            self.node.on_buffered(*c, dc.buffered_amount() as usize, t);
                        }
                    }
                }
            }
            self.pump();
        }
        for (_, s) in std::mem::take(&mut self.conns) {
            s.shutdown();
        }
        let _ = self.sig.try_command(Command::Leave(self.room));
    }

    fn on_input(&mut self, ev: In) {
        let t = now_ms();
        match ev {
            In::Sig(ev) => {
                if let Some(ev) = on_signal_event(&mut self.node, self.room, ev, t) {
                    (self.on_event)(ev);
                }
            }
            In::SigEnded => tracing::warn!("signaling client stopped"),
            In::LocalSdp(c, sdp) => self.node.on_local_description(c, sdp, t),
            In::Open(c) => self.node.on_open(c, t),
            In::Record(c, data) => {
                if let Some(s) = self.conns.get(&c) {
                    s.pending.set(s.pending.get().saturating_sub(1));
                    self.node.on_record(c, &data, t);
                }
            }
            In::Drained(c) => {
                if let Some(dc) = self.conns.get(&c).and_then(|s| s.dc.borrow().clone()) {
                    self.node.on_buffered(c, dc.buffered_amount() as usize, t);
                }
            }
            In::Closed(c, why) => {
                if let Some(s) = self.conns.remove(&c) {
                    tracing::debug!(conn = c, %why, "connection closed");
                    s.shutdown();
                    self.node.on_closed(c, t);
                }
            }
            In::Computed(task, outcome, ms) => self.node.computed(&task, outcome, ms, t),
            In::LocalDone(worker, job, shard, outcome) => {
                self.node.local_done(worker, job, shard, outcome, t);
            }
            In::Cmd(cmd) => {
                if let Some(ev) = on_command(&mut self.node, cmd, t) {
                    (self.on_event)(ev);
                }
            }
            In::Stop => {}
        }
    }

    /// Carry out everything the node asked for (reporting the channels' real queues after
    /// each batch of sends, which may release held records); model work starts at once (the
    /// node bounds how much of it is out).
    fn pump(&mut self) {
        loop {
            let mut sent = Vec::new();
            while let Some(o) = self.node.poll() {
                match route(o) {
                    Routed::Net(op) => {
                        if let Some(c) = self.net(op) {
                            sent.push(c);
                        }
                    }
                    Routed::Compute(task) => self.compute_any(task),
                    Routed::RunLocal {
                        worker,
                        job,
                        shard,
                        texts,
                    } => self.run_local(worker, job, shard, texts),
                    Routed::App(ev) => (self.on_event)(ev),
                }
            }
            if sent.is_empty() {
                break;
            }
            sent.sort_unstable();
            sent.dedup();
            let t = now_ms();
            for c in sent {
                if let Some(dc) = self.conns.get(&c).and_then(|s| s.dc.borrow().clone()) {
                    self.node.on_buffered(c, dc.buffered_amount() as usize, t);
                }
            }
        }
    }

    fn compute_any(&mut self, task: Task<PeerId>) {
        let lane = Lane::Any {
            for_peer: task.from != self.me,
        };
        let fut = (self.compute)(lane, task.texts.clone());
        let tx = self.tx.clone();
        spawn_local(async move {
            let t0 = now_ms();
            let r = fut.await;
            let _ = tx.unbounded_send(In::Computed(task, r, now_ms().saturating_sub(t0)));
        });
    }

    fn run_local(&mut self, worker: u32, job: JobId, shard: u32, texts: Vec<String>) {
        let fut = (self.compute)(Lane::Worker(worker), texts);
        let tx = self.tx.clone();
        spawn_local(async move {
            let r = fut.await.map(|(v, _dim)| v);
            let _ = tx.unbounded_send(In::LocalDone(worker, job, shard, r));
        });
    }

    /// One transport op; returns a connection we sent on.
    fn net(&mut self, op: NetOp) -> Option<ConnId> {
        match op {
            NetOp::Signal { to, payload } => {
                if self
                    .sig
                    .try_command(Command::Send {
                        room: self.room,
                        to,
                        payload,
                    })
                    .is_err()
                {
                    tracing::warn!("signaling queue full: payload dropped");
                }
                None
            }
            NetOp::CreateOffer { conn, .. } => {
                self.open_conn(conn, None);
                None
            }
            NetOp::AcceptOffer { conn, sdp, .. } => {
                self.open_conn(conn, Some(sdp));
                None
            }
            NetOp::ApplyAnswer { conn, sdp } => {
                if let Some(s) = self.conns.get(&conn).cloned() {
                    spawn_local(async move {
                        if let Err(e) = set_remote(&s.pc, &sdp).await {
                            s.fail(&e);
                        }
                    });
                }
                None
            }
            NetOp::Send { conn, data } => {
                let s = self.conns.get(&conn)?;
                let dc = s.dc.borrow().clone();
                match dc.map(|dc| dc.send_with_u8_array(&data)) {
                    Some(Ok(())) => Some(conn),
                    Some(Err(e)) => {
                        s.fail(&js_err(e));
                        None
                    }
                    None => {
                        s.fail("send before the channel exists");
                        None
                    }
                }
            }
            NetOp::Close { conn } => {
                if let Some(s) = self.conns.remove(&conn) {
                    s.shutdown();
                }
                None
            }
        }
    }

    fn open_conn(&mut self, conn: ConnId, offer: Option<String>) {
        let pc = match new_pc(&self.ice_servers) {
            Ok(pc) => pc,
            Err(e) => {
                tracing::warn!(error = %e, "RTCPeerConnection");
                let _ = self.tx.unbounded_send(In::Closed(conn, e));
                return;
            }
        };
        let s = Rc::new(ConnShared {
            conn,
            tx: self.tx.clone(),
            pending: Cell::new(0),
            closed: Cell::new(false),
            pc: pc.clone(),
            dc: RefCell::new(None),
            closures: RefCell::new(Vec::new()),
        });
        let w = Rc::downgrade(&s);
        let state = s.on(move |_| {
            with(&w, |s| {
                if matches!(
                    s.pc.connection_state(),
                    RtcPeerConnectionState::Failed
                        | RtcPeerConnectionState::Closed
                        | RtcPeerConnectionState::Disconnected
                ) {
                    s.fail("peer connection lost");
                }
            });
        });
        pc.set_onconnectionstatechange(Some(&state));
        self.conns.insert(conn, s.clone());
        let gather = self.gather_timeout;
        match offer {
            None => {
                s.attach(pc.create_data_channel(CHANNEL_LABEL));
                spawn_local(async move {
                    match make_offer(&s.pc, gather).await {
                        Ok(sdp) => s.push(In::LocalSdp(conn, sdp)),
                        Err(e) => s.fail(&e),
                    }
                });
            }
            Some(sdp) => {
                let w = Rc::downgrade(&s);
                let on_dc = s.on(move |ev| {
                    with(&w, |s| {
                        if let Some(ev) = ev.dyn_ref::<RtcDataChannelEvent>() {
                            let dc = ev.channel();
                            if dc.label() == CHANNEL_LABEL && s.dc.borrow().is_none() {
                                s.attach(dc);
                            } else {
                                dc.close();
                            }
                        }
                    });
                });
                pc.set_ondatachannel(Some(&on_dc));
                spawn_local(async move {
                    match make_answer(&s.pc, &sdp, gather).await {
                        Ok(sdp) => s.push(In::LocalSdp(conn, sdp)),
                        Err(e) => s.fail(&e),
                    }
                });
            }
        }
    }
}

fn new_pc(ice_servers: &[String]) -> Result<RtcPeerConnection, String> {
    let cfg = js_sys::Object::new();
    let servers = js_sys::Array::new();
    if !ice_servers.is_empty() {
        let s = js_sys::Object::new();
        let urls: js_sys::Array = ice_servers.iter().map(|u| JsValue::from_str(u)).collect();
        js_sys::Reflect::set(&s, &"urls".into(), &urls).map_err(js_err)?;
        servers.push(&s);
    }
    js_sys::Reflect::set(&cfg, &"iceServers".into(), &servers).map_err(js_err)?;
    RtcPeerConnection::new_with_configuration(cfg.unchecked_ref()).map_err(js_err)
}

/// A description as the JSON both drivers exchange (`{"type":"offer","sdp":"…"}`).
fn local_json(pc: &RtcPeerConnection) -> Result<String, String> {
    let d = pc.local_description().ok_or("no local description")?;
    js_sys::JSON::stringify(&d)
        .map_err(js_err)?
        .as_string()
        .ok_or_else(|| "description is not JSON".into())
}

async fn wait_gathered(pc: &RtcPeerConnection, timeout: Duration) {
    let deadline = now_ms() + timeout.as_millis() as u64;
    while pc.ice_gathering_state() != RtcIceGatheringState::Complete && now_ms() < deadline {
        gloo_timers::future::sleep(Duration::from_millis(20)).await;
    }
}

async fn make_offer(pc: &RtcPeerConnection, gather: Duration) -> Result<String, String> {
    let offer = JsFuture::from(pc.create_offer()).await.map_err(js_err)?;
    set_local(pc, offer, gather).await
}

async fn make_answer(
    pc: &RtcPeerConnection,
    sdp: &str,
    gather: Duration,
) -> Result<String, String> {
    set_remote(pc, sdp).await?;
    let answer = JsFuture::from(pc.create_answer()).await.map_err(js_err)?;
    set_local(pc, answer, gather).await
}

/// Apply our offer or answer, wait for ICE gathering (up to `gather`), and return the local
/// description with its candidates as JSON.
async fn set_local(
    pc: &RtcPeerConnection,
    desc: JsValue,
    gather: Duration,
) -> Result<String, String> {
    JsFuture::from(pc.set_local_description(desc.unchecked_ref()))
        .await
        .map_err(js_err)?;
    wait_gathered(pc, gather).await;
    local_json(pc)
}

async fn set_remote(pc: &RtcPeerConnection, sdp: &str) -> Result<(), String> {
    let desc =
        js_sys::JSON::parse(sdp).map_err(|_| "remote description is not JSON".to_string())?;
    if !desc.is_object() {
        return Err("remote description is not an object".into());
    }
    JsFuture::from(pc.set_remote_description(desc.unchecked_ref()))
        .await
        .map_err(js_err)?;
    Ok(())
}
