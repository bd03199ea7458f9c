//! Role leases: which copy of an endpoint may operate on its role now.
//!
//! An endpoint can exist in several processes at once: inherited by `fork`, pickled to
//! a `spawn` child, kept by the parent (as `multiprocessing.Pipe` users do). All copies
//! share one open file description, so the role lock of [`crate::liveness`] cannot tell
//! them apart. Each copy keeps private caches of the shared positions (the producer's
//! tail, the consumer's head): a copy that trusted its cache after another copy had
//! moved the position would overwrite or repeat messages. The shared positions are the
//! truth; the lease says when a copy's cache may be trusted.
//!
//! # Protocol
//! Each role entry has a `lease` word (which copy may operate) and a table of the
//! copies that have used the role, each with a `state` that only its owner writes:
//! idle, *active* (inside one operation: a send or receive of one whole message), or
//! *waiting* (it wants the lease).
//!
//! ```text
//! operation (hot path, every send/receive)      acquire (rare: another copy held it)
//!   copies[me].state = ACTIVE                      copies[me].state = WAITING
//!   light fence (compiler only)                    unless the holder is WAITING itself:
//!   if lease != my token: state = IDLE; acquire        lease = CAS(cur → count+1 | me)
//!   ... use the private caches ...                     heavy fence (membarrier)
//!   copies[me].state = IDLE (Release)              if another live copy is ACTIVE: Busy
//!                                                  state = ACTIVE, check the lease again,
//!                                                  resync the caches from shared memory
//! ```
//!
//! The state store and the lease check are a Dekker pair ordered by the asymmetric
//! fence of [`crate::sync`]: either the operating copy sees the new lease (and stays
//! out), or the acquiring copy sees it active (and waits until it is done: its Release
//! store of `IDLE` makes everything the operation wrote visible to the resync). Copies
//! are therefore *serialised*: each operation runs whole under one copy, messages
//! interleave whole, and a copy that takes over starts from the shared positions. The
//! hot path costs two plain stores and one load of lines its own copy owns; the heavy
//! fence (15 µs) is paid only when the lease changes hands.
//!
//! Turns are fair: a copy that wants the lease takes it even from a copy that is
//! active (which can then start no further operation) and waits for that operation to
//! end, and a copy never takes the lease from one that is *waiting* for its turn. So
//! two copies used at once alternate, instead of the busier one starving the other.
//!
//! States are per copy, never shared: a copy that has lost the lease writes its own
//! state before it finds out, which must not overwrite the state of the copy that holds
//! the lease now.
//!
//! A copy whose process died keeps its entry until another copy reclaims it; its state
//! is ignored once the copy is gone ([`Copies::alive`]: its process key, pid plus start
//! time, names no live process, or its claim on the entry, a byte-range lock on its own
//! close-on-exec descriptor, was released by death or `exec`), so a copy killed or
//! exec'd mid-operation never blocks the others, and a reused pid is not mistaken for
//! it.
//!
//! Sources: Dekker's mutual exclusion; biased locking (Kawachiya, Koseki and Onodera,
//! "Lock Reservation", OOPSLA 2002: the owner's fast path has no atomic RMW, a revoker
//! pays); asymmetric fences as in liburcu (see [`crate::process`]). Checked by loom in
//! `loom-tests/tests/lease.rs` (the RMW form of the fence pair).

use crate::layout::{CopyEntry, RoleEntry, MAX_COPIES};
use crate::liveness::key_pid;
use crate::sync::{heavy_fence, load_after_store_u64, Ordering};

/// Copy state: not using the role.
pub const IDLE: u32 = 0;
/// Copy state: inside an operation.
pub const ACTIVE: u32 = 1;
/// Copy state: waiting for its turn (wants the lease).
pub const WAITING: u32 = 2;

/// Low bits of a lease value that hold the copy index.
const INDEX_BITS: u32 = 4;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;
const NO_INDEX: usize = usize::MAX;

// Every copy index fits the lease word's index bits.
const _: () = assert!(MAX_COPIES as u64 <= INDEX_MASK + 1);

/// Who a copy is: the process it runs in and its number in that process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CopyId {
    /// Process key ([`crate::liveness::key_of`]).
    pub key: u64,
    /// Copy number, unique within the process and never 0.
    pub copy: u32,
    /// Fork generation of the process when the id was taken (a forked child has a new
    /// key, and must never treat the parent's entry as its own).
    pub generation: u64,
}

/// Result of [`Lease::try_acquire`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquired {
    /// This copy holds the lease and is inside an operation (call [`Lease::exit`] when
    /// done). Its private caches may be stale: re-read them from shared memory first.
    Entered,
    /// Another copy (in process `pid`) is inside an operation or waiting for its turn:
    /// wait a little and call `try_acquire` again, or [`Lease::cancel`].
    Busy {
        /// Process id of the busy copy.
        pid: u32,
    },
}

