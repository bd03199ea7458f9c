//! Broadcast (SPMC) behaviour in one process: every subscriber gets every message in
//! order, joins and leaves, back-pressure of the lossless kind, lags of the lossy one,
//! messages of any size. The cross-process and kill -9 cases are in
//! `broadcast_processes.rs`.

mod common;

use common::{await_futex_sleep, gettid};
use shmplane::{Error, Publisher, Subscriber, Wait, DEFAULT_MAX_SUBSCRIBERS};
use shmplane_shm::layout::{broadcast_ring_offset, RingControl};
use std::time::Duration;

/// Byte offset, in a broadcast of [`DEFAULT_MAX_SUBSCRIBERS`], of the futex word a
/// subscriber waiting for data sleeps on.
const DATA_READY_EPOCH: usize =
    broadcast_ring_offset(DEFAULT_MAX_SUBSCRIBERS) + std::mem::offset_of!(RingControl, data_ready.value.epoch);
/// The same for the publisher waiting for room.
const SPACE_READY_EPOCH: usize =
    broadcast_ring_offset(DEFAULT_MAX_SUBSCRIBERS) + std::mem::offset_of!(RingControl, space_ready.value.epoch);

/// Tests here fork nothing, but close handles whose segments other tests of the binary
/// might hold copies of through a forked child elsewhere: run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn watchdog() -> impl Drop {
    struct Guard(std::sync::mpsc::Sender<()>);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            eprintln!("watchdog: test hung");
            std::process::abort();
        }
    });
    Guard(tx)
}

fn name(tag: &str) -> String {
    format!("test-bcast-{tag}-{}", std::process::id())
}

/// Message `i` of a stream: its number, then `len - 8` bytes derived from it.
fn message(i: u64, len: usize) -> Vec<u8> {
    let mut m = i.to_le_bytes().to_vec();
    m.extend((0..len.saturating_sub(8)).map(|k| (i as usize * 31 + k) as u8));
    m
}

fn number_of(m: &[u8]) -> u64 {
    let i = u64::from_le_bytes(m[..8].try_into().unwrap());
    assert_eq!(m, &message(i, m.len())[..], "message {i} arrived damaged");
    i
}

#[test]
fn every_subscriber_gets_every_message_in_order() {
    let _s = serial();
    let _w = watchdog();
    let n = name("order");
    let mut publisher = Publisher::create(&n, 1 << 14, false).unwrap();
    let subs: Vec<Subscriber> = (0..3).map(|_| Subscriber::open(&n).unwrap()).collect();
    assert_eq!(publisher.subscribers(), 3);
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut s| {
            std::thread::spawn(move || {
                for i in 0..20_000u64 {
                    let m = s.recv_timeout(Duration::from_secs(20)).unwrap();
                    assert_eq!(number_of(&m), i);
                }
            })
        })
        .collect();
    for i in 0..20_000u64 {
        publisher.send(&message(i, 8 + (i as usize % 200))).unwrap();
    }
    for r in readers {
        r.join().unwrap();
    }
}

#[test]
fn messages_larger_than_the_ring_reach_every_subscriber() {
    let _s = serial();
    let _w = watchdog();
    let mut publisher = Publisher::new(4096, false).unwrap();
    let subs: Vec<Subscriber> = (0..3).map(|_| publisher.subscribe().unwrap()).collect();
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut s| {
            std::thread::spawn(move || {
                for i in 0..20u64 {
                    let m = s.recv_timeout(Duration::from_secs(20)).unwrap();
                    assert_eq!(m.len(), 100_000 + i as usize);
                    assert_eq!(number_of(&m), i);
                }
            })
        })
        .collect();
    for i in 0..20u64 {
        publisher.send(&message(i, 100_000 + i as usize)).unwrap();
    }
    for r in readers {
        r.join().unwrap();
    }
}

