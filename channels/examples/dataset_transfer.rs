//! Dataset transfer: a producer process streams float64 arrays to a consumer process,
//! zero-copy on both sides.
//!
//! The consumer (the process you start) creates channel `dataset-transfer-rs-<pid>`
//! with a ring large enough for a few arrays and starts the producer (this program
//! again, `--role producer`), which opens the channel by name. For each array the
//! producer borrows ring space shaped as a `(N,)` `<f8` array
//! ([`Sender::loan_message`] of [`Outgoing::array_lent`]), fills it in place, commits
//! it, and sends a 16-byte note with the array's index and checksum. The consumer
//! looks at each array where it lies in shared memory ([`Receiver::peek`]), computes
//! its checksum there, releases it, and compares with the note. A Python receiver gets
//! the same messages as numpy arrays (`rx.recv(copy=False)`).
//!
//! Run: `cargo run --release -p shmplane --example dataset_transfer [-- [--quick] [--arrays N]]`
//! (default 64 arrays of 8 MB; `--quick`: 4 arrays of 1 MiB).
//!
//! Prints one line per array for the first three (index, shape, dtype, checksum), then
//! the count, and the throughput in MB/s from the first array's arrival to the last
//! one's release (measured, never checked: it depends on the machine and the build),
//! and `dataset_transfer: ok`. Exits 1 with a message if an array is missing, out of
//! order or differs from what was sent; every wait has a timeout and each process a
//! watchdog. The channel is removed when both processes have closed it.

mod support;

use shmplane::frame::{ArrayMeta, Element, Order, Outgoing};
use shmplane::{Error, Receiver, Sender, Wait};
use std::time::{Duration, Instant};
use support::{checksum, ensure, fail, Args, Context, Failure, Peer, Result};

/// How long any one wait for the other process may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The watchdog's limit in seconds: (with `--quick`, without).
const WATCHDOG: (u64, u64) = (60, 600);

fn main() {
    support::main("dataset_transfer", "consumer", &["--arrays"], |args| match args.role.as_deref() {
        None => consumer(args),
        Some("producer") => producer(args),
        Some(other) => fail(format!("unknown role {other:?}")),
    });
}

/// The note sent after array `index`: its index and its checksum, little-endian.
fn note(index: u64, sum: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&index.to_le_bytes());
    b[8..].copy_from_slice(&sum.to_le_bytes());
    b
}

/// The index and checksum in a note.
fn read_note(bytes: &[u8]) -> Result<(u64, u64)> {
    let Ok(note) = <[u8; 16]>::try_from(bytes) else { return fail(format!("a note of {} bytes, expected 16", bytes.len())) };
    let (index, sum) = note.split_at(8);
    Ok((u64::from_le_bytes(index.try_into().expect("8 bytes")), u64::from_le_bytes(sum.try_into().expect("8 bytes"))))
}

