//! Named POSIX shared-memory files under `/dev/shm` and their byte-range locks.
//!
//! Creation follows iceoryx2: `shm_open(O_CREAT|O_EXCL|O_RDWR|O_CLOEXEC, 0600)`, then an
//! explicit `fchmod(0600)` (the umask cannot widen or narrow it), then
//! `posix_fallocate` so a full `/dev/shm` fails here with `ENOSPC` instead of raising
//! SIGBUS on a later page fault. Locks are Linux open-file-description (OFD) locks:
//! owned by the open file, released by the kernel when the last descriptor of it closes
//! (including at process death), and inherited along with the descriptor by `fork` and
//! `SCM_RIGHTS`, which is how endpoint roles follow a handle into a child process.

use crate::error::{Error, Result};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

/// Directory where Linux exposes POSIX shared memory.
pub const SHM_DIR: &str = "/dev/shm";
/// Prefix of every shmplane segment's file name.
pub const PREFIX: &str = "shmplane.";
/// Longest user-visible segment name in bytes.
pub const MAX_NAME: usize = 200;

/// Check a user-visible segment name: 1..=200 bytes of `[A-Za-z0-9._-]`, not starting
/// with `.`.
///
/// # Errors
/// [`Error::InvalidName`] naming the rule broken.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason| Err(Error::InvalidName { name: name.to_owned(), reason });
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME {
        return bad("it is longer than 200 bytes");
    }
    if name.starts_with('.') {
        return bad("it starts with '.'");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return bad("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// The `/dev/shm` path of segment `name`.
pub fn shm_path(name: &str) -> String {
    format!("{SHM_DIR}/{PREFIX}{name}")
}

fn shm_name(name: &str) -> CString {
    CString::new(format!("/{PREFIX}{name}")).expect("validated name has no NUL")
}

/// An open segment file: one open file description, so one lock owner.
#[derive(Debug)]
pub struct ShmFile {
    file: File,
    path: String,
}

fn os_err(op: &'static str, path: &str) -> Error {
    Error::Os { op, path: path.to_owned(), source: io::Error::last_os_error() }
}

/// Deliberate sharing between users (off by default): the group/other permission
/// bits new segments and doorbells get, and the other users whose segments this
/// process opens. See [`set_sharing`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sharing {
    /// Permission bits for group and others (a subset of `0o066`) on what this process
    /// creates, on top of the owner's `0o600`.
    pub mode: u32,
    /// Owners besides this process's effective uid whose segments it opens.
    pub trusted_uids: Vec<u32>,
}

static SHARING: std::sync::RwLock<Sharing> = std::sync::RwLock::new(Sharing { mode: 0, trusted_uids: Vec::new() });

/// Share segments with other local users, for this whole process: segments and
/// doorbells it creates get `0o600 | mode` (`mode` within `0o066`: read/write for
/// group and/or others), and it opens segments owned by any uid in `trusted_uids` whose
/// group/other bits are within `mode`. The default (`mode` 0, no uids) opens only
/// this user's 0600 segments, so another user cannot squat a name to read our data or
/// feed us records.
///
/// **Risks:** every user allowed in can read everything sent through a shared
/// segment and write anything into it: records, positions, role words. shmplane
/// validates shared memory as untrusted input (a bad record is `Error::Corrupt`, never
/// a crash), but such a user can drop, forge or replay messages, hold roles, or
/// truncate the file (`Error::Corrupt`, see `region::guard`). Group bits admit every
/// member of the file's group, other bits every local user. Share only with users you
/// trust with the data and the traffic, preferably through a dedicated group.
///
/// # Errors
/// [`Error::InvalidArgument`] for bits outside `0o066`.
pub fn set_sharing(mode: u32, trusted_uids: &[u32]) -> Result<()> {
    if mode & !0o066 != 0 {
        return Err(Error::InvalidArgument(format!(
            "sharing mode {mode:o}: only read/write bits for group and others (within 0o066) may be added to 0600"
        )));
    }
    *SHARING.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Sharing { mode, trusted_uids: trusted_uids.to_vec() };
    Ok(())
}

/// The current [`Sharing`] policy.
pub fn sharing() -> Sharing {
    SHARING.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

/// Why a file found at `path` (owner `uid`, permission bits `mode`) may not be trusted
/// under the sharing policy, or `None` if it may: this user's with no group/other
/// bits, or (deliberate sharing) a trusted owner's with only the allowed bits.
pub(crate) fn untrusted(uid: u32, mode: u32) -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let policy = SHARING.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    if uid != me && !policy.trusted_uids.contains(&uid) {
        return Some(format!("owned by uid {uid}, this process runs as uid {me} (to share with it on purpose: shmplane.set_sharing)"));
    }
    if mode & 0o077 & !policy.mode != 0 {
        return Some(format!("mode {:o} lets other users in (to share on purpose: shmplane.set_sharing)", mode & 0o777));
    }
    None
}

/// Owner and group/other bits for what this process creates: `0o600 | Sharing::mode`.
pub(crate) fn create_mode() -> u32 {
    0o600 | SHARING.read().unwrap_or_else(std::sync::PoisonError::into_inner).mode
}

impl ShmFile {
    /// Create segment `name` exclusively, mode 0600 (plus [`Sharing::mode`]), and
    /// reserve `len` bytes of memory.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::AlreadyExists`] (any file of that name, live or
    /// stale: the caller decides), [`Error::NoSpace`] (file removed again),
    /// [`Error::Os`].
    pub fn create(name: &str, len: u64) -> Result<ShmFile> {
        ShmFile::create_with_lock(name, len, None)
    }

    /// [`ShmFile::create`] that takes an exclusive lock on byte `byte` (OFD, on this
    /// file's description) as soon as the file exists, before its memory is reserved:
    /// an opener that finds the file (of any size, zeros) sees it locked, so it waits
    /// for a creator reserving a large file rather than take the zeros for a foreign
    /// file.
    ///
    /// # Errors
    /// As [`ShmFile::create`].
    pub fn create_locked(name: &str, len: u64, byte: u64) -> Result<ShmFile> {
        ShmFile::create_with_lock(name, len, Some(byte))
    }

    fn create_with_lock(name: &str, len: u64, byte: Option<u64>) -> Result<ShmFile> {
        validate_name(name)?;
        let path = shm_path(name);
        let cname = shm_name(name);
        // SAFETY: cname is a valid C string; flags and mode are plain integers.
        let fd = unsafe {
            libc::shm_open(cname.as_ptr(), libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_CLOEXEC, 0o600)
        };
        if fd < 0 {
            let source = io::Error::last_os_error();
            return Err(match source.raw_os_error() {
                Some(libc::EEXIST) => Error::AlreadyExists { name: name.to_owned(), path },
                _ => Error::Os { op: "shm_open(create)", path, source },
            });
        }
        // SAFETY: fd was just returned by shm_open and is owned by nobody else.
        let file = ShmFile { file: unsafe { File::from_raw_fd(fd) }, path };
        let locked = match byte {
            // Ours alone (O_EXCL): the lock can only fail for an OS reason.
            Some(b) => file.try_lock(b).and_then(|ok| {
                ok.then_some(()).ok_or_else(|| Error::Os {
                    op: "fcntl(F_OFD_SETLK)",
                    path: file.path.clone(),
                    source: io::Error::from_raw_os_error(libc::EAGAIN),
                })
            }),
            None => Ok(()),
        };
        if let Err(e) = locked.and_then(|()| file.reserve(len)) {
            // Best effort: the file is ours and useless.
            // SAFETY: cname is a valid C string.
            unsafe { libc::shm_unlink(cname.as_ptr()) };
            return Err(e);
        }
        Ok(file)
    }

    fn reserve(&self, len: u64) -> Result<()> {
        let fd = self.file.as_raw_fd();
        // SAFETY: fd is open; fchmod takes plain integers.
        if unsafe { libc::fchmod(fd, create_mode() as libc::mode_t) } != 0 {
            return Err(os_err("fchmod", &self.path));
        }
        let off_len = libc::off_t::try_from(len)
            .map_err(|_| Error::InvalidArgument(format!("segment length {len} does not fit off_t")))?;
        // SAFETY: fd is open; posix_fallocate returns an errno value instead of setting errno.
        let rc = unsafe { libc::posix_fallocate(fd, 0, off_len) };
        match rc {
            0 => Ok(()),
            libc::ENOSPC | libc::EFBIG => Err(Error::NoSpace { path: self.path.clone(), bytes: len }),
            e => Err(Error::Os { op: "posix_fallocate", path: self.path.clone(), source: io::Error::from_raw_os_error(e) }),
        }
    }

    /// Open existing segment `name` read-write: only a segment of this user with no
    /// group or other permission bits ([`ShmFile::check_ours`]).
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::NotFound`], [`Error::NotOurs`], [`Error::Os`]
    /// (`EACCES` for a file this user may not open at all).
    pub fn open(name: &str) -> Result<ShmFile> {
        validate_name(name)?;
        let path = shm_path(name);
        let cname = shm_name(name);
        // SAFETY: cname is a valid C string.
        let fd = unsafe { libc::shm_open(cname.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC, 0) };
        if fd < 0 {
            let source = io::Error::last_os_error();
            return Err(match source.raw_os_error() {
                Some(libc::ENOENT) => Error::NotFound { name: name.to_owned(), path },
                _ => Error::Os { op: "shm_open", path, source },
            });
        }
        // SAFETY: fresh fd from shm_open, owned by nobody else.
        let file = ShmFile { file: unsafe { File::from_raw_fd(fd) }, path };
        file.check_ours()?;
        Ok(file)
    }

    /// Refuse a segment another user owns, or one whose mode lets group or others in
    /// (shmplane creates every segment 0600): another local user who creates a name
    /// first (name squatting) must not receive our data or feed us forged records.
    /// [`set_sharing`] relaxes both, on purpose.
    ///
    /// # Errors
    /// [`Error::NotOurs`]; [`Error::Os`] if `fstat` fails.
    pub fn check_ours(&self) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let meta = self.file.metadata().map_err(|source| Error::Os { op: "fstat", path: self.path.clone(), source })?;
        match untrusted(meta.uid(), meta.mode()) {
            Some(why) => Err(Error::NotOurs { path: self.path.clone(), why }),
            None => Ok(()),
        }
    }

    /// Adopt a descriptor of a segment file (received from a parent process).
    pub fn from_fd(fd: OwnedFd, path: String) -> ShmFile {
        ShmFile { file: File::from(fd), path }
    }

    /// A new open file description of the same file (a separate lock owner), through
    /// `/proc/self/fd`.
    ///
    /// # Errors
    /// [`Error::Os`].
    pub fn reopen(&self) -> Result<ShmFile> {
        let proc = format!("/proc/self/fd/{}", self.file.as_raw_fd());
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&proc)
            .map_err(|source| Error::Os { op: "reopen", path: self.path.clone(), source })?;
        Ok(ShmFile { file, path: self.path.clone() })
    }

    /// A new open file description of the same file, read-only (holding no locks).
    ///
    /// # Errors
    /// [`Error::Os`].
    pub fn reopen_read_only(&self) -> Result<ShmFile> {
        let proc = format!("/proc/self/fd/{}", self.file.as_raw_fd());
        let file = std::fs::OpenOptions::new()
            .read(true)
            .open(&proc)
            .map_err(|source| Error::Os { op: "reopen read-only", path: self.path.clone(), source })?;
        Ok(ShmFile { file, path: self.path.clone() })
    }

    /// Remove segment `name`'s name if it still refers to the same file as `self`
    /// (a new segment of the same name created meanwhile is left alone).
    pub fn unlink_if_same(&self, name: &str) {
        let Ok(mine) = self.file.metadata() else { return };
        match std::fs::metadata(shm_path(name)) {
            Ok(theirs) if theirs.ino() == mine.ino() && theirs.dev() == mine.dev() => {
                // A channel's doorbells go with its name, first: once the name is
                // free a new channel may take it and make its own.
                crate::bell::remove(name);
                let cname = shm_name(name);
                // SAFETY: cname is a valid C string.
                unsafe { libc::shm_unlink(cname.as_ptr()) };
            }
            _ => {}
        }
    }

    /// Current file size in bytes.
    ///
    /// # Errors
    /// [`Error::Os`].
    pub fn size(&self) -> Result<u64> {
        self.file.metadata().map(|m| m.len()).map_err(|source| Error::Os { op: "fstat", path: self.path.clone(), source })
    }

    /// The underlying file.
    pub fn as_file(&self) -> &File {
        &self.file
    }

    /// `/dev/shm` path (or a description for adopted descriptors).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Take an exclusive OFD lock on byte `byte` without blocking. `Ok(false)` if another
    /// open file description holds it. Re-locking a byte this description holds succeeds.
    ///
    /// # Errors
    /// [`Error::Os`].
    pub fn try_lock(&self, byte: u64) -> Result<bool> {
        match self.fcntl_lock(libc::F_OFD_SETLK, libc::F_WRLCK as i16, byte) {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => Ok(false),
            Err(source) => Err(Error::Os { op: "fcntl(F_OFD_SETLK)", path: self.path.clone(), source }),
        }
    }

    /// Take a shared OFD lock on byte `byte` without blocking. `Ok(false)` if another
    /// description holds an exclusive lock on it.
    ///
    /// # Errors
    /// [`Error::Os`].
    pub fn try_lock_shared(&self, byte: u64) -> Result<bool> {
        match self.fcntl_lock(libc::F_OFD_SETLK, libc::F_RDLCK as i16, byte) {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => Ok(false),
            Err(source) => Err(Error::Os { op: "fcntl(F_OFD_SETLK)", path: self.path.clone(), source }),
        }
    }

    /// Release this description's lock on byte `byte` (no-op if not held).
    pub fn unlock(&self, byte: u64) {
        let _ = self.fcntl_lock(libc::F_OFD_SETLK, libc::F_UNLCK as i16, byte);
    }

    /// True if *another* open file description holds a lock on byte `byte`.
    ///
    /// # Errors
    /// [`Error::Os`].
    pub fn is_locked_by_other(&self, byte: u64) -> Result<bool> {
        self.fcntl_lock(libc::F_OFD_GETLK, libc::F_WRLCK as i16, byte)
            .map(|fl| fl.l_type != libc::F_UNLCK as i16)
            .map_err(|source| Error::Os { op: "fcntl(F_OFD_GETLK)", path: self.path.clone(), source })
    }

    fn fcntl_lock(&self, cmd: libc::c_int, kind: i16, byte: u64) -> io::Result<libc::flock> {
        // SAFETY: flock is a plain C struct; all-zero is a valid value (l_pid must be 0
        // for OFD locks).
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = kind;
        fl.l_whence = libc::SEEK_SET as i16;
        fl.l_start = byte as libc::off_t;
        fl.l_len = 1;
        // SAFETY: fd is open; fl is a valid flock that outlives the call.
        let rc = unsafe { libc::fcntl(self.file.as_raw_fd(), cmd, &mut fl) };
        if rc == 0 {
            Ok(fl)
        } else {
            Err(io::Error::last_os_error())
        }
    }
}
