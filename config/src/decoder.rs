//! The decoding toolkit: error collection, field paths, and one reader per kind of value.
//!
//! `switchyard check` must report *every* mistake in a file, not the first, so nothing here
//! stops on an error: each reader records what is wrong (with position and field path) in the
//! [`Decoder`] and returns `None`, and the caller carries on with the next field. A decoded
//! value is only handed out when the whole file had no error, so the `None`s never leak.
//!
//! Scalars reach this module as source text; each reader decides what the text may mean, so
//! `weight: 10`, `weight: "10%"` and `release: 1.0` all read naturally.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{ConfigError, ConfigErrors};
use crate::yaml::{Entry, Kind, Node, Pos};

/// `services` + `api` → `services.api`.
pub(crate) fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `listeners` + 1 → `listeners[1]`.
pub(crate) fn item(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// Collects every error found in one file.
pub(crate) struct Decoder {
    file: String,
    errors: Vec<ConfigError>,
    /// Only when asked ([`crate::fields`]): every field each mapping accepts.
    pub(crate) fields: Option<crate::fields::FieldLog>,
}

impl Decoder {
    pub fn new(file: &str) -> Decoder {
        Decoder {
            file: file.to_string(),
            errors: Vec::new(),
            fields: None,
        }
    }

    pub fn error(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line: pos.line,
            column: pos.column,
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// The decoded value if the file had no error, else every error in file order.
    pub fn finish<T>(mut self, value: Option<T>) -> Result<T, ConfigErrors> {
        match value {
            Some(value) if self.errors.is_empty() => Ok(value),
            _ => {
                if self.errors.is_empty() {
                    // A reader returned None without saying why: a bug here, but still refuse.
                    self.error(
                        Pos { line: 0, column: 0 },
                        "",
                        "config could not be decoded",
                    );
                }
                // Checks run in decoding order; operators read top to bottom.
                self.errors.sort_by_key(|e| (e.line, e.column));
                Err(ConfigErrors(self.errors))
            }
        }
    }

    pub fn expected(&mut self, node: &Node, path: &str, what: &str) {
        let found = node.describe();
        self.error(node.pos, path, format!("expected {what}, found {found}"));
    }

    /// A mapping whose keys must all be in `known`; every other key is reported.
    pub fn map<'n>(&mut self, node: &'n Node, path: &str, known: &[&str]) -> Option<Fields<'n>> {
        let entries = self.mapping(node, path)?;
        if let Some(log) = &mut self.fields {
            log.fields(path, known, entries);
        }
        for entry in entries {
            if known.contains(&entry.key.as_str()) {
                continue;
            }
            let message = if entry.key == "<<" {
                // YAML 1.2 (which saphyr implements) dropped merge keys; say so plainly.
                "YAML merge keys (<<) are not supported; write the fields out, or reuse a whole value with an anchor (&name) and alias (*name)".to_string()
            } else {
                format!(
                    "unknown field {:?} (expected one of: {})",
                    entry.key,
                    known.join(", ")
                )
            };
            self.error(entry.key_pos, &child(path, &entry.key), message);
        }
        Some(Fields {
            pos: node.pos,
            path: path.to_string(),
            entries,
        })
    }

    /// A mapping from names the operator chooses (services, versions) to values.
    pub fn entries<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [Entry]> {
        let entries = self.mapping(node, path)?;
        if let Some(log) = &mut self.fields {
            log.names(path, entries);
        }
        Some(entries)
    }

    fn mapping<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [Entry]> {
        match &node.kind {
            Kind::Map(entries) => Some(entries),
            _ => {
                self.expected(node, path, "a mapping");
                None
            }
        }
    }

    pub fn list<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [Node]> {
        match &node.kind {
            Kind::List(items) => Some(items),
            _ => {
                self.expected(node, path, "a list");
                None
            }
        }
    }

    /// Decodes every item of a list; `None` if the list or any item is invalid.
    pub fn list_of<T>(
        &mut self,
        node: &Node,
        path: &str,
        mut decode: impl FnMut(&mut Decoder, &Node, &str) -> Option<T>,
    ) -> Option<Vec<T>> {
        let items = self.list(node, path)?;
        let decoded: Vec<Option<T>> = items
            .iter()
            .enumerate()
            .map(|(i, node)| decode(self, node, &item(path, i)))
            .collect();
        decoded.into_iter().collect()
    }

    /// Any non-empty scalar, as written: `release: 1.0` is the string "1.0".
    pub fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match node.scalar() {
            Some(text) if !text.is_empty() => Some(text.to_string()),
            _ => {
                self.expected(node, path, "a non-empty string");
                None
            }
        }
    }

    /// A string that may be empty when quoted (e.g. an override's header value `""`).
    pub fn any_string(&mut self, node: &Node, path: &str) -> Option<String> {
        match node.scalar() {
            Some(text) => Some(text.to_string()),
            None => {
                self.expected(node, path, r#"a string (write "" for an empty one)"#);
                None
            }
        }
    }

    pub fn path_buf(&mut self, node: &Node, path: &str) -> Option<PathBuf> {
        self.string(node, path).map(PathBuf::from)
    }

    /// A whole number that fits `T`. Negative and overflowing values say so.
    pub fn uint<T: Uint>(&mut self, node: &Node, path: &str) -> Option<T> {
        self.uint_min(node, path, 0)
    }

    /// A whole number of at least 1 (thresholds, limits).
    pub fn positive<T: Uint>(&mut self, node: &Node, path: &str) -> Option<T> {
        self.uint_min(node, path, 1)
    }

    fn uint_min<T: Uint>(&mut self, node: &Node, path: &str, min: u64) -> Option<T> {
        let Some(text) = node.scalar() else {
            self.expected(node, path, "a whole number");
            return None;
        };
        let message = match parse_uint(text, T::MAX) {
            Ok(n) if n < min => format!("must be at least {min}"),
            Ok(n) => return T::try_from(n).ok(),
            Err(e) => e.message(text, T::MAX),
        };
        self.error(node.pos, path, message);
        None
    }

    /// A finite, non-negative number such as `1`, `0.5` or `500`.
    pub fn number(&mut self, node: &Node, path: &str) -> Option<f64> {
        let Some(text) = node.scalar() else {
            self.expected(node, path, "a number");
            return None;
        };
        match text.parse::<f64>() {
            Ok(n) if n.is_finite() && n >= 0.0 => Some(n),
            Ok(n) if n < 0.0 => {
                self.error(
                    node.pos,
                    path,
                    format!("{text} is negative (expected a number ≥ 0)"),
                );
                None
            }
            _ => {
                self.error(
                    node.pos,
                    path,
                    format!("expected a number such as 1 or 0.5, found {text:?}"),
                );
                None
            }
        }
    }

    /// A duration such as `30s`; zero allowed.
    pub fn duration(&mut self, node: &Node, path: &str) -> Option<Duration> {
        let Some(text) = node.scalar() else {
            self.expected(node, path, "a duration such as 30s");
            return None;
        };
        match crate::duration::parse_duration(text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(node.pos, path, e);
                None
            }
        }
    }

    /// A duration for a timeout or interval, where zero would mean "never" or "always".
    pub fn positive_duration(&mut self, node: &Node, path: &str) -> Option<Duration> {
        let d = self.duration(node, path)?;
        if d.is_zero() {
            self.error(node.pos, path, "must be longer than 0 (e.g. 500ms or 5s)");
            return None;
        }
        Some(d)
    }

    pub fn socket_addr(&mut self, node: &Node, path: &str) -> Option<SocketAddr> {
        let Some(text) = node.scalar() else {
            self.expected(node, path, "an address such as 10.0.1.1:8080");
            return None;
        };
        match text.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                let hint =
                    if text.contains(|c: char| c.is_ascii_alphabetic()) && !text.contains('[') {
                        "; host names are not resolved, give an IP address"
                    } else {
                        ""
                    };
                self.error(
                    node.pos,
                    path,
                    format!(
                        "invalid socket address {text:?} (expected IP:port, e.g. 10.0.1.1:8080{hint})"
                    ),
                );
                None
            }
        }
    }

    /// A share written as `10` or `"10%"`. The `%` form is capped at 100; a bare number at
    /// `max` (weights are relative, so any size is meaningful; traffic is a percentage).
    pub fn share(&mut self, node: &Node, path: &str, what: &str, max: u32) -> Option<u32> {
        let Some(text) = node.scalar() else {
            self.expected(node, path, &format!("a {what} such as 10 or 10%"));
            return None;
        };
        let (digits, percent) = match text.strip_suffix('%') {
            Some(digits) => (digits, true),
            None => (text, false),
        };
        let max = if percent { 100 } else { u64::from(max) };
        let message = match parse_uint(digits, max) {
            Ok(n) => return u32::try_from(n).ok(),
            Err(UintError::NotANumber) => format!(
                "invalid {what} {text:?} (expected a whole number such as 90, or a percentage such as 90%)"
            ),
            Err(UintError::TooLarge) if percent => format!("{what} {text} is more than 100%"),
            Err(e) => format!("invalid {what}: {}", e.message(text, max)),
        };
        self.error(node.pos, path, message);
        None
    }

    /// One of a fixed set of words, e.g. `format: json`.
    pub fn choice<T: Copy>(
        &mut self,
        node: &Node,
        path: &str,
        what: &str,
        options: &[(&str, T)],
    ) -> Option<T> {
        let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
        let Some(text) = node.scalar() else {
            self.expected(node, path, &format!("one of: {}", names.join(", ")));
            return None;
        };
        match options.iter().find(|(name, _)| *name == text) {
            Some((_, value)) => Some(*value),
            None => {
                self.error(
                    node.pos,
                    path,
                    format!(
                        "unknown {what} {text:?} (expected one of: {})",
                        names.join(", ")
                    ),
                );
                None
            }
        }
    }

    /// A name for a listener, service or version: it ends up in URLs, metric labels and
    /// log lines, so it is kept to characters that need no quoting anywhere.
    pub fn check_name(&mut self, name: &str, pos: Pos, path: &str, what: &str) -> bool {
        let message = if name.is_empty() {
            format!("{what} name is empty")
        } else if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            format!(
                "{what} name {name:?} may only contain letters, digits, '-', '_' and '.' (it is used in URLs and metric labels)"
            )
        } else {
            return true;
        };
        self.error(pos, path, message);
        false
    }

    pub fn name(&mut self, node: &Node, path: &str, what: &str) -> Option<String> {
        let name = self.string(node, path)?;
        self.check_name(&name, node.pos, path, what).then_some(name)
    }

    /// An HTTP header or cookie name (an RFC 9110 token).
    pub fn token(&mut self, node: &Node, path: &str, what: &str) -> Option<String> {
        let name = self.string(node, path)?;
        let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if !name.chars().all(is_tchar) {
            self.error(
                node.pos,
                path,
                format!(
                    "invalid {what} name {name:?} (letters, digits and -_. only, e.g. x-user-id)"
                ),
            );
            return None;
        }
        Some(name)
    }
}

