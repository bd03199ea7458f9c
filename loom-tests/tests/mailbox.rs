//! loom models of the mailbox (many producers, one consumer): each producer publishes
//! into a lane of its own (an SPSC ring) and marks the lane pending in a summary word;
//! the consumer scans the summary, takes records, clears the bits of lanes it finds
//! empty and looks again, and sleeps on one event count that every producer
//! notifies. A lost pending bit or a lost wake-up is a loom deadlock; a producer that
//! stops part-way through a record must not block or corrupt anything. Also the ring's
//! "wake me once half the ring is free" protocol for a producer asleep on a full ring.
//! Run by `ci/loom.sh` (LOOM_MAX_PREEMPTIONS=2).
#![cfg(shmplane_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{block_on, payload, FutexModel, LoomStore};
use shmplane_shm::layout::MailboxControl;
use shmplane_shm::mailbox::{clear_pending, mark_pending, pending_word};
use shmplane_shm::ring::{self, Consumer, Producer, RingStore};
use shmplane_shm::sync::Ordering;

struct Shared {
    mailbox: MailboxControl,
    park: FutexModel,
}

fn shared() -> Arc<Shared> {
    Arc::new(Shared { mailbox: MailboxControl::default(), park: FutexModel::default() })
}

/// What a lane's producer does after each commit (`SegmentRing::notify_data`).
fn publish(p: &mut Producer<LoomStore>, s: &Shared, lane: usize, i: u8) {
    let claim = p.try_claim(8).unwrap().expect("room");
    p.write(&claim, 0, &payload(i, 8));
    p.commit(claim, 8, u32::from(i) + 1);
    let ctl = p.store().control();
    mark_pending(&s.mailbox, lane, || ctl.head.value.position.load(Ordering::Acquire) < ctl.tail.value.load(Ordering::Relaxed));
    s.mailbox.data_ready.value.notify(&s.park);
}

/// The consumer's look for a record (`Mailbox::find_ready`): lanes whose bit is set,
/// clearing the bits of lanes found empty and looking again.
fn take(lanes: &mut [Consumer<LoomStore>], s: &Shared) -> Option<(usize, u8)> {
    let bits = pending_word(&s.mailbox, 0);
    for (lane, c) in lanes.iter_mut().enumerate() {
        if bits & (1 << lane) == 0 {
            continue;
        }
        if let Some(rec) = c.try_peek().unwrap() {
            let mut out = [0u8; 8];
            c.read(&rec, 0, &mut out);
            let i = (rec.tag() - 1) as u8;
            assert_eq!(out.to_vec(), payload(i, 8), "torn record");
            c.release(rec);
            return Some((lane, i));
        }
        let store = c.store();
        if clear_pending(&s.mailbox, lane, || ring::data_ready(store)) {
            return take(lanes, s);
        }
    }
    None
}

/// Two producers, two messages each, into their own lanes; the consumer blocks on the
/// shared event count with "some bit set" as its condition: all four arrive, each
/// producer's in order (the second message of a lane races the consumer clearing the
/// bit the first one left set), and afterwards every bit reads clear once the
/// consumer looked.
#[test]
fn two_producers_one_consumer_nothing_lost() {
    loom::model(|| {
        let s = shared();
        let stores = [LoomStore::new(64), LoomStore::new(64)];
        let lanes: Vec<Consumer<LoomStore>> = stores.iter().map(|st| Consumer::attach(st.clone()).unwrap()).collect();
        let producers: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(lane, st)| {
                let mut p = Producer::attach(st.clone()).unwrap();
                let s = s.clone();
                thread::spawn(move || {
                    publish(&mut p, &s, lane, 2 * lane as u8);
                    publish(&mut p, &s, lane, 2 * lane as u8 + 1);
                })
            })
            .collect();
        let mut got = Vec::new();
        let mut ctx = (lanes, s.clone());
        while got.len() < 4 {
            let r = block_on(&mut ctx, |(_, s)| (&s.mailbox.data_ready.value, &s.park), |(lanes, s)| take(lanes, s));
            got.push(r);
        }
        let (mut lanes, _) = ctx;
        for p in producers {
            p.join().unwrap();
        }
        // Per-producer order: each lane's two messages in the order sent.
        let lane0: Vec<_> = got.iter().filter(|g| g.0 == 0).map(|g| g.1).collect();
        let lane1: Vec<_> = got.iter().filter(|g| g.0 == 1).map(|g| g.1).collect();
        assert_eq!((lane0, lane1), (vec![0, 1], vec![2, 3]));
        assert!(take(&mut lanes, &s).is_none());
        assert_eq!(pending_word(&s.mailbox, 0), 0, "a bit left set over empty lanes");
    });
}

