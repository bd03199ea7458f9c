//! loom models of the eventcount wait protocol (`shmplane_shm::wait`) over a futex model
//! without timeouts, so a lost wake-up shows up as a loom deadlock. Run by
//! `ci/loom.sh` (LOOM_MAX_PREEMPTIONS=2).
#![cfg(shmplane_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{block_on, payload, FutexModel, LoomStore};
use shmplane_shm::layout::EventCount;
use shmplane_shm::ring::{Consumer, Producer, RingStore};
use shmplane_shm::sync::{AtomicU32, Ordering};
use shmplane_shm::wait::{wait_until, Park, WaitPolicy, COUNT_MASK, FENCED, FENCED_READY};

/// The bare protocol: the waiter announces itself, re-checks, sleeps; the notifier
/// publishes then notifies. Both interleavings of the two `waiters` RMWs must end with
/// the waiter seeing the data.
#[test]
fn eventcount_wait_never_misses_notify() {
    loom::model(|| {
        let shared = Arc::new((EventCount::default(), AtomicU32::new(0), FutexModel::default()));
        let notifier = {
            let shared = shared.clone();
            thread::spawn(move || {
                let (ev, data, futex) = &*shared;
                data.store(1, Ordering::Release);
                ev.notify(futex);
            })
        };
        let (ev, data, futex) = &*shared;
        loop {
            if data.load(Ordering::Acquire) == 1 {
                break;
            }
            let epoch = ev.prepare_wait();
            if data.load(Ordering::Acquire) == 1 {
                ev.finish_wait();
                break;
            }
            ev.sleep(futex, epoch, None);
            ev.finish_wait();
        }
        notifier.join().unwrap();
        assert_eq!(ev.waiters.load(Ordering::Relaxed) & COUNT_MASK, 0);
    });
}

/// Two notifications in a row to a waiter that waits twice (epoch reuse, `waiters`
/// going 1 → 0 → 1).
#[test]
fn eventcount_two_rounds() {
    loom::model(|| {
        let shared = Arc::new((EventCount::default(), AtomicU32::new(0), FutexModel::default()));
        let notifier = {
            let shared = shared.clone();
            thread::spawn(move || {
                let (ev, data, futex) = &*shared;
                for v in 1..=2 {
                    data.store(v, Ordering::Release);
                    ev.notify(futex);
                }
            })
        };
        let mut ctx = shared.clone();
        for want in 1..=2 {
            block_on(&mut ctx, |s| (&s.0, &s.2), |s| (s.1.load(Ordering::Acquire) >= want).then_some(()));
        }
        notifier.join().unwrap();
    });
}

/// The ring consumer blocks on `data_ready` (eventcount loop) while the producer
/// publishes two records; `publish` notifies.
#[test]
fn ring_consumer_sleeps_until_publish() {
    loom::model(|| {
        let store = LoomStore::new(64);
        let mut producer = Producer::attach(store.clone()).unwrap();
        let mut consumer = Consumer::attach(store).unwrap();
        let t = thread::spawn(move || {
            for i in 0..2u8 {
                let claim = producer.try_claim(8).unwrap().expect("room for two small records");
                producer.write(&claim, 0, &payload(i, 8));
                producer.commit(claim, 8, u32::from(i));
            }
        });
        for i in 0..2u8 {
            let rec = block_on(
                &mut consumer,
                |c| (&c.store().control().data_ready.value, c.store().park()),
                |c| c.try_peek().unwrap(),
            );
            assert_eq!(rec.tag(), u32::from(i));
            let mut out = [0u8; 8];
            consumer.read(&rec, 0, &mut out);
            assert_eq!(out[..], payload(i, 8)[..]);
            consumer.release(rec);
        }
        t.join().unwrap();
    });
}

