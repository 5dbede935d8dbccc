//! A circle member: the [`Session`] plus the job engine on both sides — a [`Worker`] that
//! serves shards other members send, and at most one running [`Job`] this node requested.
//!
//! Sans-IO: the driver feeds the same inputs as to the session, plus [`CircleNode::computed`]
//! for finished local work, and carries out what [`CircleNode::poll`] returns: transport ops,
//! [`NodeOut::Compute`] (run the model on a task, local or for a peer), and job events.
//!
//! Members of a job are [`Member`]s: peers that are up, and this node's own model workers
//! ([`Member::Local`], registered by the driver with [`CircleNode::local_up`]: a tab's Web
//! Workers). One engine owns the job whoever computes a shard: a local worker's shard goes out as
//! [`NodeOut::RunLocal`] and comes back as floats through [`CircleNode::local_done`] (no byte
//! encoding, no second job engine beneath this one). The requester itself is the job's self
//! member (never excluded, no deadline): with no local workers registered (the native node) its
//! shards go through the same worker queue as the peers' (one model, one queue); with local
//! workers it is a last-resort member with a nominal rate, run on whichever local worker is free.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::circle::Circle;
use crate::jobs::{Accepted, Task, Worker};
use crate::jobs::{Action, Capabilities, Job, JobConfig, JobError, JobId, PeerMsg, Progress};
use shoal_proto::identity::{Keypair, PeerId};

use super::session::{ConnId, NetOp, Out, PeerEvent, Session, SessionConfig};

mod generation;
pub use generation::{GEN_QUEUE, GenCounters, GenKey, GenOut, GenTask, ServeOut};

/// A member of a job this node requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Member {
    /// This node's own model worker `n` (see [`CircleNode::local_up`]).
    Local(u32),
    /// A peer of the circle — or this node itself, the job's self member.
    Peer(PeerId),
}

impl Member {
    /// The peer, if it is one.
    pub fn peer(&self) -> Option<&PeerId> {
        match self {
            Member::Peer(p) => Some(p),
            Member::Local(_) => None,
        }
    }

    /// A short name: the peer id's (`PeerId::short`), or `worker N` (1-based).
    pub fn short(&self) -> String {
        match self {
            Member::Peer(p) => p.short(),
            Member::Local(i) => format!("worker {}", u64::from(*i) + 1),
        }
    }
}

/// The peer id's text form, or `local:N` for local worker `N`.
impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Member::Peer(p) => write!(f, "{p}"),
            Member::Local(i) => write!(f, "local:{i}"),
        }
    }
}

/// Rate of the self member when local workers are members: it gets shards only when no
/// member can take them.
const SELF_FALLBACK_RATE: f64 = 1e-3;
/// Shards from peers a driver's node queues at most (each member may have a few in flight).
pub const PEER_QUEUE: usize = 2 * crate::jobs::MAX_MEMBERS + 8;
/// Most local workers a node registers.
pub const MAX_LOCAL_WORKERS: usize = 16;

