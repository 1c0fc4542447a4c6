//! A real Prometheus server scraping the real binary (issue 3), and the operator files in
//! `deploy/` checked against it.
//!
//! The test starts Debian's `prometheus` on 127.0.0.1 with a 1 s scrape of the proxy's admin
//! address, the repo's alert and recording rules loaded, and a throw-away storage dir; sends
//! an 80/20 split through the proxy (green's backend answers after a known 200 ms); then asks
//! Prometheus's HTTP API what an operator would ask: the per-version request rate and p99.
//! `.ci/run` installs the package; elsewhere a missing `prometheus` fails with how to get it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;
use http::StatusCode;
use serde_json::Value;
use tokio::time::sleep;

/// How long Prometheus may take to answer `/-/ready`.
const PROMETHEUS_READY: Duration = Duration::from_secs(20);

/// A `prometheus` process with its own config and storage in a temp dir; killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second (if given), with the repo's rules.
    async fn start(target: Option<SocketAddr>) -> Prometheus {
        let binary = find_program("prometheus").unwrap_or_else(|| {
            panic!(
                "the `prometheus` binary is not installed, so this test cannot run.\n\
                 Install Debian's package (what .ci/run does):\n  \
                 apt-get update && apt-get install -y --no-install-recommends prometheus\n\
                 (put `printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d` first so \
                 apt does not start the service), or put a `prometheus` binary on PATH."
            )
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let scrape = match target {
            Some(t) => format!(
                "scrape_configs:\n  - job_name: switchyard\n    scrape_interval: 1s\n    \
                 scrape_timeout: 900ms\n    static_configs:\n      - targets: [\"{t}\"]\n"
            ),
            None => String::new(),
        };
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {alerts}\n  - {recording}\n{scrape}",
            alerts = repo_file("deploy/prometheus/alerts.yml").display(),
            recording = repo_file("deploy/prometheus/recording.yml").display(),
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let mut prometheus = Prometheus { child, addr, dir };
        let deadline = Instant::now() + PROMETHEUS_READY;
        loop {
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!("prometheus exited with {status}:\n{}", prometheus.log());
            }
            if let Ok(r) = get_once(addr, "/-/ready").await {
                if r.status == StatusCode::OK {
                    return prometheus;
                }
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within {PROMETHEUS_READY:?}:\n{}",
                prometheus.log()
            );
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until Prometheus holds at least `n` successful scrapes of the proxy (≤ 40 s).
    async fn wait_for_scrapes(&self, n: usize) {
        eventually(
            Duration::from_secs(40),
            &format!("{n} successful scrapes of the proxy"),
            async || {
                let up = self
                    .by_label(r#"count_over_time(up{job="switchyard"}[30s])"#, "job")
                    .await?;
                let scrapes = lookup(&up, "switchyard");
                let healthy = self.by_label(r#"up{job="switchyard"}"#, "job").await?;
                if scrapes >= n as f64 && lookup(&healthy, "switchyard") == 1.0 {
                    Ok(())
                } else {
                    Err(format!("scrapes {scrapes}, up {healthy:?}"))
                }
            },
        )
        .await;
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/query?query=EXPR`: `Ok(data.result)` or `Err` with Prometheus's error.
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let path = format!("/api/v1/query?query={}", url_encode(expr));
        let reply = get_once(self.addr, &path).await?;
        let body: Value = serde_json::from_slice(&reply.body)
            .map_err(|e| format!("not JSON ({e}): {}", reply.text()))?;
        if body["status"] != "success" {
            return Err(format!("{expr}: {} {body}", reply.status));
        }
        Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// An instant vector as `label value → number`, keyed by one label.
    async fn by_label(&self, expr: &str, label: &str) -> Result<Vec<(String, f64)>, String> {
        let result = self.query(expr).await?;
        Ok(result
            .iter()
            .map(|r| {
                let key = r["metric"][label].as_str().unwrap_or_default().to_string();
                let value = r["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN);
                (key, value)
            })
            .collect())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- prometheus log ---\n{}\n--- end ---", self.log());
        }
    }
}

fn lookup(values: &[(String, f64)], key: &str) -> f64 {
    values
        .iter()
        .find(|(k, _)| k == key)
        .map_or(f64::NAN, |(_, v)| *v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_the_split_and_the_p99() {
    let blue = Backend::start("blue-1").await;
    // 150 ms leaves 100 ms of slack below the bucket edge for a busy machine's scheduling delays.
    let green = Backend::start_with_delay("green-1", Duration::from_millis(150)).await;
    let proxy = Proxy::start_services(&format!(
        r#"
          api:
            versions:
              blue:  {{ release: v1, backends: ["{blue}"], weight: 80 }}
              green: {{ release: v2, backends: ["{green}"], weight: 20 }}
        "#,
        blue = blue.addr,
        green = green.addr,
    ))
    .await;
    let prometheus = Prometheus::start(Some(proxy.admin)).await;
    let started = Instant::now();

    // Closed-loop load; each request picks its version independently, so the request counts
    // split 80/20 whatever the latency. ~30 ms per request on average → ~400 req/s.
    let load = Load::start(proxy.listen, 12);

    // Wait until Prometheus holds ≥ 12 scrapes of the proxy under load, then ask once.
    prometheus.wait_for_scrapes(12).await;

    let rates = prometheus
        .by_label(
            "sum by (version) (rate(switchyard_requests_total[30s]))",
            "version",
        )
        .await
        .expect("rate query");
    let p99 = prometheus
        .by_label(
            "histogram_quantile(0.99, sum by (le, version) \
             (rate(switchyard_request_duration_seconds_bucket[30s])))",
            "version",
        )
        .await
        .expect("p99 query");
    // The recording rules evaluate against the same data (loaded from deploy/).
    let recorded_p99 = prometheus
        .by_label(
            r#"switchyard:request_duration_seconds:p99{service="api"}"#,
            "version",
        )
        .await
        .expect("recording rule query");
    let report = load.finish().await;
    assert!(
        report.failures.is_empty(),
        "failed requests: {:?}",
        &report.failures[..report.failures.len().min(5)]
    );

    let (b, g) = (lookup(&rates, "blue"), lookup(&rates, "green"));
    let green_share = g * 100.0 / (b + g);
    eprintln!(
        "after {:?}: rates {rates:?} (green {green_share:.1}%), p99 {p99:?}, \
         recorded p99 {recorded_p99:?}, client saw {}",
        started.elapsed(),
        report.tally
    );
    assert!(b > 0.0 && g > 0.0, "both versions have a rate: {rates:?}");
    assert!(
        (green_share - 20.0).abs() <= 8.0,
        "green's share per Prometheus is {green_share:.1}%, want 20 ± 8: {rates:?}"
    );
    // Every green request takes 150 ms: its p99 lies in the (0.1, 0.25] bucket.
    let green_p99 = lookup(&p99, "green");
    assert!(
        green_p99 > 0.1 && green_p99 <= 0.25,
        "green p99 {green_p99} s is not in the 0.25 s bucket: {p99:?}"
    );
    let blue_p99 = lookup(&p99, "blue");
    assert!(blue_p99 < green_p99, "blue p99 {blue_p99} s: {p99:?}");
    let rule_p99 = lookup(&recorded_p99, "green");
    assert!(
        rule_p99 > 0.1 && rule_p99 <= 0.25,
        "recording rule p99 for green {rule_p99}: {recorded_p99:?}"
    );
}

/// The dashboard's JSON.
fn grafana_dashboard() -> Value {
    let text = std::fs::read_to_string(repo_file("deploy/grafana/switchyard.json"))
        .expect("read deploy/grafana/switchyard.json");
    serde_json::from_str(&text).expect("the dashboard is valid JSON")
}

/// A dashboard expression with Grafana's `$variables` replaced by sample values.
fn grafana_to_promql(expr: &str, rate_interval: &str) -> String {
    expr.replace("$__rate_interval", rate_interval)
        .replace("$__interval", "15s")
        .replace("$__range", "1h")
        .replace("${service:regex}", "api")
        .replace("$service", "api")
        .replace("${canary}", "green")
        .replace("$canary", "green")
}

/// Every PromQL expression in the Grafana dashboard parses and evaluates on a real
/// Prometheus (Grafana's `$variables` replaced by sample values first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_dashboard_queries_parse() {
    let dashboard = grafana_dashboard();

    // What Grafana's import needs: a title, a schema version, panels with types and ids.
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dashboard["schemaVersion"].as_u64().is_some());
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    let mut exprs = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    for panel in panels {
        assert!(panel["type"].as_str().is_some(), "panel type: {panel}");
        assert!(panel["gridPos"].is_object(), "panel gridPos: {panel}");
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "duplicate id"
        );
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                exprs.push((panel["title"].to_string(), expr.to_string()));
            }
        }
    }
    assert!(exprs.len() >= 5, "the dashboard has queries: {exprs:?}");

    let prometheus = Prometheus::start(None).await;
    for (title, expr) in &exprs {
        let concrete = grafana_to_promql(expr, "1m");
        assert!(
            !concrete.contains('$'),
            "panel {title}: unknown Grafana variable in {expr:?}"
        );
        if let Err(e) = prometheus.query(&concrete).await {
            panic!("panel {title}: PromQL does not parse: {e}");
        }
    }
}

/// The error-% panel draws a line at 0 for a version that served requests without failing:
/// such a version has no `switchyard_request_failures_total` series at all, and a plain
/// division by it drew nothing, so a healthy stable vanished from the panel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_error_panel_shows_zero_for_a_version_without_failures() {
    let blue = Backend::start("blue-1").await;
    let green = Backend::start_failing("green-1", 500).await;
    let proxy = Proxy::start_services(&format!(
        r#"
          api:
            versions:
              blue:  {{ release: v1, backends: ["{blue}"], weight: 50 }}
              green: {{ release: v2, backends: ["{green}"], weight: 50 }}
        "#,
        blue = blue.addr,
        green = green.addr,
    ))
    .await;
    let prometheus = Prometheus::start(Some(proxy.admin)).await;
    let dashboard = grafana_dashboard();
    let panel = dashboard["panels"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["title"] == "Error % by version"))
        .expect("an \"Error % by version\" panel");
    let expr = grafana_to_promql(
        panel["targets"][0]["expr"]
            .as_str()
            .expect("the panel's expr"),
        "30s",
    );

    let load = Load::start(proxy.listen, 4);
    prometheus.wait_for_scrapes(5).await;
    let errors = eventually(
        Duration::from_secs(30),
        "both versions on the panel",
        async || {
            let errors = prometheus.by_label(&expr, "version").await?;
            let (b, g) = (lookup(&errors, "blue"), lookup(&errors, "green"));
            if b.is_nan() || g.is_nan() {
                return Err(format!("{expr} gave {errors:?}"));
            }
            Ok(errors)
        },
    )
    .await;
    let _ = load.finish().await;

    assert_eq!(lookup(&errors, "blue"), 0.0, "{errors:?}");
    let green_errors = lookup(&errors, "green");
    assert!(
        (green_errors - 50.0).abs() <= 15.0,
        "green fails half its requests: {errors:?}"
    );
}
