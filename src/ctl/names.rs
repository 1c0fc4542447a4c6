//! `ctl status`: which addresses each backend name stands for right now (SPEC §12), below
//! the versions table — the table's HEALTHY column counts addresses, this says which ones and
//! where they came from, and which names have never resolved (their version answers 503).
//!
//! ```text
//! backend names:
//!   api/blue    api.internal:8080 → 10.0.0.7:8080, 10.0.0.8:8080 (down)
//!   api/green   srv+_http._tcp.green.internal → never resolved
//! ```

use std::fmt::Write as _;

use serde_json::Value;

/// The `backend names:` section for `services`' versions with names; empty when none has.
pub(super) fn section<'a>(services: impl IntoIterator<Item = &'a Value>) -> String {
    let mut rows: Vec<(String, String)> = Vec::new();
    for svc in services {
        let service = svc["name"].as_str().unwrap_or("-");
        for v in svc["versions"].as_array().into_iter().flatten() {
            let at = format!("{service}/{}", v["name"].as_str().unwrap_or("-"));
            // Names in the order the API lists their addresses (sorted by address).
            let mut names: Vec<(&str, Vec<String>)> = Vec::new();
            for b in v["backends"].as_array().into_iter().flatten() {
                let Some(name) = b["name"].as_str() else {
                    continue;
                };
                let mut address = b["address"].as_str().unwrap_or("-").to_string();
                if b["healthy"] == false {
                    address.push_str(" (down)");
                }
                match names.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, addresses)) => addresses.push(address),
                    None => names.push((name, vec![address])),
                }
            }
            for (name, addresses) in names {
                rows.push((at.clone(), format!("{name} → {}", addresses.join(", "))));
            }
            for name in v["unresolved"].as_array().into_iter().flatten() {
                let name = name.as_str().unwrap_or("-");
                rows.push((at.clone(), format!("{name} → never resolved")));
            }
        }
    }
    if rows.is_empty() {
        return String::new();
    }
    let width = rows
        .iter()
        .map(|(at, _)| at.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::from("\nbackend names:\n");
    for (at, what) in rows {
        let _ = writeln!(out, "  {at:<width$}   {what}");
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn names_with_their_addresses_and_the_unresolved() {
        let svc = json!({"name": "api", "versions": [
            {"name": "blue", "backends": [
                {"address": "10.0.0.5:80", "healthy": true},
                {"address": "10.0.0.7:8080", "name": "api.internal:8080", "healthy": true},
                {"address": "10.0.0.8:8080", "name": "api.internal:8080", "healthy": false},
            ]},
            {"name": "green", "backends": [], "unresolved": ["green.internal:80"]},
        ]});
        assert_eq!(
            super::section([&svc]),
            "\nbackend names:\n  api/blue    api.internal:8080 → 10.0.0.7:8080, 10.0.0.8:8080 (down)\n  api/green   green.internal:80 → never resolved\n"
        );
        let literal = json!({"name": "web", "versions": [{"name": "v1", "backends": [{"address": "10.0.0.1:80", "healthy": true}]}]});
        assert_eq!(super::section([&literal]), "");
    }
}
