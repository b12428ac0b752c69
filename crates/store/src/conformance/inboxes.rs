//! Checks of the inbox side: idempotent appends, `max_pending`, `depth`, `trim` and concurrent
//! appends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::{
    append_stored, assert_increasing, clock_past, device, message, message_with_client_id,
    positions, texts, trim_until_dropped, user,
};
use crate::error::StoreError;
use crate::inbox::{Appended, Inbox};

/// A repeated (sender, recipient, client id) is a `Duplicate` naming the first message, also
/// within one batch; the same client id from another sender, or to another recipient (one
/// client id for every copy of a group message), is a different message.
pub async fn client_id_makes_append_idempotent(inbox: Arc<dyn Inbox>) {
    let (alice, carol, bob, phone) = (user("alice"), user("carol"), user("bob"), device("phone"));
    let first = message_with_client_id(&alice, &bob, "hello", "c1");
    append_stored(&*inbox, vec![first.clone()]).await;

    let retry = message_with_client_id(&alice, &bob, "hello again", "c1");
    let out = inbox.append(vec![retry]).await.unwrap();
    assert_eq!(
        out,
        [Appended::Duplicate {
            existing: first.message.id.clone()
        }]
    );

    append_stored(
        &*inbox,
        vec![message_with_client_id(&carol, &bob, "from carol", "c1")],
    )
    .await;

    let to_carol = message_with_client_id(&alice, &carol, "hello carol", "c1");
    let out = inbox.append(vec![to_carol.clone()]).await.unwrap();
    assert!(matches!(out[0], Appended::Stored { .. }), "{out:?}");
    let group = [
        message_with_client_id(&carol, &alice, "group", "g1"),
        message_with_client_id(&carol, &bob, "group", "g1"),
    ];
    let out = inbox.append(group.to_vec()).await.unwrap();
    assert!(
        out.iter().all(|a| matches!(a, Appended::Stored { .. })),
        "{out:?}"
    );
    let again = inbox.append(group.to_vec()).await.unwrap();
    assert_eq!(
        again,
        group
            .iter()
            .map(|m| Appended::Duplicate {
                existing: m.message.id.clone()
            })
            .collect::<Vec<_>>()
    );

    let x = message_with_client_id(&alice, &bob, "x", "c2");
    let y = message_with_client_id(&alice, &bob, "y", "c2");
    let z = message(&alice, &bob, "z");
    let out = inbox.append(vec![x.clone(), y, z]).await.unwrap();
    assert!(matches!(out[0], Appended::Stored { .. }));
    assert_eq!(
        out[1],
        Appended::Duplicate {
            existing: x.message.id.clone()
        }
    );
    assert!(matches!(out[2], Appended::Stored { .. }));

    let inbox_now = inbox.read_new(&bob, &phone, 100).await.unwrap();
    assert_eq!(
        texts(&inbox_now),
        ["hello", "from carol", "group", "x", "z"]
    );
}

/// An append that would exceed `max_pending` (3) for any recipient fails whole and stores
/// nothing, for any recipient; acks free room; duplicates never count.
pub async fn inbox_full_stores_nothing(inbox: Arc<dyn Inbox>) {
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let (phone, laptop) = (device("phone"), device("laptop"));
    let keyed = message_with_client_id(&alice, &bob, "keyed", "k");
    append_stored(&*inbox, vec![keyed.clone(), message(&alice, &bob, "b1")]).await;
    assert_eq!(inbox.depth(&bob).await.unwrap(), 2);

    let over = vec![
        message(&alice, &carol, "c1"),
        message(&alice, &bob, "b2"),
        message(&alice, &bob, "b3"),
    ];
    match inbox.append(over).await {
        Err(StoreError::InboxFull { user, max_pending }) => {
            assert_eq!(user, bob);
            assert_eq!(max_pending, 3);
        }
        other => panic!("expected InboxFull, got {other:?}"),
    }
    assert_eq!(inbox.depth(&carol).await.unwrap(), 0);
    assert_eq!(inbox.depth(&bob).await.unwrap(), 2);
    assert!(inbox.read_new(&carol, &phone, 10).await.unwrap().is_empty());

    append_stored(&*inbox, vec![message(&alice, &bob, "b2")]).await;
    let full = inbox.append(vec![message(&alice, &bob, "b3")]).await;
    assert!(
        matches!(full, Err(StoreError::InboxFull { .. })),
        "{full:?}"
    );
    let retry = inbox.append(vec![keyed.clone()]).await.unwrap();
    assert_eq!(
        retry,
        [Appended::Duplicate {
            existing: keyed.message.id.clone()
        }]
    );

    // Reading alone does not free room: the messages are pending until acked.
    let read = inbox.read_new(&bob, &phone, 10).await.unwrap();
    assert_eq!(texts(&read), ["keyed", "b1", "b2"]);
    let full = inbox.append(vec![message(&alice, &bob, "b3")]).await;
    assert!(
        matches!(full, Err(StoreError::InboxFull { .. })),
        "{full:?}"
    );
    assert_eq!(inbox.ack(&bob, &phone, &positions(&read)).await.unwrap(), 3);
    append_stored(&*inbox, vec![message(&alice, &bob, "b3")]).await;
    let next = inbox.read_new(&bob, &phone, 10).await.unwrap();
    assert_eq!(texts(&next), ["b3"]);
    // A device first seen now starts at the oldest retained message, so it counts all 4 (3 unread
    // + 1 pending): limits bound appends, not devices catching up, and it blocks further appends.
    assert_eq!(inbox.read_new(&bob, &laptop, 1).await.unwrap().len(), 1);
    assert_eq!(inbox.depth(&bob).await.unwrap(), 4);
    let full = inbox.append(vec![message(&alice, &bob, "b4")]).await;
    assert!(
        matches!(full, Err(StoreError::InboxFull { .. })),
        "{full:?}"
    );
}

