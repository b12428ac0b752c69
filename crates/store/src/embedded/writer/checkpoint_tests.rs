//! Tests of `checkpoint.rs`: checkpoints, the journal they release, and recovery when one fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use redb::Database;
use titan_protocol::{DeviceId, Message, MessageId, UserId};
use tokio::sync::oneshot;

use std::sync::atomic::Ordering;

use super::Checkpoints;
use crate::embedded::journal::JOURNAL_FILES;
use crate::embedded::write_behind::{Flushes, WriteBehind};
use crate::embedded::writer::{Op, Writer};
use crate::embedded::{DATABASE_FILE, create_tables, journal};
use crate::error::StoreError;
use crate::inbox::{Appended, Delivered, InboxLimits, NewMessage};

/// A message from alice to bob (also `commit`'s tests').
pub(in crate::embedded::writer) fn new_message(text: &str) -> NewMessage {
    NewMessage {
        message: Message {
            id: MessageId::new(uuid::Uuid::now_v7().to_string()).unwrap(),
            from: UserId::new("alice").unwrap(),
            to: UserId::new("bob").unwrap(),
            time: "2025-01-01T00:00:00Z".to_owned(),
            message: text.to_owned(),
        },
        client_id: None,
    }
}

fn append(w: &mut Writer, text: &str) -> Result<Vec<Appended>, StoreError> {
    let (reply, answer) = oneshot::channel();
    let batch = vec![new_message(text)];
    w.execute(vec![Op::Append { batch, reply }]);
    answer.blocking_recv().expect("answered")
}

fn read_new(w: &mut Writer) -> Vec<String> {
    let (reply, answer) = oneshot::channel();
    w.execute(vec![Op::ReadNew {
        user: UserId::new("bob").unwrap(),
        device: DeviceId::new("phone").unwrap(),
        limit: 10,
        reply,
    }]);
    let read: Vec<Delivered> = answer.blocking_recv().unwrap().unwrap();
    read.into_iter()
        .map(|d| d.message.decode().unwrap().message)
        .collect()
}

/// A queue whose sender is gone: these tests drive the writer by hand, so its checkpoints
/// commit on its own thread (there is no loop to hear of a commit run beside it).
fn no_queue() -> tokio::sync::mpsc::WeakSender<Op> {
    let (queue, _) = tokio::sync::mpsc::channel(1);
    queue.downgrade()
}

/// A writer with a journal in `dir`, over `db` (whose file `flushes` writes, if given).
fn writer_over(db: Database, dir: &std::path::Path, flushes: Option<Flushes>) -> Writer {
    create_tables(&db).unwrap();
    let journal = journal::recover(&db, dir).unwrap();
    let writer = Writer::new(
        db,
        InboxLimits::default(),
        Arc::default(),
        Some(journal),
        Checkpoints::default(),
        flushes,
        no_queue(),
    );
    writer.unwrap()
}

fn writer(dir: &std::path::Path) -> Writer {
    writer_over(
        Database::create(dir.join(DATABASE_FILE)).unwrap(),
        dir,
        None,
    )
}

/// A journal write that fails loses the open transaction: the batch fails, and the state is
/// rebuilt from the last checkpoint plus the journal, so what was answered before is there
/// and what failed is not; cursor moves since the checkpoint are undone (redelivery).
#[test]
fn a_failed_journal_write_fails_its_batch_and_keeps_what_was_answered() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path());

    append(&mut w, "m1").unwrap();
    assert_eq!(read_new(&mut w), ["m1"]);
    w.journal.as_mut().unwrap().break_writes();
    let failed = append(&mut w, "m2");
    assert!(
        matches!(failed, Err(StoreError::Unavailable { .. })),
        "{failed:?}"
    );

    // Restored: m1 is back as unread (the cursor move was not journaled), m2 was never
    // stored, and the store goes on. m3 takes m2's seq: a read must not find m2 among the
    // messages kept in memory since the checkpoint (`fresh`), which the restore drops.
    assert!(!w.needs_restore);
    assert_eq!(read_new(&mut w), ["m1"]);
    append(&mut w, "m3").unwrap();
    assert_eq!(read_new(&mut w), ["m3"]);
}

