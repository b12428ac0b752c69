//! [`ChunkedMemory`]: the `memory` store's redb backend, the database "file" held in RAM.
//!
//! redb's own `InMemoryBackend` keeps the file in one `Vec<u8>`, and every growth of the file
//! resizes it: the allocator copies the whole database to a new place and zeroes the new part,
//! with redb's writer waiting. redb grows its file in large steps (it doubles), so under load
//! every message stalled for as long as that took (2.5 s at the p99.9 of a p2p run;
//! docs/benchmarks.md, fifth set). Here the file is a list of fixed-size chunks, each allocated
//! when it is first written: growing only records the new length, nothing moves, and a part
//! never written reads as zero without taking memory.

use std::io;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use redb::StorageBackend;

/// Size of one chunk. A database grows in steps of at least this (one allocation each).
const CHUNK: usize = 1 << 20;

/// See the module docs.
#[derive(Default)]
pub(super) struct ChunkedMemory(RwLock<File>);

#[derive(Default)]
struct File {
    len: u64,
    /// `len` rounded up to whole chunks, `None` until first written; bytes past `len` are zero.
    chunks: Vec<Option<Box<[u8]>>>,
}

impl std::fmt::Debug for ChunkedMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkedMemory")
            .field("len", &self.read_lock().len)
            .finish()
    }
}

impl ChunkedMemory {
    // A poisoned lock only means another thread panicked while holding it; the chunks are
    // still whole (every write is a plain copy), so they are read through.
    fn read_lock(&self) -> RwLockReadGuard<'_, File> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_lock(&self) -> RwLockWriteGuard<'_, File> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
}

fn out_of_range() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "offset past the end of the memory store",
    )
}

/// The chunk and offset within it of every piece of `[offset, offset + len)`, in order.
fn pieces(offset: u64, len: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    let mut at = offset;
    let end = offset + len as u64;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        // Both fit in usize: chunks are indexed in memory, and CHUNK is a usize.
        let chunk = (at / CHUNK as u64) as usize;
        let within = (at % CHUNK as u64) as usize;
        let take = (CHUNK - within).min((end - at) as usize);
        at += take as u64;
        Some((chunk, within, take))
    })
}

impl StorageBackend for ChunkedMemory {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.read_lock().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let file = self.read_lock();
        if offset.saturating_add(out.len() as u64) > file.len {
            return Err(out_of_range());
        }
        let mut done = 0;
        for (chunk, within, take) in pieces(offset, out.len()) {
            let to = &mut out[done..done + take];
            match &file.chunks[chunk] {
                Some(bytes) => to.copy_from_slice(&bytes[within..within + take]),
                None => to.fill(0),
            }
            done += take;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut file = self.write_lock();
        let chunks = usize::try_from(len.div_ceil(CHUNK as u64)).map_err(|_| out_of_range())?;
        if len < file.len {
            // What is cut off must read as zero if the file grows again.
            let keep = file.chunks.len().min(chunks);
            file.chunks.truncate(keep);
            let within = (len % CHUNK as u64) as usize;
            if within > 0
                && let Some(Some(last)) = file.chunks.last_mut()
            {
                last[within..].fill(0);
            }
        }
        file.chunks.resize_with(chunks, || None);
        file.len = len;
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut file = self.write_lock();
        if offset.saturating_add(data.len() as u64) > file.len {
            return Err(out_of_range());
        }
        let mut done = 0;
        for (chunk, within, take) in pieces(offset, data.len()) {
            let bytes = file.chunks[chunk].get_or_insert_with(|| vec![0; CHUNK].into_boxed_slice());
            bytes[within..within + take].copy_from_slice(&data[done..done + take]);
            done += take;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads and writes across chunk boundaries land where they should, growth keeps what was
    /// written, a shrink cuts it off, and what grows back (or was never written) reads as zero;
    /// access past the end is refused.
    #[test]
    fn behaves_like_a_file() {
        let m = ChunkedMemory::default();
        m.set_len(3 * CHUNK as u64 + 10).unwrap();
        let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8 + 1).collect();
        let at = CHUNK as u64 - 1000;
        m.write(at, &data).unwrap();
        m.set_len(5 * CHUNK as u64).unwrap();
        let mut back = vec![0; 3000];
        m.read(at, &mut back).unwrap();
        assert_eq!(back, data);

        m.set_len(at + 1500).unwrap();
        assert_eq!(m.len().unwrap(), at + 1500);
        assert!(m.read(at, &mut back).is_err(), "past the end");
        assert!(m.write(at + 1000, &data[..1000]).is_err(), "past the end");
        m.set_len(at + 3000).unwrap();
        m.read(at, &mut back).unwrap();
        assert_eq!(back[..1500], data[..1500]);
        assert!(back[1500..].iter().all(|b| *b == 0), "cut off, then zero");

        // Growing allocates nothing until written.
        m.set_len(1 << 36).unwrap();
        assert_eq!(m.read_lock().chunks.iter().flatten().count(), 2);
        m.set_len(at + 3000).unwrap();

        let mut fresh = vec![1; 100];
        m.read(4 * CHUNK as u64 - 50, &mut fresh).unwrap_err();
        m.read(at + 3000 - 100, &mut fresh).unwrap();
        assert!(fresh.iter().all(|b| *b == 0));
    }
}
