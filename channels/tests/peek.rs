//! The blocking zero-copy receive (`Receiver::peek`): its short pre-spin before the
//! general waiting path, under every wait policy and deadline, and with each kind of
//! message arriving while it spins. Threads in one process; every wait has a deadline
//! and every test a watchdog, so a bug fails instead of hanging.
use shmplane::frame::Kind;
use shmplane::{Error, WaitPolicy};
use std::os::fd::BorrowedFd;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const WATCHDOG: Duration = Duration::from_secs(30);

/// Run `f` on another thread; its result, or a panic after [`WATCHDOG`].
fn with_watchdog<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(WATCHDOG).unwrap_or_else(|_| panic!("did not return within {WATCHDOG:?}"))
}

const POLICIES: [WaitPolicy; 4] = [
    WaitPolicy::Spin,
    WaitPolicy::Block,
    WaitPolicy::Adaptive { spin: Duration::ZERO },
    WaitPolicy::Adaptive { spin: Duration::from_micros(5) },
];

#[test]
fn timeouts_shorter_than_the_spin_time_out_under_every_policy() {
    with_watchdog(|| {
        let (_tx, mut rx) = shmplane::channel(4096).unwrap();
        for policy in POLICIES {
            rx.set_wait_policy(policy);
            for timeout in [Duration::ZERO, Duration::from_micros(3), Duration::from_millis(2)] {
                assert!(matches!(rx.peek(Some(timeout)), Err(Error::Timeout)), "{policy:?} {timeout:?}");
            }
            assert!(matches!(rx.try_peek(), Err(Error::Empty)));
        }
    });
}

#[test]
fn every_kind_of_message_arriving_during_the_spin_is_received_whole() {
    with_watchdog(|| {
        let (mut tx, mut rx) = shmplane::channel(4096).unwrap();
        for policy in POLICIES {
            rx.set_wait_policy(policy);
            // Bytes, an array (not the fast path's kind), a chunked message (cannot be
            // viewed in place: stays queued), and bytes after a wrap (padding record).
            let sender = thread::spawn(move || {
                for round in 0..50usize {
                    thread::sleep(Duration::from_micros(1 + (round % 7) as u64 * 3));
                    match round % 4 {
                        0 => tx.send(&[round as u8; 100]).unwrap(),
                        1 => tx.send_array_of(&[2], &[round as f64, 1.0]).unwrap(),
                        2 => tx.send(&vec![round as u8; 3000]).unwrap(),
                        _ => tx.send(&vec![round as u8; 9000]).unwrap(),
                    }
                }
                tx
            });
            for round in 0..50usize {
                match round % 4 {
                    0 | 2 => {
                        let msg = rx.peek(Some(WATCHDOG)).unwrap();
                        assert_eq!(msg.head().kind(), Kind::Bytes);
                        assert!(msg.iter().all(|&b| b == round as u8));
                        assert_eq!(msg.len(), if round % 4 == 0 { 100 } else { 3000 });
                    }
                    1 => {
                        let msg = rx.peek(Some(WATCHDOG)).unwrap();
                        assert_eq!(msg.head().kind(), Kind::Array);
                        assert_eq!(msg.part(0), bytemuck::cast_slice::<f64, u8>(&[round as f64, 1.0]));
                    }
                    _ => {
                        // 9000 bytes through a 4 KiB ring: chunked, so peek refuses it
                        // and leaves it for recv.
                        match rx.peek(Some(WATCHDOG)) {
                            Err(Error::InvalidArgument(_)) => {}
                            Ok(_) => panic!("a chunked message viewed in place"),
                            Err(e) => panic!("{e:?}"),
                        }
                        assert_eq!(rx.recv_timeout(WATCHDOG).unwrap(), vec![round as u8; 9000]);
                    }
                }
            }
            tx = sender.join().unwrap();
            assert!(matches!(rx.try_peek(), Err(Error::Empty)));
        }
    });
}

