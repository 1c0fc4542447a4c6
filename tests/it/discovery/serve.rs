//! Backend names through the real binary (SPEC §12): `switchyard serve` resolves them against
//! the in-test DNS server and sends traffic to what they resolve to. Backends that a name
//! stands for listen on 127.0.0.2, .3, ... on one port, so one A record change moves traffic
//! between real backends.

use std::time::Duration;

use serde_json::Value;
use tokio::time::{sleep, Instant};

use crate::harness::dns::{backends_on_one_port, v4, Answering, DnsServer};
use crate::harness::*;

/// Anything a re-resolution should do within a TTL (1 s here) and a refresh, with room for a
/// shared machine.
const SETTLE: Duration = Duration::from_secs(20);

/// `switchyard serve` with `service` and, when given, the test's DNS server as the only name
/// server, re-asking names at least once a second.
async fn serve(dns: Option<&DnsServer>, service: Service) -> Proxy {
    let mut proxy = Proxy::builder().service(service);
    if let Some(d) = dns {
        proxy = proxy.top(&format!(
            "resolver: {{ nameservers: [\"{}\"], min_ttl: 100ms, max_ttl: 1s }}",
            d.address
        ));
    }
    proxy.start().await
}

/// Service `api` with one version, `blue`, on `backend` (a name, `host:port` or `srv+…`).
fn named(backend: &str) -> Service {
    Service::new("api").version_raw("blue", "v1", &[backend.to_string()], "100")
}

/// The API's backends of `api`'s `version`: (address, name).
async fn api_backends(proxy: &Proxy, version: &str) -> Vec<(String, Option<String>)> {
    let doc = proxy.api("/services/api").await;
    version_doc(&doc, version)["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            let address = b["address"].as_str().unwrap_or_default().to_string();
            (address, b["name"].as_str().map(str::to_string))
        })
        .collect()
}

fn version_doc<'a>(doc: &'a Value, version: &str) -> &'a Value {
    doc["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == version))
        .unwrap_or_else(|| panic!("no version {version} in {doc}"))
}

/// Waits until 20 requests in a row all answer 200 (names resolve in the background).
async fn until_serving(proxy: &Proxy, what: &str) {
    let addr = proxy.listen;
    eventually(SETTLE, what, async || {
        try_versions_of(addr, 20, 2, |_| get("/")).await.map(|_| ())
    })
    .await;
}

