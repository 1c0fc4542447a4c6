//! The replica's session with the fleet: its lease, its campaign for the leadership, and
//! once a second its heartbeat.
//!
//! - **Lease.** Granted with the configured TTL and kept alive every [`TICK`]. Everything this
//!   replica is to the fleet hangs on it: its heartbeat key, its published windows and its
//!   election key. When the replica dies, etcd deletes them after the lease: it drops out
//!   of the pooled analysis and, if it led, another replica's campaign returns.
//! - **Election.** etcd's v3election `Campaign`, bound to the lease, blocks until this replica
//!   leads; the key and create revision it won with fence every leader-only commit. A
//!   replica that has not heard from etcd for a whole lease no longer calls itself leader
//!   (its lease has expired, or will before it can commit anything), and starts over.
//! - **Heartbeat.** One transaction a second: put `replicas/<me>` (and `windows/<me>` while a
//!   rollout progresses) under the lease, read everyone's, and read who leads: the
//!   [`FleetView`] the loop and the API see. Each success marks the store healthy again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse};
use tokio::time::Instant;

use super::{json, within, Inner};
use crate::clock;
use crate::store::fleet::{combined_hash, FleetView, Published, ReplicaInfo};

/// Keep-alive period; the heartbeat goes every other tick (once a second).
const TICK: Duration = Duration::from_millis(500);

pub(super) async fn run(inner: Arc<Inner>) {
    loop {
        let why = session(&inner).await;
        inner.set_leading(None);
        tracing::warn!(replica = %inner.me, "fleet session ended ({why}); starting a new one");
        tokio::time::sleep(TICK).await;
    }
}

/// One lease's life; returns why it ended.
async fn session(inner: &Arc<Inner>) -> String {
    let ttl = i64::try_from(inner.lease.as_secs()).unwrap_or(5).max(2);
    let deadline = || Instant::now() + inner.dial_timeout;
    let mut leases = inner.client.lease_client();
    let lease = match within(deadline(), leases.grant(ttl, None)).await {
        Ok(l) => l.id(),
        Err(e) => {
            let _ = inner.failed("publish", &format!("cannot get a lease: {e}"));
            return e;
        }
    };
    let (mut keeper, mut answers) = match within(deadline(), leases.keep_alive(lease)).await {
        Ok(k) => k,
        Err(e) => {
            let _ = inner.failed("publish", &e);
            return e;
        }
    };
    *Inner::lock(&inner.lease_id) = Some(lease);
    let campaign = Abort(tokio::spawn(campaign(Arc::clone(inner), lease)));
    let mut last_heard = Instant::now();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beat = 0u64;
    let mut had_windows = false;
    let why = loop {
        tick.tick().await;
        let renewed = within(Instant::now() + TICK, async {
            keeper.keep_alive().await?;
            answers.message().await
        })
        .await;
        match renewed {
            Ok(Some(r)) if r.ttl() > 0 => last_heard = Instant::now(),
            Ok(_) => break "the lease expired".to_string(),
            Err(e) => {
                let _ = inner.failed("publish", &e);
                if last_heard.elapsed() >= inner.lease {
                    break format!("no answer from etcd for a whole lease ({e})");
                }
                continue;
            }
        }
        beat += 1;
        if beat % 2 == 1 {
            match heartbeat(inner, lease, &mut had_windows).await {
                Ok(()) => inner.set_health(None),
                Err(e) => {
                    let _ = inner.failed("publish", &e);
                }
            }
        }
    };
    drop(campaign);
    *Inner::lock(&inner.lease_id) = None;
    // Best effort: the keys go now rather than after the lease.
    let _ = within(Instant::now() + TICK, leases.revoke(lease)).await;
    why
}

