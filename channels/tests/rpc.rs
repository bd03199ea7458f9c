//! RPC: calls of every kind and size, streams, errors, at-most-once under retries and
//! late replies, zero-copy loans, and failures with real processes (a server killed
//! with SIGKILL and replaced, a client killed and its slot reused).
//!
//! Children are this test binary run again (`child_entry`, `SHMPLANE_TEST_CHILD`); each
//! exits after 60 s and every wait in the parent has a deadline, so a bug fails
//! instead of hanging.

mod common;

use shmplane::frame::{ArrayMeta, Order, Outgoing};
use shmplane::rpc::{flags, Envelope};
use shmplane::{Error, Frame, RpcClient, RpcServer, Wait, WaitPolicy};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const ROLE_ENV: &str = "SHMPLANE_TEST_CHILD";
const NAME_ENV: &str = "SHMPLANE_TEST_NAME";
const WATCHDOG: Duration = Duration::from_secs(20);

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn unique(tag: &str) -> String {
    format!("rpc-test-{tag}-{}-{:x}", std::process::id(), Instant::now().elapsed().as_nanos() ^ rand_ish())
}

fn rand_ish() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() & 0xFFFF_FFFF
}

/// `n` clients of server `name`.
fn connect_clients(name: &str, n: usize) -> Vec<RpcClient> {
    (0..n).map(|_| RpcClient::connect(name, Some(WATCHDOG)).unwrap()).collect()
}

/// The next reply part of `client`'s current call, as bytes.
fn next_reply(client: &mut RpcClient) -> Vec<u8> {
    match client.next_part(Wait::timeout(WATCHDOG)) {
        Ok(Some(Frame::Bytes(b))) => b,
        other => panic!("a bytes reply expected, got {other:?}"),
    }
}

/// Serve `calls` calls in a thread, replying with `f(request)`.
fn serve_n(mut server: RpcServer, calls: usize, f: fn(&[u8]) -> Vec<u8>) -> thread::JoinHandle<RpcServer> {
    thread::spawn(move || {
        for _ in 0..calls {
            let (call, req) = server.recv().unwrap();
            assert!(server.reply(call, &f(&req)).unwrap());
        }
        server
    })
}

#[test]
fn calls_and_replies_of_any_size() {
    let name = unique("sizes");
    let server = RpcServer::create_with(&name, 4096, 4).unwrap();
    let mut client = RpcClient::connect(&name, Some(WATCHDOG)).unwrap();
    let t = serve_n(server, 4, |r| r.iter().rev().copied().collect());
    assert_eq!(client.call(b"abc").unwrap(), b"cba");
    assert_eq!(client.call(b"").unwrap(), b"");
    // Larger than both rings (4 KiB lanes, 64 KiB reply channel): chunked each way.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let got = client.call(&big).unwrap();
    assert_eq!(got.len(), big.len());
    assert!(got.iter().rev().eq(big.iter()));
    assert_eq!(client.call(&[7; 4070]).unwrap(), vec![7; 4070]);
    t.join().unwrap();
}

#[test]
fn calls_into_kept_buffers_of_any_size_and_errors() {
    let name = unique("into");
    let mut server = RpcServer::create_with(&name, 4096, 4).unwrap();
    let mut client = RpcClient::connect(&name, Some(WATCHDOG)).unwrap();
    let t = thread::spawn(move || {
        let mut req = vec![9u8; 10]; // cleared by every recv_into
        let mut slot_calls = 0;
        for _ in 0..5 {
            let call = server.recv_into(&mut req, Wait::timeout(WATCHDOG)).unwrap();
            if req == b"fail" {
                server.reply_error(call, "ValueError", "refused", "").unwrap();
            } else {
                let rev: Vec<u8> = req.iter().rev().copied().collect();
                assert!(server.reply(call, &rev).unwrap());
            }
            slot_calls = server.slot_calls();
        }
        assert!(slot_calls >= 3, "small calls go through the call slot");
        assert!(matches!(server.recv_into(&mut req, Wait::timeout(Duration::from_millis(50))), Err(Error::Timeout)));
        assert!(req.is_empty());
        server
    });
    let mut reply = vec![1u8; 3];
    client.call_into(b"abc", &mut reply, Wait::timeout(WATCHDOG)).unwrap();
    assert_eq!(reply, b"cba");
    client.call_into(b"", &mut reply, Wait::timeout(WATCHDOG)).unwrap();
    assert_eq!(reply, b"");
    // Through the rings, chunked each way (larger than the 4 KiB lane).
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    client.call_into(&big, &mut reply, Wait::timeout(WATCHDOG)).unwrap();
    assert!(reply.iter().rev().eq(big.iter()));
    match client.call_into(b"fail", &mut reply, Wait::timeout(WATCHDOG)) {
        Err(Error::Remote { kind, message, .. }) => assert_eq!((kind.as_str(), message.as_str()), ("ValueError", "refused")),
        other => panic!("the handler's error expected, got {other:?}"),
    }
    assert!(reply.is_empty());
    // 48 bytes: one line each way; the kept buffer keeps its capacity.
    let cap = reply.capacity();
    client.call_into(&[5; 48], &mut reply, Wait::timeout(WATCHDOG)).unwrap();
    assert_eq!(reply, [5; 48]);
    assert_eq!(reply.capacity(), cap);
    t.join().unwrap();
}

#[test]
fn arrays_and_frames_travel_with_their_envelope() {
    let name = unique("frames");
    let mut server = RpcServer::create(&name, 2).unwrap();
    let mut client = RpcClient::connect(&name, Some(WATCHDOG)).unwrap();
    let t = thread::spawn(move || {
        let (call, frame) = server.recv_frame(Wait::forever()).unwrap();
        let Frame::Array(a) = frame else { panic!("not an array: {frame:?}") };
        let v: Vec<f64> = a.to_vec().unwrap();
        let doubled: Vec<f64> = v.iter().map(|x| x * 2.0).collect();
        let meta = ArrayMeta::new("<f8", &[doubled.len()], Order::C).unwrap();
        server.reply_with(call, Outgoing::array(&meta, bytemuck::cast_slice(&doubled)).unwrap(), true, Wait::forever()).unwrap();
        server
    });
    let data: Vec<f64> = (0..1_000_000).map(f64::from).collect();
    let meta = ArrayMeta::new("<f8", &[data.len()], Order::C).unwrap();
    let reply = client.call_with(Outgoing::array(&meta, bytemuck::cast_slice(&data)).unwrap(), false, Wait::timeout(WATCHDOG)).unwrap();
    let Frame::Array(a) = reply else { panic!("not an array") };
    let v: Vec<f64> = a.to_vec().unwrap();
    assert_eq!(v.len(), data.len());
    assert!(v.iter().zip(&data).all(|(a, b)| *a == b * 2.0));
    t.join().unwrap();
}

