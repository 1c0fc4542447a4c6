//! A mirror step as the dashboard counts it: the copies sent, dropped and failed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

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
