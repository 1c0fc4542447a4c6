//! The fast path's bytes: request heads parsed in place (httparse) and written back out for
//! the upstream, and the upstream's response head written for the client (its parser is the
//! raw client's, `upstream::raw`).
//!
//! Parsing decides what the fast path may take (see [`parse_request`]); writing is where the
//! hop-by-hop headers go out and the `X-Forwarded-*` headers come in. Everything works on
//! spans into the connection's buffer: no header is copied into a map.

use std::mem::MaybeUninit;
use std::ops::Range;

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Uri, Version};

use crate::access_log::LoggedRequest;
use crate::error::ProxyError;
use crate::headers::{
    self, ConnectionOptions, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO,
};
use crate::phases::RequestHead;
use crate::upstream::raw::{Framing, ResponseHead, ResponseSink};

/// Headers in a request head; more go to hyper (which answers 431).
pub(super) const MAX_HEADERS: usize = 100;

/// One request head, as spans into the connection's read buffer.
pub(super) struct Head {
    pub(super) len: usize,
    pub(super) method: Range<usize>,
    pub(super) target: Range<usize>,
    pub(super) host: Range<usize>,
    /// The client asked to close after this request.
    pub(super) close: bool,
    /// `Connection` names other headers, which are hop-by-hop too.
    pub(super) connection_lists: bool,
    pub(super) x_forwarded_for: bool,
}

/// One header line of a request head: spans into the read buffer, and what parsing found out
/// about its name once, so nothing compares it again per request.
pub(super) struct Span {
    pub(super) name: Range<usize>,
    pub(super) value: Range<usize>,
    /// Goes upstream as it is: not hop-by-hop, not an `X-Forwarded-*` this hop rewrites
    /// (a header `Connection` names is still checked when written, see [`Head`]).
    pub(super) forward: bool,
}

/// The request head as routing reads it.
pub(super) struct View<'a> {
    pub(super) buf: &'a [u8],
    pub(super) head: &'a Head,
    pub(super) headers: &'a [Span],
}

impl RequestHead for View<'_> {
    fn method(&self) -> &[u8] {
        &self.buf[self.head.method.clone()]
    }

    fn host(&self) -> Option<&[u8]> {
        Some(&self.buf[self.head.host.clone()])
    }

    fn path(&self) -> &[u8] {
        let target = &self.buf[self.head.target.clone()];
        target.split(|&b| b == b'?').next().unwrap_or(target)
    }

    fn header_values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        let name = name.as_str().as_bytes();
        self.headers
            .iter()
            .filter(move |h| self.buf[h.name.clone()].eq_ignore_ascii_case(name))
            .map(move |h| &self.buf[h.value.clone()])
    }
}

pub(super) enum Parsed {
    Head(Head),
    Partial,
    Fallback,
}

/// What a request header's name is to this path (one comparison per header: by length,
/// then the one or two names of that length).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Name {
    Host,
    Connection,
    ContentLength,
    XForwardedFor,
    /// The general path's (a body, an upgrade, `Expect`).
    Fallback,
    /// Not forwarded: hop-by-hop, or `X-Forwarded-Proto`/`-Host` (this hop writes them).
    Dropped,
    Other,
}

fn classify(name: &[u8]) -> Name {
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    match name.len() {
        4 if is(b"host") => Name::Host,
        6 if is(b"expect") => Name::Fallback,
        7 if is(b"upgrade") => Name::Fallback,
        10 if is(b"connection") => Name::Connection,
        14 if is(b"content-length") => Name::ContentLength,
        15 if is(X_FORWARDED_FOR.as_str().as_bytes()) => Name::XForwardedFor,
        16 if is(X_FORWARDED_HOST.as_str().as_bytes()) => Name::Dropped,
        17 if is(b"transfer-encoding") => Name::Fallback,
        17 if is(X_FORWARDED_PROTO.as_str().as_bytes()) => Name::Dropped,
        _ if headers::is_hop_by_hop(name) => Name::Dropped,
        _ => Name::Other,
    }
}

