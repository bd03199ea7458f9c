//! loom models of the chunked-message protocol (`channels::frame`, sent by
//! `Sender::send`/`send_rest`, reassembled by `Incoming::copy_out` and
//! `Op::wait_for_chunk` in `channels::flavors::spsc`): a sender writes a message as
//! three chunk records through a tiny ring and stops part-way (it cuts the stream, as
//! an abandoned send does, or its process dies), or finishes; then it sends a second,
//! one-record message. The receiver gets the first message whole or a `Truncated`
//! verdict at exactly the bytes that were sent, then the second message intact (or the
//! sender's death): never a mix of the two, never a truncation of a message that was
//! sent whole. Run by `ci/loom.sh` (LOOM_MAX_PREEMPTIONS=2).
//!
//! The protocol is a layer over the ring, the role lease and liveness, all of which
//! run here as the real code: `Producer`/`Consumer` (records, `cut`, `at_cut`) over
//! loom atomics, the sender's operation as `Lease::try_enter`/`exit` (what
//! `active_copy` reads), and the peer check as `liveness::observe` + `classify`. The
//! layer itself lives in the `shmplane` crate, which does not build under
//! `cfg(shmplane_loom)` (it needs mapped segments), so its decisions are a faithful
//! small transcription: record tags and chunk headers as in `frame.rs`, and the
//! receiver's order of looks as in `wait_for_chunk` (peek; at the cut: truncated; the
//! per-slice check reads whether the sender is sending *first*, then the peer's
//! liveness, then whether a record is queued). The receiver polls with yields instead
//! of sleeping (the wake-up is modelled in `wait.rs` and `close.rs`) and runs the
//! per-slice check at every poll: a superset of the moments production runs it at.
#![cfg(shmplane_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{payload, LoomStore};
use shmplane_shm::layout::RoleEntry;
use shmplane_shm::lease::{self, Acquired, CopyId, Copies, Lease};
use shmplane_shm::liveness::{self, key_of, PeerState};
use shmplane_shm::ring::{Consumer, Producer, Record, CONTINUATION_TAG};
use shmplane_shm::sync::{AtomicU32, Ordering};

/// `frame::TAG_BYTES`, `frame::CHUNKED`, `frame::TAG_CONTINUATION`.
const TAG_BYTES: u32 = 1;
const CHUNKED: u32 = 0x100;
const TAG_CONTINUATION: u32 = CONTINUATION_TAG;
/// `frame::chunk_header_len()`: the total (first record) or the offset (continuation).
const H: usize = 8;
/// The chunked message: 24 bytes in three chunks of 8 (each record 8 + 8 payload bytes,
/// 24 in the ring: a 64-byte ring holds two, so the sender waits for the receiver).
const TOTAL: usize = 24;
const CHUNK: usize = 8;
/// The one-record message that follows it.
const NEXT: usize = 8;

/// The sender's process key (pid 100).
const KEY: u64 = key_of(100, 7);

struct Role {
    entry: RoleEntry,
    /// The sender role's OFD lock (the kernel's): 1 held, 0 free; RMWs only (see
    /// `role.rs`).
    lock: AtomicU32,
    /// The sender's process died (a model flag, set before the kernel drops its lock).
    dead: AtomicU32,
}

/// Liveness of the sender's copy: its process lives until `dead`.
struct Alive<'a>(&'a Role);

impl Copies for Alive<'_> {
    fn alive(&self, _index: usize, _key: u64) -> bool {
        // ORDERING: SeqCst, partner of the dying sender's store.
        self.0.dead.load(Ordering::SeqCst) == 0
    }
    fn claim(&mut self, _index: usize) -> bool {
        true
    }
    fn unclaim(&mut self, _index: usize) {}
}

/// How the sender's first message ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// All three chunks.
    Whole,
    /// Cut after this many records (an abandoned send: `Producer::cut`).
    Cut(usize),
    /// Its process dies after this many records, inside its operation.
    Die(usize),
}

