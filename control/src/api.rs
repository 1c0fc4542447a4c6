//! The control API under `/api/v1` (SPEC §7): reads from published snapshots, mutations as
//! commands to the controller.
//!
//! Reads never wait on the controller: they combine the controller's published [`View`],
//! the live routing table and the telemetry windows. Mutations are parsed and checked here
//! (shape, types, ranges — bad input changes nothing and says which field), then sent to the
//! controller, which answers only after the change is applied *and* persisted.
//!
//! Every answer is JSON; every refusal has the one error shape `{"error": ..., "field": ...}`
//! with 400 (bad input), 401 (token), 404 (unknown endpoint, service, version or revision),
//! 405 (wrong method, with `Allow`), 409 (the rollout state forbids it) or 413 (body too
//! large). The contract is written down in `control/openapi.json`, served at
//! `GET /api/v1/openapi.json` and checked against the live binary by schemathesis in CI.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};
use switchyard_proxy::RoutingTable;

use crate::admin::{error_response, json_response, AdminResponse, AdminState};
use crate::controller::{ApiError, Command, ServiceView, View};
use crate::events;
use crate::rollout::{Phase, RolloutAction};
use crate::telemetry::Telemetry;

/// Largest JSON body the API reads.
const MAX_BODY: usize = 64 * 1024;

/// Longest rollback reason kept in history (it is shown in tables and events).
const MAX_REASON: usize = 1024;

/// Largest weight one version may be given (shares are weight / sum of weights).
pub const MAX_WEIGHT: u32 = 1_000_000;

/// The OpenAPI 3 document describing this API, kept in the repo next to this file.
pub const OPENAPI: &str = include_str!("../openapi.json");

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
            | Endpoint::Events => Method::GET,
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
    let method = req.method().clone();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let Some(endpoint) = Endpoint::parse(&segments) else {
        return error_response(
            StatusCode::NOT_FOUND,
            &format!("no such endpoint: /api/v1{path}"),
            None,
        );
    };
    let allowed = endpoint.method();
    if method != allowed {
        let mut response = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{method} is not allowed on /api/v1{path}; use {allowed}"),
            None,
        );
        response.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_str(allowed.as_str()).expect("a method is a header value"),
        );
        return response;
    }
    let query = req.uri().query().unwrap_or("").to_string();
    match endpoint {
        Endpoint::Status => json_response(StatusCode::OK, &state.status.load().to_json()),
        Endpoint::OpenApi => {
            let mut response =
                http::Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Endpoint::Services => {
            let view = state.readers.view.load();
            let table = state.table.load();
            let telemetry = state.readers.telemetry.lock().ok();
            let services: Vec<Value> = view
                .services
                .iter()
                .map(|(name, sv)| service_json(name, &view, sv, &table, telemetry.as_deref()))
                .collect();
            json_response(StatusCode::OK, &json!({ "services": services }))
        }
        Endpoint::Service(svc) => with_service(state, svc, |name, view, sv, table, t| {
            json_response(StatusCode::OK, &service_json(name, view, sv, table, t))
        }),
        Endpoint::History(svc) => with_service(state, svc, |_, _, sv, _, _| {
            json_response(StatusCode::OK, &json!({ "revisions": &*sv.history }))
        }),
        Endpoint::Events => {
            let since = match query_u64(&query, "since") {
                Ok(s) => s.unwrap_or(0),
                Err(e) => return error_response(StatusCode::BAD_REQUEST, &e, Some("since")),
            };
            let all = state.readers.events.load();
            json_response(
                StatusCode::OK,
                &json!({ "events": events::since(&all, since) }),
            )
        }
        Endpoint::Weights(svc) => {
            mutate(state, req, svc, |body| {
                parse_command(CommandKind::Weights, body)
            })
            .await
        }
        Endpoint::Switch(svc) => {
            mutate(state, req, svc, |body| {
                parse_command(CommandKind::Switch, body)
            })
            .await
        }
        Endpoint::Rollback(svc) => {
            mutate(state, req, svc, |body| {
                parse_command(CommandKind::Rollback, body)
            })
            .await
        }
        Endpoint::Undo(svc) => {
            mutate(state, req, svc, |body| {
                parse_command(CommandKind::Undo, body)
            })
            .await
        }
        Endpoint::Rollout(svc, action) => match RolloutAction::parse(action) {
            Some(action) => {
                mutate(state, req, svc, |body| {
                    parse_command(CommandKind::Rollout(action), body)
                })
                .await
            }
            None => error_response(
                StatusCode::NOT_FOUND,
                &format!(
                    "no rollout action {action:?} (use start, pause, resume, promote or abort)"
                ),
                None,
            ),
        },
    }
}

