//! Cross-process one-way stream of 64-byte messages (spin policy), for profilers:
//! `perf record -e cpu-clock -- target/release/stream 50000000`. Prints ns/message.
use shmplane_benches::Child;
use std::time::Instant;

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20_000_000);
    let mut child = Child::spawn(&format!("stream-{}", std::process::id()), 1 << 20, Child::sink);
    let msg = [7u8; 64];
    for round in 0..3 {
        let start = Instant::now();
        for _ in 0..n {
            child.tx.send(&msg).expect("send");
        }
        child.finish_stream();
        let ns = start.elapsed().as_nanos() as f64 / n as f64;
        println!("round {round}: {ns:.1} ns/msg = {:.1} M msg/s", 1e3 / ns);
    }
}
