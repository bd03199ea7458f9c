//! The seqlock latch (`shmplane_shm::seqlock`) with real threads, over two stores (one
//! conformance suite): a heap struct (`heap_slot`) and the production `SegmentSlot` over
//! a real `/dev/shm` segment (`shm_slot`). Readers
//! of whole values and of sub-ranges never see a mix of two writes, element
//! updates by several writers are never lost, a writer stopped mid-write (its
//! lock never released) is replaced and its torn copy repaired once it is dead, and
//! while it lives the others' waits for its lock run their check every slice (the
//! binding's Ctrl-C) and readers do not wait for it. Also run under
//! valgrind memcheck by `ci/valgrind.sh` (`SHMPLANE_TEST_SMALL=1`: fewer rounds).
#![cfg(not(shmplane_loom))]

use shmplane_shm::header::SegmentKind;
use shmplane_shm::kind::Params;
use shmplane_shm::layout::SlotControl;
use shmplane_shm::segment::Segment;
use shmplane_shm::store::SegmentSlot;
use shmplane_shm::seqlock::{
    init, read, read_bytes_or_lock, read_words, read_words_or_lock, update, update_checked, version, write, write_checked, write_until, CrashPoint, SlotStore,
};
use shmplane_shm::sync::AtomicU64;
use shmplane_shm::wait::SharedFutex;
use std::sync::Arc;

const WORDS: usize = 8;

/// Value words per line of the heap store: 3, so that its 8 words span three lines
/// (the segment store has 7 per line: one line and one more word).
const LINE_WORDS: usize = 3;
/// Words per copy of the heap store: 3 lines of a version and 3 value words.
const HEAP_COPY: usize = WORDS.div_ceil(LINE_WORDS) * (LINE_WORDS + 1);

#[derive(Default)]
struct HeapSlot {
    ctl: SlotControl,
    copies: [[AtomicU64; HEAP_COPY]; 2],
}

/// A slot store that both test threads can hold.
trait Backend: SlotStore + Clone + Send + 'static {
    fn new() -> Self;
}

#[derive(Clone, Default)]
struct Store(Arc<HeapSlot>);

impl Backend for Store {
    fn new() -> Self {
        // Made as a slot segment is (version 1, canaries in copy 1).
        let s = Store::default();
        init(&s, &[0; WORDS]);
        s
    }
}

/// The production store over a real `/dev/shm` slot segment of `WORDS` words, removed
/// when the last clone drops.
#[derive(Clone)]
struct ShmStore(Arc<ShmSlot>);

struct ShmSlot(Option<SegmentSlot>);

impl Drop for ShmSlot {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            s.into_segment().close_shared();
        }
    }
}

impl Backend for ShmStore {
    fn new() -> Self {
        use std::sync::atomic::{AtomicU32 as Counter, Ordering as O};
        static N: Counter = Counter::new(0);
        let name = format!("slot-conformance-{}-{}", std::process::id(), N.fetch_add(1, O::Relaxed));
        let seg = Segment::create(&name, SegmentKind::Slot, Params { p0: (WORDS * 8) as u64, p1: 0 }).expect("create");
        seg.hold_shared().expect("hold");
        let store = ShmStore(Arc::new(ShmSlot(Some(SegmentSlot::new(seg)))));
        init(&store, &[0; WORDS]);
        store
    }
}

impl ShmStore {
    fn slot(&self) -> &SegmentSlot {
        self.0 .0.as_ref().expect("open")
    }
}

impl SlotStore for ShmStore {
    type Park = SharedFutex;
    fn control(&self) -> &SlotControl {
        self.slot().control()
    }
    fn words(&self) -> usize {
        self.slot().words()
    }
    fn copy_lines(&self, copy: usize) -> &[AtomicU64] {
        self.slot().copy_lines(copy)
    }
    fn park(&self) -> &SharedFutex {
        &SharedFutex
    }
}

