//! The broadcast cursor protocol: one publisher, many subscribers over one record ring
//! (`crate::ring`), each subscriber with a cursor line of its own.
//!
//! **Lossless** (the LMAX Disruptor's gating sequences): the publisher may reuse ring
//! space only below the slowest *active* subscriber's cursor. A subscriber joins by
//! storing a provisional cursor, activating its line with its join ticket, a full
//! fence, then re-reading the producer position and starting there (Dekker pair with
//! the publisher's fence before it scans the lines: either the scan sees the line
//! active, or the joiner's re-read sees every record the scan's result lets the
//! publisher overwrite). A cursor the scan reads below the publisher's previous result
//! (a joiner's provisional one) is clamped to that result, which is safe by the same
//! argument. A subscriber that closed or died is deactivated by the publisher with a
//! compare-and-swap of its ticket, so a new subscriber of the same line is never
//! removed by mistake.
//!
//! **Lossy** (Aeron's `BroadcastTransmitter`/`BroadcastReceiver`, and tokio's
//! `broadcast` semantics): the publisher never waits. Before it reuses space it moves
//! the *oldest record held* forward past the records it will overwrite (a seqlock over
//! the position and the count of messages before it), then fences; a subscriber
//! checks, after copying a record out, that the oldest position has not passed the
//! record ([`overrun`]). If it has, the subscriber skips to the oldest record and
//! reports how many messages it missed (message counts: the publisher keeps its own
//! in a second seqlock, so a joiner starts with an exact count).
//!
//! Modelled in `loom-tests/tests/broadcast.rs`.

use crate::layout::{BroadcastControl, OldestRecord, SubscriberCursor, RECORD_ALIGN};
use crate::ring::{RingError, RingStore};
use crate::sync::{fence, AtomicU64, Ordering};

/// True if a record tagged `tag` begins a message (not padding, not a continuation of
/// a chunked message): what the lossy message counts count.
#[inline]
pub const fn starts_message(tag: u32) -> bool {
    tag != crate::ring::PADDING_TAG && tag != crate::ring::CONTINUATION_TAG
}

/// A subscriber joins a lossless broadcast on its cursor line `index`; `tail` is the
/// ring's producer position word. Returns the position it starts at (it receives every
/// record published from there on).
pub fn join_lossless(bc: &BroadcastControl, cursor: &SubscriberCursor, index: usize, tail: &AtomicU64) -> u64 {
    // ORDERING: Acquire, partner of the publisher's Release store of its position.
    let provisional = tail.load(Ordering::Acquire);
    // ORDERING: Relaxed; published by the SeqCst swap of `active` below (a scan that
    // sees the ticket with Acquire sees this or the final position).
    cursor.position.store(provisional, Ordering::Relaxed);
    // ORDERING: SeqCst, sequenced before the activation, so a scan that sees the line
    // active (its fence follows the activation in the total order) covers the line.
    bc.slots.value.fetch_max(index as u64 + 1, Ordering::SeqCst);
    // ORDERING: Relaxed: a unique number, nothing is published through it.
    let ticket = bc.joins.value.fetch_add(1, Ordering::Relaxed).wrapping_add(1).max(1);
    // ORDERING: SeqCst RMW then SeqCst fence: the joiner's half of the Dekker pair with
    // the publisher's fence in `slowest` (see the module docs).
    cursor.active.swap(ticket, Ordering::SeqCst);
    fence(Ordering::SeqCst);
    // ORDERING: Acquire after the fence: sees every position stored before a scan that
    // missed the activation.
    let start = tail.load(Ordering::Acquire);
    // ORDERING: Relaxed: our own line; a previous occupant's resume position must not
    // move a later copy of this subscriber (read after the role lease's Acquire).
    cursor.resume.store(start, Ordering::Relaxed);
    // ORDERING: Release, partner of the publisher's Acquire load in `slowest`.
    cursor.position.store(start, Ordering::Release);
    start
}

