//! Generation on a circle node, both sides: the requester's [`GenJob`] (one answer at a time)
//! and the worker's bounded queue of generation requests from peers, with receipts
//! (commitments keyed by the job's receipt key, worker-signed at the end of an attempt,
//! countersigned once the answer passed verification) and misbehaviour records (a rejected
//! attempt's worker-signed commitments and the rejected position).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{CircleNode, NodeOut};
use crate::jobs::generate::{GenAction, GenAsk, GenExclusion, GenJob, Server};
use crate::jobs::msg::{GenFinish, JobId, MAX_GEN_TOKENS, gen_input_bytes, tokens_to_le};
use crate::jobs::{JobError, PeerMsg};
use shoal_proto::identity::PeerId;
use shoal_tlog::receipt::{Misbehaviour, ReceiptBody, Sig, keyed_commitment};

/// Generation requests from peers a node holds at most (one runs, the rest wait).
pub const GEN_QUEUE: usize = 4;

/// A generation request from a peer, for the driver to run.
#[derive(Clone, Debug, PartialEq)]
pub struct GenTask {
    /// Who asked.
    pub from: PeerId,
    /// Job.
    pub job: JobId,
    /// Attempt.
    pub attempt: u32,
    /// The chat model.
    pub model: [u8; 32],
    /// The prompt's token ids.
    pub prompt: Vec<u32>,
    /// The answer so far: continue after it.
    pub prefix: Vec<u32>,
    /// Most answer tokens in all, prefix included.
    pub max_tokens: u32,
    /// Sampling settings (the chat engine's `Sampling` as JSON).
    pub sampling: String,
}

impl GenTask {
    /// The key the driver reports progress under.
    pub fn key(&self) -> GenKey {
        GenKey {
            from: self.from,
            job: self.job,
            attempt: self.attempt,
        }
    }
}

/// Identifies a served generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GenKey {
    /// Requester.
    pub from: PeerId,
    /// Job.
    pub job: JobId,
    /// Attempt.
    pub attempt: u32,
}

/// Generation outputs of [`CircleNode::poll`] for our own answer.
#[derive(Clone, Debug, PartialEq)]
pub enum GenOut {
    /// Generate here (see [`GenAction::RunLocal`]); report with [`CircleNode::gen_local_tokens`]
    /// and [`CircleNode::gen_local_done`].
    RunLocal {
        /// Job.
        job: JobId,
        /// Attempt.
        attempt: u32,
        /// Prompt.
        prompt: Vec<u32>,
        /// Answer so far.
        prefix: Vec<u32>,
        /// Most answer tokens in all.
        max_tokens: u32,
        /// Sampling settings (JSON).
        sampling: String,
    },
    /// Stop the local generation of `job`.
    StopLocal {
        /// Job.
        job: JobId,
    },
    /// Check `answer[from..]` by teacher forcing (the tokens before `from` passed earlier);
    /// report with [`CircleNode::gen_verified`] and `answer.len()`.
    Verify {
        /// Job.
        job: JobId,
        /// Prompt.
        prompt: Vec<u32>,
        /// Answer up to the end of the piece.
        answer: Vec<u32>,
        /// First token to check.
        from: usize,
        /// Sampling settings (JSON).
        sampling: String,
    },
    /// Who serves the answer now and why (`None`: this device).
    Serving {
        /// The member, if not us.
        by: Option<PeerId>,
        /// Why.
        reason: String,
    },
    /// New answer tokens.
    Tokens {
        /// Position of the first.
        start: usize,
        /// Ids.
        tokens: Vec<u32>,
    },
    /// The answer is cut back to `to` tokens.
    Rewind {
        /// New length.
        to: usize,
    },
    /// A member is out of the job.
    Excluded {
        /// Member.
        peer: PeerId,
        /// Why.
        why: GenExclusion,
    },
    /// The answer is complete.
    Finished {
        /// Job.
        job: JobId,
        /// Token ids.
        tokens: Vec<u32>,
        /// Why it ended.
        finish: GenFinish,
        /// `Some(true)`: tokens from members passed verification; `None`: all generated here.
        verified: Option<bool>,
        /// (start, server (`None` = here), attempt) of each run of the answer.
        spans: Vec<(usize, Option<PeerId>, u32)>,
    },
    /// The job failed.
    Failed {
        /// Why.
        error: String,
    },
}

