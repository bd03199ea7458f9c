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
use shmplane::{CallId, Error, Frame, Receiver, RpcServer, Sender, Wait};
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
    replies: Vec<Option<Receiver>>,
    resets: u64,
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
        // SAFETY: registering a plain `extern "C" fn()` with no captured state.
        unsafe { libc::atexit(remove_names) };
        Mutex::new(Fixture { server, lane, replies, resets: 0 })
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
    while f.server.recv_frame(Wait::no_wait()).is_ok() {}
    // A new call each time (the lane may still be the throwaway's).
    f.resets += 1;
    let env = Envelope { seq: f.resets, client: THROWAWAY, flags: 0 };
    f.lane.send_message(&Outgoing::bytes(b"reset").with_envelope(env.encode()), Wait::no_wait()).expect("an empty lane");
    let (call, _) = f.server.recv_frame(Wait::no_wait()).unwrap_or_else(|e| panic!("the reset call: {e}"));
    assert_eq!((call.client, call.seq), (THROWAWAY, f.resets));
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

    // Requests sent and not yet taken, in lane order: (id, seq, tenure), numbered from
    // `popped` on; a tenure is a run of enveloped
    // requests from one id (the server's table starts afresh at each change of id).
    let mut sent: VecDeque<(u32, u64, u32)> = VecDeque::new();
    // Requests taken off the front of `sent` (the number of the first one in it).
    let mut popped = 0u32;
    let (mut tenure, mut last_id) = (0u32, THROWAWAY);
    let mut admitted: HashSet<(u32, u32, u64)> = HashSet::new();
    let mut running: Vec<(CallId, u32)> = Vec::new();
    let mut exact = true;
    for op in data.chunks(3) {
        let [a, b, c] = [op[0], op.get(1).copied().unwrap_or(0), op.get(2).copied().unwrap_or(0)];
        match a % 8 {
            0..=2 => {
                let id = IDS[usize::from(b % 4)];
                let seq = if b >= 0xF0 { u64::MAX - u64::from(b & 1) } else { u64::from(b >> 2) % 6 };
                let env = Envelope { seq, client: id, flags: u32::from(c & 7) };
                let n = sent.len() as u32 + popped;
                let body = body(n, id, seq, c & 8 != 0);
                if f.lane.send_message(&Outgoing::bytes(&body).with_envelope(env.encode()), Wait::no_wait()).is_ok() {
                    if id != last_id {
                        tenure += 1;
                        last_id = id;
                    }
                    sent.push_back((id, seq, tenure));
                }
            }
            3 => {
                let _ = f.lane.try_send(b"no envelope");
            }
            4 | 5 => match gate.busy(|| f.server.recv_frame(Wait::no_wait())) {
                Ok((call, frame)) => {
                    // The request handed over names the one sent; those before it in the
                    // lane were taken and dropped (duplicates, no envelope).
                    let Frame::Bytes(got) = frame else { panic!("a bytes request came back as {frame:?}") };
                    let n = u32::from_le_bytes(got.get(..4).and_then(|b| b.try_into().ok()).expect("a request of ours"));
                    assert!(n >= popped && ((n - popped) as usize) < sent.len(), "request {n} handed over out of order");
                    let (id, seq, t) = sent[(n - popped) as usize];
                    sent.drain(..=(n - popped) as usize);
                    popped = n + 1;
                    assert_eq!((call.slot, call.client, call.seq), (0, id, seq), "the call of request {n}");
                    let big = got.len() > 100;
                    assert!(got == body(n, id, seq, big), "request {n} of {call:?} mixed up");
                    assert!(admitted.insert((t, call.client, call.seq)) || !exact, "call {call:?} admitted twice");
                    running.push((call, t));
                    if a % 8 == 5 {
                        let (call, _) = running.pop().expect("just pushed");
                        let _ = gate.busy(|| {
                            if b % 4 == 0 {
                                f.server.reply_error(call, "FuzzError", "no", "")
                            } else {
                                f.server.reply(call, &reply(call.client, call.seq))
                            }
                        });
                    }
                }
                Err(Error::Empty) => {}
                // A read that failed after admission abandons the call (which one is not
                // said): from here on a second admission is no longer a finding.
                Err(_) => exact = false,
            },
            6 => {
                if let Some((call, t)) = running.pop() {
                    f.server.abandon(call);
                    admitted.remove(&(t, call.client, call.seq));
                }
            }
            _ => {
                if b % 2 == 0 {
                    gate.busy(|| f.server.settle_debts());
                } else {
                    let _ = gate.busy(|| f.server.poll(Wait::no_wait()));
                }
            }
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
