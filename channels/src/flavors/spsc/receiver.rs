//! The consuming end of an SPSC channel.
//!
//! A receive is one *operation* under the role lease (`shmplane_shm::lease`): this copy
//! enters, takes one whole message (its first record, then its continuations as they
//! arrive), and leaves; a copy in another process that receives next takes the lease
//! over and resumes at the shared position (or after what a copy that died holding
//! zero-copy views had delivered: `ring::Consumer::resync`). Receiving is two steps so that a caller
//! can allocate its own destinations from what the first record announces:
//! [`Receiver::begin`] returns an [`Incoming`] message with its validated
//! [`Head`](crate::frame::Head), and [`Incoming::read_into`] copies it out.

use super::{create_segment, open_ringer, Doorbell};
use shmplane_shm::bell::{Ringer, Side};
use crate::endpoint::{check_ring_peer, ring_error, role_state, Place, Role, CONSUMER, PRODUCER};
use crate::frame::{
    self, parse_head, Array, Frame, Head, HeadError, Kind, Numbers, OutBuf, Scatter, MAX_PREFIX, NUMBERS_HEADER, TAG_BYTES,
    TAG_CONTINUATION,
};
use crate::wait::{wait_for, Wait};
use shmplane_shm::error::{Error, Result};
use shmplane_shm::header::SegmentKind;
use shmplane_shm::liveness::CLOSED;
use shmplane_shm::process::fork_generation;
use shmplane_shm::region::Region;
use shmplane_shm::ring::{self, Consumer, Hold, Record, RingStore};
use std::sync::{Arc, Mutex};
use shmplane_shm::segment::Segment;
use shmplane_shm::layout::RingControl;
use shmplane_shm::store::{DataWaker, SegmentRing};
use shmplane_shm::wait::{WaitHistory, WaitPolicy, SLICE};
use std::fmt;
use std::os::fd::{OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Every this many empty non-blocking receives, look at the clock; at most every
/// [`SLICE`], check the sender's liveness (a syscall).
const EMPTY_POLLS_PER_CLOCK_READ: u32 = 16;

/// The consuming end of a channel. At most one `Receiver` per channel across all
/// processes, but it may have copies (fork, a descriptor passed to a child): they take
/// turns, each receive whole, and none gets a message another already got.
pub struct Receiver {
    inner: Option<Inner>,
    policy: WaitPolicy,
    /// Bookkeeping of non-blocking receives that found nothing.
    polls: EmptyPolls,
    /// After a close while records were held: where their releases go.
    closed_holding: Option<Arc<ReleaseQueue>>,
}

struct Inner {
    consumer: Consumer<SegmentRing>,
    role: Role,
    /// What this handle's recent waits for messages were like (adaptive spinning).
    history: WaitHistory,
    /// The doorbell, once this handle was waited on through the OS (`readiness_fd`).
    doorbell: Option<Doorbell>,
    /// A message begun by [`Receiver::stage`] (its operation still entered), for
    /// [`Receiver::take_staged`].
    staged: Option<(Record, Head)>,
    /// The fork generation in which this copy took its holds ([`Receiver::begin_view`]):
    /// a fork child's inherited holds are the parent's, and void in the child.
    hold_generation: u64,
    /// The ring's `whole` word was set (this handle asked for whole records).
    asked_whole: bool,
    /// Closed while holding, its last release removes the segment once no consumer
    /// holds it (an RPC client's own reply channel, whose server keeps the other end).
    unlink_when_released: bool,
    /// The read-only mapping views point into (`Segment::view_mapping`: it holds no
    /// locks, so views outliving the handle do not keep its role).
    views: Option<Arc<Region>>,
    /// Holds released from other threads while this handle was busy ([`Releaser`]).
    released: Arc<ReleaseQueue>,
}

/// Tokens of held messages released by a [`Releaser`] (another thread, while the
/// receiver was busy), applied by the receiver as soon as it looks: at its next
/// operation, at each poll of a wait, when it arms its descriptor. Also where a
/// receiver closed while records were held finishes closing (`zombie`), at the last
/// release.
struct ReleaseQueue {
    id: u64,
    tokens: Mutex<Vec<HoldToken>>,
    /// A receiver closed while its copy held records: it stays inside its operation
    /// (other copies of the receiver must not resume at the shared position, behind the
    /// holds: they would receive those messages again, and the sender overwrite the
    /// views) until the last hold is released, then closes.
    zombie: Mutex<Option<Inner>>,
    /// Wakes the receiver waiting for a message, so that it applies the queue now.
    waker: Option<DataWaker>,
    /// The receiver's doorbell (name and side), once it waits through the OS
    /// (`readiness_fd`): rung too, so that an epoll waiter wakes and applies the queue.
    bell: Mutex<Option<(String, Side)>>,
}

impl fmt::Debug for ReleaseQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReleaseQueue").field("queued", &self.lock().len()).finish_non_exhaustive()
    }
}

impl ReleaseQueue {
    fn new(waker: Option<DataWaker>) -> Arc<ReleaseQueue> {
        static NEXT: Mutex<u64> = Mutex::new(1);
        let id = {
            let mut n = NEXT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            *n += 1;
            *n
        };
        Arc::new(ReleaseQueue { id, tokens: Mutex::default(), zombie: Mutex::default(), waker, bell: Mutex::default() })
    }

    /// This queue's identity in the tokens of its receiver's holds (unique in the
    /// process: an address could be reused by a later receiver's queue).
    fn id(&self) -> u64 {
        self.id
    }

    /// Release the queued holds (those of this process) from `consumer`.
    #[cold]
    #[inline(never)]
    fn apply(&self, consumer: &mut Consumer<SegmentRing>, generation: u64) {
        if generation != fork_generation() {
            // A fork child's inherited holds are void; its tokens likewise (and a lock
            // another thread held at the fork would never be released here).
            return;
        }
        let tokens = std::mem::take(&mut *self.lock());
        for t in tokens {
            if t.generation == generation {
                consumer.release_hold(t.hold);
            }
        }
    }

    /// True if tokens are queued (an uncontended lock: only while holding).
    #[inline]
    fn pending(&self) -> bool {
        !self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<HoldToken>> {
        self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queue `token`; finish a deferred close if that was the last hold, else wake the
    /// receiver.
    fn push(&self, token: HoldToken) {
        if token.generation != fork_generation() {
            return;
        }
        self.lock().push(token);
        if !self.reap() {
            if let Some(w) = &self.waker {
                w.wake();
            }
            // A receiver waiting through the OS (epoll on `readiness_fd`): ring its
            // doorbell (a spurious byte is harmless: its next receive re-arms it). The
            // write end is opened and closed at once: kept, it would hide the sender's
            // close (end-of-file) from the receiver.
            let bell = self.bell.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
            if let Some((name, side)) = bell {
                if let Ok(r) = Ringer::open(&name, side) {
                    r.ring();
                }
            }
        }
    }

    /// Apply the queue to a receiver closed while holding; close it once nothing is
    /// held. True if there was one.
    fn reap(&self) -> bool {
        let mut zombie = match self.zombie.try_lock() {
            Ok(z) => z,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            // Another thread reaps now (or, in a fork child, held it at the fork).
            Err(std::sync::TryLockError::WouldBlock) => return true,
        };
        let Some(inner) = zombie.as_mut() else { return false };
        let generation = inner.hold_generation;
        self.apply(&mut inner.consumer, generation);
        let here = generation == fork_generation();
        if inner.consumer.holds() == 0 || !here {
            if let Some(inner) = zombie.take() {
                drop(zombie);
                close_zombie(inner, here);
            }
        }
        true
    }
}

impl Drop for ReleaseQueue {
    fn drop(&mut self) {
        // Holds never released (their views leaked): close the receiver anyway.
        if let Some(inner) = self.zombie.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            let here = inner.hold_generation == fork_generation();
            close_zombie(inner, here);
        }
    }
}

/// Releases held messages of a [`Receiver`] from any thread, without the receiver
/// (which may be busy in another thread, waiting for a message): see
/// [`Receiver::releaser`].
#[derive(Debug, Clone)]
pub struct Releaser {
    queue: Arc<ReleaseQueue>,
}

impl Releaser {
    /// Queue `token` for release and wake the receiver: a receive waiting in another
    /// thread gives the space back at its next poll; an idle receiver at its next
    /// operation; a receiver closed while holding finishes closing at its last hold.
    pub fn release(&self, token: HoldToken) {
        if token.receiver == self.queue.id() {
            self.queue.push(token);
        }
    }
}

/// Finish the close of a receiver that was closed while holding views, at its last
/// release. A mailbox lane's is the last of its segment's holds when the mailbox and the
/// lane's producer closed meanwhile (each saw this one still holding the description's
/// locks): the segment is removed here then, if nothing holds it any more (`gc`'s test).
fn close_zombie(inner: Inner, here: bool) {
    let name = inner.segment().name().map(str::to_owned);
    let lane = inner.consumer.store().lane_index().is_some();
    let own_reply_channel = inner.unlink_when_released;
    close_inner(inner, here);
    let Some(name) = name else { return };
    if lane {
        if let Ok(Some(file)) = shmplane_shm::gc::stale(&name) {
            file.unlink_if_same(&name);
        }
    } else if own_reply_channel && Segment::unlink_if_role_gone(&name, SegmentKind::Channel, CONSUMER).unwrap_or(false) {
        shmplane_shm::bell::remove(&name);
    }
}

/// A chunked message that cannot fit beside the records this receiver holds could never
/// end (its chunks' space is not given back while an earlier record is held): refused.
fn refuse_behind_holds(inner: &Inner, head: &Head) -> Result<()> {
    if head.is_chunked() && inner.consumer.holds() > 0 {
        let capacity = inner.consumer.store().capacity();
        let pinned = usize::try_from(inner.consumer.pinned()).unwrap_or(usize::MAX);
        let need = frame::chunked_footprint(head.total(), capacity);
        if need > capacity.saturating_sub(pinned) {
            return Err(Error::InvalidArgument(format!(
                "the next message ({} bytes) travels in chunks and needs {need} bytes of the {capacity}-byte ring at once, but \
                 zero-copy views this receiver holds keep {pinned} bytes of it; release them (drop the views) first; the message stays queued",
                head.total()
            )));
        }
    }
    Ok(())
}

/// Close `inner` for good (see [`Receiver::close`]); `entered`: it is inside an
/// operation (a staged message, or holds, in this process), which it leaves first.
fn close_inner(inner: Inner, entered: bool) {
    let Inner { consumer, mut role, staged, .. } = inner;
    if entered || staged.is_some() {
        // A staged message stays queued; held records are not given back here (nobody
        // receives after a close); a copy elsewhere that takes over starts after them
        // (the resume position) and gives their space back.
        role.exit(consumer.store().role::<CONSUMER>());
    }
    if consumer.store().lane_index().is_some() {
        // A mailbox lane: the mailbox's consumer handle holds the lane's role on the
        // same description and decides its state (see `Mailbox::close`).
        role.release(consumer.into_store().into_segment());
        return;
    }
    // Wake the peer if it sleeps: it then sees the close at once.
    let wake = consumer.store().control_offset() + std::mem::offset_of!(RingControl, space_ready);
    role.close(consumer.into_store().into_segment(), Some(wake));
}

impl Inner {
    fn segment(&self) -> &Segment {
        self.consumer.store().segment()
    }

