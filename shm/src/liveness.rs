//! Endpoint ownership and dead-peer detection.
//!
//! Each endpoint owns its role by an exclusive OFD lock on byte `ROLE_LOCK_BYTE + role`
//! of the segment file (see [`crate::region::ShmFile`]). The kernel drops the lock when
//! the last descriptor of that open file description closes, so a crashed process
//! releases its roles without running any code. Because descriptors (and with them the
//! lock) are shared by `fork` and by descriptor passing, the [`RoleEntry`] also records
//! the pid and start time of the process that last used the endpoint; a peer is dead if
//! its lock is free, or if that process is gone.
//!
//! Role states, stored in `RoleEntry::state`:
//!
//! ```text
//! VACANT --claim--> ATTACHED --close (last holder)--> CLOSED --claim--> ATTACHED ...
//!                      |  \--close (others still hold it)--> ATTACHED (owner pid 0)
//!                      \--process dies--> ATTACHED with lock free  = dead
//! ```
//!
//! `CLOSING` is the transient state of a close in progress; seen with the lock free it
//! counts as closed (the owner died while closing, which is a clean close too).

use crate::error::{Error, Result};
use crate::layout::RoleEntry;
use crate::sync::Ordering;

/// Role never claimed.
pub const VACANT: u32 = 0;
/// Role claimed by a live or dead endpoint (lock tells which).
pub const ATTACHED: u32 = 1;
/// Role closed cleanly by its last holder.
pub const CLOSED: u32 = 2;
/// Close in progress.
pub const CLOSING: u32 = 3;

/// What an endpoint can tell about a peer role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Never claimed: the peer has not attached yet.
    Vacant,
    /// Held by a live process (`pid`, 0 if unknown).
    Alive(u32),
    /// Closed cleanly.
    Closed,
    /// Its owner died without closing (`pid`, 0 if unknown).
    Dead(u32),
}

/// Start time of process `pid` in clock ticks since boot, or `None` if it does not exist
/// or is a zombie.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain anything.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `rest` starts at field 3 (state); starttime is field 22.
    fields.nth(18)?.parse().ok()
}

/// This process's id and start time, cached.
pub fn current_process() -> (u32, u64) {
    let pid = std::process::id();
    (pid, process_start_time(pid).unwrap_or(0))
}

/// True if process `pid` exists, is not a zombie, and started at `start` (0: any).
pub fn process_alive(pid: u32, start: u64) -> bool {
    match process_start_time(pid) {
        Some(t) => start == 0 || t == start,
        None => false,
    }
}

/// Record the calling process as the role's owner and mark it attached. The caller
/// holds the role lock.
pub fn register_owner(entry: &RoleEntry, pid: u32, start: u64) {
    entry.owner_start.store(start, Ordering::Relaxed);
    entry.owner_pid.store(pid, Ordering::Relaxed);
    // ORDERING: Release, partner of `peer_state`'s Acquire: owner fields first.
    entry.state.store(ATTACHED, Ordering::Release);
}

/// Classify a peer role from its entry and whether another description holds its lock.
pub fn classify(entry: &RoleEntry, lock_held: bool) -> PeerState {
    // ORDERING: Acquire, partner of register_owner's / close's Release stores.
    let state = entry.state.load(Ordering::Acquire);
    let pid = entry.owner_pid.load(Ordering::Relaxed);
    let start = entry.owner_start.load(Ordering::Relaxed);
    match state {
        VACANT => PeerState::Vacant,
        CLOSED => PeerState::Closed,
        CLOSING if !lock_held => PeerState::Closed,
        _ if !lock_held => PeerState::Dead(pid),
        // Lock held: by the owner, or by a copy of its descriptor in another process.
        _ if pid != 0 && !process_alive(pid, start) => PeerState::Dead(pid),
        _ => PeerState::Alive(pid),
    }
}

/// Check that `entry` still names us as owner (a handle passed to another process moves
/// the role there).
///
/// # Errors
/// [`Error::RoleTaken`] with the new owner's pid.
#[inline]
pub fn check_owner(entry: &RoleEntry, pid: u32, role: &'static str, path: &str) -> Result<()> {
    let owner = entry.owner_pid.load(Ordering::Relaxed);
    if owner == pid {
        Ok(())
    } else {
        Err(Error::RoleTaken { role, path: path.to_owned(), pid: owner })
    }
}

#[cfg(not(shmplane_loom))]
pub use crate::sync::fork_generation;

/// A writer id for [`crate::seqlock`]: `pid << 32 | tid`, unique per thread and never 0.
/// Cached per thread (two syscalls otherwise: ~40% of an 8-byte slot write) and
/// recomputed in a forked child.
#[cfg(not(shmplane_loom))]
#[inline]
pub fn writer_id() -> u64 {
    use std::cell::Cell;
    thread_local!(static CACHED: Cell<(u64, u64)> = const { Cell::new((u64::MAX, 0)) });
    crate::sync::install_fork_hook();
    let generation = crate::sync::fork_generation();
    CACHED.with(|c| {
        let (cached_gen, id) = c.get();
        if cached_gen == generation {
            return id;
        }
        // SAFETY: gettid has no arguments and cannot fail.
        let tid = unsafe { libc::gettid() } as u32;
        let id = (u64::from(std::process::id()) << 32) | u64::from(tid);
        c.set((generation, id));
        id
    })
}

/// Whether the process behind writer id `id` ([`writer_id`]) still exists.
pub fn writer_alive(id: u64) -> bool {
    process_alive((id >> 32) as u32, 0)
}
