//! RPC's control words as a hostile or broken client writes them: the envelope of each
//! request (sequence number, client id, flags: a retry, a resend of a lost reply), in
//! any order, with any values, from any number of ids on one lane, mixed with requests
//! that carry no envelope. The production server (`shmplane::RpcServer`: its table of
//! clients, its at-most-once admission, its saved replies and their resends) must never
//! panic or hang, and:
//! - it never hands the application one call twice: while one id keeps the lane, a
//!   sequence number it admitted is not admitted again (unless the application
//!   abandoned that call);
//! - the request it hands over is the one that was sent (no mix);
//! - every reply in a client's reply channel carries that client's id, and a reply
//!   that is not an error is the application's reply to that call, byte for byte
//!   (a resent saved reply included).
//!
//!
//! The lane's call slot (`shmplane_shm::callslot`, the fast path of small calls) is
//! written too: well-formed posts as an `RpcClient` makes them, and any words in its
//! state, meta and data (a hostile client). A request taken from the slot is examined
//! before the lane's records, and a well-formed one is handed over as posted; a reply
//! the server writes there names the call it answers. And the other way round: a
//! hostile server writes any state, meta and data into a real `RpcClient`'s slot (of a
//! second server, `fuzz-rpc-<pid>-c`, that never serves): the client never panics and
//! never returns a reply whose envelope is not its current call's.
//!
//! The server, its raw lane sender and two clients' reply channels are real segments in
//! `/dev/shm` (`fuzz-rpc-<pid>*`, removed at exit, and those of dead fuzz processes
//! at start), made once per process. Each input starts from a reset: the lane drained
//! and taken by a throwaway id, so that the server's table holds nothing of earlier
//! inputs. Reply channels are drained by a thread each (a reply of several records is
//! larger than one ring and streams through).
#![no_main]
use libfuzzer_sys::fuzz_target;
use shmplane::frame::Outgoing;
use shmplane::rpc::{flags, reply_name, Envelope};
use shmplane::{CallId, Error, Frame, Receiver, RpcClient, RpcServer, Sender, Wait};
use shmplane_shm::callslot::{self, EMPTY, REPLY, REQUEST};
use shmplane_shm::header::SegmentKind;
use shmplane_shm::layout::{CallSlot, CALL_SLOT_BYTES};
use shmplane_shm::segment::Segment;
use shmplane_shm::store::SegmentRing;
use shmplane_shm::sync::Ordering;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

/// Client ids of the inputs: two with reply channels, two without (replies to those
/// are dropped: the client is gone).
const IDS: [u32; 4] = [1, 2, 0, 0xFFFF_FFFE];
/// The id each input's reset uses to take the lane.
const THROWAWAY: u32 = 0xFFFF_FFFF;
const CAPACITY: usize = 4096;

struct Fixture {
    server: RpcServer,
    lane: Sender,
    /// The server's lane 0 (the raw sender's) mapped again: its call slot.
    ring: SegmentRing,
    replies: Vec<Option<Receiver>>,
    resets: u64,
    /// Slot posts made (their bodies are numbered from `SLOT_N` on).
    posts: u32,
    /// The second server (never served: the fuzz input plays it) and its lane 0 (the
    /// client's, made afresh at each input) mapped.
    cserver: RpcServer,
    cring: SegmentRing,
}

/// Bodies posted through the slot are numbered from here (ring ones from 0).
const SLOT_N: u32 = 0x8000_0000;

fn cname() -> String {
    format!("{}-c", name())
}

fn slot(ring: &SegmentRing) -> &CallSlot {
    ring.call_slot().expect("a mailbox lane has a call slot")
}

/// Write the slot's state word as a client or server would (Release).
fn set_state(slot: &CallSlot, state: u64) {
    slot.state.store(state, Ordering::Release);
}

/// Write `record` (tag `tag`; its envelope's id and flags, truncated as the slot keeps
/// them) into the slot's words, without touching its state.
fn set_record(slot: &CallSlot, tag: u32, record: &[u8]) {
    let (env, payload) = record.split_at(16.min(record.len()));
    let env = Envelope::decode(&{
        let mut e = [0u8; 16];
        e[..env.len()].copy_from_slice(env);
        e
    });
    slot.meta.store(callslot::meta(env.client, env.flags, tag, payload.len()), Ordering::Relaxed);
    for (i, w) in payload.chunks(8).enumerate() {
        let mut b = [0u8; 8];
        b[..w.len()].copy_from_slice(w);
        slot.data[i].store(u64::from_le_bytes(b), Ordering::Relaxed);
    }
}

