//! Tests of `commit.rs`: what runs while a checkpoint commits beside the writer, what waits, and
//! what a failed commit keeps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use titan_protocol::{DeviceId, MessageId, UserId};
use tokio::sync::oneshot;

use crate::embedded::{EmbeddedOptions, EmbeddedStore};
use crate::inbox::{Appended, Inbox, InboxLimits, LiveRead};

use crate::embedded::writer::checkpoint::tests::new_message;
use crate::embedded::writer::{Checkpoints, Op};

/// Bound on any wait of these tests; they pass in milliseconds.
const WAIT: Duration = Duration::from_secs(10);

/// A store that checkpoints after every batch that changed something.
fn store(dir: &std::path::Path) -> EmbeddedStore {
    let options = EmbeddedOptions {
        checkpoints: Checkpoints {
            every: Duration::ZERO,
            journal_bytes: u64::MAX,
        },
        ..EmbeddedOptions::default()
    };
    EmbeddedStore::open_with(dir, InboxLimits::default(), options).unwrap()
}

fn bob() -> UserId {
    UserId::new("bob").unwrap()
}

fn device(id: &str) -> DeviceId {
    DeviceId::new(id).unwrap()
}

async fn append(store: &EmbeddedStore, text: &str) {
    let stored = store.append(vec![new_message(text)]).await.unwrap();
    assert!(
        matches!(stored[..], [Appended::Stored { .. }]),
        "{stored:?}"
    );
}

/// The texts `device` of bob reads.
async fn read(store: &EmbeddedStore, id: &str) -> Vec<String> {
    let read = store.read_new(&bob(), &device(id), 100).await.unwrap();
    read.into_iter()
        .map(|d| d.message.decode().unwrap().message)
        .collect()
}

/// Appends `text` and expects it answered while the commit is held.
async fn answered_meanwhile(store: &EmbeddedStore, text: &str) {
    tokio::time::timeout(WAIT, append(store, text))
        .await
        .expect("an append answered while the commit is held");
}

/// Whether `answer` is still unanswered after a while: time for a writer that ran its operation
/// during the commit to answer it (one that waits, as it must, passes however long this is).
async fn still_waiting<T>(answer: &mut oneshot::Receiver<T>) -> bool {
    tokio::time::sleep(Duration::from_millis(100)).await;
    answer.try_recv().is_err()
}

/// Waits until the writer has handed `n` commits to the committer in all.
async fn handed_over(store: &EmbeddedStore, n: u64) {
    let hooks = &store.inner.counters.commit_hooks;
    let deadline = tokio::time::Instant::now() + WAIT;
    while hooks.handed_over.load(Ordering::Acquire) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no commit handed over"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// While a checkpoint's commit is held, appends to an inbox whose state is loaded, and the reads
/// of a caught-up device that follow them, are answered; a read that needs the inbox table (a
/// device seen for the first time) waits, and so does everything after it, until the commit
/// ends; then all of it runs in order and every message is in the table. Fails if the writer
/// waits for every commit (the appends would not be answered) or lets a later operation
/// overtake one that waits.
// The gate is held across awaits on purpose: only the committer thread (no task) waits for it.
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_answered_while_a_checkpoint_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let gate = store.inner.counters.commit_hooks.gate.clone();
    let held = gate.lock().unwrap();
    // A device, caught up: its record is new, so the checkpoint after this read is handed to
    // the committer, which the gate holds.
    assert!(read(&store, "phone").await.is_empty());
    handed_over(&store, 1).await;

    answered_meanwhile(&store, "one").await;
    answered_meanwhile(&store, "two").await;
    let (appended, reads) = tokio::time::timeout(
        WAIT,
        store.append_and_read(
            vec![vec![new_message("three")]],
            vec![LiveRead {
                user: bob(),
                device: device("phone"),
                limit: 100,
            }],
        ),
    )
    .await
    .expect("an append with its read answered while the commit is held")
    .unwrap();
    assert!(appended[0].is_ok(), "{appended:?}");
    let phone: Vec<String> = match &reads[..] {
        [Ok(read)] => read
            .iter()
            .map(|d| d.message.decode().unwrap().message)
            .collect(),
        other => panic!("the caught-up device's read, from memory: {other:?}"),
    };
    assert_eq!(phone, ["one", "two", "three"]);

    // A device seen for the first time reads the inbox table: it waits, and the append queued
    // after it waits behind it. Both queued straight onto the writer's queue, in this order.
    let (read_reply, mut tablet) = oneshot::channel();
    let (append_reply, mut four) = oneshot::channel();
    let queue = &store.inner.ops;
    queue
        .send(Op::ReadNew {
            user: bob(),
            device: device("tablet"),
            limit: 100,
            reply: read_reply,
        })
        .await
        .unwrap();
    queue
        .send(Op::Append {
            batch: vec![new_message("four")],
            reply: append_reply,
        })
        .await
        .unwrap();
    assert!(
        still_waiting(&mut tablet).await,
        "a read of the table ran during the commit"
    );
    assert!(
        still_waiting(&mut four).await,
        "an append overtook a waiting read"
    );

    drop(held);
    let tablet: Vec<String> = tokio::time::timeout(WAIT, tablet)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|d| d.message.decode().unwrap().message)
        .collect();
    assert_eq!(
        tablet,
        ["one", "two", "three"],
        "the read ran before the append after it"
    );
    let stored = tokio::time::timeout(WAIT, four).await.unwrap().unwrap();
    assert!(stored.is_ok(), "{stored:?}");
    assert_eq!(read(&store, "phone").await, ["four"]);
    drop(store);

    // Everything is on disk, in order.
    let reopened = self::store(dir.path());
    assert_eq!(
        read(&reopened, "laptop").await,
        ["one", "two", "three", "four"]
    );
}

