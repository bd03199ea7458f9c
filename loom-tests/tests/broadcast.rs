//! loom models of the broadcast cursor protocol (`shmplane_shm::broadcast`): one
//! publisher, subscribers with cursors of their own over one record ring.
//!
//! - Lossless: a subscriber joins (provisional cursor, ticket, fence, re-read) while
//!   the publisher wraps a tiny ring; the joiner must receive an unbroken, untorn
//!   suffix of the stream, and the subscriber already there every record.
//! - Lossless: a subscriber that stops is deactivated by the publisher (its ticket's
//!   compare-and-swap) while a new subscriber takes its line over; the new one must
//!   never be dropped by the stale ticket.
//! - Lossy: the publisher never waits and reclaims behind itself (seqlocked oldest
//!   record, Release fence before it overwrites); a subscriber racing it must accept
//!   only intact records, and every `Lagged { missed }` must account exactly for the
//!   records it skipped.
//!
//! Run by `ci/loom.sh` (LOOM_MAX_PREEMPTIONS=2).
#![cfg(shmplane_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{payload, FutexModel};
use shmplane_shm::broadcast;
use shmplane_shm::layout::{BroadcastControl, EventCount, RingControl, SubscriberCursor};
use shmplane_shm::ring::{Consumer, Producer, RingError, RingStore};
use shmplane_shm::sync::{AtomicU64, Ordering};

struct Model {
    ctl: RingControl,
    words: Vec<AtomicU64>,
    bc: BroadcastControl,
    cursors: Vec<SubscriberCursor>,
    futex: FutexModel,
    lossy: bool,
}

/// A handle on the model as the publisher (`sub: None`) or subscriber `sub`: the
/// store hooks of `SegmentRing::broadcast`, over loom atomics.
#[derive(Clone)]
struct Store {
    m: Arc<Model>,
    sub: Option<usize>,
}

fn model(capacity: usize, subs: usize, lossy: bool) -> Arc<Model> {
    Arc::new(Model {
        ctl: RingControl::default(),
        words: (0..capacity / 8).map(|_| AtomicU64::new(0)).collect(),
        bc: BroadcastControl::default(),
        cursors: (0..subs).map(|_| SubscriberCursor::default()).collect(),
        futex: FutexModel::default(),
        lossy,
    })
}

impl Store {
    fn cursor(&self) -> &SubscriberCursor {
        &self.m.cursors[self.sub.expect("a subscriber")]
    }

    fn join(&self) -> u64 {
        let i = self.sub.expect("a subscriber");
        if self.m.lossy {
            broadcast::join_lossy(&self.m.bc, &self.m.cursors[i], i)
        } else {
            broadcast::join_lossless(&self.m.bc, &self.m.cursors[i], i, &self.m.ctl.tail.value)
        }
    }
}

// SAFETY: as `loom_tests::LoomStore`: the data area is `words`, and `header`, `read`
// and `write` assert their ranges.
unsafe impl RingStore for Store {
    type Park = FutexModel;

    fn control(&self) -> &RingControl {
        &self.m.ctl
    }

    fn capacity(&self) -> usize {
        self.m.words.len() * 8
    }

    fn header(&self, offset: usize) -> &AtomicU64 {
        assert!(offset % 8 == 0 && offset < self.capacity(), "header offset {offset}");
        &self.m.words[offset / 8]
    }

    unsafe fn write(&self, offset: usize, src: &[u8]) {
        assert!(offset % 8 == 0 && offset + src.len() <= self.capacity() && src.len() % 8 == 0);
        for (i, chunk) in src.chunks(8).enumerate() {
            self.m.words[offset / 8 + i].store(u64::from_le_bytes(chunk.try_into().unwrap()), Ordering::Relaxed);
        }
    }

