//! SPSC ring of variable-size records over a power-of-two data area.
//!
//! Based on Agrona's `OneToOneRingBuffer` (records with an 8-byte header, a padding
//! record at the wrap so every record is contiguous, monotonic 64-bit positions) and
//! on rtrb (cached copies of the other side's index, split producer/consumer handles).
//!
//! # Record format
//! Each record starts at an 8-byte-aligned position with one `u64` header word:
//!
//! ```text
//! bit 63      COMMITTED (always 1 in a published header; a zero word = nothing yet)
//! bits 32..63 tag (31 bits; PADDING_TAG marks a padding record)
//! bits 0..32  payload length in bytes
//! ```
//!
//! followed by the payload, padded to the next multiple of 8. The header word is stored
//! last, with Release: it is the publish flag, so the consumer polls one cache line (the
//! one holding the header and the start of the payload) and never the producer's tail.
//!
//! # Zero-ahead
//! Agrona zeroes every consumed byte so that stale bytes never look like a header.
//! Here the producer instead zeroes the *next* header slot (the 8 bytes at the end of
//! the record it commits) before it publishes the record. Invariant: the header slot at
//! the producer's position is always zero, so the consumer, having consumed up to that
//! position, sees zero there until the next commit. This costs one 8-byte store per
//! record instead of a memset of every consumed byte, and reserves 8 bytes of the ring.
//!
//! # Spacers
//! A padding record of its header alone (length 0) may follow a record anywhere: a
//! *spacer*. The producer writes one with a large record, before the record's header
//! is published ([`Producer::commit_spaced`]), and the consumer steps over it together
//! with the record. It makes the next record of the same size fit before the producer's
//! offset, so that [`Producer::rewind_if_empty`] can start it at offset 0 again: without
//! it, equal large records alternate between two places in the ring, twice the memory
//! to keep warm (an 8 MB message written into a loan took ~1.7x one `memcpy` of it).
//! Published with the record, a spacer is never seen alone, so nothing else changes
//! (a look for data that finds padding reports it, as for any padding). A spacer never
//! follows a padding record, except as the end's padding (the last 8 bytes).
//!
//! # Untrusted memory
//! The consumer validates every header it reads (committed bit, length within the
//! contiguous space left before the end of the data area; alignment holds by
//! construction: positions only advance by whole 8-byte-aligned records) and poisons the
//! ring with [`RingError::Corrupt`] otherwise; the producer validates the consumer's
//! position before trusting it. A hostile peer can make you receive wrong bytes, never
//! make this code touch memory outside the data area.

use crate::buf::OutBuf;
use crate::layout::{EventCount, RingControl, RECORD_ALIGN, RECORD_HEADER};
use crate::sync::{AtomicU64, Ordering};
use crate::wait::Park;
use std::collections::VecDeque;

/// Header bit that marks a published record.
const COMMITTED: u64 = 1 << 63;
/// Tag of a padding record (skipped by the consumer).
pub const PADDING_TAG: u32 = 0x7FFF_FFFF;
/// Largest user tag.
pub const MAX_TAG: u32 = PADDING_TAG - 1;
/// The header word of a spacer: a padding record of its header alone (see the module
/// documentation).
const SPACER: u64 = COMMITTED | ((PADDING_TAG as u64) << 32);
/// Only records of at least this many payload bytes get a spacer
/// ([`Producer::commit_spaced`]), so the consumer looks for one only after a record
/// larger than this: a small message's release reads no header ahead of it (the line
/// the producer writes next).
pub const SPACED_MIN: usize = 64 * 1024;
/// Tag of a record that continues a chunked message (the message format's
/// `TAG_CONTINUATION`): lossy broadcasts count the records that begin messages.
pub const CONTINUATION_TAG: u32 = 0x200;

/// `ctl.status.poisoned` reason: the consumer read a malformed record header.
pub const POISON_BAD_RECORD: u32 = 1;
/// `ctl.status.poisoned` reason: the producer read an impossible consumer position.
pub const POISON_BAD_HEAD: u32 = 2;

/// Errors of the ring algorithm itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// A record larger than the ring can ever hold.
    #[error("record of {len} bytes exceeds the ring's maximum payload of {max} bytes")]
    TooLarge {
        /// Requested payload length in bytes.
        len: usize,
        /// Largest payload this ring accepts, in bytes.
        max: usize,
    },
    /// A lossy broadcast's subscriber fell a lap behind: the publisher overwrote
    /// records it had not read. It now reads from the oldest record still held.
    #[error("fell behind the publisher: {missed} messages were overwritten before they were read")]
    Lagged {
        /// Messages that began before the oldest record held and after this
        /// subscriber's position.
        missed: u64,
    },
    /// Shared state that no correct peer could have written.
    #[error("ring is corrupt: {what} (position {position}, value {value:#x})")]
    Corrupt {
        /// What was wrong.
        what: &'static str,
        /// Ring position where it was found.
        position: u64,
        /// The offending value.
        value: u64,
    },
}

