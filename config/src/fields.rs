//! The config's field paths as the decoder itself knows them, so that the reference in
//! `docs/CONFIG.md` is checked against the code and cannot drift from it.
//!
//! Why from the decoder and not a hand-kept list: every mapping the decoder reads names the
//! fields it accepts (`Decoder::map`'s `known` list), and that list *is* the schema — a
//! second copy would drift just like the docs. So [`fields`] decodes a document with a
//! [`FieldLog`] switched on, which notes, for every mapping decoded, each field it accepts
//! and each one the document wrote. Paths are patterns: operator-chosen names (services,
//! versions) become `<name>` and list items `[]`, e.g.
//! `services.<name>.versions.<name>.backends`. A mapping the document never reaches is not
//! seen, so the reference's complete example must write every field at least once — the
//! test below insists, which is what makes a new nested block show up as soon as its parent
//! field is added.

use std::collections::{BTreeSet, HashMap};

use crate::decoder::{child, Decoder};
use crate::error::ConfigErrors;
use crate::yaml::Entry;

/// What one decoded document says about the schema.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FieldPaths {
    /// Every field accepted by the mappings the document reached.
    pub accepted: BTreeSet<String>,
    /// The fields the document wrote (a subset of `accepted`).
    pub written: BTreeSet<String>,
}

/// Decodes `source` like [`crate::parse`] and returns its field paths; the errors if any.
pub fn fields(source: &str, file: &str) -> Result<FieldPaths, ConfigErrors> {
    let mut d = Decoder::new(file);
    d.fields = Some(FieldLog::default());
    let config = crate::decode(&mut d, source);
    let log = d.fields.take().unwrap_or_default();
    d.finish(config).map(|_| log.paths)
}

/// The recorder the decoder feeds while [`fields`] runs.
#[derive(Debug, Default)]
pub(crate) struct FieldLog {
    paths: FieldPaths,
    /// Concrete path of an operator-chosen name → its pattern (`services.api` →
    /// `services.<name>`). Names may contain dots, so patterns are found by prefix, not split.
    names: HashMap<String, String>,
}

impl FieldLog {
    /// A mapping at `path` that accepts `known` and holds `entries`.
    pub(crate) fn fields(&mut self, path: &str, known: &[&str], entries: &[Entry]) {
        let base = self.pattern(path);
        for k in known {
            self.paths.accepted.insert(child(&base, k));
        }
        for e in entries.iter().filter(|e| known.contains(&e.key.as_str())) {
            self.paths.written.insert(child(&base, &e.key));
        }
    }

    /// A mapping at `path` whose keys are names the operator chose.
    pub(crate) fn names(&mut self, path: &str, entries: &[Entry]) {
        let pattern = child(&self.pattern(path), "<name>");
        for e in entries {
            self.names.insert(child(path, &e.key), pattern.clone());
        }
    }

    /// `services.api.v2.versions.blue` → `services.<name>.versions.<name>`;
    /// `listeners[0].tls` → `listeners[].tls`.
    fn pattern(&self, path: &str) -> String {
        let at_boundary = |concrete: &str| {
            path.strip_prefix(concrete)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        };
        let (prefix, pattern) = self
            .names
            .iter()
            .filter(|(concrete, _)| at_boundary(concrete))
            .max_by_key(|(concrete, _)| concrete.len())
            .map_or(("", ""), |(c, p)| (c.as_str(), p.as_str()));
        let mut out = pattern.to_string();
        // The rest holds only fixed field names and list indices.
        let mut in_index = false;
        for c in path[prefix.len()..].chars() {
            match c {
                '[' => {
                    in_index = true;
                    out.push_str("[]");
                }
                ']' => in_index = false,
                _ if in_index => {}
                _ => out.push(c),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
