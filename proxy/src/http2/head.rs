//! Heads between an HTTP/2 client and an HTTP/1.1 upstream on the raw client: the request
//! head written as HTTP/1.1 bytes, and the upstream's response head collected as HTTP/2
//! headers.
//!
//! The request the backend sees is the one the general path would have sent through hyper's
//! client (`general::upstream_request`): origin-form target, `Host` from `:authority`,
//! hop-by-hop headers out, `X-Forwarded-For` appended, `-Proto` and `-Host` set — plus the
//! one HTTP/2 rule for a downgrade (RFC 9113 §8.2.3): the `cookie` fields HTTP/2 splits are
//! joined into one line.

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Request;

use crate::headers::{self, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};
use crate::upstream::raw::{ResponseHead, ResponseSink};

/// The HTTP/1.1 request head for `req` (a request without a body), into `out`.
pub(super) fn write_upstream_head<B>(
    out: &mut Vec<u8>,
    req: &Request<B>,
    client_ip: &str,
    scheme: &str,
) {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let h = req.headers();
    // The host the request was routed by: `:authority` wins over a `Host` field.
    let host = match req.uri().authority() {
        Some(a) => Some(a.as_str().as_bytes()),
        None => h.get(header::HOST).map(HeaderValue::as_bytes),
    };
    // One allocation for the whole head (growing it field by field was ~2,000 instructions
    // of reallocation per request): at most every field plus what is added.
    let fields: usize = h.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    let host_len = host.map_or(0, <[u8]>::len);
    out.clear();
    let method = req.method().as_str().as_bytes();
    out.reserve(method.len() + target.len() + fields + 2 * host_len + client_ip.len() + 96);
    out.extend_from_slice(method);
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(host) = host {
        push(out, b"host", host);
    }
    let mut cookies = h.get_all(header::COOKIE).iter();
    if let Some(first) = cookies.next() {
        out.extend_from_slice(b"cookie: ");
        out.extend_from_slice(first.as_bytes());
        for more in cookies {
            out.extend_from_slice(b"; ");
            out.extend_from_slice(more.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in h {
        let n = name.as_str().as_bytes();
        if *name == header::HOST
            || *name == header::COOKIE
            || headers::is_hop_by_hop(n)
            || *name == X_FORWARDED_FOR
            || *name == X_FORWARDED_PROTO
            || *name == X_FORWARDED_HOST
        {
            continue;
        }
        push(out, n, value.as_bytes());
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    for v in h.get_all(&X_FORWARDED_FOR) {
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(client_ip.as_bytes());
    out.extend_from_slice(b"\r\nx-forwarded-proto: ");
    out.extend_from_slice(scheme.as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(host) = host {
        push(out, b"x-forwarded-host", host);
    }
    out.extend_from_slice(b"\r\n");
}

fn push(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The upstream's response head as the HTTP/2 client gets it.
#[derive(Debug, Default)]
pub(super) struct H2Head {
    pub(super) status: u16,
    pub(super) headers: HeaderMap,
    /// The values are copied into this one buffer and each header's value is a slice of it:
    /// one allocation per head instead of one per field.
    values: BytesMut,
}

/// Room for a typical response head's values.
const VALUES: usize = 512;

impl ResponseSink for H2Head {
    fn status(&mut self, status: u16, _reason: &str) {
        self.status = status;
        self.headers.clear();
        if self.values.capacity() < VALUES {
            self.values = BytesMut::with_capacity(VALUES);
        }
    }

    fn header(&mut self, name: &[u8], value: &[u8]) {
        // httparse checked both; a name or value `http` would still refuse is left out.
        let Ok(name) = HeaderName::from_bytes(name) else {
            return;
        };
        self.values.extend_from_slice(value);
        let value = self.values.split().freeze();
        if let Ok(value) = HeaderValue::from_maybe_shared(value) {
            self.headers.append(name, value);
        }
    }

    fn end(&mut self, _head: &ResponseHead) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::raw::{parse_response, ParsedResponse};

    #[test]
    fn the_upstream_sees_an_http1_request_with_one_cookie_line() {
        let req = Request::get("https://api.test/a?b=1")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-forwarded-host", "spoofed")
            .header("te", "trailers")
            .header("accept", "*/*")
            .body(())
            .unwrap();
        let mut out = Vec::new();
        write_upstream_head(&mut out, &req, "127.0.0.1", "https");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /a?b=1 HTTP/1.1\r\nhost: api.test\r\ncookie: a=1; b=2\r\naccept: */*\r\n\
             x-forwarded-for: 203.0.113.7, 127.0.0.1\r\nx-forwarded-proto: https\r\n\
             x-forwarded-host: api.test\r\n\r\n"
        );
    }

    #[test]
    fn the_client_gets_the_upstream_headers_without_hop_by_hop_ones() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, x-a\r\n\
            X-A: 1\r\nKeep-Alive: timeout=5\r\nServer: t\r\n\r\nok";
        let mut head = H2Head::default();
        let ParsedResponse::Head(_, parsed) = parse_response(raw, false, false, &mut head) else {
            panic!("not parsed");
        };
        assert_eq!(parsed.status, 200);
        assert_eq!(head.status, 200);
        let names: Vec<&str> = head.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["content-length", "server"]);
    }
}