/// The publisher's lossless scan: the lowest position of any active subscriber, at
/// least `floor` (the previous result) and at most `tail` (its own position; also the
/// answer when nobody subscribes). `line(i)` is cursor line `i` (`i < max`).
pub fn slowest<'a>(bc: &BroadcastControl, max: usize, line: impl Fn(usize) -> &'a SubscriberCursor, floor: u64, tail: u64) -> u64 {
    // ORDERING: SeqCst fence, the publisher's half of the Dekker pair with
    // `join_lossless` (its positions stored before this fence, its loads after it).
    fence(Ordering::SeqCst);
    // ORDERING: Relaxed after the fence (see `join_lossless`).
    let slots = (bc.slots.value.load(Ordering::Relaxed) as usize).min(max);
    let mut min = tail;
    for i in 0..slots {
        let c = line(i);
        // ORDERING: Acquire, partner of the joiner's SeqCst swap: the provisional
        // position stored before it is visible.
        if c.active.load(Ordering::Acquire) != 0 {
            // ORDERING: Acquire, partner of the subscriber's Release stores of its
            // position (`store_position`): its reads of the records below happened.
            min = min.min(c.position.load(Ordering::Acquire));
        }
    }
    min.max(floor).min(tail)
}

/// Subscriber line `c`'s ticket if it is active (0: not).
#[inline]
pub fn ticket(c: &SubscriberCursor) -> u64 {
    // ORDERING: Acquire, partner of the joiner's swap.
    c.active.load(Ordering::Acquire)
}