/// Storage of a ring: its control block and its data area.
///
/// Implemented over a mapped segment (production), over heap memory (tests) and over
/// loom atomics (models). Offsets are relative to the start of the data area.
///
/// # Safety
/// The ring trusts these answers to stay inside memory it may touch. An implementer
/// guarantees, for the life of the store:
/// - `capacity()` is a power of two, at least 16, and never changes;
/// - `header(offset)`, for every 8-aligned `offset < capacity()`, returns an atomic
///   inside the data area (it may panic for other offsets);
/// - `write`/`read` copy exactly the given range of the data area and nothing else;
/// - `control()` is this ring's control block, shared by its producer and consumer.
pub unsafe trait RingStore {
    /// Sleep/wake implementation for the ring's event counts.
    type Park: Park;
    /// The control block.
    fn control(&self) -> &RingControl;
    /// Size of the data area in bytes (a power of two).
    fn capacity(&self) -> usize;
    /// The header word at `offset` (8-aligned, `< capacity`).
    fn header(&self, offset: usize) -> &AtomicU64;
    /// Copy `src` to the data area at `offset`.
    ///
    /// # Safety
    /// `offset + src.len() <= capacity`, and no other thread of this process accesses
    /// that range concurrently (the ring protocol gives the producer exclusive use).
    unsafe fn write(&self, offset: usize, src: &[u8]);
    /// Copy `len` bytes from the data area at `offset` to `dst`.
    ///
    /// # Safety
    /// `offset + len <= capacity`, the range holds a record this consumer has acquired
    /// and not yet released, and `dst` is valid for writes of `len` bytes (possibly
    /// uninitialised: it is only written) and does not overlap the data area.
    unsafe fn read(&self, offset: usize, dst: *mut u8, len: usize);
    /// The futex implementation.
    fn park(&self) -> &Self::Park;
    /// The event count the consumer sleeps on while it waits for a record: this ring's
    /// own (`control().data_ready`), or one several rings share (a mailbox's lanes).
    #[inline]
    fn data_event(&self) -> &EventCount {
        &self.control().data_ready.value
    }
    /// Tell a waiting consumer that a record was published: notify
    /// [`RingStore::data_event`] (`streak`: the producer's count for
    /// `EventCount::notify_counted`). A mailbox lane also marks itself pending first.
    #[inline]
    fn notify_data(&self, streak: &mut u32) {
        self.data_event().notify_counted(self.park(), streak);
    }
    /// The word this consumer stores its position in: the ring's own
    /// (`control().head`), or a broadcast subscriber's cursor.
    #[inline]
    fn head_word(&self) -> &AtomicU64 {
        &self.control().head.value.position
    }
    /// The word this consumer publishes its resume position in while it holds records
    /// (`ConsumerLine::resume`, or a broadcast subscriber's cursor's).
    #[inline]
    fn resume_word(&self) -> &AtomicU64 {
        &self.control().head.value.resume
    }
    /// False for a consumer that never holds records (a lossy broadcast's subscriber:
    /// its publisher does not wait), and so never adopts a resume position.
    #[inline]
    fn holds_records(&self) -> bool {
        true
    }
    /// The consumer's new position `head`, after it released a record tagged `tag`.
    #[inline]
    fn store_head(&self, head: u64, _tag: u32) {
        // ORDERING: Release, partner of the producer's Acquire in
        // `consumers_position`: our reads of the record happen-before it is reused.
        self.head_word().store(head, Ordering::Release);
    }
    /// The producer's view of how far the consumers released (it may reuse space
    /// below this), given its own position `tail` and the bytes `need` it wants free:
    /// the consumer's position, or a broadcast's slowest subscriber's (a lossy one:
    /// as far as the publisher reclaims). `floor`: the producer's previous answer.
    ///
    /// # Errors
    /// [`RingError::Corrupt`] from a lossy publisher's walk over its records.
    #[inline]
    fn consumers_position(&self, _floor: u64, _tail: u64, _need: u64) -> Result<u64, RingError> {
        // ORDERING: Acquire, partner of the consumer's Release in `store_head`.
        Ok(self.head_word().load(Ordering::Acquire))
    }
    /// The producer published a record tagged `tag`; its position is now `tail`.
    #[inline]
    fn published(&self, _tail: u64, _tag: u32) {}
    /// A producer resumes at `tail` (attach or resync): bring what `published` keeps
    /// up to date (a lossy broadcast's newest pair).
    ///
    /// # Errors
    /// [`RingError::Corrupt`] if what it keeps is impossible.
    #[inline]
    fn resumed(&self, _tail: u64) -> Result<(), RingError> {
        Ok(())
    }
    /// A lossy consumer, having read bytes of the record at `position`: true if they
    /// may have been overwritten meanwhile.
    #[inline]
    fn overrun(&self, _position: u64) -> bool {
        false
    }
    /// True once the memory under the ring was found gone (its file truncated under a
    /// shared mapping: see `crate::region::guard`): what was read from it since is
    /// zeros, not a peer's bytes.
    #[inline]
    fn tripped(&self) -> bool {
        false
    }
    /// A lossy consumer at `head` that was overrun skips to the oldest record held:
    /// returns its new position and the messages it missed, or `None` if what the
    /// publisher stored is impossible. Never called for other stores.
    fn skip_to_oldest(&self, _head: u64) -> Option<(u64, u64)> {
        unreachable!("only a lossy broadcast's subscriber is overrun")
    }
    /// True for a lossy broadcast's publisher: it never waits for room (it reclaims
    /// the oldest records instead).
    #[inline]
    fn lossy(&self) -> bool {
        false
    }
    /// Hint that the line at `offset` will soon be read (`write = false`) or written.
    /// Streaming across cores is bound by cache-line transfers; prefetching a few
    /// lines ahead overlaps them. Default: nothing.
    #[inline]
    fn prefetch(&self, _offset: usize, _write: bool) {}
}

/// How far ahead of its position each side prefetches, in bytes.
const PREFETCH_AHEAD: u64 = 512;

/// A [`RingStore`] whose data area is plain bytes, so records can be lent as slices.
///
/// # Safety
/// `data_ptr()` points to byte 0 of the data area that `header`, `read` and `write`
/// address, valid for reads and writes of `capacity()` bytes for the life of the store
/// (the ring forms slices over it: [`Producer::payload_mut`], [`Consumer::payload`]).
pub unsafe trait ByteRingStore: RingStore {
    /// Pointer to byte 0 of the data area, valid for `capacity()` bytes.
    fn data_ptr(&self) -> *mut u8;
}

/// Bytes a record of `len` payload bytes takes in the ring (header and padding to 8).
#[inline]
pub const fn record_size(len: usize) -> usize {
    (RECORD_HEADER + len).next_multiple_of(RECORD_ALIGN)
}

/// Largest payload in bytes a ring of `capacity` bytes accepts: the record and the
/// zero-ahead slot must fit.
pub const fn max_payload(capacity: usize) -> usize {
    capacity - 2 * RECORD_HEADER
}

/// Space reserved by [`Producer::try_claim`]: write the payload, then commit or drop it.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a claim is published only by Producer::commit"]
pub struct Claim {
    position: u64,
    offset: usize,
    len: usize,
}

impl Claim {
    /// Position of the claimed record (the producer's position while it is open).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Claimed payload length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True for a zero-length claim.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Offset of the payload in the data area (8-aligned).
    pub fn payload_offset(&self) -> usize {
        self.offset + RECORD_HEADER
    }
}

/// The producing side of a ring. Exactly one may exist per ring (enforced across
/// processes by the role lock of [`crate::liveness`]).
#[derive(Debug)]
pub struct Producer<S: RingStore> {
    store: S,
    /// Our position: the header slot here is zero (zero-ahead invariant).
    tail: u64,
    /// Last consumer position we read; `tail - cached_head <= capacity`.
    cached_head: u64,
    mask: u64,
    /// Publishes in a row that found the consumer's sleeping regime with nobody asleep
    /// (see `EventCount::notify_counted`).
    fenced_idle: u32,
    /// What this producer last stored as `RingStatus::wake_at`.
    wake_at: u64,
}

impl<S: RingStore> Producer<S> {
    /// Attach as producer, resuming at the position stored in the control block.
    ///
    /// # Errors
    /// [`RingError::Corrupt`] if the stored positions are impossible.
    pub fn attach(store: S) -> Result<Self, RingError> {
        let mask = store.capacity() as u64 - 1;
        let (tail, head) = stored_producer_position(&store)?;
        Ok(Producer { store, tail, cached_head: head, mask, fenced_idle: 0, wake_at: 0 })
    }

    /// Attach without reading the positions: for a copy of a producer that other copies
    /// may be using right now (their positions move between the loads `attach` makes).
    /// [`Producer::resync`] must run before the first claim (the role lease makes every
    /// copy's first operation do so).
    pub fn unsynced(store: S) -> Self {
        let mask = store.capacity() as u64 - 1;
        Producer { store, tail: 0, cached_head: 0, mask, fenced_idle: 0, wake_at: 0 }
    }

    /// Drop the private positions and resume from the shared ones, as [`attach`]
    /// does: after another copy of this producer (in another process) may have
    /// published records (see [`crate::lease`]).
    ///
    /// # Errors
    /// [`RingError::Corrupt`] if the stored positions are impossible.
    ///
    /// [`attach`]: Producer::attach
    pub fn resync(&mut self) -> Result<(), RingError> {
        let (tail, head) = stored_producer_position(&self.store)?;
        self.tail = tail;
        self.cached_head = head;
        Ok(())
    }

