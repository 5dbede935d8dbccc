//! Generation as a circle job, the requester's side, sans-IO: one answer, served by one member
//! at a time, streamed back in order, continued elsewhere when that member leaves, stalls or
//! errs, and checked at the end.
//!
//! - **Who serves**: the member that advertises the model with the highest decode rate, if it
//!   is faster than this device ([`GenAsk::local_decode_tok_s`]) or the job prefers members
//!   ([`GenAsk::prefer_remote`]: a phone that should not compute); else this device. The
//!   choice and its reason are an action ([`GenAction::Serving`]) for the UI.
//! - **Stream**: [`PeerMsg::GenTokens`] carry absolute answer positions; only the current
//!   attempt's tokens, exactly at the end of the answer so far, are taken (anything else from
//!   the current member is a protocol violation; late tokens of an earlier attempt are
//!   dropped). Deadlines: [`GenConfig::first_token_ms`] to the first token (covers the
//!   member's prefill), then [`GenConfig::token_gap_ms`] between tokens.
//! - **Failover**: a member that leaves, stalls, errs or breaks the protocol is excluded; the
//!   answer continues from the tokens received so far — on the next member (sent as
//!   `prefix`) or here — so the user sees one continuous answer.
//! - **Verification** ([`GenConfig::verify`]): the driver checks members' tokens by teacher
//!   forcing on its own model ([`GenAction::Verify`] → [`GenJob::verified`]) — in pieces while
//!   the answer streams (every [`GenConfig::verify_every`] tokens, one piece at a time, each
//!   from where the last one ended), the rest when it ends. A rejected token at position p: the
//!   member that produced it is excluded ([`GenExclusion::Rejected`]), whoever serves now is
//!   stopped (its tokens build on p), the answer is cut back to p ([`GenAction::Rewind`]) and
//!   generation continues from p elsewhere; the tokens before p passed and stay.
//! - **Stop** ([`GenJob::cancel`]): the serving member (or the local engine) is told to stop;
//!   the tokens it still sends before its `GenDone` are taken; the partial answer is verified
//!   like a full one.
//!
//! No clock is read: time comes in as `now_ms`.

use std::collections::{BTreeMap, VecDeque};

use super::msg::{GenFinish, JobId, PeerMsg, truncate_label};

/// Tunables of a generation job.
#[derive(Clone, Debug, PartialEq)]
pub struct GenConfig {
    /// Longest wait from a request to a member's first token (its prefill).
    pub first_token_ms: u64,
    /// Longest gap between two tokens of a member.
    pub token_gap_ms: u64,
    /// Check answers with tokens from members by teacher forcing.
    pub verify: bool,
    /// Check members' tokens in pieces of at least this many while the answer streams.
    pub verify_every: usize,
    /// After a stop, how long to wait for the member's end of stream.
    pub stop_grace_ms: u64,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            first_token_ms: 30_000,
            token_gap_ms: 5_000,
            verify: true,
            verify_every: 64,
            stop_grace_ms: 2_000,
        }
    }
}

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct GenAsk {
    /// The chat model's id (members advertise it in [`super::Capabilities::chat`]).
    pub model: [u8; 32],
    /// The templated prompt's token ids.
    pub prompt: Vec<u32>,
    /// Most answer tokens.
    pub max_tokens: u32,
    /// Sampling settings as JSON (the chat engine's `Sampling`).
    pub sampling: String,
    /// This device's own decode rate (tokens/s): a member must beat it to be asked (unless
    /// `prefer_remote`).
    pub local_decode_tok_s: f64,
    /// Ask a member that has the model even when this device is faster (a phone that should
    /// not compute).
    pub prefer_remote: bool,
}

/// Who produces the answer's tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Server<M> {
    /// This device's own engine.
    Local,
    /// A member of the circle.
    Member(M),
}

