//! loom models of the role lease (`shmplane_shm::lease`): copies of one endpoint role
//! in different processes (threads here) take turns, each operation whole, and a copy
//! that takes the lease over sees everything the previous holder did. The protected
//! data is a loom `UnsafeCell`, so an operation of one copy overlapping another's, or
//! a handover without happens-before, is a loom failure. Run by `ci/loom.sh`
//! (LOOM_MAX_PREEMPTIONS=2).
//!
//! The models use the RMW form of the Dekker pair (`shmplane_shm::sync`), which stands
//! for the membarrier form loom cannot model.
#![cfg(shmplane_loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use shmplane_shm::layout::RoleEntry;
use shmplane_shm::lease::{Acquired, CopyId, Copies, Lease};
use shmplane_shm::liveness::key_of;
use shmplane_shm::sync::{AtomicU32, Ordering};

struct Shared {
    entry: RoleEntry,
    /// What the role protects (the cached position a copy trusts while it holds the
    /// lease): only ever touched inside an operation.
    position: UnsafeCell<u64>,
    /// Copies whose processes died (bit per copy).
    dead: AtomicU32,
}

fn id(n: u32) -> CopyId {
    CopyId { key: key_of(100 + n, 7), copy: n, generation: 0 }
}

/// Liveness by the `dead` bits (claims always succeed: the model has no other
/// claimants of an entry than the lease's own CAS).
struct Model<'a>(&'a Shared);

impl Copies for Model<'_> {
    fn alive(&self, _index: usize, key: u64) -> bool {
        let pid = (key >> 42) as u32;
        self.0.dead.load(Ordering::Acquire) & (1 << (pid - 100)) == 0
    }
    fn claim(&mut self, _index: usize) -> bool {
        true
    }
    fn unclaim(&mut self, _index: usize) {}
}

fn alive(shared: &Shared) -> Model<'_> {
    Model(shared)
}

/// Enter an operation as `me`: the hot path, else take the lease (yielding while
/// another copy is inside one).
fn enter(shared: &Shared, lease: &mut Lease, me: CopyId) {
    if lease.try_enter(&shared.entry, 0) {
        return;
    }
    loop {
        match lease.try_acquire(&shared.entry, me, true, &mut alive(shared)).expect("a free copy entry") {
            Acquired::Entered => return,
            Acquired::Busy { .. } => thread::yield_now(),
        }
    }
}

/// One operation: read-modify-write the protected position.
fn operate(shared: &Shared, lease: &mut Lease, me: CopyId) {
    enter(shared, lease, me);
    shared.position.with_mut(|p| {
        // SAFETY: inside an operation, which the lease makes exclusive (what loom checks).
        unsafe { *p += 1 }
    });
    lease.exit(&shared.entry);
}

/// One operation with a private cache of the position, as endpoints keep one: re-read
/// from the shared position when the lease was (re)acquired, trusted on the hot path.
fn operate_cached(shared: &Shared, lease: &mut Lease, me: CopyId, cache: &mut u64, non_blocking_first: bool) {
    let fast = lease.try_enter(&shared.entry, 0);
    if !fast {
        if non_blocking_first {
            // A try_send-style attempt first: one try, and give up (cancel) if busy.
            match lease.try_acquire(&shared.entry, me, true, &mut alive(shared)).expect("a free copy entry") {
                Acquired::Entered => {}
                Acquired::Busy { .. } => {
                    lease.cancel(&shared.entry);
                    // Then the blocking attempt, as the binding does.
                    return operate_cached(shared, lease, me, cache, false);
                }
            }
        } else {
            enter(shared, lease, me);
        }
        // Entered by the slow path: the cache is re-read.
        // SAFETY: inside an operation.
        shared.position.with(|p| *cache = unsafe { *p });
    }
    *cache += 1;
    // SAFETY: inside an operation.
    shared.position.with_mut(|p| unsafe { *p = *cache });
    lease.exit(&shared.entry);
}

fn shared() -> Arc<Shared> {
    Arc::new(Shared { entry: RoleEntry::default(), position: UnsafeCell::new(0), dead: AtomicU32::new(0) })
}

