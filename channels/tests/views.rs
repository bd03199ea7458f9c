//! Zero-copy views that outlive the receive (`Receiver::begin_view` / `release`): held
//! records stay untouched by the sender while the receiver goes on, are released in
//! any order, and give their space back only once every record before them is. Threads
//! in one process, a watchdog on each test so that a bug fails instead of hanging.
mod common;

use common::{await_futex_sleep, await_syscall, gettid};
use shmplane::{Error, Held, Receiver, Viewed, Wait};
use shmplane_shm::layout::{RingControl, RING_CONTROL_OFFSET};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const WATCHDOG: Duration = Duration::from_secs(60);

fn with_watchdog<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(WATCHDOG).unwrap_or_else(|_| panic!("did not return within {WATCHDOG:?}"))
}

/// The held message's bytes.
fn bytes(h: &Held) -> &[u8] {
    // SAFETY: the hold is not released while `h` is borrowed here (each test releases
    // a token only after its last look), so the sender does not reuse the bytes, and
    // `h.mapping()` keeps them mapped; `addr` and `len` lie inside the ring's data area.
    unsafe { std::slice::from_raw_parts(h.addr() as *const u8, h.len()) }
}

fn held(rx: &mut Receiver, wait: Wait<'_>) -> Held {
    match rx.begin_view(wait).unwrap() {
        Viewed::Held(h) => h,
        Viewed::Copy(i) => panic!("a chunked message of {} bytes", i.head().total()),
    }
}

#[test]
fn held_records_are_released_out_of_order_and_free_space_in_order() {
    with_watchdog(|| {
        // Six records of 1312 bytes fill 7872 of the 8192 (each under a quarter).
        let (mut tx, mut rx) = shmplane::channel(8192).unwrap();
        let msgs: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i + 1; 1300]).collect();
        for m in &msgs {
            tx.send(m).unwrap();
        }
        let views: Vec<Held> = (0..6).map(|_| held(&mut rx, Wait::forever())).collect();
        assert_eq!(rx.holds(), 6);
        for (v, m) in views.iter().zip(&msgs) {
            assert_eq!(bytes(v), &m[..]);
        }
        // The ring is full of held records.
        assert!(matches!(tx.try_send(&[9; 1000]), Err(Error::Full)));
        // Releasing all but the oldest, in any order, frees nothing.
        for i in [5, 3, 1, 4, 2] {
            assert!(rx.release(views[i].token()));
        }
        assert!(!rx.release(views[1].token()), "released twice");
        assert!(matches!(tx.try_send(&[9; 1000]), Err(Error::Full)));
        assert_eq!(bytes(&views[0]), &msgs[0][..]);
        // The oldest: all six records' space comes back.
        assert!(rx.release(views[0].token()));
        assert_eq!(rx.holds(), 0);
        // (Two: the third would need the 160 bytes of padding at the wrap too.)
        for i in 0..2u8 {
            tx.try_send(&[10 + i; 1300]).unwrap();
        }
        for i in 0..2u8 {
            assert_eq!(rx.try_recv().unwrap(), vec![10 + i; 1300]);
        }
    });
}

#[test]
fn copies_received_behind_a_hold_keep_their_space_until_it_goes() {
    with_watchdog(|| {
        let (mut tx, mut rx) = shmplane::channel(8192).unwrap();
        tx.send(&[1; 1300]).unwrap();
        tx.send(&[2; 1300]).unwrap();
        let first = held(&mut rx, Wait::forever());
        // Received by copy behind the hold: its space is not the sender's yet.
        assert_eq!(rx.try_recv().unwrap(), vec![2; 1300]);
        for _ in 0..4 {
            tx.send(&[3; 1300]).unwrap();
        }
        // 7872 of 8192 bytes sent; with the second record's space back it would fit.
        assert!(matches!(tx.try_send(&[4; 1300]), Err(Error::Full)));
        assert_eq!(bytes(&first), &[1; 1300][..]);
        assert!(rx.release(first.token()));
        tx.try_send(&[4; 1300]).unwrap();
        for _ in 0..4 {
            assert_eq!(rx.try_recv().unwrap(), vec![3; 1300]);
        }
        assert_eq!(rx.try_recv().unwrap(), vec![4; 1300]);
        assert!(matches!(rx.try_recv(), Err(Error::Empty)));
    });
}