/// A device that read before a checkpoint gets everything after its cursor from a read after
/// it: the messages kept in memory for reads (`fresh`) start over at each checkpoint, so this
/// read needs the table for the message before the checkpoint and may not take only the run.
#[test]
fn a_read_across_a_checkpoint_gets_every_message_after_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path());

    append(&mut w, "m1").unwrap();
    assert_eq!(read_new(&mut w), ["m1"]);
    append(&mut w, "m2").unwrap();
    w.checkpoint();
    append(&mut w, "m3").unwrap();
    assert_eq!(read_new(&mut w), ["m2", "m3"]);
    append(&mut w, "m4").unwrap();
    assert_eq!(read_new(&mut w), ["m4"]);
}

/// A journal sync that fails (the sync thread's `fdatasync`) fails the batch it covered;
/// the next batch rebuilds the state from the journal first and goes on, and what was
/// answered before is kept.
#[test]
fn a_failed_journal_sync_fails_its_batch_and_the_store_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path());

    append(&mut w, "m1").unwrap();
    w.syncer.as_ref().unwrap().fail_next_sync();
    let failed = append(&mut w, "m2");
    assert!(
        matches!(failed, Err(StoreError::Unavailable { .. })),
        "{failed:?}"
    );
    assert!(w.syncer.as_ref().unwrap().failed());

    append(&mut w, "m3").unwrap();
    assert!(!w.syncer.as_ref().unwrap().failed(), "restored");
    // m2's frame was written before its sync failed, so the restore may bring it back: the
    // sender was told it failed and retries it (at least once, never lost).
    let read = read_new(&mut w);
    assert_eq!(read.first().map(String::as_str), Some("m1"));
    assert_eq!(read.last().map(String::as_str), Some("m3"));
}

/// While the journal's sync is slow, the writer goes on, and nothing is answered early: not
/// the append waiting for its sync, and not a read that may have seen it (a read never
/// returns a message before the message is on disk). Both answers come once the sync ends.
#[test]
fn a_read_waits_for_the_sync_of_what_it_may_have_seen() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path());
    let gate = w.syncer.as_ref().unwrap().gate();
    let held = gate.lock().unwrap();

    let (reply, mut appended) = oneshot::channel();
    let batch = vec![new_message("m1")];
    w.execute(vec![Op::Append { batch, reply }]);
    let (reply, mut read) = oneshot::channel();
    w.execute(vec![Op::ReadNew {
        user: UserId::new("bob").unwrap(),
        device: DeviceId::new("phone").unwrap(),
        limit: 10,
        reply,
    }]);
    assert!(appended.try_recv().is_err(), "answered before its sync");
    assert!(
        read.try_recv().is_err(),
        "a read answered before what it saw is on disk"
    );

    drop(held);
    assert!(appended.blocking_recv().unwrap().is_ok());
    let read: Vec<Delivered> = read.blocking_recv().unwrap().unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].message.decode().unwrap().message, "m1");
}

/// A writer over a database file written behind (`write_behind`), as the durable store
/// opens it.
fn behind_writer(dir: &std::path::Path) -> (Writer, Flushes) {
    let (backend, flushes) = WriteBehind::open(&dir.join(DATABASE_FILE)).unwrap();
    let db = Database::builder().create_with_backend(backend).unwrap();
    (writer_over(db, dir, Some(flushes.clone())), flushes)
}

/// Bytes of valid frames in the journal file `name`.
fn frames_in(dir: &std::path::Path, name: &str) -> u64 {
    journal::file_frames_len(&dir.join(name)).unwrap()
}

/// A checkpoint whose commit is not on disk yet loses nothing in a crash: the frames it
/// covers stay in the journal file it left, appends after it go to the other file, and a
/// crash image (the database file as on disk, both journal files) reopens with all of them.
/// Once the commit is on disk, the file it left is released (no frame in it).
#[test]
fn a_checkpoint_still_being_written_loses_nothing_in_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, flushes) = behind_writer(dir.path());
    append(&mut w, "m1").unwrap();
    let gate = flushes.gate();
    let held = gate.lock().unwrap();
    w.checkpoint();
    assert_eq!(w.counters.checkpoints.load(Ordering::Relaxed), 1);
    append(&mut w, "m2").unwrap();

    let crashed = tempfile::tempdir().unwrap();
    for name in std::iter::once(DATABASE_FILE).chain(JOURNAL_FILES) {
        std::fs::copy(dir.path().join(name), crashed.path().join(name)).unwrap();
    }
    assert!(frames_in(dir.path(), JOURNAL_FILES[0]) > 0, "m1 kept");
    assert!(
        frames_in(dir.path(), JOURNAL_FILES[1]) > 0,
        "m2 in the other file"
    );

    drop(held);
    w.settle_retired(true).unwrap();
    assert_eq!(
        frames_in(dir.path(), JOURNAL_FILES[0]),
        0,
        "released once on disk"
    );
    assert!(frames_in(dir.path(), JOURNAL_FILES[1]) > 0);
    assert_eq!(read_new(&mut w), ["m1", "m2"]);
    drop(w);

    let (mut reopened, _) = behind_writer(crashed.path());
    assert_eq!(read_new(&mut reopened), ["m1", "m2"]);
    assert_eq!(frames_in(crashed.path(), JOURNAL_FILES[0]), 0, "replayed");
}