/// A producer that stops part-way through its record (claimed and wrote, never
/// committed: a SIGKILL) while another producer sends: the consumer gets the other's
/// message, never a byte of the unfinished one, and is not blocked by it.
#[test]
fn producer_stopping_mid_record_blocks_nobody() {
    loom::model(|| {
        let s = shared();
        let stores = [LoomStore::new(64), LoomStore::new(64)];
        let lanes: Vec<Consumer<LoomStore>> = stores.iter().map(|st| Consumer::attach(st.clone()).unwrap()).collect();
        let mut dying = Producer::attach(stores[0].clone()).unwrap();
        let mut live = Producer::attach(stores[1].clone()).unwrap();
        let s1 = s.clone();
        let d = thread::spawn(move || {
            let claim = dying.try_claim(8).unwrap().expect("room");
            dying.write(&claim, 0, &payload(9, 8));
            // Dies here: no commit, no mark.
        });
        let s2 = s.clone();
        let l = thread::spawn(move || publish(&mut live, &s2, 1, 1));
        let mut ctx = (lanes, s1);
        let r = block_on(&mut ctx, |(_, s)| (&s.mailbox.data_ready.value, &s.park), |(lanes, s)| take(lanes, s));
        assert_eq!(r, (1, 1));
        let (mut lanes, _) = ctx;
        d.join().unwrap();
        l.join().unwrap();
        assert!(take(&mut lanes, &s).is_none());
    });
}

/// A producer asleep on a full ring asks to be woken once half the ring is free
/// (`Producer::set_wake_at`, polling `wake_due` first); the consumer releases records
/// one by one and notifies only when its position reaches that point
/// (`notify_counted_when` in `Consumer::advance`). No wake-up may be lost: the
/// producer gets all its records through.
#[test]
fn producer_woken_once_half_the_ring_is_free() {
    loom::model(|| {
        let store = LoomStore::new(64);
        let mut producer = Producer::attach(store.clone()).unwrap();
        let mut consumer = Consumer::attach(store).unwrap();
        // Fill: three 8-byte records (16 bytes each), then a fourth must wait.
        for i in 0..3u8 {
            let claim = producer.try_claim(8).unwrap().expect("room");
            producer.write(&claim, 0, &payload(i, 8));
            producer.commit(claim, 8, u32::from(i) + 1);
        }
        let t = thread::spawn(move || {
            for i in 3..5u8 {
                producer.set_wake_at(Some(8));
                let claim = block_on(
                    &mut producer,
                    |p| (&p.store().control().space_ready.value, p.store().park()),
                    |p| if p.wake_due() { p.try_claim(8).unwrap() } else { None },
                );
                producer.write(&claim, 0, &payload(i, 8));
                producer.commit(claim, 8, u32::from(i) + 1);
            }
        });
        for i in 0..5u8 {
            let rec = block_on(
                &mut consumer,
                |c| (&c.store().control().data_ready.value, c.store().park()),
                |c| c.try_peek().unwrap(),
            );
            assert_eq!(rec.tag(), u32::from(i) + 1);
            consumer.release(rec);
        }
        t.join().unwrap();
    });
}