    /// The storage.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Mark the current position as a cut: the message in progress (spanning several
    /// records) was abandoned here and nothing more of it will come. A consumer
    /// part-way through it that finds no record at this position ([`Consumer::at_cut`])
    /// reports it truncated; a record published here later (the next message) tells it
    /// the same. Positions only grow, so an old cut never matches a later position.
    pub fn cut(&mut self) {
        // ORDERING: Release, partner of `at_cut`'s Acquire: the records committed
        // before the cut are visible to a consumer that sees it.
        self.store.control().status.value.cut.store(self.tail + 1, Ordering::Release);
    }

    /// Before sleeping until a record of `len` payload bytes fits: ask the consumer to
    /// wake this producer only once that record and half the ring are free, so that
    /// a producer faster than its consumer wakes once per half ring, not once per
    /// record the consumer frees (a futex wake each: with several producers sharing
    /// the consumer's cores, those wakes were the consumer's main cost). `len: None`
    /// asks to be woken at every free (a doorbell waiter).
    pub fn set_wake_at(&mut self, len: Option<usize>) {
        let at = len.map_or(0, |len| {
            let cap = self.capacity();
            // A consumer that views messages in place may hold more than half the ring
            // for as long as it likes: then wake for the record alone.
            let batch = if whole_wanted(&self.store) { 0 } else { cap / 2 };
            let want = (record_size(len.min(self.max_payload())) as u64 + RECORD_HEADER as u64).max(batch);
            (self.tail + want).saturating_sub(cap)
        });
        self.wake_at = at;
        // ORDERING: Relaxed; published to the consumer by the AcqRel announcement
        // (`EventCount::prepare_wait`) that follows before this producer sleeps.
        self.store.control().status.value.wake_at.store(at, Ordering::Relaxed);
    }

    /// True once the consumer position reached what [`Producer::set_wake_at`] asked
    /// for: a waiting producer polls this before it tries to claim, so that spinning
    /// producers, too, wait for half a ring (the time the consumer then has to itself
    /// is worth more than the record each would squeeze in).
    #[inline]
    pub fn wake_due(&self) -> bool {
        // A consumer that views in place holds records as long as it likes: a mark set
        // before it asked (half the ring) must not keep this producer from a record
        // that fits.
        self.store.lossy()
            || whole_wanted(&self.store)
            || self.store.consumers_position(self.cached_head, self.tail, 0).is_ok_and(|h| h >= self.wake_at)
    }

    /// The producer position: bytes of records published since the ring was created.
    pub fn position(&self) -> u64 {
        self.tail
    }

    /// Bytes free for records now (the consumer position is re-read): what a run of
    /// records may take without waiting, less the padding a wrap may cost.
    ///
    /// # Errors
    /// [`RingError::Corrupt`] if the consumer position is impossible.
    pub fn free_bytes(&mut self) -> Result<u64, RingError> {
        if self.store.lossy() {
            // Never waits: all of it, reclaimed as claims need it.
            return Ok(self.capacity() - 2 * RECORD_HEADER as u64);
        }
        self.refresh_head(0)?;
        // The zero-ahead slot is never free.
        Ok((self.capacity() - (self.tail - self.cached_head)).saturating_sub(RECORD_HEADER as u64))
    }

    /// Largest payload in bytes that this ring accepts.
    pub fn max_payload(&self) -> usize {
        max_payload(self.store.capacity())
    }

    fn capacity(&self) -> u64 {
        self.mask + 1
    }

    /// Before claiming a record of `len` payload bytes: if the ring is empty (every
    /// record released) and the record fits before this producer's offset, pad to the
    /// end so that it starts at offset 0, in memory the previous records warmed (a
    /// record of several MiB rotating through a ring four times its size wrote cold
    /// memory every time). The record must fit before the offset: the padding counts
    /// as used until the consumer skips it, and a consumer asleep would not. Not for a
    /// lossy ring (it never waits for readers). True if it padded.
    ///
    /// # Errors
    /// [`RingError::Corrupt`] if the consumer position read is impossible.
    pub fn rewind_if_empty(&mut self, len: usize) -> Result<bool, RingError> {
        let offset = self.tail & self.mask;
        if offset == 0 || self.store.lossy() || len > self.max_payload() || (record_size(len) + RECORD_HEADER) as u64 > offset {
            return Ok(false);
        }
        let contiguous = self.capacity() - offset;
        // Empty: everything up to our position released (then the padding, and the
        // zero-ahead slot after it, fit: `offset >= 8`).
        if self.cached_head != self.tail {
            self.refresh_head(contiguous + RECORD_HEADER as u64)?;
        }
        if self.cached_head != self.tail {
            return Ok(false);
        }
        self.publish(contiguous, PADDING_TAG, contiguous as usize - RECORD_HEADER);
        Ok(true)
    }

    /// True if `n` bytes from `tail` are free, re-reading the consumer position if needed.
    #[inline]
    fn has_space(&mut self, n: u64) -> Result<bool, RingError> {
        if self.tail + n - self.cached_head <= self.capacity() {
            return Ok(true);
        }
        self.refresh_head(n)
    }

    /// Slow half of `has_space`: read the consumer's position (a line it writes).
    #[cold]
    #[inline(never)]
    fn refresh_head(&mut self, n: u64) -> Result<bool, RingError> {
        // The consumer finished reading the space before it published the new head
        // (`RingStore::store_head`, `consumers_position`).
        let head = self.store.consumers_position(self.cached_head, self.tail, n)?;
        if head < self.cached_head || head > self.tail || head % RECORD_ALIGN as u64 != 0 {
            self.store.control().status.value.poisoned.store(POISON_BAD_HEAD, Ordering::Relaxed);
            return Err(RingError::Corrupt { what: "consumer position", position: self.tail, value: head });
        }
        self.cached_head = head;
        Ok(self.tail + n - head <= self.capacity())
    }

    /// Reserve room for a record of `len` payload bytes. `Ok(None)` means "full now":
    /// retry after the consumer releases (wait on `control().space_ready`).
    ///
    /// May publish a padding record so the claimed record is contiguous.
    ///
    /// # Errors
    /// [`RingError::TooLarge`] if `len > max_payload()`; [`RingError::Corrupt`].
    #[inline(always)]
    pub fn try_claim(&mut self, len: usize) -> Result<Option<Claim>, RingError> {
        let offset = self.tail & self.mask;
        // Fast path: contiguous before the end of the data area, and the record plus
        // the zero-ahead slot fit in the free space (`len <= max_payload` first, so
        // `record_size` cannot overflow).
        if len <= self.max_payload() {
            let size = record_size(len) as u64;
            if size <= self.capacity() - offset {
                if self.has_space(size + RECORD_HEADER as u64)? {
                    return Ok(Some(Claim { position: self.tail, offset: offset as usize, len }));
                }
                return Ok(None);
            }
        }
        self.try_claim_slow(len)
    }

