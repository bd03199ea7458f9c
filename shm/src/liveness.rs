//! Endpoint ownership and dead-peer detection.
//!
//! Each endpoint owns its role by an exclusive OFD lock on byte `ROLE_LOCK_BYTE + role`
//! of the segment file (see [`crate::region::ShmFile`]). The kernel drops the lock when
//! the last descriptor of that open file description closes, so a crashed process
//! releases its roles without running any code. Because descriptors (and with them the
//! lock) are shared by `fork` and by descriptor passing, the role's process is the one
//! whose copy holds the role's lease ([`crate::lease`]: the copy that used it last),
//! named by its process key (pid and start time, so a reused pid is not mistaken for
//! it); a peer is dead if its lock is free, or if that process is gone.
//!
//! Role states, stored in `RoleEntry::state`:
//!
//! ```text
//! VACANT --claim--> ATTACHED --close (last holder)--> CLOSED --claim--> ATTACHED ...
//!                      |  \--close (others still hold it)--> ATTACHED (lease released)
//!                      \--process dies--> ATTACHED with lock free  = dead
//! ```
//!
//! `CLOSING` is the transient state of a close in progress; seen with the lock free it
//! counts as closed (the owner died while closing, which is a clean close too).

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

/// What `/proc` says of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcState {
    /// Running (not a zombie), with its start time in clock ticks since boot.
    Running(u64),
    /// It does not exist, or is a zombie.
    Gone,
    /// `/proc` could not tell (out of descriptors or memory, no `/proc`, another pid
    /// namespace): callers must assume it lives.
    Unknown,
}

/// What `/proc/PID/stat` says of process `pid`. Only "no such file" (or a zombie) is
/// [`ProcState::Gone`]: any other failure is [`ProcState::Unknown`], never a death (a
/// process out of descriptors must not take a live copy's role lease away).
pub fn process_state(pid: u32) -> ProcState {
    let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            return ProcState::Gone
        }
        Err(_) => return ProcState::Unknown,
    };
    // Fields after the command name, which is in parentheses and may contain anything.
    let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 2..)) else { return ProcState::Unknown };
    let mut fields = rest.split_ascii_whitespace();
    match fields.next() {
        Some("Z" | "X") => return ProcState::Gone,
        Some(_) => {}
        None => return ProcState::Unknown,
    }
    // `rest` starts at field 3 (state); starttime is field 22.
    match fields.nth(18).and_then(|f| f.parse().ok()) {
        Some(t) => ProcState::Running(t),
        None => ProcState::Unknown,
    }
}

/// Start time of process `pid` in clock ticks since boot, or `None` if it does not exist,
/// is a zombie, or `/proc` could not tell.
pub fn process_start_time(pid: u32) -> Option<u64> {
    match process_state(pid) {
        ProcState::Running(t) => Some(t),
        _ => None,
    }
}

/// Bits of a [process key](key_of) that hold the start time.
const KEY_START_BITS: u32 = 42;
const KEY_START_MASK: u64 = (1 << KEY_START_BITS) - 1;

/// A number that names one process for as long as the machine runs, across pid reuse:
/// the pid in the high 22 bits (Linux's `PID_MAX_LIMIT` is 2^22) and the low 42 bits of
/// its start time in clock ticks since boot (`/proc/PID/stat` field 22; 2^42 ticks at
/// 100 Hz is 1394 years). Never 0 for a real process (pid 0 is not one).
pub const fn key_of(pid: u32, start: u64) -> u64 {
    ((pid as u64) << KEY_START_BITS) | (start & KEY_START_MASK)
}

/// The pid named by process key `key`.
pub const fn key_pid(key: u64) -> u32 {
    (key >> KEY_START_BITS) as u32
}

/// True if the process named by `key` may still run: it exists, is not a zombie, and
/// has the start time the key records, or `/proc` could not tell (see
/// [`process_state`]). A key whose start time could not be read (0) names any process
/// with that pid.
pub fn key_alive(key: u64) -> bool {
    #[cfg(not(shmplane_loom))]
    if let Some(alive) = proc_cache::alive(key) {
        return alive;
    }
    let start = key & KEY_START_MASK;
    match process_state(key_pid(key)) {
        ProcState::Running(t) => start == 0 || t & KEY_START_MASK == start,
        ProcState::Gone => false,
        ProcState::Unknown => true,
    }
}

