//! RPC: request/response between processes, replies of any size in one go, at most
//! once.
//!
//! A server is a [`Mailbox`] (requests: one lane per client, so a client that dies
//! strands only its lane) plus, per client, a reply channel that the client creates
//! (`<server>.reply-<client id>`) and the server opens as its sender at the first
//! reply. Every request and reply carries a 16-byte envelope in its first record
//! ([`crate::frame::ENVELOPED`]): the call's sequence number, the client's id and flags. So a
//! call is one message each way, of any size and any kind (bytes, arrays, pickles),
//! written once: an 8 MB array or a list of a million floats is one reply.
//!
//! # At most once
//! The server keeps, per client lane, the client's id, the sequence number of the last
//! call it admitted, whether that call is answered, and a copy of its final reply when
//! it spans several records and is at most [`SAVED_REPLY_LIMIT`] bytes. A request whose number is not newer than
//! the last one admitted is never handed to the application again:
//! - a retry of a call still running is dropped: the reply comes when it is done;
//! - a retry of a call already answered is dropped too: its reply is in the client's
//!   reply channel (an SPSC ring that loses nothing while the client lives), unless the
//!   client says it lost the reply part-way ([`flags::RESEND`], after an interrupted
//!   receive): then the saved copy is sent again, or, for a reply too large to have
//!   been kept, an error saying the call ran and its reply is lost;
//! - an older number is a stale duplicate and is dropped.
//!
//! A client discards replies whose number is not the current call's, so a late reply
//! to a call that timed out is never taken for the answer to a later call. This is the
//! design of Birrell and Nelson's RPC ("Implementing Remote Procedure Calls", 1984:
//! call identifiers, the server's table of the last call per client, and an implicit
//! acknowledgement by the client's next call), which also makes retries safe where
//! the Homa transport recorded RPCs executed twice.
//!
//! # Failures
//! A client waiting for a reply checks the server's lock every wait slice (about 50 ms):
//! a server that died or closed ends the wait with [`Error::PeerDead`] or
//! [`Error::Disconnected`] naming the "server". A server replying to a client that died
//! or closed drops the reply ([`RpcServer::reply`] returns `false`), and the client's
//! lane goes to the next client that connects.

use super::mailbox::Mailbox;
use super::spsc::{HoldToken, Incoming, Loan, Receiver, Releaser, Sender, Viewed};
use crate::frame::{self, Frame, Kind, Outgoing, ENVELOPE_LEN};
use crate::wait::Wait;
use shmplane_shm::error::{Error, Result};
use shmplane_shm::header::SegmentKind;
use shmplane_shm::process::{fork_generation, install_fork_hook};
use shmplane_shm::segment::Segment;
use shmplane_shm::callslot::{self, Poll};
use shmplane_shm::layout::{CallSlot, CALL_SLOT_BYTES};
use shmplane_shm::ring::RingStore;
use shmplane_shm::wait::{without_slip, WaitHistory, WaitPolicy};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

/// Clients a server made without a limit serves at once.
pub const DEFAULT_MAX_CLIENTS: usize = 64;
/// Ring capacity of each client's request lane made without one, in bytes (64 KiB).
/// Larger requests stream through it in chunks.
pub const DEFAULT_REQUEST_CAPACITY: usize = 1 << 16;
/// Ring capacity of each client's reply channel made without one, in bytes (256 KiB:
/// 100 clients commit 33 MB with their request lanes). Larger replies stream through
/// it in chunks (32 KiB each); a client that receives large replies often may ask for
/// more (`connect_with`): the per-chunk cost falls with the chunk size.
pub const DEFAULT_REPLY_CAPACITY: usize = 1 << 18;
/// Final replies of several records and at most this many bytes are kept by the
/// server until the client's next call, to be sent again to a client that lost one
/// part-way (64 KiB). A one-record reply is taken whole or not at all.
pub const SAVED_REPLY_LIMIT: usize = 1 << 16;
/// How long [`RpcServer::reply`] waits for room in a client's reply channel before it
/// gives the reply up as lost (5 s): one client that stops reading must not hold the
/// server, and every other client, for longer.
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// While an error is owed to a client (its reply was given up), a server looks for
/// calls in short waits and tries to send it between them: 2 ms at first, growing with
/// the debt's age to at most 100 ms (a debt the client never makes room for must not
/// keep an idle server waking every 2 ms for as long as it is kept).
const DEBT_SLICE: Duration = Duration::from_millis(2);
const DEBT_SLICE_MAX: Duration = Duration::from_millis(100);
/// Longest server name: the reply channels' names add 15 bytes to it.
pub const MAX_SERVER_NAME: usize = 200 - 15;

/// Flags of an [`Envelope`].
pub mod flags {
    /// Reply: more parts of this call's reply follow (a stream).
    pub const MORE: u32 = 1;
    /// Reply: the call failed; the payload is the error (`kind\0message\0traceback`,
    /// UTF-8).
    pub const ERROR: u32 = 2;
    /// Request: a retry of a call whose reply this client lost part-way: send it again.
    pub const RESEND: u32 = 4;
}

/// The 16 bytes in front of every request and reply: which call of which client, and
/// flags (little-endian: `seq u64, client u32, flags u32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The call's sequence number (1, 2, ... per client).
    pub seq: u64,
    /// The client's id (random per client, so that a new client on a lane is told
    /// apart from the one before it).
    pub client: u32,
    /// [`flags`].
    pub flags: u32,
}

impl Envelope {
    /// The wire form.
    pub fn encode(&self) -> [u8; ENVELOPE_LEN] {
        let mut b = [0u8; ENVELOPE_LEN];
        b[..8].copy_from_slice(&self.seq.to_le_bytes());
        b[8..12].copy_from_slice(&self.client.to_le_bytes());
        b[12..].copy_from_slice(&self.flags.to_le_bytes());
        b
    }

    /// From the wire form (any 16 bytes decode: the server and the client check the
    /// numbers against their own state).
    pub fn decode(b: &[u8; ENVELOPE_LEN]) -> Envelope {
        Envelope {
            seq: u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
            client: u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")),
            flags: u32::from_le_bytes(b[12..].try_into().expect("4 bytes")),
        }
    }
}

/// The payload of a one-record bytes request or reply copied out of a call slot
/// (`tag` and `record`: envelope and payload), which needs no parsing; `None` for any
/// other record (parsed with `Incoming::owned`).
fn slot_bytes(tag: u32, record: &[u8]) -> Option<&[u8]> {
    (tag == frame::TAG_BYTES | frame::ENVELOPED).then(|| record.get(ENVELOPE_LEN..)).flatten()
}

/// Call `f` with the logical payload of `msg` (at most [`callslot::MAX_PAYLOAD`]
/// bytes) as one slice: the message's own slice when it is one, else gathered into a
/// buffer on the stack (zeroed only on that path: a call's hot path, which writes a
/// caller's slice into the call slot, pays neither the zeroing nor the copy).
///
/// # Panics
/// If the payload is larger than a call slot holds.
#[inline]
fn with_slot_payload<R>(msg: &Outgoing<'_>, f: impl FnOnce(&[u8]) -> R) -> R {
    if let Some(payload) = msg.contiguous() {
        return f(payload);
    }
    gathered_slot_payload(msg, f)
}

#[cold]
fn gathered_slot_payload<R>(msg: &Outgoing<'_>, f: impl FnOnce(&[u8]) -> R) -> R {
    let mut staged = [0u8; callslot::MAX_PAYLOAD];
    let staged = &mut staged[..msg.total()];
    msg.gather(0, staged);
    f(staged)
}

/// The envelope of a record copied out of a call slot, if it is a valid record
/// (untrusted: parsed as one from a ring would be).
fn slot_envelope(tag: u32, record: &[u8]) -> Option<Envelope> {
    if slot_bytes(tag, record).is_some() {
        return record.first_chunk::<ENVELOPE_LEN>().map(Envelope::decode);
    }
    Incoming::owned(tag, record, "").ok().and_then(|i| i.head().envelope().map(Envelope::decode))
}

/// A client began reply part `env` of its current call (`RpcClient::began_part`): the
/// call is answered with its final part, or streaming.
fn began_part(began: &mut bool, unanswered: &mut bool, streaming: &mut bool, env: Envelope) {
    *began = true;
    if env.flags & flags::MORE == 0 {
        *unanswered = false;
    } else {
        *streaming = true;
    }
}

/// What [`RpcServer::next_call`] found.
enum Next {
    /// A call taken from a lane's call slot: its record's tag and length in the
    /// server's `slot_buf`.
    Slot(CallId, u32, usize),
    /// A call staged in lane `.1`'s ring.
    Ring(CallId, usize),
}

/// The name of the reply channel of client `client` of server `server`.
pub fn reply_name(server: &str, client: u32) -> String {
    format!("{server}.reply-{client:08x}")
}

/// An error reply's payload: `kind\0message\0traceback`.
fn encode_error(kind: &str, message: &str, traceback: &str) -> Vec<u8> {
    let clean = |s: &str| s.replace('\0', " ");
    format!("{}\0{}\0{}", clean(kind), clean(message), clean(traceback)).into_bytes()
}

/// [`Error::Remote`] from an error reply's payload (untrusted: any bytes decode).
pub fn decode_error(payload: &[u8]) -> Error {
    let text = String::from_utf8_lossy(payload);
    let mut it = text.splitn(3, '\0');
    let kind = it.next().unwrap_or_default().to_owned();
    let message = it.next().unwrap_or_default().to_owned();
    let traceback = it.next().unwrap_or_default().to_owned();
    Error::Remote { kind: if kind.is_empty() { "Error".into() } else { kind }, message, traceback }
}

