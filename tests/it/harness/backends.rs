//! Real upstreams: an echoing HTTP/1.1 + h2c backend that can fail or stall on purpose, a raw
//! TCP backend for misbehaviour no library will produce, and an HTTP/2 (h2c or TLS) echo
//! server with trailers.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject as _;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::sleep;

use super::*;

/// A real upstream: answers every request 200 with `x-backend: <name>` and a JSON echo of the
/// method, path, headers and the body's length and FNV-1a hash.
///
/// A request with `x-response-bytes: N` is instead answered with N bytes of a fixed pattern
/// (and `x-body-hash`), to check downloads stream intact.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    fail_per_mille: Arc<AtomicUsize>,
    accept_loop: JoinHandle<()>,
}

struct BackendState {
    name: String,
    delay: Duration,
    hits: Arc<AtomicUsize>,
    /// Share of (non-health-check) requests answered 500, in thousandths, spread evenly.
    fail_per_mille: Arc<AtomicUsize>,
}

impl Backend {
    /// A backend that answers at once.
    pub async fn start(name: &str) -> Backend {
        Backend::start_with_delay(name, Duration::ZERO).await
    }

    /// A backend that waits `delay` before answering (the request still counts on arrival).
    pub async fn start_with_delay(name: &str, delay: Duration) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        Backend::serve(name, listener, delay, Duration::ZERO)
    }

    /// A backend listening on `addr` (e.g. `127.0.0.3:PORT`, for a name resolving there).
    pub async fn start_at(name: &str, addr: SocketAddr) -> std::io::Result<Backend> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Backend::serve(
            name,
            listener,
            Duration::ZERO,
            Duration::ZERO,
        ))
    }

    /// A backend that is slow to accept: its kernel accept queue holds only `backlog`
    /// connections and it takes one every `accept_every`, so a burst of connects overflows
    /// the queue and the kernel drops SYNs (the client retransmits a second later).
    pub async fn start_slow_accepting(name: &str, backlog: u32, accept_every: Duration) -> Backend {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind backend");
        let listener = socket.listen(backlog).expect("listen");
        Backend::serve(name, listener, Duration::ZERO, accept_every)
    }

    fn serve(
        name: &str,
        listener: TcpListener,
        delay: Duration,
        accept_every: Duration,
    ) -> Backend {
        let addr = listener.local_addr().expect("backend addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let fail_per_mille = Arc::new(AtomicUsize::new(0));
        let state = Arc::new(BackendState {
            name: name.to_string(),
            delay,
            hits: hits.clone(),
            fail_per_mille: fail_per_mille.clone(),
        });
        let accept_loop = tokio::spawn(async move {
            loop {
                if !accept_every.is_zero() {
                    sleep(accept_every).await;
                }
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(state.answer(req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Backend {
            name: name.to_string(),
            addr,
            hits,
            fail_per_mille,
            accept_loop,
        }
    }

    /// A backend that answers `per_mille`/1000 of its requests (evenly spread) with 500.
    pub async fn start_failing(name: &str, per_mille: usize) -> Backend {
        let backend = Backend::start(name).await;
        backend.set_failure_rate(per_mille);
        backend
    }

    /// Changes the share of requests answered 500 (thousandths); health checks stay 200.
    pub fn set_failure_rate(&self, per_mille: usize) {
        self.fail_per_mille.store(per_mille, Ordering::SeqCst);
    }

    /// Requests received so far, not counting health checks (`GET /health`).
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl BackendState {
    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let mut fail = false;
        if req.uri().path() != "/health" {
            let n = self.hits.fetch_add(1, Ordering::SeqCst);
            let p = self.fail_per_mille.load(Ordering::SeqCst);
            // Request n fails when the running count of failures due steps up: evenly spread.
            fail = (n + 1) * p / 1000 > n * p / 1000;
        }
        if !self.delay.is_zero() {
            sleep(self.delay).await;
        }
        if fail {
            return Response::builder()
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .header("x-backend", &self.name)
                .body(Full::new(Bytes::from_static(b"injected failure")))
                .expect("response");
        }
        let method = req.method().to_string();
        let version = format!("{:?}", req.version());
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in req.headers() {
            headers
                .entry(name.as_str().to_string())
                .or_default()
                .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
        let response_bytes: Option<usize> = req
            .headers()
            .get("x-response-bytes")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let (len, hash) = match req.into_body().collect().await {
            Ok(body) => {
                let body = body.to_bytes();
                (body.len(), fnv1a(&body))
            }
            Err(e) => {
                return Response::builder()
                    .status(StatusCode::BAD_REQUEST)
                    .header("x-backend", &self.name)
                    .body(Full::new(Bytes::from(format!("body error: {e}"))))
                    .expect("response");
            }
        };
        let builder = Response::builder()
            .status(StatusCode::OK)
            .header("x-backend", &self.name);
        if let Some(n) = response_bytes {
            let body = pattern_bytes(n);
            return builder
                .header("content-type", "application/octet-stream")
                .header("x-body-hash", fnv1a(&body).to_string())
                .body(Full::new(body))
                .expect("response");
        }
        let echo = json!({
            "backend": self.name,
            "method": method,
            "path": path,
            "http_version": version,
            "headers": headers,
            "body_len": len,
            "body_fnv1a": hash.to_string(),
        });
        builder
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(echo.to_string())))
            .expect("response")
    }
}

/// FNV-1a, 64 bit: a dependency-free checksum for "the bytes arrived intact".
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// `n` bytes of a non-repeating-looking pattern (so truncation or reordering changes the hash).
pub fn pattern_bytes(n: usize) -> Bytes {
    let mut x: u32 = 0x1234_5678;
    let v: Vec<u8> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x & 0xff) as u8
        })
        .collect();
    Bytes::from(v)
}

/// A raw TCP "backend" that reads a request head, then does whatever `act` does.
pub async fn raw_backend<F, Fut>(act: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let tcp = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind raw backend");
    let addr = tcp.local_addr().expect("raw backend addr");
    let act = Arc::new(act);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = tcp.accept().await {
            let act = act.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16384];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                act(stream).await;
            });
        }
    });
    addr
}

