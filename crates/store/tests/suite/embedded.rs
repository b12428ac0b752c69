//! Behaviour specific to the embedded store: durability across a reopen, group commit, and the
//! file lock.
use std::time::SystemTime;

use titan_store::conformance::{
    append_stored, clock_past, device, message, message_with_client_id, positions, texts, user,
};
use titan_store::{Appended, EmbeddedStore, Inbox, InboxLimits, StoreError};

/// Messages, cursors, pending entries and client-id keys survive dropping and reopening the store.
#[tokio::test(flavor = "multi_thread")]
async fn state_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, phone) = (user("alice"), user("bob"), device("phone"));
    let keyed = message_with_client_id(&alice, &bob, "m0", "k");
    let stored = {
        let store = EmbeddedStore::open(dir.path(), InboxLimits::default()).unwrap();
        let stored = append_stored(
            &store,
            vec![
                keyed.clone(),
                message(&alice, &bob, "m1"),
                message(&alice, &bob, "m2"),
            ],
        )
        .await;
        let read = store.read_new(&bob, &phone, 2).await.unwrap();
        assert_eq!(
            store
                .ack(&bob, &phone, &positions(&read[..1]))
                .await
                .unwrap(),
            1
        );
        stored
    };

    let store = EmbeddedStore::open(dir.path(), InboxLimits::default()).unwrap();
    assert_eq!(
        store.depth(&bob).await.unwrap(),
        2,
        "m1 pending + m2 unread"
    );
    let later = clock_past(SystemTime::now()).await;
    let pending = store
        .claim_pending(&bob, &phone, Some(later), None, 10)
        .await
        .unwrap();
    assert_eq!(positions(&pending), stored[1..2]);
    let unread = store.read_new(&bob, &phone, 10).await.unwrap();
    assert_eq!(texts(&unread), ["m2"]);
    let retry = store.append(vec![keyed.clone()]).await.unwrap();
    assert_eq!(
        retry,
        [Appended::Duplicate {
            existing: keyed.message.id
        }]
    );
    let tablet = store.read_new(&bob, &device("tablet"), 10).await.unwrap();
    assert_eq!(positions(&tablet), stored);
    let next = append_stored(&store, vec![message(&alice, &bob, "m3")]).await;
    assert!(next[0] > stored[2], "sequence continues after a reopen");
}

/// 200 concurrent single-message appends share fewer than 200 batches (journal writes).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_are_group_committed() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), InboxLimits::default()).unwrap();
    let before = store.stats();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let (from, to) = (user(&format!("s{i}")), user(&format!("r{}", i % 7)));
                append_stored(&store, vec![message(&from, &to, "hi")]).await;
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let after = store.stats();
    assert_eq!(after.operations - before.operations, 200);
    let batches = after.batches - before.batches;
    assert!(batches < 200, "{batches} batches for 200 appends");
}

/// A second open of a directory in use is refused as unavailable instead of sharing the file.
#[tokio::test]
async fn second_open_of_a_store_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _store = EmbeddedStore::open(dir.path(), InboxLimits::default()).unwrap();
    let second = EmbeddedStore::open(dir.path(), InboxLimits::default());
    assert!(matches!(second, Err(StoreError::Unavailable { .. })));
}

/// Every clone talks to the same database, and it stays open until the last clone drops.
#[tokio::test]
async fn clones_share_one_database() {
    let (alice, bob, phone) = (user("alice"), user("bob"), device("phone"));
    let store = EmbeddedStore::memory(InboxLimits::default()).unwrap();
    let clone = store.clone();
    append_stored(&store, vec![message(&alice, &bob, "hi")]).await;
    drop(store);
    assert_eq!(
        texts(&clone.read_new(&bob, &phone, 10).await.unwrap()),
        ["hi"]
    );
}

