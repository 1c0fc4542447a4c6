//! The dashboard's wave-2 panels with real data (SPEC §13, §14, issue 20): the real binary,
//! real backends that fail on purpose, users with distinct sticky keys, and a headless
//! Chromium reading what the page shows next to what the API and `/metrics` say.
//!
//! - A canary behind the safety net under the sequential judge: while it runs, the impact
//!   panel (users on the canary, users who saw an error, requests failed) and the evidence
//!   panel (failures and slow against the limit) show `GET /services/shop`'s numbers, twice,
//!   with different traffic in between (a page stuck on its first drawing fails the second
//!   look); after the judge rolls it back, the reason and the impact are on the card and in
//!   the rollback's event.
//! - A mirror step: the mirror panel's sent, dropped and failed copies are
//!   `switchyard_mirror_requests_total`'s, through three phases (a canary that fails one copy
//!   in four, one that holds every copy so more than 1,000 are in flight and the rest are
//!   dropped, and those held copies timing out).
//! - `ctl status SERVICE` prints the rollout's impact with the API's numbers.
//!
//! Every look polls the API and the page together until they agree on numbers the traffic
//! made; nothing is asserted after a sleep.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Request;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::browser::Browser;
use crate::harness::*;

/// A whole test, start to last check (a busy machine, a debug binary, a browser).
const TEST_BOUND: Duration = Duration::from_secs(240);
/// The page and the API agreeing: the page reads the API every second.
const LOOK_BOUND: Duration = Duration::from_secs(30);

/// What the page shows for service shop: each wave-2 panel's numbers by their `data-k`, the
/// rollout's reason, and the timeline's rollback events.
const STORY: &str = r#"(() => {
  const card = document.querySelector('[data-service="shop"]');
  if (!card) return null;
  const keys = root => root ? Object.fromEntries([...root.querySelectorAll('[data-k]')].map(e => [e.dataset.k, e.textContent])) : null;
  const panel = name => card.querySelector(`[data-panel="${name}"]`);
  return {
    state: (card.querySelector('.pill[data-state]') || {}).dataset?.state || null,
    mirror_pill: (card.querySelector('[data-mode="mirror"]') || {}).textContent || null,
    reason: (card.querySelector('.rollout [data-k="reason"]') || {}).textContent || null,
    evidence: keys(panel('evidence')),
    impact: keys(panel('impact')),
    safety_net: keys(panel('safety-net')),
    mirror: keys(panel('mirror')),
    rolled_back: [...document.querySelectorAll('#events li[data-kind="rolled_back"]')].map(li => ({
      id: Number(li.dataset.id), text: li.textContent, impact: keys(li.querySelector('.impact')) })),
  };
})()"#;

/// Service shop: v1 stable, v2 the canary at `steps`, sticky on `x-user-id`, with `rollout`
/// lines (analysis, safety net) and `service` lines given verbatim.
fn shop_config(
    v1: SocketAddr,
    v2: SocketAddr,
    steps: &str,
    rollout: &str,
    service: &str,
) -> String {
    let (listen, admin) = (free_port(), free_port());
    format!(
        r#"
        listeners: [{{ name: public, address: "127.0.0.1:{listen}" }}]
        admin: {{ address: "127.0.0.1:{admin}" }}
        services:
          shop:
            versions:
              v1: {{ release: "1.0", backends: ["{v1}"], weight: 100 }}
              v2: {{ release: "2.0", backends: ["{v2}"], weight: 0 }}
            sticky: {{ header: x-user-id }}
            {service}
            rollout:
              stable: v1
              canary: v2
              steps: {steps}
              {rollout}
        "#
    )
}

/// One request of `user` (a POST with a small body, which the safety net never replays, or a
/// GET); the backend that answered and whether the user got a success.
async fn send_as(client: &mut Client, user: &str, post: bool) -> (Option<String>, bool) {
    let req = if post {
        Request::post("/")
            .header("x-user-id", user)
            .body(full("order"))
            .expect("request")
    } else {
        get_with("/", &[("x-user-id", user)])
    };
    let reply = client.send(req).await.expect("a response");
    (reply.backend(), reply.status.is_success())
}

/// `users` each send one GET while the canary is healthy: who is sticky to the canary (v2).
async fn on_canary(client: &mut Client, users: &[String]) -> Vec<String> {
    let mut canary = Vec::new();
    for u in users {
        let (backend, ok) = send_as(client, u, false).await;
        assert!(ok, "{u} failed against a healthy canary");
        if backend.as_deref() == Some("v2") {
            canary.push(u.clone());
        }
    }
    canary
}

