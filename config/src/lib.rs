//! Switchyard's config file: schema, parsing, validation, watching.
//!
//! The config is where operators declare topology (listeners, services, versions, backends)
//! and intent (weights, overrides, rollouts). This crate turns a YAML file into a validated
//! [`Config`] or into *every* error the file has, each with file, line, column and field path,
//! so `switchyard check` and a hot reload can tell the operator exactly what to fix.
//! It knows nothing about sockets or HTTP: the proxy and control crates consume [`Config`].

mod error;
pub mod schema;
pub mod watch;

pub use error::{ConfigError, ConfigErrors};
pub use schema::*;

use std::path::Path;

/// Parses and validates config text. `file` is only used in error messages.
pub fn parse(source: &str, file: &str) -> Result<Config, ConfigErrors> {
    let _ = (source, file);
    unimplemented!("config parser is being written")
}

/// Reads and parses a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: file.clone(),
            line: 0,
            column: 0,
            path: String::new(),
            message: format!("cannot read config file: {e}"),
        }])
    })?;
    parse(&source, &file)
}
