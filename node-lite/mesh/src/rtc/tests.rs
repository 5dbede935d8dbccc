//! Several circle members over an in-memory transport and relay.

use std::collections::{BTreeMap, VecDeque};

use super::node::{GenKey, GenOut, GenTask, ServeOut};
use super::*;
use crate::circle::{Circle, CircleKey};
use crate::jobs::{Capabilities, GenAsk, GenFinish, JobConfig, MemberStatus, PeerMsg, Task};
use shoal_proto::identity::{Keypair, PeerId};

const DIM: usize = 4;

fn fake_embed(text: &str) -> Vec<f32> {
    let mut h = 1469598103934665603u64;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(1099511628211);
    }
    (0..DIM)
        .map(|i| ((h >> (i * 8)) & 0xff) as f32 / 255.0)
        .collect()
}

fn texts(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("sentence number {i}")).collect()
}

#[derive(Debug)]
enum Input {
    Members(Vec<PeerId>),
    Joined(PeerId),
    Left(PeerId),
    Signal(PeerId, Vec<u8>),
    LocalSdp(ConnId, String),
    Open(ConnId),
    Record(ConnId, Vec<u8>),
    Closed(ConnId),
    Computed(Task<PeerId>),
    /// Local worker's shard: (worker, job, shard, texts).
    LocalRun(u32, crate::jobs::JobId, u32, Vec<String>),
    /// One token of a generation served for a peer: the task and the answer so far.
    GenStep(GenTask, Vec<u32>),
    /// One token of our own local generation: job, attempt, prompt, answer so far, max.
    LocalGen(crate::jobs::JobId, u32, Vec<u32>, Vec<u32>, u32),
    /// A verification result: job, length, outcome.
    Verified(crate::jobs::JobId, usize, Result<(), usize>),
}

/// The fake chat model: the token after `prompt ‖ answer`; the answer ends with
/// [`FAKE_EOS`] as its [`FAKE_LEN`]th token.
fn fake_next(prompt: &[u32], answer: &[u32]) -> u32 {
    if answer.len() + 1 >= FAKE_LEN {
        return FAKE_EOS;
    }
    let mut h = 1469598103934665603u64;
    for t in prompt.iter().chain(answer) {
        h = (h ^ u64::from(*t)).wrapping_mul(1099511628211);
    }
    3 + (h % 997) as u32
}
const FAKE_EOS: u32 = 2;
const FAKE_LEN: usize = 24;
const FAKE_MODEL: [u8; 32] = [9; 32];

fn fake_answer(prompt: &[u32]) -> Vec<u32> {
    let mut a = Vec::new();
    while a.last() != Some(&FAKE_EOS) {
        a.push(fake_next(prompt, &a));
    }
    a
}

/// A finished job: vectors and every member's final progress.
type Done = (Vec<Vec<f32>>, Vec<crate::jobs::Progress<super::Member>>);

struct Member {
    node: CircleNode,
    alive: bool,
    /// Stall: never computes peers' shards.
    stall: bool,
    computed_for: BTreeMap<PeerId, usize>,
    done: Option<Done>,
    up: Vec<PeerId>,
    rejected: Vec<String>,
    receipts: Vec<shoal_tlog::receipt::Receipt>,
    /// Shards each local worker computed; a worker not in the map is dead (its shards vanish).
    local_done: BTreeMap<u32, usize>,
    /// Generation: events of our answer, records made, stopped served tasks, tamper hook.
    gen_events: Vec<GenOut>,
    misbehaviour: Vec<shoal_tlog::receipt::Misbehaviour>,
    stopped: std::collections::BTreeSet<GenKey>,
    local_stop: bool,
    /// Replace every answer token at a position ≡ 5 (mod 7) with another.
    tamper: bool,
}

/// The in-memory world: a relay room, connections linked pairwise, a clock.
struct World {
    members: Vec<Member>,
    queue: VecDeque<(usize, Input)>,
    /// (node, conn) → (node, conn) once both ends exist.
    links: BTreeMap<(usize, ConnId), (usize, ConnId)>,
    /// Offerer's end waiting for the answer: answerer (node, conn) → offerer (node, conn).
    half: BTreeMap<(usize, ConnId), (usize, ConnId)>,
    /// Every payload the relay forwarded.
    relay_frames: Vec<Vec<u8>>,
    now: u64,
    /// Records sent per step (backpressure checks).
    sends: usize,
    /// Hold Send ops (to test back-pressure).
    hold_sends: bool,
    held: Vec<(usize, NetOp)>,
}