fn put(p: &mut Producer<LoomStore>, tag: u32, bytes: &[u8]) {
    let claim = loop {
        match p.try_claim(bytes.len()).unwrap() {
            Some(c) => break c,
            None => thread::yield_now(),
        }
    };
    p.write(&claim, 0, bytes);
    p.commit(claim, bytes.len(), tag);
}

fn with_header(value: usize, data: &[u8]) -> Vec<u8> {
    let mut v = (value as u64).to_le_bytes().to_vec();
    v.extend_from_slice(data);
    v
}

/// `Sender::send` of the chunked message (stopping per `stop`), then of the next one.
fn sender(mut p: Producer<LoomStore>, lease: Lease, role: &Role, stop: Stop) {
    let msg = payload(1, TOTAL);
    assert!(lease.try_enter(&role.entry, 0), "the sender holds its lease");
    for k in 0..TOTAL / CHUNK {
        match stop {
            Stop::Cut(n) if n == k => {
                p.cut();
                break;
            }
            Stop::Die(n) if n == k => {
                // Killed inside its operation: ACTIVE stays, the process is gone.
                // ORDERING: SeqCst flag, then the SeqCst RMW unlock the kernel does at
                // death (partners: `Alive::alive`, the receiver's lock query).
                role.dead.store(1, Ordering::SeqCst);
                role.lock.swap(0, Ordering::SeqCst);
                return;
            }
            _ => {}
        }
        let data = &msg[k * CHUNK..(k + 1) * CHUNK];
        if k == 0 {
            put(&mut p, TAG_BYTES | CHUNKED, &with_header(TOTAL, data));
        } else {
            put(&mut p, TAG_CONTINUATION, &with_header(k * CHUNK, data));
        }
    }
    lease.exit(&role.entry);
    assert!(lease.try_enter(&role.entry, 0));
    put(&mut p, TAG_BYTES, &payload(2, NEXT));
    lease.exit(&role.entry);
}

/// What a receive ends with, besides a message.
#[derive(Debug, PartialEq, Eq)]
enum Fail {
    Truncated { received: usize, total: usize },
    Disconnected,
    PeerDead,
}

/// `check_ring_peer` of the sender: `Err` if it closed or died.
fn peer(role: &Role) -> Result<(), Fail> {
    // ORDERING: SeqCst RMW query of the model lock, partner of the unlock at death.
    let observed = liveness::observe(&role.entry, || Ok::<bool, ()>(role.lock.fetch_add(0, Ordering::SeqCst) != 0)).unwrap();
    match liveness::classify(&role.entry, observed, |i, k| Alive(role).alive(i, k)) {
        PeerState::Vacant | PeerState::Alive(_) => Ok(()),
        PeerState::Closed => Err(Fail::Disconnected),
        PeerState::Dead(_) => Err(Fail::PeerDead),
    }
}

/// `Op::next_record`/`wait_for_record`: the next record, or the sender's end once
/// nothing is queued.
fn next_record(c: &mut Consumer<LoomStore>, role: &Role) -> Result<Record, Fail> {
    loop {
        if let Some(r) = c.try_peek().unwrap() {
            return Ok(r);
        }
        if let Err(e) = peer(role) {
            // The sender's last records happen-before its close or death.
            return c.try_peek().unwrap().ok_or(e);
        }
        thread::yield_now();
    }
}

/// `Op::wait_for_chunk`: the next record of a message that has `received` of `total`
/// bytes so far, or `Truncated`.
fn wait_for_chunk(c: &mut Consumer<LoomStore>, role: &Role, received: usize) -> Result<Record, Fail> {
    let truncated = Fail::Truncated { received, total: TOTAL };
    loop {
        match c.try_peek().unwrap() {
            Some(r) => return Ok(r),
            None if c.at_cut() => return Err(truncated),
            None => {}
        }
        // The per-slice check. The sender holds its operation from the first record to
        // the last: seen not sending (read first), its records are all visible below.
        let sending = lease::active_copy(&role.entry, &Alive(role));
        let alive = peer(role);
        let queued = c.try_peek().unwrap().is_some();
        match alive {
            _ if queued => {}
            Err(_) => return Err(truncated),
            Ok(()) if sending.is_none() => return Err(truncated),
            Ok(()) => {}
        }
        thread::yield_now();
    }
}

