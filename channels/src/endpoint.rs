//! What every endpoint shares: its role in the segment, the copy lease that serialises
//! copies of it across processes (`shmplane_shm::lease`), and the per-slice liveness
//! check of its peer.

use crate::wait::{sleep_until, Wait};
use shmplane_shm::error::{Error, Result};
use shmplane_shm::lease::{self, Acquired, CopyId, Lease, TooManyCopies};
use shmplane_shm::liveness::{self, current_key, PeerState};
use shmplane_shm::store::SegmentRing;
use shmplane_shm::process::{fork_generation, install_fork_hook, next_copy_number};
use shmplane_shm::ring::RingError;
use shmplane_shm::layout::RoleEntry;
use shmplane_shm::segment::{CopyClaims, Segment};

/// Which ring of which kind of segment an endpoint handle works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// A channel's ring.
    Channel,
    /// Lane `i` of a mailbox.
    Lane(usize),
    /// A broadcast's ring, as its publisher.
    Publisher,
    /// A broadcast's ring, as subscriber `i`.
    Subscriber(usize),
}

impl Place {
    /// From a mailbox lane or `None` (a channel).
    pub(crate) fn of_lane(lane: Option<usize>) -> Place {
        lane.map_or(Place::Channel, Place::Lane)
    }

    /// The role table index of ring role `r` (0 producer, 1 consumer) here.
    pub(crate) fn role(self, r: usize) -> usize {
        match self {
            Place::Channel => r,
            Place::Lane(l) => 1 + 2 * l + r,
            Place::Publisher => 0,
            Place::Subscriber(i) => 1 + i,
        }
    }

    /// The ring over `segment` here.
    pub(crate) fn store(self, segment: Segment) -> SegmentRing {
        match self {
            Place::Channel => SegmentRing::new(segment),
            Place::Lane(l) => SegmentRing::lane(segment, l),
            Place::Publisher => SegmentRing::broadcast(segment, None),
            Place::Subscriber(i) => SegmentRing::broadcast(segment, Some(i)),
        }
    }
}

/// Role numbers of a channel segment.
pub(crate) const PRODUCER: usize = 0;
pub(crate) const CONSUMER: usize = 1;

/// One endpoint handle's hold on a role: which role, this handle's copy number, and
/// its view of the role's lease.
#[derive(Debug)]
pub(crate) struct Role {
    index: usize,
    copy: u32,
    lease: Lease,
    /// This copy's own descriptor holding the claim on its copy entry.
    claims: CopyClaims,
}

impl Role {
    /// A new handle of role `index` (a new copy).
    pub(crate) fn new(index: usize) -> Role {
        install_fork_hook();
        Role { index, copy: next_copy_number(), lease: Lease::new(), claims: CopyClaims::default() }
    }

    /// This handle's identity in the current process.
    fn me(&self) -> CopyId {
        CopyId { key: current_key(), copy: self.copy, generation: fork_generation() }
    }

    /// Hot path: enter an operation if this copy holds the role's lease (two plain
    /// stores and a load of a line this copy owns; see `shmplane_shm::lease`). `entry`
    /// is this role's entry.
    #[inline(always)]
    pub(crate) fn try_enter(&self, entry: &RoleEntry) -> bool {
        self.lease.try_enter(entry, fork_generation())
    }

    /// Leave the operation (`entry`: this role's entry).
    #[inline(always)]
    pub(crate) fn exit(&self, entry: &RoleEntry) {
        self.lease.exit(entry);
    }

