//! Frame scanning: what a journal's files give back after a crash.

use super::*;

fn frame_of(lsn: u64, redo: &Redo) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(dir.path(), lsn - 1).unwrap();
    j.write(&mut redo.clone()).unwrap();
    std::fs::read(dir.path().join(JOURNAL_FILES[0])).unwrap()
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
