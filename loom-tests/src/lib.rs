//! Test support for the loom models in `tests/`: a [`shmplane_shm::ring::RingStore`]
//! over heap loom atomics and a futex model implementing [`shmplane_shm::wait::Park`].
//!
//! Everything here (and in `tests/`) exists only under `--cfg shmplane_loom`, where
//! `shmplane_shm::sync` re-exports loom's atomics:
//!
//! ```text
//! RUSTFLAGS="--cfg shmplane_loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
//!     cargo test -p loom-tests --release
//! ```
#![cfg(shmplane_loom)]

use loom::sync::{Arc, Condvar, Mutex};
use shmplane_shm::layout::{EventCount, RingControl};
use shmplane_shm::ring::RingStore;
use shmplane_shm::sync::{AtomicU32, AtomicU64, Ordering};
use shmplane_shm::wait::Park;
use std::time::Duration;

/// `futex(2)` model: `park` sleeps while the word holds `expected`, with **no timeout**
/// (the timeout argument is ignored), so a lost wake-up is a loom deadlock instead of a
/// late return. `unpark_all` wakes every sleeper on every word (a superset of futex
/// wake: extra wake-ups are spurious returns, which the `Park` contract allows).
///
/// The word is checked under the mutex and the notifier takes the mutex after changing
/// the word, which is the atomicity `FUTEX_WAIT` provides (check and sleep as one step
/// with respect to `FUTEX_WAKE`).
#[derive(Debug, Default)]
pub struct FutexModel {
    lock: Mutex<()>,
    cv: Condvar,
}

impl Park for FutexModel {
    fn park(&self, word: &AtomicU32, expected: u32, _timeout: Option<Duration>) {
        let guard = self.lock.lock().unwrap();
        if word.load(Ordering::SeqCst) == expected {
            drop(self.cv.wait(guard).unwrap());
        }
    }

    fn unpark_all(&self, _word: &AtomicU32) {
        let _guard = self.lock.lock().unwrap();
        self.cv.notify_all();
    }
}

/// Ring storage of loom atomics: a control block and the data area as 64-bit words.
/// Payload bytes are copied with relaxed word loads/stores (the same rule the seqlock
/// follows), so loom checks that the header's Release/Acquire pair orders them.
#[derive(Debug)]
pub struct Model {
    ctl: RingControl,
    words: Vec<AtomicU64>,
    futex: FutexModel,
}

/// A shareable handle to a [`Model`]: one clone for the producer, one for the consumer.
#[derive(Clone, Debug)]
pub struct LoomStore(Arc<Model>);

impl LoomStore {
    /// A zeroed ring of `capacity` data bytes (a power of two, at least 16). Must be
    /// called inside `loom::model`.
    ///
    /// # Panics
    /// If `capacity` is not a power of two or is smaller than 16.
    pub fn new(capacity: usize) -> LoomStore {
        // The ring algorithm only needs a power of two; layout::check_ring_capacity's
        // 4 KiB minimum is a rule for segments, not for the algorithm, so models use
        // tiny rings where a handful of records wrap.
        assert!(capacity.is_power_of_two() && capacity >= 16, "capacity {capacity}");
        LoomStore(Arc::new(Model {
            ctl: RingControl::default(),
            words: (0..capacity / 8).map(|_| AtomicU64::new(0)).collect(),
            futex: FutexModel::default(),
        }))
    }
}

// SAFETY: the data area is `words` (capacity = 8 * words, a power of two >= 16,
// asserted in `new`); `header`, `read` and `write` assert their ranges.
unsafe impl RingStore for LoomStore {
    type Park = FutexModel;

    fn control(&self) -> &RingControl {
        &self.0.ctl
    }

    fn capacity(&self) -> usize {
        self.0.words.len() * 8
    }

    fn header(&self, offset: usize) -> &AtomicU64 {
        assert!(offset % 8 == 0 && offset < self.capacity(), "header offset {offset}");
        &self.0.words[offset / 8]
    }

    unsafe fn write(&self, offset: usize, src: &[u8]) {
        assert!(offset % 8 == 0 && offset + src.len() <= self.capacity(), "write {offset}+{}", src.len());
        for (i, chunk) in src.chunks(8).enumerate() {
            let word = &self.0.words[offset / 8 + i];
            let mut bytes = [0u8; 8];
            if chunk.len() < 8 {
                // The rest of the word is the record's own padding: ours to rewrite.
                bytes = word.load(Ordering::Relaxed).to_le_bytes();
            }
            bytes[..chunk.len()].copy_from_slice(chunk);
            word.store(u64::from_le_bytes(bytes), Ordering::Relaxed);
        }
    }

    unsafe fn read(&self, offset: usize, dst: *mut u8, len: usize) {
        assert!(offset % 8 == 0 && offset + len <= self.capacity(), "read {offset}+{len}");
        for i in 0..len.div_ceil(8) {
            let bytes = self.0.words[offset / 8 + i].load(Ordering::Relaxed).to_le_bytes();
            let n = (len - 8 * i).min(8);
            // SAFETY: `dst` is valid for `len` writes (the caller's contract); 8i + n <= len.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst.add(8 * i), n) };
        }
    }

    fn park(&self) -> &FutexModel {
        &self.0.futex
    }
}

/// Block until `poll` returns `Some`, with the eventcount protocol as `wait_until`'s
/// sleep phase runs it (announce, re-check, sleep, withdraw) but without spinning and
/// without timeouts.
pub fn block_on<C, T>(
    ctx: &mut C,
    event: impl Fn(&C) -> (&EventCount, &FutexModel),
    mut poll: impl FnMut(&mut C) -> Option<T>,
) -> T {
    loop {
        if let Some(v) = poll(ctx) {
            return v;
        }
        let epoch = event(ctx).0.prepare_wait();
        if let Some(v) = poll(ctx) {
            event(ctx).0.finish_wait();
            return v;
        }
        let (ev, park) = event(ctx);
        ev.sleep(park, epoch, None);
        ev.finish_wait();
    }
}

/// The payload of record `i` in the models: `len` bytes (a multiple of 8), each word
/// distinct per record and position, so a stale or torn word is detected.
pub fn payload(i: u8, len: usize) -> Vec<u8> {
    (0..len).map(|b| i.wrapping_mul(16).wrapping_add((b / 8) as u8 + 1)).collect()
}
