//! shmplane's ring across two processes (parent + forked child), beside the floor:
//! a cache-line ping-pong between the two processes through shared memory.
//!
//! - `floor/cacheline_pingpong`: one round trip of a 64-byte line (store, remote load).
//!   Both directions use the same line, so each hop moves the line with ownership
//!   (migratory sharing): one transfer per hop.
//! - `floor/two_line_pingpong`: the same with one line per direction, as any two
//!   channels have: each hop is an invalidation of the reader's copy plus a transfer,
//!   so this is the floor of a request/reply over two SPSC rings.
//! - `ring/pingpong_64B_spin`: send 64 B, child echoes it back on a second channel: a
//!   round trip; one-way latency = half.
//! - `floor/line_stream`: one-way stream of 64-byte lines, each carrying a sequence
//!   number the reader spins on: the throughput floor of moving 64 bytes across cores.
//! - `ring/stream_64B_spin`: one-way stream of 64-byte messages (throughput).
//!
//! Run: `cargo bench -p shmplane-benches --bench ring`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shmplane_benches::{self as support, Child};
use shmplane_shm::region::{Region, ShmFile};
use shmplane_shm::sync::{AtomicU64, Ordering};
use std::time::Instant;

fn name(tag: &str) -> String {
    format!("bench-{}-{tag}", std::process::id())
}

fn floor(c: &mut Criterion) {
    let n = name("line");
    let file = ShmFile::create(&n, 4096).expect("create");
    let region = Region::map(&file, 4096).expect("map");
    // SAFETY: offset 128 is 8-aligned and inside the 4 KiB region; AtomicU64 only.
    let word: &AtomicU64 = unsafe { region.at(128) };
    let child = support::fork_child(|| {
        let mut expect = 1;
        loop {
            while word.load(Ordering::Acquire) != expect {
                std::hint::spin_loop();
            }
            word.store(expect + 1, Ordering::Release);
            expect += 2;
        }
    });
    let mut next = 1u64;
    c.bench_function("floor/cacheline_pingpong", |b| {
        b.iter(|| {
            word.store(next, Ordering::Release);
            while word.load(Ordering::Acquire) != next + 1 {
                std::hint::spin_loop();
            }
            next += 2;
        })
    });
    support::reap(child);
    file.unlink_if_same(&n);
}

fn two_line_floor(c: &mut Criterion) {
    let n = name("line2");
    let file = ShmFile::create(&n, 4096).expect("create");
    let region = Region::map(&file, 4096).expect("map");
    // SAFETY: offsets 128 and 1024 are 8-aligned, inside the 4 KiB region, on different
    // 128-byte line pairs; AtomicU64 only.
    let (ping, pong): (&AtomicU64, &AtomicU64) = unsafe { (region.at(128), region.at(1024)) };
    let child = support::fork_child(|| {
        let mut expect = 1;
        loop {
            while ping.load(Ordering::Acquire) != expect {
                std::hint::spin_loop();
            }
            pong.store(expect, Ordering::Release);
            expect += 1;
        }
    });
    let mut next = 1u64;
    c.bench_function("floor/two_line_pingpong", |b| {
        b.iter(|| {
            ping.store(next, Ordering::Release);
            while pong.load(Ordering::Acquire) != next {
                std::hint::spin_loop();
            }
            next += 1;
        })
    });
    support::reap(child);
    file.unlink_if_same(&n);
}

fn line_stream(c: &mut Criterion) {
    const LINES: u64 = 16 << 10; // 1 MiB of 64-byte lines
    const ACK_EVERY: u64 = 1024;
    let n = name("lines");
    let len = (LINES as usize + 2) * 64;
    let file = ShmFile::create(&n, len as u64).expect("create");
    let region = Region::map(&file, len).expect("map");
    // SAFETY: 8-aligned offsets inside the region; AtomicU64 only.
    let word = |line: u64, w: u64| -> &AtomicU64 { unsafe { region.at(((line * 8 + w) * 8) as usize) } };
    let consumed = word(LINES, 0);
    let child = support::fork_child(|| {
        let mut seq = 0u64;
        let mut sum = 0u64;
        loop {
            let line = seq % LINES;
            while word(line, 7).load(Ordering::Acquire) != seq + 1 {
                std::hint::spin_loop();
            }
            for w in 0..7 {
                sum = sum.wrapping_add(word(line, w).load(Ordering::Relaxed));
            }
            seq += 1;
            if seq % ACK_EVERY == 0 {
                consumed.store(seq, Ordering::Release);
            }
            std::hint::black_box(sum);
        }
    });
    let mut seq = 0u64;
    let mut group = c.benchmark_group("floor");
    group.throughput(Throughput::Elements(1));
    group.bench_function("line_stream", |b| {
        b.iter_custom(|iters| {
            let iters = iters.next_multiple_of(ACK_EVERY);
            let start = Instant::now();
            for _ in 0..iters {
                while seq - consumed.load(Ordering::Acquire) >= LINES - ACK_EVERY {
                    std::hint::spin_loop();
                }
                let line = seq % LINES;
                for w in 0..7 {
                    word(line, w).store(seq, Ordering::Relaxed);
                }
                word(line, 7).store(seq + 1, Ordering::Release);
                seq += 1;
            }
            while consumed.load(Ordering::Acquire) != seq {
                std::hint::spin_loop();
            }
            start.elapsed()
        })
    });
    group.finish();
    support::reap(child);
    file.unlink_if_same(&n);
}

fn same_thread(c: &mut Criterion) {
    let (mut tx, mut rx) = shmplane::channel(1 << 20).expect("channel");
    let msg = [7u8; 64];
    c.bench_function("ring/same_thread_send_recv_64B", |b| {
        b.iter(|| {
            tx.send(&msg).expect("send");
            drop(rx.try_peek().expect("recv"));
        })
    });
}

fn ring(c: &mut Criterion) {
    // Ping-pong: the child echoes each message back on the second channel.
    let mut child = Child::spawn(&name("ping"), 1 << 16, Child::echo);
    let msg = [7u8; 64];
    c.bench_function("ring/pingpong_64B_spin", |b| {
        b.iter(|| {
            child.tx.send(&msg).expect("send");
            drop(child.rx.peek(None).expect("pong"));
        })
    });
    drop(child);

    // Stream: parent sends `iters` messages, then an end marker the child acks.
    let mut child = Child::spawn(&name("data"), 1 << 20, Child::sink);
    let mut group = c.benchmark_group("ring");
    group.throughput(Throughput::Elements(1));
    group.bench_function("stream_64B_spin", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                child.tx.send(&msg).expect("send");
            }
            child.finish_stream();
            start.elapsed()
        })
    });
    group.finish();
}

/// Remove this run's segments. A child killed before it attached leaves its role
/// vacant, which by design reads as "waiting for a peer", not stale, so gc keeps it.
fn cleanup(_: &mut Criterion) {
    let prefix = format!("shmplane.bench-{}-", std::process::id());
    for entry in std::fs::read_dir("/dev/shm").into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

criterion_group!(benches, floor, two_line_floor, line_stream, same_thread, ring, cleanup);
criterion_main!(benches);