/// Why a member was excluded from a generation job.
#[derive(Clone, Debug, PartialEq)]
pub enum GenExclusion {
    /// It left the circle (or its channel closed).
    Left,
    /// No token within the deadline.
    Stalled,
    /// It reported an error (busy, no such model, …).
    Errored(String),
    /// It broke the protocol (tokens out of order, beyond `max_tokens`, a wrong end).
    Malformed(&'static str),
    /// Verification rejected the token it produced at this answer position.
    Rejected {
        /// Answer position.
        position: usize,
    },
}

/// What the driver must do, or tell the application.
#[derive(Clone, Debug, PartialEq)]
pub enum GenAction<M> {
    /// Send this message to a member.
    Send {
        /// The member.
        to: M,
        /// The message ([`PeerMsg::GenRequest`] or [`PeerMsg::Cancel`]).
        msg: PeerMsg,
    },
    /// Generate here: continue `prompt ‖ prefix` up to `max_tokens` answer tokens in all;
    /// report through [`GenJob::local_tokens`] and [`GenJob::local_done`].
    RunLocal {
        /// Attempt (pass it back).
        attempt: u32,
        /// The prompt.
        prompt: Vec<u32>,
        /// The answer so far.
        prefix: Vec<u32>,
        /// Most answer tokens in all.
        max_tokens: u32,
    },
    /// Stop the local generation (its `local_done` still follows).
    StopLocal,
    /// Who serves the answer from now on, and why.
    Serving {
        /// The server.
        by: Server<M>,
        /// Why (for the UI).
        reason: String,
    },
    /// New answer tokens at `start..`.
    Tokens {
        /// Position of the first.
        start: usize,
        /// Token ids.
        tokens: Vec<u32>,
    },
    /// The answer is cut back to its first `to` tokens (verification rejected token `to`).
    Rewind {
        /// New length.
        to: usize,
    },
    /// Check `answer[from..]` after `prompt ‖ answer[..from]` (checked before) by teacher
    /// forcing; call [`GenJob::verified`] with `answer.len()`.
    Verify {
        /// The prompt.
        prompt: Vec<u32>,
        /// The answer up to the end of what is to be checked.
        answer: Vec<u32>,
        /// Tokens before this were checked.
        from: usize,
    },
    /// A member is out of this job.
    Excluded {
        /// The member.
        member: M,
        /// Why.
        why: GenExclusion,
        /// The attempt it was serving.
        attempt: u32,
    },
    /// The answer is complete. `verified`: `Some(true)` when tokens from members passed the
    /// check, `None` when every token was generated here (or verification is off).
    Finished {
        /// The answer's token ids.
        tokens: Vec<u32>,
        /// Why it ended.
        finish: GenFinish,
        /// Verification outcome.
        verified: Option<bool>,
    },
    /// The job failed (the local engine failed).
    Failed(String),
}

#[derive(Clone, Debug)]
struct Attempt<M> {
    n: u32,
    by: Server<M>,
    /// Answer length when it was sent.
    base: usize,
    /// Member attempts: when it is late.
    deadline: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Generating,
    Verifying,
    Done,
}

/// Most members a generation job tracks.
const MAX_GEN_MEMBERS: usize = super::MAX_MEMBERS;
/// Most attempts of one job (each failover or regeneration is one): bounds the work a circle
/// of misbehaving members can cause; after it the answer finishes locally.
pub const MAX_ATTEMPTS: u32 = 32;

/// One answer being generated for this device.
#[derive(Debug)]
pub struct GenJob<M> {
    id: JobId,
    ask: GenAsk,
    cfg: GenConfig,
    /// Members with the model: decode tokens/s.
    members: BTreeMap<M, f64>,
    excluded: BTreeMap<M, GenExclusion>,
    tokens: Vec<u32>,
    /// (start position, server, attempt) of each run of tokens, in order.
    spans: Vec<(usize, Server<M>, u32)>,
    current: Option<Attempt<M>>,
    attempts: u32,
    phase: Phase,
    finish: Option<GenFinish>,
    stopping: bool,
    /// Answer tokens checked and passed.
    verified_upto: usize,
    /// The length of the piece being checked.
    verifying: Option<usize>,
    out: VecDeque<GenAction<M>>,
}

impl<M: Clone + Ord + std::fmt::Debug> GenJob<M> {
    /// A job; call [`GenJob::add_member`] for members that have the model, then
    /// [`GenJob::start`].
    pub fn new(id: JobId, ask: GenAsk, cfg: GenConfig) -> Self {
        GenJob {
            id,
            ask,
            cfg,
            members: BTreeMap::new(),
            excluded: BTreeMap::new(),
            tokens: Vec::new(),
            spans: Vec::new(),
            current: None,
            attempts: 0,
            phase: Phase::Generating,
            finish: None,
            stopping: false,
            verified_upto: 0,
            verifying: None,
            out: VecDeque::new(),
        }
    }

    /// The job id.
    pub fn id(&self) -> JobId {
        self.id
    }

    /// What was asked.
    pub fn ask(&self) -> &GenAsk {
        &self.ask
    }

    /// The answer so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Whether the job still runs (generating or verifying).
    pub fn is_running(&self) -> bool {
        self.phase != Phase::Done
    }

    /// Who serves now, and the attempt.
    pub fn serving(&self) -> Option<(Server<M>, u32)> {
        self.current.as_ref().map(|a| (a.by.clone(), a.n))
    }

    /// The runs of the answer: (start position, server, attempt), in order.
    pub fn spans(&self) -> &[(usize, Server<M>, u32)] {
        &self.spans
    }

    /// Members excluded so far, and why.
    pub fn excluded(&self) -> &BTreeMap<M, GenExclusion> {
        &self.excluded
    }

    /// Next action.
    pub fn poll_action(&mut self) -> Option<GenAction<M>> {
        self.out.pop_front()
    }

