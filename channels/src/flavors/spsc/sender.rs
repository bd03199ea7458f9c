//! The producing end of an SPSC channel.
//!
//! A send is one *operation* under the role lease (`shmplane_shm::lease`): this copy
//! enters (two plain stores when it already holds the lease), writes the whole message
//! — one record, or a first record and its continuations as the receiver drains them —
//! and leaves. A copy in another process that sends next takes the lease over, re-reads
//! the shared positions, and appends after the last record this one published.

use super::{create_segment, open_ringer, Doorbell};
use crate::endpoint::{check_ring_peer, ring_error, role_state, Place, Role, CONSUMER, PRODUCER};
use crate::frame::{self, chunk_header, chunk_header_len, ArrayMeta, Element, Outgoing, CHUNKED, TAG_BYTES, TAG_CONTINUATION};
use crate::wait::{wait_for, Wait};
use shmplane_shm::error::{Error, Result};
use shmplane_shm::header::SegmentKind;
use shmplane_shm::ring::{self, Claim, Producer, RingStore};
use shmplane_shm::segment::Segment;

use shmplane_shm::store::SegmentRing;
use shmplane_shm::bell::{Ringer, Side};
use shmplane_shm::liveness::CLOSED;
use shmplane_shm::wait::{WaitHistory, WaitPolicy};
use std::fmt;
use std::os::fd::{OwnedFd, RawFd};
use std::time::Duration;

/// The producing end of a channel. At most one `Sender` per channel across all
/// processes ([`Error::RoleTaken`] otherwise), but it may have copies (fork, a
/// descriptor passed to a child): they take turns, each send whole.
pub struct Sender {
    inner: Option<Inner>,
    policy: WaitPolicy,
}

struct Inner {
    producer: Producer<SegmentRing>,
    role: Role,
    /// What this handle's recent waits for room were like (adaptive spinning).
    history: WaitHistory,
    /// The doorbell, once this handle was waited on through the OS (`readiness_fd`),
    /// and the message size its readiness is for.
    doorbell: Option<(Doorbell, usize)>,
    /// A broadcast publisher's last look for dead subscribers from a non-blocking call.
    dead_check: Option<std::time::Instant>,
    /// An open detached loan ([`Sender::loan_message`]): its identity and fork
    /// generation. This copy is inside its operation until the loan is committed or
    /// aborted, and every other send is refused meanwhile (in this process: a fork
    /// child's inherited mark is void).
    lent: Option<(u64, u64)>,
    /// The second, read-write mapping loaned bytes are handed out in
    /// (`Segment::loan_mapping`: it holds no locks, so an array kept past the close does
    /// not keep the role).
    loans: Option<std::sync::Arc<shmplane_shm::region::Region>>,
}

impl Inner {
    /// Arm the doorbell: its descriptor becomes readable when the receiver frees
    /// room, or now if a message of the armed size fits or the receiver is gone.
    fn arm(&mut self) {
        if let Some((d, len)) = &mut self.doorbell {
            self.producer.set_wake_at(None);
            let store = self.producer.store();
            // A broadcast's subscribers that died do not ring: drop them at each
            // arming (a lock test each), so that a waiter that re-arms sees the room.
            if store.is_publisher() {
                store.prune_subscribers(true);
            }
            let peer = role_state(store, CONSUMER);
            let _ = d.arm(&store.control().space_ready.value, peer, || {
                ring::space_ready(store, *len) || role_state(store, CONSUMER) == CLOSED
            });
        }
    }

    /// After an operation of a handle waited on through the OS: re-arm if the ring has
    /// no room for the armed size any more.
    #[cold]
    #[inline(never)]
    fn rearm_if_full(&mut self) {
        if let Some((_, len)) = &self.doorbell {
            if !ring::space_ready(self.producer.store(), *len) {
                self.arm();
            }
        }
    }
}

impl Inner {
    /// A broadcast publisher about to report `Full`: drop the subscribers that closed
    /// (one load each), and at most every wait slice those that died (a lock test
    /// each), so that a publisher sending only without waiting is not held back by
    /// them for ever. True if it dropped any (look for room again).
    #[cold]
    #[inline(never)]
    fn drop_gone_subscribers(&mut self) -> bool {
        let store = self.producer.store();
        if !store.is_publisher() {
            return false;
        }
        let now = std::time::Instant::now();
        let dead = self.dead_check.is_none_or(|t| now.duration_since(t) >= shmplane_shm::wait::SLICE);
        if dead {
            self.dead_check = Some(now);
        }
        store.prune_subscribers(dead) > 0
    }

    /// [`Inner::drop_gone_subscribers`], then: is there room for anything now?
    #[cold]
    fn room_after_pruning(&mut self) -> bool {
        self.drop_gone_subscribers() && ring::space_ready(self.producer.store(), 0)
    }

    fn segment(&self) -> &Segment {
        self.producer.store().segment()
    }

    /// After publishing: [`Error::Corrupt`] if the segment file was truncated under
    /// this process meanwhile (what it wrote went to private zero pages, not to the
    /// receiver: the send failed). One load.
    #[inline(always)]
    fn sent(&self) -> Result<()> {
        if self.producer.store().tripped() {
            return Err(self.segment().truncated_error());
        }
        Ok(())
    }