    unsafe fn read(&self, offset: usize, dst: *mut u8, len: usize) {
        assert!(offset % 8 == 0 && offset + len <= self.capacity() && len % 8 == 0);
        for i in 0..len / 8 {
            let bytes = self.m.words[offset / 8 + i].load(Ordering::Relaxed).to_le_bytes();
            // SAFETY: `dst` is valid for `len` writes (the caller's contract).
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst.add(8 * i), 8) };
        }
    }

    fn park(&self) -> &FutexModel {
        &self.m.futex
    }

    fn data_event(&self) -> &EventCount {
        &self.m.ctl.data_ready.value
    }

    fn head_word(&self) -> &AtomicU64 {
        match self.sub {
            Some(i) => &self.m.cursors[i].position,
            None => &self.m.ctl.head.value.position,
        }
    }

    fn store_head(&self, head: u64, tag: u32) {
        broadcast::store_position(self.cursor(), head, broadcast::starts_message(tag), self.m.lossy);
    }

    fn consumers_position(&self, floor: u64, tail: u64, need: u64) -> Result<u64, RingError> {
        if self.m.lossy {
            if need == 0 {
                return Ok(broadcast::oldest_position(&self.m.bc.oldest.value));
            }
            return broadcast::reclaim(self, &self.m.bc.oldest.value, tail, need);
        }
        Ok(broadcast::slowest(&self.m.bc, self.m.cursors.len(), |i| &self.m.cursors[i], floor, tail))
    }

    fn published(&self, tail: u64, tag: u32) {
        if self.m.lossy {
            let (_, seq) = broadcast::read_pair(&self.m.bc.newest.value);
            broadcast::write_pair(&self.m.bc.newest.value, tail, seq.wrapping_add(u64::from(broadcast::starts_message(tag))));
        }
    }

    fn overrun(&self, position: u64) -> bool {
        self.m.lossy && broadcast::overrun(&self.m.bc.oldest.value, position)
    }

    fn skip_to_oldest(&self, head: u64) -> Option<(u64, u64)> {
        broadcast::skip_to_oldest(&self.m.bc.oldest.value, self.cursor(), head)
    }

    fn lossy(&self) -> bool {
        self.m.lossy && self.sub.is_none()
    }
}

/// Payload bytes of every record: 16, so a record takes 24 bytes and a 64-byte ring
/// wraps with a padding record at its third.
const LEN: usize = 16;

/// Publish record `i` (`LEN` payload bytes, tag `i + 1`), spinning while the ring is full.
fn publish(p: &mut Producer<Store>, i: u8) {
    let claim = loop {
        if let Some(c) = p.try_claim(LEN).unwrap() {
            break c;
        }
        thread::yield_now();
    };
    p.write(&claim, 0, &payload(i, LEN));
    p.commit(claim, LEN, u32::from(i) + 1);
}

/// Take the next record if there is one: `Ok(Some(i))` for intact record `i`.
fn take(c: &mut Consumer<Store>) -> Result<Option<u8>, RingError> {
    let Some(rec) = c.try_peek()? else { return Ok(None) };
    let mut out = [0u8; LEN];
    c.read(&rec, 0, &mut out);
    let i = (rec.tag() - 1) as u8;
    c.release_read(rec)?;
    assert_eq!(out.to_vec(), payload(i, LEN), "torn record {i} accepted");
    Ok(Some(i))
}

/// A subscriber joins while the publisher wraps the ring (64 bytes: two records fit,
/// the third wraps after a padding record; with nobody subscribed it never waits):
/// the joiner gets an unbroken, untorn suffix of the stream, and from the moment its
/// join counts, the publisher never overwrites what it has not read.
#[test]
fn lossless_join_while_the_publisher_wraps() {
    loom::model(|| {
        const N: u8 = 4;
        let m = model(64, 1, false);
        let mut publisher = Producer::attach(Store { m: m.clone(), sub: None }).unwrap();
        let pub_thread = thread::spawn(move || {
            for i in 0..N {
                publish(&mut publisher, i);
            }
        });
        let store = Store { m, sub: Some(0) };
        let start = store.join();
        // Records at 0, 24, (padding 48..64) 64, 88, (padding 112..128).
        let mut next = match start {
            0 => 0,
            24 => 1,
            48 | 64 => 2,
            88 => 3,
            _ => N,
        };
        let mut c = Consumer::attach(store).unwrap();
        while next < N {
            match take(&mut c).unwrap() {
                Some(i) => {
                    assert_eq!(i, next, "joiner skipped or repeated");
                    next += 1;
                }
                None => thread::yield_now(),
            }
        }
        pub_thread.join().unwrap();
    });
}