/// Open `/proc/PID/stat` files of the peers this process checks, so that a liveness
/// check is one `pread` instead of open, `statx`, read and close (a waiter checks its
/// peer once per 50 ms slice; on a VM those syscalls were most of an idle consumer's
/// CPU beyond its wake-ups). An open `/proc/PID` file stays bound to the process it
/// was opened for: once that process is reaped, reading it fails with `ESRCH`, even
/// if the pid has been reused since, so the cache cannot mistake a new process for
/// the old one (the start time is checked once, when the file is opened). At most 16
/// descriptors stay open this way (close-on-exec; dropped in a fork child at its first
/// check). A program that closes every descriptor behind the library's back
/// (`closefrom`, a hand-rolled daemonize) must not use endpoints opened before it.
#[cfg(not(shmplane_loom))]
mod proc_cache {
    use super::{key_pid, KEY_START_MASK};
    use std::fs::File;
    use std::os::unix::fs::FileExt;
    use std::sync::Mutex;

    const ENTRIES: usize = 16;
    /// (key, its stat file, fork generation that opened it).
    static CACHE: Mutex<Vec<(u64, File, u64)>> = Mutex::new(Vec::new());

    /// `Some(alive)` from a cached file, `None` to take the uncached path (not cached
    /// yet and could not be, the key has no start time, or the cache is busy: a fork
    /// may have left its lock held in this child).
    pub fn alive(key: u64) -> Option<bool> {
        if key & KEY_START_MASK == 0 {
            return None;
        }
        let mut cache = CACHE.try_lock().ok()?;
        let generation = crate::process::fork_generation();
        cache.retain(|(_, _, g)| *g == generation);
        if let Some(i) = cache.iter().position(|(k, _, _)| *k == key) {
            return match read_state(&cache[i].1) {
                Some(alive) => {
                    if !alive {
                        cache.swap_remove(i);
                    }
                    Some(alive)
                }
                None => {
                    cache.swap_remove(i);
                    None
                }
            };
        }
        let file = File::open(format!("/proc/{}/stat", key_pid(key))).ok()?;
        // Bind the file to the process the key names: same start time, now.
        let mut buf = [0u8; 1024];
        let n = file.read_at(&mut buf, 0).ok()?;
        let start = parse_start(&buf[..n])?;
        if start & KEY_START_MASK != key & KEY_START_MASK {
            return Some(false);
        }
        if cache.len() >= ENTRIES {
            cache.remove(0);
        }
        cache.push((key, file, generation));
        Some(true)
    }

    /// `Some(false)` if the process is gone (`ESRCH`) or a zombie, `Some(true)` if it
    /// runs, `None` if the read failed otherwise.
    fn read_state(file: &File) -> Option<bool> {
        let mut buf = [0u8; 1024];
        match file.read_at(&mut buf, 0) {
            Ok(n) => {
                let text = std::str::from_utf8(&buf[..n]).ok()?;
                let rest = text.rfind(')').and_then(|i| text.get(i + 2..))?;
                Some(!matches!(rest.split_ascii_whitespace().next(), Some("Z" | "X")))
            }
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Some(false),
            Err(_) => None,
        }
    }

    fn parse_start(buf: &[u8]) -> Option<u64> {
        let text = std::str::from_utf8(buf).ok()?;
        let rest = text.rfind(')').and_then(|i| text.get(i + 2..))?;
        let mut fields = rest.split_ascii_whitespace();
        if matches!(fields.next(), Some("Z" | "X")) {
            return None;
        }
        fields.nth(18)?.parse().ok()
    }
}

/// This process's id and start time.
pub fn current_process() -> (u32, u64) {
    let pid = std::process::id();
    (pid, process_start_time(pid).unwrap_or(0))
}

/// This process's key ([`key_of`]), cached until the next fork.
#[cfg(not(shmplane_loom))]
pub fn current_key() -> u64 {
    use std::cell::Cell;
    thread_local!(static CACHED: Cell<(u64, u64)> = const { Cell::new((u64::MAX, 0)) });
    crate::process::install_fork_hook();
    let generation = crate::process::fork_generation();
    CACHED.with(|c| {
        let (cached_gen, key) = c.get();
        if cached_gen == generation {
            return key;
        }
        let (pid, start) = current_process();
        let key = key_of(pid, start);
        c.set((generation, key));
        key
    })
}

