//! Process plumbing shared by the examples, not part of shmplane: each example runs
//! this same program again as its other processes (`--role NAME`), waits for them under
//! a watchdog, and reports a failure as one line and a non-zero exit status.
//!
//! - [`main`]: parse the command line, run the example, print `NAME: error: ...` and
//!   exit 1 on failure.
//! - [`Peer::spawn`]: start this executable again in another role (a real process, as
//!   unrelated as any other: it finds the shared memory by name). [`Peer::wait`] waits
//!   for its exit with a deadline and kills it past that; dropping a `Peer` that was
//!   not waited for kills it too, so an example that fails leaves no process behind.
//! - [`watchdog`]: a child ends itself if it is still running after a limit, whatever
//!   it is stuck on.
//! - [`Context::context`]: every error carries what was being done when it happened.

// Each example uses part of this module.
#![allow(dead_code)]

use std::fmt::Display;
use std::process::{Child, Command, ExitStatus};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// Why an example failed: what it was doing and what went wrong, for one line on stderr.
#[derive(Debug)]
pub struct Failure(pub String);

/// The result of every step of an example.
pub type Result<T> = std::result::Result<T, Failure>;

/// Fail with `message`.
pub fn fail<T>(message: impl Into<String>) -> Result<T> {
    Err(Failure(message.into()))
}

/// Fail with `message` unless `condition` holds.
pub fn ensure(condition: bool, message: impl FnOnce() -> String) -> Result<()> {
    if condition {
        Ok(())
    } else {
        Err(Failure(message()))
    }
}

/// Says what was being done when an error happened: `"receiving array 3: timed out"`.
pub trait Context<T> {
    /// The error as a [`Failure`] that starts with `doing`.
    fn context(self, doing: impl Display) -> Result<T>;
}

impl<T, E: Display> Context<T> for std::result::Result<T, E> {
    fn context(self, doing: impl Display) -> Result<T> {
        self.map_err(|e| Failure(format!("{doing}: {e}")))
    }
}

/// The command line: `[--quick] [--role ROLE VALUE...] [--OPTION VALUE...]`.
#[derive(Debug)]
pub struct Args {
    /// `--quick`: small counts, for tests.
    pub quick: bool,
    /// The role this process plays (`None`: the first process, which starts the others).
    pub role: Option<String>,
    /// The values after the role (a segment name, counts), as the parent passed them.
    pub values: Vec<String>,
    /// `--OPTION VALUE` pairs the example accepts.
    options: Vec<(String, String)>,
}

impl Args {
    /// Start this process's [`watchdog`]: `quick` seconds under `--quick`, else `full`.
    pub fn watchdog(&self, who: &str, (quick, full): (u64, u64)) {
        watchdog(who, Duration::from_secs(if self.quick { quick } else { full }));
    }

    /// Parse this process's arguments; `options` are the `--OPTION VALUE` flags the
    /// example accepts besides `--quick` and `--role`.
    pub fn parse(options: &[&str]) -> Result<Args> {
        let mut args = Args { quick: false, role: None, values: Vec::new(), options: Vec::new() };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--quick" => args.quick = true,
                "--role" => {
                    args.role = Some(it.next().ok_or_else(|| Failure("--role needs a role name".into()))?);
                    // Everything after the role is the role's values.
                    args.values.extend(it.by_ref());
                }
                flag if options.contains(&flag) => {
                    let value = it.next().ok_or_else(|| Failure(format!("{flag} needs a value")))?;
                    args.options.push((flag.to_owned(), value));
                }
                other => {
                    let mut accepted = vec!["--quick".to_owned()];
                    accepted.extend(options.iter().map(|o| format!("{o} N")));
                    return fail(format!("unknown argument {other:?}; accepted: {}", accepted.join(", ")));
                }
            }
        }
        Ok(args)
    }

    /// The value of `--OPTION`, parsed, if given.
    pub fn option<T: FromStr>(&self, flag: &str) -> Result<Option<T>>
    where
        T::Err: Display,
    {
        match self.options.iter().rev().find(|(f, _)| f == flag) {
            Some((_, v)) => v.parse().map(Some).context(format!("{flag} {v:?}")),
            None => Ok(None),
        }
    }

    /// Role value `i`, parsed; `what` names it in the error.
    pub fn value<T: FromStr>(&self, i: usize, what: &str) -> Result<T>
    where
        T::Err: Display,
    {
        let v = self.values.get(i).ok_or_else(|| Failure(format!("missing {what} (value {i} after --role)")))?;
        v.parse().context(format!("{what} {v:?}"))
    }
}