/// A commit that fails after appends were answered beside it loses none of them, nor what it was
/// to commit: the writer rebuilds its state from the journal, which holds all their frames.
/// Fails if the failure is taken for a success (the commit's own message would be gone).
// As above, the gate held across awaits holds the committer thread alone.
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_keeps_what_was_answered_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let hooks = &store.inner.counters.commit_hooks;
    let held = hooks.gate.lock().unwrap();
    hooks.fail_next.store(true, Ordering::Release);
    // Lost with the failed commit unless the journal's replay puts it back.
    append(&store, "zero").await;
    handed_over(&store, 1).await;
    answered_meanwhile(&store, "one").await;
    answered_meanwhile(&store, "two").await;
    drop(held);
    assert_eq!(read(&store, "tablet").await, ["zero", "one", "two"]);
    drop(store);
    let reopened = self::store(dir.path());
    assert_eq!(read(&reopened, "laptop").await, ["zero", "one", "two"]);
}

/// A store dropped while a checkpoint commits beside its writer ends once the commit has (the
/// committer's answer keeps the writer's queue open until then), then checkpoints what was
/// answered meanwhile itself: all of it is there when the directory is opened again. Fails if
/// the drop hangs (a writer waiting for a commit that cannot end, or a queue kept open by the
/// writer's own sender) or if an answered append is missing after the reopen.
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_dropped_during_a_commit_keeps_what_it_answered() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let gate = store.inner.counters.commit_hooks.gate.clone();
    let held = gate.lock().unwrap();
    append(&store, "one").await;
    handed_over(&store, 1).await;
    answered_meanwhile(&store, "two").await;
    let dropped = tokio::task::spawn_blocking(move || drop(store));
    drop(held);
    tokio::time::timeout(WAIT, dropped)
        .await
        .expect("the drop ended once the commit did")
        .unwrap();
    let reopened = self::store(dir.path());
    assert_eq!(read(&reopened, "laptop").await, ["one", "two"]);
}

/// A message to bob with a client id; its own id is returned with it.
fn with_client_id(text: &str, client_id: &str) -> (crate::inbox::NewMessage, MessageId) {
    let mut new = new_message(text);
    new.client_id = Some(MessageId::new(client_id).unwrap());
    let id = new.message.id.clone();
    (new, id)
}

