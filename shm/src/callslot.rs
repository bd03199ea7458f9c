//! The call slot of a mailbox lane ([`CallSlot`]): an RPC client's small request and
//! the server's reply to it, written over each other in the same lines.
//!
//! A call through the lane's ring and the client's reply channel moves a record line
//! to the server and another one back, each published by a header on another line, so
//! a round trip costs about two line transfers each way. A call through the slot moves
//! the same lines to the server and back with ownership (the one-line ping-pong: see
//! `docs/design.md`, RPC). It is the RPC fast path for requests and replies of one
//! record of at most [`CALL_SLOT_BYTES`]; anything else takes the rings.
//!
//! # Layout
//! The record's first 16 bytes are its envelope (`seq u64, client u32, flags u32`,
//! little-endian, as in a ring). The slot does not store them as bytes: the call number
//! is the state word's, and `meta` holds the client id, the flags, the tag and the
//! payload's length ([`meta`]), so that the state, `meta` and the first 48 bytes of
//! payload share the slot's first 64-byte line: a call of up to 48 bytes each way moves
//! one line, as the one-line ping-pong does. [`fits`] says which records the slot can
//! hold (flags below 256, a tag below 65536, a payload of at most
//! [`MAX_PAYLOAD`] bytes); the readers rebuild the envelope in front of the payload.
//!
//! # Ownership
//! `state` is `seq << 3 | POLLED? | phase`. Whoever the phase names may write `meta`
//! and `data`; the other side only reads them after an Acquire load (or RMW) of the
//! `state` the writer stored with Release:
//!
//! ```text
//! EMPTY(s)   the client's: call s is finished (its reply went elsewhere, or none)
//! REPLY(s)   the client's: call s's reply is in the slot
//!    client: write the request, store REQUEST(n)                  (post)
//! REQUEST(n) nobody writes; either side may move it on with a CAS:
//!    server: CAS REQUEST(n) -> TAKEN(n), then copy the request out  (take)
//!    client: CAS REQUEST(n) -> EMPTY(n): the call is withdrawn      (withdraw)
//! TAKEN(n)   the server's: it runs call n
//!    server: write the reply, store REPLY(n); or store EMPTY(n)     (complete)
//! ```
//!
//! The CAS on `REQUEST` decides between a server that takes the call and a client that
//! withdraws it (a client that timed out before the server looked, or a new client
//! clearing what a dead one left): exactly one of them wins, so a request is never run
//! after it was withdrawn and never overwritten while it is read. Everything in the
//! slot is untrusted: a reader validates the length ([`MAX_PAYLOAD`] at most) and
//! parses the record as one from a ring; a client accepts a reply only if its envelope
//! names its own id and call. Crash safety: a client that dies part-way through a post
//! never stored `REQUEST` (the next client overwrites); one that dies after it leaves a
//! request the server runs (as a record left in the lane) or the next client
//! withdraws; a server that dies leaves the slot to a successor's new segment.
//!
//! # Polled slots
//! A server that busy-polls marks the slots it will look at directly, in each of its
//! loops, with [`POLLED`] (set when it completes a call there, see [`complete`]). A
//! client that posts into a polled slot needs no pending bit and no notify: the post
//! moves only the slot's lines to the server, as the one-line ping-pong does. Before it
//! sleeps (or waits on a descriptor) the server takes the bit back with [`unpoll`], a
//! CAS on the state word; the client's [`post`] is a CAS on the same word, so exactly
//! one of them comes first: the post saw `POLLED` (the server's `unpoll` then sees the
//! request and announces it itself) or it did not (the client marks the lane pending
//! and notifies, as for a slot nobody polls).
//!
//! Modelled in `loom-tests/tests/callslot.rs`.

use crate::layout::{CallSlot, CALL_SLOT_BYTES};
use crate::sync::Ordering;

/// Phase: the client's; the last call is finished and its reply went elsewhere.
pub const EMPTY: u64 = 0;
/// Phase: a request is posted and not taken yet.
pub const REQUEST: u64 = 1;
/// Phase: the server runs the request.
pub const TAKEN: u64 = 2;
/// Phase: the client's; the reply is in the slot.
pub const REPLY: u64 = 3;

