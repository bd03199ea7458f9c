//! Every Rust example of this crate (`channels/examples/`) runs to completion with
//! `--quick`, as a user runs it: `cargo run -p shmplane --example NAME -- --quick`
//! (cargo builds it if it is not up to date; `--release` when these tests are).
//!
//! Each run is a session of its own under a watchdog: past [`WATCHDOG`] the whole
//! process group (cargo, the example and the processes it started) is killed and the
//! test fails. It must exit 0, print its expected lines, and leave none of its segments
//! in `/dev/shm` (each example names its segments `<prefix><pid>`; other processes'
//! segments are not looked at). Nothing here measures time. The examples run one at a
//! time: each starts several processes, and the machine may be small.
//!
//! An example added to `channels/examples/` without an entry in [`EXAMPLES`] (or
//! [`RUN_ELSEWHERE`]) fails `every_example_is_run`.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one example may take, a build of it included.
const WATCHDOG: Duration = Duration::from_secs(300);

struct Example {
    name: &'static str,
    /// Its segments' names start with this (`/dev/shm/shmplane.<prefix>...`).
    prefix: &'static str,
    /// Lines (or parts of lines) its stdout must contain.
    expect: &'static [&'static str],
}

const EXAMPLES: &[Example] = &[
    Example {
        name: "dataset_transfer",
        prefix: "dataset-transfer-rs-",
        expect: &["consumer: array 0: (131072,) <f8 checksum", "consumer: 4 arrays received, every checksum matched", "MB/s", "dataset_transfer: ok"],
    },
    Example {
        name: "check_pause",
        prefix: "check-pause-rs-",
        expect: &[
            "pause      from master",
            "resume     from outsider",
            "pause      from outsider",
            "terminate  from master",
            "ms paused (blocked in recv)",
            "shmplane Mailbox::pending()",
            "check_pause: ok",
        ],
    },
    Example {
        name: "broadcast",
        prefix: "broadcast-rs-",
        expect: &["publisher: 3 subscribers joined", "subscriber 2 (pid", "all 3 subscribers received the same dataset", "broadcast: ok"],
    },
    Example {
        name: "rpc",
        prefix: "rpc-rs-",
        expect: &[
            "client: echo:hello -> \"hello\"",
            "remote error ValueError: 99 V is outside the +-10 V range",
            "the server ran it once",
            "round trip of 1000 64-byte calls: p50",
            "client: dataset:131072 -> one reply, [131072] <f8, 1.0 MB",
            "rpc: ok",
        ],
    },
    Example {
        name: "latest_values",
        prefix: "latest-values-rs-",
        expect: &["torn reads: 0", "final update 20000: params = [320000.0, 320001.0, ..., 320015.0]", "latest_values: ok"],
    },
];

/// Examples that the Python tests run, as the Rust side of a cross-language test.
const RUN_ELSEWHERE: &[&str] = &[
    "array_interop", // pybindings/tests/test_interop.py
    "slot_interop",  // pybindings/tests/test_rawvalue.py
];

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// This user's segments (and doorbells) whose names start with `prefix`.
fn segments(prefix: &str) -> Vec<String> {
    let full = format!("shmplane.{prefix}");
    let mut names: Vec<String> = std::fs::read_dir("/dev/shm")
        .expect("listing /dev/shm")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&full))
        .collect();
    names.sort();
    names
}

/// Kill process group `pgid` (cargo, the example, its children).
fn kill_group(pgid: u32) {
    let pgid = libc::pid_t::try_from(pgid).expect("a pid fits pid_t");
    // SAFETY: kill(2) with a negative pid signals that process group; no memory involved.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

fn run(name: &str) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let example = EXAMPLES.iter().find(|e| e.name == name).expect("listed in EXAMPLES");
    let before = segments(example.prefix);
    let mut command = Command::new(env!("CARGO"));
    command.args(["run", "--quiet", "-p", "shmplane", "--example", name]);
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    command.args(["--", "--quick"]);
    let mut child = command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .process_group(0) // a group of its own, for the watchdog to kill
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting cargo run");
    let pid = child.id();
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + WATCHDOG;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for cargo run") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            kill_group(pid);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The group may outlive cargo if the example failed part-way: end what is left.
    kill_group(pid);
    let (out, err) = (out.join().expect("stdout reader"), err.join().expect("stderr reader"));
    let shown = format!("--- stdout\n{out}\n--- stderr\n{err}");
    let Some(status) = status else {
        panic!("example {name} did not finish within {} s: killed\n{shown}", WATCHDOG.as_secs());
    };
    assert!(status.success(), "example {name} failed: {status}\n{shown}");
    for line in example.expect {
        assert!(out.contains(line), "{line:?} not in the output of example {name}\n{shown}");
    }
    // Every handle closed when the processes exited; the last closer removed each
    // segment. (A grace period only, for a child's exit still being reaped.)
    let leaked = || segments(example.prefix).into_iter().filter(|n| !before.contains(n)).collect::<Vec<_>>();
    let grace = Instant::now() + Duration::from_secs(3);
    while !leaked().is_empty() && Instant::now() < grace {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(leaked().is_empty(), "example {name} left segments in /dev/shm: {:?}\n{shown}", leaked());
}

#[test]
fn dataset_transfer() {
    run("dataset_transfer");
}

#[test]
fn check_pause() {
    run("check_pause");
}

#[test]
fn broadcast() {
    run("broadcast");
}

#[test]
fn rpc() {
    run("rpc");
}

#[test]
fn latest_values() {
    run("latest_values");
}

#[test]
fn every_example_is_run() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .expect("listing channels/examples")
        .filter_map(|e| {
            let path = e.ok()?.path();
            // Cargo's examples: NAME.rs, or NAME/main.rs (a folder without main.rs is a
            // module the examples share).
            if path.extension().is_some_and(|x| x == "rs") || path.join("main.rs").is_file() {
                Some(path.file_stem()?.to_str()?.to_owned())
            } else {
                None
            }
        })
        .collect();
    found.sort();
    let mut listed: Vec<String> = EXAMPLES.iter().map(|e| e.name).chain(RUN_ELSEWHERE.iter().copied()).map(str::to_owned).collect();
    listed.sort();
    assert_eq!(found, listed, "channels/examples and this file's EXAMPLES + RUN_ELSEWHERE differ");
}
