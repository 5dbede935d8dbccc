//! The requester's side: one job, sharded across members by measured capacity.
//!
//! Sans-IO and clock-free: every input carries `now_ms` (any monotonic milliseconds), outputs
//! come out of [`Job::poll_action`]. The driver (browser tab or native node) sends
//! [`Action::Assign`] over the member's sealed channel — or runs it locally when the member is
//! itself — feeds replies to [`Job::on_message`], departures to [`Job::member_left`], and calls
//! [`Job::tick`] when [`Job::next_deadline`] passes.
//!
//! Invariants:
//! - the requester ("self", added by [`Job::new`]) is never excluded and has no deadline, so the
//!   job finishes as long as the driver keeps running the self member's shards;
//! - a shard's result is accepted once, from a member it was assigned to (late results from a
//!   timed-out member are still accepted if nobody finished the shard first), and only if it has
//!   exactly `texts × dim` finite values;
//! - a member that errs or returns a malformed result is excluded from the job, one that misses
//!   `max_timeouts` deadlines too; its shards go back to the front of the queue;
//! - at most `max_in_flight` shards per member, at most [`MAX_MEMBERS`] members, and the outbox
//!   holds at most one action per in-flight slot plus one cancel per member.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Debug;

use super::msg::{JobId, MAX_TEXTS_PER_SHARD, PeerMsg, le_to_f32s};

/// Most members in one job (self included).
pub const MAX_MEMBERS: usize = 64;

/// Tunables of a job.
#[derive(Clone, Debug)]
pub struct JobConfig {
    /// Texts per shard.
    pub shard_texts: usize,
    /// Shards in flight per member.
    pub max_in_flight: usize,
    /// Expected vector dimension.
    pub dim: usize,
    /// Minimum deadline for a shard (ms).
    pub min_deadline_ms: u64,
    /// Deadline = max(min, factor × expected duration at the member's rate).
    pub deadline_factor: f64,
    /// Missed deadlines before a member is excluded.
    pub max_timeouts: u32,
    /// Rate assumed for a member without calibration (texts/s).
    pub default_rate: f64,
    /// EWMA weight of a new observation.
    pub ewma_alpha: f64,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            shard_texts: 32,
            max_in_flight: 2,
            dim: shoal_proto::EMBEDDING_DIM,
            min_deadline_ms: 5_000,
            deadline_factor: 4.0,
            max_timeouts: 2,
            default_rate: 10.0,
            ewma_alpha: 0.3,
        }
    }
}

/// Errors from the job engine.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobError {
    /// A config value out of range.
    #[error("invalid job config: {0}")]
    Config(&'static str),
    /// Already [`MAX_MEMBERS`] members.
    #[error("too many members")]
    TooManyMembers,
    /// The member is already in the job.
    #[error("member already in the job")]
    DuplicateMember,
    /// The message is not for this job, or not one a requester expects.
    #[error("message not for this job")]
    NotForThisJob,
    /// The requester's own computation failed: the job cannot finish.
    #[error("local computation failed: {0}")]
    LocalFailed(String),
    /// The job was cancelled.
    #[error("job cancelled")]
    Cancelled,
}

/// Why a member stopped taking part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exclusion {
    /// It left (channel closed).
    Left,
    /// It missed too many deadlines.
    Stalled,
    /// It reported an error.
    Errored(String),
    /// It returned a malformed result.
    Malformed(&'static str),
}

/// A member's state in the live view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberStatus {
    /// Working or ready.
    Active,
    /// No longer used in this job.
    Excluded(Exclusion),
}

