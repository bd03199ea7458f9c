//! Latest-value slot: a seqlock *latch* over `AtomicU64` words with a version in every
//! line of copy 0, crash-safe.
//!
//! The latch is Linux's `seqcount_latch` (`include/linux/seqlock.h`): two copies of the
//! value, written one after the other, so that one of them is always complete and
//! readers never wait for a writer. Instead of one sequence word that selects the copy
//! (a line every write modifies and every read loads), each 64-byte line of copy 0
//! carries [`SlotStore::LINE_WORDS`] (7) value words and its own version word (the
//! line's last: [`crate::layout::SLOT_MARKER_WORD`]): a write
//! changes only the lines it touches, so a reader under a writer of one element moves
//! that element's line and no other, as an unsynchronized ctypes read does (ABI 14).
//! Copy 1 has the same layout; its version words hold a canary instead (see "Zeroed
//! lines"): copy 0's versions tell when copy 1 may be read. A reader that keeps losing the race takes the writer lock
//! for one read after [`READ_TRIES`] attempts ([`read_words_or_lock`], Linux's
//! `read_seqbegin_or_lock`): it always finishes. Words are copied with Relaxed atomic
//! loads/stores between the version accesses and fences, as in Rust RFC 3301 /
//! crossbeam's `SeqLock`.
//!
//! ```text
//! writer (holding the lock; s = seq, even)     reader of lines L
//!   seq = s+1                                    for l in L: v1[l] = ver0[l] (Acquire)
//!   for l written: ver0[l] = s+1 (Release)                   copy-0 words of l
//!   fence(Release)                               no v1 odd:  fence(Acquire)
//!   copy-0 words (Relaxed)                                   accept iff ver0[L] == v1
//!   fence(Release)                               some v1 odd (a claim c), none c+1:
//!   for l written: ver0[l] = s+2                             copy-1 words of L
//!   seq = s+2; fence(Release)                                fence(Acquire)
//!   copy-1 words (Relaxed)                                   accept iff ver0[L] == v1
//!   done = s+2 (Release); unlock; notify         a v1 odd (c) beside c+1: copy-0
//!                                                            words again, then as
//!                                                            for no v1 odd
//! ```
//!
//! Why the double collect is enough (`docs/design.md`, Slots): a write claims *every*
//! line it changes before it writes any word and releases none before all are claimed,
//! so from its first claim to its last release at least one of its lines is odd. A
//! reader that read a word of the write in its first pass sees, in its second pass
//! after the Acquire fence, every line the write claimed at its claim or later: a
//! version that differs from its first pass unless the first pass already saw it
//! released. Versions only grow (a claim is above every version of the slot, a release
//! above its claim), so the second pass compares sums: with every `v2[l] >= v1[l]`,
//! equal sums mean equal versions. The version of a read is the largest line version
//! it saw, halved (every write changes a line of a whole read), or the claim's
//! predecessor for a read of copy 1.
//!
//! Copy 1 is read when copy 0 has a claimed line: it holds the previous write,
//! complete (the claim, loaded with Acquire, was stored with Release after it), and
//! stays so until the claiming write has released all of copy 0's lines, which changes
//! the versions the reader checks again after its copy-1 words. While a write
//! *releases* copy 0 (a line at `c + 1` beside one still at `c`), some reader may have
//! seen its value already, so falling back to copy 1 would go back in time: the reader
//! reads copy 0's words again instead, which are final by then (the write wrote them
//! all before its first release) and visible (it loaded a release with Acquire), and
//! checks the versions once more. A writer stopped at any point never makes a reader
//! wait. A whole read, and successive reads of one range, never go back in time.
//! Reads of *different* ranges are not linearizable with each other during a release
//! step, which lasts as long as a stopped writer stays stopped (or a dead one stays
//! unrepaired): a range of released lines returns the new value and version while a
//! range of lines still claimed returns copy 1's (the previous) ones, as an element
//! read of copy 1 may (see "Committed words").
//!
//! # Committed words (element reads without the versions)
//! Copy 1 only ever holds *committed* values: a writer changes it after copy 0 holds
//! the complete new value, and the repair of a writer that died while writing copy 1
//! rolls it forward from copy 0, never back. So one word of copy 1 read with one atomic
//! load ([`read_committed_word`]) is a whole word of some completed write, and successive
//! loads of it never go back to an older write: that is all an element of at most 8
//! naturally aligned bytes needs, and it costs one line, as a plain shared `double`
//! does (no version, no retry); a writer stores that line once per write. [`version`]
//! reads `done`, which the writer stores (Release) after copy 1, so a reader that sees
//! version `v` then reads committed words of write `v` or later.
//!
//! # Zeroed lines (ABI 15)
//! A slot is made whole before anyone can see it ([`init`]): versions start at 2 and
//! every line of copy 1 ends with [`SLOT_CANARY`], which nothing writes again. A cut
//! of the segment file inside a mapped page zeroes the page's tail without a SIGBUS
//! (from the cut on: a line's marker is its last word, so a cut at or before any of a
//! line's values zeroes its marker too),
//! so a version of 0, a missing canary or `done == 0` can only be such zeros: reads
//! return [`ZEROED`] (element reads `None`) instead of the zeros as a value, and
//! [`writable`] tells a writer before it writes into them.
//!
//! # Crash safety
//! A writer killed at any point leaves one copy intact: killed while claiming or
//! writing copy 0, or before its first release, copy 1 holds the last complete value
//! (readers of a claimed line read it; repair rolls back); killed after a release of
//! copy 0 or while writing copy 1, copy 0 holds the new one (readers of a range with a
//! released line read it as during a live release step; a range of lines still claimed
//! reads copy 1, the old value and version, until repair rolls forward). Writers serialize on
//! `writer.owner` (pid, low bits of its start time, thread id: `liveness::writer_id`); a
//! holder whose process is gone (or whose pid a later process reused) is replaced by
//! compare-and-swap, and the new holder repairs a torn copy before writing (`done !=
//! seq` says a write did not finish; see `repair`).

