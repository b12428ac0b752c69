//! The embedded store's journal: appends are durable through it between checkpoints, and a
//! crash image (the database as of its last checkpoint, plus the journal) reopens with every
//! stored message back in place.
use std::path::Path;
use std::time::Duration;

use titan_store::conformance::{
    append_stored, device, message, message_with_client_id, positions, texts, user,
};
use titan_store::{
    Appended, Checkpoints, DATABASE_FILE, EmbeddedOptions, EmbeddedStore, Inbox, InboxLimits,
    JOURNAL_FILES, journal_frames_len,
};

/// Options under which no checkpoint happens until the store closes.
fn no_checkpoints() -> EmbeddedOptions {
    EmbeddedOptions {
        checkpoints: Checkpoints {
            every: Duration::from_secs(24 * 3600),
            journal_bytes: u64::MAX,
        },
        ..EmbeddedOptions::default()
    }
}

/// Options under which the checkpoint interval alone triggers checkpoints.
fn checkpoints_every(every: Duration) -> EmbeddedOptions {
    EmbeddedOptions {
        checkpoints: Checkpoints {
            every,
            journal_bytes: u64::MAX,
        },
        ..EmbeddedOptions::default()
    }
}

/// Copies the store's files as they are on disk now: what a crash would leave.
fn crash_image(from: &Path, to: &Path) {
    for file in std::iter::once(DATABASE_FILE).chain(JOURNAL_FILES) {
        std::fs::copy(from.join(file), to.join(file)).unwrap();
    }
}

/// Bytes of frames in the journal's two files (a released file has none; see journal.rs).
fn journal_len(dir: &Path) -> u64 {
    journal_frames_len(dir).unwrap()
}

/// Bytes on disk in the journal's two files, frames or not.
fn journal_files_len(dir: &Path) -> u64 {
    JOURNAL_FILES
        .iter()
        .map(|file| std::fs::metadata(dir.join(file)).unwrap().len())
        .sum()
}

