//! A segment's life: create, open (validating it), claim and close its roles.
//!
//! A segment is a region holding a validated [`SegmentHeader`], a role table sized by
//! the kind's [`crate::kind::KindSpec`], and the kind's own layout. Named segments live
//! at `/dev/shm/shmplane.<name>`, created exclusively with mode 0600 and their memory
//! reserved up front (`posix_fallocate`: a full `/dev/shm` fails at create, never as
//! SIGBUS later), as iceoryx2 does. Deciding which segments are stale and removing them
//! is [`crate::gc`].

use crate::error::{Error, Result};
use crate::gc::{finished, held_after_grace, stale};
use crate::header::{has_magic, is_ready, validate, write_header, HeaderInfo, SegmentKind};
use crate::kind::Params;
use crate::layout::{control_offset, copy_lock_byte, role_offset, EventCount, RoleEntry, SegmentHeader, INIT_LOCK_BYTE, ROLE_LOCK_BYTE};
use crate::lease::{CopyId, Copies, Lease};
use crate::liveness::{self, key_alive, PeerState, ATTACHED, CLOSED, CLOSING};
use crate::region::{Region, ShmFile};
use std::sync::Arc;
use crate::wait::SharedFutex;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// How long `open` waits for a creator that is still initialising the segment, plus
/// [`INIT_WAIT_PER_GIB`] per GiB of the file: a slot's creator writes its initial value
/// (both copies) before it publishes the header.
pub const INIT_WAIT: Duration = Duration::from_secs(2);

/// Added to [`INIT_WAIT`] per GiB of segment file (a creator writing a large slot's
/// initial value on a busy machine; 4 s per GiB is ~250 MB/s).
pub const INIT_WAIT_PER_GIB: Duration = Duration::from_secs(4);

/// A mapped, validated segment. Each `Segment` has its own open file description, so
/// it is one lock owner: one endpoint (and its copies, which share the description).
#[derive(Debug)]
pub struct Segment {
    /// Shared with zero-copy views of received messages, which keep the mapping (not
    /// the segment's role) alive past the handle's close.
    region: Arc<Region>,
    file: Option<ShmFile>,
    name: Option<String>,
    info: HeaderInfo,
}

enum Attach {
    Busy,
    Failed(Error),
}

/// The header fields of a new segment of `kind` with `params`, as its spec computes
/// them.
fn new_info(kind: SegmentKind, params: Params) -> Result<HeaderInfo> {
    let spec = kind.spec();
    let total_len = (spec.segment_len)(params).map_err(Error::InvalidArgument)?;
    Ok(HeaderInfo {
        kind,
        total_len: total_len as u64,
        param0: params.p0,
        param1: params.p1,
        role_count: (spec.role_count)(params),
        creator_pid: std::process::id(),
    })
}

impl Segment {
    /// Create named segment `name` of `kind` with `params` (zero-filled), write its
    /// header and publish it. If a *stale* segment of that name exists (creator died
    /// while initialising, an owner died without closing, or all roles closed), it is
    /// removed and replaced.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (parameters the kind refuses), [`Error::AlreadyExists`]
    /// (a live segment or one waiting for a peer), [`Error::Corrupt`] (a non-shmplane
    /// file has the name), [`Error::NoSpace`], [`Error::InvalidName`], [`Error::Os`].
    pub fn create(name: &str, kind: SegmentKind, params: Params) -> Result<Segment> {
        Segment::create_with(name, kind, params, |segment| segment)
    }