/// Outputs of [`CircleNode::poll`].
#[derive(Debug, Clone, PartialEq)]
pub enum NodeOut {
    /// For the transport.
    Net(NetOp),
    /// Run the model on `task.texts` (any local worker), then call [`CircleNode::computed`].
    Compute(Task<PeerId>),
    /// Run shard `shard` of our job `job` on local worker `worker`, then call
    /// [`CircleNode::local_done`].
    RunLocal {
        /// The local worker (a member of the job).
        worker: u32,
        /// Job.
        job: JobId,
        /// Shard index.
        shard: u32,
        /// The texts.
        texts: Vec<String>,
    },
    /// A peer is up.
    PeerUp {
        /// Peer.
        peer: PeerId,
        /// Its capabilities.
        caps: Capabilities,
    },
    /// A peer went down.
    PeerDown {
        /// Peer.
        peer: PeerId,
    },
    /// Something from a peer was refused.
    Rejected {
        /// Peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// Live progress of a member of our job.
    Progress(Progress<Member>),
    /// Our job finished: vectors in input order, and every member's final progress.
    JobDone {
        /// Job.
        job: JobId,
        /// `texts × dim` vectors.
        vectors: Vec<Vec<f32>>,
        /// Final state of every member.
        members: Vec<Progress<Member>>,
    },
    /// A receipt of a shard a peer computed for our job: worker-signed, countersigned by us.
    Receipt(Box<shoal_tlog::receipt::Receipt>),
    /// Our job failed.
    JobFailed {
        /// Job.
        job: JobId,
        /// Why.
        error: JobError,
    },
    /// Our answer being generated (see [`GenOut`]).
    Gen(GenOut),
    /// Generation for a peer (see [`ServeOut`]).
    Serve(ServeOut),
    /// A member's answer failed verification: its signed commitments and the position,
    /// signed by us.
    Misbehaviour(Box<shoal_tlog::receipt::Misbehaviour>),
}

/// Timing of shards, for the overhead benchmark (all in ms, summed).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShardTimes {
    /// Remote shards accepted by our job.
    pub remote_shards: u64,
    /// Σ dispatch → result of remote shards.
    pub remote_round_trip_ms: u64,
    /// Shards computed here (ours and peers').
    pub computed: u64,
    /// Σ compute time of shards computed here, as the driver reported it.
    pub compute_ms: u64,
    /// Shards computed here for peers.
    pub served: u64,
    /// Σ request arrival → reply handed to the session, of shards served for peers (queue wait
    /// + compute). A requester's round trip minus this is the transport's share.
    pub served_residence_ms: u64,
}

struct Running {
    job: Job<Member>,
    /// (peer, shard) → dispatch time.
    sent: BTreeMap<(PeerId, u32), u64>,
    /// Keys the receipt commitments of this job; sent to each peer before its first shard.
    receipt_key: [u8; 32],
    /// Peers that have the key.
    keyed: BTreeSet<PeerId>,
    /// (peer, shard) → input commitment of shards sent, then (input, output) once the result
    /// came, until the worker's receipt signature arrives. Bounded like `sent`.
    commits: BTreeMap<(PeerId, u32), Commits>,
}

/// A sent shard's input commitment and, once its result came, the output's.
type Commits = ([u8; 32], Option<[u8; 32]>);

/// A shard being served for a peer: what its receipt needs.
struct Serving {
    input: [u8; 32],
    started_unix_ms: u64,
}

/// Most receipt keys (peer, job) a worker remembers.
const MAX_RECEIPT_KEYS: usize = 64;

/// One member of one circle.
pub struct CircleNode {
    session: Session,
    worker: Worker<PeerId>,
    job: Option<Running>,
    job_cfg: JobConfig,
    self_rate: f64,
    /// Local workers that are up, with their measured rate (texts/s) if known.
    locals: BTreeMap<u32, Option<f64>>,
    out: VecDeque<NodeOut>,
    times: ShardTimes,
    /// (peer, job, shard) → arrival time of requests being served (bounded by the worker queue).
    arrivals: BTreeMap<(PeerId, JobId, u32), u64>,
    /// Our identity (signs receipts).
    signer: Option<shoal_tlog::note::KeypairSigner>,
    /// (peer, job) → receipt key the requester sent, oldest evicted first.
    receipt_keys: VecDeque<((PeerId, JobId), [u8; 32])>,
    /// (peer, job, shard) → receipt data of requests being served (bounded like `arrivals`).
    serving: BTreeMap<(PeerId, JobId, u32), Serving>,
    /// Unix ms minus the driver's clock.
    unix_offset_ms: i64,
    /// Generation: our answer, peers' requests, counters.
    genr: generation::GenState,
    gen_cfg: crate::jobs::GenConfig,
    /// Chat models we serve (from our capabilities).
    chat_models: Vec<[u8; 32]>,
}