    /// Slow path: take the lease (first use, after a fork, or from another copy) and
    /// enter an operation, waiting per `wait` while another copy is inside one. The
    /// caller must then re-read its cached positions from shared memory.
    ///
    /// # Errors
    /// [`Error::Timeout`]; the hook's error; [`Error::TooManyCopies`]; for a
    /// non-blocking `wait`, `would_block` while another copy is busy.
    #[cold]
    #[inline(never)]
    pub(crate) fn acquire(&mut self, segment: &Segment, wait: &mut Wait<'_>, would_block: Error) -> Result<()> {
        let me = self.me();
        let entry = segment.role(self.index);
        segment.open_claims(&mut self.claims)?;
        let mut would_block = Some(would_block);
        let lease = &mut self.lease;
        let patient = wait.blocks();
        let mut copies = segment.copies(self.index, &mut self.claims);
        // A copy that tripped on a truncated file keeps the lease in the shared pages
        // it can no longer write: check the file once per slice while waiting.
        let mut checked = std::time::Instant::now();
        let mut attempt = || match lease.try_acquire(entry, me, patient, &mut copies) {
            _ if segment.tripped() => Err(segment.truncated_error()),
            Ok(Acquired::Busy { .. }) if checked.elapsed() >= shmplane_shm::wait::SLICE => {
                checked = std::time::Instant::now();
                segment.check_intact().map(|()| None)
            }
            Ok(Acquired::Entered) => Ok(Some(())),
            Ok(Acquired::Busy { .. }) => Ok(None),
            Err(TooManyCopies) => Err(Error::TooManyCopies {
                role: segment.role_name(self.index),
                path: segment.path().to_owned(),
                pids: lease::copy_pids(entry),
            }),
        };
        // Whatever ends the wait without entering (an error, a timeout, a panic in the
        // hook), the copy stops waiting for its turn: others must not wait for it.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if wait.blocks() {
                sleep_until(wait, &mut attempt)
            } else {
                attempt().and_then(|entered| entered.ok_or_else(|| would_block.take().expect("once")))
            }
        }));
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.lease.cancel(entry);
                Err(e)
            }
            Err(panic) => {
                self.lease.cancel(entry);
                std::panic::resume_unwind(panic)
            }
        }
    }

    /// Take the lease right away, without waiting, so that the role names this process
    /// (in `RoleTaken` and `PeerDead` errors, and to peers' liveness checks) before its
    /// first operation. For an endpoint opened by name: no other copy of it exists.
    pub(crate) fn register(&mut self, segment: &Segment) {
        if self.acquire(segment, &mut Wait::no_wait(), Error::Empty).is_ok() {
            self.exit(segment.role(self.index));
        }
    }

    /// Release this copy's lease and copy entry and close the descriptor, leaving the
    /// role's state to the handle that holds its lock (see `Segment::release_role`).
    pub(crate) fn release(&mut self, segment: Segment) {
        let me = self.me();
        segment.release_role(self.index, &mut self.lease, &mut self.claims, me);
    }

    /// Close this copy's hold: release the lease and its copy entry, then close the
    /// segment's role (see `Segment::close_role`).
    /// Close this handle's hold on the role; `wake`: see `Segment::close_role`.
    pub(crate) fn close(&mut self, segment: Segment, wake: Option<usize>) {
        let me = self.me();
        segment.close_role(self.index, &mut self.lease, &mut self.claims, me, wake);
    }
}

/// Map a ring error to the public error, naming the segment.
pub(crate) fn ring_error(e: RingError, segment: &Segment) -> Error {
    if segment.tripped() {
        return segment.truncated_error();
    }
    match e {
        RingError::TooLarge { len, max } => Error::TooLarge { len, max },
        RingError::Lagged { missed } => Error::Lagged { missed },
        RingError::Corrupt { .. } => Error::Corrupt { path: segment.path().to_owned(), what: e.to_string() },
    }
}

/// Per-slice check of the peer role: dead → [`Error::PeerDead`], closed →
/// [`Error::Disconnected`]; vacant or alive → keep waiting. Also reports a poisoned ring.
pub(crate) fn check_peer(segment: &Segment, peer: usize, poisoned: u32) -> Result<()> {
    segment.check_intact()?;
    check_poison(segment, poisoned)?;
    let role = segment.role_name(peer);
    match segment.peer_state(peer)? {
        PeerState::Vacant | PeerState::Alive(_) => Ok(()),
        PeerState::Closed => Err(Error::Disconnected { role }),
        PeerState::Dead(pid) => Err(Error::PeerDead { role, pid }),
    }
}

