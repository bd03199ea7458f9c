//! loom model of the close protocol against a waiting peer: the sender publishes its
//! last record and closes (`Segment::close_role`'s steps: closing, let go of the lock,
//! closing → closed, wake the peer's event count) while the receiver waits in the
//! production `wait_until` (`WaitPolicy::Block`, no deadline) over the futex model
//! without timeouts, so a wake the close loses is a loom deadlock, not a late return.
//! The receiver must get the last record and then the close, never the close first
//! (the record happens-before it), never a dead peer, and never sleep forever. Run by
//! `ci/loom.sh` (LOOM_MAX_PREEMPTIONS=2).
//!
//! Real code: the ring, the event count and `wait_until`, and every access to the role
//! state (`set_state`, `swap_state`, `state`, `observe`, `classify`). Modelled: the
//! role's OFD lock (a word, as in `role.rs`), and the receiver's poll, transcribed from
//! `Receiver::wait_for_record` (`channels::flavors::spsc`): peek; on an empty ring with
//! the sender's state closed, run the peer check; the check drains a record before it
//! reports the close or death.
#![cfg(shmplane_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{payload, LoomStore};
use shmplane_shm::layout::RoleEntry;
use shmplane_shm::liveness::{self, PeerState, ATTACHED, CLOSED, CLOSING};
use shmplane_shm::ring::{Consumer, Producer, Record, RingStore};
use shmplane_shm::sync::{AtomicU32, Ordering};
use shmplane_shm::wait::{wait_until, WaitPolicy};

struct Sender {
    entry: RoleEntry,
    /// The sender role's OFD lock (the kernel's): 1 held, 0 free. Every access is an
    /// RMW: the kernel answers lock calls under one spinlock.
    lock: AtomicU32,
}

/// What the receiver's wait ends with.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Disconnected,
    PeerDead,
}

/// `check_peer` of the sender role, then the drain of `wait_for_record`'s check.
fn check(c: &mut Consumer<LoomStore>, s: &Sender) -> Result<Option<Record>, Verdict> {
    // ORDERING: SeqCst RMW query of the model lock (the kernel's spinlock; partner of
    // the sender's unlock).
    let observed = liveness::observe(&s.entry, || Ok::<bool, ()>(s.lock.fetch_add(0, Ordering::SeqCst) != 0)).unwrap();
    let verdict = match liveness::classify(&s.entry, observed, |_, _| true) {
        PeerState::Vacant | PeerState::Alive(_) => return Ok(None),
        PeerState::Closed => Verdict::Disconnected,
        PeerState::Dead(_) => Verdict::PeerDead,
    };
    // The peer's last records happen-before its close: drain them first.
    match c.try_peek().unwrap() {
        Some(r) => Ok(Some(r)),
        None => Err(verdict),
    }
}

/// One blocking receive: a record, or the sender's close.
fn recv(c: &mut Consumer<LoomStore>, s: &Sender) -> Result<Record, Verdict> {
    let result = wait_until(
        c,
        |c| (c.store().data_event(), c.store().park()),
        WaitPolicy::Block,
        None,
        |c| match c.try_peek().unwrap() {
            Some(r) => Ok(Some(r)),
            // The cheap look (one load) before the full check.
            None if liveness::state(&s.entry) == CLOSED => check(c, s),
            None => Ok(None),
        },
        |c| check(c, s).map(|_| ()),
    );
    result.map_err(|e| match e {
        shmplane_shm::wait::WaitError::Failed(v) => v,
        shmplane_shm::wait::WaitError::TimedOut => unreachable!("no deadline"),
    })
}

/// The sender publishes one record and closes while the receiver waits for two.
#[test]
fn close_wakes_a_waiting_receiver_after_its_last_record() {
    loom::model(|| {
        let store = LoomStore::new(64);
        let sender = Arc::new(Sender { entry: RoleEntry::default(), lock: AtomicU32::new(1) });
        liveness::mark_attached(&sender.entry);
        let mut producer = Producer::attach(store.clone()).unwrap();
        let mut consumer = Consumer::attach(store).unwrap();
        let t = {
            let s = sender.clone();
            thread::spawn(move || {
                let claim = producer.try_claim(8).unwrap().expect("room");
                producer.write(&claim, 0, &payload(1, 8));
                producer.commit(claim, 8, 1);
                // Segment::close_role, the owner's path.
                liveness::set_state(&s.entry, CLOSING);
                // ORDERING: SeqCst RMW unlock, partner of the receiver's query. An RMW,
                // as every model lock call (see `role.rs`; a plain store would also
                // meet loom's tokio-rs/loom#254 against the receiver's RMW query).
                s.lock.swap(0, Ordering::SeqCst);
                // ORDERING: SeqCst RMW query (held_after_grace), as above.
                if s.lock.fetch_add(0, Ordering::SeqCst) != 0 {
                    liveness::swap_state(&s.entry, CLOSING, ATTACHED);
                } else {
                    liveness::swap_state(&s.entry, CLOSING, CLOSED);
                    producer.store().data_event().wake_all(producer.store().park());
                }
            })
        };
        let rec = recv(&mut consumer, &sender).expect("the last record comes before the close");
        assert_eq!(rec.tag(), 1);
        let mut out = [0u8; 8];
        consumer.read(&rec, 0, &mut out);
        assert_eq!(out[..], payload(1, 8)[..]);
        consumer.release(rec);
        assert_eq!(recv(&mut consumer, &sender).unwrap_err(), Verdict::Disconnected);
        t.join().unwrap();
    });
}
