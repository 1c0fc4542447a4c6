//! The rollout record: where a canary rollout stands, in a form that survives restarts.
//!
//! States (SPEC §6): `idle`, `progressing` (at step k), `paused`, `promoted`, `rolled_back`,
//! `aborted`. This module holds the persisted [`RolloutRecord`], the steps a rollout walks
//! ([`StepSpec`]), which actions a state allows, and who is stable and canary ([`roles`]);
//! [`transitions`] turns each state change into a change to commit. All of it is pure.
//!
//! The record is meant to grow: later features (fleet bookkeeping, mirror steps, impact
//! counts) add fields with `#[serde(default)]`, a judge keeps its own memory in
//! [`RolloutRecord::judges`], and unknown fields written by a newer binary are kept in
//! [`RolloutRecord::extra`] — no command needs to change for any of that.

mod holds;
pub mod roles;
pub mod transitions;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Millis;

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

/// One rollout, persisted with its service's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutRecord {
    pub phase: Phase,
    pub stable: String,
    pub canary: String,
    /// The canary's release this rollout is about.
    pub canary_release: String,
    /// Which rollout of the service this is (1, 2, …): late answers to gate webhooks name it,
    /// so an answer for a rollout that ended is recognised and ignored.
    #[serde(default)]
    pub number: u64,
    /// Index of the current step (0-based).
    pub step: usize,
    pub steps: usize,
    /// When the current step began (wall clock, so a restarted process — or, in a fleet,
    /// another replica — continues the step where it was). 0 = not known.
    #[serde(default)]
    pub step_started_at: Millis,
    /// Time spent in the current step before a pause, so a resume continues the clock.
    #[serde(default)]
    pub step_elapsed_ms: u64,
    pub failed_checks: u32,
    /// Waiting for gate webhooks before applying the next step (or the first).
    #[serde(default)]
    pub awaiting_gate: bool,
    /// Why it paused, rolled back or was aborted.
    #[serde(default)]
    pub reason: Option<String>,
    pub started_at: String,
    #[serde(default)]
    pub finished_at: Option<String>,
    /// Each judge's own memory (e.g. a sequential judge's evidence), by judge name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub judges: BTreeMap<String, Value>,
    /// Fields this binary does not know, kept as they were.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl RolloutRecord {
    /// How long the current step has run at `now`.
    pub fn step_elapsed(&self, now: Millis) -> u64 {
        match self.phase {
            Phase::Progressing if self.step_started_at > 0 => {
                now.saturating_sub(self.step_started_at)
            }
            _ => self.step_elapsed_ms,
        }
    }
}

#[cfg(test)]
impl RolloutRecord {
    /// Test helper: rollout 1 of green over blue, at `step` since `started`.
    pub fn for_test(phase: Phase, step: usize, started: Millis) -> RolloutRecord {
        RolloutRecord {
            phase,
            stable: "blue".into(),
            canary: "green".into(),
            canary_release: "v2".into(),
            number: 1,
            step,
            steps: 3,
            step_started_at: started,
            step_elapsed_ms: 0,
            failed_checks: 0,
            awaiting_gate: false,
            reason: None,
            started_at: String::new(),
            finished_at: None,
            judges: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }
}

/// One step of a rollout as the engine walks it (from the config's `steps`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepSpec {
    /// The canary's share of users' traffic, in percent (0 on a mirror step).
    pub traffic: u32,
    /// A mirror step: percent of requests copied to the canary (SPEC §13).
    pub mirror: Option<u32>,
    /// How long the step holds; `None` on the last step (promotion).
    pub duration: Option<Duration>,
}

/// The steps of a configured rollout.
pub fn steps(rollout: &switchyard_config::Rollout) -> Vec<StepSpec> {
    rollout
        .steps
        .iter()
        .map(|s| StepSpec {
            traffic: s.traffic,
            mirror: s.mirror,
            duration: s.duration,
        })
        .collect()
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

    pub fn as_str(self) -> &'static str {
        match self {
            RolloutAction::Start => "start",
            RolloutAction::Pause => "pause",
            RolloutAction::Resume => "resume",
            RolloutAction::Promote => "promote",
            RolloutAction::Abort => "abort",
        }
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
                self.as_str(),
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

    #[test]
    fn unknown_fields_of_a_newer_binary_are_kept() {
        let json = r#"{"phase":"progressing","stable":"blue","canary":"green",
            "canary_release":"v2","step":0,"steps":2,"failed_checks":0,
            "started_at":"2026-11-28T12:00:00Z","mode":"mirror","mirror_pct":50}"#;
        let record: RolloutRecord = serde_json::from_str(json).unwrap();
        assert_eq!(record.extra["mode"], "mirror");
        let again = serde_json::to_value(&record).unwrap();
        assert_eq!(again["mirror_pct"], 50);
    }
}
