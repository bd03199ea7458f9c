//! RPC round trips across two processes, beside the floors measured in the same run:
//! one cache line moving with ownership (`floor/cacheline_pingpong`), one line per
//! direction (`floor/two_line_pingpong`), a hand-made request/reply over two
//! shmplane channels (spin), and two processes that sleep and wake each other on a
//! futex (`floor/futex_pingpong`, the floor of the block policy), one line carrying 48
//! bytes each way with plain stores (`floor/one_line`), and the call slot's protocol
//! alone (`shmplane_shm::callslot`, 48 and 64 bytes). Then calls to a forked
//! `RpcServer` echoing each request: `call_into` / `recv_into` with spin (one kept buffer
//! each side, no allocation), and `RpcClient::call` / `RpcServer::recv` (a `Vec` per
//! request and reply) with the spin, adaptive (default) and block policies, for 48- and
//! 64-byte calls; and the reply of an 8 MB payload.
//!
//! `target/release/rpc [calls=100000] [rounds=3]`; `target/release/rpc floors [calls]`
//! prints only the floors, as JSON (for `benches/python/rpc_bench.py`); `rpc call
//! [size] [calls] [lean]` one series of spin calls (for `perf record`); `rpc cpu [n]`
//! the CPU cost of a call in one thread (`rpc cpu-lean [n]`: of a lean 48-byte call); `rpc after-slow [calls]` round trips before and
//! after one slow call and one timed-out call (`RPC_CLIENT_SPIN`, `RPC_SERVER_SPIN`
//! set either side's policy to spin); `rpc serve NAME [spin|adaptive|block] [seconds]` an
//! echo server of bytes calls for a client in another language (a Python client's share
//! of a round trip), which removes its segment when its time is up (default 60 s; a
//! server killed instead leaves `/dev/shm/shmplane.NAME`, which the next `serve` of the
//! name replaces, and `python -m shmplane gc` removes); `rpc client NAME [size]
//! [calls]` spin calls to such a server of another language (its side of a round
//! trip). Each call is timed on its own;
//! prints p50/p99/p99.9 in ns (medians over rounds) and the ratios to the floors.
use shmplane::{Error, RpcClient, RpcServer, Wait, WaitPolicy};
use shmplane_benches::{fork_child, reap, Child};
use shmplane_shm::region::{Region, ShmFile};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn percentiles(mut v: Vec<u64>) -> [f64; 3] {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)] as f64;
    [at(0.5), at(0.99), at(0.999)]
}

fn median3(rounds: &[[f64; 3]]) -> [f64; 3] {
    let mut out = [0.0; 3];
    for (i, o) in out.iter_mut().enumerate() {
        let mut col: Vec<f64> = rounds.iter().map(|r| r[i]).collect();
        col.sort_by(f64::total_cmp);
        *o = col[col.len() / 2];
    }
    out
}

/// Time `calls` round trips of `f`, each on its own.
fn timed(calls: usize, mut f: impl FnMut()) -> [f64; 3] {
    for _ in 0..calls / 10 {
        f();
    }
    let mut v = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        f();
        v.push(t.elapsed().as_nanos() as u64);
    }
    percentiles(v)
}

/// The floors: one line (`lines = 1`) or one line per direction (`lines = 2`).
fn floor(lines: usize, calls: usize) -> [f64; 3] {
    let n = format!("bench-rpc-floor{lines}-{}", std::process::id());
    let file = ShmFile::create(&n, 4096).expect("create");
    let region = Region::map(&file, 4096).expect("map");
    // SAFETY: offsets 128 and 1024 are 8-aligned, inside the 4 KiB region, on different
    // 128-byte line pairs; AtomicU64 only.
    let (ping, pong): (&AtomicU64, &AtomicU64) = unsafe { (region.at(128), region.at(if lines == 1 { 128 } else { 1024 })) };
    let child = fork_child(|| {
        // One line: the child answers odd values with the next even one; two lines:
        // it echoes each value on its own line.
        let mut expect = 1u64;
        loop {
            while ping.load(Ordering::Acquire) != expect {
                std::hint::spin_loop();
            }
            if lines == 1 {
                pong.store(expect + 1, Ordering::Release);
                expect += 2;
            } else {
                pong.store(expect, Ordering::Release);
                expect += 1;
            }
        }
    });
    let mut next = 1u64;
    let r = timed(calls, || {
        ping.store(next, Ordering::Release);
        let want = if lines == 1 { next + 1 } else { next };
        while pong.load(Ordering::Acquire) != want {
            std::hint::spin_loop();
        }
        next = if lines == 1 { next + 2 } else { next + 1 };
    });
    reap(child);
    file.unlink_if_same(&n);
    r
}

