//! `switchyard ctl` against the real binary: every verb, its tables and `-o json`, the token
//! from a flag or the environment, clear failures (exit 1) and usage errors (exit 2), and a
//! pipeline's full blue/green and canary driven with nothing but `ctl`.

use crate::harness::*;
use crate::rollout::driven_only;

const TOKEN: &str = "ctl-test-token";

fn config(blue: &Backend, green: &Backend) -> ProxyBuilder {
    Proxy::builder()
        .state_dir("state")
        .service(Service::blue_green("api", blue.addr, green.addr))
}

/// `api` with a canary rollout of green whose steps last an hour: it moves only when driven.
fn canary_config(blue: &Backend, green: &Backend) -> ProxyBuilder {
    Proxy::builder()
        .state_dir("state")
        .service(Service::blue_green("api", blue.addr, green.addr).rollout(driven_only()))
}

async fn backends() -> (Backend, Backend) {
    (
        Backend::start("blue-1").await,
        Backend::start("green-1").await,
    )
}

/// The live share of `version` as `ctl -o json status api` reports it.
async fn share(proxy: &Proxy, version: &str) -> f64 {
    let doc = proxy.ctl(&["-o", "json", "status", "api"]).await.json();
    doc["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == version))
        .and_then(|v| v["weight"].as_f64())
        .unwrap_or_else(|| panic!("no {version} in {doc}"))
}

/// The row of `table` whose first cell is `first`, split on runs of spaces.
fn row<'a>(table: &'a str, first: &str) -> Vec<&'a str> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no row {first:?} in:\n{table}"))
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_print_aligned_tables_and_json() {
    let (blue, green) = backends().await;
    let proxy = canary_config(&blue, &green).start().await;

    let status = proxy.ctl(&["status"]).await;
    let out = status.ok();
    assert!(out.starts_with("switchyard "), "{out}");
    let header = out.lines().find(|l| l.starts_with("SERVICE")).expect(out);
    for col in [
        "VERSION", "RELEASE", "WEIGHT", "HEALTHY", "RPS", "ERRORS", "P99", "ROLE",
    ] {
        assert!(header.contains(col), "{header}");
    }
    // Aligned: every column starts at the same offset in every row.
    let rows: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("SERVICE"))
        .take_while(|l| !l.is_empty())
        .collect();
    let weight_at = header.find("WEIGHT").unwrap();
    for r in &rows[1..] {
        assert_eq!(
            &r[weight_at - 3..weight_at],
            "   ",
            "misaligned: {r:?} in\n{out}"
        );
    }
    assert!(out.contains("api       green     v2        10%"), "{out}");
    assert!(out.contains("rollout progressing, step 1/3"), "{out}");

    let detail = proxy.ctl(&["status", "api"]).await;
    let out = detail.ok();
    assert_eq!(row(out, "green")[..3], ["green", "v2", "10%"], "{out}");
    assert!(
        out.contains("rollout:   progressing, step 1/3 (green v2 over blue)"),
        "{out}"
    );
    assert_eq!(proxy.ctl(&["rollout", "status", "api"]).await.ok(), out);

    // -o json is the API's own document (live numbers move between the two reads).
    let json = proxy.ctl(&["-o", "json", "status", "api"]).await.json();
    let api = proxy.api("/services/api").await;
    for key in ["name", "revision", "rollout"] {
        assert_eq!(json[key], api[key], "{key}");
    }
    let all = proxy.ctl(&["status", "-o", "json"]).await.json();
    assert_eq!(all["services"][0]["name"], "api");

    let history = proxy.ctl(&["rollout", "history", "api"]).await;
    let out = history.ok();
    assert!(
        out.starts_with("REVISION   AGE      SOURCE   WEIGHTS              REASON"),
        "{out}"
    );
    assert_eq!(
        row(out, "1")[2..],
        ["config", "blue=100% green=0%", "initial config"]
    );
    assert!(row(out, "1")[1].ends_with("s ago"), "{out}");
    assert_eq!(row(out, "2")[3], "blue=90% green=10%", "{out}");
    let json = proxy
        .ctl(&["rollout", "history", "api", "-o", "json"])
        .await
        .json();
    assert_eq!(json["revisions"].as_array().unwrap().len(), 2);

    let events = proxy.ctl(&["events"]).await;
    let out = events.ok();
    assert!(out.starts_with("ID   AGE"), "{out}");
    assert!(out.contains("rollout_started"), "{out}");
    let json = proxy.ctl(&["-o", "json", "events"]).await.json();
    let ids: Vec<u64> = json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    let since = proxy
        .ctl(&["-o", "json", "events", "--since", &ids[0].to_string()])
        .await
        .json();
    assert_eq!(since["events"].as_array().unwrap().len(), ids.len() - 1);
    let latest = ids.last().unwrap().to_string();
    assert_eq!(
        proxy.ctl(&["events", "--since", &latest]).await.ok(),
        "no events\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutations_need_the_token_from_a_flag_or_the_environment() {
    let (blue, green) = backends().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let proxy = config(&blue, &green)
        .admin_token_file(&token_file)
        .start()
        .await;

    // No token, a wrong token: exit 1, a clear message, nothing changed.
    let run = proxy.ctl(&["weights", "api", "blue=50", "green=50"]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains("refused") && run.stderr.contains("--token"),
        "{run:?}"
    );
    let run = proxy
        .ctl(&["--token", "nope", "switch", "api", "green"])
        .await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("invalid bearer token"), "{run:?}");
    assert!(!run.stderr.contains(TOKEN) && !run.stdout.contains(TOKEN));
    assert_eq!(share(&proxy, "green").await, 0.0);
    // Reads need no token.
    proxy.ctl(&["status"]).await.ok();

    // The token from --token.
    let run = proxy
        .ctl(&["--token", TOKEN, "weights", "api", "blue=90", "green=10%"])
        .await;
    assert!(
        run.ok().starts_with("api: weights set (revision 2)"),
        "{run:?}"
    );
    assert_eq!(row(&run.stdout, "green")[2], "10%");

    // The token and the admin URL from the environment.
    let url = format!("http://{}", proxy.admin);
    let (status, stdout, stderr) = run_cli_env(
        &["ctl", "switch", "api", "green"],
        &[
            ("SWITCHYARD_ADMIN", &url),
            ("SWITCHYARD_ADMIN_TOKEN", TOKEN),
        ],
    )
    .await;
    assert_eq!(status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("api: switched 100% to green (revision 3)"),
        "{stdout}"
    );
    assert_eq!(share(&proxy, "green").await, 100.0);
    // A flag beats the environment.
    let (status, _, stderr) = run_cli_env(
        &["ctl", "--token", "nope", "switch", "api", "blue"],
        &[
            ("SWITCHYARD_ADMIN", &url),
            ("SWITCHYARD_ADMIN_TOKEN", TOKEN),
        ],
    )
    .await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(share(&proxy, "green").await, 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_exit_one_and_usage_errors_exit_two() {
    let (blue, green) = backends().await;
    let proxy = config(&blue, &green).start().await;

    // Nothing listening there.
    let dead = format!("http://{}", refusing_addr());
    let (status, stdout, stderr) = run_cli_env(&["ctl", "--admin", &dead, "status"], &[]).await;
    assert_eq!(status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("cannot reach the admin API"), "{stderr}");
    assert!(stderr.contains("--admin"), "{stderr}");

    // The API says no: its message, exit 1.
    let run = proxy.ctl(&["switch", "api", "purple"]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("no version \"purple\""), "{run:?}");
    assert!(run.stderr.contains("404"), "{run:?}");
    let run = proxy.ctl(&["weights", "api", "blue=0", "green=0"]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("may not all be 0"), "{run:?}");
    let run = proxy.ctl(&["status", "nope"]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    let run = proxy.ctl(&["rollout", "pause", "api"]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("409"), "{run:?}");
    let run = proxy
        .ctl(&["rollout", "undo", "api", "--to-revision", "42"])
        .await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("no revision 42"), "{run:?}");

    // Usage errors: exit 2 before anything is sent.
    for args in [
        &[][..],
        &["frobnicate"][..],
        &["weights", "api"][..],
        &["weights", "api", "blue"][..],
        &["weights", "api", "blue=-5"][..],
        &["weights", "api", "blue=ninety"][..],
        &["switch", "api"][..],
        &["rollout", "frobnicate", "api"][..],
        &["rollout", "undo", "api", "--to-revision", "x"][..],
        &["events", "--since", "-1"][..],
        &["-o", "yaml", "status"][..],
    ] {
        let run = proxy.ctl(args).await;
        assert_eq!(run.code, Some(2), "ctl {args:?}: {run:?}");
        assert!(!run.stderr.is_empty(), "ctl {args:?} said nothing");
    }
    assert_eq!(share(&proxy, "blue").await, 100.0, "nothing changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_does_a_full_blue_green_with_ctl_only() {
    let (blue, green) = backends().await;
    let proxy = config(&blue, &green).start().await;
    assert_eq!(tally(proxy.listen, 20).await.count("blue"), 20);

    // Cut over.
    let run = proxy.ctl(&["switch", "api", "green"]).await;
    assert!(
        run.ok().starts_with("api: switched 100% to green"),
        "{run:?}"
    );
    assert_eq!(tally(proxy.listen, 50).await.count("green"), 50);

    // Look back, then revert: a new revision restoring the previous weights.
    let history = proxy.ctl(&["rollout", "history", "api"]).await;
    assert_eq!(
        row(history.ok(), "2")[2..],
        ["api", "blue=0% green=100%", "switched 100% to green"]
    );
    let run = proxy.ctl(&["rollout", "undo", "api"]).await;
    assert!(
        run.ok()
            .starts_with("api: restored the weights of the previous revision as revision 3"),
        "{run:?}"
    );
    assert_eq!(tally(proxy.listen, 50).await.count("blue"), 50);

    // And forward again to an explicit revision.
    let run = proxy
        .ctl(&["rollout", "undo", "api", "--to-revision", "2"])
        .await;
    assert!(run.ok().contains("revision 2 as revision 4"), "{run:?}");
    assert_eq!(tally(proxy.listen, 50).await.count("green"), 50);
    let history = proxy
        .ctl(&["-o", "json", "rollout", "history", "api"])
        .await
        .json();
    let revisions = history["revisions"].as_array().unwrap();
    assert_eq!(revisions.len(), 4);
    assert_eq!(revisions[3]["weights"]["green"], 100);

    let events = proxy.ctl(&["events"]).await;
    let out = events.ok();
    assert!(out.contains("switched") && out.contains("undo"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_does_a_full_canary_with_ctl_only() {
    let (blue, green) = backends().await;
    let proxy = canary_config(&blue, &green).start().await;

    // The config named green v2, so a rollout is running; start over from a clean slate.
    let run = proxy.ctl(&["rollout", "abort", "api"]).await;
    assert!(
        run.ok().starts_with("api: rollout aborted; now aborted"),
        "{run:?}"
    );
    assert_eq!(tally(proxy.listen, 40).await.count("blue"), 40);

    // Start: step 1 sends 10% to the canary.
    let run = proxy.ctl(&["rollout", "start", "api"]).await;
    assert!(
        run.ok()
            .starts_with("api: rollout started; now progressing, step 1/3 (green v2 over blue)"),
        "{run:?}"
    );
    let t = tally(proxy.listen, 600).await;
    t.check_split(&[("green", 10.0)], 5.0).unwrap();

    // Pause: the step holds; weights can't be set behind the rollout's back.
    let run = proxy.ctl(&["rollout", "pause", "api"]).await;
    assert!(run.ok().contains("now paused, step 1/3"), "{run:?}");
    let run = proxy.ctl(&["weights", "api", "blue=50", "green=50"]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("409"), "{run:?}");
    assert_eq!(share(&proxy, "green").await, 10.0);

    // Resume, then promote: green takes everything and becomes the stable.
    proxy.ctl(&["rollout", "resume", "api"]).await.ok();
    let run = proxy.ctl(&["rollout", "promote", "api"]).await;
    assert!(
        run.ok().starts_with("api: rollout promoted; now promoted"),
        "{run:?}"
    );
    assert_eq!(tally(proxy.listen, 50).await.count("green"), 50);
    let status = proxy.ctl(&["status", "api"]).await;
    assert_eq!(row(status.ok(), "green")[..3], ["green", "v2", "100%"]);

    // The next canary (roles swapped: blue) goes out and is rolled back by hand.
    let run = proxy.ctl(&["rollout", "start", "api"]).await;
    assert!(
        run.ok().contains("step 1/3 (blue v1 over green)"),
        "{run:?}"
    );
    let run = proxy
        .ctl(&["rollback", "api", "--reason", "smoke test failed"])
        .await;
    assert!(run.ok().starts_with("api: rolled back blue"), "{run:?}");
    assert_eq!(row(&run.stdout, "blue")[..3], ["blue", "v1", "0%"]);
    assert!(run.stdout.contains("canary, rolled back"), "{}", run.stdout);
    assert_eq!(tally(proxy.listen, 50).await.count("green"), 50);

    let history = proxy.ctl(&["rollout", "history", "api"]).await;
    let out = history.ok();
    assert!(out.contains("manual rollback: smoke test failed"), "{out}");
    assert!(out.contains("promoted green v2"), "{out}");
    let events = proxy.ctl(&["-o", "json", "events"]).await.json();
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "aborted",
        "rollout_started",
        "paused",
        "resumed",
        "promoted",
        "rolled_back",
    ] {
        assert!(kinds.contains(&kind), "no {kind} event in {kinds:?}");
    }
}

/// `ctl status --watch` as a child process whose stdout is a pipe (so frames follow one
/// another), with the ctl variables cleared like [`run_cli_env`].
fn spawn_watch(args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env_remove("SWITCHYARD_ADMIN")
        .env_remove("SWITCHYARD_ADMIN_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ctl --watch")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_watch_redraws_as_weights_move_and_ctrl_c_ends_it_cleanly() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let (blue, green) = backends().await;
    let proxy = config(&blue, &green).start().await;
    let url = format!("http://{}", proxy.admin);
    let mut child = spawn_watch(&[
        "ctl",
        "--admin",
        &url,
        "-o",
        "json",
        "status",
        "api",
        "--watch",
        "--interval",
        "200ms",
    ]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let green_weight = |line: &str| -> f64 {
        let doc: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("frame is not JSON ({e}): {line}"));
        doc["versions"]
            .as_array()
            .and_then(|vs| vs.iter().find(|v| v["name"] == "green"))
            .and_then(|v| v["weight"].as_f64())
            .unwrap_or_else(|| panic!("no green in {doc}"))
    };
    let mut next_frame = async || {
        tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
            .await
            .expect("a frame within 10s")
            .expect("read stdout")
            .expect("the watch is still running")
    };

    assert_eq!(green_weight(&next_frame().await), 0.0);
    let (status, body) = proxy
        .api_send(
            "PUT",
            "/services/api/weights",
            Some(serde_json::json!({"blue": 50, "green": 50})),
            None,
        )
        .await;
    assert_eq!(status, http::StatusCode::OK, "{body}");
    let mut frames = 1;
    loop {
        frames += 1;
        assert!(frames < 50, "the watch never showed green at 50%");
        if green_weight(&next_frame().await) == 50.0 {
            break;
        }
    }

    // Ctrl-C: exit 0 at once, nothing on stderr.
    let pid = child.id().expect("pid").to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let out = tokio::time::timeout(std::time::Duration::from_secs(5), child.wait_with_output())
        .await
        .expect("the watch ends within 5s of Ctrl-C")
        .expect("wait");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn status_watch_rides_out_an_unreachable_admin_and_stops_at_its_timeout() {
    let dead = format!("http://{}", refusing_addr());
    let started = std::time::Instant::now();
    let child = spawn_watch(&[
        "ctl",
        "--admin",
        &dead,
        "status",
        "--watch",
        "--interval",
        "100ms",
        "--timeout",
        "1s",
    ]);
    let out = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("--timeout 1s ends the watch")
        .expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    let errors = stdout.matches("cannot reach the admin API").count();
    assert!(
        errors >= 2,
        "each frame says what is wrong and the watch goes on:\n{stdout}"
    );

    // --interval without --watch is a usage error.
    let (status, _, _) = run_cli_env(&["ctl", "status", "--interval", "1s"], &[]).await;
    assert_eq!(status.code(), Some(2));
}
