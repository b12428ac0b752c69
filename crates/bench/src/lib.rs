//! `titan-bench`: a load generator for Titan, built on `titan-client`, that prints figures
//! anyone can reproduce (docs/benchmarks.md).
//!
//! - [`p2p`]: sender/receiver pairs, one message per `msg.send`, every `msg.recv` acked:
//!   throughput, end-to-end and send-to-ACK latency, lost and duplicated messages.
//! - [`idle`]: many authenticated idle connections, and the server's memory per connection.
//! - [`fanout`]: one user with many devices, or one sender to many users.
//! - [`storm`]: many clients with pending messages reconnecting at once.
//! - [`machine`]: what the machine charges for a thread's sleep, a hand-off between threads
//!   and an `fdatasync`, to read figures of different machines side by side.
//! - [`floor`]: the `p2p` shape through a relay that only moves frames (no server): what the
//!   machine charges for the shape itself.
//! - [`body`]: the message body that carries the send time and a sequence number.
//! - [`tokens`]: where tokens come from (`--token-cmd` or `--jwt-secret`).
//! - [`connect`]: opening authenticated connections, many at a time.
//! - [`peer`]: one end of a `p2p` pair, Titan or MQTT (the baseline's protocol).
//! - [`mqtt`]: the minimal MQTT 3.1.1 client over WebSocket that `peer` uses.
//! - [`latency`]: HDR histograms and their percentile summary.
//! - [`resources`]: CPU time and memory of this process and of the server, the open-files limit.
//! - [`error`]: the crate's one error enum, [`BenchError`].

pub mod body;
pub mod connect;
pub mod error;
pub mod fanout;
pub mod floor;
pub mod idle;
pub mod latency;
pub mod machine;
pub mod mqtt;
pub mod p2p;
pub mod peer;
pub mod resources;
pub mod storm;
pub mod tokens;

pub use error::BenchError;
