//! The demo's printed timeline: the proxy's own rollout events, read back from its admin API.
//!
//! The demo learns what happened the way any operator or pipeline would: by polling
//! `GET /api/v1/events?since=N` on the admin address. Each event becomes one readable line
//! stamped with the event's own time (the proxy's millisecond timestamp) since the demo
//! started — not the moment the demo happened to poll — so the printed times agree with the
//! detection time the rollback reports. Analysis checks show every metric's value against its
//! threshold, and the rollback shows its reason and how long detection took.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// How often the demo asks for new events.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// Seconds from `start` to `at`.
pub fn since(start: SystemTime, at: SystemTime) -> f64 {
    at.duration_since(start).unwrap_or_default().as_secs_f64()
}

/// Prints one timeline line for something that happened at `at`: `  12.3s  kind  text`,
/// right-aligned so lines line up.
pub fn line_at(start: SystemTime, at: SystemTime, kind: &str, text: &str) {
    println!("{:>6.1}s  {kind:<9} {text}", since(start, at));
}

/// Prints one timeline line for something happening now.
pub fn line(start: SystemTime, kind: &str, text: &str) {
    line_at(start, SystemTime::now(), kind, text);
}

/// What the timeline remembers between events.
#[derive(Debug, Default)]
pub struct Timeline {
    /// Failed checks in the current rollout (for "FAIL 1/2").
    failed_checks: u32,
    /// The analysis threshold of the demo's rollout.
    threshold: u32,
}

/// What a finished rollout means for the rest of the demo.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    RolledBack {
        /// First failed check → canary at 0%, as the rollback event says.
        detection_s: Option<f64>,
    },
    Promoted,
}

impl Timeline {
    pub fn new(threshold: u32) -> Timeline {
        Timeline {
            failed_checks: 0,
            threshold,
        }
    }

    /// The timeline lines for one event as `(label, text)`, and the outcome it records.
    pub fn describe(&mut self, event: &Value) -> (Vec<(String, String)>, Option<Outcome>) {
        let kind = event["kind"].as_str().unwrap_or("event");
        let message = event["message"].as_str().unwrap_or("").to_string();
        let details = &event["details"];
        match kind {
            "rollout_started" => {
                self.failed_checks = 0;
                (vec![("rollout".into(), message)], None)
            }
            "analysis" => (vec![("check".into(), self.check(details))], None),
            "rolled_back" => {
                let mut lines = vec![("ROLLBACK".to_string(), message)];
                let mut more = Vec::new();
                if let Some(weights) = details["to_weights"].as_object() {
                    let list: Vec<String> = weights
                        .iter()
                        .map(|(v, w)| format!("{v} {}%", w.as_u64().unwrap_or(0)))
                        .collect();
                    more.push(format!("weights now {}", list.join(", ")));
                }
                if let Some(s) = details["detection_s"].as_f64() {
                    more.push(format!(
                        "detected in {s:.2}s (first failed check → canary at 0%)"
                    ));
                }
                if !more.is_empty() {
                    lines.push((String::new(), more.join("; ")));
                }
                let detection_s = details["detection_s"].as_f64();
                (lines, Some(Outcome::RolledBack { detection_s }))
            }
            "promoted" => (vec![("PROMOTED".into(), message)], Some(Outcome::Promoted)),
            other => (vec![(other.to_string(), message)], None),
        }
    }

    /// `pass  error-rate 0.0% ≤ 1%, latency-p99 3.9ms ≤ 300ms  (21 requests in 1.0s)`
    fn check(&mut self, details: &Value) -> String {
        let verdict = details["verdict"].as_str().unwrap_or("?");
        let requests = details["requests"].as_u64().unwrap_or(0);
        let window = details["window_s"].as_f64().unwrap_or(0.0);
        let head = match verdict {
            "fail" => {
                self.failed_checks += 1;
                format!("FAIL {}/{}", self.failed_checks, self.threshold)
            }
            "inconclusive" => "inconclusive".to_string(),
            other => other.to_string(),
        };
        let metrics: Vec<String> = details["metrics"]
            .as_array()
            .map(|ms| ms.iter().map(metric).collect())
            .unwrap_or_default();
        format!(
            "{head:<8} {}  ({requests} requests in {window:.1}s)",
            metrics.join(", ")
        )
    }
}

