//! Gatehouse's core: who is calling, whether they may, and what they may
//! spend. Nothing here knows gRPC, HTTP, SQL, Redis or a cache library: the
//! `gatehouse` crate plugs those in behind the small traits in [`store`]
//! (records, change publication, read-through lookups, expiring maps),
//! [`ratelimit::Limiter`] and [`budget::ledger::Ledger`].
//!
//! From the inside out:
//! * [`domain`]: principals, roles, permissions, limits, budgets, denials.
//! * [`policy`]: path normalization, route rules, request bodies.
//! * [`authn`]: credentials to principals (API keys, session and provider
//!   tokens, passwords).
//! * [`ratelimit`], [`budget`]: request limits, token and spend budgets.
//! * [`authz`]: one decision per request, transport-independent.
//! * [`accounts`]: every management rule and its side effects (audit, cache
//!   invalidation, publication), for every door.
//! * [`store`]: the persistence and cache traits the rest reads through.
//! * [`meter`]: the token usage an upstream's response reports.

pub mod accounts;
pub mod audit;
pub mod authn;
pub mod authz;
pub mod budget;
pub mod clock;
pub mod domain;
pub mod meter;
pub mod policy;
pub mod ratelimit;
pub mod redact;
pub mod secret;
pub mod store;
