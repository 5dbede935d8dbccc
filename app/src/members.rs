//! A circle job's members as the page shows them: this tab's parts (its self member and its
//! model workers, each a member of the job) merged into one row with the workers listed under
//! it; peers one row each. Pure (no web-sys): unit-tested natively.

use std::collections::BTreeMap;

use node_lite::jobs::{MemberStatus as EngineStatus, Progress};
use node_lite::rtc::Member;
use serde::Serialize;

use crate::state::MemberStatus;

/// One member row (camelCase JSON for `circle.js`).
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct JsProgress {
    /// Peer id (text form), or the worker index.
    pub id: String,
    /// Short name.
    pub short: String,
    /// This tab.
    pub is_self: bool,
    /// State in the job.
    pub status: MemberStatus,
    /// Shards done.
    pub shards_done: u32,
    /// Texts done.
    pub texts_done: u64,
    /// Shards assigned now.
    pub in_flight: usize,
    /// Measured texts/s.
    pub rate: f64,
    /// The whole job's texts done.
    pub job_texts_done: u64,
    /// The whole job's texts.
    pub job_texts_total: u64,
    /// This tab's row only: its model workers (`id` = worker index).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<JsProgress>,
}

fn progress(p: &Progress<Member>) -> JsProgress {
    JsProgress {
        id: match p.member {
            Member::Peer(peer) => peer.to_string(),
            Member::Local(i) => i.to_string(),
        },
        short: p.member.short(),
        is_self: p.is_self,
        status: MemberStatus::of(&p.status),
        shards_done: p.shards_done,
        texts_done: p.texts_done,
        in_flight: p.in_flight,
        rate: p.rate,
        job_texts_done: p.job_texts_done,
        job_texts_total: p.job_texts_total,
        workers: Vec::new(),
    }
}

/// Whether a member is this tab: its self member or one of its workers.
fn is_tab(p: &Progress<Member>) -> bool {
    p.is_self || matches!(p.member, Member::Local(_))
}

/// This tab's row: the self member and the workers summed (active if any part is).
fn tab_row(parts: &[&Progress<Member>]) -> Option<JsProgress> {
    let me = parts.iter().find(|p| p.is_self)?;
    let mut row = progress(me);
    for p in parts.iter().filter(|p| !p.is_self) {
        row.shards_done += p.shards_done;
        row.texts_done += p.texts_done;
        row.in_flight += p.in_flight;
        if p.status == EngineStatus::Active {
            row.rate += p.rate;
        }
        row.job_texts_done = row.job_texts_done.max(p.job_texts_done);
        row.workers.push(progress(p));
    }
    if row.workers.iter().any(|w| w.status == MemberStatus::Active) {
        row.status = MemberStatus::Active;
    }
    // Only the fallback's nominal rate when workers did the work.
    if !row.workers.is_empty() && me.texts_done == 0 {
        row.rate -= me.rate;
    }
    Some(row)
}

/// Every member's row, this tab's parts merged into one.
pub fn rows(members: &[Progress<Member>]) -> Vec<JsProgress> {
    let tab: Vec<&Progress<Member>> = members.iter().filter(|p| is_tab(p)).collect();
    tab_row(&tab)
        .into_iter()
        .chain(members.iter().filter(|p| !is_tab(p)).map(progress))
        .collect()
}

/// The latest progress of this tab's parts (self member and workers) in the running job.
#[derive(Default)]
pub struct TabParts(BTreeMap<Member, Progress<Member>>);

