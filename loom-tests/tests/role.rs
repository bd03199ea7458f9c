//! loom models of role claim and close (`shmplane_shm::liveness`, composed as
//! `shmplane_shm::segment` composes it): a holder claims a role and closes it, possibly
//! dying after any step, while a second process tries to claim the role and a survivor
//! classifies it (alive, closed, dead). Run by `ci/loom.sh` (LOOM_MAX_PREEMPTIONS=2).
//!
//! What is real and what is modelled: the role entry's state word and every load and
//! store of it are the production functions (`mark_attached`, `set_state`,
//! `swap_state`, `observe`, `classify`). The role's OFD lock is the kernel's, so it is
//! a model word here: 0 free, else the holder's description (each `fcntl` lock call
//! takes the kernel's lock-table spinlock, so every model lock call is a `SeqCst` RMW,
//! queries included: an answer is never older than the last lock or unlock). A
//! process's death is a model flag set before the kernel drops its lock. The steps
//! of `Segment::claim_role` (lock, mark attached) and `Segment::close_role` (mark
//! closing, let go of the lock, look whether another description still holds it after
//! the fork grace, then closing → closed or back to attached) are transcribed from
//! there, in that order.
//!
//! Oracles (model-only flags, `SeqCst`, each set at the point the comment says):
//! - the survivor never classifies a live holder as dead or closed: a holder that had
//!   finished its claim before the survivor looked, and had neither begun closing nor
//!   died when the survivor was done, must read alive;
//! - `Dead` only if some holder died; `Closed` only if some holder began a close;
//! - a claim never succeeds while a live holder still holds the role;
//! - a close never marks a newer holder's role closed: a surviving new holder ends
//!   attached.
#![cfg(shmplane_loom)]

use loom::sync::Arc;
use loom::thread;
use shmplane_shm::layout::RoleEntry;
use shmplane_shm::liveness::{self, PeerState, ATTACHED, CLOSED, CLOSING};
use shmplane_shm::sync::{AtomicU32, Ordering};

/// Description ids in the lock word (one bit each: a description is counted in
/// `descs` for the fork model).
const A: u32 = 1;
const B: u32 = 2;

struct World {
    entry: RoleEntry,
    /// The role's OFD lock (the kernel's): 0 free, else the holding description's id,
    /// with the number of open references to it in bits 8.. (a forked child shares
    /// its parent's description, and with it the lock, until both close it).
    lock: AtomicU32,
    /// Oracle: bit per description whose holder finished its claim (set after
    /// `mark_attached`).
    attached: AtomicU32,
    /// Oracle: bit per holder that began a close (set before it stores CLOSING).
    closing: AtomicU32,
    /// Oracle: bit per holder that died (set before the kernel drops its lock).
    dead: AtomicU32,
}

fn world() -> Arc<World> {
    Arc::new(World {
        entry: RoleEntry::default(),
        lock: AtomicU32::new(0),
        attached: AtomicU32::new(0),
        closing: AtomicU32::new(0),
        dead: AtomicU32::new(0),
    })
}

const REF: u32 = 1 << 8;

