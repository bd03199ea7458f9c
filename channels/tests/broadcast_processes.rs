//! Broadcast between real processes: subscribers in children joining by name, the
//! publisher killed (SIGKILL) at random points of a stream of small and chunked
//! messages and replaced, subscribers killed at random points while the publisher
//! streams (lossless: it must not stay held back; lossy: nothing to wait for), and the
//! segment removed once everyone is gone.
//!
//! Children are this test binary run again (`child_entry`, `SHMPLANE_TEST_CHILD`), as in
//! `processes.rs`; each kills itself after 60 s and every wait in the parent has a
//! deadline, so a bug fails instead of hanging.

use shmplane::{Error, Publisher, Subscriber, Wait};
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
    format!("bcp-{test}-{}", std::process::id())
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
        // Take the publisher role over and publish forever from sequence `arg` (the
        // parent kills us).
        "publisher" => {
            let from: u64 = arg.parse().unwrap();
            let mut tx = Publisher::open(&name).unwrap();
            say("READY");
            for seq in from.. {
                tx.send(&message(1, seq)).unwrap();
            }
        }
        // Subscribe; receive and check forever, slowly now and then (killed by the
        // parent).
        "subscriber" => {
            let mut rx = Subscriber::open(&name).unwrap();
            say("READY");
            let mut next: Option<u64> = None;
            loop {
                match rx.recv() {
                    Ok(m) => {
                        let (_, seq) = check(&m);
                        if let Some(n) = next {
                            assert_eq!(seq, n, "subscriber child: lost or repeated");
                        }
                        next = Some(seq + 1);
                        if seq % 16 == 0 {
                            thread::sleep(Duration::from_millis(1));
                        }
                    }
                    Err(Error::Lagged { .. }) => next = None,
                    Err(e) => panic!("subscriber child: {e}"),
                }
            }
        }
        // Subscribe, then publish `arg` messages as a second publisher would not: take
        // nothing, just report readiness and wait (a subscriber that never reads).
        "idle-subscriber" => {
            let _rx = Subscriber::open(&name).unwrap();
            say("READY");
            loop {
                thread::sleep(Duration::from_secs(1));
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// SIGKILL the publisher at random moments of a stream of small and chunked messages,
/// over and over, replacing it each time: the subscriber gets an unbroken, intact
/// stream (at most one `Truncated` per kill, for the message it died in), learns of
/// each death (`PeerDead`) instead of waiting, and receives the replacement's stream.
#[test]
fn publisher_killed_mid_stream_and_replaced() {
    let _serial = serial();
    let name = unique("pubkill");
    let first = Publisher::create_with(&name, 4096, 4, false).unwrap();
    let mut rx = Subscriber::open(&name).unwrap();
    drop(first); // closed: children take the role over
    let mut next = 0u64;
    let rounds = kill_rounds(6);
    for round in 0..rounds {
        let mut publisher = Peer::spawn("publisher", &name, &next.to_string());
        publisher.expect_line("READY");
        let kill_after = next + 20 + (round * 53) % 90;
        let deadline = Instant::now() + WATCHDOG;
        let mut killed = false;
        let mut truncated = 0;
        loop {
            match rx.recv_with(Wait::until(deadline)) {
                Ok(m) => {
                    let (_, seq) = check(&m);
                    assert_eq!(seq, next, "round {round}: lost or repeated");
                    next += 1;
                }
                Err(Error::Truncated { .. }) => truncated += 1,
                Err(Error::PeerDead { .. }) if killed => break,
                Err(e) => panic!("round {round}: {e:?}"),
            }
            if !killed && next >= kill_after {
                publisher.kill();
                killed = true;
            }
        }
        assert!(truncated <= 1, "round {round}: {truncated} truncations");
    }
}

/// SIGKILL subscribers at random moments while the publisher streams and a subscriber
/// of this process reads everything: the publisher is held back by a dead subscriber
/// for at most a liveness check or two, never for good, and the live subscriber loses
/// nothing.
#[test]
fn subscribers_killed_mid_stream_do_not_hold_the_publisher() {
    let _serial = serial();
    for lossy in [false, true] {
        let name = unique(if lossy { "subkill-lossy" } else { "subkill" });
        // Lossy: a ring where the 20,000-byte messages are one record (a lossy
        // publisher refuses chunked ones longer than half its ring).
        let mut tx = Publisher::create_with(&name, if lossy { 1 << 16 } else { 1 << 14 }, 8, lossy).unwrap();
        let mut rx = tx.subscribe().unwrap();
        let reader = thread::spawn(move || {
            let mut next = 0u64;
            loop {
                match rx.recv_with(Wait::timeout(WATCHDOG)) {
                    Ok(m) if m == b"end" => return next,
                    Ok(m) => {
                        let (_, seq) = check(&m);
                        assert_eq!(seq, next, "the live subscriber lost or repeated");
                        next += 1;
                    }
                    Err(Error::Lagged { missed }) => next += missed,
                    Err(e) => panic!("live subscriber: {e:?}"),
                }
            }
        });
        let mut seq = 0u64;
        let rounds = kill_rounds(6);
        for round in 0..rounds {
            let role = if round % 2 == 0 { "subscriber" } else { "idle-subscriber" };
            let mut victim = Peer::spawn(role, &name, "");
            victim.expect_line("READY");
            // Killed at a random moment, while we stream (an idle subscriber holds a
            // lossless publisher back until then).
            let delay = Duration::from_millis(5 + (round * 37) % 60);
            let killer = thread::spawn(move || {
                thread::sleep(delay);
                victim.kill();
            });
            let until = seq + 30 + (round * 41) % 120;
            while seq < until {
                if let Err(e) = tx.send_timeout(&message(1, seq), WATCHDOG) {
                    panic!("round {round} ({role}, lossy={lossy}) seq {seq}: {e:?}; subscribers {}", tx.subscribers());
                }
                seq += 1;
            }
            killer.join().unwrap();
        }
        // After the last kill: the publisher goes on (the dead are dropped; held back
        // for good, a send would time out).
        for _ in 0..200 {
            tx.send_timeout(&message(1, seq), WATCHDOG).unwrap();
            seq += 1;
        }
        assert_eq!(tx.subscribers(), 1, "lossy={lossy}: only the live subscriber is left");
        tx.send_timeout(b"end", WATCHDOG).unwrap();
        let got = reader.join().unwrap();
        assert_eq!(got, seq, "lossy={lossy}");
    }
}

/// Closing the publisher and every subscriber removes the segment and its doorbells.
#[test]
fn segment_removed_after_everyone_closes() {
    let _serial = serial();
    let name = unique("gone");
    let path = format!("/dev/shm/shmplane.{name}");
    let mut tx = Publisher::create(&name, 4096, false).unwrap();
    let mut a = Subscriber::open(&name).unwrap();
    let _ = a.readiness_fd().unwrap();
    tx.send(b"x").unwrap();
    tx.close();
    assert!(std::path::Path::new(&path).exists());
    assert_eq!(a.recv().unwrap(), b"x");
    a.close();
    assert!(!std::path::Path::new(&path).exists(), "segment left behind");
    let bells: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("shmplane.{name}@")))
        .collect();
    assert!(bells.is_empty(), "doorbells left behind: {bells:?}");
}