/// Parses a request head in place and decides whether this path can take it.
pub(super) fn parse_request(buf: &[u8], spans: &mut Vec<Span>) -> Parsed {
    if buf.is_empty() {
        return Parsed::Partial;
    }
    // Uninitialized: zeroing 100 headers (3.2 KB) per request was a visible cost.
    let mut raw = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut raw) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Fallback,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Fallback;
    };
    if method == "CONNECT" || !target.starts_with('/') || !target.bytes().all(is_plain_target) {
        return Parsed::Fallback;
    }
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let mut head = Head {
        len,
        method: span(method.as_bytes()),
        target: span(target.as_bytes()),
        host: 0..0,
        close: false,
        connection_lists: false,
        x_forwarded_for: false,
    };
    let (mut hosts, mut lengths) = (0, 0);
    let mut connection = ConnectionOptions::default();
    spans.clear();
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let value = h.value.trim_ascii();
        let class = classify(name);
        match class {
            Name::Host => {
                hosts += 1;
                head.host = span(value);
            }
            Name::Connection => connection.add(value),
            // A body, or framing to check: the general path (and its smuggling checks).
            Name::ContentLength if value != b"0" => return Parsed::Fallback,
            Name::ContentLength => lengths += 1,
            Name::XForwardedFor => head.x_forwarded_for = true,
            Name::Fallback => return Parsed::Fallback,
            Name::Dropped | Name::Other => {}
        }
        spans.push(Span {
            name: span(name),
            value: span(value),
            forward: !matches!(
                class,
                Name::Connection | Name::XForwardedFor | Name::Dropped
            ),
        });
    }
    if hosts != 1 || lengths > 1 {
        return Parsed::Fallback;
    }
    head.close = connection.close;
    head.connection_lists = connection.names_headers;
    Parsed::Head(head)
}

/// What the access log says about a request, from its raw head.
pub(super) fn logged_request(req: &View<'_>) -> LoggedRequest {
    let buf = req.buf;
    let value = |name: &HeaderName| {
        req.header_values(name)
            .next()
            .and_then(|v| HeaderValue::from_bytes(v).ok())
    };
    LoggedRequest {
        method: Method::from_bytes(&buf[req.head.method.clone()]).unwrap_or_default(),
        uri: Uri::try_from(&buf[req.head.target.clone()]).unwrap_or_default(),
        protocol: Version::HTTP_11,
        host: HeaderValue::from_bytes(&buf[req.head.host.clone()]).ok(),
        referer: value(&header::REFERER),
        user_agent: value(&header::USER_AGENT),
    }
}

/// Target bytes this path forwards as they are: RFC 3986 path and query characters (a
/// subset of what the general path accepts; anything else goes there).
pub(super) fn is_plain_target(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b)
}

