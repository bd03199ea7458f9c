//! Mailbox throughput: N producer processes (forked) send 64-byte messages to one
//! consumer; and the cost of the empty check.
//!
//! `target/release/mailbox [producers=1,2,4] [messages per producer=2000000]
//! [policy=adaptive|spin|block] [rounds=3]`. Prints total msg/s per round and the median.
//! `target/release/mailbox cpu [batches=2000]`: the CPU cost of a send and of a receive
//! in one thread (batches of 500 messages; for `valgrind --tool=callgrind`).
use shmplane::{Mailbox, Sender, Wait, WaitPolicy};
use shmplane_benches::{fork_child, reap};
use std::time::{Duration, Instant};

fn policy(name: &str) -> WaitPolicy {
    match name {
        "spin" => WaitPolicy::Spin,
        "block" => WaitPolicy::Block,
        _ => WaitPolicy::default(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("cpu") {
        cpu_cost(args.get(2).and_then(|a| a.parse().ok()).unwrap_or(2000));
        return;
    }
    let producers: Vec<usize> =
        args.get(1).map_or("1,2,4", String::as_str).split(',').map(|s| s.parse().expect("producers")).collect();
    let per: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(2_000_000);
    let pol = policy(args.get(3).map_or("adaptive", String::as_str));
    let rounds: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(3);
    println!("mailbox: 64-byte messages, {per} per producer, policy {pol:?}, {} CPUs", std::thread::available_parallelism().map_or(0, |n| n.get()));

    // The empty check: Mailbox::pending on an empty mailbox.
    if std::env::var_os("MAILBOX_SKIP_EMPTY").is_none() {
        let mb = Mailbox::new(1 << 16, 64).expect("mailbox");
        let mut best = f64::MAX;
        for _ in 0..5 {
            let n = 50_000_000u64;
            let start = Instant::now();
            let mut hits = 0u64;
            for _ in 0..n {
                hits += u64::from(std::hint::black_box(&mb).pending());
            }
            assert_eq!(hits, 0);
            best = best.min(start.elapsed().as_nanos() as f64 / n as f64);
        }
        println!("empty check: Mailbox::pending {best:.2} ns/call (64 lanes, best of 5)");
    }

    for &n in &producers {
        let mut rates = Vec::new();
        for round in 0..rounds {
            let name = format!("bench-mailbox-{}-{n}-{round}", std::process::id());
            let mut mb = Mailbox::create(&name, 1 << 16, 64).expect("mailbox");
            mb.set_wait_policy(pol);
            let pids: Vec<_> = (0..n)
                .map(|_| {
                    let name = name.clone();
                    fork_child(move || {
                        let mut tx = Sender::open(&name).expect("join");
                        tx.set_wait_policy(pol);
                        let msg = [7u8; 64];
                        for _ in 0..per {
                            tx.send(&msg).expect("send");
                        }
                        tx.close();
                    })
                })
                .collect();
            let total = per * n as u64;
            let mut buf = [0u8; 64];
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut start = None;
            for _ in 0..total {
                let incoming = mb.begin(Wait::until(deadline)).expect("recv");
                start.get_or_insert_with(Instant::now);
                incoming.read_payload_into(buf.as_mut_slice().into(), Wait::no_wait()).expect("read");
            }
            mb.settle();
            let secs = start.expect("received").elapsed().as_secs_f64();
            let rate = total as f64 / secs;
            println!("  {n} producers, round {round}: {:.2} M msg/s", rate / 1e6);
            rates.push(rate);
            for pid in pids {
                reap(pid);
            }
            mb.close();
            let _ = std::fs::remove_file(format!("/dev/shm/shmplane.{name}"));
        }
        rates.sort_by(f64::total_cmp);
        println!("{n} producers -> 1 consumer: median {:.2} M msg/s in total", rates[rates.len() / 2] / 1e6);
    }
}

/// Sends and receives in one thread, in batches of 500 (a 64 KiB lane holds them).
fn cpu_cost(batches: usize) {
    let mut mb = Mailbox::new(1 << 16, 64).expect("mailbox");
    let mut tx = mb.sender().expect("sender");
    let msg = [7u8; 64];
    let mut buf = [0u8; 64];
    let (mut send, mut recv) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..batches {
        let t = Instant::now();
        for _ in 0..500 {
            tx.try_send(&msg).expect("send");
        }
        send += t.elapsed();
        let t = Instant::now();
        for _ in 0..500 {
            let incoming = mb.begin(Wait::no_wait()).expect("recv");
            incoming.read_payload_into(buf.as_mut_slice().into(), Wait::no_wait()).expect("read");
        }
        recv += t.elapsed();
    }
    let n = (batches * 500) as f64;
    println!("one thread: send {:.1} ns, receive {:.1} ns per 64-byte message", send.as_nanos() as f64 / n, recv.as_nanos() as f64 / n);
}