impl std::fmt::Debug for CircleNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CircleNode({:?})", self.session)
    }
}

fn job_id() -> JobId {
    let mut b = [0u8; 16];
    let _ = shoal_proto::identity::random_bytes(&mut b);
    JobId(b)
}

impl CircleNode {
    /// A member with identity `me` in `circle`. `caps.texts_per_sec` is also the rate of our
    /// own share of a job. The worker queues at most `max_queued` shards from peers.
    pub fn new(
        me: Keypair,
        circle: Circle,
        caps: Capabilities,
        cfg: SessionConfig,
        job_cfg: JobConfig,
        max_queued: usize,
    ) -> Self {
        let self_rate = f64::from(caps.texts_per_sec).max(0.1);
        let chat_models = caps.chat.iter().map(|c| c.model).collect();
        // A constant, valid note name: `new` cannot fail here; without a signer no receipts.
        let signer = shoal_tlog::note::KeypairSigner::new("shoal-member", me.clone()).ok();
        CircleNode {
            signer,
            receipt_keys: VecDeque::new(),
            serving: BTreeMap::new(),
            unix_offset_ms: 0,
            genr: generation::GenState::default(),
            gen_cfg: crate::jobs::GenConfig::default(),
            chat_models,
            session: Session::new(me, circle, caps, cfg),
            worker: Worker::new(max_queued, 1),
            job: None,
            job_cfg,
            self_rate,
            locals: BTreeMap::new(),
            out: VecDeque::new(),
            times: ShardTimes::default(),
            arrivals: BTreeMap::new(),
        }
    }

    /// A member as the drivers run it: peers' shards queued up to [`PEER_QUEUE`].
    pub fn for_driver(
        me: &Keypair,
        circle: &Circle,
        caps: &Capabilities,
        cfg: &SessionConfig,
        job_cfg: &JobConfig,
    ) -> Self {
        CircleNode::new(
            me.clone(),
            circle.clone(),
            caps.clone(),
            cfg.clone(),
            job_cfg.clone(),
            PEER_QUEUE,
        )
    }

    /// Tunables of the answers this node requests.
    pub fn set_gen_config(&mut self, cfg: crate::jobs::GenConfig) {
        self.gen_cfg = cfg;
    }

    /// Tell the node the wall clock: `unix_ms` is Unix time in ms at driver time `now_ms`
    /// (receipts carry Unix times; the driver's clock may be monotonic from its start).
    pub fn set_unix_clock(&mut self, unix_ms: u64, now_ms: u64) {
        self.unix_offset_ms = unix_ms as i64 - now_ms as i64;
    }

    fn unix(&self, now_ms: u64) -> u64 {
        (now_ms as i64 + self.unix_offset_ms).max(0) as u64
    }

    /// The session (peers, counters).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Send a message to a peer that is up (e.g. an application-level probe).
    pub fn send_to(
        &mut self,
        peer: &PeerId,
        msg: &PeerMsg,
        now_ms: u64,
    ) -> Result<(), super::SessionError> {
        let r = self.session.send(peer, msg);
        self.drain(now_ms);
        r
    }

    /// Shard timing so far.
    pub fn times(&self) -> &ShardTimes {
        &self.times
    }

    /// Next output.
    pub fn poll(&mut self) -> Option<NodeOut> {
        self.out.pop_front()
    }