/// A journal file is written over after a checkpoint released it: a crash while the next
/// checkpoint is still being written finds the new frame at the file's start, followed by
/// frames the first checkpoint covered (same sizes here, so a stale frame starts exactly
/// where the new one ends), and loses nothing.
#[test]
fn a_file_written_over_after_release_loses_nothing_in_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, flushes) = behind_writer(dir.path());
    append(&mut w, "m1").unwrap();
    append(&mut w, "m2").unwrap();
    w.checkpoint();
    w.settle_retired(true).unwrap();
    assert_eq!(frames_in(dir.path(), JOURNAL_FILES[0]), 0, "released");
    append(&mut w, "m3").unwrap();
    let gate = flushes.gate();
    let held = gate.lock().unwrap();
    w.checkpoint();
    append(&mut w, "m4").unwrap();
    assert!(
        frames_in(dir.path(), JOURNAL_FILES[0]) > 0,
        "m4 written over the first file"
    );

    let crashed = tempfile::tempdir().unwrap();
    for name in std::iter::once(DATABASE_FILE).chain(JOURNAL_FILES) {
        std::fs::copy(dir.path().join(name), crashed.path().join(name)).unwrap();
    }
    drop(held);
    drop(w);

    let (mut reopened, _) = behind_writer(crashed.path());
    assert_eq!(read_new(&mut reopened), ["m1", "m2", "m3", "m4"]);
}

/// A shutdown whose last checkpoint cannot be written leaves the journal as it is (a clean
/// one empties it): the next start replays it.
#[test]
fn a_shutdown_whose_last_checkpoint_fails_keeps_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, flushes) = behind_writer(dir.path());
    append(&mut w, "m1").unwrap();
    flushes.fail_next();
    let (senders, ops) = tokio::sync::mpsc::channel(1);
    drop(senders);
    w.run(ops);
    assert!(
        frames_in(dir.path(), JOURNAL_FILES[0]) > 0,
        "m1's frame kept"
    );

    let (mut restarted, _) = behind_writer(dir.path());
    assert_eq!(read_new(&mut restarted), ["m1"]);
}

/// A checkpoint whose writing fails (a failing disk) loses nothing that was answered: the
/// store stops trusting the database file (operations fail until a restart), the journal
/// file the checkpoint left is kept, and the next start replays both files.
#[test]
fn a_failed_checkpoint_write_loses_nothing_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, flushes) = behind_writer(dir.path());
    append(&mut w, "m1").unwrap();
    flushes.fail_next();
    w.checkpoint();
    let batch = w.retired.expect("a checkpoint waiting to be on disk");
    assert!(flushes.wait_durable(batch).is_err(), "the write failed");
    assert!(w.settle_retired(false).is_err());
    assert!(
        frames_in(dir.path(), JOURNAL_FILES[0]) > 0,
        "m1's frame kept"
    );

    // What follows may be answered from the journal alone (its frame is on disk) or fail;
    // either way nothing answered may be lost.
    let m2_answered = append(&mut w, "m2").is_ok();
    w.checkpoint();
    assert!(w.retired.is_some(), "no checkpoint counts as done");
    assert!(
        frames_in(dir.path(), JOURNAL_FILES[0]) > 0,
        "m1's frame still kept"
    );
    drop(w);

    let (mut restarted, _) = behind_writer(dir.path());
    let expected: &[&str] = if m2_answered { &["m1", "m2"] } else { &["m1"] };
    assert_eq!(read_new(&mut restarted), expected);
}