macro_rules! for_each_backend {
    ($($name:ident),* $(,)?) => {
        mod heap_slot {
            $( #[test] fn $name() { super::$name::<super::Store>(); } )*
        }
        mod shm_slot {
            $( #[test] fn $name() { super::$name::<super::ShmStore>(); } )*
        }
    };
}

for_each_backend!(
    whole_and_partial_reads_never_torn_under_a_writer,
    element_updates_from_three_writers_are_not_lost,
    a_writer_stopped_mid_write_is_replaced_and_repaired,
    waits_for_a_live_stopped_writer_run_their_check,
    a_forged_owner_naming_the_writer_does_not_hang_it,
    forged_sequences_do_not_panic_a_writer,
    readers_do_not_wait_for_a_writer_stopped_in_copy0_release,
);

impl SlotStore for Store {
    type Park = SharedFutex;
    const LINE_WORDS: usize = LINE_WORDS;
    fn control(&self) -> &SlotControl {
        &self.0.ctl
    }
    fn words(&self) -> usize {
        WORDS
    }
    fn copy_lines(&self, copy: usize) -> &[AtomicU64] {
        &self.0.copies[copy]
    }
    fn park(&self) -> &SharedFutex {
        &SharedFutex
    }
}

fn rounds() -> u64 {
    if std::env::var_os("SHMPLANE_TEST_SMALL").is_some() {
        2_000
    } else {
        200_000
    }
}

fn whole_and_partial_reads_never_torn_under_a_writer<B: Backend>() {
    let store = B::new();
    let n = rounds();
    let w = store.clone();
    let writer = std::thread::spawn(move || {
        for i in 1..=n {
            write(&w, &[i; WORDS], 1, |_| true);
        }
    });
    let mut last = 0;
    while last < n {
        let mut all = [0u64; WORDS];
        read(&store, &mut all);
        assert!(all.iter().all(|&x| x == all[0]), "torn: {all:?}");
        assert!(all[0] >= last, "went back from {last} to {}", all[0]);
        last = all[0];
        let mut mid = [0u64; 3];
        read_words(&store, 2, &mut mid);
        assert!(mid.iter().all(|&x| x == mid[0]), "torn range: {mid:?}");
        // Straight into bytes, a partial last word included (the binding's snapshot);
        // every other read takes the writer lock (no lock-free tries).
        let mut bytes = [0u8; WORDS * 8 - 3];
        let tries = if last % 2 == 0 { 16 } else { 0 };
        read_bytes_or_lock(&store, &mut bytes, tries, || 9, |_| true);
        let first = u64::from_ne_bytes(bytes[..8].try_into().unwrap());
        for (k, c) in bytes.chunks(8).enumerate() {
            assert_eq!(c, &first.to_ne_bytes()[..c.len()], "torn bytes at word {k}: {bytes:?}");
        }
    }
    writer.join().unwrap();
    assert_eq!(version(&store), n + 1, "the initial value (version 1) and n writes");
}

fn element_updates_from_three_writers_are_not_lost<B: Backend>() {
    let store = B::new();
    let n = rounds() / 4;
    let writers: Vec<_> = (0..3u64)
        .map(|k| {
            let s = store.clone();
            std::thread::spawn(move || {
                let mut buf = [0u64; 1];
                for _ in 0..n {
                    update(&s, k as usize * 2, &mut buf, k + 1, |_| true, |b| b[0] += 1);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let mut all = [0u64; WORDS];
    read(&store, &mut all);
    assert_eq!(all, [n, 0, n, 0, n, 0, 0, 0]);
}

fn a_writer_stopped_mid_write_is_replaced_and_repaired<B: Backend>() {
    for crash in [
        CrashPoint::InCopy0(3),
        CrashPoint::InRelease(1),
        CrashPoint::InCopy1(3),
        CrashPoint::InCopy0(0),
        CrashPoint::InRelease(0),
        CrashPoint::InCopy1(7),
    ] {
        let store = B::new();
        write(&store, &[1; WORDS], 7, |_| true);
        assert!(write_until(&store, &[2; WORDS], 7, |_| true, Some(crash)).is_none());
        // Whole and partial reads, lock-free: a dead writer is never waited for.
        let mut all = [0u64; WORDS];
        read(&store, &mut all);
        assert!(all == [1; WORDS] || all == [2; WORDS], "{crash:?}: {all:?}");
        let mut part = [0u64; 2];
        read_words(&store, 3, &mut part);
        assert!(part == [1; 2] || part == [2; 2], "{crash:?}: {part:?}");
        // Once a line of copy 0 was released some reader may have seen the new value:
        // from then on every reader reads it (no going back); before, the old one.
        let released = matches!(crash, CrashPoint::InRelease(k) if k > 0) || matches!(crash, CrashPoint::InCopy1(_));
        assert_eq!(all, if released { [2; WORDS] } else { [1; WORDS] }, "{crash:?}");
        // Writer 8 finds 7 dead, takes the lock, repairs, and writes one element.
        let mut buf = [0u64; 1];
        update(&store, 4, &mut buf, 8, |holder| holder != 7, |b| b[0] = 9);
        read(&store, &mut all);
        let base = all[0];
        assert!(base == 1 || base == 2, "{crash:?}: {all:?}");
        let mut want = [base; WORDS];
        want[4] = 9;
        assert_eq!(all, want, "{crash:?}");
        // Both copies agree again: a full write then reads back whole.
        write(&store, &[3; WORDS], 8, |_| true);
        read(&store, &mut all);
        assert_eq!(all, [3; WORDS]);
    }
}

fn waits_for_a_live_stopped_writer_run_their_check<B: Backend>() {
    for crash in [CrashPoint::InCopy0(3), CrashPoint::InRelease(1), CrashPoint::InCopy1(3)] {
        let store = B::new();
        write(&store, &[1; WORDS], 7, |_| true);
        // Writer 7 stops mid-write holding the lock, and stays alive.
        assert!(write_until(&store, &[2; WORDS], 7, |_| true, Some(crash)).is_none());
        let mut checks = 0;
        let r = write_checked(&store, &[3; WORDS], 8, |_| true, || {
            checks += 1;
            if checks == 2 { Err("interrupted") } else { Ok(()) }
        });
        assert_eq!(r, Err("interrupted"), "{crash:?}");
        let mut buf = [0u64; 1];
        let r = update_checked(&store, 4, &mut buf, 8, |_| true, || Err("interrupted"), |_| unreachable!("no lock, no update"));
        assert_eq!(r, Err("interrupted"), "{crash:?}");
        // Nothing was written; a reader starved into taking the lock (no lock-free
        // tries) reads without it after one slice: the latch stands still.
        let mut all = [0u64; WORDS];
        read_words_or_lock(&store, 0, &mut all, 0, || 9, |_| true);
        assert!(all == [1; WORDS] || all == [2; WORDS], "{crash:?}: {all:?}");
        // Once writer 7 is dead, the next writer replaces it.
        let v = write_checked(&store, &[4; WORDS], 8, |h| h != 7, || Err("no wait needed"));
        assert_eq!(v, Ok(version(&store)), "{crash:?}");
        read(&store, &mut all);
        assert_eq!(all, [4; WORDS]);
    }
}

/// Found by `fuzz/fuzz_targets/slot.rs`: an owner word naming the writer itself (forged,
/// or left by a panic in `update`'s `modify`) made the writer wait for itself forever,
/// since its own id is alive. It takes the lock over instead. (A watchdog turns a hang
/// into a failure.)
fn a_forged_owner_naming_the_writer_does_not_hang_it<B: Backend>() {
    let store = B::new();
    store.control().writer.value.owner.store(7, shmplane_shm::sync::Ordering::Relaxed);
    let (done, finished) = std::sync::mpsc::channel();
    let writer = store.clone();
    std::thread::spawn(move || {
        write(&writer, &[5; WORDS], 7, |_| true);
        let _ = done.send(());
    });
    finished.recv_timeout(std::time::Duration::from_secs(10)).expect("the writer waited for itself");
    let mut all = [0u64; WORDS];
    read(&store, &mut all);
    assert_eq!(all, [5; WORDS]);
}

/// Found by `fuzz/fuzz_targets/slot.rs`: a sequence word at 2^64 - 1 overflowed the
/// writer's sequence arithmetic, and an odd sequence marked done (no real writer leaves
/// one) reached the writer as "nothing to repair", flipping readers onto the copy it
/// was writing. Both are repaired first; the write then reads back whole.
fn forged_sequences_do_not_panic_a_writer<B: Backend>() {
    use shmplane_shm::sync::Ordering::Relaxed;
    for (seq, done) in [(u64::MAX, 0), (u64::MAX, u64::MAX), (5, 5), (u64::MAX - 1, u64::MAX - 1)] {
        let store = B::new();
        store.seq().store(seq, Relaxed);
        store.control().writer.value.done.store(done, Relaxed);
        let v = write(&store, &[6; WORDS], 1, |_| true);
        let s = store.seq().load(Relaxed);
        assert_eq!((s % 2, store.control().writer.value.done.load(Relaxed)), (0, s), "seq {seq:#x} done {done:#x}");
        assert_eq!(v, s / 2);
        let mut all = [0u64; WORDS];
        read(&store, &mut all);
        assert_eq!(all, [6; WORDS], "seq {seq:#x} done {done:#x}");
    }
}

/// Found in review: a live writer stopped (SIGSTOP, a debugger) between two of copy 0's
/// line releases made whole readers retry forever, then wait for its lock forever. Copy
/// 0's words are final by then: readers read them, lock-free, and return the new value.
fn readers_do_not_wait_for_a_writer_stopped_in_copy0_release<B: Backend>() {
    let store = B::new();
    write(&store, &[1; WORDS], 7, |_| true);
    assert!(write_until(&store, &[2; WORDS], 7, |_| true, Some(CrashPoint::InRelease(1))).is_none());
    let (done, finished) = std::sync::mpsc::channel();
    let r = store.clone();
    std::thread::spawn(move || {
        let mut all = [0u64; WORDS];
        read_words_or_lock(&r, 0, &mut all, 16, || 9, |_| true);
        let mut bytes = [0u8; WORDS * 8 - 3];
        read_bytes_or_lock(&r, &mut bytes, 16, || 9, |_| true);
        let _ = done.send((all, bytes));
    });
    let (all, bytes) = finished.recv_timeout(std::time::Duration::from_secs(10)).expect("a reader hung behind a stopped (live) writer");
    assert_eq!(all, [2; WORDS]);
    assert!(bytes.chunks(8).all(|c| c == &2u64.to_ne_bytes()[..c.len()]), "{bytes:?}");
}

/// Found in review: `update` of an empty range at the value's end (`first == words`,
/// which its range check allows) claimed line `first / 7`, past the last line when the
/// words are a multiple of 7: index out of bounds, holding the lock, `seq` left odd.
#[test]
fn update_of_an_empty_range_at_the_end() {
    let name = format!("slot-empty-update-{}", std::process::id());
    let seg = Segment::create(&name, SegmentKind::Slot, Params { p0: 56, p1: 0 }).expect("create");
    seg.hold_shared().expect("hold");
    let slot = SegmentSlot::new(seg);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| update(&slot, 7, &mut [], 1, |_| true, |_| {})));
    let mut all = [0u64; 7];
    let v = read(&slot, &mut all);
    slot.into_segment().close_shared();
    assert!(r.is_ok(), "update of an empty range at the end panicked");
    assert_eq!(v, 1, "an empty update is a write");
}

/// Found in review: with a sequence near 2^64 (forged; the fuzz corpus and
/// `forged_sequences_do_not_panic_a_writer` use one), a write claims at 2^64 - 1, and a
/// reader whose range had no even line took `max_even == 0 == claim + 1` for a release
/// step: it read copy 0 while the writer was writing it and accepted a torn value.
#[test]
fn a_claim_at_u64_max_is_not_a_release_step() {
    use shmplane_shm::sync::Ordering::Relaxed;
    let store = Store::new();
    store.seq().store(u64::MAX - 3, Relaxed);
    store.control().writer.value.done.store(u64::MAX - 3, Relaxed);
    write(&store, &[1; WORDS], 7, |_| true);
    assert!(write_until(&store, &[2; WORDS], 7, |_| true, Some(CrashPoint::InCopy0(3))).is_none());
    let mut all = [0u64; WORDS];
    read(&store, &mut all);
    assert_eq!(all, [1; WORDS], "torn or unfinished: {all:?}");
}

/// A cut inside a mapped page zeroes the page's tail and raises no SIGBUS (found by the
/// hostile-user pass): zeroed lines must read as `ZEROED`, never as data. After `init`
/// no copy-0 line version is 0, every copy-1 line starts with the canary, and `done`
/// is at least 2.
#[test]
fn zeroed_lines_read_as_zeroed_never_as_data() {
    use shmplane_shm::seqlock::{read_committed_word, try_read_words, ZEROED};
    use shmplane_shm::sync::Ordering::Relaxed;
    let zero_line = |s: &Store, copy: usize, l: usize| {
        for w in &s.copy_lines(copy)[l * (LINE_WORDS + 1)..(l + 1) * (LINE_WORDS + 1)] {
            w.store(0, Relaxed);
        }
    };
    // Copy 0's last line (words 6 and 7) zeroed.
    let store = Store::new();
    write(&store, &[5; WORDS], 1, |_| true);
    zero_line(&store, 0, 2);
    let mut all = [0u64; WORDS];
    assert_eq!(read(&store, &mut all), ZEROED, "a whole read over a zeroed line");
    let mut part = [0u64; 2];
    assert_eq!(try_read_words(&store, 6, &mut part), Some(ZEROED));
    assert_eq!(try_read_words(&store, 0, &mut part), Some(2), "lines that were not cut read as before");
    assert_eq!(read_words_or_lock(&store, 5, &mut part, 0, || 9, |_| true), ZEROED, "under the lock too");
    assert_eq!(read_committed_word(&store, 7), Some(5), "copy 1 of that line is intact");
    // Copy 1's first line zeroed: element reads of it, and reads that fall back to it
    // while copy 0 is claimed, see the missing canary.
    let store = Store::new();
    write(&store, &[5; WORDS], 1, |_| true);
    zero_line(&store, 1, 0);
    assert_eq!(read_committed_word(&store, 1), None);
    assert_eq!(read_committed_word(&store, 4), Some(5));
    assert!(write_until(&store, &[6; WORDS], 7, |_| true, Some(CrashPoint::InCopy0(2))).is_none());
    assert_eq!(try_read_words(&store, 0, &mut part), Some(ZEROED), "copy 1 read while copy 0 is claimed");
    // A cut inside a line zeroes from there to the page's end: the line's marker is its
    // last word, so it goes with any of the values (found in review: a marker in front
    // survived a cut after it, and the zeroed values read as data).
    let store = Store::new();
    write(&store, &[5; WORDS], 1, |_| true);
    for w in &store.copy_lines(0)[3 * (LINE_WORDS + 1) - 2..] {
        w.store(0, Relaxed);
    }
    for w in store.copy_lines(1) {
        w.store(0, Relaxed);
    }
    assert_eq!(try_read_words(&store, 0, &mut part), Some(2), "the lines before the cut");
    assert_eq!(try_read_words(&store, 6, &mut part), Some(ZEROED), "the line the cut reached");
    assert_eq!(read_committed_word(&store, 0), None);
    // The control block zeroed.
    let store = Store::new();
    store.control().writer.value.done.store(0, Relaxed);
    assert_eq!(version(&store), ZEROED);
}

/// Found in review: zeros in a middle line (a punched hole, not a cut to the end) with
/// the range's last line intact: `writable` must refuse, or an update re-reads the
/// zeros from copy 0 and commits them as a value.
#[test]
fn writable_sees_a_zeroed_line_before_the_last() {
    use shmplane_shm::seqlock::writable;
    use shmplane_shm::sync::Ordering::Relaxed;
    let store = Store::new();
    write(&store, &[5; WORDS], 1, |_| true);
    for w in &store.copy_lines(0)[..LINE_WORDS + 1] {
        w.store(0, Relaxed);
    }
    assert!(!writable(&store, 0, WORDS), "line 0 of the range is zeros");
    assert!(writable(&store, LINE_WORDS, WORDS - LINE_WORDS), "the lines after it are whole");
}