    /// [`Segment::create`] that lets `init` fill the segment's memory before its header
    /// is published (holding the init lock): an opener never sees it half made (a slot
    /// writes its initial value and versions there; see `crate::seqlock::init`).
    /// `init` gets the mapped segment and gives it back.
    ///
    /// # Errors
    /// As [`Segment::create`].
    pub fn create_with(name: &str, kind: SegmentKind, params: Params, init: impl FnOnce(Segment) -> Segment) -> Result<Segment> {
        let info = new_info(kind, params)?;
        let mut init = Some(init);
        for _ in 0..8 {
            // The init lock from the file's first moment: an opener waits for it
            // while the memory is reserved (seconds for a large slot) and filled.
            match ShmFile::create_locked(name, info.total_len, INIT_LOCK_BYTE) {
                Ok(file) => {
                    // Doorbells before the header: an opener that sees the segment
                    // ready finds them (the name is ours: we created it exclusively).
                    if matches!(kind, SegmentKind::Channel | SegmentKind::Mailbox | SegmentKind::Broadcast) {
                        if kind != SegmentKind::Channel {
                            // Lane or subscriber doorbells an earlier segment of this
                            // name left.
                            crate::bell::remove(name);
                        }
                        if let Err(e) = crate::bell::create(name) {
                            file.unlink_if_same(name);
                            return Err(e);
                        }
                    }
                    return Self::init(file, Some(name), info, init.take().expect("called once: the loop returns here"));
                }
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

    fn init(file: ShmFile, name: Option<&str>, info: HeaderInfo, init: impl FnOnce(Segment) -> Segment) -> Result<Segment> {
        file.try_lock(INIT_LOCK_BYTE)?;
        let region = Region::map(&file, info.total_len as usize)?;
        let segment = init(Segment { region: Arc::new(region), info, file: Some(file), name: name.map(str::to_owned) });
        write_header(segment.header(), &segment.info);
        if let Some(f) = &segment.file {
            f.unlock(INIT_LOCK_BYTE);
        }
        Ok(segment)
    }

    /// A segment on the heap (no file, no name, no locks): for tests and valgrind.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for parameters the kind refuses.
    pub fn heap(kind: SegmentKind, params: Params) -> Result<Segment> {
        let info = new_info(kind, params)?;
        let segment =
            Segment { region: Arc::new(Region::heap(info.total_len as usize)), file: None, name: None, info };
        write_header(segment.header(), &segment.info);
        Ok(segment)
    }

    /// A heap segment with exactly these header fields and length, *not* checked against
    /// the kind's rules: for tests of the algorithms at sizes real segments never have
    /// (rings of 64 bytes).
    ///
    /// # Panics
    /// If `total_len` cannot hold the header and `role_count` role entries.
    pub fn heap_sized(kind: SegmentKind, params: Params, role_count: usize, total_len: usize) -> Segment {
        assert!(total_len >= control_offset(role_count), "a {total_len}-byte segment of {role_count} roles");
        let info = HeaderInfo {
            kind,
            total_len: total_len as u64,
            param0: params.p0,
            param1: params.p1,
            role_count,
            creator_pid: std::process::id(),
        };
        let segment = Segment { region: Arc::new(Region::heap(total_len)), file: None, name: None, info };
        write_header(segment.header(), &segment.info);
        segment
    }

    /// Open named segment `name`, expecting `kind`, validating the header. Waits up to
    /// [`INIT_WAIT`] (plus [`INIT_WAIT_PER_GIB`] per GiB of file) for a creator that is
    /// still initialising.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Corrupt`] (garbage, truncated, creator died while
    /// initialising), [`Error::Incompatible`], [`Error::WrongKind`], [`Error::Os`].
    pub fn open(name: &str, kind: SegmentKind) -> Result<Segment> {
        Segment::open_any(name, &[kind])
    }

    /// [`Segment::open`] accepting any of `kinds` (check [`Segment::info`]'s kind).
    ///
    /// # Errors
    /// As [`Segment::open`]; [`Error::WrongKind`] names `kinds[0]` as expected.
    pub fn open_any(name: &str, kinds: &[SegmentKind]) -> Result<Segment> {
        Segment::open_any_within(name, kinds, INIT_WAIT)
    }

    /// [`Segment::open_any`] waiting at most `within` (zero: not at all) for a creator
    /// that is still initialising: a survey of many segments (`shmplane ls`) must not
    /// wait 2 s at each one a creator left empty.
    ///
    /// # Errors
    /// As [`Segment::open`].
    pub fn open_any_within(name: &str, kinds: &[SegmentKind], within: Duration) -> Result<Segment> {
        let start = Instant::now();
        let mut deadline = start + within;
        loop {
            let file = ShmFile::open(name)?;
            if !within.is_zero() {
                // A larger file takes its creator longer to fill (see INIT_WAIT).
                let gib = file.size().unwrap_or(0) as f64 / (1u64 << 30) as f64;
                deadline = deadline.max(start + within + INIT_WAIT_PER_GIB.mul_f64(gib.min(1024.0)));
            }
            match Self::attach(file, Some(name), kinds) {
                Ok(s) => return Ok(s),
                Err(Attach::Failed(e)) => return Err(e),
                Err(Attach::Busy) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                Err(Attach::Busy) => {
                    return Err(Error::Corrupt {
                        path: crate::region::shm_path(name),
                        what: if within.is_zero() {
                            "its creator has not finished initialising it (or died before it did)".into()
                        } else {
                            format!("its creator did not finish initialising it within {:?}", deadline - start)
                        },
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
        Segment::from_fd_any(fd, name, &[kind])
    }

    /// [`Segment::from_fd`] accepting any of `kinds`.
    ///
    /// # Errors
    /// As [`Segment::open_any`].
    pub fn from_fd_any(fd: OwnedFd, name: Option<String>, kinds: &[SegmentKind]) -> Result<Segment> {
        let path = match &name {
            Some(n) => crate::region::shm_path(n),
            None => format!("<descriptor {}>", fd.as_raw_fd()),
        };
        let file = ShmFile::from_fd(fd, path);
        match Self::attach(file, name.as_deref(), kinds) {
            Ok(s) => Ok(s),
            Err(Attach::Failed(e)) => Err(e),
            Err(Attach::Busy) => Err(Error::Corrupt {
                path: name.unwrap_or_default(),
                what: "segment passed by descriptor is not initialised".into(),
            }),
        }
    }

    fn attach(file: ShmFile, name: Option<&str>, kinds: &[SegmentKind]) -> Result<Segment, Attach> {
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
            // A creator between reserving the file's memory (and making its doorbells)
            // and taking the init lock leaves a sized file of zeros for a moment: a
            // young all-zero file is one being initialised, not a foreign one.
            let young = || {
                file.as_file().metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_none_or(|age| age < Duration::from_secs(1))
            };
            if busy || (crate::header::is_zero(header) && young()) {
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
        // Validation checks the role table and the kind's layout against the file size.
        let info = validate(header, size, kinds, file.path()).map_err(fail)?;
        Ok(Segment { region: Arc::new(region), file: Some(file), name: name.map(str::to_owned), info })
    }

    /// Open the same segment again: a new open file description (so a separate lock
    /// owner) and a new mapping.
    ///
    /// # Errors
    /// [`Error::Os`], or validation errors if the segment changed.
    pub fn reopen(&self) -> Result<Segment> {
        match &self.file {
            None => Err(Error::InvalidArgument("a heap segment cannot be reopened".into())),
            Some(f) => match Self::attach(f.reopen()?, self.name.as_deref(), &[self.info.kind]) {
                Ok(s) => Ok(s),
                Err(Attach::Failed(e)) => Err(e),
                // Initialised once (this handle attached): a header that reads as not
                // yet initialised was overwritten or truncated since.
                Err(Attach::Busy) => Err(Error::Corrupt {
                    path: f.path().to_owned(),
                    what: "the header of a segment in use no longer reads as initialised (truncated or overwritten)".into(),
                }),
            },
        }
    }

    /// The same segment through a duplicate of this descriptor: the same open file
    /// description (so the same lock owner: the roles this one holds are held by the
    /// copy too), a mapping of its own.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a heap segment; [`Error::Os`].
    pub fn share(&self) -> Result<Segment> {
        let Some(f) = &self.file else {
            return Err(Error::InvalidArgument("a heap segment cannot be shared".into()));
        };
        let fd = f.as_file().try_clone().map_err(|e| Error::Os { op: "dup a segment descriptor", path: f.path().to_owned(), source: e })?;
        let file = ShmFile::from_fd(fd.into(), f.path().to_owned());
        let region = Region::map(&file, self.info.total_len as usize)?;
        Ok(Segment { region: Arc::new(region), file: Some(file), name: self.name.clone(), info: self.info })
    }

    /// Keep only the mapping: its descriptor closes (a mapping outlives it). For a
    /// second, read-only look at a segment that holds no role.
    pub fn into_region(self) -> Arc<Region> {
        self.region
    }

    /// A reference that keeps this handle's mapping alive. (A mapping keeps the
    /// segment's open file description, and with it this handle's role locks: see
    /// [`Segment::view_mapping`] for views that outlive the handle.)
    pub fn mapping(&self) -> Arc<Region> {
        Arc::clone(&self.region)
    }

    /// A second, read-only mapping of the whole segment through a new open file
    /// description that holds no locks: for zero-copy views of received messages, which
    /// may outlive the handle (its close then completes and its role is seen closed,
    /// whatever views remain), and which the memory protection keeps read-only. A heap
    /// segment (tests) returns its own region.
    ///
    /// # Errors
    /// [`Error::Os`] if the file cannot be opened again or mapped.
    pub fn view_mapping(&self) -> Result<Arc<Region>> {
        let Some(file) = &self.file else { return Ok(self.mapping()) };
        let again = file.reopen_read_only()?;
        Ok(Arc::new(Region::map_read_only(&again, self.info.total_len as usize)?))
    }

    /// [`Segment::view_mapping`], read-write: for arrays a sender lends in place (a
    /// loan), which may outlive the handle without keeping its role.
    ///
    /// # Errors
    /// [`Error::Os`] if the file cannot be opened again or mapped.
    pub fn loan_mapping(&self) -> Result<Arc<Region>> {
        let Some(file) = &self.file else { return Ok(self.mapping()) };
        let again = file.reopen()?;
        Ok(Arc::new(Region::map(&again, self.info.total_len as usize)?))
    }

    /// True once this process found the segment file truncated under its mapping (a
    /// `SIGBUS`, caught: see [`crate::region::guard`]). One load; for the points where
    /// an operation's result leaves it.
    #[inline(always)]
    pub fn tripped(&self) -> bool {
        self.region.tripped()
    }

    /// [`Error::Corrupt`] if the segment file was truncated or shrunk under this
    /// process: its mapping tripped, or (a per-wait-slice check, one `fstat` and one
    /// `sigaction` read, which also puts the SIGBUS guard back on top if another
    /// handler replaced it) the file is now shorter than the segment. From then on nothing this handle reads or
    /// writes is shared with its peers; the segment must be recreated.
    ///
    /// # Errors
    /// [`Error::Corrupt`].
    pub fn check_intact(&self) -> Result<()> {
        if self.file.is_some() {
            // A SIGBUS handler installed since our last mapping (faulthandler) would
            // take our faults: ours goes back on top, once per wait slice.
            crate::region::guard::ensure_installed();
        }
        if self.region.tripped() {
            return Err(self.truncated_error());
        }
        if let Some(file) = &self.file {
            if file.size().is_ok_and(|len| len < self.info.total_len) {
                return Err(self.truncated_error());
            }
        }
        Ok(())
    }

    /// [`Error::Corrupt`] for a segment file found truncated.
    #[cold]
    pub fn truncated_error(&self) -> Error {
        Error::Corrupt {
            path: self.path().to_owned(),
            what: format!(
                "the segment file was truncated or shrunk by another process while mapped here (it should be {} bytes); \
                 this process no longer reads or writes it: close the handle and create the segment again",
                self.info.total_len
            ),
        }
    }

    /// The header.
    pub fn header(&self) -> &SegmentHeader {
        // SAFETY: every segment starts with a header; offset 0 is page-aligned; the
        // region is at least a header long (checked at create/attach).
        unsafe { self.region.at(0) }
    }

    /// Role `role`'s entry in the role table.
    ///
    /// # Panics
    /// If `role` is not below the segment's role count.
    #[inline]
    pub fn role(&self, role: usize) -> &RoleEntry {
        assert!(role < self.info.role_count, "role {role} of a {}-role segment", self.info.role_count);
        // SAFETY: the validated role table lies inside the region (validation checked
        // the total length the kind's spec computes, which includes the table); entries
        // are 128-aligned atomics-only structs.
        unsafe { self.region.at(role_offset(role)) }
    }

    /// Byte offset of the kind's control block (after the role table).
    pub fn control_offset(&self) -> usize {
        control_offset(self.info.role_count)
    }

    /// The mapped region.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Validated header contents.
    pub fn info_ref(&self) -> &HeaderInfo {
        &self.info
    }

    /// The validated header fields, as a copy.
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

    /// Name of role `role`.
    pub fn role_name(&self, role: usize) -> &'static str {
        (self.info.kind.spec().role_name)(role)
    }

    /// Claim role `role` for this segment's open file description (its copies share
    /// it) and mark it attached.
    ///
    /// # Errors
    /// [`Error::RoleTaken`] if another description holds it; [`Error::Os`].
    pub fn claim_role(&self, role: usize) -> Result<()> {
        let entry = self.role(role);
        if let Some(f) = &self.file {
            if !f.try_lock(ROLE_LOCK_BYTE + role as u64)? {
                return Err(Error::RoleTaken {
                    role: self.role_name(role),
                    path: self.path().to_owned(),
                    pid: crate::lease::holder(entry).map_or(0, |(_, k)| liveness::key_pid(k)),
                });
            }
        }
        liveness::mark_attached(entry);
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
            if finished(&probe, info.kind) {
                probe.unlink_if_same(&name);
            }
        }
    }

    /// State of peer role `role` (never our own role: a lock we hold is invisible to us).
    ///
    /// # Errors
    /// [`Error::Os`] if the lock query fails.
    pub fn peer_state(&self, role: usize) -> Result<PeerState> {
        let observed = liveness::observe(self.role(role), || self.role_locked(role))?;
        Ok(liveness::classify(self.role(role), observed, |index, key| self.copy_alive(role, index, key)))
    }

    /// True if another open file description holds role `role`'s lock (always for a
    /// heap segment, which has no locks).
    fn role_locked(&self, role: usize) -> Result<bool> {
        match &self.file {
            Some(f) => f.is_locked_by_other(ROLE_LOCK_BYTE + role as u64),
            None => Ok(true),
        }
    }

    /// Unlink segment `name` if it is a `kind` segment whose role `role` closed or
    /// whose holder died (judged by its lock, as [`Segment::peer_state_by_lock`]), so
    /// that a new holder of that role can create the name afresh while the old
    /// segment's other users still hold it (an RPC server replacing a dead one: its
    /// clients are still attached). Unlinked by identity: a segment that replaced it
    /// meanwhile stays. True if unlinked.
    ///
    /// # Errors
    /// As [`Segment::open`].
    pub fn unlink_if_role_gone(name: &str, kind: SegmentKind, role: usize) -> Result<bool> {
        let segment = Segment::open(name, kind)?;
        match segment.peer_state_by_lock(role)? {
            PeerState::Dead(_) | PeerState::Closed => {
                if let Some(f) = &segment.file {
                    f.unlink_if_same(name);
                }
                Ok(true)
            }
            PeerState::Alive(_) | PeerState::Vacant => Ok(false),
        }
    }

    /// State of role `role` judged by its lock alone (not by the copies recorded in its
    /// entry): for a role whose users do not take its lease (a mailbox's consumer
    /// role, which its copies share through one description), a live holder of the
    /// lock is a live peer. Closed if the state says so, dead if attached and unheld.
    ///
    /// # Errors
    /// [`Error::Os`] if the lock query fails.
    pub fn peer_state_by_lock(&self, role: usize) -> Result<PeerState> {
        let entry = self.role(role);
        let (state, held) = liveness::observe(entry, || self.role_locked(role))?;
        let pid = crate::lease::holder(entry).map_or(0, |(_, k)| liveness::key_pid(k));
        Ok(match state {
            liveness::VACANT => PeerState::Vacant,
            liveness::CLOSED => PeerState::Closed,
            _ if held => PeerState::Alive(pid),
            liveness::CLOSING => PeerState::Closed,
            _ => PeerState::Dead(pid),
        })
    }

    /// Release this copy's lease and copy entry of role `role` and close the
    /// descriptor, leaving the role's state alone: for a role whose lock another
    /// handle of this process holds on the same description (a mailbox lane's
    /// consumer role, held by the mailbox's consumer handle), which decides.
    pub fn release_role(self, role: usize, lease: &mut Lease, claims: &mut CopyClaims, me: CopyId) {
        let entry = self.role(role);
        let mut copies = self.copies(role, claims);
        lease.release(entry, me, &mut copies);
        claims.file = None;
    }

    /// True if the copy owning entry `index` of role `role`, in the process named by
    /// `key`, lives: that process runs (or `/proc` cannot tell) and the copy's claim
    /// lock on the entry is held (death, `exec` and `close` release it).
    pub fn copy_alive(&self, role: usize, index: usize, key: u64) -> bool {
        key_alive(key)
            && self.file.as_ref().is_none_or(|f| f.is_locked_by_other(copy_lock_byte(role, index)).unwrap_or(true))
    }

    /// The pid of a live copy of role `role` that is inside an operation now (for a
    /// sender: part-way through a message), if any (see [`crate::lease::active_copy`]).
    pub fn role_active(&self, role: usize) -> Option<u32> {
        crate::lease::active_copy(self.role(role), &self.copies(role, &mut CopyClaims::default()))
    }

    /// Open `claims`' own descriptor if this process has none yet (first use, or a
    /// forked child, which drops the one it inherited).
    ///
    /// # Errors
    /// [`Error::Os`] if the segment file cannot be opened again (out of descriptors).
    pub fn open_claims(&self, claims: &mut CopyClaims) -> Result<()> {
        let Some(shared) = &self.file else { return Ok(()) };
        let generation = crate::process::fork_generation();
        if claims.file.is_none() || claims.generation != generation {
            claims.file = None;
            claims.file = Some(shared.reopen()?);
            claims.generation = generation;
        }
        Ok(())
    }

    /// The production [`Copies`] of role `role`, staking claims with `claims` (opened by
    /// [`Segment::open_claims`]).
    pub fn copies<'a>(&'a self, role: usize, claims: &'a mut CopyClaims) -> SegmentCopies<'a> {
        SegmentCopies { segment: self, role, claims }
    }

    /// Close this copy's hold on `role`: give up its lease and copy entry, unmap and
    /// close the descriptor, then mark the role closed if no other process still holds
    /// it, and unlink the name if the segment is finished (see [`crate::gc`]). Best
    /// effort; never fails. `me` is the caller's current identity (a fork child's
    /// inherited handle that never used the role releases nothing of the parent's).
    /// `wake`: the byte offset of the [`EventCount`] the peer sleeps on, woken once the
    /// role reads closed, so that a waiting peer reports the close at once instead of
    /// at its next liveness check.
    pub fn close_role(self, role: usize, lease: &mut Lease, claims: &mut CopyClaims, me: CopyId, wake: Option<usize>) {
        let entry = self.role(role);
        // Ours to close if we hold the lease, or if nobody does (the copies that used it
        // closed, never existed, or died).
        let mut copies = self.copies(role, claims);
        let owner = lease.may_close(entry, me, &copies);
        let left = lease.release(entry, me, &mut copies);
        claims.file = None;
        let Segment { region, file, name, info } = self;
        let Some(file) = file else {
            // SAFETY: the role table lies inside the region (validated at creation).
            let entry: &RoleEntry = unsafe { region.at(role_offset(role)) };
            liveness::set_state(entry, CLOSED);
            if let Some(off) = wake.filter(|off| off + size_of::<EventCount>() <= region.len()) {
                // SAFETY: in bounds (checked), 8-aligned control word of the kind's
                // layout, atomics only.
                let ev: &EventCount = unsafe { region.at(off) };
                ev.wake_all(&SharedFutex);
            }
            return;
        };
        let probe = file.reopen();
        if owner {
            // SAFETY: as above.
            let entry: &RoleEntry = unsafe { region.at(role_offset(role)) };
            liveness::set_state(entry, CLOSING);
        }
        // The lock lives as long as any reference to the description: fd and mapping.
        drop(region);
        drop(file);
        let Ok(probe) = probe else { return };
        let Some(region) = map_roles(&probe, role + 1) else { return };
        // SAFETY: map_roles mapped the header and at least `role + 1` role entries.
        let entry: &RoleEntry = unsafe { region.at(role_offset(role)) };
        // Only the owner needs to know (and waits up to the fork grace to find out): a
        // handle passed to a child that used it there closes at once.
        if owner {
            if held_after_grace(&probe, ROLE_LOCK_BYTE + role as u64) {
                // Another process shares the description (fork, passed descriptor):
                // the role lives on; a copy there takes the lease on first use.
                liveness::swap_state(entry, CLOSING, ATTACHED);
            } else if crate::lease::token(entry) != left {
                // The lock is free, but a copy took the lease after we let go of it: a
                // copy in a process that shared the description (a fork child) took
                // the role over while we waited and died holding it (a clean close gives
                // the lease up). It outlived our copy, so its death ends the role: dead.
                liveness::swap_state(entry, CLOSING, ATTACHED);
            } else {
                // Only from CLOSING: a new holder that claimed the role since we let go
                // of its lock marked it attached, and must not be taken for closed (a
                // broadcast's publisher would drop its cursor and overwrite what it
                // has not read: found by a join/leave stress test).
                liveness::swap_state(entry, CLOSING, CLOSED);
                if let Some(off) = wake {
                    wake_peer(&probe, off);
                }
            }
        }
        drop(region);
        if let Some(name) = name {
            if finished(&probe, info.kind) {
                probe.unlink_if_same(&name);
            }
        }
    }
}

/// One copy's own descriptor of a segment (a separate open file description,
/// close-on-exec) on which it holds the claim locks of the copy entries it owns, so
/// that its death or `exec` releases them (see [`crate::lease::Copies`]). A forked child
/// does not use its parent's: it opens its own on first use (and closes the inherited
/// one).
#[derive(Debug, Default)]
pub struct CopyClaims {
    file: Option<ShmFile>,
    generation: u64,
}

/// The production [`Copies`] of one role of a segment (see [`Segment::copies`]).
#[derive(Debug)]
pub struct SegmentCopies<'a> {
    segment: &'a Segment,
    role: usize,
    claims: &'a mut CopyClaims,
}

impl Copies for SegmentCopies<'_> {
    fn alive(&self, index: usize, key: u64) -> bool {
        self.segment.copy_alive(self.role, index, key)
    }

    fn claim(&mut self, index: usize) -> bool {
        if self.segment.file.is_none() {
            return true;
        }
        // Opened by `Segment::open_claims` for this fork generation; without it (or if
        // the lock call fails) no claim, and so no entry, is taken.
        let current = self.claims.generation == crate::process::fork_generation();
        self.claims.file.as_ref().filter(|_| current).is_some_and(|f| f.try_lock(copy_lock_byte(self.role, index)).unwrap_or(false))
    }

    fn unclaim(&mut self, index: usize) {
        if let Some(f) = &self.claims.file {
            f.unlock(copy_lock_byte(self.role, index));
        }
    }
}

/// Wake every sleeper on the [`EventCount`] at byte `off` of `file` (a close-time probe:
/// the segment may have been truncated meanwhile, so the size is checked first).
fn wake_peer(file: &ShmFile, off: usize) {
    let end = off + size_of::<EventCount>();
    if off % 8 != 0 || file.size().map_or(true, |len| len < end as u64) {
        return;
    }
    if let Ok(region) = Region::map(file, end) {
        // SAFETY: in bounds of the mapping (checked), 8-aligned, atomics only.
        let ev: &EventCount = unsafe { region.at(off) };
        ev.wake_all(&SharedFutex);
    }
}

/// Map the header and the first `roles` role entries of `file` for a close-time or `gc`
/// probe, or `None` if the file is now shorter than that (truncated by someone else:
/// reading it would be SIGBUS). A truncation between this check and the read is still
/// possible (memfd seals would close that window; `shm_open` names cannot be sealed).
pub(crate) fn map_roles(file: &ShmFile, roles: usize) -> Option<Region> {
    let len = control_offset(roles);
    if file.size().ok()? < len as u64 {
        return None;
    }
    Region::map(file, len).ok()
}