use crate::layout::{SlotControl, SLOT_CANARY};
use crate::sync::{fence, spin_hint, yield_now, AtomicU64, Ordering};
use crate::wait::{Park, SLICE};
use std::convert::Infallible;
use std::time::Instant;

/// Storage of a slot: control block and the two copies of its payload words, in lines
/// of [`LINE_WORDS`](SlotStore::LINE_WORDS) value words and a marker word (copy 0's
/// line version; copy 1's canary).
pub trait SlotStore {
    /// Sleep/wake implementation of `updated`.
    type Park: Park;
    /// Value words per line (before the line's marker word): 7 in a segment (64-byte
    /// lines); loom models use 1 so that two-line values stay small.
    const LINE_WORDS: usize = crate::layout::SLOT_LINE_WORDS;
    /// The control block (writer lock, writer's sequence, sleepers).
    fn control(&self) -> &SlotControl;
    /// Payload words per copy.
    fn words(&self) -> usize;
    /// Copy `copy` (0 or 1) as one slice of `lines * (LINE_WORDS + 1)` words: each
    /// line's version, then its value words (the last line may be partly unused).
    fn copy_lines(&self, copy: usize) -> &[AtomicU64];
    /// The futex implementation.
    fn park(&self) -> &Self::Park;

    /// The writer's sequence (`control().writer.seq`): odd while a write is in copy 0,
    /// `done` once it completed. Only writers and repair read it.
    #[inline]
    fn seq(&self) -> &AtomicU64 {
        &self.control().writer.value.seq
    }

    /// Lines per copy.
    #[inline]
    fn lines(&self) -> usize {
        self.words().div_ceil(Self::LINE_WORDS)
    }

    /// Word `i` of copy `copy` (0 or 1).
    ///
    /// # Panics
    /// If `i` is outside the value.
    #[inline]
    fn word(&self, copy: usize, i: usize) -> &AtomicU64 {
        assert!(i < self.words(), "slot word outside the value");
        &self.copy_lines(copy)[word_index::<Self>(i)]
    }

    /// The marker word of line `l` of copy `copy` (its last: see
    /// [`crate::layout::SLOT_MARKER_WORD`]): copy 0's line version, copy 1's canary.
    #[inline]
    fn line_version(&self, copy: usize, l: usize) -> &AtomicU64 {
        &self.copy_lines(copy)[l * (Self::LINE_WORDS + 1) + Self::LINE_WORDS]
    }
}