    /// The fast path of [`Producer::try_claim`] alone: a contiguous claim if the record
    /// fits before the end of the data area and in the free space; `None` for "full, or
    /// ask `try_claim`" (wrapping, too large, a corrupt consumer position). The claim
    /// never passes through memory (see [`Consumer::try_peek_fast`]).
    #[inline(always)]
    pub fn try_claim_fast(&mut self, len: usize) -> Option<Claim> {
        let offset = self.tail & self.mask;
        if len > self.max_payload() {
            return None;
        }
        let size = record_size(len) as u64;
        let n = size + RECORD_HEADER as u64;
        if size <= self.capacity() - offset
            && (self.tail + n - self.cached_head <= self.capacity() || matches!(self.refresh_head(n), Ok(true)))
        {
            return Some(Claim { position: self.tail, offset: offset as usize, len });
        }
        None
    }

    /// Slow half of `try_claim`: too large, or wrapping (padding record).
    #[cold]
    #[inline(never)]
    fn try_claim_slow(&mut self, len: usize) -> Result<Option<Claim>, RingError> {
        if len > self.max_payload() {
            return Err(RingError::TooLarge { len, max: self.max_payload() });
        }
        let size = record_size(len) as u64;
        let mut offset = self.tail & self.mask;
        let contiguous = self.capacity() - offset;
        if size > contiguous {
            // Pad to the end of the data area, then claim at offset 0.
            if !self.has_space(contiguous + RECORD_HEADER as u64)? {
                return Ok(None);
            }
            self.publish(contiguous, PADDING_TAG, contiguous as usize - RECORD_HEADER);
            offset = 0;
        }
        if !self.has_space(size + RECORD_HEADER as u64)? {
            return Ok(None);
        }
        Ok(Some(Claim { position: self.tail, offset: offset as usize, len }))
    }

    /// Copy `src` into the claim's payload at byte `at`.
    ///
    /// # Panics
    /// If `at + src.len() > claim.len()`.
    #[inline]
    pub fn write(&mut self, claim: &Claim, at: usize, src: &[u8]) {
        assert!(at.checked_add(src.len()).is_some_and(|end| end <= claim.len), "write past the claim");
        // SAFETY: the claim lies in free space owned by the producer (has_space), inside
        // the data area (try_claim keeps records contiguous), and `&mut self` excludes
        // other writers in this process.
        unsafe { self.store.write(claim.payload_offset() + at, src) };
    }

    /// Publish the claim with its first `len` payload bytes and `tag`, and wake the
    /// consumer if it sleeps.
    ///
    /// # Panics
    /// If `len > claim.len()`, if `tag > MAX_TAG`, or if `claim` is not this producer's
    /// latest claim.
    #[inline]
    pub fn commit(&mut self, claim: Claim, len: usize, tag: u32) {
        assert!(len <= claim.len && tag <= MAX_TAG, "commit beyond the claim or reserved tag");
        assert_eq!(claim.position, self.tail, "stale claim");
        self.publish(record_size(len) as u64, tag, len);
    }

    /// [`Producer::commit`] with a spacer after the record (see the module
    /// documentation), written before the record's header is published, if the record
    /// has at least [`SPACED_MIN`] bytes and 8 more bytes are free now (else as
    /// `commit`). Not on a lossy ring.
    ///
    /// # Panics
    /// As [`Producer::commit`].
    pub fn commit_spaced(&mut self, claim: Claim, len: usize, tag: u32) {
        assert!(len <= claim.len && tag <= MAX_TAG, "commit beyond the claim or reserved tag");
        assert_eq!(claim.position, self.tail, "stale claim");
        let size = record_size(len) as u64;
        // The record, the spacer and the zero-ahead slot after it (only the consumer's
        // releases change the answer, and only to more room).
        if len < SPACED_MIN || self.store.lossy() || !matches!(self.has_space(size + 2 * RECORD_HEADER as u64), Ok(true)) {
            self.publish(size, tag, len);
            return;
        }
        let at = ((self.tail + size) & self.mask) as usize;
        // ORDERING: Relaxed; made visible, with the zero-ahead slot after it (stored in
        // `publish`), by the Release store of the record's header: a consumer that
        // sees the record sees its spacer.
        self.store.header(at).store(SPACER, Ordering::Relaxed);
        self.publish_spaced(size, tag, len, RECORD_HEADER as u64);
    }

    #[inline]
    fn publish(&mut self, size: u64, tag: u32, len: usize) {
        self.publish_spaced(size, tag, len, 0);
    }

    /// Publish a record of `size` bytes whose header goes at the producer's position,
    /// followed by `spacer` bytes already written (0, or a spacer's 8).
    #[inline]
    fn publish_spaced(&mut self, size: u64, tag: u32, len: usize, spacer: u64) {
        let ctl = self.store.control();
        let offset = (self.tail & self.mask) as usize;
        let next = self.tail + size + spacer;
        // Zero-ahead: the next header slot must read zero until the next commit.
        // ORDERING: Relaxed; made visible by the Release store of this record's header.
        self.store.header((next & self.mask) as usize).store(0, Ordering::Relaxed);
        let word = COMMITTED | (u64::from(tag) << 32) | len as u64;
        // ORDERING: Release, partner of the consumer's Acquire load in `try_peek`:
        // payload and zero-ahead stores happen-before the consumer reads them.
        self.store.header(offset).store(word, Ordering::Release);
        self.tail = next;
        self.store.prefetch(((next + PREFETCH_AHEAD) & self.mask) as usize, true);
        // ORDERING: Release, partner of `attach`'s Acquire (a restarted producer).
        ctl.tail.value.store(next, Ordering::Release);
        self.store.published(next, tag);
        self.store.notify_data(&mut self.fenced_idle);
    }
}

/// [`RingError::Corrupt`]'s `what` when the memory under the ring vanished (see
/// [`RingStore::tripped`]).
pub const TRUNCATED: &str = "the segment file was truncated under the ring";

/// The largest position a valid ring can hold: 2^62 bytes (146 years at 1 TB/s). A
/// stored position beyond it is corrupt; the bound keeps `position + record size`
/// from overflowing (found by `fuzz/fuzz_targets/ring.rs`).
pub const MAX_POSITION: u64 = 1 << 62;

/// The producer position and consumer position stored in the control block, checked.
/// A producer that died between publishing a header and storing `tail` left one
/// committed record at `tail`: step over it so it is not overwritten. The consumer may
/// already have consumed it (the header store is the publish), so `head` may be past
/// the stored `tail`: compare only after stepping over.
fn stored_producer_position<S: RingStore>(store: &S) -> Result<(u64, u64), RingError> {
    let cap = store.capacity() as u64;
    let ctl = store.control();
    // ORDERING: Acquire, partners of the previous owners' Release stores.
    let mut tail = ctl.tail.value.load(Ordering::Acquire);
    let head = store.consumers_position(0, tail.min(MAX_POSITION), 0)?;
    if tail % RECORD_ALIGN as u64 != 0 || head % RECORD_ALIGN as u64 != 0 || tail > MAX_POSITION || head > MAX_POSITION {
        return Err(RingError::Corrupt { what: "stored producer position", position: tail, value: head });
    }
    // ORDERING: Acquire, partner of `publish`'s Release header store.
    let word = store.header((tail & (cap - 1)) as usize).load(Ordering::Acquire);
    if word != 0 {
        let len = (word & 0xFFFF_FFFF) as usize;
        let size = record_size(len) as u64;
        if word & COMMITTED == 0 || size > cap - (tail & (cap - 1)) {
            return Err(RingError::Corrupt { what: "record at producer position", position: tail, value: word });
        }
        tail += size;
        // Its spacer (`commit_spaced`) too: the producer's position must read zero.
        // ORDERING: Acquire, as above.
        if word & (u64::from(PADDING_TAG) << 32) != u64::from(PADDING_TAG) << 32
            && store.header((tail & (cap - 1)) as usize).load(Ordering::Acquire) == SPACER
        {
            tail += RECORD_HEADER as u64;
        }
    }
    // A broadcast's slowest subscriber is at most the position read before stepping.
    if head > tail || tail - head > cap {
        return Err(RingError::Corrupt { what: "stored producer position", position: tail, value: head });
    }
    store.resumed(tail)?;
    Ok((tail, head))
}