/// The production `wait_until` with `WaitPolicy::Block` and no deadline: its sleep
/// phase over the timeout-less futex model must be woken by the producer's publish.
#[test]
fn wait_until_block_is_woken_by_publish() {
    loom::model(|| {
        let store = LoomStore::new(64);
        let mut producer = Producer::attach(store.clone()).unwrap();
        let mut consumer = Consumer::attach(store).unwrap();
        let t = thread::spawn(move || {
            let claim = producer.try_claim(8).unwrap().unwrap();
            producer.write(&claim, 0, &payload(7, 8));
            producer.commit(claim, 8, 7);
        });
        let rec = wait_until(
            &mut consumer,
            |c| (&c.store().control().data_ready.value, c.store().park()),
            WaitPolicy::Block,
            None,
            |c| c.try_peek(),
            |_| Ok(()),
        )
        .unwrap();
        assert_eq!(rec.tag(), 7);
        let mut out = [0u8; 8];
        consumer.read(&rec, 0, &mut out);
        assert_eq!(out[..], payload(7, 8)[..]);
        consumer.release(rec);
        t.join().unwrap();
        assert_eq!(consumer.store().control().data_ready.value.waiters.load(Ordering::Relaxed) & COUNT_MASK, 0);
    });
}

/// Control: a waiter that sleeps without announcing itself (no `prepare_wait`) can miss
/// the notification. The model must catch it as a deadlock, which shows the futex model
/// really turns a lost wake-up into a failure.
#[test]
#[should_panic(expected = "deadlock")]
fn control_unannounced_sleep_deadlocks() {
    loom::model(|| {
        let shared = Arc::new((EventCount::default(), AtomicU32::new(0), FutexModel::default()));
        let notifier = {
            let shared = shared.clone();
            thread::spawn(move || {
                let (ev, data, futex) = &*shared;
                data.store(1, Ordering::Release);
                ev.notify(futex);
            })
        };
        let (ev, data, futex) = &*shared;
        while data.load(Ordering::Acquire) == 0 {
            let epoch = ev.epoch.load(Ordering::Acquire);
            futex.park(&ev.epoch, epoch, None);
        }
        notifier.join().unwrap();
    });
}

/// The sleeping regime (`FENCED` in force, as an earlier sleeper's heavy fence left it):
/// the notifier's hot-path load is modelled as what it is with the light fence, a plain
/// `Relaxed` load that may read a stale `waiters`, and the only store→load ordering is
/// the pair of `SeqCst` fences in `notify_seen` and `prepare_wait`. The waiter must
/// still never miss the notification, over two rounds.
#[test]
fn fenced_regime_light_notifier_never_misses() {
    loom::model(|| {
        let ev = EventCount::default();
        ev.waiters.store(FENCED | FENCED_READY, Ordering::Relaxed);
        let shared = Arc::new((ev, AtomicU32::new(0), FutexModel::default()));
        let notifier = {
            let shared = shared.clone();
            thread::spawn(move || {
                let (ev, data, futex) = &*shared;
                for v in 1..=2 {
                    data.store(v, Ordering::Release);
                    let seen = ev.waiters.load(Ordering::Relaxed);
                    if seen != 0 {
                        ev.notify_seen(futex, seen);
                    }
                }
            })
        };
        let mut ctx = shared.clone();
        for want in 1..=2 {
            block_on(&mut ctx, |s| (&s.0, &s.2), |s| (s.1.load(Ordering::Acquire) >= want).then_some(()));
        }
        notifier.join().unwrap();
        assert_eq!(shared.0.waiters.load(Ordering::Relaxed), FENCED | FENCED_READY);
    });
}

/// Control for the model above: outside the sleeping regime, with the light notifier
/// and no membarrier (which loom cannot model), a wake is lost. Shows that the model
/// above passes because of the FENCED fences, not by accident.
#[test]
#[should_panic(expected = "deadlock")]
fn control_light_notifier_without_fenced_regime_deadlocks() {
    loom::model(|| {
        let shared = Arc::new((EventCount::default(), AtomicU32::new(0), FutexModel::default()));
        let notifier = {
            let shared = shared.clone();
            thread::spawn(move || {
                let (ev, data, futex) = &*shared;
                data.store(1, Ordering::Release);
                let seen = ev.waiters.load(Ordering::Relaxed);
                if seen != 0 {
                    ev.notify_seen(futex, seen);
                }
            })
        };
        let mut ctx = shared.clone();
        block_on(&mut ctx, |s| (&s.0, &s.2), |s| (s.1.load(Ordering::Acquire) >= 1).then_some(()));
        notifier.join().unwrap();
    });
}

