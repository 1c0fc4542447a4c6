//! Every response the proxy makes itself, in one enum with one place that maps it to a
//! status and a short plain-text body (DESIGN §5). Whether it counts as the backend's failure
//! is the one failure rule's call (`request::failure`); each transport only frames it.

use bytes::Bytes;
use http::StatusCode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyError {
    /// No service matches the request's host and path.
    NoRoute,
    /// Every backend of the chosen version is down. The body is precomputed by the table.
    NoHealthyBackend(Bytes),
    /// No backend could be connected to (after the retry).
    Connect,
    /// Every connection the backend may have is busy and none came free within the queue
    /// timeout, or the queue of waiting requests is full (after the retry).
    Busy,
    /// The upstream did not send a response head within the request timeout.
    Timeout,
    /// The upstream broke the connection before the response head, or answered garbage.
    Reset,
    /// The request is malformed or ambiguous (e.g. request smuggling attempts).
    BadRequest(&'static str),
    /// The request body is larger than `limits.max_request_body`.
    PayloadTooLarge,
    /// The client stopped sending its request body for `limits.client_body_timeout`.
    BodyTimeout,
    /// A method the edge refuses (TRACE, unless `limits.trace: forward`).
    MethodNotAllowed,
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoHealthyBackend(_) | ProxyError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect | ProxyError::Reset => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// Whether the backend's side of the exchange went wrong (the request was routed and
    /// sent, or was to be): then the time it took is the backend's latency.
    pub(crate) fn is_upstream(&self) -> bool {
        matches!(
            self,
            ProxyError::NoHealthyBackend(_)
                | ProxyError::Connect
                | ProxyError::Busy
                | ProxyError::Timeout
                | ProxyError::Reset
        )
    }

    /// Whether the client connection must close after this answer: its framing can no longer
    /// be trusted, or an unread request body follows.
    pub(crate) fn closes(&self) -> bool {
        matches!(
            self,
            ProxyError::BadRequest(_) | ProxyError::PayloadTooLarge | ProxyError::BodyTimeout
        )
    }

    pub(crate) fn body(&self) -> Bytes {
        match self {
            ProxyError::NoRoute => Bytes::from_static(b"no route for this host and path\n"),
            ProxyError::NoHealthyBackend(text) => text.clone(),
            ProxyError::Connect => Bytes::from_static(b"upstream connect failed\n"),
            ProxyError::Busy => {
                Bytes::from_static(b"upstream busy: no connection to the backend came free\n")
            }
            ProxyError::Timeout => Bytes::from_static(b"upstream timed out\n"),
            ProxyError::Reset => Bytes::from_static(b"upstream connection reset\n"),
            ProxyError::BadRequest(why) => Bytes::from_static(why.as_bytes()),
            ProxyError::PayloadTooLarge => {
                Bytes::from_static(b"request body larger than the limit\n")
            }
            ProxyError::BodyTimeout => Bytes::from_static(b"request body timed out\n"),
            ProxyError::MethodNotAllowed => {
                Bytes::from_static(b"method not allowed by this proxy\n")
            }
        }
    }
}
