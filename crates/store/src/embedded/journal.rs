//! The journal: what makes an append durable without a durable redb commit.
//!
//! A durable redb commit writes every B-tree page the transaction changed, wherever it lies in
//! the file, then fsyncs. With messages spread over many inboxes that is a page or more per
//! message per commit (about three 4 KiB writes per message in the p2p benchmark), each its own
//! block request. So the writer keeps one redb transaction open between checkpoints (see
//! [`super::writer`]) and makes the appends durable here instead: one sequential write of what
//! a batch stored, then one `fdatasync`. A checkpoint, a durable commit of that transaction,
//! persists everything at once several times a second, and the journal starts again, empty.
//!
//! The journal is two files written one at a time: a checkpoint still being written by the
//! database file's flush thread (`write_behind`) switches the journal to the other file, and the
//! file it left is emptied once the checkpoint is on disk, so a crash in between finds every
//! frame the database does not have yet in one file or the other ([`Journal::rotate`]).
//!
//! Each file is a sequence of frames, one per batch that stored messages:
//!
//! ```text
//! u32 payload length | u32 CRC-32 of (lsn, payload) | u64 lsn | payload
//! payload = u32 record count, then the records
//! record  = u8 kind (1: a stored message)
//!           str recipient | u64 seq | u64 ms | bytes message JSON
//!           u8 client id present, then str sender | str client id | str message id | u64 created ms
//! str, bytes = u32 length | the bytes;  all integers little-endian
//! ```
//!
//! A file is not emptied by truncating it: it keeps its length, frames are written over what it
//! held from its start again, and a file whose frames a checkpoint covers is released by zeroing
//! its first frame header, so a scan finds nothing in it. It grows ahead of its frames, with
//! zeros, [`GROW`] at a time. An `fdatasync` after a write that extends a file must also persist
//! its new length, which costs ext4 a commit of its own journal: on the tenth benchmark machine
//! a third more CPU and wall time per sync (docs/benchmarks.md, eleventh set). Opening the store
//! truncates both files after replaying them, so that the frames a crash left after a torn one
//! (never acknowledged) cannot be read as later frames of the same numbers.
//!
//! Reading frames back (scanning a file, merging the two, replaying a frame) is in the child
//! module `frames`.
//!
//! The lsn numbers frames from 1 and never goes back; the checkpoint stores the last lsn it
//! covers in the database, so reopening applies only newer frames (a journal whose truncation
//! after a checkpoint was lost in a crash is then harmless). Replay stops at the first frame that
//! is short, fails its checksum or breaks the lsn sequence: that frame's `fdatasync` never
//! returned, so nobody was told its messages were stored.
//!
//! The records are redo records of effects, not of requests: replaying one puts the message in
//! its inbox at its position and moves the head past it, whatever the inbox's state, so replay
//! never refuses or renumbers what the sender was told is stored. Cursors and acks are not
//! journaled; losing them in a crash only redelivers, which at-least-once allows. The record
//! layout is written by hand: five fields, where a serialization crate would add a dependency
//! to write the same bytes.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, Durability, ReadableTable, TableDefinition, WriteTransaction};

use super::tables::Tables;
use crate::error::StoreError;

mod frames;
use frames::{Pending, merge, pending_frames, replay};

/// File names of the journal inside the store's directory: the first, and the one a
/// checkpoint switches to while its own commit is being written (see the module doc).
pub const JOURNAL_FILES: [&str; 2] = ["titan.journal", "titan.journal.1"];

/// Bytes before a frame's payload: length, checksum, lsn.
const FRAME_HEADER: usize = 16;
/// How much a journal file grows by when a frame does not fit in what it has: zeros written
/// ahead of the frames, so that the next frames overwrite bytes the file already has (see the
/// module doc). At 50,000 messages/s a checkpoint interval's frames take about 700 KiB.
pub(super) const GROW: u64 = 1 << 20;
/// Zeros written at a time when a file grows.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
/// Record kind of a stored message.
const KIND_MESSAGE: u8 = 1;
/// A frame longer than this is corrupt (one transaction holds at most a few thousand messages
/// of at most a few hundred KiB each).
const MAX_FRAME: usize = 1 << 30;

/// `"checkpoint_lsn" -> lsn`: the last journal frame the database's durable state includes.
const JOURNAL_META: TableDefinition<&str, u64> = TableDefinition::new("journal");
const CHECKPOINT_LSN: &str = "checkpoint_lsn";

