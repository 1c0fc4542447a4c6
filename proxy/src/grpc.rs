//! gRPC outcomes: a gRPC call that failed on the server still answers HTTP 200.
//!
//! A gRPC response carries its real outcome in `grpc-status`: in the trailers, or — for a
//! call that fails before any message ("trailers-only") — in the response headers. SPEC §5
//! counts the server-side codes as the backend's failures (reason `grpc`); client-side codes
//! (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, …) are the caller's, as 4xx are.

use http::header::{self, HeaderMap};

/// Whether a response is gRPC (`content-type: application/grpc`, `application/grpc+proto`,
/// `application/grpc-web…`).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The `grpc-status` code in `headers` (response headers or trailers), if any.
pub(crate) fn status(headers: &HeaderMap) -> Option<u32> {
    let v = headers.get("grpc-status")?;
    std::str::from_utf8(v.as_bytes()).ok()?.trim().parse().ok()
}

/// UNKNOWN (2), DEADLINE_EXCEEDED (4), UNIMPLEMENTED (12), INTERNAL (13), UNAVAILABLE (14),
/// DATA_LOSS (15): the server's fault (SPEC §5).
pub(crate) fn is_server_fault(code: u32) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_side_codes_are_faults_and_client_side_ones_are_not() {
        let faults: Vec<u32> = (0..=16).filter(|&c| is_server_fault(c)).collect();
        assert_eq!(faults, [2, 4, 12, 13, 14, 15]);
    }

    #[test]
    fn status_and_content_type_are_read_from_headers() {
        let mut h = HeaderMap::new();
        assert!(!is_grpc(&h) && status(&h).is_none());
        h.insert(
            header::CONTENT_TYPE,
            "application/grpc+proto".parse().unwrap(),
        );
        h.insert("grpc-status", "14".parse().unwrap());
        assert!(is_grpc(&h));
        assert_eq!(status(&h), Some(14));
    }
}