    /// A member that has the model, with its decode rate. Ignored when excluded or beyond
    /// the member limit; a member joining mid-answer serves only a later attempt.
    pub fn add_member(&mut self, m: M, decode_tok_s: f64) {
        if self.excluded.contains_key(&m)
            || (!self.members.contains_key(&m) && self.members.len() >= MAX_GEN_MEMBERS)
        {
            return;
        }
        let rate = if decode_tok_s.is_finite() {
            decode_tok_s.max(0.0)
        } else {
            0.0
        };
        self.members.insert(m, rate);
    }

    /// Begin: pick who serves.
    pub fn start(&mut self, now_ms: u64) {
        if self.current.is_none() && self.phase == Phase::Generating {
            self.dispatch(now_ms);
        }
    }

    /// The earliest time [`GenJob::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<u64> {
        match &self.current {
            Some(Attempt {
                by: Server::Member(_),
                deadline,
                ..
            }) => Some(*deadline),
            _ => None,
        }
    }

    /// Time passes: a late member is excluded and the answer continues elsewhere.
    pub fn tick(&mut self, now_ms: u64) {
        let late = match &self.current {
            Some(Attempt {
                by: Server::Member(m),
                deadline,
                n,
                ..
            }) if *deadline <= now_ms => Some((m.clone(), *n)),
            _ => None,
        };
        if let Some((m, n)) = late {
            if self.stopping {
                self.end_attempt(GenFinish::Cancelled);
            } else {
                self.out.push_back(GenAction::Send {
                    to: m.clone(),
                    msg: PeerMsg::Cancel {
                        job: self.id,
                        shard: None,
                    },
                });
                self.exclude(m, GenExclusion::Stalled, n, now_ms);
            }
        }
    }

    /// A member left (or its channel closed).
    pub fn member_left(&mut self, m: &M, now_ms: u64) {
        self.members.remove(m);
        if let Some((Server::Member(cur), n)) = self.serving()
            && cur == *m
        {
            if self.stopping {
                self.end_attempt(GenFinish::Cancelled);
            } else {
                self.exclude(cur, GenExclusion::Left, n, now_ms);
            }
        }
    }

    /// A generation message from member `from` (other messages are ignored).
    pub fn on_message(&mut self, from: &M, msg: &PeerMsg, now_ms: u64) {
        let Some(cur) = self.current.clone() else {
            return;
        };
        if cur.by != Server::Member(from.clone()) {
            return;
        }
        match msg {
            PeerMsg::GenTokens {
                job,
                attempt,
                start,
                tokens,
            } if *job == self.id && *attempt == cur.n => {
                if *start as usize != self.tokens.len() {
                    self.violation(from, "tokens out of order", cur.n, now_ms);
                } else if self.tokens.len() + tokens.len() > self.ask.max_tokens as usize {
                    self.violation(from, "tokens beyond max_tokens", cur.n, now_ms);
                } else if !tokens.is_empty() {
                    self.push_tokens(tokens);
                    if let Some(a) = self.current.as_mut() {
                        a.deadline = now_ms + self.cfg.token_gap_ms;
                    }
                }
            }
            PeerMsg::GenDone {
                job,
                attempt,
                end,
                finish,
            } if *job == self.id && *attempt == cur.n => {
                if *end as usize != self.tokens.len() {
                    self.violation(from, "end is not the answer's length", cur.n, now_ms);
                } else if *finish == GenFinish::Cancelled && !self.stopping {
                    self.violation(from, "cancelled unasked", cur.n, now_ms);
                } else {
                    self.end_attempt(*finish);
                }
            }
            PeerMsg::GenError {
                job,
                attempt,
                reason,
            } if *job == self.id && *attempt == cur.n => {
                if self.stopping {
                    self.end_attempt(GenFinish::Cancelled);
                } else {
                    let why = GenExclusion::Errored(truncate_label(reason.clone()));
                    self.exclude(from.clone(), why, cur.n, now_ms);
                }
            }
            _ => {}
        }
    }

    /// Tokens from the local engine, at `start..` (attempt as in [`GenAction::RunLocal`]).
    pub fn local_tokens(&mut self, attempt: u32, start: usize, tokens: &[u32]) {
        let Some(cur) = &self.current else { return };
        if cur.by != Server::Local || cur.n != attempt || start != self.tokens.len() {
            return;
        }
        let room = (self.ask.max_tokens as usize).saturating_sub(self.tokens.len());
        self.push_tokens(&tokens[..tokens.len().min(room)]);
    }

    /// The local generation ended: `Ok(finish)` or `Err(reason)` (which fails the job: this
    /// device is the last resort).
    pub fn local_done(&mut self, attempt: u32, outcome: Result<GenFinish, String>) {
        let Some(cur) = &self.current else { return };
        if cur.by != Server::Local || cur.n != attempt {
            return;
        }
        match outcome {
            Ok(f) => self.end_attempt(f),
            Err(e) => {
                self.current = None;
                self.phase = Phase::Done;
                self.out.push_back(GenAction::Failed(e));
            }
        }
    }

