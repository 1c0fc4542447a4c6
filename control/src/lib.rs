//! Switchyard's control plane: everything that decides what the data path does.
//!
//! The control loop, module by module: [`controller`] is the single writer — a thin run loop
//! that turns intents (config reloads, API calls, gate answers, the rollout clock) into
//! [`plan`]s, commits them through a [`store::StateStore`] in the order DESIGN §7 asks for,
//! and publishes a new routing table and API view; [`supervisor`] restarts it if it panics.
//! [`commands`] are the operator's mutations, one module each; [`rollout`] holds the record,
//! the roles and every state transition; [`engine`] is the pure rollout engine with its
//! judges and metrics; [`telemetry`] reads the data path's counters into windows;
//! [`refusal`] is every way to say no. Around it: [`api`] and [`auth`] (the control API),
//! [`admin`] (health, readiness, metrics, the API, the [`dashboard`]), [`exporter`]
//! (`/metrics`), [`health`] (active probes), [`impact`] (a rollout's measured impact), [`events`] and [`webhooks`], [`status`], and
//! [`app`], which wires it all together for `switchyard serve`.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod admin;
pub mod api;
pub mod app;
pub mod auth;
pub mod certs;
pub mod clock;
pub mod commands;
pub mod controller;
pub mod dashboard;
pub mod discovery;
pub mod engine;
pub mod events;
pub mod exporter;
pub mod health;
pub mod impact;
#[cfg(test)]
mod mutate;
pub mod plan;
pub mod refusal;
pub mod rollout;
pub mod sequential;
pub mod status;
pub mod store;
mod supervisor;
pub mod telemetry;
pub mod webhooks;
