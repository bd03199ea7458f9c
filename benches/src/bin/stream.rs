//! Cross-process one-way stream of 64-byte messages (spin policy), for profilers:
//! `perf record -e cpu-clock -- target/release/stream 50000000`. Prints ns/message.
use shmplane::{Receiver, Sender, WaitPolicy};
use std::time::{Duration, Instant};

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20_000_000);
    let (data_name, ack_name) = (format!("stream-{}-d", std::process::id()), format!("stream-{}-a", std::process::id()));
    let mut data = Sender::create(&data_name, 1 << 20).expect("data");
    let mut acks = Receiver::create(&ack_name, 1 << 12).expect("acks");
    data.set_wait_policy(WaitPolicy::Spin);
    let child = shmplane_benches::fork_child(|| {
        let mut rx = Receiver::open(&data_name).expect("open data");
        let mut tx = Sender::open(&ack_name).expect("open ack");
        rx.set_wait_policy(WaitPolicy::Spin);
        loop {
            let msg = rx.peek(None).expect("recv");
            if msg.tag() == 1 {
                drop(msg);
                tx.send(b"done").expect("ack");
            }
        }
    });
    let msg = [7u8; 64];
    for round in 0..3 {
        let start = Instant::now();
        for _ in 0..n {
            data.send(&msg).expect("send");
        }
        let mut loan = data.loan(0, None).expect("marker");
        loan.set_tag(1).expect("tag");
        loan.commit();
        acks.recv_timeout(Duration::from_secs(60)).expect("ack");
        let ns = start.elapsed().as_nanos() as f64 / n as f64;
        println!("round {round}: {ns:.1} ns/msg = {:.1} M msg/s", 1e3 / ns);
    }
    shmplane_benches::reap(child);
    drop((data, acks));
    let _ = std::fs::remove_file(format!("/dev/shm/shmplane.{data_name}"));
    let _ = std::fs::remove_file(format!("/dev/shm/shmplane.{ack_name}"));
}