/// Unsigned integer types a field can be read into, with their largest value for messages.
pub(crate) trait Uint: TryFrom<u64> {
    const MAX: u64;
}

impl Uint for u32 {
    const MAX: u64 = u32::MAX as u64;
}

impl Uint for u64 {
    const MAX: u64 = u64::MAX;
}

impl Uint for usize {
    const MAX: u64 = usize::MAX as u64;
}

#[derive(Debug, PartialEq, Eq)]
enum UintError {
    NotANumber,
    Negative,
    TooLarge,
}

impl UintError {
    fn message(&self, text: &str, max: u64) -> String {
        match self {
            UintError::NotANumber => format!("expected a whole number, found {text:?}"),
            UintError::Negative => format!("{text} is negative (expected a whole number ≥ 0)"),
            UintError::TooLarge => format!("{text} is too large (at most {max})"),
        }
    }
}

/// Parses decimal digits (an optional `+` allowed) into a number no larger than `max`.
fn parse_uint(text: &str, max: u64) -> Result<u64, UintError> {
    let is_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if text.strip_prefix('-').is_some_and(is_digits) {
        return Err(UintError::Negative);
    }
    let digits = text.strip_prefix('+').unwrap_or(text);
    if !is_digits(digits) {
        return Err(UintError::NotANumber);
    }
    // All digits, so the only way to fail is overflow.
    match digits.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(UintError::TooLarge),
    }
}

