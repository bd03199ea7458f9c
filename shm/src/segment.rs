//! A segment: a region holding a validated [`SegmentHeader`] and one kind's layout,
//! plus the role operations of [`crate::liveness`] on it.

use crate::error::{Error, Result};
use crate::header::{has_magic, is_ready, validate, write_header, HeaderInfo, SegmentKind};
use crate::layout::{SegmentHeader, INIT_LOCK_BYTE, ROLE_LOCK_BYTE};
use crate::liveness::{self, PeerState, ATTACHED, CLOSED, CLOSING};
use crate::region::{Region, ShmFile};
use crate::sync::Ordering;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// How long `open` waits for a creator that is still initialising the segment.
pub const INIT_WAIT: Duration = Duration::from_secs(2);

/// A mapped, validated segment. Each `Segment` has its own open file description, so
/// it is one lock owner: one endpoint.
#[derive(Debug)]
pub struct Segment {
    region: Region,
    file: Option<ShmFile>,
    name: Option<String>,
    info: HeaderInfo,
}

enum Attach {
    Busy,
    Failed(Error),
}

impl Segment {
    /// Create named segment `name` of `total_len` bytes (zero-filled), write its header
    /// and publish it. If a *stale* segment of that name exists (creator died while
    /// initialising, an owner died without closing, or all roles closed), it is removed
    /// and replaced.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] (a live segment or one waiting for a peer),
    /// [`Error::Corrupt`] (a non-shmplane file has the name), [`Error::NoSpace`],
    /// [`Error::InvalidName`], [`Error::Os`].
    pub fn create(name: &str, kind: SegmentKind, total_len: usize, param0: u64, param1: u64) -> Result<Segment> {
        for _ in 0..8 {
            match ShmFile::create(name, total_len as u64) {
                Ok(file) => return Self::init(file, Some(name), kind, total_len, param0, param1),
                Err(Error::AlreadyExists { .. }) => match stale(name) {
                    Ok(Some(old)) => old.unlink_if_same(name),
                    Ok(None) => {
                        return Err(Error::AlreadyExists { name: name.to_owned(), path: crate::region::shm_path(name) })
                    }
                    Err(Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                },
                Err(e) => return Err(e),
            }
        }
        Err(Error::AlreadyExists { name: name.to_owned(), path: crate::region::shm_path(name) })
    }

    fn init(
        file: ShmFile,
        name: Option<&str>,
        kind: SegmentKind,
        total_len: usize,
        param0: u64,
        param1: u64,
    ) -> Result<Segment> {
        file.try_lock(INIT_LOCK_BYTE)?;
        let region = Region::map(&file, total_len)?;
        let segment = Segment {
            region,
            info: HeaderInfo { kind, total_len: total_len as u64, param0, param1, creator_pid: std::process::id() },
            file: Some(file),
            name: name.map(str::to_owned),
        };
        write_header(segment.header(), kind, total_len as u64, param0, param1);
        if let Some(f) = &segment.file {
            f.unlock(INIT_LOCK_BYTE);
        }
        Ok(segment)
    }

    /// A segment on the heap (no file, no name, no locks): for tests and valgrind.
    ///
    /// # Panics
    /// If `total_len` is smaller than a header.
    pub fn heap(kind: SegmentKind, total_len: usize, param0: u64, param1: u64) -> Segment {
        assert!(total_len >= size_of::<SegmentHeader>());
        let segment = Segment {
            region: Region::heap(total_len),
            file: None,
            name: None,
            info: HeaderInfo { kind, total_len: total_len as u64, param0, param1, creator_pid: std::process::id() },
        };
        write_header(segment.header(), kind, total_len as u64, param0, param1);
        segment
    }

    /// Open named segment `name`, expecting `kind`, validating the header. Waits up to
    /// [`INIT_WAIT`] for a creator that is still initialising.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Corrupt`] (garbage, truncated, creator died while
    /// initialising), [`Error::Incompatible`], [`Error::WrongKind`], [`Error::Os`].
    pub fn open(name: &str, kind: SegmentKind) -> Result<Segment> {
        let deadline = Instant::now() + INIT_WAIT;
        loop {
            let file = ShmFile::open(name)?;
            match Self::attach(file, Some(name), kind) {
                Ok(s) => return Ok(s),
                Err(Attach::Failed(e)) => return Err(e),
                Err(Attach::Busy) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                Err(Attach::Busy) => {
                    return Err(Error::Corrupt {
                        path: crate::region::shm_path(name),
                        what: format!("its creator did not finish initialising it within {INIT_WAIT:?}"),
                    })
                }
            }
        }
    }

    /// Map an already-open segment descriptor (passed from another process).
    ///
    /// # Errors
    /// As [`Segment::open`].
    pub fn from_fd(fd: OwnedFd, name: Option<String>, kind: SegmentKind) -> Result<Segment> {
        let path = match &name {
            Some(n) => crate::region::shm_path(n),
            None => format!("<descriptor {}>", fd.as_raw_fd()),
        };
        let file = ShmFile::from_fd(fd, path);
        match Self::attach(file, name.as_deref(), kind) {
            Ok(s) => Ok(s),
            Err(Attach::Failed(e)) => Err(e),
            Err(Attach::Busy) => Err(Error::Corrupt {
                path: name.unwrap_or_default(),
                what: "segment passed by descriptor is not initialised".into(),
            }),
        }
    }

    fn attach(file: ShmFile, name: Option<&str>, kind: SegmentKind) -> Result<Segment, Attach> {
        let fail = Attach::Failed;
        let size = file.size().map_err(fail)?;
        let busy = file.is_locked_by_other(INIT_LOCK_BYTE).map_err(fail)?;
        let header_len = size_of::<SegmentHeader>() as u64;
        if size == 0 || (busy && size < header_len) {
            return Err(Attach::Busy);
        }
        if size < header_len {
            return Err(fail(Error::Corrupt {
                path: file.path().to_owned(),
                what: format!("file is {size} bytes, smaller than a {header_len}-byte segment header"),
            }));
        }
        let len = usize::try_from(size).map_err(|_| fail(Error::InvalidArgument("segment too large".into())))?;
        let region = Region::map(&file, len).map_err(fail)?;
        // SAFETY: SegmentHeader is atomics-only, offset 0 is page-aligned, size >= header.
        let header: &SegmentHeader = unsafe { region.at(0) };
        if !is_ready(header) {
            if busy {
                return Err(Attach::Busy);
            }
            return Err(fail(Error::Corrupt {
                path: file.path().to_owned(),
                what: if has_magic(header) {
                    "its creator died before finishing initialisation; create it again to replace it".into()
                } else {
                    "not a shmplane segment (bad magic number)".into()
                },
            }));
        }
        let info = validate(header, size, kind, file.path()).map_err(fail)?;
        Ok(Segment { region, file: Some(file), name: name.map(str::to_owned), info })
    }

    /// Open the same segment again: a new open file description (so a separate lock
    /// owner) and a new mapping.
    ///
    /// # Errors
    /// [`Error::Os`], or validation errors if the segment changed.
    pub fn reopen(&self) -> Result<Segment> {
        match &self.file {
            None => Err(Error::InvalidArgument("a heap segment cannot be reopened".into())),
            Some(f) => match Self::attach(f.reopen()?, self.name.as_deref(), self.info.kind) {
                Ok(s) => Ok(s),
                Err(Attach::Failed(e)) => Err(e),
                Err(Attach::Busy) => unreachable!("an attached segment is initialised"),
            },
        }
    }

    /// The header.
    pub fn header(&self) -> &SegmentHeader {
        // SAFETY: every segment starts with a header; offset 0 is page-aligned; the
        // region is at least a header long (checked at create/attach).
        unsafe { self.region.at(0) }
    }

    /// The mapped region.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Validated header contents.
    pub fn info(&self) -> HeaderInfo {
        self.info
    }

    /// The segment's name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The segment file's path (`<heap>` for heap segments).
    pub fn path(&self) -> &str {
        self.file.as_ref().map_or("<heap>", ShmFile::path)
    }

    /// The descriptor of this segment's open file description, if file-backed.
    pub fn fd(&self) -> Option<RawFd> {
        self.file.as_ref().map(|f| f.as_file().as_raw_fd())
    }

    fn role_name(&self, role: usize) -> &'static str {
        self.info.kind.roles()[role]
    }