fn caps(name: &str, rate: f32) -> Capabilities {
    Capabilities {
        name: name.into(),
        backend: "test".into(),
        texts_per_sec: rate,
        chat: vec![crate::jobs::ChatModelCap {
            model: FAKE_MODEL,
            prefill_tok_s: 500.0,
            decode_tok_s: 50.0,
        }],
    }
}

fn job_cfg() -> JobConfig {
    JobConfig {
        shard_texts: 8,
        dim: DIM,
        ..JobConfig::default()
    }
}

impl World {
    fn new(keys: &[CircleKey]) -> World {
        let members = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Member {
                node: CircleNode::new(
                    Keypair::generate().unwrap(),
                    Circle::new(k.clone()),
                    caps(&format!("m{i}"), 100.0),
                    SessionConfig::default(),
                    job_cfg(),
                    64,
                ),
                alive: true,
                stall: false,
                computed_for: BTreeMap::new(),
                done: None,
                up: Vec::new(),
                rejected: Vec::new(),
                receipts: Vec::new(),
                local_done: BTreeMap::new(),
                gen_events: Vec::new(),
                misbehaviour: Vec::new(),
                stopped: Default::default(),
                local_stop: false,
                tamper: false,
            })
            .collect();
        World {
            members,
            queue: VecDeque::new(),
            links: BTreeMap::new(),
            half: BTreeMap::new(),
            relay_frames: Vec::new(),
            now: 0,
            sends: 0,
            hold_sends: false,
            held: Vec::new(),
        }
    }

    fn id(&self, i: usize) -> PeerId {
        self.members[i].node.session().my_id()
    }

    fn index(&self, id: &PeerId) -> Option<usize> {
        (0..self.members.len()).find(|&i| self.id(i) == *id)
    }

    /// Everyone joins the room, in order.
    fn join_all(&mut self) {
        for i in 0..self.members.len() {
            let before: Vec<PeerId> = (0..i).map(|j| self.id(j)).collect();
            let mut all = before.clone();
            all.push(self.id(i));
            self.queue.push_back((i, Input::Members(all)));
            for j in 0..i {
                let id = self.id(i);
                self.queue.push_back((j, Input::Joined(id)));
            }
        }
    }

    fn kill(&mut self, k: usize) {
        self.members[k].alive = false;
        let links: Vec<_> = self
            .links
            .iter()
            .filter(|((n, _), _)| *n == k)
            .map(|(a, b)| (*a, *b))
            .collect();
        for (a, b) in links {
            self.links.remove(&a);
            self.links.remove(&b);
            self.queue.push_back((b.0, Input::Closed(b.1)));
        }
        let id = self.id(k);
        for j in 0..self.members.len() {
            if j != k {
                self.queue.push_back((j, Input::Left(id)));
            }
        }
    }

    fn feed(&mut self, i: usize, input: Input) {
        if !self.members[i].alive {
            return;
        }
        let now = self.now;
        let n = &mut self.members[i].node;
        match input {
            Input::Members(m) => n.on_members(&m, now),
            Input::Joined(p) => n.on_member_joined(p, now),
            Input::Left(p) => n.on_member_left(&p, now),
            Input::Signal(from, payload) => n.on_signal(from, &payload, now),
            Input::LocalSdp(c, sdp) => n.on_local_description(c, sdp, now),
            Input::Open(c) => n.on_open(c, now),
            Input::Record(c, d) => n.on_record(c, &d, now),
            Input::Closed(c) => n.on_closed(c, now),
            Input::Computed(task) => {
                let flat: Vec<f32> = task.texts.iter().flat_map(|t| fake_embed(t)).collect();
                *self.members[i].computed_for.entry(task.from).or_default() += 1;
                self.members[i]
                    .node
                    .computed(&task, Ok((flat, DIM as u32)), 5, now);
            }
            Input::LocalRun(worker, job, shard, texts) => {
                let Some(n) = self.members[i].local_done.get_mut(&worker) else {
                    return; // the worker died: its shard never comes back
                };
                *n += 1;
                let flat: Vec<f32> = texts.iter().flat_map(|t| fake_embed(t)).collect();
                self.members[i]
                    .node
                    .local_done(worker, job, shard, Ok(flat), now);
            }
            Input::GenStep(task, mut answer) => {
                let key = task.key();
                let stopped = self.members[i].stopped.contains(&key);
                let tamper = self.members[i].tamper;
                let node = &mut self.members[i].node;
                if stopped {
                    node.gen_served(&key, Ok(GenFinish::Cancelled), now);
                } else {
                    let mut context = task.prefix.clone();
                    context.extend_from_slice(&answer);
                    let pos = context.len();
                    let mut t = fake_next(&task.prompt, &context);
                    if tamper && pos % 7 == 5 && t != FAKE_EOS {
                        t += 1;
                    }
                    answer.push(t);
                    if !node.gen_emit(&key, pos, &[t], now) {
                        node.gen_served(&key, Ok(GenFinish::Cancelled), now);
                    } else if t == FAKE_EOS || pos + 1 >= task.max_tokens as usize {
                        node.gen_served(&key, Ok(GenFinish::Stop), now);
                    } else {
                        self.queue.push_back((i, Input::GenStep(task, answer)));
                    }
                }
            }
            Input::LocalGen(job, attempt, prompt, mut answer, max) => {
                let stop = self.members[i].local_stop;
                let node = &mut self.members[i].node;
                if stop {
                    node.gen_local_done(job, attempt, Ok(GenFinish::Cancelled), now);
                } else {
                    let t = fake_next(&prompt, &answer);
                    let pos = answer.len();
                    answer.push(t);
                    node.gen_local_tokens(job, attempt, pos, &[t], now);
                    if t == FAKE_EOS || answer.len() >= max as usize {
                        node.gen_local_done(job, attempt, Ok(GenFinish::Stop), now);
                    } else {
                        self.queue
                            .push_back((i, Input::LocalGen(job, attempt, prompt, answer, max)));
                    }
                }
            }
            Input::Verified(job, len, outcome) => {
                self.members[i].node.gen_verified(job, len, outcome, now);
            }
        }
        self.collect(i);
    }

    /// Member `i` gets local model workers `0..n`.
    fn add_locals(&mut self, i: usize, n: u32) {
        for w in 0..n {
            self.members[i].local_done.insert(w, 0);
            let now = self.now;
            self.members[i].node.local_up(w, Some(100.0), now);
        }
        self.collect(i);
    }

    fn collect(&mut self, i: usize) {
        while let Some(o) = self.members[i].node.poll() {
            match o {
                NodeOut::Net(op) => self.net(i, op),
                NodeOut::Compute(task) => {
                    let me = self.id(i);
                    if self.members[i].stall && task.from != me {
                        continue; // swallowed: never answered
                    }
                    self.queue.push_back((i, Input::Computed(task)));
                }
                NodeOut::PeerUp { peer, .. } => self.members[i].up.push(peer),
                NodeOut::PeerDown { peer } => self.members[i].up.retain(|p| *p != peer),
                NodeOut::Rejected { reason, .. } => self.members[i].rejected.push(reason),
                NodeOut::RunLocal {
                    worker,
                    job,
                    shard,
                    texts,
                } => self
                    .queue
                    .push_back((i, Input::LocalRun(worker, job, shard, texts))),
                NodeOut::Progress(_) => {}
                NodeOut::JobDone {
                    vectors, members, ..
                } => self.members[i].done = Some((vectors, members)),
                NodeOut::Receipt(r) => self.members[i].receipts.push(*r),
                NodeOut::JobFailed { error, .. } => panic!("job failed: {error}"),
                NodeOut::Serve(ServeOut::Generate(task)) => {
                    if !self.members[i].stall {
                        self.queue.push_back((i, Input::GenStep(task, Vec::new())));
                    }
                }
                NodeOut::Serve(ServeOut::Stop(key)) => {
                    self.members[i].stopped.insert(key);
                }
                NodeOut::Misbehaviour(m) => self.members[i].misbehaviour.push(*m),
                NodeOut::Gen(g) => {
                    match &g {
                        GenOut::RunLocal {
                            job,
                            attempt,
                            prompt,
                            prefix,
                            max_tokens,
                            ..
                        } => {
                            self.members[i].local_stop = false;
                            self.queue.push_back((
                                i,
                                Input::LocalGen(
                                    *job,
                                    *attempt,
                                    prompt.clone(),
                                    prefix.clone(),
                                    *max_tokens,
                                ),
                            ));
                        }
                        GenOut::StopLocal { .. } => self.members[i].local_stop = true,
                        GenOut::Verify {
                            job,
                            prompt,
                            answer,
                            from,
                            ..
                        } => {
                            let bad = (*from..answer.len())
                                .find(|&p| answer[p] != fake_next(prompt, &answer[..p]));
                            self.queue.push_back((
                                i,
                                Input::Verified(*job, answer.len(), bad.map_or(Ok(()), Err)),
                            ));
                        }
                        _ => {}
                    }
                    self.members[i].gen_events.push(g);
                }
            }
        }
    }

    fn net(&mut self, i: usize, op: NetOp) {
        match op {
            NetOp::Signal { to, payload } => {
                self.relay_frames.push(payload.clone());
                if let Some(j) = self.index(&to) {
                    let from = self.id(i);
                    self.queue.push_back((j, Input::Signal(from, payload)));
                }
            }
            NetOp::CreateOffer { conn, .. } => {
                self.queue
                    .push_back((i, Input::LocalSdp(conn, format!("{i}:{conn}"))));
            }
            NetOp::AcceptOffer { conn, sdp, .. } => {
                let (a, b) = sdp.split_once(':').unwrap();
                let offerer = (a.parse().unwrap(), b.parse().unwrap());
                self.half.insert((i, conn), offerer);
                self.queue
                    .push_back((i, Input::LocalSdp(conn, format!("{i}:{conn}"))));
            }
            NetOp::ApplyAnswer { conn, sdp } => {
                let (a, b) = sdp.split_once(':').unwrap();
                let answerer: (usize, ConnId) = (a.parse().unwrap(), b.parse().unwrap());
                if self.half.remove(&answerer) == Some((i, conn)) {
                    self.links.insert((i, conn), answerer);
                    self.links.insert(answerer, (i, conn));
                    self.queue.push_back((i, Input::Open(conn)));
                    self.queue.push_back((answerer.0, Input::Open(answerer.1)));
                }
            }
            NetOp::Send { conn, data } => {
                if self.hold_sends {
                    self.held.push((i, NetOp::Send { conn, data }));
                    return;
                }
                self.sends += 1;
                if let Some(&(j, c)) = self.links.get(&(i, conn)) {
                    self.queue.push_back((j, Input::Record(c, data)));
                }
            }
            NetOp::Close { conn } => {
                if let Some(other) = self.links.remove(&(i, conn)) {
                    self.links.remove(&other);
                    self.queue.push_back((other.0, Input::Closed(other.1)));
                }
            }
        }
    }

    /// Run until quiet or `max` inputs; time advances 1 ms per input.
    fn run(&mut self, max: usize) {
        for _ in 0..max {
            let Some((i, input)) = self.queue.pop_front() else {
                return;
            };
            self.now += 1;
            self.feed(i, input);
        }
    }

    fn advance(&mut self, ms: u64) {
        self.now += ms;
        for i in 0..self.members.len() {
            if self.members[i].alive {
                let now = self.now;
                self.members[i].node.tick(now);
                self.collect(i);
            }
        }
    }
}

