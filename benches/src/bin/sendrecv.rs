//! Same-thread send + zero-copy receive of 64-byte messages, for instruction counts:
//! `valgrind --tool=callgrind target/release/sendrecv 100000`.
fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let (mut tx, mut rx) = shmplane::channel(1 << 20).expect("channel");
    let msg = [7u8; 64];
    let mut sum = 0u64;
    for _ in 0..n {
        tx.send(&msg).expect("send");
        let m = rx.try_peek().expect("recv");
        sum += u64::from(m[0]);
    }
    println!("{sum}");
}