/// A doorbell modelled as a flag its "reader" sleeps on (the FIFO of `shm/src/bell.rs`):
/// `ring` sets the flag and wakes the sleeper.
#[derive(Default)]
struct DoorbellModel {
    rung: AtomicU32,
    futex: FutexModel,
}

impl Park for DoorbellModel {
    fn park(&self, word: &AtomicU32, expected: u32, timeout: Option<std::time::Duration>) {
        self.futex.park(word, expected, timeout);
    }
    fn unpark_all(&self, word: &AtomicU32) {
        self.futex.unpark_all(word);
    }
    fn ring(&self) {
        self.rung.store(1, Ordering::SeqCst);
        self.futex.unpark_all(&self.rung);
    }
}

/// An OS-level waiter (the doorbell's reader, as `select` on `fileno()`): arm, re-check
/// (ringing its own doorbell if the data is there), then sleep until the doorbell
/// rings. The notifier publishes then notifies. In both regimes (fresh, and FENCED in
/// force with a plain `Relaxed` notifier load) the doorbell must ring: a lost ring is
/// a loom deadlock.
fn doorbell_model(preset_fenced: bool) {
    loom::model(move || {
        let ev = EventCount::default();
        if preset_fenced {
            ev.waiters.store(FENCED | FENCED_READY, Ordering::Relaxed);
        }
        let shared = Arc::new((ev, AtomicU32::new(0), DoorbellModel::default()));
        let notifier = {
            let shared = shared.clone();
            thread::spawn(move || {
                let (ev, data, bell) = &*shared;
                data.store(1, Ordering::Release);
                if preset_fenced {
                    let seen = ev.waiters.load(Ordering::Relaxed);
                    if seen != 0 {
                        ev.notify_seen(bell, seen);
                    }
                } else {
                    ev.notify(bell);
                }
            })
        };
        let (ev, data, bell) = &*shared;
        ev.arm_doorbell();
        if data.load(Ordering::Acquire) == 1 {
            bell.ring(); // the waiter's own ring (`Bell::ring_own`)
        }
        while bell.rung.load(Ordering::SeqCst) == 0 {
            bell.futex.park(&bell.rung, 0, None);
        }
        assert_eq!(data.load(Ordering::Acquire), 1, "rung before the data was visible");
        notifier.join().unwrap();
    });
}

#[test]
fn doorbell_rings_for_a_publish() {
    doorbell_model(false);
}

#[test]
fn doorbell_rings_for_a_publish_in_the_fenced_regime() {
    doorbell_model(true);
}

/// Two waiters (a broadcast's subscribers) on one event count, a notifier publishing
/// twice: after a wake, notifiers skip the syscall while every counted sleeper
/// announced before it (`ARMED` clear). Neither waiter may miss the second value (a
/// wake skipped wrongly is a loom deadlock).
#[test]
fn two_waiters_never_miss_a_skipped_wake() {
    loom::model(|| {
        let shared = Arc::new((EventCount::default(), AtomicU32::new(0), FutexModel::default()));
        let notifier = {
            let shared = shared.clone();
            thread::spawn(move || {
                let (ev, data, futex) = &*shared;
                for v in 1..=2 {
                    data.store(v, Ordering::Release);
                    ev.notify(futex);
                }
            })
        };
        let waiter = |shared: Arc<(EventCount, AtomicU32, FutexModel)>| {
            let (ev, data, futex) = &*shared;
            loop {
                if data.load(Ordering::Acquire) == 2 {
                    break;
                }
                let epoch = ev.prepare_wait();
                if data.load(Ordering::Acquire) == 2 {
                    ev.finish_wait();
                    break;
                }
                ev.sleep(futex, epoch, None);
                ev.finish_wait();
            }
        };
        let other = {
            let shared = shared.clone();
            thread::spawn(move || waiter(shared))
        };
        waiter(shared.clone());
        other.join().unwrap();
        notifier.join().unwrap();
        let (ev, _, _) = &*shared;
        assert_eq!(ev.waiters.load(Ordering::Relaxed) & (COUNT_MASK | shmplane_shm::wait::ARMED), 0);
    });
}
