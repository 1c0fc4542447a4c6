//! The run loop with an in-memory store that can be told to fail: DESIGN §7's asymmetries,
//! conflicts, a restart that keeps unpersisted changes, and what a commit recompiles.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use serde_json::Value;

use super::race::Redo;
use super::{Controller, Core, StartOptions};
use crate::commands::{self, Command};
use crate::engine::RollbackReason;
use crate::refusal::Refusal;
use crate::rollout::{transitions, Phase};
use crate::status::Status;
use crate::store::memory::MemoryStore;
use crate::store::Source;

/// `svc0` has a rollout of green (long steps, so it stays at step 1); the rest do not.
fn config(services: usize) -> switchyard_config::Config {
    let mut yaml = String::from("listeners: [{ name: p, address: \"127.0.0.1:1\" }]\nservices:\n");
    for i in 0..services {
        yaml.push_str(&format!(
            "  svc{i}:\n    match: {{ hosts: [\"svc{i}.test\"] }}\n    versions:\n      blue: {{ release: v1, backends: [\"127.0.0.1:2\"], weight: 100 }}\n      green: {{ release: v2, backends: [\"127.0.0.1:3\"], weight: 0 }}\n"
        ));
        if i == 0 {
            yaml.push_str("    rollout: { stable: blue, canary: green, steps: [{ traffic: 10%, duration: 1h }, { traffic: 100% }] }\n");
        }
    }
    switchyard_config::parse(&yaml, "t.yaml").unwrap_or_else(|e| panic!("{e}"))
}

fn core(services: usize, store: &MemoryStore) -> Core {
    let (core, _, _, _) = Core::new(StartOptions {
        config_path: "t.yaml".into(),
        config: config(services),
        store: Arc::new(store.clone()),
        status: Arc::new(ArcSwap::from_pointee(Status::new("t.yaml".into()))),
        on_reload: Arc::new(|| {}),
        discovery: None,
    });
    core
}

async fn command(c: &mut Controller<'_>, service: &str, command: Command) -> Result<u64, Refusal> {
    let cfg = c.core.config.service(service).unwrap().clone();
    let state = c.state.get(service).cloned().unwrap_or_default();
    let history = c.history.get(service).cloned().unwrap_or_default();
    let ctx = commands::Ctx {
        service,
        cfg: &cfg,
        state: &state,
        history: &history,
        now: crate::clock::now(),
    };
    let plan = commands::plan(ctx, command.clone())?;
    c.carry_out(plan, Redo::Command(command)).await
}