/// How the lease learns whether a copy lives, and how a copy stakes its claim to an
/// entry. Production ([`crate::segment`]) pairs the process key (pid and start time)
/// with a byte-range lock per copy entry, held on a close-on-exec descriptor of the
/// copy's own, so that death, `exec` and a pid reused by another process all read as
/// gone; models and heap tests plug in their own.
pub trait Copies {
    /// True if the copy owning entry `index`, in the process named by `key`, lives.
    fn alive(&self, index: usize, key: u64) -> bool;
    /// Stake this copy's claim to entry `index` before taking it (`false`: a live copy
    /// holds it).
    fn claim(&mut self, index: usize) -> bool;
    /// Give back the claim to entry `index` (the entry was not taken after all, or the
    /// copy closes).
    fn unclaim(&mut self, index: usize);
}

/// Every copy entry of the role is taken by a live process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyCopies;

/// One copy's view of a role's lease: which copy entry is its own and which lease value
/// it wrote last. Process-private; one per endpoint handle.
#[derive(Debug)]
pub struct Lease {
    me: CopyId,
    index: usize,
    /// The lease value this copy wrote last (it may not have entered with it yet).
    held: u64,
    /// `held`, once this copy entered with it (`Entered`, after which its caller
    /// re-read its caches): the hot path trusts the caches only while the lease still
    /// has this value. 0 while acquiring: taking the lease and then finding another copy
    /// busy (and giving up) must not make stale caches trusted.
    token: u64,
}

impl Default for Lease {
    fn default() -> Self {
        Lease::new()
    }
}

fn state_of(c: &CopyEntry) -> u32 {
    // ORDERING: Acquire, partner of `exit`'s Release store of IDLE: that copy's last
    // operation happens-before what the caller does next under the lease.
    c.state.load(Ordering::Acquire)
}

impl Lease {
    /// A copy that has not used its role yet.
    pub const fn new() -> Lease {
        Lease { me: CopyId { key: 0, copy: 0, generation: 0 }, index: NO_INDEX, held: 0, token: 0 }
    }

    /// Hot path: enter an operation if this copy holds the lease. `generation` is the
    /// process's current fork generation. `false`: not entered (no entry yet, a fork,
    /// or another copy took the lease); call [`Lease::try_acquire`].
    #[inline(always)]
    pub fn try_enter(&self, entry: &RoleEntry, generation: u64) -> bool {
        if self.me.generation != generation || self.index >= MAX_COPIES || self.token == 0 {
            return false;
        }
        let mine = &entry.copies[self.index];
        // ORDERING: Relaxed store, ordered before the lease load by the light side of
        // the Dekker pair (partner: the heavy fence after the CAS in `try_acquire`).
        mine.state.store(ACTIVE, Ordering::Relaxed);
        if load_after_store_u64(&entry.lease) == self.token {
            return true;
        }
        // ORDERING: Release: this copy did nothing under the flag.
        mine.state.store(IDLE, Ordering::Release);
        false
    }

    /// Leave the operation entered by [`Lease::try_enter`] or [`Lease::try_acquire`].
    #[inline(always)]
    pub fn exit(&self, entry: &RoleEntry) {
        if let Some(mine) = entry.copies.get(self.index) {
            // ORDERING: Release, partner of `state_of`'s Acquire: what this operation
            // wrote happens-before the next holder's resync.
            mine.state.store(IDLE, Ordering::Release);
        }
    }

    /// Stop waiting for the lease (a `try_acquire` that returned `Busy` and will not be
    /// called again: a timeout, an interrupt).
    pub fn cancel(&self, entry: &RoleEntry) {
        if let Some(mine) = entry.copies.get(self.index) {
            // ORDERING: Release: nothing was done while waiting.
            let _ = mine.state.compare_exchange(WAITING, IDLE, Ordering::Release, Ordering::Relaxed);
        }
    }

