//! Copies of an endpoint in several processes (a forked child inherits the handle; the
//! parent keeps its own, as `multiprocessing.Pipe` users do), and peers that die or give
//! up part-way through a message.
//!
//! Copies used one after another lose nothing and repeat nothing; copies used at the
//! same time take turns, each message whole (`shmplane_shm::lease`). A sender killed
//! mid-message leaves a receiver one `Truncated` and an intact next message; a receiver
//! killed mid-message leaves its successor to skip the rest of that message.
//!
//! Children are made with `fork` and run only this crate's code before `_exit`. Every
//! wait has a deadline and every child a watchdog (`alarm`), so a bug fails instead of
//! hanging. The tests of this file run one at a time (a lock), since forking while
//! another test thread holds a lock would leave the child stuck.

mod common;

use common::{await_futex_sleep, gettid};
use shmplane::frame::Kind;
use shmplane::{channel, Error, Frame, Receiver, Sender, Wait};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WATCHDOG: Duration = Duration::from_secs(20);
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Fork a child that runs `f` and exits with its code (killed by SIGALRM after 30 s).
fn fork(f: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: fork has no preconditions; the child only runs `f` (this crate's code,
    // glibc's allocator is fork-safe) and then `_exit`s without unwinding.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: alarm and _exit are async-signal-safe.
        unsafe { libc::alarm(30) };
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
        // SAFETY: as above.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// Wait for child `pid`; its exit code (or 128 + signal).
fn reap(pid: libc::pid_t) -> i32 {
    let deadline = Instant::now() + WATCHDOG;
    loop {
        let mut status = 0;
        // SAFETY: status is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(r >= 0, "waitpid failed");
        if r == pid {
            return if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
        }
        if Instant::now() > deadline {
            kill(pid);
            panic!("child {pid} did not exit within {WATCHDOG:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn kill(pid: libc::pid_t) {
    // SAFETY: kill takes integers only.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

fn recv(rx: &mut Receiver) -> Vec<u8> {
    rx.recv_timeout(WATCHDOG).expect("a message within the watchdog")
}

fn assert_empty(rx: &mut Receiver) {
    assert!(matches!(rx.try_recv(), Err(Error::Empty)), "more than expected arrived");
}

/// Message `i` of sender `who`: `[who, i (8 bytes LE), pattern...]`, `len` bytes.
fn message(who: u8, i: u64, len: usize) -> Vec<u8> {
    let mut m = vec![0u8; len.max(9)];
    m[0] = who;
    m[1..9].copy_from_slice(&i.to_le_bytes());
    for (k, b) in m[9..].iter_mut().enumerate() {
        *b = (i as usize + k) as u8 ^ who;
    }
    m
}

fn decode(m: &[u8]) -> (u8, u64) {
    let (who, i) = (m[0], u64::from_le_bytes(m[1..9].try_into().unwrap()));
    assert_eq!(m, message(who, i, m.len()), "message {i} of sender {who} is corrupt");
    (who, i)
}

#[test]
fn kept_sender_copy_appends_after_the_child_sent() {
    let _g = serial();
    let (mut tx, mut rx) = channel(1 << 16).unwrap();
    tx.send(b"before").unwrap();
    let child = fork(|| {
        for m in [&b"a"[..], b"b", b"c"] {
            tx.send(m).unwrap();
        }
        tx.close();
        0
    });
    assert_eq!(reap(child), 0);
    tx.send(b"d").unwrap();
    for want in [&b"before"[..], b"a", b"b", b"c", b"d"] {
        assert_eq!(recv(&mut rx), want);
    }
    assert_empty(&mut rx);
}

#[test]
fn kept_receiver_copy_resumes_where_the_child_stopped() {
    let _g = serial();
    let (mut tx, mut rx) = channel(1 << 16).unwrap();
    for m in [&b"a"[..], b"b", b"c", b"d"] {
        tx.send(m).unwrap();
    }
    let child = fork(|| {
        let got: Vec<Vec<u8>> = (0..3).map(|_| recv(&mut rx)).collect();
        i32::from(got != [b"a", b"b", b"c"])
    });
    assert_eq!(reap(child), 0);
    assert_eq!(recv(&mut rx), b"d");
    assert_empty(&mut rx);
}

/// The child keeps its copy open and idle (it does not exit): the parent's copy takes
/// over from the shared position, on both ends.
#[test]
fn copies_in_live_processes_take_turns() {
    let _g = serial();
    let (mut tx, mut rx) = channel(1 << 16).unwrap();
    let (mut ours, mut theirs) = UnixStream::pair().unwrap();
    let child = fork(|| {
        let mut step = [0u8; 1];
        for round in 0..3u64 {
            theirs.read_exact(&mut step).unwrap();
            tx.send(&message(2, round, 100)).unwrap();
            let got = recv(&mut rx);
            theirs.write_all(&got[1..9]).unwrap();
        }
        theirs.read_exact(&mut step).unwrap(); // hold the copies until told
        0
    });
    for round in 0..3u64 {
        ours.write_all(&[1]).unwrap();
        let mut seen = [0u8; 8];
        ours.read_exact(&mut seen).unwrap(); // the child received its own message
        assert_eq!(u64::from_le_bytes(seen), round);
        tx.send(&message(1, round, 200)).unwrap();
        assert_eq!(decode(&recv(&mut rx)), (1, round));
        assert_empty(&mut rx);
    }
    ours.write_all(&[1]).unwrap();
    assert_eq!(reap(child), 0);
}

/// Two forked children and the parent send at the same time through copies of one
/// sender, some messages spanning many records of a small ring: every message arrives
/// whole, once, and each sender's in its order.
#[test]
fn concurrent_sender_copies_interleave_whole_messages() {
    let _g = serial();
    let (mut tx, mut rx) = channel(1 << 16).unwrap();
    const N: u64 = 600;
    let len = |who: u8, i: u64| if i % 97 == 0 { 150_000 + who as usize } else { 40 + (i % 200) as usize };
    let children: Vec<_> = (2..4u8)
        .map(|who| {
            fork(|| {
                for i in 0..N {
                    tx.send_timeout(&message(who, i, len(who, i)), WATCHDOG).unwrap();
                }
                0
            })
        })
        .collect();
    let mut tx_parent = tx;
    let sender = std::thread::spawn(move || {
        for i in 0..N {
            tx_parent.send_timeout(&message(1, i, len(1, i)), WATCHDOG).unwrap();
        }
        tx_parent
    });
    let mut next = [0u64; 4];
    for _ in 0..3 * N {
        let m = recv(&mut rx);
        let (who, i) = decode(&m);
        assert_eq!(m.len(), len(who, i));
        assert_eq!(i, next[who as usize], "sender {who}: out of order");
        next[who as usize] += 1;
    }
    assert_eq!(&next[1..], &[N, N, N]);
    for c in children {
        assert_eq!(reap(c), 0);
    }
    drop(sender.join().unwrap());
    assert!(matches!(rx.try_recv(), Err(Error::Empty | Error::Disconnected { .. })));
}

/// Two forked children receive at the same time through copies of one receiver: the
/// stream is split between them, every message to exactly one, whole.
#[test]
fn concurrent_receiver_copies_split_the_stream() {
    let _g = serial();
    let (mut tx, mut rx) = channel(1 << 16).unwrap();
    const N: u64 = 2000;
    let mut reports = Vec::new();
    let children: Vec<_> = (0..2)
        .map(|_| {
            let (ours, mut theirs) = UnixStream::pair().unwrap();
            reports.push(ours);
            fork(|| {
                let mut n = 0;
                let mut got = Vec::new();
                loop {
                    let m = match rx.recv_timeout(WATCHDOG) {
                        Ok(m) => m,
                        Err(e) => {
                            eprintln!("receiver copy {} after {n} messages: {e:?}", std::process::id());
                            return 1;
                        }
                    };
                    n += 1;
                    if m == b"stop" {
                        break;
                    }
                    let (_, i) = decode(&m);
                    got.extend_from_slice(&i.to_le_bytes());
                }
                // One write at the end (many tiny writes fill a socket's buffer).
                theirs.write_all(&got).unwrap();
                0
            })
        })
        .collect();
    rx.close();
    for i in 0..N {
        let len = if i % 101 == 0 { 100_000 } else { 64 };
        tx.send_timeout(&message(1, i, len), WATCHDOG).unwrap();
    }
    tx.send(b"stop").unwrap();
    tx.send(b"stop").unwrap();
    for c in children {
        assert_eq!(reap(c), 0);
    }
    let mut seen = Vec::new();
    for mut r in reports {
        let mut buf = Vec::new();
        r.read_to_end(&mut buf).unwrap();
        seen.extend(buf.chunks(8).map(|b| u64::from_le_bytes(b.try_into().unwrap())));
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..N).collect::<Vec<_>>(), "every message received exactly once");
}

/// A small splitmix generator for kill times.
/// Kill points per role: `SHMPLANE_KILL_ROUNDS` (the fault matrix, `ci/faults.sh`,
/// sets 200), else `default` (the bounded sample every test run takes).
fn kill_rounds(default: u64) -> u64 {
    std::env::var("SHMPLANE_KILL_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A copy of the sender SIGKILLed at random points of a message that spans hundreds of
/// records: the receiver gets `Truncated` (or, if the kill came before the first or
/// after the last record, the whole message or nothing), never garbage, and the next
/// message, from the parent's copy, arrives intact. Both when the receiver noticed the
/// death first and when the next message began before it looked. (The parent's live
/// copy keeps the sender role alive, as with `multiprocessing.Pipe`: no `PeerDead`.)
#[test]
fn sender_killed_mid_message_truncates_only_that_message() {
    let _g = serial();
    let mut seed = 0x5EED_u64;
    for round in 0..kill_rounds(12) {
        let (mut tx, rx) = channel(1 << 14).unwrap();
        let big = message(7, round, 3 << 20);
        let child = fork(|| {
            tx.send(&big).unwrap();
            0
        });
        // Odd rounds: the parent's copy sends the next message right after the kill,
        // before the receiver looks (it has not noticed the death). Even rounds: the
        // receiver is reading when the kill comes, and notices it.
        let next_first = round % 2 == 1;
        let mut idle_rx = Some(rx);
        let receiver = if next_first {
            None
        } else {
            let mut rx = idle_rx.take().unwrap();
            Some(std::thread::spawn(move || {
                let r = rx.recv_frame(Wait::timeout(WATCHDOG));
                (rx, r)
            }))
        };
        std::thread::sleep(Duration::from_micros(splitmix(&mut seed) % 15_000));
        kill(child);
        reap(child);
        // The parent's copy sends the next message from a thread (the ring may be full
        // of the dead sender's records): at once, or once the reading receiver had
        // time to notice the death (it is then Truncated before "next" is sent: the
        // dead copy was sending, and no live copy is).
        let sender = std::thread::spawn(move || {
            if !next_first {
                std::thread::sleep(Duration::from_millis(200));
            }
            tx.send_timeout(b"next", WATCHDOG).unwrap();
            tx
        });
        let (mut rx, first) = match receiver {
            Some(t) => t.join().unwrap(),
            None => {
                let mut rx = idle_rx.take().unwrap();
                let first = rx.recv_frame(Wait::timeout(WATCHDOG));
                (rx, first)
            }
        };
        let tx = sender.join().unwrap();
        match first {
            Ok(Frame::Bytes(b)) if b == big => assert_eq!(recv(&mut rx), b"next"),
            Ok(Frame::Bytes(b)) if b == b"next" => {} // killed before its first record
            Err(Error::Truncated { received, total }) => {
                assert!(received < total && total == big.len(), "{received} of {total}");
                assert_eq!(recv(&mut rx), b"next");
            }
            other => panic!("round {round}: {other:?}"),
        }
        assert_empty(&mut rx);
        drop(tx);
    }
}

/// A copy of the receiver SIGKILLed part-way through receiving a message that spans
/// many records: the parent's copy skips what is left of it and receives the next
/// message whole (never a CorruptSegment for the orphaned records).
#[test]
fn receiver_killed_mid_message_leaves_its_successor_the_next_message() {
    let _g = serial();
    let mut seed = 0xD1E_u64;
    for round in 0..kill_rounds(8) {
        let (mut tx, mut rx) = channel(1 << 14).unwrap();
        let big = message(5, round, 2 << 20);
        let (mut ours, mut theirs) = UnixStream::pair().unwrap();
        let child = fork(|| {
            theirs.write_all(&[1]).unwrap();
            let _ = rx.recv_timeout(WATCHDOG);
            0
        });
        let mut ready = [0u8; 1];
        ours.read_exact(&mut ready).unwrap();
        let sender = std::thread::spawn(move || {
            let r = tx.send_timeout(&big, WATCHDOG);
            (tx, r)
        });
        std::thread::sleep(Duration::from_micros(splitmix(&mut seed) % 10_000));
        kill(child);
        reap(child);
        // The sender is blocked on a full ring now, or done; the parent's copy drains.
        let next = std::thread::spawn(move || {
            let (mut tx, r) = sender.join().unwrap();
            r.expect("the sender finishes: the successor drains the orphaned records");
            tx.send(b"next").unwrap();
            tx
        });
        loop {
            match rx.recv_frame(Wait::timeout(WATCHDOG)) {
                Ok(Frame::Bytes(b)) if b == b"next" => break,
                // Killed before it took the message: the whole message is ours.
                Ok(Frame::Bytes(b)) => assert_eq!(decode(&b), (5, round)),
                other => panic!("round {round}: {other:?}"),
            }
        }
        let tx = next.join().unwrap();
        assert_empty(&mut rx);
        drop(tx);
    }
}

/// A sender that abandons a message part-way (its wait's hook fails: Ctrl-C in Python)
/// and sends again: the receiver gets `Truncated` once, then both next messages whole,
/// also when the next is itself chunked. In one process, with a receiving thread.
#[test]
fn abandoned_message_then_more_from_the_same_sender() {
    let _g = serial();
    let (mut tx, mut rx) = channel(1 << 14).unwrap();
    let (gave_up, given_up) = std::sync::mpsc::channel();
    let receiver = std::thread::spawn(move || {
        let mut got = Vec::new();
        // The sender fills the ring and gives up before anything is read.
        given_up.recv().unwrap();
        for _ in 0..3 {
            got.push(rx.recv_frame(Wait::timeout(WATCHDOG)));
        }
        (rx, got)
    });
    let mut calls = 0;
    let mut hook = || {
        calls += 1;
        Err(Error::Interrupted)
    };
    let big = message(3, 0, 1 << 20);
    let r = tx.send_with(&big, Wait::forever().with_hook(&mut hook));
    assert!(matches!(r, Err(Error::Interrupted)), "{r:?}");
    gave_up.send(()).unwrap();
    let big2 = message(3, 1, 300_000);
    tx.send(&big2).unwrap();
    tx.send(b"small").unwrap();
    let (_rx, got) = receiver.join().unwrap();
    assert!(matches!(got[0], Err(Error::Truncated { .. })), "{:?}", got[0]);
    assert_eq!(got[1].as_ref().unwrap(), &Frame::Bytes(big2));
    assert_eq!(got[2].as_ref().unwrap(), &Frame::Bytes(b"small".to_vec()));
}

/// What arrays look like on the way: a Python-style array message through a copy.
#[test]
fn arrays_through_copies_keep_their_description() {
    let _g = serial();
    let (tx, mut rx) = channel(1 << 16).unwrap();
    let mut tx: Sender = tx;
    let child = fork(|| {
        let data: Vec<f64> = (0..3000).map(f64::from).collect();
        tx.send_array_of(&[1000, 3], &data).unwrap();
        0
    });
    assert_eq!(reap(child), 0);
    let Frame::Array(a) = rx.recv_frame(Wait::timeout(WATCHDOG)).unwrap() else { panic!("not an array") };
    assert_eq!((a.meta.descr.as_str(), a.meta.shape.as_slice()), ("<f8", &[1000usize, 3][..]));
    assert_eq!(a.to_vec::<f64>().unwrap()[2999], 2999.0);
    drop(tx);
    assert!(matches!(rx.recv_frame(Wait::timeout(WATCHDOG)), Err(Error::Disconnected { .. })));
    let _ = Kind::Array;
}


/// A copy inside an operation whose process then execs another program (the thread
/// doing the operation is gone; pid and start time stay): the copy's claim on its
/// entry, on a close-on-exec descriptor, is released by the exec, so the other copies
/// go on at once instead of waiting for the new program to end (found by review: a
/// receiver copy blocked in `recv` in a process that exec'd `sleep` kept the parent's
/// copy out until `sleep` exited). Here the program would run past the receive's
/// deadline (until the child's 30 s alarm, which survives the exec), so a claim kept
/// across the exec fails the test with `Timeout`.
#[test]
fn exec_in_the_middle_of_an_operation_releases_the_copy() {
    let _g = serial();
    let (mut tx, mut rx) = channel(1 << 16).unwrap();
    let path = rx.path().unwrap().to_owned();
    let data_ready = shmplane_shm::layout::RING_CONTROL_OFFSET
        + std::mem::offset_of!(shmplane_shm::layout::RingControl, data_ready.value.epoch);
    let (mut ours, mut theirs) = UnixStream::pair().unwrap();
    let child = fork(|| {
        // This child's copy of the receiver enters an operation in a thread (a blocking
        // receive) and stays in it; the main thread then execs.
        let rx_ptr = &mut rx as *mut Receiver as usize;
        let (tid_tx, tid) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            tid_tx.send(gettid()).unwrap();
            // SAFETY: the main thread never touches `rx` again (it only execs).
            let rx = unsafe { &mut *(rx_ptr as *mut Receiver) };
            let _ = rx.recv_timeout(Duration::from_secs(30));
        });
        // Inside its operation: asleep waiting for a message.
        await_futex_sleep(tid.recv().unwrap(), &path, data_ready);
        theirs.write_all(&[1]).unwrap();
        let sleep = std::ffi::CString::new("/bin/sleep").unwrap();
        let secs = std::ffi::CString::new("60").unwrap();
        let argv = [sleep.as_ptr(), secs.as_ptr(), std::ptr::null()];
        // SAFETY: valid NUL-terminated strings and a NULL-terminated argv.
        unsafe { libc::execv(sleep.as_ptr(), argv.as_ptr()) };
        1
    });
    ours.set_read_timeout(Some(WATCHDOG)).unwrap();
    let mut ready = [0u8; 1];
    ours.read_exact(&mut ready).expect("the child's copy is inside its receive");
    // The exec has happened once the child's command name is the program's.
    let deadline = Instant::now() + WATCHDOG;
    while std::fs::read_to_string(format!("/proc/{child}/comm")).unwrap_or_default().trim() != "sleep" {
        assert!(Instant::now() < deadline, "watchdog: the child never exec'd");
        std::thread::sleep(Duration::from_millis(1));
    }
    tx.send(b"for the parent's copy").unwrap();
    assert_eq!(rx.recv_timeout(WATCHDOG).unwrap(), b"for the parent's copy");
    kill(child);
    reap(child);
}

/// A process out of descriptors cannot read `/proc`: that must not make a live copy
/// look dead (found by review: under EMFILE a second copy's `try_send` went through
/// while the first copy held a loan, and its message was overwritten).
#[test]
fn out_of_descriptors_never_makes_a_live_copy_dead() {
    use std::os::fd::BorrowedFd;
    let _g = serial();
    let (mut a, mut rx) = channel(1 << 16).unwrap();
    // SAFETY: the descriptor is open for the duration of the borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(a.fd().unwrap()) }.try_clone_to_owned().unwrap();
    let mut b = Sender::from_fd(fd, a.name().map(str::to_owned)).unwrap();
    b.send(b"b-first").unwrap(); // b has its entry and claim descriptor now
    let mut loan = a.loan(4, None).unwrap(); // a is inside an operation
    loan.as_mut_slice().copy_from_slice(b"AAAA");
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain out-parameter / in-parameter structs.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) };
    let tight = libc::rlimit { rlim_cur: 3, rlim_max: old.rlim_max };
    // SAFETY: as above; restored below before anything else opens a file.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &tight) };
    assert!(std::fs::File::open("/proc/self/stat").is_err(), "the limit does not bite");
    let r = b.try_send(b"INTRUDER");
    // SAFETY: as above.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) };
    assert!(matches!(r, Err(Error::Full)), "a live copy's operation was entered: {r:?}");
    loan.commit();
    for want in [&b"b-first"[..], b"AAAA"] {
        assert_eq!(recv(&mut rx), want);
    }
    assert_empty(&mut rx);
}

/// True if another open file description holds (or waits for) the OFD lock on byte
/// `byte` of the file at `path`: a fresh description asks the kernel (`F_OFD_GETLK`).
fn ofd_lock_held(path: &str, byte: u64) -> bool {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).unwrap();
    // SAFETY: flock is a plain C struct; all-zero is valid (l_pid must be 0 for OFD locks).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = byte as libc::off_t;
    fl.l_len = 1;
    // SAFETY: the descriptor is open; `fl` is a valid flock that outlives the call.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    assert_eq!(rc, 0, "F_OFD_GETLK: {}", std::io::Error::last_os_error());
    fl.l_type != libc::F_UNLCK as i16
}

/// SIGKILLs a process that is not our child (it cannot be reaped here) when dropped,
/// so that a failing assertion does not leave it holding descriptors until its alarm.
struct KillOnDrop(libc::pid_t);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        kill(self.0);
    }
}