/// Sends `new` and returns how it was stored, within `WAIT` (so only an append answered while
/// the commit is held passes while it is).
async fn append_once(store: &EmbeddedStore, new: crate::inbox::NewMessage) -> Appended {
    let mut stored = tokio::time::timeout(WAIT, store.append(vec![new]))
        .await
        .expect("answered while the commit is held")
        .unwrap();
    assert_eq!(stored.len(), 1);
    stored.remove(0)
}

/// While a checkpoint's commit is held, appends with client ids are answered too: a new id is
/// stored; a retry of one committed before, or of one stored during the commit, is answered as a
/// duplicate with the first message's id; a retry of an id the committing transaction wrote
/// waits for the commit's end and is then a duplicate. After a reopen, the ids stored during the
/// commit still dedupe. Fails if such appends all wait (the first times out), if the held rows
/// or the committing transaction's ids are not looked at (a second copy is stored), or if the
/// held ids are not written to the table (a retry after the reopen is stored again).
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_with_client_ids_are_answered_while_a_checkpoint_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let (old, old_id) = with_client_id("old", "c-old");
    assert!(matches!(
        append_once(&store, old).await,
        Appended::Stored { .. }
    ));
    handed_over(&store, 1).await;
    let gate = store.inner.counters.commit_hooks.gate.clone();
    let held = gate.lock().unwrap();
    // Stored in the transaction of the second checkpoint (or held during the first commit and
    // inserted into it), whose commit the gate holds: the first has ended.
    let (mid, mid_id) = with_client_id("mid", "c-mid");
    assert!(matches!(
        append_once(&store, mid).await,
        Appended::Stored { .. }
    ));
    handed_over(&store, 2).await;

    let (new, new_id) = with_client_id("new", "c-new");
    assert!(matches!(
        append_once(&store, new).await,
        Appended::Stored { .. }
    ));
    let retry_old = with_client_id("old again", "c-old").0;
    assert_eq!(
        append_once(&store, retry_old).await,
        Appended::Duplicate { existing: old_id },
        "a retry of an id committed before the commit in flight"
    );
    let retry_new = with_client_id("new again", "c-new").0;
    assert_eq!(
        append_once(&store, retry_new.clone()).await,
        Appended::Duplicate {
            existing: new_id.clone()
        },
        "a retry of an id stored while the commit runs"
    );

    // The committing transaction holds c-mid: its retry waits for the commit's end.
    let (reply, mut retry_mid) = oneshot::channel();
    store
        .inner
        .ops
        .send(Op::Append {
            batch: vec![with_client_id("mid again", "c-mid").0],
            reply,
        })
        .await
        .unwrap();
    assert!(
        still_waiting(&mut retry_mid).await,
        "a retry of an id of the committing transaction ran during the commit"
    );
    drop(held);
    let retried = tokio::time::timeout(WAIT, retry_mid)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(retried, [Appended::Duplicate { existing: mid_id }]);
    assert_eq!(read(&store, "phone").await, ["old", "mid", "new"]);
    drop(store);

    let reopened = self::store(dir.path());
    assert_eq!(
        append_once(&reopened, retry_new).await,
        Appended::Duplicate { existing: new_id },
        "an id stored during a commit, after a reopen"
    );
    assert_eq!(read(&reopened, "laptop").await, ["old", "mid", "new"]);
}

/// A commit that fails after an append with a client id was answered beside it: the rebuild from
/// the journal puts the id back with its message, so a retry after it is a duplicate and the
/// message is there once. Fails if the held client id is lost with the failed commit (the retry
/// would be stored again).
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_keeps_the_client_ids_answered_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let hooks = &store.inner.counters.commit_hooks;
    let held = hooks.gate.lock().unwrap();
    hooks.fail_next.store(true, Ordering::Release);
    append(&store, "zero").await;
    handed_over(&store, 1).await;
    let (one, one_id) = with_client_id("one", "c-1");
    assert!(matches!(
        append_once(&store, one).await,
        Appended::Stored { .. }
    ));
    drop(held);
    let retry = with_client_id("one again", "c-1").0;
    assert_eq!(
        append_once(&store, retry).await,
        Appended::Duplicate { existing: one_id },
        "a retry after the failed commit's rebuild"
    );
    assert_eq!(read(&store, "tablet").await, ["zero", "one"]);
}