    /// True if this copy holds records (zero-copy views) in this process: it then
    /// stays inside its operation between receives (other copies wait), so its cached
    /// position stays the truth. A fork child drops the holds it inherited.
    #[inline]
    fn holding(&mut self) -> bool {
        if self.consumer.holds() == 0 {
            return false;
        }
        if self.hold_generation == fork_generation() {
            return true;
        }
        self.consumer.forget_holds();
        false
    }

    /// Leave the operation, unless records are held (the operation then lasts until
    /// the last is released: [`Receiver::release`]).
    #[inline(always)]
    fn leave(&mut self) {
        if self.consumer.holds() > 0 && self.released.pending() {
            // Released by another thread during this operation.
            self.released.apply(&mut self.consumer, self.hold_generation);
        }
        if self.consumer.holds() == 0 {
            self.role.exit(self.consumer.store().role::<CONSUMER>());
        }
    }

    /// A record is queued at this handle's position: the shared position's, or while
    /// it holds records (the shared position then lags behind its own), its own.
    fn data_ready(&self) -> bool {
        if self.consumer.holds() > 0 && self.hold_generation == fork_generation() {
            return self.consumer.has_data();
        }
        ring::data_ready(self.consumer.store())
    }

    /// Arm the doorbell: its descriptor becomes readable at the next message, or now
    /// if one is queued or the sender closed. `true` if no sender handle holds the
    /// doorbell any more (closed or died: worth a liveness check now). `check`: a
    /// subscriber also tests the publisher's lock (a syscall: not after every receive).
    fn arm(&mut self, check: bool) -> bool {
        let Some(d) = &mut self.doorbell else { return false };
        let store = self.consumer.store();
        store.arm_subscriber_bell();
        let peer = role_state(store, PRODUCER);
        // A subscriber's doorbell keeps a write end of its own (the publisher opens
        // one only at its first ring), so the publisher's death does not show as
        // end-of-file: check it when armed for a wait instead (a lock test).
        let dead = check && store.subscriber_index().is_some() && matches!(check_ring_peer(store, PRODUCER), Err(Error::PeerDead { .. }));
        let holding = self.consumer.holds() > 0 && self.hold_generation == fork_generation();
        let consumer = &self.consumer;
        let gone = d.arm(&store.control().data_ready.value, peer, || {
            let queued = if holding { consumer.has_data() } else { ring::data_ready(store) };
            dead || queued || role_state(store, PRODUCER) == CLOSED
        });
        gone || dead
    }

    /// After an operation of a handle waited on through the OS: re-arm if it emptied
    /// the ring (so the descriptor does not stay readable for a message now taken).
    #[cold]
    #[inline(never)]
    fn rearm_if_empty(&mut self) {
        if !self.data_ready() {
            let _ = self.arm(false);
        }
    }

    #[inline(always)]
    fn enter(&mut self, wait: &mut Wait<'_>, polls: &mut EmptyPolls) -> Result<Op<'_>> {
        if self.consumer.holds() > 0 && self.holding() {
            if self.released.pending() {
                self.released.apply(&mut self.consumer, self.hold_generation);
            }
            // Still inside the operation of the first hold (see `holding`), even if
            // the releases just applied were the last.
            return Ok(Op { inner: self });
        }
        if !self.role.try_enter(self.consumer.store().role::<CONSUMER>()) {
            self.enter_slow(wait, polls)?;
        }
        Ok(Op { inner: self })
    }

    #[cold]
    #[inline(never)]
    fn enter_slow(&mut self, wait: &mut Wait<'_>, polls: &mut EmptyPolls) -> Result<()> {
        let store = self.consumer.store();
        // A `try_` call does not take the lease when there is nothing to take or
        // another copy is busy (other copies keep their hot path, and nobody pays a
        // heavy fence for a poll); it still tells an empty ring from a sender that
        // closed or died.
        if !wait.blocks() && !ring::data_ready(store) {
            // Waited on through the OS: re-arm, and if the doorbell lost its last
            // writer (the sender closed or died), check the sender now.
            let peer_gone = self.doorbell.is_some() && self.arm(true);
            let store = self.consumer.store();
            return Err(empty_verdict(store, polls, peer_gone));
        }
        match self.role.acquire(store.segment(), wait, Error::Empty) {
            Ok(()) => {}
            Err(Error::Empty) => return Err(empty_verdict(store, polls, false)),
            Err(e) => return Err(e),
        }
        // Another copy may have received since this one last did: resume at the shared
        // position, never at a cached one.
        if let Err(e) = self.consumer.resync() {
            self.role.exit(self.consumer.store().role::<CONSUMER>());
            return Err(ring_error(e, self.consumer.store().segment()));
        }
        Ok(())
    }
}

/// An operation in progress (see the module docs); leaves it on drop.
struct Op<'a> {
    inner: &'a mut Inner,
}

impl Drop for Op<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.inner.leave();
        if self.inner.doorbell.is_some() {
            self.inner.rearm_if_empty();
        }
    }
}

fn seg_err(e: ring::RingError, c: &Consumer<SegmentRing>) -> Error {
    ring_error(e, c.store().segment())
}

impl Op<'_> {
    fn consumer(&mut self) -> &mut Consumer<SegmentRing> {
        &mut self.inner.consumer
    }

    /// The record at the head, waiting per `wait`; the sender's last records are
    /// drained before its close or death is reported.
    #[inline(always)]
    fn next_record(&mut self, policy: WaitPolicy, wait: &mut Wait<'_>, polls: &mut EmptyPolls) -> Result<Record> {
        match self.inner.consumer.try_peek() {
            Ok(Some(r)) => Ok(r),
            Ok(None) if !wait.blocks() => self.empty(polls),
            Ok(None) => self.wait_for_record(policy, wait),
            Err(e) => Err(seg_err(e, &self.inner.consumer)),
        }
    }

    /// Slow half of a non-blocking `next_record`: the ring is empty. Tells an empty
    /// ring from a closed or dead sender.
    #[cold]
    #[inline(never)]
    fn empty(&mut self, polls: &mut EmptyPolls) -> Result<Record> {
        // Cheap disconnect check: one atomic load of the peer's state word; a full
        // liveness check (dead sender) at most every SLICE.
        let store = self.inner.consumer.store();
        let closed = role_state(store, PRODUCER) == CLOSED;
        let mut verdict = closed.then(|| Error::Disconnected { role: store.segment().role_name(store.role_index(PRODUCER)) });
        polls.count += 1;
        // Waited on through the OS and the doorbell lost its last writer: check now.
        if verdict.is_none() && self.inner.doorbell.is_some() && self.inner.arm(true) {
            verdict = check_ring_peer(self.inner.consumer.store(), PRODUCER).err();
        }
        let consumer = &mut self.inner.consumer;
        if verdict.is_none() && polls.count >= EMPTY_POLLS_PER_CLOCK_READ {
            polls.count = 0;
            let now = Instant::now();
            if polls.last_check.is_none_or(|t| now.duration_since(t) >= SLICE) {
                polls.last_check = Some(now);
                verdict = check_ring_peer(consumer.store(), PRODUCER).err();
            }
        }
        if let Some(e) = verdict {
            // The sender's last records happen-before its close or death.
            if let Some(r) = consumer.try_peek().map_err(|e| seg_err(e, consumer))? {
                return Ok(r);
            }
            return Err(e);
        }
        if consumer.store().tripped() {
            // Empty because the ring now reads zeros.
            return Err(consumer.store().segment().truncated_error());
        }
        Err(Error::Empty)
    }

    #[cold]
    #[inline(never)]
    fn wait_for_record(&mut self, policy: WaitPolicy, wait: &mut Wait<'_>) -> Result<Record> {
        let Inner { consumer, history, released, hold_generation, .. } = &mut *self.inner;
        let generation = *hold_generation;
        wait_for(
            consumer,
            |c| (c.store().data_event(), c.store().park()),
            (policy, history),
            wait,
            |c| {
                // Views released by other threads while this one waits (their
                // `Releaser` woke us): the sender may be waiting for their space.
                if c.holds() > 0 && released.pending() {
                    released.apply(c, generation);
                }
                c.try_peek().map_err(|e| seg_err(e, c))
            },
            |c| role_state(c.store(), PRODUCER) == CLOSED,
            |c| match check_ring_peer(c.store(), PRODUCER) {
                // The peer's last records happen-before its close: drain them first.
                Err(e @ (Error::Disconnected { .. } | Error::PeerDead { .. })) => {
                    match c.try_peek().map_err(|e| seg_err(e, c))? {
                        Some(_) => Ok(()),
                        None => Err(e),
                    }
                }
                other => other,
            },
        )
    }

    /// The next record of the message in progress, which has `received` of `total`
    /// bytes so far: [`Error::Truncated`] if the sender cut the stream here, or if no
    /// live copy of the sender is sending any more (the one that was died, or the role
    /// closed) and nothing more is queued. No deadline: a live sender that began a
    /// message finishes it or cuts it; the hook still ends the wait.
    fn wait_for_chunk(&mut self, policy: WaitPolicy, wait: &mut Wait<'_>, received: usize, total: usize, bounded: Option<Duration>) -> Result<Record> {
        let Inner { consumer, history, released, hold_generation, .. } = &mut *self.inner;
        let generation = *hold_generation;
        match consumer.try_peek() {
            Ok(Some(r)) => return Ok(r),
            Ok(None) => {}
            Err(e) => return Err(seg_err(e, consumer)),
        }
        // Bounded (an RPC server reading a request): each record must come within the
        // limit of the one before (an inactivity limit: a sender stopped part-way cannot
        // hold the reader; one that keeps sending, however large its message, can).
        let mut rest = wait.rest();
        if let Some(limit) = bounded {
            rest.deadline = Instant::now().checked_add(limit);
        }
        wait_for(
            consumer,
            |c| (c.store().data_event(), c.store().park()),
            (policy, history),
            &mut rest,
            |c| {
                // Views released by other threads meanwhile (see `wait_for_record`).
                if c.holds() > 0 && released.pending() {
                    released.apply(c, generation);
                }
                match c.try_peek() {
                    Ok(None) if c.at_cut() => Err(Error::Truncated { received, total }),
                    other => other.map_err(|e| seg_err(e, c)),
                }
            },
            |c| role_state(c.store(), PRODUCER) == CLOSED,
            |c| {
                // The sender holds its operation from the first record to the last:
                // seen not sending (read first), its records are all visible below.
                let sending = c.store().segment().role_active(c.store().role_index(PRODUCER));
                let peer = check_ring_peer(c.store(), PRODUCER);
                let queued = c.try_peek().map_err(|e| seg_err(e, c))?.is_some();
                match peer {
                    _ if queued => Ok(()),
                    Err(Error::Disconnected { .. } | Error::PeerDead { .. }) => Err(Error::Truncated { received, total }),
                    Err(e) => Err(e),
                    Ok(()) if sending.is_none() => Err(Error::Truncated { received, total }),
                    Ok(()) => Ok(()),
                }
            },
        )
    }

    /// The first record of the next message and its validated head. Skips the
    /// continuations of a message that began before this receiver (its predecessor
    /// died or gave up part-way). A malformed first record is consumed and reported.
    fn next_message(&mut self, policy: WaitPolicy, wait: &mut Wait<'_>, polls: &mut EmptyPolls) -> Result<(Record, Head)> {
        let mut skipped = 0u32;
        loop {
            if skipped >= SKIPS_PER_CHECK {
                // Still skipping: give the deadline and the hook a say (a broken
                // peer's continuations laid around the ring would never end).
                skipped = 0;
                wait.check_progress()?;
            }
            let record = self.next_record(policy, wait, polls)?;
            let (tag, len) = (record.tag(), record.len());
            if tag == TAG_BYTES {
                return Ok((record, Head::bytes(len)));
            }
            if tag == TAG_BYTES | frame::ENVELOPED && len >= frame::ENVELOPE_LEN {
                // An RPC call or reply of bytes in one record: only the envelope to read.
                let mut envelope = [0u8; frame::ENVELOPE_LEN];
                self.inner.consumer.read(&record, 0, &mut envelope);
                self.inner.consumer.check_read(&record).map_err(|e| seg_err(e, &self.inner.consumer))?;
                return Ok((record, Head::enveloped_bytes(len, envelope)));
            }
            skipped += 1;
            if tag == TAG_CONTINUATION {
                self.consumer().release(record);
                continue;
            }
            // Untrusted bytes: copied out before they are parsed (and, from a lossy
            // broadcast, checked intact: a lapped subscriber may have read a later
            // record's bytes).
            let mut prefix = vec![0; len.min(MAX_PREFIX)];
            self.inner.consumer.read(&record, 0, &mut prefix);
            self.inner.consumer.check_read(&record).map_err(|e| seg_err(e, &self.inner.consumer))?;
            let parsed = parse_head(tag, len, &prefix);
            match parsed {
                Ok(head) => return Ok((record, head)),
                Err(HeadError::Orphan) => self.consumer().release(record),
                Err(HeadError::Corrupt(what)) => {
                    self.consumer().release(record);
                    return Err(Error::Corrupt {
                        path: self.inner.segment().path().to_owned(),
                        what: format!("received message: {what}"),
                    });
                }
            }
        }
    }
}