fn with_service(
    state: &AdminState,
    svc: &str,
    f: impl FnOnce(&str, &View, &ServiceView, &RoutingTable, Option<&Telemetry>) -> AdminResponse,
) -> AdminResponse {
    let view = state.readers.view.load();
    let Some(sv) = view.services.get(svc) else {
        return error_response(
            StatusCode::NOT_FOUND,
            &format!("no service named {svc:?}"),
            None,
        );
    };
    let table = state.table.load();
    let telemetry = state.readers.telemetry.lock().ok();
    f(svc, &view, sv, &table, telemetry.as_deref())
}

/// Which mutation a request body is for.
#[derive(Debug, Clone, Copy)]
pub enum CommandKind {
    Weights,
    Switch,
    Rollback,
    Undo,
    Rollout(RolloutAction),
}

/// Parses and checks a mutation's JSON body into a controller command. Pure, so the fuzz
/// target `api_body` can hammer it: any bytes give a command or a 400 naming the field.
pub fn parse_command(kind: CommandKind, body: &[u8]) -> Result<Command, ApiError> {
    match kind {
        CommandKind::Weights => parse_weights(body).map(Command::SetWeights),
        CommandKind::Switch => {
            let mut b = parse_object(body, &["to"], false, r#"{"to":"green"}"#)?;
            match b.remove("to") {
                Some(Value::String(to)) if !to.is_empty() => Ok(Command::Switch { to }),
                Some(other) => Err(bad(
                    format!("\"to\" must be the name of a version, not {other}"),
                    Some("to"),
                )),
                None => Err(bad(
                    "\"to\" is required: the version to send 100% of traffic to",
                    Some("to"),
                )),
            }
        }
        CommandKind::Rollback => {
            let mut b = parse_object(body, &["reason"], true, r#"{"reason":"..."}"#)?;
            let reason = match b.remove("reason") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.chars().count() <= MAX_REASON => Some(s),
                Some(Value::String(_)) => {
                    return Err(bad(
                        format!("\"reason\" may be at most {MAX_REASON} characters"),
                        Some("reason"),
                    ))
                }
                Some(other) => {
                    return Err(bad(
                        format!("\"reason\" must be a string, not {other}"),
                        Some("reason"),
                    ))
                }
            };
            Ok(Command::Rollback { reason })
        }
        CommandKind::Undo => {
            let mut b = parse_object(body, &["to_revision"], true, r#"{"to_revision":3}"#)?;
            let to_revision = match b.remove("to_revision") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) if whole(&n).is_some_and(|n| n >= 1) => whole(&n),
                Some(other) => {
                    return Err(bad(
                        format!(
                        "\"to_revision\" must be a revision id (a whole number from 1), not {other}"
                    ),
                        Some("to_revision"),
                    ))
                }
            };
            Ok(Command::Undo { to_revision })
        }
        CommandKind::Rollout(action) => {
            parse_object(body, &[], true, "{}")?;
            Ok(Command::Rollout(action))
        }
    }
}

/// Authorizes, reads and parses the body, sends the command, answers with the service.
///
/// Order: token (401, before anything is read), body size (413), service (404), body shape
/// (400), then the controller's own checks (404 unknown version or revision, 409 rollout
/// state). Nothing changes unless every check passed and the change was persisted.
async fn mutate(
    state: &AdminState,
    req: http::Request<Incoming>,
    svc: &str,
    parse: impl FnOnce(&[u8]) -> Result<Command, ApiError>,
) -> AdminResponse {
    if let Err(e) = state.auth.check(req.headers()) {
        let mut response = error_response(StatusCode::UNAUTHORIZED, &e, None);
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"switchyard\""),
        );
        return response;
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the request body is larger than {MAX_BODY} bytes"),
                None,
            )
        }
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the request body: {e}"),
                None,
            )
        }
    };
    if !state.readers.view.load().services.contains_key(svc) {
        return error_response(
            StatusCode::NOT_FOUND,
            &format!("no service named {svc:?}"),
            None,
        );
    }
    let command = match parse(&body) {
        Ok(c) => c,
        Err(e) => return error_response(e.status, &e.message, e.field.as_deref()),
    };
    match state.controller.command(svc, command).await {
        Ok(_) => with_service(state, svc, |name, view, sv, table, t| {
            json_response(StatusCode::OK, &service_json(name, view, sv, table, t))
        }),
        Err(e) => error_response(e.status, &e.message, e.field.as_deref()),
    }
}

