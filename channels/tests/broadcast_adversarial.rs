//! Broadcast against hostile timing and hostile memory (found by review): a lapped lossy
//! subscriber reading bytes that look like headers, the shared words of the segment
//! written by another process, publisher copies without a name, a subscriber taking
//! over the slot of a killed one, publisher death seen on a subscriber's descriptor,
//! and subscribers joining and leaving under load. One test at a time (some fork).
use shmplane::{Error, Publisher, Subscriber};
use std::time::Duration;

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn name(tag: &str) -> String {
    format!("test-bcadv-{tag}-{}", std::process::id())
}

/// Map the broadcast's segment file read-write (the test pokes its shared words).
fn map(n: &str) -> (*mut u8, usize) {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(format!("/dev/shm/shmplane.{n}")).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    // SAFETY: mmap of a file we opened, length from its metadata; the result is checked.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, f.as_raw_fd(), 0) };
    assert_ne!(p, libc::MAP_FAILED);
    (p as *mut u8, len)
}

fn word(base: *mut u8, off: usize) -> &'static std::sync::atomic::AtomicU64 {
    // SAFETY: `off` is an 8-aligned offset inside the live mapping of `map` (never unmapped).
    unsafe { &*(base.add(off) as *const std::sync::atomic::AtomicU64) }
}

const COMMITTED: u64 = 1 << 63;
fn hdr(tag: u32, len: u32) -> [u8; 8] {
    (COMMITTED | (u64::from(tag) << 32) | u64::from(len)).to_le_bytes()
}

/// A lapped lossy subscriber parked mid-record reads payload bytes that look like a
/// continuation header: skipping it unread must still check the lap, or it would jump
/// past `oldest` and return bytes from the middle of another record as a message.
#[test]
fn lossy_garbage_continuation_header_is_a_lag_not_a_message() {
    let _s = serial();
    let n = name("garbage");
    let mut publisher = Publisher::create_with(&n, 4096, 4, true).unwrap();
    let mut sub = Subscriber::open(&n).unwrap();
    publisher.send(&[0u8; 104]).unwrap(); // 0..112
    assert_eq!(sub.try_recv().unwrap().len(), 104); // head = 112
    let mut f2 = vec![0u8; 992];
    f2[96..104].copy_from_slice(&hdr(1 /* TAG_BYTES */, 16));
    f2[104..120].copy_from_slice(b"EVILEVILEVILEVIL");
    publisher.send(&[1u8; 992]).unwrap(); // 112..1112
    publisher.send(&f2).unwrap(); // 1112..2112 (the "EVIL" header sits at 1216)
    publisher.send(&[3u8; 992]).unwrap(); // 2112..3112
    publisher.send(&[4u8; 976]).unwrap(); // 3112..4096, oldest -> 112
    let mut b = vec![5u8; 200];
    b[104..112].copy_from_slice(&hdr(0x200 /* TAG_CONTINUATION */, 1096)); // 112 + 1104 = 1216
    publisher.send(&b).unwrap(); // 4096..4304, oldest -> 1112 (sub lapped at 112)
    let got = sub.try_recv();
    assert!(matches!(got, Err(Error::Lagged { .. })), "expected Lagged, got {got:?}");
}