fn expected(t: &[String]) -> Vec<Vec<f32>> {
    t.iter().map(|s| fake_embed(s)).collect()
}

#[test]
fn three_members_connect_and_share_a_job() {
    let k = CircleKey::generate().unwrap();
    let mut w = World::new(&[k.clone(), k.clone(), k]);
    w.join_all();
    w.run(10_000);
    for i in 0..3 {
        assert_eq!(w.members[i].up.len(), 2, "member {i} sees both peers up");
    }
    let t = texts(400);
    let now = w.now;
    w.members[0].node.start_job(t.clone(), now).unwrap();
    w.collect(0);
    w.run(100_000);
    let (vectors, members) = w.members[0].done.take().expect("job finished");
    assert_eq!(vectors, expected(&t));
    for p in &members {
        assert!(p.shards_done > 0, "{:?} did no shard", p.member);
    }
    let me = w.id(0);
    assert!(w.members[1].computed_for[&me] > 0);
    assert!(w.members[2].computed_for[&me] > 0);
    // Nothing sent through the relay carries a text.
    for f in &w.relay_frames {
        assert!(!f.windows(8).any(|x| x == b"sentence"));
    }
    let times = w.members[0].node.times().clone();
    assert!(times.remote_shards > 0 && times.computed > 0);
    // One countersigned receipt per remote shard, each verifying, none revealing a text.
    let receipts = &w.members[0].receipts;
    let remote: u32 = members
        .iter()
        .filter(|p| !p.is_self)
        .map(|p| p.shards_done)
        .sum();
    assert_eq!(receipts.len(), remote as usize);
    for r in receipts {
        r.verify().unwrap();
        assert_eq!(r.body.requester, me.0);
        assert!(r.body.worker == w.id(1).0 || r.body.worker == w.id(2).0);
        let enc = r.encode();
        assert_eq!(
            shoal_tlog::receipt::Receipt::decode_verified(&enc).unwrap(),
            *r
        );
        assert!(!enc.windows(8).any(|x| x == b"sentence"));
    }
    let mut shards: Vec<u32> = receipts.iter().map(|r| r.body.shard).collect();
    shards.sort_unstable();
    shards.dedup();
    assert_eq!(shards.len(), receipts.len(), "one receipt per shard");
    // Workers never countersign: only the requester holds receipts.
    assert!(w.members[1].receipts.is_empty() && w.members[2].receipts.is_empty());
}

