//! The rollout record: where a canary rollout stands, in a form that survives restarts.
//!
//! States (SPEC §6): `idle`, `progressing` (at step k), `paused`, `promoted`, `rolled_back`,
//! `aborted`. The controller drives the transitions; this module holds the persisted record
//! and the pure rules (which weights a step means, which actions a state allows), so they can
//! be read and tested apart from the controller's plumbing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Idle,
    Progressing,
    Paused,
    Promoted,
    RolledBack,
    Aborted,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Progressing => "progressing",
            Phase::Paused => "paused",
            Phase::Promoted => "promoted",
            Phase::RolledBack => "rolled_back",
            Phase::Aborted => "aborted",
        }
    }

    /// A rollout that still owns the weights.
    pub fn is_active(self) -> bool {
        matches!(self, Phase::Progressing | Phase::Paused)
    }
}

/// One rollout, persisted in `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutRecord {
    pub phase: Phase,
    pub stable: String,
    pub canary: String,
    /// The canary's release this rollout is about.
    pub canary_release: String,
    /// Index of the current step (0-based).
    pub step: usize,
    pub steps: usize,
    /// Time spent in the current step before a pause, so a resume continues the clock.
    #[serde(default)]
    pub step_elapsed_ms: u64,
    pub failed_checks: u32,
    /// Waiting for gate webhooks before applying `step`.
    #[serde(default)]
    pub awaiting_gate: bool,
    /// Why it paused, rolled back or was aborted.
    #[serde(default)]
    pub reason: Option<String>,
    pub started_at: String,
    #[serde(default)]
    pub finished_at: Option<String>,
}

/// The weights a rollout step means: the canary gets `traffic` percent, the stable the rest,
/// every other version nothing.
pub fn step_weights(
    versions: impl IntoIterator<Item = impl AsRef<str>>,
    stable: &str,
    canary: &str,
    traffic: u32,
) -> BTreeMap<String, u32> {
    versions
        .into_iter()
        .map(|v| {
            let v = v.as_ref();
            let w = if v == canary {
                traffic
            } else if v == stable {
                100 - traffic.min(100)
            } else {
                0
            };
            (v.to_string(), w)
        })
        .collect()
}

/// An operator's rollout action (`POST .../rollout/{action}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutAction {
    Start,
    Pause,
    Resume,
    Promote,
    Abort,
}

impl RolloutAction {
    pub fn parse(s: &str) -> Option<RolloutAction> {
        Some(match s {
            "start" => RolloutAction::Start,
            "pause" => RolloutAction::Pause,
            "resume" => RolloutAction::Resume,
            "promote" => RolloutAction::Promote,
            "abort" => RolloutAction::Abort,
            _ => return None,
        })
    }

    /// Whether `self` is allowed in `phase` (`None` = no rollout yet); else the 409 message.
    pub fn allowed_in(self, phase: Option<Phase>) -> Result<(), String> {
        let phase = phase.unwrap_or(Phase::Idle);
        let ok = match self {
            RolloutAction::Start => !phase.is_active(),
            RolloutAction::Pause => phase == Phase::Progressing,
            RolloutAction::Resume => matches!(phase, Phase::Paused | Phase::RolledBack),
            RolloutAction::Promote | RolloutAction::Abort => phase.is_active(),
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "cannot {} a rollout that is {}",
                match self {
                    RolloutAction::Start => "start",
                    RolloutAction::Pause => "pause",
                    RolloutAction::Resume => "resume",
                    RolloutAction::Promote => "promote",
                    RolloutAction::Abort => "abort",
                },
                phase.as_str()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_gives_the_canary_its_share_and_the_stable_the_rest() {
        let w = step_weights(["blue", "green", "red"], "blue", "green", 10);
        assert_eq!(w["green"], 10);
        assert_eq!(w["blue"], 90);
        assert_eq!(w["red"], 0);
    }

    #[test]
    fn actions_follow_the_state_machine() {
        use RolloutAction::*;
        assert!(Start.allowed_in(None).is_ok());
        assert!(Start.allowed_in(Some(Phase::Progressing)).is_err());
        assert!(Pause.allowed_in(Some(Phase::Progressing)).is_ok());
        assert!(Pause.allowed_in(Some(Phase::Paused)).is_err());
        assert!(Resume.allowed_in(Some(Phase::Paused)).is_ok());
        assert!(Resume.allowed_in(Some(Phase::RolledBack)).is_ok());
        assert!(Promote.allowed_in(Some(Phase::Promoted)).is_err());
        assert_eq!(
            Abort.allowed_in(Some(Phase::Aborted)).unwrap_err(),
            "cannot abort a rollout that is aborted"
        );
    }
}
