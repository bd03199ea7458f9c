//! Latest-value slot: a seqlock *latch* over `AtomicU64` words, crash-safe.
//!
//! The latch is Linux's `seqcount_latch` (`include/linux/seqlock.h`): two copies of the
//! value; `seq & 1` says which one readers use; a write flips readers to the other copy
//! before touching one, so readers never wait for a writer and never see a torn value.
//! A reader that keeps losing the race (writers flip the latch faster than it can copy)
//! takes the writer lock for one read after [`READ_TRIES`] attempts
//! ([`read_words_or_lock`], Linux's `read_seqbegin_or_lock`): it always finishes.
//! Words are copied with Relaxed atomic loads/stores between the sequence accesses and
//! fences, as in Rust RFC 3301 / crossbeam's `SeqLock` (a volatile read of non-atomic
//! memory that another thread writes would be a data race).
//!
//! ```text
//! writer (holding the writer lock)          reader
//!   seq = s+1 (Release; odd: → copy 1)       s1 = seq (Acquire)
//!   fence(Release)                            copy[s1 & 1] words (Relaxed)
//!   copy 0 words = v (Relaxed)                fence(Acquire)
//!   fence(Release); seq = s+2 (copy 0)        s2 = seq (Relaxed)
//!   fence(Release)                            accept iff s1 == s2
//!   copy 1 words = v (Relaxed)
//!   done = s+2 (Release); unlock; notify `updated`
//! ```
//!
//! # Committed words (element reads without the sequence)
//! Copy 1 only ever holds *committed* values: a writer changes it after flipping readers
//! to a complete copy 0 (phase 2), and the repair of a writer that died in phase 2 rolls
//! it forward from copy 0, never back. So one word of copy 1 read with one atomic load
//! ([`read_committed_word`]) is a whole word of some completed write, and successive
//! loads of it never go back to an older write: that is all an element of at most 8
//! naturally aligned bytes needs, and it costs one line, as a plain shared `double`
//! does (no sequence line, no retry). [`version`] reads `done`, which the writer stores
//! (Release) after copy 1, so a reader that sees version `v` then reads committed words
//! of write `v` or later. An element read may return the previous value while a write
//! is in phase 2 (a whole read then already returns the new one).
//!
//! # Crash safety
//! A writer killed at any point leaves the copy readers use intact (it only ever writes
//! the other one), so readers go on reading the last complete value and never spin on
//! a dead writer. Writers serialize on `writer.owner` (pid, low bits of its start time,
//! thread id: `liveness::writer_id`); a holder whose process is gone (or whose pid a
//! later process reused) is replaced by compare-and-swap, and the new holder
//! repairs a torn copy before writing (`done != seq` says a write did not finish).

use crate::layout::SlotControl;
use crate::sync::{fence, spin_hint, yield_now, AtomicU64, Ordering};
use crate::wait::{Park, SLICE};
use std::convert::Infallible;
use std::time::Instant;

/// Storage of a slot: control block and the two copies of its payload words.
pub trait SlotStore {
    /// Sleep/wake implementation of `updated`.
    type Park: Park;
    /// The control block (writer lock, sleepers).
    fn control(&self) -> &SlotControl;
    /// The latch sequence (next to the copies: see `layout::SLOT_DATA_OFFSET`).
    fn seq(&self) -> &AtomicU64;
    /// Payload words per copy.
    fn words(&self) -> usize;
    /// Word `i` of copy `copy` (0 or 1).
    fn word(&self, copy: usize, i: usize) -> &AtomicU64;
    /// All [`words`](SlotStore::words) words of copy `copy` (0 or 1), as one slice:
    /// what [`word`](SlotStore::word) indexes. Reads copy from it: one bounds
    /// check for the range instead of one per word.
    fn copy_words(&self, copy: usize) -> &[AtomicU64];
    /// The futex implementation.
    fn park(&self) -> &Self::Park;
}

/// Version a reader sees: the number of completed latch flips, `seq / 2`.
#[inline]
fn version_of(seq: u64) -> u64 {
    seq / 2
}

/// The current version (one Acquire load of `done`): grows with every completed write
/// (and with the repair of one a dead writer left in its first phase). Committed words ([`read_committed_word`]) read after it are of this write or
/// a later one.
#[inline]
pub fn version<S: SlotStore>(store: &S) -> u64 {
    // ORDERING: Acquire, partner of the Release stores of `done` in `publish` and
    // `repair`, made after copy 1 is complete.
    version_of(store.control().writer.value.done.load(Ordering::Acquire))
}

