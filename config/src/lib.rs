//! Switchyard's config file: schema, parsing, validation, watching.
//!
//! The config is where operators declare topology (listeners, services, versions, backends)
//! and intent (weights, overrides, rollouts). This crate turns a YAML file into a validated
//! [`Config`] or into *every* error the file has, each with file, line, column and field path,
//! so `switchyard check` and a hot reload can tell the operator exactly what to fix.
//! It knows nothing about sockets or HTTP: the proxy and control crates consume [`Config`].

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod backend;
mod certs;
mod cluster;
mod decoder;
mod duration;
mod error;
pub mod fields;
mod file;
mod resolver;
mod rollout;
pub mod schema;
mod service;
pub mod watch;
mod yaml;

#[cfg(test)]
mod tests;

pub use certs::{read_certificates, CertificatePem};
pub use cluster::MIN_LEASE;
pub use duration::parse_duration;
pub use error::{ConfigError, ConfigErrors};
pub use schema::*;
pub use watch::{watch, ConfigWatcher};

use std::path::Path;

/// Parses and validates config text (YAML or JSON). `file` is only used in error messages.
///
/// On failure the error list holds every problem found, in file order, each with line,
/// column and field path.
pub fn parse(source: &str, file: &str) -> Result<Config, ConfigErrors> {
    let mut d = decoder::Decoder::new(file);
    let config = decode(&mut d, source);
    d.finish(config)
}

/// The whole decode of one document into `d`: YAML, then the file's schema.
fn decode(d: &mut decoder::Decoder, source: &str) -> Option<Config> {
    yaml::load(source, d).and_then(|root| file::config(d, &root))
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
