//! The job engine against simulated members: fast, slow, dying, stalling, erring and lying.
//! Every run that completes must equal local computation exactly.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use blake2::Blake2b;
use blake2::digest::{Digest, consts::U32};
use proptest::prelude::*;
use shoal_mesh::jobs::msg::{MAX_MSG_LEN, f32s_to_le};
use shoal_mesh::jobs::{
    Accepted, Action, Exclusion, Job, JobConfig, JobError, JobId, MemberStatus, MsgError, PeerMsg,
    Worker,
};

const DIM: usize = 8;

/// The fake deterministic embedder.
fn embed(text: &str) -> Vec<f32> {
    let h = Blake2b::<U32>::digest(text.as_bytes());
    (0..DIM)
        .map(|i| f32::from(u16::from_le_bytes([h[2 * i], h[2 * i + 1]])) / 65535.0 - 0.5)
        .collect()
}

fn texts(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("sentence number {i}")).collect()
}

#[derive(Clone, Copy, Debug)]
enum Behave {
    Good { ms_per_text: u64 },
    DieAfter { ms_per_text: u64, shards: u32 },
    Stall,
    Errs,
    WrongDim,
    NonFinite,
    WrongCount,
    Late { ms_per_text: u64 },
}

#[derive(Debug)]
enum Ev {
    Msg(PeerMsg),
    Leave,
}

struct Outcome {
    result: Result<Vec<Vec<f32>>, JobError>,
    progress: Vec<shoal_mesh::jobs::Progress<usize>>,
    assigned: Vec<u32>,
    events: usize,
}

fn cfg(shard_texts: usize) -> JobConfig {
    JobConfig {
        shard_texts,
        max_in_flight: 2,
        dim: DIM,
        min_deadline_ms: 500,
        deadline_factor: 3.0,
        max_timeouts: 2,
        default_rate: 50.0,
        ewma_alpha: 0.3,
    }
}