/// `error-rate 9.8% > 1%` / `latency-p99 3.9ms ≤ 300ms` / `error-rate n/a`.
fn metric(m: &Value) -> String {
    let name = m["name"].as_str().unwrap_or("?");
    let unit = if name == "error-rate" { "%" } else { "ms" };
    let threshold = m["threshold"].as_f64().unwrap_or(0.0);
    match m["value"].as_f64() {
        None => format!("{name} n/a"),
        Some(value) => {
            let op = match m["result"].as_str() {
                Some("fail") => ">",
                Some("pass") => "≤",
                _ => "vs",
            };
            format!("{name} {value:.1}{unit} {op} {threshold}{unit}")
        }
    }
}

/// The line a reader remembers, from the API's own numbers (`rollout.impact` and the safety
/// net's counts): "v2 rolled back 1.27s after its first failed check; 1,843 canary requests
/// failed, 0 users saw an error (of 500 users, 250 sent to v2)".
pub fn impact_line(outcome: &Outcome, service: &Value) -> String {
    let rollout = &service["rollout"];
    let impact = &rollout["impact"];
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let retries = &rollout["safety_net"]["retries"];
    // With the safety net on, every failed canary request went through it (replayed, or
    // not: over budget, unsafe); without it, each one was a user's failure.
    let canary_failed = match rollout["safety_net"]["enabled"].as_bool() {
        Some(true) => ["ok", "failed", "budget", "unsafe"]
            .iter()
            .map(|r| n(&retries[r]))
            .sum(),
        _ => n(&impact["requests_failed"]),
    };
    let users_failed = n(&impact["users_failed"]);
    let saw = match users_failed {
        1 => "1 user saw an error".to_string(),
        k => format!("{} users saw an error", thousands(k)),
    };
    let head = match outcome {
        Outcome::RolledBack {
            detection_s: Some(s),
        } => format!("v2 rolled back {s:.2}s after its first failed check"),
        Outcome::RolledBack { detection_s: None } => "v2 rolled back".to_string(),
        Outcome::Promoted => "v2 promoted".to_string(),
    };
    let mirror = &rollout["mirror"];
    let copies = match n(&mirror["sent"]) {
        0 => String::new(),
        sent => format!(
            " (and {} of {} mirrored copies)",
            thousands(n(&mirror["failed"])),
            thousands(sent)
        ),
    };
    format!(
        "{head}; {} canary requests failed{copies}, {saw} (of {} users, {} sent to v2)",
        thousands(canary_failed),
        thousands(n(&impact["users_total"])),
        thousands(n(&impact["users_on_canary"])),
    )
}

