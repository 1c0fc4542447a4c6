//! `state_dir` edge cases (SPEC §8, §16): damaged files are set aside or skipped and reported
//! in `/api/v1/status`, never fatal; the history pages; timestamps carry milliseconds.

use std::path::Path;

use crate::harness::*;
use http::StatusCode;
use serde_json::{json, Value};

fn config(state: &Path, backend: &Backend) -> String {
    Proxy::builder()
        .state_dir(state)
        .service(Service::blue_green("api", backend.addr, backend.addr))
        .yaml()
}

async fn set(proxy: &Proxy, blue: u32) -> Value {
    let (status, doc) = proxy
        .put_weights("api", json!({ "blue": blue, "green": 100 - blue }))
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    doc
}

fn ids(history: &Value) -> Vec<u64> {
    history["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect()
}

fn warnings(status: &Value) -> String {
    status["persistence"]["warnings"].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_that_is_a_directory_is_set_aside_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("state.json")).unwrap();
    let backend = Backend::start("blue-1").await;
    let proxy = Proxy::start(&config(&state, &backend)).await;

    let status = proxy.status_json().await;
    let w = warnings(&status);
    assert!(
        w.contains("state.json") && w.contains("kept aside"),
        "{status}"
    );
    assert_eq!(status["persistence"]["healthy"], true, "{status}");
    let aside = std::fs::read_dir(&state)
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.json.corrupt-")
        });
    assert!(aside, "the directory was not kept aside");
    // And the state directory works: changes are persisted again.
    set(&proxy, 60).await;
    assert!(state.join("state.json").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_line_in_the_middle_of_the_log_drops_only_that_line() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let backend = Backend::start("blue-1").await;
    let mut proxy = Proxy::start(&config(&state, &backend)).await;
    for blue in [90, 80, 70] {
        set(&proxy, blue).await;
    }
    assert_eq!(ids(&proxy.api("/services/api/history").await), [1, 2, 3, 4]);
    proxy.kill9();
    let log = state.join("revisions.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    // Damage revision 3's line in place (same length: the rest of the file is intact).
    let damaged = text.replacen("\"id\":3,", "\"id\":#,", 1);
    assert_ne!(damaged, text);
    std::fs::write(&log, damaged).unwrap();

    proxy.restart().await;
    assert_eq!(ids(&proxy.api("/services/api/history").await), [1, 2, 4]);
    let svc = proxy.api("/services/api").await;
    assert_eq!(svc["revision"], 4, "{svc}");
    assert_eq!(svc["versions"][0]["weight"], 70.0, "{svc}");
    let status = proxy.status_json().await;
    let w = warnings(&status);
    assert!(
        w.contains("revisions.jsonl") && w.contains("line 3"),
        "{status}"
    );
    // The log stays append-only: the damaged line is still there, the next one appended.
    set(&proxy, 50).await;
    let after = std::fs::read_to_string(&log).unwrap();
    assert!(
        after.contains("\"id\":#,"),
        "the damaged line was rewritten"
    );
    assert!(after.trim_end().ends_with('}') && after.lines().count() == 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_pages_back_with_before_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let backend = Backend::start("blue-1").await;
    let proxy = Proxy::start(&config(&state, &backend)).await;
    for i in 0..25 {
        set(&proxy, 50 + i).await;
    }
    let page = proxy.api("/services/api/history?limit=10").await;
    assert_eq!(ids(&page), (17..=26).collect::<Vec<_>>());
    assert_eq!(page["next_before"], 17);
    let page = proxy.api("/services/api/history?before=17&limit=10").await;
    assert_eq!(ids(&page), (7..=16).collect::<Vec<_>>());
    let page = proxy.api("/services/api/history?before=7&limit=10").await;
    assert_eq!(ids(&page), (1..=6).collect::<Vec<_>>());
    assert!(page["next_before"].is_null(), "{page}");
    let all = proxy.api("/services/api/history").await;
    assert_eq!(ids(&all), (1..=26).collect::<Vec<_>>());
    for (query, field) in [
        ("limit=0", "limit"),
        ("before=x", "before"),
        ("limit=-1", "limit"),
    ] {
        let reply = proxy
            .admin_get(&format!("/api/v1/services/api/history?{query}"))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{query}: {}",
            reply.text()
        );
        let doc: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(doc["field"], field, "{doc}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revision_event_and_status_times_carry_milliseconds() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let backend = Backend::start("blue-1").await;
    let proxy = Proxy::start(&config(&state, &backend)).await;
    set(&proxy, 90).await;
    let millis = |t: &Value| {
        let t = t.as_str().unwrap_or_default();
        t.len() == "2026-11-28T12:00:00.123Z".len()
            && t.as_bytes()[19] == b'.'
            && t[20..23].bytes().all(|b| b.is_ascii_digit())
            && t.ends_with('Z')
    };
    let history = proxy.api("/services/api/history").await;
    assert!(millis(&history["revisions"][1]["at"]), "{history}");
    let events = proxy.api("/events?since=0").await;
    assert!(millis(&events["events"][0]["at"]), "{events}");
    let status = proxy.status_json().await;
    assert!(millis(&status["loaded_at"]), "{status}");
}
