//! The admin listener: health, readiness, metrics, the control API and the dashboard.
//!
//! A separate listener from the data path, loopback by default, HTTP/1.1 with small JSON
//! bodies. Reads come from snapshots (`ArcSwap`), so a slow admin client never slows the
//! controller or the data path.

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
use serde_json::{json, Value};
use switchyard_proxy::TableHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::Auth;
use crate::controller::{ControllerHandle, Readers};
use crate::exporter::Exporter;
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

pub fn json_response(status: StatusCode, body: &Value) -> AdminResponse {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
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
