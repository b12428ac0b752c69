//! Checks of the per-device side: cursors (`read_new`), pending sets (`ack`) and redelivery
//! (`claim_pending`).

use std::sync::Arc;
use std::time::SystemTime;

use super::{
    STORE_CLOCK_LAG, append_stored, assert_increasing, clock_past, device, live_read, message,
    message_with_client_id, positions, texts, user,
};
use titan_protocol::{DeviceId, UserId};

use crate::error::StoreError;
use crate::inbox::{Appended, DeviceAcks, Inbox, Position};

/// `ping` answers, an empty append stores nothing, and unknown users and devices read as empty.
pub async fn ping_and_empty_cases(inbox: Arc<dyn Inbox>) {
    let (bob, phone) = (user("bob"), device("phone"));
    inbox.ping().await.unwrap();
    assert!(inbox.append(Vec::new()).await.unwrap().is_empty());
    assert_eq!(inbox.depth(&bob).await.unwrap(), 0);
    assert!(inbox.read_new(&bob, &phone, 10).await.unwrap().is_empty());
    let later = clock_past(SystemTime::now()).await;
    let claimed = inbox
        .claim_pending(&bob, &phone, Some(later), None, 10)
        .await
        .unwrap();
    assert!(claimed.is_empty());
    assert_eq!(inbox.ack(&bob, &phone, &[]).await.unwrap(), 0);
    assert_eq!(inbox.trim().await.unwrap(), 0);
}

/// 100 messages appended in ten batches come back from `read_new` in order, unchanged.
pub async fn append_then_read_new_in_order(inbox: Arc<dyn Inbox>) {
    let (alice, bob, phone) = (user("alice"), user("bob"), device("phone"));
    let mut sent = Vec::new();
    let mut stored = Vec::new();
    for chunk in 0..10 {
        let batch: Vec<_> = (0..10)
            .map(|i| message(&alice, &bob, &format!("m{}", chunk * 10 + i)))
            .collect();
        sent.extend(batch.iter().map(|n| n.message.clone()));
        stored.extend(append_stored(&*inbox, batch).await);
    }
    assert_increasing(&stored);

    let got = inbox.read_new(&bob, &phone, 1000).await.unwrap();
    assert_eq!(positions(&got), stored);
    let got_messages: Vec<_> = got.iter().map(|d| d.message.decode().unwrap()).collect();
    assert_eq!(got_messages, sent);
}

/// Two devices of one user each receive every message, whatever the other has read.
pub async fn every_device_gets_every_message(inbox: Arc<dyn Inbox>) {
    let (alice, bob) = (user("alice"), user("bob"));
    let (phone, laptop) = (device("phone"), device("laptop"));
    let batch: Vec<_> = (0..10)
        .map(|i| message(&alice, &bob, &format!("m{i}")))
        .collect();
    let stored = append_stored(&*inbox, batch).await;

    let phone_first = inbox.read_new(&bob, &phone, 5).await.unwrap();
    let laptop_all = inbox.read_new(&bob, &laptop, 100).await.unwrap();
    let phone_rest = inbox.read_new(&bob, &phone, 100).await.unwrap();
    assert_eq!(positions(&laptop_all), stored);
    let phone_all: Vec<_> = positions(&phone_first)
        .into_iter()
        .chain(positions(&phone_rest))
        .collect();
    assert_eq!(phone_all, stored);
}