/// A burst with the canary failing everything: `posts` canary users POST (not replayable:
/// they see the failure), `gets` canary users GET (replayed on v1: they do not), and stable
/// users GET in between so the failures fall in seconds with stable traffic (what the
/// sequential judge compares with).
async fn failing_burst(
    client: &mut Client,
    v2: &Backend,
    posts: &[String],
    gets: &[String],
    stable: &[String],
) {
    v2.set_failure_rate(1000);
    let canary = posts
        .iter()
        .map(|u| (u, true))
        .chain(gets.iter().map(|u| (u, false)));
    let mut stable = stable.iter().cycle();
    for (user, post) in canary {
        let (_, ok) = send_as(client, user, post).await;
        assert_eq!(ok, !post, "{user} (post {post}) behind the safety net");
        for _ in 0..3 {
            let (_, ok) = send_as(client, stable.next().unwrap(), false).await;
            assert!(ok);
        }
    }
    v2.set_failure_rate(0);
}

/// The API's document of shop, and the mirror counters of `/metrics`.
async fn truth(proxy: &Proxy) -> Value {
    let svc = proxy.api("/services/shop").await;
    let mut mirror = json!({});
    for result in ["sent", "dropped", "failed"] {
        let n = proxy
            .metric_sum(
                "switchyard_mirror_requests_total",
                &[("service", "shop"), ("result", result)],
            )
            .await;
        mirror[result] = json!(n as u64);
    }
    json!({ "svc": svc, "mirror_metrics": mirror })
}

