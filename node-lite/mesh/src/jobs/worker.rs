//! The worker's side: a bounded queue of shard requests from requesters, sans-IO.
//!
//! The driver feeds decoded messages in with [`Worker::on_message`], takes work with
//! [`Worker::next_task`], computes (model, Web Worker, …) and hands the outcome to
//! [`Worker::complete`], which returns the reply to send — or nothing when the shard was
//! cancelled meanwhile.

use std::collections::VecDeque;

use super::msg::{JobId, PeerMsg, f32s_to_le, truncate_label};

/// One shard to compute.
#[derive(Clone, Debug, PartialEq)]
pub struct Task<M> {
    /// Who asked.
    pub from: M,
    /// Job.
    pub job: JobId,
    /// Shard index.
    pub shard: u32,
    /// The texts.
    pub texts: Vec<String>,
}

/// A worker serving any number of requesters, with at most `max_queued` shards waiting and
/// at most `max_running` computing.
#[derive(Debug)]
pub struct Worker<M> {
    queue: VecDeque<Task<M>>,
    running: Vec<(M, JobId, u32, bool)>,
    max_queued: usize,
    max_running: usize,
}

/// What [`Worker::on_message`] decided.
#[derive(Clone, Debug, PartialEq)]
pub enum Accepted {
    /// Queued.
    Queued,
    /// Refused: send this reply (busy).
    Reply(PeerMsg),
    /// A cancel was applied (tasks removed from the queue or marked cancelled).
    Cancelled(usize),
    /// Not a message a worker handles.
    Ignored,
}

impl<M: Clone + Eq> Worker<M> {
    /// A worker with bounded queues.
    pub fn new(max_queued: usize, max_running: usize) -> Self {
        Worker {
            queue: VecDeque::new(),
            running: Vec::new(),
            max_queued: max_queued.max(1),
            max_running: max_running.max(1),
        }
    }

    /// Shards waiting.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Handle a message from `from`.
    pub fn on_message(&mut self, from: M, msg: PeerMsg) -> Accepted {
        match msg {
            PeerMsg::ShardRequest { job, shard, texts } => {
                if self.queue.len() >= self.max_queued {
                    return Accepted::Reply(PeerMsg::ShardError {
                        job,
                        shard,
                        reason: "busy".into(),
                    });
                }
                self.queue.push_back(Task {
                    from,
                    job,
                    shard,
                    texts,
                });
                Accepted::Queued
            }
            PeerMsg::Cancel { job, shard } => {
                let hit = |j: &JobId, s: &u32| *j == job && shard.is_none_or(|x| x == *s);
                let before = self.queue.len();
                self.queue
                    .retain(|t| !(t.from == from && hit(&t.job, &t.shard)));
                let mut n = before - self.queue.len();
                for r in &mut self.running {
                    if r.0 == from && hit(&r.1, &r.2) && !r.3 {
                        r.3 = true;
                        n += 1;
                    }
                }
                Accepted::Cancelled(n)
            }
            _ => Accepted::Ignored,
        }
    }

    /// Drop everything `from` asked for (it left): queued tasks are removed, running ones
    /// marked cancelled. Returns how many.
    pub fn cancel_from(&mut self, from: &M) -> usize {
        let before = self.queue.len();
        self.queue.retain(|t| &t.from != from);
        let mut n = before - self.queue.len();
        for r in &mut self.running {
            if &r.0 == from && !r.3 {
                r.3 = true;
                n += 1;
            }
        }
        n
    }

    /// Shards computing now.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// The next shard to compute, if a running slot is free.
    pub fn next_task(&mut self) -> Option<Task<M>> {
        if self.running.len() >= self.max_running {
            return None;
        }
        let t = self.queue.pop_front()?;
        self.running.push((t.from.clone(), t.job, t.shard, false));
        Some(t)
    }

    /// Let `n` shards compute at once (one per model the driver runs).
    pub fn set_max_running(&mut self, n: usize) {
        self.max_running = n.max(1);
    }

    /// A task from [`Worker::next_task`] finished: frees its slot. `false` if it was
    /// cancelled meanwhile (or is unknown): its outcome is to be dropped.
    pub fn finish(&mut self, task: &Task<M>) -> bool {
        let Some(pos) = self
            .running
            .iter()
            .position(|r| r.0 == task.from && r.1 == task.job && r.2 == task.shard)
        else {
            return false;
        };
        let (_, _, _, cancelled) = self.running.swap_remove(pos);
        !cancelled
    }

    /// The outcome of a task from [`Worker::next_task`]: `Ok(row-major vectors, dim)` or
    /// `Err(reason)`. Returns the requester and the reply, or `None` if it was cancelled.
    pub fn complete(
        &mut self,
        task: &Task<M>,
        outcome: Result<(Vec<f32>, u32), String>,
    ) -> Option<(M, PeerMsg)> {
        if !self.finish(task) {
            return None;
        }
        let msg = match outcome {
            Ok((vectors, dim)) => PeerMsg::ShardResult {
                job: task.job,
                shard: task.shard,
                dim,
                vectors: f32s_to_le(&vectors),
            },
            Err(reason) => PeerMsg::ShardError {
                job: task.job,
                shard: task.shard,
                reason: truncate_label(reason),
            },
        };
        Some((task.from.clone(), msg))
    }
}