/// Word `i` of the value as of some completed write, with one atomic load of copy 1
/// (see the module docs: "Committed words"). Words read by separate calls may be of
/// different writes; one word is always whole.
///
/// # Panics
/// If `i` is outside the value.
#[inline]
pub fn read_committed_word<S: SlotStore>(store: &S, i: usize) -> u64 {
    assert!(i < store.words(), "slot word outside the value");
    // ORDERING: Acquire, partner of the writer's fence(Release) before its copy-1
    // stores: a reader that sees a word of write `w` also sees everything its writer
    // did before `w` (a flag in one slot published after data in another; and `seq`
    // at least as new, so a whole read after it does not go back). One word is whole
    // by single-copy atomicity.
    store.word(1, i).load(Ordering::Acquire)
}

/// One read attempt into `dst` (`dst.len() == store.words()`): the version read, or
/// `None` if a write flipped the latch meanwhile (retry).
///
/// # Panics
/// If `dst` has the wrong length.
#[inline]
pub fn try_read<S: SlotStore>(store: &S, dst: &mut [u64]) -> Option<u64> {
    assert_eq!(dst.len(), store.words(), "slot read buffer of the wrong length");
    try_read_words(store, 0, dst)
}

/// One read attempt of words `first .. first + dst.len()` into `dst` (an element or a
/// slice of an array value): as [`try_read`], consistent with every write as a whole.
///
/// # Panics
/// If the range is outside the value.
#[inline]
pub fn try_read_words<S: SlotStore>(store: &S, first: usize, dst: &mut [u64]) -> Option<u64> {
    assert!(first.checked_add(dst.len()).is_some_and(|end| end <= store.words()), "slot read range outside the value");
    try_read_span(store, first, dst.len(), |src| {
        for (w, s) in dst.iter_mut().zip(src) {
            // ORDERING: Relaxed, between the sequence loads of `try_read_span`.
            *w = s.load(Ordering::Relaxed);
        }
    })
}

/// One read attempt of the value's first `dst.len().div_ceil(8)` words into the bytes
/// `dst` (native order; a last partial word gives its first bytes), with no word
/// buffer between: as [`try_read_words`]. The Python binding reads into a new array
/// this way.
///
/// # Panics
/// If `dst` is longer than the value's words.
#[inline]
pub fn try_read_bytes<S: SlotStore>(store: &S, dst: &mut [u8]) -> Option<u64> {
    let words = dst.len().div_ceil(8);
    assert!(words <= store.words(), "slot read range outside the value");
    try_read_span(store, 0, words, |src| {
        // Whole words, then the tail (split first: one loop counter, unrolled).
        let (full, tail) = dst.split_at_mut(dst.len() / 8 * 8);
        for (c, s) in full.chunks_exact_mut(8).zip(src) {
            // ORDERING: Relaxed, between the sequence loads of `try_read_span`.
            c.copy_from_slice(&s.load(Ordering::Relaxed).to_ne_bytes());
        }
        if !tail.is_empty() {
            // ORDERING: Relaxed, as above.
            let w = src[words - 1].load(Ordering::Relaxed).to_ne_bytes();
            tail.copy_from_slice(&w[..tail.len()]);
        }
    })
}

/// The latch read protocol of every whole or partial read (see the module docs):
/// `s1 = seq` (Acquire), `load` copies words `first .. first + n` of the copy `s1`
/// selects with Relaxed loads only (they arrive as one slice: one bounds check),
/// fence(Acquire), `s2 = seq`; the version if `s1 == s2`, else `None` (what `load`
/// copied may be torn: the caller retries).
///
/// # Panics
/// If the range is outside the value.
#[inline(always)]
fn try_read_span<S: SlotStore>(store: &S, first: usize, n: usize, load: impl FnOnce(&[AtomicU64])) -> Option<u64> {
    // ORDERING: Acquire, partner of the writer's fence(Release) + seq store: the words
    // of the copy this sequence selects are complete.
    let s1 = store.seq().load(Ordering::Acquire);
    load(&store.copy_words((s1 & 1) as usize)[first..first + n]);
    // ORDERING: Acquire fence, partner of the writer's fence(Release) after its seq
    // store: if we read any word of a write that flipped the latch after s1, the load
    // below sees that flip.
    fence(Ordering::Acquire);
    let s2 = store.seq().load(Ordering::Relaxed);
    (s1 == s2).then_some(version_of(s1))
}

