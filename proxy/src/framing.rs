//! Request-smuggling guard: a thin reader on HTTP/1.x client connections that sees what
//! hyper's parser hides.
//!
//! hyper accepts a request carrying both `Content-Length` and `Transfer-Encoding: chunked`
//! (RFC 9112 §6.3 lets a server read it as chunked and close afterwards): it silently drops
//! `Content-Length`, so the request the proxy gets looks like any chunked request. SPEC §9 wants
//! such a request refused (400) and never forwarded, because the next hop may frame it the
//! other way. This module therefore follows the byte stream *before* hyper reads it:
//! [`ScanIo`] wraps the connection and runs every read through a small state machine that
//! parses each request head with `httparse` (the same parser hyper uses), then skips the body
//! by its framing — `Content-Length` bytes, or chunk by chunk with hyper's own chunk-line rules
//! ([`crate::chunked`]) — to land on the next head. A head with both framing headers, or a chunked body whose
//! framing is invalid, is noted in the shared [`FramingVerdict`] as "request *n* is bad".
//!
//! hyper can only parse bytes that came through this reader, so by the time the pipeline sees
//! request *n*, head *n* (and whatever part of its body had arrived) has already been scanned;
//! the pipeline asks [`FramingVerdict::check`] and answers 400 before routing. Cost: one
//! `httparse` pass per head and a few comparisons per chunk line; body bytes are skipped, not
//! examined. The scanner stops for good (and lets hyper alone decide, as before) on anything it
//! cannot follow: an HTTP/2 preface, an `Upgrade`/`CONNECT` (a tunnel may follow), a head it
//! cannot parse (hyper will refuse it too) or one larger than the limit.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::chunked::{BadChunk, Chunked};
use crate::edge::ClientStream;
use crate::headers::content_length;

/// Why a request's framing was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FramingError {
    /// Both `Content-Length` and `Transfer-Encoding`.
    ContentLengthAndTransferEncoding = 1,
    /// A chunk-size line, chunk terminator or trailer section hyper's decoder would reject.
    InvalidChunk = 2,
}

impl FramingError {
    pub fn message(self) -> &'static str {
        match self {
            FramingError::ContentLengthAndTransferEncoding => {
                "both Content-Length and Transfer-Encoding: request refused\n"
            }
            FramingError::InvalidChunk => "invalid chunked framing: request refused\n",
        }
    }
}

/// What the scanner found, shared with the requests of the same connection.
#[derive(Debug)]
pub struct FramingVerdict {
    /// Index of the first request on the connection whose framing is bad (`u64::MAX`: none).
    bad_from: AtomicU64,
    reason: AtomicU8,
    /// Requests handed to the pipeline so far (HTTP/1.x requests are served in order).
    next_request: AtomicU64,
}

impl Default for FramingVerdict {
    fn default() -> Self {
        FramingVerdict {
            bad_from: AtomicU64::new(u64::MAX),
            reason: AtomicU8::new(0),
            next_request: AtomicU64::new(0),
        }
    }
}

impl FramingVerdict {
    /// Called once per HTTP/1.x request, in order: its framing problem, if the scanner saw one.
    pub fn check(&self) -> Result<(), FramingError> {
        let n = self.next_request.fetch_add(1, Relaxed);
        if n < self.bad_from.load(Relaxed) {
            return Ok(());
        }
        Err(match self.reason.load(Relaxed) {
            1 => FramingError::ContentLengthAndTransferEncoding,
            _ => FramingError::InvalidChunk,
        })
    }

