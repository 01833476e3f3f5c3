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

pub use gatehouse_core::{accounts, audit, authz, clock, domain, meter, policy, redact, secret};

pub mod app;
pub mod cli;
pub mod config;
pub mod doctor;
#[doc(hidden)]
pub mod fuzz;
pub mod grpc;
pub mod http;
pub mod redis_target;
pub mod reload;
pub mod render;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod views;

/// The core's authentication, with the providers' HTTP client and the
/// REST API's login throttle.
pub mod authn {
    pub use gatehouse_core::authn::*;
    pub mod fetch;
    pub mod throttle;
}

/// The core's token and spend budgets, with the Redis ledger.
pub mod budget {
    pub use gatehouse_core::budget::*;
    pub mod redis;
}

/// The core's rate limits, with the Redis limiter.
pub mod ratelimit {
    pub use gatehouse_core::ratelimit::*;
    pub mod redis;
}
