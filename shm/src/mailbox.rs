//! The mailbox's pending summary: one bit per lane (an SPSC ring per producer handle)
//! that says the lane may hold a message, so that the consumer's empty check is one
//! load however many producers there are, and no producer claims anything with a CAS
//! (a producer that dies strands only its own lane; compare Agrona's
//! `ManyToOneRingBuffer`, whose CAS-claimed tail a dead producer blocks until the
//! consumer's `unblock()` pads it after a timeout).
//!
//! A producer sets its bit after publishing, only if it reads clear (the line stays
//! shared while the consumer keeps up); the consumer clears a bit when it finds the
//! lane empty, then looks at the lane once more. Modelled in `loom-tests`.

use crate::layout::MailboxControl;
use crate::sync::{fence, Ordering};

/// A lane's producer, after publishing: set the lane's pending bit unless it reads
/// set, or unless `unconsumed()` says the consumer already took everything published
/// (so that a consumer that took the record before this ran does not find a stale bit:
/// `pending` would read true over an empty mailbox). Dekker pair with
/// [`clear_pending`]: the producer's publish, a full fence, its load of the bit; the
/// consumer's clearing RMW and fence, its re-check of the lane. Either the consumer's
/// re-check sees the record, or this load sees the bit cleared (and the record not
/// consumed) and sets it again. The line stays shared while the consumer keeps up:
/// the RMW runs only when the bit changes.
#[inline]
pub fn mark_pending(m: &MailboxControl, lane: usize, unconsumed: impl Fn() -> bool) {
    let word = &m.pending.value[lane / 64];
    let bit = 1u64 << (lane % 64);
    // ORDERING: SeqCst fence, partner of the SeqCst RMW and fence in `clear_pending`:
    // orders our publish (the Release header store) before the load of the bit.
    fence(Ordering::SeqCst);
    // ORDERING: Relaxed after the fence (see above).
    if word.load(Ordering::Relaxed) & bit == 0 && unconsumed() {
        // ORDERING: AcqRel, partner of the consumer's Acquire load in `pending_word`
        // (the record is published before the bit that announces it) and of its
        // clearing RMW (ordered before our re-check below).
        word.fetch_or(bit, Ordering::AcqRel);
        // The consumer may have taken everything and cleared the bit between our check
        // and our RMW: then the bit we set names nothing; take it back. Only this
        // producer appends to the lane (inside its operation), so nothing can arrive
        // in between.
        if !unconsumed() {
            // ORDERING: AcqRel, as above.
            word.fetch_and(!bit, Ordering::AcqRel);
        }
    }
}

/// The consumer, finding lane `lane` empty: clear its pending bit, then call `ready`
/// (the lane's re-check); if that finds a record after all, set the bit again.
/// Returns `ready`'s answer. See [`mark_pending`].
pub fn clear_pending(m: &MailboxControl, lane: usize, ready: impl FnOnce() -> bool) -> bool {
    let word = &m.pending.value[lane / 64];
    let bit = 1u64 << (lane % 64);
    // ORDERING: SeqCst RMW then SeqCst fence, partner of [`mark_pending`]'s SeqCst
    // fence (store-buffering with a fence on each side: C++ [atomics.order] p7).
    word.fetch_and(!bit, Ordering::SeqCst);
    fence(Ordering::SeqCst);
    let again = ready();
    if again {
        // ORDERING: Relaxed: a hint for our own next look; the record it names is
        // acquired through the ring.
        word.fetch_or(bit, Ordering::Relaxed);
    }
    again
}


/// Bit set of the lanes that may hold a message, as words (lane `i`: bit `i % 64` of
/// word `i / 64`), for the first `lanes` lanes. Each word is one load.
pub fn pending_word(m: &MailboxControl, word: usize) -> u64 {
    // ORDERING: Acquire, partner of `mark_pending`'s Release RMW.
    m.pending.value[word].load(Ordering::Acquire)
}

/// Record that a producer handle claimed a lane (the mailbox has had a producer).
pub fn note_join(m: &MailboxControl) {
    // ORDERING: Release, partner of `joins`' Acquire: a consumer that counts this join
    // also sees the lane's producer role marked attached (stored before it).
    m.joins.value.fetch_add(1, Ordering::Release);
}

/// Producer handles that claimed a lane since creation.
pub fn joins(m: &MailboxControl) -> u64 {
    // ORDERING: Acquire, partner of `note_join`'s Release.
    m.joins.value.load(Ordering::Acquire)
}