/// Carries out the plan `transition` makes for `svc0` now.
async fn on_svc0(
    c: &mut Controller<'_>,
    transition: impl FnOnce(transitions::Ctx<'_>) -> Result<crate::plan::Plan, Refusal>,
) -> Result<u64, Refusal> {
    let cfg = c.core.config.service("svc0").unwrap().clone();
    let state = c.state["svc0"].clone();
    let ctx = transitions::Ctx {
        service: "svc0",
        cfg: &cfg,
        state: &state,
        now: crate::clock::now(),
    };
    let plan = transition(ctx)?;
    c.carry_out(plan, Redo::Drop).await
}

async fn rollback(c: &mut Controller<'_>) -> Result<u64, Refusal> {
    on_svc0(c, |ctx| {
        transitions::rollback(
            ctx,
            RollbackReason::FastFail,
            Source::Analysis,
            "test",
            Value::Null,
        )
    })
    .await
}

fn green_share(c: &Controller<'_>, service: &str) -> f64 {
    let table = c.core.table.load();
    let route = c.route(&table, service).unwrap();
    route.share_percent(1)
}

fn weights(blue: u32, green: u32) -> Command {
    Command::SetWeights([("blue".into(), blue), ("green".into(), green)].into())
}

#[tokio::test]
async fn the_config_starts_the_rollout_and_everything_is_persisted() {
    let store = MemoryStore::new();
    let mut core = core(3, &store);
    let c = Controller::boot(&mut core).await;
    assert_eq!(
        c.state["svc0"].rollout.as_ref().unwrap().phase,
        Phase::Progressing
    );
    assert_eq!(green_share(&c, "svc0"), 10.0);
    let persisted = store.snapshot();
    assert_eq!(persisted.state.services.len(), 3);
    assert_eq!(persisted.history["svc0"].len(), 2, "initial config, step 1");
    assert!(c.core.pending.is_empty());
}

#[tokio::test]
async fn a_bookkeeping_commit_keeps_the_table() {
    let store = MemoryStore::new();
    let mut core = core(50, &store);
    let mut c = Controller::boot(&mut core).await;
    let before = c.core.table.load_full();
    on_svc0(&mut c, |ctx| Ok(transitions::count_failed_checks(ctx, 1)))
        .await
        .unwrap();
    let after = c.core.table.load_full();
    assert!(
        Arc::ptr_eq(&before, &after),
        "a failed-check count recompiled the table"
    );
    assert_eq!(c.state["svc0"].rollout.as_ref().unwrap().failed_checks, 1);
    let view = c.core.readers.view.load();
    assert_eq!(
        view.services["svc0"]
            .state
            .rollout
            .as_ref()
            .unwrap()
            .failed_checks,
        1
    );
    // A weights change does recompile.
    command(&mut c, "svc1", weights(50, 50)).await.unwrap();
    assert_eq!(c.core.table.load().generation, before.generation + 1);
}

#[tokio::test]
async fn a_rollback_reaches_the_table_while_the_store_refuses_and_is_persisted_later() {
    let store = MemoryStore::new();
    let mut core = core(2, &store);
    let mut c = Controller::boot(&mut core).await;
    store.fail(Some("disk full"));
    rollback(&mut c)
        .await
        .expect("a rollback is never blocked by the store");
    assert_eq!(green_share(&c, "svc0"), 0.0);
    assert_eq!(c.core.pending.len(), 1);
    let status = c.core.status.load();
    assert!(!status.persistence.healthy);
    assert_eq!(status.persistence.error.as_deref(), Some("disk full"));
    assert_ne!(
        store.snapshot().state.services["svc0"]
            .rollout
            .as_ref()
            .unwrap()
            .phase,
        Phase::RolledBack
    );

    store.fail(None);
    assert!(c.flush().await);
    assert!(c.core.status.load().persistence.healthy);
    let persisted = store.snapshot();
    assert_eq!(
        persisted.state.services["svc0"]
            .rollout
            .as_ref()
            .unwrap()
            .phase,
        Phase::RolledBack
    );
    assert_eq!(persisted.history["svc0"].back().unwrap().reason, "test");
}

#[tokio::test]
async fn a_change_away_from_stable_the_store_refuses_changes_nothing() {
    let store = MemoryStore::new();
    let mut core = core(2, &store);
    let mut c = Controller::boot(&mut core).await;
    let (table, state, history) = (
        c.core.table.load_full(),
        c.state["svc1"].clone(),
        c.history["svc1"].len(),
    );
    store.fail(Some("disk full"));
    let refused = command(&mut c, "svc1", weights(50, 50)).await;
    assert!(
        matches!(&refused, Err(Refusal::Unavailable(m)) if m.contains("disk full")),
        "{refused:?}"
    );
    assert!(Arc::ptr_eq(&table, &c.core.table.load_full()));
    assert_eq!(c.state["svc1"], state);
    assert_eq!(c.history["svc1"].len(), history);
    // The next commit gets the id the refused one would have had.
    store.fail(None);
    let id = command(&mut c, "svc1", weights(60, 40)).await.unwrap();
    assert_eq!(id, state.revision + 1);
}

#[tokio::test]
async fn a_change_someone_else_made_first_is_a_conflict() {
    let store = MemoryStore::new();
    let mut core = core(2, &store);
    let mut c = Controller::boot(&mut core).await;
    store.bump("svc1");
    let refused = command(&mut c, "svc1", weights(50, 50)).await;
    assert_eq!(refused.unwrap_err().status(), http::StatusCode::CONFLICT);
}

#[tokio::test]
async fn a_restart_keeps_what_was_applied_but_not_persisted() {
    let store = MemoryStore::new();
    let mut core = core(2, &store);
    {
        let mut c = Controller::boot(&mut core).await;
        store.fail(Some("etcd unreachable"));
        rollback(&mut c).await.unwrap();
    }
    // As after a panic: a new incarnation from the store plus what is pending.
    let c = Controller::boot(&mut core).await;
    assert_eq!(
        c.state["svc0"].rollout.as_ref().unwrap().phase,
        Phase::RolledBack
    );
    assert_eq!(green_share(&c, "svc0"), 0.0);
}

#[tokio::test]
async fn a_gate_answer_for_a_rollout_that_moved_on_is_ignored() {
    let store = MemoryStore::new();
    let mut core = core(1, &store);
    let mut c = Controller::boot(&mut core).await;
    let number = c.state["svc0"].rollout.as_ref().unwrap().number;
    let revision = c.state["svc0"].revision;
    c.gate_answered("svc0", number + 7, 1, Ok(())).await;
    c.gate_answered("svc0", number, 1, Ok(())).await; // not waiting for gates
    c.gate_answered("nope", 1, 0, Ok(())).await;
    assert_eq!(c.state["svc0"].revision, revision);
}

/// `cargo test -p switchyard-control --release -- --ignored --nocapture measure`: what a
/// commit costs at 10,000 services, with each store (numbers in docs/PERFORMANCE.md).
#[tokio::test]
#[ignore]
async fn measure_commits_at_10000_services() {
    let dir = tempfile::tempdir().unwrap();
    let file: Arc<dyn crate::store::StateStore> =
        Arc::new(crate::store::file::FileStore::new(dir.path()));
    for (kind, store) in [
        (
            "memory",
            Arc::new(MemoryStore::new()) as Arc<dyn crate::store::StateStore>,
        ),
        ("file", file),
    ] {
        let (mut core, _, _, _) = Core::new(StartOptions {
            config_path: "t.yaml".into(),
            config: config(10_000),
            store,
            status: Arc::new(ArcSwap::from_pointee(Status::new("t.yaml".into()))),
            on_reload: Arc::new(|| {}),
            discovery: None,
        });
        let started = Instant::now();
        let mut c = Controller::boot(&mut core).await;
        eprintln!(
            "{kind}: boot (load, reconcile, first compile, persist): {:?}",
            started.elapsed()
        );
        let generation = c.core.table.load().generation;
        let mut book = Vec::new();
        for n in 1..=20 {
            let t = Instant::now();
            on_svc0(&mut c, |ctx| Ok(transitions::count_failed_checks(ctx, n)))
                .await
                .unwrap();
            book.push(t.elapsed());
        }
        assert_eq!(c.core.table.load().generation, generation, "no recompile");
        let mut moves = Vec::new();
        for i in 0..20 {
            let t = Instant::now();
            command(&mut c, "svc1", weights(50 + i, 50 - i))
                .await
                .unwrap();
            moves.push(t.elapsed());
        }
        book.sort();
        moves.sort();
        eprintln!(
            "{kind}: bookkeeping commit: median {:?}, max {:?}",
            book[10], book[19]
        );
        eprintln!(
            "{kind}: weights commit (recompiles): median {:?}, max {:?}",
            moves[10], moves[19]
        );
    }
}

/// What replica `b` published for svc0's rollout `number`: `canary` requests, 5% failed.
fn published(boot: &str, number: u64, canary: u64) -> crate::store::fleet::FleetView {
    use crate::store::fleet::{FleetView, Published, ServiceWindows};
    use crate::telemetry::window::Window;
    let window = |requests: u64| Window {
        requests,
        failures: [("status".to_string(), requests / 20)].into(),
        ..Window::default()
    };
    let services = [(
        "svc0".to_string(),
        ServiceWindows {
            rollout: number,
            canary: window(canary),
            stable: window(canary * 9),
            canary_up: Some(true),
        },
    )];
    FleetView {
        windows: [(
            "b".to_string(),
            Published {
                boot: boot.into(),
                at: 0,
                services: services.into(),
            },
        )]
        .into(),
        ..FleetView::default()
    }
}

#[tokio::test]
async fn the_leader_judges_every_live_replica_s_traffic_since_the_interval_began() {
    let store = MemoryStore::new();
    let mut core = core(1, &store);
    let mut c = Controller::boot(&mut core).await;
    let number = c.state["svc0"].rollout.as_ref().unwrap().number;
    assert!(c.clocks.contains_key("svc0"), "the rollout runs");
    let pool = |c: &mut Controller<'_>, view, leading| {
        c.pool(
            "svc0",
            number,
            crate::engine::Observations::default(),
            leading,
            Some(&view),
        )
    };
    // First seen: its readings so far belong to earlier intervals.
    assert_eq!(
        pool(&mut c, published("1", number, 100), true)
            .canary
            .interval
            .requests,
        0
    );
    let obs = pool(&mut c, published("1", number, 160), true);
    assert_eq!(
        (obs.canary.interval.requests, obs.canary.interval.failed()),
        (60, 3)
    );
    assert_eq!(obs.stable.interval.requests, 540);
    // A new interval starts from its readings now.
    c.rebase_peers("svc0", number, Some(&published("1", number, 160)));
    assert_eq!(
        pool(&mut c, published("1", number, 170), true)
            .canary
            .interval
            .requests,
        10
    );
    // It restarted: its counters began again at zero, all of them are this interval's.
    assert_eq!(
        pool(&mut c, published("2", number, 30), true)
            .canary
            .interval
            .requests,
        30
    );
    // Another rollout's readings, or a replica that is gone, add nothing.
    assert_eq!(
        pool(&mut c, published("2", number + 1, 99), true)
            .canary
            .interval
            .requests,
        0
    );
    let gone = crate::store::fleet::FleetView::default();
    assert_eq!(pool(&mut c, gone, true).canary.interval.requests, 0);
    assert!(c.clocks["svc0"].peers.is_empty());
    // A replica that does not lead judges only what any replica may: its own traffic.
    let own = crate::engine::Observations {
        canary_health: Some(vec![("127.0.0.1:3".into(), false)]),
        ..Default::default()
    };
    let obs = c.pool(
        "svc0",
        number,
        own,
        false,
        Some(&published("3", number, 500)),
    );
    assert_eq!((obs.canary.interval.requests, obs.canary_health), (0, None));
}
