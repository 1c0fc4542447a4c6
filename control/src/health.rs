//! Active health checks: probe every backend of every service that asks for it.
//!
//! A backend goes down after `unhealthy_threshold` failed probes in a row and comes back after
//! `healthy_threshold` good ones; the data path skips down backends (their `healthy` flag is
//! an atomic in the routing table's `Backend`, which survives table swaps). A probe is a fresh
//! HTTP/1.1 `GET path` with the service's timeout: a 2xx answer is healthy, anything else —
//! refused, timed out, 5xx — is not. New backends start healthy so traffic flows at once,
//! except an address a backend name resolved to (SPEC §12): it starts down and joins on its
//! first good probe (one, not `healthy_threshold`), probed within a tick of appearing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use switchyard_proxy::table::Backend;
use switchyard_proxy::TableHandle;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How often the checker looks for probes that are due.
const TICK: Duration = Duration::from_millis(50);

/// (service, version, backend address): one probe schedule each.
type ProbeKey = (Arc<str>, Arc<str>, SocketAddr);

#[derive(Debug)]
struct ProbeState {
    next_due: Instant,
    in_flight: bool,
    ok_streak: u32,
    fail_streak: u32,
}

struct ProbeResult {
    key: ProbeKey,
    backend: Arc<Backend>,
    healthy: bool,
    healthy_threshold: u32,
    unhealthy_threshold: u32,
    detail: String,
}

/// Probes backends forever, following the current routing table.
pub async fn run(table: TableHandle) {
    let mut probes: HashMap<ProbeKey, ProbeState> = HashMap::new();
    let (tx, mut rx) = mpsc::unbounded_channel::<ProbeResult>();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => schedule(&table, &mut probes, &tx),
            Some(result) = rx.recv() => apply(&mut probes, result),
        }
    }
}

fn schedule(
    table: &TableHandle,
    probes: &mut HashMap<ProbeKey, ProbeState>,
    tx: &mpsc::UnboundedSender<ProbeResult>,
) {
    let table = table.load();
    let now = Instant::now();
    let mut live = Vec::new();
    for service in table.services.iter() {
        let Some(check) = &service.health_check else {
            continue;
        };
        for version in service.versions.iter() {
            for backend in version.backends.iter() {
                let key: ProbeKey = (
                    Arc::clone(&service.name),
                    Arc::clone(&version.name),
                    backend.address,
                );
                live.push(key.clone());
                let state = probes.entry(key.clone()).or_insert(ProbeState {
                    next_due: now,
                    in_flight: false,
                    ok_streak: 0,
                    fail_streak: 0,
                });
                if state.in_flight || now < state.next_due {
                    continue;
                }
                state.in_flight = true;
                state.next_due = now + check.interval;
                let (backend, tx, check) = (Arc::clone(backend), tx.clone(), check.clone());
                tokio::spawn(async move {
                    let outcome = probe(backend.address, &check.path, check.timeout).await;
                    let _ = tx.send(ProbeResult {
                        key,
                        backend,
                        healthy: outcome.is_ok(),
                        healthy_threshold: check.healthy_threshold,
                        unhealthy_threshold: check.unhealthy_threshold,
                        detail: outcome.unwrap_or_else(|e| e),
                    });
                });
            }
        }
    }
    // Forget backends that left the config.
    if probes.len() > live.len() {
        let live: std::collections::HashSet<_> = live.into_iter().collect();
        probes.retain(|k, _| live.contains(k));
    }
}

fn apply(probes: &mut HashMap<ProbeKey, ProbeState>, r: ProbeResult) {
    let Some(state) = probes.get_mut(&r.key) else {
        return;
    };
    state.in_flight = false;
    let was_healthy = r.backend.healthy.load(Relaxed);
    if r.backend.unchecked.load(Relaxed) {
        // A resolved address that has never passed a check (a container still starting, say):
        // it joins on its first good probe; from then on the thresholds apply.
        if r.healthy {
            (state.ok_streak, state.fail_streak) = (1, 0);
            r.backend.unchecked.store(false, Relaxed);
            r.backend.healthy.store(true, Relaxed);
            tracing::info!(service = %r.key.0, version = %r.key.1, backend = %r.key.2, "new backend passed its first health check; it takes traffic");
        } else {
            state.fail_streak += 1;
            if state.fail_streak == 1 {
                tracing::warn!(service = %r.key.0, version = %r.key.1, backend = %r.key.2, reason = %r.detail, "new backend failed its first health check; it takes no traffic until one passes");
            }
        }
        return;
    }
    if r.healthy {
        state.ok_streak += 1;
        state.fail_streak = 0;
        if !was_healthy && state.ok_streak >= r.healthy_threshold {
            r.backend.healthy.store(true, Relaxed);
            tracing::info!(service = %r.key.0, version = %r.key.1, backend = %r.key.2, "backend is healthy again");
        }
    } else {
        state.fail_streak += 1;
        state.ok_streak = 0;
        if was_healthy && state.fail_streak >= r.unhealthy_threshold {
            r.backend.healthy.store(false, Relaxed);
            tracing::warn!(service = %r.key.0, version = %r.key.1, backend = %r.key.2, reason = %r.detail, "backend marked unhealthy");
        }
    }
}

/// One health probe; `Ok` with the status on 2xx, `Err` with what went wrong otherwise.
async fn probe(address: SocketAddr, path: &str, timeout: Duration) -> Result<String, String> {
    let attempt = async {
        let stream = TcpStream::connect(address)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        let req = Request::get(path)
            .header(http::header::HOST, address.to_string())
            .header(http::header::USER_AGENT, "switchyard-health-check")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("bad health check path {path:?}: {e}"))?;
        let response = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        if response.status().is_success() {
            Ok(format!("status {}", response.status()))
        } else {
            Err(format!("status {}", response.status()))
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
}