/// Polls the API and the page together until `check(truth, page)` holds; what both showed.
async fn look(
    browser: &mut Browser,
    proxy: &Proxy,
    what: &str,
    check: impl Fn(&Value, &Value) -> Result<(), String>,
) -> (Value, Value) {
    let deadline = Instant::now() + LOOK_BOUND;
    loop {
        let t = truth(proxy).await;
        let page = browser.eval(STORY).await;
        let last = match check(&t, &page) {
            Ok(()) => return (t, page),
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "the dashboard never showed {what} within {LOOK_BOUND:?}: {last}\npage: {page:#}\napi: {:#}",
            t["svc"]["rollout"]
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What the impact panel (or a rollback event) must read for `impact` (`rollout.impact`).
fn impact_text(impact: &Value) -> Value {
    let n = |k: &str| impact[k].as_u64().map(|n| n.to_string());
    json!({
        "users_on_canary": n("users_on_canary"),
        "users_total": n("users_total"),
        "users_failed": n("users_failed"),
        "requests_failed": n("requests_failed"),
        "users_failed_pct": impact["users_failed_pct"].as_f64().map(|p| format!("{p:.2}")),
    })
}

fn same(what: &str, shown: &Value, expected: &Value) -> Result<(), String> {
    if shown == expected {
        Ok(())
    } else {
        Err(format!(
            "{what}: the page shows {shown}, expected {expected}"
        ))
    }
}

fn need(ok: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(why())
    }
}

/// The evidence panel against `rollout.evidence`, while the rollout runs (values below 10^6
/// are shown with two decimals).
fn evidence_matches(rollout: &Value, page: &Value) -> Result<(), String> {
    let e = &rollout["evidence"];
    let f = |k: &str| e[k].as_f64().map(|v| format!("{v:.2}"));
    let expected = json!({
        "failures": f("failures"),
        "slow": f("slow"),
        "limit": e["limit"].as_f64().map(|v| format!("{v:.0}")),
    });
    same("the evidence panel", &page["evidence"], &expected)
}

fn safety_net_matches(rollout: &Value, page: &Value) -> Result<(), String> {
    let r = &rollout["safety_net"]["retries"];
    let n = |k: &str| r[k].as_u64().map(|n| n.to_string());
    let expected = json!({ "ok": n("ok"), "failed": n("failed"), "budget": n("budget"), "unsafe": n("unsafe") });
    same("the safety-net panel", &page["safety_net"], &expected)
}

/// Users `prefix-0` … `prefix-(n-1)`.
fn users(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_bad_canarys_impact_and_evidence_then_its_rollback() {
    tokio::time::timeout(TEST_BOUND, async {
        let v1 = Backend::start("v1").await;
        let v2 = Backend::start("v2").await;
        // Only the sequential judge can roll back: the interval checks never conclude, and
        // fast-fail is off. The budget replays every failed GET, so users see only POSTs fail.
        let proxy = Proxy::start(&shop_config(
            v1.addr,
            v2.addr,
            "[{ traffic: 50%, duration: 1h }, { traffic: 100% }]",
            "safety_net: { retry_on_stable: true, budget: 100% }
              analysis: { judge: sequential, alpha: 0.01, interval: 1h, threshold: 100, min_requests: 1000000, fast_fail: off, metrics: [] }",
            "",
        ))
        .await;
        eventually(Duration::from_secs(20), "the rollout progressing", async || {
            let svc = proxy.api("/services/shop").await;
            need(svc["rollout"]["state"] == "progressing", || svc["rollout"].to_string())
        })
        .await;
        let mut browser = Browser::open(&format!("http://{}/", proxy.admin)).await;
        let mut client = proxy.client();

        // First look: 40 users, two of the canary's users POST while it fails everything.
        let first = users("a", 40);
        let canary = on_canary(&mut client, &first).await;
        let stable: Vec<String> = first.iter().filter(|u| !canary.contains(u)).cloned().collect();
        assert!(canary.len() >= 6 && stable.len() >= 6, "a 50% split of 40 users: {canary:?}");
        failing_burst(&mut client, &v2, &canary[..2], &canary[2..4], &stable).await;
        let (t, _) = look(&mut browser, &proxy, "the first burst's impact and evidence", |t, page| {
            let r = &t["svc"]["rollout"];
            need(r["state"] == "progressing", || format!("state {}", r["state"]))?;
            need(r["impact"]["requests_failed"] == 2, || format!("API impact {}", r["impact"]))?;
            need(r["evidence"]["failures"].as_f64() > Some(1.0), || format!("API evidence {}", r["evidence"]))?;
            need(page["state"] == "progressing", || format!("page state {}", page["state"]))?;
            same("the impact panel", &page["impact"], &impact_text(&r["impact"]))?;
            evidence_matches(r, page)?;
            safety_net_matches(r, page)
        })
        .await;
        let r1 = t["svc"]["rollout"].clone();
        assert_eq!(r1["impact"]["users_failed"], 2, "{r1}");
        assert_eq!(r1["safety_net"]["retries"]["ok"], 2, "{r1}");
        assert_eq!(r1["safety_net"]["retries"]["unsafe"], 2, "{r1}");
        assert_eq!(r1["evidence"]["limit"], 200.0, "{r1}");

        // Second look, after more users and one more failed POST: new numbers, on the page too.
        let second = users("b", 30);
        let canary2 = on_canary(&mut client, &second).await;
        assert!(canary2.len() >= 2, "{canary2:?}");
        failing_burst(&mut client, &v2, &canary2[..1], &canary2[1..2], &stable).await;
        let before = r1["evidence"]["failures"].as_f64().unwrap();
        let on_canary_before = r1["impact"]["users_on_canary"].as_u64().unwrap();
        let (t, _) = look(&mut browser, &proxy, "the second burst's impact and evidence", |t, page| {
            let r = &t["svc"]["rollout"];
            need(r["impact"]["requests_failed"] == 3, || format!("API impact {}", r["impact"]))?;
            need(r["evidence"]["failures"].as_f64() > Some(before), || format!("API evidence {}", r["evidence"]))?;
            same("the impact panel", &page["impact"], &impact_text(&r["impact"]))?;
            evidence_matches(r, page)?;
            safety_net_matches(r, page)
        })
        .await;
        let r2 = &t["svc"]["rollout"];
        assert!(r2["impact"]["users_on_canary"].as_u64() > Some(on_canary_before), "{r2}");
        assert_eq!(r2["impact"]["users_failed"], 3, "{r2}");
        assert!(r2["evidence"]["failures"].as_f64() < Some(200.0), "{r2}");

        // Then the canary fails everything under a steady load of new users (all GETs, all
        // replayed): the judge rolls it back, and no one else saw an error.
        v2.set_failure_rate(1000);
        let load = UsersLoad::start(proxy.listen, 4);
        let svc = eventually(Duration::from_secs(60), "the sequential rollback", async || {
            let svc = proxy.api("/services/shop").await;
            need(svc["rollout"]["state"] == "rolled_back", || svc["rollout"].to_string())?;
            Ok(svc)
        })
        .await;
        let failures = load.finish().await;
        assert_eq!(failures, Vec::<String>::new(), "users saw errors behind the safety net");
        let reason = svc["rollout"]["reason"].as_str().unwrap_or_default().to_string();
        assert!(reason.starts_with("sequential: "), "{reason}");

        let events = proxy.api("/events").await;
        let rolled = events["events"]
            .as_array()
            .and_then(|e| e.iter().rev().find(|e| e["kind"] == "rolled_back"))
            .cloned()
            .unwrap_or_else(|| panic!("no rolled_back event: {events}"));
        assert_eq!(rolled["details"]["reason"], "sequential", "{rolled}");
        let event_impact = impact_text(&rolled["details"]["impact"]);
        assert_eq!(rolled["details"]["impact"]["users_failed"], 3, "{rolled}");
        let (_, page) = look(&mut browser, &proxy, "the rollback, its reason and its impact", |t, page| {
            let r = &t["svc"]["rollout"];
            need(page["state"] == "rolled_back", || format!("page state {}", page["state"]))?;
            same("the rollout's reason", &page["reason"], &r["reason"])?;
            same("the impact panel", &page["impact"], &impact_text(&r["impact"]))?;
            let shown = page["rolled_back"]
                .as_array()
                .and_then(|l| l.iter().find(|e| e["id"] == rolled["id"]))
                .ok_or_else(|| format!("no rolled_back event {} in the timeline", rolled["id"]))?;
            let message = rolled["message"].as_str().unwrap_or_default();
            need(shown["text"].as_str().unwrap_or("").contains(message), || format!("the event reads {}", shown["text"]))?;
            need(message.contains(r["reason"].as_str().unwrap_or("?")), || format!("{message} lacks the reason"))?;
            // No check failed: the judge's evidence decided.
            need(shown["text"].as_str().unwrap_or("").contains("after the evidence reached its limit"), || {
                format!("the event names no decision: {}", shown["text"])
            })?;
            same("the rollback event's impact", &shown["impact"], &event_impact)
        })
        .await;
        // The evidence that decided it, at or past its limit.
        let shown: f64 = page["evidence"]["failures"].as_str().unwrap_or("").parse().unwrap_or(0.0);
        assert!(shown >= 200.0, "{page:#}");
        assert_eq!(page["evidence"]["limit"], "200", "{page:#}");
    })
    .await
    .unwrap_or_else(|_| panic!("the test took longer than {TEST_BOUND:?}"));
}

/// Closed-loop GETs from ever new users (`x-user-id` `load-<client>-<n>`) until finished.
struct UsersLoad {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl UsersLoad {
    fn start(addr: SocketAddr, clients: usize) -> UsersLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|c| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut client = Client::http1(addr);
                    let mut failures = Vec::new();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let user = format!("load-{c}-{n}");
                        match client.send(get_with("/", &[("x-user-id", &user)])).await {
                            Ok(r) if r.status.is_success() => {}
                            Ok(r) => failures.push(format!("{user}: {}", r.status)),
                            Err(e) => failures.push(format!("{user}: {e}")),
                        }
                    }
                    failures
                })
            })
            .collect();
        UsersLoad { stop, tasks }
    }

    /// Stops the clients; every failure a user saw.
    async fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(t.await.expect("load client"));
        }
        all
    }
}