/// Flag in the state word: the server polls this slot directly in its busy loop, so
/// a post needs no pending bit and no notify (see the module's documentation).
pub const POLLED: u64 = 4;

/// Largest call number a slot holds (`seq << 3` must fit).
pub const MAX_SEQ: u64 = u64::MAX >> 3;

/// Bytes of envelope in front of every record (see the module's documentation).
pub const ENVELOPE: usize = 16;

/// Most payload bytes a slot holds (the record less its envelope: 224).
pub const MAX_PAYLOAD: usize = CALL_SLOT_BYTES - ENVELOPE;

/// The `meta` word of a record: the envelope's client id (bits 32-63) and flags (24-31),
/// the tag (8-23) and the payload's length in bytes (0-7).
#[inline]
pub const fn meta(client: u32, flags: u32, tag: u32, payload: usize) -> u64 {
    ((client as u64) << 32) | (((flags & 0xff) as u64) << 24) | (((tag & 0xffff) as u64) << 8) | (payload & 0xff) as u64
}

/// True if the slot can hold `record` (its envelope and payload) tagged `tag` as call
/// `seq`: at least an envelope, at most [`MAX_PAYLOAD`] bytes of payload, the envelope's
/// call number `seq` (at most [`MAX_SEQ`]), its flags below 256, the tag below 65536.
#[inline]
pub fn fits(seq: u64, tag: u32, record: &[u8]) -> bool {
    let Some((env, payload)) = record.split_first_chunk::<ENVELOPE>() else { return false };
    let env_seq = u64::from_le_bytes(env[..8].try_into().expect("8 bytes"));
    let flags = u32::from_le_bytes(env[12..].try_into().expect("4 bytes"));
    payload.len() <= MAX_PAYLOAD && seq <= MAX_SEQ && env_seq == seq && flags < 256 && tag < 0x1_0000
}

/// What a record's envelope and tag put in the slot's `meta` word besides the payload's
/// length (the call number is the state word's): the client id, the envelope's flags
/// (below 256) and the record's tag (below 65536).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// The envelope's client id.
    pub client: u32,
    /// The envelope's flags.
    pub flags: u32,
    /// The record's tag.
    pub tag: u32,
}

/// True if the slot can hold a payload of `len` bytes (the record without its
/// envelope) with `m` as call `seq`: [`fits`] for a record given by its parts.
#[inline]
pub fn fits_payload(seq: u64, m: Meta, len: usize) -> bool {
    len <= MAX_PAYLOAD && seq <= MAX_SEQ && m.flags < 256 && m.tag < 0x1_0000
}

/// The state word of call `seq` in `phase` (not polled).
#[inline]
pub const fn state(seq: u64, phase: u64) -> u64 {
    (seq << 3) | phase
}

/// The phase of a state word.
#[inline]
pub const fn phase_of(state: u64) -> u64 {
    state & 3
}

/// The call number of a state word.
#[inline]
pub const fn seq_of(state: u64) -> u64 {
    state >> 3
}

/// The slot's state word (Acquire: partner of the Release stores of `post` and
/// `complete`, so that what they wrote is visible to the caller that owns the slot in
/// the phase it read).
#[inline]
pub fn load(slot: &CallSlot) -> u64 {
    // ORDERING: Acquire, partner of the Release stores in `post` and `complete`.
    slot.state.load(Ordering::Acquire)
}

/// True if the client may write the slot (phase `EMPTY` or `REPLY`).
#[inline]
pub fn writable(slot: &CallSlot) -> bool {
    matches!(phase_of(load(slot)), EMPTY | REPLY)
}

/// Client: post `record` (envelope and payload, as in a ring) tagged `tag` as call
/// `seq`. The caller checked [`writable`] and [`fits`], and is the lane's only
/// producer. True if the server polls the slot ([`POLLED`]): it will find the request
/// without a pending bit or a notify; false: the caller marks the lane pending and
/// notifies.
///
/// # Panics
/// If the record does not [`fit`](fits).
#[inline]
pub fn post(slot: &CallSlot, seq: u64, tag: u32, record: &[u8]) -> bool {
    write_record(slot, seq, tag, record);
    publish_request(slot, seq)
}

