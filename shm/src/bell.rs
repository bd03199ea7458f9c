//! Doorbells: readiness that the OS can wait on (`select`, `poll`, `epoll`, asyncio).
//!
//! Each direction of a channel has a named FIFO beside its segment:
//! `/dev/shm/shmplane.<name>@rx` (the receiver waits there for messages) and
//! `...@tx` (the sender waits there for room). `@` cannot occur in a segment name, so
//! no segment collides with a doorbell. A FIFO, unlike an `eventfd`, can be opened by
//! name by an unrelated process, and its writer count is kept by the kernel:
//!
//! - the *waiter* holds the read end ([`Bell`]), created lazily when its handle is
//!   first waited on through the OS; that descriptor is what `fileno()` returns;
//! - every handle of the *peer* holds a write end ([`Ringer`], opened `O_RDWR` so that
//!   it never blocks or fails for want of a reader) from the moment it attaches, and
//!   writes one byte when the waiter armed the doorbell (the `DOORBELL` bit of the
//!   direction's event count, see [`crate::wait`]). No syscall on the publish path
//!   while nobody waits through the OS;
//! - when the last process holding a peer handle closes it or dies, the kernel drops
//!   the last writer and the read end reports end-of-file (`POLLHUP`, readable): the
//!   waiter learns of the peer's close or death without any code of the peer running.
//!   A FIFO that never had a writer reports nothing, so a channel whose peer has not
//!   come yet simply is not ready.
//!
//! The waiter keeps the descriptor's state exact: before handing it out (and after
//! each receive that empties the ring) it drains the FIFO, arms the doorbell, and
//! re-checks the ring; if a message is already there it rings its own doorbell
//! through a short-lived write end ([`Bell::ring_own`]). So the descriptor is readable iff a
//! non-blocking receive would not report "empty" (a message is queued, or the peer
//! is gone).
//!
//! Sources: `fifo(7)`, `pipe(7)` (`POLLHUP` after the last writer closes, not before
//! the first), the eventcount of [`crate::wait`] extended with an fd waiter (as Linux's
//! `io_uring` `IORING_SQ_NEED_WAKEUP` flag asks the producer for a syscall only when
//! the consumer sleeps).

use crate::error::{Error, Result};
use crate::region::{PREFIX, SHM_DIR};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};

/// Which way a doorbell rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Messages for the receiver (`@rx`): the sender rings it. A mailbox's lanes
    /// share the mailbox's.
    Data,
    /// Room for the sender (`@tx`): the receiver rings it.
    Space,
    /// Room for the sender of mailbox lane `i` (`@tx<i>`): the consumer rings it. Made
    /// by the lane's sender when it first waits through the OS ([`ensure`]).
    LaneSpace(usize),
    /// Messages for subscriber `i` of a broadcast (`@sub<i>`): the publisher rings it.
    /// Made by the subscriber when it first waits through the OS ([`ensure`]).
    Subscriber(usize),
}

impl Side {
    fn suffix(self) -> String {
        match self {
            Side::Data => "@rx".into(),
            Side::Space => "@tx".into(),
            Side::LaneSpace(i) => format!("@tx{i}"),
            Side::Subscriber(i) => format!("@sub{i}"),
        }
    }
}

/// The FIFO path of channel `name`'s doorbell on `side`.
pub fn path(name: &str, side: Side) -> String {
    format!("{SHM_DIR}/{PREFIX}{name}{}", side.suffix())
}

/// The segment name a doorbell file name (without the directory) belongs to, if it is one.
pub fn segment_of(file_name: &str) -> Option<&str> {
    let rest = file_name.strip_prefix(PREFIX)?;
    rest.strip_suffix("@rx")
        .or_else(|| rest.strip_suffix("@tx"))
        .or_else(|| {
            let (segment, lane) = rest.rsplit_once("@tx")?;
            (!lane.is_empty() && lane.bytes().all(|b| b.is_ascii_digit())).then_some(segment)
        })
        .or_else(|| {
            let (segment, sub) = rest.rsplit_once("@sub")?;
            (!sub.is_empty() && sub.bytes().all(|b| b.is_ascii_digit())).then_some(segment)
        })
        .or_else(|| rest.rsplit_once("@w").map(|(segment, _)| segment))
}