/// `depth` is all retained messages without devices, else the slowest device's unread plus
/// pending count.
pub async fn depth_counts_the_slowest_device(inbox: Arc<dyn Inbox>) {
    let (alice, bob) = (user("alice"), user("bob"));
    let (phone, tablet) = (device("phone"), device("tablet"));
    assert_eq!(inbox.depth(&user("nobody")).await.unwrap(), 0);
    append_stored(
        &*inbox,
        (0..4)
            .map(|i| message(&alice, &bob, &format!("m{i}")))
            .collect(),
    )
    .await;
    assert_eq!(inbox.depth(&bob).await.unwrap(), 4);

    let read = inbox.read_new(&bob, &phone, 2).await.unwrap();
    assert_eq!(inbox.depth(&bob).await.unwrap(), 4, "2 unread + 2 pending");
    inbox.ack(&bob, &phone, &positions(&read)).await.unwrap();
    assert_eq!(inbox.depth(&bob).await.unwrap(), 2, "2 unread");

    inbox.read_new(&bob, &tablet, 1).await.unwrap();
    assert_eq!(
        inbox.depth(&bob).await.unwrap(),
        4,
        "tablet: 3 unread + 1 pending"
    );
    let rest = inbox.read_new(&bob, &tablet, 10).await.unwrap();
    assert_eq!(inbox.depth(&bob).await.unwrap(), 4, "tablet: 4 pending");
    let later = clock_past(SystemTime::now()).await;
    let all = inbox
        .claim_pending(&bob, &tablet, Some(later), None, 10)
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(rest.len(), 3);
    inbox.ack(&bob, &tablet, &positions(&all)).await.unwrap();
    assert_eq!(
        inbox.depth(&bob).await.unwrap(),
        2,
        "phone is now the slowest"
    );
}

/// `trim` keeps messages younger than the retention, acked or not.
pub async fn trim_keeps_messages_within_retention(inbox: Arc<dyn Inbox>) {
    let (alice, bob, phone) = (user("alice"), user("bob"), device("phone"));
    let stored = append_stored(
        &*inbox,
        (0..3)
            .map(|i| message(&alice, &bob, &format!("m{i}")))
            .collect(),
    )
    .await;
    let read = inbox.read_new(&bob, &phone, 1).await.unwrap();
    inbox.ack(&bob, &phone, &positions(&read)).await.unwrap();
    assert_eq!(inbox.trim().await.unwrap(), 0);
    let tablet = device("tablet");
    let all = inbox.read_new(&bob, &tablet, 10).await.unwrap();
    assert_eq!(positions(&all), stored);
}

/// With a 1 ms retention, `trim` drops the messages, their pending entries and the client-id
/// keys; sequence positions are not reused afterwards.
pub async fn trim_drops_expired_messages_keys_and_pending(inbox: Arc<dyn Inbox>) {
    let (alice, bob, dave, phone) = (user("alice"), user("bob"), user("dave"), device("phone"));
    let keyed = message_with_client_id(&alice, &bob, "keyed", "k");
    let old = append_stored(&*inbox, vec![keyed]).await;
    let delivered = inbox.read_new(&bob, &phone, 10).await.unwrap();
    assert_eq!(positions(&delivered), old);
    append_stored(
        &*inbox,
        vec![message(&alice, &dave, "d1"), message(&alice, &dave, "d2")],
    )
    .await;

    // Poll until the clock has moved past the retention: bounded, asserting on what was dropped.
    assert_eq!(trim_until_dropped(&*inbox, 3).await, 3);

    assert_eq!(inbox.depth(&bob).await.unwrap(), 0);
    assert_eq!(inbox.depth(&dave).await.unwrap(), 0);
    assert!(inbox.read_new(&bob, &phone, 10).await.unwrap().is_empty());
    assert!(inbox.read_new(&dave, &phone, 10).await.unwrap().is_empty());
    let later = clock_past(SystemTime::now()).await;
    let claimed = inbox
        .claim_pending(&bob, &phone, Some(later), None, 10)
        .await
        .unwrap();
    assert!(claimed.is_empty(), "pending entry of a trimmed message");
    assert_eq!(inbox.ack(&bob, &phone, &old).await.unwrap(), 0);

    let again = message_with_client_id(&alice, &bob, "keyed again", "k");
    let fresh = append_stored(&*inbox, vec![again]).await;
    assert!(fresh[0] > old[0], "positions go on after a trim");
}