/// Member 0 is the requester (self), always good at `self_ms` per text.
fn simulate(
    n: usize,
    cfg: JobConfig,
    self_ms: u64,
    members: &[(Behave, Option<f64>)],
    cancel_at: Option<u64>,
) -> Outcome {
    let texts = texts(n);
    let mut job = Job::new(JobId([7; 16]), texts, cfg, 0usize, 1000.0 / self_ms as f64).unwrap();
    for (i, (_, rate)) in members.iter().enumerate() {
        job.add_member(i + 1, *rate, 0).unwrap();
    }
    job.start(0);
    let mut heap: BinaryHeap<Reverse<(u64, u64, usize)>> = BinaryHeap::new();
    let mut payloads: std::collections::HashMap<u64, Ev> = Default::default();
    let mut seq = 0u64;
    let mut done_by = vec![0u32; members.len() + 1];
    let mut dead = vec![false; members.len() + 1];
    let mut assigned = vec![0u32; members.len() + 1];
    let mut now = 0u64;
    let mut progress = Vec::new();
    let mut events = 0usize;
    let mut cancelled = false;
    loop {
        let mut finished = None;
        while let Some(a) = job.poll_action() {
            match a {
                Action::Assign { to, is_self, msg } => {
                    assert_eq!(is_self, to == 0);
                    assigned[to] += 1;
                    let PeerMsg::ShardRequest {
                        job: jid,
                        shard,
                        texts,
                    } = msg
                    else {
                        panic!("assign without a request")
                    };
                    if dead[to] {
                        continue;
                    }
                    let b = if to == 0 {
                        Behave::Good {
                            ms_per_text: self_ms,
                        }
                    } else {
                        members[to - 1].0
                    };
                    let good = |texts: &[String]| {
                        texts.iter().flat_map(|t| embed(t)).collect::<Vec<f32>>()
                    };
                    let result = |vectors: Vec<f32>, dim: u32| PeerMsg::ShardResult {
                        job: jid,
                        shard,
                        dim,
                        vectors: f32s_to_le(&vectors),
                    };
                    let t = texts.len() as u64;
                    let (at, ev) = match b {
                        Behave::Good { ms_per_text } => (
                            now + ms_per_text * t + 1,
                            Ev::Msg(result(good(&texts), DIM as u32)),
                        ),
                        Behave::Late { ms_per_text } => (
                            now + 5_000 + ms_per_text * t,
                            Ev::Msg(result(good(&texts), DIM as u32)),
                        ),
                        Behave::DieAfter {
                            ms_per_text,
                            shards,
                        } => {
                            done_by[to] += 1;
                            if done_by[to] > shards {
                                dead[to] = true;
                                (now + 3, Ev::Leave)
                            } else {
                                (
                                    now + ms_per_text * t + 1,
                                    Ev::Msg(result(good(&texts), DIM as u32)),
                                )
                            }
                        }
                        Behave::Stall => continue,
                        Behave::Errs => (
                            now + 2,
                            Ev::Msg(PeerMsg::ShardError {
                                job: jid,
                                shard,
                                reason: "model exploded".into(),
                            }),
                        ),
                        Behave::WrongDim => {
                            (now + 2, Ev::Msg(result(vec![0.5; 3 * texts.len()], 3)))
                        }
                        Behave::NonFinite => {
                            let mut v = good(&texts);
                            if let Some(x) = v.last_mut() {
                                *x = f32::NAN;
                            }
                            (now + 2, Ev::Msg(result(v, DIM as u32)))
                        }
                        Behave::WrongCount => {
                            let mut v = good(&texts);
                            v.truncate(v.len().saturating_sub(DIM));
                            (now + 2, Ev::Msg(result(v, DIM as u32)))
                        }
                    };
                    seq += 1;
                    heap.push(Reverse((at, seq, to)));
                    payloads.insert(seq, ev);
                }
                Action::Cancel { .. } => {}
                Action::Progress(p) => progress.push(p),
                Action::Finished => finished = Some(Ok(())),
                Action::Failed(e) => finished = Some(Err(e)),
            }
        }
        if let Some(f) = finished {
            let result = match f {
                Ok(()) => Ok(job.take_output().expect("finished job has output")),
                Err(e) => Err(e),
            };
            return Outcome {
                result,
                progress: job.progress(),
                assigned,
                events,
            };
        }
        let _ = &progress;
        let next_ev = heap.peek().map(|Reverse((t, _, _))| *t);
        let next_dl = job.next_deadline();
        let cancel_due = cancel_at.filter(|_| !cancelled);
        let t = [next_ev, next_dl, cancel_due]
            .into_iter()
            .flatten()
            .min()
            .expect("job stuck: no event, deadline or cancel pending");
        now = now.max(t);
        events += 1;
        assert!(events < 1_000_000, "runaway simulation");
        if cancel_due.is_some_and(|c| c <= now) {
            cancelled = true;
            job.cancel(now);
            continue;
        }
        if next_ev.is_some_and(|e| e <= now) {
            let Some(Reverse((_, s, from))) = heap.pop() else {
                unreachable!()
            };
            match payloads.remove(&s) {
                Some(Ev::Msg(m)) => {
                    // Through the wire format, as a real channel would.
                    let m = PeerMsg::decode(&m.encode().unwrap()).unwrap();
                    let _ = job.on_message(&from, m, now);
                }
                Some(Ev::Leave) => job.member_left(&from, now),
                None => {}
            }
        }
        job.tick(now);
    }
}

fn local(n: usize) -> Vec<Vec<f32>> {
    texts(n).iter().map(|t| embed(t)).collect()
}

