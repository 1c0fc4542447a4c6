//! The control API under `/api/v1` (SPEC §7): reads from published snapshots, mutations as
//! commands to the controller.
//!
//! Reads never wait on the controller: they combine the controller's published [`View`],
//! the live routing table and the telemetry windows. Mutations are parsed and checked here
//! (shape, types, ranges — bad input changes nothing and says which field), then sent to the
//! controller, which answers only after the change is applied *and* persisted.
//!
//! Every answer is JSON; every refusal is a [`Refusal`] with the one error shape
//! `{"error": ..., "field": ...}` (`refusal.rs` picks the status). Mutations must declare
//! `Content-Type: application/json` (415 otherwise), so a cross-site form or `text/plain`
//! post from a browser never reaches the controller. The contract is written down in
//! `control/openapi.json`, served at `GET /api/v1/openapi.json` and checked against the live
//! binary by schemathesis in CI.

mod body;
mod document;

use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::admin::{json_response, refusal_response, AdminResponse, AdminState};
use crate::commands::Command;
use crate::controller::View;
use crate::events;
use crate::refusal::Refusal;
use crate::rollout::RolloutAction;
pub use body::{parse_command, CommandKind, MAX_WEIGHT};
pub use document::{service_doc, ServiceDoc};

/// Largest JSON body the API reads.
const MAX_BODY: usize = 64 * 1024;