/// A live progress snapshot of one member.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress<M> {
    /// The member.
    pub member: M,
    /// Whether it is the requester itself.
    pub is_self: bool,
    /// State.
    pub status: MemberStatus,
    /// Shards it completed in this job.
    pub shards_done: u32,
    /// Texts it completed in this job.
    pub texts_done: u64,
    /// Shards in flight now.
    pub in_flight: usize,
    /// Current capacity estimate (texts/s).
    pub rate: f64,
    /// Job-wide texts done so far.
    pub job_texts_done: u64,
    /// Job-wide total.
    pub job_texts_total: u64,
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action<M> {
    /// Send `msg` (a `ShardRequest`) to `to`, or run it locally when `is_self`.
    Assign {
        /// The member.
        to: M,
        /// Whether `to` is the requester itself.
        is_self: bool,
        /// The request.
        msg: PeerMsg,
    },
    /// Send `msg` (a `Cancel`) to `to` (or stop local work when `is_self`).
    Cancel {
        /// The member.
        to: M,
        /// Whether `to` is the requester itself.
        is_self: bool,
        /// The cancel message.
        msg: PeerMsg,
    },
    /// A member's progress changed.
    Progress(Progress<M>),
    /// Every shard is done: call [`Job::take_output`].
    Finished,
    /// The job stopped without a result.
    Failed(JobError),
}

#[derive(Clone, Debug)]
struct Assignment {
    sent_ms: u64,
    deadline_ms: Option<u64>,
}

#[derive(Debug)]
struct Member<M> {
    id: M,
    is_self: bool,
    rate: f64,
    in_flight: BTreeMap<u32, Assignment>,
    /// Shards taken away after a missed deadline whose late result is still welcome.
    late: BTreeMap<u32, u64>,
    timeouts: u32,
    shards_done: u32,
    texts_done: u64,
    excluded: Option<Exclusion>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobState {
    Running,
    Finished,
    Stopped,
}

/// One job on the requester's side.
#[derive(Debug)]
pub struct Job<M> {
    id: JobId,
    cfg: JobConfig,
    texts: Vec<String>,
    shards: Vec<(usize, usize)>,
    results: Vec<Option<Vec<f32>>>,
    pending: VecDeque<u32>,
    members: Vec<Member<M>>,
    outbox: VecDeque<Action<M>>,
    dirty: BTreeSet<usize>,
    texts_done: u64,
    state: JobState,
}

impl<M: Clone + Eq + Debug> Job<M> {
    /// A job over `texts`, with the requester `self_id` as its first member at `self_rate`
    /// texts/s (from calibration).
    pub fn new(
        id: JobId,
        texts: Vec<String>,
        cfg: JobConfig,
        self_id: M,
        self_rate: f64,
    ) -> Result<Self, JobError> {
        if cfg.shard_texts == 0 || cfg.shard_texts > MAX_TEXTS_PER_SHARD {
            return Err(JobError::Config("shard_texts"));
        }
        if cfg.max_in_flight == 0 || cfg.max_in_flight > 64 {
            return Err(JobError::Config("max_in_flight"));
        }
        if cfg.dim == 0 || cfg.dim > super::msg::MAX_DIM {
            return Err(JobError::Config("dim"));
        }
        if !(cfg.default_rate.is_finite() && cfg.default_rate > 0.0) {
            return Err(JobError::Config("default_rate"));
        }
        if !(cfg.ewma_alpha > 0.0 && cfg.ewma_alpha <= 1.0) {
            return Err(JobError::Config("ewma_alpha"));
        }
        let n = texts.len();
        let shards: Vec<(usize, usize)> = (0..n)
            .step_by(cfg.shard_texts)
            .map(|s| (s, (s + cfg.shard_texts).min(n)))
            .collect();
        let shard_count =
            u32::try_from(shards.len()).map_err(|_| JobError::Config("too many texts"))?;
        let mut job = Job {
            id,
            results: vec![None; shards.len()],
            pending: (0..shard_count).collect(),
            shards,
            texts,
            members: Vec::new(),
            outbox: VecDeque::new(),
            dirty: BTreeSet::new(),
            texts_done: 0,
            state: JobState::Running,
            cfg,
        };
        job.push_member(self_id, true, Some(self_rate));
        if job.shards.is_empty() {
            job.state = JobState::Finished;
            job.outbox.push_back(Action::Finished);
        }
        Ok(job)
    }

