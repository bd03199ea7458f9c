//! loom models of the slot seqlock latch (`shmplane_shm::seqlock`): readers never see a
//! torn value (every word of a value is equal, so a mix of two writes shows), with one
//! writer writing twice and one reader (two lines of one word each), with two writers, and with a writer that dies mid-write (the
//! next writer takes the lock over and repairs the torn copy while readers read), and
//! element updates (`update`) by two writers that must not lose each other's word, and
//! committed-word reads (`read_committed_word`, the Python binding's element reads):
//! never a value of an unfinished write, never older than `version` says, never going
//! back.
#![cfg(shmplane_loom)]

use loom::sync::Arc;
use loom_tests::FutexModel;
use shmplane_shm::layout::SlotControl;
use shmplane_shm::seqlock::{
    init, read, read_committed_word, read_words, read_words_or_lock, repair_abandoned, try_read, update, version, write,
    write_until, CrashPoint, SlotStore,
};
use shmplane_shm::sync::AtomicU64;

/// Two words, one per line (`LINE_WORDS = 1`): every whole read double-collects two
/// line versions, the case the per-line versions exist for.
const WORDS: usize = 2;

#[derive(Default)]
struct Model {
    ctl: SlotControl,
    /// Each copy: line 0's version and word, line 1's version and word.
    copies: [[AtomicU64; 2 * WORDS]; 2],
    futex: FutexModel,
}

#[derive(Clone, Default)]
struct Store(Arc<Model>);

impl Store {
    /// A store made as a slot segment is (`seqlock::init`: value 0, version 1, copy 1's
    /// canaries), before any thread shares it.
    fn new() -> Store {
        let s = Store::default();
        init(&s, &[0; WORDS]);
        s
    }
}

/// `read_committed_word` of a store whose canaries are intact.
fn committed(store: &Store, i: usize) -> u64 {
    read_committed_word(store, i).expect("copy 1's canary intact")
}

impl SlotStore for Store {
    type Park = FutexModel;
    const LINE_WORDS: usize = 1;
    fn control(&self) -> &SlotControl {
        &self.0.ctl
    }
    fn words(&self) -> usize {
        WORDS
    }
    fn copy_lines(&self, copy: usize) -> &[AtomicU64] {
        &self.0.copies[copy]
    }
    fn park(&self) -> &FutexModel {
        &self.0.futex
    }
}

fn value(v: u64) -> [u64; WORDS] {
    [v; WORDS]
}

/// Read once (or until consistent) and check the value is one that was written.
fn check_read(store: &Store, max: u64) {
    let mut dst = [0u64; WORDS];
    let _version = read(store, &mut dst);
    assert!(dst.iter().all(|&w| w == dst[0]), "torn read: {dst:?}");
    assert!(dst[0] <= max, "value never written: {dst:?}");
}

#[test]
fn one_writer_one_reader_never_torn() {
    loom::model(|| {
        let store = Store::new();
        let w = store.clone();
        let writer = loom::thread::spawn(move || {
            write(&w, &value(1), 1, |_| true);
            write(&w, &value(2), 1, |_| true);
        });
        // One reader, retrying until it reads: with a second one the model ran for
        // over 10 minutes (every load branches over the versions it may see).
        check_read(&store, 2);
        writer.join().unwrap();
        let mut dst = [0u64; WORDS];
        read(&store, &mut dst);
        assert_eq!(dst, value(2));
    });
}

#[test]
fn two_writers_serialize() {
    loom::model(|| {
        let store = Store::new();
        let w = store.clone();
        let other = loom::thread::spawn(move || {
            write(&w, &value(1), 1, |_| true);
        });
        write(&store, &value(2), 2, |_| true);
        check_read(&store, 2);
        other.join().unwrap();
        let mut dst = [0u64; WORDS];
        assert!(try_read(&store, &mut dst).is_some());
        assert!(dst == value(1) || dst == value(2), "{dst:?}");
    });
}