/// The request as the upstream sees it: same method, target and headers, minus hop-by-hop
/// headers, plus `X-Forwarded-For` (appended), `-Proto` and `-Host` (replaced).
pub(super) fn write_upstream_head(
    out: &mut Vec<u8>,
    req: &View<'_>,
    client_ip: &str,
    scheme: &str,
) {
    let buf = req.buf;
    out.clear();
    out.extend_from_slice(&buf[req.head.method.clone()]);
    out.push(b' ');
    out.extend_from_slice(&buf[req.head.target.clone()]);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let connection = |name: &[u8]| {
        req.header_values(&header::CONNECTION)
            .any(|c| headers::connection_lists(c, name))
    };
    for h in req.headers {
        let name = &buf[h.name.clone()];
        if !h.forward || (req.head.connection_lists && connection(name)) {
            continue;
        }
        push_header(out, name, &buf[h.value.clone()]);
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    if req.head.x_forwarded_for {
        for v in req.header_values(&X_FORWARDED_FOR) {
            out.extend_from_slice(v);
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(client_ip.as_bytes());
    out.extend_from_slice(b"\r\nx-forwarded-proto: ");
    out.extend_from_slice(scheme.as_bytes());
    out.extend_from_slice(b"\r\n");
    push_header(out, b"x-forwarded-host", &buf[req.head.host.clone()]);
    out.extend_from_slice(b"\r\n");
}

pub(super) fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A proxy-made response (DESIGN §5: the same status and text as the general path); returns
/// the body's length.
pub(super) fn write_error(out: &mut Vec<u8>, e: &ProxyError, close: bool) -> u64 {
    let status = e.status();
    let body = e.body();
    out.clear();
    push_status_line(
        out,
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
    );
    // As hyper adds to the general path's responses (RFC 9110 §6.6.1); a rare path, so the
    // date is formatted here rather than cached.
    push_header(
        out,
        b"date",
        httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes(),
    );
    out.extend_from_slice(b"content-type: text/plain; charset=utf-8\r\ncontent-length: ");
    push_decimal(out, body.len() as u64);
    out.extend_from_slice(b"\r\n");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    body.len() as u64
}

pub(super) fn push_status_line(out: &mut Vec<u8>, status: u16, reason: &str) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

pub(super) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The client's response head, written as the upstream's is parsed (`upstream::raw`): the
/// status line and the headers it may see, then this hop's framing.
impl ResponseSink for Vec<u8> {
    fn status(&mut self, status: u16, reason: &str) {
        self.clear();
        push_status_line(self, status, reason);
    }

    fn header(&mut self, name: &[u8], value: &[u8]) {
        push_header(self, name, value);
    }

    fn end(&mut self, head: &ResponseHead) {
        if matches!(head.framing, Framing::Chunked(_)) {
            self.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        if head.close_client {
            self.extend_from_slice(b"connection: close\r\n");
        }
        self.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunked::Chunked;
    use crate::upstream::raw::{parse_response, ParsedResponse, MAX_RESPONSE_HEADERS};

    fn parse(raw: &[u8]) -> Parsed {
        parse_request(raw, &mut Vec::new())
    }

    #[test]
    fn plain_requests_take_the_fast_path_and_others_fall_back() {
        assert!(matches!(
            parse(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
            Parsed::Head(_)
        ));
        assert!(matches!(parse(b"GET / HTTP/1.1\r\nHo"), Parsed::Partial));
        for raw in [
            &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"[..],
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /a<b HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        ] {
            assert!(
                matches!(parse(raw), Parsed::Fallback),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn upstream_head_drops_hop_by_hop_and_adds_forwarding() {
        let raw = b"GET /x HTTP/1.1\r\nHost: api.test\r\nConnection: keep-alive, X-Secret\r\n\
            X-Secret: 1\r\nKeep-Alive: timeout=5\r\nX-Forwarded-For: 203.0.113.7\r\n\
            X-Forwarded-Proto: https\r\nAccept: */*\r\n\r\n";
        let mut spans = Vec::new();
        let Parsed::Head(head) = parse_request(raw, &mut spans) else {
            panic!("not parsed");
        };
        let view = View {
            buf: raw,
            head: &head,
            headers: &spans,
        };
        let mut out = Vec::new();
        write_upstream_head(&mut out, &view, "127.0.0.1", "http");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /x HTTP/1.1\r\nHost: api.test\r\nAccept: */*\r\n\
             x-forwarded-for: 203.0.113.7, 127.0.0.1\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: api.test\r\n\r\n"
        );
    }

    #[test]
    fn response_head_is_rewritten_for_the_client() {
        let raw = b"HTTP/1.1 200 OK\r\nServer: t\r\nConnection: keep-alive\r\n\
            Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n";
        let mut out = Vec::new();
        let ParsedResponse::Head(len, head) = parse_response(raw, false, false, &mut out) else {
            panic!("not parsed");
        };
        assert_eq!(len, raw.len());
        assert!(matches!(head.framing, Framing::Chunked(_)));
        assert!(head.upstream_keep_alive && !head.close_client);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "HTTP/1.1 200 OK\r\nServer: t\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        // No length, no chunking: read until close, and tell the client.
        let ParsedResponse::Head(_, head) =
            parse_response(b"HTTP/1.1 200 OK\r\n\r\n", false, false, &mut out)
        else {
            panic!("not parsed");
        };
        assert!(matches!(head.framing, Framing::UntilClose));
        assert!(!head.upstream_keep_alive && head.close_client);
        assert!(matches!(
            parse_response(b"HTTP/1.1 100 Continue\r\n\r\n", false, false, &mut out),
            ParsedResponse::Informational(25)
        ));
        assert!(matches!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false,
                false,
                &mut out
            ),
            ParsedResponse::Invalid
        ));
    }

    /// Mutated real heads and bodies (a deterministic xorshift mutator, so every `cargo test`
    /// runs the same 20,000 cases): the parsers never panic, spans stay inside the head, what
    /// the proxy writes upstream or to the client parses back whole (no header injection), and
    /// chunked framing never claims bytes it was not given.
    #[test]
    fn parsers_survive_mutated_input() {
        let seeds: [&[u8]; 6] = [
            b"GET /a?b=1 HTTP/1.1\r\nHost: api.test\r\nCookie: u=1; v=2\r\nConnection: keep-alive, x-a\r\nX-A: 1\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
            b"DELETE /x HTTP/1.1\r\nhost: h\r\ncontent-length: 0\r\n\r\nGET / HTTP/1.1\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close, x-b\r\nX-B: 2\r\n\r\nhello",
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"a;x=y\r\n0123456789\r\n0\r\nt: 1\r\n\r\n",
        ];
        let interesting = b"\r\n :;,0aA\t\x00\x7f\xff/?";
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as usize
        };
        let parses_back_as_request = |out: &[u8]| {
            let mut raw = [httparse::EMPTY_HEADER; 2 * MAX_HEADERS];
            let mut req = httparse::Request::new(&mut raw);
            matches!(req.parse(out), Ok(httparse::Status::Complete(n)) if n == out.len())
        };
        for _ in 0..20_000 {
            let mut input = seeds[next() % seeds.len()].to_vec();
            for _ in 0..next() % 6 {
                let at = next() % (input.len() + 1);
                match next() % 4 {
                    0 if at < input.len() => input[at] = interesting[next() % interesting.len()],
                    1 => input.insert(at, interesting[next() % interesting.len()]),
                    2 if at < input.len() => {
                        input.remove(at);
                    }
                    _ => {
                        let from = next() % (input.len() + 1);
                        let piece = input[from.min(at)..from.max(at)].to_vec();
                        input.splice(at..at, piece);
                    }
                }
            }

            let mut spans = Vec::new();
            if let Parsed::Head(head) = parse_request(&input, &mut spans) {
                assert!(head.len <= input.len());
                assert!(spans
                    .iter()
                    .all(|h| h.name.end <= head.len && h.value.end <= head.len));
                let view = View {
                    buf: &input,
                    head: &head,
                    headers: &spans,
                };
                let mut out = Vec::new();
                write_upstream_head(&mut out, &view, "127.0.0.1", "http");
                assert!(
                    parses_back_as_request(&out),
                    "{:?}",
                    String::from_utf8_lossy(&out)
                );
                let _ = crate::phases::route_service(&crate::RoutingTable::default(), &view);
            }

            let mut out = Vec::new();
            if let ParsedResponse::Head(len, _) = parse_response(&input, false, false, &mut out) {
                assert!(len <= input.len());
                let mut raw = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS + 2];
                let mut res = httparse::Response::new(&mut raw);
                assert!(
                    matches!(res.parse(&out), Ok(httparse::Status::Complete(n)) if n == out.len()),
                    "{:?}",
                    String::from_utf8_lossy(&out)
                );
            }

            let cut = next() % (input.len() + 1);
            let mut c = Chunked::default();
            if let Ok((a, done)) = c.feed(&input[..cut]) {
                assert!(a <= cut);
                if !done {
                    if let Ok((b, _)) = c.feed(&input[cut..]) {
                        assert!(b <= input.len() - cut);
                    }
                }
            }
        }
    }

    #[test]
    fn status_codes_and_lengths_render_as_decimal() {
        let mut out = Vec::new();
        push_decimal(&mut out, 0);
        out.push(b' ');
        push_decimal(&mut out, 18_446_744_073_709_551_615);
        assert_eq!(out, b"0 18446744073709551615");
    }
}