#[test]
fn a_subscriber_receives_only_what_is_published_after_it_joined() {
    let _s = serial();
    let _w = watchdog();
    let mut publisher = Publisher::new(4096, false).unwrap();
    publisher.send(b"before anyone").unwrap();
    let mut early = publisher.subscribe().unwrap();
    publisher.send(b"one").unwrap();
    let mut late = publisher.subscribe().unwrap();
    publisher.send(b"two").unwrap();
    assert_eq!(early.try_recv().unwrap(), b"one");
    assert_eq!(early.try_recv().unwrap(), b"two");
    assert_eq!(late.try_recv().unwrap(), b"two");
    assert!(matches!(late.try_recv(), Err(Error::Empty)));
}

#[test]
fn the_slowest_subscriber_holds_the_publisher_back_until_it_leaves() {
    let _s = serial();
    let _w = watchdog();
    let mut publisher = Publisher::new(4096, false).unwrap();
    let mut fast = publisher.subscribe().unwrap();
    let mut slow = publisher.subscribe().unwrap();
    let mut sent = 0u64;
    while publisher.try_send(&message(sent, 100)).is_ok() {
        sent += 1;
        assert_eq!(number_of(&fast.try_recv().unwrap()), sent - 1);
    }
    assert!(sent > 10, "the ring took {sent} messages");
    let fast_next = sent;
    assert!(matches!(publisher.try_send(&message(sent, 100)), Err(Error::Full)));
    // The slow one catches up a little: room again.
    for i in 0..3 {
        assert_eq!(number_of(&slow.try_recv().unwrap()), i);
    }
    publisher.send_timeout(&message(sent, 100), Duration::from_secs(5)).unwrap();
    sent += 1;
    // Full again; the slow subscriber leaves: the publisher waits no longer.
    while publisher.try_send(&message(sent, 100)).is_ok() {
        sent += 1;
    }
    // It leaves once the publisher sleeps waiting for room (in futex(2) on the ring's
    // space event), not before it waits.
    let (me, path) = (gettid(), publisher.path().unwrap().to_owned());
    let t = std::thread::spawn(move || {
        await_futex_sleep(me, &path, SPACE_READY_EPOCH);
        slow.close();
    });
    publisher.send_timeout(&message(sent, 100), Duration::from_secs(10)).unwrap();
    sent += 1;
    t.join().unwrap();
    for i in fast_next..sent {
        assert_eq!(number_of(&fast.recv_timeout(Duration::from_secs(5)).unwrap()), i);
    }
    assert_eq!(publisher.subscribers(), 1);
}

#[test]
fn with_no_subscriber_the_publisher_never_waits() {
    let _s = serial();
    let _w = watchdog();
    let mut publisher = Publisher::new(4096, false).unwrap();
    for i in 0..10_000u64 {
        publisher.try_send(&message(i, 64)).unwrap();
    }
    assert_eq!(publisher.subscribers(), 0);
}

#[test]
fn subscribers_see_the_publisher_close_after_draining() {
    let _s = serial();
    let _w = watchdog();
    let mut publisher = Publisher::new(4096, false).unwrap();
    let mut sub = publisher.subscribe().unwrap();
    publisher.send(b"last").unwrap();
    publisher.close();
    assert_eq!(sub.recv().unwrap(), b"last");
    assert!(matches!(sub.recv(), Err(Error::Disconnected { .. })));
}

#[test]
fn every_slot_taken_is_a_clear_error() {
    let _s = serial();
    let _w = watchdog();
    let n = name("full");
    let publisher = Publisher::create_with(&n, 4096, 2, false).unwrap();
    let _a = Subscriber::open(&n).unwrap();
    let mut b = Subscriber::open(&n).unwrap();
    assert!(matches!(Subscriber::open(&n), Err(Error::AllTaken { count: 2, .. })));
    b.close();
    let c = Subscriber::open(&n).unwrap();
    assert_eq!(c.index(), Some(1));
    assert_eq!(publisher.max_subscribers(), 2);
    assert!(matches!(Publisher::create_with(&name("bad"), 4096, 0, false), Err(Error::InvalidArgument(_))));
    assert!(matches!(Publisher::create_with(&name("bad"), 4096, 513, false), Err(Error::InvalidArgument(_))));
}