/// A device seen for the first time gets every retained message, even ones others acked.
pub async fn new_device_catches_up_on_retained(inbox: Arc<dyn Inbox>) {
    let (alice, bob) = (user("alice"), user("bob"));
    let (phone, tablet) = (device("phone"), device("tablet"));
    let batch: Vec<_> = (0..5)
        .map(|i| message(&alice, &bob, &format!("m{i}")))
        .collect();
    let stored = append_stored(&*inbox, batch).await;
    let read = inbox.read_new(&bob, &phone, 100).await.unwrap();
    assert_eq!(inbox.ack(&bob, &phone, &positions(&read)).await.unwrap(), 5);

    let caught_up = inbox.read_new(&bob, &tablet, 100).await.unwrap();
    assert_eq!(positions(&caught_up), stored);

    let next = append_stored(&*inbox, vec![message(&alice, &bob, "late")]).await;
    assert_eq!(
        positions(&inbox.read_new(&bob, &phone, 100).await.unwrap()),
        next
    );
    assert_eq!(
        positions(&inbox.read_new(&bob, &tablet, 100).await.unwrap()),
        next
    );
}

/// A device first seen while its inbox is empty still gets the messages appended afterwards.
pub async fn device_first_seen_on_empty_inbox_gets_later_messages(inbox: Arc<dyn Inbox>) {
    let (alice, bob, phone) = (user("alice"), user("bob"), device("phone"));
    assert!(inbox.read_new(&bob, &phone, 10).await.unwrap().is_empty());
    let stored = append_stored(
        &*inbox,
        vec![message(&alice, &bob, "a"), message(&alice, &bob, "b")],
    )
    .await;
    assert_eq!(
        positions(&inbox.read_new(&bob, &phone, 10).await.unwrap()),
        stored
    );
}

/// `read_new` returns at most `limit` and moves the cursor: the next call returns only newer ones.
pub async fn read_new_moves_the_cursor(inbox: Arc<dyn Inbox>) {
    let (alice, bob, phone) = (user("alice"), user("bob"), device("phone"));
    let first = append_stored(
        &*inbox,
        (0..3)
            .map(|i| message(&alice, &bob, &format!("m{i}")))
            .collect(),
    )
    .await;
    let page = inbox.read_new(&bob, &phone, 2).await.unwrap();
    assert_eq!(positions(&page), first[..2]);
    let page = inbox.read_new(&bob, &phone, 2).await.unwrap();
    assert_eq!(positions(&page), first[2..]);
    assert!(inbox.read_new(&bob, &phone, 2).await.unwrap().is_empty());

    let more = append_stored(
        &*inbox,
        vec![message(&alice, &bob, "m3"), message(&alice, &bob, "m4")],
    )
    .await;
    let page = inbox.read_new(&bob, &phone, 10).await.unwrap();
    assert_eq!(texts(&page), ["m3", "m4"]);
    assert_eq!(positions(&page), more);
    assert!(inbox.read_new(&bob, &phone, 10).await.unwrap().is_empty());
}

/// Acked positions leave the pending set: `claim_pending` no longer returns them.
pub async fn ack_removes_from_pending(inbox: Arc<dyn Inbox>) {
    let (alice, bob, phone) = (user("alice"), user("bob"), device("phone"));
    let stored = append_stored(
        &*inbox,
        (0..3)
            .map(|i| message(&alice, &bob, &format!("m{i}")))
            .collect(),
    )
    .await;
    inbox.read_new(&bob, &phone, 10).await.unwrap();
    let later = clock_past(SystemTime::now()).await;

    let acked = inbox
        .ack(&bob, &phone, &[stored[0], stored[2]])
        .await
        .unwrap();
    assert_eq!(acked, 2);
    let claimed = inbox
        .claim_pending(&bob, &phone, Some(later), None, 10)
        .await
        .unwrap();
    assert_eq!(positions(&claimed), [stored[1]]);
    assert_eq!(texts(&claimed), ["m1"]);
}

