#![allow(clippy::unwrap_used)]
use super::*;
use a2::{ErrorBody, Response};
use serde_json::Value;
use titan_protocol::{MessageId, UserId};

fn message(body: &str) -> Message {
    Message {
        id: MessageId::new("m1").unwrap(),
        from: UserId::new("alice").unwrap(),
        to: UserId::new("bob").unwrap(),
        time: "2026-01-01T00:00:00.000Z".to_owned(),
        message: body.to_owned(),
    }
}

fn response(code: u16, reason: Option<ErrorReason>, timestamp: Option<u64>) -> a2::Error {
    a2::Error::ResponseError(Response {
        error: reason.map(|reason| ErrorBody { reason, timestamp }),
        apns_id: None,
        code,
    })
}

/// A small message goes as an alert from the sender with the titan data; the exact JSON and
/// the headers' options are pinned.
#[test]
fn content_payload_golden() {
    let m = message("hi bob");
    let (p, sent) = payload("devtoken", Some(&m), "com.example.app", 1_900_000_000);
    assert_eq!(sent, Sent::Content);
    let json: Value = serde_json::from_str(&p.to_json_string().unwrap()).unwrap();
    assert_eq!(
        json,
        json!({
            "aps": {"alert": {"title": "alice", "body": "hi bob"}, "sound": "default",
                    "mutable-content": 1},
            "titan": {"type": "message", "id": "m1", "from": "alice",
                      "time": "2026-01-01T00:00:00.000Z"}
        })
    );
    assert_eq!(p.device_token, "devtoken");
    assert_eq!(p.options.apns_push_type, Some(PushType::Alert));
    assert!(matches!(p.options.apns_priority, Some(Priority::High)));
    assert_eq!(p.options.apns_expiration, Some(1_900_000_000));
    assert_eq!(p.options.apns_topic, Some("com.example.app"));
    assert!(p.options.apns_collapse_id.is_none());
}

/// A message over the 4096-byte limit, or no content at all, becomes the content-free alert
/// with the collapse id.
#[test]
fn content_free_payload_golden() {
    let big = message(&"x".repeat(4096));
    for content in [Some(&big), None] {
        let (p, sent) = payload("devtoken", content, "com.example.app", 1);
        assert_eq!(sent, Sent::ContentFree);
        let json: Value = serde_json::from_str(&p.to_json_string().unwrap()).unwrap();
        assert_eq!(
            json,
            json!({
                "aps": {"alert": "New messages", "sound": "default", "mutable-content": 1},
                "titan": {"type": "new_messages"}
            })
        );
        assert_eq!(p.options.apns_collapse_id.unwrap().value, COLLAPSE_KEY);
    }
}

/// A message just under the limit still carries its content.
#[test]
fn content_up_to_the_limit_is_carried() {
    let empty = message("");
    let (p, _) = payload("t", Some(&empty), "topic", 1);
    let overhead = p.to_json_string().unwrap().len();
    let fits = message(&"y".repeat(PAYLOAD_LIMIT - overhead));
    assert_eq!(payload("t", Some(&fits), "topic", 1).1, Sent::Content);
    let over = message(&"y".repeat(PAYLOAD_LIMIT - overhead + 1));
    assert_eq!(payload("t", Some(&over), "topic", 1).1, Sent::ContentFree);
}

/// APNs answers map onto the pusher's actions: 410 keeps Apple's timestamp, bad tokens are
/// forgotten, 429/5xx retry, credential problems and malformed requests are not retried.
#[test]
fn errors_are_classified() {
    assert_eq!(
        classify(response(
            410,
            Some(ErrorReason::Unregistered),
            Some(1_700_000_000_123)
        )),
        PushError::Unregistered {
            at: Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123))
        }
    );
    assert!(matches!(
        classify(response(400, Some(ErrorReason::BadDeviceToken), None)),
        PushError::BadToken { .. }
    ));
    for (code, reason) in [
        (429, ErrorReason::TooManyRequests),
        (500, ErrorReason::InternalServerError),
        (503, ErrorReason::ServiceUnavailable),
        (503, ErrorReason::Shutdown),
    ] {
        assert!(
            matches!(
                classify(response(code, Some(reason), None)),
                PushError::Retry { .. }
            ),
            "{code}"
        );
    }
    assert!(matches!(
        classify(response(403, Some(ErrorReason::InvalidProviderToken), None)),
        PushError::Auth { .. }
    ));
    assert!(matches!(
        classify(response(413, Some(ErrorReason::PayloadTooLarge), None)),
        PushError::Invalid { .. }
    ));
    assert!(matches!(
        classify(response(502, None, None)),
        PushError::Retry { .. }
    ));
    assert_eq!(
        classify(response(410, None, None)),
        PushError::Unregistered { at: None }
    );
    assert!(matches!(
        classify(a2::Error::RequestTimeout(20)),
        PushError::Retry { .. }
    ));
}