#[test]
fn a_lossy_publisher_never_waits_and_a_laggard_learns_what_it_missed() {
    let _s = serial();
    let _w = watchdog();
    let mut publisher = Publisher::new(4096, true).unwrap();
    let mut reader = publisher.subscribe().unwrap();
    let mut laggard = publisher.subscribe().unwrap();
    for i in 0..1000u64 {
        publisher.try_send(&message(i, 100)).unwrap();
        assert_eq!(number_of(&reader.try_recv().unwrap()), i);
    }
    // The laggard read nothing: it missed the oldest messages, then gets the rest in
    // order, ending with the newest.
    let missed = match laggard.try_recv() {
        Err(Error::Lagged { missed }) => missed,
        other => panic!("expected Lagged, got {other:?}"),
    };
    assert!(missed > 900 && missed < 1000, "missed {missed}");
    for i in missed..1000 {
        assert_eq!(number_of(&laggard.try_recv().unwrap()), i);
    }
    assert!(matches!(laggard.try_recv(), Err(Error::Empty)));
    assert!(matches!(laggard.peek(None), Err(Error::InvalidArgument(_))));
}

#[test]
fn lossy_subscribers_racing_the_publisher_get_intact_messages_and_exact_gaps() {
    let _s = serial();
    let _w = watchdog();
    let mut publisher = Publisher::new(1 << 14, true).unwrap();
    const N: u64 = 50_000;
    let readers: Vec<_> = (0..2)
        .map(|k| {
            let mut s = publisher.subscribe().unwrap();
            std::thread::spawn(move || {
                let (mut next, mut got, mut lost) = (0u64, 0u64, 0u64);
                while next < N {
                    match s.recv_timeout(Duration::from_secs(20)) {
                        Ok(m) => {
                            assert_eq!(number_of(&m), next, "subscriber {k}");
                            next += 1;
                            got += 1;
                        }
                        Err(Error::Lagged { missed }) => {
                            next += missed;
                            lost += missed;
                        }
                        Err(e) => panic!("subscriber {k}: {e}"),
                    }
                    if k == 1 && next % 1000 == 0 {
                        std::thread::sleep(Duration::from_millis(1)); // fall behind now and then
                    }
                }
                assert_eq!(got + lost, N);
            })
        })
        .collect();
    for i in 0..N {
        // Sizes up to most of a record (larger ones stream in chunks, which a lossy
        // ring this small refuses: see `lossy_chunked_messages_...`).
        let len = if i % 997 == 0 { 12_000 } else { 8 + (i as usize % 300) };
        publisher.send(&message(i, len)).unwrap();
    }
    for r in readers {
        r.join().unwrap();
    }
}

#[test]
fn publisher_and_subscriber_wait_through_the_os() {
    let _s = serial();
    let _w = watchdog();
    let n = name("fd");
    let mut publisher = Publisher::create(&n, 4096, false).unwrap();
    let mut a = Subscriber::open(&n).unwrap();
    let mut b = Subscriber::open(&n).unwrap();
    let fa = a.readiness_fd().unwrap();
    let fb = b.readiness_fd().unwrap();
    assert_eq!(shmplane_shm_poll(&[fa, fb], 0), vec![false, false]);
    publisher.send(b"ring").unwrap();
    assert_eq!(shmplane_shm_poll(&[fa, fb], 5000), vec![true, true]);
    assert_eq!(a.try_recv().unwrap(), b"ring");
    assert_eq!(b.try_recv().unwrap(), b"ring");
    let fa = a.readiness_fd().unwrap();
    assert_eq!(shmplane_shm_poll(&[fa], 0), vec![false]);
}

fn shmplane_shm_poll(fds: &[i32], timeout_ms: i32) -> Vec<bool> {
    let mut p: Vec<libc::pollfd> = fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    // SAFETY: `p` is a valid array of pollfd of the given length.
    let n = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
    assert!(n >= 0);
    if n < p.len() as i32 && timeout_ms > 0 {
        // Give the slower doorbells a moment (they are rung one after another).
        // SAFETY: as above.
        unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
    }
    p.iter().map(|p| p.revents & libc::POLLIN != 0).collect()
}