/// A lossless publisher that only uses try_send is not held back by a subscriber that
/// closed (pruning must not happen only inside a blocking wait).
#[test]
fn try_send_is_not_held_back_by_a_closed_subscriber() {
    let _s = serial();
    let mut publisher = Publisher::new(4096, false).unwrap();
    let mut slow = publisher.subscribe().unwrap();
    while publisher.try_send(&[0u8; 100]).is_ok() {}
    slow.close();
    let mut full = 0;
    for _ in 0..50 {
        if matches!(publisher.try_send(&[0u8; 100]), Err(Error::Full)) {
            full += 1;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(full, 0, "publisher still held back by a closed subscriber");
}

/// Lossy subscribers count (and get their doorbells rung).
#[test]
fn lossy_subscribers_count() {
    let _s = serial();
    let publisher = Publisher::new(4096, true).unwrap();
    let _a = publisher.subscribe().unwrap();
    let _b = publisher.subscribe().unwrap();
    assert_eq!(publisher.subscribers(), 2);
}

/// A lossy publisher that died while updating its newest-position pair (an odd
/// version, as a seqlock writer would leave it) must not hang a joiner.
#[test]
fn a_torn_pair_update_does_not_hang_a_lossy_joiner() {
    let _s = serial();
    let n = name("odd");
    let mut publisher = Publisher::create_with(&n, 4096, 4, true).unwrap();
    publisher.send(b"x").unwrap();
    let (base, _) = map(&n);
    let newest = shmplane_shm::layout::broadcast_control_offset(4) + 3 * 128;
    let v = word(base, newest);
    v.store(v.load(std::sync::atomic::Ordering::SeqCst) | 1, std::sync::atomic::Ordering::SeqCst);
    let (tx, rx) = std::sync::mpsc::channel();
    let n2 = n.clone();
    std::thread::spawn(move || {
        let r = Subscriber::open(&n2).map(|_| ());
        let _ = tx.send(r.is_ok());
    });
    let r = rx.recv_timeout(Duration::from_secs(3));
    assert!(r.is_ok(), "Subscriber::open hung on an odd seqlock version");
}

/// An unaligned `oldest` position (untrusted shared memory) is an error, not a panic.
#[test]
fn an_unaligned_oldest_position_is_an_error_not_a_panic() {
    let _s = serial();
    let n = name("unaligned");
    let mut publisher = Publisher::create_with(&n, 4096, 4, true).unwrap();
    let mut sub = Subscriber::open(&n).unwrap();
    publisher.send(b"hello").unwrap();
    let (base, _) = map(&n);
    let oldest = shmplane_shm::layout::broadcast_control_offset(4) + 2 * 128;
    word(base, oldest + 8).store(13, std::sync::atomic::Ordering::SeqCst);
    let r1 = sub.try_recv();
    let r2 = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sub.try_recv()));
    assert!(r2.is_ok(), "subscriber panicked on an unaligned oldest position");
    assert!(matches!(r1, Err(Error::Corrupt { .. })) || matches!(r2, Ok(Err(Error::Corrupt { .. }))), "{r1:?}");
}

fn readable(fd: i32, ms: i32) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: `p` is a valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut p, 1, ms) };
    p.revents & (libc::POLLIN | libc::POLLHUP) != 0
}

/// A publisher copy adopted by descriptor without a name rings subscriber doorbells.
#[test]
fn a_publisher_copy_without_a_name_rings_subscribers() {
    let _s = serial();
    use std::os::fd::{FromRawFd, OwnedFd};
    let n = name("noname");
    let publisher = Publisher::create_with(&n, 4096, 4, false).unwrap();
    let mut sub = Subscriber::open(&n).unwrap();
    let fd = sub.readiness_fd().unwrap();
    assert!(!readable(fd, 0));
    // SAFETY: dup of a descriptor the publisher owns.
    let dup = unsafe { libc::dup(publisher.fd().unwrap()) };
    // SAFETY: `dup` returned a fresh descriptor that nothing else owns.
    let mut copy = Publisher::from_fd(unsafe { OwnedFd::from_raw_fd(dup) }, None).unwrap();
    copy.send(b"hi").unwrap();
    assert!(readable(fd, 1000), "subscriber's readiness fd not rung by a name-less publisher copy");
}

