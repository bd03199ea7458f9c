//! check_pause: a worker loop that asks "was I told to pause?" on every iteration.
//!
//! Experiment loops call `check_pause()` thousands of times a run and the answer is
//! almost always no, so the check must cost about as much as reading a flag, while
//! anyone may drop a command in. Here the worker process (`--role worker`) owns a
//! [`Mailbox`] named `check-pause-rs-<pid>` and calls [`Mailbox::pending`] (one memory
//! load, no syscall) on each iteration; when it is true it takes the command and acts
//! on `pause` (sleeping in a receive until `resume` or `terminate`), `resume` and
//! `terminate`. Commands come from two producers: the master (the process you start),
//! which joins the mailbox by name and stays, and an outsider: a process started for
//! one command, which joins by name ([`Sender::open`]), sends and exits. The worker
//! reports each command it acted on back to the master over a channel.
//!
//! Run: `cargo run --release -p shmplane --example check_pause [-- --quick]`
//!
//! Prints, for each command, who sent it, how long it took from the send to the
//! worker acting on it, and the worker's iteration then (a paused worker blocks in
//! `recv`, so it runs no iteration until resumed); then what the check costs per call on an empty mailbox, beside
//! `std::sync::mpsc::Receiver::try_recv` on an empty in-process channel (measured,
//! never checked), and `check_pause: ok`. Exits 1 with a message if a command is lost,
//! acted on out of order or from the wrong sender. The
//! mailbox and the report channel are removed when their last handle closes.

mod support;

use shmplane::{Error, Mailbox, Receiver, Sender};
use std::hint::black_box;
use std::time::{Duration, Instant};
use support::{ensure, fail, now_ns, Args, Context, Peer, Result};

/// How long any one wait for another process may take.
const TIMEOUT: Duration = Duration::from_secs(30);

fn main() {
    support::main("check_pause", "master", &[], |args| match args.role.as_deref() {
        None => master(args),
        Some("worker") => worker(args),
        Some("outsider") => outsider(args),
        Some(other) => fail(format!("unknown role {other:?}")),
    });
}

/// The watchdog's limit in seconds: (with `--quick`, without).
const WATCHDOG: (u64, u64) = (60, 300);

/// A command as it travels: `"WHAT WHO SENT_NS"`.
struct Command {
    what: String,
    who: String,
    sent_ns: u64,
}

impl Command {
    fn encode(what: &str, who: &str) -> Vec<u8> {
        format!("{what} {who} {}", now_ns()).into_bytes()
    }

    fn decode(bytes: &[u8]) -> Result<Command> {
        let text = std::str::from_utf8(bytes).context("a command that is not UTF-8")?;
        let mut it = text.split(' ');
        match (it.next(), it.next(), it.next().map(str::parse::<u64>)) {
            (Some(what), Some(who), Some(Ok(sent_ns))) => Ok(Command { what: what.into(), who: who.into(), sent_ns }),
            _ => fail(format!("malformed command {text:?}")),
        }
    }
}

/// One unit of the experiment's work.
fn work() {
    black_box((0..50u64).map(black_box).sum::<u64>());
}

/// The experiment loop: a unit of work, then the check, until told to terminate.
fn worker(args: &Args) -> Result<()> {
    args.watchdog("check_pause worker", WATCHDOG);
    let name: String = args.value(0, "mailbox name")?;
    let report_name = format!("{name}.report");
    let mut mb = Mailbox::create(&name, 4096, 8).context(format!("creating mailbox {name}"))?;
    let mut report = Sender::open(&report_name).context(format!("opening the report channel {report_name}"))?;
    let mut tell = |cmd: &Command, iteration: u64| {
        let latency_ns = now_ns().saturating_sub(cmd.sent_ns);
        let line = format!("acted {} {} {latency_ns} {iteration}", cmd.what, cmd.who);
        report.send_timeout(line.as_bytes(), TIMEOUT).context(format!("reporting {}", cmd.what))
    };
    println!("worker: mailbox {name} created; checking it every iteration");
    tell(&Command { what: "ready".into(), who: "worker".into(), sent_ns: now_ns() }, 0)?;

    let mut iterations = 0u64;
    let mut paused = Duration::ZERO;
    loop {
        if mb.pending() {
            // check_pause(): one load while nothing is there.
            let mut cmd = match mb.try_recv() {
                Ok(bytes) => Command::decode(&bytes)?,
                // A message whose sender gave up part-way reads pending once.
                Err(Error::Empty | Error::Truncated { .. }) => continue,
                Err(e) => return fail(format!("taking a command at iteration {iterations}: {e}")),
            };
            tell(&cmd, iterations)?;
            if cmd.what == "pause" {
                let since = Instant::now();
                while cmd.what != "resume" && cmd.what != "terminate" {
                    // Asleep in the receive (no CPU) until the next command.
                    let bytes = mb.recv_timeout(TIMEOUT).context("paused, waiting for resume or terminate")?;
                    cmd = Command::decode(&bytes)?;
                    tell(&cmd, iterations)?;
                }
                paused += since.elapsed();
            }
            if cmd.what == "terminate" {
                break;
            }
        }
        work();
        iterations += 1;
    }

    // What the check costs on an empty mailbox, beside an in-process channel's.
    let calls = if args.quick { 100_000 } else { 2_000_000 };
    let (local_tx, local_rx) = std::sync::mpsc::channel::<u64>();
    let (mut pending_ns, mut mpsc_ns) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..calls {
            black_box(black_box(&mb).pending());
        }
        pending_ns = pending_ns.min(t.elapsed().as_nanos() as f64 / calls as f64);
        let t = Instant::now();
        for _ in 0..calls {
            let _ = black_box(black_box(&local_rx).try_recv());
        }
        mpsc_ns = mpsc_ns.min(t.elapsed().as_nanos() as f64 / calls as f64);
    }
    drop(local_tx);
    let line = format!("done {iterations} {} {pending_ns:.2} {mpsc_ns:.2}", paused.as_millis());
    report.send_timeout(line.as_bytes(), TIMEOUT).context("sending the summary")?;
    mb.close();
    report.close();
    Ok(())
}

