//! The UI's state vocabulary: the words `web/shoal.js`, `web/pool.js`, `web/circle.js` and
//! `web/chat.js` put in
//! their state snapshots, as Rust enums (one definition; an unknown word maps to a stated
//! fallback instead of failing the whole snapshot). The job engine's member states are written
//! with the same words by the modules that export engines to JS ([`MemberStatus::of`]).

use serde::{Deserialize, Serialize};

/// The model's state (`shoal.js` `state.status`).
#[derive(Deserialize, Clone, Copy, Default, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum ModelStatus {
    /// Weights downloading or the model building.
    Loading,
    /// Ready to embed.
    Ready,
    /// Could not load (the message says why).
    Error,
    /// Before the pool starts.
    #[default]
    #[serde(other)]
    Starting,
}

impl ModelStatus {
    /// The word (also a CSS class).
    pub fn label(self) -> &'static str {
        match self {
            ModelStatus::Starting => "starting",
            ModelStatus::Loading => "loading",
            ModelStatus::Ready => "ready",
            ModelStatus::Error => "error",
        }
    }
}

/// The assistant's model state (`chat.js` `state.status`).
#[derive(Deserialize, Clone, Copy, Default, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum ChatStatus {
    /// Loading (download, verification, build).
    Loading,
    /// Ready to answer.
    Ready,
    /// Could not load (the message says why).
    Error,
    /// Not loaded (it loads on the first message).
    #[default]
    #[serde(other)]
    Idle,
}

/// Arithmetic of the CPU engine (`shoal.js` `state.precision`).
#[derive(Deserialize, Clone, Copy, Default, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 arithmetic.
    Exact,
    /// Integer dense layers held to the f32 accuracy bound.
    #[default]
    #[serde(other)]
    Fast,
}

/// A pool worker's state (`pool.js` `workers[].status`).
#[derive(Deserialize, Clone, Copy, Default, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum WorkerStatus {
    /// Loading its model.
    Loading,
    /// Ready.
    Ready,
    /// Stopped (crashed or terminated; restarted unless it keeps failing).
    Dead,
    /// Not started.
    #[default]
    #[serde(other)]
    Idle,
}

impl WorkerStatus {
    /// The word (also a CSS class).
    pub fn label(self) -> &'static str {
        match self {
            WorkerStatus::Idle => "idle",
            WorkerStatus::Loading => "loading",
            WorkerStatus::Ready => "ready",
            WorkerStatus::Dead => "dead",
        }
    }
}

/// A notice's level (`shoal.js` `state.notices[].level`).
#[derive(Deserialize, Clone, Copy, Default, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum NoticeLevel {
    /// Something degraded.
    Warn,
    /// Something failed.
    Error,
    /// Information.
    #[default]
    #[serde(other)]
    Info,
}

impl NoticeLevel {
    /// The word (also a CSS class).
    pub fn label(self) -> &'static str {
        match self {
            NoticeLevel::Info => "info",
            NoticeLevel::Warn => "warn",
            NoticeLevel::Error => "error",
        }
    }
}

/// Where this tab is with its circle (`circle.js` `state.status`).
#[derive(Deserialize, Clone, Copy, Default, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum CircleStatus {
    /// Joining (model, calibration, relay).
    Joining,
    /// Signaling through a relay.
    Connected,
    /// Joining failed (the message says why).
    Error,
    /// In no circle.
    #[default]
    #[serde(other)]
    Off,
}

impl CircleStatus {
    pub fn label(self) -> &'static str {
        match self {
            CircleStatus::Off => "off",
            CircleStatus::Joining => "joining",
            CircleStatus::Connected => "connected",
            CircleStatus::Error => "error",
        }
    }
}

/// A peer's link (`peers[].state`).
#[derive(Deserialize, Clone, Copy, Default, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    /// Data channel open.
    Up,
    /// Gone.
    #[default]
    #[serde(other)]
    Down,
}

impl PeerState {
    pub fn label(self) -> &'static str {
        match self {
            PeerState::Up => "up",
            PeerState::Down => "down",
        }
    }
}