/// Client: [`post`] a record given by its parts: `m` and the `payload` (what follows
/// the envelope), with no envelope to build or parse (the RPC client's path).
///
/// # Panics
/// If it does not [`fits_payload`].
#[inline]
pub fn post_payload(slot: &CallSlot, seq: u64, m: Meta, payload: &[u8]) -> bool {
    assert!(fits_payload(seq, m, payload.len()), "a payload the call slot cannot hold");
    write_payload(slot, m, payload);
    publish_request(slot, seq)
}

/// Store `REQUEST(seq)` over the client's phase, keeping the server's `POLLED` flag;
/// true if it was set (see [`post`]).
#[inline]
fn publish_request(slot: &CallSlot, seq: u64) -> bool {
    // ORDERING: Relaxed: the CAS below decides (and reloads on failure).
    let mut s = slot.state.load(Ordering::Relaxed);
    loop {
        let new = state(seq & MAX_SEQ, REQUEST) | (s & POLLED);
        // ORDERING: Release on success, partner of the server's Acquire in `load` /
        // `take`'s CAS: the request's words happen-before a server that sees REQUEST
        // reads them. A CAS, not a store, because the server's `unpoll` CAS may clear
        // POLLED between our load and our write: one of the two RMWs comes first, and
        // each sees what the other did. Relaxed on failure (only `unpoll` changes the
        // word in the client's phases: we retry with what it left).
        match slot.state.compare_exchange_weak(s, new, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return s & POLLED != 0,
            Err(now) => s = now,
        }
    }
}

/// Client: withdraw a request not taken yet (any call's: also one a dead client
/// left). True if the slot is the client's now (it was not `REQUEST`, or the withdrawal
/// won); false if the server took it first (phase `TAKEN`: the server owns it).
pub fn withdraw(slot: &CallSlot) -> bool {
    let mut s = load(slot);
    loop {
        match phase_of(s) {
            REQUEST => {
                // ORDERING: Acquire on success, partner of the posting client's Release
                // CAS in `post` (a dead predecessor's): its writes happen-before ours
                // that follow. Acquire on failure too: the word we retry with may be the
                // server's `complete` (TAKEN then REPLY / EMPTY), whose reply we may read.
                // The POLLED flag is the server's: kept (the server's `unpoll` may clear
                // it between our load and our CAS: then we retry).
                match slot.state.compare_exchange(s, state(seq_of(s), EMPTY) | (s & POLLED), Ordering::Acquire, Ordering::Acquire) {
                    Ok(_) => return true,
                    Err(now) => s = now,
                }
            }
            TAKEN => return false,
            _ => return true,
        }
    }
}

/// A request the server took: its call number, tag and length (validated: at most
/// [`CALL_SLOT_BYTES`]; the bytes were copied to the caller's buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Taken {
    /// The call number (the state word's; the rebuilt envelope carries it too).
    pub seq: u64,
    /// The record's tag.
    pub tag: u32,
    /// The record's length in bytes (envelope included).
    pub len: usize,
}

/// True if a request may be posted (one Relaxed load: a hint for the server's scan;
/// [`take`] decides).
#[inline]
pub fn posted(slot: &CallSlot) -> bool {
    // ORDERING: Relaxed: a hint; `take`'s CAS acquires.
    phase_of(slot.state.load(Ordering::Relaxed)) == REQUEST
}

/// Server: take the posted request, copying its record (the envelope rebuilt, then the
/// payload) into `dst`. `None` if nothing is posted (or the client withdrew it
/// first). A payload length over [`MAX_PAYLOAD`] (a corrupt or hostile client) is
/// taken and reported as `Err` with the call number and the length: the server
/// completes it with [`complete`] like any call it cannot run.
///
/// # Errors
/// The stored length is larger than the slot.
pub fn take(slot: &CallSlot, dst: &mut [u8; CALL_SLOT_BYTES]) -> Option<Result<Taken, (u64, u64)>> {
    let s = load(slot);
    if phase_of(s) != REQUEST {
        return None;
    }
    // ORDERING: Acquire on success, partner of the client's Release CAS in `post`
    // (CAS loads the value it stored): its words happen-before our reads below.
    // Relaxed on failure: the client withdrew it (or posted anew: a later look).
    if slot.state.compare_exchange(s, state(seq_of(s), TAKEN) | (s & POLLED), Ordering::Acquire, Ordering::Relaxed).is_err() {
        return None;
    }
    match read_record(slot, seq_of(s), dst) {
        Ok((tag, len)) => Some(Ok(Taken { seq: seq_of(s), tag, len })),
        Err(len) => Some(Err((seq_of(s), len))),
    }
}

