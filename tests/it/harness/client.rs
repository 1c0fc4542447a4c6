//! The client side: request bodies, a keep-alive HTTP/1.1 or h2c client, the replies and the
//! backend echoes they carry, and raw bytes for requests a client library refuses to send.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, HOST};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::*;

pub fn empty() -> Body {
    Full::new(Bytes::new()).boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A body sent with `Transfer-Encoding: chunked` (no length known up front), in `chunk`-sized
/// frames.
pub fn chunked(data: Bytes, chunk: usize) -> Body {
    let mut frames = VecDeque::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = chunk.min(rest.len());
        frames.push_back(rest.split_to(n));
    }
    Chunks(frames).boxed()
}

struct Chunks(VecDeque<Bytes>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// A request body fed piece by piece through the returned sender; it ends when the sender
/// is dropped.
pub fn body_channel() -> (tokio::sync::mpsc::Sender<Bytes>, Body) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let frames = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    });
    (tx, http_body_util::StreamBody::new(frames).boxed())
}

/// `GET path` with no extra headers.
pub fn get(path: &str) -> Request<Body> {
    get_with(path, &[])
}

/// `GET path` with extra headers (a `host` header here sets the Host).
pub fn get_with(path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::get(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(empty()).expect("request")
}

/// A complete response, body read.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The `x-backend` header: which backend answered (`blue-1`), if any did.
    pub fn backend(&self) -> Option<String> {
        self.headers
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    /// The version whose backend answered: `blue-1` → `blue`.
    pub fn version(&self) -> Option<String> {
        self.backend().map(|b| version_of(&b).to_string())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The backend's JSON echo of the request it received.
    pub fn echo(&self) -> Echo {
        Echo(serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not a backend echo ({e}): status {} body {:?}",
                self.status,
                self.text()
            )
        }))
    }

    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// What a backend saw: method, path, headers, body length/hash.
pub struct Echo(pub Value);

impl Echo {
    /// All values of a request header as the backend received them, joined with ", ".
    pub fn header(&self, name: &str) -> Option<String> {
        let values = self.0["headers"][name.to_ascii_lowercase()].as_array()?;
        Some(
            values
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        )
    }

    pub fn header_names(&self) -> Vec<String> {
        self.0["headers"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn path(&self) -> String {
        self.0["path"].as_str().unwrap_or_default().to_string()
    }

    pub fn method(&self) -> String {
        self.0["method"].as_str().unwrap_or_default().to_string()
    }

    pub fn body_len(&self) -> u64 {
        self.0["body_len"].as_u64().expect("body_len")
    }

    pub fn body_hash(&self) -> u64 {
        self.0["body_fnv1a"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("body_fnv1a")
    }
}

/// `blue-1` → `blue`; a name without a dash is its own version.
pub fn version_of(backend: &str) -> &str {
    backend.split('-').next().unwrap_or(backend)
}

enum Sender {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

/// One client connection that is kept alive across requests and reopened when the server
/// closes it. HTTP/1.1 by default; [`Client::h2c`] speaks prior-knowledge HTTP/2.
pub struct Client {
    addr: SocketAddr,
    h2: bool,
    sender: Option<Sender>,
    /// How many TCP connections this client has opened.
    pub connects: usize,
}

impl Client {
    pub fn http1(addr: SocketAddr) -> Client {
        Client {
            addr,
            h2: false,
            sender: None,
            connects: 0,
        }
    }

    pub fn h2c(addr: SocketAddr) -> Client {
        Client {
            addr,
            h2: true,
            sender: None,
            connects: 0,
        }
    }

    async fn connect(&mut self) -> Result<Sender, String> {
        let stream = timeout(Duration::from_secs(5), TcpStream::connect(self.addr))
            .await
            .map_err(|_| format!("connect to {} timed out", self.addr))?
            .map_err(|e| format!("connect to {}: {e}", self.addr))?;
        let _ = stream.set_nodelay(true);
        self.connects += 1;
        let io = TokioIo::new(stream);
        if self.h2 {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("h2 handshake: {e}"))?;
            tokio::spawn(conn);
            Ok(Sender::H2(sender))
        } else {
            let (sender, conn) = http1::handshake(io)
                .await
                .map_err(|e| format!("h1 handshake: {e}"))?;
            tokio::spawn(conn);
            Ok(Sender::H1(sender))
        }
    }

    /// Sends one request (bounded by [`REQUEST_TIMEOUT`]) and reads the whole response.
    /// A `path`-only URI is completed with this client's address; `host` defaults to it too.
    pub async fn send(&mut self, req: Request<Body>) -> Result<Reply, String> {
        match timeout(REQUEST_TIMEOUT, self.send_inner(req)).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                self.sender = None;
                Err(format!("no response within {REQUEST_TIMEOUT:?}"))
            }
        }
    }

    pub async fn get(&mut self, path: &str) -> Result<Reply, String> {
        self.send(get(path)).await
    }

    async fn send_inner(&mut self, mut req: Request<Body>) -> Result<Reply, String> {
        let default_host = self.addr.to_string();
        if self.h2 {
            // HTTP/2 carries the host in :authority, taken from an absolute URI.
            let host = req
                .headers_mut()
                .remove(HOST)
                .and_then(|h| h.to_str().ok().map(str::to_string))
                .unwrap_or(default_host);
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into());
            *req.uri_mut() = format!("http://{host}{path}")
                .parse::<Uri>()
                .map_err(|e| format!("bad uri: {e}"))?;
        } else if !req.headers().contains_key(HOST) {
            req.headers_mut().insert(
                HOST,
                HeaderValue::from_str(&default_host).expect("host header"),
            );
        }

        // Reuse the kept-alive connection when it is still usable; else open a new one.
        if let Some(sender) = &mut self.sender {
            let usable = match sender {
                Sender::H1(s) => s.ready().await.is_ok(),
                Sender::H2(s) => s.ready().await.is_ok(),
            };
            if !usable {
                self.sender = None;
            }
        }
        if self.sender.is_none() {
            let sender = self.connect().await?;
            self.sender = Some(sender);
        }
        let response = match self.sender.as_mut().expect("sender") {
            Sender::H1(s) => {
                s.ready().await.map_err(|e| format!("h1 not ready: {e}"))?;
                s.send_request(req).await
            }
            Sender::H2(s) => {
                s.ready().await.map_err(|e| format!("h2 not ready: {e}"))?;
                s.send_request(req).await
            }
        }
        .map_err(|e| format!("request failed: {e}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("reading response body: {e}"))?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// One request on a fresh connection (for admin probes).
pub async fn get_once(addr: SocketAddr, path: &str) -> Result<Reply, String> {
    Client::http1(addr).get(path).await
}

/// Writes `request` as raw bytes on a new connection and returns what came back until the
/// server closed the connection or `within` passed (whichever first). For requests a
/// well-behaved client library refuses to send.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], within: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    // The server may answer (and close) before it has read everything; that is fine.
    let _ = stream.write_all(request).await;
    let mut out = Vec::new();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of the first response in a raw HTTP/1.1 exchange.
pub fn raw_status(response: &str) -> Option<u16> {
    let line = response.lines().next()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Percent-encodes a query-string value (RFC 3986 unreserved characters pass through).
pub fn url_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