/// A process that joins the mailbox by name, sends one command, and leaves.
fn outsider(args: &Args) -> Result<()> {
    args.watchdog("check_pause outsider", WATCHDOG);
    let name: String = args.value(0, "mailbox name")?;
    let what: String = args.value(1, "command")?;
    let mut tx = Sender::open(&name).context(format!("joining mailbox {name} by name"))?;
    tx.send_timeout(&Command::encode(&what, "outsider"), TIMEOUT).context(format!("sending {what}"))?;
    println!("outsider (pid {}): joined {name} by name (lane {}), sent {what}", std::process::id(), tx.lane().unwrap_or(0));
    tx.close();
    Ok(())
}

/// One acted-on command as the worker reported it.
struct Acted {
    what: String,
    who: String,
    latency_ns: u64,
    iteration: u64,
}

fn next_report(report: &mut Receiver, waiting_for: &str) -> Result<String> {
    let bytes = report.recv_timeout(TIMEOUT).context(format!("waiting for the worker to report {waiting_for}"))?;
    String::from_utf8(bytes).context("a report that is not UTF-8")
}

fn acted(report: &mut Receiver, waiting_for: &str) -> Result<Acted> {
    let line = next_report(report, waiting_for)?;
    let f: Vec<&str> = line.split(' ').collect();
    match f.as_slice() {
        ["acted", what, who, latency, iteration] => Ok(Acted {
            what: (*what).into(),
            who: (*who).into(),
            latency_ns: latency.parse().context(format!("report {line:?}"))?,
            iteration: iteration.parse().context(format!("report {line:?}"))?,
        }),
        _ => fail(format!("unexpected report {line:?} while waiting for {waiting_for}")),
    }
}

fn master(args: &Args) -> Result<()> {
    args.watchdog("check_pause master", WATCHDOG);
    let name = format!("check-pause-rs-{}", std::process::id());
    let report_name = format!("{name}.report");
    let mut report = Receiver::create(&report_name, 1 << 16).context(format!("creating the report channel {report_name}"))?;
    let mut worker = Peer::spawn(args, "worker", &[&name])?;
    let ready = acted(&mut report, "that it is ready")?;
    ensure(ready.what == "ready", || format!("the worker said {:?} first, not ready", ready.what))?;
    let mut master = Sender::open(&name).context(format!("joining mailbox {name} by name"))?;
    if let Err(e) = command(args, &name, &mut master, &mut report, worker.pid()) {
        // End the worker before these handles close: the close then finds it gone and
        // removes its mailbox (closed first, with the worker alive and then killed, the
        // mailbox would be left for `shmplane gc`).
        worker.kill();
        return Err(e);
    }
    worker.wait(TIMEOUT)?;
    master.close();
    report.close();
    println!("check_pause: ok");
    Ok(())
}

/// The master's side once the worker is ready: the commands, then the worker's summary.
fn command(args: &Args, name: &str, master: &mut Sender, report: &mut Receiver, worker: u32) -> Result<()> {
    let gap = if args.quick { Duration::from_millis(50) } else { Duration::from_millis(300) };
    let script = [("master", "pause"), ("outsider", "resume"), ("outsider", "pause"), ("master", "resume"), ("master", "terminate")];
    println!("master: commands to worker pid {worker} through mailbox {name}, {} ms apart:", gap.as_millis());
    for (who, what) in script {
        std::thread::sleep(gap);
        if who == "master" {
            master.send_timeout(&Command::encode(what, "master"), TIMEOUT).context(format!("sending {what}"))?;
        } else {
            Peer::spawn(args, "outsider", &[name, what])?.wait(TIMEOUT)?;
        }
        let a = acted(report, what)?;
        ensure(a.what == what && a.who == who, || format!("sent {what} from {who}, the worker acted on {} from {}", a.what, a.who))?;
        println!("  {:<10} from {:<9} acted on after {:9.1} us at iteration {}", a.what, a.who, a.latency_ns as f64 / 1e3, a.iteration);
    }
    let done = next_report(report, "its summary")?;
    let f: Vec<&str> = done.split(' ').collect();
    let ["done", iterations, paused_ms, pending_ns, mpsc_ns] = f.as_slice() else {
        return fail(format!("unexpected summary {done:?}"));
    };
    println!("master: the worker ran {iterations} iterations, {paused_ms} ms paused (blocked in recv)");
    println!("master: cost of the check on an empty queue, best of 5{}:", support::build_note());
    println!("    shmplane Mailbox::pending()            {pending_ns:>8} ns");
    println!("    std::sync::mpsc try_recv() (in-process) {mpsc_ns:>7} ns");
    Ok(())
}
