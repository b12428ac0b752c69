//! Offline delivery by APNs, end to end: the real server with APNs configured against a loopback
//! mock (HTTP/2, checking each request's ES256 provider token), clients over real WebSockets.

use crate::common;
use crate::mock_apns;

use common::push::{go_offline, registered, wait_for_pushes};
use common::{TestServer, next};
use mock_apns::{KEY_ID, MockApns, Reply, TEAM_ID, TOPIC};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use titan_server::Config;

/// How long silence must last to count as "no (further) push": several backoffs long.
const SILENCE: Duration = Duration::from_millis(800);

struct Setup {
    mock: MockApns,
    server: TestServer,
}

fn start(tweak: impl FnOnce(&mut Config)) -> Setup {
    let mock = MockApns::start();
    let (key_file, base) = (mock.key_file(), mock.base.clone());
    let server = TestServer::start_with(|c| {
        c.push.apns.key_file = key_file;
        c.push.apns.key_id = KEY_ID.into();
        c.push.apns.team_id = TEAM_ID.into();
        c.push.apns.topic = TOPIC.into();
        c.push.apns.api_base = base;
        c.push.initial_backoff = Duration::from_millis(50);
        c.push.max_backoff = Duration::from_millis(200);
        tweak(c);
    });
    Setup { mock, server }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An offline iPhone gets one alert from the sender with the message, as APNs wants it: the
/// token in the path, topic, alert push type, priority 10, an expiration one retention ahead,
/// and a provider token the mock verified (ES256, key id, team id), which later pushes reuse.
#[actix_rt::test]
async fn offline_iphone_is_pushed_with_the_message() {
    let mut s = start(|c| c.delivery.retention = Duration::from_secs(3600));
    let alice = s.server.client("alice", None).await;
    let iphone = registered(&s.server, "bob", "iphone", "apns", "a1b2c3d4").await;
    go_offline(&s.server, &alice, iphone).await;

    let before = unix_secs();
    alice.send("bob", "hello bob").await.unwrap();
    let push = s.mock.next_send().await;
    assert_eq!(push.token, "a1b2c3d4");
    assert_eq!(push.header("apns-topic"), Some(TOPIC));
    assert_eq!(push.header("apns-push-type"), Some("alert"));
    assert_eq!(push.header("apns-priority"), Some("10"));
    assert_eq!(push.header("apns-collapse-id"), None);
    let expires: u64 = push.header("apns-expiration").unwrap().parse().unwrap();
    assert!(
        (before + 3600..=unix_secs() + 3600).contains(&expires),
        "{expires}"
    );
    assert_eq!(push.payload["aps"]["alert"]["title"], "alice");
    assert_eq!(push.payload["aps"]["alert"]["body"], "hello bob");
    assert_eq!(push.titan("type"), Some("message"));
    assert_eq!(push.titan("from"), Some("alice"));
    let id = push.titan("id").unwrap().to_owned();

    // The message itself arrives over the WebSocket when the phone connects.
    let iphone = s.server.client("bob", Some("iphone")).await;
    let d = next(&iphone).await;
    assert_eq!(d.message_ids(), vec![id.as_str()]);
    d.ack().await.unwrap();
    go_offline(&s.server, &alice, iphone).await;

    alice.send("bob", "again").await.unwrap();
    let again = s.mock.next_send().await;
    assert_eq!(again.payload["aps"]["alert"]["body"], "again");
    assert_eq!(again.bearer, push.bearer, "one provider token serves both");
    assert_eq!(s.mock.rejected_tokens(), 0);

    wait_for_pushes(s.server.addr, "apns", "sent_content", 2.0).await;
}

/// A message over the 4 KiB payload limit goes as the content-free alert with the collapse id,
/// and whole over the WebSocket.
#[actix_rt::test]
async fn large_message_is_pushed_content_free_with_a_collapse_id() {
    let mut s = start(|_| {});
    let alice = s.server.client("alice", None).await;
    let iphone = registered(&s.server, "bob", "iphone", "apns", "a1b2c3d4").await;
    go_offline(&s.server, &alice, iphone).await;

    let big = "x".repeat(5000);
    alice.send("bob", &big).await.unwrap();
    let push = s.mock.next_send().await;
    assert_eq!(push.titan("type"), Some("new_messages"));
    assert_eq!(push.payload["aps"]["alert"], "New messages");
    assert_eq!(push.header("apns-collapse-id"), Some("titan-new-messages"));
    assert!(push.payload.to_string().len() < 1024);

    let iphone = s.server.client("bob", Some("iphone")).await;
    assert_eq!(next(&iphone).await.messages[0].message, big);
}

/// APNs' 410 `Unregistered` forgets the token: the next message is not pushed.
#[actix_rt::test]
async fn unregistered_token_is_forgotten() {
    let mut s = start(|_| {});
    let alice = s.server.client("alice", None).await;
    let iphone = registered(&s.server, "bob", "iphone", "apns", "dead-token").await;
    go_offline(&s.server, &alice, iphone).await;

    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    s.mock.answer_next(Reply::unregistered(now_ms));
    alice.send("bob", "m1").await.unwrap();
    assert_eq!(s.mock.next_send().await.token, "dead-token");
    wait_for_pushes(s.server.addr, "apns", "unregistered", 1.0).await;
    alice.send("bob", "m2").await.unwrap();
    s.mock.assert_no_send(SILENCE).await;
}

/// `ExpiredProviderToken` makes the provider sign a new token and send again at once; 503 is
/// retried after a backoff; both pushes end as sent.
#[actix_rt::test]
async fn expired_provider_token_and_unavailable_are_retried() {
    let mut s = start(|_| {});
    let alice = s.server.client("alice", None).await;
    let iphone = registered(&s.server, "bob", "iphone", "apns", "a1b2c3d4").await;
    go_offline(&s.server, &alice, iphone).await;

    s.mock.answer_next(Reply::expired_provider_token());
    alice.send("bob", "m1").await.unwrap();
    let refused = s.mock.next_send().await;
    let resent = s.mock.next_send().await;
    assert_eq!(resent.payload, refused.payload);

    s.mock.answer_next(Reply::service_unavailable());
    alice.send("bob", "m2").await.unwrap();
    let first = s.mock.next_send().await;
    let retry = s.mock.next_send().await;
    assert_eq!(first.payload["aps"]["alert"]["body"], "m2");
    assert_eq!(retry.payload, first.payload);
    s.mock.assert_no_send(SILENCE).await;

    wait_for_pushes(s.server.addr, "apns", "sent_content", 2.0).await;
    assert_eq!(s.mock.rejected_tokens(), 0);
}