/// [`read`] of words `first .. first + dst.len()` (see [`try_read_words`]).
#[inline]
pub fn read_words<S: SlotStore>(store: &S, first: usize, dst: &mut [u64]) -> u64 {
    loop {
        if let Some(v) = try_read_words(store, first, dst) {
            return v;
        }
        spin_hint();
    }
}

/// Read a consistent value into `dst`; returns its version. Never waits for a writer:
/// it retries only if a write completed half of its work during the read.
#[inline]
pub fn read<S: SlotStore>(store: &S, dst: &mut [u64]) -> u64 {
    loop {
        if let Some(v) = try_read(store, dst) {
            return v;
        }
        spin_hint();
    }
}

/// Lock-free read attempts before [`read_words_or_lock`] falls back to the writer lock,
/// for a read of up to 128 words (one KiB); see [`read_tries`].
pub const READ_TRIES: u32 = 16;

/// Lock-free attempts for a read of `words` words: [`READ_TRIES`] up to 128 words, then
/// fewer (down to 2 from 1024 words on), so that a large read that a fast writer keeps
/// interrupting waits about as long as two copies before it takes the lock (Linux's
/// `read_seqbegin_or_lock` makes one lockless pass), instead of sixteen.
#[inline]
pub fn read_tries(words: usize) -> u32 {
    if words <= 128 {
        // The common case without a division (the hot path of small reads).
        return READ_TRIES;
    }
    (READ_TRIES as usize * 128 / words.max(1)).clamp(2, READ_TRIES as usize) as u32
}

/// [`read_words`] that makes progress against any writer: after `tries` failed
/// lock-free attempts (writers flip the latch faster than this range can be copied,
/// e.g. element updates while a large array is read), take the writer lock for one
/// read, as Linux's `read_seqbegin_or_lock` (`include/linux/seqlock.h`) does. Writers
/// then wait for that one copy; a reader that dies holding the lock is replaced like a
/// dead writer. `me` (called only on that slow path) and `alive` as for [`write()`].
/// Returns the version read.
///
/// # Panics
/// If the range is outside the value or `me()` is 0.
#[inline]
pub fn read_words_or_lock<S: SlotStore>(
    store: &S,
    first: usize,
    dst: &mut [u64],
    tries: u32,
    me: impl FnOnce() -> u64,
    alive: impl Fn(u64) -> bool,
) -> u64 {
    for _ in 0..tries {
        if let Some(v) = try_read_words(store, first, dst) {
            return v;
        }
        spin_hint();
    }
    read_words_locked(store, first, dst, me(), &alive)
}

/// [`read_words_or_lock`] of the value's first words into the bytes `dst` (see
/// [`try_read_bytes`]): the whole-value read of `ByteSlot::read_into`, without a word
/// buffer on the lock-free path.
///
/// # Panics
/// As [`read_words_or_lock`].
#[inline]
pub fn read_bytes_or_lock<S: SlotStore>(
    store: &S,
    dst: &mut [u8],
    tries: u32,
    me: impl FnOnce() -> u64,
    alive: impl Fn(u64) -> bool,
) -> u64 {
    for _ in 0..tries {
        if let Some(v) = try_read_bytes(store, dst) {
            return v;
        }
        spin_hint();
    }
    read_bytes_locked(store, dst, me(), &alive)
}

/// The slow path of [`read_bytes_or_lock`]: [`read_words_locked`] into a word buffer.
#[cold]
#[inline(never)]
fn read_bytes_locked<S: SlotStore>(store: &S, dst: &mut [u8], me: u64, alive: &impl Fn(u64) -> bool) -> u64 {
    let mut words = vec![0u64; dst.len().div_ceil(8)];
    let version = read_words_locked(store, 0, &mut words, me, alive);
    for (c, w) in dst.chunks_mut(8).zip(&words) {
        c.copy_from_slice(&w.to_ne_bytes()[..c.len()]);
    }
    version
}

/// The slow path of [`read_words_or_lock`]: one read holding the writer lock.
#[cold]
#[inline(never)]
fn read_words_locked<S: SlotStore>(store: &S, first: usize, dst: &mut [u64], me: u64, alive: &impl Fn(u64) -> bool) -> u64 {
    assert!(first.checked_add(dst.len()).is_some_and(|end| end <= store.words()), "slot range outside the value");
    // A holder that keeps the lock for a whole slice is not writing (stopped, or busy
    // elsewhere): the latch stands still, so a lock-free attempt then succeeds and
    // ends the wait (without it, a reader would wait as long as a stopped writer).
    let mut lock_free = || try_read_words(store, first, dst).map_or(Ok(()), Err);
    if let Err(version) = lock_and_load(store, first, None, me, alive, &mut lock_free) {
        return version;
    }
    // Holding the lock: both copies hold the last complete value.
    for (i, w) in dst.iter_mut().enumerate() {
        *w = store.word(0, first + i).load(Ordering::Relaxed);
    }
    let s = store.seq().load(Ordering::Relaxed);
    // ORDERING: Release, partner of the next writer's Acquire CAS in `lock` (our loads
    // happen before its stores).
    store.control().writer.value.owner.store(0, Ordering::Release);
    version_of(s)
}

