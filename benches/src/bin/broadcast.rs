//! Broadcast throughput: one publisher process to N subscriber processes (forked),
//! 64-byte messages; and an 8 MB message to N subscribers against one copy.
//!
//! `target/release/broadcast [subscribers=1,2,4] [messages=2000000]
//! [policy=adaptive|spin|block] [rounds=3] [lossy=0|1]`. Prints, per round, the
//! slowest subscriber's msg/s (each subscriber receives every message; lossy: counting
//! the messages it missed as handled) and the median;
//! then the 8 MB case: time until the last subscriber has its copy, median of 15,
//! next to one `copy_from_slice` of 8 MB in this process.
use shmplane::{Error, Publisher, Subscriber, Wait, WaitPolicy};
use shmplane_benches::{fork_child, reap};
use std::io::{Read, Write};
use std::os::fd::IntoRawFd;
use std::time::{Duration, Instant};

fn policy(name: &str) -> WaitPolicy {
    match name {
        "spin" => WaitPolicy::Spin,
        "block" => WaitPolicy::Block,
        _ => WaitPolicy::default(),
    }
}

/// A child's end of a pipe, by descriptor number (a fork child's closure takes a copy
/// of the number; the parent closes its own with [`close`]).
fn writer(fd: i32) -> std::fs::File {
    use std::os::fd::FromRawFd;
    // SAFETY: in the child, `fd` is the inherited write end that nothing else owns.
    unsafe { std::fs::File::from_raw_fd(fd) }
}

/// Close the parent's copy of a child's pipe end.
fn close(fd: i32) {
    // SAFETY: `fd` is a descriptor of ours that nothing else uses.
    unsafe { libc::close(fd) };
}