impl TabParts {
    /// The job ended: forget its parts.
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// A progress event as the UI sees it: this tab's parts merged into one row.
    pub fn on_progress(&mut self, p: Progress<Member>) -> JsProgress {
        if !is_tab(&p) {
            return progress(&p);
        }
        let job = (p.job_texts_done, p.job_texts_total);
        self.0.insert(p.member, p);
        let parts: Vec<&Progress<Member>> = self.0.values().collect();
        let mut row = match tab_row(&parts) {
            Some(row) => row,
            // No self progress yet: the first worker's row under the tab's name.
            None => {
                let mut r = progress(parts[0]);
                r.is_self = true;
                r
            }
        };
        (row.job_texts_done, row.job_texts_total) = job;
        row
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use node_lite::identity::PeerId;
    use node_lite::jobs::Exclusion;

    fn part(
        member: Member,
        is_self: bool,
        texts: u64,
        rate: f64,
        status: EngineStatus,
    ) -> Progress<Member> {
        Progress {
            member,
            is_self,
            status,
            shards_done: (texts / 8) as u32,
            texts_done: texts,
            in_flight: 0,
            rate,
            job_texts_done: 100,
            job_texts_total: 200,
        }
    }

    #[test]
    fn the_tab_is_one_row_with_its_workers_under_it() {
        let me = PeerId([1; 32]);
        let peer = PeerId([2; 32]);
        let members = vec![
            part(Member::Peer(me), true, 0, 1e-3, EngineStatus::Active),
            part(Member::Local(0), false, 40, 30.0, EngineStatus::Active),
            part(
                Member::Local(1),
                false,
                16,
                25.0,
                EngineStatus::Excluded(Exclusion::Left),
            ),
            part(Member::Peer(peer), false, 44, 50.0, EngineStatus::Active),
        ];
        let rows = rows(&members);
        assert_eq!(rows.len(), 2);
        let tab = &rows[0];
        assert!(tab.is_self);
        assert_eq!(tab.id, me.to_string());
        assert_eq!(tab.texts_done, 56);
        assert_eq!(tab.shards_done, 5 + 2);
        assert_eq!(tab.status, MemberStatus::Active);
        // The active worker's rate only; the fallback's nominal rate dropped.
        assert!((tab.rate - 30.0).abs() < 1e-9, "{}", tab.rate);
        assert_eq!(tab.workers.len(), 2);
        assert_eq!(tab.workers[1].status, MemberStatus::Left);
        assert_eq!(tab.workers[1].short, "worker 2");
        assert!(!rows[1].is_self && rows[1].id == peer.to_string() && rows[1].texts_done == 44);
        // What circle.js and the e2e read: camelCase, the sum over rows is the job's texts.
        let json = serde_json::to_value(&rows).unwrap();
        assert_eq!(json[0]["textsDone"], 56);
        assert_eq!(json[0]["workers"][1]["status"], "left");
        assert!(json[1].get("workers").is_none());
    }

    #[test]
    fn live_progress_keeps_the_latest_of_each_part() {
        let me = PeerId([1; 32]);
        let mut tab = TabParts::default();
        // A worker reports before the self member has: still this tab's row.
        let r = tab.on_progress(part(Member::Local(0), false, 8, 20.0, EngineStatus::Active));
        assert!(r.is_self && r.texts_done == 8);
        tab.on_progress(part(Member::Peer(me), true, 0, 1e-3, EngineStatus::Active));
        tab.on_progress(part(
            Member::Local(1),
            false,
            16,
            20.0,
            EngineStatus::Active,
        ));
        let r = tab.on_progress(part(
            Member::Local(0),
            false,
            24,
            20.0,
            EngineStatus::Active,
        ));
        assert_eq!((r.texts_done, r.workers.len()), (40, 2));
        assert_eq!((r.job_texts_done, r.job_texts_total), (100, 200));
        // A peer's progress passes through on its own.
        let p = tab.on_progress(part(
            Member::Peer(PeerId([3; 32])),
            false,
            8,
            9.0,
            EngineStatus::Active,
        ));
        assert!(!p.is_self && p.workers.is_empty());
        tab.clear();
        let r = tab.on_progress(part(Member::Peer(me), true, 8, 5.0, EngineStatus::Active));
        assert_eq!((r.texts_done, r.workers.len()), (8, 0));
    }
}