    /// The outcome of [`GenAction::Verify`] for an answer of `len` tokens: `Ok(())`, or
    /// `Err(position)` of the first rejected token. A result for another piece (the job moved
    /// on) is ignored.
    pub fn verified(&mut self, len: usize, outcome: Result<(), usize>, now_ms: u64) {
        if self.verifying != Some(len) || self.phase == Phase::Done {
            return;
        }
        self.verifying = None;
        match outcome {
            Ok(()) => {
                self.verified_upto = self.verified_upto.max(len);
                match self.phase {
                    Phase::Verifying => self.settle(),
                    Phase::Generating => self.maybe_verify(),
                    Phase::Done => {}
                }
            }
            Err(pos) if pos < self.tokens.len() => {
                let owner = self
                    .spans
                    .iter()
                    .rev()
                    .find(|s| s.0 <= pos)
                    .map(|s| (s.1.clone(), s.2));
                let Some((Server::Member(m), n)) = owner else {
                    // Our own token: the check and the engine disagree (a bug, not a peer's
                    // fault). Keep the answer, say it is not verified.
                    self.stop_current();
                    self.finished(Some(false));
                    return;
                };
                // Whoever serves now builds on the rejected token: stop it too.
                self.stop_current();
                self.tokens.truncate(pos);
                self.spans.retain(|s| s.0 < pos);
                self.verified_upto = self.verified_upto.min(pos);
                self.out.push_back(GenAction::Rewind { to: pos });
                self.finish = None;
                self.stopping = false;
                self.phase = Phase::Generating;
                self.exclude(m, GenExclusion::Rejected { position: pos }, n, now_ms);
            }
            Err(_) => self.finished(Some(false)),
        }
    }

    /// Tell whoever serves now to stop, and forget the attempt (its late output is dropped).
    fn stop_current(&mut self) {
        match self.current.take() {
            Some(Attempt {
                by: Server::Member(m),
                ..
            }) => self.out.push_back(GenAction::Send {
                to: m,
                msg: PeerMsg::Cancel {
                    job: self.id,
                    shard: None,
                },
            }),
            Some(Attempt {
                by: Server::Local, ..
            }) => self.out.push_back(GenAction::StopLocal),
            None => {}
        }
    }

    /// Stop: the server is told to stop; the answer so far is finished (and verified).
    pub fn cancel(&mut self, now_ms: u64) {
        match self.phase {
            Phase::Done => {}
            Phase::Verifying => {}
            Phase::Generating => {
                self.stopping = true;
                match self.current.clone() {
                    Some(Attempt {
                        by: Server::Member(m),
                        ..
                    }) => {
                        self.out.push_back(GenAction::Send {
                            to: m,
                            msg: PeerMsg::Cancel {
                                job: self.id,
                                shard: None,
                            },
                        });
                        if let Some(a) = self.current.as_mut() {
                            a.deadline = now_ms + self.cfg.stop_grace_ms;
                        }
                    }
                    Some(Attempt {
                        by: Server::Local, ..
                    }) => self.out.push_back(GenAction::StopLocal),
                    None => self.end_attempt(GenFinish::Cancelled),
                }
            }
        }
    }

    // ---- internals ----

    fn push_tokens(&mut self, tokens: &[u32]) {
        if tokens.is_empty() {
            return;
        }
        let start = self.tokens.len();
        if let Some(cur) = &self.current
            && self.spans.last().is_none_or(|s| s.2 != cur.n)
        {
            self.spans.push((start, cur.by.clone(), cur.n));
        }
        self.tokens.extend_from_slice(tokens);
        self.out.push_back(GenAction::Tokens {
            start,
            tokens: tokens.to_vec(),
        });
        self.maybe_verify();
    }

    /// The end of the last run of tokens a member produced (what verification must reach).
    fn remote_end(&self) -> usize {
        let mut end = 0;
        for (i, s) in self.spans.iter().enumerate() {
            if matches!(s.1, Server::Member(_)) {
                end = self.spans.get(i + 1).map_or(self.tokens.len(), |n| n.0);
            }
        }
        end
    }

    fn request_verify(&mut self, upto: usize) {
        self.verifying = Some(upto);
        self.out.push_back(GenAction::Verify {
            prompt: self.ask.prompt.clone(),
            answer: self.tokens[..upto].to_vec(),
            from: self.verified_upto,
        });
    }

    /// While generating: check what members sent once enough new tokens wait.
    fn maybe_verify(&mut self) {
        if !self.cfg.verify || self.verifying.is_some() || self.phase != Phase::Generating {
            return;
        }
        let end = self.remote_end();
        if end >= self.verified_upto + self.cfg.verify_every.max(1) {
            self.request_verify(end);
        }
    }