    /// Slow path: take the lease for copy `me` (from nobody, from a copy whose process
    /// died, or from another copy, whose current operation it then waits for) and enter
    /// an operation. `copies` tells which copies live (and claims an entry). A caller
    /// that will not wait (`patient = false`: a `try_` call) first looks for a busy copy
    /// without taking anything, so that polling never moves the lease (nor pays the
    /// heavy fence) while another copy works.
    ///
    /// # Errors
    /// [`TooManyCopies`] if `me` has no entry yet and all [`MAX_COPIES`] belong to live
    /// processes.
    pub fn try_acquire(
        &mut self,
        entry: &RoleEntry,
        me: CopyId,
        patient: bool,
        copies: &mut impl Copies,
    ) -> Result<Acquired, TooManyCopies> {
        if self.me != me {
            // New identity (first use, or a forked child): the entry this handle had
            // belongs to the copy in the parent process.
            *self = Lease { me, index: NO_INDEX, held: 0, token: 0 };
        }
        self.token = 0;
        if !patient {
            if let Some(pid) = busy_copy(entry, self.index, copies) {
                return Ok(Acquired::Busy { pid });
            }
        }
        if self.index == NO_INDEX {
            self.index = allocate(entry, me, copies)?;
        }
        let mine = &entry.copies[self.index];
        // ORDERING: Release, partner of `state_of`'s Acquire: like IDLE, WAITING is
        // stored after this copy's last operation, which a scanner may rely on.
        mine.state.store(WAITING, Ordering::Release);
        loop {
            // ORDERING: Acquire, partner of the AcqRel CAS of the copy that wrote it.
            let cur = entry.lease.load(Ordering::Acquire);
            if cur != self.held || self.held == 0 {
                let holder = (cur & INDEX_MASK) as usize;
                if cur != 0 && holder != self.index && holder < MAX_COPIES {
                    // A copy waiting for its turn keeps it.
                    let h = &entry.copies[holder];
                    // ORDERING: Relaxed owner load: identifies the process to check.
                    let owner = h.owner.load(Ordering::Relaxed);
                    if state_of(h) == WAITING && owner != 0 && copies.alive(holder, owner) {
                        return Ok(Acquired::Busy { pid: key_pid(owner) });
                    }
                }
                let next = (((cur >> INDEX_BITS).wrapping_add(1)) << INDEX_BITS) | self.index as u64;
                // ORDERING: AcqRel: totally ordered with every other RMW of the lease
                // (the Dekker pair's RMW form; see `crate::sync`).
                if entry.lease.compare_exchange(cur, next, Ordering::AcqRel, Ordering::Acquire).is_err() {
                    continue;
                }
                self.held = next;
                // ORDERING: heavy half of the Dekker pair, partner of `try_enter`'s
                // light half: a copy entering after this sees our lease, or we see its
                // ACTIVE state below.
                if !heavy_fence() {
                    // Membarrier refused to this process while a peer may rely on it:
                    // a peer's ACTIVE store may still sit in its store buffer. Stores
                    // drain within microseconds (and on any interrupt or context
                    // switch): wait well past that before looking (x86-TSO reasoning,
                    // not the language model's; documented in crate::process).
                    grace_period();
                }
            }
            if let Some(pid) = busy_copy(entry, self.index, copies) {
                return Ok(Acquired::Busy { pid });
            }
            // ORDERING: as in `try_enter`.
            mine.state.store(ACTIVE, Ordering::Relaxed);
            if load_after_store_u64(&entry.lease) == self.held {
                self.token = self.held;
                return Ok(Acquired::Entered);
            }
            // ORDERING: Release, as above; nothing was done meanwhile.
            mine.state.store(WAITING, Ordering::Release);
        }
    }

    /// True if this copy may mark the role closed when it closes: it holds the lease, or
    /// no copy does, or the copy that does is in a dead process. `me` is the caller's
    /// current identity (a handle inherited by a fork child that never used it holds
    /// nothing there).
    pub fn may_close(&self, entry: &RoleEntry, me: CopyId, copies: &impl Copies) -> bool {
        // ORDERING: Acquire, partner of the AcqRel CAS that wrote it.
        let cur = entry.lease.load(Ordering::Acquire);
        cur == 0
            || (self.me == me && self.index != NO_INDEX && cur == self.held)
            || holder(entry).is_none_or(|(index, key)| !copies.alive(index, key))
    }

    /// Give up the lease (if held) and this copy's entry. A handle whose identity is
    /// not `me` (inherited by a fork child) touches nothing: its entry is the parent's.
    /// Returns the lease word it left: 0, or another copy's token (see [`token`]).
    pub fn release(&mut self, entry: &RoleEntry, me: CopyId, copies: &mut impl Copies) -> u64 {
        // ORDERING: Acquire, partner of the AcqRel CAS that wrote it.
        let mut left = entry.lease.load(Ordering::Acquire);
        if self.me == me && self.index < MAX_COPIES {
            // ORDERING: AcqRel, as every lease RMW; fails harmlessly if another copy
            // holds it.
            left = match entry.lease.compare_exchange(self.held, 0, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => 0,
                Err(other) => other,
            };
            let mine = &entry.copies[self.index];
            // ORDERING: Relaxed, then the Release of the owner store publishes both.
            mine.state.store(IDLE, Ordering::Relaxed);
            mine.copy.store(0, Ordering::Relaxed);
            // ORDERING: Release, partner of `allocate`'s Acquire load: a copy that
            // reuses the entry sees it cleared.
            let _ = mine.owner.compare_exchange(me.key, 0, Ordering::Release, Ordering::Relaxed);
            copies.unclaim(self.index);
        }
        *self = Lease::new();
        left
    }