/// The floor of a round trip between two processes that sleep: each waits on a word
/// with `FUTEX_WAIT` and is woken by the other's store and `FUTEX_WAKE` (what the block
/// policy costs at least).
/// One line moving with ownership, as `floor/cacheline_pingpong`, carrying `size`
/// bytes each way (at most 48: one line with the state and length words): the client
/// writes the payload and a plain Release store of the state; the server copies the
/// payload out, writes it back and stores the reply state. No take: nothing is
/// published between the request and the reply. The floor of a one-line call.
fn payload_floor(size: usize, calls: usize) -> [f64; 3] {
    use shmplane_shm::layout::CallSlot;
    assert!(size <= 48 && size % 8 == 0, "one line: at most 48 bytes, whole words");
    let n = format!("bench-rpc-payload-{}", std::process::id());
    let file = ShmFile::create(&n, 4096).expect("create");
    let region = Region::map(&file, 4096).expect("map");
    // SAFETY: offset 1024 is 128-aligned, the slot (256 bytes) lies inside the 4 KiB
    // region, and holds atomics only.
    let slot: &CallSlot = unsafe { region.at(1024) };
    let words = size / 8;
    let child = fork_child(|| {
        let mut expect = 1u64;
        let mut w = [0u64; 6];
        loop {
            // ORDERING: Acquire, partner of the parent's Release store of the state.
            while slot.state.load(Ordering::Acquire) != expect {
                std::hint::spin_loop();
            }
            for (v, d) in w[..words].iter_mut().zip(&slot.data) {
                // ORDERING: Relaxed: published by the state word.
                *v = d.load(Ordering::Relaxed);
            }
            for (v, d) in w[..words].iter().zip(&slot.data) {
                // ORDERING: Relaxed: published by the state word.
                d.store(*v, Ordering::Relaxed);
            }
            // ORDERING: Release, partner of the parent's Acquire load.
            slot.state.store(expect + 1, Ordering::Release);
            expect += 2;
        }
    });
    let mut next = 1u64;
    let r = timed(calls, || {
        for d in &slot.data[..words] {
            // ORDERING: Relaxed: published by the state word.
            d.store(next, Ordering::Relaxed);
        }
        // ORDERING: Release, partner of the child's Acquire load.
        slot.state.store(next, Ordering::Release);
        // ORDERING: Acquire, partner of the child's Release store.
        while slot.state.load(Ordering::Acquire) != next + 1 {
            std::hint::spin_loop();
        }
        let mut x = 0;
        for d in &slot.data[..words] {
            // ORDERING: Relaxed: published by the state word.
            x ^= d.load(Ordering::Relaxed);
        }
        std::hint::black_box(x);
        next += 2;
    });
    reap(child);
    file.unlink_if_same(&n);
    r
}

/// The call slot's protocol alone (`shmplane_shm::callslot`), polled: the client posts
/// a `size`-byte request and spins on the slot for the reply; the server spins on the
/// slot, takes the request and completes it with the same bytes. No mailbox, no
/// at-most-once table, no wait loop: the floor of a call through the slot.
fn slot_floor(size: usize, calls: usize) -> [f64; 3] {
    use shmplane_shm::callslot::{self, Poll};
    use shmplane_shm::layout::{CallSlot, CALL_SLOT_BYTES};
    let n = format!("bench-rpc-slot-{}", std::process::id());
    let file = ShmFile::create(&n, 4096).expect("create");
    let region = Region::map(&file, 4096).expect("map");
    // SAFETY: offset 1024 is 128-aligned, the slot (256 bytes) lies inside the 4 KiB
    // region, and holds atomics only.
    let slot: &CallSlot = unsafe { region.at(1024) };
    let child = fork_child(|| {
        let mut buf = [0u8; CALL_SLOT_BYTES];
        loop {
            while !callslot::posted(slot) {
                std::hint::spin_loop();
            }
            if let Some(Ok(t)) = callslot::take(slot, &mut buf) {
                callslot::complete(slot, t.seq, Some((t.tag, &buf[..t.len])), true);
            }
        }
    });
    // The envelope (call number, client 0, flags 0), then the payload.
    let mut record = vec![7u8; 16 + size];
    record[8..16].fill(0);
    let mut buf = [0u8; CALL_SLOT_BYTES];
    let mut seq = 0u64;
    let r = timed(calls, || {
        seq += 1;
        record[..8].copy_from_slice(&seq.to_le_bytes());
        callslot::post(slot, seq, 0, &record);
        while !matches!(callslot::reply(slot, seq, &mut buf), Poll::Reply { .. }) {
            std::hint::spin_loop();
        }
    });
    reap(child);
    file.unlink_if_same(&n);
    r
}

