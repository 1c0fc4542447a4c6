//! `switchyard demo`: the whole product on one machine, with no file and no other program.
//!
//! Two built-in backends ([`backends`]: `v1` healthy, `v2` a release that turns bad after a
//! few seconds), the real proxy in front of them (`switchyard_control::app::serve` on a
//! generated config in a temp dir) with a canary rollout of `v2` tuned to seconds, a steady
//! built-in load ([`load`]), and a printed [`timeline`] of what the proxy decides — read back
//! from its own admin API. The rollout starts with a mirror step (users on `v1`, copies to
//! `v2`), then steps `v2`'s share up with the safety net on: when `v2` turns bad, its failed
//! requests are replayed on `v1`, the analysis still sees them, and the canary is rolled back
//! by itself about fifteen seconds in. The last line says what it cost, from the API's own
//! numbers (`rollout.impact`, the safety net's counts). Then the demo keeps serving so a
//! person can `curl` it and open the dashboard. `--healthy` runs the same story with a good
//! `v2`, which is promoted; `--no-safety-net` shows what users see without the net.

mod backends;
mod load;
mod timeline;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use timeline::Outcome;

/// Failed checks that roll the canary back (the config's `analysis.threshold`).
const THRESHOLD: u32 = 2;
/// Upper bound for the proxy to come up.
const READY_WITHIN: Duration = Duration::from_secs(20);

pub struct Options {
    pub port: u16,
    pub admin_port: u16,
    /// A good `v2` that gets promoted, instead of a bad one that gets rolled back.
    pub healthy: bool,
    /// Replay `v2`'s failed requests on `v1` (the rollout's `safety_net`).
    pub safety_net: bool,
    /// How long after the proxy is ready `v2` turns bad. The default, 12 s, is past the
    /// mirror step (4 s) and step 2 (5 s at 10%), early in step 3 (10 s at 50%), so the
    /// rollback lands mid-step, about fifteen seconds in; 0 makes the mirror step catch it.
    pub bad_after: Duration,
}

