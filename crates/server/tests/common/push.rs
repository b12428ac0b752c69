//! What the push tests (push.rs with the mock FCM, push_apns.rs with the mock APNs) do alike:
//! register a device's token, take a device offline, wait for a push outcome on `/metrics`.

use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use titan_client::Client;

use super::{TestServer, next, scrape, wait_until};

/// Connects (user, device) and registers its push `token` for `platform` ("fcm" or "apns").
pub async fn registered(
    server: &TestServer,
    user: &str,
    device: &str,
    platform: &str,
    token: &str,
) -> Client {
    let c = server.client(user, Some(device)).await;
    let ack = c
        .call(
            "push.register",
            json!({"platform": platform, "token": token}),
        )
        .await
        .unwrap();
    assert_eq!(ack, json!("ACK"));
    c
}

/// Closes `client` and waits until the dispatcher knows its device is offline: a fresh user's
/// session attaches after the close, and the Router passes attach and detach on in order, so
/// once that session has its first message the detach has been processed too.
pub async fn go_offline(server: &TestServer, sender: &Client, client: Client) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    client.close().await.unwrap();
    let witness = format!("witness-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    sender.send(&witness, "sync").await.unwrap();
    let w = server.client(&witness, None).await;
    next(&w).await.ack().await.unwrap();
    w.close().await.unwrap();
}

/// Waits until `/metrics` counts `n` pushes of `provider` with `outcome`.
pub async fn wait_for_pushes(addr: SocketAddr, provider: &str, outcome: &str, n: f64) {
    wait_until(|| async move {
        let samples = scrape::scrape(addr).await;
        let labels = [("provider", provider), ("outcome", outcome)];
        scrape::value(&samples, "titan_push_sends_total", &labels) == n
    })
    .await;
}