#[test]
fn shares_follow_capacity_and_results_match_local() {
    let members = [
        (Behave::Good { ms_per_text: 2 }, Some(500.0)),
        (Behave::Good { ms_per_text: 20 }, Some(50.0)),
    ];
    let out = simulate(2000, cfg(16), 8, &members, None);
    assert_eq!(out.result.unwrap(), local(2000));
    let done: Vec<u32> = out.progress.iter().map(|p| p.shards_done).collect();
    // fast (500/s) > self (125/s) > slow (50/s); everyone did some.
    assert!(
        done[1] > done[0] && done[0] > done[2] && done[2] > 0,
        "{done:?}"
    );
    let fast_share = done[1] as f64 / done.iter().sum::<u32>() as f64;
    assert!((0.6..0.85).contains(&fast_share), "{done:?}");
    assert!(
        out.progress
            .iter()
            .all(|p| p.status == MemberStatus::Active)
    );
}

#[test]
fn uncalibrated_members_get_measured() {
    let members = [(Behave::Good { ms_per_text: 1 }, None)];
    let out = simulate(1000, cfg(10), 10, &members, None);
    assert_eq!(out.result.unwrap(), local(1000));
    assert!(
        out.progress[1].rate > 200.0,
        "EWMA learned the rate: {}",
        out.progress[1].rate
    );
    assert!(out.progress[1].shards_done > out.progress[0].shards_done);
}

#[test]
fn failures_are_reassigned_and_liars_excluded() {
    let members = [
        (
            Behave::DieAfter {
                ms_per_text: 2,
                shards: 3,
            },
            Some(500.0),
        ),
        (Behave::Stall, Some(500.0)),
        (Behave::Errs, Some(500.0)),
        (Behave::WrongDim, Some(500.0)),
        (Behave::NonFinite, Some(500.0)),
        (Behave::WrongCount, Some(500.0)),
        (Behave::Late { ms_per_text: 1 }, Some(500.0)),
        (Behave::Good { ms_per_text: 4 }, Some(250.0)),
    ];
    let out = simulate(600, cfg(8), 10, &members, None);
    assert_eq!(out.result.unwrap(), local(600));
    let st: Vec<&MemberStatus> = out.progress.iter().map(|p| &p.status).collect();
    assert_eq!(st[0], &MemberStatus::Active);
    assert_eq!(st[1], &MemberStatus::Excluded(Exclusion::Left));
    assert_eq!(st[2], &MemberStatus::Excluded(Exclusion::Stalled));
    assert!(matches!(
        st[3],
        MemberStatus::Excluded(Exclusion::Errored(_))
    ));
    assert_eq!(
        st[4],
        &MemberStatus::Excluded(Exclusion::Malformed("wrong dimension"))
    );
    assert_eq!(
        st[5],
        &MemberStatus::Excluded(Exclusion::Malformed("non-finite value"))
    );
    assert_eq!(
        st[6],
        &MemberStatus::Excluded(Exclusion::Malformed("wrong vector count"))
    );
    assert_eq!(st[8], &MemberStatus::Active);
    assert!(out.progress[8].shards_done > 0);
}

#[test]
fn everyone_fails_requester_does_it_all() {
    let members = [
        (Behave::Stall, Some(10_000.0)),
        (Behave::Errs, Some(10_000.0)),
        (Behave::NonFinite, Some(10_000.0)),
    ];
    let out = simulate(100, cfg(5), 3, &members, None);
    assert_eq!(out.result.unwrap(), local(100));
    assert_eq!(out.progress[0].shards_done, 20);
}

#[test]
fn cancellation_stops_the_job() {
    let members = [(Behave::Good { ms_per_text: 5 }, Some(200.0))];
    let out = simulate(1000, cfg(10), 5, &members, Some(100));
    assert_eq!(out.result.unwrap_err(), JobError::Cancelled);
    assert!(out.assigned.iter().sum::<u32>() < 100);
    assert!(out.events < 100);
}

