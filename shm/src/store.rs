//! [`RingStore`] over a [`Segment`]: the production (and heap-test) ring storage.

use crate::header::SegmentKind;
use crate::layout::{role_offset, RingControl, RoleEntry, CHANNEL_ROLES, DATA_ALIGN};
use crate::ring::{ByteRingStore, RingStore};
use crate::segment::Segment;
use crate::sync::AtomicU64;
use crate::bell::Ringer;
use crate::sync::AtomicU32;
use crate::wait::{Park, SharedFutex};

/// A channel segment seen as ring storage.
#[derive(Debug)]
pub struct SegmentRing {
    segment: Segment,
    capacity: usize,
    control: usize,
    data: usize,
    park: RingPark,
}

/// The shared futex, plus this handle's write end of the peer's doorbell (if the
/// channel has doorbells; see [`crate::bell`]).
#[derive(Debug, Default)]
pub struct RingPark {
    ringer: Option<Ringer>,
}

impl Park for RingPark {
    #[inline]
    fn park(&self, word: &AtomicU32, expected: u32, timeout: Option<std::time::Duration>) {
        SharedFutex.park(word, expected, timeout);
    }

    #[inline]
    fn unpark_all(&self, word: &AtomicU32) {
        SharedFutex.unpark_all(word);
    }

    fn ring(&self) {
        if let Some(r) = &self.ringer {
            r.ring();
        }
    }
}

impl SegmentRing {
    /// Wrap a channel segment (header already validated).
    ///
    /// # Panics
    /// If the segment is not a validated channel segment.
    pub fn new(segment: Segment) -> SegmentRing {
        let info = segment.info();
        assert_eq!(info.kind, SegmentKind::Channel);
        let capacity = info.param0 as usize;
        assert_eq!(info.role_count, CHANNEL_ROLES, "a channel segment has {CHANNEL_ROLES} roles");
        let control = segment.control_offset();
        let data = (control + size_of::<RingControl>()).next_multiple_of(DATA_ALIGN);
        assert!(capacity.is_power_of_two() && data + capacity <= segment.region().len());
        SegmentRing { segment, capacity, control, data, park: RingPark::default() }
    }

    /// The descriptor of this handle's write end of the peer's doorbell, if any.
    pub fn ringer_fd(&self) -> Option<std::os::fd::RawFd> {
        self.park.ringer.as_ref().map(Ringer::fd)
    }

    /// Ring `ringer` (the peer's doorbell) when a waiter armed it.
    pub fn set_ringer(&mut self, ringer: Option<Ringer>) {
        self.park.ringer = ringer;
    }

    /// The segment.
    pub fn segment(&self) -> &Segment {
        &self.segment
    }

    /// Role `R`'s entry (0 producer, 1 consumer), without a run-time bounds check: the
    /// hot path of every operation (see [`crate::lease`]).
    #[inline(always)]
    pub fn role<const R: usize>(&self) -> &RoleEntry {
        const { assert!(R < CHANNEL_ROLES) };
        // SAFETY: `new` checked the segment has CHANNEL_ROLES roles, so entry R lies in
        // the validated role table; RoleEntry is atomics-only and 128-aligned there.
        unsafe { self.segment.region().at(role_offset(R)) }
    }

    /// Unwrap the segment (to close it).
    pub fn into_segment(self) -> Segment {
        self.segment
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: data + capacity <= region length (checked in new).
        unsafe { self.segment.region().as_ptr().add(self.data) }
    }
}

// SAFETY: `new` checked that the data area (`capacity` bytes, a power of two, from the
// page-aligned data offset) and the control block lie inside the mapping, which lives as
// long as the store; `header` asserts its offset; `read`/`write` copy the given range.
unsafe impl RingStore for SegmentRing {
    type Park = RingPark;

    #[inline]
    fn control(&self) -> &RingControl {
        // SAFETY: RingControl is atomics-only, at the 128-aligned control offset, inside
        // the region (new checked the segment length).
        unsafe { self.segment.region().at(self.control) }
    }

    #[inline]
    fn capacity(&self) -> usize {
        self.capacity
    }

    #[inline]
    fn header(&self, offset: usize) -> &AtomicU64 {
        assert!(offset < self.capacity && offset % 8 == 0, "header offset out of range");
        // SAFETY: in bounds and 8-aligned (asserted; the data area is page-aligned); an
        // AtomicU64 may alias memory that peers access atomically.
        unsafe { &*(self.data().add(offset) as *const AtomicU64) }
    }

    #[inline]
    unsafe fn write(&self, offset: usize, src: &[u8]) {
        debug_assert!(offset + src.len() <= self.capacity);
        // SAFETY: caller guarantees the range is in bounds and exclusively ours.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.data().add(offset), src.len()) };
    }