#[test]
fn a_copy_of_the_receiver_proceeds_after_a_fast_path_miss() {
    // A miss of the fast path (an array at the head) leaves the role lease: another
    // copy, opened by descriptor, can receive at once.
    with_watchdog(|| {
        let (mut tx, mut rx) = shmplane::channel(4096).unwrap();
        tx.send_array_of(&[1], &[7.0f64]).unwrap();
        drop(rx.peek(Some(Duration::ZERO)).unwrap());
        tx.send(b"next").unwrap();
        // SAFETY: the descriptor is open for the life of `rx`; we duplicate it at once.
        let fd = unsafe { BorrowedFd::borrow_raw(rx.fd().unwrap()) }.try_clone_to_owned().unwrap();
        let mut copy = shmplane::Receiver::from_fd(fd, None).unwrap();
        assert_eq!(copy.recv_timeout(Duration::from_secs(5)).unwrap(), b"next");
        drop(rx);
    });
}

/// Messages larger than a record really travel in chunks (issue 13: nothing asserted
/// it): a zero-copy view of one is refused as "spans several records" and leaves it
/// queued; a message of one record can be viewed in place; both then arrive whole.
#[test]
fn large_messages_are_chunked_small_ones_are_one_record() {
    let (mut tx, mut rx) = shmplane::channel(1 << 16).unwrap();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let sent = big.clone();
    let t = std::thread::spawn(move || {
        tx.send(&[9u8; 100]).unwrap();
        tx.send(&sent).unwrap();
        tx
    });
    assert_eq!(&*rx.peek(Some(std::time::Duration::from_secs(20))).unwrap(), &[9u8; 100][..]);
    match rx.peek(Some(std::time::Duration::from_secs(20))) {
        Err(shmplane::Error::InvalidArgument(m)) => assert!(m.contains("several records"), "{m}"),
        Err(e) => panic!("{e}"),
        Ok(m) => panic!("a message of {} bytes viewed in place", m.len()),
    }
    assert_eq!(rx.recv().unwrap(), big);
    drop(t.join().unwrap());
}

/// `Incoming::read_streamed` hands a chunked message's logical payload over in order,
/// each piece once its record was read out intact, the pieces together exactly the
/// message; a message cut part-way is `Truncated` after the pieces that did arrive, and
/// the next message is intact; a sink's error ends the read and the rest is skipped.
#[test]
fn a_streamed_read_delivers_the_payload_in_order_and_reports_a_cut() {
    with_watchdog(|| {
        let (mut tx, mut rx) = shmplane::channel(1 << 16).unwrap();
        let big: Vec<u8> = (0..300_001u32).map(|i| (i % 251) as u8).collect();
        let sent = big.clone();
        let t = thread::spawn(move || {
            tx.send(&[7u8; 3]).unwrap(); // shifts the first record's end
            tx.send(&sent).unwrap();
            tx.send(&sent).unwrap();
            tx.send(b"after").unwrap();
            tx
        });
        assert_eq!(rx.recv().unwrap(), [7u8; 3]);
        let mut got = Vec::new();
        let mut pieces = 0;
        let incoming = rx.begin(shmplane::Wait::forever()).unwrap();
        assert!(incoming.head().is_chunked());
        let mut sink = |b: &[u8]| {
            pieces += 1;
            got.extend_from_slice(b);
            Ok(())
        };
        incoming.read_streamed(&mut sink, shmplane::Wait::forever()).unwrap();
        assert_eq!(got, big);
        assert!(pieces > 2, "{pieces} pieces");
        // A sink's error ends the read; the rest of that message is skipped.
        let incoming = rx.begin(shmplane::Wait::forever()).unwrap();
        let mut fail = |_: &[u8]| Err(Error::Interrupted);
        assert!(matches!(incoming.read_streamed(&mut fail, shmplane::Wait::forever()), Err(Error::Interrupted)));
        assert_eq!(rx.recv().unwrap(), b"after");
        let mut tx = t.join().unwrap();
        // Cut part-way: the sender gives up (nobody reads while it sends).
        let r = tx.send_timeout(&big, Duration::from_millis(100));
        assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
        tx.send(b"next").unwrap();
        let incoming = rx.begin(shmplane::Wait::forever()).unwrap();
        let mut got = Vec::new();
        let mut sink = |b: &[u8]| {
            got.extend_from_slice(b);
            Ok(())
        };
        let r = incoming.read_streamed(&mut sink, shmplane::Wait::forever());
        assert!(matches!(r, Err(Error::Truncated { .. })), "{r:?}");
        assert!(!got.is_empty() && got.len() < big.len() && got[..] == big[..got.len()]);
        assert_eq!(rx.recv().unwrap(), b"next");
    });
}