/// A word derived from two input bytes, spread over its 64 bits.
fn word(b: u8, c: u8) -> u64 {
    (u64::from(b) << 8 | u64::from(c)).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(c) << 56
}

fn name() -> String {
    format!("fuzz-rpc-{}", std::process::id())
}

extern "C" fn remove_names() {
    let name = name();
    let _ = std::fs::remove_file(shmplane_shm::region::shm_path(&name));
    for id in &IDS[..2] {
        let reply = reply_name(&name, *id);
        let _ = std::fs::remove_file(shmplane_shm::region::shm_path(&reply));
        shmplane_shm::bell::remove(&reply);
    }
    shmplane_shm::bell::remove(&name);
    let _ = std::fs::remove_file(shmplane_shm::region::shm_path(&cname()));
    shmplane_shm::bell::remove(&cname());
}

/// Remove what fuzz processes that are gone left (a crash skips `atexit`).
fn sweep_dead() {
    let Ok(dir) = std::fs::read_dir(shmplane_shm::region::SHM_DIR) else { return };
    let prefix = format!("{}fuzz-rpc-", shmplane_shm::region::PREFIX);
    for entry in dir.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file.strip_prefix(&prefix) else { continue };
        let pid: u32 = rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap_or(0);
        if pid != 0 && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn fixture() -> &'static Mutex<Fixture> {
    static F: OnceLock<Mutex<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        sweep_dead();
        let name = name();
        let mut server = RpcServer::create_with(&name, CAPACITY, 1).expect("server");
        server.set_reply_timeout(Duration::from_secs(2));
        let lane = Sender::open(&name).expect("lane");
        let replies = IDS[..2]
            .iter()
            .map(|&id| {
                let rx = Receiver::create(&reply_name(&name, id), CAPACITY).expect("reply channel");
                // Its sender role closed, as the server leaves it between inputs (a
                // reader then sees the end of each input's replies as a close).
                drop(Sender::open(&reply_name(&name, id)).expect("reply sender"));
                Some(rx)
            })
            .collect();
        let ring = SegmentRing::lane(Segment::open(&name, SegmentKind::Mailbox).expect("the mailbox"), 0);
        let cserver = RpcServer::create_with(&cname(), CAPACITY, 1).expect("second server");
        let cring = SegmentRing::lane(Segment::open(&cname(), SegmentKind::Mailbox).expect("the second mailbox"), 0);
        // SAFETY: registering a plain `extern "C" fn()` with no captured state.
        unsafe { libc::atexit(remove_names) };
        Mutex::new(Fixture { server, lane, ring, replies, resets: 0, posts: 0, cserver, cring })
    })
}

/// The request and the reply of call `seq` of client `id`: pure functions of the call,
/// so that anything received can be checked. Odd calls get a reply of several records
/// (kept by the server for a resend), even ones a small one.
fn request(id: u32, seq: u64, big: bool) -> Vec<u8> {
    let n = if big { 6000 } else { 24 };
    (0..n).map(|i| (i as u64 ^ seq.wrapping_mul(131) ^ u64::from(id).wrapping_mul(7)) as u8).collect()
}

/// What the `n`th request of an input carries: `n`, then its call's bytes (so that the
/// request the server hands over names the one sent: retries of a call look alike).
fn body(n: u32, id: u32, seq: u64, big: bool) -> Vec<u8> {
    let mut b = n.to_le_bytes().to_vec();
    b.extend(request(id, seq, big));
    b
}

fn reply(id: u32, seq: u64) -> Vec<u8> {
    let n = if seq % 2 == 1 { 6000 } else { 16 };
    (0..n).map(|i| (i as u64).wrapping_mul(3) as u8 ^ seq as u8 ^ (id as u8).rotate_left(3)).collect()
}