/// The bytes of a frame received whole as bytes.
fn into_bytes(frame: Frame) -> Vec<u8> {
    match frame {
        Frame::Bytes(b) => b,
        Frame::Array(a) => a.data,
        Frame::Pickle { stream, .. } => stream,
        Frame::Numbers(n) => n.data,
    }
}

/// A fresh client id: std's random hasher keys, the pid, the time and a counter mixed.
fn client_id() -> u32 {
    thread_local!(static COUNTER: std::cell::Cell<u64> = const { std::cell::Cell::new(0) });
    let n = COUNTER.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(n);
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    let v = h.finish();
    ((v >> 32) as u32 ^ v as u32).max(1)
}

/// Errors of the server's end named as the server's.
fn as_server(e: Error) -> Error {
    match e {
        Error::PeerDead { pid, .. } => Error::PeerDead { role: "server", pid },
        Error::Disconnected { .. } => Error::Disconnected { role: "server" },
        e => e,
    }
}

// ------------------------------------------------------------------------- client

/// One client of an [`RpcServer`]: calls it, one call at a time, and receives each
/// call's reply (or stream of replies). Any number of clients, in any processes, up to
/// the server's `max_clients`.
///
/// # Examples
/// ```
/// let mut server = shmplane::RpcServer::create("doc-rpc-client", 4)?;
/// let mut client = shmplane::RpcClient::connect("doc-rpc-client", None)?;
/// let t = std::thread::spawn(move || -> shmplane::Result<()> {
///     let (call, request) = server.recv()?;
///     server.reply(call, &[request.as_slice(), b"!"].concat())?;
///     Ok(())
/// });
/// assert_eq!(client.call(b"ping")?, b"ping!");
/// t.join().unwrap()?;
/// # Ok::<(), shmplane::Error>(())
/// ```
pub struct RpcClient {
    server: String,
    requests: Sender,
    replies: Receiver,
    id: u32,
    /// The current (last begun) call's number.
    seq: u64,
    /// The current call's final reply has not been received whole: a retry may repeat it.
    unanswered: bool,
    /// A reply part of the current call began to arrive: a retry asks for it again.
    began: bool,
    /// A part of a streamed reply (more to follow) of the current call arrived: a
    /// retry cannot have the rest sent again.
    streaming: bool,
    /// The fork generation that connected (`shmplane_shm::process::fork_generation`): a
    /// fork child that inherited this client connects as a client of its own at its
    /// first call (sequence numbers are this process's).
    generation: u64,
    /// The call (its number) whose request was posted in the lane's call slot and
    /// whose reply may come there (see [`RpcClient::send_request`]).
    slot_call: Option<u64>,
    /// A reply found in the call slot (its tag and length; the record in `slot_buf`),
    /// for the next `begin_reply`.
    slot_reply: Option<(u32, usize)>,
    slot_buf: [u8; CALL_SLOT_BYTES],
    /// How waits for slot replies spin (as a receiver's own history).
    history: WaitHistory,
    /// The notifier streak of posts (see `EventCount::notify_counted`).
    streak: u32,
}

impl RpcClient {
    /// Connect to server `name`, waiting at most `timeout` (`None`: forever) for it to
    /// be created, with reply capacity [`DEFAULT_REPLY_CAPACITY`].
    ///
    /// # Errors
    /// [`Error::NotFound`] (no server by then), [`Error::WrongKind`] (`name` is not an
    /// RPC server's), [`Error::AllTaken`] (the server has `max_clients` clients),
    /// [`Error::InvalidName`], [`Error::NoSpace`], [`Error::Os`].
    pub fn connect(name: &str, timeout: Option<Duration>) -> Result<RpcClient> {
        RpcClient::connect_with(name, DEFAULT_REPLY_CAPACITY, Wait::optional(timeout))
    }

    /// [`RpcClient::connect`] with a reply channel of `reply_capacity` bytes (a power
    /// of two, at least 4096) and a [`Wait`] (its hook runs while the server is
    /// awaited).
    ///
    /// # Errors
    /// As [`RpcClient::connect`], [`Error::InvalidArgument`], the hook's error.
    pub fn connect_with(name: &str, reply_capacity: usize, mut wait: Wait<'_>) -> Result<RpcClient> {
        if name.len() > MAX_SERVER_NAME {
            return Err(Error::InvalidName { name: name.to_owned(), reason: "an RPC server's name is at most 185 bytes" });
        }
        install_fork_hook();
        let mut next_check = Instant::now() + shmplane_shm::wait::SLICE;
        let requests = loop {
            match Sender::open(name) {
                Ok(tx) if tx.lane().is_some() => break tx,
                Ok(tx) => {
                    return Err(Error::WrongKind {
                        path: tx.path().unwrap_or_default().to_owned(),
                        expected: "RPC server (mailbox)",
                        found: "channel".into(),
                    })
                }
                Err(Error::NotFound { .. }) if wait.blocks() && wait.deadline().is_none_or(|d| Instant::now() < d) => {
                    std::thread::sleep(Duration::from_millis(2));
                    if Instant::now() >= next_check {
                        next_check = Instant::now() + shmplane_shm::wait::SLICE;
                        if let Some(h) = wait.hook.as_mut() {
                            h()?;
                        }
                    }
                }
                Err(Error::WrongKind { path, found, .. }) => {
                    return Err(Error::WrongKind { path, expected: "RPC server (mailbox)", found })
                }
                Err(e) => return Err(e),
            }
        };
        let (id, replies) = loop {
            let id = client_id();
            match Receiver::create(&reply_name(name, id), reply_capacity) {
                Ok(mut rx) => {
                    rx.set_unlink_when_released();
                    break (id, rx);
                }
                Err(Error::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e),
            }
        };
        Ok(RpcClient {
            server: name.to_owned(),
            requests,
            replies,
            id,
            seq: 0,
            unanswered: false,
            began: false,
            streaming: false,
            generation: fork_generation(),
            slot_call: None,
            slot_reply: None,
            slot_buf: [0; CALL_SLOT_BYTES],
            history: WaitHistory::default(),
            streak: 0,
        })
    }

    /// Call the server with `request` (bytes) and wait for its reply, as long as it
    /// takes (a dead server ends the wait within a slice).
    ///
    /// # Errors
    /// [`Error::Remote`] (the handler failed), [`Error::PeerDead`] / [`Error::Disconnected`]
    /// (role "server": it died or closed), [`Error::Closed`], [`Error::Corrupt`].
    pub fn call(&mut self, request: &[u8]) -> Result<Vec<u8>> {
        self.call_bytes(request, false, Wait::forever()).map(into_bytes)
    }

    /// [`RpcClient::call`], waiting at most `timeout` in all. After
    /// [`Error::Timeout`], [`RpcClient::retry`] repeats the call safely.
    ///
    /// # Errors
    /// As [`RpcClient::call`], [`Error::Timeout`].
    pub fn call_timeout(&mut self, request: &[u8], timeout: Duration) -> Result<Vec<u8>> {
        self.call_bytes(request, false, Wait::timeout(timeout)).map(into_bytes)
    }

    /// Repeat the last call if it got no reply (timed out, interrupted), else make a new
    /// one: the server runs a call at most once (see the module's documentation).
    ///
    /// # Errors
    /// As [`RpcClient::call_timeout`].
    pub fn retry(&mut self, request: &[u8], timeout: Option<Duration>) -> Result<Vec<u8>> {
        self.call_bytes(request, true, Wait::optional(timeout)).map(into_bytes)
    }

    /// Call with any message (bytes, an array, a pickle; see [`Outgoing`]) and
    /// receive the reply as a [`Frame`]; `retry` repeats the last call if it was not
    /// answered. A streamed reply's first part is returned (see
    /// [`RpcClient::next_part`]).
    ///
    /// # Errors
    /// As [`RpcClient::call_timeout`], [`Error::Truncated`] (the server gave up on its
    /// reply part-way).
    pub fn call_with(&mut self, request: Outgoing<'_>, retry: bool, mut wait: Wait<'_>) -> Result<Frame> {
        self.send_request(request, retry, &mut wait)?;
        self.recv_part(&mut wait, false)
    }

    fn call_bytes(&mut self, request: &[u8], retry: bool, mut wait: Wait<'_>) -> Result<Frame> {
        self.send_request(Outgoing::bytes(request), retry, &mut wait)?;
        self.recv_part(&mut wait, true)
    }

    /// [`RpcClient::call`] with the reply's bytes written into `reply` (cleared first),
    /// waiting per `wait`: no allocation once `reply` has the capacity (a small reply
    /// is copied from the call slot straight into it), for a loop of calls that keeps
    /// one buffer. On an error `reply` is left empty.
    ///
    /// # Errors
    /// As [`RpcClient::call_timeout`], [`Error::Truncated`] (the server gave up on its
    /// reply part-way).
    pub fn call_into(&mut self, request: &[u8], reply: &mut Vec<u8>, mut wait: Wait<'_>) -> Result<()> {
        reply.clear();
        self.send_request(Outgoing::bytes(request), false, &mut wait)?;
        self.reply_into(reply, wait)
    }

    /// The reply to the call [`RpcClient::send_request`] sent, whole as bytes, written
    /// into `reply` (cleared first), waiting per `wait`: the second half of
    /// [`RpcClient::call_into`], for a caller that does something between sending a
    /// call and taking its reply. On an error `reply` is left empty.
    ///
    /// # Errors
    /// As [`RpcClient::call_into`]; [`Error::Empty`] (a wait that does not block, and no
    /// reply yet: look again later), [`Error::InvalidArgument`] (no call is waiting for
    /// a reply).
    pub fn reply_into(&mut self, reply: &mut Vec<u8>, mut wait: Wait<'_>) -> Result<()> {
        reply.clear();
        self.wait_reply(&mut wait)?;
        if let Some(payload) = self.take_slot_bytes() {
            reply.extend_from_slice(payload?);
            return Ok(());
        }
        *reply = into_bytes(self.recv_waited_part(&mut wait, true)?);
        Ok(())
    }

