//! The dashboard's wave-2 panels with real data (SPEC §13, §14, issue 20): the real binary,
//! real backends that fail on purpose, users with distinct sticky keys, and a headless
//! Chromium reading what the page shows next to what the API and `/metrics` say.
//!
//! - A canary behind the safety net under the sequential judge (`rollback.rs`): while it
//!   runs, the impact panel (users on the canary, users who saw an error, requests failed)
//!   and the evidence panel (failures and slow against the limit) show `GET
//!   /services/shop`'s numbers, twice, with different traffic in between (a page stuck on
//!   its first drawing fails the second look); after the judge rolls it back, the reason and
//!   the impact are on the card and in the rollback's event.
//! - A mirror step (`mirror.rs`): the mirror panel's sent, dropped and failed copies are
//!   `switchyard_mirror_requests_total`'s, through three phases (a canary that fails one copy
//!   in four, one that holds every copy so more than 1,000 are in flight and the rest are
//!   dropped, and those held copies timing out).
//! - `ctl status SERVICE` prints the rollout's impact with the API's numbers.
//!
//! Every look polls the API and the page together until they agree on numbers the traffic
//! made; nothing is asserted after a sleep.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::Request;
use serde_json::{json, Value};

use crate::harness::browser::Browser;
use crate::harness::*;

mod mirror;
mod rollback;

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
/// Users `prefix-0` … `prefix-(n-1)`.
fn users(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
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