    fn push_member(&mut self, id: M, is_self: bool, rate: Option<f64>) {
        let rate = rate
            .filter(|r| r.is_finite() && *r > 0.0)
            .unwrap_or(self.cfg.default_rate);
        self.members.push(Member {
            id,
            is_self,
            rate,
            in_flight: BTreeMap::new(),
            late: BTreeMap::new(),
            timeouts: 0,
            shards_done: 0,
            texts_done: 0,
            excluded: None,
        });
        self.dirty.insert(self.members.len() - 1);
    }

    /// The job id.
    pub fn id(&self) -> JobId {
        self.id
    }

    /// Add a remote member with its capacity estimate (texts/s; `None` → the default).
    pub fn add_member(&mut self, id: M, rate: Option<f64>, now_ms: u64) -> Result<(), JobError> {
        if self.members.iter().any(|m| m.id == id) {
            return Err(JobError::DuplicateMember);
        }
        if self.members.len() >= MAX_MEMBERS {
            return Err(JobError::TooManyMembers);
        }
        self.push_member(id, false, rate);
        self.schedule(now_ms);
        Ok(())
    }

    fn index(&self, id: &M) -> Option<usize> {
        self.members.iter().position(|m| &m.id == id)
    }

    fn shard_texts(&self, shard: u32) -> usize {
        self.shards
            .get(shard as usize)
            .map(|(a, b)| b - a)
            .unwrap_or(0)
    }

    /// Whether every shard is done.
    pub fn is_finished(&self) -> bool {
        self.state == JobState::Finished
    }

    /// Whether the job is still running.
    pub fn is_running(&self) -> bool {
        self.state == JobState::Running
    }

    /// Texts done / total.
    pub fn texts_done(&self) -> (u64, u64) {
        (self.texts_done, self.texts.len() as u64)
    }

    /// The vectors in input order, once finished (taken once).
    pub fn take_output(&mut self) -> Option<Vec<Vec<f32>>> {
        if !self.is_finished() {
            return None;
        }
        let dim = self.cfg.dim;
        let mut out = Vec::with_capacity(self.texts.len());
        for r in &mut self.results {
            let flat = r.take()?;
            out.extend(flat.chunks_exact(dim).map(<[f32]>::to_vec));
        }
        Some(out)
    }

    /// The earliest deadline among shards in flight: call [`Job::tick`] then.
    pub fn next_deadline(&self) -> Option<u64> {
        self.members
            .iter()
            .flat_map(|m| m.in_flight.values())
            .filter_map(|a| a.deadline_ms)
            .min()
    }

    /// Snapshot of every member (for a live view).
    pub fn progress(&self) -> Vec<Progress<M>> {
        (0..self.members.len()).map(|i| self.snapshot(i)).collect()
    }

    fn snapshot(&self, i: usize) -> Progress<M> {
        let m = &self.members[i];
        Progress {
            member: m.id.clone(),
            is_self: m.is_self,
            status: match &m.excluded {
                None => MemberStatus::Active,
                Some(e) => MemberStatus::Excluded(e.clone()),
            },
            shards_done: m.shards_done,
            texts_done: m.texts_done,
            in_flight: m.in_flight.len(),
            rate: m.rate,
            job_texts_done: self.texts_done,
            job_texts_total: self.texts.len() as u64,
        }
    }

    /// Next action for the driver. Progress events come after the others, one per changed member.
    pub fn poll_action(&mut self) -> Option<Action<M>> {
        if let Some(a) = self.outbox.pop_front() {
            return Some(a);
        }
        let i = self.dirty.pop_first()?;
        Some(Action::Progress(self.snapshot(i)))
    }

