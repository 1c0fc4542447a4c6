//! Switchyard's black-box tests, in one crate (the shape of linkerd2-proxy's integration
//! crate): every module drives the real `switchyard` binary over real sockets on 127.0.0.x,
//! through the shared [`harness`]. One crate means the harness compiles once, not once per
//! test file.
//!
//! Run one area with `cargo test --test it rollout::`, one test by its name as usual.

mod harness;

mod access_log;
mod accounting;
mod admin;
mod api;
mod canary;
mod check;
mod cli;
mod connect_storms;
mod ctl;
mod dashboard;
mod dashboard_story;
mod demo;
mod discovery;
mod edge;
mod fast_path;
mod faults;
mod fleet;
mod grpc;
mod h2_defences;
mod h2_upstream;
mod h2c;
mod hardening;
mod headers;
mod limits;
mod memory;
mod metrics;
mod operator;
mod overrides;
mod packaging;
mod persistence;
mod prometheus;
mod reliability;
mod reload;
mod rollout;
mod routing;
mod safety;
mod schemathesis;
mod sequential;
mod shutdown;
mod split;
mod sticky;
mod tls;
mod upstream_faults;
mod websocket;
mod workers;