impl World {
    /// `F_OFD_SETLK`: take the lock for description `me` (`refs` references to it).
    fn try_lock(&self, me: u32, refs: u32) -> bool {
        // ORDERING: SeqCst RMW, as every model lock call: the kernel's spinlock orders
        // lock, unlock and query (partners: `drop_ref`, `lock_held`).
        self.lock.compare_exchange(0, me | (refs * REF), Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }

    /// One reference to description `me` closes (its process closed the descriptor or
    /// died): the lock goes with the last one.
    fn drop_ref(&self, me: u32) {
        // ORDERING: a first guess; the CAS below is the unlock (partner of `try_lock`).
        let mut cur = self.lock.load(Ordering::SeqCst);
        loop {
            assert_eq!(cur & (REF - 1), me, "description {me} dropped a lock it does not hold");
            let next = if cur / REF <= 1 { 0 } else { cur - REF };
            // ORDERING: SeqCst RMW (see `try_lock`).
            match self.lock.compare_exchange(cur, next, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return,
                Err(now) => cur = now,
            }
        }
    }

    /// `F_OFD_GETLK` from a description that holds nothing: is the lock held? (An RMW:
    /// the kernel answers under the spinlock that lock and unlock take, so the answer
    /// is never older than the last of them.)
    fn lock_held(&self) -> bool {
        // ORDERING: SeqCst RMW (see `try_lock`).
        self.lock.fetch_add(0, Ordering::SeqCst) != 0
    }

    fn holds(&self, me: u32) -> bool {
        // ORDERING: SeqCst RMW (see `try_lock`).
        self.lock.fetch_add(0, Ordering::SeqCst) & (REF - 1) == me
    }

    /// The survivor's look at the role, as `Segment::peer_state` takes it (no copies
    /// use the role's lease here: the lease has models of its own in `lease.rs`).
    fn peer_state(&self) -> PeerState {
        let observed = liveness::observe(&self.entry, || Ok::<bool, ()>(self.lock_held())).unwrap();
        liveness::classify(&self.entry, observed, |_, _| true)
    }
}

/// How far the first holder gets before its process dies (`Done`: it never dies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// After taking the lock, before marking the role attached.
    Locked,
    /// Attached (a holder that dies while it uses the role).
    Attached,
    /// After marking the role closing, before letting go of the lock.
    Closing,
    /// After letting go of the lock, before closing → closed.
    Unlocked,
    /// Claims and closes, and lives on.
    Done,
}

/// Holder A: claim, then close; dies after `stop` (if it got the lock at all).
fn holder_a(w: &World, stop: Stop) {
    let die = |w: &World| {
        // ORDERING: SeqCst oracle flag, before the kernel drops the lock (partner: the
        // survivor's and B's loads of the flags).
        w.dead.fetch_or(A, Ordering::SeqCst);
        if w.holds(A) {
            w.drop_ref(A);
        }
    };
    // Segment::claim_role: the lock, then the state.
    if !w.try_lock(A, 1) {
        return; // RoleTaken (B was first)
    }
    if stop == Stop::Locked {
        return die(w);
    }
    liveness::mark_attached(&w.entry);
    // ORDERING: SeqCst oracle flag, after the claim (partner: the survivor's loads).
    w.attached.fetch_or(A, Ordering::SeqCst);
    if stop == Stop::Attached {
        return die(w);
    }
    // Segment::close_role, the owner's path.
    // ORDERING: SeqCst oracle flag, before CLOSING (partner: the survivor's loads).
    w.closing.fetch_or(A, Ordering::SeqCst);
    liveness::set_state(&w.entry, CLOSING);
    if stop == Stop::Closing {
        return die(w);
    }
    w.drop_ref(A);
    if stop == Stop::Unlocked {
        return die(w);
    }
    // held_after_grace: the lock is free once the grace is over, or held (B claimed).
    if w.lock_held() {
        liveness::swap_state(&w.entry, CLOSING, ATTACHED);
    } else {
        liveness::swap_state(&w.entry, CLOSING, CLOSED);
    }
}

/// Claimer B: one attempt (a taken role is an error, not a wait); it never dies.
fn claimer_b(w: &World) -> bool {
    if !w.try_lock(B, 1) {
        return false;
    }
    // Never while A lives and holds the role: A let go of the lock (its close began,
    // or it died).
    // ORDERING: SeqCst oracle loads, partners of A's flag RMWs.
    let (closing, dead) = (w.closing.load(Ordering::SeqCst), w.dead.load(Ordering::SeqCst));
    assert!(closing & A != 0 || dead & A != 0 || w.attached.load(Ordering::SeqCst) & A == 0, "B took a live holder's role");
    liveness::mark_attached(&w.entry);
    // ORDERING: SeqCst oracle flag, after the claim (partner: the survivor's loads).
    w.attached.fetch_or(B, Ordering::SeqCst);
    true
}