/// The reason code a side stored when it found the ring corrupt (0: not poisoned).
pub fn poisoned<S: RingStore>(store: &S) -> u32 {
    // ORDERING: Relaxed: a flag checked once per wait slice; what it reports is the
    // storer's own finding, not data it publishes.
    store.control().status.value.poisoned.load(Ordering::Relaxed)
}

/// True if a record (or a padding record) is published at the consumer position stored
/// in the control block: a read-only look that needs no role (a copy waiting for the
/// lease, `poll`).
///
/// It looks from the resume position when a consumer that holds records published
/// one ahead (`ConsumerLine::resume`): the records before it were delivered (to a copy
/// that holds them, or that died holding them), so they are no reason to wake up.
///
/// A stored position that no consumer could have written (not 8-aligned, past
/// [`MAX_POSITION`]: another process's bytes) reads as ready: a receive then reports
/// the corruption (`stored_consumer_position`), where looking at the record it names
/// would have read a header off its alignment.
pub fn data_ready<S: RingStore>(store: &S) -> bool {
    // ORDERING: Acquire, partner of the consumer's Release in `store_head`.
    let head = store.head_word().load(Ordering::Acquire);
    if head % RECORD_ALIGN as u64 != 0 || head > MAX_POSITION {
        return true;
    }
    let at = resume_ahead(store, head).unwrap_or(head);
    if at % RECORD_ALIGN as u64 != 0 {
        // No real consumer leaves this (positions advance by whole records): a corrupt
        // position, which the consumer reports when it looks, so look (found by
        // `fuzz/fuzz_targets/mailbox.rs`: a producer joining a lane panicked here).
        return true;
    }
    // ORDERING: Acquire, partner of `publish`'s Release header store. (A lossy
    // broadcast's subscriber that was lapped has a lag to report.)
    store.header((at & (store.capacity() as u64 - 1)) as usize).load(Ordering::Acquire) != 0 || store.overrun(head)
}

/// The resume position a consumer that holds (or held) records published, if it is a
/// plausible one ahead of `head`: 8-aligned, at most the capacity ahead, at most
/// [`MAX_POSITION`], on a ring whose consumer holds records (not a lossy subscriber).
fn resume_ahead<S: RingStore>(store: &S, head: u64) -> Option<u64> {
    // ORDERING: Acquire, partner of the holder's Release in `publish_resume`: the
    // records it moved past were read before.
    let resume = store.resume_word().load(Ordering::Acquire);
    let plausible = resume > head
        && resume % RECORD_ALIGN as u64 == 0
        && resume - head <= store.capacity() as u64
        && resume <= MAX_POSITION;
    (plausible && store.holds_records()).then_some(resume)
}

/// Ask the producer to send every message that fits one record as one record (the
/// consumer views messages in place: see `RingStatus::whole`).
pub fn want_whole<S: RingStore>(store: &S) {
    // ORDERING: Relaxed: a hint, set once and never cleared; partner of the Relaxed
    // load in `whole_wanted` (a message sent before it shows is merely chunked).
    store.control().status.value.whole.store(1, Ordering::Relaxed);
}

/// True once the consumer asked for whole records ([`want_whole`]).
pub fn whole_wanted<S: RingStore>(store: &S) -> bool {
    // ORDERING: Relaxed, partner of `want_whole`'s Relaxed store (a hint).
    store.control().status.value.whole.load(Ordering::Relaxed) != 0
}

/// True if `len` payload bytes might fit after the producer position stored in the
/// control block (ignoring padding at the wrap): a read-only look for a copy waiting
/// for the lease. May say yes when a claim would still wait.
pub fn space_ready<S: RingStore>(store: &S, len: usize) -> bool {
    if store.lossy() {
        return true;
    }
    let ctl = store.control();
    // ORDERING: Acquire, partner of the Release store of `publish`; then the
    // consumers' Release stores (`store_head`).
    let tail = ctl.tail.value.load(Ordering::Acquire);
    let Ok(head) = store.consumers_position(0, tail, 0) else { return false };
    let need = record_size(len.min(max_payload(store.capacity()))) as u64 + RECORD_HEADER as u64;
    // A consumer position seen past the producer's (a race between the two loads)
    // means no room now.
    tail.checked_sub(head).is_some_and(|used| used.saturating_add(need) <= store.capacity() as u64)
}

/// A record the consumer is looking at: valid until [`Consumer::release`].
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a record stays in the ring until Consumer::release"]
pub struct Record {
    position: u64,
    offset: usize,
    len: usize,
    tag: u32,
}

impl Record {
    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The producer's tag.
    pub fn tag(&self) -> u32 {
        self.tag
    }
    /// Offset of the payload in the data area (8-aligned).
    pub fn payload_offset(&self) -> usize {
        self.offset + RECORD_HEADER
    }
}

fn stored_consumer_position<S: RingStore>(store: &S) -> Result<u64, RingError> {
    // ORDERING: Acquire, partner of the previous consumer's Release in `store_head`.
    let head = store.head_word().load(Ordering::Acquire);
    if head % RECORD_ALIGN as u64 != 0 || head > MAX_POSITION {
        return Err(RingError::Corrupt { what: "stored consumer position", position: head, value: head });
    }
    Ok(head)
}

/// Where a consumer starts that attaches or takes over from another copy: the shared
/// position, or the resume position a copy that held records published ahead of it
/// (`ConsumerLine::resume`). That copy is gone (a holding copy keeps its role lease
/// until its holds are released), and it had delivered everything up to there: those
/// records are skipped, not delivered twice, and their space is given back now. A
/// resume position that is not 8-aligned or more than the capacity ahead (another
/// process's bytes) is ignored.
///
/// # Errors
/// [`RingError::Corrupt`] if the stored position is misaligned.
fn adopted_consumer_position<S: RingStore>(store: &S) -> Result<u64, RingError> {
    let head = stored_consumer_position(store)?;
    // (Not checked against `tail`: the producer stores it after a record's header, so
    // it may still lag a record the holder received. A hostile value inside the bound
    // is no worse than a hostile `head`: the headers met there are validated.)
    let Some(resume) = resume_ahead(store, head) else { return Ok(head) };
    // A continuation's tag: a lossy subscriber counts no message start for it (holds,
    // and so resume positions, exist only on lossless rings).
    store.store_head(resume, CONTINUATION_TAG);
    store.control().space_ready.value.notify(store.park());
    Ok(resume)
}