#[test]
fn a_sender_streaming_past_random_holds_never_touches_held_bytes() {
    with_watchdog(|| {
        let (mut tx, mut rx) = shmplane::channel(1 << 14).unwrap();
        const N: u32 = 20_000;
        let sender = thread::spawn(move || {
            for i in 0..N {
                let len = 8 + (i as usize * 37) % 900;
                let mut m = vec![(i % 251) as u8; len];
                m[..4].copy_from_slice(&i.to_le_bytes());
                tx.send_timeout(&m, Duration::from_secs(20)).unwrap();
            }
        });
        let mut live: Vec<(u32, Held)> = Vec::new();
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let check = |i: u32, h: &Held| {
            let b = bytes(h);
            assert_eq!(b.len(), 8 + (i as usize * 37) % 900);
            assert_eq!(u32::from_le_bytes(b[..4].try_into().unwrap()), i, "a held record was overwritten");
            assert!(b[4..].iter().all(|&x| x == (i % 251) as u8), "a held record was overwritten");
        };
        for i in 0..N {
            let h = held(&mut rx, Wait::timeout(Duration::from_secs(20)));
            check(i, &h);
            live.push((i, h));
            // Keep up to 6 held, released at random, none more than 6 messages old (the
            // oldest hold pins the ring behind it: 7 of the largest take 6.5 of 16 KiB).
            while live.len() > (next() % 7) as usize || live.iter().any(|(j, _)| i - j >= 6) {
                let k = live.iter().position(|(j, _)| i - j >= 6).unwrap_or((next() as usize) % live.len());
                let (j, h) = live.swap_remove(k);
                check(j, &h);
                assert!(rx.release(h.token()));
            }
        }
        for (j, h) in live.drain(..) {
            check(j, &h);
            assert!(rx.release(h.token()));
        }
        sender.join().unwrap();
        assert!(matches!(rx.try_recv(), Err(Error::Disconnected { .. })));
    });
}

#[test]
fn a_viewing_receiver_gets_large_messages_whole() {
    with_watchdog(|| {
        // 16 MiB: messages up to a quarter of the ring go whole.
        let (mut tx, mut rx) = shmplane::channel(1 << 24).unwrap();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        // Sent before the receiver asked for whole records: chunked, copied out.
        tx.send(&big).unwrap();
        match rx.begin_view(Wait::forever()).unwrap() {
            Viewed::Copy(incoming) => {
                let mut out = vec![0u8; big.len()];
                incoming.read_payload_into(out.as_mut_slice().into(), Wait::forever()).unwrap();
                assert_eq!(out, big);
            }
            Viewed::Held(_) => panic!("a 3 MB message sent before the request came whole"),
        }
        // Now the sender sends it as one record.
        tx.send(&big).unwrap();
        let h = held(&mut rx, Wait::forever());
        assert_eq!(bytes(&h), &big[..]);
        assert!(rx.release(h.token()));
        // Over a quarter of the ring: chunked even now.
        let bigger = vec![7u8; (1 << 22) + 8];
        let sender = thread::spawn(move || {
            tx.send(&bigger).unwrap();
            tx
        });
        match rx.begin_view(Wait::forever()).unwrap() {
            Viewed::Copy(incoming) => assert_eq!(incoming.head().total(), (1 << 22) + 8),
            Viewed::Held(_) => panic!("a message over a quarter of the ring came whole"),
        }
        drop(sender.join().unwrap());
    });
}

#[test]
fn a_close_while_holding_completes_at_the_last_release_and_another_copy_never_repeats() {
    with_watchdog(|| {
        let (mut tx, mut rx) = shmplane::channel(1 << 16).unwrap();
        let mut copy = Receiver::from_fd(dup_segment_fd(&rx), rx.name().map(str::to_owned)).unwrap();
        for m in [&b"m0"[..], b"m1", b"m2"] {
            tx.send(m).unwrap();
        }
        let h = held(&mut rx, Wait::forever());
        assert_eq!(rx.try_recv().unwrap(), b"m1"); // by copy, behind the hold
        rx.close();
        // The view reads on; the copy must not resume behind the hold (m0, m1 again).
        assert_eq!(bytes(&h), b"m0");
        assert!(matches!(copy.recv_timeout(Duration::from_millis(100)), Err(Error::Timeout)));
        assert_eq!(rx.holds(), 1);
        // A token of another receiver at the same position releases nothing.
        let (mut tx2, mut rx2) = shmplane::channel(1 << 16).unwrap();
        tx2.send(b"m0").unwrap();
        let other = held(&mut rx2, Wait::forever());
        assert!(!rx.release(other.token()));
        assert!(!rx2.release(h.token()));
        assert!(rx2.release(other.token()));
        // The last release finishes the close: the copy takes over after m1.
        assert!(rx.release(h.token()));
        assert_eq!(rx.holds(), 0);
        assert_eq!(copy.recv_timeout(Duration::from_secs(5)).unwrap(), b"m2");
        drop(tx);
        assert!(matches!(copy.recv_timeout(Duration::from_secs(5)), Err(Error::Disconnected { .. })));
    });
}