#[test]
fn member_dying_mid_job_still_completes_identically() {
    let k = CircleKey::generate().unwrap();
    let mut w = World::new(&[k.clone(), k.clone(), k]);
    w.join_all();
    w.run(10_000);
    let t = texts(600);
    let now = w.now;
    w.members[0].node.start_job(t.clone(), now).unwrap();
    w.collect(0);
    w.run(60);
    w.kill(2);
    w.run(100_000);
    let (vectors, members) = w.members[0].done.take().expect("job finished");
    assert_eq!(vectors, expected(&t));
    let dead = w.id(2);
    let p = members
        .iter()
        .find(|p| p.member == super::Member::Peer(dead))
        .unwrap();
    assert!(matches!(p.status, MemberStatus::Excluded(_)));
}

#[test]
fn local_workers_and_peers_share_one_job_and_a_dead_worker_loses_nothing() {
    let k = CircleKey::generate().unwrap();
    let mut w = World::new(&[k.clone(), k]);
    w.add_locals(0, 3);
    w.join_all();
    w.run(10_000);
    let t = texts(600);
    let now = w.now;
    w.members[0].node.start_job(t.clone(), now).unwrap();
    w.collect(0);
    w.run(40);
    // Local worker 1 dies mid-job, owing shards: they go to the others.
    w.members[0].local_done.remove(&1);
    let now = w.now;
    w.members[0].node.local_down(1, now);
    w.collect(0);
    w.run(100_000);
    let (vectors, members) = w.members[0].done.take().expect("job finished");
    assert_eq!(vectors, expected(&t));
    let find = |m: super::Member| members.iter().find(|p| p.member == m).unwrap();
    for worker in [0, 2] {
        let p = find(super::Member::Local(worker));
        assert!(
            p.shards_done > 0 && p.status == MemberStatus::Active,
            "{p:?}"
        );
    }
    assert!(matches!(
        find(super::Member::Local(1)).status,
        MemberStatus::Excluded(_)
    ));
    let peer = find(super::Member::Peer(w.id(1)));
    assert!(peer.shards_done > 0, "{peer:?}");
    // The self member is a fallback only: local workers and the peer did the work.
    let me = find(super::Member::Peer(w.id(0)));
    assert!(me.is_self && me.shards_done == 0, "{me:?}");
    assert_eq!(
        members.iter().map(|p| p.texts_done).sum::<u64>(),
        t.len() as u64
    );
    // Local shards never went through the worker queue; the peer's through its own.
    assert!(!w.members[0].computed_for.contains_key(&w.id(0)));
    assert!(w.members[1].computed_for[&w.id(0)] > 0);
    // A restarted worker joins the next job.
    w.members[0].local_done.insert(1, 0);
    let now = w.now;
    w.members[0].node.local_up(1, None, now);
    w.members[0].node.start_job(texts(200), now).unwrap();
    w.collect(0);
    w.run(100_000);
    let (vectors, _) = w.members[0].done.take().expect("second job finished");
    assert_eq!(vectors, expected(&texts(200)));
    assert!(w.members[0].local_done[&1] > 0);
}

