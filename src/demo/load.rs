//! The demo's built-in load generator: a steady, bounded request rate through the proxy.
//!
//! Open loop — one request every `1/rate` seconds whatever the answers do, like real users —
//! so a slow canary does not slow the load down and hide itself. At most [`MAX_IN_FLIGHT`]
//! requests are outstanding; ticks beyond that are skipped, never queued. It only ever talks
//! to the proxy on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;
use tokio::time::MissedTickBehavior;

/// Requests per second.
pub const RATE: u32 = 200;
/// Distinct users the load stands for (`x-user-id: user-N`, the demo's sticky key), so
/// the rollout's measured impact counts people, not one load generator.
pub const USERS: u64 = 500;
/// Upper bound on concurrent requests (slow answers must not pile up without limit).
const MAX_IN_FLIGHT: usize = 64;
/// Nothing waits longer than this for one answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `RATE` requests per second to `proxy` for as long as the runtime runs.
pub async fn run(proxy: SocketAddr) {
    debug_assert!(proxy.ip().is_loopback());
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http();
    let uri: http::Uri = match format!("http://{proxy}/").parse() {
        Ok(uri) => uri,
        Err(_) => return,
    };
    let mut user = 0u64;
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tick = tokio::time::interval(Duration::from_secs(1) / RATE);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            continue;
        };
        let (client, uri) = (client.clone(), uri.clone());
        user = (user + 1) % USERS;
        let Ok(request) = http::Request::get(uri)
            .header("x-user-id", format!("user-{user}"))
            .body(Empty::new())
        else {
            continue;
        };
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, async {
                if let Ok(response) = client.request(request).await {
                    let _ = response.into_body().collect().await;
                }
            })
            .await;
            drop(permit);
        });
    }
}