/// Two copies, each doing two operations, contending from the start: operations never
/// overlap and none is lost (4 increments), whoever holds the lease when.
#[test]
fn copies_take_turns_and_lose_nothing() {
    loom::model(|| {
        let s = shared();
        let s2 = s.clone();
        let t = thread::spawn(move || {
            let mut lease = Lease::new();
            for _ in 0..2 {
                operate(&s2, &mut lease, id(2));
            }
        });
        let mut lease = Lease::new();
        for _ in 0..2 {
            operate(&s, &mut lease, id(1));
        }
        t.join().unwrap();
        s.position.with(|p| {
            // SAFETY: both threads are done.
            assert_eq!(unsafe { *p }, 4);
        });
    });
}

/// A copy holding the lease on the hot path while another takes it over: the holder's
/// next operation finds it gone and takes it back; each operation sees the previous
/// one's write.
#[test]
fn holder_on_the_hot_path_loses_the_lease_safely() {
    loom::model(|| {
        let s = shared();
        let mut lease = Lease::new();
        operate(&s, &mut lease, id(1)); // now the holder, on the hot path from here on
        let s2 = s.clone();
        let t = thread::spawn(move || {
            let mut lease = Lease::new();
            operate(&s2, &mut lease, id(2));
        });
        operate(&s, &mut lease, id(1));
        t.join().unwrap();
        s.position.with(|p| {
            // SAFETY: both threads are done.
            assert_eq!(unsafe { *p }, 3);
        });
    });
}

/// A copy that tried once without waiting (took the lease, found the other copy
/// active, gave up) and then operates: its cache must be re-read, never trusted on the
/// strength of a lease it took but never entered with (a bug this model caught: lost
/// messages when two processes sent through copies of one sender).
#[test]
fn a_cancelled_attempt_does_not_make_the_cache_trusted() {
    loom::model(|| {
        let s = shared();
        let mut lease = Lease::new();
        let mut cache = 0;
        operate_cached(&s, &mut lease, id(1), &mut cache, false);
        let s2 = s.clone();
        let t = thread::spawn(move || {
            let mut lease = Lease::new();
            let mut cache = 0;
            operate_cached(&s2, &mut lease, id(2), &mut cache, true);
        });
        operate_cached(&s, &mut lease, id(1), &mut cache, false);
        t.join().unwrap();
        s.position.with(|p| {
            // SAFETY: both threads are done.
            assert_eq!(unsafe { *p }, 3, "an operation worked from a stale cache");
        });
    });
}

/// A copy killed inside an operation (its `active` flag stays set) does not block a
/// copy in another process, which takes over once the death is known.
#[test]
fn copy_killed_mid_operation_does_not_block_the_others() {
    loom::model(|| {
        let s = shared();
        let s2 = s.clone();
        let t = thread::spawn(move || {
            let mut lease = Lease::new();
            enter(&s2, &mut lease, id(1));
            // Killed here: never exits. Its process is then known dead.
            s2.dead.fetch_or(1 << 1, Ordering::Release);
        });
        t.join().unwrap();
        let mut lease = Lease::new();
        enter(&s, &mut lease, id(2));
        lease.exit(&s.entry);
    });
}

/// A copy closing (giving up the lease and its entry) while another acquires: the
/// other gets the lease, and the closer's entry is free for reuse.
#[test]
fn close_while_another_copy_acquires() {
    loom::model(|| {
        let s = shared();
        let mut lease = Lease::new();
        operate(&s, &mut lease, id(1));
        let s2 = s.clone();
        let t = thread::spawn(move || {
            let mut lease = Lease::new();
            operate(&s2, &mut lease, id(2));
            lease.release(&s2.entry, id(2), &mut alive(&s2));
        });
        lease.release(&s.entry, id(1), &mut alive(&s));
        t.join().unwrap();
        let mut again = Lease::new();
        operate(&s, &mut again, id(3));
        s.position.with(|p| {
            // SAFETY: both threads are done.
            assert_eq!(unsafe { *p }, 3);
        });
    });
}
