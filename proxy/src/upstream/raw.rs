//! HTTP/1.1 to a backend on a raw pooled socket: the client of both fast transports.
//!
//! The fast HTTP/1.1 path (`http1`) and the HTTP/2 server (`http2`) send a bodyless request
//! the same way: a pooled [`RawConn`] (or a new one within the backend's caps), the request
//! head written in one piece, the response head read and parsed in place ([`parse_response`]),
//! and the body's framing followed ([`Framing`]) so the connection can be reused. No client
//! connection task, no channels, no `HeaderMap` on the way in: the caller decides what the
//! response head becomes on its side through a [`ResponseSink`] (HTTP/1.1 bytes, or HTTP/2
//! headers). What may go again after a failed attempt is retry.rs's call, passed in.

use std::mem::MaybeUninit;
use std::ops::Range;

use bytes::Buf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::http1::RawConn;
use super::pool::{ConnectFailure, SendTimeouts};
use super::UpstreamPool;
use crate::chunked::Chunked;
use crate::headers::{self, ConnectionOptions};

/// Bytes in an upstream response head; more is a bad gateway.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Headers in an upstream response head; more is a bad gateway.
pub(crate) const MAX_RESPONSE_HEADERS: usize = 128;
/// Read size while a response head is awaited.
const HEAD_READ: usize = 4 * 1024;

/// What the client asked the upstream, and how.
#[derive(Clone, Copy)]
pub(crate) struct Asked<'a> {
    /// The whole request head, as the upstream sees it.
    pub request: &'a [u8],
    pub head_method: bool,
    pub idempotent: bool,
    /// The client asked to close after this request (the response says so to it).
    pub client_close: bool,
    /// Whether a request that reached a pooled connection which then closed may go again on
    /// a fresh one: retry.rs `may_reconnect(sent, idempotent)`.
    pub may_reconnect: fn(bool, bool) -> bool,
}

/// Why an attempt on one backend got no usable response head.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// The request did not reach the backend: another backend may take it.
    NotSent(ConnectFailure),
    /// The connection closed before any response byte, on a connection that cannot be
    /// replaced (fresh, or the request must not go twice).
    ClosedEarly,
    Timeout,
    /// The response head is garbage or too large.
    Invalid,
}

/// One attempt on one backend: a pooled connection (or a fresh one if the pooled one turns
/// out stale), the request written, the response head read and handed to `out`.
pub(crate) async fn exchange(
    pool: &UpstreamPool,
    asked: Asked<'_>,
    timeouts: &SendTimeouts,
    out: &mut impl ResponseSink,
) -> Result<(RawConn, ResponseHead), Attempt> {
    let mut stale_retry = true;
    loop {
        // An idle connection, else a new one within the backend's caps, else one that comes
        // back (bounded by the connect and queue timeouts).
        let (mut up, reused) = match pool.acquire_raw(timeouts, !stale_retry).await {
            Ok(acquired) => acquired,
            Err(why) => {
                tracing::debug!(backend = %pool.address(), ?why, "no upstream connection");
                return Err(Attempt::NotSent(why));
            }
        };
        // The request timeout runs from here: the head is written at once (it is small and
        // the request has no body), so this is the backend's time to the response head.
        let deadline = Instant::now() + timeouts.request;
        let result =
            tokio::time::timeout_at(deadline, write_and_read_head(&mut up, asked, out)).await;
        match result {
            Err(_elapsed) => return Err(Attempt::Timeout),
            Ok(Ok(head)) => return Ok((up, head)),
            Ok(Err(e @ Attempt::NotSent(_))) if !reused => return Err(e),
            Ok(Err(e @ (Attempt::NotSent(_) | Attempt::ClosedEarly)))
                if reused
                    && stale_retry
                    && (asked.may_reconnect)(
                        matches!(e, Attempt::ClosedEarly),
                        asked.idempotent,
                    ) =>
            {
                // A keep-alive race: the backend closed the idle connection as we used it.
                stale_retry = false;
            }
            Ok(Err(Attempt::NotSent(_))) => return Err(Attempt::ClosedEarly),
            Ok(Err(e)) => return Err(e),
        }
    }
}