/// Stop gating the publisher on line `c` if it still holds `ticket` (the publisher,
/// having found that subscriber closed or dead). True if it did.
pub fn deactivate(c: &SubscriberCursor, ticket: u64) -> bool {
    // ORDERING: AcqRel; a joiner's swap of a new ticket wins over this (the CAS fails).
    ticket != 0 && c.active.compare_exchange(ticket, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok()
}

/// A subscriber releases records up to `position`; `began` of them began messages
/// (lossy broadcasts count them).
#[inline]
pub fn store_position(c: &SubscriberCursor, position: u64, began: bool, lossy: bool) {
    if lossy && began {
        // ORDERING: Relaxed: only this subscriber (under its role lease) writes it; a
        // copy that takes the lease over reads it after the lease's Acquire.
        let seq = c.seq.load(Ordering::Relaxed);
        c.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
    }
    // ORDERING: Release, partner of the publisher's Acquire in `slowest`: our reads of
    // the records below `position` happen-before it overwrites them.
    c.position.store(position, Ordering::Release);
}

/// Read a pair `(position, seq)` written by [`write_pair`] (see
/// [`OldestRecord`]): never waits for a writer that died part-way.
pub fn read_pair(r: &OldestRecord) -> (u64, u64) {
    loop {
        // ORDERING: Acquire, partner of the writer's Release store of `version`: the
        // copy it names was written before.
        let v1 = r.version.load(Ordering::Acquire);
        let k = (v1 & 1) as usize;
        // ORDERING: Relaxed, checked by the fence and re-load below (the latch reader).
        let position = r.position[k].load(Ordering::Relaxed);
        let seq = r.seq[k].load(Ordering::Relaxed);
        // ORDERING: Acquire fence, partner of the writer's Release fence before it
        // rewrites a copy: if we read a value of a later rewrite of copy `k`, we see
        // the version bumps that came before it.
        fence(Ordering::Acquire);
        // ORDERING: Relaxed after the fence.
        if r.version.load(Ordering::Relaxed) == v1 {
            return (position, seq);
        }
        crate::sync::spin_hint();
    }
}

/// The publisher's update of a pair (it alone writes it): fill the copy the version
/// does not name, then bump the version. Ends with a Release fence: stores that follow
/// (the ring bytes a lossy publisher overwrites) are ordered after the new position
/// (see [`overrun`]).
pub fn write_pair(r: &OldestRecord, position: u64, seq: u64) {
    // ORDERING: Relaxed: the publisher's own word.
    let v = r.version.load(Ordering::Relaxed);
    let k = (v.wrapping_add(1) & 1) as usize;
    // ORDERING: Release fence, partner of the reader's Acquire fence: the version
    // bumps before this happen-before a reader that sees the rewrite below.
    fence(Ordering::Release);
    // ORDERING: Relaxed, published by the Release store of the version below.
    r.seq[k].store(seq, Ordering::Relaxed);
    r.position[k].store(position, Ordering::Relaxed);
    // ORDERING: Release, partner of the reader's Acquire load of the version.
    r.version.store(v.wrapping_add(1), Ordering::Release);
    // ORDERING: Release fence, partner of the Acquire fence in `overrun`: the stores
    // after this (overwriting ring bytes) are ordered after the new position.
    fence(Ordering::Release);
}

/// The current position of a pair (the publisher's own view of `oldest`).
#[inline]
pub fn oldest_position(r: &OldestRecord) -> u64 {
    // ORDERING: Relaxed: the publisher reads its own stores.
    let v = r.version.load(Ordering::Relaxed);
    r.position[(v & 1) as usize].load(Ordering::Relaxed)
}

/// A lossy subscriber, after copying out bytes of the record at `position`: true if
/// the publisher may have overwritten some of them meanwhile (the oldest position
/// passed the record), so the copy must be discarded.
#[inline]
pub fn overrun(r: &OldestRecord, position: u64) -> bool {
    // ORDERING: Acquire fence, partner of `write_pair`'s final Release fence: if we
    // read any byte the publisher wrote after moving the oldest position, we see that
    // version bump (or a later one) and the pair it names.
    fence(Ordering::Acquire);
    // A consistent pair, not the copy the version names read alone: that copy may be
    // under rewrite for a later update (whose ring bytes are not overwritten yet), and
    // a lag must be one `skip_to_oldest` can act on (found by the loom model).
    read_pair(r).0 > position
}

/// A lagging lossy subscriber at `head` skips to the oldest record held: stores it as
/// its position and returns `(position, messages missed)`, or `None` if the pair is
/// impossible (misaligned, behind `head`, beyond any position: shared memory is
/// untrusted), leaving the cursor as it was.
pub fn skip_to_oldest(r: &OldestRecord, c: &SubscriberCursor, head: u64) -> Option<(u64, u64)> {
    let (position, seq) = read_pair(r);
    if position % RECORD_ALIGN as u64 != 0 || position < head || position > crate::ring::MAX_POSITION {
        return None;
    }
    // ORDERING: Relaxed: our own word (see `store_position`).
    let mine = c.seq.load(Ordering::Relaxed);
    c.seq.store(seq, Ordering::Relaxed);
    // ORDERING: Release, as in `store_position`.
    c.position.store(position, Ordering::Release);
    Some((position, seq.wrapping_sub(mine).min(1 << 62)))
}

/// A subscriber joins a lossy broadcast on cursor line `c`: it starts at the
/// publisher's newest position with its message count. Returns the position.
pub fn join_lossy(bc: &BroadcastControl, c: &SubscriberCursor, index: usize) -> u64 {
    // The line counts as a subscriber (`Publisher::subscribers`) and its doorbell is
    // rung (`slots`); its position holds nothing back.
    // ORDERING: SeqCst, as in `join_lossless`.
    bc.slots.value.fetch_max(index as u64 + 1, Ordering::SeqCst);
    // ORDERING: Relaxed: a unique number.
    let ticket = bc.joins.value.fetch_add(1, Ordering::Relaxed).wrapping_add(1).max(1);
    // ORDERING: SeqCst, as in `join_lossless`.
    c.active.swap(ticket, Ordering::SeqCst);
    let (position, seq) = read_pair(&bc.newest.value);
    // ORDERING: Relaxed: our own line (the role lease orders copies' accesses).
    c.seq.store(seq, Ordering::Relaxed);
    // ORDERING: Relaxed, as in `join_lossless` (a lossy subscriber never adopts one).
    c.resume.store(position, Ordering::Relaxed);
    // ORDERING: Release, as in `store_position`.
    c.position.store(position, Ordering::Release);
    position
}

/// Cursor lines in use (`0..slots`), at most `max`.
#[inline]
pub fn slots(bc: &BroadcastControl, max: usize) -> usize {
    // ORDERING: Acquire, partner of the joiners' SeqCst `fetch_max`.
    (bc.slots.value.load(Ordering::Acquire) as usize).min(max)
}

/// A subscriber about to wait through the OS: ask the publisher to ring its doorbell.
pub fn arm_bell(c: &SubscriberCursor) {
    // ORDERING: Relaxed, published by the AcqRel RMW of the data event's doorbell bit
    // that follows (`EventCount::arm_doorbell`), which the ringing notifier's RMW
    // reads from.
    c.bell.store(1, Ordering::Relaxed);
}

/// The publisher's ring: take line `c`'s armed flag (true if it was armed).
pub fn take_bell(c: &SubscriberCursor) -> bool {
    // ORDERING: Relaxed load, then AcqRel swap only if armed (see `arm_bell`).
    c.bell.load(Ordering::Relaxed) != 0 && c.bell.swap(0, Ordering::AcqRel) != 0
}

/// A lossy publisher reclaims space in `store` (its ring): moves the oldest record
/// held (`oldest`) forward to the first record boundary at or after
/// `tail + max(need, capacity / 8) - capacity`, counting the messages it passes, and
/// returns it. Reclaiming an eighth of the ring at a time keeps the pair's writes (and
/// the subscribers' cache misses on them) rare.
///
/// # Errors
/// [`RingError::Corrupt`] if the stored oldest position or a header on the way is
/// impossible (shared memory is untrusted).
pub fn reclaim<S: RingStore>(store: &S, oldest: &OldestRecord, tail: u64, need: u64) -> Result<u64, RingError> {
    let cap = store.capacity() as u64;
    let target = tail.saturating_add(need.max(cap / 8)).saturating_sub(cap).min(tail);
    advance_pair(store, oldest, tail, target, "oldest record of a lossy broadcast")
}

/// A lossy publisher resuming at `tail` (attaching, or a copy taking the lease over):
/// bring the `newest` pair up to `tail`, counting the messages of the records between
/// (a publisher that died between storing its position and updating the pair left it
/// behind, and joiners would start one record early with a count one short).
///
/// # Errors
/// [`RingError::Corrupt`] if the pair or a header on the way is impossible.
pub fn resync_newest<S: RingStore>(store: &S, newest: &OldestRecord, tail: u64) -> Result<(), RingError> {
    advance_pair(store, newest, tail, tail, "newest record of a lossy broadcast").map(drop)
}

/// Move `pair` (a position at most `tail` and its message count) forward over the
/// records the publisher wrote, to the first record boundary at or after `target`
/// (at most `tail`), counting the messages they begin; store it if it moved and return
/// the new position.
///
/// # Errors
/// [`RingError::Corrupt`] (`what` names the pair) if the stored position or a header
/// on the way is impossible (shared memory is untrusted).
fn advance_pair<S: RingStore>(store: &S, pair: &OldestRecord, tail: u64, target: u64, what: &'static str) -> Result<u64, RingError> {
    let cap = store.capacity() as u64;
    let (mut pos, mut seq) = read_pair(pair);
    if pos > tail || tail - pos > cap || pos % RECORD_ALIGN as u64 != 0 {
        return Err(RingError::Corrupt { what, position: tail, value: pos });
    }
    if pos >= target {
        return Ok(pos);
    }
    while pos < target {
        let offset = pos & (cap - 1);
        // ORDERING: Relaxed: headers this role's publishers wrote (the role lease orders
        // its copies' accesses).
        let word = store.header(offset as usize).load(Ordering::Relaxed);
        let size = crate::ring::record_size((word & 0xFFFF_FFFF) as usize) as u64;
        let tag = ((word >> 32) as u32) & crate::ring::PADDING_TAG;
        if word >> 63 == 0 || size > cap - offset || pos + size > tail {
            return Err(RingError::Corrupt { what: "record header a lossy broadcast's publisher wrote", position: pos, value: word });
        }
        if starts_message(tag) {
            seq = seq.wrapping_add(1);
        }
        pos += size;
    }
    write_pair(pair, pos, seq);
    Ok(pos)
}