    /// Enter an operation (see the module docs).
    #[inline(always)]
    fn enter(&mut self, wait: &mut Wait<'_>) -> Result<Op<'_>> {
        if let Some((_, generation)) = self.lent {
            if generation == shmplane_shm::process::fork_generation() {
                return Err(loan_open());
            }
            // Inherited by a fork child: the parent's loan (its copy is still inside its
            // operation: this one waits for it like any other copy).
            self.lent = None;
        }
        if !self.role.try_enter(self.producer.store().role::<PRODUCER>()) {
            self.enter_slow(wait)?;
        }
        Ok(Op { inner: self })
    }

    #[cold]
    #[inline(never)]
    fn enter_slow(&mut self, wait: &mut Wait<'_>) -> Result<()> {
        if !wait.blocks() && !ring::space_ready(self.producer.store(), 0) && !self.room_after_pruning() {
            // No room for anything: a `try_` call does not move the lease (see the
            // receiver's `enter_slow`).
            return Err(Error::Full);
        }
        self.role.acquire(self.producer.store().segment(), wait, Error::Full)?;
        // Another copy may have published since this one last did: the shared tail is
        // the truth (`Producer::resync` also steps over a record a copy that died
        // between publishing and storing the tail left behind).
        if let Err(e) = self.producer.resync() {
            self.role.exit(self.producer.store().role::<PRODUCER>());
            return Err(ring_error(e, self.producer.store().segment()));
        }
        Ok(())
    }
}

/// Smallest record worth starting at offset 0 of an empty ring (see
/// `Producer::rewind_if_empty`): below this the padding record costs more than the
/// cold memory it avoids.
const REWIND_MIN: usize = 64 * 1024;
// Records started at offset 0 must be the ones that get a spacer, so that the next one
// of their size can start there too.
const _: () = assert!(REWIND_MIN == shmplane_shm::ring::SPACED_MIN);

/// A send while a detached loan is open.
#[cold]
fn loan_open() -> Error {
    Error::InvalidArgument("a loan of this sender is open: commit or abort it first (a loan is the next message)".into())
}

/// A loan kept across calls by a binding (Python's `with tx.loan(...) as arr`): the
/// claim of one record, its message's prefix already written; the caller writes
/// [`Sender::loaned_bytes`] in place and then [`Sender::commit_loan`] or
/// [`Sender::abort_loan`]. Until then the sender stays inside its operation (other
/// copies wait) and refuses other sends.
#[derive(Debug)]
#[must_use = "an open loan blocks the sender until committed or aborted"]
pub struct DetachedLoan {
    claim: Claim,
    tag: u32,
    /// Where the lent bytes start in the record, and the record's length.
    lent_at: usize,
    total: usize,
    /// Process-wide unique identity (a loan of another sender must not pass for this
    /// one's), and the fork generation it was taken in.
    id: u64,
    generation: u64,
}

/// Identities of detached loans.
fn next_loan_id() -> u64 {
    static NEXT: std::sync::Mutex<u64> = std::sync::Mutex::new(0);
    let mut n = NEXT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    *n += 1;
    *n
}

/// An operation in progress: this copy holds the lease and is marked active until
/// the `Op` drops.
struct Op<'a> {
    inner: &'a mut Inner,
}

impl Drop for Op<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.inner.role.exit(self.inner.producer.store().role::<PRODUCER>());
        if self.inner.doorbell.is_some() {
            self.inner.rearm_if_full();
        }
    }
}

impl Op<'_> {
    fn producer(&mut self) -> &mut Producer<SegmentRing> {
        &mut self.inner.producer
    }

    /// Room for a record of `len` payload bytes, waiting per `wait`.
    #[inline(always)]
    fn claim(&mut self, len: usize, policy: WaitPolicy, wait: &mut Wait<'_>) -> Result<Claim> {
        match self.inner.producer.try_claim(len) {
            Ok(Some(claim)) => Ok(claim),
            Ok(None) if !wait.blocks() => {
                if self.inner.drop_gone_subscribers() {
                    if let Ok(Some(claim)) = self.inner.producer.try_claim(len) {
                        return Ok(claim);
                    }
                }
                Err(Error::Full)
            }
            Ok(None) => self.wait_for_room(len, policy, wait),
            Err(e) => Err(ring_error(e, self.inner.segment())),
        }
    }

    #[cold]
    #[inline(never)]
    fn wait_for_room(&mut self, len: usize, policy: WaitPolicy, wait: &mut Wait<'_>) -> Result<Claim> {
        // Asleep, wake once half the ring is free. A handle waited on through the OS wants every free (its doorbell), and so
        // does this wait then: a stale half-ring mark another copy left must not delay it.
        let mark = if self.inner.doorbell.is_none() { Some(len) } else { None };
        self.inner.producer.set_wake_at(mark);
        wait_for(
            &mut self.inner.producer,
            |p| (&p.store().control().space_ready.value, p.store().park()),
            (policy, &mut self.inner.history),
            wait,
            |p| {
                // A broadcast's subscribers that closed stop holding the publisher back.
                if p.store().is_publisher() {
                    p.store().prune_subscribers(false);
                }
                if p.wake_due() {
                    return p.try_claim(len).map_err(|e| ring_error(e, p.store().segment()));
                }
                // Leave the consumer's position line alone for a while (`wait::pace`).
                shmplane_shm::wait::pace();
                Ok(None)
            },
            |p| role_state(p.store(), CONSUMER) == CLOSED,
            |p| check_ring_peer(p.store(), CONSUMER),
        )
    }

    /// Claim, fill and publish one record.
    #[inline(always)]
    fn put(
        &mut self,
        len: usize,
        tag: u32,
        policy: WaitPolicy,
        wait: &mut Wait<'_>,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<()> {
        self.put_spaced(len, tag, policy, wait, false, fill)
    }

    /// [`Op::put`]; `spaced`: with a spacer after the record, so that the next record
    /// of its size can start at offset 0 again (`Producer::commit_spaced`; for a large
    /// message of one record, never for chunks, which tile the ring).
    #[inline(always)]
    fn put_spaced(
        &mut self,
        len: usize,
        tag: u32,
        policy: WaitPolicy,
        wait: &mut Wait<'_>,
        spaced: bool,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<()> {
        let claim = self.claim(len, policy, wait)?;
        fill(self.inner.producer.payload_mut(&claim));
        if spaced {
            self.inner.producer.commit_spaced(claim, len, tag);
        } else {
            self.inner.producer.commit(claim, len, tag);
        }
        self.inner.sent()
    }

    /// Send `msg`: one record, or a chunked run (see [`crate::frame`]).
    fn send(&mut self, msg: &Outgoing<'_>, policy: WaitPolicy, wait: &mut Wait<'_>) -> Result<()> {
        let capacity = self.inner.producer.store().capacity();
        let total = msg.total();
        // The receiver's hint (a message sent before it shows is chunked and received
        // by copy).
        // (Only worth a look when the answer could differ: a message up to both limits
        // goes whole either way.)
        let large = total + msg.envelope_len() > frame::max_whole(capacity) || total > frame::CHUNK_THRESHOLD;
        let whole = large && ring::whole_wanted(self.inner.producer.store());
        let plan = frame::plan(msg, capacity, self.inner.producer.position(), whole)
            .map_err(|_| Error::TooLarge { len: msg.prefix(), max: frame::max_record(capacity) })?;
        let Some((first, chunk)) = plan else {
            let env = msg.envelope_len();
            if total >= REWIND_MIN {
                // A large record: start it in warm memory if the ring is empty.
                self.inner.producer.rewind_if_empty(env + total).map_err(|e| ring_error(e, self.inner.segment()))?;
            }
            return self.put_spaced(env + total, msg.tag(), policy, wait, total >= REWIND_MIN, |dst| {
                msg.put_envelope(dst);
                msg.gather(0, &mut dst[env..]);
            });
        };
        if self.inner.producer.store().is_lossy() && total > capacity / 2 {
            // A lossy publisher never waits: a message streaming through in chunks
            // longer than half its ring would be overwritten before subscribers read
            // it. Refused, not lost.
            return Err(Error::TooLarge { len: total, max: capacity / 2 });
        }
        let h = chunk_header_len();
        if !wait.blocks() {
            // Non-blocking: only if every record fits now (a message larger than the
            // ring never does: only a blocking send, as the receiver drains, sends it).
            let records = 1 + (total - first).div_ceil(chunk);
            let need = total + records * (h + 16) + first.max(chunk) + 16;
            let mut free = self.inner.producer.free_bytes().map_err(|e| ring_error(e, self.inner.segment()))?;
            if (need as u64) > free && self.inner.drop_gone_subscribers() {
                free = self.inner.producer.free_bytes().map_err(|e| ring_error(e, self.inner.segment()))?;
            }
            if (need as u64) > free {
                return Err(Error::Full);
            }
        }
        let env = msg.envelope_len();
        self.put(h + env + first, msg.tag() | CHUNKED, policy, wait, |dst| {
            chunk_header(total, dst);
            msg.put_envelope(&mut dst[h..]);
            msg.gather(0, &mut dst[h + env..]);
        })?;
        // Begun: the rest follows as the receiver drains (a non-blocking first record
        // does not make the rest non-blocking); the deadline still applies.
        let sent = if wait.blocks() {
            self.send_rest(msg, first, chunk, policy, wait)
        } else {
            self.send_rest(msg, first, chunk, policy, &mut wait.rest())
        };
        if sent.is_err() {
            // Nothing more of this message will come: tell a receiver part-way through
            // it (it reports it truncated; the next message is intact).
            self.producer().cut();
        }
        sent
    }

    /// The continuation records of `msg` from logical byte `first` on.
    fn send_rest(
        &mut self,
        msg: &Outgoing<'_>,
        first: usize,
        chunk: usize,
        policy: WaitPolicy,
        wait: &mut Wait<'_>,
    ) -> Result<()> {
        let h = chunk_header_len();
        let total = msg.total();
        let mut off = first;
        while off < total {
            let n = chunk.min(total - off);
            self.put(h + n, TAG_CONTINUATION, policy, wait, |dst| {
                chunk_header(off, dst);
                msg.gather(off, &mut dst[h..]);
            })?;
            off += n;
        }
        Ok(())
    }
}