fn bad(message: impl Into<String>, field: Option<&str>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message, field)
}

/// Parses a JSON object body whose keys must be among `allowed` (an unknown key is named in
/// `field`). An empty body (no bytes at all) is an empty object when `empty_ok`; whitespace
/// alone is not JSON. `example` goes into messages.
fn parse_object(
    body: &[u8],
    allowed: &[&str],
    empty_ok: bool,
    example: &str,
) -> Result<Map<String, Value>, ApiError> {
    if !empty_ok && body.is_empty() {
        return Err(bad(
            format!("a JSON body is required, e.g. {example}"),
            None,
        ));
    }
    let object = json_object(body, example)?;
    if let Some(unknown) = object.keys().find(|k| !allowed.contains(&k.as_str())) {
        let expected = if allowed.is_empty() {
            "this endpoint takes no fields".to_string()
        } else {
            format!("expected {}", allowed.join(", "))
        };
        return Err(bad(
            format!("unknown field {unknown:?} ({expected})"),
            Some(unknown),
        ));
    }
    Ok(object)
}

/// The body as a JSON object; an empty body is an empty object.
fn json_object(body: &[u8], example: &str) -> Result<Map<String, Value>, ApiError> {
    if body.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(other) => Err(bad(
            format!("the body must be a JSON object like {example}, not {other}"),
            None,
        )),
        Err(e) => Err(bad(format!("invalid JSON body: {e}"), None)),
    }
}

/// `{"blue": 90, "green": "10%"}` → weights; every value checked with its field named.
/// Versions not named keep their weight; naming an unknown version is the controller's 404.
fn parse_weights(body: &[u8]) -> Result<BTreeMap<String, u32>, ApiError> {
    const EXAMPLE: &str = r#"{"blue":90,"green":10}"#;
    // Every key is a version name: the controller answers 404 for one it does not know.
    let raw = json_object(body, EXAMPLE)?;
    if raw.is_empty() {
        return Err(bad(
            format!("give at least one version's weight, e.g. {EXAMPLE}"),
            None,
        ));
    }
    raw.into_iter()
        .map(|(version, value)| {
            let weight = match &value {
                Value::Number(n) => whole(n).and_then(|n| u32::try_from(n).ok()),
                Value::String(s) => percentage(s),
                _ => None,
            };
            match weight {
                Some(w) if w <= MAX_WEIGHT => Ok((version, w)),
                _ => Err(bad(
                    format!(
                        "weight of {version:?} must be a whole number from 0 to {MAX_WEIGHT} \
                         or a percentage like \"10%\", not {value}"
                    ),
                    Some(&version),
                )),
            }
        })
        .collect()
}

/// `"10%"` → 10: a whole percentage from 0 to 100, spelled exactly as the OpenAPI document's
/// pattern says (no spaces, signs or leading zeros).
fn percentage(s: &str) -> Option<u32> {
    let digits = s.strip_suffix('%')?;
    let canonical = !digits.is_empty()
        && digits.len() <= 3
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    digits.parse().ok().filter(|&n| canonical && n <= 100)
}

/// A JSON number that is a non-negative whole number, also when written `3.0` or `1e30`
/// (JSON Schema's `integer` admits those spellings, so clients generated from the OpenAPI
/// document may send them). Beyond `u64` it saturates: still out of every range we accept.
fn whole(n: &serde_json::Number) -> Option<u64> {
    n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0)
            .map(|f| f as u64)
    })
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