/// The sender's process dies (SIGKILL) while a child it forked, which never used the
/// sender, still holds the inherited descriptor, and with it the role's lock: the
/// receiver gets `PeerDead` naming the dead sender, not a wait for as long as that
/// child lives. This is `liveness::classify`'s branch for a held lock whose every copy
/// that used the role is in a dead process; without it the lock alone says "alive"
/// and the receive runs into its deadline (a blocking `recv` hangs).
#[test]
fn sender_dead_while_its_forked_child_holds_the_descriptor_is_peer_dead() {
    let _g = serial();
    let name = format!("copies-inherited-{}", std::process::id());
    let path = format!("/dev/shm/shmplane.{name}");
    let mut rx = Receiver::create(&name, 4096).unwrap();
    let (mut ours, mut theirs) = UnixStream::pair().unwrap();
    let sender = fork(|| {
        let mut tx = Sender::open(&name).unwrap();
        tx.send(b"before the fork").unwrap(); // this process used the role: the lease is its
        // The grandchild inherits the sender's descriptor and never touches it.
        let holder = fork(|| loop {
            std::thread::sleep(Duration::from_secs(1));
        });
        theirs.write_all(&holder.to_le_bytes()).unwrap();
        loop {
            std::thread::sleep(Duration::from_secs(1)); // never closes: killed by the test
        }
    });
    ours.set_read_timeout(Some(WATCHDOG)).unwrap();
    let mut pid = [0u8; 4];
    ours.read_exact(&mut pid).expect("the sender reports its forked child");
    let holder = KillOnDrop(libc::pid_t::from_le_bytes(pid));
    assert_eq!(recv(&mut rx), b"before the fork");
    kill(sender);
    reap(sender);
    // The situation the branch is for: the owner is gone, its lock is not.
    // SAFETY: signal 0 only checks that the process exists.
    assert_eq!(unsafe { libc::kill(holder.0, 0) }, 0, "the descriptor's holder lives");
    assert!(ofd_lock_held(&path, shmplane_shm::layout::ROLE_LOCK_BYTE), "the inherited descriptor holds the sender's lock");
    match rx.recv_timeout(WATCHDOG) {
        Err(Error::PeerDead { role: "sender", pid }) => assert_eq!(pid as libc::pid_t, sender),
        other => panic!("expected PeerDead from the dead sender while its child holds the lock, got {other:?}"),
    }
    let again = rx.recv_timeout(WATCHDOG);
    assert!(matches!(again, Err(Error::PeerDead { .. })), "the verdict stays: {again:?}");
    drop(holder);
    rx.close();
    let _ = std::fs::remove_file(&path);
}