#[test]
fn another_copy_waits_while_records_are_held() {
    with_watchdog(|| {
        // Two copies of one receiver (as a descriptor passed to another process
        // makes): the second must not take the lease, re-read the held messages or
        // release them while the first holds them.
        let (mut tx, mut rx) = shmplane::channel(1 << 16).unwrap();
        let fd = dup_segment_fd(&rx);
        let mut copy = Receiver::from_fd(fd, rx.name().map(str::to_owned)).unwrap();
        tx.send(b"one").unwrap();
        tx.send(b"two").unwrap();
        let one = held(&mut rx, Wait::forever());
        assert!(matches!(copy.recv_timeout(Duration::from_millis(100)), Err(Error::Timeout)));
        // The holder goes on receiving.
        assert_eq!(rx.try_recv().unwrap(), b"two");
        tx.send(b"three").unwrap();
        assert!(rx.release(one.token()));
        // Released: the copy takes over at the shared position (nothing repeated).
        assert_eq!(copy.recv_timeout(Duration::from_secs(5)).unwrap(), b"three");
    });
}

/// An 8 KiB channel whose ring is full of six held 1300-byte messages (each under a
/// quarter of the ring), and their views.
fn full_of_views() -> (shmplane::Sender, Receiver, Vec<Held>) {
    let (mut tx, mut rx) = shmplane::channel(8192).unwrap();
    for i in 0..6u8 {
        tx.send(&[i; 1300]).unwrap();
    }
    let views = (0..6).map(|_| held(&mut rx, Wait::forever())).collect();
    (tx, rx, views)
}

/// Release `views` from another thread (a worker) once `waiting()` returns: once the
/// receiver waits (seen asleep), so that the release meets a wait under way.
fn release_later(rx: &Receiver, views: &[Held], waiting: impl FnOnce() + Send + 'static) -> thread::JoinHandle<()> {
    let releaser = rx.releaser().unwrap();
    let tokens: Vec<_> = views.iter().map(Held::token).collect();
    thread::spawn(move || {
        waiting();
        for t in tokens {
            releaser.release(t);
        }
    })
}

fn dup_segment_fd(rx: &Receiver) -> std::os::fd::OwnedFd {
    use std::os::fd::BorrowedFd;
    // SAFETY: `rx.fd()` is the receiver's open segment descriptor, valid while `rx` lives.
    let fd = unsafe { BorrowedFd::borrow_raw(rx.fd().unwrap()) };
    fd.try_clone_to_owned().unwrap()
}

#[test]
fn a_view_released_by_another_thread_frees_a_sender_while_the_receiver_waits() {
    with_watchdog(|| {
        let (mut tx, mut rx, views) = full_of_views();
        // The sender waits for room that only the views' release gives.
        let sender = thread::spawn(move || tx.send_timeout(&[7; 1300], Duration::from_secs(20)));
        // Released while this thread sleeps on the ring's data event.
        let (me, path) = (gettid(), rx.path().unwrap().to_owned());
        let data_ready = RING_CONTROL_OFFSET + std::mem::offset_of!(RingControl, data_ready.value.epoch);
        let worker = release_later(&rx, &views, move || await_futex_sleep(me, &path, data_ready));
        // Waiting for the next message (which needs that room): the queued releases
        // are applied within a wait slice.
        assert_eq!(rx.recv_timeout(Duration::from_secs(20)).unwrap(), vec![7; 1300]);
        worker.join().unwrap();
        sender.join().unwrap().unwrap();
        // A release queued after that receive is applied at the next operation.
        assert!(matches!(rx.try_recv(), Err(Error::Disconnected { .. })));
        assert_eq!(rx.holds(), 0);
    });
}

#[test]
fn records_over_a_quarter_are_not_held_and_chunks_that_cannot_pass_a_hold_are_refused() {
    with_watchdog(|| {
        let (mut tx, mut rx) = shmplane::channel(1 << 20).unwrap();
        // Sent before the receiver asked for whole records: one 600 KB record (under
        // 1 MiB), over a quarter of the ring: not held (holding it could leave no room
        // for the next), copied.
        tx.send(&vec![1u8; 600_000]).unwrap();
        match rx.begin_view(Wait::forever()).unwrap() {
            Viewed::Copy(incoming) => {
                assert!(!incoming.head().is_chunked());
                let mut out = vec![0u8; 600_000];
                incoming.read_payload_into(out.as_mut_slice().into(), Wait::forever()).unwrap();
                assert!(out.iter().all(|&b| b == 1));
            }
            Viewed::Held(_) => panic!("held a record over a quarter of the ring"),
        }
        assert_eq!(rx.holds(), 0);
        // A view of 200 KB, then a 900 KB message in chunks: it cannot fit beside the
        // view, so it is refused at once and stays queued.
        tx.send(&vec![2u8; 200_000]).unwrap();
        let h = held(&mut rx, Wait::forever());
        let sender = thread::spawn(move || {
            tx.send_timeout(&vec![3u8; 900_000], Duration::from_secs(20)).unwrap();
            tx
        });
        // Refused, not waited for: an untimed receive that waited for room the view
        // holds would never return (the watchdog fails the test).
        match rx.recv() {
            Err(Error::InvalidArgument(what)) => assert!(what.contains("release them"), "{what}"),
            other => panic!("{:?}", other.map(|v| v.len())),
        }
        assert!(rx.release(h.token()));
        assert_eq!(rx.recv_timeout(Duration::from_secs(20)).unwrap(), vec![3u8; 900_000]);
        drop(sender.join().unwrap());
    });
}