/// `ack_many` acks each device's own positions (and only those), ignores what `ack` ignores,
/// and counts what it removed in all.
pub async fn ack_many_acks_each_device(inbox: Arc<dyn Inbox>) {
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let (phone, laptop) = (device("phone"), device("laptop"));
    let to_bob = append_stored(
        &*inbox,
        (0..3)
            .map(|i| message(&alice, &bob, &format!("b{i}")))
            .collect(),
    )
    .await;
    let to_carol = append_stored(&*inbox, vec![message(&alice, &carol, "c0")]).await;
    inbox.read_new(&bob, &phone, 10).await.unwrap();
    inbox.read_new(&bob, &laptop, 10).await.unwrap();
    inbox.read_new(&carol, &phone, 10).await.unwrap();
    let later = clock_past(SystemTime::now()).await;

    let acks = |user: &UserId, device: &DeviceId, positions: &[Position]| DeviceAcks {
        user: user.clone(),
        device: device.clone(),
        positions: positions.to_vec(),
    };
    let forged = Position { ms: 1, seq: 999 };
    let removed = inbox
        .ack_many(vec![
            acks(&bob, &phone, &[to_bob[0], to_bob[2], forged]),
            acks(&carol, &phone, &to_carol),
            acks(&carol, &laptop, &to_carol),
            acks(&bob, &phone, &[]),
        ])
        .await
        .unwrap();
    assert_eq!(removed, 3);
    assert_eq!(inbox.ack_many(Vec::new()).await.unwrap(), 0);

    let claim = |user: UserId, device: DeviceId| {
        let inbox = inbox.clone();
        async move {
            let claimed = inbox
                .claim_pending(&user, &device, Some(later), None, 10)
                .await
                .unwrap();
            positions(&claimed)
        }
    };
    assert_eq!(claim(bob.clone(), phone.clone()).await, [to_bob[1]]);
    assert_eq!(claim(bob.clone(), laptop.clone()).await, to_bob);
    assert!(claim(carol.clone(), phone.clone()).await.is_empty());
}

/// Unknown, forged, repeated and already-acked positions are ignored by `ack`.
pub async fn ack_ignores_unknown_positions(inbox: Arc<dyn Inbox>) {
    let (alice, bob, phone) = (user("alice"), user("bob"), device("phone"));
    let forged = Position { ms: 1, seq: 999 };
    assert_eq!(inbox.ack(&bob, &phone, &[forged]).await.unwrap(), 0);

    let stored = append_stored(
        &*inbox,
        vec![message(&alice, &bob, "a"), message(&alice, &bob, "b")],
    )
    .await;
    // Not delivered to this device yet: nothing pending to remove.
    assert_eq!(inbox.ack(&bob, &phone, &stored).await.unwrap(), 0);
    inbox.read_new(&bob, &phone, 10).await.unwrap();

    let wrong_ms = Position {
        ms: stored[0].ms + 1,
        seq: stored[0].seq,
    };
    assert_eq!(
        inbox.ack(&bob, &phone, &[forged, wrong_ms]).await.unwrap(),
        0
    );
    let other = device("laptop");
    assert_eq!(inbox.ack(&bob, &other, &stored).await.unwrap(), 0);
    assert_eq!(
        inbox
            .ack(&bob, &phone, &[stored[0], stored[0]])
            .await
            .unwrap(),
        1
    );
    assert_eq!(inbox.ack(&bob, &phone, &[stored[0]]).await.unwrap(), 0);

    let later = clock_past(SystemTime::now()).await;
    let claimed = inbox
        .claim_pending(&bob, &phone, Some(later), None, 10)
        .await
        .unwrap();
    assert_eq!(positions(&claimed), [stored[1]]);
}

