//! This crate's integration tests, one binary: each module was a test binary of its own, and
//! linking one per file was most of the test build on a 2-core machine (see
//! crates/server/tests/suite/main.rs). Run one module with a filter, e.g.
//! `cargo test -p titan-store --test suite conformance::`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../redis_server/mod.rs"]
mod redis_server;

mod conformance;
mod embedded;
mod journal;
mod redis;
mod redis_bus;
mod redis_connection;
mod redis_replication;
