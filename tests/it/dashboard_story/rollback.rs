//! A canary behind the safety net under the sequential judge, as the dashboard tells it:
//! impact and evidence while it runs, then the reason and the impact of its rollback.

use super::*;

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
        let load = Load::start_users(proxy.listen, 4);
        let svc = eventually(Duration::from_secs(60), "the sequential rollback", async || {
            let svc = proxy.api("/services/shop").await;
            need(svc["rollout"]["state"] == "rolled_back", || svc["rollout"].to_string())?;
            Ok(svc)
        })
        .await;
        let failures = load.finish().await.failures;
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
