//! Who is stable, who is canary: one rule, used by the rollout clock, the commands, the
//! routing table (sticky buckets start with the canary) and the API's `role` field — so the
//! dashboard and `ctl` never work it out on their own.
//!
//! - While a rollout runs (progressing or paused), its record says.
//! - Otherwise the roles are those of the *next* rollout: after a promotion they swap
//!   (blue/green style: the promoted version is the next stable); and when an operator has
//!   since put more traffic on the other version (`undo`, `switch`, `weights`), the version
//!   with the traffic is the stable one. The other version is the next canary: `canary` while
//!   it has a share, `standby` at 0%.

use serde::Serialize;
use switchyard_config::Service;

use super::Phase;
use crate::store::ServiceState;

/// A version's role, as the API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Stable,
    Canary,
    /// The next rollout's canary, with no traffic now.
    Standby,
}

/// The stable and canary of a service's current or next rollout (`None`: no rollout
/// configured).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles {
    pub stable: String,
    pub canary: String,
    /// True while a rollout runs (its record decides).
    pub active: bool,
}

impl Roles {
    pub fn of(cfg: &Service, state: &ServiceState) -> Option<Roles> {
        let rollout = cfg.rollout.as_ref()?;
        let known = |v: &str| cfg.version(v).is_some();
        let record = state
            .rollout
            .as_ref()
            .filter(|r| known(&r.stable) && known(&r.canary));
        let (stable, canary) = match record {
            Some(r) if r.phase.is_active() => {
                return Some(Roles {
                    stable: r.stable.clone(),
                    canary: r.canary.clone(),
                    active: true,
                })
            }
            Some(r) if r.phase == Phase::Promoted => (r.canary.clone(), r.stable.clone()),
            Some(r) => (r.stable.clone(), r.canary.clone()),
            None => (rollout.stable.clone(), rollout.canary.clone()),
        };
        let (stable, canary) = if state.weight(&canary) > state.weight(&stable) {
            (canary, stable)
        } else {
            (stable, canary)
        };
        Some(Roles {
            stable,
            canary,
            active: false,
        })
    }

    /// The role of `version` in `state` (`None` for a version outside the rollout). A
    /// rolled-back canary stays `canary` (its release is marked rolled back).
    pub fn role(&self, version: &str, state: &ServiceState) -> Option<Role> {
        if version == self.stable {
            Some(Role::Stable)
        } else if version == self.canary {
            let traffic = state.weight(version) > 0 || state.rolled_back.contains_key(version);
            Some(if self.active || traffic {
                Role::Canary
            } else {
                Role::Standby
            })
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::RolloutRecord;
    use crate::store::LiveWeight;

    fn service() -> Service {
        switchyard_config::parse(
            "listeners: [{ name: p, address: \"127.0.0.1:1\" }]\nservices:\n  api:\n    versions:\n      blue: { release: v1, backends: [\"127.0.0.1:2\"], weight: 100 }\n      green: { release: v2, backends: [\"127.0.0.1:3\"], weight: 0 }\n    rollout: { stable: blue, canary: green, steps: [{ traffic: 100% }] }\n",
            "t.yaml",
        )
        .unwrap()
        .services
        .remove(0)
    }

    fn state(phase: Phase, blue: u32, green: u32) -> ServiceState {
        let live = |weight, release: &str| LiveWeight {
            weight,
            release: release.into(),
        };
        ServiceState {
            weights: [
                ("blue".into(), live(blue, "v1")),
                ("green".into(), live(green, "v2")),
            ]
            .into(),
            rollout: Some(RolloutRecord::for_test(phase, 0, 0)),
            ..ServiceState::default()
        }
    }

    fn names(s: &ServiceState) -> (Option<Role>, Option<Role>) {
        let r = Roles::of(&service(), s).unwrap();
        (r.role("blue", s), r.role("green", s))
    }

    #[test]
    fn a_running_rollout_names_its_roles() {
        let s = state(Phase::Progressing, 10, 90);
        assert_eq!(names(&s), (Some(Role::Stable), Some(Role::Canary)));
    }

    #[test]
    fn after_a_promotion_the_roles_swap() {
        let s = state(Phase::Promoted, 0, 100);
        assert_eq!(names(&s), (Some(Role::Standby), Some(Role::Stable)));
    }

    #[test]
    fn after_promote_then_undo_the_version_with_the_traffic_is_stable() {
        let s = state(Phase::Promoted, 90, 10);
        assert_eq!(names(&s), (Some(Role::Stable), Some(Role::Canary)));
        let s = state(Phase::Promoted, 100, 0);
        assert_eq!(names(&s), (Some(Role::Stable), Some(Role::Standby)));
    }
}
