//! What a decision is, before the run loop carries it out: a [`Change`] to one service's
//! state, which way it moves traffic, and the [`Effect`]s to run once it is applied.
//!
//! Commands and rollout transitions are pure: they read the current state and return a
//! [`Plan`]. The run loop alone commits it (in the order DESIGN §7 asks for its
//! [`Direction`]), applies it to the table, and then runs the effects — so every path that
//! changes traffic goes through the same few lines of `controller/commit.rs`.

use serde_json::Value;

use crate::engine::RollbackReason;
use crate::store::{Fence, ServiceState, Source};

/// Which way a change moves traffic, relative to the stable version (SPEC §16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Rollbacks, aborts, pauses, bookkeeping, the config: applied at once, persisted after,
    /// retried until the store takes them.
    TowardStable,
    /// Weights up, steps, promotion, starting or resuming a rollout: persisted first; refused
    /// (and leaving nothing behind) when the store cannot take them.
    AwayFromStable,
}

/// One service's next state.
#[derive(Debug, Clone)]
pub struct Change {
    pub service: String,
    pub next: ServiceState,
    /// Why the weights moved: a new revision with the next id. `None`: bookkeeping only
    /// (failed checks, a gate wait, a pause), which never recompiles the table.
    pub revision: Option<(Source, String)>,
    pub direction: Direction,
    pub fence: Fence,
}

/// What to do once a change is applied.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Tell people (events, event webhooks). The revision id is added to `details` when the
    /// change made one.
    Event {
        kind: &'static str,
        message: String,
        details: Value,
    },
    /// A rollout ended: `switchyard_rollouts_total{result}`.
    RolloutEnded(&'static str),
    /// A rollback: counted by reason, its detection time measured, and told as an event.
    RolledBack {
        reason: RollbackReason,
        message: String,
        details: Value,
    },
    /// A step began (or the rollout resumed): a fresh analysis window.
    ClockStart,
    /// The rollout stopped running: no more analysis for it.
    ClockStop,
    /// Ask the gate webhooks about step `step` (0-based) of the current rollout.
    AskGates { step: usize },
}

impl Effect {
    /// Whether the effect is this replica's own bookkeeping (its analysis clock), not
    /// telling or counting — which, in a fleet, the replica whose commit the store took
    /// does, once.
    pub fn is_local(&self) -> bool {
        matches!(self, Effect::ClockStart | Effect::ClockStop)
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub change: Change,
    pub effects: Vec<Effect>,
}

impl Plan {
    /// A change that only keeps books (no revision), applied first and persisted after.
    pub fn bookkeeping(service: &str, next: ServiceState) -> Plan {
        Plan {
            change: Change {
                service: service.to_string(),
                next,
                revision: None,
                direction: Direction::TowardStable,
                fence: Fence::Any,
            },
            effects: Vec::new(),
        }
    }

    pub fn event(mut self, kind: &'static str, message: String, details: Value) -> Plan {
        self.effects.push(Effect::Event {
            kind,
            message,
            details,
        });
        self
    }

    pub fn then(mut self, effect: Effect) -> Plan {
        self.effects.push(effect);
        self
    }
}