    /// A member's channel closed.
    pub fn member_left(&mut self, id: &M, now_ms: u64) {
        if let Some(i) = self.index(id)
            && !self.members[i].is_self
        {
            self.exclude(i, Exclusion::Left, false);
            self.schedule(now_ms);
        }
    }

    /// Cancel the job: every member with work in flight gets a cancel.
    pub fn cancel(&mut self, _now_ms: u64) {
        if self.state != JobState::Running {
            return;
        }
        self.state = JobState::Stopped;
        self.pending.clear();
        for i in 0..self.members.len() {
            let m = &mut self.members[i];
            if !m.in_flight.is_empty() {
                m.in_flight.clear();
                let a = Action::Cancel {
                    to: m.id.clone(),
                    is_self: m.is_self,
                    msg: PeerMsg::Cancel {
                        job: self.id,
                        shard: None,
                    },
                };
                self.outbox.push_back(a);
                self.dirty.insert(i);
            }
        }
        self.outbox.push_back(Action::Failed(JobError::Cancelled));
    }

    /// Handle deadlines (call at or after [`Job::next_deadline`]) and assign free slots.
    pub fn tick(&mut self, now_ms: u64) {
        if self.state != JobState::Running {
            return;
        }
        for i in 0..self.members.len() {
            let expired: Vec<u32> = self.members[i]
                .in_flight
                .iter()
                .filter(|(_, a)| a.deadline_ms.is_some_and(|d| d <= now_ms))
                .map(|(s, _)| *s)
                .collect();
            if expired.is_empty() {
                continue;
            }
            let m = &mut self.members[i];
            for s in &expired {
                if let Some(a) = m.in_flight.remove(s) {
                    m.late.insert(*s, a.sent_ms);
                    // Bound the late set: forget the oldest.
                    while m.late.len() > self.cfg.max_in_flight * 4 {
                        m.late.pop_first();
                    }
                }
            }
            // It did not finish `texts` in the time given: halve the estimate.
            m.rate = (m.rate / 2.0).max(1e-3);
            m.timeouts += 1;
            self.dirty.insert(i);
            for s in expired {
                self.requeue(s);
            }
            if self.members[i].timeouts >= self.cfg.max_timeouts {
                self.exclude(i, Exclusion::Stalled, true);
            }
        }
        self.schedule(now_ms);
    }

    /// A message from member `from` (already decoded and validated).
    pub fn on_message(&mut self, from: &M, msg: PeerMsg, now_ms: u64) -> Result<(), JobError> {
        let Some(i) = self.index(from) else {
            return Err(JobError::NotForThisJob);
        };
        match msg {
            PeerMsg::ShardResult {
                job,
                shard,
                dim,
                vectors,
            } if job == self.id => {
                self.on_result(i, shard, dim, le_to_f32s(&vectors), now_ms);
                Ok(())
            }
            PeerMsg::ShardError { job, shard, reason } if job == self.id => {
                let assigned = self.members[i].in_flight.remove(&shard).is_some()
                    || self.members[i].late.remove(&shard).is_some();
                if !assigned {
                    return Err(JobError::NotForThisJob);
                }
                if self.members[i].is_self {
                    self.fail(JobError::LocalFailed(reason));
                    return Ok(());
                }
                self.requeue(shard);
                self.exclude(i, Exclusion::Errored(reason), true);
                self.schedule(now_ms);
                Ok(())
            }
            _ => Err(JobError::NotForThisJob),
        }
    }

    /// Member `from` returned the vectors of `shard` as floats (`texts × dim`, row-major): the
    /// same as a [`PeerMsg::ShardResult`] through [`Job::on_message`], without the byte encoding
    /// (for members that run in this process, like a tab's own model workers).
    pub fn on_vectors(
        &mut self,
        from: &M,
        shard: u32,
        vectors: Vec<f32>,
        now_ms: u64,
    ) -> Result<(), JobError> {
        let Some(i) = self.index(from) else {
            return Err(JobError::NotForThisJob);
        };
        self.on_result(i, shard, self.cfg.dim as u32, Some(vectors), now_ms);
        Ok(())
    }