    /// After the answer ended: check the rest, or finish.
    fn settle(&mut self) {
        if self.verifying.is_some() {
            return; // the piece in flight comes back first
        }
        let remote = self.spans.iter().any(|s| matches!(s.1, Server::Member(_)));
        if !self.cfg.verify || !remote {
            self.finished(None);
            return;
        }
        let end = self.remote_end();
        if end > self.verified_upto {
            self.request_verify(end);
        } else {
            self.finished(Some(true));
        }
    }

    fn violation(&mut self, from: &M, what: &'static str, n: u32, now_ms: u64) {
        self.out.push_back(GenAction::Send {
            to: from.clone(),
            msg: PeerMsg::Cancel {
                job: self.id,
                shard: None,
            },
        });
        self.exclude(from.clone(), GenExclusion::Malformed(what), n, now_ms);
    }

    /// Exclude `m` (it served attempt `n`) and continue the answer elsewhere if it was
    /// serving.
    fn exclude(&mut self, m: M, why: GenExclusion, n: u32, now_ms: u64) {
        self.members.remove(&m);
        self.excluded.insert(m.clone(), why.clone());
        self.out.push_back(GenAction::Excluded {
            member: m.clone(),
            why,
            attempt: n,
        });
        let serving = matches!(&self.current, Some(a) if a.by == Server::Member(m));
        if serving || self.current.is_none() {
            self.current = None;
            if self.phase == Phase::Generating {
                self.dispatch(now_ms);
            }
        }
    }

    fn dispatch(&mut self, now_ms: u64) {
        let remaining = (self.ask.max_tokens as usize).saturating_sub(self.tokens.len());
        if remaining == 0 || self.finish.is_some() {
            self.end_attempt(self.finish.unwrap_or(GenFinish::Length));
            return;
        }
        let n = self.attempts;
        self.attempts += 1;
        let best = self
            .members
            .iter()
            .max_by(|a, b| a.1.total_cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(m, r)| (m.clone(), *r));
        let local = self.ask.local_decode_tok_s;
        let remote = best
            .clone()
            .filter(|(_, r)| n < MAX_ATTEMPTS && (self.ask.prefer_remote || *r > local));
        match remote {
            Some((m, rate)) => {
                let reason = if rate > local {
                    format!("{rate:.0} tok/s there, {local:.0} here")
                } else {
                    format!("asked to prefer members ({rate:.0} tok/s there, {local:.0} here)")
                };
                self.current = Some(Attempt {
                    n,
                    by: Server::Member(m.clone()),
                    base: self.tokens.len(),
                    deadline: now_ms + self.cfg.first_token_ms,
                });
                self.out.push_back(GenAction::Serving {
                    by: Server::Member(m.clone()),
                    reason,
                });
                self.out.push_back(GenAction::Send {
                    to: m,
                    msg: PeerMsg::GenRequest {
                        job: self.id,
                        attempt: n,
                        model: self.ask.model,
                        prompt: self.ask.prompt.clone(),
                        prefix: self.tokens.clone(),
                        max_tokens: self.ask.max_tokens,
                        sampling: self.ask.sampling.clone(),
                    },
                });
            }
            None => {
                let reason = match best {
                    None if self.members.is_empty() && self.excluded.is_empty() => {
                        "no member has this model".to_string()
                    }
                    None => "no member left to ask".to_string(),
                    Some(_) if n >= MAX_ATTEMPTS => "too many attempts".to_string(),
                    Some((_, r)) => format!("faster here ({local:.0} tok/s, best member {r:.0})"),
                };
                self.current = Some(Attempt {
                    n,
                    by: Server::Local,
                    base: self.tokens.len(),
                    deadline: u64::MAX,
                });
                self.out.push_back(GenAction::Serving {
                    by: Server::Local,
                    reason,
                });
                self.out.push_back(GenAction::RunLocal {
                    attempt: n,
                    prompt: self.ask.prompt.clone(),
                    prefix: self.tokens.clone(),
                    max_tokens: self.ask.max_tokens,
                });
            }
        }
    }

    /// The current attempt ended with `finish`: verify the rest (or finish).
    fn end_attempt(&mut self, finish: GenFinish) {
        self.current = None;
        self.finish = Some(if self.stopping {
            GenFinish::Cancelled
        } else {
            finish
        });
        self.phase = Phase::Verifying;
        self.settle();
    }

    fn finished(&mut self, verified: Option<bool>) {
        self.phase = Phase::Done;
        self.current = None;
        self.out.push_back(GenAction::Finished {
            tokens: self.tokens.clone(),
            finish: self.finish.unwrap_or(GenFinish::Stop),
            verified,
        });
    }

    /// The answer positions attempt `n` produced (after any rewind), or `None`.
    pub fn attempt_range(&self, n: u32) -> Option<std::ops::Range<usize>> {
        let i = self.spans.iter().position(|s| s.2 == n)?;
        let end = self.spans.get(i + 1).map_or(self.tokens.len(), |s| s.0);
        Some(self.spans[i].0..end)
    }

