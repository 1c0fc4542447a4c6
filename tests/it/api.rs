//! The control API (SPEC §7) against the real binary: every endpoint, its status codes, the
//! error shape, auth, bad input that changes nothing, and concurrent writers.

use std::collections::BTreeMap;
use std::path::Path;

use crate::harness::*;
use crate::rollout::driven_only;
use http::StatusCode;
use serde_json::{json, Value};

const TOKEN: &str = "s3cret-token-for-tests";

/// `api` (blue 100 / green 0, no rollout) and `web` (with a rollout whose steps last an hour,
/// so it stays at step 1 unless driven through the API).
fn config(backend: &Backend, token_file: Option<&Path>) -> ProxyBuilder {
    let addr = backend.addr;
    let web = Service::blue_green("web", addr, addr)
        .hosts(&["web.test"])
        .rollout(driven_only());
    let proxy = Proxy::builder()
        .state_dir("state")
        .service(Service::blue_green("api", addr, addr))
        .service(web);
    match token_file {
        Some(path) => proxy.admin_token_file(path),
        None => proxy,
    }
}

async fn start(token_file: Option<&Path>) -> (Backend, Proxy) {
    let backend = Backend::start("blue-1").await;
    let proxy = config(&backend, token_file).start().await;
    (backend, proxy)
}