/// Refused appends grouped in one transaction with accepted ones leave those stored, and the
/// limit counts earlier operations of the same transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_in_a_group_commit_do_not_undo_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let limits = InboxLimits {
        max_pending: 5,
        ..InboxLimits::default()
    };
    let store = EmbeddedStore::open(dir.path(), limits).unwrap();
    let (alice, bob, phone) = (user("alice"), user("bob"), device("phone"));
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let store = store.clone();
            let message = message(&alice, &bob, &format!("m{i}"));
            tokio::spawn(async move { store.append(vec![message]).await.is_ok() })
        })
        .collect();
    let mut accepted = 0;
    for task in tasks {
        accepted += usize::from(task.await.unwrap());
    }
    assert_eq!(accepted, 5);
    let stats = store.stats();
    assert!(
        stats.batches < stats.operations,
        "no batch held several appends: {stats:?}"
    );
    assert_eq!(store.read_new(&bob, &phone, 100).await.unwrap().len(), 5);
}

/// A file written before device records (cursors in a `devices` table, one `pending` row per
/// unacked message) opens with its device state intact: the pending message is redelivered with
/// its position, the cursor holds (nothing read twice), acks work, and the old tables are gone
/// after the upgrade, so a second open finds the same state.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_from_before_device_records_is_upgraded() {
    use redb::{Database, ReadableDatabase, TableDefinition, TableHandle};
    use titan_store::Position;
    const INBOX: TableDefinition<(&str, u64), (u64, &[u8])> = TableDefinition::new("inbox");
    const HEADS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("inbox_heads");
    const DEVICES: TableDefinition<(&str, &str), (u64, u64)> = TableDefinition::new("devices");
    const PENDING: TableDefinition<(&str, &str, u64), (u64, u64)> = TableDefinition::new("pending");

    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, phone) = (user("alice"), user("bob"), device("phone"));
    let texts_in = ["m1", "m2", "m3"];
    let ms = 1_700_000_000_000u64;
    {
        let db = Database::create(dir.path().join(titan_store::DATABASE_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut inbox = txn.open_table(INBOX).unwrap();
            for (i, text) in texts_in.iter().enumerate() {
                let body = serde_json::to_vec(&message(&alice, &bob, text).message).unwrap();
                inbox
                    .insert(("bob", i as u64 + 1), (ms + i as u64, body.as_slice()))
                    .unwrap();
            }
            let mut heads = txn.open_table(HEADS).unwrap();
            heads.insert("bob", (4, ms + 2)).unwrap();
            // The phone read m1 and m2 and acked m1: cursor 2, m2 pending.
            let mut devices = txn.open_table(DEVICES).unwrap();
            devices.insert(("bob", "phone"), (2, 1)).unwrap();
            let mut pending = txn.open_table(PENDING).unwrap();
            pending.insert(("bob", "phone", 2), (ms, ms + 1)).unwrap();
        }
        txn.commit().unwrap();
    }

    {
        let store = EmbeddedStore::open(dir.path(), InboxLimits::default()).unwrap();
        assert_eq!(
            store.depth(&bob).await.unwrap(),
            2,
            "m2 pending + m3 unread"
        );
        let later = clock_past(SystemTime::now()).await;
        let pending = store
            .claim_pending(&bob, &phone, Some(later), None, 10)
            .await
            .unwrap();
        assert_eq!(texts(&pending), ["m2"]);
        assert_eq!(positions(&pending), [Position { ms: ms + 1, seq: 2 }]);
        let unread = store.read_new(&bob, &phone, 10).await.unwrap();
        assert_eq!(texts(&unread), ["m3"]);
        assert_eq!(
            store.ack(&bob, &phone, &positions(&pending)).await.unwrap(),
            1
        );
    }

    let db = Database::open(dir.path().join(titan_store::DATABASE_FILE)).unwrap();
    let names: Vec<String> = db
        .begin_read()
        .unwrap()
        .list_tables()
        .unwrap()
        .map(|t| t.name().to_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n == "devices" || n == "pending"),
        "{names:?}"
    );
    drop(db);

    let store = EmbeddedStore::open(dir.path(), InboxLimits::default()).unwrap();
    assert_eq!(store.depth(&bob).await.unwrap(), 1, "m3 pending");
    let later = clock_past(SystemTime::now()).await;
    let pending = store
        .claim_pending(&bob, &phone, Some(later), None, 10)
        .await
        .unwrap();
    assert_eq!(texts(&pending), ["m3"]);
    assert!(store.read_new(&bob, &phone, 10).await.unwrap().is_empty());
}