/// The consuming side of a ring. Exactly one may exist per ring.
#[derive(Debug)]
pub struct Consumer<S: RingStore> {
    store: S,
    head: u64,
    mask: u64,
    /// A lossy broadcast's lag found while skipping a record unread (or an impossible
    /// oldest position), reported by the next peek.
    pending: Option<RingError>,
    /// Set by the caller while it is part-way through a message of several records:
    /// a lap that skipped no message start then still lost the rest of this one.
    mid_message: bool,
    /// Laps followed in a row without a record (bounds a hostile oldest position).
    laps: u8,
    /// Releases in a row that found the producer's sleeping regime with nobody asleep.
    fenced_idle: u32,
    /// Records passed since the oldest unreleased hold, in ring order (empty unless
    /// this consumer holds records: see [`Consumer::hold`]).
    held: VecDeque<Span>,
    /// Entries of `held` not yet released.
    holding: usize,
}

/// A range of the ring the consumer passed while holding records: released (in order
/// or out of order) once every record before it is.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u64,
    end: u64,
    tag: u32,
    released: bool,
}

/// A record the consumer moved past without releasing it (a zero-copy view that
/// outlives the receive): its bytes stay untouched by the producer until
/// [`Consumer::release_hold`]. Records are released in any order; the shared position
/// advances over every record before the oldest one still held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a held record stays in the ring until Consumer::release_hold"]
pub struct Hold {
    position: u64,
    end: u64,
}

impl Hold {
    /// Position of the record in the ring (total bytes before it).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Bytes of ring the record takes (header and padding included).
    pub fn size(&self) -> u64 {
        self.end - self.position
    }
}

impl<S: RingStore> Consumer<S> {
    /// Attach as consumer, resuming at the position stored in the control block.
    ///
    /// # Errors
    /// [`RingError::Corrupt`] if the stored position is misaligned.
    pub fn attach(store: S) -> Result<Self, RingError> {
        let mask = store.capacity() as u64 - 1;
        let head = adopted_consumer_position(&store)?;
        Ok(Consumer { store, head, mask, pending: None, mid_message: false, laps: 0, fenced_idle: 0, held: VecDeque::new(), holding: 0 })
    }

    /// Attach without reading the position (see [`Producer::unsynced`]);
    /// [`Consumer::resync`] must run before the first peek.
    pub fn unsynced(store: S) -> Self {
        let mask = store.capacity() as u64 - 1;
        Consumer { store, head: 0, mask, pending: None, mid_message: false, laps: 0, fenced_idle: 0, held: VecDeque::new(), holding: 0 }
    }

    /// Drop the private position and resume from the shared one: after another copy of
    /// this consumer (in another process) may have received records.
    ///
    /// # Errors
    /// [`RingError::Corrupt`] if the stored position is misaligned.
    pub fn resync(&mut self) -> Result<(), RingError> {
        // Holds name positions of the copy that last operated; the shared position (or
        // the resume position a copy that died holding published ahead of it) is the
        // truth now (a holding copy keeps its role lease, so another copy resyncs only
        // after every hold was released or its holder died, or in a fork child:
        // `forget_holds`).
        self.forget_holds();
        self.head = adopted_consumer_position(&self.store)?;
        Ok(())
    }

    /// Move past `record` without releasing it: its bytes stay valid (the producer does
    /// not reuse them) until [`Consumer::release_hold`], while this consumer goes on
    /// to the next records. Records released meanwhile in order are given back only
    /// once the holds before them are. Not for a lossy broadcast (its publisher does
    /// not wait for subscribers).
    ///
    /// # Panics
    /// If `record` is not the record at the head.
    pub fn hold(&mut self, record: Record) -> Hold {
        assert_eq!(record.position, self.head, "hold out of order");
        let mut end = self.head + record_size(record.len) as u64;
        if record_size(record.len) > SPACED_MIN && self.at_spacer(end) {
            end += RECORD_HEADER as u64; // stepped over with the record
        }
        self.held.push_back(Span { start: self.head, end, tag: record.tag, released: false });
        self.holding += 1;
        self.head = end;
        self.publish_resume();
        Hold { position: record.position, end }
    }

    /// Release a held record (in any order), giving the producer the space of every
    /// record before the oldest hold still held, and waking it if it sleeps. False if
    /// `hold` is unknown (already released, or forgotten by a resync or
    /// [`Consumer::forget_holds`]).
    pub fn release_hold(&mut self, hold: Hold) -> bool {
        let Ok(i) = self.held.binary_search_by_key(&hold.position, |s| s.start) else { return false };
        let span = &mut self.held[i];
        if span.released || span.end != hold.end {
            return false;
        }
        span.released = true;
        self.holding -= 1;
        let mut last = None;
        while let Some(&s) = self.held.front().filter(|s| s.released) {
            last = Some(s);
            self.held.pop_front();
        }
        if let Some(s) = last {
            self.give_back(s.end, s.tag);
        }
        true
    }

    /// Ask the producer for whole records ([`want_whole`]); from then on every
    /// give-back wakes a sleeping producer (its half-ring mark may lie behind held
    /// records).
    pub fn want_whole(&mut self) {
        want_whole(&self.store);
    }

    /// Bytes of ring this consumer keeps from the producer because of its holds: from
    /// the oldest record still held to its own position (records received behind a
    /// hold included). 0 without holds.
    pub fn pinned(&self) -> u64 {
        self.held.front().map_or(0, |s| self.head - s.start)
    }

    /// Records held and not released yet.
    pub fn holds(&self) -> usize {
        self.holding
    }

    /// Release every hold at once (the views they back are gone: a process exiting
    /// with views alive), giving the producer everything up to this consumer's position.
    pub fn release_all_holds(&mut self) {
        if let Some(&last) = self.held.back() {
            self.held.clear();
            self.holding = 0;
            self.give_back(last.end, last.tag);
        }
    }

    /// Drop every hold without releasing anything (a fork child's inherited copy of
    /// a holding consumer: the holds belong to the parent).
    pub fn forget_holds(&mut self) {
        self.held.clear();
        self.holding = 0;
    }

    /// True if a record (or padding, or a lossy broadcast's lag) is at this consumer's
    /// own position: [`data_ready`] for the consumer itself, whose position runs ahead
    /// of the shared one while it holds records.
    pub fn has_data(&self) -> bool {
        self.ready() || self.store.overrun(self.head)
    }

    /// The storage.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// True if the producer cut the stream at this consumer's position (see
    /// [`Producer::cut`]): one load of a line that is written rarely.
    #[inline]
    pub fn at_cut(&self) -> bool {
        // ORDERING: Acquire, partner of `cut`'s Release.
        self.store.control().status.value.cut.load(Ordering::Acquire) == self.head + 1
    }

