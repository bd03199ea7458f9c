//! Stale segments and their removal.
//!
//! A segment is *finished* when no process holds any of its locks and it will never be
//! used again: its creator died while initialising it, an owner died without closing
//! it, or every role closed. A segment with a never-claimed role (waiting for its peer)
//! is not finished. `create` replaces a finished segment of the same name, and [`gc`]
//! removes every finished segment of this user. Removal compares the file's identity
//! (device and inode) with the name's just before unlinking, so a new segment created
//! under the name meanwhile is never removed (iceoryx2 cleans up dead nodes' resources
//! the same way).

use crate::error::{Error, Result};
use crate::header::{has_magic, is_ready, is_zero, raw_kind, SegmentKind};
use crate::layout::{SegmentHeader, INIT_LOCK_BYTE, MAX_ROLES, ROLE_LOCK_BYTE};
use crate::liveness::{self, ATTACHED, CLOSED, CLOSING, VACANT};
use crate::region::{Region, ShmFile};
use crate::segment::map_roles;
use std::time::{Duration, Instant};

/// How long a lock seen held on a role that was just closed may take to go away.
const FORK_GRACE: Duration = Duration::from_millis(20);

/// True if another open file description still holds `byte` after [`FORK_GRACE`].
///
/// While another thread of this process spawns a subprocess, the child holds copies of
/// all our descriptors until it execs (`O_CLOEXEC` closes them only then), so for a
/// moment it seems to hold every lock we hold. That must not count as "another process
/// shares this endpoint" when closing it.
pub(crate) fn held_after_grace(file: &ShmFile, byte: u64) -> bool {
    let deadline = Instant::now() + FORK_GRACE;
    loop {
        match file.is_locked_by_other(byte) {
            Ok(false) => return false,
            Ok(true) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            _ => return true,
        }
    }
}

/// True if no process holds any lock on the segment in `file` and it will never be
/// used again (see the module docs). Reads the header and role table only after
/// checking the file is long enough for them (untrusted input).
pub(crate) fn finished(file: &ShmFile, kind: SegmentKind) -> bool {
    let locked = |byte| file.is_locked_by_other(byte).unwrap_or(true);
    if locked(INIT_LOCK_BYTE) {
        return false;
    }
    let Some(header_region) = map_roles(file, 0) else { return false };
    // SAFETY: map_roles(0) mapped at least a header at offset 0 (page-aligned).
    let header: &SegmentHeader = unsafe { header_region.at(0) };
    let ready = is_ready(header);
    // A ready header's role count is validated against the kind; a half-written one
    // has only the roles its kind always has.
    let roles = if ready {
        // ORDERING: Relaxed, after `is_ready`'s Acquire.
        (header.role_count.load(crate::sync::Ordering::Relaxed) as usize).min(MAX_ROLES)
    } else {
        (kind.spec().role_count)(Default::default())
    };
    drop(header_region);
    if roles == 0 {
        // Every kind has roles: a header that says none is not one to judge (or remove).
        return false;
    }
    if file.size().is_ok_and(|n| n < crate::layout::control_offset(roles) as u64) {
        // Shorter than its role table. A creator reserves the whole file before it
        // writes the header, so a ready header means it was cut afterwards (by hand, or
        // a full /dev/shm): nobody can use it, and it is finished once no process holds
        // a role's lock (fcntl locks need no bytes behind them). Not ready: a creator
        // may be on its way (its init lock was checked above); left alone.
        return ready && (0..roles).all(|r| !locked(ROLE_LOCK_BYTE + r as u64));
    }
    // (A mapping that fails for another reason, memory or the map count, says nothing.)
    let Some(region) = map_roles(file, roles) else { return false };
    for r in 0..roles {
        // SAFETY: map_roles mapped the header and `roles` role entries.
        let entry = unsafe { region.at(crate::layout::role_offset(r)) };
        let byte = ROLE_LOCK_BYTE + r as u64;
        // A closed role's lock still seen held is, in practice, a child forked by
        // another thread that has not exec'd yet: give it a moment (see held_after_grace).
        // So is a slot's, whose handles all share the lock of one open file description:
        // a duplicate of its descriptor on its way to another process (multiprocessing's
        // resource sharer closes its copy just after sending it) holds it a moment longer.
        let closed = ready && matches!(liveness::state(entry), CLOSED | CLOSING);
        if if closed || kind == SegmentKind::Slot { held_after_grace(file, byte) } else { locked(byte) } {
            return false;
        }
    }
    if !ready || kind == SegmentKind::Slot {
        // A slot has no role states: unused once no handle holds its shared lock.
        return true;
    }
    let states: Vec<u32> = (0..roles)
        .map(|r| {
            // SAFETY: as above.
            let entry = unsafe { region.at(crate::layout::role_offset(r)) };
            liveness::state(entry)
        })
        .collect();
    if matches!(kind, SegmentKind::Mailbox | SegmentKind::Broadcast) {
        // No lock is held: the consumer (publisher) came and went (closed or died),
        // and no producer holds a lane (no subscriber a role; those never used stay
        // vacant).
        return states.first().is_some_and(|&s| s != VACANT);
    }
    if kind == SegmentKind::Channel && states.len() == 2 && states.contains(&VACANT) && !states.contains(&ATTACHED) && states != [VACANT, VACANT] {
        // One end came and went before the other ever attached: finished if it left
        // nothing to read (a sender that queued messages and closed waits for its
        // receiver; one that sent nothing, or a receiver alone, does not).
        return channel_ring_empty(file);
    }
    states.iter().any(|&s| s == ATTACHED || s == CLOSING) || states.iter().all(|&s| s == CLOSED)
}