    /// The reply `wait_reply` found in the call slot, if it is a bytes reply: taken
    /// and its part begun; its payload (in the slot buffer), or the handler's error.
    fn take_slot_bytes(&mut self) -> Option<Result<&[u8]>> {
        let (tag, len) = self.slot_reply?;
        // A bytes reply? (Checked first: the part is begun only for one.)
        slot_bytes(tag, &self.slot_buf[..len])?;
        let env = Envelope::decode(self.slot_buf.first_chunk().expect("a 240-byte buffer"));
        self.slot_reply = None;
        self.began_part(env);
        let payload = slot_bytes(tag, &self.slot_buf[..len]).expect("a bytes reply, checked above");
        Some(if env.flags & flags::ERROR != 0 { Err(decode_error(payload)) } else { Ok(payload) })
    }

    /// The next part of a streamed reply, `None` after the last.
    ///
    /// # Errors
    /// As [`RpcClient::call_with`].
    pub fn next_part(&mut self, mut wait: Wait<'_>) -> Result<Option<Frame>> {
        if !self.unanswered {
            return Ok(None);
        }
        self.recv_part(&mut wait, false).map(Some)
    }

    /// The next reply part of the current call, whole as bytes (its logical payload)
    /// or as a [`Frame`].
    fn recv_part(&mut self, wait: &mut Wait<'_>, bytes: bool) -> Result<Frame> {
        self.wait_reply(wait)?;
        self.recv_waited_part(wait, bytes)
    }

    /// [`RpcClient::recv_part`] once `wait_reply` found the reply.
    fn recv_waited_part(&mut self, wait: &mut Wait<'_>, bytes: bool) -> Result<Frame> {
        // A bytes reply in the call slot: its payload, no parsing to do.
        if let Some(payload) = self.take_slot_bytes() {
            return payload.map(|p| Frame::Bytes(p.to_vec()));
        }
        let (env, incoming) = self.begin_waited()?;
        let error = env.flags & flags::ERROR != 0;
        let got = if bytes || error {
            crate::flavors::spsc::payload_of(incoming, wait).map(Frame::Bytes)
        } else {
            crate::flavors::spsc::frame_of(incoming, wait)
        };
        self.end_reply(env, got.is_ok());
        let frame = got?;
        if error {
            return Err(decode_error(&into_bytes(frame)));
        }
        Ok(frame)
    }

    /// Send the request of a call (a new one, or with `retry` the last one again if it
    /// is unanswered); its number. Then receive the reply with
    /// [`RpcClient::begin_reply`].
    ///
    /// # Errors
    /// [`Error::Timeout`], the hook's error, [`Error::PeerDead`] / [`Error::Disconnected`]
    /// (the server), [`Error::Closed`], [`Error::InvalidArgument`] (reply views this
    /// client holds keep more than half of its reply channel: nothing sent).
    pub fn send_request(&mut self, request: Outgoing<'_>, retry: bool, wait: &mut Wait<'_>) -> Result<u64> {
        self.own(wait)?;
        if retry && self.unanswered && self.streaming {
            // Its parts so far were taken; the server keeps none of them to send again.
            self.unanswered = false;
            return Err(Error::Remote {
                kind: "ReplyLost".into(),
                message: format!("call {} streamed part of its reply before it was cut; a stream cannot be resumed, make a new call", self.seq),
                traceback: String::new(),
            });
        }
        let pinned = self.replies.pinned_bytes();
        let capacity = self.replies.capacity();
        if pinned > 0 && capacity.saturating_sub(pinned) < capacity / 2 + 1024 {
            // The reply (up to a quarter of the channel, one record: the free space may
            // be split in two at the ring's end), or the server's error saying it could
            // not send it, might not fit: the server would stall for its reply timeout
            // and the reply be lost, or the call wait for ever. Refused, nothing sent.
            return Err(Error::InvalidArgument(format!(
                "reply views this client holds keep {pinned} bytes of its {capacity}-byte reply channel: a reply might not fit; \
                 release them (drop the views) before the next call, or connect with a larger reply_capacity"
            )));
        }
        if retry && self.unanswered && self.slot_call == Some(self.seq) {
            if self.call_slot().is_some_and(|slot| callslot::holds(slot, self.seq)) {
                // Still posted, running, or answered in the slot: wait for it again.
                return Ok(self.seq);
            }
            // Finished elsewhere (its reply went through the reply channel): retried
            // through the lane, as any call.
            self.slot_call = None;
        }
        let new_call = !(retry && self.unanswered);
        let env = self.next_envelope(retry);
        let request = request.with_envelope(env.encode());
        if new_call && self.post(&request, env) {
            return Ok(env.seq);
        }
        if new_call {
            self.slot_call = None;
            self.slot_reply = None;
        }
        self.requests.send_message(&request, wait.reborrow()).map_err(as_server)?;
        Ok(env.seq)
    }

    /// The call slot of this client's lane (see `shmplane_shm::callslot`).
    fn call_slot(&self) -> Option<&CallSlot> {
        self.requests.store().and_then(|st| st.call_slot())
    }

    /// Post `request` (enveloped) as call `seq` in the lane's call slot, if it is one
    /// record that fits and the slot is free (or holds a request nobody took: an
    /// earlier call of ours that timed out, or a dead predecessor's, withdrawn here);
    /// not while this client is waited on through the OS (its descriptor would not
    /// show a reply in the slot). False: send it through the lane.
    fn post(&mut self, request: &Outgoing<'_>, env: Envelope) -> bool {
        let (seq, n) = (env.seq, request.total());
        let m = callslot::Meta { client: env.client, flags: env.flags, tag: request.tag() };
        if n > callslot::MAX_PAYLOAD || self.replies.waits_through_os() {
            return false;
        }
        let Some(store) = self.requests.store() else { return false };
        let Some(slot) = store.call_slot() else { return false };
        if !callslot::withdraw(slot) || !callslot::fits_payload(seq, m, n) {
            return false;
        }
        // The payload (what follows the envelope); the envelope's fields go in `m`.
        if !with_slot_payload(request, |payload| callslot::post_payload(slot, seq, m, payload)) {
            // Nobody polls the slot: the lane's pending bit and the mailbox's event
            // count announce the request (as a record in the lane would be).
            store.notify_posted(|| callslot::posted(slot), &mut self.streak);
        }
        self.slot_call = Some(seq);
        self.slot_reply = None;
        true
    }

    /// In a fork child that inherited this client: connect as a client of its own
    /// (another slot, another reply channel), leaving the parent's untouched; two
    /// processes numbering calls on one slot would take each other's calls for retries.
    fn own(&mut self, wait: &mut Wait<'_>) -> Result<()> {
        if self.generation == fork_generation() || self.requests.is_closed() {
            return Ok(());
        }
        let capacity = self.replies.capacity();
        let fresh = RpcClient::connect_with(&self.server, capacity, wait.reborrow())?;
        let policy = self.wait_policy();
        drop(std::mem::replace(self, fresh));
        self.set_wait_policy(policy);
        Ok(())
    }

    fn next_envelope(&mut self, retry: bool) -> Envelope {
        let mut flags = 0;
        if retry && self.unanswered {
            if self.began {
                flags |= flags::RESEND;
            }
        } else {
            self.seq += 1;
            self.began = false;
            self.streaming = false;
            // Whatever the slot gave the last call (a reply `wait_reply` found and
            // nobody took) is not this call's: `wait_reply` would hand it over as the
            // answer to this one (a call through `loan_request` posts nothing).
            self.slot_call = None;
            self.slot_reply = None;
        }
        self.unanswered = true;
        Envelope { seq: self.seq, client: self.id, flags }
    }