    /// Claim role `role` for this segment's open file description and register the
    /// calling process as its owner.
    ///
    /// # Errors
    /// [`Error::RoleTaken`] if another description holds it; [`Error::Os`].
    pub fn claim_role(&self, role: usize, me: (u32, u64)) -> Result<()> {
        let entry = &self.header().roles[role];
        if let Some(f) = &self.file {
            if !f.try_lock(ROLE_LOCK_BYTE + role as u64)? {
                return Err(Error::RoleTaken {
                    role: self.role_name(role),
                    path: self.path().to_owned(),
                    pid: entry.owner_pid.load(Ordering::Relaxed),
                });
            }
        }
        liveness::register_owner(entry, me.0, me.1);
        Ok(())
    }

    /// Hold a shared lock on the handle byte (role 0's byte) for as long as this
    /// segment is open: a slot is in use while any handle holds it.
    ///
    /// # Errors
    /// [`Error::Os`].
    pub fn hold_shared(&self) -> Result<()> {
        if let Some(f) = &self.file {
            if !f.try_lock_shared(ROLE_LOCK_BYTE)? {
                return Err(Error::Corrupt {
                    path: self.path().to_owned(),
                    what: "an exclusive lock is held on a slot's handle byte".into(),
                });
            }
        }
        Ok(())
    }