/// Server: finish call `seq` (taken with [`take`]): with its reply `record` tagged
/// `tag` in the slot, or with none (`EMPTY`: the reply goes through the reply channel,
/// or the call is dropped). `polled`: the server will look at this slot directly
/// until it [`unpoll`]s it (see [`POLLED`]). The caller owns the slot (phase `TAKEN`
/// of this call).
///
/// # Panics
/// If the record does not [`fit`](fits).
pub fn complete(slot: &CallSlot, seq: u64, reply: Option<(u32, &[u8])>, polled: bool) {
    let phase = match reply {
        Some((tag, record)) => {
            write_record(slot, seq, tag, record);
            REPLY
        }
        None => EMPTY,
    };
    publish_completion(slot, seq, phase, polled);
}

/// Server: [`complete`] call `seq` with a reply given by its parts: `m` and the
/// `payload` (what follows the envelope), with no envelope to build or parse (the RPC
/// server's path).
///
/// # Panics
/// If it does not [`fits_payload`].
pub fn complete_payload(slot: &CallSlot, seq: u64, m: Meta, payload: &[u8], polled: bool) {
    assert!(fits_payload(seq, m, payload.len()), "a payload the call slot cannot hold");
    write_payload(slot, m, payload);
    publish_completion(slot, seq, REPLY, polled);
}

/// Store call `seq`'s final `phase` (`REPLY` or `EMPTY`), with `POLLED` if `polled`.
#[inline]
fn publish_completion(slot: &CallSlot, seq: u64, phase: u64, polled: bool) {
    let flag = if polled { POLLED } else { 0 };
    // ORDERING: Release, partner of the client's Acquire in `load` (`reply`,
    // `writable`) and of its CAS in `post`: the reply's words, and our reads of the
    // request, happen-before the client reads or overwrites them.
    slot.state.store(state(seq & MAX_SEQ, phase) | flag, Ordering::Release);
}

/// Server: stop polling the slot (clear [`POLLED`]), before sleeping or waiting on a
/// descriptor. True if a request is posted: it may have been posted while the flag was
/// set, with no pending bit and no notify, so the caller announces it (marks the lane
/// pending) before it sleeps.
pub fn unpoll(slot: &CallSlot) -> bool {
    // ORDERING: Relaxed: the CAS below decides.
    let mut s = slot.state.load(Ordering::Relaxed);
    loop {
        if s & POLLED == 0 {
            return phase_of(s) == REQUEST;
        }
        // ORDERING: the decision needs no ordering: RMWs of one word are totally
        // ordered, so either the client's `post` CAS comes first (and we see REQUEST
        // here) or ours does (and it sees the flag cleared and notifies). AcqRel on
        // success is kept as a margin: Acquire, partner of the client's Release CAS in
        // `post` (the request we report is whole; `take`'s CAS acquires it again);
        // Release, partner of the client's Acquire in `load`. Relaxed on failure (a
        // post or withdrawal came between: retry with what it left).
        match slot.state.compare_exchange_weak(s, s & !POLLED, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return phase_of(s) == REQUEST,
            Err(now) => s = now,
        }
    }
}

/// True if the state word has [`POLLED`] set (one Relaxed load: for the server's
/// bookkeeping of the slots it polls).
#[inline]
pub fn is_polled(slot: &CallSlot) -> bool {
    // ORDERING: Relaxed: a hint; `unpoll` decides.
    slot.state.load(Ordering::Relaxed) & POLLED != 0
}

/// Client: true unless call `seq` is posted or running in the slot (its reply is
/// there, or it finished elsewhere, or the slot holds another call). One load.
pub fn settled(slot: &CallSlot, seq: u64) -> bool {
    let s = load(slot);
    seq_of(s) != seq & MAX_SEQ || !matches!(phase_of(s), REQUEST | TAKEN)
}