async fn write_and_read_head(
    up: &mut RawConn,
    asked: Asked<'_>,
    out: &mut impl ResponseSink,
) -> Result<ResponseHead, Attempt> {
    up.stream
        .write_all(asked.request)
        .await
        .map_err(|e| Attempt::NotSent(ConnectFailure::Refused(e)))?;
    let mut any = false;
    loop {
        if !up.buf.is_empty() {
            match parse_response(&up.buf, asked.head_method, asked.client_close, out) {
                ParsedResponse::Head(len, head) => {
                    up.buf.advance(len);
                    return Ok(head);
                }
                ParsedResponse::Informational(len) => {
                    up.buf.advance(len);
                    continue;
                }
                ParsedResponse::Partial if up.buf.len() < MAX_RESPONSE_HEAD => {}
                ParsedResponse::Partial | ParsedResponse::Invalid => return Err(Attempt::Invalid),
            }
        }
        if up.buf.capacity() - up.buf.len() < 512 {
            up.buf.reserve(HEAD_READ);
        }
        match up.stream.read_buf(&mut up.buf).await {
            Ok(0) | Err(_) if !any => return Err(Attempt::ClosedEarly),
            Ok(0) | Err(_) => return Err(Attempt::Invalid),
            Ok(_) => any = true,
        }
    }
}

/// Where the response head goes: the transport's own form of it (HTTP/1.1 bytes for the fast
/// path, HTTP/2 headers). Called only for a final, valid head, in order: `status`, each
/// header the client may see (hop-by-hop ones, those `Connection` names, and a
/// `Content-Length` beside chunked framing are left out), then `end`.
pub(crate) trait ResponseSink {
    fn status(&mut self, status: u16, reason: &str);
    fn header(&mut self, name: &[u8], value: &[u8]);
    fn end(&mut self, head: &ResponseHead);
}

/// The upstream's response head, as far as the body and the connections are concerned.
pub(crate) struct ResponseHead {
    pub(crate) status: u16,
    pub(crate) framing: Framing,
    /// The upstream connection may carry another request after this one.
    pub(crate) upstream_keep_alive: bool,
    /// The body ends when the upstream closes (or the client asked to close), so an
    /// HTTP/1.1 client connection must close too.
    pub(crate) close_client: bool,
}

pub(crate) enum ParsedResponse {
    Head(usize, ResponseHead),
    Informational(usize),
    Partial,
    Invalid,
}

/// Parses the upstream's response head and hands the client's version of it to `out`.
pub(crate) fn parse_response(
    buf: &[u8],
    head_method: bool,
    client_close: bool,
    out: &mut impl ResponseSink,
) -> ParsedResponse {
    // Uninitialized: zeroing 128 headers (4 KB) per response was a visible cost.
    let mut raw = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, &mut raw)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return ParsedResponse::Partial,
        Err(_) => return ParsedResponse::Invalid,
    };
    let (Some(status), Some(minor)) = (res.code, res.version) else {
        return ParsedResponse::Invalid;
    };
    match status {
        // 101 is never asked for on this path; below 100 is no status at all.
        0..=99 | 101 => return ParsedResponse::Invalid,
        100..=199 => return ParsedResponse::Informational(len),
        _ => {}
    }
    let mut chunked = false;
    let mut length: Option<u64> = None;
    let mut connection = ConnectionOptions::default();
    for h in res.headers.iter() {
        let name = h.name.as_bytes();
        let value = h.value.trim_ascii();
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Only plain `chunked` can be passed through as it is.
            if chunked || !value.eq_ignore_ascii_case(b"chunked") {
                return ParsedResponse::Invalid;
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let Some(n) = headers::content_length(value) else {
                return ParsedResponse::Invalid;
            };
            if length.is_some_and(|l| l != n) {
                return ParsedResponse::Invalid;
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection.add(value);
        }
    }
    let mut upstream_keep_alive = minor == 1 && !connection.close;
    let no_body = head_method || status == 204 || status == 304;
    let framing = if no_body {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked(Chunked::default())
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        upstream_keep_alive = false;
        Framing::UntilClose
    };
    let close_client = client_close || matches!(framing, Framing::UntilClose);
    let head = ResponseHead {
        status,
        framing,
        upstream_keep_alive,
        close_client,
    };

    out.status(status, res.reason.unwrap_or(""));
    let listed = |name: &[u8]| {
        res.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("connection") && headers::connection_lists(h.value, name)
        })
    };
    for h in res.headers.iter() {
        let name = h.name.as_bytes();
        if headers::is_hop_by_hop(name)
            || (connection.names_headers && listed(name))
            || (chunked && name.eq_ignore_ascii_case(b"content-length"))
        {
            continue;
        }
        out.header(name, h.value);
    }
    out.end(&head);
    ParsedResponse::Head(len, head)
}

