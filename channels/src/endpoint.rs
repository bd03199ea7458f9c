//! What every endpoint shares: its segment, its role, ownership across fork and
//! descriptor passing, and the per-slice liveness check.

use shmplane_shm::error::{Error, Result};
use shmplane_shm::layout::RoleEntry;
use shmplane_shm::liveness::{self, fork_generation, PeerState};
use shmplane_shm::ring::RingError;
use shmplane_shm::segment::Segment;
use shmplane_shm::sync::Ordering;
use shmplane_shm::wait::WaitError;

/// Role numbers of a channel segment.
pub(crate) const PRODUCER: usize = 0;
pub(crate) const CONSUMER: usize = 1;

/// The process an endpoint believes it lives in.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Owner {
    pid: u32,
    start: u64,
    fork_gen: u64,
}

impl Owner {
    pub(crate) fn current() -> Owner {
        shmplane_shm::sync::install_fork_hook();
        let fork_gen = fork_generation();
        let (pid, start) = liveness::current_process();
        Owner { pid, start, fork_gen }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    pub(crate) fn id(&self) -> (u32, u64) {
        (self.pid, self.start)
    }

    /// Before each operation: re-register after a fork, and refuse to act on a role
    /// another process took over (a handle passed to a child). Two relaxed loads when
    /// nothing changed.
    #[inline(always)]
    pub(crate) fn check(&mut self, entry: &RoleEntry, role: &'static str, segment: &Segment) -> Result<()> {
        if fork_generation() == self.fork_gen && entry.owner_pid.load(Ordering::Relaxed) == self.pid {
            return Ok(());
        }
        self.check_slow(entry, role, segment)
    }

    #[cold]
    fn check_slow(&mut self, entry: &RoleEntry, role: &'static str, segment: &Segment) -> Result<()> {
        if fork_generation() != self.fork_gen {
            *self = Owner::current();
            liveness::register_owner(entry, self.pid, self.start);
            return Ok(());
        }
        if entry.owner_pid.load(Ordering::Relaxed) == 0 {
            // A process that shared our descriptor closed its copy and gave it up.
            liveness::register_owner(entry, self.pid, self.start);
            return Ok(());
        }
        liveness::check_owner(entry, self.pid, role, segment.path())
    }
}

/// Map a ring error to the public error, naming the segment.
pub(crate) fn ring_error(e: RingError, segment: &Segment) -> Error {
    match e {
        RingError::TooLarge { len, max } => Error::TooLarge { len, max },
        RingError::Corrupt { .. } => Error::Corrupt { path: segment.path().to_owned(), what: e.to_string() },
    }
}

/// Map a wait error: a timeout becomes [`Error::Timeout`].
pub(crate) fn wait_error(e: WaitError<Error>) -> Error {
    match e {
        WaitError::TimedOut => Error::Timeout,
        WaitError::Failed(e) => e,
    }
}

/// Per-slice check of the peer role: dead → [`Error::PeerDead`], closed →
/// [`Error::Disconnected`]; vacant or alive → keep waiting. Also reports a poisoned ring.
pub(crate) fn check_peer(segment: &Segment, peer: usize, poisoned: u32) -> Result<()> {
    if poisoned != 0 {
        return Err(Error::Corrupt {
            path: segment.path().to_owned(),
            what: format!("the ring was poisoned (reason {poisoned}) after a malformed record"),
        });
    }
    let role = segment.info().kind.roles()[peer];
    match segment.peer_state(peer)? {
        PeerState::Vacant | PeerState::Alive(_) => Ok(()),
        PeerState::Closed => Err(Error::Disconnected { role }),
        PeerState::Dead(pid) => Err(Error::PeerDead { role, pid }),
    }
}

/// A unique segment name for channels created without one:
/// `anon-<pid>-<thread counter>-<nanoseconds>`.
pub(crate) fn generated_name() -> String {
    thread_local!(static COUNTER: std::cell::Cell<u32> = const { std::cell::Cell::new(0) });
    let n = COUNTER.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("anon-{}-{n}-{:x}", std::process::id(), nanos as u64)
}