/// The survivor's classification, checked against what the holders did around it.
fn survivor(w: &World) {
    // ORDERING: SeqCst oracle loads around the look, partners of the holders' RMWs.
    let before = w.attached.load(Ordering::SeqCst);
    let seen = w.peer_state();
    let (closing, dead) = (w.closing.load(Ordering::SeqCst), w.dead.load(Ordering::SeqCst));
    // A holder attached before the look that neither began closing nor died by its end.
    let live = before & !closing & !dead;
    match seen {
        PeerState::Alive(_) => {}
        PeerState::Dead(_) => assert!(dead != 0 && live == 0, "dead, but nobody died (live holders {live:#b})"),
        PeerState::Closed => assert!(closing != 0 && live == 0, "closed, but no close began (live holders {live:#b})"),
        PeerState::Vacant => assert!(live == 0, "vacant while holder(s) {live:#b} lived"),
    }
}

fn role_model(stop: Stop) {
    loom::model(move || {
        let w = world();
        let a = {
            let w = w.clone();
            thread::spawn(move || holder_a(&w, stop))
        };
        let b = {
            let w = w.clone();
            thread::spawn(move || claimer_b(&w))
        };
        survivor(&w);
        a.join().unwrap();
        let b_claimed = b.join().unwrap();
        let state = liveness::state(&w.entry);
        if b_claimed {
            assert_eq!(state, ATTACHED, "a close marked the newer holder's role {state}");
            assert!(matches!(w.peer_state(), PeerState::Alive(_)), "B lives and holds the role");
        } else {
            let want = match stop {
                Stop::Locked => PeerState::Vacant,
                Stop::Attached => PeerState::Dead(0),
                Stop::Closing | Stop::Unlocked | Stop::Done => PeerState::Closed,
            };
            assert_eq!(w.peer_state(), want, "after A stopped at {stop:?}");
        }
    });
}

/// A claims and closes cleanly while B claims and the survivor looks.
#[test]
fn claim_and_close_race_a_claimer_and_a_survivor() {
    role_model(Stop::Done);
}

/// A dies after taking the lock, before marking the role attached.
#[test]
fn holder_dies_between_lock_and_attach() {
    role_model(Stop::Locked);
}

/// A dies while attached (no close at all).
#[test]
fn holder_dies_attached() {
    role_model(Stop::Attached);
}

/// A dies after marking the role closing, holding the lock.
#[test]
fn holder_dies_while_closing_with_the_lock() {
    role_model(Stop::Closing);
}

/// A dies after letting go of the lock, before closing → closed.
#[test]
fn holder_dies_after_letting_go_of_the_lock() {
    role_model(Stop::Unlocked);
}

/// A closes while a forked child still shares its description (and so the lock): the
/// role lives on in the child, the survivor never reads it closed or dead, and the
/// close puts it back to attached.
#[test]
fn close_with_a_forked_copy_keeps_the_role() {
    loom::model(|| {
        let w = world();
        assert!(w.try_lock(A, 2)); // parent and child share description A
        liveness::mark_attached(&w.entry);
        let a = {
            let w = w.clone();
            thread::spawn(move || {
                liveness::set_state(&w.entry, CLOSING);
                w.drop_ref(A);
                if w.lock_held() {
                    liveness::swap_state(&w.entry, CLOSING, ATTACHED);
                } else {
                    liveness::swap_state(&w.entry, CLOSING, CLOSED);
                }
            })
        };
        let seen = w.peer_state();
        assert!(matches!(seen, PeerState::Alive(_)), "the child holds the role: {seen:?}");
        a.join().unwrap();
        assert_eq!(liveness::state(&w.entry), ATTACHED);
        assert!(matches!(w.peer_state(), PeerState::Alive(_)));
    });
}
