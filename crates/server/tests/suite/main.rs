//! The server's integration tests, one binary. Each module was a test binary of its own; every
//! one linked the whole server with its mocks, which made linking most of the test build (CI on
//! a 2-core machine: 27 binaries, over two minutes). Two stay binaries of their own because they
//! measure their whole process: `idle_memory` (the heap, through its global allocator) and
//! `stalled_peer` (the process's open sockets).
//!
//! Run one module with a filter: `cargo test -p titan-server --test suite browser::`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;
#[path = "../common/mock_apns.rs"]
mod mock_apns;
#[path = "../common/mock_fcm.rs"]
mod mock_fcm;
#[path = "../../../store/tests/redis_server/mod.rs"]
mod redis_server;

mod auth;
mod bad_input;
mod browser;
mod cluster;
mod connection_limits;
mod delivery;
mod drain;
mod durability;
mod google;
mod http;
mod jsonrpc;
mod limits;
mod load;
mod metrics;
mod page;
mod push;
mod push_apns;
mod readyz;
mod reconnecting;
mod redis_cluster;
mod revocation;
mod scenarios;
mod tls;
mod tokens;
