//! Who may change traffic: the admin API's bearer token.
//!
//! Mutations need `Authorization: Bearer TOKEN` whenever a token is configured (from
//! `admin.token_file` or `SWITCHYARD_ADMIN_TOKEN`); reads stay open, since the admin listener
//! defaults to loopback. An admin address reachable from other machines without a token is
//! refused at start-up. Tokens are compared in constant time and never logged.

use std::net::SocketAddr;

use http::HeaderMap;
use switchyard_config::Admin;

/// The environment variable that can carry the admin token.
pub const TOKEN_ENV: &str = "SWITCHYARD_ADMIN_TOKEN";

#[derive(Clone, Default)]
pub struct Auth {
    token: Option<Vec<u8>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token itself.
        f.debug_struct("Auth")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Auth {
    /// Reads the token; refuses a non-loopback admin address without one.
    pub fn load(admin: &Admin) -> Result<Auth, String> {
        let from_file = match &admin.token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!("admin.token_file {}: cannot read it: {e}", path.display())
                })?;
                let token = text.trim().to_string();
                if token.is_empty() {
                    return Err(format!(
                        "admin.token_file {}: the file is empty",
                        path.display()
                    ));
                }
                Some(token)
            }
            None => None,
        };
        let token = from_file.or_else(|| {
            std::env::var(TOKEN_ENV)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        });
        if token.is_none() && !is_loopback(admin.address) {
            return Err(format!(
                "admin address {} is reachable from other machines but no token is configured: \
                 set admin.token_file or {TOKEN_ENV}, or listen on 127.0.0.1",
                admin.address
            ));
        }
        Ok(Auth {
            token: token.map(String::into_bytes),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.token.is_some()
    }

    /// `Ok` if the request may mutate; else the 401 message.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), String> {
        let Some(expected) = &self.token else {
            return Ok(());
        };
        // The scheme is case-insensitive (RFC 9110 §11.1); the token is not.
        let given = headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .filter(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer "))
            .map(|v| v[7..].trim_ascii())
            .ok_or("missing bearer token: send Authorization: Bearer <token>")?;
        if constant_time_eq(given, expected) {
            Ok(())
        } else {
            Err("invalid bearer token".into())
        }
    }
}

fn is_loopback(address: SocketAddr) -> bool {
    address.ip().is_loopback()
}

/// Compares without an early exit, so the time taken says nothing about the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn public_admin_without_token_is_refused() {
        let admin = Admin {
            address: "0.0.0.0:9901".parse().unwrap(),
            token_file: None,
        };
        if std::env::var(TOKEN_ENV).is_err() {
            assert!(Auth::load(&admin).unwrap_err().contains("no token"));
        }
    }

    #[test]
    fn bearer_token_is_checked() {
        let auth = Auth {
            token: Some(b"s3cret".to_vec()),
        };
        let mut h = HeaderMap::new();
        assert!(auth.check(&h).is_err());
        h.insert(http::header::AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert!(auth.check(&h).is_err());
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer s3cret".parse().unwrap(),
        );
        assert!(auth.check(&h).is_ok());
        h.insert(
            http::header::AUTHORIZATION,
            "bearer s3cret".parse().unwrap(),
        );
        assert!(auth.check(&h).is_ok());
        h.insert(http::header::AUTHORIZATION, "Basic s3cret".parse().unwrap());
        assert!(auth.check(&h).is_err());
    }
}