/// Campaigns until this replica leads (the call blocks in etcd until then).
async fn campaign(inner: Arc<Inner>, lease: i64) {
    let mut election = inner.client.election_client();
    loop {
        match election
            .campaign(inner.keys.election(), inner.me.clone(), lease)
            .await
        {
            Ok(resp) => {
                if let Some(key) = resp.leader() {
                    inner.set_leading(Some((key.key().to_vec(), key.rev())));
                }
                return;
            }
            Err(e) => {
                metrics::counter!("switchyard_fleet_store_errors_total", "op" => "campaign")
                    .increment(1);
                tracing::debug!("campaign for the fleet leadership failed: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Publishes this replica and reads the fleet, in one transaction.
async fn heartbeat(inner: &Inner, lease: i64, had_windows: &mut bool) -> Result<(), String> {
    let report = Inner::lock(&inner.report).clone();
    let now = clock::now();
    let info = ReplicaInfo {
        name: inner.me.clone(),
        admin: inner.admin.clone(),
        applied_revision: report.applied,
        last_seen: clock::rfc3339(now),
        config_hash: combined_hash(report.hashes.iter()),
        service_hashes: (*report.hashes).clone(),
    };
    let under_lease = || Some(PutOptions::new().with_lease(lease));
    let mut ops = vec![TxnOp::put(
        inner.keys.replica(&inner.me),
        json(&info),
        under_lease(),
    )];
    let windows = !report.windows.is_empty();
    if windows {
        let published = Published {
            boot: inner.boot.clone(),
            at: now,
            services: report.windows,
        };
        ops.push(TxnOp::put(
            inner.keys.window(&inner.me),
            json(&published),
            under_lease(),
        ));
    } else if *had_windows {
        ops.push(TxnOp::delete(inner.keys.window(&inner.me), None));
    }
    let reads = ops.len();
    ops.push(TxnOp::get(
        inner.keys.replicas(),
        Some(GetOptions::new().with_prefix()),
    ));
    ops.push(TxnOp::get(
        inner.keys.windows(),
        Some(GetOptions::new().with_prefix()),
    ));
    ops.push(TxnOp::get(
        format!("{}/", inner.keys.election()),
        Some(
            GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Create, SortOrder::Ascend)
                .with_limit(1),
        ),
    ));
    let deadline = Instant::now() + TICK * 2;
    let resp = within(
        deadline,
        inner.client.kv_client().txn(Txn::new().and_then(ops)),
    )
    .await?;
    *had_windows = windows;
    let responses = resp.op_responses();
    let get = |i: usize| match responses.get(reads + i) {
        Some(TxnOpResponse::Get(g)) => g.kvs().to_vec(),
        _ => Vec::new(),
    };
    let replicas: Vec<ReplicaInfo> = get(0)
        .iter()
        .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
        .collect();
    let windows: BTreeMap<String, Published> = get(1)
        .iter()
        .filter_map(|kv| {
            let name = kv.key_str().ok()?.rsplit('/').next()?.to_string();
            (name != inner.me)
                .then(|| Some((name, serde_json::from_slice(kv.value()).ok()?)))
                .flatten()
        })
        .collect();
    let leader_kv = get(2).into_iter().next();
    let leader = leader_kv
        .as_ref()
        .and_then(|kv| kv.value_str().ok().map(str::to_string));
    // Someone else's key is first in the election: whatever this replica thought, it does
    // not lead (its own key went with an expired lease).
    let ours = Inner::lock(&inner.leader_key).clone();
    if let (Some((key, _)), Some(kv)) = (&ours, &leader_kv) {
        if kv.key() != key.as_slice() {
            inner.set_leading(None);
        }
    }
    let view = FleetView {
        me: inner.me.clone(),
        leader,
        endpoints: inner.endpoints.clone(),
        healthy: true,
        error: None,
        replicas,
        windows,
    };
    metrics::gauge!("switchyard_fleet_replicas").set(view.replicas.len() as f64);
    for (service, n) in view.mismatch_counts() {
        metrics::gauge!("switchyard_fleet_config_mismatch", "service" => service).set(n as f64);
    }
    inner.view.store(Arc::new(view));
    Ok(())
}

/// Revokes the lease at shutdown (bounded: a stopped etcd must not hold up the exit).
pub(super) async fn close(inner: &Inner) {
    let lease = *Inner::lock(&inner.lease_id);
    if let Some(lease) = lease {
        inner.set_leading(None);
        let _ = within(
            Instant::now() + Duration::from_secs(1),
            inner.client.lease_client().revoke(lease),
        )
        .await;
    }
}

/// Aborts a task when dropped.
struct Abort(tokio::task::JoinHandle<()>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}