    /// Close a handle of a shared-lock segment (a slot): unmap and close, then unlink
    /// the name if no other handle holds the segment. Best effort; never fails.
    pub fn close_shared(self) {
        let Segment { region, file, name, info } = self;
        let Some(file) = file else { return };
        let probe = file.reopen();
        drop(region);
        drop(file);
        if let (Ok(probe), Some(name)) = (probe, name) {
            let Some(region) = map_header(&probe) else { return };
            // SAFETY: header at offset 0 of a region a header long.
            let header: &SegmentHeader = unsafe { region.at(0) };
            if finished(&probe, header, info.kind) {
                probe.unlink_if_same(&name);
            }
        }
    }

    /// State of peer role `role` (never our own role: a lock we hold is invisible to us).
    ///
    /// # Errors
    /// [`Error::Os`] if the lock query fails.
    pub fn peer_state(&self, role: usize) -> Result<PeerState> {
        let held = match &self.file {
            Some(f) => f.is_locked_by_other(ROLE_LOCK_BYTE + role as u64)?,
            None => true,
        };
        Ok(liveness::classify(&self.header().roles[role], held))
    }

    /// Close this endpoint's hold on `role`: unmap and close the descriptor, then mark
    /// the role closed if no other process still holds it, and unlink the name if the
    /// segment is finished (see [`stale`]). Best effort; never fails.
    pub fn close_role(self, role: usize, me: u32) {
        let Segment { region, file, name, info } = self;
        let Some(file) = file else {
            // SAFETY: header at offset 0 of a region at least a header long.
            let header: &SegmentHeader = unsafe { region.at(0) };
            header.roles[role].state.store(CLOSED, Ordering::Release);
            return;
        };
        let probe = file.reopen();
        // SAFETY: as above.
        let header: &SegmentHeader = unsafe { region.at(0) };
        let entry = &header.roles[role];
        // Ours to close if we own it, or if nobody does (the process that last used a
        // shared descriptor closed and gave it up, or never registered).
        let owner_pid = entry.owner_pid.load(Ordering::Relaxed);
        let owner = owner_pid == me || owner_pid == 0;
        if owner {
            // ORDERING: Release, partner of classify's Acquire.
            entry.state.store(CLOSING, Ordering::Release);
        }
        // The lock lives as long as any reference to the description: fd and mapping.
        drop(region);
        drop(file);
        let Ok(probe) = probe else { return };
        let Some(region) = map_header(&probe) else { return };
        // SAFETY: as above.
        let header: &SegmentHeader = unsafe { region.at(0) };
        let entry = &header.roles[role];
        // Only the owner needs to know (and waits up to FORK_GRACE to find out): a
        // handle passed to a child that registered there closes at once.
        if owner {
            if held_after_grace(&probe, ROLE_LOCK_BYTE + role as u64) {
                // Another process shares the description (fork, passed descriptor):
                // the role lives on; it registers itself on first use.
                let _ = entry.state.compare_exchange(CLOSING, ATTACHED, Ordering::AcqRel, Ordering::Relaxed);
                let _ = entry.owner_pid.compare_exchange(owner_pid, 0, Ordering::AcqRel, Ordering::Relaxed);
            } else {
                entry.state.store(CLOSED, Ordering::Release);
            }
        }
        if let Some(name) = name {
            if finished(&probe, header, info.kind) {
                probe.unlink_if_same(&name);
            }
        }
    }
}

/// Map the header of `file` for a close-time probe, or `None` if the file is now
/// shorter than a header (truncated by someone else: reading it would be SIGBUS). A
/// truncation between this check and the read is still possible (memfd seals would
/// close that window; `shm_open` names cannot be sealed).
fn map_header(file: &ShmFile) -> Option<Region> {
    let header_len = size_of::<SegmentHeader>();
    if file.size().ok()? < header_len as u64 {
        return None;
    }
    Region::map(file, header_len).ok()
}