/// Worker-side outputs of [`CircleNode::poll`].
#[derive(Clone, Debug, PartialEq)]
pub enum ServeOut {
    /// Run this generation; report with [`CircleNode::gen_emit`] and
    /// [`CircleNode::gen_served`].
    Generate(GenTask),
    /// Stop the running generation `key` (the requester cancelled or left).
    Stop(GenKey),
}

/// Generation counters of a node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenCounters {
    /// Tokens this node generated for peers and sent.
    pub tokens_served: u64,
    /// Generation requests served to the end.
    pub answers_served: u64,
    /// Tokens of our answers that members sent and we took.
    pub tokens_received: u64,
    /// Misbehaviour records made.
    pub misbehaviour: u64,
}

/// A remote attempt of our job, for its receipt or misbehaviour record.
#[derive(Debug)]
pub(super) struct AttemptRec {
    peer: PeerId,
    input: [u8; 32],
    /// (base, tokens) it streamed, once its `GenDone` closed the stream properly.
    output: Option<(usize, Vec<u32>)>,
    /// (started, finished, worker signature) from its `ReceiptSig`.
    sig: Option<(u64, u64, Sig)>,
    /// Rejected at this position.
    rejected: Option<usize>,
    /// A receipt or record was made.
    settled: bool,
}

/// Our generation job and its receipt bookkeeping.
#[derive(Debug)]
pub(super) struct GenRunning {
    job: GenJob<PeerId>,
    receipt_key: [u8; 32],
    keyed: BTreeSet<PeerId>,
    attempts: BTreeMap<u32, AttemptRec>,
    /// The answer passed (receipts may be countersigned).
    accepted: bool,
}

/// A request being served (or waiting) for a peer.
#[derive(Debug)]
pub(super) struct Serve {
    task: GenTask,
    running: bool,
    cancelled: bool,
    /// Tokens sent so far (its receipt commits to them).
    emitted: Vec<u32>,
    input: Option<[u8; 32]>,
    started_unix_ms: u64,
}

/// What a node keeps for generation.
#[derive(Debug, Default)]
pub(super) struct GenState {
    pub(super) job: Option<GenRunning>,
    pub(super) serving: VecDeque<Serve>,
    pub(super) counters: GenCounters,
}

impl CircleNode {
    /// Generate an answer across the circle (see [`crate::jobs::generate`]): members up now
    /// that advertise `ask.model`, and those coming up later, may serve it. Fails if one is
    /// still running.
    pub fn start_generation(&mut self, ask: GenAsk, now_ms: u64) -> Result<JobId, JobError> {
        if self.genr.job.as_ref().is_some_and(|g| g.job.is_running()) {
            return Err(JobError::Config("an answer is already being generated"));
        }
        if ask.prompt.is_empty() || ask.prompt.len() > MAX_GEN_TOKENS {
            return Err(JobError::Config("prompt length"));
        }
        let id = super::job_id();
        let model = ask.model;
        let mut job = GenJob::new(id, ask, self.gen_cfg.clone());
        for (peer, caps) in self.session.up_peers() {
            if let Some(c) = caps.chat.iter().find(|c| c.model == model) {
                job.add_member(peer, f64::from(c.decode_tok_s));
            }
        }
        job.start(now_ms);
        let mut receipt_key = [0u8; 32];
        let _ = shoal_proto::identity::random_bytes(&mut receipt_key);
        self.genr.job = Some(GenRunning {
            job,
            receipt_key,
            keyed: BTreeSet::new(),
            attempts: BTreeMap::new(),
            accepted: false,
        });
        self.drain(now_ms);
        Ok(id)
    }

    /// Stop our answer (the serving member is told; the partial answer is verified).
    pub fn cancel_generation(&mut self, now_ms: u64) {
        if let Some(g) = self.genr.job.as_mut() {
            g.job.cancel(now_ms);
        }
        self.drain(now_ms);
    }

    /// Whether an answer of ours is being generated or verified.
    pub fn generation_running(&self) -> bool {
        self.genr.job.as_ref().is_some_and(|g| g.job.is_running())
    }

