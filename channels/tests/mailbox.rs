//! Mailbox (MPSC) behaviour in one process: lanes, order, pending, disconnect, copies
//! of producers, messages of any size, a producer that stops mid-message. The
//! cross-process and kill -9 cases are in `processes.rs`.

mod common;

use shmplane::{Error, Mailbox, Sender, Wait};
use std::time::Duration;

/// One test forks (its child holds copies of every descriptor of this process for a
/// while), so that another test's close would see its own role still held and leave
/// its segment behind: the tests of this file run one at a time.
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

#[test]
fn per_producer_fifo_across_threads() {
    let _serial = serial();
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
    let _serial = serial();
    let mut mb = Mailbox::new(4096, 2).unwrap();
    assert!(!mb.pending());
    assert!(matches!(mb.try_recv(), Err(Error::Empty)));
    assert!(matches!(mb.recv_timeout(Duration::from_millis(20)), Err(Error::Timeout)));
}

#[test]
fn pending_is_exact_after_draining() {
    let _serial = serial();
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
    let _serial = serial();
    let name = format!("mb-test-limit-{}", std::process::id());
    let mut mb = Mailbox::create(&name, 4096, 2).unwrap();
    let mut a = Sender::open(&name).unwrap();
    let _b = Sender::open(&name).unwrap();
    assert!(matches!(Sender::open(&name), Err(Error::AllTaken { role: "sender", .. })));
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
    let _serial = serial();
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
    let _serial = serial();
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
    let _serial = serial();
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
    let _serial = serial();
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
    let _serial = serial();
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

// ----------------------------------------------------------------------------------
// Regressions from the review of the first mailbox commit (copies of the consumer,
// records without a pending bit, corrupt lanes, stray bits, a replaced consumer).
// ----------------------------------------------------------------------------------

use shmplane_shm::header::SegmentKind;
use shmplane_shm::segment::Segment;
use shmplane_shm::store::mailbox_control;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// A copy of the consumer as a child process gets it (a duplicate of its descriptor).
fn copy_of(mb: &Mailbox) -> Mailbox {
    // SAFETY: test: a duplicate of a live descriptor, owned by the new handle.
    let fd = unsafe { OwnedFd::from_raw_fd(libc::dup(mb.fd().unwrap())) };
    Mailbox::from_fd(fd, mb.name().map(str::to_owned)).unwrap()
}

fn unique(tag: &str) -> String {
    format!("mb-test-{tag}-{}", std::process::id())
}

/// A copy waiting while another copy is inside an operation on the only lane with
/// data: its timeout holds (no spinning past it).
#[test]
fn copy_waiting_while_another_copy_operates_times_out() {
    let _serial = serial();
    let _w = watchdog();
    let mut mb = Mailbox::new(4096, 2).unwrap();
    let mut tx = mb.sender().unwrap();
    tx.send(b"one").unwrap();
    tx.send(b"two").unwrap();
    let mut mb2 = copy_of(&mb);
    let incoming = mb.begin(Wait::forever()).unwrap();
    // Spinning past its deadline until the other copy's operation ends would never
    // return here (it ends below): the watchdog fails the test.
    let t = std::thread::spawn(move || {
        let r = mb2.recv_timeout(Duration::from_millis(50));
        (r, mb2)
    });
    let (r, mut mb2) = t.join().unwrap();
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    drop(incoming);
    assert_eq!(mb2.recv().unwrap(), b"two");
}

/// Two copies racing for each message on a lane whose producer already closed, while
/// another producer lives: exactly one copy gets it, the other `Empty`, never a
/// lane's `Disconnected`.
#[test]
fn racing_copies_never_see_a_lane_verdict() {
    let _serial = serial();
    use std::sync::{Arc, Barrier};
    let _w = watchdog();
    let name = unique("race");
    let mut mb = Mailbox::create(&name, 1 << 16, 2).unwrap();
    let _alive = Sender::open(&name).unwrap();
    let rounds = 2000;
    let barrier = Arc::new(Barrier::new(3));
    let spawn = |mut m: Mailbox| {
        let barrier = barrier.clone();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            for _ in 0..rounds {
                barrier.wait();
                out.push(match m.try_recv() {
                    Ok(_) => "ok".to_string(),
                    Err(Error::Empty) => "empty".to_string(),
                    Err(e) => format!("{e:?}"),
                });
                barrier.wait();
            }
            out
        })
    };
    let t1 = spawn(copy_of(&mb));
    let t2 = spawn(copy_of(&mb));
    for _ in 0..rounds {
        let mut tx = Sender::open(&name).unwrap();
        tx.send(b"m").unwrap();
        tx.close();
        barrier.wait();
        barrier.wait();
        while mb.try_recv().is_ok() {}
    }
    let (a, b) = (t1.join().unwrap(), t2.join().unwrap());
    for (x, y) in a.iter().zip(&b) {
        for s in [x, y] {
            assert!(s == "ok" || s == "empty", "a copy got {s}");
        }
        assert!(!(x == "ok" && y == "ok"), "both copies got the message");
    }
}