/// A canary for mirror copies: in `answer` mode it answers every copy at once, one in four
/// with 500; in `hold` mode it keeps each copy's connection open and never answers, until
/// the proxy gives up on it.
async fn mirror_canary(hold: Arc<AtomicBool>) -> SocketAddr {
    let answered = Arc::new(AtomicUsize::new(0));
    raw_backend(move |mut stream| {
        let hold = hold.clone();
        let answered = answered.clone();
        async move {
            if hold.load(Ordering::SeqCst) {
                let mut buf = [0u8; 1024];
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                return;
            }
            let n = answered.fetch_add(1, Ordering::SeqCst);
            let status = if n % 4 == 3 { "500 Internal Server Error" } else { "200 OK" };
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-length: 0\r\nx-backend: v2\r\nconnection: close\r\n\r\n"
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    })
    .await
}

/// The mirror panel against `switchyard_mirror_requests_total`.
fn mirror_matches(t: &Value, page: &Value) -> Result<(), String> {
    let m = &t["mirror_metrics"];
    let expected = json!({
        "sent": m["sent"].to_string(),
        "dropped": m["dropped"].to_string(),
        "failed": m["failed"].to_string(),
    });
    same("the mirror panel", &page["mirror"], &expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboards_mirror_panel_counts_the_copies_as_the_metrics_do() {
    tokio::time::timeout(TEST_BOUND, async {
        let v1 = Backend::start("v1").await;
        let hold = Arc::new(AtomicBool::new(false));
        let v2 = mirror_canary(hold.clone()).await;
        // Copies the canary holds give up after the request timeout (a failure of the canary).
        let proxy = Proxy::start(&shop_config(
            v1.addr,
            v2,
            "[{ mirror: 100%, duration: 1h }, { traffic: 100% }]",
            "analysis: { interval: 1h, threshold: 100, min_requests: 1000000, fast_fail: off }",
            "timeouts: { request: 20s }",
        ))
        .await;
        eventually(Duration::from_secs(20), "the mirror step", async || {
            let svc = proxy.api("/services/shop").await;
            need(svc["rollout"]["mode"] == "mirror", || svc["rollout"].to_string())
        })
        .await;
        let mut browser = Browser::open(&format!("http://{}/", proxy.admin)).await;

        // 40 users, each request copied; the canary fails one copy in four.
        let mut client = proxy.client();
        for u in users("m", 40) {
            let (backend, ok) = send_as(&mut client, &u, false).await;
            assert!(ok && backend.as_deref() == Some("v1"), "{u} was not served by the stable");
        }
        look(&mut browser, &proxy, "40 copies sent, 10 failed", |t, page| {
            let m = &t["mirror_metrics"];
            need(m["sent"] == 40 && m["failed"] == 10, || format!("metrics {m}"))?;
            need(page["mirror_pill"].as_str().is_some_and(|p| p.contains("mirror 100%")), || {
                format!("the mirror step's pill: {}", page["mirror_pill"])
            })?;
            mirror_matches(t, page)
        })
        .await;

        // The canary stops answering: 1,096 more requests, so more than 1,000 copies would be
        // in flight at once; the ones past 1,000 are dropped.
        hold.store(true, Ordering::SeqCst);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..8 {
            let addr = proxy.listen;
            tasks.push(tokio::spawn(async move {
                let mut client = Client::http1(addr);
                for i in 0..137 {
                    let user = format!("h-{c}-{i}");
                    let (_, ok) = send_as(&mut client, &user, false).await;
                    assert!(ok, "{user}: the original failed while its copy was held");
                }
            }));
        }
        for t in tasks {
            t.await.expect("client");
        }
        let took = started.elapsed();
        assert!(took < Duration::from_secs(15), "1,096 requests took {took:?}: the copies timed out before more than 1,000 were in flight");
        let (t, _) = look(&mut browser, &proxy, "copies dropped past 1,000 in flight", |t, page| {
            let m = &t["mirror_metrics"];
            need(m["sent"].as_u64().unwrap_or(0) + m["dropped"].as_u64().unwrap_or(0) == 40 + 8 * 137, || format!("metrics {m}"))?;
            need(m["dropped"].as_u64() > Some(0) && m["failed"] == 10, || format!("metrics {m}"))?;
            mirror_matches(t, page)
        })
        .await;
        let m = &t["mirror_metrics"];
        assert_eq!(m["sent"], 40 + 1000, "{m}");

        // The held copies time out: each a failure of the canary.
        look(&mut browser, &proxy, "the held copies failed", |t, page| {
            let m = &t["mirror_metrics"];
            need(m["failed"] == 10 + 1000, || format!("metrics {m}"))?;
            mirror_matches(t, page)
        })
        .await;
    })
    .await
    .unwrap_or_else(|_| panic!("the test took longer than {TEST_BOUND:?}"));
}

/// `ctl status SERVICE` shows `rollout.impact` (SPEC §13), with the API's numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_status_shows_how_many_users_the_canary_failed() {
    let v1 = Backend::start("v1").await;
    let v2 = Backend::start_failing("v2", 500).await;
    let proxy = Proxy::start(&shop_config(
        v1.addr,
        v2.addr,
        "[{ traffic: 50%, duration: 1h }, { traffic: 100% }]",
        "analysis: { interval: 1h, threshold: 100, min_requests: 1000000, fast_fail: off }",
        "",
    ))
    .await;
    eventually(
        Duration::from_secs(20),
        "the rollout progressing",
        async || {
            let svc = proxy.api("/services/shop").await;
            need(svc["rollout"]["state"] == "progressing", || {
                svc["rollout"].to_string()
            })
        },
    )
    .await;
    let mut client = proxy.client();
    let mut failed = 0;
    for u in users("u", 40) {
        if !send_as(&mut client, &u, false).await.1 {
            failed += 1;
        }
    }
    assert!(
        failed > 0,
        "a canary failing half its requests failed nobody"
    );
    let svc = proxy.api("/services/shop").await;
    let i = &svc["rollout"]["impact"];
    assert_eq!(i["requests_failed"], failed, "{i}");
    let line = format!(
        "impact:    {} of {} users saw a failure ({}%); {} on the canary; {} requests failed for users",
        i["users_failed"],
        i["users_total"],
        i["users_failed_pct"].as_f64().unwrap(),
        i["users_on_canary"],
        i["requests_failed"]
    );
    let out = proxy.ctl(&["status", "shop"]).await;
    assert!(
        out.ok().contains(&line),
        "`ctl status shop` lacks {line:?}:\n{}",
        out.ok()
    );
}