    fn fail(&mut self, e: JobError) {
        if self.state == JobState::Running {
            self.state = JobState::Stopped;
            self.pending.clear();
            for i in 0..self.members.len() {
                let m = &mut self.members[i];
                if !m.in_flight.is_empty() && !m.is_self {
                    m.in_flight.clear();
                    self.outbox.push_back(Action::Cancel {
                        to: m.id.clone(),
                        is_self: false,
                        msg: PeerMsg::Cancel {
                            job: self.id,
                            shard: None,
                        },
                    });
                }
            }
            self.outbox.push_back(Action::Failed(e));
        }
    }

    fn on_result(
        &mut self,
        i: usize,
        shard: u32,
        dim: u32,
        vectors: Option<Vec<f32>>,
        now_ms: u64,
    ) {
        if self.state != JobState::Running {
            return;
        }
        let sent = match self.members[i].in_flight.remove(&shard) {
            Some(a) => Some(a.sent_ms),
            None => self.members[i].late.remove(&shard),
        };
        let Some(sent_ms) = sent else {
            // Not assigned to this member (or already accounted): a lie or a stale duplicate.
            if self
                .results
                .get(shard as usize)
                .is_some_and(Option::is_some)
            {
                return;
            }
            self.exclude(i, Exclusion::Malformed("unassigned shard"), true);
            self.schedule(now_ms);
            return;
        };
        if self.results[shard as usize].is_some() {
            // Someone else finished it first.
            self.dirty.insert(i);
            self.schedule(now_ms);
            return;
        }
        let n = self.shard_texts(shard);
        let problem = if dim as usize != self.cfg.dim {
            Some("wrong dimension")
        } else {
            match vectors {
                None => Some("vector bytes"),
                Some(v) if v.len() != n * self.cfg.dim => Some("wrong vector count"),
                Some(v) if !v.iter().all(|x| x.is_finite()) => Some("non-finite value"),
                Some(v) => {
                    self.results[shard as usize] = Some(v);
                    None
                }
            }
        };
        if let Some(p) = problem {
            if self.members[i].is_self {
                self.fail(JobError::LocalFailed(p.to_string()));
                return;
            }
            self.requeue(shard);
            self.exclude(i, Exclusion::Malformed(p), true);
            self.schedule(now_ms);
            return;
        }
        // Accepted: update the capacity estimate from the real completion.
        let elapsed_s = (now_ms.saturating_sub(sent_ms).max(1)) as f64 / 1000.0;
        let alpha = self.cfg.ewma_alpha;
        let m = &mut self.members[i];
        let observed = n as f64 / elapsed_s;
        m.rate = (1.0 - alpha) * m.rate + alpha * observed;
        m.shards_done += 1;
        m.texts_done += n as u64;
        self.texts_done += n as u64;
        self.dirty.insert(i);
        // Drop duplicates still running elsewhere.
        for j in 0..self.members.len() {
            if j == i {
                continue;
            }
            let other = &mut self.members[j];
            other.late.remove(&shard);
            if other.in_flight.remove(&shard).is_some() {
                self.outbox.push_back(Action::Cancel {
                    to: other.id.clone(),
                    is_self: other.is_self,
                    msg: PeerMsg::Cancel {
                        job: self.id,
                        shard: Some(shard),
                    },
                });
                self.dirty.insert(j);
            }
        }
        self.pending.retain(|s| *s != shard);
        if self.results.iter().all(Option::is_some) {
            self.state = JobState::Finished;
            self.outbox.push_back(Action::Finished);
            return;
        }
        self.schedule(now_ms);
    }