/// True if process `pid` exists, is not a zombie, and started at `start` (0: any), or
/// `/proc` could not tell.
pub fn process_alive(pid: u32, start: u64) -> bool {
    match process_state(pid) {
        ProcState::Running(t) => start == 0 || t == start,
        ProcState::Gone => false,
        ProcState::Unknown => true,
    }
}

/// Mark a role attached (its claimer holds the role lock).
pub fn mark_attached(entry: &RoleEntry) {
    // ORDERING: Release, partner of `state`'s Acquire. A swap, not a store: a claim
    // races with the previous holder's closing → closed CAS (`swap_state`), which must
    // either come first or fail. A store is as good by the memory model, but loom
    // (tokio-rs/loom#254) lets a plain store land between a concurrent RMW's read and
    // its write, and the role model (`loom-tests/tests/role.rs`) checks exactly this
    // race; a claim is rare, so the RMW costs nothing that matters.
    entry.state.swap(ATTACHED, Ordering::Release);
}

/// The role's state word ([`VACANT`], [`ATTACHED`], [`CLOSED`], [`CLOSING`]).
pub fn state(entry: &RoleEntry) -> u32 {
    // ORDERING: Acquire, partner of the Release stores of `mark_attached` and close:
    // a peer's records published before its close are visible after seeing CLOSED.
    entry.state.load(Ordering::Acquire)
}

/// Store the role's state word (close; see [`crate::segment`]).
pub fn set_state(entry: &RoleEntry, state: u32) {
    // ORDERING: Release, partner of `state`'s Acquire.
    entry.state.store(state, Ordering::Release);
}

/// Move the role's state from `from` to `to` if it is `from` (close).
pub fn swap_state(entry: &RoleEntry, from: u32, to: u32) {
    // ORDERING: AcqRel, as the plain stores it stands in for.
    let _ = entry.state.compare_exchange(from, to, Ordering::AcqRel, Ordering::Relaxed);
}

/// A peer role's state word and whether another description holds its lock
/// (`lock_held`: the kernel's answer), read so that they describe one moment.
///
/// The lock is queried first and the state read after it: a holder marks the role
/// closing before it lets go of the lock, so a free lock and then a closing or closed
/// state is a close, never a live holder. The one mixed reading is a free lock and then
/// *attached*: the holder died, or a new holder claimed the role between the two reads
/// (the first claim, or one after a clean close: it takes the lock, then marks the role
/// attached), which must not read as a dead peer. So that reading stands only if it
/// holds throughout a second look and the lock is still free after it (lock, state,
/// lock, state, lock); any change ends the look with the later pair, read in the safe
/// order. A false "dead" would need another process to claim the role *and* let go of
/// it again within the look. Modelled by `loom-tests/tests/role.rs`.
///
/// # Errors
/// The first error of `lock_held`.
pub fn observe<E>(entry: &RoleEntry, mut lock_held: impl FnMut() -> Result<bool, E>) -> Result<(u32, bool), E> {
    let held = lock_held()?;
    let first = state(entry);
    if held || first != ATTACHED {
        return Ok((first, held));
    }
    let held = lock_held()?;
    let second = state(entry);
    if held || second != ATTACHED {
        return Ok((second, held));
    }
    if lock_held()? {
        return Ok((state(entry), true));
    }
    // Attached with the lock free throughout: its holder died.
    Ok((ATTACHED, false))
}

/// Classify a peer role from its state word and whether another description holds its
/// lock, as [`observe`] read them.
///
/// A role lives while a copy of it can still be used: its lock is held, and some copy
/// that used it ([`crate::lease`]) is in a live process (or none has used it yet: a
/// handle that was passed on and not used). Like a `multiprocessing` connection, the
/// death of one copy's process does not end a role that another live copy holds; the
/// pid reported is the lease holder's (the copy that used it last).
pub fn classify(entry: &RoleEntry, (state, lock_held): (u32, bool), alive: impl Fn(usize, u64) -> bool) -> PeerState {
    let holder = crate::lease::holder(entry);
    let pid = holder.map_or(0, |(_, k)| key_pid(k));
    match state {
        VACANT => PeerState::Vacant,
        CLOSED => PeerState::Closed,
        CLOSING if !lock_held => PeerState::Closed,
        _ if !lock_held => PeerState::Dead(pid),
        _ => {
            if holder.is_some_and(|(i, k)| alive(i, k)) {
                return PeerState::Alive(pid);
            }
            let mut copies = crate::lease::copy_keys(entry).peekable();
            if copies.peek().is_none() {
                // Lock held by a descriptor no copy has used yet (passed on).
                return PeerState::Alive(pid);
            }
            match copies.find(|&(i, k)| alive(i, k)) {
                Some((_, k)) => PeerState::Alive(key_pid(k)),
                None => PeerState::Dead(pid),
            }
        }
    }
}

