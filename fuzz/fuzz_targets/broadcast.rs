//! A broadcast's shared words and ring written by a hostile or broken peer: the lossy
//! subscriber's decoder (record headers after a lap, the oldest-record pair it skips
//! to), the lossy publisher's walk over its own headers (`reclaim`) and the lossless
//! publisher's scan of subscriber cursors (`slowest`). None may panic, loop forever or
//! touch memory outside the data area; impossible values must read as `Corrupt` (or
//! as nothing).
#![no_main]
use libfuzzer_sys::fuzz_target;
use shmplane_shm::broadcast;
use shmplane_shm::layout::{BroadcastControl, RingControl, SubscriberCursor};
use shmplane_shm::ring::{Consumer, RingError, RingStore};
use shmplane_shm::sync::{AtomicU64, Ordering};
use shmplane_shm::wait::SharedFutex;
use std::cell::UnsafeCell;

const CAPACITY: usize = 4096;
const SUBS: usize = 4;

#[repr(C, align(4096))]
struct Data(UnsafeCell<[u8; CAPACITY]>);

/// The subscriber's (or, with `sub: None`, the publisher's) view of a heap broadcast.
struct Heap {
    control: RingControl,
    bc: BroadcastControl,
    cursors: [SubscriberCursor; SUBS],
    data: Box<Data>,
    sub: Option<usize>,
}

// SAFETY: `capacity` is the data area's size (4096, a power of two); `header` checks
// its offset and alignment; `read`/`write` check their ranges; one thread uses it.
unsafe impl RingStore for Heap {
    type Park = SharedFutex;
    fn control(&self) -> &RingControl {
        &self.control
    }
    fn capacity(&self) -> usize {
        CAPACITY
    }
    fn header(&self, offset: usize) -> &AtomicU64 {
        assert!(offset < CAPACITY && offset.is_multiple_of(8), "header offset {offset} out of range");
        // SAFETY: in bounds and 8-aligned (the area is 4096-aligned); only accessed
        // atomically while the store lives.
        unsafe { &*(self.data.0.get().cast::<u8>().add(offset) as *const AtomicU64) }
    }
    unsafe fn write(&self, offset: usize, src: &[u8]) {
        assert!(offset + src.len() <= CAPACITY);
        // SAFETY: in bounds (asserted); single-threaded.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.data.0.get().cast::<u8>().add(offset), src.len()) };
    }
    unsafe fn read(&self, offset: usize, dst: *mut u8, len: usize) {
        assert!(offset + len <= CAPACITY, "read of {len} bytes at {offset} outside the data area");
        // SAFETY: in bounds (asserted); `dst` valid for `len` writes (caller's contract).
        unsafe { std::ptr::copy_nonoverlapping(self.data.0.get().cast::<u8>().add(offset), dst, len) };
    }
    fn park(&self) -> &SharedFutex {
        &SharedFutex
    }
    fn head_word(&self) -> &AtomicU64 {
        &self.cursors[self.sub.unwrap_or(0)].position
    }
    fn store_head(&self, head: u64, tag: u32) {
        broadcast::store_position(&self.cursors[self.sub.unwrap_or(0)], head, broadcast::starts_message(tag), true);
    }
    fn consumers_position(&self, floor: u64, tail: u64, need: u64) -> Result<u64, RingError> {
        broadcast::reclaim(self, &self.bc.oldest.value, tail, need).map(|p| p.max(floor).min(tail))
    }
    fn overrun(&self, position: u64) -> bool {
        broadcast::overrun(&self.bc.oldest.value, position)
    }
    fn skip_to_oldest(&self, head: u64) -> Option<(u64, u64)> {
        broadcast::skip_to_oldest(&self.bc.oldest.value, &self.cursors[self.sub.unwrap_or(0)], head)
    }
}

fn word(data: &[u8], i: usize) -> u64 {
    data.get(8 * i..8 * i + 8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()))
}

fuzz_target!(|data: &[u8]| {
    // 12 words of shared state, then the data area.
    if data.len() < 96 {
        return;
    }
    let area = Box::new(Data(UnsafeCell::new([0; CAPACITY])));
    let body = &data[96..];
    let n = body.len().min(CAPACITY);
    // SAFETY: fresh allocation of CAPACITY bytes; n <= CAPACITY.
    unsafe { std::ptr::copy_nonoverlapping(body.as_ptr(), area.0.get().cast::<u8>(), n) };
    let heap = Heap {
        control: RingControl::default(),
        bc: BroadcastControl::default(),
        cursors: Default::default(),
        data: area,
        sub: Some(0),
    };
    let r = Ordering::Relaxed;
    heap.bc.oldest.value.version.store(word(data, 0), r);
    heap.bc.oldest.value.position[0].store(word(data, 1), r);
    heap.bc.oldest.value.position[1].store(word(data, 2), r);
    heap.bc.oldest.value.seq[0].store(word(data, 3), r);
    heap.bc.oldest.value.seq[1].store(word(data, 4), r);
    heap.bc.slots.value.store(word(data, 5), r);
    heap.cursors[0].position.store(word(data, 6), r);
    heap.cursors[0].seq.store(word(data, 7), r);
    for (i, c) in heap.cursors.iter().enumerate().skip(1) {
        c.position.store(word(data, 7 + i), r);
        c.active.store(word(data, 10) >> i, r);
    }
    let tail = word(data, 11);

    // The lossless publisher's scan: within [floor, tail] whatever the cursors say.
    let floor = tail.min(word(data, 1));
    let s = broadcast::slowest(&heap.bc, SUBS, |i| &heap.cursors[i], floor, tail);
    assert!(s >= floor.min(tail) && s <= tail);

    // The lossy publisher's walk over headers it would have written: Ok within
    // [oldest, tail], or Corrupt.
    if let Ok(p) = broadcast::reclaim(&heap, &heap.bc.oldest.value, tail, word(data, 9) % (CAPACITY as u64)) {
        assert!(p <= tail, "reclaimed past the tail");
    }

    // A lossy subscriber reading whatever is there: intact-looking records, lags and
    // Corrupt only, a bounded number of steps.
    let Ok(mut c) = Consumer::attach(heap) else { return };
    let mut buf = vec![0u8; CAPACITY];
    for _ in 0..64 {
        match c.try_peek() {
            Ok(Some(rec)) => {
                let len = rec.len();
                c.read(&rec, 0, &mut buf[..len]);
                let _ = c.release_read(rec);
            }
            Ok(None) => break,
            Err(RingError::Lagged { .. }) => {}
            Err(_) => break,
        }
    }
});