/// How the response body ends.
pub(crate) enum Framing {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
}

impl Framing {
    /// Takes body bytes as framed on the wire: how many of `data` belong to the body, and
    /// whether it is complete.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<(usize, bool), ()> {
        self.decode(data, |_| {}, None)
    }

    /// As [`Framing::feed`], and also hands over the body itself: `payload` gets each run of
    /// content bytes (ranges into `data`, in order; chunk framing left out), `trailers` (if
    /// given) collects a chunked body's trailer lines, each ending in CRLF.
    pub(crate) fn decode(
        &mut self,
        data: &[u8],
        mut payload: impl FnMut(Range<usize>),
        trailers: Option<&mut Vec<u8>>,
    ) -> Result<(usize, bool), ()> {
        match self {
            Framing::Length(left) => {
                let n = (*left).min(data.len() as u64);
                *left -= n;
                if n > 0 {
                    payload(0..n as usize);
                }
                Ok((n as usize, *left == 0))
            }
            Framing::Chunked(c) => c.decode(data, payload, trailers).map_err(|_| ()),
            Framing::UntilClose => {
                if !data.is_empty() {
                    payload(0..data.len());
                }
                Ok((data.len(), false))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what the parser hands a sink.
    #[derive(Default)]
    struct Seen(Vec<String>);

    impl ResponseSink for Seen {
        fn status(&mut self, status: u16, reason: &str) {
            self.0.push(format!("{status} {reason}"));
        }
        fn header(&mut self, name: &[u8], value: &[u8]) {
            let (n, v) = (
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(value),
            );
            self.0.push(format!("{n}: {v}"));
        }
        fn end(&mut self, head: &ResponseHead) {
            self.0.push(format!("end close={}", head.close_client));
        }
    }

    #[test]
    fn a_sink_sees_only_what_the_client_may_see() {
        let raw = b"HTTP/1.1 200 OK\r\nServer: t\r\nConnection: keep-alive, x-a\r\nX-A: 1\r\n\
            Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n";
        let mut seen = Seen::default();
        let ParsedResponse::Head(len, head) = parse_response(raw, false, false, &mut seen) else {
            panic!("not parsed");
        };
        assert_eq!(len, raw.len());
        assert!(matches!(head.framing, Framing::Chunked(_)) && head.upstream_keep_alive);
        assert_eq!(seen.0, ["200 OK", "Server: t", "end close=false"]);
    }

    #[test]
    fn decoding_hands_over_the_payload_and_the_trailers() {
        let body = b"4\r\nwiki\r\n5;x=1\r\npedia\r\n0\r\nx-sum: 1\r\nx-b: 2\r\n\r\nNEXT";
        let mut framing = Framing::Chunked(Chunked::default());
        let (mut runs, mut trailers) = (Vec::new(), Vec::new());
        let fed = framing.decode(body, |r| runs.push(r), Some(&mut trailers));
        assert_eq!(fed, Ok((body.len() - 4, true)));
        let payload: Vec<u8> = runs.into_iter().flat_map(|r| body[r].to_vec()).collect();
        assert_eq!(payload, b"wikipedia");
        assert_eq!(trailers, b"x-sum: 1\r\nx-b: 2\r\n");

        let mut framing = Framing::Length(3);
        let mut runs = Vec::new();
        assert_eq!(
            framing.decode(b"abcd", |r| runs.push(r), None),
            Ok((3, true))
        );
        assert_eq!(runs, vec![0..3usize]);
    }
}