/// Zero-copy views of a lossy broadcast are refused: its publisher may overwrite the
/// bytes while the view is held.
#[cold]
fn lossy_peek() -> Error {
    Error::InvalidArgument(
        "a lossy broadcast's messages cannot be viewed in place (the publisher may overwrite them meanwhile); receive them with recv".into(),
    )
}

/// Records a receive skips (continuations of a message it never began) between checks
/// of its deadline and hook; a non-blocking receive reports `Empty` after this many.
const SKIPS_PER_CHECK: u32 = 64;

/// Longest pre-spin of a zero-copy receive before it takes the general waiting path
/// (which spins on, per the policy, with liveness checks).
const PRE_SPIN: Duration = Duration::from_micros(20);

/// Spin (at most [`PRE_SPIN`], the policy's spin time or the deadline, whichever is
/// first; never for [`WaitPolicy::Block`] or a non-blocking `wait`) until a record is
/// published at the consumer's position. True if one is; `spun` gets the time spent.
#[cold]
#[inline(never)]
fn spin_for_record(consumer: &Consumer<SegmentRing>, policy: WaitPolicy, wait: &Wait<'_>, spun: &mut Duration) -> bool {
    let budget = match policy {
        _ if !wait.blocks() => return false,
        WaitPolicy::Block => return false,
        WaitPolicy::Spin => PRE_SPIN,
        WaitPolicy::Adaptive { spin } => spin.min(PRE_SPIN),
    };
    let start = Instant::now();
    let end = wait.deadline().map_or(start + budget, |d| d.min(start + budget));
    loop {
        for _ in 0..64 {
            if consumer.ready() {
                *spun = start.elapsed();
                return true;
            }
            std::hint::spin_loop();
        }
        let now = Instant::now();
        if now >= end {
            *spun = now - start;
            return false;
        }
    }
}

/// What a non-blocking receive that could not enter reports: [`Error::Empty`], or the
/// sender's close or death once nothing is queued (the cheap checks of `Op::empty`).
fn empty_verdict(store: &SegmentRing, polls: &mut EmptyPolls, check_now: bool) -> Error {
    let closed = role_state(store, PRODUCER) == CLOSED;
    let mut verdict = closed.then(|| Error::Disconnected { role: store.segment().role_name(store.role_index(PRODUCER)) });
    polls.count += 1;
    if verdict.is_none() && check_now {
        verdict = check_ring_peer(store, PRODUCER).err();
    }
    if verdict.is_none() && polls.count >= EMPTY_POLLS_PER_CLOCK_READ {
        polls.count = 0;
        let now = Instant::now();
        if polls.last_check.is_none_or(|t| now.duration_since(t) >= SLICE) {
            polls.last_check = Some(now);
            verdict = check_ring_peer(store, PRODUCER).err();
        }
    }
    match verdict {
        // The sender's last records happen-before its close or death: take them first.
        Some(e) if !ring::data_ready(store) => e,
        _ if store.tripped() => store.segment().truncated_error(),
        _ => Error::Empty,
    }
}

/// The non-blocking receive's bookkeeping for noticing a dead sender cheaply.
#[derive(Debug, Default)]
struct EmptyPolls {
    count: u32,
    last_check: Option<Instant>,
}

impl Receiver {
    /// Create channel `name` with `capacity_bytes` of ring space and attach as receiver.
    ///
    /// # Errors
    /// As [`crate::Sender::create`].
    ///
    /// # Examples
    /// ```
    /// let mut rx = shmplane::Receiver::create("doc-receiver-create", 1 << 16)?;
    /// let mut tx = shmplane::Sender::open("doc-receiver-create")?;
    /// tx.send(b"hello")?;
    /// assert_eq!(rx.recv()?, b"hello");
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn create(name: &str, capacity_bytes: usize) -> Result<Receiver> {
        Receiver::attach(create_segment(name, capacity_bytes)?, Place::Channel, true, None)
    }

    /// Open existing channel `name` as its receiver.
    ///
    /// # Errors
    /// As [`crate::Sender::open`].
    ///
    /// # Examples
    /// ```
    /// let mut tx = shmplane::Sender::create("doc-receiver-open", 4096)?;
    /// tx.send(b"queued before the receiver attached")?;
    /// let mut rx = shmplane::Receiver::open("doc-receiver-open")?;
    /// assert_eq!(rx.recv()?, b"queued before the receiver attached");
    /// assert!(matches!(shmplane::Receiver::open("doc-receiver-open"), Err(shmplane::Error::RoleTaken { .. })));
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn open(name: &str) -> Result<Receiver> {
        Receiver::attach(Segment::open(name, SegmentKind::Channel)?, Place::Channel, true, None)
    }

    /// Adopt a descriptor of a channel segment: a copy of the receiver that holds it
    /// (see [`crate::Sender::from_fd`]).
    ///
    /// # Errors
    /// As [`crate::Sender::open`].
    ///
    /// # Examples
    /// ```
    /// use std::os::fd::BorrowedFd;
    /// let (mut tx, mut rx) = shmplane::channel(4096)?;
    /// // SAFETY (doc example): the descriptor is open for the duration of the borrow.
    /// let fd = unsafe { BorrowedFd::borrow_raw(rx.fd().unwrap()) }.try_clone_to_owned().unwrap();
    /// let mut copy = shmplane::Receiver::from_fd(fd, rx.name().map(str::to_owned))?;
    /// tx.send(b"a")?;
    /// tx.send(b"b")?;
    /// assert_eq!(copy.recv()?, b"a");
    /// assert_eq!(rx.recv()?, b"b");        // never "a" again
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn from_fd(fd: OwnedFd, name: Option<String>) -> Result<Receiver> {
        Receiver::from_fds(fd, None, name)
    }

    /// [`Receiver::from_fd`] with the write end of the peer's doorbell that came with the
    /// descriptor ([`Receiver::doorbell_fd`] of the original; `None`: open it by name). Handing
    /// it over keeps the doorbell's writer count from dropping to zero while the
    /// endpoint is in flight, which an OS-level waiter would read as this end's close.
    ///
    /// # Errors
    /// As [`Receiver::from_fd`], and [`Error::Corrupt`] if `doorbell` is not a FIFO of
    /// this user.
    pub fn from_fds(fd: OwnedFd, doorbell: Option<OwnedFd>, name: Option<String>) -> Result<Receiver> {
        let ringer = doorbell.map(Ringer::from_fd).transpose()?;
        Receiver::attach(Segment::from_fd(fd, name, SegmentKind::Channel)?, Place::Channel, false, ringer)
    }

    /// The descriptor of this handle's write end of the peer's doorbell (to pass to a
    /// child along with [`Receiver::fd`]), `None` once closed or when the channel has none.
    pub fn doorbell_fd(&self) -> Option<RawFd> {
        self.inner.as_ref().and_then(|i| i.consumer.store().ringer_fd())
    }

