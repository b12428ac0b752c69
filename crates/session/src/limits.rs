//! Per-connection limits and timings (the `limits` config section).

use std::time::Duration;

/// Limits a session enforces. Every value is a config key under `[limits]`.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Largest WebSocket message (after reassembling fragments); larger ones get -32003 and close 1009.
    pub max_frame_bytes: usize,
    /// Largest `message` body in `msg.send`; larger ones get -32003.
    pub max_message_bytes: usize,
    /// Most items in one JSON-RPC batch.
    pub max_batch: usize,
    /// Close unauthenticated connections after this long (4001).
    pub auth_timeout: Duration,
    /// How often the server pings.
    pub ping_interval: Duration,
    /// Close connections that sent nothing (not even a pong) for this long (4000).
    pub idle_timeout: Duration,
    /// Frames queued for the socket before the client counts as a slow consumer (4003).
    pub outbound_queue: usize,
    /// Sustained requests per second per connection (token bucket); over it, -32004.
    pub requests_per_second: u32,
    /// Burst size of that bucket.
    pub request_burst: u32,
    /// Requests of one connection being executed at once (e.g. msg.send awaiting the store).
    pub max_inflight_requests: usize,
    /// Failed authentication attempts before the connection is closed (4005).
    pub max_auth_failures: u32,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 * 1024,
            max_message_bytes: 16 * 1024,
            max_batch: 100,
            auth_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            outbound_queue: 512,
            requests_per_second: 500,
            request_burst: 1000,
            max_inflight_requests: 256,
            max_auth_failures: 5,
        }
    }
}