/// A copy that attached lanes the original never opened (a fork child): both copies
/// go on receiving from every lane.
#[test]
fn copies_share_every_lane() {
    let _serial = serial();
    let _w = watchdog();
    let mut mb = Mailbox::new(4096, 2).unwrap();
    let mut a = mb.sender().unwrap();
    let mut b = mb.sender().unwrap();
    a.send(b"a1").unwrap();
    assert_eq!(mb.recv().unwrap(), b"a1");
    let mut child = copy_of(&mb);
    b.send(b"b1").unwrap();
    b.send(b"b2").unwrap();
    assert_eq!(child.recv_timeout(Duration::from_secs(5)).unwrap(), b"b1");
    assert_eq!(mb.recv_timeout(Duration::from_secs(5)).unwrap(), b"b2");
    a.send(b"a2").unwrap();
    assert_eq!(child.recv_timeout(Duration::from_secs(5)).unwrap(), b"a2");
}

/// A record committed by a producer that died before setting its lane's pending bit
/// is found by the next liveness check and delivered, not reported disconnected.
#[test]
fn record_without_its_pending_bit_is_delivered() {
    let _serial = serial();
    let _w = watchdog();
    let name = unique("nobit");
    let mut mb = Mailbox::create(&name, 4096, 2).unwrap();
    let mut tx = mb.sender().unwrap();
    tx.send(b"committed").unwrap();
    let seg = Segment::open(&name, SegmentKind::Mailbox).unwrap();
    mailbox_control(&seg).unwrap().pending.value[0].fetch_and(!1, Ordering::SeqCst);
    drop(tx);
    let r = mb.recv_timeout(Duration::from_secs(5));
    assert_eq!(r.unwrap(), b"committed");
    assert!(matches!(mb.recv_timeout(Duration::from_secs(5)), Err(Error::Disconnected { .. })));
}

/// One lane with a malformed record is reported once, then skipped: other lanes'
/// messages are delivered.
#[test]
fn corrupt_lane_is_quarantined() {
    let _serial = serial();
    use std::io::{Seek, SeekFrom, Write};
    let _w = watchdog();
    let name = unique("corrupt");
    let mut mb = Mailbox::create(&name, 4096, 2).unwrap();
    let mut bad = mb.sender().unwrap();
    let mut good = mb.sender().unwrap();
    assert_eq!((bad.lane(), good.lane()), (Some(0), Some(1)));
    bad.send(b"x").unwrap();
    good.send(b"good").unwrap();
    let data0 = shmplane_shm::layout::mailbox_lanes_offset(2) + shmplane_shm::layout::DATA_ALIGN;
    let mut f = std::fs::OpenOptions::new().write(true).open(format!("/dev/shm/shmplane.{name}")).unwrap();
    f.seek(SeekFrom::Start(data0 as u64)).unwrap();
    f.write_all(&((1u64 << 63) | 0x7fff_0000u64).to_le_bytes()).unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(mb.recv_timeout(Duration::from_millis(50)).map_err(|e| format!("{e:?}")));
    }
    assert_eq!(got.iter().filter(|r| matches!(r, Err(e) if e.contains("Corrupt"))).count(), 1, "{got:?}");
    assert!(got.iter().any(|r| matches!(r, Ok(m) if m == b"good")), "{got:?}");
}

