//! The attack suite: what a careful adversary tries against Gatehouse, as
//! tables of requests and the answer each must get. Rows go through a real
//! Envoy running the shipped `envoy/envoy.yaml` wherever Envoy is part of the
//! story (what Envoy forwards, rewrites or drops decides the outcome), and
//! straight to Gatehouse's own APIs otherwise. A new finding is a new row.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

#[path = "../common/mod.rs"]
mod common;

mod table;

mod abuse;
mod anonymous;
mod body;
mod doors;
mod hosts;
mod identity;
mod keys;
mod password_change;
mod paths;
mod providers;
mod rest_surface;
mod restated;
mod revocation;
mod sessions;
mod upstream_headers;