/// Make doorbell `side` of segment `name` if it does not exist yet (a mailbox lane's,
/// made by the lane's sender when it first waits through the OS). An existing one is
/// left (and checked when opened).
///
/// # Errors
/// [`Error::Os`] from `mkfifo` (other than `EEXIST`).
pub fn ensure(name: &str, side: Side) -> Result<()> {
    let p = path(name, side);
    match make_fifo(&p) {
        Ok(()) => Ok(()),
        Err((_, e)) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err((op, e)) => Err(os_err(op, &p, e)),
    }
}

fn os_err(op: &'static str, path: &str, source: io::Error) -> Error {
    Error::Os { op, path: path.to_owned(), source }
}

/// Make both doorbells of new channel `name` (mode 0600), replacing any left by an
/// earlier channel of that name (the caller just created the segment exclusively, so
/// the name is its).
///
/// # Errors
/// [`Error::Os`] from `mkfifo`; [`Error::NoSpace`] is not possible (a FIFO takes no
/// space in `/dev/shm`).
pub fn create(name: &str) -> Result<()> {
    for side in [Side::Data, Side::Space] {
        let p = path(name, side);
        let _ = std::fs::remove_file(&p);
        make_fifo(&p).map_err(|(op, e)| os_err(op, &p, e))?;
    }
    Ok(())
}

/// `mkfifo(path, 0600)`, then exactly 0600 (plus the sharing mode, see
/// `region::set_sharing`) whatever the umask (which may narrow it).
/// Fails with `EEXIST` if anything is at `path`.
fn make_fifo(path: &str) -> std::result::Result<(), (&'static str, io::Error)> {
    let c = std::ffi::CString::new(path).expect("validated name has no NUL");
    // SAFETY: `c` is a valid NUL-terminated path; mkfifo reads it only.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(("mkfifo", io::Error::last_os_error()));
    }
    let mode = crate::region::create_mode();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).map_err(|e| ("chmod", e))
}

/// Check that `file` (found at `p`) is a FIFO of this user that nobody else may open
/// (the segment is checked the same way).
fn check_private_fifo(file: &File, p: &str) -> Result<()> {
    let meta = file.metadata().map_err(|e| os_err("fstat", p, e))?;
    let why = if meta.file_type().is_fifo() { crate::region::untrusted(meta.uid(), meta.mode()) } else { Some("not a FIFO".into()) };
    if let Some(why) = why {
        return Err(Error::Corrupt {
            path: p.to_owned(),
            what: format!("the doorbell cannot be trusted: {why} (uid {}, mode {:o})", meta.uid(), meta.mode() & 0o7777),
        });
    }
    Ok(())
}

/// Remove the doorbells of segment `name` (best effort: called when its name is
/// removed): a channel's two, a mailbox's lane doorbells, and the reader doorbells a
/// slot's crashed readers left.
pub fn remove(name: &str) {
    for side in [Side::Data, Side::Space] {
        let _ = std::fs::remove_file(path(name, side));
    }
    // A slot's reader doorbells, a mailbox's lane doorbells.
    let own = format!("{PREFIX}{name}@");
    if let Ok(dir) = std::fs::read_dir(SHM_DIR) {
        for entry in dir.flatten() {
            if entry.file_name().to_str().is_some_and(|f| f.starts_with(&own) && segment_of(f) == Some(name)) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Open doorbell `p` non-blocking, and check it is a FIFO of this user that nobody
/// else may open (the segment is checked the same way).
fn open(p: &str, write: bool) -> Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(p)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NotFound { name: p.to_owned(), path: p.to_owned() },
            _ => os_err("open", p, e),
        })?;
    check_private_fifo(&file, p)?;
    Ok(file)
}

/// The read end of a doorbell, held by the waiting side (see the module docs).
#[derive(Debug)]
pub struct Bell {
    file: File,
}

impl Bell {
    /// Open channel `name`'s doorbell on `side` for waiting.
    ///
    /// # Errors
    /// [`Error::NotFound`] (no doorbell: the channel's name was removed),
    /// [`Error::Corrupt`] (not a private FIFO), [`Error::Os`].
    pub fn open(name: &str, side: Side) -> Result<Bell> {
        Ok(Bell { file: open(&path(name, side), false)? })
    }