/// Take the writer lock (replacing a dead holder), repair a torn copy, and load words
/// `first .. first + buf.len()` of the value into `buf` (if given). Returns holding the
/// lock, or `check`'s error (see [`lock`]) without it.
///
/// # Panics
/// If the range is outside the value or `me == 0`.
fn lock_and_load<S: SlotStore, E>(
    store: &S,
    first: usize,
    buf: Option<&mut [u64]>,
    me: u64,
    alive: &impl Fn(u64) -> bool,
    check: &mut impl FnMut() -> Result<(), E>,
) -> Result<(), E> {
    let len = buf.as_ref().map_or(0, |b| b.len());
    assert!(first.checked_add(len).is_some_and(|end| end <= store.words()), "slot range outside the value");
    assert_ne!(me, 0, "writer id 0 means 'free'");
    lock(store.control(), me, alive, check)?;
    repair(store);
    // After `repair` both copies hold the last complete value and only the lock holder
    // writes them.
    for (i, w) in buf.into_iter().flatten().enumerate() {
        *w = store.word(0, first + i).load(Ordering::Relaxed);
    }
    Ok(())
}

/// Where a test writer stops, to model a writer killed mid-write.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// After flipping readers to copy 1 and writing this many words of copy 0.
    InCopy0(usize),
    /// After flipping readers to copy 0 and writing this many words of copy 1.
    InCopy1(usize),
}

/// Write `src` (`store.words()` words): take the writer lock (replacing a dead holder),
/// repair a torn copy, flip and write both copies, release, wake waiters. `me` is a
/// non-zero writer id unique per thread; `alive(id)` tells whether a holder lives.
/// Returns the new version.
///
/// # Panics
/// If `src` has the wrong length or `me == 0`.
pub fn write<S: SlotStore>(store: &S, src: &[u64], me: u64, alive: impl Fn(u64) -> bool) -> u64 {
    write_until(store, src, me, alive, None).expect("no crash point")
}

/// [`write()`] whose wait for the writer lock runs `check` every [`SLICE`] while a live
/// holder keeps it (a writer stopped mid-write by SIGSTOP or a debugger holds it for
/// as long as it is stopped): `check`'s error ends the wait, and the write, with
/// nothing written (the caller's Ctrl-C check or deadline).
///
/// # Errors
/// `check`'s error.
///
/// # Panics
/// As [`write()`].
pub fn write_checked<S: SlotStore, E>(
    store: &S,
    src: &[u64],
    me: u64,
    alive: impl Fn(u64) -> bool,
    mut check: impl FnMut() -> Result<(), E>,
) -> Result<u64, E> {
    assert_eq!(src.len(), store.words(), "slot value of the wrong length");
    assert_ne!(me, 0, "writer id 0 means 'free'");
    lock(store.control(), me, &alive, &mut check)?;
    repair(store);
    Ok(publish(store, 0, src, None).expect("no crash point"))
}

/// [`write`] that stops at `crash` without releasing the lock (loom models and tests of
/// crash safety). `None` if it stopped.
#[doc(hidden)]
pub fn write_until<S: SlotStore>(
    store: &S,
    src: &[u64],
    me: u64,
    alive: impl Fn(u64) -> bool,
    crash: Option<CrashPoint>,
) -> Option<u64> {
    assert_eq!(src.len(), store.words(), "slot value of the wrong length");
    assert_ne!(me, 0, "writer id 0 means 'free'");
    let Ok(()) = lock(store.control(), me, &alive, &mut || Ok::<(), Infallible>(()));
    repair(store);
    publish(store, 0, src, crash)
}