/// Bits of a writer id ([`writer_id`]): pid (22, Linux's `PID_MAX_LIMIT` is 2^22), the
/// low bits of the process's start time (20), thread id (22).
const WRITER_START_BITS: u32 = 20;
const WRITER_TID_BITS: u32 = 22;

/// A writer id for [`crate::seqlock`]: `pid << 42 | (start time & 0xfffff) << 22 | tid`,
/// unique per thread and never 0. The start time's low 20 bits (clock ticks: 2.9 hours
/// at 100 Hz before they repeat) tell a dead writer from a later process that reused
/// its pid, so a lock a writer died holding is never waited on forever. Cached per
/// thread (two syscalls otherwise: ~40% of an 8-byte slot write) and recomputed in a
/// forked child.
#[cfg(not(shmplane_loom))]
#[inline]
pub fn writer_id() -> u64 {
    use std::cell::Cell;
    thread_local!(static CACHED: Cell<(u64, u64)> = const { Cell::new((u64::MAX, 0)) });
    crate::process::install_fork_hook();
    let generation = crate::process::fork_generation();
    CACHED.with(|c| {
        let (cached_gen, id) = c.get();
        if cached_gen == generation {
            return id;
        }
        // SAFETY: gettid has no arguments and cannot fail.
        let tid = unsafe { libc::gettid() } as u64 & ((1 << WRITER_TID_BITS) - 1);
        let (pid, start) = current_process();
        let start = start & ((1 << WRITER_START_BITS) - 1);
        let id = (u64::from(pid) << (WRITER_START_BITS + WRITER_TID_BITS)) | (start << WRITER_TID_BITS) | tid;
        c.set((generation, id.max(1)));
        id.max(1)
    })
}

/// Whether the process behind writer id `id` ([`writer_id`]) still runs: it exists,
/// is not a zombie, and its start time has the low bits the id records (a forged or
/// stale id naming a live but unrelated process reads as dead).
pub fn writer_alive(id: u64) -> bool {
    let pid = (id >> (WRITER_START_BITS + WRITER_TID_BITS)) as u32;
    let start = (id >> WRITER_TID_BITS) & ((1 << WRITER_START_BITS) - 1);
    match process_state(pid) {
        ProcState::Running(t) => t & ((1 << WRITER_START_BITS) - 1) == start,
        ProcState::Gone => false,
        ProcState::Unknown => true,
    }
}

#[cfg(all(test, not(shmplane_loom)))]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A role claimed between the lock query and the state read (the lock was free,
    /// then a claimer took it and marked the role attached) reads alive, not dead: the
    /// race the role model in `loom-tests/tests/role.rs` found.
    #[test]
    fn a_claim_between_lock_query_and_state_read_is_not_a_death() {
        let entry = RoleEntry::default();
        let queries = Cell::new(0);
        let lock_held = || {
            queries.set(queries.get() + 1);
            if queries.get() == 1 {
                // Free now; the claimer takes the lock and marks the role right after.
                mark_attached(&entry);
                return Ok::<bool, ()>(false);
            }
            Ok(true)
        };
        let observed = observe(&entry, lock_held).unwrap();
        assert_eq!(observed, (ATTACHED, true));
        assert_eq!(classify(&entry, observed, |_, _| true), PeerState::Alive(0));
    }

    /// Attached with the lock free throughout: dead. Closing with the lock free:
    /// closed (the owner died while closing, or let go of the lock to close).
    #[test]
    fn attached_with_a_free_lock_is_dead_and_closing_is_closed() {
        let entry = RoleEntry::default();
        mark_attached(&entry);
        let observed = observe(&entry, || Ok::<bool, ()>(false)).unwrap();
        assert_eq!(observed, (ATTACHED, false));
        assert_eq!(classify(&entry, observed, |_, _| true), PeerState::Dead(0));
        set_state(&entry, CLOSING);
        let observed = observe(&entry, || Ok::<bool, ()>(false)).unwrap();
        assert_eq!(classify(&entry, observed, |_, _| true), PeerState::Closed);
    }
}
