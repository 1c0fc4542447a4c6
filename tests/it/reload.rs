//! Hot reload: the watched file and SIGHUP swap the routing table atomically; no request fails
//! because of a swap; an invalid file is rejected whole and reported (SPEC §4 "Hot reload").

use std::time::Duration;

use crate::harness::*;
use http::StatusCode;

fn two_versions(blue: &Backend, green: &Backend, weights: (u32, u32)) -> ProxyBuilder {
    Proxy::builder().service(Service::two("api", (blue.addr, green.addr), weights))
}

/// Polls until the live split matches `expected` (±4 points over 1,000 requests).
async fn wait_for_split(proxy: &Proxy, expected: &[(&str, f64)]) -> Tally {
    let addr = proxy.listen;
    eventually(
        RELOAD_TIMEOUT,
        &format!("the split {expected:?}"),
        async || {
            let tally = Tally::of(&try_versions_of(addr, 1000, 4, |_| get("/")).await?);
            tally.check_split(expected, 4.0)?;
            Ok(tally)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewritten_file_changes_the_split() {
    let blue = Backend::start("blue-1").await;
    let green = Backend::start("green-1").await;
    let proxy = two_versions(&blue, &green, (100, 0)).start().await;
    assert_eq!(tally(proxy.listen, 100).await.count("blue"), 100);

    proxy.rewrite_config(&two_versions(&blue, &green, (0, 100)).yaml());

    wait_for_split(&proxy, &[("green", 100.0)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_rewrites_under_load_fail_no_request() {
    let blue = Backend::start("blue-1").await;
    let green = Backend::start("green-1").await;
    let proxy = two_versions(&blue, &green, (50, 50)).start().await;

    let load = Load::start(proxy.listen, 32);
    for i in 0..50 {
        let weights = if i % 2 == 0 { (90, 10) } else { (10, 90) };
        proxy.rewrite_config(&two_versions(&blue, &green, weights).yaml());
        tokio::time::sleep(Duration::from_millis(if i % 10 == 9 { 600 } else { 30 })).await;
    }
    proxy.rewrite_config(&two_versions(&blue, &green, (20, 80)).yaml());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = load.finish().await;

    assert!(report.ok > 500, "the load barely ran: {} ok", report.ok);
    assert!(
        report.failures.is_empty(),
        "{} of {} requests failed during reloads, e.g. {:?}",
        report.failures.len(),
        report.ok + report.failures.len(),
        &report.failures[..report.failures.len().min(5)]
    );
    let (reloads_ok, reloads_err) = proxy.reload_counts().await;
    eprintln!(
        "{} requests ({}) across {reloads_ok} reloads",
        report.ok, report.tally
    );
    assert!(reloads_ok >= 1, "no reload was counted");
    assert_eq!(reloads_err, 0, "every rewrite was a valid file");
    wait_for_split(&proxy, &[("blue", 20.0), ("green", 80.0)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_file_keeps_old_table_and_is_reported_until_a_good_one() {
    let blue = Backend::start("blue-1").await;
    let green = Backend::start("green-1").await;
    let proxy = two_versions(&blue, &green, (100, 0)).start().await;
    let status = proxy.status_json().await;
    assert!(
        status["last_reload_error"].is_null(),
        "fresh start: {status}"
    );
    let (_, errors_before) = proxy.reload_counts().await;

    // Sends all traffic to green, but green's backend is not an address: rejected whole.
    let bad = Service::new("api")
        .version("blue", "v1", &[blue.addr], 0)
        .version_raw("green", "v2", &["not-an-address".into()], "100");
    proxy.rewrite_config(&Proxy::builder().service(bad).yaml());
    let status = eventually(RELOAD_TIMEOUT, "last_reload_error to be set", async || {
        let status = proxy.status_json().await;
        match status["last_reload_error"].as_str() {
            Some(msg) if !msg.is_empty() => Ok(status),
            _ => Err(format!("status: {status}")),
        }
    })
    .await;
    assert!(
        status["reloads"]["error"].as_u64().unwrap_or(0) > errors_before,
        "reloads.error not counted: {status}"
    );
    // The old table still serves, unchanged.
    let tally = tally(proxy.listen, 200).await;
    assert_eq!(tally.count("blue"), 200, "after a rejected file: {tally}");

    proxy.rewrite_config(&two_versions(&blue, &green, (0, 100)).yaml());
    wait_for_split(&proxy, &[("green", 100.0)]).await;
    eventually(RELOAD_TIMEOUT, "last_reload_error to clear", async || {
        let status = proxy.status_json().await;
        if status["last_reload_error"].is_null() {
            Ok(())
        } else {
            Err(format!("status: {status}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_yaml_is_rejected_and_traffic_keeps_flowing() {
    let blue = Backend::start("blue-1").await;
    let green = Backend::start("green-1").await;
    let proxy = two_versions(&blue, &green, (100, 0)).start().await;

    proxy.rewrite_config("services:\n  api: [unclosed\n");
    eventually(RELOAD_TIMEOUT, "last_reload_error to be set", async || {
        let status = proxy.status_json().await;
        status["last_reload_error"]
            .as_str()
            .map(|_| ())
            .ok_or(format!("status: {status}"))
    })
    .await;

    assert_eq!(tally(proxy.listen, 100).await.count("blue"), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_the_file() {
    let blue = Backend::start("blue-1").await;
    let green = Backend::start("green-1").await;
    let proxy = two_versions(&blue, &green, (100, 0)).start().await;
    // Let any start-up file events settle before taking the baseline.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = proxy.status_json().await;

    proxy.sighup();

    // The file did not change, so the watcher has nothing to report: only SIGHUP can cause
    // a new load, visible as a reload count or a new `loaded_at`.
    eventually(RELOAD_TIMEOUT, "a reload after SIGHUP", async || {
        let now = proxy.status_json().await;
        if now["reloads"]["ok"] != before["reloads"]["ok"]
            || now["loaded_at"] != before["loaded_at"]
        {
            Ok(())
        } else {
            Err(format!("before {before}, now {now}"))
        }
    })
    .await;
    assert_eq!(
        tally(proxy.listen, 50).await.count("blue"),
        50,
        "still serving after SIGHUP"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_changed_file() {
    let blue = Backend::start("blue-1").await;
    let green = Backend::start("green-1").await;
    let proxy = two_versions(&blue, &green, (100, 0)).start().await;

    proxy.rewrite_config(&two_versions(&blue, &green, (0, 100)).yaml());
    proxy.sighup();

    wait_for_split(&proxy, &[("green", 100.0)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_connection_uses_the_new_table_without_reconnecting() {
    let blue = Backend::start("blue-1").await;
    let green = Backend::start("green-1").await;
    let proxy = two_versions(&blue, &green, (100, 0)).start().await;
    let mut client = proxy.client();
    let first = client.get("/").await.unwrap();
    assert_eq!(first.version().as_deref(), Some("blue"));

    proxy.rewrite_config(&two_versions(&blue, &green, (0, 100)).yaml());

    eventually(
        RELOAD_TIMEOUT,
        "the kept-alive connection to reach green",
        async || {
            let reply = client.get("/").await?;
            match reply.version().as_deref() {
                Some("green") => Ok(()),
                other => Err(format!("{} from {other:?}", reply.status)),
            }
        },
    )
    .await;
    assert_eq!(
        client.connects, 1,
        "the proxy closed the kept-alive connection on reload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_request_finishes_on_a_backend_the_new_file_removed() {
    let slow_blue = Backend::start_with_delay("blue-1", Duration::from_millis(2500)).await;
    let green = Backend::start("green-1").await;
    let proxy = two_versions(&slow_blue, &green, (100, 0)).start().await;
    let addr = proxy.listen;
    let in_flight = tokio::spawn(async move { Client::http1(addr).get("/").await });
    eventually(
        Duration::from_secs(5),
        "the request to reach blue",
        async || {
            (slow_blue.hits() >= 1)
                .then_some(())
                .ok_or("not yet".to_string())
        },
    )
    .await;

    // The new file no longer mentions blue's backend at all.
    let green_only = Service::new("api").version("green", "v2", &[green.addr], 100);
    proxy.rewrite_config(&Proxy::builder().service(green_only).yaml());
    wait_for_split(&proxy, &[("green", 100.0)]).await;

    let reply = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("in-flight request never finished")
        .expect("client task")
        .expect("in-flight request failed across the reload");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.version().as_deref(), Some("blue"));
}

/// Kubernetes updates a mounted ConfigMap by swapping the `..data` symlink, never by writing
/// the file: the proxy must notice, apply the new config, and fail no request doing so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_update_is_applied_with_no_failed_request() {
    let blue = Backend::start("blue-1").await;
    let green = Backend::start("green-1").await;
    let proxy = two_versions(&blue, &green, (100, 0))
        .configmap()
        .start()
        .await;
    assert!(
        std::fs::symlink_metadata(&proxy.config_path)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the config is mounted the kubelet's way"
    );

    let load = Load::start(proxy.listen, 16);
    for (weights, expected) in [
        ((0, 100), [("green", 100.0)]),
        ((100, 0), [("blue", 100.0)]),
        ((0, 100), [("green", 100.0)]),
    ] {
        let (ok_before, _) = proxy.reload_counts().await;
        proxy.update_configmap(&two_versions(&blue, &green, weights).yaml());
        wait_for_split(&proxy, &expected).await;
        let (ok_after, errors) = proxy.reload_counts().await;
        assert!(
            ok_after > ok_before,
            "applied by a reload ({ok_before} → {ok_after})"
        );
        assert_eq!(errors, 0, "{}", proxy.stderr());
    }
    let report = load.finish().await;

    assert!(report.ok > 200, "the load barely ran: {} ok", report.ok);
    assert!(
        report.failures.is_empty(),
        "{} requests failed, e.g. {:?}",
        report.failures.len(),
        &report.failures[..report.failures.len().min(5)]
    );
}