    #[inline]
    unsafe fn read(&self, offset: usize, dst: *mut u8, len: usize) {
        debug_assert!(offset + len <= self.capacity);
        // SAFETY: caller guarantees the range is in bounds and holds an acquired record,
        // and that `dst` is valid for `len` writes outside the ring.
        unsafe { std::ptr::copy_nonoverlapping(self.data().add(offset), dst, len) };
    }

    #[inline]
    fn park(&self) -> &RingPark {
        &self.park
    }

    #[inline]
    fn prefetch(&self, offset: usize, write: bool) {
        let p = self.data().wrapping_add(offset.min(self.capacity - 1));
        prefetch_line(p, write);
    }
}

/// Ask for the cache line at `p`: shared for reading, or owned (`write`), so a later
/// store does not wait for the other core to give the line up.
#[inline(always)]
fn prefetch_line(p: *const u8, write: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        if write {
            // `_mm_prefetch::<_MM_HINT_ET0>` compiles to a plain `prefetcht0` unless the
            // build enables `prfchw`, so emit PREFETCHW itself. Intel CPUs without it
            // (before Broadwell) decode `0F 0D /1` as a NOP; every AMD64 CPU has it.
            // SAFETY: a prefetch never faults, writes nothing architecturally and
            // touches no registers but its address operand.
            unsafe { std::arch::asm!("prefetchw [{p}]", p = in(reg) p, options(nostack, preserves_flags, readonly)) };
        } else {
            // SAFETY: as above; `_mm_prefetch` takes any address.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast()) };
        }
    }
    let _ = (p, write);
}

// SAFETY: `data_ptr` is byte 0 of the data area `header`/`read`/`write` address,
// valid for `capacity` bytes while the mapping lives (as long as the store).
unsafe impl ByteRingStore for SegmentRing {
    #[inline]
    fn data_ptr(&self) -> *mut u8 {
        self.data()
    }
}

/// A slot segment seen as seqlock storage.
#[derive(Debug)]
pub struct SegmentSlot {
    segment: Segment,
    words: usize,
    copies: [usize; 2],
}

impl SegmentSlot {
    /// Wrap a validated slot segment.
    ///
    /// # Panics
    /// If the segment is not a validated slot segment.
    pub fn new(segment: Segment) -> SegmentSlot {
        let info = segment.info();
        assert_eq!(info.kind, SegmentKind::Slot);
        let bytes = info.param0 as usize;
        assert!(crate::layout::slot_segment_len(bytes) <= segment.region().len());
        let copies = [crate::layout::slot_copy0_offset(bytes), crate::layout::slot_copy1_offset(bytes)];
        SegmentSlot { words: crate::layout::slot_words(bytes), copies, segment }
    }

    /// The segment.
    pub fn segment(&self) -> &Segment {
        &self.segment
    }

    /// Unwrap the segment (to close it).
    pub fn into_segment(self) -> Segment {
        self.segment
    }
}

/// A slot's futex, plus its reader doorbells: a writer's notify that finds the
/// doorbell armed rings every reader FIFO named in the slot's table.
impl Park for SegmentSlot {
    #[inline]
    fn park(&self, word: &AtomicU32, expected: u32, timeout: Option<std::time::Duration>) {
        SharedFutex.park(word, expected, timeout);
    }

    #[inline]
    fn unpark_all(&self, word: &AtomicU32) {
        SharedFutex.unpark_all(word);
    }

    fn ring(&self) {
        if let Some(name) = self.segment.name() {
            crate::bell::ring_slot_readers(name, &crate::seqlock::SlotStore::control(self).bells.value);
        }
    }
}

impl crate::seqlock::SlotStore for SegmentSlot {
    type Park = SegmentSlot;

    #[inline]
    fn control(&self) -> &crate::layout::SlotControl {
        // SAFETY: SlotControl is atomics-only, at its fixed 128-aligned offset, inside
        // the region (new checked the segment length).
        unsafe { self.segment.region().at(crate::layout::SLOT_CONTROL_OFFSET) }
    }

    #[inline]
    fn seq(&self) -> &AtomicU64 {
        // SAFETY: an AtomicU64 at the line-aligned data offset, inside the region (new
        // checked the segment length).
        unsafe { self.segment.region().at(crate::layout::SLOT_DATA_OFFSET) }
    }

    #[inline]
    fn words(&self) -> usize {
        self.words
    }

    #[inline]
    fn word(&self, copy: usize, i: usize) -> &AtomicU64 {
        assert!(copy < 2 && i < self.words, "slot word out of range");
        let base = self.copies[copy];
        // SAFETY: in bounds (asserted; new checked the length) and 8-aligned (both copy
        // offsets are the line-aligned data offset plus multiples of 8); AtomicU64 only.
        unsafe { self.segment.region().at(base + 8 * i) }
    }

    #[inline]
    fn park(&self) -> &SegmentSlot {
        self
    }
}
