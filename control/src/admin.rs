//! The admin listener: health, readiness, metrics, the control API and the dashboard.
//!
//! A separate listener from the data path, loopback by default, HTTP/1.1 with small JSON
//! bodies. Reads come from snapshots (`ArcSwap`), so a slow admin client never slows the
//! controller or the data path.
//!
//! A token-less admin is reachable from any browser on the same machine, so it answers only
//! requests whose `Host` names its own address or loopback (`localhost`, `127.0.0.1`,
//! `[::1]`, any port): a page on another origin that rebinds its DNS name to 127.0.0.1 gets
//! 421 (DNS rebinding). Cross-site posts are stopped by the API's content-type rule.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use switchyard_proxy::TableHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::Auth;
use crate::controller::{ControllerHandle, Readers};
use crate::exporter::Exporter;
use crate::refusal::Refusal;
use crate::status::Status;

/// Everything the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    pub status: Arc<ArcSwap<Status>>,
    pub table: TableHandle,
    pub controller: ControllerHandle,
    pub readers: Readers,
    pub exporter: Exporter,
    pub auth: Auth,
    /// The admin listener's own address (a `Host` naming it is always answered).
    pub address: SocketAddr,
    /// The fleet's store, with `cluster:` (`GET /api/v1/fleet`).
    pub fleet: Option<crate::store::etcd::EtcdStore>,
}

pub type AdminResponse = Response<Full<Bytes>>;

/// Serves the admin API on `tcp` until `shutdown` turns true.
pub async fn serve(tcp: TcpListener, state: AdminState, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Binds the admin address with a clear error.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on admin address {address}: {e}"))
}

async fn route(state: &AdminState, req: Request<Incoming>) -> AdminResponse {
    if !state.auth.is_enabled() {
        if let Err(refusal) = check_host(req.headers(), state.address) {
            return refusal_response(&refusal);
        }
    }
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET, "/") => crate::dashboard::page(),
        (&Method::GET, "/health") => json_response(StatusCode::OK, &json!({"status": "healthy"})),
        (&Method::GET, "/ready") => {
            if state.status.load().ready {
                json_response(StatusCode::OK, &json!({"status": "ready"}))
            } else {
                json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"status": "starting"}),
                )
            }
        }
        (&Method::GET, "/metrics") => {
            let text = state.exporter.render(&state.table.load());
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        (_, p) if p.starts_with("/api/v1/") => {
            let rest = p["/api/v1".len()..].to_string();
            crate::api::route(state, req, &rest).await
        }
        (_, "/" | "/health" | "/ready" | "/metrics") => {
            let mut response = error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("{} is not allowed on {path}; use GET", req.method()),
                None,
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
            response
        }
        _ => error_response(
            StatusCode::NOT_FOUND,
            &format!("no such endpoint: {path}"),
            None,
        ),
    }
}

pub fn json_response(status: StatusCode, body: &impl serde::Serialize) -> AdminResponse {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|e| {
        format!(r#"{{"error":"cannot render the answer: {e}","field":null}}"#).into_bytes()
    });
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `{"error": "...", "field": "..."}` — the one error shape of the API (SPEC §7).
pub fn error_response(status: StatusCode, message: &str, field: Option<&str>) -> AdminResponse {
    json_response(status, &json!({ "error": message, "field": field }))
}

/// A refusal as an HTTP answer (with `Allow` or `WWW-Authenticate` where they belong).
pub fn refusal_response(refusal: &Refusal) -> AdminResponse {
    let mut response = error_response(refusal.status(), refusal.message(), refusal.field());
    match refusal {
        Refusal::MethodNotAllowed { allow, .. } => {
            if let Ok(v) = HeaderValue::from_str(allow.as_str()) {
                response.headers_mut().insert(header::ALLOW, v);
            }
        }
        Refusal::Unauthorized(_) => {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"switchyard\""),
            );
        }
        _ => {}
    }
    response
}

/// A token-less admin answers only `Host` values naming itself or loopback.
fn check_host(headers: &http::HeaderMap, own: SocketAddr) -> Result<(), Refusal> {
    let Some(host) = headers.get(header::HOST) else {
        return Ok(()); // No Host (HTTP/1.0): not a browser.
    };
    let host = host.to_str().unwrap_or("").trim();
    // Strip the port: `[::1]:9901` → `[::1]`, `localhost:9901` → `localhost`.
    let name = match host.rfind(']') {
        Some(end) if host.starts_with('[') => &host[..=end],
        _ => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    let name = name.to_ascii_lowercase();
    let own_ip = match own.ip() {
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    if ["localhost", "127.0.0.1", "[::1]"].contains(&name.as_str()) || name == own_ip {
        Ok(())
    } else {
        Err(Refusal::MisdirectedHost(format!(
            "this admin API has no token, so it only answers requests for its own address \
             ({own}) or localhost, not Host {host:?}; configure admin.token_file to reach it \
             under another name"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(value: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(header::HOST, value.parse().unwrap());
        h
    }

    #[test]
    fn loopback_names_pass_and_other_names_are_misdirected() {
        let own: SocketAddr = "127.0.0.5:9901".parse().unwrap();
        for ok in [
            "localhost",
            "LOCALHOST:9901",
            "127.0.0.1:1",
            "[::1]:9901",
            "127.0.0.5:9901",
        ] {
            assert!(check_host(&host(ok), own).is_ok(), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9901",
            "127.0.0.2",
            "localhost.evil.example",
        ] {
            let e = check_host(&host(bad), own).unwrap_err();
            assert_eq!(e.status(), StatusCode::MISDIRECTED_REQUEST, "{bad}");
        }
        assert!(check_host(&http::HeaderMap::new(), own).is_ok());
    }
}