/// The publisher's death shows on a subscriber's readiness descriptor once it is
/// re-armed (as `select` users call `fileno()` before each wait; asyncio checks the
/// peer every slice): its doorbell keeps a write end of its own, so no end-of-file.
#[test]
fn publisher_death_shows_on_a_rearmed_subscriber_fd() {
    let _s = serial();
    let n = name("death");
    // SAFETY: the child only calls async-signal-safe-enough code of this test and exits with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let _p = Publisher::create_with(&n, 4096, 4, false).unwrap();
        std::thread::sleep(Duration::from_secs(30));
        // SAFETY: ends the forked child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    let mut sub = loop {
        if let Ok(s) = Subscriber::open(&n) { break s; }
        std::thread::sleep(Duration::from_millis(10));
    };
    let fd = sub.readiness_fd().unwrap();
    assert!(!readable(fd, 0));
    // SAFETY: plain syscalls on our own child.
    unsafe { libc::kill(pid, libc::SIGKILL); libc::waitpid(pid, std::ptr::null_mut(), 0) };
    let fd = sub.readiness_fd().unwrap();
    let r = readable(fd, 1500);
    assert!(r, "publisher death not visible on the subscriber's readiness fd");
    assert!(matches!(sub.try_recv(), Err(Error::PeerDead { .. })));
}

/// A lapped lossy subscriber whose stale head offset now holds zero bytes must not
/// re-arm its readiness fd as "nothing queued": a lag and a ring of messages wait.
#[test]
fn a_lapped_lossy_subscriber_fd_is_readable() {
    let _s = serial();
    let n = name("lapfd");
    let mut publisher = Publisher::create_with(&n, 4096, 4, true).unwrap();
    let mut sub = Subscriber::open(&n).unwrap();
    let fd = sub.readiness_fd().unwrap();
    publisher.send(&[7u8; 104]).unwrap();
    assert!(readable(fd, 1000));
    assert_eq!(sub.try_recv().unwrap().len(), 104);
    for _ in 0..5 {
        publisher.send(&[0u8; 992]).unwrap();
    }
    let fd = sub.readiness_fd().unwrap(); // documented: call again before each wait
    let r = readable(fd, 500);
    assert!(r, "messages (and a lag) wait, but the readiness fd says nothing is queued");
    assert!(matches!(sub.try_recv(), Err(Error::Lagged { .. })));
}

/// Lossless and lossy subscribers' descriptors are rung by a publish.
#[test]
fn subscriber_fds_are_rung() {
    let _s = serial();
    for lossy in [false, true] {
        for create_first_sub_fd_twice in [false, true] {
            let n = name(&format!("basic{lossy}{create_first_sub_fd_twice}"));
            let mut publisher = Publisher::create_with(&n, 4096, 4, lossy).unwrap();
            let mut sub = Subscriber::open(&n).unwrap();
            let mut fd = sub.readiness_fd().unwrap();
            if create_first_sub_fd_twice { fd = sub.readiness_fd().unwrap(); }
            publisher.send(&[7u8; 104]).unwrap();
            assert!(readable(fd, 2000), "lossy={lossy} twice={create_first_sub_fd_twice}");
        }
    }
}

fn message(i: u64, len: usize) -> Vec<u8> {
    let mut m = i.to_le_bytes().to_vec();
    m.extend((0..len.saturating_sub(8)).map(|k| (i as usize * 31 + k) as u8));
    m
}