    /// Put a shard back at the front of the queue unless it is done, queued, or still
    /// actively in flight elsewhere.
    fn requeue(&mut self, shard: u32) {
        let done = self.results.get(shard as usize).is_none_or(Option::is_some);
        let active = self
            .members
            .iter()
            .any(|m| m.excluded.is_none() && m.in_flight.contains_key(&shard));
        if !done && !active && !self.pending.contains(&shard) {
            self.pending.push_front(shard);
        }
    }

    fn exclude(&mut self, i: usize, why: Exclusion, send_cancel: bool) {
        if self.members[i].is_self || self.members[i].excluded.is_some() {
            return;
        }
        let shards: Vec<u32> = self.members[i].in_flight.keys().copied().collect();
        let m = &mut self.members[i];
        m.in_flight.clear();
        m.late.clear();
        m.excluded = Some(why);
        if send_cancel {
            self.outbox.push_back(Action::Cancel {
                to: m.id.clone(),
                is_self: false,
                msg: PeerMsg::Cancel {
                    job: self.id,
                    shard: None,
                },
            });
        }
        self.dirty.insert(i);
        for s in shards {
            self.requeue(s);
        }
    }

    /// Capacity-proportional assignment with an earliest-finish tail: the next pending shard
    /// goes to the member with a free slot that would finish it soonest (queued texts / rate),
    /// provided that member finishes no later than the balanced time of the whole remaining
    /// job (`remaining texts / Σ rates`) or than the best member overall. Early on every
    /// member takes work in proportion to its rate; near the end, slow members stop getting
    /// shards a faster member would finish sooner even after its queue.
    fn schedule(&mut self, now_ms: u64) {
        if self.state != JobState::Running {
            return;
        }
        let outbox_cap = MAX_MEMBERS * (self.cfg.max_in_flight + 2) + 8;
        while let Some(&shard) = self.pending.front() {
            if self.outbox.len() >= outbox_cap {
                break;
            }
            let n = self.shard_texts(shard);
            let mut remaining: usize = self.pending.iter().map(|s| self.shard_texts(*s)).sum();
            let mut total_rate = 0.0;
            let mut best_any = f64::INFINITY;
            let mut best_free: Option<(usize, f64)> = None;
            for (i, m) in self.members.iter().enumerate() {
                if m.excluded.is_some() {
                    continue;
                }
                let queued: usize = m.in_flight.keys().map(|s| self.shard_texts(*s)).sum();
                remaining += queued;
                total_rate += m.rate;
                let finish = (queued + n) as f64 / m.rate;
                best_any = best_any.min(finish);
                if m.in_flight.len() < self.cfg.max_in_flight
                    && best_free.is_none_or(|(_, f)| finish < f)
                {
                    best_free = Some((i, finish));
                }
            }
            let Some((i, finish)) = best_free else { break };
            let balanced = if total_rate > 0.0 {
                remaining as f64 / total_rate
            } else {
                0.0
            };
            if finish > balanced.max(best_any) {
                break;
            }
            self.pending.pop_front();
            let m = &mut self.members[i];
            let expected_ms = n as f64 / m.rate * 1000.0 * self.cfg.deadline_factor;
            let deadline_ms = if m.is_self {
                None
            } else {
                Some(now_ms + (expected_ms as u64).max(self.cfg.min_deadline_ms))
            };
            m.late.remove(&shard);
            m.in_flight.insert(
                shard,
                Assignment {
                    sent_ms: now_ms,
                    deadline_ms,
                },
            );
            let (a, b) = self.shards[shard as usize];
            self.outbox.push_back(Action::Assign {
                to: m.id.clone(),
                is_self: m.is_self,
                msg: PeerMsg::ShardRequest {
                    job: self.id,
                    shard,
                    texts: self.texts[a..b].to_vec(),
                },
            });
            self.dirty.insert(i);
        }
    }

    /// Start: assign the first shards (call once after adding the members).
    pub fn start(&mut self, now_ms: u64) {
        self.schedule(now_ms);
    }
}
