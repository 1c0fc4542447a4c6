//! The demo's two built-in backends: tiny HTTP servers on loopback that say who answered.
//!
//! `v1` is always healthy. `v2` starts healthy and, in the default (bad release) mode, turns
//! bad after a few seconds: one request in ten answers 500 and one in twenty takes 450 ms —
//! a gradual degradation that stays under the fast-fail line, so the story the demo tells is
//! the interval analysis catching it. `GET /health` always answers 200: the release is broken,
//! the process is not.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// One request in this many answers 500 once `v2` has turned bad (10%: well above the 1%
/// threshold, well below fast-fail's 50%).
const FAIL_EVERY: u64 = 10;
/// One request in this many is slow once `v2` has turned bad (5%: enough to move the p99).
const SLOW_EVERY: u64 = 20;
/// How slow a slow answer is: above the demo's 300 ms p99 threshold.
pub const SLOW_BY: Duration = Duration::from_millis(450);

/// A running backend.
pub struct Backend {
    pub address: SocketAddr,
    bad: Arc<AtomicBool>,
}

impl Backend {
    /// From now on, answer some requests with 500 and some slowly.
    pub fn turn_bad(&self) {
        self.bad.store(true, Ordering::SeqCst);
    }
}

struct State {
    version: &'static str,
    release: &'static str,
    bad: Arc<AtomicBool>,
    served: AtomicU64,
}

/// Starts a backend on an ephemeral loopback port.
pub async fn start(version: &'static str, release: &'static str) -> Result<Backend, String> {
    let tcp = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("demo backend {version}: {e}"))?;
    let address = tcp.local_addr().map_err(|e| e.to_string())?;
    let bad = Arc::new(AtomicBool::new(false));
    let state = Arc::new(State {
        version,
        release,
        bad: Arc::clone(&bad),
        served: AtomicU64::new(0),
    });
    tokio::spawn(async move {
        loop {
            let stream = match tcp.accept().await {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let state = Arc::clone(&state);
            let service = service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(state.answer(req).await) }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    Ok(Backend { address, bad })
}

impl State {
    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (status, body) = if req.uri().path() == "/health" {
            (StatusCode::OK, "ok\n".to_string())
        } else {
            let n = self.served.fetch_add(1, Ordering::Relaxed);
            let bad = self.bad.load(Ordering::Relaxed);
            if bad && n % FAIL_EVERY == 0 {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "{} (release {}) failed: the demo's bad release\n",
                        self.version, self.release
                    ),
                )
            } else {
                if bad && n % SLOW_EVERY == 5 {
                    tokio::time::sleep(SLOW_BY).await;
                }
                (
                    StatusCode::OK,
                    format!("hello from {} (release {})\n", self.version, self.release),
                )
            }
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert("x-version", HeaderValue::from_static(self.version));
        response
    }
}