/// Waits until the journal is empty: a checkpoint's commit is written by the database file's
/// flush thread after the checkpoint returns, and the journal file it left is emptied after
/// that, with the writer's next batch (each `depth` call is one). No event announces it, so
/// this polls, within a bound.
async fn until_journal_empty(store: &EmbeddedStore, dir: &Path) {
    let bob = user("bob");
    for _ in 0..500 {
        store.depth(&bob).await.unwrap();
        if journal_len(dir) == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the journal was not emptied within 5 s");
}

#[tokio::test(flavor = "multi_thread")]
async fn appends_since_the_last_checkpoint_are_replayed_from_the_journal() {
    let live = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    let (alice, bob, phone) = (user("alice"), user("bob"), device("phone"));
    let keyed = message_with_client_id(&alice, &bob, "m0", "k");

    let store =
        EmbeddedStore::open_with(live.path(), InboxLimits::default(), no_checkpoints()).unwrap();
    let stored = append_stored(&store, vec![keyed.clone(), message(&alice, &bob, "m1")]).await;
    let more = append_stored(&store, vec![message(&alice, &bob, "m2")]).await;
    // Cursor moves and acks are not journaled: after the crash they are simply redone.
    let read = store.read_new(&bob, &phone, 10).await.unwrap();
    store.ack(&bob, &phone, &positions(&read)).await.unwrap();
    assert_eq!(
        store.stats().checkpoints,
        0,
        "appends alone never checkpoint here"
    );
    assert!(
        journal_len(live.path()) > 0,
        "the appends are in the journal"
    );

    crash_image(live.path(), crashed.path());
    // A frame whose write the crash cut short, right after the last whole one: never
    // acknowledged, so ignored.
    let mut torn = std::fs::read(crashed.path().join(JOURNAL_FILES[0])).unwrap();
    let end = usize::try_from(journal_len(crashed.path())).unwrap();
    torn.splice(end..end + 7, [200, 0, 0, 0, 1, 2, 3]);
    std::fs::write(crashed.path().join(JOURNAL_FILES[0]), torn).unwrap();
    drop(store);

    let store = EmbeddedStore::open(crashed.path(), InboxLimits::default()).unwrap();
    assert_eq!(
        journal_files_len(crashed.path()),
        0,
        "replayed, then truncated"
    );
    let redelivered = store.read_new(&bob, &phone, 10).await.unwrap();
    assert_eq!(texts(&redelivered), ["m0", "m1", "m2"]);
    let mut all = stored.clone();
    all.extend(more);
    assert_eq!(
        positions(&redelivered),
        all,
        "same positions as when stored"
    );
    assert_eq!(
        store.append(vec![keyed.clone()]).await.unwrap(),
        [Appended::Duplicate {
            existing: keyed.message.id.clone()
        }],
        "the client id was replayed too"
    );
    let next = append_stored(&store, vec![message(&alice, &bob, "m3")]).await;
    assert!(
        next[0] > all[2],
        "the sequence continues after the replayed messages"
    );
    drop(store);

    // The replay was a checkpoint: opening again applies nothing twice.
    let store = EmbeddedStore::open(crashed.path(), InboxLimits::default()).unwrap();
    let tablet = store.read_new(&bob, &device("tablet"), 10).await.unwrap();
    assert_eq!(texts(&tablet), ["m0", "m1", "m2", "m3"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_journal_triggers_a_checkpoint_that_empties_it() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        checkpoints: Checkpoints {
            every: Duration::from_secs(24 * 3600),
            journal_bytes: 1,
        },
        ..EmbeddedOptions::default()
    };
    let (alice, bob) = (user("alice"), user("bob"));
    let store = EmbeddedStore::open_with(dir.path(), InboxLimits::default(), options).unwrap();
    append_stored(&store, vec![message(&alice, &bob, "m0")]).await;
    // The checkpoint runs right after the append is answered, before the next operation.
    store.depth(&bob).await.unwrap();
    assert_eq!(store.stats().checkpoints, 1);
    until_journal_empty(&store, dir.path()).await;

    // What the checkpoint wrote is the database's own durable state: a crash image of it
    // alone (the journal is empty) has the message.
    let crashed = tempfile::tempdir().unwrap();
    crash_image(dir.path(), crashed.path());
    drop(store);
    let store = EmbeddedStore::open(crashed.path(), InboxLimits::default()).unwrap();
    let read = store.read_new(&bob, &device("phone"), 10).await.unwrap();
    assert_eq!(texts(&read), ["m0"]);
}

/// Each checkpoint is reported to the observer the options give, with how long it took (what
/// the server exports as `titan_store_checkpoint_seconds`), before the writer answers anything
/// else.
#[tokio::test(flavor = "multi_thread")]
async fn each_checkpoint_is_reported_with_its_duration() {
    let dir = tempfile::tempdir().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorder = seen.clone();
    let options = EmbeddedOptions {
        checkpoints: Checkpoints {
            every: Duration::from_secs(24 * 3600),
            journal_bytes: 1,
        },
        on_checkpoint: Some(std::sync::Arc::new(move |took| {
            recorder.lock().unwrap().push(took);
        })),
        ..EmbeddedOptions::default()
    };
    let (alice, bob) = (user("alice"), user("bob"));
    let store = EmbeddedStore::open_with(dir.path(), InboxLimits::default(), options).unwrap();
    assert!(seen.lock().unwrap().is_empty(), "nothing to checkpoint yet");
    append_stored(&store, vec![message(&alice, &bob, "m0")]).await;
    store.depth(&bob).await.unwrap();
    assert_eq!(store.stats().checkpoints, 1);
    let durations = seen.lock().unwrap().clone();
    assert_eq!(durations.len(), 1, "{durations:?}");
    assert!(durations[0] > Duration::ZERO);
}

/// With a journal far from full, the checkpoint interval alone triggers a checkpoint: the first
/// batch after the interval has passed (here a read, since a store that goes quiet checkpoints
/// with its next operation) is followed by one, which empties the journal.
#[tokio::test(flavor = "multi_thread")]
async fn an_elapsed_interval_triggers_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let every = Duration::from_millis(20);
    let (alice, bob) = (user("alice"), user("bob"));
    let store =
        EmbeddedStore::open_with(dir.path(), InboxLimits::default(), checkpoints_every(every))
            .unwrap();
    append_stored(&store, vec![message(&alice, &bob, "m0")]).await;
    // The trigger under test is time itself: let the interval pass.
    tokio::time::sleep(every * 2).await;
    // The checkpoint runs after this read's batch, so before the next operation is answered.
    store.depth(&bob).await.unwrap();
    store.depth(&bob).await.unwrap();
    assert_eq!(store.stats().checkpoints, 1);
    until_journal_empty(&store, dir.path()).await;
}

/// Client ids reach the database file with the checkpoint that commits the transaction they
/// were written in: once that checkpoint is on disk and the journal released, a crash image
/// holds them, and a retry is a duplicate. Fails if the ids are missing from what a checkpoint
/// commits (the retry would be stored a second time, with nothing in the journal to replay).
#[tokio::test(flavor = "multi_thread")]
async fn client_ids_a_checkpoint_covered_survive_a_crash() {
    let live = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    let (alice, bob) = (user("alice"), user("bob"));
    let keyed = message_with_client_id(&alice, &bob, "m0", "k");
    // An interval of zero: the batch that stores the id is followed by a checkpoint.
    let store = EmbeddedStore::open_with(
        live.path(),
        InboxLimits::default(),
        checkpoints_every(Duration::ZERO),
    )
    .unwrap();
    append_stored(&store, vec![keyed.clone()]).await;
    until_journal_empty(&store, live.path()).await;
    crash_image(live.path(), crashed.path());
    drop(store);

    let store = EmbeddedStore::open(crashed.path(), InboxLimits::default()).unwrap();
    assert_eq!(
        store.append(vec![keyed.clone()]).await.unwrap(),
        [Appended::Duplicate {
            existing: keyed.message.id.clone()
        }],
        "the client id is in the checkpoint"
    );
    let read = store.read_new(&bob, &device("phone"), 10).await.unwrap();
    assert_eq!(texts(&read), ["m0"]);
}

/// The database file stays locked while a store has it open (its writes go through the flush
/// thread, its locks through redb's file backend): a second store on the same directory is
/// refused, and once the first is closed the directory opens again with what it stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_store_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (user("alice"), user("bob"));
    let store = EmbeddedStore::open(dir.path(), InboxLimits::default()).unwrap();
    append_stored(&store, vec![message(&alice, &bob, "m0")]).await;

    let second = EmbeddedStore::open(dir.path(), InboxLimits::default());
    let error = second.err().expect("the directory is in use");
    assert!(error.to_string().contains("already open"), "{error}");

    drop(store);
    let store = EmbeddedStore::open(dir.path(), InboxLimits::default()).unwrap();
    let read = store.read_new(&bob, &device("phone"), 10).await.unwrap();
    assert_eq!(texts(&read), ["m0"]);
}

/// A clean shutdown leaves both journal files empty (truncated, not only released): the last
/// checkpoint holds everything, and an older binary finds nothing to read.
#[tokio::test(flavor = "multi_thread")]
async fn a_clean_shutdown_leaves_the_journal_empty() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (user("alice"), user("bob"));
    let store =
        EmbeddedStore::open_with(dir.path(), InboxLimits::default(), no_checkpoints()).unwrap();
    append_stored(&store, vec![message(&alice, &bob, "m0")]).await;
    assert!(journal_files_len(dir.path()) > 0);
    drop(store);
    assert_eq!(journal_files_len(dir.path()), 0);

    let store = EmbeddedStore::open(dir.path(), InboxLimits::default()).unwrap();
    let read = store.read_new(&bob, &device("phone"), 10).await.unwrap();
    assert_eq!(texts(&read), ["m0"]);
}
