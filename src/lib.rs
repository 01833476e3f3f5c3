//! Gatehouse: an Envoy external authorization server for AI / LLM gateways.
//!
//! Layout, from the inside out:
//! * [`domain`]: principals, roles, permissions, denials. No transport, no SQL.
//! * [`authn`]: credentials to principals (API keys today).
//! * [`policy`]: path normalization and route rules.
//! * [`authz`]: one decision per request, transport-independent.
//! * [`budget`]: token and spend budgets: reservations at Check, settlement
//!   from the usage [`meter`]ed in responses.
//! * [`store`]: the `Store` trait, its SQLite and Postgres implementation, and
//!   the in-process cache the Check path reads through.
//! * [`accounts`]: managing users, groups and keys (CLI and REST share it).
//! * [`render`]: how each door writes a refusal (status, gRPC code, challenge,
//!   the one JSON error envelope).
//! * [`grpc`], [`http`]: thin adapters for Envoy's ext_authz, health and probes.
//! * [`meter`]: the token usage an upstream's response reports.
//! * [`config`], [`app`], [`cli`], [`telemetry`]: start-up.

pub mod accounts;
pub mod app;
pub mod audit;
pub mod authn;
pub mod authz;
pub mod budget;
pub mod cli;
pub mod config;
pub mod doctor;
pub mod domain;
#[doc(hidden)]
pub mod fuzz;
pub mod grpc;
pub mod http;
pub mod meter;
pub mod policy;
pub mod ratelimit;
pub mod redis_target;
pub mod reload;
pub mod render;
pub mod secret;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod views;