/// Waits until the proxy has counted `n` more lookups of `version` with `result`.
async fn until_lookups(proxy: &Proxy, version: &str, result: &str, n: f64) {
    let labels = [("service", "api"), ("version", version), ("result", result)];
    let from = proxy
        .metric_sum("switchyard_dns_lookups_total", &labels)
        .await;
    eventually(SETTLE, &format!("{n} more {result} lookups"), async || {
        let now = proxy
            .metric_sum("switchyard_dns_lookups_total", &labels)
            .await;
        (now >= from + n).then_some(()).ok_or(format!("{now}"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_follows_an_a_record_change_with_no_failed_request() {
    let dns = DnsServer::start().await;
    let (port, backends) =
        backends_on_one_port(&["blue-1", "blue-2"], &["127.0.0.2", "127.0.0.3"]).await;
    dns.set_a("api.test", &[v4("127.0.0.2")], 1);
    let name = format!("api.test:{port}");
    let proxy = serve(Some(&dns), named(&name)).await;
    until_serving(&proxy, "the name to resolve").await;
    // The API lists the address with the name it came from; metrics are keyed by address.
    assert_eq!(
        api_backends(&proxy, "blue").await,
        [(format!("127.0.0.2:{port}"), Some(name.clone()))]
    );
    let first = format!("127.0.0.2:{port}");
    let labels = [("service", "api"), ("backend", first.as_str())];
    assert!(proxy.metric_sum("switchyard_requests_total", &labels).await >= 20.0);
    assert!(
        proxy
            .metric_sum(
                "switchyard_dns_lookups_total",
                &[("service", "api"), ("version", "blue"), ("result", "ok")]
            )
            .await
            >= 1.0
    );

    let load = Load::start(proxy.listen, 4);
    sleep(Duration::from_millis(300)).await;
    dns.set_a("api.test", &[v4("127.0.0.3")], 1);
    let moved_at = Instant::now();
    eventually(SETTLE, "traffic on the new address", async || {
        let before = backends[1].hits();
        sleep(Duration::from_millis(200)).await;
        (backends[1].hits() > before)
            .then_some(())
            .ok_or(format!("{before}"))
    })
    .await;
    let moved = moved_at.elapsed();
    // Once moved, the old address gets nothing new (in flight may finish).
    sleep(Duration::from_millis(300)).await;
    let old = backends[0].hits();
    sleep(Duration::from_millis(500)).await;
    assert_eq!(
        backends[0].hits(),
        old,
        "the vanished address still gets requests"
    );
    let report = load.finish().await;
    assert!(
        report.failures.is_empty(),
        "{} failed: {:?}",
        report.failures.len(),
        &report.failures[..report.failures.len().min(5)]
    );
    assert!(report.ok > 100, "{}", report.ok);
    assert_eq!(
        api_backends(&proxy, "blue").await,
        [(format!("127.0.0.3:{port}"), Some(name))]
    );
    // TTL 1 s (max_ttl 1 s) plus a lookup: well within a few seconds.
    assert!(moved < Duration::from_secs(5), "moved after {moved:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_dns_server_keeps_traffic_on_the_last_good_set() {
    let mut dns = DnsServer::start().await;
    let (port, backends) = backends_on_one_port(&["blue-1"], &["127.0.0.2"]).await;
    dns.set_a("api.test", &[v4("127.0.0.2")], 1);
    let proxy = serve(Some(&dns), named(&format!("api.test:{port}"))).await;
    until_serving(&proxy, "the name to resolve").await;
    dns.stop();
    until_lookups(&proxy, "blue", "error", 2.0).await;
    let before = backends[0].hits();
    let versions = try_versions_of(proxy.listen, 100, 4, |_| get("/")).await;
    assert!(versions.is_ok(), "{versions:?}");
    assert_eq!(backends[0].hits(), before + 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_answer_does_not_empty_the_version() {
    let dns = DnsServer::start().await;
    let (port, backends) = backends_on_one_port(&["blue-1"], &["127.0.0.2"]).await;
    dns.set_a("api.test", &[v4("127.0.0.2")], 1);
    let proxy = serve(Some(&dns), named(&format!("api.test:{port}"))).await;
    until_serving(&proxy, "the name to resolve").await;
    dns.answer(Answering::Empty);
    // More empty answers in a row than it takes to drop a name that has company.
    let n = switchyard_control::discovery::EMPTY_ANSWERS_TO_REMOVE + 1;
    until_lookups(&proxy, "blue", "empty", f64::from(n)).await;
    let before = backends[0].hits();
    let versions = try_versions_of(proxy.listen, 100, 4, |_| get("/")).await;
    assert!(versions.is_ok(), "{versions:?}");
    assert_eq!(backends[0].hits(), before + 100);
    assert_eq!(api_backends(&proxy, "blue").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_with_two_targets_sends_both_traffic_by_weight() {
    let dns = DnsServer::start().await;
    let (port, backends) =
        backends_on_one_port(&["blue-1", "blue-2"], &["127.0.0.2", "127.0.0.3"]).await;
    dns.set_srv(
        "_http._tcp.api.test",
        &[(10, 1, port, "one.test"), (10, 3, port, "three.test")],
        1,
    );
    dns.set_a("one.test", &[v4("127.0.0.2")], 1);
    dns.set_a("three.test", &[v4("127.0.0.3")], 1);
    let name = "srv+_http._tcp.api.test";
    let proxy = serve(Some(&dns), named(name)).await;
    eventually(SETTLE, "both SRV targets in the table", async || {
        let got = api_backends(&proxy, "blue").await;
        (got.len() == 2).then_some(()).ok_or(format!("{got:?}"))
    })
    .await;
    assert_eq!(
        api_backends(&proxy, "blue").await,
        [
            (format!("127.0.0.2:{port}"), Some(name.to_string())),
            (format!("127.0.0.3:{port}"), Some(name.to_string())),
        ]
    );
    let (one, three) = (backends[0].hits(), backends[1].hits());
    let versions = try_versions_of(proxy.listen, 400, 4, |_| get("/")).await;
    assert!(versions.is_ok(), "{versions:?}");
    let (one, three) = (backends[0].hits() - one, backends[1].hits() - three);
    assert_eq!(one + three, 400);
    // Weights 1 and 3: a quarter and three quarters (weighted turns, so nearly exact).
    assert!(
        (80..=120).contains(&one),
        "weight 1 got {one}, weight 3 got {three}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_never_resolved_answers_503_and_the_api_names_it() {
    let dns = DnsServer::start().await;
    let blue = Backend::start("blue-1").await;
    let (port, _green) = backends_on_one_port(&["green-1"], &["127.0.0.2"]).await;
    // green.test does not exist (NXDOMAIN); blue is a literal address.
    let name = format!("green.test:{port}");
    let proxy = serve(
        Some(&dns),
        Service::new("api")
            .version("blue", "v1", &[blue.addr], 0)
            .version_raw("green", "v2", std::slice::from_ref(&name), "100"),
    )
    .await;
    until_lookups(&proxy, "green", "error", 1.0).await;
    let reply = proxy.client().get("/").await.expect("request");
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(
        reply.text(),
        "no healthy backend for service api version green\n"
    );
    let doc = proxy.api("/services/api").await;
    let green = version_doc(&doc, "green");
    assert_eq!(green["backends"], serde_json::json!([]));
    assert_eq!(green["unresolved"], serde_json::json!([name]));
    // A version without names says nothing about them.
    assert!(version_doc(&doc, "blue").get("unresolved").is_none());
    let status = proxy.ctl(&["status"]).await;
    assert!(
        status
            .ok()
            .contains(&format!("api/green   {name} → never resolved")),
        "{}",
        status.stdout
    );
    // Once it resolves, it serves.
    dns.set_a("green.test", &[v4("127.0.0.2")], 1);
    until_serving(&proxy, "the name to resolve at last").await;
    let status = proxy.ctl(&["status", "api"]).await;
    assert!(
        status.ok().contains(&format!("{name} → 127.0.0.2:{port}")),
        "{}",
        status.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localhost_names_resolve_through_the_system_resolver() {
    let blue = Backend::start("blue-1").await;
    let name = format!("localhost:{}", blue.addr.port());
    let proxy = serve(None, named(&name)).await;
    until_serving(&proxy, "localhost to resolve").await;
    assert_eq!(
        api_backends(&proxy, "blue").await,
        [(blue.addr.to_string(), Some(name))]
    );
    assert!(blue.hits() >= 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_resolution_never_moves_a_sticky_user_between_versions() {
    let dns = DnsServer::start().await;
    let (port, backends) = backends_on_one_port(
        &["blue-1", "blue-2", "green-1", "green-2"],
        &["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"],
    )
    .await;
    dns.set_a("blue.test", &[v4("127.0.0.2")], 1);
    dns.set_a("green.test", &[v4("127.0.0.4")], 1);
    let proxy = serve(
        Some(&dns),
        Service::new("api")
            .version_raw("blue", "v1", &[format!("blue.test:{port}")], "50")
            .version_raw("green", "v2", &[format!("green.test:{port}")], "50")
            .sticky_header("x-user-id"),
    )
    .await;
    let users = 60;
    let user = |i: usize| get_with("/", &[("x-user-id", &format!("user-{i}"))]);
    let before = eventually(SETTLE, "both names to resolve", async || {
        try_versions_of(proxy.listen, users, 2, user).await
    })
    .await;
    assert!(before.iter().any(|v| v == "blue") && before.iter().any(|v| v == "green"));
    // Both names move to other backends of their versions, and blue's gets a second one.
    dns.set_a("blue.test", &[v4("127.0.0.2"), v4("127.0.0.3")], 1);
    dns.set_a("green.test", &[v4("127.0.0.5")], 1);
    eventually(SETTLE, "the new addresses in the table", async || {
        let (blue, green) = (
            api_backends(&proxy, "blue").await,
            api_backends(&proxy, "green").await,
        );
        (blue.len() == 2
            && green
                == [(
                    format!("127.0.0.5:{port}"),
                    Some(format!("green.test:{port}")),
                )])
        .then_some(())
        .ok_or(format!("{blue:?} {green:?}"))
    })
    .await;
    let green_new = backends[3].hits();
    let after = try_versions_of(proxy.listen, users, 2, user)
        .await
        .expect("traffic");
    assert_eq!(
        before, after,
        "a user changed version when a name re-resolved"
    );
    assert!(
        backends[3].hits() > green_new,
        "green's new address got no traffic"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_address_takes_traffic_only_after_its_first_health_check() {
    let dns = DnsServer::start().await;
    let (port, backends) = backends_on_one_port(&["blue-1"], &["127.0.0.2"]).await;
    dns.set_a("api.test", &[v4("127.0.0.2")], 1);
    // Thresholds of 3: a literal backend would be up at once and stay up for 3 failed probes.
    let check = "{ path: /health, interval: 1s, timeout: 200ms, unhealthy_threshold: 3, healthy_threshold: 3 }";
    let proxy = serve(
        Some(&dns),
        named(&format!("api.test:{port}")).line(&format!("health_check: {check}")),
    )
    .await;
    until_serving(&proxy, "the name to resolve").await;
    let load = Load::start(proxy.listen, 2);
    // A second address, where nothing listens yet.
    dns.set_a("api.test", &[v4("127.0.0.2"), v4("127.0.0.3")], 1);
    let new = format!("127.0.0.3:{port}");
    let healthy = eventually(SETTLE, "the new address in the API", async || {
        let doc = proxy.api("/services/api").await;
        version_doc(&doc, "blue")["backends"]
            .as_array()
            .and_then(|bs| bs.iter().find(|b| b["address"] == new.as_str()))
            .map(|b| b["healthy"].clone())
            .ok_or_else(|| doc.to_string())
    })
    .await;
    assert_eq!(
        healthy, false,
        "a new address is down until its first check"
    );
    sleep(Duration::from_secs(2)).await;
    let sent = proxy
        .metric_sum("switchyard_requests_total", &[("backend", new.as_str())])
        .await;
    assert_eq!(
        sent, 0.0,
        "requests went to an address that never passed a check"
    );
    // It comes up: one good probe (within an interval), not healthy_threshold of them (3
    // intervals), and it takes traffic.
    let late = Backend::start_at("blue-2", new.parse().unwrap())
        .await
        .expect("bind the second address");
    let up_at = Instant::now();
    eventually(SETTLE, "traffic on the new address", async || {
        (late.hits() > 0)
            .then_some(())
            .ok_or("none yet".to_string())
    })
    .await;
    assert!(
        up_at.elapsed() < Duration::from_millis(1900),
        "joined after {:?}: more than one probe",
        up_at.elapsed()
    );
    let report = load.finish().await;
    assert!(
        report.failures.is_empty(),
        "{:?}",
        &report.failures[..report.failures.len().min(5)]
    );
    assert!(backends[0].hits() > 0);
}