/// Client: true if the slot holds call `seq` posted, running or answered (not
/// finished elsewhere, not another call). One load.
pub fn holds(slot: &CallSlot, seq: u64) -> bool {
    let s = load(slot);
    seq_of(s) == seq & MAX_SEQ && phase_of(s) != EMPTY
}

/// What the client finds for call `seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Poll {
    /// Posted or running: not finished.
    Pending,
    /// The reply is in the slot: its tag and length (validated; envelope included),
    /// copied to the caller's buffer.
    Reply {
        /// The record's tag.
        tag: u32,
        /// The record's length.
        len: usize,
    },
    /// Finished without a reply in the slot (it went through the reply channel, or the
    /// server dropped the request as a duplicate), or the slot holds another call.
    Elsewhere,
}

/// Client: look for the reply of call `seq`, copying it into `dst` when it is there.
pub fn reply(slot: &CallSlot, seq: u64, dst: &mut [u8; CALL_SLOT_BYTES]) -> Poll {
    let s = load(slot);
    if seq_of(s) != seq & MAX_SEQ {
        return Poll::Elsewhere;
    }
    match phase_of(s) {
        REQUEST | TAKEN => Poll::Pending,
        REPLY => match read_record(slot, seq_of(s), dst) {
            Ok((tag, len)) => Poll::Reply { tag, len },
            Err(_) => Poll::Elsewhere,
        },
        _ => Poll::Elsewhere,
    }
}

/// Write `record` (envelope and payload) of call `seq` tagged `tag`: its envelope's id
/// and flags, the tag and the length into `meta`, the payload into `data` (published by
/// the caller's Release store or CAS of `state`).
fn write_record(slot: &CallSlot, seq: u64, tag: u32, record: &[u8]) {
    assert!(fits(seq, tag, record), "a record the call slot cannot hold");
    let (env, payload) = record.split_first_chunk::<ENVELOPE>().expect("checked by fits");
    let client = u32::from_le_bytes(env[8..12].try_into().expect("4 bytes"));
    let flags = u32::from_le_bytes(env[12..].try_into().expect("4 bytes"));
    write_payload(slot, Meta { client, flags, tag }, payload);
}

/// Write `m` and `payload` into `meta` and `data` (published by the caller's Release
/// store or CAS of `state`). The caller checked [`fits_payload`].
#[inline]
fn write_payload(slot: &CallSlot, m: Meta, payload: &[u8]) {
    // ORDERING: Relaxed: published by the caller's Release store of `state`.
    slot.meta.store(meta(m.client, m.flags, m.tag, payload.len()), Ordering::Relaxed);
    let mut words = payload.chunks_exact(8);
    for (w, d) in words.by_ref().zip(&slot.data) {
        // ORDERING: Relaxed: published by the caller's Release store of `state`.
        d.store(u64::from_le_bytes(w.try_into().expect("8 bytes")), Ordering::Relaxed);
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        // ORDERING: Relaxed: published by the caller's Release store of `state`.
        slot.data[payload.len() / 8].store(u64::from_le_bytes(w), Ordering::Relaxed);
    }
}

/// Read the record of call `seq` into `dst`: the envelope rebuilt from `seq` and
/// `meta`, then the payload; its tag and length (envelope included). `Err` with the
/// payload length if it is over [`MAX_PAYLOAD`] (untrusted). The caller acquired the
/// state word that published them.
fn read_record(slot: &CallSlot, seq: u64, dst: &mut [u8; CALL_SLOT_BYTES]) -> Result<(u32, usize), u64> {
    // ORDERING: Relaxed: the caller acquired the state word that published it.
    let m = slot.meta.load(Ordering::Relaxed);
    let len = (m & 0xff) as usize;
    if len > MAX_PAYLOAD {
        return Err(len as u64);
    }
    let (env, payload) = dst.split_first_chunk_mut::<ENVELOPE>().expect("240 bytes");
    env[..8].copy_from_slice(&seq.to_le_bytes());
    env[8..12].copy_from_slice(&((m >> 32) as u32).to_le_bytes());
    env[12..].copy_from_slice(&(((m >> 24) & 0xff) as u32).to_le_bytes());
    let payload = &mut payload[..len];
    let mut words = payload.chunks_exact_mut(8);
    for (w, d) in words.by_ref().zip(&slot.data) {
        // ORDERING: Relaxed: the caller acquired the state word that published them.
        w.copy_from_slice(&d.load(Ordering::Relaxed).to_le_bytes());
    }
    let rest = words.into_remainder();
    if !rest.is_empty() {
        // ORDERING: Relaxed: the caller acquired the state word that published them.
        let w = slot.data[len / 8].load(Ordering::Relaxed).to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&w[..n]);
    }
    Ok((((m >> 8) & 0xffff) as u32, ENVELOPE + len))
}