    /// The next record, if one is published. Skips padding records.
    ///
    /// # Errors
    /// [`RingError::Corrupt`] (and the ring is poisoned) on a malformed header.
    #[inline(always)]
    pub fn try_peek(&mut self) -> Result<Option<Record>, RingError> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        let offset = (self.head & self.mask) as usize;
        // ORDERING: Acquire, partner of the producer's Release header store in
        // `publish`: the payload and the next zero-ahead slot are visible after it.
        let word = self.store.header(offset).load(Ordering::Acquire);
        if word == 0 {
            return self.nothing_at_head();
        }
        let len = (word & 0xFFFF_FFFF) as usize;
        let size = record_size(len);
        // Fast path: a committed user record that fits before the end of the data area.
        if word & COMMITTED != 0 && size <= self.store.capacity() - offset && (word >> 32) as u32 & PADDING_TAG != PADDING_TAG {
            self.store.prefetch(((self.head + size as u64 + PREFETCH_AHEAD) & self.mask) as usize, false);
            let tag = ((word >> 32) as u32) & PADDING_TAG;
            return Ok(Some(Record { position: self.head, offset, len, tag }));
        }
        self.try_peek_slow()
    }

    /// True if a record (or padding) is published at this consumer's position: one
    /// load, for a caller spinning before it retries [`Consumer::try_peek_fast`].
    #[inline]
    pub fn ready(&self) -> bool {
        // ORDERING: Acquire, as in `try_peek`.
        self.store.header((self.head & self.mask) as usize).load(Ordering::Acquire) != 0
    }

    /// True if a spacer is published at `position` (a consumer that holds records, so
    /// not a lossy subscriber, whose positions may lie in an overwritten lap).
    #[inline]
    fn at_spacer(&self, position: u64) -> bool {
        // ORDERING: Acquire, partner of `publish`'s Release store of the header of the
        // record before it (`commit_spaced` wrote the spacer first).
        self.store.holds_records() && self.store.header((position & self.mask) as usize).load(Ordering::Acquire) == SPACER
    }

    /// The fast path of [`Consumer::try_peek`] alone: the next record if it is a
    /// committed user record before the end of the data area; `None` for "empty, or
    /// ask `try_peek`" (padding, a malformed header). Returns nothing through memory, so
    /// the record stays in registers (merging it with `try_peek_slow`'s result put it on
    /// the stack, and re-reading it there cost store-forwarding stalls).
    #[inline(always)]
    pub fn try_peek_fast(&mut self) -> Option<Record> {
        if self.pending.is_some() {
            return None;
        }
        let offset = (self.head & self.mask) as usize;
        // ORDERING: Acquire, as in `try_peek`.
        let word = self.store.header(offset).load(Ordering::Acquire);
        let len = (word & 0xFFFF_FFFF) as usize;
        let size = record_size(len);
        let tag = ((word >> 32) as u32) & PADDING_TAG;
        if word & COMMITTED != 0 && size <= self.store.capacity() - offset && tag != PADDING_TAG {
            self.store.prefetch(((self.head + size as u64 + PREFETCH_AHEAD) & self.mask) as usize, false);
            return Some(Record { position: self.head, offset, len, tag });
        }
        None
    }

    /// Slow half of `try_peek`: a padding record, or a malformed header.
    #[cold]
    #[inline(never)]
    fn try_peek_slow(&mut self) -> Result<Option<Record>, RingError> {
        let mut after_padding = false;
        loop {
            let offset = (self.head & self.mask) as usize;
            // ORDERING: Acquire, as in `try_peek`.
            let word = self.store.header(offset).load(Ordering::Acquire);
            if word == 0 {
                return self.nothing_at_head();
            }
            let len = (word & 0xFFFF_FFFF) as usize;
            let tag = ((word >> 32) & u64::from(PADDING_TAG)) as u32;
            let size = record_size(len);
            // A padding record fills the rest of the data area from a non-zero offset
            // (the producer pads only where a record would not fit before the end), or
            // is a spacer, which never follows a padding record unless it is the end's
            // (8 bytes): so at most two are skipped per call (a spacer, then the end's). Padding records laid around
            // the ring by a broken peer would otherwise keep this loop going forever
            // (found by `fuzz/fuzz_targets/ring.rs`).
            let to_end = offset != 0 && size == self.store.capacity() - offset;
            let bad_padding = tag == PADDING_TAG && if word == SPACER { after_padding && !to_end } else { !to_end };
            if word & COMMITTED == 0 || size > self.store.capacity() - offset || bad_padding {
                if self.store.overrun(self.head) {
                    // A lossy publisher lapped us: these are bytes of a later record.
                    return self.lapped();
                }
                self.store.control().status.value.poisoned.store(POISON_BAD_RECORD, Ordering::Relaxed);
                return Err(RingError::Corrupt { what: "record header", position: self.head, value: word });
            }
            if tag == PADDING_TAG {
                if self.store.overrun(self.head) {
                    // Lapped: the "padding" may be bytes of a later record.
                    return self.lapped();
                }
                self.advance(size, PADDING_TAG);
                after_padding = true;
                continue;
            }
            self.store.prefetch(((self.head + size as u64 + PREFETCH_AHEAD) & self.mask) as usize, false);
            return Ok(Some(Record { position: self.head, offset, len, tag }));
        }
    }

    /// Copy `dst.len()` payload bytes starting at byte `at` of `record` into `dst`.
    ///
    /// # Panics
    /// If the range exceeds the record.
    #[inline]
    pub fn read(&self, record: &Record, at: usize, dst: &mut [u8]) {
        self.read_to(record, at, &mut dst.into());
    }

    /// [`Consumer::read`] into a write-only destination (possibly uninitialised memory).
    ///
    /// # Panics
    /// If the range exceeds the record.
    #[inline]
    pub fn read_to(&self, record: &Record, at: usize, dst: &mut OutBuf<'_>) {
        let len = dst.len();
        assert!(at.checked_add(len).is_some_and(|end| end <= record.len), "read past the record");
        // SAFETY: `record` was validated by try_peek to lie inside the data area, and the
        // producer does not reuse it before `release` moves the head past it; `dst` is
        // valid for `len` writes (OutBuf's contract) and is the caller's memory, not the
        // ring's.
        unsafe { self.store.read(record.payload_offset() + at, dst.as_mut_ptr(), len) };
    }

    /// Give the record's space back to the producer and wake it if it sleeps.
    ///
    /// # Panics
    /// If `record` is not the record at the head.
    #[inline]
    pub fn release(&mut self, record: Record) {
        assert_eq!(record.position, self.head, "release out of order");
        if self.store.overrun(record.position) {
            // A lossy broadcast's record skipped unread (a continuation, an orphan, a
            // message dropped unread) whose header we can no longer trust: skip to the
            // oldest record instead, and report the lag at the next peek.
            match self.lag() {
                RingError::Lagged { missed: 0 } => {}
                e => self.pending = Some(e),
            }
            return;
        }
        self.advance(record_size(record.len), record.tag);
    }

    /// After reading bytes of `record` out: [`RingError::Lagged`] if a lossy
    /// publisher may have overwritten them meanwhile (the copy must be discarded; this
    /// consumer then continues from the oldest record held, and `record` is void).
    /// Always `Ok` for other rings.
    ///
    /// # Errors
    /// [`RingError::Lagged`].
    #[inline]
    pub fn check_read(&mut self, record: &Record) -> Result<(), RingError> {
        if self.store.overrun(record.position) {
            return Err(self.lag());
        }
        if self.store.tripped() {
            return Err(RingError::Corrupt { what: TRUNCATED, position: record.position, value: 0 });
        }
        Ok(())
    }

    /// [`Consumer::check_read`], then [`Consumer::release`] if the bytes were intact.
    ///
    /// # Errors
    /// [`RingError::Lagged`] (the record is not released: this consumer moved on).
    #[inline]
    pub fn release_read(&mut self, record: Record) -> Result<(), RingError> {
        assert_eq!(record.position, self.head, "release out of order");
        self.check_read(&record)?;
        // Checked intact: released without a second look (which could count a record
        // already delivered as missed).
        self.advance(record_size(record.len), record.tag);
        Ok(())
    }

    /// Nothing published at the head: empty, or (lossy broadcast) lapped onto the
    /// zero-ahead slot of a later lap.
    #[inline]
    fn nothing_at_head(&mut self) -> Result<Option<Record>, RingError> {
        if self.store.overrun(self.head) {
            return self.lapped();
        }
        Ok(None)
    }

    /// Lapped at the head (a lossy broadcast): skip to the oldest record held. If no
    /// message began in between (the publisher reclaimed only the padding at our
    /// position), nothing was lost: look there instead of reporting a lag.
    #[cold]
    #[inline(never)]
    fn lapped(&mut self) -> Result<Option<Record>, RingError> {
        match self.lag() {
            // Only padding (or the continuations of a message this consumer is not
            // reading) was passed: nothing lost, look at the oldest record. Part-way
            // through a message, its rest was lost: the caller reports that.
            RingError::Lagged { missed: 0 } if !self.mid_message && self.laps < 8 => {
                self.laps += 1;
                let r = self.try_peek_slow();
                self.laps = 0;
                r
            }
            RingError::Lagged { missed: 0 } if !self.mid_message => {
                Err(RingError::Corrupt { what: "oldest record of a lossy broadcast (moving under us)", position: self.head, value: 0 })
            }
            e => Err(e),
        }
    }

    /// Report `e` (a lossy broadcast's lag that a look without receiving found) at the
    /// next peek instead.
    pub fn defer(&mut self, e: RingError) {
        self.pending = Some(e);
    }

    /// Tell the consumer it is part-way through a message of several records (`true`)
    /// or between messages: a lossy broadcast's lap that passes no message start is
    /// then reported (`Lagged { missed: 0 }`: the caller counts the message it was
    /// reading), not followed silently.
    #[inline]
    pub fn set_mid_message(&mut self, on: bool) {
        self.mid_message = on;
    }

    #[cold]
    #[inline(never)]
    fn lag(&mut self) -> RingError {
        match self.store.skip_to_oldest(self.head) {
            Some((head, missed)) => {
                self.head = head;
                RingError::Lagged { missed }
            }
            None => RingError::Corrupt { what: "oldest record of a lossy broadcast", position: self.head, value: 0 },
        }
    }

    #[inline]
    fn advance(&mut self, size: usize, tag: u32) {
        let start = self.head;
        self.head += size as u64;
        if tag != PADDING_TAG && size > SPACED_MIN && self.at_spacer(self.head) {
            // A spacer after the record goes with it (see the module documentation).
            self.head += RECORD_HEADER as u64;
        }
        if !self.held.is_empty() {
            self.pass_held(start, tag);
            return;
        }
        self.give_back(self.head, tag);
    }

    /// A record released in order behind a hold: given back with it.
    #[cold]
    #[inline(never)]
    fn pass_held(&mut self, start: u64, tag: u32) {
        match self.held.back_mut() {
            Some(last) if last.released && last.end == start => last.end = self.head,
            _ => self.held.push_back(Span { start, end: self.head, tag, released: true }),
        }
        self.publish_resume();
    }

    /// While holding records: publish this consumer's own position as the resume
    /// position of a copy that takes over if this one dies (see
    /// `adopted_consumer_position`). One store to the consumer's own line.
    #[inline]
    fn publish_resume(&self) {
        // ORDERING: Release, partner of the Acquire in `adopted_consumer_position`:
        // our reads of the records we moved past happen-before a successor skips them.
        self.store.resume_word().store(self.head, Ordering::Release);
    }

    /// Store `head` as the shared position and wake the producer if it waits for it.
    #[inline]
    fn give_back(&mut self, head: u64, tag: u32) {
        let ctl = self.store.control();
        // Our reads of the records below `head` happen-before the producer overwrites
        // them (the Release store of `store_head`).
        self.store.store_head(head, tag);
        // A producer asleep for room asked to be woken once `wake_at` is reached (at
        // every give-back once the consumer views in place: a mark set before it asked
        // may lie behind records it holds for as long as it likes).
        let store = &self.store;
        ctl.space_ready.value.notify_counted_when(store.park(), &mut self.fenced_idle, || {
            // ORDERING: Relaxed, after `notify_seen_when`'s Acquire fence (partner of
            // the producer's announcement, which follows its store of `wake_at`).
            head >= ctl.status.value.wake_at.load(Ordering::Relaxed) || whole_wanted(store)
        });
    }
}