/// The lsn recorded by the last checkpoint (0 for a file that never had a journal).
pub(super) fn checkpoint_lsn(txn: &WriteTransaction) -> Result<u64, redb::Error> {
    let table = txn.open_table(JOURNAL_META)?;
    let lsn = table.get(CHECKPOINT_LSN)?.map_or(0, |guard| guard.value());
    Ok(lsn)
}

/// Records, in a transaction about to commit durably, that it includes every frame up to `lsn`.
pub(super) fn set_checkpoint_lsn(txn: &WriteTransaction, lsn: u64) -> Result<(), redb::Error> {
    txn.open_table(JOURNAL_META)?.insert(CHECKPOINT_LSN, lsn)?;
    Ok(())
}

/// The sender-side idempotency key of a stored message, journaled with it.
pub(super) struct ClientKey<'a> {
    pub from: &'a str,
    pub client_id: &'a str,
    pub message_id: &'a str,
    pub created_ms: u64,
}

/// The records of one batch, encoded as they are made, into what becomes its frame: the buffer
/// starts with room for the frame header and the record count, which [`Journal::append`] fills
/// in, so a record is copied once on its way to the file.
#[derive(Clone)]
pub(super) struct Redo {
    records: u32,
    bytes: Vec<u8>,
}

/// The frame header and the record count that precede a frame's records.
const RECORDS_AT: usize = FRAME_HEADER + 4;

impl Default for Redo {
    fn default() -> Self {
        Self {
            records: 0,
            bytes: vec![0; RECORDS_AT],
        }
    }
}

