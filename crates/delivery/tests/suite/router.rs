//! Actor tests of the Router, with collector actors standing in for sessions.

use crate::collector;

use actix::Actor;
use collector::{Event, Probe, bodies, device, dispatcher, submit, user};
use std::time::Duration;
use titan_delivery::router::{GetPresence, Presence};
use titan_delivery::{Attach, Detach, DispatcherConfig, Router};
use titan_protocol::CloseCode;

fn attach(router: &actix::Addr<Router>, probe: &Probe, u: &str, d: &str) {
    router.do_send(Attach {
        user: user(u),
        device: device(d),
        conn: probe.conn,
        deliver: probe.deliver(),
        kick: probe.kick(),
    });
}

fn detach(router: &actix::Addr<Router>, probe: &Probe, u: &str, d: &str) {
    router.do_send(Detach {
        user: user(u),
        device: device(d),
        conn: probe.conn,
    });
}

/// A second session of the same (user, device) wins: the older one is kicked with Replaced, the
/// newer one is not kicked, and another device of the same user is left alone.
#[actix_rt::test]
async fn newer_session_kicks_older_with_replaced() {
    let router = Router::new(dispatcher(DispatcherConfig::default())).start();
    let mut old = Probe::start();
    let mut new = Probe::start();
    let mut laptop = Probe::start();
    attach(&router, &old, "bob", "phone");
    attach(&router, &laptop, "bob", "laptop");
    attach(&router, &new, "bob", "phone");
    assert!(matches!(old.next().await, Event::Kick(CloseCode::Replaced)));
    assert_eq!(
        router.send(GetPresence).await.unwrap(),
        Presence {
            users: 1,
            devices: 2
        }
    );
    assert!(new.within(Duration::from_millis(200)).await.is_none());
    assert!(laptop.within(Duration::from_millis(10)).await.is_none());
}

/// The replaced session's Detach, arriving after its successor attached, removes nothing: the
/// newer session stays online and keeps receiving messages. Its own Detach then does remove it.
#[actix_rt::test]
async fn late_detach_of_replaced_session_keeps_newer() {
    let d = dispatcher(DispatcherConfig::default());
    let router = Router::new(d.clone()).start();
    let mut old = Probe::start();
    let mut new = Probe::start();
    attach(&router, &old, "bob", "phone");
    attach(&router, &new, "bob", "phone");
    assert!(matches!(old.next().await, Event::Kick(CloseCode::Replaced)));
    detach(&router, &old, "bob", "phone");
    assert_eq!(
        router.send(GetPresence).await.unwrap(),
        Presence {
            users: 1,
            devices: 1
        }
    );
    submit(&d, "alice", "bob", &bodies(1)).await;
    let got = new.next_delivery().await;
    assert_eq!(got[0].message.decode().unwrap().message, "m0");
    assert!(old.within(Duration::from_millis(200)).await.is_none());
    detach(&router, &new, "bob", "phone");
    assert_eq!(router.send(GetPresence).await.unwrap(), Presence::default());
}

/// RevokeUser records the revocation and closes every live session of that user (and no
/// other user's) with Revoked; a session attaching afterwards with an older token is closed by
/// CheckRevoked, one with a newer token is not.
#[actix_rt::test]
async fn revocation_closes_the_users_sessions() {
    use std::sync::Arc;
    use titan_delivery::{CheckRevoked, RevokeUser};
    use titan_store::RevocationList;
    let list = Arc::new(RevocationList::default());
    let router = Router::new(dispatcher(DispatcherConfig::default()))
        .with_revocations(list.clone())
        .start();
    let mut phone = Probe::start();
    let mut laptop = Probe::start();
    let mut other = Probe::start();
    attach(&router, &phone, "bob", "phone");
    attach(&router, &laptop, "bob", "laptop");
    attach(&router, &other, "carol", "phone");
    router.do_send(RevokeUser {
        user: user("bob"),
        at_ms: 10_000_500,
    });
    assert!(matches!(
        phone.next().await,
        Event::Kick(CloseCode::Revoked)
    ));
    assert!(matches!(
        laptop.next().await,
        Event::Kick(CloseCode::Revoked)
    ));
    assert!(list.is_revoked(&user("bob"), 10_000));
    let mut late = Probe::start();
    attach(&router, &late, "bob", "tablet");
    router.do_send(CheckRevoked {
        user: user("bob"),
        issued_at: 10_000,
        kick: late.kick(),
    });
    assert!(matches!(late.next().await, Event::Kick(CloseCode::Revoked)));
    let mut fresh = Probe::start();
    attach(&router, &fresh, "bob", "watch");
    router.do_send(CheckRevoked {
        user: user("bob"),
        issued_at: 10_001,
        kick: fresh.kick(),
    });
    assert!(fresh.within(Duration::from_millis(200)).await.is_none());
    assert!(other.within(Duration::from_millis(10)).await.is_none());
}
