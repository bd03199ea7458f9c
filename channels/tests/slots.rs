//! Slots across real processes: a writer hammering a multi-word value never shows a
//! reader a torn one; a writer SIGKILLed mid-stream leaves the last complete value
//! readable and the write side free for the next writer. Watchdogs bound every wait.

mod common;

use common::{await_futex_sleep, gettid, read_word};
use shmplane::{Error, Slot};
use shmplane_shm::layout::{SlotControl, SLOT_CONTROL_OFFSET};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

const WORDS: usize = 16;

/// Forked children inherit every descriptor of the test process, so a test that checks
/// the segment is removed must not overlap one that forks: they all hold this lock.
static FORK_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
type Value = [u64; WORDS];

fn name(tag: &str) -> String {
    format!("slot-test-{tag}-{}", std::process::id())
}

/// Fork a child that runs `f` then `_exit(0)`s. A watchdog (SIGALRM after 60 s) kills
/// it if the test that should reap it fails first: an orphan writer looping forever
/// would otherwise hold cargo's stdout and hang CI.
fn fork(f: impl FnOnce()) -> libc::pid_t {
    // SAFETY: the test thread forks; the child only runs `f` (slot operations on
    // segments it opens itself) and then _exit, running no destructors of the parent.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: alarm is async-signal-safe; SIGALRM's default action ends the child.
        unsafe { libc::alarm(60) };
        f();
        // SAFETY: leave the child without unwinding into the test harness.
        unsafe { libc::_exit(0) };
    }
    pid
}