impl Redo {
    /// Records that `body` was stored at `(to, seq)` with time `ms`.
    pub fn stored(
        &mut self,
        to: &str,
        seq: u64,
        ms: u64,
        body: &[u8],
        client: Option<ClientKey<'_>>,
    ) {
        self.records += 1;
        let b = &mut self.bytes;
        b.push(KIND_MESSAGE);
        put_bytes(b, to.as_bytes());
        b.extend_from_slice(&seq.to_le_bytes());
        b.extend_from_slice(&ms.to_le_bytes());
        put_bytes(b, body);
        match client {
            None => b.push(0),
            Some(c) => {
                b.push(1);
                put_bytes(b, c.from.as_bytes());
                put_bytes(b, c.client_id.as_bytes());
                put_bytes(b, c.message_id.as_bytes());
                b.extend_from_slice(&c.created_ms.to_le_bytes());
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    pub fn clear(&mut self) {
        self.records = 0;
        self.bytes.truncate(RECORDS_AT);
    }
}

fn put_bytes(b: &mut Vec<u8>, bytes: &[u8]) {
    // Strings and bodies are bounded far below 4 GiB by the server's message limits.
    b.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    b.extend_from_slice(bytes);
}

/// One of the journal's two files.
struct Segment {
    /// Shared with the writer's sync thread, which syncs what the writer wrote.
    file: Arc<File>,
    path: PathBuf,
    /// The file's length: frames, then zeros or frames a checkpoint covered. Frames written
    /// below it overwrite bytes the file has.
    size: u64,
}

impl Segment {
    /// Opens (or creates) the journal file `name` in `dir` and reads its frames after
    /// `checkpoint_lsn`; also says whether the file was created.
    fn open(
        dir: &Path,
        name: &str,
        checkpoint_lsn: u64,
    ) -> Result<(Self, Pending, bool), StoreError> {
        let path = dir.join(name);
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_error(&path, "open", &e))?;
        let mut contents = Vec::new();
        file.read_to_end(&mut contents)
            .map_err(|e| io_error(&path, "read", &e))?;
        let scan = pending_frames(&contents, checkpoint_lsn);
        if contents.len() > scan.valid_len {
            tracing::debug!(
                path = %path.display(),
                ignored_bytes = contents.len() - scan.valid_len,
                "embedded store: bytes after the journal's last valid frame (room grown ahead, frames a checkpoint covered, or a write cut short by a crash); ignored"
            );
        }
        let segment = Self {
            file: Arc::new(file),
            path,
            size: contents.len() as u64,
        };
        Ok((segment, scan, created))
    }

    fn truncate(&mut self) -> Result<(), String> {
        self.file
            .set_len(0)
            .map_err(|e| format!("journal {}: truncate: {e}", self.path.display()))?;
        self.size = 0;
        Ok(())
    }

    /// Extends the file with zeros to `to` bytes. Not synced here: the sync of the frame that
    /// needed the room persists it with the frame.
    fn grow(&mut self, to: u64) -> Result<(), String> {
        while self.size < to {
            let n = (to - self.size).min(ZEROS.len() as u64) as usize;
            std::os::unix::fs::FileExt::write_all_at(&*self.file, &ZEROS[..n], self.size)
                .map_err(|e| format!("journal {}: grow: {e}", self.path.display()))?;
            self.size += n as u64;
        }
        Ok(())
    }

    /// Zeroes the first frame header: a scan of the file finds no frame, and the next frames
    /// are written from its start. Only for a file whose frames a durable checkpoint covers;
    /// not synced, since should the zeroing be lost those frames are skipped at open anyway.
    fn release(&self) -> Result<(), String> {
        if self.size < FRAME_HEADER as u64 {
            return Ok(());
        }
        std::os::unix::fs::FileExt::write_all_at(&*self.file, &ZEROS[..FRAME_HEADER], 0)
            .map_err(|e| format!("journal {}: release: {e}", self.path.display()))
    }
}

/// The open journal: two files, written one at a time. A checkpoint whose commit is not on disk
/// yet switches the writer to the other file ([`Journal::rotate`]); the file it leaves holds only
/// frames that checkpoint covers and is emptied once the checkpoint is on disk
/// ([`Journal::truncate_retired`]), before the next switch.
pub(super) struct Journal {
    segments: [Segment; 2],
    /// The file frames are written to.
    active: usize,
    /// Where the next frame goes in the active file (the end of its valid frames).
    len: u64,
    /// The lsn of the last frame written, or the last one a checkpoint covered.
    last_lsn: u64,
}

impl Journal {
    /// Opens (or creates) the journal's files in `dir` and reads the frames after
    /// `checkpoint_lsn`, from both files in lsn order. Frames go to the first file afterwards.
    pub fn open(dir: &Path, checkpoint_lsn: u64) -> Result<(Self, Pending), StoreError> {
        let (first, first_scan, first_created) =
            Segment::open(dir, JOURNAL_FILES[0], checkpoint_lsn)?;
        let (second, second_scan, second_created) =
            Segment::open(dir, JOURNAL_FILES[1], checkpoint_lsn)?;
        if first_created || second_created {
            // A new file's name must survive a crash as well as what is later written to it.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error(dir, "sync", &e))?;
        }
        let len = first_scan.valid_len as u64;
        let pending = merge(vec![first_scan, second_scan], checkpoint_lsn);
        let journal = Self {
            segments: [first, second],
            active: 0,
            len,
            last_lsn: pending.last_lsn,
        };
        Ok((journal, pending))
    }

    /// The directory the journal is in (the store's).
    pub fn dir(&self) -> &Path {
        self.segments[0].path.parent().unwrap_or(Path::new("."))
    }

    /// The lsn the next checkpoint covers: the last frame written.
    pub fn last_lsn(&self) -> u64 {
        self.last_lsn
    }

    /// Bytes of frames in the active file.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The active file, for syncing what was written (see `writer::sync`).
    pub fn handle(&self) -> Arc<File> {
        self.segments[self.active].file.clone()
    }

    /// Writes `redo` as the next frame. It is durable once the file is synced
    /// ([`Journal::handle`]).
    pub fn write(&mut self, redo: &mut Redo) -> Result<(), String> {
        let lsn = self.last_lsn + 1;
        let f = &mut redo.bytes;
        // Records are bounded far below 4 GiB by MAX_OPS_PER_BATCH and the message limits.
        let payload_len = (f.len() - FRAME_HEADER) as u32;
        f[0..4].copy_from_slice(&payload_len.to_le_bytes());
        f[8..16].copy_from_slice(&lsn.to_le_bytes());
        f[FRAME_HEADER..RECORDS_AT].copy_from_slice(&redo.records.to_le_bytes());
        let crc = crc32fast::hash(&f[8..]);
        f[4..8].copy_from_slice(&crc.to_le_bytes());
        let segment = &mut self.segments[self.active];
        let end = self.len + f.len() as u64;
        if end > segment.size {
            segment.grow(end + GROW)?;
        }
        match std::os::unix::fs::FileExt::write_all_at(&*segment.file, f, self.len) {
            Ok(()) => {
                self.len += f.len() as u64;
                self.last_lsn = lsn;
                Ok(())
            }
            // The frame may be partly on disk; the next one overwrites it at the same offset
            // with the same lsn, and replay would stop at it if it stayed torn.
            Err(e) => Err(format!("journal {}: write: {e}", segment.path.display())),
        }
    }

    /// Switches to the other file, which must have been released
    /// ([`Journal::release_retired`] after the previous switch): frames are written over it from
    /// its start. The file left behind keeps the frames written so far until
    /// [`Journal::release_retired`].
    pub fn rotate(&mut self) {
        self.active = 1 - self.active;
        self.len = 0;
    }

    /// Releases the file the last [`Journal::rotate`] left (a scan finds no frame in it), once
    /// a checkpoint covering all of its frames is on disk. Not synced: should it be lost, its
    /// frames are at or below the checkpoint's lsn and skipped.
    pub fn release_retired(&mut self) -> Result<(), String> {
        self.segments[1 - self.active].release()
    }

    /// Releases both files after a durable checkpoint covered all of their frames; frames go to
    /// the first file again, from its start. Not synced, as [`Journal::release_retired`].
    pub fn reset(&mut self) -> Result<(), String> {
        for segment in &self.segments {
            segment.release()?;
        }
        self.active = 0;
        self.len = 0;
        Ok(())
    }

    /// Empties both files (truncated to nothing) after a durable checkpoint covered all of
    /// their frames: at open, after replaying them, and at a clean shutdown.
    pub fn truncate(&mut self) -> Result<(), String> {
        for segment in &mut self.segments {
            segment.truncate()?;
        }
        self.active = 0;
        self.len = 0;
        Ok(())
    }
}

/// Bytes of valid frames in the journal files of the store in `dir`, covered by a checkpoint
/// or not: 0 once both files are released or empty. For tests and diagnostics; the store may
/// be open.
pub fn frames_len(dir: &Path) -> Result<u64, StoreError> {
    let mut total = 0;
    for name in JOURNAL_FILES {
        total += file_frames_len(&dir.join(name))?;
    }
    Ok(total)
}

/// Bytes of valid frames in the journal file at `path` (0 when there is no such file).
pub(super) fn file_frames_len(path: &Path) -> Result<u64, StoreError> {
    match std::fs::read(path) {
        Ok(contents) => Ok(pending_frames(&contents, 0).valid_len as u64),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_error(path, "read", &e)),
    }
}

/// Opens the journal of the database in `dir` and applies the frames no checkpoint covered
/// (what was stored since the last checkpoint before a crash), in one durable commit that is
/// itself a checkpoint; the journal is then empty.
pub(super) fn recover(db: &Database, dir: &Path) -> Result<Journal, StoreError> {
    let failed = |e: redb::Error| StoreError::unavailable(format!("journal replay: {e}"));
    let mut txn = db.begin_write().map_err(|e| failed(e.into()))?;
    let covered = checkpoint_lsn(&txn).map_err(failed)?;
    let (mut journal, pending) = Journal::open(dir, covered)?;
    if pending.payloads.is_empty() {
        txn.abort().map_err(|e| failed(e.into()))?;
    } else {
        let mut messages = 0;
        {
            let mut t = Tables::open(&txn);
            for payload in &pending.payloads {
                messages += replay(&mut t, payload).map_err(|e| StoreError::Corrupt {
                    reason: format!("journal replay: {e}"),
                })?;
            }
            t.write_back().map_err(|e| failed(e.into()))?;
        }
        set_checkpoint_lsn(&txn, pending.last_lsn).map_err(failed)?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| failed(e.into()))?;
        txn.commit().map_err(|e| failed(e.into()))?;
        tracing::info!(
            frames = pending.payloads.len(),
            messages,
            "embedded store: replayed the journal"
        );
    }
    // Truncated, not released: frames a crash left after a torn one were never acknowledged,
    // and new frames numbered like them must not be followed by them in a later scan.
    journal.truncate().map_err(StoreError::unavailable)?;
    Ok(journal)
}

#[cfg(test)]
impl Journal {
    /// Swaps the file for a read-only handle, so that the next append fails as a full or
    /// failing disk would make it fail.
    #[allow(clippy::expect_used)]
    pub fn break_writes(&mut self) {
        let segment = &mut self.segments[self.active];
        segment.file = Arc::new(File::open(&segment.path).expect("journal reopens read-only"));
    }
}

fn io_error(path: &Path, what: &str, e: &std::io::Error) -> StoreError {
    StoreError::unavailable(format!("journal {}: {what}: {e}", path.display()))
}

#[cfg(test)]
mod tests;