#[test]
fn writer_dying_mid_write_leaves_last_complete_value() {
    for crash in [CrashPoint::InCopy0(1), CrashPoint::InRelease(1), CrashPoint::InCopy1(1)] {
        loom::model(move || {
            let store = Store::new();
            write(&store, &value(1), 7, |_| true);
            // Writer 7 dies half-way through writing 2; its lock is never released.
            assert!(write_until(&store, &value(2), 7, |_| true, Some(crash)).is_none());
            let r = store.clone();
            let reader = loom::thread::spawn(move || {
                let mut dst = [0u64; WORDS];
                read(&r, &mut dst);
                // The last complete value, or the repaired/new one: never a mix.
                assert!(dst == value(1) || dst == value(2) || dst == value(3), "{dst:?}");
            });
            // The next writer finds 7 dead, takes over, repairs, writes 3.
            write(&store, &value(3), 8, |holder| holder != 7);
            reader.join().unwrap();
            let mut dst = [0u64; WORDS];
            read(&store, &mut dst);
            assert_eq!(dst, value(3));
        });
    }
}

/// Two writers update different words of one value (array element assignment) while a
/// reader reads one word: neither update is lost, and the reader sees 0 or 1.
#[test]
fn element_updates_by_two_writers_are_not_lost() {
    loom::model(|| {
        let store = Store::new();
        let w = store.clone();
        let other = loom::thread::spawn(move || {
            let mut buf = [0u64; 1];
            update(&w, 1, &mut buf, 1, |_| true, |b| b[0] += 1);
        });
        let r = store.clone();
        let reader = loom::thread::spawn(move || {
            let mut one = [9u64; 1];
            read_words(&r, 0, &mut one);
            assert!(one[0] <= 1, "{one:?}");
        });
        let mut buf = [0u64; 1];
        update(&store, 0, &mut buf, 2, |_| true, |b| b[0] += 1);
        other.join().unwrap();
        reader.join().unwrap();
        let mut dst = [0u64; WORDS];
        read(&store, &mut dst);
        assert_eq!(dst, [1, 1]);
    });
}

/// A reader that gives up on lock-free reads at once (`tries = 0`) takes the writer
/// lock: it still sees one whole value, and the writer finishes after it.
#[test]
fn reader_falling_back_to_the_lock_sees_whole_values() {
    loom::model(|| {
        let store = Store::new();
        let w = store.clone();
        let writer = loom::thread::spawn(move || {
            write(&w, &value(1), 1, |_| true);
            write(&w, &value(2), 1, |_| true);
        });
        let mut dst = [0u64; WORDS];
        read_words_or_lock(&store, 0, &mut dst, 0, || 2, |_| true);
        assert!(dst == value(0) || dst == value(1) || dst == value(2), "{dst:?}");
        writer.join().unwrap();
        read_words_or_lock(&store, 0, &mut dst, 0, || 2, |_| true);
        assert_eq!(dst, value(2));
    });
}

/// Element reads of committed words while a writer writes 1 then 2: each word read is
/// one of the values written, successive reads of a word never go back, and a word
/// read after `version` reports write `v` is of write `v` or later (partner: the
/// Release store of `done` after copy 1, the Acquire load in `version`).
#[test]
fn committed_words_follow_version_and_never_go_back() {
    loom::model(|| {
        let store = Store::new();
        let w = store.clone();
        let writer = loom::thread::spawn(move || {
            write(&w, &value(1), 1, |_| true);
            write(&w, &value(2), 1, |_| true);
        });
        let mut last = 0;
        for _ in 0..2 {
            let v = version(&store);
            let word = committed(&store, 1);
            assert!(word <= 2, "a value never written: {word}");
            // Version 1 is the initial value (0), version k + 1 the write of k.
            assert!(word + 1 >= v, "version {v} reported, then word {word} of an older write");
            assert!(word >= last, "went back from {last} to {word}");
            last = word;
        }
        writer.join().unwrap();
        assert_eq!(version(&store), 3);
        assert_eq!(committed(&store, 0), 2);
    });
}