    /// This copy's entry index, if it has one (diagnostics).
    pub fn index(&self) -> Option<usize> {
        (self.index < MAX_COPIES).then_some(self.index)
    }
}

/// The pid of a live copy other than entry `mine` that is inside an operation.
fn busy_copy(entry: &RoleEntry, mine: usize, copies: &impl Copies) -> Option<u32> {
    entry.copies.iter().enumerate().find_map(|(i, other)| {
        if i == mine || state_of(other) != ACTIVE {
            return None;
        }
        // ORDERING: Relaxed: only identifies the process to check.
        let owner = other.owner.load(Ordering::Relaxed);
        (owner != 0 && copies.alive(i, owner)).then(|| key_pid(owner))
    })
}

/// What a lease taker waits when it could not issue the heavy fence.
fn grace_period() {
    #[cfg(not(shmplane_loom))]
    std::thread::sleep(std::time::Duration::from_millis(1));
}

/// Take a free copy entry for `me`, or one whose copy is gone: stake the claim first
/// (so that a live owner's entry is never taken), then the entry.
fn allocate(entry: &RoleEntry, me: CopyId, copies: &mut impl Copies) -> Result<usize, TooManyCopies> {
    for reclaim in [false, true] {
        for (i, c) in entry.copies.iter().enumerate() {
            // ORDERING: Acquire, partner of `release`'s Release store of 0.
            let owner = c.owner.load(Ordering::Acquire);
            let free = owner == 0 || (reclaim && !copies.alive(i, owner));
            if !free || !copies.claim(i) {
                continue;
            }
            // ORDERING: AcqRel: one claimer wins an entry.
            if c.owner.compare_exchange(owner, me.key, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                // ORDERING: Relaxed (diagnostics) and Release (a dead owner's state is
                // cleared; nothing to publish).
                c.copy.store(me.copy, Ordering::Relaxed);
                c.state.store(IDLE, Ordering::Release);
                return Ok(i);
            }
            copies.unclaim(i);
        }
    }
    Err(TooManyCopies)
}

/// The lease word: 0 when no copy holds the lease, else the holder's token, which
/// differs from every earlier token (each acquisition counts), so a change says that a
/// copy took the lease meanwhile.
pub fn token(entry: &RoleEntry) -> u64 {
    // ORDERING: Acquire, partner of the AcqRel CAS that wrote it.
    entry.lease.load(Ordering::Acquire)
}

/// Entry index and process key of the copy holding the lease, if any copy holds it.
pub fn holder(entry: &RoleEntry) -> Option<(usize, u64)> {
    // ORDERING: Acquire, partner of the AcqRel CAS that wrote it; the owner load is
    // Relaxed: a diagnostic that a concurrent handover may make stale.
    let cur = entry.lease.load(Ordering::Acquire);
    let index = (cur & INDEX_MASK) as usize;
    if cur == 0 || index >= MAX_COPIES {
        return None;
    }
    Some(entry.copies[index].owner.load(Ordering::Relaxed)).filter(|&k| k != 0).map(|k| (index, k))
}

/// Entry indexes and process keys of the copies that have an entry (have used the role
/// and not closed).
pub fn copy_keys(entry: &RoleEntry) -> impl Iterator<Item = (usize, u64)> + '_ {
    // ORDERING: Relaxed: liveness reads of the owners' identities, no data.
    entry.copies.iter().map(|c| c.owner.load(Ordering::Relaxed)).enumerate().filter(|&(_, k)| k != 0)
}

/// The process id of a copy that is inside an operation now and whose process is
/// alive, if any: for a sender's role, the copy part-way through sending a message.
/// Read before looking for that copy's records: a copy seen idle (Acquire, partner of
/// `exit`'s Release) has published everything it will publish in that operation.
pub fn active_copy(entry: &RoleEntry, copies: &impl Copies) -> Option<u32> {
    entry.copies.iter().enumerate().find_map(|(i, c)| {
        // ORDERING: Relaxed owner load: identifies the process to check.
        let owner = c.owner.load(Ordering::Relaxed);
        (state_of(c) == ACTIVE && owner != 0 && copies.alive(i, owner)).then(|| key_pid(owner))
    })
}

/// Process ids of the copies whose entries are in use (diagnostics: error messages,
/// inspection).
pub fn copy_pids(entry: &RoleEntry) -> Vec<u32> {
    // ORDERING: Relaxed: a diagnostic snapshot.
    entry.copies.iter().map(|c| c.owner.load(Ordering::Relaxed)).filter(|&k| k != 0).map(key_pid).collect()
}
