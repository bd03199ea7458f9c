//! loom models of the ring consumer's holds (`Consumer::hold`, `Consumer::release_hold`):
//! a held record stays in the ring while the consumer moves on, records released in
//! order behind a hold (`Consumer::release`, a padding skip) are given back only with
//! it, and holds are released out of order. After every consumer step each record
//! still held must have its header and payload bytes unchanged (the producer never
//! reuses held space) and the shared consumer position must not have passed the
//! oldest hold; in the end every record was received, in order. Run by `ci/loom.sh`
//! (LOOM_MAX_PREEMPTIONS=2).
//!
//! Every model uses a 64-byte ring and four records (8, 8, 8 and 16 payload bytes:
//! 16, 16, 16 and 24 bytes in the ring): the fourth does not fit before the end, so
//! the producer publishes a padding record at 48 and writes the fourth at offset 0,
//! over the first two records' bytes (its payload and zero-ahead slot cover 8..32).
#![cfg(shmplane_loom)]

use loom::thread;
use loom_tests::{payload, LoomStore};
use shmplane_shm::layout::RECORD_HEADER;
use shmplane_shm::ring::{record_size, Consumer, Hold, Producer, Record, RingStore};
use shmplane_shm::sync::Ordering;

/// Payload lengths of the records, in order.
const LENS: [usize; 4] = [8, 8, 8, 16];

/// The header bit of a published record (see the record format in `shmplane_shm::ring`).
const COMMITTED: u64 = 1 << 63;

fn tag(i: u8) -> u32 {
    u32::from(i) + 100
}

/// The producer: every record of `LENS`, each retried (yielding) until it fits.
fn produce(mut p: Producer<LoomStore>) -> Producer<LoomStore> {
    for (i, &len) in LENS.iter().enumerate() {
        let i = i as u8;
        let claim = loop {
            match p.try_claim(len).unwrap() {
                Some(c) => break c,
                None => thread::yield_now(),
            }
        };
        p.write(&claim, 0, &payload(i, len));
        p.commit(claim, len, tag(i));
    }
    p
}

/// The next record (yielding until one is published), checked to be record `i`.
fn receive(c: &mut Consumer<LoomStore>, i: u8) -> Record {
    let rec = loop {
        match c.try_peek().unwrap() {
            Some(r) => break r,
            None => thread::yield_now(),
        }
    };
    let len = LENS[usize::from(i)];
    assert_eq!(
        rec.tag(),
        tag(i),
        "record {i}: tag (received out of order?)"
    );
    assert_eq!(rec.len(), len, "record {i}: length");
    let mut out = vec![0u8; len];
    c.read(&rec, 0, &mut out);
    assert_eq!(out, payload(i, len), "record {i}: torn or stale payload");
    rec
}

/// A record the consumer holds, with what its bytes must stay.
struct Held {
    hold: Hold,
    i: u8,
    /// Offset of its header in the data area.
    offset: usize,
}

/// Hold `rec` (record `i`).
fn hold(c: &mut Consumer<LoomStore>, rec: Record, i: u8) -> Held {
    let offset = rec.payload_offset() - RECORD_HEADER;
    let hold = c.hold(rec);
    assert_eq!(
        hold.position() & 63,
        offset as u64,
        "record {i}: hold position"
    );
    assert_eq!(
        hold.size(),
        record_size(LENS[usize::from(i)]) as u64,
        "record {i}: hold size"
    );
    Held { hold, i, offset }
}

/// Every record in `held` still has the header and payload it was published with.
fn check_bytes(c: &Consumer<LoomStore>, held: &[&Held]) {
    for h in held {
        let (i, len) = (h.i, LENS[usize::from(h.i)]);
        // ORDERING: Relaxed: a value check of a header this thread already acquired
        // (try_peek's Acquire, partner of `publish`'s Release header store). A producer
        // that reused the space would store here (a header or payload of a later
        // record); loom lets this load see that store in some execution.
        let word = c.store().header(h.offset).load(Ordering::Relaxed);
        assert_eq!(
            word,
            COMMITTED | (u64::from(tag(i)) << 32) | len as u64,
            "producer overwrote a held record: record {i}'s header"
        );
        let mut out = vec![0u8; len];
        let at = h.offset + RECORD_HEADER;
        // SAFETY: the payload lies inside the data area (at + len <= 64: the
        // record was validated by try_peek), this consumer holds the record (acquired by
        // try_peek, not released: `RingStore::read`'s contract), and `out` is our own
        // buffer of `len` bytes. LoomStore reads with relaxed atomic loads, so a
        // producer that overwrote the record anyway (what this checks) is a changed
        // value, not a data race.
        unsafe { c.store().read(at, out.as_mut_ptr(), len) };
        assert_eq!(
            out,
            payload(i, len),
            "producer overwrote a held record: record {i}'s payload"
        );
    }
}

