//! Every response the proxy makes itself, in one enum with one place that maps it to a
//! status, a short plain-text body and a failure reason (DESIGN §5).

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::body::ResponseBody;
use crate::stats::FailureReason;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyError {
    /// No service matches the request's host and path.
    NoRoute,
    /// Every backend of the chosen version is down. The body is precomputed by the table.
    NoHealthyBackend(Bytes),
    /// No backend could be connected to (after the retry).
    Connect,
    /// The upstream did not send a response head within the request timeout.
    Timeout,
    /// The upstream broke the connection before the response head, or answered garbage.
    Reset,
    /// The request is malformed or ambiguous (e.g. request smuggling attempts).
    BadRequest(&'static str),
    /// The request body is larger than `limits.max_request_body`.
    PayloadTooLarge,
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoHealthyBackend(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect | ProxyError::Reset => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// How the request counts in the metrics, if it counts as failed (SPEC §5).
    pub fn failure(&self) -> Option<FailureReason> {
        match self {
            ProxyError::NoHealthyBackend(_) | ProxyError::Connect => Some(FailureReason::Connect),
            ProxyError::Timeout => Some(FailureReason::Timeout),
            ProxyError::Reset => Some(FailureReason::Reset),
            ProxyError::NoRoute | ProxyError::BadRequest(_) | ProxyError::PayloadTooLarge => None,
        }
    }

    pub(crate) fn body(&self) -> Bytes {
        match self {
            ProxyError::NoRoute => Bytes::from_static(b"no route for this host and path\n"),
            ProxyError::NoHealthyBackend(text) => text.clone(),
            ProxyError::Connect => Bytes::from_static(b"upstream connect failed\n"),
            ProxyError::Timeout => Bytes::from_static(b"upstream timed out\n"),
            ProxyError::Reset => Bytes::from_static(b"upstream connection reset\n"),
            ProxyError::BadRequest(why) => Bytes::from_static(why.as_bytes()),
            ProxyError::PayloadTooLarge => {
                Bytes::from_static(b"request body larger than the limit\n")
            }
        }
    }

    pub fn into_response(self) -> Response<ResponseBody> {
        let mut response = Response::new(ResponseBody::text(self.body()));
        *response.status_mut() = self.status();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if matches!(
            self,
            ProxyError::BadRequest(_) | ProxyError::PayloadTooLarge
        ) {
            // The connection's framing can no longer be trusted (or an unread body follows).
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
