//! Checks of the [`PushRegistry`]: registration, replacement, moving tokens between holders,
//! and the guarded removal providers use.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use titan_protocol::{PushPlatform, PushToken};

use super::{CheckFuture, device, user};
use crate::push_tokens::PushRegistry;

/// One push registry check.
pub struct PushCheck {
    pub name: &'static str,
    pub run: fn(Arc<dyn PushRegistry>) -> CheckFuture,
}

/// Every push registry check, in a stable order.
pub fn push_checks() -> Vec<PushCheck> {
    macro_rules! check {
        ($name:ident) => {
            PushCheck {
                name: stringify!($name),
                run: |registry| Box::pin($name(registry)),
            }
        };
    }
    vec![
        check!(push_register_list_and_unregister),
        check!(push_reregister_replaces_the_device_token),
        check!(push_token_moves_to_its_new_holder),
        check!(push_remove_honours_registration_time),
    ]
}

/// Runs every push check, each on a fresh registry from `make()`. Panics naming the failed one.
pub async fn run_push_all<F, Fut>(mut make: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<dyn PushRegistry>>,
{
    for check in push_checks() {
        let registry = make().await;
        if let Err(e) = tokio::spawn((check.run)(registry)).await {
            panic!("push conformance check `{}` failed: {e}", check.name);
        }
    }
}

fn token(s: &str) -> PushToken {
    PushToken::new(s).unwrap()
}

/// A time with whole milliseconds, which every backend keeps exactly.
fn at(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

/// A registered token is listed with its platform and time; unregistering it with other params
/// does nothing, with the same params removes it.
pub async fn push_register_list_and_unregister(registry: Arc<dyn PushRegistry>) {
    let (bob, phone, tablet) = (user("bob"), device("phone"), device("tablet"));
    assert!(registry.push_devices(&bob).await.unwrap().is_empty());
    registry
        .register_push(&bob, &phone, PushPlatform::Fcm, &token("f1"), at(1_000))
        .await
        .unwrap();
    registry
        .register_push(&bob, &tablet, PushPlatform::Apns, &token("a1"), at(2_000))
        .await
        .unwrap();
    let listed = registry.push_devices(&bob).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(
        (
            listed[0].device.as_str(),
            listed[0].platform,
            listed[0].token.as_str()
        ),
        ("phone", PushPlatform::Fcm, "f1")
    );
    assert_eq!(listed[0].registered_at, at(1_000));
    assert_eq!(
        (
            listed[1].device.as_str(),
            listed[1].platform,
            listed[1].token.as_str()
        ),
        ("tablet", PushPlatform::Apns, "a1")
    );
    assert!(
        registry
            .push_devices(&user("alice"))
            .await
            .unwrap()
            .is_empty()
    );

    let wrong = [(PushPlatform::Apns, "f1"), (PushPlatform::Fcm, "other")];
    for (platform, t) in wrong {
        assert!(
            !registry
                .unregister_push(&bob, &phone, platform, &token(t))
                .await
                .unwrap()
        );
    }
    assert!(
        registry
            .unregister_push(&bob, &phone, PushPlatform::Fcm, &token("f1"))
            .await
            .unwrap()
    );
    let listed = registry.push_devices(&bob).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].device.as_str(), "tablet");
    // The token is free again: registering it elsewhere does not disturb anyone.
    registry
        .register_push(&bob, &phone, PushPlatform::Fcm, &token("f1"), at(3_000))
        .await
        .unwrap();
    assert_eq!(registry.push_devices(&bob).await.unwrap().len(), 2);
}

/// Registering again replaces the device's token (even across platforms); the old token no
/// longer belongs to the device, so removing it changes nothing.
pub async fn push_reregister_replaces_the_device_token(registry: Arc<dyn PushRegistry>) {
    let (bob, phone) = (user("bob"), device("phone"));
    registry
        .register_push(&bob, &phone, PushPlatform::Fcm, &token("old"), at(1_000))
        .await
        .unwrap();
    registry
        .register_push(&bob, &phone, PushPlatform::Apns, &token("new"), at(2_000))
        .await
        .unwrap();
    let listed = registry.push_devices(&bob).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            listed[0].platform,
            listed[0].token.as_str(),
            listed[0].registered_at
        ),
        (PushPlatform::Apns, "new", at(2_000))
    );
    assert!(
        !registry
            .remove_push(&bob, &phone, PushPlatform::Fcm, &token("old"), None)
            .await
            .unwrap()
    );
    // The old token can be registered by someone else without touching bob.
    registry
        .register_push(
            &user("carol"),
            &phone,
            PushPlatform::Fcm,
            &token("old"),
            at(3_000),
        )
        .await
        .unwrap();
    assert_eq!(registry.push_devices(&bob).await.unwrap().len(), 1);
}

/// The same token registered by another user (or another device) is removed from the first.
pub async fn push_token_moves_to_its_new_holder(registry: Arc<dyn PushRegistry>) {
    let (alice, bob, phone, tablet) = (
        user("alice"),
        user("bob"),
        device("phone"),
        device("tablet"),
    );
    registry
        .register_push(
            &alice,
            &phone,
            PushPlatform::Fcm,
            &token("shared"),
            at(1_000),
        )
        .await
        .unwrap();
    registry
        .register_push(&bob, &phone, PushPlatform::Fcm, &token("shared"), at(2_000))
        .await
        .unwrap();
    assert!(registry.push_devices(&alice).await.unwrap().is_empty());
    assert_eq!(registry.push_devices(&bob).await.unwrap().len(), 1);

    registry
        .register_push(
            &bob,
            &tablet,
            PushPlatform::Fcm,
            &token("shared"),
            at(3_000),
        )
        .await
        .unwrap();
    let listed = registry.push_devices(&bob).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].device.as_str(), "tablet");

    // Re-registering the same token on the same device only moves its time.
    registry
        .register_push(
            &bob,
            &tablet,
            PushPlatform::Fcm,
            &token("shared"),
            at(4_000),
        )
        .await
        .unwrap();
    let listed = registry.push_devices(&bob).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].registered_at, at(4_000));
    // And the token is still known as bob's: moving it to alice removes it from bob.
    registry
        .register_push(
            &alice,
            &phone,
            PushPlatform::Fcm,
            &token("shared"),
            at(5_000),
        )
        .await
        .unwrap();
    assert!(registry.push_devices(&bob).await.unwrap().is_empty());
}

/// A provider's "unregistered at T" removes a token registered before T, and not one
/// registered again at or after T.
pub async fn push_remove_honours_registration_time(registry: Arc<dyn PushRegistry>) {
    let (bob, phone) = (user("bob"), device("phone"));
    let t = token("apns-token");
    registry
        .register_push(&bob, &phone, PushPlatform::Apns, &t, at(5_000))
        .await
        .unwrap();
    assert!(
        !registry
            .remove_push(&bob, &phone, PushPlatform::Apns, &t, Some(at(5_000)))
            .await
            .unwrap()
    );
    assert!(
        !registry
            .remove_push(&bob, &phone, PushPlatform::Apns, &t, Some(at(4_000)))
            .await
            .unwrap()
    );
    assert_eq!(registry.push_devices(&bob).await.unwrap().len(), 1);
    assert!(
        registry
            .remove_push(&bob, &phone, PushPlatform::Apns, &t, Some(at(5_001)))
            .await
            .unwrap()
    );
    assert!(registry.push_devices(&bob).await.unwrap().is_empty());
    assert!(
        !registry
            .remove_push(&bob, &phone, PushPlatform::Apns, &t, None)
            .await
            .unwrap()
    );
}