/// A quarantined lane's pending bit does not keep the readiness descriptor readable:
/// once the other lanes are drained, an empty receive leaves it quiet (a `select` loop
/// would otherwise spin on the poisoned lane; found in review).
#[test]
fn quarantined_lane_does_not_keep_the_descriptor_readable() {
    let _serial = serial();
    let _w = watchdog();
    let name = unique("qready");
    let mut mb = Mailbox::create(&name, 4096, 2).unwrap();
    let mut bad = mb.sender().unwrap();
    let mut good = mb.sender().unwrap();
    let fd = mb.readiness_fd().unwrap();
    let readable = || common::ready_within(fd, 0);
    assert!(!readable());
    bad.send(b"x").unwrap();
    good.send(b"good").unwrap();
    assert!(readable());
    poke_header(&name, 2, 4096, 0, 0, (1u64 << 63) | 0x7fff_0000u64);
    let mut got = Vec::new();
    while let Ok(r) = mb.try_recv().map_err(|e| format!("{e:?}")).or_else(|e| if e.contains("Corrupt") { Ok(b"corrupt".to_vec()) } else { Err(e) }) {
        got.push(r);
    }
    assert_eq!(got.len(), 2, "{got:?}");
    // The quarantined lane's producer goes on sending: its bit is set, and skipped.
    let _ = bad.try_send(b"y");
    assert!(matches!(mb.try_recv(), Err(Error::Empty)));
    assert!(!readable(), "readable with only a quarantined lane's bit set");
    good.send(b"more").unwrap();
    assert!(readable());
    assert_eq!(mb.try_recv().unwrap(), b"more");
    assert!(matches!(mb.try_recv(), Err(Error::Empty)));
    assert!(!readable());
}

/// A stray pending bit for a lane the mailbox does not have (corrupt shared memory)
/// reads as nothing: `pending` is false and a timed receive times out.
#[test]
fn stray_bit_beyond_the_lanes_is_ignored() {
    let _serial = serial();
    let _w = watchdog();
    let name = unique("stray");
    let mut mb = Mailbox::create(&name, 4096, 2).unwrap();
    let _tx = mb.sender().unwrap();
    let seg = Segment::open(&name, SegmentKind::Mailbox).unwrap();
    mailbox_control(&seg).unwrap().pending.value[0].fetch_or(1 << 5, Ordering::SeqCst);
    assert!(!mb.pending());
    assert!(!mb.probe().unwrap().any());
    assert!(matches!(mb.recv_timeout(Duration::from_millis(50)), Err(Error::Timeout)));
}

/// A producer waiting for room on its lane while the consumer is replaced (closed,
/// then a new one opens the mailbox) keeps waiting: the new consumer drains the lane.
#[test]
fn producer_outlives_a_replaced_consumer() {
    let _serial = serial();
    let _w = watchdog();
    let name = unique("replaced");
    let mut mb1 = Mailbox::create(&name, 4096, 2).unwrap();
    let mut tx = Sender::open(&name).unwrap();
    tx.send(b"first").unwrap();
    assert_eq!(mb1.recv().unwrap(), b"first");
    let mut n = 0;
    while tx.try_send(&[7u8; 500]).is_ok() {
        n += 1;
    }
    mb1.close();
    let mut mb2 = Mailbox::open(&name).unwrap();
    let r = tx.send_with(&[7u8; 500], Wait::timeout(Duration::from_millis(200)));
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    for _ in 0..n {
        assert_eq!(mb2.try_recv().unwrap(), [7u8; 500]);
    }
}

/// Write header word `word` at byte `pos` of lane `lane`'s data area.
fn poke_header(name: &str, lanes: usize, cap: usize, lane: usize, pos: usize, word: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let data = shmplane_shm::layout::mailbox_lanes_offset(lanes)
        + lane * shmplane_shm::layout::mailbox_lane_stride(cap)
        + shmplane_shm::layout::DATA_ALIGN
        + pos;
    let mut f = std::fs::OpenOptions::new().write(true).open(format!("/dev/shm/shmplane.{name}")).unwrap();
    f.seek(SeekFrom::Start(data as u64)).unwrap();
    f.write_all(&word.to_le_bytes()).unwrap();
}