    /// Tokens the local engine generated for [`GenOut::RunLocal`].
    pub fn gen_local_tokens(
        &mut self,
        job: JobId,
        attempt: u32,
        start: usize,
        tokens: &[u32],
        now_ms: u64,
    ) {
        if let Some(g) = self.genr.job.as_mut().filter(|g| g.job.id() == job) {
            g.job.local_tokens(attempt, start, tokens);
        }
        self.drain(now_ms);
    }

    /// The local generation ended.
    pub fn gen_local_done(
        &mut self,
        job: JobId,
        attempt: u32,
        outcome: Result<GenFinish, String>,
        now_ms: u64,
    ) {
        if let Some(g) = self.genr.job.as_mut().filter(|g| g.job.id() == job) {
            g.job.local_done(attempt, outcome);
        }
        self.drain(now_ms);
    }

    /// The outcome of [`GenOut::Verify`] for a piece ending at answer length `len`: `Ok(())` or
    /// the first rejected position.
    pub fn gen_verified(
        &mut self,
        job: JobId,
        len: usize,
        outcome: Result<(), usize>,
        now_ms: u64,
    ) {
        if let Some(g) = self.genr.job.as_mut().filter(|g| g.job.id() == job) {
            g.job.verified(len, outcome, now_ms);
        }
        self.drain(now_ms);
    }

    /// Generation counters.
    pub fn gen_counters(&self) -> &GenCounters {
        &self.genr.counters
    }

    /// Worker side: the running generation `key` produced `tokens` at answer positions
    /// `start..`. Returns `false` when it was cancelled (the driver stops).
    pub fn gen_emit(&mut self, key: &GenKey, start: usize, tokens: &[u32], now_ms: u64) -> bool {
        let Some(s) = self
            .genr
            .serving
            .iter_mut()
            .find(|s| s.running && s.task.key() == *key)
        else {
            return false;
        };
        if s.cancelled {
            return false;
        }
        let msg = PeerMsg::GenTokens {
            job: key.job,
            attempt: key.attempt,
            start: start as u32,
            tokens: tokens.to_vec(),
        };
        s.emitted.extend_from_slice(tokens);
        self.genr.counters.tokens_served += tokens.len() as u64;
        let ok = self.session.send(&key.from, &msg).is_ok();
        self.drain(now_ms);
        ok
    }

    /// Worker side: the running generation `key` ended: `Ok(finish)` or `Err(reason)`. Sends
    /// the end of stream (the answer's length as sent: tokens refused after a cancel are not
    /// counted) and the receipt signature, starts the next.
    pub fn gen_served(&mut self, key: &GenKey, outcome: Result<GenFinish, String>, now_ms: u64) {
        let Some(pos) = self
            .genr
            .serving
            .iter()
            .position(|s| s.running && s.task.key() == *key)
        else {
            return;
        };
        let Some(s) = self.genr.serving.remove(pos) else {
            return;
        };
        match outcome {
            Ok(finish) => {
                let end = s.task.prefix.len() + s.emitted.len();
                self.genr.counters.answers_served += 1;
                let finish = if s.cancelled {
                    GenFinish::Cancelled
                } else {
                    finish
                };
                let done = PeerMsg::GenDone {
                    job: key.job,
                    attempt: key.attempt,
                    end: end as u32,
                    finish,
                };
                let sig = self.gen_receipt_sig(&s, now_ms);
                if self.session.send(&key.from, &done).is_ok()
                    && let Some(sig) = sig
                {
                    let _ = self.session.send(&key.from, &sig);
                }
            }
            Err(reason) => {
                let msg = PeerMsg::GenError {
                    job: key.job,
                    attempt: key.attempt,
                    reason: crate::jobs::msg::truncate_label(reason),
                };
                let _ = self.session.send(&key.from, &msg);
            }
        }
        self.next_gen_task();
        self.drain(now_ms);
    }