#[test]
fn streams_and_errors() {
    let name = unique("stream");
    let mut server = RpcServer::create(&name, 2).unwrap();
    let mut client = RpcClient::connect(&name, Some(WATCHDOG)).unwrap();
    let t = thread::spawn(move || {
        let (call, _) = server.recv().unwrap();
        for i in 0..5u8 {
            server.reply_with(call, Outgoing::bytes(&[i]), false, Wait::forever()).unwrap();
        }
        server.reply_with(call, Outgoing::bytes(b"end"), true, Wait::forever()).unwrap();
        assert!(server.reply(call, b"again").is_err(), "a second final reply is refused");
        let (call, _) = server.recv().unwrap();
        server.reply_error(call, "ValueError", "bad input", "Traceback: ...").unwrap();
        let (call, req) = server.recv().unwrap();
        server.reply(call, &req).unwrap();
        server
    });
    let first = client.call_with(Outgoing::bytes(b"go"), false, Wait::timeout(WATCHDOG)).unwrap();
    let mut parts = vec![first];
    while let Some(p) = client.next_part(Wait::timeout(WATCHDOG)).unwrap() {
        parts.push(p);
    }
    let want: Vec<Frame> = (0..5u8).map(|i| Frame::Bytes(vec![i])).chain([Frame::Bytes(b"end".to_vec())]).collect();
    assert_eq!(parts, want);
    match client.call(b"boom") {
        Err(Error::Remote { kind, message, traceback }) => {
            assert_eq!((kind.as_str(), message.as_str(), traceback.as_str()), ("ValueError", "bad input", "Traceback: ..."));
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
    // The server keeps serving after an error.
    assert_eq!(client.call(b"still here").unwrap(), b"still here");
    t.join().unwrap();
}

#[test]
fn many_clients_each_get_their_own_replies() {
    let name = unique("many");
    let server = RpcServer::create_with(&name, 4096, 8).unwrap();
    let clients = 6;
    let per = 500;
    let t = serve_n(server, clients * per, |r| r.to_vec());
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let name = name.clone();
            thread::spawn(move || {
                let mut client = RpcClient::connect(&name, Some(WATCHDOG)).unwrap();
                for i in 0..per {
                    let msg = format!("client {c} call {i}").repeat(1 + i % 50);
                    assert_eq!(client.call(msg.as_bytes()).unwrap(), msg.as_bytes());
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let server = t.join().unwrap();
    assert_eq!(server.duplicates(), 0);
}

#[test]
fn a_retry_never_runs_a_call_twice() {
    // Small requests go through the lane's call slot, larger ones through its ring.
    retry_never_runs_a_call_twice(0);
    retry_never_runs_a_call_twice(300);
}

fn retry_never_runs_a_call_twice(pad: usize) {
    let name = unique(&format!("retry{pad}"));
    let mut server = RpcServer::create(&name, 2).unwrap();
    let mut client = RpcClient::connect(&name, Some(WATCHDOG)).unwrap();
    let req = move |s: &str| [s.as_bytes(), &vec![b'.'; pad]].concat();
    let slotted = pad == 0;
    // 1. A retry of a call still running: the server sees the call once; the reply
    //    answers the retry.
    assert!(matches!(client.call_timeout(&req("slow"), Duration::from_millis(20)), Err(Error::Timeout)));
    let (call, got) = server.recv().unwrap();
    assert_eq!(got, req("slow"));
    assert_eq!(server.slot_calls(), u64::from(slotted));
    let retried = thread::scope(|s| {
        let h = s.spawn(|| client.retry(&req("slow"), Some(WATCHDOG)));
        // Through the ring, the retry arrives and is dropped as a duplicate of the
        // running call; through the slot, the client waits for the call it posted.
        // Either way nothing reaches the application.
        let deadline = Instant::now() + WATCHDOG;
        let mut looks = 0;
        while if slotted { looks < 5 } else { server.duplicates() == 0 } {
            match server.begin(&mut Wait::timeout(Duration::from_millis(10))) {
                Err(Error::Timeout) => looks += 1,
                other => panic!("a retry reached the application: {:?}", other.map(|(c, _)| c)),
            }
            assert!(Instant::now() < deadline, "the retry never arrived");
        }
        server.reply(call, b"slow done").unwrap();
        h.join().unwrap()
    });
    assert_eq!(retried.unwrap(), b"slow done");
    // 2. A retry of a call answered after the client gave up: the saved reply (in the
    //    client's channel, or its call slot) answers it, and the server does not run
    //    it again.
    assert!(matches!(client.call_timeout(&req("late"), Duration::from_millis(20)), Err(Error::Timeout)));
    let (call, _) = server.recv().unwrap();
    server.reply(call, b"late done").unwrap();
    assert_eq!(client.retry(&req("late"), Some(WATCHDOG)).unwrap(), b"late done");
    assert!(matches!(server.begin(&mut Wait::timeout(Duration::from_millis(50))), Err(Error::Timeout)));
    assert_eq!(server.duplicates(), if slotted { 0 } else { 2 });
    assert_eq!(server.slot_calls(), if slotted { 2 } else { 0 });
    // 3. A late reply to a call that timed out is never the answer to the next call.
    assert!(matches!(client.call_timeout(&req("first"), Duration::from_millis(20)), Err(Error::Timeout)));
    let (c1, _) = server.recv().unwrap();
    server.reply(c1, b"reply to first").unwrap();
    let second = req("second");
    let t = thread::spawn(move || {
        let (c2, got) = server.recv().unwrap();
        assert_eq!(got, req("second"));
        // The client's first call is answered already: a reply to it again is refused.
        assert!(server.reply(c1, b"again").is_err());
        server.reply(c2, b"reply to second").unwrap();
        server
    });
    assert_eq!(client.call(&second).unwrap(), b"reply to second");
    let server = t.join().unwrap();
    assert_eq!(server.slot_calls(), if slotted { 4 } else { 0 });
}

#[test]
fn a_reply_lost_part_way_is_sent_again_not_recomputed() {
    let name = unique("resend");
    let mut server = RpcServer::create(&name, 2).unwrap();
    // A 4 KiB reply channel: a 10 kB reply travels in chunks, and is kept for a resend.
    let mut client = RpcClient::connect_with(&name, 4096, Wait::timeout(WATCHDOG)).unwrap();
    let reply: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
    let mut w = Wait::timeout(WATCHDOG);
    client.send_request(Outgoing::bytes(b"compute"), false, &mut w).unwrap();
    let (call, _) = server.recv().unwrap();
    let want = reply.clone();
    let t = thread::spawn(move || {
        // Blocks until the client's next receive skips the rest of the chunks.
        server.reply(call, &want).unwrap();
        // The retry (flag RESEND) is answered from the saved copy, never run again.
        while server.duplicates() == 0 {
            if let Ok((c, _)) = server.begin(&mut Wait::timeout(Duration::from_millis(10))) {
                panic!("retry reached the application: {c:?}");
            }
        }
        server
    });
    // The client begins the reply and loses it (as an interrupted receive would).
    let (env, incoming) = client.begin_reply(&mut w).unwrap();
    assert_eq!(env.flags, 0);
    drop(incoming);
    client.end_reply(env, false);
    assert_eq!(client.retry(b"compute", Some(WATCHDOG)).unwrap(), reply);
    let mut server = t.join().unwrap();
    // A one-record reply is not kept (it is taken whole or not at all): a client that
    // drops one unread is told it is lost, and the call is still not run again.
    client.send_request(Outgoing::bytes(b"small"), false, &mut w).unwrap();
    let (call, _) = server.recv().unwrap();
    server.reply(call, b"tiny").unwrap();
    let (env, incoming) = client.begin_reply(&mut w).unwrap();
    drop(incoming);
    client.end_reply(env, false);
    let t = thread::spawn(move || {
        while server.duplicates() == 1 {
            if let Ok((c, _)) = server.begin(&mut Wait::timeout(Duration::from_millis(10))) {
                panic!("retry reached the application: {c:?}");
            }
        }
    });
    match client.retry(b"small", Some(WATCHDOG)) {
        Err(Error::Remote { kind, .. }) => assert_eq!(kind, "ReplyLost"),
        other => panic!("expected ReplyLost, got {other:?}"),
    }
    t.join().unwrap();
}

#[test]
fn reply_of_a_large_lost_reply_is_an_error_not_a_rerun() {
    let name = unique("lost");
    let mut server = RpcServer::create(&name, 2).unwrap();
    let mut client = RpcClient::connect(&name, Some(WATCHDOG)).unwrap();
    let mut w = Wait::timeout(WATCHDOG);
    client.send_request(Outgoing::bytes(b"big"), false, &mut w).unwrap();
    let (call, _) = server.recv().unwrap();
    let t = thread::spawn(move || {
        // Blocks until the client's next receive skips the rest of the chunks.
        server.reply(call, &vec![1u8; 1 << 20]).unwrap();
        while server.duplicates() == 0 {
            let _ = server.begin(&mut Wait::timeout(Duration::from_millis(10))).map(|(c, _)| panic!("rerun: {c:?}"));
        }
        server
    });
    let (env, incoming) = client.begin_reply(&mut w).unwrap();
    drop(incoming); // the rest of its chunks are skipped by the next receive
    client.end_reply(env, false);
    match client.retry(b"big", Some(WATCHDOG)) {
        Err(Error::Remote { kind, .. }) => assert_eq!(kind, "ReplyLost"),
        other => panic!("expected ReplyLost, got {:?}", other.map(|v| v.len())),
    }
    t.join().unwrap();
}

#[test]
fn zero_copy_request_and_reply_loans() {
    let name = unique("loan");
    let mut server = RpcServer::create(&name, 2).unwrap();
    let mut client = RpcClient::connect(&name, Some(WATCHDOG)).unwrap();
    let mut loan = client.loan_request(8, Wait::forever()).unwrap();
    loan.as_mut_slice().copy_from_slice(&42u64.to_le_bytes());
    loan.commit();
    let mut w = Wait::timeout(WATCHDOG);
    let (call, incoming) = server.begin(&mut w).unwrap();
    let mut buf = [0u8; 8];
    incoming.read_into(vec![buf.as_mut_slice().into()], Wait::forever()).unwrap();
    let mut reply = server.loan_reply(call, 8, Wait::forever()).unwrap().unwrap();
    reply.as_mut_slice().copy_from_slice(&(u64::from_le_bytes(buf) + 1).to_le_bytes());
    reply.commit();
    let (env, incoming) = client.begin_reply(&mut w).unwrap();
    assert_eq!(env, Envelope { seq: 1, client: client_id_of(&env), flags: 0 });
    let mut out = [0u8; 8];
    incoming.read_into(vec![out.as_mut_slice().into()], Wait::forever()).unwrap();
    assert_eq!(u64::from_le_bytes(out), 43);
    assert_eq!(env.flags & flags::MORE, 0);
}

fn client_id_of(env: &Envelope) -> u32 {
    env.client
}

#[test]
fn closing_the_server_fails_waiting_calls() {
    let name = unique("close");
    let mut server = RpcServer::create(&name, 2).unwrap();
    let mut client = RpcClient::connect(&name, Some(WATCHDOG)).unwrap();
    let t = thread::spawn(move || {
        let _ = server.recv().unwrap();
        server.close();
    });
    match client.call_timeout(b"x", WATCHDOG) {
        Err(Error::Disconnected { role: "server" }) => {}
        other => panic!("expected the server's close, got {other:?}"),
    }
    t.join().unwrap();
    assert!(!client.is_connected());
}

#[test]
fn connect_waits_for_a_starting_server_and_refuses_wrong_kinds() {
    let name = unique("connect");
    assert!(matches!(RpcClient::connect(&name, Some(Duration::from_millis(30))), Err(Error::NotFound { .. })));
    let n2 = name.clone();
    // The server starts once the client is waiting for it (asleep between its looks).
    let me = common::gettid();
    let t = thread::spawn(move || {
        common::await_syscall(me, &[libc::SYS_nanosleep, libc::SYS_clock_nanosleep]);
        let server = RpcServer::create(&n2, 2).unwrap();
        serve_n(server, 1, |r| r.to_vec()).join().unwrap()
    });
    let mut client = RpcClient::connect(&name, Some(WATCHDOG)).unwrap();
    assert_eq!(client.call(b"hi").unwrap(), b"hi");
    t.join().unwrap();
    let _rx = shmplane::Receiver::create(&format!("{name}-chan"), 4096).unwrap();
    assert!(matches!(RpcClient::connect(&format!("{name}-chan"), None), Err(Error::WrongKind { .. })));
    // A second server of a live name is refused.
    let _s = RpcServer::create(&format!("{name}-b"), 1).unwrap();
    assert!(matches!(RpcServer::create(&format!("{name}-b"), 1), Err(Error::AlreadyExists { .. })));
}

// ------------------------------------------------------------------ real processes

struct Peer {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Peer {
    fn spawn(role: &str, name: &str) -> Peer {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["child_entry", "--exact", "--nocapture", "--test-threads=1", "--quiet"])
            .env(ROLE_ENV, role)
            .env(NAME_ENV, name)
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

    fn expect(&mut self, what: &str) {
        match self.lines.recv_timeout(WATCHDOG) {
            Ok(line) if line.starts_with(what) => {}
            other => panic!("child {} said {other:?}, expected {what:?}", self.child.id()),
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

fn say(what: &str) {
    println!("@@{what}");
}

#[test]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE_ENV) else { return };
    let name = std::env::var(NAME_ENV).unwrap();
    thread::spawn(|| {
        thread::sleep(Duration::from_secs(60));
        std::process::exit(3);
    });
    match role.as_str() {
        // Serve echo; a call "hang" is never answered (the parent kills us).
        "server" => {
            let mut server = RpcServer::create(&name, 2).unwrap();
            say("READY");
            loop {
                let (call, req) = server.recv().unwrap();
                if req == b"hang" {
                    say("HANGING");
                    continue;
                }
                server.reply(call, &req).unwrap();
            }
        }
        // Connect, call once, then wait forever in a call the server holds.
        "client" => {
            let mut client = RpcClient::connect(&name, Some(WATCHDOG)).unwrap();
            assert_eq!(client.call(b"hello").unwrap(), b"hello");
            say("READY");
            let _ = client.call(b"held");
            thread::sleep(Duration::from_secs(60));
        }
        // Serve echo, checking every request's pattern (the fault matrix's server).
        "checked-server" => {
            let mut server = RpcServer::create(&name, 4).unwrap();
            say("READY");
            loop {
                match server.recv_frame(Wait::forever()) {
                    Ok((call, Frame::Bytes(req))) => {
                        check_pattern(&req);
                        let _ = server.reply(call, &req);
                    }
                    Ok((_, other)) => panic!("unexpected request {other:?}"),
                    // A client killed part-way through its request.
                    Err(Error::Truncated { .. }) => {}
                    Err(e) => panic!("checked-server: {e}"),
                }
            }
        }
        // Send one request of 100 MB (the parent stops us part-way with SIGSTOP).
        "huge-request" => {
            let mut client = RpcClient::connect(&name, Some(WATCHDOG)).unwrap();
            say("READY");
            let _ = client.call_timeout(&vec![9u8; 100 << 20], WATCHDOG);
            thread::sleep(Duration::from_secs(60));
        }
        // Call forever with requests of every size, checking each reply (killed by the
        // parent at a random point).
        "calling-client" => {
            let mut client = RpcClient::connect(&name, Some(WATCHDOG)).unwrap();
            say("READY");
            for i in 0u64.. {
                let req = pattern(i, size_for(i));
                let reply = client.call(&req).unwrap();
                assert!(reply == req, "calling-client: a wrong reply to call {i}");
            }
        }
        other => panic!("unknown child role {other}"),
    }
}

/// A request whose bytes say what they must be: seq, then a pattern of that seq.
fn pattern(seq: u64, len: usize) -> Vec<u8> {
    let mut v = seq.to_le_bytes().to_vec();
    v.extend((0..len).map(|i| (seq as usize * 31 + i) as u8));
    v
}

fn check_pattern(req: &[u8]) {
    let seq = u64::from_le_bytes(req[..8].try_into().unwrap());
    assert!(req == pattern(seq, req.len() - 8).as_slice(), "a corrupt request {seq}");
}

/// Small calls mostly, now and then one of several records each way.
fn size_for(i: u64) -> usize {
    match i % 16 {
        0 => 300_000,
        5 => 70_000,
        _ => (i as usize * 37) % 2000,
    }
}

/// Kill points per role: `SHMPLANE_KILL_ROUNDS` (the fault matrix, `ci/faults.sh`,
/// runs 200), else `default` (the normal test run's sample).
fn kill_rounds(default: usize) -> usize {
    std::env::var("SHMPLANE_KILL_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A small pseudo-random delay, different per round.
fn jitter(round: usize, max_ms: u64) -> Duration {
    let x = (round as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
    Duration::from_micros(x % (max_ms * 1000))
}

#[test]
fn servers_killed_at_random_points_fail_calls_and_are_replaced() {
    let _g = serial();
    let name = unique("kill-servers");
    let mut client: Option<RpcClient> = None;
    let mut calls_ok = 0u64;
    for round in 0..kill_rounds(6) {
        let mut server = Peer::spawn("checked-server", &name);
        server.expect("READY");
        let mut c = client.take().unwrap_or_else(|| RpcClient::connect(&name, Some(WATCHDOG)).unwrap());
        if round > 0 {
            // The stale client learns its server died; a new one serves.
            assert!(matches!(c.call_timeout(b"stale?", WATCHDOG), Err(Error::PeerDead { role: "server", .. })));
            c = RpcClient::connect(&name, Some(WATCHDOG)).unwrap();
        }
        let stop_at = Instant::now() + jitter(round, 40);
        let t = thread::spawn(move || {
            let mut ok = 0u64;
            for i in (round as u64 * 1_000_000).. {
                let req = pattern(i, size_for(i));
                match c.call_timeout(&req, WATCHDOG) {
                    Ok(reply) => {
                        assert!(reply == req, "round {round}: a wrong reply");
                        ok += 1;
                    }
                    // The kill landed during this call (or its reply, cut part-way).
                    Err(Error::PeerDead { role: "server", .. } | Error::Truncated { .. }) => return (c, ok),
                    Err(e) => panic!("round {round}: {e}"),
                }
            }
            unreachable!()
        });
        while Instant::now() < stop_at {
            thread::sleep(Duration::from_millis(1));
        }
        server.kill();
        let (c, ok) = t.join().unwrap();
        calls_ok += ok;
        client = Some(c);
    }
    assert!(calls_ok > 0);
}

#[test]
fn clients_killed_at_random_points_strand_nothing() {
    let _g = serial();
    let name = unique("kill-clients");
    // One slot: each new client takes over the slot of the one killed before it.
    let mut server = RpcServer::create(&name, 1).unwrap();
    server.set_reply_timeout(Duration::from_secs(2));
    for round in 0..kill_rounds(6) {
        let mut child = Peer::spawn("calling-client", &name);
        // Serve it for a random while: every request intact, whatever the kill cut.
        let until = Instant::now() + Duration::from_millis(5) + jitter(round, 40);
        let mut served = 0;
        let mut killed = false;
        let deadline = Instant::now() + WATCHDOG;
        loop {
            if !killed && Instant::now() >= until && served > 0 {
                child.kill();
                killed = true;
            }
            match server.recv_frame(Wait::timeout(Duration::from_millis(20))) {
                Ok((call, Frame::Bytes(req))) => {
                    check_pattern(&req);
                    let _ = server.reply(call, &req);
                    served += 1;
                }
                Ok((_, other)) => panic!("unexpected request {other:?}"),
                Err(Error::Truncated { .. }) | Err(Error::Timeout) if killed => break,
                Err(Error::Timeout) => {}
                Err(e) => panic!("round {round}: {e}"),
            }
            assert!(Instant::now() < deadline, "round {round}: no progress");
        }
        // Its slot is free: a new client takes it and is served.
        let mut fresh = RpcClient::connect(&name, Some(WATCHDOG)).unwrap();
        let t = thread::spawn(move || fresh.call(&pattern(7, 100)).map(|r| (fresh, r)));
        let (call, req) = server.recv_frame(Wait::timeout(WATCHDOG)).unwrap();
        let Frame::Bytes(req) = req else { panic!("not bytes") };
        check_pattern(&req);
        server.reply(call, &req).unwrap();
        let (fresh, r) = t.join().unwrap().unwrap();
        assert_eq!(r, pattern(7, 100));
        drop(fresh);
        let _ = child.child.wait();
    }
}

#[test]
fn a_killed_server_fails_calls_and_a_new_one_serves() {
    let _g = serial();
    let name = unique("kill-server");
    let mut server = Peer::spawn("server", &name);
    server.expect("READY");
    let mut client = RpcClient::connect(&name, Some(WATCHDOG)).unwrap();
    assert_eq!(client.call(b"one").unwrap(), b"one");
    // A call in progress when the server dies.
    let t = thread::spawn(move || {
        let r = client.call_timeout(b"hang", WATCHDOG);
        (client, r)
    });
    server.expect("HANGING");
    server.kill();
    // PeerDead, not the call's Timeout at its deadline.
    let (mut client, r) = t.join().unwrap();
    assert!(matches!(r, Err(Error::PeerDead { role: "server", .. })), "{r:?}");
    // A new call of the stale client fails the same way (its server is gone).
    assert!(matches!(client.call_timeout(b"two", WATCHDOG), Err(Error::PeerDead { role: "server", .. })));
    // A new server under the name serves clients that reconnect.
    let mut server2 = Peer::spawn("server", &name);
    server2.expect("READY");
    let mut fresh = RpcClient::connect(&name, Some(WATCHDOG)).unwrap();
    assert_eq!(fresh.call(b"three").unwrap(), b"three");
    assert!(matches!(client.call_timeout(b"stale", WATCHDOG), Err(Error::PeerDead { role: "server", .. })));
}

#[test]
fn a_killed_client_frees_its_slot() {
    let _g = serial();
    let name = unique("kill-client");
    let mut server = RpcServer::create(&name, 1).unwrap();
    for round in 0..3 {
        let mut child = Peer::spawn("client", &name);
        let (call, req) = server.recv_frame(Wait::timeout(WATCHDOG)).unwrap();
        assert_eq!(req, Frame::Bytes(b"hello".to_vec()));
        server.reply(call, b"hello").unwrap();
        child.expect("READY");
        let (held, _) = server.recv_frame(Wait::timeout(WATCHDOG)).unwrap();
        child.kill();
        // The reply to the dead client is dropped or lands in its orphaned channel.
        let _ = server.reply(held, b"too late");
        // Its slot (the server's only one) is free for the next client.
        let deadline = Instant::now() + WATCHDOG;
        let mut client = loop {
            match RpcClient::connect(&name, Some(WATCHDOG)) {
                Ok(c) => break c,
                Err(Error::AllTaken { .. }) | Err(Error::RoleTaken { .. }) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("round {round}: {e}"),
            }
        };
        let t = thread::spawn(move || client.call(b"next").map(|r| (client, r)));
        let (call, req) = server.recv_frame(Wait::timeout(WATCHDOG)).unwrap();
        assert_eq!(req, Frame::Bytes(b"next".to_vec()));
        server.reply(call, b"served").unwrap();
        let (client, r) = t.join().unwrap().unwrap();
        assert_eq!(r, b"served");
        drop(client);
    }
}

#[test]
fn a_request_cut_part_way_is_run_when_retried() {
    let name = unique("cut");
    let mut server = RpcServer::create_with(&name, 4096, 2).unwrap();
    let mut client = RpcClient::connect(&name, Some(WATCHDOG)).unwrap();
    // 200 kB through a 4 KiB lane: the send times out part-way and cuts the request.
    let big = vec![5u8; 200_000];
    assert!(matches!(client.call_timeout(&big, Duration::from_millis(50)), Err(Error::Timeout)));
    let got = server.recv_frame(Wait::timeout(WATCHDOG));
    assert!(matches!(got, Err(Error::Truncated { .. })), "{:?}", got.map(|(c, _)| c));
    // The retry (same number) is run: the application never saw the cut request.
    let t = thread::spawn(move || {
        let (call, req) = server.recv().unwrap();
        assert_eq!(req.len(), 200_000);
        server.reply(call, b"ran once").unwrap();
        server
    });
    assert_eq!(client.retry(&big, Some(WATCHDOG)).unwrap(), b"ran once");
    t.join().unwrap();
}

#[test]
fn a_client_that_stops_reading_does_not_hold_the_server() {
    let name = unique("idle");
    let mut server = RpcServer::create(&name, 4).unwrap();
    server.set_reply_timeout(Duration::from_millis(200));
    let mut idle = RpcClient::connect_with(&name, 4096, Wait::timeout(WATCHDOG)).unwrap();
    let mut busy = RpcClient::connect(&name, Some(WATCHDOG)).unwrap();
    // The idle client's call times out; it does not read its (large) reply.
    assert!(matches!(idle.call_timeout(b"big please", Duration::from_millis(20)), Err(Error::Timeout)));
    let t = thread::spawn(move || {
        let (call, _) = server.recv().unwrap();
        // Gives up after the reply timeout instead of waiting for the idle client.
        assert!(matches!(server.reply(call, &vec![1u8; 100_000]), Err(Error::Timeout)));
        let (call, req) = server.recv().unwrap();
        server.reply(call, &req).unwrap();
        // The idle client's retry: its reply is lost, and the call is not run again.
        let reached = server.begin(&mut Wait::timeout(Duration::from_millis(500))).is_ok();
        assert!(!reached, "the retry reached the application");
        server
    });
    assert_eq!(busy.call_timeout(b"me too", WATCHDOG).unwrap(), b"me too");
    // The reply was cut part-way (the client sees it truncated), or its retry is told
    // it is lost; never a second run.
    match idle.call_with(Outgoing::bytes(b"big please"), true, Wait::timeout(WATCHDOG)) {
        Err(Error::Remote { kind, .. }) => assert_eq!(kind, "ReplyLost"),
        Err(Error::Truncated { .. }) => match idle.retry(b"big please", Some(WATCHDOG)) {
            Err(Error::Remote { kind, .. }) => assert_eq!(kind, "ReplyLost"),
            other => panic!("expected ReplyLost, got {:?}", other.map(|v| v.len())),
        },
        other => panic!("expected the reply to be reported lost, got {other:?}"),
    }
    t.join().unwrap();
}

#[test]
fn a_stream_cut_part_way_cannot_be_retried_into_wrong_data() {
    let name = unique("streamcut");
    let mut server = RpcServer::create(&name, 2).unwrap();
    let mut client = RpcClient::connect(&name, Some(WATCHDOG)).unwrap();
    let t = thread::spawn(move || {
        let (call, _) = server.recv().unwrap();
        server.reply_with(call, Outgoing::bytes(b"part1"), false, Wait::forever()).unwrap();
        server.reply_with(call, Outgoing::bytes(b"part2"), false, Wait::forever()).unwrap();
        server.reply_with(call, Outgoing::bytes(b"final"), true, Wait::forever()).unwrap();
        server
    });
    let first = client.call_with(Outgoing::bytes(b"go"), false, Wait::timeout(WATCHDOG)).unwrap();
    assert_eq!(first, Frame::Bytes(b"part1".to_vec()));
    // Retried part-way: refused, not answered with a middle part.
    match client.retry(b"go", Some(WATCHDOG)) {
        Err(Error::Remote { kind, .. }) => assert_eq!(kind, "ReplyLost"),
        other => panic!("expected ReplyLost, got {other:?}"),
    }
    let server = t.join().unwrap();
    drop(server);
}

#[test]
fn a_stream_whose_part_is_given_up_ends_with_reply_lost() {
    let name = unique("streamlost");
    let mut server = RpcServer::create(&name, 2).unwrap();
    server.set_reply_timeout(Duration::from_millis(100));
    let mut client = RpcClient::connect_with(&name, 4096, Wait::timeout(WATCHDOG)).unwrap();
    let mut w = Wait::timeout(WATCHDOG);
    client.send_request(Outgoing::bytes(b"stream"), false, &mut w).unwrap();
    let (call, _) = server.recv().unwrap();
    // The client does not read: parts fill its 4 KiB channel, then one is given up.
    let part = vec![3u8; 1000];
    let mut sent = 0;
    loop {
        match server.reply_with(call, Outgoing::bytes(&part), false, Wait::timeout(Duration::from_millis(100))) {
            Ok(true) => sent += 1,
            Err(Error::Timeout) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(sent >= 1);
    // The server goes on; the client reads the parts sent, then gets ReplyLost (sent
    // once there is room, at the server's next look for calls), never a hang.
    let t = thread::spawn(move || {
        let _ = server.begin(&mut Wait::timeout(Duration::from_millis(500)));
        server
    });
    let mut got = 0;
    loop {
        match client.next_part(Wait::timeout(WATCHDOG)) {
            Ok(Some(_)) => got += 1,
            Err(Error::Remote { kind, .. }) => {
                assert_eq!(kind, "ReplyLost");
                break;
            }
            other => panic!("after {got} parts: {other:?}"),
        }
    }
    assert_eq!(got, sent);
    t.join().unwrap();
}

#[test]
fn a_client_stopped_part_way_through_a_request_does_not_hold_the_server() {
    let _g = serial();
    let name = unique("stalled");
    let mut server = RpcServer::create_with(&name, 4096, 2).unwrap();
    server.set_reply_timeout(Duration::from_millis(300));
    let mut child = Peer::spawn("huge-request", &name);
    child.expect("READY");
    // Wait for the request to begin, then stop its sender part-way.
    // (100 MB through a 4 KB ring: begun is part-way, wherever the stop lands.)
    while !server.pending() {
        thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: a signal to our own child (libc::kill has no memory effects here).
    unsafe { libc::kill(child.child.id() as i32, libc::SIGSTOP) };
    // The server gives up on the stalled request by itself (its reply timeout): an
    // untimed receive returns. One that waited for the stopped client would not, and
    // the watchdog fails the test.
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let got = server.recv_frame(Wait::forever()).map(|(c, _)| c);
        let _ = tx.send((got, server));
    });
    let (got, mut server) = rx.recv_timeout(WATCHDOG).expect("watchdog: the server waited for a stopped client");
    assert!(matches!(got, Err(Error::Timeout)), "{got:?}");
    // SAFETY: as above.
    unsafe { libc::kill(child.child.id() as i32, libc::SIGCONT) };
    // Other clients are served meanwhile and after.
    let mut other = RpcClient::connect(&name, Some(WATCHDOG)).unwrap();
    let h = thread::spawn(move || other.call(b"me").map(|r| (other, r)));
    loop {
        match server.recv_frame(Wait::timeout(WATCHDOG)) {
            Ok((call, Frame::Bytes(req))) if req == b"me" => {
                server.reply(call, b"served").unwrap();
                break;
            }
            // The stopped client's request (cut when it resumed past the deadline) or
            // its remains: skipped.
            Ok(_) | Err(Error::Truncated { .. }) | Err(Error::Timeout) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let (_other, r) = h.join().unwrap().unwrap();
    assert_eq!(r, b"served");
    child.kill();
}

#[test]
fn an_owed_error_is_dropped_when_the_client_makes_a_new_call() {
    let name = unique("owed");
    let mut server = RpcServer::create(&name, 2).unwrap();
    server.set_reply_timeout(Duration::from_millis(100));
    let mut client = RpcClient::connect_with(&name, 4096, Wait::timeout(WATCHDOG)).unwrap();
    let mut w = Wait::timeout(WATCHDOG);
    client.send_request(Outgoing::bytes(b"stream"), false, &mut w).unwrap();
    let (call, _) = server.recv().unwrap();
    let part = vec![3u8; 1300];
    while let Ok(true) = server.reply_with(call, Outgoing::bytes(&part), false, Wait::timeout(Duration::from_millis(100))) {}
    // The client gives the stream up and makes a new call while its channel is full.
    client.send_request(Outgoing::bytes(b"second"), false, &mut w).unwrap();
    let (call2, req) = server.recv().unwrap();
    assert_eq!(req, b"second");
    // The server looks for calls again before it replies (the owed error must not be
    // paid as the second call's answer once the client drains its channel).
    let t = thread::spawn(move || {
        let _ = server.begin(&mut Wait::timeout(Duration::from_millis(200)));
        server.reply(call2, b"second answer").unwrap();
        server
    });
    // The first reply part the client takes is the second call's: the first call's
    // leftover parts (and any owed error for it) are discarded by number.
    match client.next_part(Wait::timeout(WATCHDOG)) {
        Ok(Some(Frame::Bytes(b))) => assert_eq!(b, b"second answer"),
        other => panic!("{other:?}"),
    }
    t.join().unwrap();
}

#[test]
fn a_large_request_from_a_live_client_is_served_whatever_the_reply_timeout() {
    let name = unique("live-large");
    let mut server = RpcServer::create_with(&name, 4096, 2).unwrap();
    // Far shorter than the whole request takes through a 4 KiB lane: the limit is per
    // record (inactivity), not for the whole message.
    server.set_reply_timeout(Duration::from_millis(50));
    let mut client = RpcClient::connect(&name, Some(WATCHDOG)).unwrap();
    let t = thread::spawn(move || {
        let (call, req) = server.recv().unwrap();
        assert_eq!(req.len(), 16 << 20);
        server.reply(call, b"got it").unwrap();
        server
    });
    assert_eq!(client.call_timeout(&vec![1u8; 16 << 20], WATCHDOG).unwrap(), b"got it");
    t.join().unwrap();
}

#[test]
fn a_slot_reply_found_by_wait_reply_never_answers_a_later_loaned_call() {
    // A reply to a small call comes to the call slot; `wait_reply` finds it (without
    // taking it), and the client then makes a new call through a request loan. The
    // found reply is the first call's: it must not answer the second.
    let name = unique("slotloan");
    let mut server = RpcServer::create(&name, 2).unwrap();
    let mut client = RpcClient::connect(&name, Some(WATCHDOG)).unwrap();
    let mut w = Wait::timeout(WATCHDOG);
    client.send_request(Outgoing::bytes(b"first"), false, &mut w).unwrap();
    let (c1, _) = server.recv().unwrap();
    server.reply(c1, b"reply to first").unwrap();
    assert_eq!(server.slot_calls(), 1);
    client.wait_reply(&mut w).unwrap();
    let mut loan = client.loan_request(6, Wait::forever()).unwrap();
    loan.as_mut_slice().copy_from_slice(b"second");
    loan.commit();
    let (c2, got) = server.recv().unwrap();
    assert_eq!((c2.seq, got.as_slice()), (2, &b"second"[..]));
    server.reply(c2, b"reply to second").unwrap();
    let seq = client.seq();
    let (env, incoming) = client.begin_reply(&mut w).unwrap();
    assert_eq!(env.seq, seq, "a reply to call {} answered call {seq}", env.seq);
    let mut out = vec![0u8; incoming.head().total()];
    incoming.read_payload_into(out.as_mut_slice().into(), Wait::forever()).unwrap();
    assert_eq!(out, b"reply to second");
}

#[test]
fn clients_calling_through_their_slots_take_turns() {
    // Three clients post small calls; the first posts its next call as soon as it is
    // answered. The server must still serve the other two within a few rounds (as it
    // does for calls in the lanes' rings), not the first lane for ever.
    let name = unique("slotturns");
    let mut server = RpcServer::create(&name, 4).unwrap();
    let mut clients = connect_clients(&name, 3);
    let mut w = Wait::timeout(WATCHDOG);
    for c in &mut clients {
        c.send_request(Outgoing::bytes(b"x"), false, &mut w).unwrap();
    }
    let busy = clients[0].slot().unwrap();
    let mut served = std::collections::HashSet::new();
    for _ in 0..60 {
        let (call, _) = server.recv().unwrap();
        served.insert(call.slot);
        server.reply(call, b"y").unwrap();
        if call.slot == busy {
            clients[0].send_request(Outgoing::bytes(b"x"), false, &mut w).unwrap();
        }
        if served.len() == 3 {
            break;
        }
    }
    assert_eq!(served.len(), 3, "lanes served: {served:?} (the others starved)");
    assert!(server.slot_calls() >= 3);
}

/// A small call posted in the call slot and not taken yet is withdrawn when its client
/// closes: the server never runs a call whose client is gone before it looked.
#[test]
fn a_closed_clients_posted_call_is_withdrawn() {
    let name = unique("withdraw");
    let mut server = RpcServer::create(&name, 2).unwrap();
    let mut client = RpcClient::connect(&name, Some(WATCHDOG)).unwrap();
    client.send_request(shmplane::frame::Outgoing::bytes(b"never run"), false, &mut Wait::timeout(WATCHDOG)).unwrap();
    client.close();
    assert!(matches!(server.begin(&mut Wait::timeout(Duration::from_millis(50))), Err(Error::Timeout)));
    assert_eq!(server.slot_calls(), 0);
    // A client that stays gets its small call through the slot.
    let mut next = RpcClient::connect(&name, Some(WATCHDOG)).unwrap();
    let t = thread::spawn(move || {
        let (call, req) = server.recv().unwrap();
        server.reply(call, &req).unwrap();
        server
    });
    assert_eq!(next.call(b"run").unwrap(), b"run");
    assert_eq!(t.join().unwrap().slot_calls(), 1);
}

/// `recv_timeout` gives up with `Timeout` when no call comes, and returns the next
/// call (small, through the call slot, and large, through the lane) when one does.
#[test]
fn recv_timeout_waits_at_most_its_timeout() {
    let name = unique("recvto");
    let mut server = RpcServer::create(&name, 2).unwrap();
    assert!(matches!(server.recv_timeout(Duration::from_millis(20)), Err(Error::Timeout)));
    let mut client = RpcClient::connect(&name, Some(WATCHDOG)).unwrap();
    let t = thread::spawn(move || {
        for _ in 0..2 {
            let (call, req) = server.recv_timeout(WATCHDOG).unwrap();
            server.reply(call, &req[..3]).unwrap();
        }
        server
    });
    assert_eq!(client.call(b"small").unwrap(), b"sma");
    assert_eq!(client.call(&[b'L'; 1000]).unwrap(), b"LLL");
    assert_eq!(t.join().unwrap().slot_calls(), 1);
}

/// A server that busy-polls answers calls through the slots of the clients it answered
/// last without their pending bits (`callslot::POLLED`): ten clients, more than it polls
/// (the oldest leaves the polled set), every call answered; a call posted into a polled
/// slot shows in `pending()`.
#[test]
fn calls_into_polled_slots_are_all_found() {
    let name = unique("polled");
    let mut server = RpcServer::create(&name, 12).unwrap();
    let mut clients = connect_clients(&name, 10);
    let mut w = Wait::timeout(WATCHDOG);
    for round in 0..4u8 {
        for (i, c) in clients.iter_mut().enumerate() {
            c.send_request(Outgoing::bytes(&[round, i as u8]), false, &mut w).unwrap();
        }
        assert!(server.pending());
        for _ in 0..clients.len() {
            let (call, req) = server.recv_timeout(WATCHDOG).unwrap();
            server.reply(call, &[req[0], req[1], 0xAA]).unwrap();
        }
        for (i, c) in clients.iter_mut().enumerate() {
            assert_eq!(next_reply(c), [round, i as u8, 0xAA]);
        }
    }
    // The last client's slot is polled now: its post sets no bit, and is still seen.
    clients[9].send_request(Outgoing::bytes(b"last"), false, &mut w).unwrap();
    assert!(server.pending());
    let (call, req) = server.recv_timeout(WATCHDOG).unwrap();
    assert_eq!(req, b"last");
    server.reply(call, b"ok").unwrap();
    assert_eq!(server.slot_calls(), 41);
}

/// A server that sleeps between calls (it stops polling first) and one that never
/// polls (`Block`) answer a client that calls now and then: no call waits for a look
/// that never comes.
#[test]
fn calls_after_the_server_slept_are_answered() {
    for policy in [WaitPolicy::default(), WaitPolicy::Block, WaitPolicy::Spin] {
        let name = unique("slept");
        let mut server = RpcServer::create(&name, 2).unwrap();
        server.set_wait_policy(policy);
        let mut client = RpcClient::connect(&name, Some(WATCHDOG)).unwrap();
        let t = serve_n(server, 6, |r| r.to_vec());
        for i in 0..6u8 {
            if i % 2 == 1 {
                thread::sleep(Duration::from_millis(30));
            }
            assert_eq!(client.call_timeout(&[i; 8], WATCHDOG).unwrap(), [i; 8], "{policy:?}");
        }
        assert_eq!(t.join().unwrap().slot_calls(), 6);
    }
}

/// Clients whose slots the server polls (it answered each once while busy-polling)
/// take turns too: one posting its next call as soon as it is answered must not keep
/// the look on its slot while the others' posted calls wait (they set no pending bit).
#[test]
fn clients_calling_through_polled_slots_take_turns() {
    let name = unique("polledturns");
    let mut server = RpcServer::create(&name, 4).unwrap();
    let mut clients = connect_clients(&name, 3);
    let mut w = Wait::timeout(WATCHDOG);
    // One call each, answered while the server busy-polls: every slot is polled now.
    for c in &mut clients {
        c.send_request(Outgoing::bytes(b"x"), false, &mut w).unwrap();
        let (call, _) = server.recv_timeout(WATCHDOG).unwrap();
        server.reply(call, b"y").unwrap();
        assert_eq!(next_reply(c), b"y");
    }
    // (The last look's lane left empty: its pending bit goes.)
    assert!(!server.poll(Wait::no_wait()).unwrap());
    // A client answered calls again at once (before the server's next look).
    for c in &mut clients {
        c.send_request(Outgoing::bytes(b"x"), false, &mut w).unwrap();
    }
    let third = clients[2].slot().unwrap();
    let mut served = Vec::new();
    for _ in 0..60 {
        let (call, _) = server.recv_timeout(WATCHDOG).unwrap();
        served.push(call.slot);
        server.reply(call, b"y").unwrap();
        if call.slot == third {
            break;
        }
        let c = clients.iter_mut().find(|c| c.slot() == Some(call.slot)).unwrap();
        assert_eq!(next_reply(c), b"y");
        c.send_request(Outgoing::bytes(b"x"), false, &mut w).unwrap();
    }
    assert_eq!(served.last(), Some(&third), "lanes served in turn: {served:?} (the third starved)");
    assert!(served.len() <= 3 * 17, "{served:?}");
}

/// A copy of the server (a fork child) that answered a call while busy-polling marks
/// the client's slot `POLLED` and exits without taking the flag back (as a
/// `multiprocessing` child does, `os._exit`): the client's next call, posted into that
/// slot without a pending bit or a notify, is still found by the copy that serves on
/// (within a wait slice), not left for a look that never comes.
#[test]
fn a_call_into_a_slot_an_exited_copy_polled_is_answered() {
    let _serial = serial();
    let name = unique("polled-copy");
    let mut server = RpcServer::create(&name, 2).unwrap();
    let mut client = RpcClient::connect(&name, Some(WATCHDOG)).unwrap();
    let mut w = Wait::timeout(WATCHDOG);
    client.send_request(Outgoing::bytes(b"one"), false, &mut w).unwrap();
    // SAFETY: fork of this test process; the child only serves through its copy of the
    // server (no locks of other threads) and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let served = server.recv_timeout(WATCHDOG).and_then(|(call, req)| server.reply(call, &req));
        // A look that finds nothing (the lane's pending bit goes), without sleeping.
        let looked = server.poll(Wait::no_wait());
        let code = if matches!((served, looked), (Ok(true), Ok(false))) { 0 } else { 1 };
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    let deadline = Instant::now() + WATCHDOG;
    let status = loop {
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break status;
        }
        if Instant::now() >= deadline {
            // SAFETY: kills our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the child copy hung");
        }
        thread::sleep(Duration::from_millis(5));
    };
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child status {status:#x}");
    assert!(matches!(client.next_part(Wait::timeout(WATCHDOG)), Ok(Some(Frame::Bytes(b))) if b == b"one"));
    client.send_request(Outgoing::bytes(b"two"), false, &mut w).unwrap();
    let (call, req) = server.recv_timeout(Duration::from_secs(3)).expect("the call after the copy exited is found");
    assert_eq!(req, b"two");
    assert!(server.reply(call, b"two").unwrap());
    assert!(matches!(client.next_part(Wait::timeout(WATCHDOG)), Ok(Some(Frame::Bytes(b))) if b == b"two"));
}

#[test]
fn the_current_wait_policy_is_the_set_one_until_waits_teach_otherwise() {
    let _g = serial();
    let name = unique("policy");
    let mut server = RpcServer::create(&name, 2).unwrap();
    let mut client = RpcClient::connect(&name, Some(WATCHDOG)).unwrap();
    // Nothing waited yet: the policy as set (the default, then another).
    assert_eq!(client.current_wait_policy(), WaitPolicy::default());
    assert_eq!(server.current_wait_policy(), WaitPolicy::default());
    client.set_wait_policy(WaitPolicy::Block);
    server.set_wait_policy(WaitPolicy::Spin);
    assert_eq!(client.current_wait_policy(), WaitPolicy::Block);
    assert_eq!(server.current_wait_policy(), WaitPolicy::Spin);
    // An adaptive policy never spins longer than it was set to, whatever was learned.
    let set = WaitPolicy::Adaptive { spin: Duration::from_micros(7) };
    client.set_wait_policy(set);
    server.set_wait_policy(set);
    let t = serve_n(server, 3, |r| r.to_vec());
    for i in 0..3u8 {
        assert_eq!(client.call(&[i; 32]).unwrap(), [i; 32]);
        assert!(matches!(client.current_wait_policy(), WaitPolicy::Adaptive { spin } if spin <= Duration::from_micros(7)));
    }
    let server = t.join().unwrap();
    assert!(matches!(server.current_wait_policy(), WaitPolicy::Adaptive { spin } if spin <= Duration::from_micros(7)));
}