#[test]
fn empty_job_and_bad_config() {
    let mut job = Job::new(JobId([0; 16]), Vec::new(), cfg(4), 0u8, 10.0).unwrap();
    assert_eq!(job.poll_action(), Some(Action::Finished));
    assert_eq!(job.take_output(), Some(Vec::new()));
    let mut c = cfg(0);
    assert!(Job::new(JobId([0; 16]), texts(3), c.clone(), 0u8, 1.0).is_err());
    c.shard_texts = 4;
    c.max_in_flight = 0;
    assert!(Job::new(JobId([0; 16]), texts(3), c, 0u8, 1.0).is_err());
    let mut job = Job::new(JobId([0; 16]), texts(3), cfg(4), 0u8, 1.0).unwrap();
    assert_eq!(job.add_member(0, None, 0), Err(JobError::DuplicateMember));
    for i in 1..64u8 {
        job.add_member(i, None, 0).unwrap();
    }
    assert_eq!(job.add_member(200, None, 0), Err(JobError::TooManyMembers));
    // Messages for another job or from strangers are refused.
    let other = PeerMsg::ShardResult {
        job: JobId([1; 16]),
        shard: 0,
        dim: DIM as u32,
        vectors: Vec::new(),
    };
    assert_eq!(
        job.on_message(&1, other.clone(), 0),
        Err(JobError::NotForThisJob)
    );
    assert_eq!(job.on_message(&250, other, 0), Err(JobError::NotForThisJob));
}