/// The fields of one mapping, already checked for unknown keys.
pub(crate) struct Fields<'n> {
    pub pos: Pos,
    pub path: String,
    entries: &'n [Entry],
}

impl<'n> Fields<'n> {
    /// The field's node; absent and `null` both read as "not given".
    pub fn get(&self, name: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|e| e.key == name)
            .map(|e| &e.value)
            .filter(|node| !node.is_null())
    }

    pub fn path(&self, name: &str) -> String {
        child(&self.path, name)
    }

    /// Decodes an optional field; `None` when absent (or invalid, which is already reported).
    pub fn opt<T>(
        &self,
        d: &mut Decoder,
        name: &str,
        decode: impl FnOnce(&mut Decoder, &'n Node, &str) -> Option<T>,
    ) -> Option<T> {
        let node = self.get(name)?;
        decode(d, node, &self.path(name))
    }

    /// Decodes an optional field, or gives `default` when it is absent; `None` only when the
    /// field is present and invalid (already reported).
    pub fn opt_or<T>(
        &self,
        d: &mut Decoder,
        name: &str,
        default: T,
        decode: impl FnOnce(&mut Decoder, &'n Node, &str) -> Option<T>,
    ) -> Option<T> {
        match self.get(name) {
            None => Some(default),
            Some(node) => decode(d, node, &self.path(name)),
        }
    }

    /// Decodes a required field; a missing one is reported at the mapping.
    pub fn req<T>(
        &self,
        d: &mut Decoder,
        name: &str,
        decode: impl FnOnce(&mut Decoder, &'n Node, &str) -> Option<T>,
    ) -> Option<T> {
        if self.get(name).is_none() {
            d.error(
                self.pos,
                &self.path,
                format!("missing required field {name:?}"),
            );
            return None;
        }
        self.opt(d, name, decode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uint_parsing() {
        assert_eq!(parse_uint("42", 100), Ok(42));
        assert_eq!(parse_uint("+7", 100), Ok(7));
        assert_eq!(parse_uint("-1", 100), Err(UintError::Negative));
        assert_eq!(parse_uint("101", 100), Err(UintError::TooLarge));
        assert_eq!(
            parse_uint("99999999999999999999", u64::MAX),
            Err(UintError::TooLarge)
        );
        for bad in ["", "1.5", "abc", "1e3", "0x10", "-", "--1"] {
            assert_eq!(parse_uint(bad, 100), Err(UintError::NotANumber), "{bad}");
        }
        assert_eq!(
            UintError::TooLarge.message("4294967296", u32::MAX as u64),
            "4294967296 is too large (at most 4294967295)"
        );
    }
}