pub async fn run(options: Options) -> Result<(), String> {
    let proxy = SocketAddr::from(([127, 0, 0, 1], options.port));
    let admin = SocketAddr::from(([127, 0, 0, 1], options.admin_port));
    check_ports(proxy, admin)?;

    let v1 = backends::start("v1", "1.0").await?;
    let v2 = backends::start("v2", "2.0").await?;
    let dir = std::env::temp_dir().join(format!("switchyard-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let config_path = dir.join("switchyard.yaml");
    let config = demo_config(
        (proxy, admin),
        (v1.address, v2.address),
        &dir.join("state"),
        options.safety_net,
    );
    std::fs::write(&config_path, config).map_err(|e| format!("{}: {e}", config_path.display()))?;

    println!("switchyard demo: a canary rollout of shop v2 (release 2.0) next to v1 (release 1.0)");
    println!("  proxy      http://{proxy}/");
    println!("  dashboard  http://{admin}/");
    println!("  backends   v1 at {}, v2 at {}", v1.address, v2.address);
    println!(
        "  load       {} requests/s from {} users (a built-in generator, loopback only)",
        load::RATE,
        load::USERS
    );
    println!(
        "  rollout    v2 mirrored for 4s (copies only, users stay on v1), then 10% for 5s, 50%"
    );
    println!(
        "             for 10s, then 100%; a check every second (rollback after {THRESHOLD} failed"
    );
    println!("             checks: error rate > 1% or p99 > 300ms)");
    if options.safety_net {
        println!("  safety net a v2 request that fails is replayed once on v1 (budget 20%)");
    } else {
        println!("  safety net off (--no-safety-net): users get v2's failures");
    }
    if options.healthy {
        println!("  v2         a good release: it should be promoted in about 15s");
    } else {
        println!(
            "  v2         healthy at first, then bad after {}s: 10% answer 500, 5% take {}ms",
            options.bad_after.as_secs(),
            backends::SLOW_BY.as_millis()
        );
    }
    println!("  config     {}", config_path.display());
    println!();

    let start = SystemTime::now();
    let story = tokio::spawn(async move {
        if let Err(e) = wait_ready(admin).await {
            eprintln!("demo: {e}");
            return;
        }
        tokio::spawn(load::run(proxy));
        if !options.healthy {
            tokio::spawn(async move {
                tokio::time::sleep(options.bad_after).await;
                v2.turn_bad();
                timeline::line(
                    start,
                    "demo",
                    "v2 turns bad: from now on 1 request in 10 answers 500, 1 in 20 is slow",
                );
            });
        }
        timeline::follow(admin, start, THRESHOLD, move |outcome, at, service| {
            what_now(proxy, admin, timeline::since(start, at), &outcome, &service)
        })
        .await;
    });

    let served = switchyard_control::app::serve(switchyard_control::app::ServeOptions {
        config_path,
        drain_timeout: Duration::from_secs(2),
        // The demo's backends and clients share its runtime: the listeners serve there too.
        workers: switchyard_proxy::workers::Workers::inline(),
    })
    .await;
    story.abort();
    let _ = std::fs::remove_dir_all(&dir);
    served
}

/// Refuses ports that are taken, with a hint, before anything starts.
fn check_ports(proxy: SocketAddr, admin: SocketAddr) -> Result<(), String> {
    if proxy.port() == admin.port() {
        return Err(format!(
            "--port and --admin-port are both {}; give them different ports",
            proxy.port()
        ));
    }
    for (address, flag, what) in [(proxy, "--port", "proxy"), (admin, "--admin-port", "admin")] {
        TcpListener::bind(address).map_err(|e| {
            format!(
                "cannot listen on {address} for the demo's {what}: {e}; \
                 is another demo running? choose a free port with {flag} N"
            )
        })?;
    }
    Ok(())
}

/// Polls `GET /ready` on the admin address.
async fn wait_ready(admin: SocketAddr) -> Result<(), String> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: http::Uri = format!("http://{admin}/ready")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        if let Ok(Ok(r)) =
            tokio::time::timeout(Duration::from_secs(1), client.get(uri.clone())).await
        {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("the proxy was not ready within {READY_WITHIN:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Printed once the rollout has ended: what happened, what it cost users (the API's
/// numbers), and what to try.
fn what_now(
    proxy: SocketAddr,
    admin: SocketAddr,
    secs: f64,
    outcome: &Outcome,
    service: &serde_json::Value,
) {
    println!();
    match outcome {
        Outcome::RolledBack { .. } => println!(
            "v2 was rolled back by the proxy itself, {secs:.1}s in: all traffic is on v1 again."
        ),
        Outcome::Promoted => {
            println!("v2 passed every check and was promoted, {secs:.1}s in: it is now stable.")
        }
    }
    println!("{}", timeline::impact_line(outcome, service));
    println!("Still serving. Try:");
    println!("  curl -s http://{proxy}/");
    println!(
        "  curl -s http://{proxy}/ -H 'x-canary: always'    (forces v2 unless it was rolled back)"
    );
    println!("  curl -s http://{admin}/api/v1/services/shop");
    println!("  dashboard: http://{admin}/");
    println!("Ctrl-C to stop.");
    println!();
}

fn demo_config(
    (proxy, admin): (SocketAddr, SocketAddr),
    (v1, v2): (SocketAddr, SocketAddr),
    state_dir: &Path,
    safety_net: bool,
) -> String {
    let state_dir = state_dir.display();
    let safety_net = if safety_net {
        "safety_net: { retry_on_stable: true, budget: 20% }"
    } else {
        "safety_net: off"
    };
    format!(
        r#"# Generated by `switchyard demo`.
listeners:
  - {{ name: public, address: "{proxy}" }}
admin:
  address: "{admin}"
state_dir: "{state_dir}"
services:
  shop:
    versions:
      v1: {{ release: "1.0", backends: ["{v1}"], weight: 100 }}
      v2: {{ release: "2.0", backends: ["{v2}"], weight: 0 }}
    sticky: {{ header: x-user-id }}
    overrides:
      - {{ header: x-canary, value: always, version: v2 }}
    health_check: {{ path: /health, interval: 1s, timeout: 500ms, unhealthy_threshold: 3, healthy_threshold: 1 }}
    rollout:
      stable: v1
      canary: v2
      {safety_net}
      steps:
        - {{ mirror: 100%, duration: 4s }}
        - {{ traffic: 10%, duration: 5s }}
        - {{ traffic: 50%, duration: 10s }}
        - {{ traffic: 100% }}
      analysis:
        interval: 1s
        threshold: {THRESHOLD}
        min_requests: 10
        metrics:
          - {{ name: error-rate, threshold: 1 }}
          - {{ name: latency-p99, threshold: 300 }}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_config_is_valid() {
        let dir = std::env::temp_dir().join(format!("switchyard-demo-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("switchyard.yaml");
        let a = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        std::fs::write(
            &path,
            demo_config(
                (a(8080), a(9901)),
                (a(40001), a(40002)),
                &dir.join("state"),
                true,
            ),
        )
        .unwrap();
        let loaded = switchyard_config::load(&path);
        let _ = std::fs::remove_dir_all(&dir);
        let config = loaded.unwrap_or_else(|e| panic!("{e}"));
        let rollout = config.services[0].rollout.as_ref().expect("a rollout");
        assert_eq!(rollout.analysis.threshold, THRESHOLD);
        assert_eq!(rollout.steps.len(), 4);
        assert_eq!(rollout.steps[0].mirror, Some(100));
        assert!(rollout.safety_net.is_some());
    }
}
