//! Offline delivery by push, end to end: the real server with FCM configured against a loopback
//! mock (token endpoint checking the RS256 assertion, send endpoint recording every push),
//! clients over real WebSockets.

use crate::common;
use crate::mock_fcm;
use crate::redis_server;

use common::push::{go_offline, registered, wait_for_pushes};
use common::{TestServer, next, wait_until};
use mock_fcm::{MockFcm, Reply};
use serde_json::json;
use std::time::Duration;
use titan_client::{Client, Outgoing};
use titan_server::Config;

/// How long silence must last to count as "no (further) push": several backoffs long.
const SILENCE: Duration = Duration::from_millis(800);

/// A server whose FCM provider talks to a fresh mock.
struct Setup {
    mock: MockFcm,
    server: TestServer,
    _dir: tempfile::TempDir,
}

fn start(tweak: impl FnOnce(&mut Config)) -> Setup {
    let mock = MockFcm::start();
    let dir = tempfile::tempdir().unwrap();
    let key_file = mock.write_service_account(dir.path());
    let base = mock.base.clone();
    let server = TestServer::start_with(|c| {
        c.push.fcm.service_account_file = key_file;
        c.push.fcm.api_base = base;
        c.push.initial_backoff = Duration::from_millis(50);
        c.push.max_backoff = Duration::from_millis(200);
        tweak(c);
    });
    Setup {
        mock,
        server,
        _dir: dir,
    }
}

/// An offline device with a token gets one push carrying the message; when it connects the
/// message arrives over the WebSocket with the same id; redelivery does not push again; and
/// one access token serves every push.
#[actix_rt::test]
async fn offline_device_is_pushed_once_with_the_message() {
    let mut s = start(|_| {});
    let alice = s.server.client("alice", None).await;
    let phone = registered(&s.server, "bob", "phone", "fcm", "tok-phone").await;
    go_offline(&s.server, &alice, phone).await;

    alice.send("bob", "hello bob").await.unwrap();
    let push = s.mock.next_send().await;
    assert_eq!(push.token(), "tok-phone");
    assert_eq!(push.data("type"), Some("message"));
    assert_eq!(push.data("from"), Some("alice"));
    assert_eq!(push.data("message"), Some("hello bob"));
    let id = push.data("id").unwrap().to_owned();
    assert!(push.data("time").is_some());

    // Connect, receive without acking, go away: the message stays pending, nobody re-pushes it.
    let phone = s.server.client("bob", Some("phone")).await;
    let d = next(&phone).await;
    assert_eq!(d.message_ids(), vec![id.as_str()]);
    go_offline(&s.server, &alice, phone).await;
    s.mock.assert_no_send(SILENCE).await;
    let phone = s.server.client("bob", Some("phone")).await;
    let again = next(&phone).await;
    assert_eq!(again.message_ids(), vec![id.as_str()]);
    again.ack().await.unwrap();
    go_offline(&s.server, &alice, phone).await;

    // Many pushes, one access token.
    let batch: Vec<_> = (0..5)
        .map(|i| Outgoing::new("bob", format!("m{i}")))
        .collect();
    alice.send_many(&batch).await.unwrap();
    let mut bodies = Vec::new();
    for _ in 0..5 {
        bodies.push(s.mock.next_send().await.data("message").unwrap().to_owned());
    }
    bodies.sort();
    assert_eq!(bodies, ["m0", "m1", "m2", "m3", "m4"]);
    assert_eq!(s.mock.token_requests(), 1);
    assert_eq!(s.mock.rejected_assertions(), 0);

    // The six pushes show on /metrics, by provider and outcome.
    wait_for_pushes(s.server.addr, "fcm", "sent_content", 6.0).await;
}