/// `1843` → `1,843`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Polls the admin API's events and prints them until the runtime stops. Calls `finished`
/// once, when the first rollout ends, with the time of the event that ended it and the
/// service's document read just after.
pub async fn follow(
    admin: SocketAddr,
    start: SystemTime,
    threshold: u32,
    finished: impl FnOnce(Outcome, SystemTime, Value),
) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut timeline = Timeline::new(threshold);
    let mut since = 0u64;
    let mut finished = Some(finished);
    loop {
        if let Some(events) = fetch(&client, admin, since).await {
            for event in events {
                since = since.max(event["id"].as_u64().unwrap_or(since));
                let at = event["at"]
                    .as_str()
                    .and_then(|t| humantime::parse_rfc3339(t).ok())
                    .unwrap_or_else(SystemTime::now);
                let (lines, outcome) = timeline.describe(&event);
                for (label, text) in lines {
                    line_at(start, at, &label, &text);
                }
                if let Some(outcome) = outcome {
                    if let Some(done) = finished.take() {
                        let service = get_json(&client, admin, "/api/v1/services/shop")
                            .await
                            .unwrap_or(Value::Null);
                        done(outcome, at, service);
                    }
                }
            }
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

async fn fetch(client: &HttpClient, admin: SocketAddr, since: u64) -> Option<Vec<Value>> {
    let mut doc = get_json(client, admin, &format!("/api/v1/events?since={since}")).await?;
    match doc["events"].take() {
        Value::Array(events) => Some(events),
        _ => None,
    }
}

async fn get_json(client: &HttpClient, admin: SocketAddr, path: &str) -> Option<Value> {
    let uri: http::Uri = format!("http://{admin}{path}").parse().ok()?;
    let response = tokio::time::timeout(Duration::from_secs(2), client.get(uri))
        .await
        .ok()?
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body = response.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_check_shows_every_metric_against_its_threshold_and_counts_failures() {
        let mut t = Timeline::new(2);
        let pass = json!({"kind": "analysis", "message": "check passed", "details": {
            "verdict": "pass", "requests": 21, "window_s": 1.0,
            "metrics": [
                {"name": "error-rate", "value": 0.0, "threshold": 1.0, "result": "pass"},
                {"name": "latency-p99", "value": 3.94, "threshold": 300.0, "result": "pass"}]}});
        let (lines, outcome) = t.describe(&pass);
        assert_eq!(outcome, None);
        assert_eq!(
            lines[0].1,
            "pass     error-rate 0.0% ≤ 1%, latency-p99 3.9ms ≤ 300ms  (21 requests in 1.0s)"
        );
        let fail = json!({"kind": "analysis", "details": {
            "verdict": "fail", "requests": 98, "window_s": 1.0,
            "metrics": [{"name": "error-rate", "value": 9.8, "threshold": 1.0, "result": "fail"}]}});
        assert!(t.describe(&fail).0[0]
            .1
            .starts_with("FAIL 1/2 error-rate 9.8% > 1%"));
        assert!(t.describe(&fail).0[0].1.starts_with("FAIL 2/2"));
        let none = json!({"kind": "analysis", "details": {"verdict": "inconclusive",
            "metrics": [{"name": "error-rate", "value": null, "threshold": 1.0},
                        {"name": "latency-p99", "value": 400.0, "threshold": 300.0,
                         "result": "inconclusive"}]}});
        let line = &t.describe(&none).0[0].1;
        assert!(line.contains("error-rate n/a"), "{line}");
        assert!(line.contains("latency-p99 400.0ms vs 300ms"), "{line}");
    }

    #[test]
    fn the_last_line_says_what_the_rollout_cost_users() {
        let service = json!({"rollout": {
            "impact": {"users_total": 500, "users_on_canary": 250, "users_failed": 0,
                       "requests_failed": 0, "users_failed_pct": 0.0},
            "safety_net": {"enabled": true, "retries": {"ok": 1840, "failed": 0, "budget": 2, "unsafe": 1}},
            "mirror": {"sent": 0, "dropped": 0, "failed": 0}}});
        let outcome = Outcome::RolledBack {
            detection_s: Some(1.2),
        };
        assert_eq!(
            impact_line(&outcome, &service),
            "v2 rolled back 1.20s after its first failed check; 1,843 canary requests failed, 0 users saw an error (of 500 users, 250 sent to v2)"
        );
        let mirrored = json!({"rollout": {
            "impact": {"users_total": 394, "users_on_canary": 0, "users_failed": 0, "requests_failed": 0},
            "safety_net": {"enabled": true, "retries": {"ok": 0, "failed": 0, "budget": 0, "unsafe": 0}},
            "mirror": {"sent": 381, "dropped": 0, "failed": 40}}});
        assert_eq!(
            impact_line(&outcome, &mirrored),
            "v2 rolled back 1.20s after its first failed check; 0 canary requests failed (and 40 of 381 mirrored copies), 0 users saw an error (of 394 users, 0 sent to v2)"
        );
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }

    #[test]
    fn a_rollback_shows_its_reason_new_weights_and_detection_time() {
        let mut t = Timeline::new(2);
        let event = json!({"kind": "rolled_back", "message": "rolled back v2 2.0: error-rate 9.8% > 1%",
            "details": {"to_weights": {"v1": 100, "v2": 0}, "detection_s": 1.004}});
        let (lines, outcome) = t.describe(&event);
        assert_eq!(
            outcome,
            Some(Outcome::RolledBack {
                detection_s: Some(1.004)
            })
        );
        assert_eq!(
            lines[0],
            (
                "ROLLBACK".into(),
                "rolled back v2 2.0: error-rate 9.8% > 1%".into()
            )
        );
        assert_eq!(
            lines[1].1,
            "weights now v1 100%, v2 0%; detected in 1.00s (first failed check → canary at 0%)"
        );
    }
}
