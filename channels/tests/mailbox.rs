//! Mailbox (MPSC) behaviour in one process: lanes, order, pending, disconnect, copies
//! of producers, messages of any size, a producer that stops mid-message. The
//! cross-process and kill -9 cases are in `processes.rs`.

use shmplane::{Error, Mailbox, Sender, Wait};
use std::time::Duration;

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

#[test]
fn per_producer_fifo_across_threads() {
    let _w = watchdog();
    let mut mb = Mailbox::new(4096, 8).unwrap();
    let producers: Vec<_> = (0..4u8)
        .map(|p| {
            let mut tx = mb.sender().unwrap();
            std::thread::spawn(move || {
                for i in 0..5000u32 {
                    let mut msg = vec![p];
                    msg.extend_from_slice(&i.to_le_bytes());
                    tx.send(&msg).unwrap();
                }
            })
        })
        .collect();
    let mut next = [0u32; 4];
    for _ in 0..4 * 5000 {
        let m = mb.recv().unwrap();
        let p = m[0] as usize;
        let i = u32::from_le_bytes(m[1..5].try_into().unwrap());
        assert_eq!(i, next[p], "producer {p} out of order");
        next[p] += 1;
    }
    for t in producers {
        t.join().unwrap();
    }
    assert!(matches!(mb.recv(), Err(Error::Disconnected { .. })));
    assert!(!mb.pending());
}

#[test]
fn empty_mailbox_is_empty_not_disconnected() {
    let mut mb = Mailbox::new(4096, 2).unwrap();
    assert!(!mb.pending());
    assert!(matches!(mb.try_recv(), Err(Error::Empty)));
    assert!(matches!(mb.recv_timeout(Duration::from_millis(20)), Err(Error::Timeout)));
}

#[test]
fn pending_is_exact_after_draining() {
    let mut mb = Mailbox::new(4096, 2).unwrap();
    let mut tx = mb.sender().unwrap();
    tx.send(b"x").unwrap();
    assert!(mb.pending());
    assert_eq!(mb.try_recv().unwrap(), b"x");
    assert!(!mb.pending_exact().unwrap());
    assert!(!mb.pending());
    tx.send(b"y").unwrap();
    assert!(mb.pending() && mb.pending_exact().unwrap());
}

#[test]
fn open_by_name_and_lane_limit() {
    let name = format!("mb-test-limit-{}", std::process::id());
    let mut mb = Mailbox::create(&name, 4096, 2).unwrap();
    let mut a = Sender::open(&name).unwrap();
    let _b = Sender::open(&name).unwrap();
    assert!(matches!(Sender::open(&name), Err(Error::RoleTaken { .. })));
    assert!(matches!(shmplane::Receiver::open(&name), Err(Error::WrongKind { .. })));
    a.send(b"hello").unwrap();
    assert_eq!(mb.recv().unwrap(), b"hello");
    drop(a);
    // The lane is free again: a new producer takes it.
    let mut c = Sender::open(&name).unwrap();
    c.send(b"again").unwrap();
    assert_eq!(mb.recv().unwrap(), b"again");
}

#[test]
fn messages_larger_than_a_lane_stream_through() {
    let _w = watchdog();
    let mut mb = Mailbox::new(4096, 4).unwrap();
    let mut tx = mb.sender().unwrap();
    let mut small = mb.sender().unwrap();
    let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    let expect = big.clone();
    let t = std::thread::spawn(move || {
        tx.send(&big).unwrap();
        tx.send(b"after").unwrap();
    });
    small.send(b"small").unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(mb.recv().unwrap());
    }
    t.join().unwrap();
    assert!(got.contains(&expect));
    assert!(got.contains(&b"small".to_vec()));
    let pos_big = got.iter().position(|m| *m == expect).unwrap();
    let pos_after = got.iter().position(|m| m == b"after").unwrap();
    assert!(pos_big < pos_after);
}

#[test]
fn producer_cut_mid_message_truncates_once() {
    let _w = watchdog();
    let mut mb = Mailbox::new(4096, 2).unwrap();
    let mut tx = mb.sender().unwrap();
    // A send that times out part-way through a chunked message cuts it.
    let big = vec![1u8; 50_000];
    let r = tx.send_with(&big, Wait::timeout(Duration::from_millis(30)));
    assert!(r.is_err());
    tx.send(b"next").unwrap();
    match mb.recv() {
        Err(Error::Truncated { .. }) => {}
        other => panic!("expected Truncated, got {other:?}"),
    }
    assert_eq!(mb.recv().unwrap(), b"next");
}

#[test]
fn consumer_close_disconnects_waiting_producer() {
    let _w = watchdog();
    let mut mb = Mailbox::new(4096, 2).unwrap();
    let mut tx = mb.sender().unwrap();
    tx.send(b"x").unwrap(); // the consumer attaches the lane on its first read
    assert_eq!(mb.recv().unwrap(), b"x");
    mb.close();
    let r = loop {
        match tx.send(&[0u8; 1000]) {
            Ok(()) => continue,
            Err(e) => break e,
        }
    };
    assert!(matches!(r, Error::Disconnected { .. }), "{r:?}");
}

#[test]
fn consumer_close_before_lane_attach_disconnects_producer() {
    let _w = watchdog();
    let mut mb = Mailbox::new(4096, 2).unwrap();
    let mut tx = mb.sender().unwrap();
    mb.close();
    let r = loop {
        match tx.send(&[0u8; 1000]) {
            Ok(()) => continue,
            Err(e) => break e,
        }
    };
    assert!(matches!(r, Error::Disconnected { .. }), "{r:?}");
}

#[test]
fn blocked_consumer_wakes_for_any_producer() {
    let _w = watchdog();
    let mut mb = Mailbox::new(4096, 8).unwrap();
    mb.set_wait_policy(shmplane::WaitPolicy::Block);
    for p in 0..8u8 {
        let mut tx = mb.sender().unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            tx.send(&[p]).unwrap();
            tx
        });
        assert_eq!(mb.recv().unwrap(), [p]);
        drop(t.join().unwrap());
    }
}
