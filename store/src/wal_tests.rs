//! Tests of the write-ahead log: round trips across segments and reopens,
//! torn tails, truncation and purging, and a model check of random
//! operation sequences.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

/// Small segments, so a few records span several files.
const SMALL: WalOptions = WalOptions { segment_size: 256, slow_sync: std::time::Duration::ZERO };

fn payload(index: u64, length: usize) -> Vec<u8> {
    (0..length).map(|i| (index as usize * 31 + i) as u8).collect()
}

fn open(dir: &Path) -> (Wal, Recovery) {
    Wal::open(dir, SMALL).expect("open the log")
}

fn append(wal: &mut Wal, range: Range<u64>, length: usize) {
    let payloads: Vec<Vec<u8>> = range.clone().map(|i| payload(i, length)).collect();
    wal.append(range.start, payloads.iter().map(Vec::as_slice)).expect("append");
}

fn all(wal: &Wal) -> Vec<Vec<u8>> {
    payloads(wal, 0..u64::MAX)
}

fn payloads(wal: &Wal, range: Range<u64>) -> Vec<Vec<u8>> {
    wal.read(range).expect("read").into_iter().map(|(_, payload)| payload).collect()
}

/// The file holding record `index`, and the record's offset in it.
fn position(wal: &Wal, index: u64) -> (PathBuf, u64) {
    let (segment, at) = wal.locate(index).expect("held");
    (segment.path.clone(), segment.records[at].0)
}

fn overwrite(path: &Path, offset: u64, bytes: &[u8]) {
    let file = OpenOptions::new().write(true).open(path).expect("open segment");
    file.write_all_at(bytes, offset).expect("write");
}

#[test]
fn records_round_trip_across_segments_and_reopens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut wal, recovery) = open(dir.path());
    assert_eq!((wal.first(), wal.last(), recovery), (None, None, Recovery::default()));
    append(&mut wal, 1..4, 40);
    append(&mut wal, 4..20, 40);
    assert!(wal.segment_count() > 3, "56-byte records in 256-byte segments span several files");
    let expected: Vec<Vec<u8>> = (1..20).map(|i| payload(i, 40)).collect();
    assert_eq!(all(&wal), expected);
    drop(wal);
    let (wal, recovery) = open(dir.path());
    assert_eq!(recovery, Recovery { records: 19, discarded_bytes: 0 });
    assert_eq!((wal.first(), wal.last()), (Some(1), Some(19)));
    assert_eq!(all(&wal), expected);
    assert_eq!(payloads(&wal, 5..7), expected[4..6]);
    assert_eq!(payloads(&wal, 19..21), expected[18..], "past the end is left out");
}

#[test]
fn appends_never_overlap_may_leave_a_hole_and_an_empty_log_starts_anywhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut wal, _) = open(dir.path());
    append(&mut wal, 100..102, 8);
    assert!(wal.append(101, [&b"overlap"[..]]).is_err(), "an overlap is refused");
    append(&mut wal, 102..103, 8);
    assert_eq!((wal.first(), wal.last(), wal.next()), (Some(100), Some(102), Some(103)));
    append(&mut wal, 105..106, 8);
    drop(wal);
    let (wal, recovery) = open(dir.path());
    assert_eq!(recovery.discarded_bytes, 0, "a hole is not damage");
    let indexes: Vec<u64> = wal.read(0..200).expect("read").into_iter().map(|(index, _)| index).collect();
    assert_eq!(indexes, [100, 101, 102, 105]);
}

#[test]
fn a_record_larger_than_a_segment_gets_a_segment_of_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut wal, _) = open(dir.path());
    append(&mut wal, 1..2, 10);
    append(&mut wal, 2..3, 1000);
    append(&mut wal, 3..4, 10);
    drop(wal);
    let (wal, _) = open(dir.path());
    assert_eq!(all(&wal), vec![payload(1, 10), payload(2, 1000), payload(3, 10)]);
}