    fn mark(&self, request: u64, why: FramingError) {
        if request < self.bad_from.load(Relaxed) {
            self.reason.store(why as u8, Relaxed);
            self.bad_from.store(request, Relaxed);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading request head number `Scanner::request`.
    Head,
    /// Skipping this many body bytes.
    Length(u64),
    /// Following a chunked body (in `Scanner::chunked`).
    Chunked,
    /// Not following this connection any more (HTTP/2, tunnel, unparsable input).
    Off,
}

/// The per-connection scanner state (owned by the reader; only the verdict is shared).
#[derive(Debug)]
pub struct Scanner {
    state: State,
    request: u64,
    /// Head bytes that arrived in pieces (reused across requests).
    partial: Vec<u8>,
    chunked: Chunked,
    max_head: usize,
    verdict: Arc<FramingVerdict>,
}

const MAX_HEADERS: usize = 100;

impl Scanner {
    pub fn new(max_head: usize, verdict: Arc<FramingVerdict>) -> Scanner {
        Scanner {
            state: State::Head,
            request: 0,
            partial: Vec::new(),
            chunked: Chunked::default(),
            max_head,
            verdict,
        }
    }

    /// Follows `bytes`, the next bytes the client sent.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            bytes = match self.state {
                State::Off => return,
                State::Head => self.head(bytes),
                State::Length(n) => {
                    let take = n.min(bytes.len() as u64);
                    self.state = if take == n {
                        self.next_head()
                    } else {
                        State::Length(n - take)
                    };
                    &bytes[take as usize..]
                }
                State::Chunked => match self.chunked.feed(bytes) {
                    Ok((n, true)) => {
                        self.state = self.next_head();
                        &bytes[n..]
                    }
                    Ok((n, false)) => &bytes[n..],
                    Err(BadChunk) => {
                        self.verdict.mark(self.request, FramingError::InvalidChunk);
                        self.state = State::Off;
                        return;
                    }
                },
            };
        }
    }

    fn next_head(&mut self) -> State {
        self.request += 1;
        State::Head
    }

    /// Parses a head from `partial + bytes`; returns what follows it.
    fn head<'b>(&mut self, bytes: &'b [u8]) -> &'b [u8] {
        let (parsed, from_partial) = if self.partial.is_empty() {
            (parse_head(bytes), 0)
        } else {
            let before = self.partial.len();
            let room = (self.max_head + 1).saturating_sub(before);
            self.partial
                .extend_from_slice(&bytes[..bytes.len().min(room)]);
            (parse_head(&self.partial), before)
        };
        match parsed {
            Ok((httparse::Status::Complete(len), framing)) => {
                // The head ends `len - from_partial` bytes into `bytes`.
                let rest = &bytes[len - from_partial..];
                self.partial.clear();
                self.state = match framing {
                    Framing::Tunnel => State::Off,
                    Framing::Both => {
                        self.verdict
                            .mark(self.request, FramingError::ContentLengthAndTransferEncoding);
                        // hyper reads it as chunked (and closes after it): follow that.
                        self.chunked = Chunked::default();
                        State::Chunked
                    }
                    Framing::Chunked => {
                        self.chunked = Chunked::default();
                        State::Chunked
                    }
                    Framing::Length(0) | Framing::None => self.next_head(),
                    Framing::Length(n) => State::Length(n),
                    Framing::Unknown => State::Off,
                };
                rest
            }
            Ok((httparse::Status::Partial, _)) => {
                if self.partial.is_empty() {
                    self.partial.extend_from_slice(bytes);
                }
                if self.partial.len() > self.max_head {
                    // hyper answers 431 for this; nothing more to follow.
                    self.state = State::Off;
                    self.partial = Vec::new();
                }
                &[]
            }
            Err(_) => {
                // hyper refuses it too (or it is the HTTP/2 preface): stop following.
                self.state = State::Off;
                self.partial = Vec::new();
                &[]
            }
        }
    }
}

/// Parses one request head (as hyper does, with `httparse`) into its length and framing.
fn parse_head(buf: &[u8]) -> Result<(httparse::Status<usize>, Framing), httparse::Error> {
    // Uninitialised header slots: no 3 KiB memset per head.
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let status = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut req,
        buf,
        &mut headers,
    )?;
    let framing = match status {
        httparse::Status::Complete(_) => framing_of(&req),
        httparse::Status::Partial => Framing::None,
    };
    Ok((status, framing))
}

enum Framing {
    None,
    Length(u64),
    Chunked,
    Both,
    /// CONNECT or Upgrade: what follows may be a tunnel.
    Tunnel,
    /// Something hyper rejects (e.g. an unparsable length): stop following.
    Unknown,
}

fn framing_of(req: &httparse::Request<'_, '_>) -> Framing {
    if req.method == Some("CONNECT") {
        return Framing::Tunnel;
    }
    let mut length: Option<u64> = None;
    let mut te_chunked: Option<bool> = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let Some(n) = content_length(h.value) else {
                return Framing::Unknown;
            };
            if length.is_some_and(|l| l != n) {
                return Framing::Unknown;
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Like hyper: the last encoding of the last header line decides.
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            te_chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            return Framing::Tunnel;
        }
    }
    match (te_chunked, length) {
        (Some(true), Some(_)) => Framing::Both,
        (Some(true), None) => Framing::Chunked,
        (Some(false), _) => Framing::Unknown,
        (None, Some(n)) => Framing::Length(n),
        (None, None) => Framing::None,
    }
}

/// Set when a response broke off upstream: the client connection must then end with a reset
/// (RST), never with a clean close an HTTP/1.0 client would take for the end of the body.
#[derive(Debug, Default)]
pub struct AbortSignal(AtomicBool);

impl AbortSignal {
    pub fn abort(&self) {
        self.0.store(true, Relaxed);
    }

    fn is_set(&self) -> bool {
        self.0.load(Relaxed)
    }
}