/// The shared consumer position has not passed the oldest record in `held`.
fn check_position(c: &Consumer<LoomStore>, held: &[&Held]) {
    // ORDERING: Relaxed: this thread is the only writer of `head` (the Release store in
    // `store_head`, partner of the producer's Acquire in `consumers_position`), and a
    // load sees at least its own latest store.
    let shared = c.store().control().head.value.position.load(Ordering::Relaxed);
    for h in held {
        assert!(
            shared <= h.hold.position(),
            "consumer gave back record {} while held (position {shared})",
            h.i
        );
    }
    assert_eq!(c.holds(), held.len(), "holds counted");
}

/// Both checks after a consumer step.
fn check_held(c: &Consumer<LoomStore>, held: &[&Held]) {
    check_position(c, held);
    check_bytes(c, held);
}

/// After the consumer received every record: nothing more, both positions at the end.
fn check_end(c: &mut Consumer<LoomStore>, producer: thread::JoinHandle<Producer<LoomStore>>) {
    let producer = producer.join().unwrap();
    assert!(
        c.try_peek().unwrap().is_none(),
        "a record after the last one"
    );
    assert_eq!(c.holds(), 0);
    let end = 3 * 16 + 16 + 24; // three records, the padding, the fourth record
    let ctl = c.store().control();
    // ORDERING: Relaxed (both): after `join`, which orders the producer's stores (and
    // ours, this thread's own) before these loads.
    assert_eq!(
        ctl.head.value.position.load(Ordering::Relaxed),
        end,
        "consumer position"
    );
    assert_eq!(
        ctl.tail.value.load(Ordering::Relaxed),
        end,
        "producer position"
    );
    assert_eq!(shmplane_shm::ring::poisoned(c.store()), 0);
    drop(producer);
}

/// The consumer holds record 0 (at offset 0), receives and releases record 1 in order
/// behind the hold, holds record 2, releases hold 2 then hold 0. The padding (whose
/// zero-ahead slot is record 0's header) and the fourth record (over record 0's
/// payload) wait for hold 0; record 1's release and hold 2's are given back only with
/// it.
#[test]
fn released_in_order_behind_a_hold_and_out_of_order() {
    loom::model(|| {
        let store = LoomStore::new(64);
        let producer = Producer::attach(store.clone()).unwrap();
        let mut c = Consumer::attach(store).unwrap();
        let t = thread::spawn(move || produce(producer));

        let rec = receive(&mut c, 0);
        let h0 = hold(&mut c, rec, 0);
        check_held(&c, &[&h0]);

        let rec = receive(&mut c, 1);
        check_held(&c, &[&h0]);
        c.release(rec);
        check_held(&c, &[&h0]);

        let rec = receive(&mut c, 2);
        let h2 = hold(&mut c, rec, 2);
        check_held(&c, &[&h0, &h2]);

        // Out of order: hold 0 still keeps everything from position 0.
        assert!(c.release_hold(h2.hold));
        check_held(&c, &[&h0]);
        assert!(!c.release_hold(h2.hold), "a hold released twice");
        // Nothing can follow record 2 yet: the padding needs record 0's space.
        assert!(
            c.try_peek().unwrap().is_none(),
            "a record published over a held one"
        );
        check_held(&c, &[&h0]);

        assert!(c.release_hold(h0.hold));
        check_held(&c, &[]);
        let rec = receive(&mut c, 3);
        c.release(rec);
        check_end(&mut c, t);
    });
}

