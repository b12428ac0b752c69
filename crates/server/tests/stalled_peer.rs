//! A peer that stops reading cannot hold a server socket forever: once its session is closed
//! (as a slow consumer, 4003, or as idle, 4000) and the close frame cannot even be written
//! because the peer reads nothing, the server still releases the connection within a bound.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::silent_peer::SilentPeer;
use common::{TestServer, WAIT};
use serde_json::json;
use titan_client::{Client, Outgoing};

/// The number of sockets this process has open (server and clients of the test alike).
fn open_sockets() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
        })
        .count()
}

/// A peer that authenticates and then never reads (nor answers pings) is flooded until the
/// server gives up on it; the server closes its side of the TCP connection (the process's socket
/// count goes back down) while the peer still holds its own end, unread, with the close frame
/// stuck behind megabytes it never read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_does_not_keep_its_socket() {
    let server = TestServer::start_with(|c| {
        c.limits.outbound_queue = 4;
        c.limits.max_frame_bytes = 1 << 20;
        c.limits.max_message_bytes = 64 * 1024;
        c.delivery.max_pending = 100_000;
        // Deliveries are only bounded by the socket buffers, and a peer that reads nothing (not
        // even pings) is given up on after a second.
        c.delivery.window = 100_000;
        c.limits.ping_interval = std::time::Duration::from_millis(200);
        c.limits.idle_timeout = std::time::Duration::from_secs(1);
    });
    let sender = Client::connect(&server.url).await.unwrap();
    sender
        .authenticate(&server.token("alice"), None)
        .await
        .unwrap();
    let mut peer = SilentPeer::connect(server.addr).await;
    let auth = json!({"jsonrpc": "2.0", "method": "auth.jwt", "params": {"token": server.token("bob")}, "id": 1});
    peer.send_text(&auth.to_string()).await;
    let (opcode, _) = peer.next_frame().await.expect("auth answer");
    assert_eq!(opcode, 0x1);
    let with_peer = open_sockets();

    // 32 KiB per message: the socket buffers fill after a few hundred, the queue right after.
    let body = "x".repeat(32 * 1024);
    let batch: Vec<Outgoing> = (0..10).map(|_| Outgoing::new("bob", &body)).collect();
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    while open_sockets() >= with_peer {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server still holds the socket of a peer that stopped reading"
        );
        sender.send_many(&batch).await.unwrap();
        // Paces the flood (about 16 MB/s) while polling the socket count; not a synchronisation.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(peer);
}