#[cfg(all(test, not(shmplane_loom)))]
mod tests {
    use super::*;

    /// A record of call `seq` from client 0x1234 with `flags` and `payload`.
    fn rec(seq: u64, flags: u32, payload: &[u8]) -> Vec<u8> {
        let mut r = seq.to_le_bytes().to_vec();
        r.extend(0x1234u32.to_le_bytes());
        r.extend(flags.to_le_bytes());
        r.extend(payload);
        r
    }

    #[test]
    fn a_call_through_the_slot() {
        let slot = CallSlot::default();
        let mut buf = [0u8; CALL_SLOT_BYTES];
        assert!(writable(&slot) && !posted(&slot));
        assert_eq!(take(&slot, &mut buf), None);
        let request = rec(7, 0, b"+request");
        assert!(!post(&slot, 7, 0x401, &request), "nobody polls it");
        assert!(!writable(&slot) && posted(&slot));
        assert_eq!(reply(&slot, 7, &mut buf), Poll::Pending);
        let t = take(&slot, &mut buf).unwrap().unwrap();
        assert_eq!(t, Taken { seq: 7, tag: 0x401, len: 24 });
        assert_eq!(&buf[..24], &request[..]);
        assert!(!withdraw(&slot), "taken: the server's");
        let answer = rec(7, 2, b"reply");
        complete(&slot, 7, Some((0x401, &answer)), false);
        assert_eq!(reply(&slot, 6, &mut buf), Poll::Elsewhere);
        assert_eq!(reply(&slot, 7, &mut buf), Poll::Reply { tag: 0x401, len: 21 });
        assert_eq!(&buf[..21], &answer[..]);
        assert!(writable(&slot));
        let full = rec(8, 0, &[9; MAX_PAYLOAD]);
        assert!(fits(8, 1, &full));
        post(&slot, 8, 1, &full);
        let t = take(&slot, &mut buf).unwrap().unwrap();
        assert_eq!(&buf[..t.len], &full[..]);
        complete(&slot, 8, None, false);
        assert_eq!(reply(&slot, 8, &mut buf), Poll::Elsewhere);
        assert!(writable(&slot));
    }

    #[test]
    fn what_fits_the_slot() {
        assert!(fits(1, 0x401, &rec(1, 0, b"")));
        assert!(!fits(1, 0x401, &rec(1, 0, &[0; MAX_PAYLOAD + 1])), "too long");
        assert!(!fits(1, 0x401, &[0; 15]), "no envelope");
        assert!(!fits(2, 0x401, &rec(1, 0, b"x")), "another call's envelope");
        assert!(!fits(1, 0x401, &rec(1, 256, b"x")), "flags over a byte");
        assert!(!fits(1, 0x1_0000, &rec(1, 0, b"x")), "a tag over 16 bits");
        assert!(!fits(MAX_SEQ + 1, 1, &rec(MAX_SEQ + 1, 0, b"x")), "a call number the state cannot hold");
    }

    /// A request of up to 48 bytes and its header share the slot's first line.
    #[test]
    fn a_small_call_is_one_line() {
        let slot = CallSlot::default();
        post(&slot, 3, 1, &rec(3, 0, &[0xEE; 48]));
        let base = std::ptr::from_ref(&slot) as usize;
        let last = std::ptr::from_ref(&slot.data[5]) as usize + 8;
        assert_eq!(last - base, 64);
        // ORDERING: Relaxed: one thread.
        assert_eq!(slot.data[5].load(Ordering::Relaxed), u64::from_le_bytes([0xEE; 8]));
    }