    /// Lend `len` bytes of the request lane for a one-record bytes request written in
    /// place (zero-copy); [`Loan::commit`] sends it, then receive the reply
    /// with [`RpcClient::begin_reply`] or [`RpcClient::next_part`].
    ///
    /// # Errors
    /// [`Error::TooLarge`] (more than one record of the lane), [`Error::Timeout`], the
    /// hook's error, [`Error::Closed`].
    pub fn loan_request(&mut self, len: usize, mut wait: Wait<'_>) -> Result<Loan<'_>> {
        self.own(&mut wait)?;
        let env = self.next_envelope(false);
        self.requests.claim_loan_enveloped(len, Some(env.encode()), wait).map_err(as_server)
    }

    /// Wait per `wait` for the next reply part of the current call (replies to earlier
    /// calls are discarded) and begin receiving it; then call [`RpcClient::end_reply`]
    /// with whether it was read whole. Read it with the [`Incoming`]'s methods;
    /// [`Envelope::flags`] says whether it is an error ([`flags::ERROR`]) or whether
    /// more parts follow ([`flags::MORE`]).
    ///
    /// # Errors
    /// [`Error::Empty`] (`Wait::no_wait()`, nothing yet), [`Error::Timeout`], the
    /// hook's error, [`Error::PeerDead`] / [`Error::Disconnected`] (the server died or
    /// closed), [`Error::Corrupt`], [`Error::Closed`], [`Error::InvalidArgument`] (no
    /// call is waiting for a reply).
    pub fn begin_reply(&mut self, wait: &mut Wait<'_>) -> Result<(Envelope, Incoming<'_>)> {
        self.wait_reply(wait)?;
        self.begin_waited()
    }

    /// [`RpcClient::begin_reply`] once [`RpcClient::wait_reply`] found the reply part.
    fn begin_waited(&mut self) -> Result<(Envelope, Incoming<'_>)> {
        if self.slot_reply.is_some() {
            return self.take_slot_reply();
        }
        let Some(env) = self.replies.staged_head().and_then(|h| h.envelope().copied()).map(|e| Envelope::decode(&e)) else {
            // wait_reply checked the staged head; kept as an error all the same.
            return Err(Error::InvalidArgument("the staged reply lost its envelope".into()));
        };
        self.began_part(env);
        Ok((env, self.replies.take_staged()))
    }

    /// A reply part of the current call (`env`) was begun (see the free `began_part`).
    fn began_part(&mut self, env: Envelope) {
        began_part(&mut self.began, &mut self.unanswered, &mut self.streaming, env);
    }

    /// [`RpcClient::begin_reply`] as a zero-copy view when the reply can be one (see
    /// [`Receiver::begin_view`]): held in this client's reply channel until
    /// [`RpcClient::release_reply`] (or its [`RpcClient::reply_releaser`]), or copied
    /// out ([`Viewed::Copy`]: a reply of several records, one larger than a quarter of
    /// the reply channel, an error reply, or a part of a streamed reply). A held reply
    /// keeps its space: a call made while views keep more than half of the reply
    /// channel is refused ([`RpcClient::send_request`]); the next
    /// reply (of a later call) waits for it, within the server's reply timeout; one
    /// that travels in chunks and cannot fit beside it is refused at once
    /// ([`Error::InvalidArgument`], "release them first").
    ///
    /// # Errors
    /// As [`RpcClient::begin_reply`].
    pub fn begin_reply_view(&mut self, wait: &mut Wait<'_>) -> Result<(Envelope, Viewed<'_>)> {
        self.wait_reply(wait)?;
        if self.slot_reply.is_some() {
            return self.take_slot_reply().map(|(env, incoming)| (env, Viewed::Copy(incoming)));
        }
        let Some(env) = self.replies.staged_head().and_then(|h| h.envelope().copied()).map(|e| Envelope::decode(&e)) else {
            return Err(Error::InvalidArgument("the staged reply lost its envelope".into()));
        };
        if env.flags & flags::ERROR == 0 {
            self.replies.prepare_views()?;
        }
        self.began_part(env);
        // Parts of a stream come by copy: a caller collecting them all (`call`) would
        // otherwise hold the channel full and stall the server.
        if env.flags & (flags::ERROR | flags::MORE) == 0 && !self.streaming {
            if let Some(held) = self.replies.view_staged_held() {
                return Ok((env, Viewed::Held(held)));
            }
        }
        Ok((env, Viewed::Copy(self.replies.take_staged())))
    }

    /// Give back the reply-channel space of a reply held by
    /// [`RpcClient::begin_reply_view`]; false if `token` is not one of its holds.
    pub fn release_reply(&mut self, token: HoldToken) -> bool {
        self.replies.release(token)
    }

    /// Releases of held replies from any thread (applied at this client's next receive
    /// or wait slice).
    pub fn reply_releaser(&self) -> Option<Releaser> {
        self.replies.releaser()
    }

    /// Replies held by views and not released.
    pub fn reply_holds(&self) -> usize {
        self.replies.holds()
    }

    /// Wait per `wait` until the next reply part of the current call is at the head of
    /// the reply channel (discarding replies to earlier calls), without taking it.
    ///
    /// # Errors
    /// As [`RpcClient::begin_reply`].
    pub fn wait_reply(&mut self, wait: &mut Wait<'_>) -> Result<()> {
        // The reply answers what this thread just sent: a pause is pure latency.
        without_slip(|| self.wait_reply_now(wait))
    }

    fn wait_reply_now(&mut self, wait: &mut Wait<'_>) -> Result<()> {
        if !self.unanswered {
            return Err(Error::InvalidArgument("no call is waiting for a reply: call first".into()));
        }
        if self.generation != fork_generation() {
            // The parent's call: its reply is the parent's to take.
            return Err(Error::InvalidArgument(
                "this client was inherited from the parent process, whose call is waiting for this reply; make a call here (it connects a client of this process)".into(),
            ));
        }
        if self.slot_reply.is_some() {
            return Ok(());
        }
        if self.slot_call == Some(self.seq) {
            return self.wait_slot_or_ring(wait);
        }
        let (seq, id) = (self.seq, self.id);
        let requests = &self.requests;
        let mut user = wait.hook.take();
        // Every slice: the caller's hook, then the server's lock (a server that died
        // before it opened our reply channel does not show there).
        let mut hook = || -> Result<()> {
            if let Some(h) = user.as_mut() {
                h()?;
            }
            requests.check_receiver()
        };
        let mut w = Wait { deadline: wait.deadline, block: wait.block, hook: Some(&mut hook) };
        let got = loop {
            // Staged: begun once, taken by `begin_reply` (or dropped here if stale).
            if let Err(e) = self.replies.stage_with(&mut w) {
                break Err(as_server(e));
            }
            let env = self.replies.staged_head().and_then(|h| h.envelope().copied()).map(|e| Envelope::decode(&e));
            if env.is_some_and(|env| env.seq == seq && env.client == id) {
                break Ok(());
            }
            // A late reply to an earlier call, or not a reply: consumed and dropped.
            drop(self.replies.take_staged());
        };
        wait.hook = user;
        got
    }

    /// [`RpcClient::wait_reply`] for a call posted in the call slot: its reply comes
    /// there, or (a stream, a large reply, an error the slot cannot hold) through the
    /// reply channel; both are looked at, and the server notifies the reply channel's
    /// event count either way.
    fn wait_slot_or_ring(&mut self, wait: &mut Wait<'_>) -> Result<()> {
        if self.replies.store().is_none() {
            return Err(Error::Closed);
        }
        if let Some(()) = self.poll_reply()? {
            return Ok(());
        }
        if !wait.blocks() {
            return Err(Error::Empty);
        }
        let policy = self.replies.wait_policy();
        let mut history = std::mem::take(&mut self.history);
        let got = crate::wait::wait_for(
            self,
            |c| {
                let store = c.replies.store().expect("checked open above");
                (store.data_event(), store.park())
            },
            (policy, &mut history),
            wait,
            RpcClient::poll_reply,
            |_| false,
            // Every slice: the server's lock (it may have died before it opened our
            // reply channel).
            |c| c.requests.check_receiver().map_err(as_server),
        );
        self.history = history;
        got
    }

    /// One look for the current call's reply: in the call slot (taken into
    /// `slot_reply` if it carries our envelope), else at the head of the reply channel
    /// (staged; replies to earlier calls are dropped). `Some` when found.
    fn poll_reply(&mut self) -> Result<Option<()>> {
        if let Some(seq) = self.slot_call.filter(|&s| s == self.seq) {
            if let Some(slot) = self.requests.store().and_then(|st| st.call_slot()) {
                match callslot::reply(slot, seq, &mut self.slot_buf) {
                    // Nothing of this call can be in the reply channel yet: the server
                    // gives the slot back (`Elsewhere`) before it sends a reply there.
                    Poll::Pending => return Ok(None),
                    Poll::Reply { tag, len } => {
                        // Untrusted: ours only with our envelope (a stale reply to the
                        // lane's previous client never names us).
                        let env = self.slot_buf.first_chunk::<ENVELOPE_LEN>().map(Envelope::decode).filter(|_| len >= ENVELOPE_LEN);
                        self.slot_call = None;
                        if tag & frame::ENVELOPED != 0 && env.is_some_and(|e| e.seq == seq && e.client == self.id) {
                            self.slot_reply = Some((tag, len));
                            return Ok(Some(()));
                        }
                    }
                    Poll::Elsewhere => self.slot_call = None,
                }
            }
        }
        loop {
            if !self.replies.stage().map_err(as_server)? {
                return Ok(None);
            }
            let env = self.replies.staged_head().and_then(|h| h.envelope().copied()).map(|e| Envelope::decode(&e));
            if env.is_some_and(|env| env.seq == self.seq && env.client == self.id) {
                return Ok(Some(()));
            }
            // A late reply to an earlier call, or not a reply: consumed and dropped.
            drop(self.replies.take_staged());
        }
    }

    /// The reply found in the call slot, begun (see [`RpcClient::begin_reply`]).
    ///
    /// # Panics
    /// If none was found.
    fn take_slot_reply(&mut self) -> Result<(Envelope, Incoming<'_>)> {
        let (tag, len) = self.slot_reply.take().expect("a reply in the slot");
        let incoming = Incoming::owned(tag, &self.slot_buf[..len], &self.server)?;
        let Some(env) = incoming.head().envelope().map(Envelope::decode) else {
            return Err(Error::InvalidArgument("the call slot's reply lost its envelope".into()));
        };
        // Fields, not `began_part`: `incoming` borrows the slot buffer.
        began_part(&mut self.began, &mut self.unanswered, &mut self.streaming, env);
        Ok((env, incoming))
    }

    /// Largest request in bytes that travels as one record (zero-copy loans; larger
    /// requests are chunked).
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub fn max_request_len(&self) -> Result<usize> {
        Ok(self.requests.max_message_len()?.saturating_sub(ENVELOPE_LEN))
    }

    /// After [`RpcClient::begin_reply`]: `whole` if the part was read completely. A part
    /// that was not (interrupted, truncated) leaves the call unanswered: a retry asks the
    /// server to send the reply again.
    pub fn end_reply(&mut self, env: Envelope, whole: bool) {
        if !whole && env.seq == self.seq {
            self.unanswered = true;
        }
    }

    /// True while the current call expects more reply parts (or its reply was not
    /// received): what a stream iterates on.
    pub fn awaiting_reply(&self) -> bool {
        self.unanswered
    }

    /// The current call's sequence number (0 before the first call).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// This client's id (in every envelope it sends).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The request lane (the client's slot on the server, `0..max_clients`).
    pub fn slot(&self) -> Option<usize> {
        self.requests.lane()
    }

    /// The server's name.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The full liveness check of the server.
    ///
    /// # Errors
    /// [`Error::PeerDead`] / [`Error::Disconnected`] (role "server"), [`Error::Closed`].
    pub fn check_server(&self) -> Result<()> {
        self.requests.check_receiver().map_err(as_server)
    }

    /// True if the server is alive and serving (as iceoryx2's `is_connected`).
    pub fn is_connected(&self) -> bool {
        self.check_server().is_ok()
    }

    /// How calls wait for their replies (and for room for their requests).
    pub fn set_wait_policy(&mut self, policy: WaitPolicy) {
        self.requests.set_wait_policy(policy);
        self.replies.set_wait_policy(policy);
    }

    /// The wait policy.
    pub fn wait_policy(&self) -> WaitPolicy {
        self.replies.wait_policy()
    }

    /// The policy the wait for the current call's reply follows: [`RpcClient::wait_policy`]
    /// with an adaptive spin as learned (none while the server that answered last runs
    /// on this thread's CPU: see `shmplane_shm::wait::WaitHistory`), from the history
    /// of the path the reply comes by (the call slot's, or the reply channel's). A
    /// binding that spins before it waits (Python, with the GIL held) asks this.
    pub fn current_wait_policy(&self) -> WaitPolicy {
        if self.slot_call.is_some_and(|s| s == self.seq) {
            self.history.policy(self.wait_policy())
        } else {
            self.replies.current_wait_policy()
        }
    }

    /// A descriptor readable when a reply may be waiting (the reply channel's, see
    /// [`Receiver::readiness_fd`]).
    ///
    /// # Errors
    /// As [`Receiver::readiness_fd`].
    pub fn readiness_fd(&mut self) -> Result<std::os::fd::RawFd> {
        let fd = self.replies.readiness_fd()?;
        // A call posted in the call slot may have been answered there before the
        // descriptor was armed (calls made from now on use the lane): readable now.
        let answered = self.unanswered && self.slot_call == Some(self.seq) && self.call_slot().is_some_and(|slot| callslot::settled(slot, self.seq));
        if answered || self.slot_reply.is_some() {
            self.replies.ring_own_doorbell();
        }
        Ok(fd)
    }

    /// Close both ends (idempotent): the server sees the lane free, and the reply
    /// channel (this client's alone) is removed unless a copy of this client in another
    /// process (a fork) still holds it.
    pub fn close(&mut self) {
        self.close_with(false);
    }

    fn close_with(&mut self, releasing_views: bool) {
        if self.requests.is_closed() && self.replies.is_closed() {
            return;
        }
        if self.generation == fork_generation() {
            // A request still posted in the call slot and not taken: withdrawn, so that
            // the server does not run a call whose client is gone (one it took runs, and
            // its reply is dropped). Not from a fork child: the slot's call is the
            // parent's.
            if let Some(slot) = self.call_slot() {
                let _ = callslot::withdraw(slot);
            }
        }
        self.requests.close();
        if releasing_views {
            self.replies.close_releasing_views();
        } else {
            self.replies.close();
        }
        let name = reply_name(&self.server, self.id);
        if Segment::unlink_if_role_gone(&name, SegmentKind::Channel, 1).unwrap_or(false) {
            shmplane_shm::bell::remove(&name);
        }
    }

    /// True once closed.
    pub fn is_closed(&self) -> bool {
        self.requests.is_closed()
    }

    /// [`RpcClient::close`], first giving back the replies views hold (they must no
    /// longer be read): for a process that exits with reply views alive.
    pub fn close_releasing_views(&mut self) {
        self.close_with(true);
    }
}

impl Drop for RpcClient {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcClient")
            .field("server", &self.server)
            .field("slot", &self.slot())
            .field("id", &format_args!("{:08x}", self.id))
            .field("seq", &self.seq)
            .finish()
    }
}

