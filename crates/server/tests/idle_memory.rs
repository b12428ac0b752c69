//! A connection keeps no read buffer after a frame that asks for no reply (a pong, a client's
//! ack of `msg.recv`, a notification). actix-http's HTTP/1 dispatcher, as patched in `vendor/`,
//! releases its read buffer once the decoder has taken everything read; before that hunk such a
//! frame left the buffer (1 KiB, or 9 KiB after a frame over 1 KiB) with the connection until it
//! was next read, which for an idle WebSocket is the next heartbeat (docs/benchmarks.md, eighth
//! set).
//!
//! Memory is this test binary's live heap, counted by its global allocator (`stats_alloc`; the
//! server runs in-process). That the server has read what the clients sent is seen in
//! `/proc/net/tcp`: the receive queues of its sockets are empty, and the decoder runs in the same
//! poll as that read.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::alloc::System;
use std::time::Duration;

use common::raw::{assert_echo, authed, json_frame};
use common::{TestServer, poll_until, wait_until};
use serde_json::json;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use titan_client::RawSocket;
use titan_client::tungstenite::Message;

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes handed out by the allocator and not given back yet (a reallocation's growth counts as
/// allocated, its shrinking as deallocated).
fn live() -> isize {
    let stats = ALLOCATOR.stats();
    stats.bytes_allocated as isize - stats.bytes_deallocated as isize
}

const CONNS: usize = 100;
/// Growth of the live heap allowed per connection, for whatever else the server does meanwhile
/// (the growth measured is a few bytes in all). A kept read buffer is 1 KiB after a pong and
/// 9 KiB after a frame over 1 KiB.
const SLACK_PER_CONN: isize = 256;

/// Whether every established connection to `port` has an empty receive queue, from
/// `/proc/net/tcp` (lines `sl local rem st tx_queue:rx_queue ...`, addresses in hex).
fn all_read(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!(":{port:04X}");
    table.lines().skip(1).all(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let ours = fields[1].ends_with(&local) && fields[3] == "01";
        !ours || fields[4].ends_with(":00000000")
    })
}

/// Sends `frame` on every socket, waits until the server has read them all, then until the live
/// heap is back within the slack of where it was before (failing with the growth per
/// connection when it is not).
async fn assert_nothing_kept_after(server: &TestServer, sockets: &mut [RawSocket], frame: Message) {
    let before = live();
    for socket in sockets.iter_mut() {
        socket.send_message(frame.clone()).await.unwrap();
    }
    let port = server.addr.port();
    wait_until(|| async move { all_read(port) }).await;
    let limit = before + CONNS as isize * SLACK_PER_CONN;
    let settled = poll_until(|| async move { live() <= limit }).await;
    assert!(
        settled,
        "after {frame:?}, each connection still holds {} more bytes",
        (live() - before) / CONNS as isize
    );
}

#[tokio::test]
async fn a_frame_that_asks_for_no_reply_leaves_no_read_buffer_behind() {
    // No heartbeat during the test: it would read every connection again.
    let server = TestServer::start_with(|c| {
        c.limits.ping_interval = Duration::from_secs(3600);
        c.limits.idle_timeout = Duration::from_secs(7200);
    });
    let mut sockets = Vec::with_capacity(CONNS);
    for i in 0..CONNS {
        sockets.push(authed(&server, &format!("idle{i:03}")).await);
    }
    // More than 1 KiB, so that the read buffer grows to its full size (9 KiB) on the way.
    let text = "x".repeat(4096);
    let request = json!({"jsonrpc": "2.0", "method": "echo", "params": [text], "id": "warm"});
    // The same size as a request first: the clients' own buffers grow to fit it now, and the
    // reply makes the server's dispatcher poll the connection again, which (patched before)
    // released its read buffer, so no connection holds one when counting starts.
    for socket in &mut sockets {
        socket.send_json(&request).await.unwrap();
        assert_eq!(json_frame(socket).await["result"], json!([text]));
    }

    // What an idle connection does: answer the server's ping.
    assert_nothing_kept_after(&server, &mut sockets, Message::Pong(Default::default())).await;
    // A notification over 1 KiB (echo, answered with nothing).
    let notification = json!({"jsonrpc": "2.0", "method": "echo", "params": [text]});
    let frame = Message::text(notification.to_string());
    assert_nothing_kept_after(&server, &mut sockets, frame).await;

    // The connections still serve.
    for socket in sockets.iter_mut().take(3) {
        assert_echo(socket).await;
    }
}