    /// The earliest time [`CircleNode::tick`] has something to do.
    pub fn next_wake(&self) -> Option<u64> {
        let j = self.job.as_ref().and_then(|r| r.job.next_deadline());
        [j, self.gen_next_deadline(), self.session.next_wake()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether a job of ours is running.
    pub fn job_running(&self) -> bool {
        self.job.as_ref().is_some_and(|r| r.job.is_running())
    }

    // ---- inputs: signaling ----

    /// The room's member list.
    pub fn on_members(&mut self, members: &[PeerId], now_ms: u64) {
        self.session.on_members(members, now_ms);
        self.drain(now_ms);
    }

    /// A member joined.
    pub fn on_member_joined(&mut self, peer: PeerId, now_ms: u64) {
        self.session.on_member_joined(peer, now_ms);
        self.drain(now_ms);
    }

    /// A member left.
    pub fn on_member_left(&mut self, peer: &PeerId, now_ms: u64) {
        self.session.on_member_left(peer);
        self.drain(now_ms);
    }

    /// A sealed signaling payload.
    pub fn on_signal(&mut self, from: PeerId, payload: &[u8], now_ms: u64) {
        self.session.on_signal(from, payload, now_ms);
        self.drain(now_ms);
    }

    // ---- inputs: transport ----

    /// See [`Session::on_local_description`].
    pub fn on_local_description(&mut self, conn: ConnId, sdp: String, now_ms: u64) {
        self.session.on_local_description(conn, sdp);
        self.drain(now_ms);
    }

    /// See [`Session::on_open`].
    pub fn on_open(&mut self, conn: ConnId, now_ms: u64) {
        self.session.on_open(conn);
        self.drain(now_ms);
    }

    /// See [`Session::on_record`].
    pub fn on_record(&mut self, conn: ConnId, data: &[u8], now_ms: u64) {
        self.session.on_record(conn, data, now_ms);
        self.drain(now_ms);
    }

    /// See [`Session::on_closed`].
    pub fn on_closed(&mut self, conn: ConnId, now_ms: u64) {
        self.session.on_closed(conn, now_ms);
        self.drain(now_ms);
    }

    /// See [`Session::on_buffered`].
    pub fn on_buffered(&mut self, conn: ConnId, queued: usize, now_ms: u64) {
        self.session.on_buffered(conn, queued);
        self.drain(now_ms);
    }

    /// Time passes.
    pub fn tick(&mut self, now_ms: u64) {
        self.session.tick(now_ms);
        if let Some(r) = self.job.as_mut()
            && r.job.next_deadline().is_some_and(|d| d <= now_ms)
        {
            r.job.tick(now_ms);
        }
        self.gen_tick(now_ms);
        self.drain(now_ms);
    }

    // ---- inputs: application ----

    /// Start a job over `texts` with every peer that is up now (and those coming up later).
    /// Fails if one is still running.
    pub fn start_job(&mut self, texts: Vec<String>, now_ms: u64) -> Result<JobId, JobError> {
        if self.job_running() {
            return Err(JobError::Config("a job is already running"));
        }
        let id = job_id();
        let self_rate = if self.locals.is_empty() {
            self.self_rate
        } else {
            SELF_FALLBACK_RATE
        };
        let mut job = Job::new(
            id,
            texts,
            self.job_cfg.clone(),
            Member::Peer(self.session.my_id()),
            self_rate,
        )?;
        for (&worker, &rate) in &self.locals {
            let _ = job.add_member(Member::Local(worker), rate, now_ms);
        }
        for (peer, caps) in self.session.up_peers() {
            let rate = f64::from(caps.texts_per_sec);
            let _ = job.add_member(Member::Peer(peer), (rate > 0.0).then_some(rate), now_ms);
        }
        job.start(now_ms);
        let mut receipt_key = [0u8; 32];
        let _ = shoal_proto::identity::random_bytes(&mut receipt_key);
        self.job = Some(Running {
            job,
            sent: BTreeMap::new(),
            receipt_key,
            keyed: BTreeSet::new(),
            commits: BTreeMap::new(),
        });
        self.drain(now_ms);
        Ok(id)
    }

    /// Local model worker `worker` is up (`rate`: its measured texts/s, if known). It becomes a
    /// member of every job from now on, the running one included. Ignored beyond
    /// [`MAX_LOCAL_WORKERS`].
    pub fn local_up(&mut self, worker: u32, rate: Option<f64>, now_ms: u64) {
        let rate = rate.filter(|r| r.is_finite() && *r > 0.0);
        if !self.locals.contains_key(&worker) && self.locals.len() >= MAX_LOCAL_WORKERS {
            return;
        }
        self.locals.insert(worker, rate);
        if let Some(r) = self.job.as_mut()
            && r.job.is_running()
        {
            // Already a member (a restarted worker): it rejoins from the next job on.
            let _ = r.job.add_member(Member::Local(worker), rate, now_ms);
        }
        self.drain(now_ms);
    }

    /// Local model worker `worker` is gone (crashed, terminated): its shards go to others.
    pub fn local_down(&mut self, worker: u32, now_ms: u64) {
        self.locals.remove(&worker);
        if let Some(r) = self.job.as_mut() {
            r.job.member_left(&Member::Local(worker), now_ms);
        }
        self.drain(now_ms);
    }

    /// Local workers that are up.
    pub fn locals(&self) -> usize {
        self.locals.len()
    }

    /// Let `n` tasks of [`NodeOut::Compute`] run at once (default 1: one model).
    pub fn set_compute_slots(&mut self, n: usize) {
        self.worker.set_max_running(n);
    }

    /// A [`NodeOut::RunLocal`] finished: `Ok(row-major vectors)` or `Err(reason)`.
    pub fn local_done(
        &mut self,
        worker: u32,
        job: JobId,
        shard: u32,
        outcome: Result<Vec<f32>, String>,
        now_ms: u64,
    ) {
        let member = Member::Local(worker);
        if let Some(r) = self.job.as_mut().filter(|r| r.job.id() == job) {
            let _ = match outcome {
                Ok(vectors) => r.job.on_vectors(&member, shard, vectors, now_ms),
                Err(reason) => r.job.on_message(
                    &member,
                    PeerMsg::ShardError {
                        job,
                        shard,
                        reason: crate::jobs::msg::truncate_label(reason),
                    },
                    now_ms,
                ),
            };
        }
        self.drain(now_ms);
    }

    /// Cancel our job.
    pub fn cancel_job(&mut self, now_ms: u64) {
        if let Some(r) = self.job.as_mut() {
            r.job.cancel(now_ms);
        }
        self.drain(now_ms);
    }

    /// A task from [`NodeOut::Compute`] finished after `compute_ms`: `Ok((row-major vectors,
    /// dim))` or `Err(reason)`.
    pub fn computed(
        &mut self,
        task: &Task<PeerId>,
        outcome: Result<(Vec<f32>, u32), String>,
        compute_ms: u64,
        now_ms: u64,
    ) {
        self.times.computed += 1;
        self.times.compute_ms += compute_ms;
        if let Some(t) = self.arrivals.remove(&(task.from, task.job, task.shard)) {
            self.times.served_residence_ms += now_ms.saturating_sub(t);
        }
        let serving = self.serving.remove(&(task.from, task.job, task.shard));
        let me = self.session.my_id();
        if task.from == me {
            // Our own shard: straight into the job as floats.
            let dim = self.job_cfg.dim;
            if self.worker.finish(task)
                && let Some(r) = self.job.as_mut().filter(|r| r.job.id() == task.job)
            {
                let member = Member::Peer(me);
                let outcome = match outcome {
                    Ok((_, d)) if d as usize != dim => Err(format!("dimension {d}, not {dim}")),
                    other => other,
                };
                let _ = match outcome {
                    Ok((vectors, _)) => r.job.on_vectors(&member, task.shard, vectors, now_ms),
                    Err(reason) => r.job.on_message(
                        &member,
                        PeerMsg::ShardError {
                            job: task.job,
                            shard: task.shard,
                            reason: crate::jobs::msg::truncate_label(reason),
                        },
                        now_ms,
                    ),
                };
            }
        } else if let Some((to, reply)) = self.worker.complete(task, outcome) {
            self.times.served += 1;
            let sig = self.receipt_sig(&to, &reply, serving, now_ms);
            if let Err(e) = self.session.send(&to, &reply) {
                tracing::debug!(error = %e, "shard reply not sent");
            } else if let Some(sig) = sig
                && let Err(e) = self.session.send(&to, &sig)
            {
                tracing::debug!(error = %e, "receipt signature not sent");
            }
        }
        self.drain(now_ms);
    }

    // ---- plumbing ----

    fn on_peer_msg(&mut self, peer: PeerId, msg: PeerMsg, now_ms: u64) {
        if self.on_gen_msg(peer, &msg, now_ms) {
            return;
        }
        match msg {
            PeerMsg::ShardRequest { .. } | PeerMsg::Cancel { .. } => {
                if let PeerMsg::ShardRequest { job, shard, texts } = &msg {
                    self.arrivals.insert((peer, *job, *shard), now_ms);
                    while self.arrivals.len() > 4 * crate::jobs::MAX_MEMBERS * 8 {
                        self.arrivals.pop_first();
                    }
                    if let Some(key) = self.receipt_key(&peer, job) {
                        let input = shoal_tlog::receipt::keyed_commitment(
                            &key,
                            &job.0,
                            *shard,
                            &shoal_tlog::receipt::shard_input_bytes(texts),
                        );
                        let started_unix_ms = self.unix(now_ms);
                        self.serving.insert(
                            (peer, *job, *shard),
                            Serving {
                                input,
                                started_unix_ms,
                            },
                        );
                        while self.serving.len() > 4 * crate::jobs::MAX_MEMBERS * 8 {
                            self.serving.pop_first();
                        }
                    }
                }
                if let Accepted::Reply(reply) = self.worker.on_message(peer, msg)
                    && let Err(e) = self.session.send(&peer, &reply)
                {
                    tracing::debug!(error = %e, "busy reply not sent");
                }
            }
            PeerMsg::ShardResult { shard, .. } | PeerMsg::ShardError { shard, .. } => {
                if let Some(r) = self.job.as_mut() {
                    if let Some(sent) = r.sent.remove(&(peer, shard))
                        && let PeerMsg::ShardResult { job, vectors, .. } = &msg
                        && *job == r.job.id()
                    {
                        self.times.remote_shards += 1;
                        self.times.remote_round_trip_ms += now_ms.saturating_sub(sent);
                        if let Some(c) = r.commits.get_mut(&(peer, shard)) {
                            c.1 = Some(shoal_tlog::receipt::keyed_commitment(
                                &r.receipt_key,
                                &job.0,
                                shard,
                                vectors,
                            ));
                        }
                    } else {
                        r.commits.remove(&(peer, shard));
                    }
                    let _ = r.job.on_message(&Member::Peer(peer), msg, now_ms);
                }
            }
            PeerMsg::ReceiptKey { job, key } => {
                self.receipt_keys.retain(|(k, _)| *k != (peer, job));
                self.receipt_keys.push_back(((peer, job), key));
                while self.receipt_keys.len() > MAX_RECEIPT_KEYS {
                    self.receipt_keys.pop_front();
                }
            }
            PeerMsg::ReceiptSig {
                job,
                shard,
                started_ms,
                finished_ms,
                sig,
            } => self.on_receipt_sig(peer, job, shard, started_ms, finished_ms, sig),
            PeerMsg::Hello(_)
            | PeerMsg::GenRequest { .. }
            | PeerMsg::GenTokens { .. }
            | PeerMsg::GenDone { .. }
            | PeerMsg::GenError { .. } => {}
        }
    }

    fn receipt_key(&self, peer: &PeerId, job: &JobId) -> Option<[u8; 32]> {
        self.receipt_keys
            .iter()
            .find(|(k, _)| k.0 == *peer && k.1 == *job)
            .map(|(_, key)| *key)
    }

    /// Worker side: the `ReceiptSig` to send after `reply` (a `ShardResult`) to `to`.
    fn receipt_sig(
        &self,
        to: &PeerId,
        reply: &PeerMsg,
        serving: Option<Serving>,
        now_ms: u64,
    ) -> Option<PeerMsg> {
        let PeerMsg::ShardResult {
            job,
            shard,
            vectors,
            ..
        } = reply
        else {
            return None;
        };
        let serving = serving?;
        let key = self.receipt_key(to, job)?;
        let body = shoal_tlog::receipt::ReceiptBody {
            job_id: job.0,
            shard: *shard,
            input_commitment: serving.input,
            output_commitment: shoal_tlog::receipt::keyed_commitment(&key, &job.0, *shard, vectors),
            worker: self.session.my_id().0,
            requester: to.0,
            started_ms: serving.started_unix_ms,
            finished_ms: self.unix(now_ms).max(serving.started_unix_ms),
        };
        let sig = body.sign_as_worker(self.signer.as_ref()?).ok()?;
        Some(PeerMsg::ReceiptSig {
            job: *job,
            shard: *shard,
            started_ms: body.started_ms,
            finished_ms: body.finished_ms,
            sig,
        })
    }

    /// Requester side: countersign a worker's receipt for a result we took.
    fn on_receipt_sig(
        &mut self,
        peer: PeerId,
        job: JobId,
        shard: u32,
        started_ms: u64,
        finished_ms: u64,
        sig: shoal_tlog::receipt::Sig,
    ) {
        let Some(r) = self.job.as_mut().filter(|r| r.job.id() == job) else {
            return;
        };
        let Some((input, Some(output))) = r.commits.remove(&(peer, shard)) else {
            return;
        };
        let body = shoal_tlog::receipt::ReceiptBody {
            job_id: job.0,
            shard,
            input_commitment: input,
            output_commitment: output,
            worker: peer.0,
            requester: self.session.my_id().0,
            started_ms,
            finished_ms,
        };
        let Some(signer) = self.signer.as_ref() else {
            return;
        };
        match shoal_tlog::receipt::Receipt::countersign(body, sig, signer) {
            Ok(rc) => self.out.push_back(NodeOut::Receipt(Box::new(rc))),
            Err(e) => self.out.push_back(NodeOut::Rejected {
                peer,
                reason: format!("receipt: {e}"),
            }),
        }
    }

    /// Move everything through: session events, job actions, worker tasks, until quiet.
    fn drain(&mut self, now_ms: u64) {
        loop {
            let mut progressed = false;
            while let Some(o) = self.session.poll() {
                progressed = true;
                match o {
                    Out::Net(op) => self.out.push_back(NodeOut::Net(op)),
                    Out::Event(PeerEvent::Message { peer, msg }) => {
                        self.on_peer_msg(peer, msg, now_ms);
                    }
                    Out::Event(PeerEvent::Up { peer, caps }) => {
                        if let Some(r) = self.job.as_mut()
                            && r.job.is_running()
                        {
                            let rate = f64::from(caps.texts_per_sec);
                            let _ = r.job.add_member(
                                Member::Peer(peer),
                                (rate > 0.0).then_some(rate),
                                now_ms,
                            );
                        }
                        self.gen_peer_up(peer, &caps);
                        self.out.push_back(NodeOut::PeerUp { peer, caps });
                    }
                    Out::Event(PeerEvent::Down { peer }) => {
                        self.worker.cancel_from(&peer);
                        if let Some(r) = self.job.as_mut() {
                            r.job.member_left(&Member::Peer(peer), now_ms);
                            r.sent.retain(|(p, _), _| *p != peer);
                        }
                        self.gen_peer_down(&peer, now_ms);
                        self.out.push_back(NodeOut::PeerDown { peer });
                    }
                    Out::Event(PeerEvent::Rejected { peer, reason }) => {
                        self.out.push_back(NodeOut::Rejected { peer, reason });
                    }
                }
            }
            let me = self.session.my_id();
            let mut actions = Vec::new();
            if let Some(r) = self.job.as_mut() {
                while let Some(a) = r.job.poll_action() {
                    actions.push(a);
                }
            }
            for a in actions {
                progressed = true;
                self.on_action(a, me, now_ms);
            }
            while let Some(task) = self.worker.next_task() {
                progressed = true;
                self.out.push_back(NodeOut::Compute(task));
            }
            progressed |= self.drain_gen(now_ms);
            if !progressed {
                break;
            }
        }
    }

    fn on_action(&mut self, a: Action<Member>, me: PeerId, now_ms: u64) {
        match a {
            Action::Assign {
                to: Member::Local(worker),
                msg: PeerMsg::ShardRequest { job, shard, texts },
                ..
            } => self.out.push_back(NodeOut::RunLocal {
                worker,
                job,
                shard,
                texts,
            }),
            // A local worker's queued shards run out; their results are dropped by the job.
            Action::Assign {
                to: Member::Local(_),
                ..
            }
            | Action::Cancel {
                to: Member::Local(_),
                ..
            } => {}
            Action::Assign {
                to: Member::Peer(to),
                is_self,
                msg,
            }
            | Action::Cancel {
                to: Member::Peer(to),
                is_self,
                msg,
            } => {
                if is_self {
                    if let Accepted::Reply(reply) = self.worker.on_message(me, msg)
                        && let Some(r) = self.job.as_mut()
                    {
                        let _ = r.job.on_message(&Member::Peer(me), reply, now_ms);
                    }
                    return;
                }
                let shard = match &msg {
                    PeerMsg::ShardRequest { shard, texts, .. } => Some((*shard, texts)),
                    _ => None,
                };
                if shard.is_some()
                    && let Some(r) = self.job.as_mut()
                    && !r.keyed.contains(&to)
                {
                    let key = PeerMsg::ReceiptKey {
                        job: r.job.id(),
                        key: r.receipt_key,
                    };
                    if self.session.send(&to, &key).is_ok() {
                        r.keyed.insert(to);
                    }
                }
                match self.session.send(&to, &msg) {
                    Ok(()) => {
                        if let (Some((s, texts)), Some(r)) = (shard, self.job.as_mut()) {
                            r.sent.insert((to, s), now_ms);
                            let input = shoal_tlog::receipt::keyed_commitment(
                                &r.receipt_key,
                                &r.job.id().0,
                                s,
                                &shoal_tlog::receipt::shard_input_bytes(texts),
                            );
                            r.commits.insert((to, s), (input, None));
                            // Bounded: at most max_in_flight per member are live; forget
                            // the oldest beyond a generous cap.
                            while r.sent.len() > crate::jobs::MAX_MEMBERS * 8 {
                                r.sent.pop_first();
                            }
                            while r.commits.len() > crate::jobs::MAX_MEMBERS * 8 {
                                r.commits.pop_first();
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "shard not sent");
                        if let Some(r) = self.job.as_mut() {
                            r.job.member_left(&Member::Peer(to), now_ms);
                        }
                    }
                }
            }
            Action::Progress(p) => self.out.push_back(NodeOut::Progress(p)),
            Action::Finished => {
                if let Some(r) = self.job.as_mut() {
                    let members = r.job.progress();
                    let id = r.job.id();
                    if let Some(vectors) = r.job.take_output() {
                        self.out.push_back(NodeOut::JobDone {
                            job: id,
                            vectors,
                            members,
                        });
                    }
                }
            }
            Action::Failed(error) => {
                if let Some(r) = self.job.as_ref() {
                    self.out.push_back(NodeOut::JobFailed {
                        job: r.job.id(),
                        error,
                    });
                }
            }
        }
    }
}