/// Take every request waiting, then let a throwaway id take the lane: the server's
/// table forgets the inputs' ids (and closes their reply senders).
fn reset(f: &mut Fixture) {
    // The slot as a fresh client finds it (what a hostile input left there goes).
    set_state(slot(&f.ring), 0);
    while f.server.recv_frame(Wait::no_wait()).is_ok() {}
    // A new call each time (the lane may still be the throwaway's).
    f.resets += 1;
    let env = Envelope { seq: f.resets, client: THROWAWAY, flags: 0 };
    f.lane.send_message(&Outgoing::bytes(b"reset").with_envelope(env.encode()), Wait::no_wait()).expect("an empty lane");
    let (call, _) = f.server.recv_frame(Wait::no_wait()).unwrap_or_else(|e| panic!("the reset call: {e}"));
    assert_eq!((call.client, call.seq), (THROWAWAY, f.resets));
    set_state(slot(&f.ring), 0);
}

/// A fresh client of the second server (the last input's closed), its lane drained,
/// its slot empty.
fn new_client(f: &mut Fixture) -> RpcClient {
    while f.cserver.recv_frame(Wait::no_wait()).is_ok() {}
    set_state(slot(&f.cring), 0);
    RpcClient::connect_with(&cname(), CAPACITY, Wait::no_wait()).expect("a client of the second server")
}

/// A hostile server's move on the client's slot (op `b`, `c`): a whole reply (an
/// envelope naming the current call, an earlier or later one, another client, or
/// garbage; any phase, tag and length), or one word.
fn hostile_server(slot: &CallSlot, client: &RpcClient, b: u8, c: u8) {
    let (seq, id) = (client.seq(), client.id());
    if b & 1 == 0 {
        let env_seq = [seq, seq.wrapping_sub(1), seq.wrapping_add(1), word(b, c)][usize::from(b >> 1 & 3)];
        let env_id = if b & 8 == 0 { id } else { id ^ (1 << (c % 32)) };
        let fl = [0, flags::ERROR, flags::MORE, u32::from(c)][usize::from(c >> 6)];
        let env = Envelope { seq: env_seq, client: env_id, flags: fl };
        let mut record = env.encode().to_vec();
        record.extend(std::iter::repeat_n(c, usize::from(c % 32)));
        let tag = [frame_tag(1), frame_tag(2), frame_tag(3), u32::from(b) << 4 | u32::from(c)][usize::from(c & 3)];
        set_record(slot, tag, &record);
        if b & 0x10 != 0 {
            // A length that lies (past the record, past the slot).
            let max = callslot::MAX_PAYLOAD;
            let len = [0, 1, 15, max, max + 1, 255][usize::from(c % 6)];
            slot.meta.store(callslot::meta(env_id, fl, tag, len), Ordering::Relaxed);
        }
        let state_seq = [seq, seq.wrapping_sub(1), seq.wrapping_add(1), word(c, b)][usize::from(b >> 5 & 3)];
        let phase = if b & 0x80 == 0 { REPLY } else { u64::from(c) & 3 };
        set_state(slot, callslot::state(state_seq & callslot::MAX_SEQ, phase));
    } else {
        let w = word(b, c);
        match c % 4 {
            0 => set_state(slot, w),
            1 => slot.meta.store(w, Ordering::Relaxed),
            _ => slot.data[usize::from(b >> 1) % slot.data.len()].store(w, Ordering::Relaxed),
        }
    }
}

/// The server examines a request of `id` (`None`: not known): a change of id starts a
/// new tenure (its table forgets the calls of the one before).
fn examine(id: Option<u32>, tenure: &mut u32, last_id: &mut Option<u32>) {
    if id.is_none() || id != *last_id {
        *tenure += 1;
    }
    *last_id = id;
}

/// The tag of an enveloped record of kind `kind`.
fn frame_tag(kind: u32) -> u32 {
    kind | shmplane::frame::ENVELOPED
}

/// What the client makes of its slot (`b`): a reply it returns must be its current
/// call's, and readable without a panic.
fn client_receives(client: &mut RpcClient, b: u8) {
    let seq = client.seq();
    let id = client.id();
    if b & 1 == 1 {
        // Found (staged or kept), maybe left there for a later look.
        let _ = client.wait_reply(&mut Wait::no_wait());
        if b & 4 != 0 {
            return;
        }
    }
    let got = if b & 2 == 0 {
        client.begin_reply(&mut Wait::no_wait()).map(|(env, incoming)| {
            let mut buf = vec![0u8; incoming.head().total()];
            let whole = incoming.read_payload_into(buf.as_mut_slice().into(), Wait::no_wait()).is_ok();
            (env, whole)
        })
    } else {
        client.begin_reply_view(&mut Wait::no_wait()).map(|(env, viewed)| match viewed {
            shmplane::Viewed::Copy(incoming) => {
                let mut buf = vec![0u8; incoming.head().total()];
                let whole = incoming.read_payload_into(buf.as_mut_slice().into(), Wait::no_wait()).is_ok();
                (env, whole)
            }
            shmplane::Viewed::Held(_) => panic!("nothing was sent through the reply channel"),
        })
    };
    if let Ok((env, whole)) = got {
        assert_eq!((env.seq, env.client), (seq, id), "the client returned a reply that is not its call's");
        client.end_reply(env, whole);
    }
}