#[test]
fn stalled_member_times_out_and_job_completes() {
    let k = CircleKey::generate().unwrap();
    let mut w = World::new(&[k.clone(), k]);
    w.members[1].stall = true;
    w.join_all();
    w.run(10_000);
    let t = texts(100);
    let now = w.now;
    w.members[0].node.start_job(t.clone(), now).unwrap();
    w.collect(0);
    for _ in 0..50 {
        w.run(100_000);
        if w.members[0].done.is_some() {
            break;
        }
        w.advance(10_000);
    }
    let (vectors, _) = w.members[0].done.take().expect("job finished");
    assert_eq!(vectors, expected(&t));
}

#[test]
fn wrong_circle_key_cannot_join_or_inject() {
    let k = CircleKey::generate().unwrap();
    let other = CircleKey::generate().unwrap();
    // Member 2 has another key but (say, via a malicious relay) sits in the same room.
    let mut w = World::new(&[k.clone(), k, other]);
    w.join_all();
    w.run(10_000);
    let intruder = w.id(2);
    assert_eq!(w.members[0].up, vec![w.id(1)]);
    assert_eq!(w.members[1].up, vec![w.id(0)]);
    assert!(w.members[2].up.is_empty());
    // Whoever received the intruder's offer (or sent one to it) rejected the seal.
    let rejected: usize = (0..3).map(|i| w.members[i].rejected.len()).sum();
    assert!(rejected > 0);
    assert!(
        w.members[0]
            .rejected
            .iter()
            .chain(&w.members[1].rejected)
            .count()
            + w.members[2].rejected.len()
            > 0
    );
    // Injected garbage signaling from the intruder is rejected too, and opens nothing.
    let now = w.now;
    w.members[0].node.on_signal(
        intruder,
        b"\x01garbage-payload-of-some-length-xxxxxxxxxxxxxxxxxxxx",
        now,
    );
    w.collect(0);
    assert!(
        w.members[0]
            .rejected
            .iter()
            .any(|r| r.contains("signaling"))
    );
    // And a job still runs on the two real members only.
    let t = texts(64);
    let now = w.now;
    w.members[0].node.start_job(t.clone(), now).unwrap();
    w.collect(0);
    w.run(100_000);
    let (vectors, members) = w.members[0].done.take().unwrap();
    assert_eq!(vectors, expected(&t));
    assert!(
        members
            .iter()
            .all(|p| p.member != super::Member::Peer(intruder))
    );
}