fn weight(svc: &Value, version: &str) -> f64 {
    svc["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == version))
        .and_then(|v| v["weight"].as_f64())
        .unwrap_or_else(|| panic!("no weight for {version} in {svc}"))
}

fn revisions(history: &Value) -> Vec<Value> {
    history["revisions"].as_array().cloned().unwrap_or_default()
}

/// Everything a bad request must leave alone: the revision, the history, the live weights.
async fn snapshot(proxy: &Proxy, svc: &str) -> (Value, Value) {
    let doc = proxy.api(&format!("/services/{svc}")).await;
    let weights: BTreeMap<String, Value> = doc["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap().to_string(), v["weight"].clone()))
        .collect();
    let history = proxy.api(&format!("/services/{svc}/history")).await;
    (
        json!({ "revision": doc["revision"], "weights": weights, "rollout": doc["rollout"]["state"] }),
        history,
    )
}

fn assert_error(
    status: StatusCode,
    doc: &Value,
    want: StatusCode,
    field: Option<&str>,
    what: &str,
) {
    assert_eq!(status, want, "{what}: {doc}");
    assert!(
        doc["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: no error message in {doc}"
    );
    assert!(doc.get("field").is_some(), "{what}: no field key in {doc}");
    if let Some(field) = field {
        assert_eq!(doc["field"], field, "{what}: {doc}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_endpoint_answers_its_documented_shape() {
    let (_backend, proxy) = start(None).await;

    let list = proxy.api("/services").await;
    let names: Vec<&str> = list["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api", "web"]);

    let api = proxy.api("/services/api").await;
    assert_eq!(api["name"], "api");
    assert!(api["revision"].as_u64() >= Some(1), "{api}");
    assert!(api["rollout"].is_null(), "no rollout configured: {api}");
    let blue = &api["versions"][0];
    assert_eq!(blue["name"], "blue");
    assert_eq!(blue["release"], "v1");
    assert_eq!(blue["weight"], 100.0);
    assert_eq!(blue["rolled_back"], false);
    assert_eq!(blue["backends"][0]["healthy"], true);
    for key in ["rps", "error_rate", "p99_ms"] {
        assert!(blue["live"][key].is_number(), "live.{key}: {blue}");
    }

    let web = proxy.api("/services/web").await;
    let rollout = &web["rollout"];
    assert_eq!(rollout["state"], "progressing", "{web}");
    assert_eq!(rollout["step"], 1);
    assert_eq!(rollout["steps"], 3);
    assert_eq!(rollout["stable"], "blue");
    assert_eq!(rollout["canary"], "green");
    assert_eq!(rollout["failed_checks"], 0);
    assert_eq!(rollout["threshold"], 5);
    assert!(rollout.get("last_analysis").is_some(), "{rollout}");
    assert_eq!(weight(&web, "green"), 10.0);

    let history = proxy.api("/services/api/history").await;
    let first = &revisions(&history)[0];
    assert_eq!(first["id"], 1);
    assert_eq!(first["source"], "config");
    assert_eq!(first["weights"], json!({"blue": 100, "green": 0}));
    assert!(
        first["at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{first}"
    );
    assert!(first["reason"].is_string());

    let events = proxy.api("/events").await;
    let all = events["events"].as_array().unwrap().clone();
    assert!(!all.is_empty(), "the web rollout started: {events}");
    let ids: Vec<u64> = all.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "newest last: {ids:?}");
    let since = proxy.api(&format!("/events?since={}", ids[0])).await;
    assert_eq!(since["events"].as_array().unwrap().len(), all.len() - 1);
    let none = proxy
        .api(&format!("/events?since={}", ids.last().unwrap()))
        .await;
    assert_eq!(none["events"], json!([]));
    for key in ["id", "at", "service", "kind", "message", "details"] {
        assert!(all[0].get(key).is_some(), "event.{key}: {}", all[0]);
    }

    let status = proxy.api("/status").await;
    for key in [
        "config_path",
        "loaded_at",
        "last_reload_error",
        "uptime_s",
        "version",
    ] {
        assert!(status.get(key).is_some(), "status.{key}: {status}");
    }
    assert_eq!(proxy.admin_get("/health").await.status, StatusCode::OK);
    assert_eq!(proxy.admin_get("/ready").await.status, StatusCode::OK);

    // The OpenAPI document is served and describes every endpoint.
    let openapi = proxy.api("/openapi.json").await;
    assert!(openapi["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/services",
        "/api/v1/services/{svc}",
        "/api/v1/services/{svc}/weights",
        "/api/v1/services/{svc}/switch",
        "/api/v1/services/{svc}/rollout/{action}",
        "/api/v1/services/{svc}/rollback",
        "/api/v1/services/{svc}/history",
        "/api/v1/services/{svc}/undo",
        "/api/v1/events",
        "/api/v1/status",
        "/health",
        "/ready",
    ] {
        assert!(openapi["paths"].get(path).is_some(), "openapi lacks {path}");
    }
    let on_disk: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/control/openapi.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        openapi, on_disk,
        "the served document is the one in the repo"
    );

    // Unknown things are 404 with the error shape.
    for path in [
        "/api/v1/services/nope",
        "/api/v1/services/nope/history",
        "/api/v1/nothing",
    ] {
        let reply = proxy.admin_get(path).await;
        let doc: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_error(reply.status, &doc, StatusCode::NOT_FOUND, None, path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_switch_and_undo_each_add_one_revision_and_never_rewrite_history() {
    let (_backend, proxy) = start(None).await;
    let before = revisions(&proxy.api("/services/api/history").await);
    let base = before.last().unwrap()["id"].as_u64().unwrap();

    // Weights: applied, one revision with source api.
    let (status, doc) = proxy
        .put_weights("api", json!({"blue": 90, "green": 10}))
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(weight(&doc, "blue"), 90.0);
    assert_eq!(weight(&doc, "green"), 10.0);
    assert_eq!(doc["revision"], base + 1);
    let live = proxy.api("/services/api").await;
    assert_eq!(weight(&live, "green"), 10.0);

    // Percentages and partial updates: a version not named keeps its weight.
    let (status, doc) = proxy.put_weights("api", json!({"green": "30%"})).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["revision"], base + 2);
    assert_eq!(weight(&doc, "blue"), 75.0); // 90 : 30

    // Switch: 100% to one version.
    let (status, doc) = proxy
        .api_send(
            "POST",
            "/services/api/switch",
            Some(json!({"to": "green"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(weight(&doc, "green"), 100.0);
    assert_eq!(weight(&doc, "blue"), 0.0);
    assert_eq!(doc["revision"], base + 3);

    // Undo (default: the previous revision) restores its weights as a new revision.
    let (status, doc) = proxy
        .api_send("POST", "/services/api/undo", None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["revision"], base + 4);
    assert_eq!(weight(&doc, "blue"), 75.0);
    assert_eq!(weight(&doc, "green"), 25.0);

    // Undo to an explicit revision: the initial config.
    let (status, doc) = proxy
        .api_send(
            "POST",
            "/services/api/undo",
            Some(json!({"to_revision": 1})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["revision"], base + 5);
    assert_eq!(weight(&doc, "blue"), 100.0);

    let after = revisions(&proxy.api("/services/api/history").await);
    assert_eq!(after.len(), before.len() + 5);
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "old revisions are never rewritten"
    );
    let ids: Vec<u64> = after.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(
        ids,
        (1..=base + 5).collect::<Vec<_>>(),
        "ids are contiguous, oldest first"
    );
    let new = &after[before.len()..];
    assert!(new.iter().all(|r| r["source"] == "api"), "{new:?}");
    assert_eq!(new[0]["weights"], json!({"blue": 90, "green": 10}));
    assert_eq!(new[2]["weights"], json!({"blue": 0, "green": 100}));
    assert_eq!(new[3]["weights"], new[1]["weights"]);
    assert_eq!(new[4]["weights"], after[0]["weights"]);
    assert!(
        new[4]["reason"].as_str().unwrap().contains("revision 1"),
        "{}",
        new[4]
    );

    // Each change was announced as an event.
    let events = proxy.api("/events").await;
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["service"] == "api")
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["weights", "weights", "switched", "undo", "undo"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_the_reason_and_changes_nothing() {
    let (_backend, proxy) = start(None).await;
    let (before, history) = snapshot(&proxy, "api").await;

    // (method, path, raw body, status, field)
    let cases: &[(&str, &str, &str, StatusCode, Option<&str>)] = &[
        (
            "PUT",
            "/services/api/weights",
            "{\"blue\": 90,",
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "PUT",
            "/services/api/weights",
            "[90, 10]",
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "PUT",
            "/services/api/weights",
            "",
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "PUT",
            "/services/api/weights",
            "{}",
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "PUT",
            "/services/api/weights",
            r#"{"blue": -1}"#,
            StatusCode::BAD_REQUEST,
            Some("blue"),
        ),
        (
            "PUT",
            "/services/api/weights",
            r#"{"blue": 4294967296}"#,
            StatusCode::BAD_REQUEST,
            Some("blue"),
        ),
        (
            "PUT",
            "/services/api/weights",
            r#"{"blue": 1e30}"#,
            StatusCode::BAD_REQUEST,
            Some("blue"),
        ),
        (
            "PUT",
            "/services/api/weights",
            r#"{"blue": 1000001}"#,
            StatusCode::BAD_REQUEST,
            Some("blue"),
        ),
        (
            "PUT",
            "/services/api/weights",
            r#"{"green": 10.5}"#,
            StatusCode::BAD_REQUEST,
            Some("green"),
        ),
        (
            "PUT",
            "/services/api/weights",
            r#"{"green": "150%"}"#,
            StatusCode::BAD_REQUEST,
            Some("green"),
        ),
        (
            "PUT",
            "/services/api/weights",
            r#"{"green": true}"#,
            StatusCode::BAD_REQUEST,
            Some("green"),
        ),
        (
            "PUT",
            "/services/api/weights",
            r#"{"blue": 0, "green": 0}"#,
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "PUT",
            "/services/api/weights",
            r#"{"blue": 0}"#,
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "PUT",
            "/services/api/weights",
            r#"{"blue": 50, "purple": 50}"#,
            StatusCode::NOT_FOUND,
            Some("purple"),
        ),
        (
            "PUT",
            "/services/nope/weights",
            r#"{"blue": 50}"#,
            StatusCode::NOT_FOUND,
            None,
        ),
        (
            "POST",
            "/services/api/switch",
            r#"{"to": "purple"}"#,
            StatusCode::NOT_FOUND,
            Some("to"),
        ),
        (
            "POST",
            "/services/api/switch",
            r#"{"to": 1}"#,
            StatusCode::BAD_REQUEST,
            Some("to"),
        ),
        (
            "POST",
            "/services/api/switch",
            r#"{}"#,
            StatusCode::BAD_REQUEST,
            Some("to"),
        ),
        (
            "POST",
            "/services/api/switch",
            r#"{"to": "green", "force": true}"#,
            StatusCode::BAD_REQUEST,
            Some("force"),
        ),
        (
            "POST",
            "/services/api/switch",
            "",
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "POST",
            "/services/api/switch",
            "to=green",
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "POST",
            "/services/api/undo",
            r#"{"to_revision": 0}"#,
            StatusCode::BAD_REQUEST,
            Some("to_revision"),
        ),
        (
            "POST",
            "/services/api/undo",
            r#"{"to_revision": -3}"#,
            StatusCode::BAD_REQUEST,
            Some("to_revision"),
        ),
        (
            "POST",
            "/services/api/undo",
            r#"{"to_revision": "1"}"#,
            StatusCode::BAD_REQUEST,
            Some("to_revision"),
        ),
        (
            "POST",
            "/services/api/undo",
            r#"{"to_revision": 999}"#,
            StatusCode::NOT_FOUND,
            Some("to_revision"),
        ),
        (
            "POST",
            "/services/api/undo",
            r#"{"revision": 1}"#,
            StatusCode::BAD_REQUEST,
            Some("revision"),
        ),
        ("POST", "/services/api/undo", "", StatusCode::CONFLICT, None),
        (
            "POST",
            "/services/api/undo",
            "\n",
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "POST",
            "/services/api/rollback",
            r#"{"reason": 5}"#,
            StatusCode::BAD_REQUEST,
            Some("reason"),
        ),
        (
            "POST",
            "/services/api/rollback",
            r#"{"reason": "x"}"#,
            StatusCode::CONFLICT,
            None,
        ),
        (
            "POST",
            "/services/api/rollout/start",
            "",
            StatusCode::CONFLICT,
            None,
        ),
        (
            "POST",
            "/services/api/rollout/launch",
            "",
            StatusCode::NOT_FOUND,
            None,
        ),
        (
            "POST",
            "/services/web/rollout/pause",
            r#"{"now": true}"#,
            StatusCode::BAD_REQUEST,
            Some("now"),
        ),
    ];
    for &(method, path, body, want, field) in cases {
        let reply = proxy
            .admin_send_raw(method, &format!("/api/v1{path}"), body.to_string(), None)
            .await;
        let doc: Value = serde_json::from_slice(&reply.body)
            .unwrap_or_else(|e| panic!("{method} {path} {body}: not JSON ({e}): {}", reply.text()));
        assert_error(
            reply.status,
            &doc,
            want,
            field,
            &format!("{method} {path} {body}"),
        );
    }

    // Wrong methods: 405 naming the right one.
    for (method, path, allow) in [
        ("POST", "/api/v1/services/api/weights", "PUT"),
        ("GET", "/api/v1/services/api/switch", "POST"),
        ("DELETE", "/api/v1/services/api", "GET"),
        ("PUT", "/api/v1/events", "GET"),
        ("POST", "/health", "GET"),
    ] {
        let reply = proxy.admin_send_raw(method, path, "", None).await;
        assert_eq!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_eq!(reply.headers["allow"], allow, "{method} {path}");
        let doc: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_error(
            reply.status,
            &doc,
            StatusCode::METHOD_NOT_ALLOWED,
            None,
            path,
        );
    }

    // A body past the limit.
    let huge = format!("{{\"blue\": 1, \"pad\": \"{}\"}}", "x".repeat(100_000));
    let reply = proxy
        .admin_send_raw("PUT", "/api/v1/services/api/weights", huge, None)
        .await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.text()
    );

    // Bad query parameter.
    for q in ["since=-1", "since=x", "since=99999999999999999999"] {
        let reply = proxy.admin_get(&format!("/api/v1/events?{q}")).await;
        let doc: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_error(
            reply.status,
            &doc,
            StatusCode::BAD_REQUEST,
            Some("since"),
            q,
        );
    }

    let (after, history_after) = snapshot(&proxy, "api").await;
    assert_eq!(after, before, "bad input changed the service");
    assert_eq!(history_after, history, "bad input changed the history");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_actions_follow_the_state_machine_and_conflicts_are_409() {
    let (_backend, proxy) = start(None).await;
    let send = |path: &'static str, body: Option<Value>| {
        let proxy = &proxy;
        async move { proxy.api_send("POST", path, body, None).await }
    };
    let web = proxy.api("/services/web").await;
    assert_eq!(web["rollout"]["state"], "progressing");

    // A running rollout owns the weights.
    let (status, doc) = proxy
        .put_weights("web", json!({"blue": 50, "green": 50}))
        .await;
    assert_error(
        status,
        &doc,
        StatusCode::CONFLICT,
        None,
        "weights during a rollout",
    );
    let (status, doc) = send("/services/web/switch", Some(json!({"to": "green"}))).await;
    assert_error(
        status,
        &doc,
        StatusCode::CONFLICT,
        None,
        "switch during a rollout",
    );
    let (status, doc) = send("/services/web/undo", Some(json!({"to_revision": 1}))).await;
    assert_error(
        status,
        &doc,
        StatusCode::CONFLICT,
        None,
        "undo during a rollout",
    );
    let (status, doc) = send("/services/web/rollout/start", None).await;
    assert_error(status, &doc, StatusCode::CONFLICT, None, "start twice");

    let (status, doc) = send("/services/web/rollout/pause", None).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["rollout"]["state"], "paused");
    assert_eq!(weight(&doc, "green"), 10.0, "a pause holds the step");
    let (status, doc) = send("/services/web/rollout/pause", None).await;
    assert_error(status, &doc, StatusCode::CONFLICT, None, "pause twice");

    let (status, doc) = send("/services/web/rollout/resume", None).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["rollout"]["state"], "progressing");

    let (status, doc) = send("/services/web/rollout/promote", None).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["rollout"]["state"], "promoted");
    assert_eq!(weight(&doc, "green"), 100.0);
    let (status, doc) = send("/services/web/rollout/abort", None).await;
    assert_error(
        status,
        &doc,
        StatusCode::CONFLICT,
        None,
        "abort after promotion",
    );

    // After a promotion the roles swap: the next rollout's canary is blue.
    let (status, doc) = send("/services/web/rollout/start", None).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["rollout"]["canary"], "blue");
    assert_eq!(weight(&doc, "blue"), 10.0);
    let (status, doc) = send("/services/web/rollout/abort", None).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["rollout"]["state"], "aborted");
    assert_eq!(weight(&doc, "green"), 100.0);
    assert_eq!(weight(&doc, "blue"), 0.0);

    // Manual rollback of a running canary, then resume restarts it.
    let (status, _) = send("/services/web/rollout/start", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, doc) = send(
        "/services/web/rollback",
        Some(json!({"reason": "p99 looks wrong"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["rollout"]["state"], "rolled_back");
    assert_eq!(weight(&doc, "blue"), 0.0);
    let blue = doc["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "blue")
        .unwrap();
    assert_eq!(blue["rolled_back"], true);
    let history = revisions(&proxy.api("/services/web/history").await);
    let last = history.last().unwrap();
    assert_eq!(last["source"], "api");
    assert!(
        last["reason"].as_str().unwrap().contains("p99 looks wrong"),
        "{last}"
    );
    let (status, doc) = send("/services/web/rollback", None).await;
    assert_error(status, &doc, StatusCode::CONFLICT, None, "rollback twice");

    let (status, doc) = send("/services/web/rollout/resume", None).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["rollout"]["state"], "progressing");
    assert_eq!(weight(&doc, "blue"), 10.0);

    // No rollout configured: rollout actions and rollback are 409.
    for path in [
        "/services/api/rollout/start",
        "/services/api/rollout/pause",
        "/services/api/rollback",
    ] {
        let (status, doc) = send(path, None).await;
        assert_error(status, &doc, StatusCode::CONFLICT, None, path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_from_token_file_guards_every_mutation() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let (_backend, proxy) = start(Some(&token_file)).await;
    check_token_guards(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_from_the_environment_guards_every_mutation() {
    let backend = Backend::start("blue-1").await;
    let proxy = Proxy::start_with_env(
        &config(&backend, None).yaml(),
        &[],
        &[("SWITCHYARD_ADMIN_TOKEN", TOKEN)],
    )
    .await;
    check_token_guards(&proxy).await;
}

async fn check_token_guards(proxy: &Proxy) {
    let (before, history) = snapshot(proxy, "api").await;
    let (web_before, web_history) = snapshot(proxy, "web").await;
    let mutations: &[(&str, &str, Option<Value>)] = &[
        (
            "PUT",
            "/services/api/weights",
            Some(json!({"blue": 50, "green": 50})),
        ),
        ("POST", "/services/api/switch", Some(json!({"to": "green"}))),
        (
            "POST",
            "/services/api/undo",
            Some(json!({"to_revision": 1})),
        ),
        ("POST", "/services/web/rollback", None),
        ("POST", "/services/web/rollout/pause", None),
        ("POST", "/services/web/rollout/promote", None),
        ("POST", "/services/web/rollout/abort", None),
    ];
    for (method, path, body) in mutations {
        for token in [None, Some("wrong"), Some(&TOKEN[..TOKEN.len() - 1])] {
            let reply = proxy
                .admin_send(method, &format!("/api/v1{path}"), body.clone(), token)
                .await;
            let doc: Value = serde_json::from_slice(&reply.body).unwrap();
            assert_error(reply.status, &doc, StatusCode::UNAUTHORIZED, None, path);
            assert!(
                reply.headers.contains_key("www-authenticate"),
                "{method} {path}: 401 without WWW-Authenticate"
            );
        }
    }
    // Even an invalid body is refused for the token first: nothing is read or reported.
    let reply = proxy
        .admin_send_raw("PUT", "/api/v1/services/api/weights", "{oops", None)
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        snapshot(proxy, "api").await,
        (before, history),
        "a 401 changed api"
    );
    assert_eq!(
        snapshot(proxy, "web").await,
        (web_before, web_history),
        "a 401 changed web"
    );

    // Reads stay open on loopback; the right token is accepted.
    assert_eq!(
        proxy.admin_get("/api/v1/services").await.status,
        StatusCode::OK
    );
    let (status, doc) = proxy
        .api_send(
            "PUT",
            "/services/api/weights",
            Some(json!({"blue": 50, "green": 50})),
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(weight(&doc, "green"), 50.0);
    let reply = proxy
        .admin_send_raw(
            "POST",
            "/api/v1/services/api/switch",
            r#"{"to":"green"}"#,
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    assert!(
        !proxy.stderr().contains(TOKEN),
        "the token appeared in the logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_weight_updates_leave_a_hundred_revisions_and_the_last_one_live() {
    let (_backend, mut proxy) = start(None).await;
    let base = proxy.api("/services/api").await["revision"]
        .as_u64()
        .unwrap();

    let admin = proxy.admin;
    let tasks: Vec<_> = (0..100u32)
        .map(|i| {
            tokio::spawn(async move {
                let body = json!({ "blue": i + 1, "green": 200 - i });
                let req = http::Request::put("/api/v1/services/api/weights")
                    .header("content-type", "application/json")
                    .body(full(body.to_string()))
                    .unwrap();
                let reply = Client::http1(admin).send(req).await.expect("PUT weights");
                assert_eq!(reply.status, StatusCode::OK, "update {i}: {}", reply.text());
                i
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("update task");
    }

    let history = revisions(&proxy.api("/services/api/history").await);
    let new: Vec<&Value> = history
        .iter()
        .filter(|r| r["id"].as_u64().unwrap() > base)
        .collect();
    assert_eq!(
        new.len(),
        100,
        "exactly one revision per acknowledged update"
    );
    let ids: Vec<u64> = new.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, (base + 1..=base + 100).collect::<Vec<_>>());
    let mut blues: Vec<u64> = new
        .iter()
        .map(|r| r["weights"]["blue"].as_u64().unwrap())
        .collect();
    blues.sort_unstable();
    assert_eq!(
        blues,
        (1..=100).collect::<Vec<_>>(),
        "every update is in the history once"
    );

    // The live table is the last acknowledged revision.
    let check_live = |svc: &Value, last: &Value| {
        assert_eq!(svc["revision"], last["id"], "{svc}");
        let (b, g) = (
            last["weights"]["blue"].as_f64().unwrap(),
            last["weights"]["green"].as_f64().unwrap(),
        );
        let want = ((b * 100.0 / (b + g)) * 100.0).round() / 100.0;
        assert_eq!(
            weight(svc, "blue"),
            want,
            "live {svc} vs last revision {last}"
        );
    };
    let last = new.last().unwrap();
    check_live(&proxy.api("/services/api").await, last);

    // Acknowledged means durable: a kill -9 loses none of it.
    proxy.kill9();
    proxy.restart().await;
    let history_after = revisions(&proxy.api("/services/api/history").await);
    assert_eq!(history_after.len(), history.len());
    check_live(&proxy.api("/services/api").await, last);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_and_switch_move_real_traffic() {
    let blue = Backend::start("blue-1").await;
    let green = Backend::start("green-1").await;
    let proxy = Proxy::start_services(&format!(
        r#"
          api:
            versions:
              blue:  {{ release: v1, backends: ["{}"], weight: 100 }}
              green: {{ release: v2, backends: ["{}"], weight: 0 }}
        "#,
        blue.addr, green.addr
    ))
    .await;
    let (status, _) = proxy
        .api_send(
            "POST",
            "/services/api/switch",
            Some(json!({"to": "green"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let t = tally(proxy.listen, 50).await;
    assert_eq!(t.count("green"), 50, "{t}");

    let (status, _) = proxy
        .put_weights("api", json!({"blue": 50, "green": 50}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let t = tally(proxy.listen, 400).await;
    t.check_split(&[("blue", 50.0), ("green", 50.0)], 12.0)
        .unwrap();
}