/// A message over the 4 KiB payload limit is announced content-free with a collapse key, and
/// delivered whole over the WebSocket.
#[actix_rt::test]
async fn large_message_is_pushed_content_free() {
    let mut s = start(|_| {});
    let alice = s.server.client("alice", None).await;
    let phone = registered(&s.server, "bob", "phone", "fcm", "tok-phone").await;
    go_offline(&s.server, &alice, phone).await;

    let big = "x".repeat(5000);
    alice.send("bob", &big).await.unwrap();
    let push = s.mock.next_send().await;
    assert_eq!(push.data("type"), Some("new_messages"));
    assert_eq!(push.data("message"), None);
    assert_eq!(
        push.message["android"]["collapse_key"],
        "titan-new-messages"
    );
    assert!(push.message.to_string().len() < 1024);

    let phone = s.server.client("bob", Some("phone")).await;
    let d = next(&phone).await;
    assert_eq!(d.messages[0].message, big);
}

/// A connected device is not pushed (it gets the message over its WebSocket); the same
/// user's offline device is.
#[actix_rt::test]
async fn connected_device_is_not_pushed() {
    let mut s = start(|_| {});
    let alice = s.server.client("alice", None).await;
    let phone = registered(&s.server, "bob", "phone", "fcm", "tok-phone").await;
    let tablet = registered(&s.server, "bob", "tablet", "fcm", "tok-tablet").await;
    go_offline(&s.server, &alice, tablet).await;

    alice.send("bob", "hi").await.unwrap();
    assert_eq!(next(&phone).await.messages[0].message, "hi");
    assert_eq!(s.mock.next_send().await.token(), "tok-tablet");
    s.mock.assert_no_send(SILENCE).await;
}

/// FCM answering 503 once is retried once after the backoff, with the same message.
#[actix_rt::test]
async fn unavailable_then_success_is_retried_once() {
    let mut s = start(|_| {});
    let alice = s.server.client("alice", None).await;
    let phone = registered(&s.server, "bob", "phone", "fcm", "tok-phone").await;
    go_offline(&s.server, &alice, phone).await;

    s.mock.answer_next(Reply::unavailable());
    alice.send("bob", "retry me").await.unwrap();
    let first = s.mock.next_send().await;
    let second = s.mock.next_send().await;
    assert_eq!(first.data("id"), second.data("id"));
    assert_eq!(second.data("message"), Some("retry me"));
    s.mock.assert_no_send(SILENCE).await;
}

/// A 401 makes the provider fetch a fresh access token once and send again.
#[actix_rt::test]
async fn unauthenticated_refreshes_the_access_token_once() {
    let mut s = start(|_| {});
    let alice = s.server.client("alice", None).await;
    let phone = registered(&s.server, "bob", "phone", "fcm", "tok-phone").await;
    go_offline(&s.server, &alice, phone).await;

    s.mock.answer_next(Reply::unauthenticated());
    alice.send("bob", "again").await.unwrap();
    let first = s.mock.next_send().await;
    let second = s.mock.next_send().await;
    assert_eq!(first.data("id"), second.data("id"));
    s.mock.assert_no_send(SILENCE).await;
    assert_eq!(s.mock.token_requests(), 2);
}

/// A 400 INVALID_ARGUMENT is neither retried nor a reason to forget the token.
#[actix_rt::test]
async fn invalid_argument_is_not_retried_and_keeps_the_token() {
    let mut s = start(|_| {});
    let alice = s.server.client("alice", None).await;
    let phone = registered(&s.server, "bob", "phone", "fcm", "tok-phone").await;
    go_offline(&s.server, &alice, phone).await;

    s.mock.answer_next(Reply::invalid_argument());
    alice.send("bob", "refused").await.unwrap();
    assert_eq!(s.mock.next_send().await.data("message"), Some("refused"));
    s.mock.assert_no_send(SILENCE).await;
    alice.send("bob", "accepted").await.unwrap();
    assert_eq!(s.mock.next_send().await.data("message"), Some("accepted"));
}

/// `push.after_unacked`: a connected device that receives a message and does not ack it is
/// pushed that message once the delay is up; acked messages are not pushed.
#[actix_rt::test]
async fn connected_device_that_does_not_ack_is_pushed_after_the_delay() {
    let mut s = start(|c| c.push.after_unacked = Duration::from_secs(1));
    let alice = s.server.client("alice", None).await;
    let phone = registered(&s.server, "bob", "phone", "fcm", "tok-phone").await;

    alice.send("bob", "read at once").await.unwrap();
    next(&phone).await.ack().await.unwrap();
    alice.send("bob", "left unread").await.unwrap();
    let unread = next(&phone).await;
    let push = s.mock.next_send().await;
    assert_eq!(push.token(), "tok-phone");
    assert_eq!(push.data("message"), Some("left unread"));
    assert_eq!(push.data("id"), Some(unread.message_ids()[0]));
    unread.ack().await.unwrap();
    s.mock.assert_no_send(Duration::from_millis(1500)).await;
}