fn futex_floor(calls: usize) -> [f64; 3] {
    use std::sync::atomic::AtomicU32;
    fn wait(word: &AtomicU32, val: u32) {
        // SAFETY: a futex wait on a 4-aligned word of a shared mapping, no timeout.
        unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, val, std::ptr::null::<libc::timespec>()) };
    }
    fn wake(word: &AtomicU32) {
        // SAFETY: a futex wake of a 4-aligned word of a shared mapping.
        unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1) };
    }
    let n = format!("bench-rpc-futex-{}", std::process::id());
    let file = ShmFile::create(&n, 4096).expect("create");
    let region = Region::map(&file, 4096).expect("map");
    // SAFETY: offsets 128 and 1024 are 4-aligned, inside the 4 KiB region; AtomicU32 only.
    let (ping, pong): (&AtomicU32, &AtomicU32) = unsafe { (region.at(128), region.at(1024)) };
    let child = fork_child(|| {
        let mut expect = 1u32;
        loop {
            // ORDERING: Acquire, partner of the parent's Release store of `ping`.
            while ping.load(Ordering::Acquire) != expect {
                wait(ping, expect - 1);
            }
            // ORDERING: Release, partner of the parent's Acquire load of `pong`.
            pong.store(expect, Ordering::Release);
            wake(pong);
            expect += 1;
        }
    });
    let mut next = 1u32;
    let r = timed(calls, || {
        // ORDERING: Release, partner of the child's Acquire load.
        ping.store(next, Ordering::Release);
        wake(ping);
        // ORDERING: Acquire, partner of the child's Release store.
        while pong.load(Ordering::Acquire) != next {
            wait(pong, next - 1);
        }
        next += 1;
    });
    reap(child);
    file.unlink_if_same(&n);
    r
}

fn two_channels(calls: usize) -> [f64; 3] {
    let mut child = Child::spawn(&format!("bench-rpc-2ch-{}", std::process::id()), 1 << 16, Child::echo);
    let msg = [7u8; 64];
    timed(calls, || {
        child.tx.send(&msg).expect("send");
        drop(child.rx.peek(None).expect("pong"));
    })
}

/// A forked echo server. `lean`: `recv_into` one kept buffer (no allocation per call),
/// else `recv` (a `Vec` per request).
fn server(name: &str, policy: WaitPolicy, lean: bool) -> libc::pid_t {
    let name = name.to_owned();
    fork_child(move || {
        let mut s = RpcServer::create(&name, 4).expect("server");
        s.set_wait_policy(policy);
        let mut buf = Vec::with_capacity(4096);
        loop {
            if lean {
                let call = s.recv_into(&mut buf, Wait::forever()).expect("recv");
                s.reply(call, &buf).expect("reply");
            } else {
                let (call, req) = s.recv().expect("recv");
                s.reply(call, &req).expect("reply");
            }
        }
    })
}

/// `size`-byte calls to an echo server, one by one. `lean`: the client `call_into` one
/// kept buffer and the server `recv_into` one (no allocation per call on either side);
/// else `call` and `recv`, a `Vec` per request and per reply.
fn rpc_calls(policy: WaitPolicy, size: usize, calls: usize, lean: bool) -> [f64; 3] {
    let name = format!("bench-rpc-{}-{size}", std::process::id());
    let pid = server(&name, policy, lean);
    let mut client = RpcClient::connect(&name, Some(Duration::from_secs(10))).expect("connect");
    client.set_wait_policy(policy);
    let msg = vec![7u8; size];
    let mut reply = Vec::with_capacity(4096);
    let r = timed(calls, || {
        if lean {
            client.call_into(&msg, &mut reply, Wait::forever()).expect("call");
            assert_eq!(reply.len(), size);
        } else {
            let reply = client.call(&msg).expect("call");
            assert_eq!(reply.len(), size);
        }
    });
    drop(client);
    reap(pid);
    let _ = std::fs::remove_file(format!("/dev/shm/shmplane.{name}"));
    r
}