    /// `fresh`: opened by name (see `Sender::attach`).
    /// `lane`: the mailbox lane to consume (`None`: a channel).
    pub(crate) fn attach(segment: Segment, place: Place, fresh: bool, ringer: Option<Ringer>) -> Result<Receiver> {
        // The doorbell's write end first: a waiting sender drops its placeholder once it
        // sees this role attached (see `Doorbell::arm`). A mailbox lane's is opened at
        // the first ring (below).
        let lane = match place {
            Place::Lane(l) => Some(l),
            _ => None,
        };
        let ringer = if lane.is_some() { None } else { ringer.or_else(|| open_ringer(&segment, Side::Space)) };
        let index = place.role(CONSUMER);
        segment.claim_role(index)?;
        let path = segment.path().to_owned();
        let mut store = place.store(segment);
        store.set_ringer(ringer);
        if let Some(l) = lane {
            // The lane's sender makes its doorbell when it first waits through the OS;
            // we ring it (opening it then) when it armed.
            if let Some(name) = super::doorbell_name(store.segment()) {
                store.set_lazy_ringer(name, Side::LaneSpace(l));
            }
        }
        if fresh && place == Place::Channel {
            store.control().data_ready.value.reset_waiters();
        }
        if fresh && matches!(place, Place::Subscriber(_)) {
            // A new subscriber: its cursor starts at the publisher's position (the
            // join protocol of `shmplane_shm::broadcast`).
            store.join_subscriber();
        }
        // A copy by descriptor resyncs on its first operation (the lease makes it):
        // other copies may be moving the positions while this one attaches.
        let consumer = if fresh {
            Consumer::attach(store).map_err(|e| Error::Corrupt { path, what: e.to_string() })?
        } else {
            Consumer::unsynced(store)
        };
        let mut role = Role::new(index);
        if fresh {
            role.register(consumer.store().segment());
        }
        let released = ReleaseQueue::new(Some(consumer.store().data_waker()));
        Ok(Receiver { inner: Some(Inner { consumer, role, history: WaitHistory::default(), doorbell: None, staged: None, hold_generation: 0, asked_whole: false, unlink_when_released: false, views: None, released }), policy: WaitPolicy::default(), polls: EmptyPolls::default(), closed_holding: None })
    }

    fn segment(&self) -> Option<&Segment> {
        self.inner.as_ref().map(Inner::segment)
    }

    /// For a broadcast's subscriber: its slot (`None` for other receivers and once
    /// closed).
    pub fn subscriber_index(&self) -> Option<usize> {
        self.store().and_then(SegmentRing::subscriber_index)
    }

    /// True for a lossy broadcast's subscriber.
    pub fn is_lossy(&self) -> bool {
        self.store().is_some_and(SegmentRing::is_lossy)
    }