/// `push.include_content = false` never puts the message in the push.
#[actix_rt::test]
async fn private_mode_pushes_no_content() {
    let mut s = start(|c| c.push.include_content = false);
    let alice = s.server.client("alice", None).await;
    let phone = registered(&s.server, "bob", "phone", "fcm", "tok-phone").await;
    go_offline(&s.server, &alice, phone).await;
    alice.send("bob", "secret").await.unwrap();
    let push = s.mock.next_send().await;
    assert_eq!(push.data("type"), Some("new_messages"));
    assert!(!push.message.to_string().contains("secret"));
}

/// Bad registrations get clear errors: an unconfigured platform or malformed params -32602,
/// before authentication -32001. Unregistering stops pushes.
#[actix_rt::test]
async fn registration_errors_and_unregister() {
    let mut s = start(|_| {});
    let anonymous = Client::connect(&s.server.url).await.unwrap();
    let err = anonymous
        .call("push.register", json!({"platform": "fcm", "token": "t"}))
        .await
        .unwrap_err();
    assert_eq!(err.rpc_code(), Some(-32001));

    let alice = s.server.client("alice", None).await;
    let phone = s.server.client("bob", Some("phone")).await;
    for params in [
        json!({"platform": "apns", "token": "t"}),
        json!({"platform": "gcm", "token": "t"}),
        json!({"platform": "fcm", "token": ""}),
        json!({"platform": "fcm", "token": "has space"}),
        json!(["fcm", "t"]),
    ] {
        let err = phone
            .call("push.register", params.clone())
            .await
            .unwrap_err();
        assert_eq!(err.rpc_code(), Some(-32602), "{params}");
    }
    let p = json!({"platform": "fcm", "token": "tok-phone"});
    phone.call("push.register", p.clone()).await.unwrap();
    assert_eq!(
        phone.call("push.unregister", p.clone()).await.unwrap(),
        json!("ACK")
    );
    // Unregistering again is fine: the end state is the one asked for.
    assert_eq!(
        phone.call("push.unregister", p).await.unwrap(),
        json!("ACK")
    );
    go_offline(&s.server, &alice, phone).await;
    alice.send("bob", "nobody pushes this").await.unwrap();
    s.mock.assert_no_send(SILENCE).await;
}

