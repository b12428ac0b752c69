//! This crate's integration tests, one binary: each module was a test binary of its own, and
//! linking one per file was most of the test build on a 2-core machine (see
//! crates/server/tests/suite/main.rs). Run one module with a filter, e.g.
//! `cargo test -p titan-bench --test suite loads::`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;
#[path = "../common/mosquitto.rs"]
mod mosquitto;

mod loads;
mod p2p;
