//! loom models of the SPSC ring: publication and consumption in order with exact
//! contents across a padding record at the wrap, and a producer blocked on a full ring
//! woken by the consumer's release. Run by `ci/loom.sh` (LOOM_MAX_PREEMPTIONS=2).
#![cfg(shmplane_loom)]

use loom::thread;
use loom_tests::{block_on, payload, LoomStore};
use shmplane_shm::ring::{Consumer, Producer, RingStore};
use shmplane_shm::sync::Ordering;

fn send(p: &mut Producer<LoomStore>, claim: shmplane_shm::ring::Claim, i: u8, len: usize) {
    p.write(&claim, 0, &payload(i, len));
    p.commit(claim, len, u32::from(i) + 100);
}

fn check(c: &Consumer<LoomStore>, rec: &shmplane_shm::ring::Record, i: u8, len: usize) {
    assert_eq!(rec.tag(), u32::from(i) + 100, "record {i}: tag");
    assert_eq!(rec.len(), len, "record {i}: length");
    let mut out = vec![0u8; len];
    c.read(rec, 0, &mut out);
    assert_eq!(out, payload(i, len), "record {i}: torn or stale payload");
}

/// Three 16-byte records (24 bytes each with the header) through a 64-byte ring: the
/// third does not fit before the end, so the producer publishes a padding record and
/// writes it at offset 0, over the first record's bytes, once the consumer released
/// them. Both sides poll with yields (no sleeping): this model checks the ring's own
/// orderings (header Release/Acquire, head Release/Acquire, zero-ahead).
#[test]
fn publish_consume_in_order_across_padding() {
    loom::model(|| {
        let store = LoomStore::new(64);
        let mut producer = Producer::attach(store.clone()).unwrap();
        let mut consumer = Consumer::attach(store).unwrap();
        let t = thread::spawn(move || {
            for i in 0..3u8 {
                let claim = loop {
                    match producer.try_claim(16).unwrap() {
                        Some(c) => break c,
                        None => thread::yield_now(),
                    }
                };
                if i == 2 {
                    assert_eq!(claim.payload_offset(), 8, "third record wraps to offset 0");
                }
                send(&mut producer, claim, i, 16);
            }
            producer
        });
        for i in 0..3u8 {
            let rec = loop {
                match consumer.try_peek().unwrap() {
                    Some(r) => break r,
                    None => thread::yield_now(),
                }
            };
            check(&consumer, &rec, i, 16);
            consumer.release(rec);
        }
        let producer = t.join().unwrap();
        assert!(consumer.try_peek().unwrap().is_none());
        let ctl = consumer.store().control();
        assert_eq!(ctl.head.value.position.load(Ordering::Relaxed), 64 + 24);
        assert_eq!(ctl.tail.value.load(Ordering::Relaxed), 64 + 24);
        assert_eq!(shmplane_shm::ring::poisoned(consumer.store()), 0);
        drop(producer);
    });
}

/// Two 40-byte records (48 bytes each) through a 64-byte ring: the second needs the
/// first released (room for the padding record) and then the padding skipped (room at
/// offset 0). Both sides block with the eventcount protocol and a futex model without
/// timeouts: a missing or lost wake-up in either direction is a loom deadlock.
#[test]
fn producer_blocked_on_full_ring_woken_by_release() {
    loom::model(|| {
        let store = LoomStore::new(64);
        let mut producer = Producer::attach(store.clone()).unwrap();
        let mut consumer = Consumer::attach(store).unwrap();
        let t = thread::spawn(move || {
            for i in 0..2u8 {
                let claim = block_on(
                    &mut producer,
                    |p| (&p.store().control().space_ready.value, p.store().park()),
                    |p| p.try_claim(40).unwrap(),
                );
                send(&mut producer, claim, i, 40);
            }
            producer
        });
        for i in 0..2u8 {
            let rec = block_on(
                &mut consumer,
                |c| (&c.store().control().data_ready.value, c.store().park()),
                |c| c.try_peek().unwrap(),
            );
            check(&consumer, &rec, i, 40);
            consumer.release(rec);
        }
        drop(t.join().unwrap());
        let ctl = consumer.store().control();
        assert_eq!(ctl.space_ready.value.sleepers(), 0);
        assert_eq!(ctl.data_ready.value.sleepers(), 0);
    });
}

/// The consumer reads a record while the producer restarts: a producer that attaches
/// after a committed record whose `tail` was stored resumes after it, and its next
/// record is received in order (attach's Acquire loads against publish's Release).
#[test]
fn restarted_producer_resumes_after_published_records() {
    loom::model(|| {
        let store = LoomStore::new(64);
        let mut first = Producer::attach(store.clone()).unwrap();
        let claim = first.try_claim(8).unwrap().unwrap();
        send(&mut first, claim, 0, 8);
        drop(first);
        let mut consumer = Consumer::attach(store.clone()).unwrap();
        let t = thread::spawn(move || {
            let mut second = Producer::attach(store).unwrap();
            let claim = loop {
                match second.try_claim(8).unwrap() {
                    Some(c) => break c,
                    None => thread::yield_now(),
                }
            };
            send(&mut second, claim, 1, 8);
        });
        for i in 0..2u8 {
            let rec = loop {
                match consumer.try_peek().unwrap() {
                    Some(r) => break r,
                    None => thread::yield_now(),
                }
            };
            check(&consumer, &rec, i, 8);
            consumer.release(rec);
        }
        t.join().unwrap();
    });
}
