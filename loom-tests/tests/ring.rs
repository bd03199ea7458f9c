//! loom models: the ring's publish/consume (with a padding record at the wrap) and the
//! eventcount wait/wake over a futex model without timeouts, so a lost wake-up is a
//! loom deadlock. Run by ci/loom.sh with LOOM_MAX_PREEMPTIONS=2.
#![cfg(shmplane_loom)]

use loom::sync::{Arc, Condvar, Mutex};
use shmplane_shm::layout::RingControl;
use shmplane_shm::ring::{Consumer, Producer, RingStore};
use shmplane_shm::sync::{AtomicU32, AtomicU64, Ordering};
use shmplane_shm::wait::Park;
use std::time::Duration;

/// futex(2) model: park sleeps (no timeout) while the word holds `expected`.
#[derive(Default)]
struct FutexModel {
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

/// Ring storage of loom atomics: data area as words, payload as relaxed word stores.
struct Model {
    ctl: RingControl,
    words: Vec<AtomicU64>,
    futex: FutexModel,
}

#[derive(Clone)]
struct Store(Arc<Model>);

impl Store {
    fn new(capacity: usize) -> Store {
        Store(Arc::new(Model {
            ctl: RingControl::default(),
            words: (0..capacity / 8).map(|_| AtomicU64::new(0)).collect(),
            futex: FutexModel::default(),
        }))
    }
}

impl RingStore for Store {
    type Park = FutexModel;
    fn control(&self) -> &RingControl {
        &self.0.ctl
    }
    fn capacity(&self) -> usize {
        self.0.words.len() * 8
    }
    fn header(&self, offset: usize) -> &AtomicU64 {
        &self.0.words[offset / 8]
    }
    unsafe fn write(&self, offset: usize, src: &[u8]) {
        for (i, chunk) in src.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.0.words[offset / 8 + i].store(u64::from_le_bytes(w), Ordering::Relaxed);
        }
    }
    unsafe fn read(&self, offset: usize, dst: &mut [u8]) {
        for (i, chunk) in dst.chunks_mut(8).enumerate() {
            let w = self.0.words[offset / 8 + i].load(Ordering::Relaxed).to_le_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
    }
    fn park(&self) -> &FutexModel {
        &self.0.futex
    }
}

fn msg(i: u8) -> [u8; 8] {
    [i; 8]
}

/// Wait on `event` with the real eventcount protocol and no timeout.
fn blocking<C, T>(ctx: &mut C, event: impl Fn(&C) -> &shmplane_shm::layout::EventCount, park: impl Fn(&C) -> &FutexModel, mut poll: impl FnMut(&mut C) -> Option<T>) -> T {
    loop {
        if let Some(v) = poll(ctx) {
            return v;
        }
        let epoch = event(ctx).prepare_wait();
        if let Some(v) = poll(ctx) {
            event(ctx).finish_wait();
            return v;
        }
        event(ctx).sleep(park(ctx), epoch, None);
        event(ctx).finish_wait();
    }
}

#[test]
fn publish_consume_with_wrap_and_wake() {
    loom::model(|| {
        // 64-byte ring: three 16-byte records (8 payload) force a padding record.
        let store = Store::new(64);
        let mut producer = Producer::attach(store.clone()).unwrap();
        let mut consumer = Consumer::attach(store).unwrap();
        let t = loom::thread::spawn(move || {
            for i in 0..3u8 {
                let len = if i == 1 { 24 } else { 8 };
                let claim = blocking(
                    &mut producer,
                    |p| &p.store().control().space_ready.value,
                    |p| p.store().park(),
                    |p| p.try_claim(len).unwrap(),
                );
                let mut data = vec![i; len];
                data[..8].copy_from_slice(&msg(i));
                producer.write(&claim, 0, &data);
                producer.commit(claim, len, u32::from(i));
            }
        });
        for i in 0..3u8 {
            let rec = blocking(
                &mut consumer,
                |c| &c.store().control().data_ready.value,
                |c| c.store().park(),
                |c| c.try_peek().unwrap(),
            );
            assert_eq!(rec.tag(), u32::from(i));
            let mut out = vec![0u8; rec.len()];
            consumer.read(&rec, 0, &mut out);
            assert!(out.iter().all(|&b| b == i), "record {i} torn or stale: {out:?}");
            consumer.release(rec);
        }
        t.join().unwrap();
    });
}
