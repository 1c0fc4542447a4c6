//! Mutation bodies: JSON in, a [`Command`] or a 400 naming the field out. Pure, so the fuzz
//! target `api_body` can hammer it.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::commands::Command;
use crate::refusal::Refusal;
use crate::rollout::RolloutAction;

/// Longest rollback reason kept in history (it is shown in tables and events).
const MAX_REASON: usize = 1024;

/// Largest weight one version may be given (shares are weight / sum of weights).
pub const MAX_WEIGHT: u32 = 1_000_000;

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
pub fn parse_command(kind: CommandKind, body: &[u8]) -> Result<Command, Refusal> {
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

fn bad(message: impl Into<String>, field: Option<&str>) -> Refusal {
    Refusal::bad(message, field)
}

/// Parses a JSON object body whose keys must be among `allowed` (an unknown key is named in
/// `field`). An empty body (no bytes at all) is an empty object when `empty_ok`; whitespace
/// alone is not JSON. `example` goes into messages.
fn parse_object(
    body: &[u8],
    allowed: &[&str],
    empty_ok: bool,
    example: &str,
) -> Result<Map<String, Value>, Refusal> {
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
fn json_object(body: &[u8], example: &str) -> Result<Map<String, Value>, Refusal> {
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
fn parse_weights(body: &[u8]) -> Result<BTreeMap<String, u32>, Refusal> {
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
                    assert_eq!(e.status(), http::StatusCode::BAD_REQUEST, "{e:?}");
                    assert!(!e.message().is_empty());
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
        assert_eq!(e.field(), Some("x"));
        assert!(parse_object(b"", &["to"], false, "{}").is_err());
        assert!(parse_object(b"", &[], true, "{}").unwrap().is_empty());
        assert!(parse_object(b"\n", &[], true, "{}").is_err());
        assert!(parse_object(b"[1]", &[], true, "{}").is_err());
        let e = parse_weights(br#"{"blue": -1}"#).unwrap_err();
        assert_eq!(e.field(), Some("blue"));
    }
}