/// Two subscribers gate the publisher (the scan's minimum): each gets every record.
#[test]
fn lossless_two_subscribers_gate_the_publisher() {
    loom::model(|| {
        const N: u8 = 3;
        let m = model(64, 2, false);
        let subs: Vec<Store> = (0..2).map(|i| Store { m: m.clone(), sub: Some(i) }).collect();
        for s in &subs {
            s.join();
        }
        let mut publisher = Producer::attach(Store { m: m.clone(), sub: None }).unwrap();
        let mut consumers: Vec<Consumer<Store>> = subs.into_iter().map(|s| Consumer::attach(s).unwrap()).collect();
        let mut second = consumers.pop().unwrap();
        let mut first = consumers.pop().unwrap();
        let other = thread::spawn(move || {
            let mut next = 0;
            while next < N {
                match take(&mut second).unwrap() {
                    Some(i) => {
                        assert_eq!(i, next);
                        next += 1;
                    }
                    None => thread::yield_now(),
                }
            }
        });
        let mut next = 0;
        for i in 0..N {
            // Publish, reading what this subscriber can meanwhile (the ring holds two).
            loop {
                if let Some(c) = publisher.try_claim(LEN).unwrap() {
                    publisher.write(&c, 0, &payload(i, LEN));
                    publisher.commit(c, LEN, u32::from(i) + 1);
                    break;
                }
                if let Some(got) = take(&mut first).unwrap() {
                    assert_eq!(got, next);
                    next += 1;
                }
                thread::yield_now();
            }
        }
        while next < N {
            match take(&mut first).unwrap() {
                Some(got) => {
                    assert_eq!(got, next);
                    next += 1;
                }
                None => thread::yield_now(),
            }
        }
        other.join().unwrap();
    });
}

/// The publisher drops a subscriber it found gone (CAS of the ticket it read) while a
/// new subscriber joins on the same line: the newcomer's ticket always survives.
#[test]
fn a_stale_ticket_never_drops_the_next_subscriber() {
    loom::model(|| {
        let m = model(64, 1, false);
        let old = Store { m: m.clone(), sub: Some(0) };
        old.join();
        let seen = broadcast::ticket(&m.cursors[0]);
        let newcomer = thread::spawn({
            let m = m.clone();
            move || {
                Store { m: m.clone(), sub: Some(0) }.join();
                broadcast::ticket(&m.cursors[0])
            }
        });
        let dropped = broadcast::deactivate(&m.cursors[0], seen);
        let mine = newcomer.join().unwrap();
        assert_ne!(mine, seen);
        // Whatever the order, the line ends active with the newcomer's ticket.
        assert_eq!(broadcast::ticket(&m.cursors[0]), mine, "dropped={dropped}");
    });
}

/// A lossy publisher laps a subscriber in a 64-byte ring (two records and a
/// padding record per lap): the
/// subscriber accepts only intact records, in order, and each `Lagged { missed }`
/// accounts exactly for the records it jumped over.
#[test]
fn lossy_subscriber_racing_the_publisher() {
    loom::model(|| {
        const N: u8 = 4;
        let m = model(64, 1, true);
        let sub = Store { m: m.clone(), sub: Some(0) };
        sub.join();
        let mut publisher = Producer::attach(Store { m: m.clone(), sub: None }).unwrap();
        let mut c = Consumer::attach(sub).unwrap();
        let pub_thread = thread::spawn(move || {
            for i in 0..N {
                publish(&mut publisher, i);
            }
        });
        let mut next = 0u64;
        let mut tries = 0;
        while next < u64::from(N) && tries < 12 {
            tries += 1;
            match take(&mut c) {
                Ok(Some(i)) => {
                    assert_eq!(u64::from(i), next, "out of order");
                    next += 1;
                }
                Ok(None) => thread::yield_now(),
                Err(RingError::Lagged { missed }) => {
                    assert!(missed > 0, "a lag that missed nothing");
                    next += missed;
                    assert!(next <= u64::from(N), "missed more than was published");
                }
                Err(e) => panic!("{e}"),
            }
        }
        pub_thread.join().unwrap();
        // Whatever is left is the rest of the stream, in order.
        loop {
            match take(&mut c) {
                Ok(Some(i)) => {
                    assert_eq!(u64::from(i), next);
                    next += 1;
                }
                Ok(None) => break,
                Err(RingError::Lagged { missed }) => next += missed,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(next, u64::from(N), "the stream did not end at its last record");
    });
}
