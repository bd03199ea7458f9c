//! shmplane's latest-value slot (seqlock latch): read and write latency for 8 B, 64 B
//! and 4 KiB values, uncontended and while another process writes continuously, beside
//! the floor of one cache-line round trip (see `ring.rs`'s `floor/cacheline_pingpong`).
//!
//! Run: `cargo bench -p shmplane-benches --bench slot`.

use criterion::{criterion_group, criterion_main, Criterion};
use shmplane::{Pod, Slot};
use shmplane_benches as support;
use std::hint::black_box;

fn name(tag: &str) -> String {
    format!("bench-slot-{}-{tag}", std::process::id())
}

fn sized<T: Pod>(c: &mut Criterion, label: &str) {
    let n = name(label);
    let slot = Slot::<T>::create(&n, T::zeroed()).expect("slot");
    let value = T::zeroed();
    c.bench_function(&format!("slot/read_{label}"), |b| b.iter(|| black_box(slot.read().expect("read"))));
    c.bench_function(&format!("slot/write_{label}"), |b| b.iter(|| slot.write(black_box(&value)).expect("write")));
    // Reads while another process writes the same slot in a loop.
    let writer = support::fork_child(|| {
        let s = Slot::<T>::open(&n).expect("open");
        let v = T::zeroed();
        loop {
            s.write(&v).expect("write");
        }
    });
    c.bench_function(&format!("slot/read_{label}_while_writing"), |b| {
        b.iter(|| black_box(slot.read().expect("read")))
    });
    support::reap(writer);
}

fn slots(c: &mut Criterion) {
    sized::<u64>(c, "8B");
    sized::<[u64; 8]>(c, "64B");
    sized::<[u64; 512]>(c, "4KiB");
    shmplane::gc();
}

criterion_group!(benches, slots);
criterion_main!(benches);
