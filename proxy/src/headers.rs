//! Header rewriting between client and upstream: hop-by-hop headers out, forwarding in.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection and must not cross the proxy;
//! that includes every header the `Connection` header names. `X-Forwarded-*` tell the backend
//! who the client was. hyper re-frames bodies itself, so `Transfer-Encoding` and friends are
//! always dropped here and recomputed on the next hop.

use std::io::Write;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that never cross a proxy, whatever `Connection` says.
const HOP_COUNT: usize = 9;
static HOP_BY_HOP: [HeaderName; HOP_COUNT] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    // Only meaningful with `Upgrade: h2c`, which is never passed on.
    HeaderName::from_static("http2-settings"),
];

pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes hop-by-hop headers, including those listed in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names (plain comparisons, no hashing) finds what is there: most
    // requests carry none of these, and hashing ten names to remove nothing was a visible share
    // of a request's instructions (docs/PERFORMANCE.md).
    let mut present = [false; HOP_COUNT];
    let mut transfer_encoding = false;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
        } else if name == header::TRANSFER_ENCODING {
            transfer_encoding = true;
        }
    }
    // Names listed in Connection first (they are only known before Connection is removed).
    // The common case, `Connection: keep-alive` or `close`, allocates nothing.
    if present[0] {
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| connection_tokens(v.as_bytes()))
            .filter(|t| !is_connection_option(t))
            .filter_map(|n| HeaderName::from_bytes(n).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(name);
    }
    if transfer_encoding {
        headers.remove(header::TRANSFER_ENCODING);
    }
}

/// Whether a header never crosses the proxy by its name alone (the byte-level twin of
/// [`strip_hop_by_hop`], for the fast HTTP/1.1 path; `Transfer-Encoding` included, as the
/// body is re-framed on each hop).
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    // Most names have a length no hop-by-hop name has: one bit test, no comparison.
    name.len() < 32
        && HOP_BY_HOP_LENGTHS & (1 << name.len()) != 0
        && HOP_BY_HOP_NAMES
            .iter()
            .any(|h| h.len() == name.len() && h.eq_ignore_ascii_case(name))
}

/// Bit `n` is set when some hop-by-hop name is `n` bytes long.
const HOP_BY_HOP_LENGTHS: u32 = {
    let mut bits = 0u32;
    let mut i = 0;
    while i < HOP_BY_HOP_NAMES.len() {
        bits |= 1 << HOP_BY_HOP_NAMES[i].len();
        i += 1;
    }
    bits
};

/// [`HOP_BY_HOP`] and `Transfer-Encoding` as bytes: this runs for every header line on the
/// fast path, where turning each `HeaderName` back into a string was a visible cost.
static HOP_BY_HOP_NAMES: [&[u8]; HOP_COUNT + 1] = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailer",
    b"upgrade",
    b"http2-settings",
    b"transfer-encoding",
];

/// The tokens of one `Connection` header value (RFC 9110 §7.6.1): comma-separated, trimmed,
/// empty ones skipped. The one parser of `Connection` on the data path.
pub(crate) fn connection_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// `close` and `keep-alive` are connection options, not header names.
fn is_connection_option(token: &[u8]) -> bool {
    token.eq_ignore_ascii_case(b"close") || token.eq_ignore_ascii_case(b"keep-alive")
}

/// What the `Connection` header lines of one message say.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ConnectionOptions {
    /// `close`: the connection ends after this message.
    pub close: bool,
    /// `upgrade` is named (with an `Upgrade` header: a protocol switch is asked for).
    pub upgrade: bool,
    /// Some token names a header (which is then hop-by-hop too).
    pub names_headers: bool,
}

impl ConnectionOptions {
    /// Adds one `Connection` header value.
    pub(crate) fn add(&mut self, value: &[u8]) {
        for token in connection_tokens(value) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                self.upgrade |= token.eq_ignore_ascii_case(b"upgrade");
                self.names_headers = true;
            }
        }
    }

    /// What all the `Connection` lines of `headers` say.
    pub(crate) fn of(headers: &HeaderMap) -> ConnectionOptions {
        let mut options = ConnectionOptions::default();
        for v in headers.get_all(header::CONNECTION) {
            options.add(v.as_bytes());
        }
        options
    }
}

/// Whether a `Connection` header value lists `name` (so it is hop-by-hop too). `close` and
/// `keep-alive` are options, not names, and list nothing.
pub fn connection_lists(connection: &[u8], name: &[u8]) -> bool {
    connection_tokens(connection).any(|token| token.eq_ignore_ascii_case(name))
}

/// A `Content-Length` value: plain decimal digits (RFC 9110 §8.6), no sign, no spaces inside,
/// at most 19 of them (so it fits in a `u64`).
pub(crate) fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 {
        return None;
    }
    // At most 19 digits: below u64::MAX (20 digits), so no overflow.
    value.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// Adds `X-Forwarded-For` (appending the client) and sets `-Proto` and `-Host` (the `Host`
/// the request was routed by), replacing what the client sent.
pub fn add_forwarding(headers: &mut HeaderMap, client: IpAddr, proto: &'static str) {
    let mut buf = Vec::with_capacity(64);
    // Join every existing X-Forwarded-For line, then append this hop's client.
    for v in headers.get_all(&X_FORWARDED_FOR) {
        buf.extend_from_slice(v.as_bytes());
        buf.extend_from_slice(b", ");
    }
    let _ = write!(buf, "{client}");
    // Hand the buffer over instead of copying it into a second allocation.
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(buf)) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    // Set, not kept (SPEC §4): a client's own value would let it claim any host.
    match headers.get(header::HOST).cloned() {
        Some(host) => headers.insert(X_FORWARDED_HOST.clone(), host),
        None => headers.remove(&X_FORWARDED_HOST),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_lengths_are_plain_decimal_digits_that_fit() {
        assert_eq!(content_length(b"0"), Some(0));
        assert_eq!(content_length(b"0042"), Some(42));
        assert_eq!(
            content_length(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        for bad in [
            &b""[..],
            b"18446744073709551615",
            b"+1",
            b"-1",
            b"1 2",
            b"1,2",
            b"0x1",
        ] {
            assert_eq!(
                content_length(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn connection_listed_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn byte_names_are_the_header_names() {
        let names: Vec<&[u8]> = HOP_BY_HOP
            .iter()
            .chain([&header::TRANSFER_ENCODING])
            .map(|h| h.as_str().as_bytes())
            .collect();
        assert_eq!(names, HOP_BY_HOP_NAMES);
        assert!(is_hop_by_hop(b"Keep-Alive") && !is_hop_by_hop(b"keep-alivex"));
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
        h.append("x-forwarded-for", HeaderValue::from_static("198.51.100.1"));
        h.insert(header::HOST, HeaderValue::from_static("api.example.com"));
        h.insert(
            "x-forwarded-host",
            HeaderValue::from_static("spoofed.example"),
        );
        add_forwarding(&mut h, "127.0.0.1".parse().unwrap(), "http");
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 198.51.100.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
    }
}