    /// The descriptor to wait on: readable when rung, or once no peer holds a write
    /// end any more (after one did).
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Read every pending ring. Returns `true` if the FIFO reports end-of-file (no
    /// writer left: the peer closed or died).
    pub fn drain(&self) -> bool {
        let mut buf = [0u8; 64];
        loop {
            match (&self.file).read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false, // EAGAIN: drained, writers remain
            }
        }
    }

    /// True if no write end is open any more (after one was): the peer's handles all
    /// closed or died. Reads nothing (a zero-timeout `poll` for `POLLHUP`).
    pub fn writers_gone(&self) -> bool {
        let mut p = libc::pollfd { fd: self.file.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, written only for the duration of the call.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n > 0 && p.revents & libc::POLLHUP != 0
    }

    /// A write end of this very FIFO that the waiting side keeps (a mailbox lane's
    /// sender): its own rings then never leave the FIFO without a writer, which would
    /// read as the peer's close while the peer has not opened its write end yet.
    pub fn own_writer(&self) -> Option<File> {
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
            .ok()
    }

    /// Ring this doorbell from the waiting side (a message was already queued when it
    /// armed), through a new write end of this very FIFO (`/proc/self/fd/<fd>`: the
    /// name may have been removed or reused). Returns that write end: the caller
    /// closes it at once if a peer handle holds a write end (so this side never counts
    /// as a writer, which would hide the peer's close), or keeps it while the peer's
    /// role is vacant (closing the only write end ever opened would make the FIFO
    /// report end-of-file for a peer that never came).
    pub fn ring_own(&self) -> Option<File> {
        let w = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
            .ok()?;
        let _ = (&w).write(&[1]);
        Some(w)
    }
}

/// A write end of the peer's doorbell, held by every handle from attach to close.
#[derive(Debug)]
pub struct Ringer {
    file: File,
}

impl Ringer {
    /// Open channel `name`'s doorbell on `side` for ringing (`O_RDWR`: never blocks,
    /// never fails for want of a reader, never raises `SIGPIPE`).
    ///
    /// # Errors
    /// As [`Bell::open`].
    pub fn open(name: &str, side: Side) -> Result<Ringer> {
        Ok(Ringer { file: open(&path(name, side), true)? })
    }

    /// Adopt a write end handed over with an endpoint (a child's copy inherits the
    /// parent's, so that the FIFO never loses its last writer while the endpoint is
    /// in flight, which would read as the peer's close).
    ///
    /// # Errors
    /// [`Error::Corrupt`] if `fd` is not a FIFO of this user with mode 0600.
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Result<Ringer> {
        let file = File::from(fd);
        check_private_fifo(&file, "doorbell descriptor")?;
        Ok(Ringer { file })
    }

    /// The write end's descriptor (to hand over with the endpoint).
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Ring once (a full FIFO is rung already).
    pub fn ring(&self) {
        let _ = (&self.file).write(&[1]);
    }
}

/// `poll(2)` for readability on `fds`, at most `timeout` (`None`: no limit), retried on
/// `EINTR` with what is left. Returns which descriptors are readable (or hung up);
/// all `false` on timeout.
///
/// # Errors
/// [`Error::Os`] from `poll`.
pub fn poll_readable(fds: &[RawFd], timeout: Option<std::time::Duration>) -> Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    let deadline = timeout.and_then(|t| std::time::Instant::now().checked_add(t));
    loop {
        let ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(std::time::Instant::now());
                // Round up: a 0.5 ms wait must not become a busy poll.
                i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
            }
        };
        // SAFETY: `pfds` is a valid array of `pfds.len()` pollfd structs that poll may
        // write `revents` into for the duration of the call.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        if n >= 0 {
            return Ok(pfds.iter().map(|p| p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0).collect());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(os_err("poll", "doorbells", e));
        }
    }
}