    /// The base (answer length at request) of the attempt being served.
    pub fn current_base(&self) -> Option<usize> {
        self.current.as_ref().map(|a| a.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(max: u32, local: f64) -> GenAsk {
        GenAsk {
            model: [7; 32],
            prompt: vec![1, 2, 3],
            max_tokens: max,
            sampling: "{}".into(),
            local_decode_tok_s: local,
            prefer_remote: false,
        }
    }

    /// Members preferred (the choice is not under test).
    fn ask_remote(max: u32) -> GenAsk {
        GenAsk {
            prefer_remote: true,
            ..ask(max, 1.0)
        }
    }

    fn drain(j: &mut GenJob<u8>) -> Vec<GenAction<u8>> {
        std::iter::from_fn(|| j.poll_action()).collect()
    }

    fn toks(j: &GenJob<u8>, n: u32, start: u32, t: &[u32]) -> PeerMsg {
        PeerMsg::GenTokens {
            job: j.id(),
            attempt: n,
            start,
            tokens: t.to_vec(),
        }
    }

    fn done(j: &GenJob<u8>, n: u32, end: u32, finish: GenFinish) -> PeerMsg {
        PeerMsg::GenDone {
            job: j.id(),
            attempt: n,
            end,
            finish,
        }
    }

    fn requests(a: &[GenAction<u8>]) -> Vec<(u8, u32, Vec<u32>)> {
        a.iter()
            .filter_map(|x| match x {
                GenAction::Send {
                    to,
                    msg:
                        PeerMsg::GenRequest {
                            attempt, prefix, ..
                        },
                } => Some((*to, *attempt, prefix.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_fastest_member_serves_and_the_answer_is_verified() {
        let mut j = GenJob::new(JobId([1; 16]), ask(10, 20.0), GenConfig::default());
        j.add_member(1, 50.0);
        j.add_member(2, 200.0);
        j.add_member(3, 10.0);
        j.start(0);
        let a = drain(&mut j);
        assert_eq!(requests(&a), vec![(2, 0, vec![])]);
        j.on_message(&2, &toks(&j, 0, 0, &[5, 6]), 10);
        j.on_message(&2, &toks(&j, 0, 2, &[7]), 20);
        j.on_message(&2, &done(&j, 0, 3, GenFinish::Stop), 30);
        let a = drain(&mut j);
        assert!(a.contains(&GenAction::Verify {
            prompt: vec![1, 2, 3],
            answer: vec![5, 6, 7],
            from: 0
        }));
        j.verified(3, Ok(()), 40);
        let a = drain(&mut j);
        assert_eq!(
            a,
            vec![GenAction::Finished {
                tokens: vec![5, 6, 7],
                finish: GenFinish::Stop,
                verified: Some(true)
            }]
        );
        assert!(!j.is_running());
    }

    #[test]
    fn slower_members_lose_to_this_device_unless_preferred() {
        let mut j = GenJob::new(JobId([1; 16]), ask(10, 100.0), GenConfig::default());
        j.add_member(1, 50.0);
        j.start(0);
        let a = drain(&mut j);
        assert!(requests(&a).is_empty());
        assert!(matches!(a[1], GenAction::RunLocal { attempt: 0, .. }));
        j.local_tokens(0, 0, &[4, 5]);
        j.local_done(0, Ok(GenFinish::Stop));
        let a = drain(&mut j);
        assert_eq!(
            a.last(),
            Some(&GenAction::Finished {
                tokens: vec![4, 5],
                finish: GenFinish::Stop,
                verified: None
            })
        );
        let preferring = GenAsk {
            prefer_remote: true,
            ..ask(10, 100.0)
        };
        let mut j = GenJob::new(JobId([1; 16]), preferring, GenConfig::default());
        j.add_member(1, 50.0);
        j.start(0);
        assert_eq!(requests(&drain(&mut j)), vec![(1, 0, vec![])]);
    }

    #[test]
    fn a_member_that_leaves_stalls_or_errs_is_replaced_with_the_answer_so_far() {
        let cfg = GenConfig::default();
        let mut j = GenJob::new(JobId([1; 16]), ask_remote(20), cfg.clone());
        for m in 1..=3 {
            j.add_member(m, f64::from(m) * 10.0);
        }
        j.start(0);
        assert_eq!(requests(&drain(&mut j)), vec![(3, 0, vec![])]);
        j.on_message(&3, &toks(&j, 0, 0, &[10, 11]), 5);
        j.member_left(&3, 6);
        let a = drain(&mut j);
        assert!(a.iter().any(|x| matches!(
            x,
            GenAction::Excluded {
                member: 3,
                why: GenExclusion::Left,
                attempt: 0
            }
        )));
        assert_eq!(requests(&a), vec![(2, 1, vec![10, 11])]);
        // A late token of the old attempt is dropped.
        j.on_message(&3, &toks(&j, 0, 2, &[99]), 7);
        j.on_message(&2, &toks(&j, 1, 2, &[12]), 8);
        // Member 2 stalls: after the gap it is cancelled and excluded.
        j.tick(8 + cfg.token_gap_ms);
        let a = drain(&mut j);
        assert!(a.contains(&GenAction::Send {
            to: 2,
            msg: PeerMsg::Cancel {
                job: j.id(),
                shard: None
            }
        }));
        assert_eq!(requests(&a), vec![(1, 2, vec![10, 11, 12])]);
        j.on_message(
            &1,
            &PeerMsg::GenError {
                job: j.id(),
                attempt: 2,
                reason: "busy".into(),
            },
            9,
        );
        let a = drain(&mut j);
        assert!(a.iter().any(|x| matches!(x, GenAction::RunLocal { prefix, attempt: 3, .. } if *prefix == vec![10, 11, 12])));
        j.local_tokens(3, 3, &[13]);
        j.local_done(3, Ok(GenFinish::Stop));
        // Only the members' tokens are checked (the local tail is this device's own).
        assert!(
            drain(&mut j).iter().any(
                |x| matches!(x, GenAction::Verify { answer, from: 0, .. } if answer.len() == 3)
            )
        );
        j.verified(3, Ok(()), 10);
        assert_eq!(
            drain(&mut j),
            vec![GenAction::Finished {
                tokens: vec![10, 11, 12, 13],
                finish: GenFinish::Stop,
                verified: Some(true)
            }]
        );
        assert_eq!(j.attempt_range(0), Some(0..2));
        assert_eq!(j.attempt_range(1), Some(2..3));
        assert_eq!(j.attempt_range(3), Some(3..4));
    }

    #[test]
    fn a_rejected_token_excludes_its_producer_and_generation_resumes_before_it() {
        let cfg = GenConfig::default();
        let mut j = GenJob::new(JobId([1; 16]), ask_remote(20), cfg);
        j.add_member(1, 10.0);
        j.add_member(2, 20.0);
        j.start(0);
        drain(&mut j);
        j.on_message(&2, &toks(&j, 0, 0, &[1, 2, 3, 4, 5]), 1);
        j.on_message(&2, &done(&j, 0, 5, GenFinish::Stop), 2);
        drain(&mut j);
        j.verified(5, Err(3), 3);
        let a = drain(&mut j);
        assert!(a.contains(&GenAction::Rewind { to: 3 }));
        assert!(a.contains(&GenAction::Excluded {
            member: 2,
            why: GenExclusion::Rejected { position: 3 },
            attempt: 0
        }));
        assert_eq!(requests(&a), vec![(1, 1, vec![1, 2, 3])]);
        assert_eq!(j.tokens(), &[1, 2, 3]);
        // Protocol violations exclude too: a token at the wrong position.
        j.on_message(&1, &toks(&j, 1, 5, &[9]), 4);
        let a = drain(&mut j);
        assert!(a.iter().any(|x| matches!(
            x,
            GenAction::Excluded {
                member: 1,
                why: GenExclusion::Malformed(_),
                ..
            }
        )));
        assert!(
            a.iter()
                .any(|x| matches!(x, GenAction::RunLocal { attempt: 2, .. }))
        );
    }

    #[test]
    fn stop_cancels_the_member_and_verifies_the_partial_answer() {
        let cfg = GenConfig::default();
        let mut j = GenJob::new(JobId([1; 16]), ask_remote(20), cfg.clone());
        j.add_member(1, 10.0);
        j.start(0);
        drain(&mut j);
        j.on_message(&1, &toks(&j, 0, 0, &[1, 2]), 1);
        j.cancel(2);
        let a = drain(&mut j);
        assert!(a.contains(&GenAction::Send {
            to: 1,
            msg: PeerMsg::Cancel {
                job: j.id(),
                shard: None
            }
        }));
        // One more token in flight, then the end of stream.
        j.on_message(&1, &toks(&j, 0, 2, &[3]), 3);
        j.on_message(&1, &done(&j, 0, 3, GenFinish::Cancelled), 4);
        let a = drain(&mut j);
        assert!(a.contains(&GenAction::Verify {
            prompt: vec![1, 2, 3],
            answer: vec![1, 2, 3],
            from: 0
        }));
        j.verified(3, Ok(()), 5);
        assert_eq!(
            drain(&mut j),
            vec![GenAction::Finished {
                tokens: vec![1, 2, 3],
                finish: GenFinish::Cancelled,
                verified: Some(true)
            }]
        );
        // A member that never ends its stream after a stop: the grace period ends it.
        let mut j = GenJob::new(JobId([2; 16]), ask_remote(20), cfg.clone());
        j.add_member(1, 10.0);
        j.start(0);
        j.on_message(&1, &toks(&j, 0, 0, &[1]), 1);
        j.cancel(2);
        drain(&mut j);
        j.tick(2 + cfg.stop_grace_ms);
        assert!(
            drain(&mut j)
                .iter()
                .any(|x| matches!(x, GenAction::Verify { .. }))
        );
    }

    #[test]
    fn tokens_beyond_max_tokens_and_a_wrong_end_are_violations() {
        let cfg = GenConfig::default();
        let mut j = GenJob::new(JobId([1; 16]), ask_remote(3), cfg);
        j.add_member(1, 10.0);
        j.add_member(2, 5.0);
        j.start(0);
        drain(&mut j);
        j.on_message(&1, &toks(&j, 0, 0, &[1, 2, 3, 4]), 1);
        let a = drain(&mut j);
        assert!(
            a.iter()
                .any(|x| matches!(x, GenAction::Excluded { member: 1, .. }))
        );
        assert_eq!(requests(&a), vec![(2, 1, vec![])]);
        j.on_message(&2, &toks(&j, 1, 0, &[1]), 2);
        j.on_message(&2, &done(&j, 1, 2, GenFinish::Stop), 3);
        let a = drain(&mut j);
        assert!(a.iter().any(|x| matches!(
            x,
            GenAction::Excluded {
                member: 2,
                why: GenExclusion::Malformed(_),
                ..
            }
        )));
        assert!(
            a.iter()
                .any(|x| matches!(x, GenAction::RunLocal { attempt: 2, .. }))
        );
    }

    #[test]
    fn members_tokens_are_checked_in_pieces_while_streaming_and_a_bad_one_stops_the_server() {
        let cfg = GenConfig {
            verify_every: 2,
            ..GenConfig::default()
        };
        let mut j = GenJob::new(JobId([3; 16]), ask_remote(20), cfg);
        j.add_member(1, 10.0);
        j.add_member(2, 5.0);
        j.start(0);
        drain(&mut j);
        j.on_message(&1, &toks(&j, 0, 0, &[1, 2]), 1);
        let verify = |a: &[GenAction<u8>]| {
            a.iter()
                .filter_map(|x| match x {
                    GenAction::Verify { answer, from, .. } => Some((answer.len(), *from)),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(verify(&drain(&mut j)), vec![(2, 0)]);
        // One piece at a time: more tokens wait for the first piece's result.
        j.on_message(&1, &toks(&j, 0, 2, &[3, 4, 5]), 2);
        assert!(verify(&drain(&mut j)).is_empty());
        j.verified(2, Ok(()), 3);
        assert_eq!(verify(&drain(&mut j)), vec![(5, 2)]);
        // A stale result (another length) is ignored.
        j.verified(2, Err(1), 4);
        assert!(drain(&mut j).is_empty());
        // Token 3 fails while member 1 is still streaming: it is stopped and excluded, the
        // answer goes back to 3 tokens and member 2 continues from there.
        j.verified(5, Err(3), 5);
        let a = drain(&mut j);
        assert!(a.contains(&GenAction::Rewind { to: 3 }));
        assert!(a.contains(&GenAction::Send {
            to: 1,
            msg: PeerMsg::Cancel {
                job: j.id(),
                shard: None
            }
        }));
        assert_eq!(requests(&a), vec![(2, 1, vec![1, 2, 3])]);
        // Member 1's late tokens are dropped; member 2 finishes; only the rest is checked.
        j.on_message(&1, &toks(&j, 0, 5, &[6]), 6);
        j.on_message(&2, &toks(&j, 1, 3, &[9]), 7);
        j.on_message(&2, &done(&j, 1, 4, GenFinish::Stop), 8);
        assert_eq!(verify(&drain(&mut j)), vec![(4, 2)]);
        j.verified(4, Ok(()), 9);
        assert_eq!(
            drain(&mut j),
            vec![GenAction::Finished {
                tokens: vec![1, 2, 3, 9],
                finish: GenFinish::Stop,
                verified: Some(true)
            }]
        );
    }

    #[test]
    fn a_local_tail_is_not_checked() {
        let mut j = GenJob::new(JobId([4; 16]), ask_remote(20), GenConfig::default());
        j.add_member(1, 10.0);
        j.start(0);
        drain(&mut j);
        j.on_message(&1, &toks(&j, 0, 0, &[1, 2]), 1);
        j.member_left(&1, 2);
        drain(&mut j);
        j.local_tokens(1, 2, &[3, 4, 5]);
        j.local_done(1, Ok(GenFinish::Stop));
        let a = drain(&mut j);
        assert!(a.contains(&GenAction::Verify {
            prompt: vec![1, 2, 3],
            answer: vec![1, 2],
            from: 0
        }));
        j.verified(2, Ok(()), 3);
        assert_eq!(
            drain(&mut j),
            vec![GenAction::Finished {
                tokens: vec![1, 2, 3, 4, 5],
                finish: GenFinish::Stop,
                verified: Some(true)
            }]
        );
    }
}
