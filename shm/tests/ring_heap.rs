//! The ring and the wait protocol over a heap-backed segment (runs under valgrind:
//! `ci/valgrind.sh`). Sizes shrink with `SHMPLANE_TEST_SMALL=1`.

use shmplane_shm::header::SegmentKind;
use shmplane_shm::layout::{ring_segment_len, RingControl};
use shmplane_shm::ring::{ByteRingStore, Consumer, Producer, RingError, RingStore};
use shmplane_shm::segment::Segment;
use shmplane_shm::store::SegmentRing;
use shmplane_shm::sync::AtomicU64;
use shmplane_shm::wait::{wait_until, SharedFutex, WaitPolicy};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Both ends over one heap segment.
#[derive(Clone)]
struct Shared(Arc<SegmentRing>);

impl RingStore for Shared {
    type Park = SharedFutex;
    fn control(&self) -> &RingControl {
        self.0.control()
    }
    fn capacity(&self) -> usize {
        self.0.capacity()
    }
    fn header(&self, offset: usize) -> &AtomicU64 {
        self.0.header(offset)
    }
    unsafe fn write(&self, offset: usize, src: &[u8]) {
        // SAFETY: same contract, forwarded.
        unsafe { self.0.write(offset, src) }
    }
    unsafe fn read(&self, offset: usize, dst: &mut [u8]) {
        // SAFETY: same contract, forwarded.
        unsafe { self.0.read(offset, dst) }
    }
    fn park(&self) -> &SharedFutex {
        self.0.park()
    }
}

impl ByteRingStore for Shared {
    fn data_ptr(&self) -> *mut u8 {
        self.0.data_ptr()
    }
}

fn ring(capacity: usize) -> (Producer<Shared>, Consumer<Shared>) {
    let seg = Segment::heap(SegmentKind::Channel, ring_segment_len(capacity), capacity as u64);
    let store = Shared(Arc::new(SegmentRing::new(seg)));
    (Producer::attach(store.clone()).unwrap(), Consumer::attach(store).unwrap())
}

fn count(n: usize) -> usize {
    if std::env::var_os("SHMPLANE_TEST_SMALL").is_some() {
        n / 50
    } else {
        n
    }
}

fn pattern(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seq as usize).wrapping_mul(31).wrapping_add(i) as u8).collect()
}

fn send(p: &mut Producer<Shared>, seq: u64, len: usize) -> bool {
    match p.try_claim(len).unwrap() {
        None => false,
        Some(c) => {
            p.write(&c, 0, &pattern(seq, len));
            p.commit(c, len, (seq % 1000) as u32);
            true
        }
    }
}

fn recv(c: &mut Consumer<Shared>, seq: u64) -> bool {
    match c.try_peek().unwrap() {
        None => false,
        Some(r) => {
            assert_eq!(r.tag(), (seq % 1000) as u32);
            assert_eq!(c.payload(&r), &pattern(seq, r.len())[..], "message {seq}");
            c.release(r);
            true
        }
    }
}

#[test]
fn fill_drain_wrap_and_limits() {
    let (mut p, mut c) = ring(4096);
    assert_eq!(p.max_payload(), 4096 - 16);
    assert!(matches!(p.try_claim(4096 - 15), Err(RingError::TooLarge { .. })));
    let mut seq = 0u64;
    let mut next = 0u64;
    for round in 0..count(5000) {
        let len = [0, 1, 7, 8, 64, 500, 1500, 4080][round % 8];
        while !send(&mut p, seq, len) {
            if recv(&mut c, next) {
                next += 1;
            } else {
                // Only a padding record was pending; consuming it made room.
                assert!(send(&mut p, seq, len), "full ring but nothing to receive");
                break;
            }
        }
        seq += 1;
    }
    while recv(&mut c, next) {
        next += 1;
    }
    assert_eq!(next, seq);
    assert!(c.try_peek().unwrap().is_none());
}

#[test]
fn two_threads_blocking_stream() {
    let (mut p, mut c) = ring(1 << 14);
    let n = count(100_000) as u64;
    let producer = std::thread::spawn(move || {
        for seq in 0..n {
            let len = (seq as usize * 37) % 3000;
            let claim = wait_until(
                &mut p,
                |p| (&p.store().control().space_ready.value, p.store().park()),
                if seq % 2 == 0 { WaitPolicy::Block } else { WaitPolicy::default() },
                Some(Instant::now() + Duration::from_secs(30)),
                |p| p.try_claim(len),
                |_| Ok(()),
            )
            .expect("space within 30 s");
            p.write(&claim, 0, &pattern(seq, len));
            p.commit(claim, len, (seq % 1000) as u32);
        }
    });
    for seq in 0..n {
        let r = wait_until(
            &mut c,
            |c| (&c.store().control().data_ready.value, c.store().park()),
            WaitPolicy::Block,
            Some(Instant::now() + Duration::from_secs(30)),
            |c| c.try_peek(),
            |_| Ok(()),
        )
        .expect("data within 30 s");
        assert_eq!(c.payload(&r), &pattern(seq, (seq as usize * 37) % 3000)[..]);
        c.release(r);
    }
    producer.join().unwrap();
}

#[test]
fn corrupt_header_poisons() {
    let (mut p, mut c) = ring(4096);
    assert!(send(&mut p, 0, 10));
    p.store().header(0).store(u64::MAX >> 1, shmplane_shm::sync::Ordering::Release);
    assert!(matches!(c.try_peek(), Err(RingError::Corrupt { .. })));
    assert_ne!(c.store().control().poisoned.value.load(shmplane_shm::sync::Ordering::Relaxed), 0);
}

#[test]
fn restarted_producer_steps_over_unrecorded_commit() {
    let (mut p, mut c) = ring(4096);
    assert!(send(&mut p, 0, 10));
    let store = p.store().clone();
    // A producer that died after publishing the header but before storing `tail`.
    store.control().tail.value.store(0, shmplane_shm::sync::Ordering::Release);
    drop(p);
    let mut p2 = Producer::attach(store).unwrap();
    assert!(send(&mut p2, 1, 20));
    assert!(recv(&mut c, 0));
    assert!(recv(&mut c, 1));
}