#[test]
fn a_torn_tail_is_discarded_and_never_comes_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    // One batch in one segment; a crash tore record 3 (its checksum no longer matches) while
    // 4 and 5 reached the disk whole.
    let big = WalOptions { segment_size: 4096, ..WalOptions::default() };
    let (mut wal, _) = Wal::open(dir.path(), big).expect("open");
    append(&mut wal, 1..6, 20);
    let (path, offset) = position(&wal, 3);
    drop(wal);
    overwrite(&path, offset + HEADER + 5, b"X");
    let (mut wal, recovery) = Wal::open(dir.path(), big).expect("reopen");
    assert_eq!(recovery.records, 2);
    assert!(recovery.discarded_bytes > 0);
    assert_eq!(all(&wal), vec![payload(1, 20), payload(2, 20)]);
    // A new record 3 of the same length lands where the torn one was: the old 4 and 5 behind
    // it were zeroed, so they cannot be read back as if they followed it.
    wal.append(3, [&payload(33, 20)[..]]).expect("append");
    drop(wal);
    let (wal, recovery) = Wal::open(dir.path(), big).expect("reopen");
    assert_eq!(recovery.discarded_bytes, 0);
    assert_eq!(all(&wal), vec![payload(1, 20), payload(2, 20), payload(33, 20)]);
    wal_is_usable(wal);
}

fn wal_is_usable(mut wal: Wal) {
    let next = wal.next().expect("not empty");
    wal.append(next, [&b"more"[..]]).expect("append after recovery");
    assert_eq!(payloads(&wal, next..next + 1), vec![b"more".to_vec()]);
}

#[test]
fn a_bad_record_in_a_segment_that_others_follow_is_damage_not_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut wal, _) = open(dir.path());
    append(&mut wal, 1..12, 40);
    assert!(wal.segment_count() > 1);
    let (path, offset) = position(&wal, 2);
    drop(wal);
    overwrite(&path, offset + 4, &[0xFF; 4]); // the checksum of record 2
    let error = Wal::open(dir.path(), SMALL).expect_err("damage refuses to open").to_string();
    assert!(error.contains("damaged") && error.contains("record 2"), "{error}");
    // Nothing was changed: the same error again, and the later records are still there.
    assert!(Wal::open(dir.path(), SMALL).is_err());
    overwrite(&path, offset + 4, &checksum(2, &payload(2, 40)).to_le_bytes());
    let (wal, recovery) = open(dir.path());
    assert_eq!((wal.first(), wal.last(), recovery.records), (Some(1), Some(11), 11));
}

#[test]
fn gaps_between_segments_are_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut wal, _) = open(dir.path());
    append(&mut wal, 1..4, 40);
    assert_eq!(wal.gaps(), []);
    append(&mut wal, 10..12, 40);
    assert_eq!(wal.gaps(), vec![(4..10)]);
    drop(wal);
    let (wal, _) = open(dir.path());
    assert_eq!(wal.gaps(), vec![(4..10)], "a reopen sees the same gap");
}

#[test]
fn truncated_records_stay_gone_after_new_appends_and_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut wal, _) = open(dir.path());
    append(&mut wal, 1..15, 40);
    wal.truncate(6).expect("truncate");
    assert_eq!(wal.last(), Some(5));
    wal.truncate(50).expect("past the end does nothing");
    assert_eq!(wal.last(), Some(5));
    append(&mut wal, 6..8, 10);
    drop(wal);
    let (wal, recovery) = open(dir.path());
    assert_eq!(recovery.discarded_bytes, 0);
    let mut expected: Vec<Vec<u8>> = (1..6).map(|i| payload(i, 40)).collect();
    expected.extend((6..8).map(|i| payload(i, 10)));
    assert_eq!(all(&wal), expected);
}