/// Read-modify-write of words `first .. first + buf.len()` as one write: holding the
/// writer lock, load their current value into `buf`, let `modify` change it, then
/// publish it as [`write()`] does (readers see all of `modify`'s changes or none; words
/// outside the range keep their value). Used for element and slice assignment of
/// arrays, so that writers of different elements never lose each other's updates.
/// `modify` runs holding the lock: it must not block or panic. Returns the new version.
///
/// # Panics
/// If the range is outside the value or `me == 0`.
pub fn update<S: SlotStore>(
    store: &S,
    first: usize,
    buf: &mut [u64],
    me: u64,
    alive: impl Fn(u64) -> bool,
    modify: impl FnOnce(&mut [u64]),
) -> u64 {
    let Ok(version) = update_checked(store, first, buf, me, alive, || Ok::<(), Infallible>(()), modify);
    version
}

/// [`update`] whose wait for the writer lock runs `check` every [`SLICE`], as
/// [`write_checked`]: its error ends the update before `modify` runs.
///
/// # Errors
/// `check`'s error.
///
/// # Panics
/// As [`update`].
pub fn update_checked<S: SlotStore, E>(
    store: &S,
    first: usize,
    buf: &mut [u64],
    me: u64,
    alive: impl Fn(u64) -> bool,
    mut check: impl FnMut() -> Result<(), E>,
    modify: impl FnOnce(&mut [u64]),
) -> Result<u64, E> {
    lock_and_load(store, first, Some(&mut *buf), me, &alive, &mut check)?;
    modify(buf);
    Ok(publish(store, first, buf, None).expect("no crash point"))
}

/// Holding the lock with both copies equal: write `src` at word `first` of copy 0
/// then copy 1, flipping readers away from each copy while it changes; release the
/// lock and wake waiters. `None` if it stopped at `crash` (lock kept).
fn publish<S: SlotStore>(store: &S, first: usize, src: &[u64], crash: Option<CrashPoint>) -> Option<u64> {
    let ctl = store.control();
    let s = store.seq().load(Ordering::Relaxed);
    debug_assert!(s % 2 == 0, "repaired slot has an even sequence");
    // Sequence arithmetic wraps: the words are untrusted (a peer may have left any
    // value; a real sequence reaches 2^64 after 2^63 writes).
    let (s1, s2) = (s.wrapping_add(1), s.wrapping_add(2));
    // Phase 1: readers → copy 1, write copy 0.
    // ORDERING: Release, partner of the reader's Acquire load of seq: a reader that sees
    // s+1 reads copy 1, which the previous write finished (or repair restored) before
    // this store. (loom found the Relaxed version: a reader of s+1 saw copy 1 torn.)
    store.seq().store(s1, Ordering::Release);
    // ORDERING: Release fence, partner of the reader's Acquire fence: a reader that sees
    // any copy-0 word below also sees seq = s+1 in its second load.
    fence(Ordering::Release);
    for (i, &w) in src.iter().enumerate() {
        if crash == Some(CrashPoint::InCopy0(i)) {
            return None;
        }
        store.word(0, first + i).store(w, Ordering::Relaxed);
    }
    // Phase 2: readers → copy 0 (complete), write copy 1.
    // ORDERING: Release fence, partner of the reader's Acquire load of seq: copy 0's
    // words are visible to a reader that sees s+2.
    fence(Ordering::Release);
    store.seq().store(s2, Ordering::Relaxed);
    // ORDERING: as the first fence, for copy 1's words against seq = s+2.
    fence(Ordering::Release);
    for (i, &w) in src.iter().enumerate() {
        if crash == Some(CrashPoint::InCopy1(i)) {
            return None;
        }
        store.word(1, first + i).store(w, Ordering::Relaxed);
    }
    // ORDERING: Release, partner of the Acquire load in `version`: copy 1's words are
    // visible to a reader that sees this version.
    ctl.writer.value.done.store(s2, Ordering::Release);
    // ORDERING: Release, partner of the next writer's Acquire CAS in `lock`.
    ctl.writer.value.owner.store(0, Ordering::Release);
    ctl.updated.value.notify(store.park());
    Some(version_of(s2))
}

