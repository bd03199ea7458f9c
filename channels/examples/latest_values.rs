//! Latest values: a writer process publishes a parameter vector, a reader process
//! follows it, and no read ever mixes two updates.
//!
//! The reader (the process you start) creates [`Slot`] `latest-values-rs-<pid>`
//! holding a `[f64; 16]` (Python opens it as `shmplane.RawArray('d', 16)`) and starts
//! the writer (this program again, `--role writer`), which opens it by name and writes
//! update 1, 2, ... N as fast as it can: update `k` is `[16k, 16k + 1, ..., 16k + 15]`,
//! so a read that mixed two updates would show. The reader sleeps in
//! [`Slot::wait_for_update`] until the version moves, reads the value and its version
//! together ([`Slot::read_versioned`]), and checks it, until it sees update N. A slot
//! keeps only the newest value: the reader sees the updates it has time for, and always
//! the last. Reads never block the writer (a seqlock: a reader that raced a write
//! retries), and never see a torn value.
//!
//! Run: `cargo run --release -p shmplane --example latest_values [-- --quick]`
//! (default 1,000,000 updates; `--quick`: 20,000).
//!
//! Prints how many times the reader woke, each time to a newer update (this varies
//! from run to run), `torn reads: 0`, the final value, and
//! `latest_values: ok`. Exits 1 with a message on a torn read, a value older than one
//! read before, or a missing final update; every wait has a timeout and each process a
//! watchdog. The slot is removed when both processes have closed it.

mod support;

use shmplane::{Error, Slot};
use std::time::{Duration, Instant};
use support::{ensure, fail, Args, Context, Peer, Result};

/// How long any one wait for the other process may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Elements of the parameter vector.
const WIDTH: usize = 16;

fn main() {
    support::main("latest_values", "reader", &[], |args| match args.role.as_deref() {
        None => reader(args),
        Some("writer") => writer(args),
        Some(other) => fail(format!("unknown role {other:?}")),
    });
}

/// The watchdog's limit in seconds: (with `--quick`, without).
const WATCHDOG: (u64, u64) = (60, 300);

/// Update `k` of the vector: every element says which update it belongs to.
fn vector(k: u64) -> [f64; WIDTH] {
    std::array::from_fn(|i| (k * WIDTH as u64 + i as u64) as f64)
}

/// Which update `v` is, or `None` if its elements come from different updates (torn).
fn update_of(v: &[f64; WIDTH]) -> Option<u64> {
    let k = (v[0] / WIDTH as f64) as u64;
    (*v == vector(k)).then_some(k)
}

fn writer(args: &Args) -> Result<()> {
    args.watchdog("latest_values writer", WATCHDOG);
    let name: String = args.value(0, "slot name")?;
    let updates: u64 = args.value(1, "update count")?;
    let params = Slot::<[f64; WIDTH]>::open(&name).context(format!("opening slot {name}"))?;
    let started = Instant::now();
    for k in 1..=updates {
        params.write(&vector(k)).context(format!("writing update {k}"))?;
    }
    println!("writer: {updates} updates written in {:.3} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn reader(args: &Args) -> Result<()> {
    args.watchdog("latest_values reader", WATCHDOG);
    let updates: u64 = if args.quick { 20_000 } else { 1_000_000 };
    let name = format!("latest-values-rs-{}", std::process::id());
    let params = Slot::<[f64; WIDTH]>::create(&name, vector(0)).context(format!("creating slot {name}"))?;
    let mut writer = Peer::spawn(args, "writer", &[name.clone(), updates.to_string()])?;
    println!("reader: slot {name} holds [f64; {WIDTH}]; writer pid {} publishes {updates} updates", writer.pid());

    let (mut since, mut last, mut seen) = (params.version().context("reading the version")?, 0u64, 0u64);
    let mut quiet_since = Instant::now();
    while last < updates {
        // Asleep until the writer's next write (or a spin, if one comes soon). A slot
        // has no owner to watch: between waits of a second, look at the writer's process.
        match params.wait_for_update(since, Some(Duration::from_secs(1))) {
            Ok(_) => quiet_since = Instant::now(),
            Err(Error::Timeout) => {
                writer.check_running()?;
                ensure(quiet_since.elapsed() < TIMEOUT, || format!("no update after update {last} for {} s", TIMEOUT.as_secs()))?;
                continue;
            }
            Err(e) => return fail(format!("waiting for an update after update {last}: {e}")),
        }
        let (value, version) = params.read_versioned().context("reading the vector")?;
        since = version;
        let Some(k) = update_of(&value) else { return fail(format!("torn read: {value:?} mixes two updates")) };
        ensure(k >= last, || format!("read update {k} after update {last}: values never go back"))?;
        seen += u64::from(k > last);
        last = k;
    }
    writer.wait(TIMEOUT)?;
    println!(
        "reader: woke {seen} times, each to a newer update; {} updates were overwritten unseen (a slot keeps only the newest), never the last",
        updates - seen
    );
    println!("reader: every read was one whole update (torn reads: 0)");
    let v = params.read().context("reading the final value")?;
    println!("reader: final update {last}: params = [{:?}, {:?}, ..., {:?}]", v[0], v[1], v[WIDTH - 1]);
    println!("latest_values: ok");
    Ok(())
}