/// A slot reader's own doorbell: a FIFO `shmplane.<name>@w<pid>.<serial>` that writers
/// ring when the slot's `updated` event count has its doorbell armed. Slots have any
/// number of writers and readers, so each reader waiting through the OS has its own
/// FIFO, named in the slot's table of [`crate::layout::SLOT_BELLS`] entries; a writer
/// rings every named one. The reader holds its FIFO `O_RDWR` (so it never reads
/// end-of-file and can ring itself); a writer that finds no reader on a FIFO (the
/// reader died: `ENXIO`) frees the entry and removes the file.
#[derive(Debug)]
pub struct SlotBell {
    file: File,
    path: String,
    index: usize,
    id: u64,
}

fn slot_bell_path(name: &str, id: u64) -> String {
    format!("{SHM_DIR}/{PREFIX}{name}@w{}.{}", id >> 32, id & 0xffff_ffff)
}

impl SlotBell {
    /// Make this reader's doorbell for slot `name` and enter it in `table`. `None` if
    /// the table is full (wait without a descriptor then).
    ///
    /// # Errors
    /// [`Error::Os`] from `mkfifo` or `open`.
    pub fn create(name: &str, table: &[crate::sync::AtomicU64]) -> Result<Option<SlotBell>> {
        use crate::sync::Ordering;
        static SERIAL: std::sync::OnceLock<std::sync::Mutex<u32>> = std::sync::OnceLock::new();
        let serial = {
            let mut s = SERIAL.get_or_init(Default::default).lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            *s = s.wrapping_add(1).max(1);
            *s
        };
        // Never replace a file that exists (another process's live FIFO, with a
        // reused pid in another namespace): take the next serial instead.
        let mut made = None;
        for bump in 0..16u32 {
            let id = (u64::from(std::process::id()) << 32) | u64::from(serial.wrapping_add(bump).max(1));
            let path = slot_bell_path(name, id);
            match make_fifo(&path) {
                Ok(()) => {
                    made = Some((id, path));
                    break;
                }
                Err((_, e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err((op, e)) => return Err(os_err(op, &path, e)),
            }
        }
        let Some((id, path)) = made else { return Ok(None) };
        let file = open(&path, true)?;
        for attempt in 0..2 {
            for (index, entry) in table.iter().enumerate() {
                // ORDERING: AcqRel CAS, partner of the writers' Acquire loads in
                // `ring_slot_readers`: the FIFO exists before its entry is seen.
                if entry.compare_exchange(0, id, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                    return Ok(Some(SlotBell { file, path, index, id }));
                }
            }
            if attempt == 0 {
                // Full: free the entries of readers that died (a spurious ring for the
                // live ones), then look again.
                ring_slot_readers(name, table);
            }
        }
        let _ = std::fs::remove_file(&path);
        Ok(None)
    }

    /// The descriptor to wait on.
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Read every pending ring.
    pub fn drain(&self) {
        let mut buf = [0u8; 4096];
        while matches!((&self.file).read(&mut buf), Ok(n) if n > 0) {}
    }

    /// Ring it ourselves (the value changed before we armed).
    pub fn ring(&self) {
        let _ = (&self.file).write(&[1]);
    }

    /// Leave the table and remove the FIFO.
    pub fn close(self, table: &[crate::sync::AtomicU64]) {
        use crate::sync::Ordering;
        // ORDERING: Relaxed CAS: only frees the entry.
        let _ = table[self.index].compare_exchange(self.id, 0, Ordering::Relaxed, Ordering::Relaxed);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Ring every reader doorbell named in slot `name`'s `table` (a writer's side); free
/// the entries of readers that are gone.
pub fn ring_slot_readers(name: &str, table: &[crate::sync::AtomicU64]) {
    use crate::sync::Ordering;
    for entry in table {
        // ORDERING: Acquire, partner of `SlotBell::create`'s CAS.
        let id = entry.load(Ordering::Acquire);
        if id == 0 {
            continue;
        }
        let path = slot_bell_path(name, id);
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(w) => {
                let _ = (&w).write(&[1]);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                // No reader holds it: its reader died. Free the entry, remove the file.
                // ORDERING: Relaxed CAS: only frees the entry.
                if entry.compare_exchange(id, 0, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                    let _ = std::fs::remove_file(&path);
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                // Gone already (removed by `gc`): free the entry only.
                // ORDERING: Relaxed CAS: only frees the entry.
                let _ = entry.compare_exchange(id, 0, Ordering::Relaxed, Ordering::Relaxed);
            }
            Err(_) => {}
        }
    }
}