    /// [`Receiver::readiness_fd`] was called (this handle may be waited on through
    /// the OS).
    pub(crate) fn waits_through_os(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.doorbell.is_some())
    }

    /// Make this handle's readiness descriptor readable now, if it has one (something
    /// it waits for arrived outside the ring: an RPC reply in a call slot).
    pub(crate) fn ring_own_doorbell(&self) {
        if let Some(d) = self.inner.as_ref().and_then(|i| i.doorbell.as_ref()) {
            drop(d.bell.ring_own());
        }
    }

    /// The ring (`None` once closed).
    pub(crate) fn store(&self) -> Option<&SegmentRing> {
        self.inner.as_ref().map(|i| i.consumer.store())
    }

    /// Begin the next message without waiting and keep it for [`Receiver::take_staged`]
    /// (the operation stays entered, so no other copy can take it meanwhile): `true`
    /// if one was begun; `false` if there is none now, another copy is busy, or the
    /// sender is gone and everything was received. For a consumer choosing among
    /// rings (a mailbox's lanes), whose choice must not fail afterwards.
    ///
    /// # Errors
    /// [`Error::Corrupt`], [`Error::TooManyCopies`], [`Error::Closed`].
    pub(crate) fn stage(&mut self) -> Result<bool> {
        let policy = self.policy;
        let Receiver { inner, polls, .. } = self;
        let Some(inner) = inner.as_mut() else { return Err(Error::Closed) };
        if inner.staged.is_some() {
            return Ok(true);
        }
        let mut wait = Wait::no_wait();
        let mut op = match inner.enter(&mut wait, polls) {
            Ok(op) => op,
            Err(Error::Empty | Error::Disconnected { .. } | Error::PeerDead { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        match op.next_message(policy, &mut wait, polls) {
            Ok(staged) => {
                // (as `take`: a chunked message behind holds that cannot fit is refused)
                refuse_behind_holds(op.inner, &staged.1)?;
                // Keep the operation entered: `take_staged` (or `unstage`) leaves it.
                std::mem::forget(op);
                inner.staged = Some(staged);
                Ok(true)
            }
            Err(Error::Empty | Error::Disconnected { .. } | Error::PeerDead { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Wait per `wait` for the next message and begin it, keeping it staged for
    /// [`Receiver::take_staged`] (as [`Receiver::stage`], which does not wait): a
    /// consumer that looks at a message's head before it decides to take it (an RPC
    /// client discarding late replies) pays for one begin, not two.
    ///
    /// # Errors
    /// As [`Receiver::begin`].
    pub(crate) fn stage_with(&mut self, wait: &mut Wait<'_>) -> Result<()> {
        let policy = self.policy;
        let Receiver { inner, polls, .. } = self;
        let Some(inner) = inner.as_mut() else { return Err(Error::Closed) };
        if inner.staged.is_some() {
            return Ok(());
        }
        let mut op = inner.enter(wait, polls)?;
        let staged = op.next_message(policy, wait, polls)?;
        // (as `take`: a chunked message behind holds that cannot fit is refused)
        refuse_behind_holds(op.inner, &staged.1)?;
        // Keep the operation entered: `take_staged` (or `unstage`) leaves it.
        std::mem::forget(op);
        inner.staged = Some(staged);
        Ok(())
    }

    /// The message [`Receiver::stage`] began, if one is staged.
    pub(crate) fn staged_head(&self) -> Option<&Head> {
        self.inner.as_ref().and_then(|i| i.staged.as_ref()).map(|(_, h)| h)
    }

    /// Leave the operation [`Receiver::stage`] entered without taking the message (it
    /// stays queued).
    pub(crate) fn unstage(&mut self) {
        if let Some(inner) = self.inner.as_mut() {
            if inner.staged.take().is_some() {
                inner.leave();
            }
        }
    }

    /// The message [`Receiver::stage`] began.
    ///
    /// # Panics
    /// If none is staged.
    pub(crate) fn take_staged(&mut self) -> Incoming<'_> {
        let policy = self.policy;
        let inner = self.inner.as_mut().expect("staged on an open receiver");
        let (record, head) = inner.staged.take().expect("a staged message");
        Incoming { op: Some(Op { inner }), first: Some(record), owned: None, head, policy, consume: true, bounded: None }
    }

    /// Receive the staged message's payload (see [`Receiver::recv_with`]).
    ///
    /// # Errors
    /// As [`Receiver::recv_with`] once begun.
    pub(crate) fn recv_staged(&mut self, mut wait: Wait<'_>) -> Result<Vec<u8>> {
        let incoming = self.take_staged();
        let mut buf = alloc(incoming.head().total())?;
        incoming.copy_out(Target::Whole(buf.as_mut_slice().into()), &mut wait.rest())?;
        Ok(buf)
    }

    /// Receive the staged message as a [`Frame`] (see [`Receiver::recv_frame`]).
    ///
    /// # Errors
    /// As [`Receiver::recv_frame`] once begun.
    pub(crate) fn recv_staged_frame(&mut self, mut wait: Wait<'_>) -> Result<Frame> {
        let incoming = self.take_staged();
        frame_of(incoming, &mut wait)
    }

    /// Begin receiving the next message: wait per `wait` for its first record, skip
    /// what is left of a message a predecessor abandoned, and validate what the first
    /// record announces. The message is then this receiver's (other copies wait) until
    /// the [`Incoming`] is read or dropped; dropping it unread consumes it.
    ///
    /// # Errors
    /// [`Error::Empty`] (non-blocking, nothing there), [`Error::Timeout`], the hook's
    /// error, [`Error::Disconnected`] (the sender closed and everything was received),
    /// [`Error::PeerDead`] (the sender died and everything was received),
    /// [`Error::Corrupt`] (a malformed record or message; it is consumed),
    /// [`Error::TooManyCopies`], [`Error::Closed`].
    ///
    /// # Examples
    /// ```
    /// use shmplane::{frame::Kind, Wait};
    /// let (mut tx, mut rx) = shmplane::channel(4096)?;
    /// tx.send(b"abc")?;
    /// let incoming = rx.begin(Wait::forever())?;
    /// assert_eq!((incoming.head().kind(), incoming.head().part_len(0)), (Kind::Bytes, 3));
    /// let mut buf = [0u8; 3];                     // allocated from the head
    /// incoming.read_into(vec![buf.as_mut_slice().into()], Wait::forever())?;
    /// assert_eq!(&buf, b"abc");
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn begin(&mut self, mut wait: Wait<'_>) -> Result<Incoming<'_>> {
        self.begin_inner(&mut wait, true)
    }

    /// [`Receiver::begin`], except that dropping the returned message unread leaves it
    /// queued, for a caller that may refuse it once it saw its head (Python's
    /// `recv_into`, whose destination must match).
    ///
    /// # Errors
    /// As [`Receiver::begin`].
    pub fn begin_kept(&mut self, mut wait: Wait<'_>) -> Result<Incoming<'_>> {
        self.begin_inner(&mut wait, false)
    }

    #[inline(always)]
    fn begin_inner(&mut self, wait: &mut Wait<'_>, consume: bool) -> Result<Incoming<'_>> {
        let policy = self.policy;
        let (op, record, head) = self.take(policy, wait)?;
        Ok(Incoming { op: Some(op), first: Some(record), owned: None, head, policy, consume, bounded: None })
    }

    /// Enter an operation and take the first record of the next message and its head,
    /// waiting per `policy` (the receiver's, or what is left of it after a pre-spin).
    #[inline(always)]
    fn take(&mut self, policy: WaitPolicy, wait: &mut Wait<'_>) -> Result<(Op<'_>, Record, Head)> {
        let Receiver { inner, polls, .. } = self;
        let Some(inner) = inner.as_mut() else { return Err(Error::Closed) };
        let mut op = inner.enter(wait, polls)?;
        let (record, head) = op.next_message(policy, wait, polls)?;
        if op.inner.consumer.store().tripped() {
            // The head came from private zero pages, not from the sender.
            return Err(op.inner.segment().truncated_error());
        }
        if let Err(e) = refuse_behind_holds(op.inner, &head) {
            drop(record); // not released: it stays at this receiver's position
            return Err(e);
        }
        Ok((op, record, head))
    }

    /// Receive the next message as a [`Frame`] (bytes, an array, or a pickle's stream
    /// and buffers), waiting per `wait` for it to begin.
    ///
    /// # Errors
    /// As [`Receiver::begin`], plus [`Error::Truncated`] (the sender abandoned the
    /// message part-way; the next one is intact) and [`Error::TooLarge`] (it cannot be
    /// allocated).
    ///
    /// # Examples
    /// ```
    /// use shmplane::{Frame, Wait};
    /// let (mut tx, mut rx) = shmplane::channel(4096)?;
    /// tx.send(b"raw")?;
    /// assert_eq!(rx.recv_frame(Wait::forever())?, Frame::Bytes(b"raw".to_vec()));
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn recv_frame(&mut self, mut wait: Wait<'_>) -> Result<Frame> {
        let incoming = self.begin_inner(&mut wait, true)?;
        frame_of(incoming, &mut wait)
    }

    /// Receive the next message's logical payload (for bytes, the bytes; for arrays and
    /// pickles their encoding: use [`Receiver::recv_frame`] to decode them), waiting
    /// per `wait`.
    ///
    /// # Errors
    /// As [`Receiver::recv_frame`].
    pub fn recv_with(&mut self, mut wait: Wait<'_>) -> Result<Vec<u8>> {
        let incoming = self.begin_inner(&mut wait, true)?;
        let mut buf = alloc(incoming.head().total())?;
        incoming.copy_out(Target::Whole(buf.as_mut_slice().into()), &mut wait.rest())?;
        Ok(buf)
    }

    /// Receive one message (any size), waiting per the wait policy while the ring is
    /// empty (see [`Receiver::recv_with`]).
    ///
    /// # Errors
    /// As [`Receiver::recv_frame`].
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = shmplane::channel(4096)?;
    /// tx.send(b"x")?;
    /// drop(tx);
    /// assert_eq!(rx.recv()?, b"x");
    /// assert!(matches!(rx.recv(), Err(shmplane::Error::Disconnected { .. })));
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn recv(&mut self) -> Result<Vec<u8>> {
        self.recv_with(Wait::forever())
    }

    /// Receive without waiting for a message to begin: one atomic load when empty.
    ///
    /// # Errors
    /// [`Error::Empty`]; otherwise as [`Receiver::recv`].
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = shmplane::channel(4096)?;
    /// assert!(matches!(rx.try_recv(), Err(shmplane::Error::Empty)));
    /// tx.send(b"x")?;
    /// assert_eq!(rx.try_recv()?, b"x");
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn try_recv(&mut self) -> Result<Vec<u8>> {
        self.recv_with(Wait::no_wait())
    }

    /// Receive, waiting at most `timeout` for a message to begin.
    ///
    /// # Errors
    /// [`Error::Timeout`]; otherwise as [`Receiver::recv`].
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let (_tx, mut rx) = shmplane::channel(4096)?;
    /// assert!(matches!(rx.recv_timeout(Duration::from_millis(5)), Err(shmplane::Error::Timeout)));
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        self.recv_with(Wait::timeout(timeout))
    }

    #[inline(always)]
    fn peek_inner(&mut self, wait: Wait<'_>) -> Result<Message<'_>> {
        if self.inner.as_ref().is_some_and(|i| i.consumer.store().is_lossy()) {
            return Err(lossy_peek());
        }
        // Hot path: this copy holds the lease and a one-record bytes message is at the
        // head. The record stays in registers until the Message is built in place.
        let mut spun = Duration::ZERO;
        let fast = match self.inner.as_mut() {
            Some(inner) if inner.consumer.holds() == 0 && inner.role.try_enter(inner.consumer.store().role::<CONSUMER>()) => {
                let mut record = inner.consumer.try_peek_fast();
                let policy = inner.history.policy(self.policy);
                if record.is_none() && spin_for_record(&inner.consumer, policy, &wait, &mut spun) {
                    // Retried here, so that a message that arrives while we spin takes
                    // the fast path too (the general path returns through memory).
                    record = inner.consumer.try_peek_fast();
                }
                match record {
                    Some(record) if record.tag() == TAG_BYTES => Some(record),
                    _ => {
                        inner.role.exit(inner.consumer.store().role::<CONSUMER>());
                        None
                    }
                }
            }
            _ => None,
        };
        match fast {
            Some(record) => {
                let Some(inner) = self.inner.as_mut() else { unreachable!("entered above") };
                // Built in place: a head made first and moved in cost stalls.
                Ok(Message { op: Op { inner }, head: Head::bytes(record.len()), record: Some(record) })
            }
            None => self.peek_slow(wait, spun),
        }
    }

    /// The general path of a zero-copy receive; `spun`: how long the pre-spin already
    /// busy-polled (taken off an adaptive policy's spin, so the policy's spin time
    /// holds overall).
    #[cold]
    #[inline(never)]
    fn peek_slow(&mut self, mut wait: Wait<'_>, spun: Duration) -> Result<Message<'_>> {
        let policy = match self.policy {
            WaitPolicy::Adaptive { spin } => WaitPolicy::Adaptive { spin: spin.saturating_sub(spun) },
            other => other,
        };
        let (op, record, head) = self.take(policy, &mut wait)?;
        if head.is_chunked() {
            // Left queued (not released) for a receive that copies it.
            drop(op);
            return Err(Error::InvalidArgument(format!(
                "the next message ({} bytes) spans several records and cannot be viewed in place; receive it with recv",
                head.total()
            )));
        }
        Ok(Message { op, record: Some(record), head })
    }

    /// Look at the next message in place (zero-copy), waiting at most `timeout`
    /// (`None`: forever). Its ring space is released when the [`Message`] drops. Only
    /// a message that travelled as one record can be viewed (every message up to 1 MiB
    /// that fits the ring).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a chunked message (it stays queued);
    /// [`Error::Timeout`]; otherwise as [`Receiver::begin`].
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = shmplane::channel(4096)?;
    /// tx.send(b"in place")?;
    /// {
    ///     let msg = rx.peek(None)?;        // a view into shared memory
    ///     assert_eq!(&*msg, b"in place");
    /// }                                    // released here
    /// assert!(matches!(rx.try_recv(), Err(shmplane::Error::Empty)));
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    #[inline]
    pub fn peek(&mut self, timeout: Option<Duration>) -> Result<Message<'_>> {
        self.peek_inner(Wait::optional(timeout))
    }

    /// Begin receiving the next message to view it in place past this call (zero-copy;
    /// what Python's `recv(copy=False)` returns): a message of one record is *held*
    /// ([`Viewed::Held`]): its bytes stay in the ring, untouched by the sender, until
    /// [`Receiver::release`] of its token, in any order, while this receiver goes on to
    /// the next messages. A message that spans several records cannot be viewed whole,
    /// and one record larger than [`frame::max_whole`] (a quarter of the ring) is not
    /// held (holding it could leave no room for the next): [`Viewed::Copy`], copy it
    /// out. The first call asks the sender to send every message up to a quarter of the
    /// ring as one record and larger ones in chunks (a message sent before the sender
    /// saw the request follows the usual rule: whole up to 1 MiB if it fits one
    /// record).
    ///
    /// Held records hold ring space: every record after the oldest one still held,
    /// whether held or not. A sender waits (per its own wait and deadline) for that
    /// space; a chunked message larger than the space left cannot complete until holds
    /// are released. While any is held this handle stays inside its operation, so other
    /// copies of the receiver (another process's) wait; [`Receiver::close`] then
    /// completes at the last release. The bytes lie in a second, read-only mapping of
    /// the segment ([`Held::mapping`]), which holds no locks.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] on a lossy broadcast (its publisher would overwrite
    /// the bytes); otherwise as [`Receiver::begin`].
    ///
    /// # Examples
    /// ```
    /// use shmplane::{Viewed, Wait};
    /// let (mut tx, mut rx) = shmplane::channel(1 << 16)?;
    /// tx.send(b"first")?;
    /// tx.send(b"second")?;
    /// let Viewed::Held(a) = rx.begin_view(Wait::forever())? else { unreachable!() };
    /// let Viewed::Held(b) = rx.begin_view(Wait::forever())? else { unreachable!() };
    /// assert_eq!((a.len(), b.len()), (5, 6));
    /// assert!(rx.release(b.token()));     // out of order: the space frees once `a` goes
    /// assert!(rx.release(a.token()));
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn begin_view(&mut self, mut wait: Wait<'_>) -> Result<Viewed<'_>> {
        let policy = self.policy;
        self.prepare_views()?;
        let (op, record, head) = self.take(policy, &mut wait)?;
        Ok(Receiver::view_taken(op, record, head, policy))
    }

    /// Before the first view: refuse a lossy subscriber, map the segment read-only for
    /// views, and ask the sender for whole records (see [`Receiver::begin_view`]).
    pub(crate) fn prepare_views(&mut self) -> Result<()> {
        if let Some(inner) = self.inner.as_mut() {
            if inner.consumer.store().is_lossy() {
                return Err(lossy_peek());
            }
            if inner.views.is_none() {
                inner.views = Some(inner.segment().view_mapping()?);
            }
            if !inner.asked_whole {
                inner.consumer.want_whole();
                inner.asked_whole = true;
            }
        }
        Ok(())
    }

    /// [`Receiver::begin_view`] of the message [`Receiver::stage`] began (a mailbox's
    /// lane); [`Receiver::prepare_views`] first.
    ///
    /// # Panics
    /// If none is staged.
    pub(crate) fn view_staged(&mut self) -> Viewed<'_> {
        let policy = self.policy;
        let inner = self.inner.as_mut().expect("staged on an open receiver");
        let (record, head) = inner.staged.take().expect("a staged message");
        Receiver::view_taken(Op { inner }, record, head, policy)
    }

    /// [`Receiver::view_staged`] if the staged message can be viewed in place (one
    /// record of at most a quarter of the ring, views prepared); else `None` and it
    /// stays staged (for [`Receiver::take_staged`]).
    pub(crate) fn view_staged_held(&mut self) -> Option<Held> {
        let inner = self.inner.as_mut()?;
        let (record, head) = inner.staged.as_ref()?;
        if head.is_chunked() || record.len() > frame::max_whole(inner.consumer.store().capacity()) || inner.views.is_none() {
            return None;
        }
        match self.view_staged() {
            Viewed::Held(h) => Some(h),
            Viewed::Copy(_) => unreachable!("checked viewable above"),
        }
    }

    /// The first record of a message taken in `op`, held in place if it can be viewed
    /// whole, else to be copied out.
    fn view_taken(op: Op<'_>, record: Record, head: Head, policy: WaitPolicy) -> Viewed<'_> {
        if head.is_chunked() || record.len() > frame::max_whole(op.inner.consumer.store().capacity()) || op.inner.views.is_none() {
            return Viewed::Copy(Incoming { op: Some(op), first: Some(record), owned: None, head, policy, consume: true, bounded: None });
        }
        let skip = head.skip();
        let inner = &mut *op.inner;
        let mapping = inner.views.clone().expect("mapped above");
        // The same byte in the read-only mapping of the segment.
        let offset = inner.consumer.payload_addr(&record) as usize - inner.segment().region().as_ptr() as usize;
        let addr = mapping.as_ptr() as usize + offset + skip;
        let len = record.len() - skip;
        let hold = inner.consumer.hold(record);
        inner.hold_generation = fork_generation();
        let receiver = inner.released.id();
        // Leaving the operation is deferred to the last release (`Inner::leave`).
        drop(op);
        Viewed::Held(Held { head, token: HoldToken { hold, generation: fork_generation(), receiver }, addr, len, mapping })
    }

    /// Apply releases that other threads queued ([`Releaser`]) now: for a consumer that
    /// serves this receiver without receiving from it (a mailbox, between looks at its
    /// lanes), so a sender waiting for the held space gets it.
    pub(crate) fn apply_released(&mut self) {
        if let Some(inner) = self.inner.as_mut() {
            if inner.consumer.holds() > 0 && inner.released.pending() && inner.holding() {
                inner.released.apply(&mut inner.consumer, inner.hold_generation);
                if inner.consumer.holds() == 0 && inner.staged.is_none() {
                    inner.leave();
                }
            }
        }
    }

    /// Closed while views hold records, remove the segment at the last release once no
    /// consumer holds it (what `RpcClient::close` does for its reply channel at once
    /// when nothing is held).
    pub(crate) fn set_unlink_when_released(&mut self) {
        if let Some(inner) = self.inner.as_mut() {
            inner.unlink_when_released = true;
        }
    }

    /// Bytes of the ring that records held by views keep from the sender.
    pub(crate) fn pinned_bytes(&self) -> usize {
        self.inner.as_ref().filter(|i| i.consumer.holds() > 0).map_or(0, |i| usize::try_from(i.consumer.pinned()).unwrap_or(usize::MAX))
    }

    /// Ring the doorbell of segment `name` on `side` when another thread queues a
    /// release (a mailbox's lane: the mailbox's doorbell, which its consumer may be
    /// waiting on through the OS).
    pub(crate) fn set_release_bell(&self, name: String, side: Side) {
        if let Some(inner) = &self.inner {
            *inner.released.bell.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((name, side));
        }
    }

    /// A message is queued at this receiver's own position (past what it holds), not
    /// only at the shared one: what a mailbox's pending bit should say.
    pub(crate) fn has_queued(&self) -> bool {
        self.inner.as_ref().is_some_and(Inner::data_ready)
    }

    /// Give back the ring space of a held message ([`Receiver::begin_view`]), in any
    /// order. False if the token is not one of this handle's holds (released already,
    /// another receiver's, or taken in another process before a fork): nothing happens.
    /// After a close while records were held, true for any token of this receiver (it
    /// is queued; the close completes at the last release).
    pub fn release(&mut self, token: HoldToken) -> bool {
        let Some(inner) = self.inner.as_mut() else {
            if let Some(queue) = self.closed_holding.as_ref().filter(|q| q.id() == token.receiver) {
                queue.push(token);
                return true;
            }
            return false;
        };
        if token.generation != fork_generation() || token.receiver != inner.released.id() || !inner.holding() {
            return false;
        }
        if inner.released.pending() {
            inner.released.apply(&mut inner.consumer, inner.hold_generation);
        }
        let released = inner.consumer.release_hold(token.hold);
        if inner.consumer.holds() == 0 && inner.staged.is_none() {
            inner.leave();
            if inner.doorbell.is_some() {
                inner.rearm_if_empty();
            }
        }
        released
    }

    /// Close, first giving back every message held by views (which must no longer be
    /// read: the sender may overwrite them), so that the close completes now: for a
    /// process that exits with views alive (its peers then see a clean close, not a
    /// death). A receiver that already closed while holding completes its close too.
    pub fn close_releasing_views(&mut self) {
        if let Some(inner) = self.inner.as_mut() {
            if inner.holding() {
                inner.consumer.release_all_holds();
            }
        }
        if let Some(queue) = self.closed_holding.take() {
            // `try_lock`: in a fork child, a thread that vanished at the fork may hold it.
            let zombie = match queue.zombie.try_lock() {
                Ok(mut z) => z.take(),
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner().take(),
                Err(std::sync::TryLockError::WouldBlock) => None,
            };
            if let Some(mut inner) = zombie {
                let here = inner.hold_generation == fork_generation();
                if here {
                    inner.consumer.release_all_holds();
                }
                close_zombie(inner, here);
            }
        }
        self.close();
    }

    /// A handle that releases this receiver's held messages from any thread, also
    /// while the receiver is busy in another (a view dropped by a worker thread while
    /// the receiving thread waits for the next message). `None` once closed.
    pub fn releaser(&self) -> Option<Releaser> {
        self.inner.as_ref().map(|i| Releaser { queue: Arc::clone(&i.released) })
    }

    /// Messages held and not released ([`Receiver::begin_view`]) in this process.
    pub fn holds(&self) -> usize {
        match &self.inner {
            Some(i) if i.hold_generation == fork_generation() => i.consumer.holds(),
            Some(_) => 0,
            None => self.closed_holding.as_ref().map_or(0, |q| {
                q.zombie.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref().map_or(0, |z| z.consumer.holds())
            }),
        }
    }

    /// [`Receiver::peek`] without waiting.
    ///
    /// # Errors
    /// [`Error::Empty`]; otherwise as [`Receiver::peek`].
    #[inline]
    pub fn try_peek(&mut self) -> Result<Message<'_>> {
        self.peek_inner(Wait::no_wait())
    }

    /// Wait until a message is ready, at most `timeout` (`None`: forever; zero: check
    /// once), like `multiprocessing.Connection.poll`. `Ok(false)` on timeout. The
    /// message stays queued.
    ///
    /// # Errors
    /// As [`Receiver::begin`] ([`Error::Disconnected`] once the sender closed and
    /// everything was received).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let (mut tx, mut rx) = shmplane::channel(4096)?;
    /// assert!(!rx.poll(Some(Duration::ZERO))?);
    /// tx.send(b"x")?;
    /// assert!(rx.poll(None)?);
    /// assert_eq!(rx.recv()?, b"x"); // poll does not consume
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn poll(&mut self, timeout: Option<Duration>) -> Result<bool> {
        let wait = if timeout == Some(Duration::ZERO) { Wait::no_wait() } else { Wait::optional(timeout) };
        self.poll_with(wait)
    }

    /// [`Receiver::poll`] with a [`Wait`].
    ///
    /// # Errors
    /// As [`Receiver::poll`].
    pub fn poll_with(&mut self, mut wait: Wait<'_>) -> Result<bool> {
        let lagged = match self.begin_inner(&mut wait, false) {
            Ok(_still_queued) => return Ok(true),
            Err(Error::Timeout | Error::Empty) => return Ok(false),
            Err(Error::Lagged { missed }) => missed,
            Err(e) => return Err(e),
        };
        // A lossy broadcast's lag is news for the next receive, which reports it.
        if let Some(inner) = self.inner.as_mut() {
            inner.consumer.defer(shmplane_shm::ring::RingError::Lagged { missed: lagged });
        }
        Ok(true)
    }

    /// A descriptor that `select`, `poll`, `epoll` and asyncio's `add_reader` can wait
    /// on: readable iff a non-blocking receive would not report [`Error::Empty`] (a
    /// message is queued, or the sender closed or died). Call it again before each
    /// wait, or receive until `Empty`, to keep it exact: both re-arm it. The
    /// descriptor belongs to this handle (do not close it) and stays the same for its
    /// life.
    ///
    /// It is the read end of the channel's doorbell, a FIFO beside the segment
    /// (`/dev/shm/shmplane.<name>@rx`, see `shmplane_shm::bell`); senders write one byte
    /// to it only while a handle waits this way, so the send path makes no syscall
    /// otherwise. The sender's close or death shows as end-of-file (`POLLHUP`).
    ///
    /// # Errors
    /// [`Error::Closed`]; [`Error::InvalidArgument`] (the channel's name is gone);
    /// [`Error::NotFound`], [`Error::Corrupt`] (the doorbell is missing or not a
    /// private FIFO), [`Error::Os`].
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = shmplane::channel(4096)?;
    /// let fd = rx.readiness_fd()?;
    /// let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    /// // SAFETY (doc example): `p` is one valid pollfd for the duration of each call.
    /// assert_eq!(unsafe { libc::poll(&mut p, 1, 0) }, 0); // nothing yet
    /// tx.send(b"x")?;
    /// assert_eq!(unsafe { libc::poll(&mut p, 1, 1000) }, 1);
    /// assert_eq!(rx.try_recv()?, b"x");
    /// assert_eq!(unsafe { libc::poll(&mut p, 1, 0) }, 0); // re-armed by the receive
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn readiness_fd(&mut self) -> Result<RawFd> {
        let Some(inner) = self.inner.as_mut() else { return Err(Error::Closed) };
        if inner.consumer.holds() > 0 && inner.released.pending() {
            // Views released by other threads: their space goes back before this handle
            // waits through the OS (a sender may be waiting for it).
            inner.released.apply(&mut inner.consumer, inner.hold_generation);
        }
        if inner.doorbell.is_none() {
            // A broadcast's subscriber waits on a doorbell of its own (`@sub<i>`).
            let side = inner.consumer.store().subscriber_index().map_or(Side::Data, Side::Subscriber);
            inner.doorbell = Some(Doorbell::open(inner.segment(), side)?);
            if let Some(name) = super::doorbell_name(inner.segment()) {
                *inner.released.bell.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((name, side));
            }
        }
        inner.arm(true);
        Ok(inner.doorbell.as_ref().map(|d| d.bell.fd()).expect("opened above"))
    }

    /// The full liveness check of the sender (its role's OFD lock and pid, a few
    /// syscalls), for waits that happen outside this crate (an event loop): `Ok` while
    /// a message is queued or the sender lives.
    ///
    /// # Errors
    /// [`Error::Disconnected`] (closed), [`Error::PeerDead`] (died), both only once
    /// nothing is queued; [`Error::Corrupt`] (poisoned ring); [`Error::Closed`].
    pub fn check_sender(&self) -> Result<()> {
        let Some(inner) = &self.inner else { return Err(Error::Closed) };
        if inner.data_ready() {
            return Ok(());
        }
        check_ring_peer(inner.consumer.store(), PRODUCER)?;
        Ok(())
    }

    /// Ready for [`crate::WaitSet`]: a record is queued or the sender closed (one or
    /// two loads); a closed handle counts as ready (its calls fail at once).
    pub(crate) fn ready_or_gone(&self) -> bool {
        let Some(inner) = &self.inner else { return true };
        inner.data_ready() || role_state(inner.consumer.store(), PRODUCER) == CLOSED
    }

    /// Arm for [`crate::WaitSet`]: the descriptor, or ready if the doorbell lost its
    /// last writer and the sender is closed or dead.
    pub(crate) fn arm_for_set(&mut self) -> Result<crate::waitset::Armed> {
        let fd = self.readiness_fd()?;
        let Some(inner) = &self.inner else { return Err(Error::Closed) };
        let no_writer = inner.doorbell.as_ref().is_some_and(|d| d.placeholder.is_none() && d.bell.writers_gone());
        if !no_writer {
            return Ok(crate::waitset::Armed::Fd(fd));
        }
        let store = inner.consumer.store();
        Ok(match check_ring_peer(store, PRODUCER) {
            Err(_) => crate::waitset::Armed::Ready,
            Ok(()) => crate::waitset::Armed::Poll,
        })
    }

    /// How blocking operations wait (default: [`WaitPolicy::Adaptive`]).
    pub fn wait_policy(&self) -> WaitPolicy {
        self.policy
    }

    /// The policy the next blocking receive follows: [`Receiver::wait_policy`] with an
    /// adaptive spin as learned (shorter after long waits; none while the sender that
    /// woke this receiver last runs on its CPU: see `shmplane_shm::wait::WaitHistory`).
    pub fn current_wait_policy(&self) -> WaitPolicy {
        self.inner.as_ref().map_or(self.policy, |inner| inner.history.policy(self.policy))
    }

    /// Set how blocking operations wait.
    ///
    /// # Examples
    /// ```
    /// let (_tx, mut rx) = shmplane::channel(8192)?;
    /// rx.set_wait_policy(shmplane::WaitPolicy::Block);
    /// assert_eq!(rx.wait_policy(), shmplane::WaitPolicy::Block);
    /// assert_eq!(rx.capacity(), 8192);
    /// assert!(rx.name().is_some() && rx.path().is_some() && rx.fd().is_some());
    /// rx.close();
    /// assert!(rx.is_closed() && rx.name().is_none());
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn set_wait_policy(&mut self, policy: WaitPolicy) {
        self.policy = policy;
    }

    /// Ring capacity in bytes, or 0 once closed.
    pub fn capacity(&self) -> usize {
        self.inner.as_ref().map_or(0, |i| i.consumer.store().capacity())
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

    /// True once [`Receiver::close`] ran.
    pub fn is_closed(&self) -> bool {
        self.inner.is_none()
    }

    /// Close this end: the sender gets [`Error::Disconnected`] when it next waits.
    /// Idempotent; also done on drop.
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = shmplane::channel(4096)?;
    /// rx.close();
    /// assert!(matches!(rx.recv(), Err(shmplane::Error::Closed)));
    /// // The sender learns it when it next waits for room.
    /// while tx.try_send(&[0; 1000]).is_ok() {}
    /// assert!(matches!(tx.send(&[0; 1000]), Err(shmplane::Error::Disconnected { .. })));
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn close(&mut self) {
        let Some(mut inner) = self.inner.take() else { return };
        if inner.holding() {
            let queue = Arc::clone(&inner.released);
            queue.apply(&mut inner.consumer, inner.hold_generation);
            if inner.consumer.holds() > 0 {
                // Records are held (views alive): finish closing at the last release.
                // The zombie must not own its queue (a cycle: never dropped).
                inner.released = ReleaseQueue::new(None);
                *queue.zombie.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(inner);
                // The last release may have been queued between the apply above and now
                // (it found no zombie to finish): look again.
                queue.reap();
                self.closed_holding = Some(queue);
                return;
            }
            close_inner(inner, true);
            return;
        }
        close_inner(inner, false);
    }
}

/// Copy out a begun message as a [`Frame`].
pub(crate) fn frame_of(incoming: Incoming<'_>, wait: &mut Wait<'_>) -> Result<Frame> {
    let head = incoming.head().clone();
    let mut bufs = (0..head.part_count()).map(|i| alloc(head.part_len(i))).collect::<Result<Vec<_>>>()?;
    incoming.copy_out(Target::Parts(bufs.iter_mut().map(|b| b.as_mut_slice().into()).collect()), &mut wait.rest())?;
    Ok(match head.kind() {
        Kind::Bytes => Frame::Bytes(bufs.pop().expect("one part")),
        Kind::Array => Frame::Array(Array {
            meta: head.array().expect("array head").clone(),
            data: bufs.pop().expect("one part"),
        }),
        Kind::Pickle => {
            let stream = bufs.remove(0);
            Frame::Pickle { stream, buffers: bufs }
        }
        Kind::Numbers => {
            let mut data = bufs.pop().expect("one part");
            let (container, ty, _) = Numbers::parse(&data)
                .map_err(|what| Error::Corrupt { path: "(a received numbers message)".into(), what })?;
            data.drain(..NUMBERS_HEADER); // in place: no second copy of a large list
            Frame::Numbers(Numbers { container, ty, data })
        }
    })
}

/// The whole logical payload of `incoming` (what `recv_bytes` returns).
pub(crate) fn payload_of(incoming: Incoming<'_>, wait: &mut Wait<'_>) -> Result<Vec<u8>> {
    let mut buf = alloc(incoming.head().total())?;
    incoming.copy_out(Target::Whole(buf.as_mut_slice().into()), &mut wait.rest())?;
    Ok(buf)
}

/// A buffer of `len` bytes, or [`Error::TooLarge`] if it cannot be allocated.
fn alloc(len: usize) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| Error::TooLarge { len, max: isize::MAX as usize })?;
    v.resize(len, 0);
    Ok(v)
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Some(i) => f
                .debug_struct("Receiver")
                .field("path", &i.segment().path())
                .field("capacity", &i.consumer.store().capacity())
                .field("policy", &self.policy)
                .finish(),
            None => f.write_str("Receiver(closed)"),
        }
    }
}

enum Target<'d, 's> {
    Parts(Vec<OutBuf<'d>>),
    Whole(OutBuf<'d>),
    /// The logical payload handed to a sink a record at a time, in place:
    /// [`Incoming::read_streamed`].
    Stream(&'s mut dyn FnMut(&[u8]) -> Result<()>),
}

/// Where [`Incoming::copy_out`] puts the bytes of each record.
enum Out<'d, 's> {
    Scatter(Scatter<'d>),
    Stream(&'s mut dyn FnMut(&[u8]) -> Result<()>),
}

impl Out<'_, '_> {
    /// Take logical bytes `offset..offset + n`, which lie at byte `at` of `record`:
    /// copy them into the destinations, or hand them to the sink where they lie. The
    /// caller checks the record afterwards (`release_read`) and reports that error
    /// first: bytes a lossy publisher overwrote meanwhile, or that a truncated segment
    /// turned to zeros, are discarded with whatever the sink made of them.
    fn take(&mut self, consumer: &Consumer<SegmentRing>, record: &Record, at: usize, offset: usize, n: usize) -> Result<()> {
        match self {
            Out::Scatter(scatter) => {
                scatter.scatter_with(offset, n, |from, dst| consumer.read_to(record, at + from, dst));
                Ok(())
            }
            Out::Stream(sink) => sink(&consumer.payload(record)[at..at + n]),
        }
    }
}

/// A message whose first record has arrived (see [`Receiver::begin`]): read it with
/// [`Incoming::read_into`]. Until then other copies of the receiver wait; dropping it
/// unread consumes it.
pub struct Incoming<'a> {
    /// The ring's operation; `None` for a message copied out of an RPC call slot
    /// (`owned`).
    op: Option<Op<'a>>,
    first: Option<Record>,
    /// The record of a message that came whole through an RPC call slot
    /// ([`Incoming::owned`]): envelope and payload, copied out of the slot.
    owned: Option<&'a [u8]>,
    head: Head,
    policy: WaitPolicy,
    /// Drop consumes the message (else it stays queued: `poll`).
    consume: bool,
    /// Each record after the first must come within this long of the one before
    /// ([`Incoming::bounded`]).
    bounded: Option<Duration>,
}

impl Incoming<'_> {
    /// A message whose one record (`tag`; `record`: its bytes, envelope included) came
    /// whole out of an RPC call slot (`shmplane_shm::callslot`): validated as a ring's
    /// record would be, then read from `record`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] (not a valid first record of a whole message; `path` names
    /// where it came from).
    pub(crate) fn owned<'r>(tag: u32, record: &'r [u8], path: &str) -> Result<Incoming<'r>> {
        if tag == TAG_BYTES | frame::ENVELOPED {
            // An RPC call or reply of bytes (as in `next_message`): only the envelope.
            if let Some(envelope) = record.first_chunk::<{ frame::ENVELOPE_LEN }>() {
                let head = Head::enveloped_bytes(record.len(), *envelope);
                return Ok(Incoming { op: None, first: None, owned: Some(record), head, policy: WaitPolicy::default(), consume: true, bounded: None });
            }
        }
        let prefix = &record[..record.len().min(frame::MAX_PREFIX)];
        let head = match frame::parse_head(tag, record.len(), prefix) {
            Ok(head) if !head.is_chunked() && head.skip() + head.total() <= record.len() => head,
            Ok(_) => return Err(Error::Corrupt { path: path.to_owned(), what: "a call slot's record announces more than it holds".into() }),
            Err(HeadError::Orphan) => return Err(Error::Corrupt { path: path.to_owned(), what: "a call slot holds a continuation".into() }),
            Err(HeadError::Corrupt(what)) => return Err(Error::Corrupt { path: path.to_owned(), what }),
        };
        Ok(Incoming { op: None, first: None, owned: Some(record), head, policy: WaitPolicy::default(), consume: true, bounded: None })
    }

    /// Wait at most `limit` for each record of the message after the one before
    /// (an inactivity limit), instead of as long as a live sender takes to finish or
    /// cut it: a reader that must not be held by a sender stopped part-way (an RPC
    /// server), while one that keeps sending finishes however large its message. A
    /// message whose sender stalls ends with [`Error::Timeout`], and its rest is skipped
    /// by the next receive.
    #[must_use]
    pub fn bounded(mut self, limit: Duration) -> Self {
        self.bounded = Some(limit);
        self
    }

    /// What the message announces: kind, size, parts, array description.
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// Copy the message into `dests`, one per part of [`Incoming::head`] and each
    /// exactly as long (`slice.into()` for a Rust slice), waiting for the records that follow its first as they arrive
    /// (no deadline: a live sender finishes or cuts a message it began; the hook of
    /// `wait` still ends the wait).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (wrong destinations: the message is consumed),
    /// [`Error::Truncated`] (the sender abandoned the message, or closed or died part-way;
    /// the next message is intact), the hook's error (the rest of the message is
    /// skipped by the next receive), [`Error::Corrupt`].
    pub fn read_into(self, dests: Vec<OutBuf<'_>>, mut wait: Wait<'_>) -> Result<()> {
        self.copy_out(Target::Parts(dests), &mut wait)
    }

    /// Copy the whole logical payload into `dst` (exactly [`Head::total`] bytes): what
    /// `recv_bytes` returns whatever was sent.
    ///
    /// # Errors
    /// As [`Incoming::read_into`].
    pub fn read_payload_into(self, dst: OutBuf<'_>, mut wait: Wait<'_>) -> Result<()> {
        self.copy_out(Target::Whole(dst), &mut wait)
    }

    /// Hand the logical payload to `sink` in order, a record's worth at a time, where
    /// it lies in the ring (no copy): a receiver that decodes a large message as its
    /// records arrive, while the sender still writes the rest. The pieces' boundaries
    /// are the records' (any byte offsets; together exactly [`Head::total`] bytes).
    /// The bytes are another process's memory: `sink` must accept any bytes, and what
    /// it made of a piece is to be discarded if this returns an error (a lossy
    /// broadcast's publisher may have overwritten the piece meanwhile: `Lagged`; the
    /// segment may have been truncated: `Corrupt`), which is checked after each piece.
    ///
    /// # Errors
    /// As [`Incoming::read_into`]; `sink`'s error ends the read (the rest of the message
    /// is skipped by the next receive).
    pub fn read_streamed(self, sink: &mut dyn FnMut(&[u8]) -> Result<()>, mut wait: Wait<'_>) -> Result<()> {
        self.copy_out(Target::Stream(sink), &mut wait)
    }

    fn copy_out(mut self, target: Target<'_, '_>, wait: &mut Wait<'_>) -> Result<()> {
        let head = &self.head;
        let mut out = match target {
            Target::Parts(dests) => Out::Scatter(Scatter::new(head, dests).map_err(Error::InvalidArgument)?),
            Target::Whole(dst) => Out::Scatter(Scatter::whole(head, dst).map_err(Error::InvalidArgument)?),
            Target::Stream(sink) => Out::Stream(sink),
        };
        let total = head.total();
        let skip = head.skip();
        if let Some(bytes) = self.owned.take() {
            // One whole record, checked by `owned`.
            let piece = &bytes[skip..skip + total];
            return match &mut out {
                Out::Scatter(scatter) => {
                    scatter.scatter_with(0, total, |from, dst| dst.write(&piece[from..from + dst.len()]));
                    Ok(())
                }
                Out::Stream(sink) => sink(piece),
            };
        }
        let record = self.first.take().expect("first record");
        let op = self.op.as_mut().expect("a ring's message");
        let consumer = op.consumer();
        let first_len = record.len() - skip;
        let taken = out.take(consumer, &record, skip, 0, first_len);
        consumer.release_read(record).map_err(|e| seg_err(e, consumer))?;
        taken?;
        let mut received = first_len;
        let h = frame::chunk_header_len();
        // Part-way through: a lossy broadcast's lap that passes only the rest of this
        // message must be reported (`Drop` of `Incoming` clears the flag).
        op.consumer().set_mid_message(received < total);
        // A lossy broadcast's subscriber lapped part-way: this message (counted as
        // received when its first record was released) is lost too.
        let lost_too = |e| match e {
            Error::Lagged { missed } => Error::Lagged { missed: missed.saturating_add(1) },
            e => e,
        };
        while received < total {
            let record = op.wait_for_chunk(self.policy, wait, received, total, self.bounded).map_err(lost_too)?;
            if record.tag() != TAG_CONTINUATION {
                // The next message: this one was abandoned. Leave it queued. (Or, on a
                // lossy broadcast, the publisher lapped us: a later record's header.)
                let consumer = op.consumer();
                consumer.check_read(&record).map_err(|e| lost_too(seg_err(e, consumer)))?;
                return Err(Error::Truncated { received, total });
            }
            let consumer = op.consumer();
            let mut word = [0u8; 8];
            let offset = if record.len() >= h {
                consumer.read(&record, 0, &mut word);
                frame::continuation_offset(&word).ok()
            } else {
                None
            };
            let n = record.len().saturating_sub(h);
            if offset != Some(received) || n == 0 || n > total - received {
                consumer.check_read(&record).map_err(|e| lost_too(seg_err(e, consumer)))?;
                consumer.release(record);
                let path = op.inner.segment().path().to_owned();
                return Err(Error::Corrupt {
                    path,
                    what: format!("received message: a record of {n} bytes at offset {offset:?} where byte {received} of {total} was due"),
                });
            }
            let taken = out.take(consumer, &record, h, received, n);
            consumer.release_read(record).map_err(|e| lost_too(seg_err(e, consumer)))?;
            received += n;
            // Mid-message, as for the hook's error: the rest is skipped by the next
            // receive.
            taken?;
        }
        Ok(())
    }
}

impl Drop for Incoming<'_> {
    fn drop(&mut self) {
        let Some(op) = self.op.as_mut() else { return };
        op.consumer().set_mid_message(false);
        if let Some(record) = self.first.take() {
            if self.consume {
                // Unread: the message is consumed (any continuations are skipped by
                // the next receive).
                op.consumer().release(record);
            }
        }
    }
}

/// What [`Receiver::begin_view`] found.
pub enum Viewed<'a> {
    /// A message of one record, held in the ring.
    Held(Held),
    /// A message that is not held: it spans several records, or it is one record
    /// larger than a quarter of the ring. Copy it out.
    Copy(Incoming<'a>),
}

/// Identifies a held message to [`Receiver::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldToken {
    hold: Hold,
    generation: u64,
    /// The receiver's release queue (its identity: a token of another receiver, at the
    /// same positions, must not release this one's holds).
    receiver: u64,
}

/// A message held in the ring past its receive ([`Receiver::begin_view`]): where its
/// logical payload lies, and the mapping that keeps those bytes addressable however
/// long the view lives (past the receiver's close, even). Dropping it does not release
/// the message: give its token to [`Receiver::release`] (or a [`Releaser`]).
#[must_use = "a held message stays in the ring until Receiver::release of its token"]
pub struct Held {
    head: Head,
    token: HoldToken,
    addr: usize,
    len: usize,
    mapping: Arc<Region>,
}

impl Held {
    /// What the message carries; [`Head::part`] offsets are relative to [`Held::addr`].
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// The token that releases it.
    pub fn token(&self) -> HoldToken {
        self.token
    }

    /// Address of the logical payload's first byte (8-aligned) in this process.
    /// Reading `len()` bytes from it is sound while the hold is not released and the
    /// mapping is kept: the producer does not reuse held space. Dropping the
    /// [`Receiver`] (with every [`Releaser`] of it) releases its holds: a receiver that
    /// takes over then gives their space back at once, so keep the receiver (or a
    /// `Releaser`) alive as long as any `Held` is read.
    pub fn addr(&self) -> usize {
        self.addr
    }

    /// Length of the logical payload in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The mapping the bytes live in (the receiver's read-only second mapping of the
    /// segment, through an open file description that holds no locks): keep it as long
    /// as anything points into them.
    pub fn mapping(&self) -> &Arc<Region> {
        &self.mapping
    }

    /// The parts: head, token, address, length, and the mapping as an opaque owner.
    pub fn into_parts(self) -> (Head, HoldToken, usize, usize, Arc<dyn std::any::Any + Send + Sync>) {
        (self.head, self.token, self.addr, self.len, self.mapping)
    }
}

impl fmt::Debug for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Held").field("kind", &self.head.kind()).field("len", &self.len).field("token", &self.token).finish()
    }
}

/// A received message still in the ring (zero-copy). Derefs to its logical payload
/// (for bytes, the bytes); its space is released when it drops. Until then other
/// copies of the receiver wait.
pub struct Message<'a> {
    op: Op<'a>,
    record: Option<Record>,
    head: Head,
}

impl Message<'_> {
    /// What the message carries.
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = shmplane::channel(4096)?;
    /// tx.send_array_of(&[2], &[1.5f64, 2.5])?;
    /// let msg = rx.peek(None)?;
    /// assert_eq!(msg.head().kind(), shmplane::frame::Kind::Array);
    /// assert_eq!(msg.part(0), bytemuck::cast_slice::<f64, u8>(&[1.5, 2.5]));   // the data, in place
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// Part `i` of the message in place (see [`Head::part_count`]).
    ///
    /// # Panics
    /// If `i >= head().part_count()`.
    pub fn part(&self, i: usize) -> &[u8] {
        let (offset, len) = self.head.part(i);
        &self[offset..offset + len]
    }
}

impl std::ops::Deref for Message<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        &self.op.inner.consumer.payload(self.record.as_ref().expect("unreleased"))[self.head.skip()..]
    }
}

impl Drop for Message<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some(r) = self.record.take() {
            self.op.consumer().release(r);
        }
    }
}