/// The client connection as hyper sees it: reads pass through the [`Scanner`] first, and
/// bytes the fast path (`http1`) already read come before the socket's. After an
/// [`AbortSignal`], shutting down or dropping it resets the connection.
pub(crate) struct ScanIo<I: ClientStream> {
    inner: I,
    scanner: Option<Scanner>,
    read_before: Bytes,
    abort: Arc<AbortSignal>,
}

impl<I: ClientStream> ScanIo<I> {
    /// `scanner: None` passes bytes through untouched (HTTP/2 by ALPN).
    pub(crate) fn new(inner: I, scanner: Option<Scanner>, abort: Arc<AbortSignal>) -> ScanIo<I> {
        ScanIo {
            inner,
            scanner,
            read_before: Bytes::new(),
            abort,
        }
    }

    /// Puts back bytes already read from `inner`: they are read (and scanned) first.
    pub(crate) fn with_read_before(mut self, bytes: Bytes) -> ScanIo<I> {
        self.read_before = bytes;
        self
    }
}

impl<I: ClientStream> Drop for ScanIo<I> {
    fn drop(&mut self) {
        if self.abort.is_set() {
            self.inner.reset_on_close();
        }
    }
}

impl<I: ClientStream> AsyncRead for ScanIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = if this.read_before.is_empty() {
            Pin::new(&mut this.inner).poll_read(cx, buf)
        } else {
            let n = this.read_before.len().min(buf.remaining());
            buf.put_slice(&this.read_before.split_to(n));
            Poll::Ready(Ok(()))
        };
        if let (Poll::Ready(Ok(())), Some(scanner)) = (&poll, &mut this.scanner) {
            scanner.feed(&buf.filled()[before..]);
            if scanner.state == State::Off {
                this.scanner = None;
            }
        }
        poll
    }
}

impl<I: ClientStream> AsyncWrite for ScanIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.abort.is_set() {
            // No FIN (or TLS close_notify): the drop that follows resets the connection.
            this.inner.reset_on_close();
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> (Arc<FramingVerdict>, Scanner) {
        let verdict = Arc::new(FramingVerdict::default());
        let mut s = Scanner::new(65536, Arc::clone(&verdict));
        for c in chunks {
            s.feed(c);
        }
        (verdict, s)
    }

    #[test]
    fn clean_pipelined_requests_pass() {
        let (v, s) = scan(&[
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\n",
            b"Host: x\r\n\r\nPOST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext\r\nhel",
            b"lo\r\n0\r\nx-t: 1\r\n\r\nGET /d HTTP/1.1\r\n\r\n",
        ]);
        assert_eq!(s.request, 4);
        assert_eq!(s.state, State::Head);
        for _ in 0..4 {
            assert_eq!(v.check(), Ok(()));
        }
    }

    #[test]
    fn both_framing_headers_mark_that_request() {
        let (v, _) = scan(&[
            b"GET / HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ]);
        assert_eq!(v.check(), Ok(()));
        assert_eq!(
            v.check(),
            Err(FramingError::ContentLengthAndTransferEncoding)
        );
    }

    #[test]
    fn bad_chunk_lines_are_marked() {
        for body in [&b"5\r\nhelloXX"[..], b"zz\r\n", b"5\nhello", b"1;a\nb\r\n"] {
            let head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
            let (v, _) = scan(&[head, body]);
            assert_eq!(v.check(), Err(FramingError::InvalidChunk), "{body:?}");
        }
    }

    #[test]
    fn h2_preface_and_upgrades_stop_the_scanner() {
        let (_, s) = scan(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]);
        assert_eq!(s.state, State::Off);
        let (_, s) =
            scan(&[b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"]);
        assert_eq!(s.state, State::Off);
    }

    /// What following the framing costs per request (run with `--release --ignored`).
    #[test]
    #[ignore = "measurement"]
    fn scanner_cost_per_request() {
        let head = b"POST /api/v1/items?page=2 HTTP/1.1\r\nHost: api.example.com\r\n\
            User-Agent: curl/8.5.0\r\nAccept: */*\r\nContent-Type: application/json\r\n\
            Content-Length: 64\r\nX-Request-Id: 4bf92f3577b34da6a3ce929d0e0e4736\r\n\r\n";
        let mut one = head.to_vec();
        one.extend_from_slice(&[b'x'; 64]);
        let n = 200_000;
        let verdict = Arc::new(FramingVerdict::default());
        let mut s = Scanner::new(65536, Arc::clone(&verdict));
        let start = std::time::Instant::now();
        for _ in 0..n {
            s.feed(std::hint::black_box(&one));
        }
        let per = start.elapsed() / n;
        assert_eq!(s.request, u64::from(n));
        eprintln!(
            "scanner: {per:?} per request ({} byte head + 64 byte body)",
            head.len()
        );
    }
}
