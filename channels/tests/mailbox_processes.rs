//! Mailbox between real processes: producers in children joining by name, a producer
//! killed (SIGKILL) at random points of a stream of small and chunked messages, the
//! consumer killed while a producer waits for room and replaced.
//!
//! Children are this test binary run again (`child_entry`, `SHMPLANE_TEST_CHILD`), as in
//! `processes.rs`; each kills itself after 60 s and every wait in the parent has a
//! deadline, so a bug fails instead of hanging.

mod common;

use common::{await_futex_sleep, gettid};
use shmplane::{Error, Mailbox, Sender, Wait};
use shmplane_shm::layout::{mailbox_lane_stride, mailbox_lanes_offset, RingControl};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const ROLE_ENV: &str = "SHMPLANE_TEST_CHILD";
const NAME_ENV: &str = "SHMPLANE_TEST_NAME";
const ARG_ENV: &str = "SHMPLANE_TEST_ARG";
const WATCHDOG: Duration = Duration::from_secs(20);

/// A child spawned by one test holds copies of every descriptor of this process until
/// it execs, so another test's close in that window would see its own role still held
/// (see `processes.rs`, `FORK_LOCK`): these tests run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

struct Peer {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Peer {
    fn spawn(role: &str, name: &str, arg: &str) -> Peer {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["child_entry", "--exact", "--nocapture", "--test-threads=1", "--quiet"])
            .env(ROLE_ENV, role)
            .env(NAME_ENV, name)
            .env(ARG_ENV, arg)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(at) = line.find("@@") {
                    if tx.send(line[at + 2..].to_owned()).is_err() {
                        break;
                    }
                }
            }
        });
        Peer { child, lines }
    }

    fn expect_line(&mut self, prefix: &str) -> String {
        match self.lines.recv_timeout(WATCHDOG) {
            Ok(line) if line.starts_with(prefix) => line[prefix.len()..].trim().to_owned(),
            other => panic!("child {} said {other:?}, expected {prefix:?}", self.child.id()),
        }
    }

    fn wait_success(&mut self) {
        let deadline = Instant::now() + WATCHDOG;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "child failed: {status}");
                return;
            }
            assert!(Instant::now() < deadline, "child {} did not exit", self.child.id());
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Kill points per role: `SHMPLANE_KILL_ROUNDS` (the fault matrix, `ci/faults.sh`,
/// sets 200), else `default` (the bounded sample every test run takes).
fn kill_rounds(default: u64) -> u64 {
    std::env::var("SHMPLANE_KILL_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn unique(test: &str) -> String {
    format!("mbp-{test}-{}", std::process::id())
}

fn say(what: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "@@{what}").unwrap();
    out.flush().unwrap();
}

/// Message `seq` of producer `who`: `[who, seq (8 bytes LE), pattern...]`, its length
/// varying from 9 bytes to several times a 4 KiB lane (chunked).
fn message(who: u8, seq: u64) -> Vec<u8> {
    let len = match seq % 7 {
        0 => 20_000,
        1 => 3_000,
        _ => 9 + (seq as usize * 37) % 200,
    };
    let mut m = vec![0u8; len];
    m[0] = who;
    m[1..9].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in m[9..].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_mul(31).wrapping_add(i as u8);
    }
    m
}

fn check(m: &[u8]) -> (u8, u64) {
    assert!(m.len() >= 9, "short message {}", m.len());
    let who = m[0];
    let seq = u64::from_le_bytes(m[1..9].try_into().unwrap());
    assert_eq!(m, message(who, seq), "message {seq} of producer {who} is damaged");
    (who, seq)
}