fn read(c: &Consumer<LoomStore>, r: &Record, at: usize, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    c.read(r, at, &mut out);
    out
}

/// `Receiver::recv`: `next_message` (continuations of a message begun before are
/// skipped), then `copy_out`.
fn recv(c: &mut Consumer<LoomStore>, role: &Role) -> Result<Vec<u8>, Fail> {
    let (first, total) = loop {
        let r = next_record(c, role)?;
        match r.tag() {
            TAG_BYTES => {
                let bytes = read(c, &r, 0, r.len());
                c.release(r);
                return Ok(bytes);
            }
            t if t == TAG_BYTES | CHUNKED => {
                let total = u64::from_le_bytes(read(c, &r, 0, H).try_into().unwrap()) as usize;
                break (r, total);
            }
            TAG_CONTINUATION => c.release(r),
            t => panic!("unexpected tag {t:#x}"),
        }
    };
    assert_eq!(total, TOTAL);
    let mut msg = read(c, &first, H, first.len() - H);
    c.release(first);
    while msg.len() < total {
        let r = wait_for_chunk(c, role, msg.len())?;
        if r.tag() != TAG_CONTINUATION {
            // The next message: this one was abandoned. Leave it queued.
            return Err(Fail::Truncated { received: msg.len(), total });
        }
        let offset = u64::from_le_bytes(read(c, &r, 0, H).try_into().unwrap()) as usize;
        assert_eq!(offset, msg.len(), "a continuation out of place");
        msg.extend(read(c, &r, H, r.len() - H));
        c.release(r);
    }
    Ok(msg)
}

fn chunks_model(stop: Stop) {
    loom::model(move || {
        let store = LoomStore::new(64);
        let role = Arc::new(Role { entry: RoleEntry::default(), lock: AtomicU32::new(1), dead: AtomicU32::new(0) });
        liveness::mark_attached(&role.entry);
        // The sender's first use takes the lease (before the race: lease.rs models that).
        let mut lease = Lease::new();
        let me = CopyId { key: KEY, copy: 1, generation: 0 };
        assert_eq!(lease.try_acquire(&role.entry, me, true, &mut Alive(&role)), Ok(Acquired::Entered));
        lease.exit(&role.entry);
        let producer = Producer::attach(store.clone()).unwrap();
        let mut consumer = Consumer::attach(store).unwrap();
        let t = {
            let role = role.clone();
            thread::spawn(move || sender(producer, lease, &role, stop))
        };
        let first = recv(&mut consumer, &role);
        let second = recv(&mut consumer, &role);
        t.join().unwrap();
        let msg = payload(1, TOTAL);
        match stop {
            Stop::Whole => assert_eq!(first, Ok(msg), "a message sent whole"),
            Stop::Cut(k) | Stop::Die(k) => {
                assert_eq!(first, Err(Fail::Truncated { received: k * CHUNK, total: TOTAL }), "stopped after {k} records")
            }
        }
        match stop {
            Stop::Die(_) => assert_eq!(second, Err(Fail::PeerDead)),
            _ => assert_eq!(second, Ok(payload(2, NEXT)), "the next message, intact"),
        }
    });
}

/// All three chunks, then the next message: the receiver never reports a message
/// sent whole as truncated, however the sender's steps interleave with its checks.
#[test]
fn whole_message_then_the_next() {
    chunks_model(Stop::Whole);
}

/// The sender cuts after the first record: truncated at 8 bytes, the next intact.
#[test]
fn cut_after_the_first_chunk() {
    chunks_model(Stop::Cut(1));
}

/// The sender cuts after two records.
#[test]
fn cut_after_two_chunks() {
    chunks_model(Stop::Cut(2));
}

/// The sender dies inside its operation after the first record: truncated, then dead.
#[test]
fn sender_dies_after_the_first_chunk() {
    chunks_model(Stop::Die(1));
}

/// The sender dies after two records.
#[test]
fn sender_dies_after_two_chunks() {
    chunks_model(Stop::Die(2));
}