/// A writer killed in phase 1 (copy 0 half written) leaves committed words at the last
/// complete value: element readers never see the unfinished write, before or after the
/// next writer's repair; killed in phase 2, the committed word it wrote is of a
/// finished write, and repair rolls the rest forward, never back.
#[test]
fn committed_words_never_show_an_unfinished_write() {
    for crash in [CrashPoint::InCopy0(1), CrashPoint::InRelease(1), CrashPoint::InCopy1(1)] {
        loom::model(move || {
            let store = Store::new();
            write(&store, &value(1), 7, |_| true);
            assert!(write_until(&store, &value(2), 7, |_| true, Some(crash)).is_none());
            let r = store.clone();
            let reader = loom::thread::spawn(move || {
                let mut last = 0;
                for i in [0, 1, 0] {
                    let word = committed(&r, i);
                    match crash {
                        // 2 never finished phase 1: its words are not committed.
                        CrashPoint::InCopy0(_) => assert!(word == 1 || word == 3, "{word}"),
                        // Copy 0 complete (or half released): repair rolls 2 forward.
                        _ => assert!((1..=3).contains(&word), "{word}"),
                    }
                    if i == 0 {
                        assert!(word >= last, "went back from {last} to {word}");
                        last = word;
                    }
                }
            });
            write(&store, &value(3), 8, |holder| holder != 7);
            reader.join().unwrap();
            assert_eq!([committed(&store, 0), committed(&store, 1)], [3, 3]);
        });
    }
}

/// Message passing through two slots read as committed words: a writer sets `data`
/// then `flag`; a reader that sees the flag's new word must see the data's (the
/// Acquire load in `read_committed_word` pairs with the writer's Release fence before
/// its copy-1 stores; with a Relaxed load loom finds the old data).
#[test]
fn committed_word_of_a_flag_publishes_earlier_writes() {
    loom::model(|| {
        let (data, flag) = (Store::new(), Store::new());
        let (d, f) = (data.clone(), flag.clone());
        let writer = loom::thread::spawn(move || {
            write(&d, &value(1), 1, |_| true);
            write(&f, &value(1), 1, |_| true);
        });
        if committed(&flag, 0) == 1 {
            assert_eq!(committed(&data, 0), 1, "flag seen, data not");
        }
        writer.join().unwrap();
    });
}

/// A writer killed in phase 2 leaves `version` and committed words behind the whole
/// value; `repair_abandoned` (what waiters run) finishes the write while a reader reads:
/// the reader never sees a torn or older value, and afterwards the version and the
/// committed words are the dead writer's value.
#[test]
fn waiters_repair_a_write_a_dead_writer_left_in_phase_two() {
    loom::model(|| {
        let store = Store::new();
        write(&store, &value(1), 7, |_| true);
        assert!(write_until(&store, &value(2), 7, |_| true, Some(CrashPoint::InCopy1(1))).is_none());
        assert_eq!(version(&store), 2);
        let r = store.clone();
        let reader = loom::thread::spawn(move || {
            let word = committed(&r, 1);
            assert!(word == 1 || word == 2, "{word}");
            check_read(&r, 2);
        });
        assert!(repair_abandoned(&store, || 8, |holder| holder != 7));
        reader.join().unwrap();
        assert_eq!(version(&store), 3);
        assert_eq!([committed(&store, 0), committed(&store, 1)], [2, 2]);
        assert!(!repair_abandoned(&store, || 8, |_| false), "nothing left to repair");
    });
}

/// Found in review (with Relaxed claims): a reader that sees the next write's claim in
/// copy 0 and reads copy 1 must see copy 1 as the previous write left it, also when that
/// write came from another writer: successive whole reads of one thread never go back.
/// (The claim is stored with Release; the other writer's lock CAS acquired the
/// previous writer's unlock.)
#[test]
fn successive_whole_reads_never_go_back_with_two_writers() {
    // Three threads: one preemption (the default two ran for over 5 minutes).
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(1);
    model.check(|| {
        let store = Store::new();
        let r = store.clone();
        let reader = loom::thread::spawn(move || {
            let (mut a, mut b) = ([0u64; WORDS], [0u64; WORDS]);
            if let (Some(va), Some(vb)) = (try_read(&r, &mut a), try_read(&r, &mut b)) {
                assert!(vb >= va, "went back from version {va} ({a:?}) to {vb} ({b:?})");
                assert!(a[0] == 0 || b[0] != 0, "went back from {a:?} to {b:?}");
            }
        });
        let y = store.clone();
        let other = loom::thread::spawn(move || {
            write(&y, &value(2), 2, |_| true);
        });
        write(&store, &value(1), 1, |_| true);
        reader.join().unwrap();
        other.join().unwrap();
    });
}