    fn gen_receipt_sig(&self, s: &Serve, now_ms: u64) -> Option<PeerMsg> {
        let key = self.receipt_key(&s.task.from, &s.task.job)?;
        let body = ReceiptBody {
            job_id: s.task.job.0,
            shard: s.task.attempt,
            input_commitment: s.input?,
            output_commitment: keyed_commitment(
                &key,
                &s.task.job.0,
                s.task.attempt,
                &tokens_to_le(&s.emitted),
            ),
            worker: self.session.my_id().0,
            requester: s.task.from.0,
            started_ms: s.started_unix_ms,
            finished_ms: self.unix(now_ms).max(s.started_unix_ms),
        };
        let sig = body.sign_as_worker(self.signer.as_ref()?).ok()?;
        Some(PeerMsg::ReceiptSig {
            job: s.task.job,
            shard: s.task.attempt,
            started_ms: body.started_ms,
            finished_ms: body.finished_ms,
            sig,
        })
    }

    fn next_gen_task(&mut self) {
        if self.genr.serving.iter().any(|s| s.running) {
            return;
        }
        if let Some(s) = self.genr.serving.iter_mut().find(|s| !s.cancelled) {
            s.running = true;
            self.out
                .push_back(NodeOut::Serve(ServeOut::Generate(s.task.clone())));
        }
        // Cancelled waiting requests are dropped.
        self.genr.serving.retain(|s| s.running || !s.cancelled);
    }

    /// A generation message from `peer` (both sides). Returns `false` if it is not one.
    pub(super) fn on_gen_msg(&mut self, peer: PeerId, msg: &PeerMsg, now_ms: u64) -> bool {
        match msg {
            PeerMsg::GenRequest {
                job,
                attempt,
                model,
                prompt,
                prefix,
                max_tokens,
                sampling,
            } => {
                let reply_err = |reason: &str| PeerMsg::GenError {
                    job: *job,
                    attempt: *attempt,
                    reason: reason.into(),
                };
                if !self.chat_models.contains(model) {
                    let _ = self.session.send(&peer, &reply_err("no such model here"));
                } else if self.genr.serving.len() >= GEN_QUEUE {
                    let _ = self.session.send(&peer, &reply_err("busy"));
                } else {
                    let input = self.receipt_key(&peer, job).map(|k| {
                        keyed_commitment(&k, &job.0, *attempt, &gen_input_bytes(prompt, prefix))
                    });
                    self.genr.serving.push_back(Serve {
                        task: GenTask {
                            from: peer,
                            job: *job,
                            attempt: *attempt,
                            model: *model,
                            prompt: prompt.clone(),
                            prefix: prefix.clone(),
                            max_tokens: *max_tokens,
                            sampling: sampling.clone(),
                        },
                        running: false,
                        cancelled: false,
                        emitted: Vec::new(),
                        input,
                        started_unix_ms: self.unix(now_ms),
                    });
                    self.next_gen_task();
                }
                true
            }
            PeerMsg::Cancel { job, shard: None }
                if self
                    .genr
                    .serving
                    .iter()
                    .any(|s| s.task.from == peer && s.task.job == *job) =>
            {
                self.cancel_serving(|s| s.task.from == peer && s.task.job == *job);
                true
            }
            PeerMsg::GenTokens { job, .. }
            | PeerMsg::GenDone { job, .. }
            | PeerMsg::GenError { job, .. } => {
                let Some(g) = self.genr.job.as_mut().filter(|g| g.job.id() == *job) else {
                    return true;
                };
                match msg {
                    PeerMsg::GenTokens {
                        tokens, attempt, ..
                    } if g.job.serving() == Some((Server::Member(peer), *attempt)) => {
                        self.genr.counters.tokens_received += tokens.len() as u64;
                    }
                    PeerMsg::GenDone { attempt, end, .. }
                        if g.job.serving() == Some((Server::Member(peer), *attempt))
                            && *end as usize == g.job.tokens().len() =>
                    {
                        if let (Some(a), Some(base)) =
                            (g.attempts.get_mut(attempt), g.job.current_base())
                        {
                            a.output = Some((base, g.job.tokens()[base..].to_vec()));
                        }
                    }
                    _ => {}
                }
                g.job.on_message(&peer, msg, now_ms);
                true
            }
            PeerMsg::ReceiptSig {
                job,
                shard,
                started_ms,
                finished_ms,
                sig,
            } if self.genr.job.as_ref().is_some_and(|g| g.job.id() == *job) => {
                if let Some(g) = self.genr.job.as_mut()
                    && let Some(a) = g.attempts.get_mut(shard)
                    && a.peer == peer
                    && a.sig.is_none()
                {
                    a.sig = Some((*started_ms, *finished_ms, *sig));
                }
                self.settle_attempts();
                true
            }
            _ => false,
        }
    }

