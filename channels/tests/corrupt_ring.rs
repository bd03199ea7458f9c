//! A ring whose shared bytes another process scribbled over: the receiver reports
//! `Error::Corrupt` at the API, never garbage, a panic or a hang.
//!
//! - A record header that cannot be (a length past the end of the data area) is
//!   `Corrupt` at every receive (nothing is skipped past it) and poisons the ring: a
//!   sender waiting for room reports it.
//! - A message whose chunk headers contradict it (a first record claiming fewer bytes
//!   than it holds; a continuation at the wrong offset) is reported `Corrupt` once and
//!   consumed; the ring goes on with the next message.
//!
//! In one process (the bytes are written through the segment file, as another process
//! would), so this also runs under valgrind (`ci/valgrind.sh`).

mod common;

use common::{path_of, Name};
use shmplane::{channel_named, Error, Receiver};
use shmplane_shm::layout::RING_DATA_OFFSET;
use std::os::unix::fs::FileExt;
use std::time::Duration;

const WATCHDOG: Duration = Duration::from_secs(20);

/// The 8-byte word at byte `pos` of the ring's data area.
fn peek_word(name: &str, pos: usize) -> u64 {
    let mut w = [0u8; 8];
    std::fs::File::open(path_of(name)).unwrap().read_exact_at(&mut w, (RING_DATA_OFFSET + pos) as u64).unwrap();
    u64::from_le_bytes(w)
}

/// Overwrite the 8-byte word at byte `pos` of the ring's data area.
fn poke_word(name: &str, pos: usize, word: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path_of(name)).unwrap();
    f.write_all_at(&word.to_le_bytes(), (RING_DATA_OFFSET + pos) as u64).unwrap();
}

/// Record header word: committed bit, tag, payload length.
fn header(tag: u32, len: u32) -> u64 {
    (1 << 63) | (u64::from(tag) << 32) | u64::from(len)
}

/// Where the record after the one at `pos` starts.
fn next_record(name: &str, pos: usize) -> usize {
    let len = (peek_word(name, pos) & 0xFFFF_FFFF) as usize;
    pos + (8 + len).next_multiple_of(8)
}

fn corrupt_what(r: Result<Vec<u8>, Error>) -> String {
    match r {
        Err(Error::Corrupt { what, .. }) => what,
        other => panic!("expected Corrupt, got {:?}", other.map(|m| m.len())),
    }
}

#[test]
fn record_header_with_an_impossible_length_poisons_the_ring() {
    let name = Name::new("corrupt-header");
    let (mut tx, mut rx) = channel_named(&name, 4096).unwrap();
    tx.send(b"hello").unwrap();
    assert_eq!(peek_word(&name, 0), header(shmplane::frame::TAG_BYTES, 5), "the record is where the test looks");
    poke_word(&name, 0, header(shmplane::frame::TAG_BYTES, 0x7FFF_0000));
    let what = corrupt_what(rx.try_recv());
    assert!(what.contains("record header"), "{what}");
    // Every receive flavour says so again (none steps over the bad record).
    corrupt_what(rx.try_recv());
    corrupt_what(rx.recv_timeout(WATCHDOG));
    corrupt_what(rx.recv());
    assert!(matches!(rx.peek(Some(WATCHDOG)), Err(Error::Corrupt { .. })));
    // The ring is poisoned: a sender waiting for room learns it at its next check
    // instead of waiting on (the receiver will never free anything).
    while tx.try_send(&[1; 500]).is_ok() {}
    match tx.send_timeout(&[1; 500], WATCHDOG) {
        Err(Error::Corrupt { what, .. }) => assert!(what.contains("poisoned"), "{what}"),
        other => panic!("expected Corrupt (poisoned), got {other:?}"),
    }
}

/// Send a 1.5 MB message in chunks (over the 1 MiB threshold) into a 4 MiB ring, then
/// `b"next"`, and return the receiver with both queued.
fn chunked_then_next(name: &Name) -> (shmplane::Sender, Receiver, Vec<u8>) {
    let (mut tx, rx) = channel_named(name, 4 << 20).unwrap();
    let big: Vec<u8> = (0..1_500_000u32).map(|i| i as u8).collect();
    tx.send(&big).unwrap();
    tx.send(b"next").unwrap();
    let first = peek_word(name, 0);
    assert_eq!((first >> 32) as u32 & 0x7FFF_FFFF, shmplane::frame::TAG_BYTES | shmplane::frame::CHUNKED, "sent in chunks");
    (tx, rx, big)
}

#[test]
fn chunked_first_record_claiming_less_than_it_holds_is_corrupt() {
    let name = Name::new("corrupt-total");
    let (_tx, mut rx, big) = chunked_then_next(&name);
    assert_eq!(peek_word(&name, 8), big.len() as u64, "the chunk header holds the total");
    poke_word(&name, 8, 1);
    let what = corrupt_what(rx.recv_timeout(WATCHDOG));
    assert!(what.contains("claims 1 bytes"), "{what}");
    // Consumed; its continuations are skipped: the next message arrives.
    assert_eq!(rx.recv_timeout(WATCHDOG).unwrap(), b"next");
}

#[test]
fn continuation_at_the_wrong_offset_is_corrupt() {
    let name = Name::new("corrupt-offset");
    let (_tx, mut rx, _big) = chunked_then_next(&name);
    let second = next_record(&name, 0);
    let received = (peek_word(&name, 0) & 0xFFFF_FFFF) as usize - 8;
    assert_eq!(peek_word(&name, second + 8), received as u64, "the continuation's chunk header holds its offset");
    poke_word(&name, second + 8, received as u64 + 8);
    let what = corrupt_what(rx.recv_timeout(WATCHDOG));
    assert!(what.contains(&format!("where byte {received} of 1500000 was due")), "{what}");
    assert_eq!(rx.recv_timeout(WATCHDOG).unwrap(), b"next");
}