impl Sender {
    /// Create channel `name` with `capacity_bytes` of ring space and attach as its sender.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::InvalidArgument`], [`Error::AlreadyExists`],
    /// [`Error::NoSpace`], [`Error::Os`].
    ///
    /// # Examples
    /// ```
    /// let mut tx = shmplane::Sender::create("doc-example-create", 4096)?;
    /// let mut rx = shmplane::Receiver::open("doc-example-create")?;
    /// tx.send(b"hi")?;
    /// assert_eq!(rx.recv()?, b"hi");
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn create(name: &str, capacity_bytes: usize) -> Result<Sender> {
        Sender::attach(create_segment(name, capacity_bytes)?, Place::Channel, true, None)
    }

    /// Open existing channel `name` as its sender.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Corrupt`], [`Error::Incompatible`],
    /// [`Error::WrongKind`], [`Error::RoleTaken`], [`Error::Os`].
    ///
    /// # Examples
    /// ```
    /// let mut rx = shmplane::Receiver::create("doc-sender-open", 4096)?;
    /// let mut tx = shmplane::Sender::open("doc-sender-open")?;
    /// tx.send(b"x")?;
    /// assert_eq!(rx.recv()?, b"x");
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn open(name: &str) -> Result<Sender> {
        let segment = Segment::open_any(name, &[SegmentKind::Channel, SegmentKind::Mailbox])?;
        match segment.info().kind {
            SegmentKind::Mailbox => Sender::join(segment),
            _ => Sender::attach(segment, Place::Channel, true, None),
        }
    }