#[test]
fn a_releaser_wakes_a_receiver_waiting_through_its_descriptor() {
    with_watchdog(|| {
        let (mut tx, mut rx, views) = full_of_views();
        let sender = thread::spawn(move || tx.send_timeout(&[7; 1300], Duration::from_secs(20)));
        let fd = rx.readiness_fd().unwrap();
        // Released while this thread is blocked in poll(2).
        let me = gettid();
        let worker = release_later(&rx, &views, move || await_syscall(me, &[libc::SYS_poll, libc::SYS_ppoll]));
        // Waiting through the OS (as epoll or tokio's AsyncFd would): the releases ring
        // the doorbell, the receive applies them, the sender gets its room.
        let mut got = None;
        for _ in 0..200 {
            let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            // SAFETY: `p` is one valid pollfd for the duration of the call.
            let n = unsafe { libc::poll(&mut p, 1, 5000) };
            assert!(n > 0, "the descriptor never became readable");
            match rx.try_recv() {
                Ok(m) => {
                    got = Some(m);
                    break;
                }
                Err(Error::Empty) => {
                    let _ = rx.readiness_fd().unwrap(); // re-arm
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(got, Some(vec![7; 1300]));
        worker.join().unwrap();
        sender.join().unwrap().unwrap();
    });
}

/// A mailbox's held view: the message of lane `l`.
fn mailbox_held(mb: &mut shmplane::Mailbox, wait: Wait<'_>) -> (usize, Held) {
    match mb.begin_view(wait).unwrap() {
        (lane, Viewed::Held(h)) => (lane, h),
        (_, Viewed::Copy(i)) => panic!("a chunked message of {} bytes", i.head().total()),
    }
}

#[test]
fn mailbox_views_from_two_producers_hold_their_lanes_until_released() {
    with_watchdog(|| {
        let mut mb = shmplane::Mailbox::new(8192, 4).unwrap();
        let mut a = mb.sender().unwrap();
        let mut b = mb.sender().unwrap();
        // The first message of each lane was sent before the lane knew it is viewed:
        // small enough to be one record anyway.
        a.send(&[1; 100]).unwrap();
        b.send(&[2; 100]).unwrap();
        let (la, ha) = mailbox_held(&mut mb, Wait::forever());
        let (lb, hb) = mailbox_held(&mut mb, Wait::forever());
        assert_ne!(la, lb);
        let mut got = [bytes(&ha)[0], bytes(&hb)[0]];
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
        assert_eq!(mb.holds(), 2);
        assert!(!mb.pending(), "held messages are not pending any more");
        // Fill lane A behind its hold: its producer waits for the held space.
        let (la, lb, ha, hb) = if bytes(&ha)[0] == 1 { (la, lb, ha, hb) } else { (lb, la, hb, ha) };
        let (bytes_a, lane_a_token) = (bytes(&ha).to_vec(), ha.token());
        let filler = thread::spawn(move || {
            for i in 0..20u8 {
                a.send_timeout(&[i; 1000], WATCHDOG).unwrap();
            }
            a
        });
        // Receive what fits, then release the first hold: the rest comes through.
        let mut seen = 0;
        let releaser = mb.releaser(la).unwrap();
        let mut released = false;
        while seen < 20 {
            let (lane, h) = mailbox_held(&mut mb, Wait::forever());
            assert_eq!(lane, la);
            assert_eq!(bytes(&h), &[seen as u8; 1000][..]);
            assert!(mb.release(lane, h.token()));
            seen += 1;
            if seen == 3 && !released {
                // From another thread, as a Python view's finalizer may: applied at
                // the mailbox's next receive.
                releaser.release(lane_a_token);
                released = true;
            }
        }
        assert!(bytes_a.iter().all(|&x| x == bytes_a[0]), "the held bytes stayed intact");
        drop(filler.join().unwrap());
        assert!(mb.release(lb, hb.token()));
        assert_eq!(mb.holds(), 0);
        drop(b);
    });
}