// ------------------------------------------------------------------------- server

/// Which call of which client a request is: what [`RpcServer::reply`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallId {
    /// The client's slot (its request lane).
    pub slot: usize,
    /// The client's id.
    pub client: u32,
    /// The call's sequence number.
    pub seq: u64,
}

/// A final reply kept for a client that may lose it part-way.
struct Saved {
    kind: Kind,
    payload: Vec<u8>,
    prefix: usize,
    flags: u32,
}

/// The server's table entry of one client lane.
struct ClientState {
    id: u32,
    replies: Option<Sender>,
    /// The last call admitted.
    seq: u64,
    /// Its final reply was sent.
    done: bool,
    saved: Option<Saved>,
    /// The final reply of the last call could not be delivered (the client did not make
    /// room in time): a retry of it is told the reply is lost.
    lost: bool,
    /// Before the last call was admitted: (seq, done), restored if its request could not
    /// be read whole ([`RpcServer::abandon`]), so that its retry is admitted.
    before: (u64, bool),
    /// The client is gone (its reply channel closed or never existed): drop replies.
    gone: bool,
    /// The call (number, since when) whose reply was given up and whose client is owed
    /// the error saying so (else a client still waiting, as a stream's does, would wait
    /// forever): sent without waiting at each look for calls, until it fits, the client
    /// makes a newer call, or twice the reply timeout passed.
    owed: Option<(u64, Instant)>,
    /// The call (its number in the slot's state word) this server took from the lane's
    /// call slot and still owns there: its final reply goes into the slot if it fits,
    /// else the slot is completed empty before the reply goes through the channel.
    slot: Option<u64>,
}

/// What to do with a request.
enum Admit {
    Call(CallId),
    Drop,
    Resend,
}

/// The serving end: receives every client's calls (each client's in order, taking
/// turns between clients), replies to each, and runs each call at most once however
/// often a client retries it. One server per name.
///
/// # Examples
/// See [`RpcClient`].
pub struct RpcServer {
    mailbox: Mailbox,
    name: String,
    clients: Vec<Option<ClientState>>,
    policy: WaitPolicy,
    /// How long a reply waits for room in a client's reply channel
    /// ([`RpcServer::set_reply_timeout`]).
    reply_timeout: Duration,
    /// Requests dropped as duplicates (retries, stale): for tests and statistics.
    dropped: u64,
    /// Some client is owed a reply (`ClientState::owed`).
    owed: bool,
    /// The request last taken from a call slot (see `RpcServer::take_slotted`).
    slot_buf: [u8; CALL_SLOT_BYTES],
    /// Calls taken from call slots: for tests and statistics.
    slotted: u64,
    /// Since when the oldest debt still owed is (sets the length of the short waits).
    oldest_debt: Option<Instant>,
}

impl RpcServer {
    /// Create server `name` for up to `max_clients` clients at once, with request lanes
    /// of [`DEFAULT_REQUEST_CAPACITY`]. A server of that name that died is replaced;
    /// its clients get [`Error::PeerDead`] and must connect again.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] (a live server has the name), [`Error::InvalidName`],
    /// [`Error::InvalidArgument`], [`Error::NoSpace`], [`Error::Os`].
    pub fn create(name: &str, max_clients: usize) -> Result<RpcServer> {
        RpcServer::create_with(name, DEFAULT_REQUEST_CAPACITY, max_clients)
    }

    /// [`RpcServer::create`] with request lanes of `request_capacity` bytes (a power of
    /// two, at least 4096): a server of `n` clients commits `n × (request_capacity +
    /// 4 KiB)` and each client's reply channel its `reply_capacity + 4 KiB`.
    ///
    /// # Errors
    /// As [`RpcServer::create`].
    pub fn create_with(name: &str, request_capacity: usize, max_clients: usize) -> Result<RpcServer> {
        if name.len() > MAX_SERVER_NAME {
            return Err(Error::InvalidName { name: name.to_owned(), reason: "an RPC server's name is at most 185 bytes" });
        }
        let mut mailbox = match Mailbox::create(name, request_capacity, max_clients) {
            // A dead server's mailbox is kept alive by its clients' lanes: replaced if
            // its consumer role (the server) closed or died.
            Err(Error::AlreadyExists { .. })
                if Segment::unlink_if_role_gone(name, SegmentKind::Mailbox, 0).unwrap_or(false) =>
            {
                Mailbox::create(name, request_capacity, max_clients)?
            }
            other => other?,
        };
        mailbox.set_persistent(true);
        mailbox.enable_call_slots();
        let clients = (0..max_clients).map(|_| None).collect();
        Ok(RpcServer { mailbox, name: name.to_owned(), clients, policy: WaitPolicy::default(), reply_timeout: DEFAULT_REPLY_TIMEOUT, dropped: 0, owed: false, slot_buf: [0; CALL_SLOT_BYTES], slotted: 0, oldest_debt: None })
    }

    /// The next call, waiting as long as it takes: its id and its request as bytes.
    ///
    /// # Errors
    /// As [`RpcServer::begin`].
    pub fn recv(&mut self) -> Result<(CallId, Vec<u8>)> {
        self.recv_within(Wait::forever())
    }

