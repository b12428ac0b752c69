//! The instance-wide registry on its own: capacity freed by guards, origins, quotas, drain.

#![allow(clippy::unwrap_used)]

use super::*;
use actix_web::test::TestRequest;

fn registry(limits: ConnectionLimits) -> Connections {
    Connections::new(limits, Metrics::new())
}

fn request(origin: Option<&str>) -> HttpRequest {
    let mut r = TestRequest::default().peer_addr("127.0.0.1:5000".parse().unwrap());
    if let Some(o) = origin {
        r = r.insert_header((header::ORIGIN, o));
    }
    r.to_http_request()
}

/// The instance limit refuses the connection past it; dropping a guard makes room again.
#[test]
fn capacity_is_freed_by_the_guard() {
    let c = registry(ConnectionLimits {
        max_connections: 1,
        ..ConnectionLimits::default()
    });
    let first = c.admit(&request(None)).unwrap();
    assert_eq!(c.admit(&request(None)).err(), Some(Refusal::Full));
    assert_eq!(c.open(), 1);
    drop(first);
    assert_eq!(c.open(), 0);
    assert!(c.admit(&request(None)).is_ok());
}

/// Only listed origins (any case) pass when a list is set; no Origin header always passes.
#[test]
fn origins() {
    let c = registry(ConnectionLimits {
        allowed_origins: vec!["https://a.example".into()],
        ..ConnectionLimits::default()
    });
    assert!(c.admit(&request(Some("https://A.example"))).is_ok());
    assert!(c.admit(&request(None)).is_ok());
    assert_eq!(
        c.admit(&request(Some("https://b.example"))).err(),
        Some(Refusal::Origin)
    );
    let open = registry(ConnectionLimits::default());
    assert!(open.admit(&request(Some("https://b.example"))).is_ok());
}

/// The per-IP connection rate counts an IPv6 client's /64 as one address (rotating addresses
/// within it runs the one bucket dry), while distinct /64s and distinct IPv4 addresses each
/// have their own (every first connection of one is admitted, however slow the machine).
#[test]
fn per_ip_rate_counts_an_ipv6_64_as_one_address() {
    let c = registry(ConnectionLimits {
        connections_per_ip_per_second: 1,
        connection_burst: 1,
        ..ConnectionLimits::default()
    });
    let from = |peer: String| {
        TestRequest::default()
            .peer_addr(peer.parse().unwrap())
            .to_http_request()
    };
    let mut live = Vec::new();
    for i in 1..=40 {
        live.push(
            c.admit(&from(format!("[2001:db8:0:{i:x}::1]:5000")))
                .unwrap(),
        );
        live.push(c.admit(&from(format!("192.0.2.{i}:5000"))).unwrap());
    }
    // Other addresses of the first /64 (whose one connection took its bucket).
    let same_64 = (2..=41).map(|i| c.admit(&from(format!("[2001:db8:0:1::{i:x}]:5000"))));
    assert!(
        same_64
            .map(|r| r.map(|guard| live.push(guard)))
            .any(|r| matches!(r, Err(Refusal::RateLimited { .. }))),
        "addresses of one /64 each had a bucket of their own"
    );
}

/// A user's slots are limited and returned when the slot is dropped.
#[test]
fn user_slots() {
    let c = registry(ConnectionLimits {
        max_connections_per_user: 1,
        ..ConnectionLimits::default()
    });
    let alice = UserId::new("alice").unwrap();
    let slot = c.attach_user(&alice).unwrap();
    assert!(c.attach_user(&alice).is_none());
    assert!(c.attach_user(&UserId::new("bob").unwrap()).is_some());
    drop(slot);
    assert!(c.attach_user(&alice).is_some());
}

/// The send quota counts messages, not calls, and a refused call takes nothing.
#[test]
fn send_quota_counts_messages() {
    let c = registry(ConnectionLimits {
        messages_per_minute: 3,
        ..ConnectionLimits::default()
    });
    let alice = UserId::new("alice").unwrap();
    assert!(c.take_sends(&alice, 2).is_ok());
    assert!(c.take_sends(&alice, 2).is_err());
    assert!(c.take_sends(&alice, 1).is_ok());
    assert!(c.take_sends(&alice, 1).unwrap_err() > Duration::ZERO);
}

/// Hears what the drain sends a session.
struct Probe(tokio::sync::mpsc::UnboundedSender<Duration>);

impl actix::Actor for Probe {
    type Context = actix::Context<Self>;
}

impl actix::Handler<DrainTurn> for Probe {
    type Result = ();
    fn handle(&mut self, turn: DrainTurn, _: &mut actix::Context<Self>) {
        let _ = self.0.send(turn.after);
    }
}

/// Answered once the probe has handled everything sent to it before.
#[derive(actix::Message)]
#[rtype(result = "()")]
struct Settle;

impl actix::Handler<Settle> for Probe {
    type Result = ();
    fn handle(&mut self, _: Settle, _: &mut actix::Context<Self>) {}
}

/// Once the drain starts, new connections are refused and each registered session is sent its
/// turn within the window, once (a second start sends nothing); a session that registers after
/// the drain started is sent its turn at once, and one whose guard is gone is sent nothing.
/// `idle` resolves when the last connection is gone.
#[actix_rt::test]
async fn drain() {
    use actix::Actor;
    let c = registry(ConnectionLimits::default());
    let window = Duration::from_millis(50);
    let (tx, mut turns) = tokio::sync::mpsc::unbounded_channel();
    let probes: Vec<_> = (0..3).map(|_| Probe(tx.clone()).start()).collect();
    let mut early = c.admit(&request(None)).unwrap();
    early.register(probes[0].clone().recipient());
    let mut gone = c.admit(&request(None)).unwrap();
    gone.register(probes[1].clone().recipient());
    drop(gone);
    let mut late = c.admit(&request(None)).unwrap();

    c.start_drain(window);
    c.start_drain(window);
    assert!(c.is_draining());
    assert_eq!(c.admit(&request(None)).err(), Some(Refusal::Draining));
    let first = tokio::time::timeout(Duration::from_secs(10), turns.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(first < window, "{first:?}");

    late.register(probes[2].clone().recipient());
    let second = tokio::time::timeout(Duration::from_secs(10), turns.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(second < window, "{second:?}");
    for probe in &probes {
        probe.send(Settle).await.unwrap();
    }
    assert!(
        turns.try_recv().is_err(),
        "one turn per registered session, and none for `gone`"
    );
    drop((early, late));
    tokio::time::timeout(Duration::from_secs(10), c.idle())
        .await
        .unwrap();
}