#[test]
fn peer_messages_roundtrip_and_limits() {
    let msgs = vec![
        PeerMsg::Hello(shoal_mesh::jobs::Capabilities {
            name: "tab".into(),
            backend: "webgpu".into(),
            texts_per_sec: 120.5,
            chat: vec![shoal_mesh::jobs::ChatModelCap {
                model: [3; 32],
                prefill_tok_s: 900.0,
                decode_tok_s: 80.0,
            }],
        }),
        PeerMsg::ShardRequest {
            job: JobId([1; 16]),
            shard: 3,
            texts: texts(5),
        },
        PeerMsg::ShardResult {
            job: JobId([1; 16]),
            shard: 3,
            dim: 4,
            vectors: f32s_to_le(&[1.0; 8]),
        },
        PeerMsg::ShardError {
            job: JobId([1; 16]),
            shard: 3,
            reason: "busy".into(),
        },
        PeerMsg::Cancel {
            job: JobId([1; 16]),
            shard: None,
        },
        PeerMsg::GenRequest {
            job: JobId([2; 16]),
            attempt: 1,
            model: [4; 32],
            prompt: vec![1, 2, 3],
            prefix: vec![9],
            max_tokens: 64,
            sampling: "{\"temperature\":0.0}".into(),
        },
        PeerMsg::GenTokens {
            job: JobId([2; 16]),
            attempt: 1,
            start: 1,
            tokens: vec![7, 8],
        },
        PeerMsg::GenDone {
            job: JobId([2; 16]),
            attempt: 1,
            end: 3,
            finish: shoal_mesh::jobs::GenFinish::Stop,
        },
        PeerMsg::GenError {
            job: JobId([2; 16]),
            attempt: 1,
            reason: "busy".into(),
        },
    ];
    for m in msgs {
        let b = m.encode().unwrap();
        assert_eq!(b[0], 1);
        assert_eq!(PeerMsg::decode(&b).unwrap(), m);
        let mut v2 = b.clone();
        v2[0] = 2;
        assert_eq!(
            PeerMsg::decode(&v2),
            Err(MsgError::UnsupportedVersion { got: 2 })
        );
        for n in 0..b.len() {
            assert!(PeerMsg::decode(&b[..n]).is_err() || n == b.len());
        }
    }
    assert_eq!(PeerMsg::decode(&[]), Err(MsgError::Empty));
    assert!(matches!(
        PeerMsg::decode(&vec![1u8; MAX_MSG_LEN + 1]),
        Err(MsgError::TooLong(_))
    ));
    let too_many = PeerMsg::ShardRequest {
        job: JobId([0; 16]),
        shard: 0,
        texts: texts(1025),
    };
    assert!(matches!(too_many.encode(), Err(MsgError::Limit(_))));
    let long = PeerMsg::ShardRequest {
        job: JobId([0; 16]),
        shard: 0,
        texts: vec!["x".repeat(16 * 1024 + 1)],
    };
    assert!(matches!(long.encode(), Err(MsgError::Limit(_))));
    let ragged = PeerMsg::ShardResult {
        job: JobId([0; 16]),
        shard: 0,
        dim: 4,
        vectors: vec![0; 15],
    };
    assert!(matches!(ragged.encode(), Err(MsgError::Limit(_))));
    let gen_req = |prompt: Vec<u32>, prefix: Vec<u32>, max_tokens: u32, sampling: String| {
        PeerMsg::GenRequest {
            job: JobId([0; 16]),
            attempt: 0,
            model: [0; 32],
            prompt,
            prefix,
            max_tokens,
            sampling,
        }
    };
    for bad in [
        gen_req(vec![], vec![], 8, String::new()),
        gen_req(vec![1], vec![2; 9], 8, String::new()),
        gen_req(vec![1; 32 * 1024], vec![2], 64, String::new()),
        gen_req(vec![1], vec![], 8, "x".repeat(1025)),
    ] {
        assert!(matches!(bad.encode(), Err(MsgError::Limit(_))), "{bad:?}");
    }
    let too_many_tokens = PeerMsg::GenTokens {
        job: JobId([0; 16]),
        attempt: 0,
        start: 0,
        tokens: vec![1; 4097],
    };
    assert!(matches!(too_many_tokens.encode(), Err(MsgError::Limit(_))));
    let far = PeerMsg::GenTokens {
        job: JobId([0; 16]),
        attempt: 0,
        start: u32::MAX,
        tokens: vec![1],
    };
    assert!(matches!(far.encode(), Err(MsgError::Limit(_))));
    // A postcard length prefix claiming a huge vector does not allocate it: just fails.
    let mut evil = vec![1u8, 1];
    evil.extend_from_slice(&[0u8; 16]);
    evil.extend_from_slice(&[0, 0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(PeerMsg::decode(&evil).is_err());
}

#[test]
fn worker_queue_is_bounded_and_cancellable() {
    let mut w: Worker<u8> = Worker::new(2, 1);
    let req = |shard| PeerMsg::ShardRequest {
        job: JobId([3; 16]),
        shard,
        texts: texts(2),
    };
    assert_eq!(w.on_message(1, req(0)), Accepted::Queued);
    assert_eq!(w.on_message(1, req(1)), Accepted::Queued);
    assert!(matches!(
        w.on_message(1, req(2)),
        Accepted::Reply(PeerMsg::ShardError { .. })
    ));
    let t0 = w.next_task().unwrap();
    assert!(w.next_task().is_none(), "one running at most");
    let vecs: Vec<f32> = t0.texts.iter().flat_map(|t| embed(t)).collect();
    let (to, reply) = w.complete(&t0, Ok((vecs, DIM as u32))).unwrap();
    assert_eq!(to, 1);
    assert!(matches!(reply, PeerMsg::ShardResult { shard: 0, .. }));
    let t1 = w.next_task().unwrap();
    // Another requester's cancel does nothing; the owner's cancel drops the running result.
    assert_eq!(
        w.on_message(
            2,
            PeerMsg::Cancel {
                job: JobId([3; 16]),
                shard: None
            }
        ),
        Accepted::Cancelled(0)
    );
    assert_eq!(
        w.on_message(
            1,
            PeerMsg::Cancel {
                job: JobId([3; 16]),
                shard: None
            }
        ),
        Accepted::Cancelled(1)
    );
    assert_eq!(w.complete(&t1, Err("x".repeat(1000))), None);
    assert_eq!(w.queued(), 0);
}

fn behave() -> impl Strategy<Value = Behave> {
    prop_oneof![
        (1u64..30).prop_map(|ms_per_text| Behave::Good { ms_per_text }),
        (1u64..30, 0u32..5).prop_map(|(ms_per_text, shards)| Behave::DieAfter {
            ms_per_text,
            shards
        }),
        Just(Behave::Stall),
        Just(Behave::Errs),
        Just(Behave::WrongDim),
        Just(Behave::NonFinite),
        Just(Behave::WrongCount),
        (1u64..10).prop_map(|ms_per_text| Behave::Late { ms_per_text }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary bytes after a valid version byte (and mutations of valid generation messages)
    /// never panic the decoder; whatever decodes re-validates and re-encodes to a message that
    /// decodes to itself.
    #[test]
    fn peer_message_decoding_survives_garbage(
        body in proptest::collection::vec(any::<u8>(), 0..256),
        flip in any::<(usize, u8)>(),
    ) {
        let mut b = vec![1u8];
        b.extend_from_slice(&body);
        if let Ok(m) = PeerMsg::decode(&b) {
            let again = m.encode().unwrap();
            prop_assert_eq!(PeerMsg::decode(&again).unwrap(), m);
        }
        let mut g = PeerMsg::GenTokens {
            job: JobId([5; 16]),
            attempt: 2,
            start: 3,
            tokens: vec![1, 2, 3],
        }
        .encode()
        .unwrap();
        let i = flip.0 % g.len();
        g[i] ^= flip.1;
        let _ = PeerMsg::decode(&g);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Any mix of member failures still completes, with results identical to local computation.
    #[test]
    fn any_failures_still_complete_identically(
        n in 0usize..300,
        shard in 1usize..40,
        in_flight in 1usize..4,
        self_ms in 1u64..20,
        members in proptest::collection::vec((behave(), proptest::option::of(1.0f64..2000.0)), 0..7),
    ) {
        let mut c = cfg(shard);
        c.max_in_flight = in_flight;
        let out = simulate(n, c, self_ms, &members, None);
        prop_assert_eq!(out.result.unwrap(), local(n));
        prop_assert_eq!(out.progress[0].status.clone(), MemberStatus::Active);
    }
}

/// Floats from an in-process member (`on_vectors`) are checked like bytes from a peer: the
/// right count and finite values are accepted, anything else excludes the member and its
/// shard goes to another; the self member's floats finish the job.
#[test]
fn in_process_floats_are_checked_like_peer_bytes() {
    let t = texts(20);
    let mut job = Job::new(JobId([9; 16]), t.clone(), cfg(5), 0usize, 1e-3).unwrap();
    job.add_member(1, Some(100.0), 0).unwrap();
    job.add_member(2, Some(100.0), 0).unwrap();
    job.start(0);
    let mut now = 0;
    let mut liar_excluded = false;
    while job.is_running() && now < 10_000 {
        now += 1;
        let Some(a) = job.poll_action() else {
            job.tick(now);
            continue;
        };
        if let Action::Assign {
            to,
            msg: PeerMsg::ShardRequest { shard, texts, .. },
            ..
        } = a
        {
            let mut v: Vec<f32> = texts.iter().flat_map(|s| embed(s)).collect();
            if to == 2 {
                v.pop(); // member 2 returns one float short
            }
            job.on_vectors(&to, shard, v, now).unwrap();
        }
        if job.progress().iter().any(|p| {
            p.member == 2
                && p.status == MemberStatus::Excluded(Exclusion::Malformed("wrong vector count"))
        }) {
            liar_excluded = true;
        }
    }
    assert!(liar_excluded, "the short member is excluded");
    let out = job.take_output().expect("finished");
    assert_eq!(out, t.iter().map(|s| embed(s)).collect::<Vec<_>>());
    assert_eq!(
        job.on_vectors(&7, 0, vec![0.0; DIM], now),
        Err(JobError::NotForThisJob),
        "not a member"
    );
}