    /// Stop serving what `which` selects: waiting requests are dropped, the running one is
    /// stopped (its end of stream still goes out).
    pub(super) fn cancel_serving(&mut self, which: impl Fn(&Serve) -> bool) {
        let mut stop = None;
        for s in self.genr.serving.iter_mut().filter(|s| which(s)) {
            if s.running && !s.cancelled {
                stop = Some(s.task.key());
            }
            s.cancelled = true;
        }
        self.genr.serving.retain(|s| s.running || !s.cancelled);
        if let Some(k) = stop {
            self.out.push_back(NodeOut::Serve(ServeOut::Stop(k)));
        }
    }

    /// A peer is up: a member of our answer if it has the model.
    pub(super) fn gen_peer_up(&mut self, peer: PeerId, caps: &crate::jobs::Capabilities) {
        if let Some(g) = self.genr.job.as_mut().filter(|g| g.job.is_running())
            && let Some(c) = caps.chat.iter().find(|c| c.model == g.job.ask().model)
        {
            g.job.add_member(peer, f64::from(c.decode_tok_s));
        }
    }

    /// A peer went down: out of our answer; its requests stop.
    pub(super) fn gen_peer_down(&mut self, peer: &PeerId, now_ms: u64) {
        if let Some(g) = self.genr.job.as_mut() {
            g.job.member_left(peer, now_ms);
        }
        self.cancel_serving(|s| s.task.from == *peer);
    }

    pub(super) fn gen_next_deadline(&self) -> Option<u64> {
        self.genr.job.as_ref().and_then(|g| g.job.next_deadline())
    }

    pub(super) fn gen_tick(&mut self, now_ms: u64) {
        if let Some(g) = self.genr.job.as_mut()
            && g.job.next_deadline().is_some_and(|d| d <= now_ms)
        {
            g.job.tick(now_ms);
        }
    }

    /// Move the job's actions out. Returns whether there were any.
    pub(super) fn drain_gen(&mut self, now_ms: u64) -> bool {
        let mut actions = Vec::new();
        if let Some(g) = self.genr.job.as_mut() {
            while let Some(a) = g.job.poll_action() {
                actions.push(a);
            }
        }
        let any = !actions.is_empty();
        for a in actions {
            self.on_gen_action(a, now_ms);
        }
        any
    }

