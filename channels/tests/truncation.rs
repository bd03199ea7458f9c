//! A segment file truncated by another process while mapped here: every operation of
//! every primitive reports `Error::Corrupt` (or, for a non-blocking look at an empty
//! ring whose control pages survived, `Empty`), never SIGBUS; closing and dropping
//! never crash (issue 13 part 1; `shmplane_shm::region::guard`).
//!
//! Each case truncates to 0 bytes and to half the segment. A SIGBUS the guard missed
//! kills this test binary: the test fails, it cannot pass by accident.

mod common;

use common::{await_futex_sleep, gettid, Name};
use shmplane::{channel_named, ByteSlot, Error, Mailbox, Publisher, Receiver, Sender};
use shmplane_shm::layout::{RingControl, RING_CONTROL_OFFSET};
use std::time::Duration;

const T: Duration = Duration::from_millis(300);

/// Truncate `name`'s segment file as another process would.
fn truncate(name: &Name, len: Cut) {
    let f = std::fs::OpenOptions::new().write(true).open(name.path()).unwrap();
    let size = f.metadata().unwrap().len();
    f.set_len(match len {
        Cut::Zero => 0,
        Cut::Half => size / 2,
    })
    .unwrap();
}

#[derive(Clone, Copy, Debug)]
enum Cut {
    Zero,
    Half,
}

const CUTS: [Cut; 2] = [Cut::Zero, Cut::Half];

#[track_caller]
fn corrupt<T: std::fmt::Debug>(r: shmplane::Result<T>, what: &str, cut: Cut) {
    match r {
        Err(Error::Corrupt { what: why, .. }) => assert!(why.contains("truncated"), "{what} ({cut:?}): {why}"),
        other => panic!("{what} ({cut:?}): expected Corrupt (truncated), got {other:?}"),
    }
}

/// Repeat `op` until it fails (at most `n` times): it must fail, with Corrupt. Cut
/// to half, an operation whose memory survived may still succeed (what it wrote is in
/// the file, where a peer reads it); the first one that needs a page that is gone
/// reports the truncation.
#[track_caller]
fn eventually_corrupt<T: std::fmt::Debug>(mut op: impl FnMut() -> shmplane::Result<T>, n: usize, what: &str, cut: Cut) {
    for _ in 0..n {
        match op() {
            Ok(_) => continue,
            r => return corrupt(r, what, cut),
        }
    }
    panic!("{what} ({cut:?}): still succeeding after {n} tries");
}

/// Corrupt, or (a non-blocking look at an empty ring whose pages survived) Empty.
#[track_caller]
fn corrupt_or_empty<T: std::fmt::Debug>(r: shmplane::Result<T>, what: &str, cut: Cut) {
    match r {
        Err(Error::Empty) => {}
        r => corrupt(r, what, cut),
    }
}

#[test]
fn channel_sender_operations() {
    for cut in CUTS {
        for (i, len) in [16usize, 4000, 300_000].into_iter().enumerate() {
            let name = Name::new(&format!("trunc-tx-{i}"));
            let (mut tx, rx) = channel_named(&name, 1 << 16).unwrap();
            tx.send(b"before").unwrap();
            truncate(&name, cut);
            let msg = vec![7u8; len];
            eventually_corrupt(|| tx.send_timeout(&msg, T), 10_000, &format!("send of {len} bytes"), cut);
            corrupt(tx.try_send(&[1; 16]), "try_send after", cut);
            drop(rx);
            drop(tx);
        }
    }
    let name = Name::new("trunc-loan");
    let (mut tx, _rx) = channel_named(&name, 1 << 16).unwrap();
    let mut loan = tx.loan(40_000, Some(T)).unwrap();
    truncate(&name, Cut::Zero);
    loan.as_mut_slice().fill(3);
    corrupt(loan.commit_len(40_000), "loan commit", Cut::Zero);
}

#[test]
fn channel_receiver_operations() {
    for cut in CUTS {
        for (i, len) in [16usize, 4000, 300_000].into_iter().enumerate() {
            let name = Name::new(&format!("trunc-rx-{i}"));
            let (mut tx, mut rx) = channel_named(&name, 1 << 16).unwrap();
            if len < 1 << 16 {
                tx.send(&vec![5u8; len]).unwrap();
            }
            truncate(&name, cut);
            // Cut to half, a message in surviving pages is still the sender's.
            eventually_corrupt(|| rx.recv_timeout(T).inspect(|m| assert!(m.iter().all(|&b| b == 5))), 2, &format!("recv of {len} bytes"), cut);
            corrupt_or_empty(rx.try_recv(), "try_recv", cut);
            corrupt(rx.poll(Some(T)).and_then(|ready| if ready { rx.recv_timeout(T) } else { Err(Error::Timeout) }), "poll", cut);
            corrupt(rx.check_sender().and_then(|()| rx.recv_timeout(T)), "check_sender", cut);
        }
        // Opening a truncated segment: refused at validation.
        let name = Name::new("trunc-open");
        let tx = Sender::create(&name, 1 << 16).unwrap();
        truncate(&name, cut);
        assert!(matches!(Receiver::open(&name), Err(Error::Corrupt { .. })));
        drop(tx);
    }
}