    #[test]
    fn a_payload_by_its_parts_is_the_record_with_its_envelope() {
        let slot = CallSlot::default();
        let m = Meta { client: 0x1234, flags: 5, tag: 9 };
        assert!(fits_payload(7, m, MAX_PAYLOAD));
        assert!(!fits_payload(7, m, MAX_PAYLOAD + 1));
        assert!(!fits_payload(MAX_SEQ + 1, m, 0));
        assert!(!fits_payload(7, Meta { flags: 256, ..m }, 0));
        assert!(!fits_payload(7, Meta { tag: 0x1_0000, ..m }, 0));
        post_payload(&slot, 7, m, b"request!");
        let mut buf = [0u8; CALL_SLOT_BYTES];
        let t = take(&slot, &mut buf).expect("posted").expect("valid");
        assert_eq!((t.seq, t.tag), (7, 9));
        assert_eq!(&buf[..t.len], rec(7, 5, b"request!").as_slice());
        complete_payload(&slot, 7, Meta { tag: 3, ..m }, b"a reply of 21 bytes..", true);
        assert!(is_polled(&slot));
        match reply(&slot, 7, &mut buf) {
            Poll::Reply { tag, len } => {
                assert_eq!(tag, 3);
                assert_eq!(&buf[..len], rec(7, 5, b"a reply of 21 bytes..").as_slice());
            }
            other => panic!("the reply expected, got {other:?}"),
        }
    }

    #[test]
    fn a_withdrawn_request_is_not_taken() {
        let slot = CallSlot::default();
        let mut buf = [0u8; CALL_SLOT_BYTES];
        post(&slot, 1, 1, &rec(1, 0, b"x"));
        assert!(withdraw(&slot));
        assert_eq!(take(&slot, &mut buf), None);
        assert!(writable(&slot));
    }

    #[test]
    fn a_hostile_length_is_refused() {
        let slot = CallSlot::default();
        let mut buf = [0u8; CALL_SLOT_BYTES];
        post(&slot, 1, 1, &rec(1, 0, b"x"));
        // ORDERING: Relaxed: one thread.
        slot.meta.store(u64::MAX, Ordering::Relaxed);
        assert_eq!(take(&slot, &mut buf), Some(Err((1, 0xff))));
        complete(&slot, 1, Some((1, &rec(1, 0, b"ok"))), false);
        // ORDERING: Relaxed: one thread.
        slot.meta.store(meta(0x1234, 0, 1, MAX_PAYLOAD + 1), Ordering::Relaxed);
        assert_eq!(reply(&slot, 1, &mut buf), Poll::Elsewhere);
    }

    #[test]
    fn a_polled_slot_needs_no_announcement_until_unpolled() {
        let slot = CallSlot::default();
        let mut buf = [0u8; CALL_SLOT_BYTES];
        post(&slot, 1, 1, &rec(1, 0, b"a"));
        take(&slot, &mut buf).unwrap().unwrap();
        complete(&slot, 1, Some((1, &rec(1, 0, b"A"))), true);
        assert!(is_polled(&slot) && writable(&slot));
        assert_eq!(reply(&slot, 1, &mut buf), Poll::Reply { tag: 1, len: 17 });
        assert!(post(&slot, 2, 1, &rec(2, 0, b"b")), "the server polls it: no pending bit needed");
        assert!(is_polled(&slot) && posted(&slot));
        // The server stops polling: the request posted meanwhile is reported.
        assert!(unpoll(&slot));
        assert!(!is_polled(&slot) && posted(&slot));
        let t = take(&slot, &mut buf).unwrap().unwrap();
        assert_eq!((t.seq, &buf[16..17]), (2, &b"b"[..]));
        complete(&slot, 2, None, false);
        assert!(!post(&slot, 3, 1, &rec(3, 0, b"c")), "not polled any more: announce it");
        // A withdrawal keeps the server's flag.
        take(&slot, &mut buf).unwrap().unwrap();
        complete(&slot, 3, None, true);
        post(&slot, 4, 1, &rec(4, 0, b"d"));
        assert!(withdraw(&slot) && is_polled(&slot));
        assert!(!unpoll(&slot) && !is_polled(&slot));
    }
}
