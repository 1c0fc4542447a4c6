//! Switchyard's control plane: everything that decides what the data path does.
//!
//! The control loop, module by module: [`controller`] is the single writer that turns intents
//! (config reloads, API calls, analysis verdicts) into a new routing table; [`admin`] serves
//! health, readiness, metrics and the API; [`exporter`] renders `/metrics` from the data
//! path's recordings; [`health`] probes backends; [`status`] is what the API reports about the process;
//! [`app`] wires it all together for `switchyard serve`.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod admin;
pub mod app;
pub mod controller;
pub mod exporter;
pub mod health;
pub mod status;