/// Index in [`SlotStore::copy_lines`] of value word `i`.
#[inline]
fn word_index<S: SlotStore + ?Sized>(i: usize) -> usize {
    i / S::LINE_WORDS * (S::LINE_WORDS + 1) + i % S::LINE_WORDS
}

/// Version a reader sees: the number of completed writes (and repairs), `seq / 2`.
#[inline]
fn version_of(seq: u64) -> u64 {
    seq / 2
}

/// What a read returns instead of a version when the lines it read hold zeros where a
/// slot never does (a copy-0 line version of 0, a copy-1 line without
/// [`SLOT_CANARY`], `done == 0`): the segment file was cut inside a mapped page (the
/// kernel zeroes the page's tail and raises no SIGBUS) or overwritten. No write makes
/// this version (versions are `seq / 2 < 2^63`); callers report the slot corrupt.
pub const ZEROED: u64 = u64::MAX;

/// Make a slot whole before anyone else can see it (before its segment header is
/// published): both copies hold `src`, every copy-0 line version is 2, every copy-1
/// line ends with [`SLOT_CANARY`], `seq = done = 2` (version 1). From then on no
/// line version is 0 and no canary changes, so a reader that finds either zeroed
/// returns [`ZEROED`]. Plain Relaxed stores: the header's Release publication (or the
/// spawn of the threads that share a heap store) orders them.
///
/// # Panics
/// If `src` has the wrong length.
pub fn init<S: SlotStore>(store: &S, src: &[u64]) {
    assert_eq!(src.len(), store.words(), "slot value of the wrong length");
    for l in 0..store.lines() {
        // ORDERING: Relaxed: published with the segment (see above).
        store.line_version(0, l).store(2, Ordering::Relaxed);
        store.line_version(1, l).store(SLOT_CANARY, Ordering::Relaxed);
    }
    for (i, &w) in src.iter().enumerate() {
        // ORDERING: Relaxed, as above.
        store.word(0, i).store(w, Ordering::Relaxed);
        store.word(1, i).store(w, Ordering::Relaxed);
    }
    let writer = &store.control().writer.value;
    // ORDERING: Relaxed, as above.
    writer.seq.store(2, Ordering::Relaxed);
    writer.done.store(2, Ordering::Relaxed);
}

/// False if a write of words `first .. first + n` would go into zeros (see [`ZEROED`]):
/// `done` is 0, or a line it changes has a copy-0 version of 0 or no canary in copy 1.
/// Every line of the range, not only the last: zeros need not come from a cut to the
/// end (a punched hole, another process overwriting part of the file), and an update
/// re-reads its lines from copy 0, so a zeroed line in the middle would be committed as
/// a value (found in review). A check before the write (not under the lock: a
/// truncation races with everything), so that a writer into zeros is told, as its
/// readers are.
pub fn writable<S: SlotStore>(store: &S, first: usize, n: usize) -> bool {
    if version(store) == ZEROED {
        return false;
    }
    let Some(last) = store.lines().checked_sub(1) else { return true };
    let (l0, l1) = ((first / S::LINE_WORDS).min(last), ((first + n.max(1) - 1) / S::LINE_WORDS).min(last));
    // ORDERING: Relaxed: a check of what a truncation did, not of a writer's work.
    (l0..=l1).all(|l| {
        store.line_version(0, l).load(Ordering::Relaxed) != 0 && store.line_version(1, l).load(Ordering::Relaxed) == SLOT_CANARY
    })
}

/// The current version (one Acquire load of `done`): grows with every completed write
/// (and with the repair of one a dead writer left). Committed words
/// ([`read_committed_word`]) read after it are of this write or a later one.
/// [`ZEROED`] if `done` reads 0 (the control block was zeroed: see [`init`]).
#[inline]
pub fn version<S: SlotStore>(store: &S) -> u64 {
    // ORDERING: Acquire, partner of the Release stores of `done` in `publish` and
    // `repair`, made after copy 1 is complete.
    let done = store.control().writer.value.done.load(Ordering::Acquire);
    if done == 0 {
        return ZEROED;
    }
    version_of(done)
}