/// [`Error::Corrupt`] if a side stored a poison reason code (non-zero `poisoned`).
fn check_poison(segment: &Segment, poisoned: u32) -> Result<()> {
    if poisoned != 0 {
        let why = match poisoned {
            shmplane_shm::ring::POISON_BAD_RECORD => "the receiver read a malformed record header",
            shmplane_shm::ring::POISON_BAD_HEAD => "the sender read an impossible receiver position",
            _ => "a peer found it corrupt",
        };
        return Err(Error::Corrupt { path: segment.path().to_owned(), what: format!("the ring was poisoned: {why}") });
    }
    Ok(())
}

/// State word of ring role `r` (0 producer, 1 consumer) of `store` (a channel, or a
/// mailbox lane).
#[inline]
pub(crate) fn role_state(store: &SegmentRing, r: usize) -> u32 {
    // A broadcast's publisher has no one consumer: its subscribers come and go.
    if r == CONSUMER && store.is_publisher() {
        return liveness::ATTACHED;
    }
    // A mailbox lane's consumer: the mailbox's consumer (see `check_ring_peer`).
    let index = if store.lane_index().is_some() && r == CONSUMER { 0 } else { store.role_index(r) };
    liveness::state(store.segment().role(index))
}

/// [`check_peer`] of ring role `peer` of `store`. For a mailbox lane's producer the
/// mailbox's consumer (role 0) answers: the lane's consumer role only says which
/// consumer last held the lane (one that closed or died may have been replaced by a
/// new consumer that will drain the lane).
pub(crate) fn check_ring_peer(store: &SegmentRing, peer: usize) -> Result<()> {
    let segment = store.segment();
    segment.check_intact()?;
    if peer == CONSUMER && store.is_publisher() {
        // Subscribers that closed or died stop gating the publisher; none is an error.
        check_poison(segment, shmplane_shm::ring::poisoned(store))?;
        store.prune_subscribers(true);
        return Ok(());
    }
    if store.lane_index().is_some() && peer == CONSUMER {
        check_poison(segment, shmplane_shm::ring::poisoned(store))?;
        // The consumer's copies share role 0 through one description without taking
        // its lease: its lock alone says whether a consumer lives.
        let role = segment.role_name(0);
        return match segment.peer_state_by_lock(0)? {
            PeerState::Vacant | PeerState::Alive(_) => Ok(()),
            PeerState::Closed => Err(Error::Disconnected { role }),
            PeerState::Dead(pid) => Err(Error::PeerDead { role, pid }),
        };
    }
    check_peer(segment, store.role_index(peer), shmplane_shm::ring::poisoned(store))
}

/// A unique segment name for channels created without one:
/// `anon-<pid>-<thread counter>-<nanoseconds mixed with random bits>`. The first call in
/// a process sweeps dead processes' anonymous segments. The counter is
/// per thread, so two threads of one process can be at the same count in the same
/// clock tick (a test run hit `AlreadyExists` so): std's random hasher keys (random per
/// thread, advanced per use) tell them apart.
pub(crate) fn generated_name() -> String {
    use std::hash::BuildHasher;
    // The first anonymous create of this process removes what dead processes' anonymous
    // segments left behind (`gc::sweep_dead_anonymous`).
    shmplane_shm::gc::sweep_dead_anonymous_once();
    thread_local!(static COUNTER: std::cell::Cell<u32> = const { std::cell::Cell::new(0) });
    let n = COUNTER.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let random = std::collections::hash_map::RandomState::new().hash_one(n);
    format!("anon-{}-{n}-{:x}", std::process::id(), (nanos as u64) ^ random)
}
