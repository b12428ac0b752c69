//! Frame scanning: what a journal's files give back after a crash.

use super::*;
use std::path::Path;

fn frame_of(lsn: u64, redo: &Redo) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(dir.path(), lsn - 1).unwrap();
    j.write(&mut redo.clone()).unwrap();
    let mut file = std::fs::read(dir.path().join(JOURNAL_FILES[0])).unwrap();
    // Only the frame: the file has grown ahead of it.
    file.truncate(j.len() as usize);
    file
}

fn one_message() -> Redo {
    let mut redo = Redo::default();
    redo.stored("bob", 7, 1000, br#"{"m":1}"#, None);
    redo
}

#[test]
fn frames_after_the_checkpoint_are_pending_and_a_torn_tail_is_ignored() {
    let redo = one_message();
    let mut file = frame_of(1, &redo);
    file.extend_from_slice(&frame_of(2, &redo));
    let whole = file.len();
    // A third frame cut short by a crash.
    let third = frame_of(3, &redo);
    file.extend_from_slice(&third[..third.len() - 3]);

    let scan = pending_frames(&file, 0);
    assert_eq!((scan.payloads.len(), scan.last_lsn), (2, 2));
    assert_eq!(scan.valid_len, whole);

    let scan = pending_frames(&file, 1);
    assert_eq!((scan.payloads.len(), scan.last_lsn), (1, 2));

    // A flipped byte fails the checksum: nothing from that frame on.
    let mut bad = file.clone();
    bad[FRAME_HEADER + 2] ^= 1;
    assert_eq!(pending_frames(&bad, 0).payloads.len(), 0);
}

/// Whatever a crash or a bad disk did to the file, a scan gives back exactly the frames before
/// the first damaged one, whole and unchanged: cut at every byte, and every byte flipped in
/// three ways (header, checksum, lsn, payload alike).
#[test]
fn any_cut_or_flipped_byte_keeps_exactly_the_frames_before_it() {
    let mut file = Vec::new();
    let mut ends = Vec::new();
    for (lsn, to) in [(1, "bob"), (2, "carol"), (3, "dave")] {
        let mut redo = Redo::default();
        redo.stored(to, lsn, 1000 + lsn, br#"{"m":"x"}"#, None);
        file.extend_from_slice(&frame_of(lsn, &redo));
        ends.push(file.len());
    }
    let whole = pending_frames(&file, 0);
    assert_eq!(whole.payloads.len(), 3);
    let before = |at: usize| ends.iter().filter(|&&end| end <= at).count();
    for cut in 0..=file.len() {
        let scan = pending_frames(&file[..cut], 0);
        let kept = before(cut);
        assert_eq!(scan.payloads, whole.payloads[..kept], "cut at {cut}");
        assert_eq!(scan.last_lsn, kept as u64, "cut at {cut}");
    }
    for at in 0..file.len() {
        // The frames that end at or before `at` are intact; the one holding `at` is not.
        let kept = before(at);
        for flip in [0x01, 0x80, 0xff] {
            let mut bad = file.clone();
            bad[at] ^= flip;
            let scan = pending_frames(&bad, 0);
            assert_eq!(
                scan.payloads,
                whole.payloads[..kept],
                "byte {at} ^ {flip:#x}"
            );
            assert_eq!(scan.valid_len, if kept == 0 { 0 } else { ends[kept - 1] });
        }
    }
}

#[test]
fn a_gap_in_the_lsns_ends_the_journal() {
    let redo = one_message();
    let mut file = frame_of(1, &redo);
    file.extend_from_slice(&frame_of(3, &redo));
    let scan = pending_frames(&file, 0);
    assert_eq!((scan.payloads.len(), scan.last_lsn), (1, 1));
}

fn scan_of(frames: &[u64]) -> Pending {
    let redo = one_message();
    let file: Vec<u8> = frames
        .iter()
        .flat_map(|&lsn| frame_of(lsn, &redo))
        .collect();
    pending_frames(&file, 0)
}

/// The two files' frames are one sequence in lsn order, whichever file holds the first;
/// frames after a gap between them (the earlier file cut short) are ignored.
#[test]
fn the_two_files_are_read_in_lsn_order_up_to_a_gap() {
    let merged = merge(vec![scan_of(&[4, 5]), scan_of(&[2, 3])], 1);
    assert_eq!((merged.payloads.len(), merged.last_lsn), (4, 5));

    let merged = merge(vec![scan_of(&[2, 3]), scan_of(&[5, 6])], 1);
    assert_eq!((merged.payloads.len(), merged.last_lsn), (2, 3));

    let merged = merge(vec![scan_of(&[]), scan_of(&[2])], 1);
    assert_eq!((merged.payloads.len(), merged.last_lsn), (1, 2));

    let merged = merge(vec![scan_of(&[]), scan_of(&[])], 7);
    assert_eq!((merged.payloads.len(), merged.last_lsn), (0, 7));
}

fn file_len(dir: &Path, name: &str) -> u64 {
    std::fs::metadata(dir.join(name)).unwrap().len()
}

fn scan_file(dir: &Path, name: &str, checkpoint_lsn: u64) -> Pending {
    pending_frames(&std::fs::read(dir.join(name)).unwrap(), checkpoint_lsn)
}

/// A file grows ahead of its frames, so that the next frames do not extend it; once its frames
/// are covered and it is released, a scan finds nothing in it; written again after a switch, it
/// keeps its length and a scan finds the new frames alone, not the older ones after them.
#[test]
fn a_file_grows_ahead_and_is_written_over_after_release() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(dir.path(), 0).unwrap();
    let mut big = Redo::default();
    for seq in 0..20 {
        big.stored("bob", seq, 1000, &[b'x'; 200], None);
    }
    for _ in 0..3 {
        j.write(&mut big.clone()).unwrap();
    }
    let size = file_len(dir.path(), JOURNAL_FILES[0]);
    assert!(size >= GROW, "grown ahead of the frames: {size}");
    assert!(j.len() < size);
    for _ in 0..3 {
        j.write(&mut big.clone()).unwrap();
    }
    assert_eq!(
        file_len(dir.path(), JOURNAL_FILES[0]),
        size,
        "later frames fit in the room grown ahead"
    );

    // A checkpoint covers lsn 1..=6 and switches files; once it is on disk the file it left
    // is released.
    j.rotate();
    j.release_retired().unwrap();
    assert_eq!(scan_file(dir.path(), JOURNAL_FILES[0], 0).valid_len, 0);

    // The next checkpoint covers lsn 7 and switches back: lsn 8 goes over the first file.
    j.write(&mut one_message()).unwrap();
    j.rotate();
    j.release_retired().unwrap();
    j.write(&mut one_message()).unwrap();
    assert_eq!(file_len(dir.path(), JOURNAL_FILES[0]), size, "written over");
    let scan = scan_file(dir.path(), JOURNAL_FILES[0], 7);
    assert_eq!((scan.payloads.len(), scan.last_lsn), (1, 8));
    assert_eq!(
        scan.valid_len as u64,
        j.len(),
        "the older frames after it are not read"
    );
    assert_eq!(frames_len(dir.path()).unwrap(), j.len());
}

/// Opening replays the files and then truncates them, so that frames a crash left after a torn
/// one cannot follow new frames of the same numbers in a later scan.
#[test]
fn recovery_leaves_both_files_empty() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(dir.path(), 0).unwrap();
    j.write(&mut one_message()).unwrap();
    j.rotate();
    j.write(&mut one_message()).unwrap();
    drop(j);
    assert!(file_len(dir.path(), JOURNAL_FILES[0]) > 0);
    let db = redb::Database::create(dir.path().join("db.redb")).unwrap();
    crate::embedded::create_tables(&db).unwrap();
    recover(&db, dir.path()).unwrap();
    for name in JOURNAL_FILES {
        assert_eq!(file_len(dir.path(), name), 0, "{name} truncated");
    }
}
