//! `switchyard demo` end to end (SPEC §10): the real binary with its built-in backends, load
//! and canary rollout; what it prints, what its API shows, and how it stops.

use std::time::Duration;

use crate::harness::demo::{weight_of, Demo};
use crate::harness::*;

/// The default demo must roll the canary back within a minute of its start.
const ROLLBACK_WITHIN: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bad_canary_is_rolled_back_by_itself_and_the_timeline_tells_the_story() {
    let mut demo = Demo::start(&[]);
    let svc = demo.wait_for_state("rolled_back", ROLLBACK_WITHIN).await;
    assert_eq!(weight_of(&svc, "v2"), 0.0, "{svc}");
    assert_eq!(weight_of(&svc, "v1"), 100.0, "{svc}");
    let reason = svc["rollout"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("error-rate"), "reason: {reason}");

    let out = demo
        .wait_for_output("Ctrl-C to stop.", Duration::from_secs(10))
        .await;
    for line in [
        &format!("dashboard  http://{}/", demo.admin),
        "step      step 1/4: v2 mirrored 100% (users stay on v1)",
        "step      step 2/4: v2 at 10%",
        "check     pass     error-rate 0.0% ≤ 1%",
        "v2 turns bad",
        "check     FAIL 1/2 error-rate",
        "check     FAIL 2/2",
        "ROLLBACK  rolled back v2 2.0: error-rate",
        "weights now v1 100%, v2 0%; detected in",
        "v2 was rolled back by the proxy itself",
        // The safety net kept every user away from v2's failures; the API counted them.
        ", 0 users saw an error (of ",
    ] {
        assert!(out.contains(line), "the timeline lacks {line:?}:\n{out}");
    }
    let svc = demo.shop().await.expect("the service document");
    let impact = &svc["rollout"]["impact"];
    assert_eq!(impact["users_failed"], 0, "{impact}");
    assert!(impact["users_on_canary"].as_u64() > Some(50), "{impact}");
    assert!(
        svc["rollout"]["safety_net"]["retries"]["ok"].as_u64() > Some(0),
        "{svc}"
    );
    // The printed times are the events' own (millisecond) times, so the detection time the
    // rollback reports is what the timeline shows between the first failed check and it.
    let stamp_of = |needle: &str| -> f64 {
        let line = out
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} line:\n{out}"));
        line.trim_start()
            .split('s')
            .next()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or_else(|| panic!("no time stamp on {line:?}"))
    };
    let (first_fail, rollback) = (stamp_of("FAIL 1/2"), stamp_of("ROLLBACK"));
    let detected: f64 = out
        .split("detected in ")
        .nth(1)
        .and_then(|rest| rest.split('s').next())
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no detection time:\n{out}"));
    assert!(
        ((rollback - first_fail) - detected).abs() <= 0.15,
        "printed {first_fail}s → {rollback}s but detected in {detected}s:\n{out}"
    );
    let events = get_once(demo.admin, "/api/v1/events?since=0")
        .await
        .expect("events");
    let events: serde_json::Value = serde_json::from_slice(&events.body).expect("json");
    let at = events["events"][0]["at"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        at.len() == "2026-11-28T12:00:00.123Z".len() && at.as_bytes()[19] == b'.',
        "event times carry milliseconds: {at:?}"
    );
    // The demo keeps serving: the proxy answers from v1, even when v2 is asked for.
    for headers in [&[][..], &[("x-canary", "always")][..]] {
        let reply = Client::http1(demo.proxy)
            .send(get_with("/", headers))
            .await
            .expect("the proxy still serves after the rollback");
        assert_eq!(reply.status, http::StatusCode::OK);
        assert!(reply.text().contains("hello from v1"), "{}", reply.text());
    }
    // Ctrl-C exits cleanly.
    let status = demo.interrupt(Duration::from_secs(15)).await;
    assert_eq!(status.map(|s| s.code()), Some(Some(0)), "{}", demo.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_safety_net_the_last_line_counts_users_who_saw_errors() {
    let mut demo = Demo::start(&["--no-safety-net"]);
    let svc = demo.wait_for_state("rolled_back", ROLLBACK_WITHIN).await;
    let failed = svc["rollout"]["impact"]["users_failed"]
        .as_u64()
        .unwrap_or(0);
    assert!(failed > 0, "{svc}");
    let out = demo
        .wait_for_output("Ctrl-C to stop.", Duration::from_secs(10))
        .await;
    assert!(out.contains("safety net off (--no-safety-net)"), "{out}");
    assert!(out.contains(" users saw an error (of "), "{out}");
    assert!(!out.contains(", 0 users saw an error"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_healthy_the_canary_is_promoted() {
    let mut demo = Demo::start(&["--healthy"]);
    let svc = demo
        .wait_for_state("promoted", Duration::from_secs(60))
        .await;
    assert_eq!(weight_of(&svc, "v2"), 100.0, "{svc}");
    let out = demo
        .wait_for_output("Ctrl-C to stop.", Duration::from_secs(10))
        .await;
    assert!(out.contains("step 3/4: v2 at 50%"), "{out}");
    assert!(out.contains("PROMOTED"), "{out}");
    assert!(!out.contains("ROLLBACK"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let admin = free_port().to_string();
    let (status, _stdout, stderr) =
        run_cli(&["demo", "--port", &port, "--admin-port", &admin]).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")) && stderr.contains("--port"),
        "{stderr}"
    );
}