/// True if no process holds any lock on the segment and it will never be used again:
/// creator died while initialising, an owner died without closing, or every role closed.
/// A segment with a never-claimed role (waiting for its peer) is not finished.
fn finished(file: &ShmFile, header: &SegmentHeader, kind: SegmentKind) -> bool {
    let locked = |byte| file.is_locked_by_other(byte).unwrap_or(true);
    if locked(INIT_LOCK_BYTE) {
        return false;
    }
    let roles = kind.roles().len();
    let ready = is_ready(header);
    for r in 0..roles {
        let byte = ROLE_LOCK_BYTE + r as u64;
        // A closed role's lock still seen held is, in practice, a child forked by
        // another thread that has not exec'd yet: give it a moment (see held_after_grace).
        let closed = ready && matches!(header.roles[r].state.load(Ordering::Acquire), CLOSED | CLOSING);
        if if closed { held_after_grace(file, byte) } else { locked(byte) } {
            return false;
        }
    }
    if !ready || kind == SegmentKind::Slot {
        // A slot has no role states: unused once no handle holds its shared lock.
        return true;
    }
    let states: Vec<u32> = (0..roles).map(|r| header.roles[r].state.load(Ordering::Acquire)).collect();
    states.iter().any(|&s| s == ATTACHED || s == CLOSING) || states.iter().all(|&s| s == CLOSED)
}

/// How long a lock seen held on a role that was just closed may take to go away.
const FORK_GRACE: Duration = Duration::from_millis(20);

/// True if another open file description still holds `byte` after [`FORK_GRACE`].
///
/// While another thread of this process spawns a subprocess, the child holds copies of
/// all our descriptors until it execs (`O_CLOEXEC` closes them only then), so for a
/// moment it seems to hold every lock we hold. That must not count as "another process
/// shares this endpoint" when closing it.
fn held_after_grace(file: &ShmFile, byte: u64) -> bool {
    let deadline = Instant::now() + FORK_GRACE;
    loop {
        match file.is_locked_by_other(byte) {
            Ok(false) => return false,
            Ok(true) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            _ => return true,
        }
    }
}

/// If segment `name` is stale (see [`finished`]), its open file, to unlink by identity.
///
/// # Errors
/// [`Error::NotFound`] if it vanished; [`Error::Corrupt`] if a non-shmplane file has
/// the name; [`Error::Os`].
pub fn stale(name: &str) -> Result<Option<ShmFile>> {
    let file = ShmFile::open(name)?;
    if file.is_locked_by_other(INIT_LOCK_BYTE)? {
        return Ok(None);
    }
    let size = file.size()?;
    let header_len = size_of::<SegmentHeader>() as u64;
    if size < header_len {
        // Either a creator between `shm_open` and taking the init lock (microseconds),
        // or one that died there. Only a file older than that window is stale.
        let young = file
            .as_file()
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age < Duration::from_secs(1));
        return Ok((!young).then_some(file));
    }
    let region = Region::map(&file, header_len as usize)?;
    // SAFETY: header at offset 0, region is a header long.
    let header: &SegmentHeader = unsafe { region.at(0) };
    // A creator that died before its first header store left zeros (write_header
    // stores the magic first); anything else without the magic is not ours.
    if !has_magic(header) && (is_ready(header) || !header_is_zero(header)) {
        return Err(Error::Corrupt {
            path: file.path().to_owned(),
            what: "a file that is not a shmplane segment has this name; remove it".into(),
        });
    }
    let kind_raw = (header.version_kind.load(Ordering::Relaxed) >> 32) as u32;
    let kind = match kind_raw {
        1 => SegmentKind::Channel,
        2 => SegmentKind::Slot,
        _ if !is_ready(header) => SegmentKind::Channel,
        _ => {
            return Err(Error::Corrupt { path: file.path().to_owned(), what: format!("unknown segment kind {kind_raw}") })
        }
    };
    let done = finished(&file, header, kind);
    drop(region);
    Ok(done.then_some(file))
}

/// True if the header's fields all read zero.
fn header_is_zero(h: &SegmentHeader) -> bool {
    [&h.magic, &h.version_kind, &h.layout_hash, &h.total_len, &h.param0, &h.param1]
        .iter()
        .all(|w| w.load(Ordering::Relaxed) == 0)
        && h.creator_pid.load(Ordering::Relaxed) == 0
        && h.init_state.load(Ordering::Relaxed) == 0
}

/// Remove every stale segment of this user (see [`stale`]). Returns the names removed.
pub fn gc() -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(dir) = std::fs::read_dir(crate::region::SHM_DIR) else { return removed };
    for entry in dir.flatten() {
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str().and_then(|n| n.strip_prefix(crate::region::PREFIX)) else { continue };
        if let Ok(Some(file)) = stale(name) {
            file.unlink_if_same(name);
            removed.push(name.to_owned());
        }
    }
    removed
}