/// A pipe to report results from a child: `(read end, write end)`.
fn pipe() -> (std::fs::File, std::fs::File) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two descriptors for pipe(2) to fill.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    use std::os::fd::FromRawFd;
    // SAFETY: pipe(2) returned two new descriptors that nothing else owns.
    unsafe { (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1])) }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let subs: Vec<usize> = args.get(1).map_or("1,2,4", String::as_str).split(',').map(|s| s.parse().expect("subscribers")).collect();
    let messages: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(2_000_000);
    let pol = policy(args.get(3).map_or("adaptive", String::as_str));
    let rounds: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(3);
    let lossy = args.get(5).is_some_and(|a| a == "1");
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("broadcast: 64-byte messages, {messages} per round, policy {pol:?}, lossy {lossy}, {cpus} CPUs");

    for &n in &subs {
        let mut rates = Vec::new();
        for round in 0..rounds {
            let name = format!("bench-bcast-{}-{n}-{round}", std::process::id());
            let mut publisher = Publisher::create_with(&name, 1 << 20, n.max(1), lossy).expect("publisher");
            publisher.set_wait_policy(pol);
            let mut ends = Vec::new();
            let pids: Vec<_> = (0..n)
                .map(|_| {
                    let (r, w) = pipe();
                    let (ready_r, ready_w) = pipe();
                    let (w, ready_w) = (w.into_raw_fd(), ready_w.into_raw_fd());
                    let name = name.clone();
                    let pid = fork_child(move || {
                        let (mut w, mut ready_w) = (writer(w), writer(ready_w));
                        let mut rx = Subscriber::open(&name).expect("subscribe");
                        rx.set_wait_policy(pol);
                        ready_w.write_all(b"r").expect("ready");
                        let mut buf = [0u8; 64];
                        let deadline = Instant::now() + Duration::from_secs(120);
                        let mut got = 0u64;
                        let mut start = None;
                        loop {
                            match rx.begin(Wait::until(deadline)) {
                                Ok(incoming) => {
                                    start.get_or_insert_with(Instant::now);
                                    match incoming.read_payload_into(buf.as_mut_slice().into(), Wait::no_wait()) {
                                        Ok(()) if buf[0] == 0xff => break,
                                        Ok(()) => got += 1,
                                        // Lossy: overwritten while we copied it out.
                                        Err(Error::Lagged { missed }) => got += missed,
                                        Err(e) => panic!("{e}"),
                                    }
                                }
                                Err(Error::Lagged { missed }) => got += missed,
                                Err(e) => panic!("{e}"),
                            }
                        }
                        let secs = start.expect("received").elapsed().as_secs_f64();
                        w.write_all(&(got as f64 / secs).to_le_bytes()).expect("report");
                    });
                    close(w);
                    close(ready_w);
                    let mut b = [0u8; 1];
                    ready_r.take(1).read_exact(&mut b).expect("subscriber ready");
                    ends.push(r);
                    pid
                })
                .collect();
            let msg = [7u8; 64];
            for _ in 0..messages {
                publisher.send(&msg).expect("send");
            }
            publisher.send(&[0xff; 64]).expect("end");
            let mut slowest = f64::MAX;
            for mut r in ends {
                let mut b = [0u8; 8];
                r.read_exact(&mut b).expect("result");
                slowest = slowest.min(f64::from_le_bytes(b));
            }
            for pid in pids {
                reap(pid);
            }
            println!("  {n} subscribers, round {round}: {:.2} M msg/s per subscriber (the slowest)", slowest / 1e6);
            rates.push(slowest);
            publisher.close();
        }
        rates.sort_by(f64::total_cmp);
        println!("1 publisher -> {n} subscribers: median {:.2} M msg/s per subscriber", rates[rates.len() / 2] / 1e6);
    }

    // 8 MB to N subscribers, one at a time (each subscriber acks on a pipe).
    let big = vec![3u8; 8 << 20];
    let mut dst = vec![0u8; 8 << 20];
    let mut copies = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        dst.copy_from_slice(std::hint::black_box(&big));
        std::hint::black_box(&mut dst);
        copies.push(t.elapsed().as_secs_f64() * 1e3);
    }
    copies.sort_by(f64::total_cmp);
    let floor = copies[copies.len() / 2];
    println!("8 MB: one copy_from_slice here {floor:.3} ms (median of 15)");
    for &n in &subs {
        let name = format!("bench-bcast-big-{}-{n}", std::process::id());
        let ring: u32 = std::env::var("BCAST_BIG_RING_LOG2").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
        let mut publisher = Publisher::create_with(&name, 1 << ring, n.max(1), false).expect("publisher");
        publisher.set_wait_policy(pol);
        let mut acks = Vec::new();
        let pids: Vec<_> = (0..n)
            .map(|_| {
                let (r, w) = pipe();
                let name = name.clone();
                let (ready_r, ready_w) = pipe();
                let (w, ready_w) = (w.into_raw_fd(), ready_w.into_raw_fd());
                let pid = fork_child(move || {
                    let (mut w, mut ready_w) = (writer(w), writer(ready_w));
                    let mut rx = Subscriber::open(&name).expect("subscribe");
                    rx.set_wait_policy(pol);
                    ready_w.write_all(b"r").expect("ready");
                    let mut out = vec![0u8; 8 << 20];
                    for _ in 0..15 {
                        let incoming = rx.begin(Wait::timeout(Duration::from_secs(60))).expect("recv");
                        incoming.read_payload_into(out.as_mut_slice().into(), Wait::timeout(Duration::from_secs(60))).expect("read");
                        w.write_all(b"a").expect("ack");
                    }
                });
                close(w);
                close(ready_w);
                let mut b = [0u8; 1];
                ready_r.take(1).read_exact(&mut b).expect("subscriber ready");
                acks.push(r);
                pid
            })
            .collect();
        let mut times = Vec::new();
        for _ in 0..15 {
            let t = Instant::now();
            publisher.send(&big).expect("send");
            for r in &mut acks {
                let mut b = [0u8; 1];
                r.read_exact(&mut b).expect("ack");
            }
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        for pid in pids {
            reap(pid);
        }
        publisher.close();
        times.sort_by(f64::total_cmp);
        let p50 = times[times.len() / 2];
        println!("8 MB to {n} subscribers: p50 {p50:.3} ms until the last has its copy ({:.2}x one copy)", p50 / floor);
    }
}
