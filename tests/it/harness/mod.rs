//! The black-box harness: real backends, the real `switchyard` binary, a keep-alive client.
//!
//! Every integration test follows the same shape — start a few [`Backend`]s, build a config
//! that points at them ([`Proxy::builder`], or YAML for tests about YAML), start the binary
//! with every socket on port 0 and read back the ports it bound ([`Proxy`]), send traffic
//! with [`Client`] or [`versions_of`], and assert on what the backends saw. Nothing is
//! mocked: the proxy is the compiled binary talking TCP, so these tests check the contract in
//! SPEC.md, not the internals. Every wait is bounded; nothing asserts on a sleep.
//!
//! One file per concern, all re-exported here (`crate::harness::X`): `proxy` (the process),
//! `config` (the config builder), `admin` (its API), `backends`, `client`, `load`, `tls`,
//! `metrics`, `process` (other commands), `files`, `ports` (for what cannot bind `:0`).
#![allow(dead_code)]

pub mod browser;
pub mod demo;
pub mod disk;
pub mod dns;
pub mod etcd;

mod admin;
mod backends;
mod client;
mod config;
mod files;
mod load;
mod metrics;
mod ports;
mod process;
mod proxy;
mod tls;

pub use backends::*;
pub use client::*;
pub use config::*;
pub use files::*;
pub use load::*;
pub use metrics::*;
pub use ports::*;
pub use process::*;
pub use proxy::*;
pub use tls::*;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

/// Upper bound for one request through the proxy (connect + response + body).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for the binary to report `/ready` after spawn.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound for a config change to show up in behaviour or in `/api/v1/status`.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(15);

/// The request body type every helper sends.
pub type Body = BoxBody<Bytes, Infallible>;
