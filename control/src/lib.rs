//! Switchyard's control plane: everything that decides what the data path does.
//!
//! The control loop, module by module: [`controller`] is the single writer that turns intents
//! (config reloads, API calls, the rollout clock) into a new routing table, persisting through
//! [`state`] first; [`rollout`] and [`analysis`] hold the rollout rules, [`telemetry`] the
//! windows they judge, [`events`] and [`webhooks`] tell people; [`api`] and [`auth`] are the
//! control API; [`admin`] serves health, readiness, metrics, the API and the [`dashboard`];
//! [`exporter`] renders `/metrics` from the data path's recordings; [`health`] probes
//! backends; [`status`] is what the API reports about the process; [`app`] wires it all
//! together for `switchyard serve`.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod admin;
pub mod analysis;
pub mod api;
pub mod app;
pub mod auth;
pub mod certs;
pub mod controller;
pub mod dashboard;
pub mod discovery;
pub mod events;
pub mod exporter;
pub mod health;
#[cfg(test)]
mod mutate;
pub mod rollout;
pub mod sequential;
pub mod state;
pub mod status;
pub mod telemetry;
pub mod webhooks;