/// An HTTP/2 backend (h2c, or h2 over TLS with `tls`): answers every request with
/// `x-backend`, `x-http-version` and its body echoed frame by frame as it arrives, then
/// trailers: the request's trailers plus `grpc-status: 0` (a gRPC-style echo server).
pub struct H2Backend {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    accept_loop: JoinHandle<()>,
}

impl H2Backend {
    pub async fn start(name: &str, tls: Option<&Leaf>) -> H2Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let acceptor = tls.map(|leaf| {
            let certs = rustls::pki_types::CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("cert pem");
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes())
                .expect("key pem");
            let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server cert");
            config.alpn_protocols = vec![b"h2".to_vec()];
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let name = name.to_string();
        let counter = hits.clone();
        let accept_loop = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let name = name.clone();
                let hits = counter.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        hits.fetch_add(1, Ordering::SeqCst);
                        let name = name.clone();
                        async move {
                            let version = format!("{:?}", req.version());
                            let response = Response::builder()
                                .header("x-backend", name)
                                .header("x-http-version", version)
                                .header("x-path", req.uri().path())
                                .body(EchoBody {
                                    inner: req.into_body(),
                                    done: false,
                                })
                                .expect("response");
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
        });
        H2Backend {
            addr,
            hits,
            accept_loop,
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for H2Backend {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

/// Streams the request body back and ends with trailers (`grpc-status: 0` + the request's).
struct EchoBody {
    inner: Incoming,
    done: bool,
}

impl hyper::body::Body for EchoBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_trailers() {
                Ok(mut trailers) => {
                    self.done = true;
                    trailers.insert("grpc-status", HeaderValue::from_static("0"));
                    Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            Poll::Ready(None) => {
                self.done = true;
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("0"));
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            other => other,
        }
    }
}