/// The service document of SPEC §7.
pub fn service_json(
    name: &str,
    view: &View,
    sv: &ServiceView,
    table: &RoutingTable,
    telemetry: Option<&Telemetry>,
) -> Value {
    let route = table.service(name);
    let versions: Vec<Value> = route
        .map(|route| {
            route
                .versions
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let live = telemetry.map(|t| t.live(name, v)).unwrap_or_default();
                    let history = telemetry.map(|t| t.points(name, v)).unwrap_or_default();
                    json!({
                        "name": &*v.name,
                        "release": &*v.release,
                        "weight": round2(route.share_percent(i)),
                        "rolled_back": v.rolled_back,
                        "backends": v.backends.iter().map(|b| json!({
                            "address": b.address.to_string(),
                            "healthy": b.is_healthy(),
                        })).collect::<Vec<_>>(),
                        "live": live,
                        "series": history,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let rollout = view
        .config
        .service(name)
        .and_then(|cfg| cfg.rollout.as_ref())
        .map(|cfg| {
            let record = sv.rollout.as_ref();
            json!({
                "state": record.map_or(Phase::Idle, |r| r.phase).as_str(),
                "step": record.map_or(0, |r| if r.phase == Phase::Idle { 0 } else { r.step + 1 }),
                "steps": cfg.steps.len(),
                "stable": record.map_or(cfg.stable.as_str(), |r| r.stable.as_str()),
                "canary": record.map_or(cfg.canary.as_str(), |r| r.canary.as_str()),
                "release": record.map(|r| r.canary_release.as_str()),
                "failed_checks": record.map_or(0, |r| r.failed_checks),
                "threshold": sv.threshold,
                "awaiting_gate": record.is_some_and(|r| r.awaiting_gate),
                "reason": record.and_then(|r| r.reason.as_deref()),
                "started_at": record.map(|r| r.started_at.as_str()),
                "finished_at": record.and_then(|r| r.finished_at.as_deref()),
                "last_analysis": sv.last_analysis,
            })
        });
    json!({
        "name": name,
        "revision": sv.revision,
        "versions": versions,
        "rollout": rollout,
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzz target `api_body`, in miniature: mutated bodies never panic the parser, and
    /// every refusal is a 400 that says something.
    #[test]
    fn mutated_bodies_give_a_command_or_a_400() {
        let seeds: [&[u8]; 5] = [
            br#"{"blue":90,"green":"10%"}"#,
            br#"{"to":"green"}"#,
            br#"{"reason":"bad canary"}"#,
            br#"{"to_revision":3}"#,
            b"{}",
        ];
        let kinds = [
            CommandKind::Weights,
            CommandKind::Switch,
            CommandKind::Rollback,
            CommandKind::Undo,
            CommandKind::Rollout(RolloutAction::Pause),
        ];
        let mut m = crate::mutate::Mutator::new(0x5eed);
        for i in 0..20_000 {
            let body = m.mutate(seeds[i % seeds.len()]);
            match parse_command(kinds[(i / seeds.len()) % kinds.len()], &body) {
                Ok(Command::SetWeights(w)) => {
                    assert!(!w.is_empty() && w.values().all(|&v| v <= 1_000_000))
                }
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.status, StatusCode::BAD_REQUEST, "{e:?}");
                    assert!(!e.message.is_empty());
                }
            }
        }
    }

    #[test]
    fn percentages_are_spelled_like_the_openapi_pattern() {
        assert_eq!(percentage("10%"), Some(10));
        assert_eq!(percentage("0%"), Some(0));
        assert_eq!(percentage("100%"), Some(100));
        for bad in ["101%", "010%", " 10%", "10 %", "+10%", "%", "10", "1000%"] {
            assert_eq!(percentage(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn whole_numbers_may_be_written_as_floats() {
        let n = |s: &str| serde_json::from_str::<serde_json::Number>(s).unwrap();
        assert_eq!(whole(&n("3")), Some(3));
        assert_eq!(whole(&n("3.0")), Some(3));
        assert_eq!(whole(&n("1e30")), Some(u64::MAX));
        assert_eq!(whole(&n("3.5")), None);
        assert_eq!(whole(&n("-1")), None);
    }

    #[test]
    fn bodies_name_the_field_at_fault() {
        let e = parse_object(br#"{"to":"a","x":1}"#, &["to"], false, "{}").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("x"));
        assert!(parse_object(b"", &["to"], false, "{}").is_err());
        assert!(parse_object(b"", &[], true, "{}").unwrap().is_empty());
        assert!(parse_object(b"\n", &[], true, "{}").is_err());
        assert!(parse_object(b"[1]", &[], true, "{}").is_err());
        let e = parse_weights(br#"{"blue": -1}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("blue"));
    }
}
