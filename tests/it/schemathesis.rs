//! The OpenAPI document (`control/openapi.json`) against the live binary: schemathesis
//! (PyPI) reads the document the proxy serves, generates requests for every operation —
//! schema examples, boundary values, then random (valid and invalid) data — and checks that
//! nothing answers 5xx, every status is documented, and every body matches its schema.
//!
//! Needs the `st` command (`pip install schemathesis`; `.ci/run` installs it); without it the
//! test fails and says how to install it, like the Prometheus and Chromium tests.
//! `SCHEMATHESIS` may name the executable; `SCHEMATHESIS_SEED`
//! replays a run. Bounded: at most [`MAX_EXAMPLES`] cases per operation and [`MAX_TIME`] in
//! all, inside a hard [`DEADLINE`].

use std::process::Stdio;
use std::time::Duration;

use crate::harness::*;
use http::StatusCode;

/// Generated cases per operation, per phase.
const MAX_EXAMPLES: &str = "25";
/// schemathesis' own time budget, seconds.
const MAX_TIME: &str = "45";
/// The test's hard bound on the schemathesis process.
const DEADLINE: Duration = Duration::from_secs(150);

const TOKEN: &str = "schemathesis-token";

/// What must hold for every response. `positive_data_acceptance` is left out on purpose:
/// schema-valid weights may still be refused by rules a schema cannot say (all weights 0).
const CHECKS: &str = "not_a_server_error,status_code_conformance,response_schema_conformance,\
content_type_conformance,negative_data_rejection,unsupported_method,allow_header_conformance,\
ignored_auth";

fn schemathesis() -> Option<String> {
    let exe = std::env::var("SCHEMATHESIS").unwrap_or_else(|_| "st".to_string());
    let found = std::process::Command::new(&exe)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    found.then_some(exe)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_api_matches_its_openapi_document() {
    let Some(st) = schemathesis() else {
        panic!(
            "schemathesis (`st`) is not installed: pip install schemathesis \
             (or run `bash .ci/run`, which installs it)"
        );
    };

    let blue = Backend::start("blue-1").await;
    let green = Backend::start("green-1").await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    // `api` has a rollout (so every rollout action has a state to act on), `web` has none.
    let proxy = Proxy::start(&format!(
        r#"
        listeners: [{{ name: public, address: "127.0.0.1:0" }}]
        admin:
          address: "127.0.0.1:0"
          token_file: {token}
        state_dir: state
        services:
          api:
            versions:
              blue:  {{ release: v1, backends: ["{blue}"], weight: 100 }}
              green: {{ release: v2, backends: ["{green}"], weight: 0 }}
            rollout:
              stable: blue
              canary: green
              steps: [{{ traffic: 10%, duration: 1h }}, {{ traffic: 100% }}]
              analysis: {{ interval: 1h, threshold: 5, min_requests: 1000000, metrics: [{{ name: error-rate, threshold: 1 }}] }}
          web:
            match: {{ hosts: ["web.test"] }}
            versions:
              blue:  {{ release: v1, backends: ["{blue}"], weight: 50 }}
              green: {{ release: v1, backends: ["{green}"], weight: 50 }}
        "#,
        token = token_file.display(),
        blue = blue.addr,
        green = green.addr,
    ))
    .await;

    run(&st, &proxy, &[]).await;

    // The proxy is still up and coherent after the barrage.
    assert_eq!(proxy.admin_get("/ready").await.status, StatusCode::OK);
    proxy.api("/services/api").await;
    assert!(!proxy.stderr().contains("panicked"), "the proxy panicked");
    assert!(
        !proxy.stderr().contains(TOKEN),
        "the token appeared in the logs"
    );
}

/// Runs schemathesis against `proxy`'s admin (bearer [`TOKEN`]) with `only` (extra filter
/// arguments, e.g. `--include-path`), asserts it found nothing and prints its summary.
async fn run(st: &str, proxy: &Proxy, only: &[&str]) {
    let base = format!("http://{}", proxy.admin);
    let seed = std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261128".to_string());
    let auth = format!("Authorization: Bearer {TOKEN}");
    let openapi = format!("{base}/api/v1/openapi.json");
    let mut args = vec![
        "run",
        &openapi,
        "--url",
        &base,
        "--header",
        &auth,
        "--checks",
        CHECKS,
        "--max-examples",
        MAX_EXAMPLES,
        "--max-time",
        MAX_TIME,
        "--workers",
        "2",
        "--seed",
        &seed,
        "--request-timeout",
        "10",
    ];
    args.extend_from_slice(only);
    let run = tokio::time::timeout(
        DEADLINE,
        tokio::process::Command::new(st)
            .args(args)
            // Hypothesis keeps its example database in the working directory.
            .current_dir(proxy.dir())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("schemathesis did not finish within {DEADLINE:?}"))
    .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "schemathesis found problems ({}; seed {seed}):\n{stdout}\n{stderr}",
        run.status
    );
    // Print the summary so a CI log shows what was covered.
    let summary: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.contains("SUMMARY"))
        .collect();
    eprintln!("{}", summary.join("\n"));
}

/// `GET /api/v1/fleet` has a body only in a fleet: the same checks against a replica of a
/// real two-replica fleet, so the document's `Fleet` schema is the shape the dashboard and
/// `ctl fleet` get.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_api_matches_its_openapi_document() {
    use crate::harness::etcd::{leader_of, replica_config, Etcd};
    let Some(st) = schemathesis() else {
        panic!("schemathesis (`st`) is not installed: pip install schemathesis");
    };
    let etcd = Etcd::start().await;
    let blue = Backend::start("blue-1").await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let services = format!(
        "api:\n  versions:\n    blue: {{ release: v1, backends: [\"{}\"], weight: 100 }}\n",
        blue.addr
    );
    let prefix = format!("/switchyard/t{}", free_port());
    let mut fleet = Vec::new();
    for i in 0..2 {
        let config: String = replica_config(&etcd, &prefix, i, 2, &services)
            .lines()
            .map(|l| {
                match l
                    .strip_prefix("admin: {")
                    .and_then(|l| l.strip_suffix(" }"))
                {
                    Some(a) => format!("admin: {{{a}, token_file: {} }}\n", token_file.display()),
                    None => format!("{l}\n"),
                }
            })
            .collect();
        fleet.push(Proxy::start(&config).await);
    }
    leader_of(&fleet.iter().collect::<Vec<_>>()).await;
    run(&st, &fleet[1], &["--include-path", "/api/v1/fleet"]).await;
    let doc = fleet[1].api("/fleet").await;
    assert_eq!(doc["replicas"].as_array().map(Vec::len), Some(2), "{doc}");
}
