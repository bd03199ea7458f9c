//! Helpers for the cross-process benchmarks: fork a child that runs a closure.
#![allow(missing_docs)]

/// Fork; the child runs `f` and exits with `_exit(0)` (no destructors, no atexit).
/// Returns the child's pid in the parent.
pub fn fork_child(f: impl FnOnce()) -> libc::pid_t {
    // SAFETY: the bench is single-threaded when it forks; the child only runs `f`,
    // which uses shmplane endpoints it opens itself, then _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        f();
        // SAFETY: terminating the child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    pid
}

/// Kill and reap a child.
pub fn reap(pid: libc::pid_t) {
    // SAFETY: plain syscalls on our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}