    fn on_gen_action(&mut self, a: GenAction<PeerId>, now_ms: u64) {
        let Some(g) = self.genr.job.as_mut() else {
            return;
        };
        let job = g.job.id();
        let sampling = g.job.ask().sampling.clone();
        let out = match a {
            GenAction::Send { to, msg } => {
                if let PeerMsg::GenRequest {
                    attempt,
                    prompt,
                    prefix,
                    ..
                } = &msg
                {
                    if !g.keyed.contains(&to) {
                        let key = PeerMsg::ReceiptKey {
                            job,
                            key: g.receipt_key,
                        };
                        if self.session.send(&to, &key).is_ok() {
                            g.keyed.insert(to);
                        }
                    }
                    let input = keyed_commitment(
                        &g.receipt_key,
                        &job.0,
                        *attempt,
                        &gen_input_bytes(prompt, prefix),
                    );
                    g.attempts.insert(
                        *attempt,
                        AttemptRec {
                            peer: to,
                            input,
                            output: None,
                            sig: None,
                            rejected: None,
                            settled: false,
                        },
                    );
                }
                if let Err(e) = self.session.send(&to, &msg) {
                    tracing::debug!(error = %e, "generation message not sent");
                    if let Some(g) = self.genr.job.as_mut() {
                        g.job.member_left(&to, now_ms);
                    }
                }
                return;
            }
            GenAction::RunLocal {
                attempt,
                prompt,
                prefix,
                max_tokens,
            } => GenOut::RunLocal {
                job,
                attempt,
                prompt,
                prefix,
                max_tokens,
                sampling,
            },
            GenAction::StopLocal => GenOut::StopLocal { job },
            GenAction::Verify {
                prompt,
                answer,
                from,
            } => GenOut::Verify {
                job,
                prompt,
                answer,
                from,
                sampling,
            },
            GenAction::Serving { by, reason } => GenOut::Serving {
                by: match by {
                    Server::Local => None,
                    Server::Member(p) => Some(p),
                },
                reason,
            },
            GenAction::Tokens { start, tokens } => GenOut::Tokens { start, tokens },
            GenAction::Rewind { to } => GenOut::Rewind { to },
            GenAction::Excluded {
                member,
                why,
                attempt,
            } => {
                if let GenExclusion::Rejected { position } = &why
                    && let Some(a) = g.attempts.get_mut(&attempt)
                {
                    a.rejected = Some(*position);
                }
                self.out
                    .push_back(NodeOut::Gen(GenOut::Excluded { peer: member, why }));
                self.settle_attempts();
                return;
            }
            GenAction::Finished {
                tokens,
                finish,
                verified,
            } => {
                g.accepted = verified != Some(false);
                let spans = g
                    .job
                    .spans()
                    .iter()
                    .map(|(s, by, n)| {
                        let by = match by {
                            Server::Local => None,
                            Server::Member(p) => Some(*p),
                        };
                        (*s, by, *n)
                    })
                    .collect();
                self.out.push_back(NodeOut::Gen(GenOut::Finished {
                    job,
                    tokens,
                    finish,
                    verified,
                    spans,
                }));
                self.settle_attempts();
                return;
            }
            GenAction::Failed(error) => GenOut::Failed { error },
        };
        self.out.push_back(NodeOut::Gen(out));
    }

    /// Countersign the receipts of remote attempts of an accepted answer, and make the
    /// misbehaviour record of a rejected one, as soon as each has its worker signature.
    fn settle_attempts(&mut self) {
        let Some(signer) = self.signer.as_ref() else {
            return;
        };
        let me = self.session.my_id();
        let Some(g) = self.genr.job.as_mut() else {
            return;
        };
        let job = g.job.id();
        let finished = !g.job.is_running();
        for (&n, a) in &mut g.attempts {
            if a.settled {
                continue;
            }
            let (Some((started_ms, finished_ms, sig)), Some(output)) = (a.sig, a.output.as_ref())
            else {
                // Without its end of stream an attempt gets neither (it left or stalled).
                a.settled = finished && a.rejected.is_none();
                continue;
            };
            let body = ReceiptBody {
                job_id: job.0,
                shard: n,
                input_commitment: a.input,
                output_commitment: keyed_commitment(
                    &g.receipt_key,
                    &job.0,
                    n,
                    &tokens_to_le(&output.1),
                ),
                worker: a.peer.0,
                requester: me.0,
                started_ms,
                finished_ms,
            };
            if let Some(pos) = a.rejected {
                a.settled = true;
                match Misbehaviour::sign(body, sig, pos as u32, signer) {
                    Ok(m) => {
                        self.genr.counters.misbehaviour += 1;
                        self.out.push_back(NodeOut::Misbehaviour(Box::new(m)));
                    }
                    Err(e) => self.out.push_back(NodeOut::Rejected {
                        peer: a.peer,
                        reason: format!("misbehaviour record: {e}"),
                    }),
                }
                continue;
            }
            if !finished {
                continue;
            }
            a.settled = true;
            // Only what is still in the accepted answer earns a receipt.
            let (base, tokens) = output;
            let kept = g.accepted
                && g.job
                    .tokens()
                    .get(*base..base + tokens.len())
                    .is_some_and(|t| t == tokens.as_slice());
            if !kept {
                continue;
            }
            match shoal_tlog::receipt::Receipt::countersign(body, sig, signer) {
                Ok(rc) => self.out.push_back(NodeOut::Receipt(Box::new(rc))),
                Err(e) => self.out.push_back(NodeOut::Rejected {
                    peer: a.peer,
                    reason: format!("generation receipt: {e}"),
                }),
            }
        }
    }
}