/// Lossless: subscribers join and leave while the publisher streams through a small
/// ring; each must see consecutive, intact messages.
#[test]
fn stress_lossless_join_leave() {
    let _s = serial();
    let n = name("stress");
    let mut publisher = Publisher::create_with(&n, 4096, 8, false).unwrap();
    let stop = std::sync::Arc::new(std::sync::Mutex::new(false));
    let mut joins = vec![];
    for t in 0..6 {
        let n = n.clone();
        let stop = stop.clone();
        joins.push(std::thread::spawn(move || {
            let mut rounds = 0u64;
            while !*stop.lock().unwrap() {
                let Ok(mut s) = Subscriber::open(&n) else { continue };
                let mut prev: Option<u64> = None;
                for _ in 0..(50 + t * 37) {
                    match s.recv_timeout(Duration::from_millis(200)) {
                        Ok(m) => {
                            let i = u64::from_le_bytes(m[..8].try_into().unwrap());
                            assert_eq!(m, message(i, m.len()), "damaged {i}");
                            if let Some(p) = prev { assert_eq!(i, p + 1, "gap/dup thread {t}"); }
                            prev = Some(i);
                        }
                        Err(Error::Timeout) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                if t % 2 == 1 { std::thread::yield_now(); } drop(s);
                rounds += 1;
            }
            rounds
        }));
    }
    let start = std::time::Instant::now();
    let mut i = 0u64;
    while start.elapsed() < Duration::from_secs(3) {
        match publisher.send_timeout(&message(i, 8 + (i as usize % 300)), Duration::from_millis(100)) {
            Ok(()) => i += 1,
            Err(Error::Timeout) => {}
            Err(e) => panic!("{e}"),
        }
    }
    *stop.lock().unwrap() = true;
    assert!(i > 0);
    for j in joins {
        j.join().unwrap();
    }
}

/// A subscriber slot left by a SIGKILLed subscriber keeps its dead copy keys; a new
/// subscriber that claimed the slot and activated its cursor, but has not yet taken
/// the lease (`Role::register`), must not be taken for dead and deactivated.
#[test]
fn a_joiner_of_a_dead_subscribers_slot_is_not_pruned() {
    let _s = serial();
    use shmplane_shm::header::SegmentKind;
    use shmplane_shm::segment::Segment;
    use shmplane_shm::store::SegmentRing;
    let n = name("rejoin");
    let mut publisher = Publisher::create_with(&n, 4096, 1, false).unwrap();
    // The child says on this pipe that it joined and is done with its receive. (Not a
    // probe for its sleep: where membarrier is refused, a lease taker sleeps 1 ms in
    // `clock_nanosleep` too, inside the join.)
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills the two descriptors of `fds`.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child only calls async-signal-safe-enough code of this test and exits with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let mut s = Subscriber::open(&n).unwrap();
        let _ = s.try_recv();
        // SAFETY: one byte from a live buffer to the pipe's write end.
        unsafe { libc::write(fds[1], b"j".as_ptr().cast(), 1) };
        std::thread::sleep(Duration::from_secs(30));
        // SAFETY: ends the forked child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    let mut p = libc::pollfd { fd: fds[0], events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call.
    let joined = unsafe { libc::poll(&mut p, 1, 20_000) } == 1;
    if !joined {
        // SAFETY: plain syscalls on our own child.
        unsafe { libc::kill(pid, libc::SIGKILL); libc::waitpid(pid, std::ptr::null_mut(), 0) };
    }
    // SAFETY: closing the two descriptors pipe(2) made, once each.
    unsafe { libc::close(fds[0]); libc::close(fds[1]) };
    assert!(joined, "watchdog: the child never joined and received");
    assert!(publisher.subscribers() > 0);
    // SAFETY: plain syscalls on our own child.
    unsafe { libc::kill(pid, libc::SIGKILL); libc::waitpid(pid, std::ptr::null_mut(), 0) };
    // The joiner, stopped between `join_subscriber` and `Role::register`.
    let seg = Segment::open(&n, SegmentKind::Broadcast).unwrap();
    seg.claim_role(1).unwrap();
    let ring = SegmentRing::broadcast(seg, Some(0));
    let start = ring.join_subscriber();
    let ticket = ring.cursor(0).active.load(std::sync::atomic::Ordering::SeqCst);
    assert_ne!(ticket, 0);
    // The publisher fills the ring, then waits (its liveness check prunes).
    let mut sent = 0;
    while publisher.try_send(&[0u8; 100]).is_ok() { sent += 1; }
    let r = publisher.send_timeout(&[0u8; 100], Duration::from_millis(300));
    let after = ring.cursor(0).active.load(std::sync::atomic::Ordering::SeqCst);
    let _ = (start, sent, r);
    assert_eq!(after, ticket, "a live joiner was deactivated: the publisher now overwrites what it has not read");
}