/// `claim_pending` returns only entries delivered before the cutoff, in order, and pages: the
/// same cutoff again yields the next entries, never the ones just claimed.
pub async fn claim_pending_respects_delivery_time_and_pages(inbox: Arc<dyn Inbox>) {
    let (alice, bob, phone) = (user("alice"), user("bob"), device("phone"));
    let stored = append_stored(
        &*inbox,
        (0..10)
            .map(|i| message(&alice, &bob, &format!("m{i}")))
            .collect(),
    )
    .await;
    // Deliveries may be stamped up to STORE_CLOCK_LAG before the wall clock (Redis).
    let before_delivery = SystemTime::now() - STORE_CLOCK_LAG;
    inbox.read_new(&bob, &phone, 100).await.unwrap();

    let none = inbox
        .claim_pending(&bob, &phone, Some(before_delivery), None, 100)
        .await
        .unwrap();
    assert!(
        none.is_empty(),
        "claimed entries delivered after the cutoff"
    );

    let cutoff = clock_past(SystemTime::now()).await;
    // Claims from now on are stamped after the cutoff, so a page is never claimed again.
    clock_past(cutoff + STORE_CLOCK_LAG).await;
    let mut pages = Vec::new();
    loop {
        let page = inbox
            .claim_pending(&bob, &phone, Some(cutoff), None, 4)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 4);
        pages.push(positions(&page));
        assert!(pages.len() <= 3, "paging does not advance: {pages:?}");
    }
    assert_eq!(pages, [&stored[0..4], &stored[4..8], &stored[8..10]]);

    let other = device("laptop");
    let claimed = inbox
        .claim_pending(&bob, &other, Some(cutoff), None, 100)
        .await
        .unwrap();
    assert!(
        claimed.is_empty(),
        "a device that never read has nothing pending"
    );

    let again = clock_past(SystemTime::now()).await;
    let redelivered = inbox
        .claim_pending(&bob, &phone, Some(again), None, 100)
        .await
        .unwrap();
    assert_eq!(positions(&redelivered), stored);
    assert_eq!(texts(&redelivered)[0], "m0");
}

/// `append_and_read` stores each batch like `append` and hands each listed device what
/// `read_new` would: every unread message up to its limit, the new ones of every batch
/// included, now pending for it.
pub async fn append_and_read_delivers_what_was_stored(inbox: Arc<dyn Inbox>) {
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let (phone, laptop) = (device("phone"), device("laptop"));
    let earlier = append_stored(&*inbox, vec![message(&alice, &bob, "m0")]).await;
    let live = live_read;
    // Two requests that arrived together: each is its own batch, stored in order.
    let batches = vec![
        vec![message(&alice, &bob, "m1"), message(&alice, &carol, "c1")],
        vec![message(&alice, &bob, "m2")],
    ];
    let reads = vec![
        live(&bob, &phone, 100),
        live(&bob, &laptop, 2),
        live(&carol, &phone, 100),
    ];
    let (appended, read) = inbox.append_and_read(batches, reads).await.unwrap();
    assert_eq!(appended.len(), 2, "one outcome per batch");
    let appended: Vec<_> = appended.into_iter().flat_map(Result::unwrap).collect();
    assert_eq!(appended.len(), 3);
    let stored: Vec<Position> = appended
        .iter()
        .map(|a| match a {
            crate::Appended::Stored { position } => *position,
            other => panic!("expected Stored, got {other:?}"),
        })
        .collect();
    let read: Vec<_> = read.into_iter().map(Result::unwrap).collect();
    assert_eq!(texts(&read[0]), ["m0", "m1", "m2"]);
    assert_eq!(positions(&read[0]), [earlier[0], stored[0], stored[2]]);
    assert_eq!(texts(&read[1]), ["m0", "m1"], "the limit holds");
    assert_eq!(texts(&read[2]), ["c1"]);

    // What was read is pending for its device and not read again; the rest still is.
    assert!(inbox.read_new(&bob, &phone, 100).await.unwrap().is_empty());
    assert_eq!(
        texts(&inbox.read_new(&bob, &laptop, 100).await.unwrap()),
        ["m2"]
    );
    assert_eq!(
        inbox.ack(&bob, &phone, &positions(&read[0])).await.unwrap(),
        3
    );

    // No reads: the same as append.
    let (appended, read) = inbox
        .append_and_read(vec![vec![message(&alice, &bob, "m3")]], Vec::new())
        .await
        .unwrap();
    assert_eq!(appended.len(), 1);
    assert_eq!(appended[0].as_ref().unwrap().len(), 1);
    assert!(read.is_empty());
    assert_eq!(
        texts(&inbox.read_new(&bob, &phone, 100).await.unwrap()),
        ["m3"]
    );

    // An empty batch stores nothing and succeeds: the reads still run.
    let (appended, read) = inbox
        .append_and_read(vec![Vec::new()], vec![live(&bob, &laptop, 100)])
        .await
        .unwrap();
    assert!(appended[0].as_ref().unwrap().is_empty());
    assert_eq!(read.len(), 1, "one result per read");
    assert_eq!(texts(read[0].as_ref().unwrap()), ["m3"]);
}