/// A bad message (a sound record with an unknown tag) is reported once and consumed;
/// the lane goes on: the producer's next message arrives, and once it closes the
/// mailbox reports Disconnected (found in review: the lane was quarantined for good).
#[test]
fn bad_message_does_not_strand_its_lane() {
    let _serial = serial();
    let _w = watchdog();
    let name = unique("badmsg");
    let mut mb = Mailbox::create(&name, 4096, 2).unwrap();
    let mut tx = mb.sender().unwrap();
    tx.send(b"bad!").unwrap();
    tx.send(b"after").unwrap();
    poke_header(&name, 2, 4096, 0, 0, (1u64 << 63) | (0x55u64 << 32) | 4);
    assert!(matches!(mb.recv_timeout(Duration::from_secs(5)), Err(Error::Corrupt { .. })));
    assert_eq!(mb.recv_timeout(Duration::from_secs(5)).unwrap(), b"after");
    assert!(!mb.pending());
    drop(tx);
    assert!(matches!(mb.recv_timeout(Duration::from_secs(5)), Err(Error::Disconnected { .. })));
}

/// The process that created the consumer dies without closing while a forked copy of
/// it goes on consuming: producers must see a live consumer (found in review: role 0's
/// lease still named the dead creator, so they got PeerDead).
#[test]
fn consumer_copy_outliving_its_creator_is_alive() {
    let _serial = serial();
    let _w = watchdog();
    let name = unique("copylives");
    let mut pipe = [0i32; 2];
    // SAFETY: test: a pipe for the child to say it made the mailbox.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    // SAFETY: test; the child runs straight-line code and _exits (no destructors).
    let c = unsafe { libc::fork() };
    if c == 0 {
        // SAFETY: alarm is async-signal-safe: a watchdog for the child and the
        // grandchild it forks (alarms are not inherited: the grandchild sets its own).
        unsafe { libc::alarm(60) };
        let mut mb = Mailbox::create(&name, 4096, 2).unwrap();
        // SAFETY: as above.
        let g = unsafe { libc::fork() };
        if g == 0 {
            // SAFETY: as above.
            unsafe { libc::alarm(60) };
            // The copy that lives on (same description): drain until quiet.
            std::thread::sleep(Duration::from_millis(500));
            while mb.recv_timeout(Duration::from_millis(500)).is_ok() {}
            mb.close();
            // SAFETY: leave without running the test harness's destructors.
            unsafe { libc::_exit(0) };
        }
        // SAFETY: tell the parent, then die without closing anything.
        unsafe {
            libc::write(pipe[1], b"r".as_ptr().cast(), 1);
            libc::_exit(0)
        };
    }
    let mut b = [0u8; 1];
    // SAFETY: test: read the child's byte, reap the child.
    unsafe {
        libc::read(pipe[0], b.as_mut_ptr().cast(), 1);
        libc::waitpid(c, std::ptr::null_mut(), 0);
    }
    let mut tx = Sender::open(&name).unwrap();
    assert!(tx.check_receiver().is_ok());
    while tx.try_send(&[0u8; 500]).is_ok() {}
    // The grandchild drains the lane: the blocking send goes through.
    let r = tx.send_with(&[0u8; 500], Wait::timeout(Duration::from_secs(10)));
    assert!(r.is_ok(), "{r:?}");
    tx.close();
    // The grandchild stops after 500 ms of quiet and closes: the segment goes.
    let path = format!("/dev/shm/shmplane.{name}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::path::Path::new(&path).exists() {
        assert!(Instant::now() < deadline, "the consumer copy never closed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A mailbox sender's readiness descriptor: not readable while its lane is full,
/// readable once the consumer frees room; its lane doorbell goes with the segment.
#[test]
fn sender_readiness_on_its_lane() {
    let _serial = serial();
    let _w = watchdog();
    let name = unique("txready");
    let mut mb = Mailbox::create(&name, 4096, 2).unwrap();
    let _other = mb.sender().unwrap();
    let mut tx = mb.sender().unwrap();
    assert_eq!(tx.lane(), Some(1));
    while tx.try_send(&[0u8; 500]).is_ok() {}
    let fd = tx.readiness_fd(500).unwrap();
    let poll = |ms: i32| common::ready_within(fd, ms);
    assert!(!poll(0), "readable while the lane is full");
    assert!(std::path::Path::new(&format!("/dev/shm/shmplane.{name}@tx1")).exists());
    // Room is freed only once this thread sleeps in poll(2), so that the wake is tested.
    let me = common::gettid();
    let t = std::thread::spawn(move || {
        common::await_syscall(me, &[libc::SYS_poll, libc::SYS_ppoll]);
        mb.recv().unwrap();
        mb.recv().unwrap();
        mb
    });
    assert!(poll(10_000), "not woken when the consumer freed room");
    tx.try_send(&[0u8; 500]).unwrap();
    let mb = t.join().unwrap();
    drop((tx, _other, mb));
    assert!(!std::path::Path::new(&format!("/dev/shm/shmplane.{name}@tx1")).exists(), "lane doorbell left behind");
}

/// The consumer's close rings a sender waiting for room through its lane doorbell.
#[test]
fn consumer_close_rings_a_sender_waiting_through_its_doorbell() {
    let _serial = serial();
    let _w = watchdog();
    let name = unique("closering");
    let mut mb = Mailbox::create(&name, 4096, 2).unwrap();
    let mut tx = mb.sender().unwrap();
    tx.send(b"x").unwrap();
    assert_eq!(mb.recv().unwrap(), b"x");
    while tx.try_send(&[0u8; 500]).is_ok() {}
    let fd = tx.readiness_fd(500).unwrap();
    assert!(!common::ready_within(fd, 0));
    mb.close();
    assert!(common::ready_within(fd, 10_000), "the close did not ring");
    assert!(matches!(tx.check_receiver(), Err(Error::Disconnected { .. })));
}

/// Review (spacers, ABI 10): an 8-byte padding record at the end of a lane's ring has
/// the spacer's header word, and `data_ready` (so `has_queued`, `settle`,
/// `clear_pending`) now looks past it. A producer whose next record needs those 8
/// bytes (a record of the lane's largest size, which starts at offset 0 after that
/// padding) waits for the consumer to step over it, but the consumer cleared the
/// lane's pending bit ("nothing queued") and never looks at the lane again: both wait
/// until their timeouts, for ever with blocking calls.
///
/// The interleaving: message 1 (largest size) is read; before the consumer settles,
/// the producer tries message 2 (it publishes the end padding, sees the bit still set,
/// finds no room for the record); then the consumer settles (the producer of a real
/// program does this between the consumer's release and its settle: the Python
/// mailbox's `recv` settles only after decoding the object).
#[test]
fn a_largest_message_after_an_end_padding_is_not_stranded() {
    let _serial = serial();
    let _w = watchdog();
    let mut mb = Mailbox::new(4096, 2).unwrap();
    let mut tx = mb.sender().unwrap();
    let max = tx.max_message_len().unwrap();
    tx.send(&vec![1u8; max]).unwrap(); // offset 0 .. 4088: the producer is at 4088
    {
        let incoming = mb.begin(Wait::no_wait()).unwrap();
        let mut buf = vec![0u8; max];
        incoming.read_payload_into(buf.as_mut_slice().into(), Wait::forever()).unwrap();
        assert!(buf.iter().all(|&b| b == 1));
    }
    // No room for the record at offset 0 yet (the padding before it is unconsumed),
    // but the 8-byte padding at 4088 is published now.
    assert!(matches!(tx.try_send(&vec![2u8; max]), Err(Error::Full)));
    mb.settle();
    // A consumer that receives now must step over the padding (before ABI 10 the
    // padding kept the lane's bit set and `try_recv` skipped it).
    let t = std::thread::spawn(move || {
        let got = mb.recv_timeout(Duration::from_secs(3));
        (mb, got)
    });
    let sent = tx.send_timeout(&vec![2u8; max], Duration::from_secs(3));
    let (_mb, got) = t.join().unwrap();
    assert!(sent.is_ok(), "the producer waited for room the consumer never gave back: {sent:?}");
    assert_eq!(got.unwrap(), vec![2u8; max]);
}