/// True if the ring of the channel segment in `file` holds no record (its producer
/// position equals its consumer position), reading both from the file (untrusted: used
/// only to decide that a segment nobody holds can go).
fn channel_ring_empty(file: &ShmFile) -> bool {
    use crate::layout::{RingControl, RING_CONTROL_OFFSET};
    let len = RING_CONTROL_OFFSET + size_of::<RingControl>();
    if file.size().map_or(true, |n| n < len as u64) {
        return false;
    }
    let Ok(region) = Region::map(file, len) else { return false };
    // SAFETY: the region maps `len` bytes from offset 0, which covers the header, the
    // channel's role table and its RingControl (8-aligned atomics only).
    let control: &RingControl = unsafe { region.at(RING_CONTROL_OFFSET) };
    // ORDERING: Acquire, partner of the producer's Release store of `tail` and the
    // consumer's of `head` (nobody holds the segment now: these are final values).
    control.tail.value.load(crate::sync::Ordering::Acquire) == control.head.value.position.load(crate::sync::Ordering::Acquire)
}

/// If segment `name` is stale (no process holds any lock on it and it will never be
/// used again: see the module docs), its open file, to unlink by identity.
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
    if !has_magic(header) && (is_ready(header) || !is_zero(header)) {
        return Err(Error::Corrupt {
            path: file.path().to_owned(),
            what: "a file that is not a shmplane segment has this name; remove it".into(),
        });
    }
    let kind_raw = raw_kind(header);
    let kind = match SegmentKind::from_u32(kind_raw) {
        Some(k) => k,
        None if !is_ready(header) => SegmentKind::Channel,
        None => {
            return Err(Error::Corrupt { path: file.path().to_owned(), what: format!("unknown segment kind {kind_raw}") })
        }
    };
    // ORDERING: Relaxed: a header field read once; `is_ready`'s Acquire orders it.
    if is_ready(header) && header.role_count.load(crate::sync::Ordering::Relaxed) == 0 {
        return Err(Error::Corrupt { path: file.path().to_owned(), what: "its header counts no roles".into() });
    }
    drop(region);
    Ok(finished(&file, kind).then_some(file))
}

/// Remove every stale segment of this user (see [`stale`]). Returns the names removed.
pub fn gc() -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(dir) = std::fs::read_dir(crate::region::SHM_DIR) else { return removed };
    for entry in dir.flatten() {
        let file_name = entry.file_name();
        let Some(full) = file_name.to_str() else { continue };
        // A doorbell whose segment is gone (its remover died in between).
        if let Some(segment) = crate::bell::segment_of(full) {
            if !std::path::Path::new(&crate::region::shm_path(segment)).exists() {
                let _ = std::fs::remove_file(entry.path());
                removed.push(full.strip_prefix(crate::region::PREFIX).unwrap_or(full).to_owned());
            }
            continue;
        }
        let Some(name) = full.strip_prefix(crate::region::PREFIX) else { continue };
        if let Ok(Some(file)) = stale(name) {
            file.unlink_if_same(name);
            removed.push(name.to_owned());
        }
    }
    removed
}

/// The pid in an anonymous segment's name: `anon-<pid>-...` (channels, mailboxes,
/// broadcasts) or `anon-<kind>-<pid>-...` (Python's slots): the first all-digit field.
fn anonymous_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("anon-")?;
    rest.split('-').take(2).find(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))?.parse().ok()
}

/// Remove the anonymous segments (names generated by this library) of processes that
/// no longer exist and that nothing holds any more: what a crashed or killed process
/// left behind (its handles never closed). Each is judged by [`stale`], as [`gc`]
/// judges it, so a segment a live process still uses (a child it handed a handle to, a
/// reused pid) stays. Returns the names removed.
///
/// Called once per process at its first anonymous create (as iceoryx2 cleans up dead
/// nodes), so a user rarely needs [`gc`].
pub fn sweep_dead_anonymous() -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(dir) = std::fs::read_dir(crate::region::SHM_DIR) else { return removed };
    for entry in dir.flatten() {
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str().and_then(|f| f.strip_prefix(crate::region::PREFIX)) else { continue };
        if crate::bell::segment_of(&format!("{}{name}", crate::region::PREFIX)).is_some() {
            continue; // doorbells go with their segment (`gc`)
        }
        let Some(pid) = anonymous_pid(name) else { continue };
        // SAFETY: kill with signal 0 sends nothing; it only checks that `pid` exists.
        let gone = pid > 0 && unsafe { libc::kill(pid, 0) } != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if !gone {
            continue;
        }
        if let Ok(Some(file)) = stale(name) {
            file.unlink_if_same(name); // and its doorbells
            removed.push(name.to_owned());
        }
    }
    removed
}

/// Run [`sweep_dead_anonymous`] once in this process.
pub fn sweep_dead_anonymous_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        sweep_dead_anonymous();
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn anonymous_pids() {
        assert_eq!(super::anonymous_pid("anon-123-4-ab"), Some(123));
        assert_eq!(super::anonymous_pid("anon-array-77-0-ff"), Some(77));
        assert_eq!(super::anonymous_pid("jobs-123"), None);
        assert_eq!(super::anonymous_pid("anon-x-y-1"), None);
        assert_eq!(super::anonymous_pid("anon-"), None);
    }
}