/// With the Redis store: FCM's UNREGISTERED removes the token from the store, and the next
/// message is not pushed.
#[actix_rt::test]
async fn unregistered_token_is_removed() {
    let redis = redis_server::RedisServer::start(redis_server::ServerConfig::default());
    let prefix = redis_server::fresh_prefix();
    let (url, key_prefix) = (redis.url(), prefix.clone());
    let mut s = start(move |c| {
        c.store.backend = titan_server::config::Backend::Redis;
        c.store.redis_url = url;
        c.store.key_prefix = key_prefix;
    });
    let mut raw = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let alice = s.server.client("alice", None).await;
    let phone = registered(&s.server, "bob", "phone", "fcm", "tok-dead").await;
    phone.close().await.unwrap();
    // Offline everywhere once the cluster presence of the device is released.
    let presence = format!("{prefix}:{{bob}}:presence");
    wait_until(|| {
        let mut raw = raw.clone();
        let presence = presence.clone();
        async move {
            let held: bool = redis::cmd("HEXISTS")
                .arg(&presence)
                .arg("phone")
                .query_async(&mut raw)
                .await
                .unwrap();
            !held
        }
    })
    .await;

    s.mock.answer_next(Reply::unregistered());
    alice.send("bob", "m1").await.unwrap();
    assert_eq!(s.mock.next_send().await.token(), "tok-dead");
    let tokens = format!("{prefix}:{{bob}}:push");
    wait_until(|| {
        let mut raw = raw.clone();
        let tokens = tokens.clone();
        async move {
            let n: u64 = redis::cmd("HLEN")
                .arg(&tokens)
                .query_async(&mut raw)
                .await
                .unwrap();
            n == 0
        }
    })
    .await;
    let owner: Option<String> = redis::cmd("GET")
        .arg(format!("{prefix}:pushtoken:fcm:tok-dead"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(owner, None);

    alice.send("bob", "m2").await.unwrap();
    s.mock.assert_no_send(SILENCE).await;
    drop(s);
}

/// Starts the real server with `config` and returns its start error (it must fail at once).
fn start_error(config: Config) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let result = std::thread::spawn(move || {
        actix_rt::System::new().block_on(titan_server::run(listener, config, async {}))
    })
    .join()
    .unwrap();
    result.expect_err("the server started").to_string()
}

/// Unusable push key files stop the server at start with a message naming the key; a real
/// P-256 `.p8` key and a real service account enable both providers.
#[test]
fn push_key_files_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let base = common::test_config(dir.path());

    let mut c = base.clone();
    c.push.fcm.service_account_file = dir.path().join("missing.json");
    let e = start_error(c);
    assert!(e.contains("push.fcm.service_account_file"), "{e}");

    let not_a_key = dir.path().join("not-a-key.json");
    std::fs::write(&not_a_key, r#"{"project_id": "p"}"#).unwrap();
    let mut c = base.clone();
    c.push.fcm.service_account_file = not_a_key.clone();
    let e = start_error(c);
    assert!(e.contains("not a service-account key file"), "{e}");

    let mut c = base.clone();
    c.push.apns.key_file = not_a_key;
    c.push.apns.key_id = "KEYID".into();
    c.push.apns.team_id = "TEAMID".into();
    c.push.apns.topic = "com.example.app".into();
    let e = start_error(c.clone());
    assert!(e.contains("push.apns.key_file"), "{e}");

    // Real keys: both providers come up (nothing is sent, so no network is used).
    let p8 = dir.path().join("AuthKey.p8");
    std::fs::write(&p8, common::keys::EcKey::generate().private_pem()).unwrap();
    let mock = MockFcm::start();
    c.push.apns.key_file = p8;
    c.push.fcm.service_account_file = mock.write_service_account(dir.path());
    let providers = c.push.providers(Duration::from_secs(60)).unwrap();
    let mut platforms: Vec<_> = providers.iter().map(|p| p.platform().to_string()).collect();
    platforms.sort();
    assert_eq!(platforms, ["apns", "fcm"]);
}

/// Out-of-range `[push]` values are refused when the configuration loads, naming the key.
#[test]
// `Jail`'s closures return figment's (large) error type; that is its API, not ours.
#[allow(clippy::result_large_err)]
fn push_config_is_validated() {
    for (key, value, named) in [
        ("TITAN__PUSH__MAX_IN_FLIGHT", "0", "push.max_in_flight"),
        ("TITAN__PUSH__MAX_ATTEMPTS", "0", "push.max_attempts"),
        ("TITAN__PUSH__MAX_BACKOFF", "1ms", "push.max_backoff"),
        (
            "TITAN__PUSH__FCM__API_BASE",
            "fcm.example",
            "push.fcm.api_base",
        ),
        ("TITAN__PUSH__APNS__KEY_FILE", "/k.p8", "push.apns.key_id"),
        ("TITAN__PUSH__AFTER_UNACKED", "500ms", "push.after_unacked"),
        (
            "TITAN__PUSH__APNS__API_BASE",
            "api.push.apple.com",
            "push.apns.api_base",
        ),
    ] {
        figment::Jail::expect_with(|jail| {
            jail.set_env(key, value);
            let e = Config::load(None).unwrap_err().to_string();
            assert!(e.contains(named), "{key}: {e}");
            Ok(())
        });
    }
    figment::Jail::expect_with(|jail| {
        jail.set_env("TITAN__PUSH__UNKNOWN", "1");
        assert!(Config::load(None).is_err());
        Ok(())
    });
}