/// Run the example: `run` gets the parsed arguments; on failure print
/// `EXAMPLE (ROLE, pid PID): error: WHAT` on stderr and exit with status 1. `first`
/// names the role of the process the user starts (the one without `--role`).
pub fn main(example: &str, first: &str, options: &[&str], run: impl FnOnce(&Args) -> Result<()>) {
    let outcome = Args::parse(options).and_then(|args| {
        let who = args.role.clone().unwrap_or_else(|| first.into());
        run(&args).map_err(|Failure(e)| Failure(format!("{example} ({who}, pid {}): error: {e}", std::process::id())))
    });
    if let Err(Failure(e)) = outcome {
        eprintln!("{e}");
        std::process::exit(1);
    }
}

/// End this process with status 124 if it is still running after `limit`: a child's
/// last line of defence against a wait that never ends (every wait in the examples
/// has its own timeout too). Its segments are then left for `shmplane gc`.
pub fn watchdog(who: &str, limit: Duration) {
    let owner = who.to_owned();
    let spawned = std::thread::Builder::new().name("watchdog".into()).spawn(move || {
        std::thread::sleep(limit);
        eprintln!("{owner} (pid {}): watchdog: still running after {} s; exiting", std::process::id(), limit.as_secs());
        std::process::exit(124);
    });
    if let Err(e) = spawned {
        eprintln!("{who}: cannot start the watchdog thread ({e}); running without it");
    }
}

/// Another process of the example: this executable run again with `--role`.
pub struct Peer {
    role: String,
    child: Option<Child>,
}

impl Peer {
    /// Start this executable as `role` with `values` after it (and `--quick` if this
    /// run has it). Its output goes to this process's stdout and stderr.
    pub fn spawn(args: &Args, role: &str, values: &[impl AsRef<std::ffi::OsStr>]) -> Result<Peer> {
        let exe = std::env::current_exe().context("finding this executable to start the other process")?;
        let mut command = Command::new(&exe);
        if args.quick {
            command.arg("--quick");
        }
        command.arg("--role").arg(role).args(values);
        let child = command.spawn().context(format!("starting {} as the {role}", exe.display()))?;
        Ok(Peer { role: role.to_owned(), child: Some(child) })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Its exit status if it has exited (`None` while it runs).
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        let role = self.role.clone();
        match self.child.as_mut() {
            Some(c) => c.try_wait().context(format!("checking on the {role}")),
            None => fail(format!("the {role} was already waited for")),
        }
    }

    /// Fail if it has already exited (for a parent that waits for it to do something).
    pub fn check_running(&mut self) -> Result<()> {
        match self.try_status()? {
            None => Ok(()),
            Some(status) => fail(format!("the {} (pid {}) exited early: {status}", self.role, self.pid())),
        }
    }

    /// Wait for its exit, at most `limit`: past it, kill it and fail. Fails too if it
    /// exited with a non-zero status.
    pub fn wait(mut self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        let pid = self.pid();
        loop {
            if let Some(status) = self.try_status()? {
                self.child = None;
                return ensure(status.success(), || format!("the {} (pid {pid}) failed: {status}", self.role));
            }
            if Instant::now() >= deadline {
                self.kill();
                return fail(format!("the {} (pid {pid}) did not finish within {} s: killed", self.role, limit.as_secs()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kill it (if it still runs) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Errors here mean it has exited already: nothing left to do.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Nanoseconds of `CLOCK_MONOTONIC`: a clock that every process on one machine shares
/// and that never steps (the wall clock can), for measuring how long a message took
/// from one process to another.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// FNV-1a over 64-bit words: an order-sensitive checksum of a dataset.
pub fn checksum(words: &[u64]) -> u64 {
    words.iter().fold(0xcbf2_9ce4_8422_2325, |h, &w| (h ^ w).wrapping_mul(0x0000_0100_0000_01b3))
}

/// `q`-quantile (0..=1) of sorted `samples`.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A note for figures measured in a debug build.
pub fn build_note() -> &'static str {
    if cfg!(debug_assertions) {
        " (debug build: add --release for real figures)"
    } else {
        ""
    }
}