#[test]
fn replayed_offer_is_ignored_and_forged_record_drops_the_channel() {
    let k = CircleKey::generate().unwrap();
    let mut w = World::new(&[k.clone(), k]);
    w.join_all();
    w.run(10_000);
    assert_eq!(w.members[0].up.len(), 1);
    assert_eq!(w.members[1].up.len(), 1);
    // The lower id offered: replay every relayed payload to both sides.
    let frames = w.relay_frames.clone();
    let (a, b) = (w.id(0), w.id(1));
    for f in frames {
        let now = w.now;
        for (i, from) in [(0, b), (1, a)] {
            w.members[i].node.on_signal(from, &f, now);
            while let Some(o) = w.members[i].node.poll() {
                assert!(
                    !matches!(
                        o,
                        NodeOut::Net(NetOp::AcceptOffer { .. } | NetOp::ApplyAnswer { .. })
                    ),
                    "replay opened a connection: {o:?}"
                );
                if let NodeOut::Net(op) = o {
                    w.net(i, op);
                }
            }
        }
    }
    w.run(10_000);
    assert_eq!(w.members[0].up.len(), 1, "still up after the replay");
    // A forged record on the channel: rejected, channel dropped, later re-established.
    let (&(n, conn), _) = w.links.iter().next().unwrap();
    let mut forged = vec![1u8, 2];
    forged.extend_from_slice(&5u64.to_le_bytes());
    forged.extend_from_slice(&[0u8; 40]);
    w.queue.push_back((n, Input::Record(conn, forged)));
    w.run(10_000);
    assert!(w.members[n].rejected.iter().any(|r| r.contains("record")));
    w.advance(5_000);
    w.run(10_000);
    assert_eq!(w.members[0].up.len(), 1, "reconnected after the retry");
    assert_eq!(w.members[1].up.len(), 1);
}