/// In a child: play the role named in the environment.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE_ENV) else { return };
    let name = std::env::var(NAME_ENV).unwrap();
    let arg = std::env::var(ARG_ENV).unwrap_or_default();
    thread::spawn(|| {
        thread::sleep(Duration::from_secs(60));
        std::process::exit(3);
    });
    match role.as_str() {
        // Send `count` messages as producer `who`, then close.
        "producer" => {
            let (who, count) = arg.split_once(',').unwrap();
            let (who, count): (u8, u64) = (who.parse().unwrap(), count.parse().unwrap());
            let mut tx = Sender::open(&name).unwrap();
            say("READY");
            for seq in 0..count {
                tx.send(&message(who, seq)).unwrap();
            }
            tx.close();
            say("DONE");
        }
        // Send forever (the parent kills us).
        "streamer" => {
            let who: u8 = arg.parse().unwrap();
            let mut tx = Sender::open(&name).unwrap();
            say("READY");
            for seq in 0.. {
                tx.send(&message(who, seq)).unwrap();
            }
        }
        // Be the consumer; receive `arg` messages, then wait to be killed.
        "consumer" => {
            let mut mb = Mailbox::create(&name, 4096, 4).unwrap();
            say("READY");
            let n: usize = arg.parse().unwrap();
            for _ in 0..n {
                mb.recv().unwrap();
            }
            say("TOOK");
            loop {
                thread::sleep(Duration::from_secs(1));
            }
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn producers_in_processes_join_by_name() {
    let _serial = serial();
    let name = unique("join");
    let mut mb = Mailbox::create(&name, 4096, 8).unwrap();
    let mut peers: Vec<Peer> = (0..4).map(|w| Peer::spawn("producer", &name, &format!("{w},300"))).collect();
    let mut next = [0u64; 4];
    let deadline = Instant::now() + WATCHDOG;
    for _ in 0..4 * 300 {
        let m = mb.recv_with(Wait::until(deadline)).unwrap();
        let (who, seq) = check(&m);
        assert_eq!(seq, next[who as usize], "producer {who}: out of order or lost");
        next[who as usize] += 1;
    }
    for p in &mut peers {
        p.wait_success();
    }
    assert!(matches!(mb.recv_with(Wait::until(deadline)), Err(Error::Disconnected { .. })));
    assert_eq!(next, [300; 4]);
}

/// SIGKILL a producer at random moments of a stream of small and chunked messages,
/// over and over, while another producer streams steadily: from each killed producer
/// the consumer gets an unbroken prefix (and at most one `Truncated`, for the message
/// it died in), nothing damaged, and it never waits long; the steady producer loses
/// nothing; a replacement producer takes the dead one's lane.
#[test]
fn producer_killed_mid_stream_strands_nothing() {
    let _serial = serial();
    let name = unique("kill");
    let mut mb = Mailbox::create(&name, 4096, 4).unwrap();
    let mut steady = Peer::spawn("producer", &name, "9,3000");
    steady.expect_line("READY");
    let mut steady_next = 0u64;
    let mut victims = 0;
    let rounds = kill_rounds(6);
    for round in 0..rounds {
        let who = 10 + (round % 200) as u8; // 9 is the steady producer
        let mut victim = Peer::spawn("streamer", &name, &who.to_string());
        victim.expect_line("READY");
        let mut next = 0u64;
        let mut truncated = 0;
        let kill_after = 20 + (round * 53) % 90;
        let deadline = Instant::now() + WATCHDOG;
        // Receive until the victim has sent `kill_after`, then kill it and drain.
        let mut killed = false;
        loop {
            let timeout = if killed { Duration::from_millis(300) } else { WATCHDOG };
            match mb.recv_with(Wait::timeout(timeout)) {
                Ok(m) => {
                    let (w, seq) = check(&m);
                    if w == 9 {
                        assert_eq!(seq, steady_next);
                        steady_next += 1;
                    } else {
                        assert_eq!(w, who);
                        assert_eq!(seq, next, "victim {who}: lost or repeated");
                        next += 1;
                    }
                }
                Err(Error::Truncated { .. }) => truncated += 1,
                // Drained (the steady producer may have finished too).
                Err(Error::Timeout | Error::Disconnected { .. }) if killed => break,
                Err(e) => panic!("round {round}: {e:?}"),
            }
            if !killed && next >= kill_after {
                victim.kill();
                killed = true;
                victims += 1;
            }
            assert!(Instant::now() < deadline, "round {round}: the consumer was blocked");
        }
        assert!(truncated <= 1, "round {round}: {truncated} truncations");
    }
    assert_eq!(victims, rounds);
    // The steady producer's messages all arrive, in order.
    let deadline = Instant::now() + WATCHDOG;
    while steady_next < 3000 {
        let m = mb.recv_with(Wait::until(deadline)).unwrap();
        let (w, seq) = check(&m);
        assert_eq!((w, seq), (9, steady_next));
        steady_next += 1;
    }
    steady.wait_success();
    // Every producer is gone (closed or killed): disconnected, not blocked.
    let r = mb.recv_with(Wait::timeout(WATCHDOG));
    assert!(matches!(r, Err(Error::Disconnected { .. })), "{r:?}");
}

/// The consumer dies while a producer waits for room: the producer's send fails with
/// `PeerDead` within a slice or two; a new consumer opening the mailbox gets what was
/// queued, in order, and the producer goes on.
#[test]
fn consumer_killed_then_replaced() {
    let _serial = serial();
    for round in 0..kill_rounds(1) {
        consumer_killed_then_replaced_round(round);
    }
}

fn consumer_killed_then_replaced_round(round: u64) {
    let name = unique(&format!("consumer{round}"));
    let mut consumer = Peer::spawn("consumer", &name, "1");
    consumer.expect_line("READY");
    let mut tx = Sender::open(&name).unwrap();
    tx.send(&message(1, 0)).unwrap();
    consumer.expect_line("TOOK");
    let mut seq = 1;
    // Fill the lane, then kill the consumer while we wait for room.
    while tx.try_send(&message(1, seq)).is_ok() {
        seq += 1;
    }
    // Kill it once this thread sleeps waiting for room (in futex(2) on its lane's
    // space event: the "consumer" child's mailbox has 4 lanes of 4096 bytes).
    let lane = tx.lane().unwrap();
    let space_ready = mailbox_lanes_offset(4)
        + lane * mailbox_lane_stride(4096)
        + std::mem::offset_of!(RingControl, space_ready.value.epoch);
    let (me, path) = (gettid(), format!("/dev/shm/shmplane.{name}"));
    let killer = thread::spawn(move || {
        await_futex_sleep(me, &path, space_ready);
        consumer.kill();
    });
    let r = tx.send_with(&message(1, seq), Wait::timeout(WATCHDOG));
    assert!(matches!(r, Err(Error::PeerDead { .. })), "{r:?}");
    killer.join().unwrap();
    // A new consumer takes over and gets the queued messages, in order; the one the
    // producer was part-way through (if it had begun) is reported truncated, once.
    let mut mb = Mailbox::open(&name).unwrap();
    for want in 1..seq {
        let m = mb.recv_with(Wait::timeout(WATCHDOG)).unwrap();
        assert_eq!(check(&m), (1, want));
    }
    tx.send(b"after").unwrap();
    match mb.recv_with(Wait::timeout(WATCHDOG)) {
        Err(Error::Truncated { .. }) => assert_eq!(mb.recv_with(Wait::timeout(WATCHDOG)).unwrap(), b"after"),
        Ok(m) => assert_eq!(m, b"after"),
        Err(e) => panic!("{e:?}"),
    }
}

/// Closing the consumer and every producer removes the segment.
#[test]
fn segment_removed_after_everyone_closes() {
    let _serial = serial();
    let name = unique("gone");
    let path = format!("/dev/shm/shmplane.{name}");
    let mut mb = Mailbox::create(&name, 4096, 2).unwrap();
    let mut tx = Sender::open(&name).unwrap();
    tx.send(b"x").unwrap();
    assert_eq!(mb.recv().unwrap(), b"x");
    mb.close();
    assert!(std::path::Path::new(&path).exists(), "removed while a producer holds it");
    tx.close();
    assert!(!std::path::Path::new(&path).exists(), "left behind");
}

