//! The ring's record decoder and the message-head parser over a data area and positions
//! written by a hostile or broken peer: the consumer must report `Corrupt` (or find no
//! record), never panic, loop forever or read outside the data area; the producer must
//! refuse a corrupt consumer position.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shmplane::frame::{parse_head, MAX_PREFIX};
use shmplane_shm::layout::RingControl;
use shmplane_shm::ring::{ByteRingStore, Consumer, Producer, RingStore};
use shmplane_shm::sync::{AtomicU64, Ordering};
use shmplane_shm::wait::SharedFutex;
use std::cell::UnsafeCell;

const CAPACITY: usize = 4096;

#[repr(C, align(4096))]
struct Data(UnsafeCell<[u8; CAPACITY]>);

struct Heap {
    control: RingControl,
    data: Box<Data>,
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
}

// SAFETY: the data area is the allocation `header`/`read`/`write` address.
unsafe impl ByteRingStore for Heap {
    fn data_ptr(&self) -> *mut u8 {
        self.data.0.get().cast()
    }
}

fn heap(data: &[u8]) -> Heap {
    let area = Box::new(Data(UnsafeCell::new([0; CAPACITY])));
    let n = data.len().min(CAPACITY);
    // SAFETY: fresh allocation of CAPACITY bytes; n <= CAPACITY.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), area.0.get().cast::<u8>(), n) };
    Heap { control: RingControl::default(), data: area }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let head = u64::from_le_bytes(data[0..8].try_into().unwrap());
    let tail = u64::from_le_bytes(data[8..16].try_into().unwrap());
    let body = &data[16..];

    // Consumer side: every record it accepts lies inside the data area, also when it
    // starts at a resume position a dead holder (or a hostile peer) left.
    let store = heap(body);
    store.control.head.value.position.store(head, Ordering::Relaxed);
    store.control.tail.value.store(tail, Ordering::Relaxed);
    let resume = head.wrapping_add(u64::from(body.get(1).copied().unwrap_or(0)) * 8).wrapping_add(tail & 7);
    store.control.head.value.resume.store(resume, Ordering::Relaxed);
    if let Ok(mut consumer) = Consumer::attach(store) {
        for _ in 0..64 {
            match consumer.try_peek() {
                Ok(Some(record)) => {
                    let mut prefix = vec![0; record.len().min(MAX_PREFIX)];
                    consumer.read(&record, 0, &mut prefix);
                    let _ = parse_head(record.tag(), record.len(), &prefix);
                    consumer.release(record);
                }
                Ok(None) | Err(_) => break,
            }
        }
    }

    // Producer side: a consumer position it reads back is validated before use.
    let store = heap(body);
    store.control.head.value.position.store(head, Ordering::Relaxed);
    store.control.tail.value.store(tail, Ordering::Relaxed);
    if let Ok(mut producer) = Producer::attach(store) {
        store_head(&producer, head.wrapping_add(u64::from(body.first().copied().unwrap_or(0))));
        for len in [0usize, 1, 64, 500, 4000] {
            match producer.try_claim(len) {
                Ok(Some(claim)) => producer.commit(claim, len, 1),
                Ok(None) | Err(_) => break,
            }
        }
    }
});

/// A peer's write of the consumer position while the producer runs.
fn store_head(producer: &Producer<Heap>, head: u64) {
    producer.store().control.head.value.position.store(head, Ordering::Relaxed);
}