/// What a reply channel received: (envelope, payload or why not).
type Got = Vec<(Envelope, Result<Vec<u8>, Error>)>;

/// When the readers look: while the server may be sending (`busy`), and until `stop`.
#[derive(Default)]
struct Gate {
    flags: Mutex<Flags>,
    cv: Condvar,
}

#[derive(Clone, Copy, Default)]
struct Flags {
    busy: bool,
    stop: bool,
}

impl Gate {
    fn flags(&self) -> std::sync::MutexGuard<'_, Flags> {
        self.flags.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, change: impl FnOnce(&mut Flags)) {
        change(&mut self.flags());
        self.cv.notify_all();
    }

    /// A server operation that may send replies (opening a client's reply channel).
    fn busy<T>(&self, op: impl FnOnce() -> T) -> T {
        self.set(|f| f.busy = true);
        let r = op();
        self.set(|f| f.busy = false);
        r
    }
}

/// Drain `rx` until `gate.stop` is set and its sender (the server's) closed: the reset
/// at the end of an input closes it once every reply is published (and wakes us).
fn drain(mut rx: Receiver, gate: Arc<Gate>) -> (Receiver, Got) {
    let mut got = Vec::new();
    loop {
        let err = match rx.begin(Wait::forever()) {
            Ok(incoming) => {
                let env = Envelope::decode(incoming.head().envelope().expect("replies carry an envelope"));
                let mut buf = vec![0u8; incoming.head().total()];
                let r = incoming.read_payload_into(buf.as_mut_slice().into(), Wait::forever()).map(|()| buf);
                got.push((env, r));
                continue;
            }
            Err(e) => e,
        };
        match err {
            Error::Disconnected { .. } => {
                let flags = gate.flags();
                if flags.stop {
                    return (rx, got);
                }
                // Closed since an earlier input and not opened again yet: look again
                // soon while the server may be opening it, else when it is busy.
                if flags.busy {
                    drop(flags);
                    std::thread::sleep(Duration::from_micros(20));
                } else {
                    drop(gate.cv.wait_timeout(flags, Duration::from_millis(10)));
                }
            }
            e => got.push((Envelope { seq: 0, client: 0, flags: 0 }, Err(e))),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut f = fixture().lock().unwrap_or_else(|p| p.into_inner());
    let f = &mut *f;
    reset(f);
    let gate = Arc::new(Gate::default());
    let readers: Vec<_> = f
        .replies
        .iter_mut()
        .map(|rx| {
            let (rx, gate) = (rx.take().expect("a reply channel"), gate.clone());
            std::thread::spawn(move || drain(rx, gate))
        })
        .collect();

    // Requests sent and not yet taken, in lane order: (id, seq), numbered from `popped`
    // on. The server's table starts afresh at each change of id among the requests it
    // examines (a tenure): the slot's first, then the lane's in order.
    let mut sent: VecDeque<(u32, u64)> = VecDeque::new();
    // Requests taken off the front of `sent` (the number of the first one in it).
    let mut popped = 0u32;
    // The id the server's table holds (`None`: unknown, after it examined a request a
    // hostile write made).
    let (mut tenure, mut last_id) = (0u32, Some(THROWAWAY));
    let mut admitted: HashSet<(u32, u32, u64)> = HashSet::new();
    // Calls handed over and not answered: (call, tenure, taken from the slot).
    let mut running: Vec<(CallId, u32, bool)> = Vec::new();
    let mut exact = true;
    // The well-formed request posted in the slot and not examined yet: (n, id, seq);
    // `dirty`: a hostile write touched the slot since the last well-formed post.
    let mut posted: Option<(u32, u32, u64)> = None;
    let mut dirty = false;
    let mut streak = 0u32;
    let mut client = new_client(f);
    let client = &mut client;
    for op in data.chunks(3) {
        let [a, b, c] = [op[0], op.get(1).copied().unwrap_or(0), op.get(2).copied().unwrap_or(0)];
        match a % 16 {
            0..=2 => {
                let id = IDS[usize::from(b % 4)];
                let seq = if b >= 0xF0 { u64::MAX - u64::from(b & 1) } else { u64::from(b >> 2) % 6 };
                let env = Envelope { seq, client: id, flags: u32::from(c & 7) };
                let n = sent.len() as u32 + popped;
                let body = body(n, id, seq, c & 8 != 0);
                if f.lane.send_message(&Outgoing::bytes(&body).with_envelope(env.encode()), Wait::no_wait()).is_ok() {
                    sent.push_back((id, seq));
                }
            }
            3 => {
                let _ = f.lane.try_send(b"no envelope");
            }
            4 | 5 => {
                let cs = slot(&f.ring);
                let was_posted = callslot::phase_of(callslot::load(cs)) == REQUEST;
                let slotted = f.server.slot_calls();
                let got = gate.busy(|| f.server.recv_frame(Wait::no_wait()));
                let from_slot = f.server.slot_calls() != slotted;
                // The slot is examined first: the server took what was posted there.
                let slot_taken = was_posted && callslot::phase_of(callslot::load(cs)) != REQUEST;
                assert!(!from_slot || slot_taken, "a call from the slot that was not posted there");
                let clean = if slot_taken && !dirty { posted.take() } else { None };
                if slot_taken {
                    match clean {
                        Some((_, id, _)) => examine(Some(id), &mut tenure, &mut last_id),
                        // What a hostile write left: handed over, its id; else unknown.
                        None => match (&got, from_slot) {
                            (Ok((call, _)), true) => examine(Some(call.client), &mut tenure, &mut last_id),
                            _ => examine(None, &mut tenure, &mut last_id),
                        },
                    }
                    posted = None;
                }
                match got {
                    Ok((call, frame)) => {
                        let Frame::Bytes(got) = frame else { panic!("a bytes request came back as {frame:?}") };
                        let n = got.get(..4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
                        if from_slot {
                            if let Some((pn, id, seq)) = clean {
                                // A well-formed post: handed over as posted.
                                assert_eq!((call.slot, call.client, call.seq), (0, id, seq), "the call of slot post {pn:#x}");
                                assert!(got == body(pn, id, seq, false), "slot post {pn:#x} of {call:?} mixed up");
                            }
                        } else {
                            // The request handed over names the one sent; those before it
                            // in the lane were examined and dropped (duplicates, no
                            // envelope).
                            let n = n.expect("a request of ours");
                            assert!(n >= popped && ((n - popped) as usize) < sent.len(), "request {n} handed over out of order");
                            for &(id, _) in sent.iter().take((n - popped) as usize + 1) {
                                examine(Some(id), &mut tenure, &mut last_id);
                            }
                            let (id, seq) = sent[(n - popped) as usize];
                            sent.drain(..=(n - popped) as usize);
                            popped = n + 1;
                            assert_eq!((call.slot, call.client, call.seq), (0, id, seq), "the call of request {n}");
                            let big = got.len() > 100;
                            assert!(got == body(n, id, seq, big), "request {n} of {call:?} mixed up");
                        }
                        assert!(admitted.insert((tenure, call.client, call.seq)) || !exact, "call {call:?} admitted twice");
                        running.push((call, tenure, from_slot));
                        if a % 16 == 5 {
                            let (call, _, from_slot) = running.pop().expect("just pushed");
                            let error = b % 4 == 0;
                            let r = gate.busy(|| {
                                if error {
                                    f.server.reply_error(call, "FuzzError", "no", "")
                                } else {
                                    f.server.reply(call, &reply(call.client, call.seq))
                                }
                            });
                            let st = callslot::load(cs);
                            if callslot::phase_of(st) == REPLY && !dirty && from_slot && matches!(r, Ok(true)) {
                                // A reply in the slot: this call's, as the application gave it.
                                assert_eq!(callslot::seq_of(st), call.seq & callslot::MAX_SEQ, "the slot's reply state");
                                let mut buf = [0u8; CALL_SLOT_BYTES];
                                let callslot::Poll::Reply { len, .. } = callslot::reply(cs, call.seq, &mut buf) else {
                                    panic!("a reply in the slot that does not read")
                                };
                                let env = Envelope::decode(buf[..16].try_into().expect("an envelope"));
                                assert_eq!((env.seq, env.client), (call.seq, call.client), "the slot's reply envelope");
                                if !error {
                                    assert_eq!(&buf[16..len], reply(call.client, call.seq).as_slice(), "the slot's reply to {call:?}");
                                }
                            }
                        }
                    }
                    Err(Error::Empty) => {
                        // Every request in the lane was examined and dropped.
                        for &(id, _) in &sent {
                            examine(Some(id), &mut tenure, &mut last_id);
                        }
                        popped += sent.len() as u32;
                        sent.clear();
                    }
                    // A read that failed after admission abandons the call (which one is
                    // not said): from here on a second admission is no longer a finding.
                    Err(_) => exact = false,
                }
            }
            6 => {
                if let Some((call, t, _)) = running.pop() {
                    f.server.abandon(call);
                    admitted.remove(&(t, call.client, call.seq));
                }
            }
            7 => {
                if b % 2 == 0 {
                    gate.busy(|| f.server.settle_debts());
                } else {
                    let _ = gate.busy(|| f.server.poll(Wait::no_wait()));
                }
            }
            8 | 9 => {
                // A well-formed post, as `RpcClient::post` makes it, when the slot is the
                // client's.
                let cs = slot(&f.ring);
                let id = IDS[usize::from(b % 4)];
                let seq = if b >= 0xF0 { u64::MAX - u64::from(b & 1) } else { u64::from(b >> 2) % 6 };
                let env = Envelope { seq, client: id, flags: u32::from(c & 7) };
                let n = SLOT_N + f.posts;
                let mut record = env.encode().to_vec();
                record.extend(body(n, id, seq, false));
                // `RpcClient::post` posts only what fits (a call number past
                // `MAX_SEQ` goes through the lane).
                if matches!(callslot::phase_of(callslot::load(cs)), EMPTY | REPLY) && callslot::fits(seq, frame_tag(1), &record) {
                    f.posts = f.posts.wrapping_add(1) & 0x7FFF_FFFF;
                    callslot::post(cs, seq, frame_tag(1), &record);
                    f.ring.notify_posted(|| callslot::posted(cs), &mut streak);
                    posted = Some((n, id, seq));
                    dirty = false;
                }
            }
            10 | 11 => {
                // A hostile client: any word of the slot (an envelope's id is never the
                // reset's, whose calls must go through).
                let cs = slot(&f.ring);
                let w = word(b, c);
                match b % 4 {
                    0 => set_state(cs, w),
                    1 => set_state(cs, callslot::state(w & 7, c as u64 & 3)),
                    2 => {
                        // The envelope's id is `meta`'s high half.
                        let m = if c & 1 == 0 { callslot::meta(w as u32, 0, frame_tag(1), usize::from(c)) } else { w };
                        let m = if (m >> 32) as u32 == THROWAWAY { m ^ (1 << 32) } else { m };
                        cs.meta.store(m, Ordering::Relaxed);
                    }
                    _ => cs.data[usize::from(c) % cs.data.len()].store(w, Ordering::Relaxed),
                }
                f.ring.notify_posted(|| callslot::posted(cs), &mut streak);
                dirty = true;
            }
            12 => {
                // The client calls: through its slot, or (a loan) through the lane.
                if b & 2 == 0 {
                    let _ = client.send_request(Outgoing::bytes(&[c; 7]), b & 1 == 1, &mut Wait::no_wait());
                } else if let Ok(mut loan) = client.loan_request(4, Wait::no_wait()) {
                    loan.as_mut_slice().fill(c);
                    loan.commit();
                }
            }
            13 | 14 => hostile_server(slot(&f.cring), client, b, c),
            _ => client_receives(client, b),
        }
    }

    // The reset closes the server's reply senders: the readers then see the end.
    gate.set(|f| f.stop = true);
    reset(f);
    for (i, reader) in readers.into_iter().enumerate() {
        let (rx, got) = reader.join().expect("reader");
        f.replies[i] = Some(rx);
        let id = IDS[i];
        for (env, r) in got {
            let Ok(bytes) = r else { continue };
            assert_eq!(env.client, id, "a reply for client {} in client {id}'s channel", env.client);
            if env.flags & flags::ERROR == 0 {
                assert_eq!(bytes, reply(id, env.seq), "reply to call {} of client {id}", env.seq);
            }
        }
    }
});