impl<S: ByteRingStore> Producer<S> {
    /// The claim's payload as a writable slice (zero-copy send).
    #[inline]
    pub fn payload_mut(&mut self, claim: &Claim) -> &mut [u8] {
        // SAFETY: the claim lies inside the data area (try_claim keeps records
        // contiguous; ByteRingStore's contract) in space owned by the producer until
        // commit: the consumer reads only published records, and every other copy of
        // the producer is kept out by the role lease (`crate::lease`) while the claim
        // is open. `&mut self` makes the slice unique in this process. Only a process
        // that breaks the protocol (the segment is mode 0600: the same user's) could
        // write these bytes meanwhile.
        unsafe { std::slice::from_raw_parts_mut(self.store.data_ptr().add(claim.payload_offset()), claim.len) }
    }
}

impl<S: ByteRingStore> Consumer<S> {
    /// Address of the record's payload: for a view that outlives the borrow of the
    /// consumer ([`Consumer::hold`] keeps the bytes; the caller keeps the mapping).
    #[inline]
    pub fn payload_addr(&self, record: &Record) -> *const u8 {
        self.store.data_ptr().wrapping_add(record.payload_offset()).cast_const()
    }

    /// The record's payload as a slice (zero-copy receive).
    #[inline]
    pub fn payload(&self, record: &Record) -> &[u8] {
        // SAFETY: validated by try_peek to lie inside the data area (ByteRingStore's
        // contract). A reference over shared memory is sound while nothing writes the
        // bytes: a producer never claims space past the consumer's position, so it does
        // not reuse a record before `release` (which needs `&mut self`, ending this
        // borrow), and other consumer copies are kept out by the role lease. A process
        // that writes a published record anyway breaks the protocol (the segment is
        // mode 0600: the same user's), as with any shared-memory API; decoders of
        // untrusted bytes copy them out with `read` and validate them instead.
        unsafe { std::slice::from_raw_parts(self.store.data_ptr().add(record.payload_offset()), record.len) }
    }
}

impl<S: RingStore> Producer<S> {
    /// Give back the storage (to close it).
    pub fn into_store(self) -> S {
        self.store
    }
}

impl<S: RingStore> Consumer<S> {
    /// Give back the storage (to close it).
    pub fn into_store(self) -> S {
        self.store
    }
}