/// The consumer receives record 0, holds records 1 and 2, and skips the padding at 48
/// (published once record 0 was released) behind the holds. The fourth record (over
/// record 1's header, its zero-ahead slot over record 1's payload) waits for hold 1;
/// the consumer releases hold 2 first, then hold 1, which gives back everything up to
/// the end of the padding.
#[test]
fn padding_skipped_behind_holds_released_out_of_order() {
    loom::model(|| {
        let store = LoomStore::new(64);
        let producer = Producer::attach(store.clone()).unwrap();
        let mut c = Consumer::attach(store).unwrap();
        let t = thread::spawn(move || produce(producer));

        let rec = receive(&mut c, 0);
        c.release(rec);

        let rec = receive(&mut c, 1);
        let h1 = hold(&mut c, rec, 1);
        check_held(&c, &[&h1]);

        let rec = receive(&mut c, 2);
        let h2 = hold(&mut c, rec, 2);
        check_held(&c, &[&h1, &h2]);

        // Wait for the padding, then skip it behind the holds: the fourth record cannot
        // be published yet, so the peek finds nothing after it.
        while !c.has_data() {
            thread::yield_now();
        }
        assert!(
            c.try_peek().unwrap().is_none(),
            "a record published over a held one"
        );
        check_held(&c, &[&h1, &h2]);

        // Out of order: hold 1 still keeps everything from its position.
        assert!(c.release_hold(h2.hold));
        check_held(&c, &[&h1]);

        assert!(c.release_hold(h1.hold));
        check_held(&c, &[]);
        let rec = receive(&mut c, 3);
        c.release(rec);
        check_end(&mut c, t);
    });
}

/// The byte check is not vacuous: a consumer that gives back space past a hold (here
/// stored by hand where `give_back` would, after holding records 1 and 2) lets the
/// producer write the fourth record over record 1, and `check_bytes` fails. Every
/// execution fails: the consumer looks only once the producer's position says the
/// fourth record is published.
#[test]
#[should_panic(expected = "producer overwrote a held record")]
fn give_back_past_a_hold_is_detected() {
    loom::model(|| {
        let store = LoomStore::new(64);
        let producer = Producer::attach(store.clone()).unwrap();
        let mut c = Consumer::attach(store).unwrap();
        let t = thread::spawn(move || produce(producer));

        let rec = receive(&mut c, 0);
        c.release(rec);
        let rec = receive(&mut c, 1);
        let h1 = hold(&mut c, rec, 1);
        let rec = receive(&mut c, 2);
        let h2 = hold(&mut c, rec, 2);
        check_held(&c, &[&h1, &h2]);

        // The bug: the shared position passes hold 1 (as if `release_hold(h2)` gave back
        // the end of record 2).
        let ctl = c.store().control();
        // ORDERING: Release, partner of the producer's Acquire in `consumers_position`
        // (as `store_head`).
        ctl.head
            .value
            .position
            .store(h2.hold.position() + h2.hold.size(), Ordering::Release);
        // ORDERING: Acquire, partner of `publish`'s Release store of `tail`: the fourth
        // record's payload and zero-ahead stores are visible once it reads the end.
        while ctl.tail.value.load(Ordering::Acquire) < 3 * 16 + 16 + 24 {
            thread::yield_now();
        }
        check_bytes(&c, &[&h1]);
        drop(t.join().unwrap());
    });
}

/// A holding consumer dies (is dropped without releasing) after it held record 0 and
/// received record 1 behind the hold; a copy that takes over (`Consumer::attach`, as
/// after the role lease passed) resumes after what the dead one delivered: record 2
/// is the first it gets (nothing delivered twice), the space of records 0 and 1 goes
/// back to the producer (it can write the fourth record over them), and it receives
/// the rest while the producer runs.
#[test]
fn a_copy_taking_over_from_a_dead_holder_resumes_after_what_it_delivered() {
    loom::model(|| {
        let store = LoomStore::new(64);
        let producer = Producer::attach(store.clone()).unwrap();
        let mut dead = Consumer::attach(store.clone()).unwrap();
        let t = thread::spawn(move || produce(producer));

        let rec = receive(&mut dead, 0);
        let h0 = hold(&mut dead, rec, 0);
        let rec = receive(&mut dead, 1);
        dead.release(rec);
        check_held(&dead, &[&h0]);
        drop(dead); // killed: its hold is never released

        let mut next = Consumer::attach(store).unwrap();
        for i in 2..4 {
            let rec = receive(&mut next, i);
            next.release(rec);
        }
        check_end(&mut next, t);
    });
}