#[test]
fn outbox_is_back_pressured_by_the_transport() {
    let k = CircleKey::generate().unwrap();
    let mut w = World::new(&[k.clone(), k]);
    w.join_all();
    w.run(10_000);
    let peer = w.id(1);
    w.hold_sends = true;
    let big = PeerMsg::ShardResult {
        job: crate::jobs::JobId([0; 16]),
        shard: 0,
        dim: 384,
        vectors: vec![0u8; 384 * 4 * 1000], // 1.5 MB → 24 records
    };
    // High water 4 MiB: 2 messages go out (≈3 MiB handed over), the rest wait.
    for _ in 0..6 {
        let now = w.now;
        w.members[0].node.send_to(&peer, &big, now).unwrap();
    }
    w.collect(0);
    let handed: usize = w
        .held
        .iter()
        .map(|(_, op)| match op {
            NetOp::Send { data, .. } => data.len(),
            _ => 0,
        })
        .sum();
    assert!(
        ((4 << 20)..(4 << 20) + 70_000).contains(&handed),
        "handed {handed}"
    );
    // The transport drains: the rest follows.
    let conn = match &w.held[0].1 {
        NetOp::Send { conn, .. } => *conn,
        _ => unreachable!(),
    };
    let now = w.now;
    w.members[0].node.on_buffered(conn, 0, now);
    w.collect(0);
    let handed2: usize = w
        .held
        .iter()
        .map(|(_, op)| match op {
            NetOp::Send { data, .. } => data.len(),
            _ => 0,
        })
        .sum();
    assert!(handed2 > handed);
    // A full outbox refuses.
    let mut refused = false;
    for _ in 0..40 {
        let now = w.now;
        if w.members[0].node.send_to(&peer, &big, now).is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "outbox is bounded");
    // Deliver everything in order: the peer opens every message.
    w.hold_sends = false;
    let held = std::mem::take(&mut w.held);
    for (i, op) in held {
        w.net(i, op);
    }
    w.run(100_000);
    assert!(
        w.members[1].rejected.is_empty(),
        "{:?}",
        w.members[1].rejected
    );
}

// ---- generation ----

fn gen_ask(prompt: &[u32], local_rate: f64) -> GenAsk {
    GenAsk {
        model: FAKE_MODEL,
        prompt: prompt.to_vec(),
        max_tokens: 64,
        sampling: "{}".into(),
        local_decode_tok_s: local_rate,
        prefer_remote: false,
    }
}

/// Member `i` asks for an answer to `prompt` (its own decode rate `local_rate`).
fn ask_answer(w: &mut World, i: usize, prompt: &[u32], local_rate: f64) {
    let now = w.now;
    w.members[i]
        .node
        .start_generation(gen_ask(prompt, local_rate), now)
        .unwrap();
    w.collect(i);
}

/// The finished answer of member `i`: tokens, finish, verified, spans.
type Answer = (
    Vec<u32>,
    GenFinish,
    Option<bool>,
    Vec<(usize, Option<PeerId>, u32)>,
);

fn finished(w: &World, i: usize) -> Option<Answer> {
    w.members[i].gen_events.iter().find_map(|e| match e {
        GenOut::Finished {
            tokens,
            finish,
            verified,
            spans,
            ..
        } => Some((tokens.clone(), *finish, *verified, spans.clone())),
        _ => None,
    })
}

/// The answer as the application rebuilt it from the stream (tokens, rewinds).
fn streamed(w: &World, i: usize) -> Vec<u32> {
    let mut a = Vec::new();
    for e in &w.members[i].gen_events {
        match e {
            GenOut::Tokens { start, tokens } => {
                assert_eq!(*start, a.len(), "the stream is continuous");
                a.extend_from_slice(tokens);
            }
            GenOut::Rewind { to } => a.truncate(*to),
            _ => {}
        }
    }
    a
}

fn connected(n: usize) -> World {
    let k = CircleKey::generate().unwrap();
    let mut w = World::new(&vec![k; n]);
    w.join_all();
    w.run(10_000);
    for i in 0..n {
        assert_eq!(w.members[i].up.len(), n - 1);
    }
    w
}

/// Run one input at a time until `cond` holds.
fn run_until(w: &mut World, max: usize, cond: impl Fn(&World) -> bool) {
    for _ in 0..max {
        if cond(w) {
            return;
        }
        let Some((i, input)) = w.queue.pop_front() else {
            return;
        };
        w.now += 1;
        w.feed(i, input);
    }
}

#[test]
fn an_answer_is_served_by_a_member_verified_and_receipted() {
    let mut w = connected(3);
    let prompt = vec![11, 12, 13, 14];
    ask_answer(&mut w, 0, &prompt, 1.0);
    w.run(100_000);
    let (tokens, finish, verified, spans) = finished(&w, 0).expect("answer finished");
    assert_eq!(tokens, fake_answer(&prompt));
    assert_eq!(streamed(&w, 0), tokens);
    assert_eq!(finish, GenFinish::Stop);
    assert_eq!(verified, Some(true));
    assert_eq!(spans.len(), 1);
    let server = spans[0].1.expect("a member served");
    let s = w.index(&server).unwrap();
    assert_eq!(
        w.members[s].node.gen_counters().tokens_served,
        tokens.len() as u64
    );
    assert!(
        w.members[0]
            .gen_events
            .iter()
            .any(|e| matches!(e, GenOut::Serving { by: Some(p), .. } if *p == server))
    );
    // One receipt: worker-signed, countersigned, committing to the prompt and the answer.
    let r = &w.members[0].receipts;
    assert_eq!(r.len(), 1, "{:?}", w.members[0].rejected);
    r[0].verify().unwrap();
    assert_eq!(r[0].body.worker, server.0);
    assert!(w.members[0].misbehaviour.is_empty());
    // Faster here: this device answers itself, nothing to verify.
    ask_answer(&mut w, 1, &prompt, 1000.0);
    w.run(100_000);
    let (tokens, _, verified, spans) = finished(&w, 1).unwrap();
    assert_eq!(tokens, fake_answer(&prompt));
    assert_eq!((verified, spans[0].1), (None, None));
}