    /// Become a new producer of a mailbox: claim the first free lane (its producer
    /// role's lock) on `segment`, a description of our own.
    ///
    /// # Errors
    /// [`Error::AllTaken`] if every lane has a producer; [`Error::Os`], [`Error::Corrupt`].
    pub(crate) fn join(segment: Segment) -> Result<Sender> {
        let lanes = segment.info().param1 as usize;
        for lane in 0..lanes {
            match segment.claim_role(1 + 2 * lane) {
                Ok(()) => return Sender::attach(segment, Place::Lane(lane), true, None),
                Err(Error::RoleTaken { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::AllTaken { role: "sender", path: segment.path().to_owned(), count: lanes })
    }

    /// Adopt a descriptor of a channel segment whose open file description holds (or
    /// may take) the sender role: how a handle moves into a child process. The new
    /// handle is a *copy*: it and the handle it came from take turns (see the module
    /// docs), so the parent may keep its own, as with `multiprocessing.Pipe`.
    ///
    /// # Errors
    /// As [`Sender::open`].
    ///
    /// # Examples
    /// ```
    /// use std::os::fd::BorrowedFd;
    /// let (mut tx, mut rx) = shmplane::channel(4096)?;
    /// // What a child process does with a descriptor it inherited (same open file description).
    /// // SAFETY (doc example): the descriptor is open for the duration of the borrow.
    /// let fd = unsafe { BorrowedFd::borrow_raw(tx.fd().unwrap()) }.try_clone_to_owned().unwrap();
    /// let mut copy = shmplane::Sender::from_fd(fd, tx.name().map(str::to_owned))?;
    /// tx.send(b"from the original")?;
    /// copy.send(b"from the copy")?;          // appends, never overwrites
    /// assert_eq!(rx.recv()?, b"from the original");
    /// assert_eq!(rx.recv()?, b"from the copy");
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn from_fd(fd: OwnedFd, name: Option<String>) -> Result<Sender> {
        Sender::from_fds(fd, None, name)
    }

    /// [`Sender::from_fd`] with the write end of the peer's doorbell that came with the
    /// descriptor ([`Sender::doorbell_fd`] of the original; `None`: open it by name). Handing
    /// it over keeps the doorbell's writer count from dropping to zero while the
    /// endpoint is in flight, which an OS-level waiter would read as this end's close.
    ///
    /// # Errors
    /// As [`Sender::from_fd`], and [`Error::Corrupt`] if `doorbell` is not a FIFO of
    /// this user.
    pub fn from_fds(fd: OwnedFd, doorbell: Option<OwnedFd>, name: Option<String>) -> Result<Sender> {
        Sender::from_fds_lane(fd, doorbell, name, None)
    }

    /// [`Sender::from_fds`] for a channel (`lane: None`) or for the producer of lane
    /// `lane` of a mailbox ([`Sender::lane`] of the original).
    ///
    /// # Errors
    /// As [`Sender::from_fds`]; [`Error::WrongKind`] if `lane` does not match the
    /// segment's kind, [`Error::InvalidArgument`] for a lane the mailbox lacks.
    pub fn from_fds_lane(fd: OwnedFd, doorbell: Option<OwnedFd>, name: Option<String>, lane: Option<usize>) -> Result<Sender> {
        let ringer = doorbell.map(Ringer::from_fd).transpose()?;
        let kind = if lane.is_some() { SegmentKind::Mailbox } else { SegmentKind::Channel };
        let segment = Segment::from_fd(fd, name, kind)?;
        if let Some(l) = lane.filter(|&l| l as u64 >= segment.info().param1) {
            return Err(Error::InvalidArgument(format!("{} has no lane {l}", segment.path())));
        }
        Sender::attach(segment, Place::of_lane(lane), false, ringer)
    }

    /// For a broadcast's publisher: its subscribers now (see
    /// [`crate::Publisher::subscribers`]); `None` for other senders and once closed.
    pub fn subscribers(&self) -> Option<usize> {
        self.store().filter(|s| s.is_publisher()).map(SegmentRing::active_subscribers)
    }

    /// For a broadcast's publisher: the most subscribers at once; `None` otherwise.
    pub fn max_subscribers(&self) -> Option<usize> {
        self.store().filter(|s| s.is_publisher()).map(SegmentRing::max_subscribers)
    }

    /// True for a lossy broadcast's publisher.
    pub fn is_lossy(&self) -> bool {
        self.store().is_some_and(SegmentRing::is_lossy)
    }

    /// The mailbox lane this producer writes (`None`: a channel's sender, or closed).
    pub fn lane(&self) -> Option<usize> {
        self.inner.as_ref().and_then(|i| i.producer.store().lane_index())
    }

    /// The descriptor of this handle's write end of the peer's doorbell (to pass to a
    /// child along with [`Sender::fd`]), `None` once closed or when the channel has none.
    pub fn doorbell_fd(&self) -> Option<RawFd> {
        self.inner.as_ref().and_then(|i| i.producer.store().ringer_fd())
    }

    /// `fresh`: this segment was opened by name (a new open file description), so no
    /// other copy of this role lives: sleepers counted on its event count died.
    /// `lane`: the mailbox lane to produce into (`None`: a channel).
    pub(crate) fn attach(segment: Segment, place: Place, fresh: bool, ringer: Option<Ringer>) -> Result<Sender> {
        // The doorbell's write end first: a waiting receiver drops its placeholder once
        // it sees this role attached (see `Doorbell::arm`). A mailbox's lanes share
        // the mailbox's doorbell; a broadcast's publisher rings each subscriber's.
        let ringer = if place == Place::Publisher { None } else { ringer.or_else(|| open_ringer(&segment, Side::Data)) };
        let lane = match place {
            Place::Lane(l) => Some(l),
            _ => None,
        };
        let index = place.role(PRODUCER);
        segment.claim_role(index)?;
        let path = segment.path().to_owned();
        let mut store = place.store(segment);
        store.set_ringer(ringer);
        if place == Place::Publisher {
            if let Some(name) = super::doorbell_name(store.segment()) {
                store.set_subscriber_bells(name);
            }
        }
        if let Some(m) = store.mailbox() {
            shmplane_shm::mailbox::note_join(m);
            // Taking a lane over from a producer that died between committing a record
            // and marking the lane pending: mark it now, or nobody would look.
            if ring::data_ready(&store) {
                shmplane_shm::mailbox::mark_pending(m, lane.unwrap_or(0), || true);
                store.data_event().notify(store.park());
            }
        }
        if fresh {
            store.control().space_ready.value.reset_waiters();
        }
        // A copy by descriptor resyncs on its first operation (the lease makes it):
        // other copies may be moving the positions while this one attaches.
        let producer = if fresh {
            Producer::attach(store).map_err(|e| Error::Corrupt { path, what: e.to_string() })?
        } else {
            Producer::unsynced(store)
        };
        let mut role = Role::new(index);
        if fresh {
            role.register(producer.store().segment());
        }
        Ok(Sender { inner: Some(Inner { producer, role, history: WaitHistory::default(), doorbell: None, dead_check: None, lent: None, loans: None }), policy: WaitPolicy::default() })
    }

    #[inline(always)]
    fn inner(&mut self) -> Result<&mut Inner> {
        // `let else`, not `ok_or(Error::Closed)`: that builds and drops an Error (which
        // has drop glue) on every send: measured 10% of the per-message instructions.
        let Some(inner) = self.inner.as_mut() else { return Err(Error::Closed) };
        Ok(inner)
    }

    pub(crate) fn segment(&self) -> Option<&Segment> {
        self.inner.as_ref().map(Inner::segment)
    }


    /// Wake the receiver if it sleeps waiting for data (doorbell included), without
    /// publishing anything here: it was given something elsewhere (an RPC reply in a
    /// call slot).
    pub(crate) fn notify_consumer(&self) {
        if let Some(store) = self.store() {
            store.data_event().notify(store.park());
        }
    }

    /// The ring (`None` once closed).
    pub(crate) fn store(&self) -> Option<&SegmentRing> {
        self.inner.as_ref().map(|i| i.producer.store())
    }

    /// Send `msg` (any size), waiting per `wait` for room. The general form of every
    /// send: [`Outgoing::bytes`], [`Outgoing::array`] or [`Outgoing::pickle`].
    ///
    /// A message larger than one record (above 1 MiB, or above the ring's largest
    /// record) streams through the ring in chunks as the receiver drains them; the
    /// deadline applies to the whole message. A non-blocking `wait` sends it only if
    /// all of it fits now (never, for a message larger than the ring: [`Error::Full`]).
    /// If the send fails part-way (deadline, the hook's error, the receiver
    /// gone), the receiver gets [`Error::Truncated`] for it and the next message is
    /// intact.
    ///
    /// # Errors
    /// [`Error::Full`] (non-blocking, no room), [`Error::Timeout`], the hook's error,
    /// [`Error::Disconnected`] (the receiver closed), [`Error::PeerDead`] (the
    /// receiver died), [`Error::TooLarge`] (a message header larger than a record of
    /// this ring: thousands of pickle buffers in a tiny ring), [`Error::Corrupt`],
    /// [`Error::TooManyCopies`], [`Error::Closed`].
    ///
    /// # Examples
    /// ```
    /// use shmplane::{frame::Outgoing, Wait};
    /// let (mut tx, mut rx) = shmplane::channel(1 << 16)?;
    /// tx.send_message(&Outgoing::pickle(b"stream", &[b"buffer"]).unwrap(), Wait::forever())?;
    /// let shmplane::Frame::Pickle { stream, buffers } = rx.recv_frame(Wait::forever())? else { panic!() };
    /// assert_eq!((&stream[..], &buffers[0][..]), (&b"stream"[..], &b"buffer"[..]));
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn send_message(&mut self, msg: &Outgoing<'_>, mut wait: Wait<'_>) -> Result<()> {
        let policy = self.policy;
        let mut op = self.inner()?.enter(&mut wait)?;
        let len = msg.envelope_len() + msg.total();
        if len <= frame::CHUNK_THRESHOLD {
            // One record with room now (an RPC call or reply, mostly): no plan.
            let producer = op.producer();
            if let Some(claim) = producer.try_claim_fast(len) {
                let dst = producer.payload_mut(&claim);
                let env = msg.put_envelope(dst);
                msg.gather(0, &mut dst[env..]);
                producer.commit(claim, len, msg.tag());
                return op.inner.sent();
            }
        }
        op.send(msg, policy, &mut wait)
    }

    /// Send bytes (any length), waiting per `wait` (see [`Sender::send_message`]).
    ///
    /// # Errors
    /// As [`Sender::send_message`].
    #[inline]
    pub fn send_with(&mut self, data: &[u8], mut wait: Wait<'_>) -> Result<()> {
        let policy = self.policy;
        let mut op = self.inner()?.enter(&mut wait)?;
        if data.len() <= frame::CHUNK_THRESHOLD {
            // The common case, without building an `Outgoing`, the claim kept in
            // registers (moving it through memory cost store-forwarding stalls).
            let producer = op.producer();
            if let Some(claim) = producer.try_claim_fast(data.len()) {
                producer.payload_mut(&claim).copy_from_slice(data);
                producer.commit(claim, data.len(), TAG_BYTES);
                return op.inner.sent();
            }
        }
        // Full, too large for one record, or an error (which the general path reports).
        op.send(&Outgoing::bytes(data), policy, &mut wait)
    }

    /// Send bytes (any length), waiting as long as it takes for room.
    ///
    /// # Errors
    /// As [`Sender::send_message`].
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = shmplane::channel(4096)?;
    /// tx.send(b"hello")?;
    /// assert_eq!(rx.recv()?, b"hello");
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    #[inline]
    pub fn send(&mut self, data: &[u8]) -> Result<()> {
        self.send_with(data, Wait::forever())
    }

    /// Send bytes, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// [`Error::Timeout`]; otherwise as [`Sender::send_message`].
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let (mut tx, _rx) = shmplane::channel(4096)?;
    /// tx.send(&[0; 4000])?;
    /// let r = tx.send_timeout(&[0; 4000], Duration::from_millis(5));
    /// assert!(matches!(r, Err(shmplane::Error::Timeout)));
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn send_timeout(&mut self, data: &[u8], timeout: Duration) -> Result<()> {
        self.send_with(data, Wait::timeout(timeout))
    }

    /// Send bytes if there is room now (for all of it: see [`Sender::send_message`]).
    ///
    /// # Errors
    /// [`Error::Full`]; otherwise as [`Sender::send_message`].
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = shmplane::channel(4096)?;
    /// tx.try_send(&[1; 4000])?;
    /// assert!(matches!(tx.try_send(&[2; 100]), Err(shmplane::Error::Full)));
    /// rx.recv()?;
    /// tx.try_send(&[2; 100])?;
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn try_send(&mut self, data: &[u8]) -> Result<()> {
        self.send_with(data, Wait::no_wait())
    }

    /// Send an n-dimensional array: `data` laid out as `meta` says (a numpy `dtype.str`
    /// descriptor, a shape, C or Fortran order). A Python receiver gets it as an
    /// `ndarray` of that dtype, shape and order.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `data` is not the size `meta` implies; otherwise as
    /// [`Sender::send_message`].
    ///
    /// # Examples
    /// ```
    /// use shmplane::frame::{ArrayMeta, Order};
    /// let (mut tx, mut rx) = shmplane::channel(1 << 16)?;
    /// let meta = ArrayMeta::new("<i2", &[2, 2], Order::F).unwrap();
    /// tx.send_array(&meta, &[1, 0, 2, 0, 3, 0, 4, 0])?;
    /// let shmplane::Frame::Array(a) = rx.recv_frame(shmplane::Wait::forever())? else { panic!() };
    /// assert_eq!((a.meta.order, a.to_vec::<i16>().unwrap()), (Order::F, vec![1, 2, 3, 4]));
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn send_array(&mut self, meta: &ArrayMeta, data: &[u8]) -> Result<()> {
        let msg = Outgoing::array(meta, data).map_err(Error::InvalidArgument)?;
        self.send_message(&msg, Wait::forever())
    }

    /// Send a C-order array of `T` (`f64` is numpy's `float64`, and so on) of `shape`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `shape` does not match `data.len()`; otherwise as
    /// [`Sender::send_message`].
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = shmplane::channel(1 << 16)?;
    /// let xyz: Vec<f64> = (0..3000).map(f64::from).collect();
    /// tx.send_array_of(&[1000, 3], &xyz)?;          // np.ndarray (1000, 3) float64 in Python
    /// let shmplane::Frame::Array(a) = rx.recv_frame(shmplane::Wait::forever())? else { panic!() };
    /// assert_eq!((a.meta.shape.as_slice(), a.to_vec::<f64>().unwrap()), (&[1000, 3][..], xyz));
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn send_array_of<T: Element>(&mut self, shape: &[usize], data: &[T]) -> Result<()> {
        let meta = ArrayMeta::new(T::DESCR, shape, frame::Order::C).map_err(Error::InvalidArgument)?;
        self.send_array(&meta, bytemuck::cast_slice(data))
    }

    fn claim_loan(&mut self, len: usize, wait: Wait<'_>) -> Result<Loan<'_>> {
        self.claim_loan_enveloped(len, None, wait)
    }

    /// A loan of `len` bytes whose record starts with `envelope` (see
    /// [`Outgoing::with_envelope`]): what an RPC client and server lend for a request or
    /// a reply written in place.
    pub(crate) fn claim_loan_enveloped(&mut self, len: usize, envelope: Option<[u8; frame::ENVELOPE_LEN]>, mut wait: Wait<'_>) -> Result<Loan<'_>> {
        let policy = self.policy;
        let mut op = self.inner()?.enter(&mut wait)?;
        let env = if envelope.is_some() { frame::ENVELOPE_LEN } else { 0 };
        let max = op.producer().max_payload().saturating_sub(env);
        if len > max {
            return Err(Error::TooLarge { len, max });
        }
        let claim = op.claim(env + len, policy, &mut wait)?;
        let mut loan = Loan { op, claim: Some(claim), env: 0, tag: TAG_BYTES };
        if let Some(e) = envelope {
            loan.as_mut_slice()[..env].copy_from_slice(&e);
            loan.env = env;
            loan.tag = TAG_BYTES | frame::ENVELOPED;
        }
        Ok(loan)
    }

    /// Lend `len` bytes of ring space to write one message in place (zero-copy),
    /// waiting at most `timeout` (`None`: forever) for room. Publish with
    /// [`Loan::commit`]; dropping the loan aborts it. A loan is one record, so at most
    /// [`Sender::max_message_len`] bytes; the receiver gets it as bytes.
    ///
    /// # Errors
    /// [`Error::TooLarge`] (more than one record holds), [`Error::Timeout`]; otherwise
    /// as [`Sender::send_message`].
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = shmplane::channel(4096)?;
    /// let mut loan = tx.loan(4, None)?;
    /// loan.as_mut_slice().copy_from_slice(b"abcd");
    /// loan.commit();
    /// assert_eq!(&*rx.peek(None)?, b"abcd");
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn loan(&mut self, len: usize, timeout: Option<Duration>) -> Result<Loan<'_>> {
        self.claim_loan(len, Wait::optional(timeout))
    }

    /// Lend the space of message `msg`'s last part in place, for a caller that keeps the
    /// loan across calls (the Python binding's `tx.loan(shape, dtype)`): `msg` is laid out
    /// in one record (its prefix written now, its last part lent: see
    /// [`Outgoing::array_lent`]), waiting per `wait` for room. The sender then refuses
    /// other sends until [`Sender::commit_loan`] or [`Sender::abort_loan`].
    ///
    /// # Errors
    /// [`Error::TooLarge`] (the message does not fit one record of this ring: a loan is
    /// one record), [`Error::InvalidArgument`] (a loan is open already); otherwise as
    /// [`Sender::send_message`].
    ///
    /// # Examples
    /// ```
    /// use shmplane::frame::{ArrayMeta, Order, Outgoing};
    /// let (mut tx, mut rx) = shmplane::channel(1 << 16)?;
    /// let msg = Outgoing::array_lent(&ArrayMeta::new("<f8", &[3], Order::C).unwrap()).unwrap();
    /// let loan = tx.loan_message(&msg, shmplane::Wait::forever())?;
    /// tx.loaned_bytes(&loan).copy_from_slice(bytemuck::cast_slice(&[1.0f64, 2.0, 3.0]));
    /// tx.commit_loan(loan)?;
    /// let msg = rx.peek(None)?;
    /// assert_eq!(msg.part(0), bytemuck::cast_slice::<f64, u8>(&[1.0, 2.0, 3.0]));
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn loan_message(&mut self, msg: &Outgoing<'_>, mut wait: Wait<'_>) -> Result<DetachedLoan> {
        let policy = self.policy;
        let mut op = self.inner()?.enter(&mut wait)?;
        let total = msg.envelope_len() + msg.total();
        let max = op.producer().max_payload();
        if total > max || msg.envelope_len() > 0 {
            return Err(Error::TooLarge { len: total, max });
        }
        if total >= REWIND_MIN {
            op.inner.producer.rewind_if_empty(total).map_err(|e| ring_error(e, op.inner.segment()))?;
        }
        let claim = op.claim(total, policy, &mut wait)?;
        let lent_at = msg.prefix();
        msg.gather(0, &mut op.producer().payload_mut(&claim)[..lent_at]);
        let generation = shmplane_shm::process::fork_generation();
        let id = next_loan_id();
        op.inner.lent = Some((id, generation));
        // Stay inside the operation until the loan ends.
        std::mem::forget(op);
        Ok(DetachedLoan { claim, tag: msg.tag(), lent_at, total, id, generation })
    }

    /// True if `loan` is this sender's open loan, in this process, at its position.
    fn owns(inner: &Inner, loan: &DetachedLoan) -> bool {
        inner.lent == Some((loan.id, loan.generation))
            && loan.generation == shmplane_shm::process::fork_generation()
            && loan.claim.position() == inner.producer.position()
    }

    /// The lent bytes of `loan` (their previous contents are unspecified).
    ///
    /// # Panics
    /// If the sender is closed or `loan` is not its open loan.
    pub fn loaned_bytes(&mut self, loan: &DetachedLoan) -> &mut [u8] {
        let inner = self.inner.as_mut().expect("an open sender");
        assert!(Sender::owns(inner, loan), "not this sender's open loan");
        &mut inner.producer.payload_mut(&loan.claim)[loan.lent_at..loan.total]
    }

    /// Where the lent bytes of `loan` are in a second, read-write mapping of the
    /// segment that holds no locks (made once per sender): `(mapping, address, length)`.
    /// For a binding whose arrays over a loan may outlive the sender's close without
    /// keeping its role (`Segment::loan_mapping`).
    ///
    /// # Errors
    /// [`Error::Closed`]; [`Error::InvalidArgument`] if `loan` is not this sender's
    /// open loan; [`Error::Os`] if the mapping cannot be made.
    pub fn loaned_region(&mut self, loan: &DetachedLoan) -> Result<(std::sync::Arc<dyn std::any::Any + Send + Sync>, usize, usize)> {
        let inner = self.inner()?;
        if !Sender::owns(inner, loan) {
            return Err(Error::InvalidArgument("not this sender's open loan".into()));
        }
        if inner.loans.is_none() {
            inner.loans = Some(inner.segment().loan_mapping()?);
        }
        let base = inner.segment().region().as_ptr() as usize;
        let bytes = &mut inner.producer.payload_mut(&loan.claim)[loan.lent_at..loan.total];
        let (offset, len) = (bytes.as_mut_ptr() as usize - base, bytes.len());
        let mapping = std::sync::Arc::clone(inner.loans.as_ref().expect("made above"));
        let addr = mapping.as_ptr() as usize + offset;
        Ok((mapping, addr, len))
    }

    /// Publish an open loan.
    ///
    /// # Errors
    /// [`Error::Closed`]; [`Error::InvalidArgument`] if `loan` is not this sender's open
    /// loan in this process (a fork child's inherited loan: the parent's).
    pub fn commit_loan(&mut self, loan: DetachedLoan) -> Result<()> {
        let inner = self.inner()?;
        if !Sender::owns(inner, &loan) {
            return Err(Error::InvalidArgument("not this sender's open loan (taken before a fork, or ended)".into()));
        }
        inner.lent = None;
        if loan.total >= REWIND_MIN {
            inner.producer.commit_spaced(loan.claim, loan.total, loan.tag);
        } else {
            inner.producer.commit(loan.claim, loan.total, loan.tag);
        }
        let sent = inner.sent();
        drop(Op { inner });
        sent
    }

    /// Abandon an open loan: nothing of it is published (a padding record it may have
    /// placed to start it at the ring's beginning stays). Nothing happens for a loan
    /// that is not this sender's open loan in this process.
    pub fn abort_loan(&mut self, loan: DetachedLoan) {
        if let Some(inner) = self.inner.as_mut() {
            if Sender::owns(inner, &loan) {
                inner.lent = None;
                drop(Op { inner });
            }
        }
    }

    /// True while a detached loan of this sender is open in this process.
    pub fn loan_open(&self) -> bool {
        self.inner.as_ref().and_then(|i| i.lent).is_some_and(|(_, g)| g == shmplane_shm::process::fork_generation())
    }

    /// [`Sender::loan`] without waiting.
    ///
    /// # Errors
    /// [`Error::Full`]; otherwise as [`Sender::loan`].
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = shmplane::channel(4096)?;
    /// let mut loan = tx.try_loan(100)?;          // reserve the most we might write
    /// loan.as_mut_slice()[..3].copy_from_slice(b"abc");
    /// loan.commit_len(3)?;                        // publish what we wrote
    /// assert_eq!(rx.recv()?, b"abc");
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn try_loan(&mut self, len: usize) -> Result<Loan<'_>> {
        self.claim_loan(len, Wait::no_wait())
    }

    /// A descriptor that `select`, `poll`, `epoll` and asyncio's `add_reader` can wait
    /// on for room: readable once a message of `len` bytes (at most one record) would
    /// fit (as [`ring::space_ready`] judges: a message that must wrap around the ring
    /// end may still find no room), or the receiver closed or died. Call it again
    /// before each wait (or after a send that found no room) to keep it exact. The descriptor belongs to this
    /// handle and stays the same for its life. See [`crate::Receiver::readiness_fd`].
    ///
    /// # Errors
    /// As [`crate::Receiver::readiness_fd`]. A mailbox's sender waits on its lane's
    /// doorbell (`/dev/shm/shmplane.<name>@tx<lane>`, made here at first use); the
    /// consumer's close rings it, but its death does not show there (the sender keeps
    /// a write end): check with [`Sender::check_receiver`] while waiting, as asyncio,
    /// `shmplane.wait` and [`crate::WaitSet`] do every slice.
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = shmplane::channel(4096)?;
    /// while tx.try_send(&[0; 1000]).is_ok() {}          // fill the ring
    /// let fd = tx.readiness_fd(1000)?;
    /// let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    /// // SAFETY (doc example): `p` is one valid pollfd for the duration of each call.
    /// assert_eq!(unsafe { libc::poll(&mut p, 1, 0) }, 0); // no room
    /// rx.recv()?;
    /// rx.recv()?;
    /// assert_eq!(unsafe { libc::poll(&mut p, 1, 1000) }, 1);
    /// tx.try_send(&[0; 1000])?;
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn readiness_fd(&mut self, len: usize) -> Result<RawFd> {
        let Some(inner) = self.inner.as_mut() else { return Err(Error::Closed) };
        let len = len.min(inner.producer.max_payload());
        // A mailbox lane's sender waits on its lane's own doorbell (`@tx<lane>`).
        let side = inner.producer.store().lane_index().map_or(Side::Space, Side::LaneSpace);
        match &mut inner.doorbell {
            Some((_, armed)) => *armed = len,
            None => inner.doorbell = Some((Doorbell::open(inner.segment(), side)?, len)),
        }
        inner.arm();
        Ok(inner.doorbell.as_ref().map(|(d, _)| d.bell.fd()).expect("opened above"))
    }

    /// The full liveness check of the receiver (see `Receiver::check_sender`).
    ///
    /// # Errors
    /// [`Error::Disconnected`] (closed), [`Error::PeerDead`] (died), [`Error::Corrupt`]
    /// (poisoned ring), [`Error::Closed`].
    pub fn check_receiver(&self) -> Result<()> {
        let Some(inner) = &self.inner else { return Err(Error::Closed) };
        let store = inner.producer.store();
        check_ring_peer(store, CONSUMER)
    }

    /// Ready for [`crate::WaitSet`]: room for a small message, or the receiver closed;
    /// a closed handle counts as ready (its calls fail at once).
    pub(crate) fn room_or_gone(&self) -> bool {
        let Some(inner) = &self.inner else { return true };
        let store = inner.producer.store();
        ring::space_ready(store, 1) || role_state(store, CONSUMER) == CLOSED
    }

    /// Arm for [`crate::WaitSet`] (see `Receiver::arm_for_set`).
    pub(crate) fn arm_for_set(&mut self) -> Result<crate::waitset::Armed> {
        let fd = self.readiness_fd(1)?;
        let Some(inner) = &self.inner else { return Err(Error::Closed) };
        let no_writer = inner.doorbell.as_ref().is_some_and(|(d, _)| d.placeholder.is_none() && d.bell.writers_gone());
        if !no_writer {
            return Ok(crate::waitset::Armed::Fd(fd));
        }
        let store = inner.producer.store();
        Ok(match check_ring_peer(store, CONSUMER) {
            Err(_) => crate::waitset::Armed::Ready,
            Ok(()) => crate::waitset::Armed::Poll,
        })
    }

    /// Wait until a one-record message of `len` bytes fits, at most `timeout` (`None`:
    /// forever; zero: check once). `Ok(false)` on timeout. Nothing is reserved: a
    /// following [`Sender::try_send`] of at most `len` bytes from this copy then
    /// succeeds.
    ///
    /// # Errors
    /// As [`Sender::send_message`].
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let (mut tx, _rx) = shmplane::channel(4096)?;
    /// assert!(tx.poll_space(4000, Some(Duration::ZERO))?);
    /// tx.send(&[0; 4000])?;
    /// assert!(!tx.poll_space(4000, Some(Duration::from_millis(5)))?);
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn poll_space(&mut self, len: usize, timeout: Option<Duration>) -> Result<bool> {
        let wait = if timeout == Some(Duration::ZERO) { Wait::no_wait() } else { Wait::optional(timeout) };
        self.poll_space_with(len, wait)
    }

    /// [`Sender::poll_space`] with a [`Wait`].
    ///
    /// # Errors
    /// As [`Sender::send_message`], but not [`Error::Timeout`] or [`Error::Full`].
    pub fn poll_space_with(&mut self, len: usize, mut wait: Wait<'_>) -> Result<bool> {
        let policy = self.policy;
        let result = match self.inner()?.enter(&mut wait) {
            Ok(mut op) => {
                let len = len.min(op.producer().max_payload());
                // Room read from zero pages (a truncated file) is no room.
                op.claim(len, policy, &mut wait).map(drop).and_then(|()| op.inner.sent())
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => Ok(true),
            Err(Error::Timeout | Error::Full) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// How blocking operations wait (default: [`WaitPolicy::Adaptive`]).
    pub fn wait_policy(&self) -> WaitPolicy {
        self.policy
    }

    /// Set how blocking operations wait.
    ///
    /// # Examples
    /// ```
    /// let (mut tx, _rx) = shmplane::channel(8192)?;
    /// assert!(matches!(tx.wait_policy(), shmplane::WaitPolicy::Adaptive { .. }));
    /// tx.set_wait_policy(shmplane::WaitPolicy::Block);
    /// assert_eq!(tx.wait_policy(), shmplane::WaitPolicy::Block);
    /// assert_eq!((tx.capacity(), tx.max_message_len()?), (8192, 8176));
    /// assert!(tx.name().is_some() && tx.path().unwrap().starts_with("/dev/shm/shmplane."));
    /// tx.close();
    /// assert!(tx.is_closed() && tx.name().is_none() && tx.fd().is_none());
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn set_wait_policy(&mut self, policy: WaitPolicy) {
        self.policy = policy;
    }

    /// Largest message in bytes that travels as one record (`capacity - 16`): the
    /// largest [`Sender::loan`]. Larger messages are sent in chunks.
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub fn max_message_len(&self) -> Result<usize> {
        self.inner.as_ref().map(|i| i.producer.max_payload()).ok_or(Error::Closed)
    }

    /// Ring capacity in bytes, or 0 once closed.
    pub fn capacity(&self) -> usize {
        self.inner.as_ref().map_or(0, |i| i.producer.store().capacity())
    }

    /// The channel's name (`None` once closed).
    pub fn name(&self) -> Option<&str> {
        self.segment().and_then(Segment::name)
    }

    /// The segment file's path (`None` once closed).
    pub fn path(&self) -> Option<&str> {
        self.segment().map(Segment::path)
    }

    /// The descriptor holding this end's role (to pass to a child), `None` once closed.
    pub fn fd(&self) -> Option<RawFd> {
        self.segment().and_then(Segment::fd)
    }

    /// True once [`Sender::close`] ran.
    pub fn is_closed(&self) -> bool {
        self.inner.is_none()
    }

    /// Close this end: the receiver gets [`Error::Disconnected`] after draining. If this
    /// handle has copies in other processes (fork, descriptor passing), the role stays
    /// with them. Idempotent; also done on drop.
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = shmplane::channel(4096)?;
    /// tx.send(b"last")?;
    /// tx.close();
    /// assert_eq!(rx.recv()?, b"last");
    /// assert!(matches!(rx.recv(), Err(shmplane::Error::Disconnected { .. })));
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn close(&mut self) {
        if let Some(Inner { producer, mut role, lent, .. }) = self.inner.take() {
            if lent.is_some_and(|(_, g)| g == shmplane_shm::process::fork_generation()) {
                // An open loan: aborted (nothing of it was published).
                role.exit(producer.store().role::<PRODUCER>());
            }
            // Wake the peer if it sleeps: it then sees the close at once (a broadcast's
            // subscribers waiting through the OS: their doorbells).
            producer.store().ring_subscribers();
            let wake = producer.store().data_event_offset();
            role.close(producer.into_store().into_segment(), Some(wake));
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Some(i) => f
                .debug_struct("Sender")
                .field("path", &i.segment().path())
                .field("capacity", &i.producer.store().capacity())
                .field("policy", &self.policy)
                .finish(),
            None => f.write_str("Sender(closed)"),
        }
    }
}

/// Space in the ring lent by [`Sender::loan`]: write the message, then [`Loan::commit`].
/// Dropping it without committing publishes nothing. While it lives, this copy is
/// inside an operation: other copies of the sender wait.
pub struct Loan<'a> {
    op: Op<'a>,
    claim: Option<Claim>,
    /// Bytes of envelope at the start of the claim (not lent).
    env: usize,
    /// The record's tag at commit.
    tag: u32,
}

impl Loan<'_> {
    /// The lent bytes (their previous contents are unspecified).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let claim = self.claim.as_ref().expect("uncommitted");
        &mut self.op.inner.producer.payload_mut(claim)[self.env..]
    }

    /// Length of the loan in bytes.
    ///
    /// # Examples
    /// ```
    /// let (mut tx, _rx) = shmplane::channel(4096)?;
    /// let loan = tx.loan(16, None)?;
    /// assert_eq!((loan.len(), loan.is_empty()), (16, false));
    /// drop(loan); // aborted: nothing published
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.claim.as_ref().map_or(0, |c| c.len() - self.env)
    }

    /// True for a zero-length loan.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Publish the whole loan. (A segment file truncated under this process meanwhile
    /// is reported by the sender's next operation; [`Loan::commit_len`] reports it.)
    pub fn commit(mut self) {
        let claim = self.claim.take().expect("uncommitted");
        let len = claim.len();
        self.op.inner.producer.commit(claim, len, self.tag);
    }

    /// Publish only the first `len` bytes.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `len` exceeds the loan; [`Error::Corrupt`] if the
    /// segment file was truncated under this process (nothing reached the receiver).
    pub fn commit_len(mut self, len: usize) -> Result<()> {
        if len > self.len() {
            return Err(Error::InvalidArgument(format!("commit of {len} bytes exceeds the {}-byte loan", self.len())));
        }
        let claim = self.claim.take().expect("uncommitted");
        self.op.inner.producer.commit(claim, self.env + len, self.tag);
        self.op.inner.sent()
    }
}