/// Word `i` of the value as of some completed write, with one atomic load of copy 1
/// (see the module docs: "Committed words"), and a load of its line's canary (the same
/// line: no second transfer). Words read by separate calls may be of different writes;
/// one word is always whole. `None` if the canary is not [`SLOT_CANARY`] (the line was
/// zeroed: see [`ZEROED`]).
///
/// # Panics
/// If `i` is outside the value.
#[inline]
pub fn read_committed_word<S: SlotStore>(store: &S, i: usize) -> Option<u64> {
    // ORDERING: Acquire, partner of the writer's fence(Release) before its copy-1
    // stores: a reader that sees a word of write `w` also sees everything its writer
    // did before `w` (a flag in one slot published after data in another; and copy 0's
    // release of `w`, so a whole read after it does not go back). One word is whole by
    // single-copy atomicity.
    let word = store.word(1, i).load(Ordering::Acquire);
    // ORDERING: Relaxed: the canary never changes after `init` (published with the
    // segment); only a truncation (zeros) does.
    let canary = store.line_version(1, i / S::LINE_WORDS).load(Ordering::Relaxed);
    (canary == SLOT_CANARY).then_some(word)
}

/// One read attempt into `dst` (`dst.len() == store.words()`): the version read, or
/// `None` if a write changed the lines meanwhile (retry).
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
/// Its version is that of the last write that changed these words' lines (read from
/// copy 0), or of the last write completed before the one under way (from copy 1).
///
/// # Panics
/// If the range is outside the value.
#[inline]
pub fn try_read_words<S: SlotStore>(store: &S, first: usize, dst: &mut [u64]) -> Option<u64> {
    assert!(first.checked_add(dst.len()).is_some_and(|end| end <= store.words()), "slot read range outside the value");
    try_read_span(store, first, dst.len(), |at, src| {
        for (w, s) in dst[at..at + src.len()].iter_mut().zip(src) {
            // ORDERING: Relaxed, between the version loads of `try_read_span`.
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
    let len = dst.len();
    try_read_span(store, 0, words, |at, src| {
        let bytes = &mut dst[at * 8..len.min((at + src.len()) * 8)];
        // Whole words, then the tail (split first: one loop counter, unrolled).
        let (full, tail) = bytes.split_at_mut(bytes.len() / 8 * 8);
        for (c, s) in full.chunks_exact_mut(8).zip(src) {
            // ORDERING: Relaxed, between the version loads of `try_read_span`.
            c.copy_from_slice(&s.load(Ordering::Relaxed).to_ne_bytes());
        }
        if !tail.is_empty() {
            // ORDERING: Relaxed, as above.
            let w = src[src.len() - 1].load(Ordering::Relaxed).to_ne_bytes();
            tail.copy_from_slice(&w[..tail.len()]);
        }
    })
}

/// What the pass over copy 0 found.
enum Pass {
    /// Consistent: the largest line version read.
    Read(u64),
    /// A write claimed a line of the range (`claim`, the largest odd version) and was
    /// not releasing copy 0: copy 1 holds the previous write, complete. `sum`: the
    /// versions' sum, which must not change while copy 1 is read.
    Claimed { sum: u64, claim: u64 },
    /// Copy 0 changed during the read: retry.
    Retry,
    /// A line version of 0 (never, after [`init`]): the lines were zeroed ([`ZEROED`]).
    Zeroed,
}

/// The read protocol of every whole or partial read (see the module docs): copy 0 with
/// a double collect of its line versions, else copy 1 validated by copy 0's versions
/// staying put; `load(at, words)` copies the range's words of each line (`at`: the
/// word's index within the range) with Relaxed loads only. The version if consistent,
/// else `None` (what `load` copied may be torn: the caller retries).
///
/// # Panics
/// If the range is outside the value.
#[inline(always)]
fn try_read_span<S: SlotStore>(store: &S, first: usize, n: usize, mut load: impl FnMut(usize, &[AtomicU64])) -> Option<u64> {
    if n == 0 {
        return Some(version(store));
    }
    let (lw, stride) = (S::LINE_WORDS, S::LINE_WORDS + 1);
    let (l0, l1) = (first / lw, (first + n - 1) / lw);
    let c0 = store.copy_lines(0);
    let versions = || {
        let mut sum = 0u64;
        for l in l0..=l1 {
            // ORDERING: Relaxed: after the caller's Acquire fence.
            sum = sum.wrapping_add(c0[l * stride + lw].load(Ordering::Relaxed));
        }
        sum
    };
    match read_copy0(store, first, n, &mut load) {
        Pass::Read(v) => Some(version_of(v)),
        Pass::Retry => None,
        Pass::Zeroed => Some(ZEROED),
        Pass::Claimed { sum, claim } => {
            // Copy 1 is the previous write's, complete (the claim we loaded with Acquire
            // was stored with Release after it). It stays so until the claiming write
            // releases copy 0's lines, which changes their versions: checked below.
            let c1 = store.copy_lines(1);
            // ORDERING: Relaxed: canaries never change after `init` (see
            // `read_committed_word`); these are the lines read next.
            if (l0..=l1).any(|l| c1[l * stride + lw].load(Ordering::Relaxed) != SLOT_CANARY) {
                return Some(ZEROED);
            }
            load_words::<S>(c1, first, n, &mut load);
            // ORDERING: Acquire fence, partner of the writer's fence(Release) between
            // its copy-0 releases and its copy-1 words: if we read a word of copy 1 that
            // the claiming write (or a later one) stored, the loads below see a release.
            fence(Ordering::Acquire);
            (versions() == sum).then_some(version_of(claim.wrapping_sub(1)))
        }
    }
}

/// Hand `load` the value words `first .. first + n` (`n >= 1`) of copy `c`, line by line
/// (`at`: the first word's index within the range), with no version loads.
#[inline(always)]
fn load_words<S: SlotStore>(c: &[AtomicU64], first: usize, n: usize, load: &mut impl FnMut(usize, &[AtomicU64])) {
    let (lw, stride) = (S::LINE_WORDS, S::LINE_WORDS + 1);
    let (l0, l1) = (first / lw, (first + n - 1) / lw);
    let mut at = 0;
    for l in l0..=l1 {
        let lo = if l == l0 { first % lw } else { 0 };
        let hi = if l == l1 { (first + n - 1) % lw + 1 } else { lw };
        load(at, &c[l * stride + lo..l * stride + hi]);
        at += hi - lo;
    }
}

/// Copy 0's pass over words `first .. first + n` (`n >= 1`): versions and words, then
/// (if no line was claimed) the versions again.
#[inline(always)]
fn read_copy0<S: SlotStore>(store: &S, first: usize, n: usize, load: &mut impl FnMut(usize, &[AtomicU64])) -> Pass {
    let (lw, stride) = (S::LINE_WORDS, S::LINE_WORDS + 1);
    let c = store.copy_lines(0);
    let (l0, l1) = (first / lw, (first + n - 1) / lw);
    let (mut sum, mut max_even, mut max_odd, mut even, mut zero) = (0u64, 0u64, 0u64, false, false);
    let mut at = 0;
    for l in l0..=l1 {
        let line = &c[l * stride..(l + 1) * stride];
        // ORDERING: Acquire, partner of the writer's Release claim (what the previous
        // write stored in copy 1 is visible: `Claimed`) and of its fence(Release) before
        // its release stores (a line seen released holds that write's words).
        let v = line[lw].load(Ordering::Acquire);
        zero |= v == 0;
        sum = sum.wrapping_add(v);
        if v & 1 == 0 {
            max_even = max_even.max(v);
            even = true;
        } else {
            max_odd = max_odd.max(v);
        }
        let lo = if l == l0 { first % lw } else { 0 };
        let hi = if l == l1 { (first + n - 1) % lw + 1 } else { lw };
        load(at, &line[lo..hi]);
        at += hi - lo;
    }
    if zero {
        // No line version is 0 after `init`: these lines were zeroed.
        return Pass::Zeroed;
    }
    // (`even`: a claim at 2^64 - 1 wraps its release to 0, which `max_even` starts at.)
    let releasing = max_odd != 0 && even && max_even == max_odd.wrapping_add(1);
    if max_odd != 0 && !releasing {
        return Pass::Claimed { sum, claim: max_odd };
    }
    if releasing {
        // A line released at `c + 1` beside one still claimed at `c`: the write is
        // releasing copy 0, and some reader may have seen its value already, so copy 1
        // (the previous value) would go back in time. All of copy 0's words of this
        // write are final (it wrote them all before its first release) and visible to
        // us now (we loaded a release with Acquire): read them again, after it. No
        // wait for the writer: a writer stopped here leaves a readable copy 0.
        load_words::<S>(c, first, n, load);
    }
    // ORDERING: Acquire fence, partner of the writer's fence(Release) after its claims:
    // if we read any word a write stored after claiming, the loads below see its claim.
    fence(Ordering::Acquire);
    let mut again = 0u64;
    for l in l0..=l1 {
        // ORDERING: Relaxed: ordered after the words by the fence above.
        again = again.wrapping_add(c[l * stride + lw].load(Ordering::Relaxed));
    }
    if again == sum {
        Pass::Read(max_even)
    } else {
        Pass::Retry
    }
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
    // ORDERING: Relaxed: holding the lock (versions change only under it). A zeroed line
    // or sequence (see `init`) is no value.
    let zeroed = s == 0
        || (!dst.is_empty()
            && (first / S::LINE_WORDS..=(first + dst.len() - 1) / S::LINE_WORDS)
                .any(|l| store.line_version(0, l).load(Ordering::Relaxed) == 0));
    // ORDERING: Release, partner of the next writer's Acquire CAS in `lock` (our loads
    // happen before its stores).
    store.control().writer.value.owner.store(0, Ordering::Release);
    if zeroed {
        return ZEROED;
    }
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
    /// After claiming copy 0's lines and writing this many words of copy 0.
    InCopy0(usize),
    /// After copy 0 is complete and released, writing this many words of copy 1.
    InCopy1(usize),
    /// In the release step of copy 0, after releasing this many of the written lines:
    /// readers of copy 0 see it half released.
    InRelease(usize),
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

/// Holding the lock with both copies equal: write `src` at word `first` of copy 0, its
/// lines claimed (odd) while they change and released (even) after, then of copy 1;
/// release the lock and wake waiters. `None` if it stopped at `crash` (lock kept).
fn publish<S: SlotStore>(store: &S, first: usize, src: &[u64], crash: Option<CrashPoint>) -> Option<u64> {
    let ctl = store.control();
    let s = store.seq().load(Ordering::Relaxed);
    debug_assert!(s % 2 == 0, "repaired slot has an even sequence");
    // Sequence arithmetic wraps: the words are untrusted (a peer may have left any
    // value; a real sequence reaches 2^64 after 2^63 writes).
    let (claim, release) = (s.wrapping_add(1), s.wrapping_add(2));
    // The lines the write changes (an empty write still changes `first`'s line, so that
    // every write moves the version of some line: a read's version is its lines').
    // (An empty write at the value's end changes the last line.)
    let lw = S::LINE_WORDS;
    let last = store.lines() - 1;
    let (l0, l1) = ((first / lw).min(last), ((first + src.len().max(1) - 1) / lw).min(last));
    // ORDERING: Relaxed: the writer's own phase mark (repair reads it holding the lock,
    // whose Acquire CAS orders it).
    store.seq().store(claim, Ordering::Relaxed);
    for l in l0..=l1 {
        // ORDERING: Release, partner of the reader's Acquire load of a version: a reader
        // that sees this claim and reads copy 1 instead sees the previous write's copy 1
        // complete (it happened before our lock).
        store.line_version(0, l).store(claim, Ordering::Release);
    }
    // ORDERING: Release fence, partner of the reader's Acquire fence between its words
    // and its second pass: a reader that sees any word stored below also sees every
    // claim above in its second pass (and rejects what it read).
    fence(Ordering::Release);
    for (i, &w) in src.iter().enumerate() {
        if crash == Some(CrashPoint::InCopy0(i)) {
            return None;
        }
        store.word(0, first + i).store(w, Ordering::Relaxed);
    }
    // ORDERING: Release fence, partner of the reader's Acquire load of a line's version:
    // a reader that sees a line released sees its words above.
    fence(Ordering::Release);
    for l in l0..=l1 {
        if crash == Some(CrashPoint::InRelease(l - l0)) {
            return None;
        }
        // ORDERING: Relaxed, after the fence above.
        store.line_version(0, l).store(release, Ordering::Relaxed);
    }
    // ORDERING: Relaxed: the writer's phase mark, as above.
    store.seq().store(release, Ordering::Relaxed);
    // ORDERING: Release fence, partner of the Acquire fence of a reader of copy 1 (and
    // of `read_committed_word`'s Acquire load): a reader that sees a copy-1 word stored
    // below sees copy 0's releases above (and rejects its copy-1 read).
    fence(Ordering::Release);
    for (i, &w) in src.iter().enumerate() {
        if crash == Some(CrashPoint::InCopy1(i)) {
            return None;
        }
        store.word(1, first + i).store(w, Ordering::Relaxed);
    }
    // ORDERING: Release, partner of the Acquire load in `version`: copy 1's words are
    // visible to a reader that sees this version.
    ctl.writer.value.done.store(release, Ordering::Release);
    // ORDERING: Release, partner of the next writer's Acquire CAS in `lock`.
    ctl.writer.value.owner.store(0, Ordering::Release);
    ctl.updated.value.notify(store.park());
    Some(version_of(release))
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

/// Holding the lock: finish what a writer that died mid-write left torn. Nothing to do
/// when `done == seq` and it is even (no write under way; two loads). Otherwise, with
/// `s = seq`:
/// - `s` odd, a line of copy 0 released at `s + 1` (the writer died releasing copy 0,
///   after all its words): release copy 0's claimed lines at `s + 1` too, then roll
///   copy 1 forward from copy 0 (readers are on copy 0 by then);
/// - `s` odd, nothing released (it died claiming or writing copy 0): claim every line of
///   copy 0 at `s`, restore its words from copy 1 (intact: readers read it meanwhile),
///   release them at `s + 1` (the version moves on by one, the value is the last
///   complete one);
/// - `s` even (it died writing copy 1): roll copy 1 forward from copy 0.
///
/// Versions only grow (a reader's double collect relies on it) as long as no line is
/// above `s + 1`, which no honest writer leaves; forged ones can make readers retry or
/// take the lock, never fault.
fn repair<S: SlotStore>(store: &S) {
    let ctl = store.control();
    let s = store.seq().load(Ordering::Relaxed);
    let done = ctl.writer.value.done.load(Ordering::Relaxed);
    if done == s && s % 2 == 0 {
        return;
    }
    let lines = store.lines();
    if s % 2 == 1 {
        let release = s.wrapping_add(1);
        // ORDERING: Relaxed: holding the lock. The dead writer's stores are all visible:
        // its process is gone (the OS completed them); a thread's fence cannot order
        // another thread's Relaxed stores in the C++ model.
        let released = (0..lines).any(|l| store.line_version(0, l).load(Ordering::Relaxed) == release);
        if !released {
            for l in 0..lines {
                // ORDERING: Release, as a claim in `publish`.
                store.line_version(0, l).store(s, Ordering::Release);
            }
            // ORDERING: Release fence, as after the claims in `publish`.
            fence(Ordering::Release);
            for i in 0..store.words() {
                let w = store.word(1, i).load(Ordering::Relaxed);
                store.word(0, i).store(w, Ordering::Relaxed);
            }
        }
        // ORDERING: Release fence, as before the releases in `publish`.
        fence(Ordering::Release);
        for l in 0..lines {
            let v = store.line_version(0, l);
            if !released || v.load(Ordering::Relaxed) % 2 == 1 {
                // ORDERING: Relaxed, after the fence above.
                v.store(release, Ordering::Relaxed);
            }
        }
        // ORDERING: Relaxed: the writer's phase mark (read holding the lock).
        store.seq().store(release, Ordering::Relaxed);
        if !released {
            // ORDERING: Release, partner of the Acquire load in `version` (copy 1 was
            // not touched; the fence above already orders copy 0).
            ctl.writer.value.done.store(release, Ordering::Release);
            return;
        }
    }
    // Copy 0 is complete and released: roll copy 1 forward from it.
    // ORDERING: Release fence, as before copy 1 in `publish`.
    fence(Ordering::Release);
    for i in 0..store.words() {
        let w = store.word(0, i).load(Ordering::Relaxed);
        store.word(1, i).store(w, Ordering::Relaxed);
    }
    let s = store.seq().load(Ordering::Relaxed);
    // ORDERING: Release, partner of the Acquire load in `version`: the rolled-forward
    // copy 1 is visible to a reader that sees this version.
    ctl.writer.value.done.store(s, Ordering::Release);
}