#[test]
fn wait_forever_is_ended_by_close_from_another_thread_for_a_subscriber() {
    let _s = serial();
    let _w = watchdog();
    let mut publisher = Publisher::new(4096, false).unwrap();
    let mut sub = publisher.subscribe().unwrap();
    let (tid_tx, tid) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        tid_tx.send(gettid()).unwrap();
        sub.recv_with(Wait::timeout(Duration::from_secs(30)))
    });
    // Published once the subscriber sleeps (in futex(2) on the ring's data event).
    await_futex_sleep(tid.recv().unwrap(), publisher.path().unwrap(), DATA_READY_EPOCH);
    publisher.send(b"wake").unwrap();
    assert_eq!(t.join().unwrap().unwrap(), b"wake");
}

/// A subscriber that never reads leaves while the publisher is part-way through chunked
/// messages (waiting for it): the publisher goes on and the live subscriber gets every
/// message whole.
#[test]
fn a_subscriber_leaving_mid_message_releases_the_publisher() {
    let _s = serial();
    let _w = watchdog();
    for round in 0..5 {
        let mut publisher = Publisher::new(1 << 14, false).unwrap();
        let mut live = publisher.subscribe().unwrap();
        let mut idle = publisher.subscribe().unwrap();
        let reader = std::thread::spawn(move || {
            for i in 0..10u64 {
                let m = live.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|e| panic!("round {round} msg {i}: {e:?}"));
                assert_eq!(number_of(&m), i);
            }
        });
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            idle.close();
        });
        for i in 0..10u64 {
            publisher.send_timeout(&message(i, 20_000), Duration::from_secs(20)).unwrap();
        }
        reader.join().unwrap();
        closer.join().unwrap();
    }
}

#[test]
fn a_lossy_publisher_refuses_messages_longer_than_half_its_ring() {
    let _s = serial();
    let _w = watchdog();
    let mut publisher = Publisher::new(1 << 14, true).unwrap();
    let _sub = publisher.subscribe().unwrap();
    publisher.send(&[1u8; 16368]).unwrap(); // one record: fine
    assert!(matches!(publisher.send(&[1u8; 20000]), Err(Error::TooLarge { len: 20000, max: 8192 })));
}

#[test]
fn poll_keeps_a_lag_for_the_next_receive() {
    let _s = serial();
    let _w = watchdog();
    let mut publisher = Publisher::new(4096, true).unwrap();
    let mut sub = publisher.subscribe().unwrap();
    for i in 0..1000u64 {
        publisher.send(&message(i, 64)).unwrap();
    }
    assert!(sub.poll(Some(Duration::ZERO)).unwrap());
    assert!(matches!(sub.try_recv(), Err(Error::Lagged { .. })));
    assert!(sub.try_recv().is_ok());
}

/// Chunked messages (over 1 MiB, in a ring of 4 MiB) reach a lossy subscriber whole or
/// as a lag, never damaged, also when it falls behind part-way through one.
#[test]
fn lossy_chunked_messages_arrive_whole_or_as_a_lag() {
    let _s = serial();
    let _w = watchdog();
    let mut publisher = Publisher::new(1 << 22, true).unwrap();
    let mut sub = publisher.subscribe().unwrap();
    const N: u64 = 40;
    let reader = std::thread::spawn(move || {
        let (mut next, mut got) = (0u64, 0u64);
        while next < N {
            match sub.recv_timeout(Duration::from_secs(20)) {
                Ok(m) => {
                    assert_eq!(number_of(&m), next);
                    next += 1;
                    got += 1;
                    std::thread::sleep(Duration::from_millis(2)); // fall behind
                }
                Err(Error::Lagged { missed }) => next += missed,
                Err(e) => panic!("{e}"),
            }
        }
        got
    });
    for i in 0..N {
        publisher.send(&message(i, 1_500_000)).unwrap();
    }
    let got = reader.join().unwrap();
    assert!(got > 0);
    assert!(matches!(publisher.send(&message(N, 2_100_000)), Err(Error::TooLarge { .. })));
}