    /// [`RpcServer::recv`], waiting at most `timeout` for a call to arrive (a request
    /// of several records that began is then read whole, each record within the reply
    /// timeout of the one before). A loop that must also do other work between calls.
    ///
    /// # Errors
    /// [`Error::Timeout`] (no call by then), as [`RpcServer::begin`] otherwise.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<(CallId, Vec<u8>)> {
        self.recv_within(Wait::timeout(timeout))
    }

    /// The next call's request as bytes, waiting per `wait` for it to arrive; the rest
    /// of a request of several records is read as long as it takes (each record within
    /// the reply timeout of the one before: the incoming is bounded).
    fn recv_within(&mut self, wait: Wait<'_>) -> Result<(CallId, Vec<u8>)> {
        let mut request = Vec::new();
        let call = self.recv_into(&mut request, wait)?;
        Ok((call, request))
    }

    /// [`RpcServer::recv`] with the request's bytes written into `request` (cleared
    /// first), waiting per `wait` for a call to arrive: no allocation once `request`
    /// has the capacity (a small request is copied from the call slot straight into
    /// it), for a server loop that keeps one buffer. The rest of a request of several
    /// records is read as long as it takes (each record within the reply timeout of
    /// the one before).
    ///
    /// # Errors
    /// As [`RpcServer::begin`]; [`Error::Timeout`] (no call by `wait`'s deadline).
    pub fn recv_into(&mut self, request: &mut Vec<u8>, mut wait: Wait<'_>) -> Result<CallId> {
        request.clear();
        let (call, incoming) = match self.next_call(&mut wait)? {
            Next::Slot(call, tag, len) => {
                // A bytes request from a call slot: its payload, no parsing to do.
                if let Some(payload) = slot_bytes(tag, &self.slot_buf[..len]) {
                    request.extend_from_slice(payload);
                    return Ok(call);
                }
                (call, Incoming::owned(tag, &self.slot_buf[..len], "").expect("validated by take_slotted"))
            }
            Next::Ring(call, lane) => (call, self.mailbox.take_staged(lane).bounded(self.reply_timeout)),
        };
        let got = crate::flavors::spsc::payload_of(incoming, &mut wait);
        self.settle_failed_read(call, got.as_ref().err());
        *request = got?;
        Ok(call)
    }

    /// The next call, waiting per `wait`, as a [`Frame`].
    ///
    /// # Errors
    /// As [`RpcServer::begin`], [`Error::Truncated`] (the client gave up part-way: the
    /// call is dropped).
    pub fn recv_frame(&mut self, mut wait: Wait<'_>) -> Result<(CallId, Frame)> {
        let (call, incoming) = self.begin(&mut wait)?;
        let got = crate::flavors::spsc::frame_of(incoming, &mut wait);
        self.settle_failed_read(call, got.as_ref().err());
        Ok((call, got?))
    }

    /// Wait per `wait` until a request may be waiting (`Ok(false)` at the deadline);
    /// it stays queued (it may turn out a duplicate that [`RpcServer::begin`] drops).
    ///
    /// # Errors
    /// The hook's error, [`Error::Corrupt`], [`Error::Closed`].
    pub fn poll(&mut self, mut wait: Wait<'_>) -> Result<bool> {
        // The next call comes in answer to this server's last reply (see `next_call`).
        without_slip(|| self.poll_now(&mut wait))
    }

    fn poll_now(&mut self, wait: &mut Wait<'_>) -> Result<bool> {
        loop {
            self.mailbox.settle();
            if self.owed {
                self.settle_debts();
            }
            if !(self.owed && wait.block) {
                return self.mailbox.poll_with(wait.reborrow());
            }
            // An error is still owed: look in short waits, paying between.
            if self.mailbox.poll_with(wait.slice(self.debt_slice()))? {
                return Ok(true);
            }
            if wait.expired() {
                return Ok(false);
            }
        }
    }

    /// After reading the request of `call` failed with `e`: a request not read whole
    /// (cut by its client, or the read interrupted) is abandoned, so that its retry
    /// runs; one that arrived whole but cannot be taken (too large to allocate) is
    /// answered with that error.
    fn settle_failed_read(&mut self, call: CallId, e: Option<&Error>) {
        match e {
            None => {}
            Some(Error::Truncated { .. } | Error::Interrupted | Error::Timeout) => self.abandon(call),
            // Answered with the error; with no room for it, forgotten instead (its
            // retry runs).
            Some(e) if self.reply_error_with(call, "RequestError", &e.to_string(), "", Wait::no_wait()).is_err() => self.abandon(call),
            Some(_) => {}
        }
    }

    /// The request of `call` could not be read whole (its client gave up part-way, or
    /// the read was interrupted): forget that it was admitted, so that the client's
    /// retry of it is run (the application never saw it). [`RpcServer::recv`] and
    /// [`RpcServer::recv_frame`] do this themselves.
    pub fn abandon(&mut self, call: CallId) {
        if let Ok(state) = running(&mut self.clients, call) {
            (state.seq, state.done) = state.before;
        }
        self.release_slot(call.slot);
    }

    /// Wait per `wait` for the next call to run and begin receiving its request (read
    /// it with the [`Incoming`]'s methods, in place or copied). Retries and stale
    /// duplicates are dealt with here and never returned.
    ///
    /// # Errors
    /// [`Error::Empty`], [`Error::Timeout`], the hook's error, [`Error::Corrupt`] (a
    /// client's lane is corrupt: reported once, then skipped), [`Error::Closed`].
    pub fn begin(&mut self, wait: &mut Wait<'_>) -> Result<(CallId, Incoming<'_>)> {
        match self.next_call(wait)? {
            Next::Slot(call, tag, len) => {
                Ok((call, Incoming::owned(tag, &self.slot_buf[..len], "").expect("validated by take_slotted")))
            }
            Next::Ring(call, lane) => Ok((call, self.mailbox.take_staged(lane).bounded(self.reply_timeout))),
        }
    }

    /// Wait per `wait` for the next call to run (see [`RpcServer::begin`]): taken from
    /// a call slot (its record in `slot_buf`), or staged in a lane's ring.
    fn next_call(&mut self, wait: &mut Wait<'_>) -> Result<Next> {
        loop {
            self.mailbox.settle();
            if self.owed {
                self.settle_debts();
            }
            let lane = if self.owed && wait.block {
                // A reply is still owed: look for calls in short waits, paying between.
                let slice = self.debt_slice();
                match without_slip(|| self.mailbox.stage_next(&mut wait.slice(slice))) {
                    Ok(lane) => lane,
                    Err(Error::Timeout) if !wait.expired() => continue,
                    Err(e) => return Err(e),
                }
            } else {
                // A client's next call mostly answers this server's last reply: the wait
                // must not slip (see `shmplane_shm::wait::without_slip`).
                without_slip(|| self.mailbox.stage_next(wait))?
            };
            if self.mailbox.slotted() {
                if let Some((call, tag, len)) = self.take_slotted(lane) {
                    return Ok(Next::Slot(call, tag, len));
                }
                continue;
            }
            let env = self.mailbox.staged_head(lane).and_then(|h| h.envelope().copied()).map(|e| Envelope::decode(&e));
            match self.admit(lane, env) {
                // Bounded: each record of a request must come within the reply timeout
                // of the one before (a client stopped part-way cannot hold the server).
                Admit::Call(call) => {
                    self.release_slot(lane);
                    return Ok(Next::Ring(call, lane));
                }
                Admit::Drop => {
                    self.dropped += 1;
                    drop(self.mailbox.take_staged(lane));
                }
                Admit::Resend => {
                    self.dropped += 1;
                    drop(self.mailbox.take_staged(lane));
                    self.resend(lane);
                }
            }
        }
    }

    /// Take the request posted in lane `lane`'s call slot: the call to run, or `None`
    /// (withdrawn by its client first, a duplicate, or not a valid request: the slot is
    /// completed empty and the look goes on).
    fn take_slotted(&mut self, lane: usize) -> Option<(CallId, u32, usize)> {
        let slot = self.mailbox.call_slot(lane)?;
        let taken = match callslot::take(slot, &mut self.slot_buf)? {
            Ok(t) => t,
            Err((seq, _)) => {
                callslot::complete(slot, seq, None, false);
                self.dropped += 1;
                return None;
            }
        };
        // Untrusted: parsed as a ring's record would be, and its envelope must number
        // the same call as the slot's state.
        let env = slot_envelope(taken.tag, &self.slot_buf[..taken.len]).filter(|e| e.seq & callslot::MAX_SEQ == taken.seq);
        let Some(env) = env else {
            callslot::complete(slot, taken.seq, None, false);
            self.dropped += 1;
            return None;
        };
        match self.admit(lane, Some(env)) {
            Admit::Call(call) => {
                self.release_slot(lane);
                if let Some(state) = self.clients[lane].as_mut() {
                    state.slot = Some(taken.seq);
                }
                self.slotted += 1;
                Some((call, taken.tag, taken.len))
            }
            Admit::Drop => {
                self.complete_slot(lane, taken.seq, None);
                self.dropped += 1;
                None
            }
            Admit::Resend => {
                self.complete_slot(lane, taken.seq, None);
                self.dropped += 1;
                self.resend(lane);
                None
            }
        }
    }

    /// Complete call `seq` in lane `lane`'s call slot (see `callslot::complete`).
    fn complete_slot(&self, lane: usize, seq: u64, reply: Option<(u32, &[u8])>) {
        if let Some(slot) = self.mailbox.call_slot(lane) {
            callslot::complete(slot, seq, reply, false);
        }
    }

    /// Give back lane `lane`'s call slot if this server still owns it for an earlier
    /// call (one the application left unanswered when a newer call came: its reply
    /// would be refused anyway).
    fn release_slot(&mut self, lane: usize) {
        let Some(seq) = self.clients.get_mut(lane).and_then(Option::as_mut).and_then(|s| s.slot.take()) else { return };
        self.complete_slot(lane, seq, None);
    }

    /// Decide what a request (`env`, from lane `lane`) is: a new call, a duplicate, or
    /// a retry asking for a lost reply.
    fn admit(&mut self, lane: usize, env: Option<Envelope>) -> Admit {
        let Some(env) = env else {
            // Not from an RpcClient (a plain sender of the mailbox): nothing to answer.
            return Admit::Drop;
        };
        let Some(slot) = self.clients.get_mut(lane) else { return Admit::Drop };
        if let Some(old) = slot.as_mut().filter(|c| c.id != env.client).and_then(|c| c.slot.take()) {
            // The lane's previous client's call, still ours in the call slot.
            if let Some(cs) = self.mailbox.call_slot(lane) {
                callslot::complete(cs, old, None, false);
            }
        }
        let Some(slot) = self.clients.get_mut(lane) else { return Admit::Drop };
        if slot.as_ref().is_none_or(|c| c.id != env.client) {
            // A new client on this lane (the one before it closed or died).
            *slot = Some(ClientState { id: env.client, replies: None, seq: 0, done: true, saved: None, lost: false, before: (0, true), gone: false, owed: None, slot: None });
        }
        let state = slot.as_mut().expect("set above");
        if env.seq > state.seq {
            // A new call acknowledges the last one's reply: its copy goes.
            state.before = (state.seq, state.done);
            state.seq = env.seq;
            state.done = false;
            state.saved = None;
            state.lost = false;
            state.owed = None;
            return Admit::Call(CallId { slot: lane, client: env.client, seq: env.seq });
        }
        if env.seq == state.seq && state.done && (env.flags & flags::RESEND != 0 || state.lost) {
            return Admit::Resend;
        }
        // A retry of a call running (its reply comes when done) or answered (its reply
        // is in the client's reply channel), or a stale duplicate.
        Admit::Drop
    }

    /// Send the saved final reply of lane `lane`'s last call again, or an error saying
    /// it ran and its reply is lost. Best effort: a client that is gone is dropped.
    fn resend(&mut self, lane: usize) {
        let name = &self.name;
        let Some(state) = self.clients[lane].as_mut() else { return };
        let env = Envelope { seq: state.seq, client: state.id, flags: 0 };
        let lost;
        let saved = state.saved.take();
        let (msg, flags) = match &saved {
            Some(s) => (Outgoing::logical(s.kind, &s.payload, s.prefix), s.flags),
            None => {
                let why = if state.lost {
                    "the server could not deliver it in time (the client's reply channel stayed full)".to_owned()
                } else {
                    format!("it was lost part-way and was not kept (only replies of several records up to {SAVED_REPLY_LIMIT} bytes are)")
                };
                lost = encode_error("ReplyLost", &format!("call {} ran, but {why}; it is not run again", state.seq), "");
                (Outgoing::bytes(&lost), flags::ERROR)
            }
        };
        let env = Envelope { flags, ..env };
        if let Ok(Some(tx)) = reply_sender(name, state, self.policy) {
            // This runs inside `begin`: an error (one record) without waiting; a kept
            // reply (several records: it streams through as the waiting client drains
            // its channel) for at most 100 ms. What finds no room is dropped: the
            // client's next retry asks again.
            let wait = if saved.is_some() { Wait::timeout(Duration::from_millis(100)) } else { Wait::no_wait() };
            if let Err(Error::Disconnected { .. } | Error::PeerDead { .. }) = tx.send_message(&msg.with_envelope(env.encode()), wait) {
                state.replies = None;
                state.gone = true;
            }
        }
        state.saved = saved;
    }

    /// Try the errors owed to clients whose replies were given up (`ClientState::owed`),
    /// without waiting. Called at each look for calls ([`RpcServer::begin`],
    /// [`RpcServer::poll`]); a server that waits for calls elsewhere (an event loop)
    /// calls it now and then.
    pub fn settle_debts(&mut self) {
        self.owed = false;
        self.oldest_debt = None;
        let limit = self.reply_timeout.saturating_mul(2).min(Duration::from_secs(3600));
        for state in self.clients.iter_mut().flatten() {
            let Some((seq, since)) = state.owed else { continue };
            if state.gone || state.seq != seq || since.elapsed() > limit {
                state.owed = None;
                continue;
            }
            let msg = encode_error(
                "ReplyLost",
                &format!("call {seq} ran, but the server could not deliver its reply in time (the client's reply channel stayed full); it is not run again"),
                "",
            );
            let env = Envelope { seq, client: state.id, flags: flags::ERROR };
            match reply_sender(&self.name, state, self.policy) {
                Ok(Some(tx)) => match tx.send_message(&Outgoing::bytes(&msg).with_envelope(env.encode()), Wait::no_wait()) {
                    Ok(()) => state.owed = None,
                    Err(Error::Disconnected { .. } | Error::PeerDead { .. }) => {
                        state.replies = None;
                        state.gone = true;
                        state.owed = None;
                    }
                    Err(_) => {
                        self.owed = true;
                        self.oldest_debt = Some(self.oldest_debt.map_or(since, |t| t.min(since)));
                    }
                },
                _ => state.owed = None,
            }
        }
    }

    /// The short wait between attempts to pay the debts (see [`DEBT_SLICE`]).
    fn debt_slice(&self) -> Duration {
        let age = self.oldest_debt.map_or(Duration::ZERO, |t| t.elapsed());
        (age / 16).clamp(DEBT_SLICE, DEBT_SLICE_MAX)
    }

    /// Reply to `call` with bytes (its final reply), waiting at most the reply timeout
    /// ([`RpcServer::set_reply_timeout`]) for room. `false` if the client is gone
    /// (closed or died): the reply is dropped.
    ///
    /// # Errors
    /// As [`RpcServer::reply_with`].
    pub fn reply(&mut self, call: CallId, reply: &[u8]) -> Result<bool> {
        // Through the call slot first: no deadline to compute (a clock read).
        let reply = Outgoing::bytes(reply);
        if let Some(sent) = self.reply_in_slot(call, &reply, 0)? {
            return Ok(sent);
        }
        self.send_reply_ring(call, reply, 0, &mut Wait::timeout(self.reply_timeout))
    }

    /// How long [`RpcServer::reply`] and [`RpcServer::reply_error`] wait for room in a
    /// client's reply channel (5 s by default). A reply that times out is
    /// given up: the call counts as answered, and the client's retry of it is told its
    /// reply is lost (`Error::Remote` of kind `ReplyLost`); it is not run again.
    pub fn set_reply_timeout(&mut self, timeout: Duration) {
        self.reply_timeout = timeout;
    }

    /// The reply timeout.
    pub fn reply_timeout(&self) -> Duration {
        self.reply_timeout
    }

    /// Reply to `call` with any message; `last = false` sends one part of a stream
    /// (more follow; the call stays running). Waits per `wait` for room in the
    /// client's reply channel. `false` if the client is gone: the reply is dropped.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (the call was answered already, or is not running:
    /// unknown, or its client replaced), [`Error::Timeout`] or the hook's error (the
    /// client did not make room: the reply is given up, the call counts as answered and
    /// its retry is told `ReplyLost`; a stream's client is sent that error when there is
    /// room), [`Error::Full`] (a non-blocking `wait`: nothing sent, the call still
    /// runs), [`Error::TooLarge`] (its header does not fit one record of the client's
    /// reply channel: nothing sent, the call still runs: answer it with
    /// [`RpcServer::reply_error`]), [`Error::Closed`].
    pub fn reply_with(&mut self, call: CallId, reply: Outgoing<'_>, last: bool, mut wait: Wait<'_>) -> Result<bool> {
        let flags = if last { 0 } else { flags::MORE };
        self.send_reply(call, reply, flags, &mut wait)
    }

    /// Reply to `call` with an error (final): the client's call fails with
    /// [`Error::Remote`] carrying `kind`, `message` and `traceback`.
    ///
    /// # Errors
    /// As [`RpcServer::reply_with`].
    pub fn reply_error(&mut self, call: CallId, kind: &str, message: &str, traceback: &str) -> Result<bool> {
        let wait = Wait::timeout(self.reply_timeout);
        self.reply_error_with(call, kind, message, traceback, wait)
    }

    /// [`RpcServer::reply_error`] waiting per `wait` for room.
    ///
    /// # Errors
    /// As [`RpcServer::reply_with`].
    pub fn reply_error_with(&mut self, call: CallId, kind: &str, message: &str, traceback: &str, mut wait: Wait<'_>) -> Result<bool> {
        let payload = encode_error(kind, message, traceback);
        self.send_reply(call, Outgoing::bytes(&payload), flags::ERROR, &mut wait)
    }

    /// The reply of a call taken from a call slot: its final reply written over the
    /// request when it fits (`Some(sent)`, as [`RpcServer::send_reply`] returns);
    /// otherwise the slot goes back to the client empty and `None`: the reply goes
    /// through the reply channel (where the client waits too). `None` at once for a
    /// call that did not come through the slot. No clock read, no wait.
    fn reply_in_slot(&mut self, call: CallId, reply: &Outgoing<'_>, flags: u32) -> Result<Option<bool>> {
        let state = running(&mut self.clients, call)?;
        let last = flags & flags::MORE == 0;
        if let Some(seq) = state.slot.take() {
            // This server looks at the slot directly while it busy-polls: the client's
            // next post needs no pending bit and no notify (`callslot::POLLED`).
            let polled = self.mailbox.keep_polling(call.slot);
            let slot = self.mailbox.call_slot(call.slot);
            // The reply's envelope (this call's number, the client, `flags`) goes in
            // the slot's state and `meta` words, its payload after them.
            let m = callslot::Meta { client: call.client, flags, tag: reply.tag() | frame::ENVELOPED };
            let n = reply.total();
            let fits = last && callslot::fits_payload(call.seq, m, n);
            if let Some(slot) = slot.filter(|_| fits) {
                // The final reply of a call taken from the slot, small enough: written
                // over the request, and the client woken through its reply channel's
                // event count (where it sleeps, whichever way the reply comes).
                let opened = match reply_sender(&self.name, state, self.policy) {
                    Ok(tx) => tx.is_some(),
                    Err(e) => {
                        // Not opened (descriptors or memory exhausted): the call still
                        // runs and the slot stays ours for the next reply, which tries
                        // again (else the slot would stay TAKEN for good).
                        state.slot = Some(seq);
                        return Err(e);
                    }
                };
                if !opened {
                    callslot::complete(slot, seq, None, polled);
                    state.done = true;
                    return Ok(Some(false));
                }
                let tx = state.replies.as_ref().expect("opened above");
                with_slot_payload(reply, |payload| callslot::complete_payload(slot, seq, m, payload, polled));
                tx.notify_consumer();
                state.done = true;
                state.saved = None;
                return Ok(Some(true));
            }
            // Through the channel (a part of a stream, or too large): the slot is the
            // client's again at once; it waits on the channel too.
            if let Some(slot) = slot {
                callslot::complete(slot, seq, None, polled);
            }
        }
        Ok(None)
    }

    fn send_reply(&mut self, call: CallId, reply: Outgoing<'_>, flags: u32, wait: &mut Wait<'_>) -> Result<bool> {
        if let Some(sent) = self.reply_in_slot(call, &reply, flags)? {
            return Ok(sent);
        }
        self.send_reply_ring(call, reply, flags, wait)
    }

    /// [`RpcServer::send_reply`] through the client's reply channel (after
    /// [`RpcServer::reply_in_slot`] declined it).
    fn send_reply_ring(&mut self, call: CallId, reply: Outgoing<'_>, flags: u32, wait: &mut Wait<'_>) -> Result<bool> {
        let state = running(&mut self.clients, call)?;
        let last = flags & flags::MORE == 0;
        let env = Envelope { seq: call.seq, client: call.client, flags };
        let Some(tx) = reply_sender(&self.name, state, self.policy)? else {
            state.done |= last;
            return Ok(false);
        };
        // Kept for a client that loses the reply part-way: only a reply of several
        // records can be (one record is taken whole or not at all), and only a small one.
        let chunked = reply.total() + ENVELOPE_LEN > tx.max_message_len().unwrap_or(0) || reply.total() > frame::CHUNK_THRESHOLD;
        let saved = (last && chunked && reply.total() <= SAVED_REPLY_LIMIT).then(|| {
            let mut payload = vec![0u8; reply.total()];
            reply.gather(0, &mut payload);
            Saved { kind: reply.kind(), payload, prefix: reply.prefix(), flags }
        });
        match tx.send_message(&reply.with_envelope(env.encode()), wait.reborrow()) {
            Ok(()) => {
                if last {
                    state.done = true;
                    state.saved = saved;
                }
                Ok(true)
            }
            Err(Error::Disconnected { .. } | Error::PeerDead { .. }) => {
                state.replies = None;
                state.gone = true;
                state.done |= last;
                Ok(false)
            }
            // `Full` (a non-blocking try) sent nothing: the caller may try again.
            Err(e @ (Error::Timeout | Error::Interrupted)) => {
                // Not delivered (the client did not make room): given up, so that one
                // idle client does not hold the server. A chunked reply begun is cut
                // (its receiver reports it truncated); the call counts as answered and
                // its retry is told the reply is lost. Never run again. A stream cut
                // this way still owes its client an end: the error `ReplyLost`, sent
                // once there is room (else the client would wait for parts forever).
                state.done = true;
                state.lost = true;
                state.saved = None;
                state.owed = Some((call.seq, Instant::now()));
                self.owed = true;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Lend `len` bytes of `call`'s client's reply channel for its final reply, written
    /// in place (zero-copy, one record); committing it answers the call. `Ok(None)` if
    /// the client is gone.
    ///
    /// # Errors
    /// [`Error::Timeout`] / the hook's error (no room: the call still runs; reply
    /// otherwise), [`Error::Disconnected`] / [`Error::PeerDead`] (the client closed or
    /// died while the server waited for room), [`Error::TooLarge`] (more than one
    /// record), [`Error::InvalidArgument`] (not running), [`Error::Closed`].
    pub fn loan_reply(&mut self, call: CallId, len: usize, wait: Wait<'_>) -> Result<Option<RpcReplyLoan<'_>>> {
        running(&mut self.clients, call)?;
        // A loan is written in the reply channel: the call slot goes back to the client.
        self.release_slot(call.slot);
        let state = running(&mut self.clients, call)?;
        if reply_sender(&self.name, state, self.policy)?.is_none() {
            state.done = true;
            return Ok(None);
        }
        let env = Envelope { seq: call.seq, client: call.client, flags: 0 };
        let ClientState { replies, done, saved, .. } = state;
        let tx = replies.as_mut().expect("opened above");
        let loan = tx.claim_loan_enveloped(len, Some(env.encode()), wait)?;
        *saved = None;
        Ok(Some(RpcReplyLoan { loan, done }))
    }

    /// Requests dropped as retries of running or answered calls, or stale duplicates,
    /// since creation.
    pub fn duplicates(&self) -> u64 {
        self.dropped
    }

    /// Calls whose request came through a call slot (the fast path for small calls:
    /// see `shmplane_shm::callslot`) since creation.
    pub fn slot_calls(&self) -> u64 {
        self.slotted
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Clients connected now (request lanes held by live clients).
    pub fn clients(&self) -> usize {
        self.mailbox.senders()
    }

    /// Most clients at once.
    pub fn max_clients(&self) -> usize {
        self.mailbox.max_senders()
    }

    /// How the server waits for calls.
    pub fn set_wait_policy(&mut self, policy: WaitPolicy) {
        self.policy = policy;
        self.mailbox.set_wait_policy(policy);
        for s in self.clients.iter_mut().flatten() {
            if let Some(tx) = s.replies.as_mut() {
                tx.set_wait_policy(policy);
            }
        }
    }

    /// The wait policy.
    pub fn wait_policy(&self) -> WaitPolicy {
        self.policy
    }

    /// The policy the next wait for a call follows (see
    /// [`Mailbox::current_wait_policy`]).
    pub fn current_wait_policy(&self) -> WaitPolicy {
        self.mailbox.current_wait_policy()
    }

    /// A descriptor readable when a call may be waiting (see
    /// [`Mailbox::readiness_fd`]).
    ///
    /// # Errors
    /// As [`Mailbox::readiness_fd`].
    pub fn readiness_fd(&mut self) -> Result<std::os::fd::RawFd> {
        self.mailbox.readiness_fd()
    }

    /// True if a call may be waiting (one load per 64 clients; see
    /// [`Mailbox::pending`]).
    pub fn pending(&self) -> bool {
        self.mailbox.pending()
    }

    /// Close (idempotent): clients waiting for replies get [`Error::Disconnected`].
    pub fn close(&mut self) {
        for s in self.clients.iter_mut() {
            if let Some(mut st) = s.take() {
                if let Some(tx) = st.replies.as_mut() {
                    tx.close();
                }
            }
        }
        self.mailbox.close();
    }

    /// True once closed.
    pub fn is_closed(&self) -> bool {
        self.mailbox.is_closed()
    }
}

/// The client state of `call` in `clients` if the call is the one its lane is running.
fn running(clients: &mut [Option<ClientState>], call: CallId) -> Result<&mut ClientState> {
    match clients.get_mut(call.slot).and_then(Option::as_mut) {
        Some(s) if s.id == call.client && s.seq == call.seq && !s.done => Ok(s),
        Some(s) if s.id == call.client && s.seq == call.seq => {
            Err(Error::InvalidArgument(format!("call {} of client {:08x} was already answered", call.seq, call.client)))
        }
        _ => Err(Error::InvalidArgument(format!("call {} of client {:08x} is not running here", call.seq, call.client))),
    }
}

/// The reply sender of `state`'s client, opened at first use (waiting per `policy`);
/// `None` if the client is gone.
///
/// # Errors
/// A failure to open that does not say the client is gone (descriptors or memory
/// exhausted): reported, and tried again at the next reply.
fn reply_sender<'s>(server: &str, state: &'s mut ClientState, policy: WaitPolicy) -> Result<Option<&'s mut Sender>> {
    if state.gone {
        return Ok(None);
    }
    if state.replies.is_none() {
        match Sender::open(&reply_name(server, state.id)) {
            Ok(mut tx) if tx.lane().is_none() && tx.subscribers().is_none() => {
                tx.set_wait_policy(policy);
                state.replies = Some(tx);
            }
            // Gone, not a channel, or another process already answers it (a forged id).
            Ok(_)
            | Err(
                Error::NotFound { .. }
                | Error::Disconnected { .. }
                | Error::PeerDead { .. }
                | Error::RoleTaken { .. }
                | Error::WrongKind { .. }
                | Error::Corrupt { .. }
                | Error::Incompatible { .. }
                | Error::NotOurs { .. },
            ) => {
                state.gone = true;
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(state.replies.as_mut())
}

impl fmt::Debug for RpcServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcServer").field("name", &self.name).field("clients", &self.clients()).field("max_clients", &self.max_clients()).finish()
    }
}

/// A final reply written in place ([`RpcServer::loan_reply`]); [`RpcReplyLoan::commit`]
/// answers the call, dropping it sends nothing (the call stays unanswered).
pub struct RpcReplyLoan<'a> {
    loan: Loan<'a>,
    done: &'a mut bool,
}

impl RpcReplyLoan<'_> {
    /// The lent bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.loan.as_mut_slice()
    }

    /// Publish the whole loan as the call's reply.
    pub fn commit(self) {
        *self.done = true;
        self.loan.commit();
    }

    /// Publish its first `len` bytes as the call's reply.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `len` exceeds the loan.
    pub fn commit_len(self, len: usize) -> Result<()> {
        self.loan.commit_len(len)?;
        *self.done = true;
        Ok(())
    }
}
