//! Every way the admin API or the controller says no, and the one place that maps each to an
//! HTTP status (SPEC §7 error shape `{"error": "...", "field": "..."}`).
//!
//! Commands return a [`Refusal`]; nothing in the control plane picks a status code itself.
//! A refusal always means *nothing changed*.

use http::{Method, StatusCode};

#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Malformed or out-of-range input; `field` names the culprit.
    BadInput {
        message: String,
        field: Option<String>,
    },
    /// Missing or wrong bearer token.
    Unauthorized(String),
    /// Unknown endpoint, service, version or revision.
    NotFound {
        message: String,
        field: Option<String>,
    },
    /// The endpoint exists but answers another method.
    MethodNotAllowed { message: String, allow: Method },
    /// The rollout's state forbids it (or it would send traffic to a rolled-back release).
    Conflict(String),
    /// The body is larger than the API reads.
    TooLarge(String),
    /// A mutation whose body is not declared `application/json` (a cross-site form post).
    UnsupportedMediaType(String),
    /// A `Host` a token-less admin does not answer (DNS rebinding).
    MisdirectedHost(String),
    /// The change could not be persisted (state directory, etcd) or the controller is
    /// restarting; it was not applied.
    Unavailable(String),
}

impl Refusal {
    pub fn bad(message: impl Into<String>, field: Option<&str>) -> Refusal {
        Refusal::BadInput {
            message: message.into(),
            field: field.map(str::to_string),
        }
    }

    pub fn not_found(message: impl Into<String>, field: Option<&str>) -> Refusal {
        Refusal::NotFound {
            message: message.into(),
            field: field.map(str::to_string),
        }
    }

    pub fn conflict(message: impl Into<String>) -> Refusal {
        Refusal::Conflict(message.into())
    }

    pub fn unknown_service(service: &str) -> Refusal {
        Refusal::not_found(format!("no service named {service:?}"), None)
    }

    /// The status code of SPEC §7 (and §15/§16) for this refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::BadInput { .. } => StatusCode::BAD_REQUEST,
            Refusal::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Refusal::NotFound { .. } => StatusCode::NOT_FOUND,
            Refusal::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::Conflict(_) => StatusCode::CONFLICT,
            Refusal::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Refusal::MisdirectedHost(_) => StatusCode::MISDIRECTED_REQUEST,
            Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Refusal::BadInput { message, .. }
            | Refusal::NotFound { message, .. }
            | Refusal::MethodNotAllowed { message, .. } => message,
            Refusal::Unauthorized(m)
            | Refusal::Conflict(m)
            | Refusal::TooLarge(m)
            | Refusal::UnsupportedMediaType(m)
            | Refusal::MisdirectedHost(m)
            | Refusal::Unavailable(m) => m,
        }
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            Refusal::BadInput { field, .. } | Refusal::NotFound { field, .. } => field.as_deref(),
            _ => None,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}
