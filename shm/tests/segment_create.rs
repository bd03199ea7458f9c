//! Opening a segment while its creator is still making it: the creator holds the init
//! lock from the file's first moment (`ShmFile::create_locked`), so an opener that
//! finds the file, even one whose memory reservation took seconds (a large slot), waits
//! for it instead of taking its zeros for a foreign file.
#![cfg(not(shmplane_loom))]

use shmplane_shm::error::Error;
use shmplane_shm::header::SegmentKind;
use shmplane_shm::layout::INIT_LOCK_BYTE;
use shmplane_shm::region::ShmFile;
use shmplane_shm::segment::Segment;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Set the file's times `secs` into the past (a reservation that took that long).
fn age(file: &ShmFile, secs: i64) {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    let t = libc::timespec { tv_sec: now.tv_sec - secs, tv_nsec: 0 };
    // SAFETY: an open descriptor and two valid timespecs.
    assert_eq!(unsafe { libc::futimens(file.as_file().as_raw_fd(), [t, t].as_ptr()) }, 0);
}

#[test]
fn an_opener_waits_for_a_creator_still_reserving_its_file() {
    let name = format!("segment-create-{}", std::process::id());
    let creating = ShmFile::create_locked(&name, 1 << 20, INIT_LOCK_BYTE).expect("create");
    age(&creating, 10);
    match Segment::open_any_within(&name, &[SegmentKind::Channel], Duration::from_millis(50)) {
        Err(Error::Corrupt { what, .. }) => assert!(what.contains("did not finish initialising"), "{what}"),
        other => panic!("expected a wait for the creator, got {other:?}"),
    }
    creating.unlink_if_same(&name);
    // Without the lock, an old file of zeros is no segment being made.
    let left = ShmFile::create(&name, 1 << 20).expect("create");
    age(&left, 10);
    match Segment::open_any_within(&name, &[SegmentKind::Channel], Duration::from_millis(50)) {
        Err(Error::Corrupt { what, .. }) => assert!(what.contains("bad magic"), "{what}"),
        other => panic!("expected a foreign file, got {other:?}"),
    }
    left.unlink_if_same(&name);
}