/// Finish a write that a dead writer left half done in its second phase (or its
/// first): `done != seq` and the writer lock held by a holder `alive` says is gone.
/// Until then `version` and number reads ([`read_committed_word`]) stay at the last
/// write a writer finished while whole reads already see the dead writer's value, and
/// only the next writer would repair it. So waiters call this on every check: it costs
/// two loads when nothing is wrong. Takes the lock over, repairs, releases it and
/// wakes waiters; true if it repaired. `me` as for [`write()`] (called only then).
pub fn repair_abandoned<S: SlotStore>(store: &S, me: impl FnOnce() -> u64, alive: impl Fn(u64) -> bool) -> bool {
    let ctl = store.control();
    // ORDERING: Relaxed: a hint; the lock below orders everything repair touches.
    let seq = store.seq().load(Ordering::Relaxed);
    // ORDERING: Relaxed, as above.
    if ctl.writer.value.done.load(Ordering::Relaxed) == seq {
        return false;
    }
    // ORDERING: Relaxed, as above: a live or absent holder means no repair from here.
    let owner = ctl.writer.value.owner.load(Ordering::Relaxed);
    if owner == 0 || alive(owner) {
        return false;
    }
    let Ok(()) = lock(ctl, me(), &alive, &mut || Ok::<(), Infallible>(()));
    let repaired = ctl.writer.value.done.load(Ordering::Relaxed) != store.seq().load(Ordering::Relaxed);
    repair(store);
    // ORDERING: Release, partner of the next writer's Acquire CAS in `lock`.
    ctl.writer.value.owner.store(0, Ordering::Release);
    if repaired {
        ctl.updated.value.notify(store.park());
    }
    repaired
}

/// Take the writer lock; replace a holder that `alive` says is gone, or that has our
/// own id `me` (stale: a thread never asks for the lock it holds). While a live
/// holder keeps it past a short spin, run `check` every [`SLICE`]; its error ends the
/// wait without the lock (a holder may keep it indefinitely: a writer process stopped
/// by SIGSTOP or a debugger is alive, so it is never replaced).
fn lock<E>(ctl: &SlotControl, me: u64, alive: &impl Fn(u64) -> bool, check: &mut impl FnMut() -> Result<(), E>) -> Result<(), E> {
    let owner = &ctl.writer.value.owner;
    let mut attempt: u32 = 0;
    let mut next_check: Option<Instant> = None;
    loop {
        // ORDERING: Acquire, partner of the previous holder's Release unlock.
        match owner.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return Ok(()),
            Err(holder) => {
                attempt = attempt.wrapping_add(1);
                // A holder with our own id is no live writer: a thread never asks for
                // the lock while it holds it, so the word is stale (a forged one, or
                // left by a panic in `update`'s `modify`) and waiting for "ourselves"
                // would never end (found by `fuzz/fuzz_targets/slot.rs`).
                if (holder == me || (attempt % 64 == 0 && !alive(holder)))
                    // ORDERING: Acquire, as above (a dead holder released nothing;
                    // the SeqCst fence below orders what it did store).
                    && owner.compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed).is_ok()
                {
                    fence(Ordering::SeqCst);
                    return Ok(());
                }
                if attempt % 64 == 0 && attempt >= 128 {
                    // Past the spin: the clock is read every 64 attempts only.
                    let now = Instant::now();
                    let due = *next_check.get_or_insert(now + SLICE);
                    if now >= due {
                        check()?;
                        next_check = Some(now + SLICE);
                    }
                }
                if attempt < 128 {
                    spin_hint();
                } else {
                    yield_now();
                }
            }
        }
    }
}

/// Holding the lock: finish what a writer that died mid-write left torn.
fn repair<S: SlotStore>(store: &S) {
    let ctl = store.control();
    let s = store.seq().load(Ordering::Relaxed);
    let done = ctl.writer.value.done.load(Ordering::Relaxed);
    if done == s && s % 2 == 0 {
        return;
    }
    if s % 2 == 1 {
        // Died in phase 1: copy 0 torn, readers on copy 1 (intact). Restore copy 0 from
        // copy 1, then flip readers back to it.
        for i in 0..store.words() {
            let w = store.word(1, i).load(Ordering::Relaxed);
            store.word(0, i).store(w, Ordering::Relaxed);
        }
        // ORDERING: Release fence, as in `write` phase 2.
        fence(Ordering::Release);
        store.seq().store(s.wrapping_add(1), Ordering::Relaxed);
        // ORDERING: Release, partner of the Acquire load in `version` (copy 1 was
        // not touched; the fence above already orders copy 0).
        ctl.writer.value.done.store(s.wrapping_add(1), Ordering::Release);
    } else {
        // Died in phase 2: copy 1 torn, readers on copy 0 (intact).
        for i in 0..store.words() {
            let w = store.word(0, i).load(Ordering::Relaxed);
            store.word(1, i).store(w, Ordering::Relaxed);
        }
        // ORDERING: Release, partner of the Acquire load in `version`: the rolled-
        // forward copy 1 is visible to a reader that sees this version.
        ctl.writer.value.done.store(s, Ordering::Release);
    }
}