/// A job member's state (the engine's `MemberStatus`, excluded ones by reason).
#[derive(Serialize, Deserialize, Clone, Copy, Default, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum MemberStatus {
    /// Working or ready.
    #[default]
    Active,
    /// Left (channel closed, worker gone).
    Left,
    /// Missed its deadlines.
    Stalled,
    /// Reported an error.
    Errored,
    /// Returned a malformed result.
    Malformed,
    /// Excluded for a reason this view does not know.
    #[serde(other)]
    Excluded,
}

impl MemberStatus {
    pub fn label(self) -> &'static str {
        match self {
            MemberStatus::Active => "active",
            MemberStatus::Left => "left",
            MemberStatus::Stalled => "stalled",
            MemberStatus::Errored => "errored",
            MemberStatus::Malformed => "malformed",
            MemberStatus::Excluded => "excluded",
        }
    }
}

impl MemberStatus {
    /// The job engine's member state in these words.
    pub fn of(s: &node_lite::jobs::MemberStatus) -> Self {
        use node_lite::jobs::{Exclusion, MemberStatus as M};
        match s {
            M::Active => MemberStatus::Active,
            M::Excluded(Exclusion::Left) => MemberStatus::Left,
            M::Excluded(Exclusion::Stalled) => MemberStatus::Stalled,
            M::Excluded(Exclusion::Errored(_)) => MemberStatus::Errored,
            M::Excluded(Exclusion::Malformed(_)) => MemberStatus::Malformed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use node_lite::jobs::{Exclusion, MemberStatus as Engine};

    #[test]
    fn words_round_trip_and_unknown_words_fall_back() {
        let m: Vec<MemberStatus> =
            serde_json::from_str(r#"["active","left","stalled","errored","malformed","gone?"]"#)
                .unwrap();
        assert_eq!(
            m,
            [
                MemberStatus::Active,
                MemberStatus::Left,
                MemberStatus::Stalled,
                MemberStatus::Errored,
                MemberStatus::Malformed,
                MemberStatus::Excluded
            ]
        );
        for s in m {
            assert_eq!(serde_json::to_value(s).unwrap(), s.label());
        }
        let w: Vec<WorkerStatus> = serde_json::from_str(r#"["ready","dead","zombie"]"#).unwrap();
        assert_eq!(
            w,
            [WorkerStatus::Ready, WorkerStatus::Dead, WorkerStatus::Idle]
        );
        let s: ModelStatus = serde_json::from_str(r#""error""#).unwrap();
        assert_eq!(s, ModelStatus::Error);
        let c: CircleStatus = serde_json::from_str(r#""connected""#).unwrap();
        assert_eq!(c.label(), "connected");
        let c: Vec<ChatStatus> =
            serde_json::from_str(r#"["loading","ready","error","idle","?"]"#).unwrap();
        assert_eq!(
            c,
            [
                ChatStatus::Loading,
                ChatStatus::Ready,
                ChatStatus::Error,
                ChatStatus::Idle,
                ChatStatus::Idle
            ]
        );
        let p: Precision = serde_json::from_str(r#""exact""#).unwrap();
        assert_eq!(p, Precision::Exact);
        let n: NoticeLevel = serde_json::from_str(r#""warn""#).unwrap();
        assert_eq!(n.label(), "warn");
        let u: PeerState = serde_json::from_str(r#""up""#).unwrap();
        assert_eq!(u.label(), "up");
    }

    #[test]
    fn engine_states_map_to_the_words() {
        assert_eq!(MemberStatus::of(&Engine::Active), MemberStatus::Active);
        let e = |x| MemberStatus::of(&Engine::Excluded(x));
        assert_eq!(e(Exclusion::Left), MemberStatus::Left);
        assert_eq!(e(Exclusion::Stalled), MemberStatus::Stalled);
        assert_eq!(e(Exclusion::Errored("x".into())), MemberStatus::Errored);
        assert_eq!(e(Exclusion::Malformed("y")), MemberStatus::Malformed);
    }
}
