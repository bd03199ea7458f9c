//! Cross-process ping-pong of `SIZE`-byte messages (spin policy), for profilers and for
//! comparing payload sizes: `target/release/pingpong [SIZE] [ROUNDS]`. Prints the round
//! trip in ns (median of 5 batches).
use shmplane_benches::Child;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let size: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let rounds: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let mut child = Child::spawn(&format!("pp-{}", std::process::id()), 1 << 16, Child::echo);
    let msg = vec![7u8; size];
    let mut batches = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..rounds {
            child.tx.send(&msg).expect("send");
            drop(child.rx.peek(None).expect("pong"));
        }
        batches.push(start.elapsed().as_nanos() as f64 / f64::from(rounds));
    }
    batches.sort_by(f64::total_cmp);
    println!("{size} B round trip: {:.0} ns (batches {:.0}..{:.0})", batches[2], batches[0], batches[4]);
}