/// The OpenAPI 3 document describing this API, kept in the repo next to this file.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// One endpoint of the API, named by its path (the method is checked separately, so a
/// wrong method is a 405 that lists the right one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint<'a> {
    Status,
    OpenApi,
    Services,
    Service(&'a str),
    History(&'a str),
    Events,
    Fleet,
    Weights(&'a str),
    Switch(&'a str),
    Rollback(&'a str),
    Undo(&'a str),
    Rollout(&'a str, &'a str),
}

impl<'a> Endpoint<'a> {
    fn parse(segments: &[&'a str]) -> Option<Endpoint<'a>> {
        Some(match segments {
            ["status"] => Endpoint::Status,
            ["openapi.json"] => Endpoint::OpenApi,
            ["services"] => Endpoint::Services,
            ["services", svc] => Endpoint::Service(svc),
            ["services", svc, "history"] => Endpoint::History(svc),
            ["events"] => Endpoint::Events,
            ["fleet"] => Endpoint::Fleet,
            ["services", svc, "weights"] => Endpoint::Weights(svc),
            ["services", svc, "switch"] => Endpoint::Switch(svc),
            ["services", svc, "rollback"] => Endpoint::Rollback(svc),
            ["services", svc, "undo"] => Endpoint::Undo(svc),
            ["services", svc, "rollout", action] => Endpoint::Rollout(svc, action),
            _ => return None,
        })
    }

    /// The one method this endpoint answers.
    fn method(self) -> Method {
        match self {
            Endpoint::Status
            | Endpoint::OpenApi
            | Endpoint::Services
            | Endpoint::Service(_)
            | Endpoint::History(_)
            | Endpoint::Events
            | Endpoint::Fleet => Method::GET,
            Endpoint::Weights(_) => Method::PUT,
            Endpoint::Switch(_)
            | Endpoint::Rollback(_)
            | Endpoint::Undo(_)
            | Endpoint::Rollout(..) => Method::POST,
        }
    }
}

/// Routes `/api/v1/...`; `path` is what follows `/api/v1`.
pub async fn route(state: &AdminState, req: http::Request<Incoming>, path: &str) -> AdminResponse {
    match answer(state, req, path).await {
        Ok(response) => response,
        Err(refusal) => refusal_response(&refusal),
    }
}

async fn answer(
    state: &AdminState,
    req: http::Request<Incoming>,
    path: &str,
) -> Result<AdminResponse, Refusal> {
    let method = req.method().clone();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let endpoint = Endpoint::parse(&segments)
        .ok_or_else(|| Refusal::not_found(format!("no such endpoint: /api/v1{path}"), None))?;
    let allowed = endpoint.method();
    if method != allowed {
        return Err(Refusal::MethodNotAllowed {
            message: format!("{method} is not allowed on /api/v1{path}; use {allowed}"),
            allow: allowed,
        });
    }
    let query = req.uri().query().unwrap_or("").to_string();
    let ok = |body: &Value| Ok(json_response(StatusCode::OK, body));
    match endpoint {
        Endpoint::Status => ok(&state.status.load().to_json()),
        Endpoint::OpenApi => {
            let mut response =
                http::Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(response)
        }
        Endpoint::Services => {
            #[derive(serde::Serialize)]
            struct List<'a> {
                services: Vec<ServiceDoc<'a>>,
            }
            let view = state.readers.view.load();
            let telemetry = state.readers.telemetry.load();
            let services = view
                .services
                .iter()
                .map(|(name, sv)| service_doc(name, &view, sv, &telemetry))
                .collect();
            Ok(json_response(StatusCode::OK, &List { services }))
        }
        Endpoint::Service(svc) => service_response(&state.readers.view.load(), state, svc),
        Endpoint::History(svc) => {
            let before =
                query_u64(&query, "before").map_err(|e| Refusal::bad(e, Some("before")))?;
            let limit = query_u64(&query, "limit").map_err(|e| Refusal::bad(e, Some("limit")))?;
            if limit == Some(0) {
                return Err(Refusal::bad("limit must be at least 1", Some("limit")));
            }
            let view = state.readers.view.load();
            let sv = view
                .services
                .get(svc)
                .ok_or_else(|| Refusal::unknown_service(svc))?;
            ok(&document::history_json(sv, before, limit))
        }
        Endpoint::Events => {
            let since = query_u64(&query, "since")
                .map_err(|e| Refusal::bad(e, Some("since")))?
                .unwrap_or(0);
            let all = state.readers.events.load();
            ok(&json!({ "events": events::since(&all, since) }))
        }
        Endpoint::Fleet => match &state.fleet {
            Some(etcd) => ok(&document::fleet_json(&etcd.view())),
            None => Err(Refusal::not_found(
                "this replica is not in a fleet: the config has no cluster: block",
                None,
            )),
        },
        Endpoint::Weights(svc) => mutate(state, req, svc, CommandKind::Weights).await,
        Endpoint::Switch(svc) => mutate(state, req, svc, CommandKind::Switch).await,
        Endpoint::Rollback(svc) => mutate(state, req, svc, CommandKind::Rollback).await,
        Endpoint::Undo(svc) => mutate(state, req, svc, CommandKind::Undo).await,
        Endpoint::Rollout(svc, action) => {
            let action = RolloutAction::parse(action).ok_or_else(|| {
                Refusal::not_found(
                    format!(
                        "no rollout action {action:?} (use start, pause, resume, promote or abort)"
                    ),
                    None,
                )
            })?;
            mutate(state, req, svc, CommandKind::Rollout(action)).await
        }
    }
}

/// 200 with the service's document (`GET /services/{svc}`, and every mutation's answer).
fn service_response(view: &View, state: &AdminState, svc: &str) -> Result<AdminResponse, Refusal> {
    let sv = view
        .services
        .get(svc)
        .ok_or_else(|| Refusal::unknown_service(svc))?;
    let doc = service_doc(svc, view, sv, &state.readers.telemetry.load());
    Ok(json_response(StatusCode::OK, &doc))
}

/// Authorizes, checks and parses the body, sends the command, answers with the service.
///
/// Order: token (401, before anything is read), content type (415), body size (413),
/// service (404), body shape (400), then the controller's own checks (404 unknown version
/// or revision, 409 rollout state, 503 not persisted). Nothing changes unless every check
/// passed.
async fn mutate(
    state: &AdminState,
    req: http::Request<Incoming>,
    svc: &str,
    kind: CommandKind,
) -> Result<AdminResponse, Refusal> {
    state
        .auth
        .check(req.headers())
        .map_err(Refusal::Unauthorized)?;
    json_content_type(req.headers())?;
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(Refusal::TooLarge(format!(
                "the request body is larger than {MAX_BODY} bytes"
            )))
        }
        Err(e) => {
            return Err(Refusal::bad(
                format!("cannot read the request body: {e}"),
                None,
            ))
        }
    };
    if !state.readers.view.load().services.contains_key(svc) {
        return Err(Refusal::unknown_service(svc));
    }
    let command: Command = parse_command(kind, &body)?;
    let view = state.controller.command(svc, command).await?;
    service_response(&view, state, svc)
}

/// Mutations must say `Content-Type: application/json` (parameters such as `charset`
/// allowed). Browsers send a cross-site request without a preflight only as a form,
/// `text/plain`, or with no body at all — none of which passes.
fn json_content_type(headers: &http::HeaderMap) -> Result<(), Refusal> {
    let given = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = given.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(Refusal::UnsupportedMediaType(format!(
            "changes must be sent as Content-Type: application/json (got {})",
            if given.is_empty() {
                "none".to_string()
            } else {
                format!("{given:?}")
            }
        )))
    }
}

/// A query parameter that must be an `int64` from 0 (as the OpenAPI document says).
fn query_u64(query: &str, key: &str) -> Result<Option<u64>, String> {
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == key {
            return v
                .parse::<u64>()
                .ok()
                .filter(|n| i64::try_from(*n).is_ok())
                .map(Some)
                .ok_or_else(|| {
                    format!(
                        "{key} must be a whole number from 0 to {}, not {v:?}",
                        i64::MAX
                    )
                });
        }
    }
    Ok(None)
}