/// 20 tasks appending 50 messages each to mixed recipients: all stored, positions unique and in
/// each sender's order within every inbox, and every inbox reads back complete and ordered.
pub async fn concurrent_appends_are_all_stored_in_order(inbox: Arc<dyn Inbox>) {
    const TASKS: usize = 20;
    const EACH: usize = 50;
    let recipients: Vec<_> = (0..4).map(|i| user(&format!("r{i}"))).collect();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let inbox = inbox.clone();
        let recipients = recipients.clone();
        tasks.push(tokio::spawn(async move {
            let sender = user(&format!("s{t}"));
            let mut sent = Vec::new();
            for j in 0..EACH {
                let to = &recipients[(t + j) % recipients.len()];
                let text = format!("{t}:{j}");
                let position = append_stored(&*inbox, vec![message(&sender, to, &text)]).await[0];
                sent.push((to.clone(), text, position));
            }
            sent
        }));
    }
    let mut expected: HashMap<_, HashMap<String, _>> = HashMap::new();
    for task in tasks {
        let sent = task.await.unwrap();
        // Each task appends sequentially, so its positions per recipient must increase.
        let mut last = HashMap::new();
        for (to, text, position) in sent {
            if let Some(previous) = last.insert(to.clone(), position) {
                assert!(previous < position, "a sender's messages reordered");
            }
            expected.entry(to).or_default().insert(text, position);
        }
    }

    let reader = device("reader");
    let mut total = 0;
    for to in &recipients {
        let got = inbox.read_new(to, &reader, 10_000).await.unwrap();
        assert_increasing(&positions(&got));
        let want = &expected[to];
        assert_eq!(got.len(), want.len());
        for d in &got {
            assert_eq!(
                want.get(&d.message.decode().unwrap().message),
                Some(&d.position)
            );
        }
        total += got.len();
    }
    assert_eq!(total, TASKS * EACH);
}

/// Concurrent appends never push an inbox past `max_pending` (3), and a refused append does not
/// disturb the others: exactly 3 are stored per recipient.
pub async fn concurrent_appends_never_exceed_max_pending(inbox: Arc<dyn Inbox>) {
    let alice = user("alice");
    let recipients = [user("bob"), user("carol")];
    let mut tasks = Vec::new();
    for i in 0..40 {
        let inbox = inbox.clone();
        let message = message(&alice, &recipients[i % 2], &format!("m{i}"));
        tasks.push(tokio::spawn(
            async move { inbox.append(vec![message]).await },
        ));
    }
    let mut stored = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(out) => {
                assert!(matches!(out[..], [Appended::Stored { .. }]), "{out:?}");
                stored += 1;
            }
            Err(StoreError::InboxFull { max_pending, .. }) => assert_eq!(max_pending, 3),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(stored, 6);
    let reader = device("reader");
    for to in &recipients {
        assert_eq!(inbox.depth(to).await.unwrap(), 3);
        let got = inbox.read_new(to, &reader, 100).await.unwrap();
        assert_eq!(got.len(), 3);
        assert_increasing(&positions(&got));
    }
}

/// Messages trimmed before a device read them no longer count towards `max_pending`: a full
/// inbox takes new messages again once its old ones expire, whether or not the user has a
/// device.
pub async fn trimmed_messages_free_their_room(inbox: Arc<dyn Inbox>) {
    let (alice, bob, carol, phone) = (user("alice"), user("bob"), user("carol"), device("phone"));
    // Bob's phone is known (its cursor is before every message); Carol has no device.
    assert!(inbox.read_new(&bob, &phone, 10).await.unwrap().is_empty());
    for to in [&bob, &carol] {
        let full = (0..3)
            .map(|i| message(&alice, to, &format!("m{i}")))
            .collect();
        append_stored(&*inbox, full).await;
        let refused = inbox.append(vec![message(&alice, to, "over")]).await;
        assert!(
            matches!(refused, Err(StoreError::InboxFull { .. })),
            "{refused:?}"
        );
    }
    assert_eq!(trim_until_dropped(&*inbox, 6).await, 6);
    for to in [&bob, &carol] {
        let room = (0..3)
            .map(|i| message(&alice, to, &format!("n{i}")))
            .collect();
        append_stored(&*inbox, room).await;
    }
    let unread = inbox.read_new(&bob, &phone, 10).await.unwrap();
    assert_eq!(texts(&unread), ["n0", "n1", "n2"]);
}