fn rpc(policy: WaitPolicy, size: usize, calls: usize) -> [f64; 3] {
    rpc_calls(policy, size, calls, false)
}

fn big_reply(rounds: usize) -> f64 {
    let name = format!("bench-rpc-big-{}", std::process::id());
    let payload = vec![3u8; 8 << 20];
    let n2 = name.clone();
    let pid = fork_child(move || {
        let mut s = RpcServer::create(&n2, 4).expect("server");
        loop {
            let (call, _) = s.recv().expect("recv");
            s.reply(call, &payload).expect("reply");
        }
    });
    let mut client = RpcClient::connect(&name, Some(Duration::from_secs(10))).expect("connect");
    let mut times = Vec::new();
    for _ in 0..rounds.max(5) * 4 {
        let t = Instant::now();
        let r = client.call(b"get").expect("call");
        times.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(r.len(), 8 << 20);
    }
    drop(client);
    reap(pid);
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The CPU cost of one call with no second core in the way: client and server in this
/// thread, a call, its receipt, its reply and the reply's receipt, back to back; beside
/// the same through two channels.
fn cpu_cost(calls: usize) {
    use shmplane::{frame::Outgoing, Wait};
    let name = format!("bench-rpc-cpu-{}", std::process::id());
    let mut server = RpcServer::create(&name, 4).expect("server");
    let mut client = RpcClient::connect(&name, None).expect("connect");
    let msg = [7u8; 64];
    let t = Instant::now();
    for _ in 0..calls {
        client.send_request(Outgoing::bytes(&msg), false, &mut Wait::no_wait()).expect("send");
        let (call, req) = server.recv().expect("recv");
        server.reply(call, &req).expect("reply");
        let (env, incoming) = client.begin_reply(&mut Wait::no_wait()).expect("reply");
        let mut buf = [0u8; 64];
        incoming.read_into(vec![buf.as_mut_slice().into()], Wait::no_wait()).expect("read");
        client.end_reply(env, true);
    }
    let rpc = t.elapsed().as_nanos() as f64 / calls as f64;
    let (mut tx, mut rx) = shmplane::channel(1 << 16).expect("channel");
    let (mut tx2, mut rx2) = shmplane::channel(1 << 16).expect("channel");
    let t = Instant::now();
    for _ in 0..calls {
        tx.send(&msg).expect("send");
        let req = rx.recv().expect("recv");
        tx2.send(&req).expect("send");
        drop(rx2.peek(None).expect("peek"));
    }
    let two = t.elapsed().as_nanos() as f64 / calls as f64;
    println!("one thread, no waiting: RPC call {rpc:.0} ns of CPU, two channels {two:.0} ns");
}

/// The CPU cost of one lean call (`call_into` / `recv_into`, 48 bytes, through the call
/// slot) with no second core in the way: client and server in this thread, back to
/// back; what a round trip adds to the line transfers (`rpc cpu-lean [calls]`, also
/// for `valgrind --tool=callgrind`).
fn cpu_cost_lean(calls: usize) {
    use shmplane::{frame::Outgoing, Wait};
    let name = format!("bench-rpc-cpulean-{}", std::process::id());
    let mut server = RpcServer::create(&name, 4).expect("server");
    let mut client = RpcClient::connect(&name, None).expect("connect");
    let msg = [7u8; 48];
    let (mut req, mut reply) = (Vec::with_capacity(4096), Vec::with_capacity(4096));
    let t = Instant::now();
    for _ in 0..calls {
        client.send_request(Outgoing::bytes(&msg), false, &mut Wait::no_wait()).expect("send");
        let call = server.recv_into(&mut req, Wait::no_wait()).expect("recv");
        server.reply(call, &req).expect("reply");
        client.reply_into(&mut reply, Wait::no_wait()).expect("reply");
        assert_eq!(reply.len(), 48);
    }
    let ns = t.elapsed().as_nanos() as f64 / calls as f64;
    println!("one thread, no waiting: lean 48 B call (call slot) {ns:.0} ns of CPU");
}

/// Round trips before and after one slow call (the server sleeps 200 ms in it), and
/// after one that timed out: does a long wait leave the next calls slow?
fn after_slow(calls: usize) {
    let name = format!("bench-rpc-slow-{}", std::process::id());
    let n2 = name.clone();
    let pid = fork_child(move || {
        let mut s = RpcServer::create(&n2, 4).expect("server");
        if std::env::var("RPC_SERVER_SPIN").is_ok() {
            s.set_wait_policy(WaitPolicy::Spin);
        }
        loop {
            let (call, req) = s.recv().expect("recv");
            if req == b"slow" {
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = s.reply(call, &req);
        }
    });
    let mut client = RpcClient::connect(&name, Some(Duration::from_secs(10))).expect("connect");
    if std::env::var("RPC_CLIENT_SPIN").is_ok() {
        client.set_wait_policy(WaitPolicy::Spin);
    }
    let msg = [7u8; 64];
    let round = |label: &str, client: &mut RpcClient| {
        let r = timed(calls, || drop(client.call(&msg).expect("call")));
        println!("{label:<40} p50 {:>8.0} ns  p99 {:>8.0} ns", r[0], r[1]);
    };
    round("fresh", &mut client);
    client.call(b"slow").expect("slow");
    round("after one slow call (200 ms)", &mut client);
    let _ = client.call_timeout(b"slow", Duration::from_millis(20));
    std::thread::sleep(Duration::from_millis(300));
    round("after one call that timed out", &mut client);
    let mut fresh = RpcClient::connect(&name, Some(Duration::from_secs(10))).expect("connect");
    round("a new client after that", &mut fresh);
    drop((client, fresh));
    reap(pid);
    let _ = std::fs::remove_file(format!("/dev/shm/shmplane.{name}"));
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("cpu-lean") {
        cpu_cost_lean(std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(1_000_000));
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("after-slow") {
        after_slow(std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(20_000));
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("call") {
        // One series of spin calls (for a profiler): `rpc call [size] [calls] [lean]`
        // (`lean`: `call_into` / `recv_into`, no allocation per call).
        let size = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(64);
        let calls = std::env::args().nth(3).and_then(|a| a.parse().ok()).unwrap_or(200_000);
        let lean = std::env::args().nth(4).as_deref() == Some("lean");
        let r = rpc_calls(WaitPolicy::Spin, size, calls, lean);
        println!("RpcClient::call {size} B, spin: p50 {:.0} ns, p99 {:.0} ns, p99.9 {:.0} ns", r[0], r[1], r[2]);
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("serve") {
        // An echo server for a client in another language (`rpc serve NAME [policy]`),
        // so that its side of a round trip can be told from the server's: serves until
        // killed, spin policy unless `adaptive` or `block` is given.
        const USAGE: &str = "rpc serve NAME [spin|adaptive|block] [seconds]";
        let name = std::env::args().nth(2).expect(USAGE);
        let policy = match std::env::args().nth(3).as_deref() {
            None | Some("spin") => WaitPolicy::Spin,
            Some("adaptive") => WaitPolicy::default(),
            Some("block") => WaitPolicy::Block,
            Some(other) => panic!("unknown policy {other:?}: {USAGE}"),
        };
        let secs: u64 = std::env::args().nth(4).map_or(60, |a| a.parse().expect(USAGE));
        let mut server = RpcServer::create(&name, 4).expect("create");
        server.set_wait_policy(policy);
        println!("serving {name} for {secs} s");
        let end = Instant::now() + Duration::from_secs(secs);
        let mut req = Vec::new();
        while Instant::now() < end {
            // A bounded wait, so that the loop ends on time; a call that fails (a client
            // that gave up part-way) is reported and the next one served.
            match server.recv_into(&mut req, Wait::timeout(Duration::from_millis(100))) {
                Ok(call) => {
                    if let Err(e) = server.reply(call, &req) {
                        eprintln!("rpc serve: reply: {e}");
                    }
                }
                Err(Error::Timeout) => {}
                Err(e) => eprintln!("rpc serve: recv: {e}"),
            }
        }
        drop(server);
        let _ = std::fs::remove_file(format!("/dev/shm/shmplane.{name}"));
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("client") {
        // Spin calls of `size` bytes to a server in another language (`rpc client NAME
        // [size] [calls]`): its side of a round trip, against `rpc call`'s Rust server.
        const USAGE: &str = "rpc client NAME [size] [calls]";
        let name = std::env::args().nth(2).expect(USAGE);
        let size: usize = std::env::args().nth(3).map_or(64, |a| a.parse().expect(USAGE));
        let calls: usize = std::env::args().nth(4).map_or(100_000, |a| a.parse().expect(USAGE));
        let mut client = RpcClient::connect(&name, Some(Duration::from_secs(10))).expect("connect");
        client.set_wait_policy(WaitPolicy::Spin);
        let msg = vec![7u8; size];
        let mut reply = Vec::new();
        for _ in 0..5000 {
            client.call_into(&msg, &mut reply, Wait::forever()).expect("call");
        }
        let mut ts: Vec<u64> = (0..calls)
            .map(|_| {
                let t = Instant::now();
                client.call_into(&msg, &mut reply, Wait::forever()).expect("call");
                t.elapsed().as_nanos() as u64
            })
            .collect();
        ts.sort_unstable();
        println!("RpcClient::call_into {size} B to {name}, spin: p50 {} ns, p99 {} ns", ts[calls / 2], ts[calls * 99 / 100]);
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("cpu") {
        cpu_cost(std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(1_000_000));
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("floors") {
        // For benches/python/rpc_bench.py: the floors as one JSON line (ns, p50/p99/p99.9).
        let calls: usize = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(50_000);
        let fmt = |r: [f64; 3]| format!("[{:.0}, {:.0}, {:.0}]", r[0], r[1], r[2]);
        println!(
            "{{\"cacheline_pingpong\": {}, \"two_line_pingpong\": {}, \"futex_pingpong\": {}, \"two_channels_rust\": {}}}",
            fmt(floor(1, calls)),
            fmt(floor(2, calls)),
            fmt(futex_floor(calls / 4)),
            fmt(two_channels(calls))
        );
        return;
    }
    let mut args = std::env::args().skip(1);
    let calls: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    println!("rpc: {calls} calls per round, {rounds} rounds, {} CPUs; ns p50/p99/p99.9", std::thread::available_parallelism().map_or(0, |n| n.get()));
    let run = |f: &dyn Fn() -> [f64; 3]| median3(&(0..rounds).map(|_| f()).collect::<Vec<_>>());
    let one = run(&|| floor(1, calls));
    let two = run(&|| floor(2, calls));
    let chans = run(&|| two_channels(calls));
    let futex = run(&|| futex_floor(calls / 4));
    let payload48 = run(&|| payload_floor(48, calls));
    let slot48 = run(&|| slot_floor(48, calls));
    let slot64 = run(&|| slot_floor(64, calls));
    let show = |label: &str, r: [f64; 3]| {
        println!(
            "{label:<36} {:>7.0} {:>7.0} {:>8.0}   p50 x{:.2} one-line, x{:.2} two-line, x{:.2} two channels, x{:.2} futex",
            r[0], r[1], r[2], r[0] / one[0], r[0] / two[0], r[0] / chans[0], r[0] / futex[0]
        );
    };
    show("floor/cacheline_pingpong", one);
    show("floor/two_line_pingpong", two);
    show("two channels by hand, 64 B, spin", chans);
    show("floor/futex_pingpong (sleep, wake)", futex);
    show("floor/one_line, 48 B each way", payload48);
    show("call slot alone, 48 B (protocol only)", slot48);
    show("call slot alone, 64 B (protocol only)", slot64);
    show("call_into/recv_into 48 B, spin", run(&|| rpc_calls(WaitPolicy::Spin, 48, calls, true)));
    show("call_into/recv_into 64 B, spin", run(&|| rpc_calls(WaitPolicy::Spin, 64, calls, true)));
    for (label, policy, size) in [
        ("RpcClient::call 48 B, spin", WaitPolicy::Spin, 48),
        ("RpcClient::call 64 B, spin", WaitPolicy::Spin, 64),
        ("RpcClient::call 64 B, adaptive", WaitPolicy::default(), 64),
        ("RpcClient::call 64 B, block", WaitPolicy::Block, 64),
    ] {
        let n = if policy == WaitPolicy::Block { calls / 4 } else { calls };
        show(label, run(&|| rpc(policy, size, n)));
    }
    let ms = big_reply(rounds);
    println!("8 MB reply (call \"get\" -> 8 MB bytes): {ms:.2} ms median");
}
