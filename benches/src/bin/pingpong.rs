//! Cross-process ping-pong of `SIZE`-byte messages (spin policy), for profilers and for
//! comparing payload sizes: `target/release/pingpong [SIZE] [ROUNDS]`. Prints the round
//! trip in ns (median of 5 batches).
use shmplane::{Receiver, Sender, WaitPolicy};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let size: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let rounds: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let pid = std::process::id();
    let (ping_name, pong_name) = (format!("pp-{pid}-ping"), format!("pp-{pid}-pong"));
    let mut ping = Sender::create(&ping_name, 1 << 16).expect("ping");
    let mut pong = Receiver::create(&pong_name, 1 << 16).expect("pong");
    ping.set_wait_policy(WaitPolicy::Spin);
    pong.set_wait_policy(WaitPolicy::Spin);
    let child = shmplane_benches::fork_child(|| {
        let mut rx = Receiver::open(&ping_name).expect("open ping");
        let mut tx = Sender::open(&pong_name).expect("open pong");
        rx.set_wait_policy(WaitPolicy::Spin);
        loop {
            let msg = rx.peek(None).expect("recv");
            tx.send(&msg).expect("echo");
        }
    });
    let msg = vec![7u8; size];
    let mut batches = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..rounds {
            ping.send(&msg).expect("send");
            drop(pong.peek(None).expect("pong"));
        }
        batches.push(start.elapsed().as_nanos() as f64 / f64::from(rounds));
    }
    batches.sort_by(f64::total_cmp);
    println!("{size} B round trip: {:.0} ns (batches {:.0}..{:.0})", batches[2], batches[0], batches[4]);
    shmplane_benches::reap(child);
    drop((ping, pong));
    let _ = std::fs::remove_file(format!("/dev/shm/shmplane.{ping_name}"));
    let _ = std::fs::remove_file(format!("/dev/shm/shmplane.{pong_name}"));
}