/// Array `index`'s values: pseudo-random numbers in [0, 1) (xorshift64*), a stand-in
/// for a measured dataset.
fn fill(values: &mut [f64], index: u64) {
    let mut x = 0x9e37_79b9_7f4a_7c15 ^ (index + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    for v in values {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        *v = (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64;
    }
}

fn consumer(args: &Args) -> Result<()> {
    args.watchdog("dataset_transfer consumer", WATCHDOG);
    let arrays: u64 = args.option("--arrays")?.unwrap_or(if args.quick { 4 } else { 64 });
    let elements = if args.quick { 1 << 17 } else { 1_000_000 };
    let bytes = elements * size_of::<f64>();
    // Room for several arrays at once, so that the producer fills the next while the
    // consumer reads this one; each array is one record (the array header, then the data).
    let ring = (bytes + 4096).next_power_of_two() * 4;
    let name = format!("dataset-transfer-rs-{}", std::process::id());
    let mut rx = Receiver::create(&name, ring).context(format!("creating channel {name}"))?;
    let producer = Peer::spawn(args, "producer", &[name.clone(), arrays.to_string(), elements.to_string()])?;
    println!(
        "consumer: channel {name} (ring {} MiB); producer pid {} sends {arrays} float64 arrays of {elements} elements ({:.1} MB each), written in place",
        ring >> 20,
        producer.pid(),
        bytes as f64 / 1e6
    );

    let mut received = 0u64;
    let (mut first_at, mut last_at): (Option<Instant>, Option<Instant>) = (None, None);
    loop {
        // Zero-copy: `msg` is the array where the producer wrote it.
        let msg = match rx.peek(Some(TIMEOUT)) {
            Ok(msg) => msg,
            Err(Error::Disconnected { .. }) => break, // the producer closed: end of stream
            Err(e) => return fail(format!("waiting for array {received}: {e}")),
        };
        first_at.get_or_insert_with(Instant::now);
        let meta = msg.head().array().cloned().ok_or_else(|| Failure(format!("message {received} is not an array")))?;
        ensure(meta.descr == f64::DESCR && meta.shape == [elements], || {
            format!("array {received} is {} {:?}, expected {} [{elements}]", meta.descr, meta.shape, f64::DESCR)
        })?;
        let words: &[u64] = bytemuck::try_cast_slice(msg.part(0)).context(format!("array {received}'s data as 64-bit words"))?;
        let sum = checksum(words);
        drop(msg); // released: the producer may reuse its space

        let got = rx.recv_timeout(TIMEOUT).context(format!("waiting for the note of array {received}"))?;
        let (index, noted) = read_note(&got)?;
        ensure(index == received && noted == sum, || {
            format!("array {received} has checksum {sum:016x}; the producer's note says array {index}, checksum {noted:016x}")
        })?;
        if received < 3 {
            println!("consumer: array {received}: ({elements},) {} checksum {sum:016x} matches", meta.descr);
        }
        received += 1;
        last_at = Some(Instant::now());
    }
    let elapsed = match (first_at, last_at) {
        (Some(first), Some(last)) => last - first,
        _ => Duration::ZERO,
    };
    ensure(received == arrays, || format!("the producer closed after {received} of {arrays} arrays"))?;
    producer.wait(TIMEOUT)?;
    // From the first array's arrival: the arrays after it, each filled, sent, checked.
    let mb = (received.saturating_sub(1) * bytes as u64) as f64 / 1e6;
    println!("consumer: {received} arrays received, every checksum matched");
    println!(
        "consumer: {mb:.1} MB after the first array in {:.3} s: {:.0} MB/s{}",
        elapsed.as_secs_f64(),
        mb / elapsed.as_secs_f64().max(1e-9),
        support::build_note()
    );
    rx.close();
    println!("dataset_transfer: ok");
    Ok(())
}

fn producer(args: &Args) -> Result<()> {
    args.watchdog("dataset_transfer producer", WATCHDOG);
    let name: String = args.value(0, "channel name")?;
    let arrays: u64 = args.value(1, "array count")?;
    let elements: usize = args.value(2, "elements per array")?;
    let mut tx = Sender::open(&name).context(format!("opening channel {name} as its sender"))?;
    let meta = ArrayMeta::new(f64::DESCR, &[elements], Order::C).context("describing the array")?;
    let shape = Outgoing::array_lent(&meta).context("laying out the array message")?;
    let started = Instant::now();
    for i in 0..arrays {
        // Ring space for the whole array (one record), waiting for the consumer to
        // release earlier ones if the ring is full.
        let loan = tx.loan_message(&shape, Wait::timeout(TIMEOUT)).context(format!("borrowing ring space for array {i}"))?;
        let values: &mut [f64] = match bytemuck::try_cast_slice_mut(tx.loaned_bytes(&loan)) {
            Ok(values) => values,
            Err(e) => {
                tx.abort_loan(loan);
                return fail(format!("array {i}'s loaned bytes as f64: {e}"));
            }
        };
        fill(values, i);
        let sum = checksum(bytemuck::cast_slice(values));
        tx.commit_loan(loan).context(format!("publishing array {i}"))?;
        tx.send_timeout(&note(i, sum), TIMEOUT).context(format!("sending the note of array {i}"))?;
    }
    println!("producer: {arrays} arrays written in place and sent in {:.3} s; closing", started.elapsed().as_secs_f64());
    tx.close();
    Ok(())
}
