//! Proof that a waiter really sleeps, for tests of what wakes it.
//!
//! A test of a wake-up (a notify, a close, a peer's death noticed by a sleeper) must
//! first have the waiter asleep: one still on its way down finds the news before it
//! sleeps, and the wake path goes untested while the test passes. A `sleep` in the test
//! does not ensure that; this does. `/proc/self/task/TID/syscall` shows the system call
//! a blocked thread is in and its arguments, so a test waits until the waiter's thread
//! is in `futex(2)` on the very word it should sleep on: the event count's epoch, at a
//! known offset of the segment file, wherever this process maps it.

// Each test binary that includes this module uses some of it.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// How long a probe waits for the waiter to fall asleep before failing the test.
pub const PROBE_WATCHDOG: Duration = Duration::from_secs(20);

/// This thread's kernel thread id (to hand to the thread that probes it).
pub fn gettid() -> libc::pid_t {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// The futex word thread `tid` of this process is blocked on: `Some(address)` while it
/// is in `futex(2)`, `None` while it runs or is in another system call. Panics if the
/// thread is gone.
pub fn futex_word_of(tid: libc::pid_t) -> Option<usize> {
    let path = format!("/proc/self/task/{tid}/syscall");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e} (did the waiter end?)"));
    let mut fields = text.split_ascii_whitespace();
    let nr = fields.next()?.parse::<libc::c_long>().ok()?; // "running" is not a number
    if nr != libc::SYS_futex {
        return None;
    }
    usize::from_str_radix(fields.next()?.trim_start_matches("0x"), 16).ok()
}

/// The addresses at which this process maps byte `offset` of the file at `path` (one per
/// mapping that covers it; a file unlinked since it was mapped counts too).
pub fn mapped_at(path: &str, offset: u64) -> Vec<usize> {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    maps.lines()
        .filter_map(|line| {
            // start-end perms offset dev inode path
            let mut f = line.splitn(6, ' ');
            let (range, _perms, off) = (f.next()?, f.next()?, f.next()?);
            let file = f.nth(2)?.trim_start();
            if file.strip_suffix(" (deleted)").unwrap_or(file) != path {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let (start, end) = (usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?);
            let off = u64::from_str_radix(off, 16).ok()?;
            let at = start + usize::try_from(offset.checked_sub(off)?).ok()?;
            (at < end).then_some(at)
        })
        .collect()
}

/// Wait until thread `tid` of this process sleeps in `futex(2)` on the 32-bit word at
/// byte `offset` of the segment file at `path`. Panics after [`PROBE_WATCHDOG`].
pub fn await_futex_sleep(tid: libc::pid_t, path: &str, offset: usize) {
    let deadline = Instant::now() + PROBE_WATCHDOG;
    loop {
        if let Some(word) = futex_word_of(tid) {
            if mapped_at(path, offset as u64).contains(&word) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "watchdog: thread {tid} never slept on the futex at byte {offset} of {path} (in futex on {:x?})",
            futex_word_of(tid)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The 32-bit word at byte `offset` of the file at `path`, read through the file (the
/// page cache is the shared memory itself).
pub fn read_word(path: &str, offset: usize) -> u32 {
    use std::os::unix::fs::FileExt;
    let mut word = [0u8; 4];
    std::fs::File::open(path).unwrap().read_exact_at(&mut word, offset as u64).unwrap();
    u32::from_ne_bytes(word)
}

/// Wait until thread `tid` of this process is blocked in one of the system calls `nrs`
/// (a wait through the OS: `poll`, `epoll_wait`...). Panics after [`PROBE_WATCHDOG`].
pub fn await_syscall(tid: libc::pid_t, nrs: &[libc::c_long]) {
    await_syscall_in(&format!("/proc/self/task/{tid}"), nrs);
}

/// [`await_syscall`] for the main thread of another process (a forked child).
pub fn await_child_syscall(pid: libc::pid_t, nrs: &[libc::c_long]) {
    await_syscall_in(&format!("/proc/{pid}/task/{pid}"), nrs);
}

fn await_syscall_in(task: &str, nrs: &[libc::c_long]) {
    let deadline = Instant::now() + PROBE_WATCHDOG;
    let path = format!("{task}/syscall");
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e} (did the waiter end?)"));
        if text.split_ascii_whitespace().next().and_then(|f| f.parse::<libc::c_long>().ok()).is_some_and(|nr| nrs.contains(&nr)) {
            return;
        }
        assert!(Instant::now() < deadline, "watchdog: {task} never blocked in system call {nrs:?} ({path}: {text:?})");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A segment name unique to this process and test (`t-PID-TEST`); the segment file and
/// its doorbells (`@rx`, `@tx`) are removed when it drops, and any left by an earlier
/// run of the same pid when it is made.
pub struct Name(String);

impl Name {
    pub fn new(test: &str) -> Name {
        let name = Name(format!("t-{}-{test}", std::process::id()));
        name.remove_files();
        name
    }

    /// `/dev/shm/shmplane.NAME`, the segment file.
    pub fn path(&self) -> String {
        path_of(&self.0)
    }

    pub fn exists(&self) -> bool {
        std::path::Path::new(&self.path()).exists()
    }

    fn remove_files(&self) {
        // A segment cut below its role table cannot tell at close that it was the last
        // (gc's work), so its doorbells may be left: remove them too.
        for suffix in ["", "@rx", "@tx"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path()));
        }
    }
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        self.remove_files();
    }
}

/// The segment file of the segment named `name`.
pub fn path_of(name: &str) -> String {
    format!("/dev/shm/shmplane.{name}")
}

/// Whether descriptor `fd` reports an event (readable, or end-of-file) within `ms`
/// milliseconds (0: now).
pub fn ready_within(fd: i32, ms: i32) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut p, 1, ms) == 1 }
}
