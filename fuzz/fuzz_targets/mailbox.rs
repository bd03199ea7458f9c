//! A mailbox whose shared memory a hostile or broken producer wrote: the role table
//! (each lane's producer and consumer states, leases and copy entries), the control
//! block (the pending summary bits, the consumer's event count and doorbell bits, the
//! join count) and every lane's ring (control words and records). The production
//! consumer (`shmplane::Mailbox`, attached by descriptor as a copy of the consumer
//! would be) and a producer joining a lane must never panic, read outside the segment
//! or hang; errors (`Corrupt`, `PeerDead`, `Disconnected`, `Empty`) are fine.
//!
//! Messages are taken as an application that bounds their size does (`begin`, then
//! the payload if its announced total is at most 1 MiB), since a receive allocates
//! whatever total a sender announces.
//!
//! The segment is a real one (a `/dev/shm` file, unlinked at once: lanes and locks need
//! a descriptor), two lanes of 4096 bytes, created once per process; each input starts
//! from its pristine image, then applies its patches, so every run sees only its own
//! input. Input: byte 0 = the number of operations (at most 16), then one byte per
//! operation, then patches: `u16 offset` (into the segment after its header, which
//! `header.rs` fuzzes) `, u8 length, bytes`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shmplane::{Mailbox, Wait};
use shmplane_shm::header::SegmentKind;
use shmplane_shm::kind::Params;
use shmplane_shm::layout::ROLE_TABLE_OFFSET;
use shmplane_shm::segment::Segment;
use std::os::fd::OwnedFd;
use std::sync::OnceLock;
use std::time::Duration;

const LANE_CAPACITY: u64 = 4096;
const LANES: u64 = 2;
/// Largest message the harness takes (larger ones are skipped: consumed unread).
const MAX_TAKEN: usize = 1 << 20;

struct Fixture {
    /// The harness's own handle: its mapping is where patches go; its descriptor is
    /// reopened (a new open file description, as another process's) for each input.
    segment: Segment,
    pristine: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let name = format!("fuzz-mailbox-{}", std::process::id());
        let segment = Segment::create(&name, SegmentKind::Mailbox, Params { p0: LANE_CAPACITY, p1: LANES }).expect("create");
        // Nothing else needs the names: the descriptor keeps the segment.
        shmplane_shm::bell::remove(&name);
        let _ = std::fs::remove_file(shmplane_shm::region::shm_path(&name));
        let region = segment.region();
        // SAFETY: the mapping is `len` bytes and nobody else writes it yet.
        let pristine = unsafe { std::slice::from_raw_parts(region.as_ptr(), region.len()) }.to_vec();
        Fixture { segment, pristine }
    })
}

/// A new open file description of the segment (what another process's `open` gets).
fn reopen(segment: &Segment) -> OwnedFd {
    let fd = segment.fd().expect("a file-backed segment");
    std::fs::OpenOptions::new().read(true).write(true).open(format!("/proc/self/fd/{fd}")).expect("reopen").into()
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let region = f.segment.region();
    let base = region.as_ptr();
    let len = region.len();
    let (ops, patches) = match data.split_first() {
        Some((&n, rest)) => rest.split_at(usize::from(n % 17).min(rest.len())),
        None => (&[][..], &[][..]),
    };
    // SAFETY: `base` is valid for `len` bytes of writes (the harness's mapping); no
    // handle of the segment is open now (each input's handles are dropped at its end),
    // so nothing reads it concurrently.
    unsafe { std::ptr::copy_nonoverlapping(f.pristine.as_ptr(), base, len) };
    let mut rest = patches;
    while rest.len() >= 3 {
        let at = ROLE_TABLE_OFFSET + usize::from(u16::from_le_bytes([rest[0], rest[1]])) % (len - ROLE_TABLE_OFFSET);
        let n = usize::from(rest[2]).min(rest.len() - 3).min(len - at);
        // SAFETY: `at + n <= len` (clamped above); as for the copy above.
        unsafe { std::ptr::copy_nonoverlapping(rest[3..].as_ptr(), base.add(at), n) };
        rest = &rest[3 + n..];
    }

    let Ok(mut mailbox) = Mailbox::from_fd(reopen(&f.segment), None) else { return };
    mailbox.set_persistent(false);
    for &op in ops {
        match op % 9 {
            0 => {
                let _ = mailbox.pending();
            }
            1 => {
                let _ = mailbox.pending_exact();
            }
            2 | 6 => {
                // As an application that bounds what it takes: a message's total is
                // the sender's word (a receive allocates it: `try_recv` of a forged
                // total of 2^59 bytes is the allocator's refusal, `TooLarge`, which
                // the sanitizer reports as a failure of its own).
                let wait = if op % 9 == 2 { Wait::no_wait() } else { Wait::timeout(Duration::ZERO) };
                if let Ok(incoming) = mailbox.begin(wait) {
                    let total = incoming.head().total();
                    if total <= MAX_TAKEN {
                        let mut buf = vec![0u8; total];
                        let _ = incoming.read_payload_into(buf.as_mut_slice().into(), Wait::no_wait());
                    }
                }
            }
            3 => {
                assert!(mailbox.senders() <= LANES as usize);
            }
            4 => {
                let _ = mailbox.check_senders();
            }
            5 => {
                let _ = mailbox.poll(Some(Duration::ZERO));
            }
            7 => {
                if let Ok(probe) = mailbox.probe() {
                    let _ = probe.any();
                }
            }
            _ => {
                // A producer joins a lane (the first free one) and sends a small and a
                // chunked message without waiting, then closes.
                if let Ok(mut tx) = mailbox.sender() {
                    let _ = tx.try_send(b"fuzz");
                    let _ = tx.send_with(&[op; 6000], Wait::no_wait());
                }
            }
        }
    }
});
