#![allow(clippy::unwrap_used)]
use super::*;
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

fn body(request: &Request) -> Value {
    serde_json::from_str(&request.body).unwrap()
}

fn classified(status: u16, reason: &str, timestamp: Option<u64>) -> PushError {
    let error = ErrorBody {
        reason: reason.to_owned(),
        timestamp,
    };
    match classify(status, Some(Duration::from_secs(7)), error, "bearer".into()) {
        Failure::Push(e) => e,
        Failure::ExpiredProviderToken { .. } => panic!("expired provider token"),
    }
}

/// A small message goes as an alert from the sender with the titan data; the exact JSON and
/// headers are pinned.
#[test]
fn content_payload_golden() {
    let m = message("hi bob");
    let (r, sent) = request(Some(&m), 1_900_000_000);
    assert_eq!(sent, Sent::Content);
    assert_eq!(
        body(&r),
        json!({
            "aps": {"alert": {"title": "alice", "body": "hi bob"}, "sound": "default",
                    "mutable-content": 1},
            "titan": {"type": "message", "id": "m1", "from": "alice",
                      "time": "2026-01-01T00:00:00.000Z"}
        })
    );
    assert_eq!(r.expires_unix, 1_900_000_000);
    assert!(!r.collapse);
}

/// A message over the 4096-byte limit, or no content at all, becomes the content-free alert
/// with the collapse id.
#[test]
fn content_free_payload_golden() {
    let big = message(&"x".repeat(4096));
    for content in [Some(&big), None] {
        let (r, sent) = request(content, 1);
        assert_eq!(sent, Sent::ContentFree);
        assert_eq!(
            body(&r),
            json!({
                "aps": {"alert": "New messages", "sound": "default", "mutable-content": 1},
                "titan": {"type": "new_messages"}
            })
        );
        assert!(r.collapse);
    }
}

/// A message just under the limit still carries its content.
#[test]
fn content_up_to_the_limit_is_carried() {
    let empty = message("");
    let overhead = request(Some(&empty), 1).0.body.len();
    let fits = message(&"y".repeat(PAYLOAD_LIMIT - overhead));
    assert_eq!(request(Some(&fits), 1).1, Sent::Content);
    let over = message(&"y".repeat(PAYLOAD_LIMIT - overhead + 1));
    assert_eq!(request(Some(&over), 1).1, Sent::ContentFree);
}

/// APNs answers map onto the pusher's actions: 410 keeps Apple's timestamp, bad tokens are
/// forgotten, 429/5xx retry, an expired provider token is renewed, credential problems and
/// malformed requests are not retried.
#[test]
fn errors_are_classified() {
    assert_eq!(
        classified(410, "Unregistered", Some(1_700_000_000_123)),
        PushError::Unregistered {
            at: Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123))
        }
    );
    assert_eq!(
        classified(410, "", None),
        PushError::Unregistered { at: None }
    );
    for reason in ["BadDeviceToken", "DeviceTokenNotForTopic"] {
        assert!(matches!(
            classified(400, reason, None),
            PushError::BadToken { .. }
        ));
    }
    for (status, reason) in [
        (429, "TooManyRequests"),
        (500, "InternalServerError"),
        (503, "ServiceUnavailable"),
        (503, "Shutdown"),
        (502, ""),
    ] {
        assert!(
            matches!(
                classified(status, reason, None),
                PushError::Retry { after: Some(d), .. } if d == Duration::from_secs(7)
            ),
            "{status} {reason}"
        );
    }
    for (status, reason) in [(403, "InvalidProviderToken"), (400, "BadTopic"), (403, "")] {
        assert!(
            matches!(classified(status, reason, None), PushError::Auth { .. }),
            "{status} {reason}"
        );
    }
    assert!(matches!(
        classified(413, "PayloadTooLarge", None),
        PushError::Invalid { reason } if reason.contains("PayloadTooLarge")
    ));
    let expired = ErrorBody {
        reason: "ExpiredProviderToken".into(),
        timestamp: None,
    };
    assert!(matches!(
        classify(403, None, expired, "stale".into()),
        Failure::ExpiredProviderToken { stale } if stale == "stale"
    ));
}
