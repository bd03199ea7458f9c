//! Broadcast: one publisher process, several subscriber processes, every message
//! written once.
//!
//! The publisher (the process you start) creates the lossless broadcast
//! `broadcast-rs-<pid>` ([`Publisher::create_with`]) and a [`Mailbox`] for the
//! subscribers' reports, starts N subscribers (this program again, `--role
//! subscriber`), and waits until all have joined by name ([`Subscriber::open`];
//! [`Publisher::subscribers`] counts them): a subscriber receives what is published
//! after it joined. It then publishes a header, a stream of small float64 arrays whose
//! first element is their sequence number, and one large array (8 MB; streamed through
//! the 1 MiB ring in chunks), and closes. Each subscriber receives everything until
//! the publisher's close ([`Error::Disconnected`]), checks the order, and reports a
//! checksum of all it received through the mailbox; the publisher compares each with
//! its own. The publisher reuses ring space only once every live subscriber has read
//! it, so the slowest one sets the pace.
//!
//! Run: `cargo run --release -p shmplane --example broadcast [-- [--quick] [--subscribers N]]`
//! (default 3 subscribers, 1000 arrays of 1000 elements and one of 1,000,000;
//! `--quick`: 100 arrays and one of 131,072).
//!
//! Prints each subscriber's join and report, how long publishing took (measured, never
//! checked), `all N subscribers received the same dataset` and `broadcast: ok`. Exits 1
//! with a message if a subscriber misses a message, sees one out of order or reports
//! another checksum; every wait has a timeout and each process a watchdog. Both
//! segments are removed when their last handle closes.

mod support;

use shmplane::frame::{ArrayMeta, Element, Order, Outgoing};
use shmplane::{Error, Frame, Mailbox, Publisher, Sender, Subscriber, Wait};
use std::time::{Duration, Instant};
use support::{checksum, ensure, fail, Args, Context, Peer, Result};

/// How long any one wait for another process may take.
const TIMEOUT: Duration = Duration::from_secs(30);

fn main() {
    support::main("broadcast", "publisher", &["--subscribers"], |args| match args.role.as_deref() {
        None => publisher(args),
        Some("subscriber") => subscriber(args),
        Some(other) => fail(format!("unknown role {other:?}")),
    });
}

/// The watchdog's limit in seconds: (with `--quick`, without).
const WATCHDOG: (u64, u64) = (60, 300);