/// A refused batch (a full inbox) fails alone: the other batches of the call are stored, and
/// the reads run. When every batch is refused, no read runs (no cursor moves).
pub async fn append_and_read_refuses_each_batch_alone(inbox: Arc<dyn Inbox>) {
    let (alice, bob, carol, phone) = (user("alice"), user("bob"), user("carol"), device("phone"));
    let batch = (0..3)
        .map(|i| message(&alice, &bob, &format!("m{i}")))
        .collect();
    append_stored(&*inbox, batch).await;
    let live = |user: &UserId| live_read(user, &phone, 100);

    let (appended, read) = inbox
        .append_and_read(vec![vec![message(&alice, &bob, "m3")]], vec![live(&bob)])
        .await
        .unwrap();
    assert!(
        matches!(appended[..], [Err(StoreError::InboxFull { .. })]),
        "{appended:?}"
    );
    assert!(read.is_empty(), "no batch stored, so no read ran");
    let unread = inbox.read_new(&bob, &phone, 100).await.unwrap();
    assert_eq!(texts(&unread), ["m0", "m1", "m2"], "the read did not run");

    let batches = vec![
        vec![message(&alice, &bob, "m4")],
        vec![message(&alice, &carol, "c1")],
        vec![message(&alice, &carol, "c2"), message(&alice, &bob, "m5")],
    ];
    let (appended, read) = inbox
        .append_and_read(batches, vec![live(&carol)])
        .await
        .unwrap();
    assert!(matches!(appended[0], Err(StoreError::InboxFull { .. })));
    assert_eq!(appended[1].as_ref().unwrap().len(), 1, "stored");
    assert!(
        matches!(appended[2], Err(StoreError::InboxFull { .. })),
        "a batch is all or nothing"
    );
    assert_eq!(texts(read[0].as_ref().unwrap()), ["c1"]);
    assert!(
        inbox
            .read_new(&carol, &phone, 100)
            .await
            .unwrap()
            .is_empty()
    );

    // A client id is claimed by the first batch that stores it: a later batch of the same call
    // retrying it is a duplicate, while one refused before it claimed nothing.
    let dave = user("dave");
    let refused = message_with_client_id(&alice, &bob, "to a full inbox", "k1");
    let first = message_with_client_id(&alice, &dave, "first", "k2");
    let batches = vec![
        vec![
            refused,
            message_with_client_id(&alice, &dave, "with k1", "k1"),
        ],
        vec![message_with_client_id(&alice, &dave, "k1 again", "k1")],
        vec![first.clone()],
        vec![message_with_client_id(&alice, &dave, "retry", "k2")],
    ];
    let (appended, _) = inbox.append_and_read(batches, Vec::new()).await.unwrap();
    assert!(matches!(appended[0], Err(StoreError::InboxFull { .. })));
    assert!(
        matches!(appended[1].as_deref(), Ok([Appended::Stored { .. }])),
        "{appended:?}"
    );
    assert!(matches!(
        appended[2].as_deref(),
        Ok([Appended::Stored { .. }])
    ));
    assert_eq!(
        appended[3].as_deref().unwrap(),
        [Appended::Duplicate {
            existing: first.message.id.clone()
        }]
    );
    let unread = inbox.read_new(&dave, &phone, 100).await.unwrap();
    assert_eq!(texts(&unread), ["k1 again", "first"]);
}