fn kill_and_reap(pid: libc::pid_t) {
    // SAFETY: plain syscalls on our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

/// Kill points per role: `SHMPLANE_KILL_ROUNDS` (the fault matrix, `ci/faults.sh`,
/// sets 200), else `default` (the bounded sample every test run takes).
fn kill_rounds(default: u64) -> u64 {
    std::env::var("SHMPLANE_KILL_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn check(v: &Value) -> u64 {
    assert!(v.iter().all(|&w| w == v[0]), "torn value: {v:?}");
    v[0]
}

#[test]
fn readers_never_see_a_torn_value_while_another_process_writes() {
    let _serial = serial();
    let n = name("torn");
    let slot = Slot::<Value>::create(&n, [0; WORDS]).unwrap();
    let writer = fork(|| {
        let s = Slot::<Value>::open(&n).unwrap();
        for i in 1.. {
            s.write(&[i; WORDS]).unwrap();
        }
    });
    let watchdog = Instant::now() + Duration::from_secs(20);
    let (mut last, mut reads, mut changes) = (0, 0u64, 0u64);
    while (changes < 10_000 || reads < 100_000) && Instant::now() < watchdog {
        let v = check(&slot.read().unwrap());
        assert!(v >= last, "went back from {last} to {v}");
        changes += u64::from(v != last);
        last = v;
        reads += 1;
    }
    kill_and_reap(writer);
    assert!(changes >= 10_000, "the writer made only {changes} visible changes in 20 s");
}

#[test]
fn writer_killed_mid_stream_leaves_last_complete_value() {
    let _serial = serial();
    let n = name("kill");
    let slot = Slot::<Value>::create(&n, [0; WORDS]).unwrap();
    for round in 0..kill_rounds(20) {
        let writer = fork(|| {
            let s = Slot::<Value>::open(&n).unwrap();
            for i in 1.. {
                s.write(&[i; WORDS]).unwrap();
            }
        });
        // Let it write for a moment, then kill it wherever it is (often mid-write).
        let start = slot.version().unwrap();
        let watchdog = Instant::now() + Duration::from_secs(20);
        while slot.version().unwrap() < start + 1000 && Instant::now() < watchdog {
            std::hint::spin_loop();
        }
        kill_and_reap(writer);
        let before = check(&slot.read().unwrap());
        // Readers keep reading the same complete value: no spinning on a dead writer.
        assert_eq!(check(&slot.read().unwrap()), before);
        // The next writer takes the write side over (repairing a torn copy).
        slot.write(&[1_000_000 + round; WORDS]).unwrap();
        assert_eq!(check(&slot.read().unwrap()), 1_000_000 + round);
    }
}

#[test]
fn type_and_size_are_checked_on_open() {
    let _serial = serial();
    let n = name("type");
    let _slot = Slot::<f64>::create(&n, 1.0).unwrap();
    assert!(matches!(Slot::<u64>::open(&n), Err(Error::WrongKind { .. })));
    assert!(matches!(Slot::<[u8; 64]>::open(&n), Err(Error::WrongKind { .. })));
    assert!(matches!(shmplane::Receiver::open(&n), Err(Error::WrongKind { .. })));
    assert_eq!(Slot::<f64>::open(&n).unwrap().read().unwrap(), 1.0);
    // Arrays of one element type share a fingerprint (as Python's RawArray does): the
    // length is checked from the segment.
    let m = name("array-len");
    let _array = Slot::<[f64; 16]>::create(&m, [2.0; 16]).unwrap();
    assert!(matches!(Slot::<[f64; 8]>::open(&m), Err(Error::WrongKind { .. })));
    assert!(matches!(Slot::<[f32; 32]>::open(&m), Err(Error::WrongKind { .. })));
    assert_eq!(Slot::<[f64; 16]>::open(&m).unwrap().read().unwrap(), [2.0; 16]);
}

/// A reader asleep in `wait_for_update` (seen in `futex(2)` on the slot's update event)
/// is woken by a write in another process: the write notified it (the epoch moved).
/// The reader wakes every 50 ms slice to look around; a write that lands in that
/// moment finds nobody asleep and rightly notifies nobody, so up to 5 rounds are tried
/// for one whose write found the reader asleep. A writer that never notifies fails all 5.
#[test]
fn wait_for_update_wakes_on_a_write_in_another_process() {
    let _serial = serial();
    let n = name("wait");
    let path = format!("/dev/shm/shmplane.{n}");
    let epoch_at = SLOT_CONTROL_OFFSET + std::mem::offset_of!(SlotControl, updated.value.epoch);
    let slot = Slot::<u64>::create(&n, 0).unwrap();
    let (mut ours, mut theirs) = UnixStream::pair().unwrap();
    let writer = fork(|| {
        let s = Slot::<u64>::open(&n).unwrap();
        let mut value = [0u8; 1];
        while theirs.read_exact(&mut value).is_ok() {
            s.write(&u64::from(value[0])).unwrap();
        }
    });
    let mut notified = false;
    for round in 1..=5u8 {
        let v0 = slot.version().unwrap();
        let (tid_tx, tid) = std::sync::mpsc::channel();
        let (v1, epoch_moved) = std::thread::scope(|s| {
            let reader = s.spawn(|| {
                tid_tx.send(gettid()).unwrap();
                slot.wait_for_update(v0, Some(Duration::from_secs(20)))
            });
            await_futex_sleep(tid.recv().unwrap(), &path, epoch_at);
            let epoch = read_word(&path, epoch_at);
            ours.write_all(&[round]).unwrap();
            let v1 = reader.join().unwrap().expect("the write wakes the reader before its 20 s deadline");
            (v1, read_word(&path, epoch_at) != epoch)
        });
        assert!(v1 > v0);
        assert_eq!(slot.read().unwrap(), u64::from(round));
        if epoch_moved {
            notified = true;
            break;
        }
    }
    assert!(notified, "no write notified the reader asleep in wait_for_update (5 rounds)");
    kill_and_reap(writer);
}

#[test]
fn segment_removed_with_last_handle() {
    let _serial = serial();
    let n = name("gone");
    let a = Slot::<u32>::create(&n, 5).unwrap();
    let b = Slot::<u32>::open(&n).unwrap();
    drop(a);
    assert_eq!(b.read().unwrap(), 5);
    drop(b);
    assert!(!std::path::Path::new(&format!("/dev/shm/shmplane.{n}")).exists());
}

/// Element writes (`write_at`) by two processes to different elements of one array,
/// while each also reads its own element back: no update is lost, and a reader of a
/// sub-range (`read_at`) sees each element's latest value.
#[test]
fn element_writes_from_two_processes_lose_nothing() {
    let _serial = serial();
    let n = name("elements");
    const ROUNDS: u64 = 20_000;
    let slot = shmplane::ByteSlot::create(&n, &[0u8; 24], 5).unwrap();
    let child = fork(|| {
        let s = shmplane::ByteSlot::open(&n, 5).unwrap();
        for i in 1..=ROUNDS {
            s.write_at(8, &i.to_ne_bytes()).unwrap();
        }
    });
    for i in 1..=ROUNDS {
        slot.write_at(0, &i.to_ne_bytes()).unwrap();
    }
    let watchdog = Instant::now() + Duration::from_secs(20);
    let mut theirs = [0u8; 8];
    loop {
        slot.read_at(8, &mut theirs).unwrap();
        if u64::from_ne_bytes(theirs) == ROUNDS || Instant::now() > watchdog {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    kill_and_reap(child);
    let mut all = [0u8; 24];
    slot.read_into(&mut all).unwrap();
    let word = |k: usize| u64::from_ne_bytes(all[k * 8..k * 8 + 8].try_into().unwrap());
    assert_eq!((word(0), word(1), word(2)), (ROUNDS, ROUNDS, 0));
}

#[test]
fn unaligned_and_strided_writes_keep_the_bytes_around_them() {
    let _serial = serial();
    let n = name("strided");
    let slot = shmplane::ByteSlot::create(&n, &[1u8; 21], 9).unwrap();
    slot.write_at(7, &[2, 3]).unwrap();
    slot.write_strided(10, 3, 2, &[4, 4, 5, 5, 6, 6]).unwrap();
    let mut all = [0u8; 21];
    slot.read_into(&mut all).unwrap();
    assert_eq!(all, [1, 1, 1, 1, 1, 1, 1, 2, 3, 1, 4, 4, 1, 5, 5, 1, 6, 6, 1, 1, 1]);
    let mut mid = [0u8; 5];
    slot.read_at(6, &mut mid).unwrap();
    assert_eq!(mid, [1, 2, 3, 1, 4]);
    for bad in [slot.write_at(20, &[0, 0]), slot.write_strided(0, 1, 2, &[0; 4]), slot.write_strided(0, 2, 2, &[0; 3])] {
        assert!(matches!(bad, Err(Error::InvalidArgument(_))), "{bad:?}");
    }
    assert!(matches!(slot.read_at(usize::MAX, &mut mid), Err(Error::InvalidArgument(_))));
    assert!(matches!(slot.read_at(17, &mut mid), Err(Error::InvalidArgument(_))));
    assert_eq!(slot.write_at(21, &[]).unwrap(), slot.version().unwrap());
}

#[test]
fn offsets_near_usize_max_are_errors_not_panics() {
    let _serial = serial();
    let n = name("overflow");
    let slot = shmplane::ByteSlot::create(&n, &[0u8; 16], 3).unwrap();
    for r in [
        slot.write_strided(usize::MAX - 3, 8, 8, &[0; 8]),
        slot.write_strided(usize::MAX - 3, 8, 8, &[]),
        slot.write_at(17, &[]),
        slot.write_strided(8, usize::MAX, 8, &[0; 16]),
    ] {
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    }
    let mut one = [0u8; 1];
    assert!(matches!(slot.read_at(usize::MAX, &mut one), Err(Error::InvalidArgument(_))));
    assert!(matches!(slot.read_word(2), Err(Error::InvalidArgument(_))));
}

/// A writer lock held by an id that names a live process with another start time (a
/// dead writer whose pid was reused, or a forged owner word: here pid 1) is taken over:
/// the write completes instead of spinning for as long as that process lives.
#[test]
fn writer_lock_of_a_reused_pid_is_taken_over() {
    use std::io::{Seek, SeekFrom, Write};
    let _serial = serial();
    let n = name("reused");
    let slot = Slot::<u64>::create(&n, 7).unwrap();
    // writer.owner: the first word of the slot control block.
    let owner = (1u64 << 42) | (0xABCDE << 22) | 1;
    let mut f = std::fs::OpenOptions::new().write(true).open(format!("/dev/shm/shmplane.{n}")).unwrap();
    f.seek(SeekFrom::Start(shmplane_shm::layout::SLOT_CONTROL_OFFSET as u64)).unwrap();
    f.write_all(&owner.to_le_bytes()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let r = slot.write(&8);
        let _ = tx.send((r.is_ok(), slot.read().ok()));
        drop(slot); // closed before the test ends: the segment goes with it
    });
    let (ok, value) = rx.recv_timeout(Duration::from_secs(20)).expect("the write spun on a stale writer lock");
    t.join().unwrap();
    assert!(ok);
    assert_eq!(value, Some(8));
}