#[test]
fn purging_drops_whole_segments_and_everything_empties_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut wal, _) = open(dir.path());
    append(&mut wal, 1..20, 40);
    let before = wal.segment_count();
    wal.purge(10).expect("purge");
    assert!(wal.segment_count() < before);
    let first = wal.first().expect("records remain");
    assert!(first <= 11 && first > 1, "whole segments only: first is {first}");
    assert_eq!(payloads(&wal, 11..20), (11..20).map(|i| payload(i, 40)).collect::<Vec<_>>());
    wal.purge(19).expect("purge all");
    assert_eq!((wal.first(), wal.last(), wal.segment_count()), (None, None, 0));
    // After a snapshot the log restarts further on.
    append(&mut wal, 500..502, 8);
    drop(wal);
    let (wal, _) = open(dir.path());
    assert_eq!((wal.first(), wal.last()), (Some(500), Some(501)));
}

/// An operation of the model check.
#[derive(Debug, Clone)]
enum Op {
    /// Append this many records of these lengths at the next index (at `start` when empty).
    Append {
        start: u64,
        lengths: Vec<usize>,
    },
    Truncate(u64),
    Purge(u64),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1_u64..50, proptest::collection::vec(0_usize..300, 1..8))
            .prop_map(|(start, lengths)| Op::Append { start, lengths }),
        1 => (0_u64..80).prop_map(Op::Truncate),
        1 => (0_u64..80).prop_map(Op::Purge),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever the sequence of appends, truncations, purges and reopens, the log holds
    /// exactly what a map of index → payload says above the highest purge point; at or below
    /// it, records of a partly purged segment may remain. Appends continue where a Raft log
    /// would: after the last record or the purge point, whichever is higher.
    #[test]
    fn the_log_behaves_like_a_map(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(dir.path());
        let mut model: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut purged: Option<u64> = None;
        for op in ops {
            match op {
                Op::Append { start, lengths } => {
                    let base = model.keys().next_back().copied().max(purged);
                    let first = base.map_or(start, |base| base + 1);
                    let payloads: Vec<Vec<u8>> =
                        lengths.iter().enumerate().map(|(i, l)| payload(first + i as u64, *l)).collect();
                    wal.append(first, payloads.iter().map(Vec::as_slice)).expect("append");
                    for (i, p) in payloads.into_iter().enumerate() {
                        model.insert(first + i as u64, p);
                    }
                }
                Op::Truncate(from) => {
                    wal.truncate(from).expect("truncate");
                    model.retain(|index, _| *index < from);
                }
                Op::Purge(upto) => {
                    wal.purge(upto).expect("purge");
                    model.retain(|index, _| *index > upto);
                    purged = purged.max(Some(upto));
                }
                Op::Reopen => {
                    drop(wal);
                    let (reopened, recovery) = open(dir.path());
                    prop_assert_eq!(recovery.discarded_bytes, 0);
                    wal = reopened;
                }
            }
            let above = purged.map_or(0, |p| p + 1);
            let held: Vec<(u64, Vec<u8>)> = wal.read(above..u64::MAX).expect("read");
            let expected: Vec<(u64, Vec<u8>)> = model.iter().map(|(i, p)| (*i, p.clone())).collect();
            prop_assert_eq!(held, expected);
            match model.keys().next_back() {
                Some(last) => prop_assert_eq!(wal.last(), Some(*last)),
                None => prop_assert!(wal.last().is_none_or(|last| Some(last) <= purged)),
            }
        }
    }
}

/// The on-disk form of a log (store format 2) as routers in the field
/// wrote it: segments read back as written, or the build fails (golden
/// files; `HERALD_BLESS=1` rewrites them after an intended change).
#[test]
fn segments_match_their_golden_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut wal, _) = open(dir.path());
    append(&mut wal, 1..6, 40);
    drop(wal);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/wal-v2");
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list the log")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    names.sort();
    assert!(names.len() > 1, "the records span several segments: {names:?}");
    let copy = tempfile::tempdir().expect("tempdir");
    for name in &names {
        let bytes = std::fs::read(dir.path().join(name)).expect("read a segment");
        let stored = herald_testkit::golden::check(&fixtures.join(name), &bytes);
        std::fs::write(copy.path().join(name), stored).expect("copy the stored segment");
    }
    let (stored, recovery) = open(copy.path());
    assert_eq!(all(&stored), (1..6).map(|i| payload(i, 40)).collect::<Vec<_>>(), "{recovery:?}");
}