#[test]
fn a_member_killed_mid_answer_is_replaced_without_losing_a_token() {
    let mut w = connected(3);
    let prompt = vec![5, 6, 7];
    ask_answer(&mut w, 0, &prompt, 1.0);
    // Let the server stream a few tokens, then kill it.
    run_until(&mut w, 100_000, |w| {
        (1..3).any(|i| w.members[i].node.gen_counters().tokens_served >= 6)
    });
    let server = (1..3)
        .find(|&i| w.members[i].node.gen_counters().tokens_served >= 6)
        .unwrap();
    w.kill(server);
    w.run(100_000);
    let (tokens, finish, verified, spans) = finished(&w, 0).expect("answer finished");
    assert_eq!(
        tokens,
        fake_answer(&prompt),
        "continuous, nothing lost or doubled"
    );
    assert_eq!(streamed(&w, 0), tokens);
    assert_eq!((finish, verified), (GenFinish::Stop, Some(true)));
    assert!(spans.len() >= 2, "{spans:?}");
    assert_eq!(spans[0].1, Some(w.id(server)));
    assert_ne!(spans[1].1, Some(w.id(server)));
    // The dead member gets no receipt (it never ended its stream); the other one does.
    let other = 3 - server;
    let r = &w.members[0].receipts;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].body.worker, w.id(other).0);
}

#[test]
fn a_tampering_member_is_caught_excluded_and_recorded() {
    let mut w = connected(3);
    w.members[1].tamper = true;
    w.members[2].tamper = true;
    let prompt = vec![21, 22];
    ask_answer(&mut w, 0, &prompt, 1.0);
    w.run(200_000);
    let (tokens, _, verified, spans) = finished(&w, 0).expect("answer finished");
    assert_eq!(tokens, fake_answer(&prompt));
    assert_eq!(streamed(&w, 0), tokens);
    assert_eq!(verified, Some(true));
    // Both tampered at position 5; the tokens before it stayed; this device finished.
    assert_eq!(spans.last().unwrap().1, None);
    let excluded: Vec<_> = w.members[0]
        .gen_events
        .iter()
        .filter_map(|e| match e {
            GenOut::Excluded { peer, why } => Some((*peer, why.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(excluded.len(), 2, "{excluded:?}");
    for (_, why) in &excluded {
        assert_eq!(*why, crate::jobs::GenExclusion::Rejected { position: 5 });
    }
    // A signed record per tamperer binds its own signature; no receipt for either.
    let m = &w.members[0].misbehaviour;
    assert_eq!(m.len(), 2);
    for r in m {
        r.verify().unwrap();
        assert_eq!(r.position, 5);
        assert!(r.body.worker == w.id(1).0 || r.body.worker == w.id(2).0);
    }
    assert!(w.members[0].receipts.is_empty());
}

#[test]
fn stop_ends_the_remote_generation() {
    let mut w = connected(2);
    let prompt = vec![1, 2, 3];
    ask_answer(&mut w, 0, &prompt, 1.0);
    run_until(&mut w, 100_000, |w| {
        w.members[1].node.gen_counters().tokens_served >= 4
    });
    let now = w.now;
    w.members[0].node.cancel_generation(now);
    w.collect(0);
    w.run(100_000);
    let served = w.members[1].node.gen_counters().tokens_served;
    assert!(served < FAKE_LEN as u64 - 4, "served {served}");
    let (tokens, finish, verified, _) = finished(&w, 0).expect("answer finished");
    assert_eq!(finish, GenFinish::Cancelled);
    assert_eq!(verified, Some(true));
    assert_eq!(tokens[..], fake_answer(&prompt)[..tokens.len()]);
    assert_eq!(tokens.len() as u64, served);
}
