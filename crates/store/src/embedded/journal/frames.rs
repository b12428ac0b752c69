//! Reading frames back: scanning a journal file for the frames a checkpoint did not cover,
//! merging the two files' frames into one sequence, and applying a frame's records (replay, at
//! open). The layout is in the parent module's doc; frames are written by
//! [`super::Journal::write`].

use redb::StorageError;

use super::{FRAME_HEADER, KIND_MESSAGE, MAX_FRAME};
use crate::embedded::tables::{Head, Tables};

/// The frames of a journal that a checkpoint did not cover yet, read at open.
pub(in crate::embedded) struct Pending {
    /// Payloads of the frames to replay, in order.
    pub payloads: Vec<Vec<u8>>,
    /// The lsn of the last of them (or the checkpoint's when there are none).
    pub last_lsn: u64,
    /// Bytes up to the end of the last valid frame (covered or not).
    pub valid_len: usize,
}

/// The frames of `contents` after `checkpoint_lsn`, up to the first invalid one.
pub(super) fn pending_frames(contents: &[u8], checkpoint_lsn: u64) -> Pending {
    let mut scan = Pending {
        payloads: Vec::new(),
        last_lsn: checkpoint_lsn,
        valid_len: 0,
    };
    let mut at = 0;
    let mut previous: Option<u64> = None;
    while let Some(header) = contents.get(at..at + FRAME_HEADER) {
        let len = u32_at(header, 0) as usize;
        let crc = u32_at(header, 4);
        let lsn = u64_at(header, 8);
        if len > MAX_FRAME || previous.is_some_and(|p| lsn != p + 1) {
            break;
        }
        let Some(payload) = contents.get(at + FRAME_HEADER..at + FRAME_HEADER + len) else {
            break;
        };
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header[8..]);
        hasher.update(payload);
        if hasher.finalize() != crc {
            break;
        }
        if lsn > checkpoint_lsn {
            scan.payloads.push(payload.to_vec());
            scan.last_lsn = lsn;
        }
        previous = Some(lsn);
        at += FRAME_HEADER + len;
        scan.valid_len = at;
    }
    scan
}

impl Pending {
    /// The lsn of the first pending frame (when there is one).
    fn first_lsn(&self) -> u64 {
        self.last_lsn + 1 - self.payloads.len() as u64
    }
}

/// The pending frames of both files as one sequence: those of the file whose frames come first,
/// then the other's if they continue them. A gap means that the earlier file's last frames were
/// cut short by a crash, and then none of the later file's frames was acknowledged (the sync
/// thread answers batches in order, after syncing every file they wrote to), so they are
/// ignored as a torn tail is.
pub(super) fn merge(mut scans: Vec<Pending>, checkpoint_lsn: u64) -> Pending {
    scans.retain(|scan| !scan.payloads.is_empty());
    scans.sort_by_key(Pending::first_lsn);
    let mut scans = scans.into_iter();
    let Some(mut merged) = scans.next() else {
        return Pending {
            payloads: Vec::new(),
            last_lsn: checkpoint_lsn,
            valid_len: 0,
        };
    };
    for next in scans {
        if next.first_lsn() != merged.last_lsn + 1 {
            tracing::warn!(
                after = merged.last_lsn,
                next = next.first_lsn(),
                "embedded store: a gap between the journal's files (a crash cut the earlier one short); the later frames are ignored"
            );
            break;
        }
        merged.payloads.extend(next.payloads);
        merged.last_lsn = next.last_lsn;
    }
    merged
}

/// Applies one frame's records. A record that does not decode means the frame is corrupt
/// despite its checksum: refused rather than half applied.
pub(in crate::embedded) fn replay(t: &mut Tables<'_>, payload: &[u8]) -> Result<u64, StorageError> {
    let mut r = Reader { bytes: payload };
    let count = r.u32()?;
    for _ in 0..count {
        if r.u8()? != KIND_MESSAGE {
            return Err(corrupt("unknown record kind"));
        }
        let to = r.str()?;
        let seq = r.u64()?;
        let ms = r.u64()?;
        let body = r.bytes()?;
        t.inbox.table()?.insert((to, seq), (ms, body))?;
        let head = t.head(to)?;
        if head.next_seq <= seq {
            t.set_head(
                to,
                Head {
                    next_seq: seq + 1,
                    last_ms: head.last_ms.max(ms),
                },
            )?;
        }
        if r.u8()? == 1 {
            let from = r.str()?;
            let client_id = r.str()?;
            let message_id = r.str()?;
            let created_ms = r.u64()?;
            t.client_ids
                .table()?
                .insert((from, to, client_id), (message_id, created_ms))?;
        }
    }
    if !r.bytes.is_empty() {
        return Err(corrupt("trailing bytes after the records"));
    }
    Ok(u64::from(count))
}

/// Reads the fields of [`Redo`] back.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StorageError> {
        if self.bytes.len() < n {
            return Err(corrupt("record cut short"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, StorageError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, StorageError> {
        Ok(u32_at(self.take(4)?, 0))
    }
    fn u64(&mut self) -> Result<u64, StorageError> {
        Ok(u64_at(self.take(8)?, 0))
    }
    fn bytes(&mut self) -> Result<&'a [u8], StorageError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn str(&mut self) -> Result<&'a str, StorageError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| corrupt("a name is not UTF-8"))
    }
}

pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(word)
}

pub(super) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(word)
}

fn corrupt(what: &str) -> StorageError {
    StorageError::Corrupted(format!("journal: {what}"))
}