#[test]
fn a_receiver_blocked_when_the_file_is_truncated_wakes_with_corrupt() {
    for cut in CUTS {
        let name = Name::new("trunc-blocked");
        let (tx, mut rx) = channel_named(&name, 1 << 16).unwrap();
        let (tid_tx, tid) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            tid_tx.send(gettid()).unwrap();
            rx.recv_timeout(Duration::from_secs(30))
        });
        // Blocked: asleep in futex(2) on the ring's data event.
        let data_ready = RING_CONTROL_OFFSET + std::mem::offset_of!(RingControl, data_ready.value.epoch);
        await_futex_sleep(tid.recv().unwrap(), &name.path(), data_ready);
        truncate(&name, cut);
        corrupt(waiter.join().unwrap(), "blocked recv", cut);
        drop(tx);
    }
}

#[test]
fn slot_operations() {
    for cut in CUTS {
        let name = Name::new("trunc-slot");
        let slot = ByteSlot::create(&name, &[1u8; 5000], 9).unwrap();
        truncate(&name, cut);
        // Cut to half, the value (bytes 4096..) lies past the cut.
        corrupt(slot.read_number(4096 + 8, 8), "read_number", cut);
        corrupt(slot.read_into(&mut [0u8; 5000]), "read_into", cut);
        corrupt(slot.read_at(4090, &mut [0u8; 20]), "read_at", cut);
        corrupt(slot.write(&[2u8; 5000]), "write", cut);
        corrupt(slot.write_at(0, &[3u8; 8]), "write_at", cut);
        corrupt(slot.version(), "version", cut);
        corrupt(slot.wait_for_update(u64::MAX - 1, Some(T)), "wait_for_update", cut);
        assert_eq!(slot.committed_word(600), None, "committed_word ({cut:?})");
        drop(slot);
    }
}

#[test]
fn mailbox_operations() {
    for cut in CUTS {
        let name = Name::new("trunc-mailbox");
        let mut mb = Mailbox::create(&name, 1 << 16, 4).unwrap();
        let mut tx = mb.sender().unwrap();
        tx.send(b"queued").unwrap();
        let mut tx2 = mb.sender().unwrap();
        truncate(&name, cut);
        eventually_corrupt(|| tx2.send_timeout(&[9u8; 3000], T), 100, "mailbox send", cut);
        eventually_corrupt(|| mb.recv_timeout(T), 100, "mailbox recv", cut);
        corrupt_or_empty(mb.try_recv(), "mailbox try_recv", cut);
        let _ = mb.pending();
        drop(tx);
        drop(tx2);
        mb.close();
    }
}

#[test]
fn broadcast_operations() {
    for cut in CUTS {
        let name = Name::new("trunc-bcast");
        let mut publisher = Publisher::create(&name, 1 << 16, false).unwrap();
        let mut sub = publisher.subscribe().unwrap();
        publisher.send(b"queued").unwrap();
        truncate(&name, cut);
        eventually_corrupt(|| publisher.send_timeout(&[4u8; 3000], T), 100, "publish", cut);
        eventually_corrupt(|| sub.recv_timeout(T), 100, "subscriber recv", cut);
        drop(sub);
        drop(publisher);
    }
}

#[test]
fn opening_after_truncation_is_refused_and_closing_never_crashes() {
    for cut in CUTS {
        let name = Name::new("trunc-close");
        let (mut tx, mut rx) = channel_named(&name, 1 << 16).unwrap();
        truncate(&name, cut);
        tx.close();
        rx.close();
        assert!(matches!(Sender::open(&name), Err(Error::Corrupt { .. } | Error::NotFound { .. })));
    }
}

#[test]
fn rpc_operations() {
    use shmplane::{RpcClient, RpcServer};
    for cut in CUTS {
        let name = Name::new("trunc-rpc");
        let mut server = RpcServer::create_with(&name, 1 << 16, 2).unwrap();
        let mut client = RpcClient::connect(&name, Some(Duration::from_secs(10))).unwrap();
        truncate(&name, cut);
        eventually_corrupt(|| client.call_timeout(&[1u8; 3000], T), 100, "rpc call", cut);
        eventually_corrupt(|| server.recv_frame(shmplane::Wait::timeout(T)), 100, "rpc server recv", cut);
        drop(client);
        drop(server);
    }
}

#[test]
fn a_copy_waiting_for_the_lease_of_a_tripped_copy_gets_corrupt() {
    // Two copies of one sender (threads stand in for processes: each copy has its own
    // lease entry). The first holds the lease inside an open loan when the file is cut
    // to 0; the second, waiting for the lease, must not wait for ever.
    let name = Name::new("trunc-lease");
    let (tx, _rx) = channel_named(&name, 1 << 16).unwrap();
    let fd = tx.fd().unwrap();
    // SAFETY: `fd` is `tx`'s open descriptor, which outlives this borrow.
    let dup = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }.try_clone_to_owned().unwrap();
    let mut tx2 = Sender::from_fd(dup, Some(name.to_string())).unwrap();
    let mut tx = tx;
    let loan = tx.loan_message(&shmplane::frame::Outgoing::bytes(&[1; 100]), shmplane::Wait::forever()).unwrap();
    truncate(&name, Cut::Zero);
    // Waiting for ever would end in Timeout, not Corrupt.
    corrupt(tx2.send_timeout(b"x", Duration::from_secs(20)), "send of a copy waiting for the lease", Cut::Zero);
    tx.abort_loan(loan);
}