/// Message `seq` of the stream: `elements` float64 values, the first its sequence
/// number, the others pseudo-random.
fn message(seq: u64, elements: usize) -> Vec<f64> {
    let mut x = (seq + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut v: Vec<f64> = (0..elements)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect();
    v[0] = seq as f64;
    v
}

/// The running checksum of a stream after one more message (`values`).
fn fold(digest: u64, values: &[f64]) -> u64 {
    checksum(&[digest, checksum(bytemuck::cast_slice(values))])
}

fn publisher(args: &Args) -> Result<()> {
    args.watchdog("broadcast publisher", WATCHDOG);
    let n: usize = args.option("--subscribers")?.unwrap_or(3);
    ensure((1..=64).contains(&n), || format!("--subscribers {n}: between 1 and 64"))?;
    let (messages, elements, large) = if args.quick { (100u64, 1000, 1 << 17) } else { (1000, 1000, 1_000_000) };
    let name = format!("broadcast-rs-{}", std::process::id());
    let results_name = format!("{name}.results");
    let mut publisher = Publisher::create_with(&name, 1 << 20, n, false).context(format!("creating broadcast {name}"))?;
    let mut results = Mailbox::create(&results_name, 4096, n).context(format!("creating mailbox {results_name}"))?;
    let mut subscribers = Vec::new();
    for k in 0..n {
        subscribers.push(Peer::spawn(args, "subscriber", &[name.clone(), k.to_string()])?);
    }
    // A subscriber receives what is published after it joined: wait for all of them.
    let deadline = Instant::now() + TIMEOUT;
    while publisher.subscribers() < n {
        for s in &mut subscribers {
            s.check_running()?;
        }
        ensure(Instant::now() < deadline, || format!("only {} of {n} subscribers joined in {} s", publisher.subscribers(), TIMEOUT.as_secs()))?;
        std::thread::sleep(Duration::from_millis(2));
    }
    println!("publisher: {n} subscribers joined {name}; publishing {messages} arrays of {elements} float64 and one of {large}");

    let started = Instant::now();
    let header = format!("dataset {messages} {elements} {large}");
    publisher.send_timeout(header.as_bytes(), TIMEOUT).context("publishing the header")?;
    let mut digest = checksum(&[]);
    for seq in 0..=messages {
        // The last one is the large array.
        let values = message(seq, if seq == messages { large } else { elements });
        let meta = ArrayMeta::new(f64::DESCR, &[values.len()], Order::C).context("describing the array")?;
        let array = Outgoing::array(&meta, bytemuck::cast_slice(&values)).context("laying out the array")?;
        // Waits while the slowest subscriber has not read what the ring must reuse.
        publisher.send_message(&array, Wait::timeout(TIMEOUT)).context(format!("publishing array {seq}"))?;
        digest = fold(digest, &values);
    }
    let took = started.elapsed();
    publisher.close(); // the subscribers see the end of the stream
    println!(
        "publisher: {} messages, {:.1} MB, published in {:.1} ms, each written once for {n} subscribers{}",
        messages + 2,
        ((messages as usize * elements + large) * size_of::<f64>()) as f64 / 1e6,
        took.as_secs_f64() * 1e3,
        support::build_note()
    );

    for _ in 0..n {
        let got = results.recv_timeout(TIMEOUT).context("waiting for a subscriber's report")?;
        let line = String::from_utf8(got).context("a report that is not UTF-8")?;
        let f: Vec<&str> = line.split(' ').collect();
        let [k, count, sum] = f.as_slice() else { return fail(format!("unexpected report {line:?}")) };
        ensure(*count == (messages + 2).to_string() && *sum == format!("{digest:016x}"), || {
            format!("subscriber {k} received {count} messages with checksum {sum}; published {} with {digest:016x}", messages + 2)
        })?;
        println!("publisher: subscriber {k} reports {count} messages, checksum {sum}: same as published");
    }
    for s in subscribers {
        s.wait(TIMEOUT)?;
    }
    results.close();
    println!("all {n} subscribers received the same dataset");
    println!("broadcast: ok");
    Ok(())
}

fn subscriber(args: &Args) -> Result<()> {
    args.watchdog("broadcast subscriber", WATCHDOG);
    let name: String = args.value(0, "broadcast name")?;
    let k: usize = args.value(1, "subscriber number")?;
    let mut rx = Subscriber::open(&name).context(format!("joining broadcast {name}"))?;
    let mut report = Sender::open(&format!("{name}.results")).context("joining the results mailbox")?;
    println!("subscriber {k} (pid {}): joined {name} in slot {}", std::process::id(), rx.index().unwrap_or(0));

    // The header says what follows: "dataset MESSAGES ELEMENTS LARGE".
    let header = match rx.recv_frame(Wait::timeout(TIMEOUT)).context("waiting for the header")? {
        Frame::Bytes(b) => String::from_utf8(b).context("a header that is not UTF-8")?,
        other => return fail(format!("expected the header, got {other:?}")),
    };
    let sizes: Vec<u64> = header.split(' ').skip(1).map(str::parse).collect::<std::result::Result<_, _>>().context(format!("header {header:?}"))?;
    let [messages, elements, large] = sizes[..] else { return fail(format!("header {header:?}: expected 3 numbers")) };
    let mut digest = checksum(&[]);
    let mut seq = 0u64;
    loop {
        let frame = match rx.recv_frame(Wait::timeout(TIMEOUT)) {
            Ok(frame) => frame,
            Err(Error::Disconnected { .. }) => break, // the publisher closed: that was all
            Err(e) => return fail(format!("waiting for array {seq}: {e}")),
        };
        let Frame::Array(a) = frame else { return fail(format!("message {seq} is not an array")) };
        let values = a.to_vec::<f64>().context(format!("array {seq}"))?;
        let len = if seq == messages { large } else { elements };
        ensure(values.len() as u64 == len && values.first() == Some(&(seq as f64)), || {
            format!("expected array {seq} of {len} values, got {} values starting with {:?}", values.len(), values.first())
        })?;
        digest = fold(digest, &values);
        seq += 1;
    }
    ensure(seq == messages + 1, || format!("the stream ended after {seq} of {} arrays", messages + 1))?;
    // The header, then the arrays.
    let count = seq + 1;
    println!("subscriber {k}: the header and {seq} arrays received in order, as the header announced");
    report.send_timeout(format!("{k} {count} {digest:016x}").as_bytes(), TIMEOUT).context("reporting")?;
    report.close();
    rx.close();
    Ok(())
}
