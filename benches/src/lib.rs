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

/// A forked child on the other end of two spin-policy channels: `tx` carries messages
/// to it, `rx` brings its answers back.
pub struct Child {
    /// Parent -> child.
    pub tx: shmplane::Sender,
    /// Child -> parent.
    pub rx: shmplane::Receiver,
    pid: libc::pid_t,
}

impl Child {
    /// Create both channels (`name`-out / `name`-back, `out_capacity` and 4 KiB bytes),
    /// fork, and run `serve` in the child over the child's ends, forever.
    pub fn spawn(name: &str, out_capacity: usize, serve: fn(&mut shmplane::Receiver, &mut shmplane::Sender)) -> Self {
        use shmplane::{Receiver, Sender, WaitPolicy};
        let (out, back) = (format!("{name}-out"), format!("{name}-back"));
        let mut tx = Sender::create(&out, out_capacity).expect("create the outbound channel");
        let mut rx = Receiver::create(&back, 1 << 12).expect("create the return channel");
        tx.set_wait_policy(WaitPolicy::Spin);
        rx.set_wait_policy(WaitPolicy::Spin);
        let pid = fork_child(|| {
            let mut rx = Receiver::open(&out).expect("open the outbound channel");
            let mut tx = Sender::open(&back).expect("open the return channel");
            rx.set_wait_policy(WaitPolicy::Spin);
            tx.set_wait_policy(WaitPolicy::Spin);
            serve(&mut rx, &mut tx);
        });
        Child { tx, rx, pid }
    }

    /// The child echoes every message back.
    pub fn echo(rx: &mut shmplane::Receiver, tx: &mut shmplane::Sender) {
        loop {
            let msg = rx.peek(None).expect("recv");
            tx.send(&msg).expect("echo");
        }
    }

    /// The child consumes messages and answers only an empty message (the end marker
    /// of [`Child::finish_stream`]).
    pub fn sink(rx: &mut shmplane::Receiver, tx: &mut shmplane::Sender) {
        loop {
            let msg = rx.peek(None).expect("recv");
            if msg.is_empty() {
                drop(msg);
                tx.send(b"done").expect("ack");
            }
        }
    }

    /// Send the end marker to a [`Child::sink`] and wait until it has consumed
    /// everything before it.
    pub fn finish_stream(&mut self) {
        self.tx.send(b"").expect("marker");
        self.rx.recv_timeout(std::time::Duration::from_secs(60)).expect("ack");
    }
}

impl Drop for Child {
    /// Kill the child and remove both segments (its ends die unclosed).
    fn drop(&mut self) {
        reap(self.pid);
        for path in [self.tx.path(), self.rx.path()].into_iter().flatten() {
            let _ = std::fs::remove_file(path);
        }
    }
}
