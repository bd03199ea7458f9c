//! Mailbox: many producers, one consumer (MPSC), for messages of any size.
//!
//! One segment holds a summary word per 64 lanes and `max_senders` lanes, each an SPSC
//! ring of the channel's design (`shmplane_shm::ring`). Every producer handle
//! ([`Mailbox::sender`], or [`Sender::open`] from any process) claims a free lane for
//! its life, so producers never contend with each other, never CAS on a shared tail,
//! and keep their order (per-producer FIFO). A producer that dies, even part-way
//! through a record or a chunked message, strands only its own lane: its committed
//! messages are delivered, a message it left half-written reports
//! [`Error::Truncated`] once, and a new producer may take the lane over. Agrona's
//! `ManyToOneRingBuffer` instead CAS-claims one shared tail, so a producer that dies
//! between its claim and its commit blocks the consumer until `unblock()` pads the
//! claim after a timeout; with lanes there is no claim to unblock and nothing to time
//! out (see `docs/design.md`, "Mailbox").
//!
//! After publishing, a producer sets its lane's bit in the pending summary if it reads
//! clear (`shmplane_shm::mailbox`), then notifies the mailbox's one event count, which
//! the consumer sleeps on. So [`Mailbox::pending`], the `check_pause()` question "is
//! there a message?", is one load of a line that stays in the consumer's cache while
//! nothing arrives.

use super::spsc::{Doorbell, HoldToken, Incoming, Receiver, Releaser, Sender, Viewed};
use crate::endpoint::{generated_name, Role};
use crate::frame::Frame;
use crate::wait::{wait_for_then_sleep, Wait};
use shmplane_shm::bell::Side;
use shmplane_shm::callslot;
use shmplane_shm::error::{Error, Result};
use shmplane_shm::header::SegmentKind;
use shmplane_shm::kind::Params;
use shmplane_shm::layout::{check_ring_capacity, MailboxControl, MAX_MAILBOX_LANES, MAX_RING_CAPACITY, MIN_RING_CAPACITY};
use shmplane_shm::liveness::{self, PeerState, ATTACHED, CLOSING, VACANT};
use shmplane_shm::mailbox::{clear_pending, joins, mark_pending, pending_word};
use shmplane_shm::segment::Segment;
use shmplane_shm::store::{mailbox_control, PendingProbe, SegmentRing};
use shmplane_shm::wait::{SharedFutex, WaitHistory, WaitPolicy, SLICE};
use std::fmt;
use std::os::fd::{OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Ring capacity of each lane of a mailbox made without one, in bytes (64 KiB): a
/// default mailbox of [`DEFAULT_MAX_SENDERS`] lanes is a 4.3 MB segment. Larger
/// messages stream through a lane in chunks.
pub const DEFAULT_LANE_CAPACITY: usize = 1 << 16;

/// Producer handles a mailbox made without a limit can have at once.
pub const DEFAULT_MAX_SENDERS: usize = 64;

/// Messages the consumer takes from one lane in a row while others wait (fairness
/// against the cache locality of staying on a lane).
const BURST: u32 = 16;

/// Most call slots an RPC server polls directly while it busy-polls (see
/// `shmplane_shm::callslot::POLLED`): the clients it answered last. Each costs one
/// load (a cache hit while nothing changes) per look.
const MAX_POLLED: usize = 8;

/// Role 0 of a mailbox segment: the consumer.
const CONSUMER_ROLE: usize = 0;

/// The consuming end of a mailbox: receives what any of its producers sent, each
/// producer's messages in the order it sent them, taking turns between producers
/// (round robin over the lanes that hold messages).
///
/// # Examples
/// ```
/// let mut mb = shmplane::Mailbox::new(1 << 12, 4)?;
/// let mut a = mb.sender()?;
/// let mut b = mb.sender()?;                  // another producer, another lane
/// assert!(!mb.pending());                    // one load: the check_pause() case
/// a.send(b"pause")?;
/// b.send(b"status?")?;
/// assert!(mb.pending());
/// let mut got = vec![mb.recv()?, mb.recv()?];
/// got.sort();
/// assert_eq!(got, [b"pause".to_vec(), b"status?".to_vec()]);
/// drop((a, b));
/// assert!(matches!(mb.recv(), Err(shmplane::Error::Disconnected { .. })));
/// # Ok::<(), shmplane::Error>(())
/// ```
pub struct Mailbox {
    inner: Option<Inner>,
    policy: WaitPolicy,
    /// Lanes closed while views held records: their releases still go here.
    closed_lanes: Vec<(usize, Receiver)>,
}

struct Inner {
    /// Holds the consumer role (0); the lanes' receivers have segments of their own.
    segment: Segment,
    role: Role,
    /// Receivers of the lanes read so far (each claims its lane's consumer role).
    lanes: Vec<Option<Receiver>>,
    /// Where the next scan of the pending summary starts (round robin).
    next: usize,
    /// Messages taken in a row from lane `next`.
    burst: u32,
    /// The lane of the last `begin`, for `settle`.
    last: Option<usize>,
    history: WaitHistory,
    doorbell: Option<Doorbell>,
    /// Lanes found corrupt: reported once, then skipped (one broken producer must not
    /// starve the others).
    quarantined: Vec<bool>,
    /// `quarantined` as bits, one word per 64 lanes (masks the pending words).
    quarantine_bits: Vec<u64>,
    /// Never report `Disconnected`: producers come and go (an RPC server's clients).
    persistent: bool,
    /// Lanes that held records for views at their last look (few: the lanes being
    /// viewed now).
    viewing: Vec<usize>,
    /// Non-blocking receives that found nothing since the last full liveness check.
    empty_polls: u32,
    /// Look in the lanes' call slots too (an RPC server: see
    /// `shmplane_shm::callslot`), before their rings.
    calls: bool,
    /// The lane whose call slot the last look found a request in (instead of staging
    /// a record of its ring).
    slotted: Option<usize>,
    /// Lanes whose call slots this server marked `POLLED` (it answered a call there
    /// while it busy-polls): looked at directly, since their clients post without
    /// setting a pending bit; taken back (`unpoll_all`) before this handle sleeps or
    /// waits on its descriptor. At most [`MAX_POLLED`]; the slot served longest ago
    /// first (see [`Inner::take_polled`]).
    polled: Vec<usize>,
    /// The next look tries the polled slots before the pending summary (they take
    /// turns with it, so that a client calling back to back does not starve the
    /// others).
    slots_first: bool,
    last_check: Option<Instant>,
}

/// True if the lane of `rx` has a request posted in its call slot.
fn slot_posted(rx: &Receiver) -> bool {
    rx.store().and_then(SegmentRing::call_slot).is_some_and(callslot::posted)
}

fn check_params(lane_capacity: usize, max_senders: usize) -> Result<()> {
    if !check_ring_capacity(lane_capacity as u64) {
        return Err(Error::InvalidArgument(format!(
            "lane capacity {lane_capacity} bytes must be a power of two between {MIN_RING_CAPACITY} and {MAX_RING_CAPACITY}"
        )));
    }
    if max_senders == 0 || max_senders > MAX_MAILBOX_LANES {
        return Err(Error::InvalidArgument(format!("max_senders {max_senders} must be in 1..={MAX_MAILBOX_LANES}")));
    }
    Ok(())
}

impl Inner {
    fn control(&self) -> &MailboxControl {
        mailbox_control(&self.segment).expect("a validated mailbox segment")
    }

    fn lane_count(&self) -> usize {
        self.lanes.len()
    }

    /// Pending word `w`, without the bits of lanes this mailbox does not have (shared
    /// memory is untrusted: a stray bit must not read as a message forever).
    #[inline]
    fn word(&self, w: usize) -> u64 {
        let n = self.lane_count();
        let valid = if (w + 1) * 64 <= n { !0 } else { (1u64 << (n - w * 64)) - 1 };
        pending_word(self.control(), w) & valid
    }

    /// True if any lane's pending bit is set (one load per 64 lanes; a quarantined
    /// lane's bit does not count), or a polled call slot holds a request.
    #[inline]
    fn any_pending(&self) -> bool {
        self.any_pending_bit() || self.polled_posted().is_some()
    }

    /// True if any lane's pending bit is set, quarantined lanes' bits masked (one load
    /// per 64 lanes).
    #[inline]
    fn any_pending_bit(&self) -> bool {
        (0..self.lane_count().div_ceil(64)).any(|w| self.word(w) & !self.quarantine_mask(w) != 0)
    }

    /// The first polled call slot that holds a request (one load each).
    #[inline]
    fn polled_posted(&self) -> Option<usize> {
        self.polled.iter().copied().find(|&lane| self.lanes[lane].as_ref().is_some_and(slot_posted))
    }

    /// Whether to mark lane `lane`'s call slot `POLLED` as a call there is completed:
    /// yes while this server busy-polls (`spins`: its policy is not `Block`, and it
    /// does not wait on a descriptor), the lane joining the polled set (the slot
    /// served longest ago leaves it when it is full).
    fn keep_polling(&mut self, lane: usize, spins: bool) -> bool {
        if !self.calls || !spins || self.doorbell.is_some() || lane >= self.lanes.len() {
            return false;
        }
        if self.polled.contains(&lane) {
            return true;
        }
        if self.polled.len() >= MAX_POLLED {
            let old = self.polled.remove(0);
            self.unpoll(old);
        }
        self.polled.push(lane);
        true
    }

    /// Stop polling every slot this server polls (before it sleeps, or waits on its
    /// descriptor): a request posted into one meanwhile (without a pending bit) has its
    /// lane's bit set now, so that the summary and the event count's re-check see it.
    fn unpoll_all(&mut self) {
        for lane in std::mem::take(&mut self.polled) {
            self.unpoll(lane);
        }
    }

    /// Stop polling lane `lane`'s slot (see [`Inner::unpoll_all`]).
    fn unpoll(&self, lane: usize) {
        let Some(slot) = self.lanes[lane].as_ref().and_then(Receiver::store).and_then(SegmentRing::call_slot) else { return };
        if callslot::unpoll(slot) {
            mark_pending(self.control(), lane, || true);
        }
    }

    /// Take back the `POLLED` flag of every call slot this handle does not poll (of
    /// lanes with a producer): a copy of this server (a fork child, the parent) that
    /// marked it and then exited or died without taking it back would otherwise leave
    /// the calls posted there, with no pending bit and no notify, to a look that never
    /// comes. A request posted there is announced (its lane's pending bit). Run at
    /// most once per wait slice (and before arming the descriptor): a load per lane,
    /// a CAS per stray flag; a live copy that polls the slot marks it again at its
    /// next reply there.
    fn recover_stray_polls(&self) {
        if !self.calls {
            return;
        }
        for lane in 0..self.lane_count() {
            if self.polled.contains(&lane) || !matches!(liveness::state(self.segment.role(1 + 2 * lane)), ATTACHED | CLOSING) {
                continue;
            }
            let Some(slot) = shmplane_shm::store::mailbox_call_slot(&self.segment, lane) else { continue };
            if callslot::is_polled(slot) && callslot::unpoll(slot) {
                mark_pending(self.control(), lane, || true);
            }
        }
    }

    /// A polled slot's request, taking turns with the pending summary and with the
    /// other polled slots: the lane found goes to the back of the polled set (the look
    /// is in the set's order), so that a client posting its next call as soon as it is
    /// answered does not keep the look on its slot while the others' calls wait.
    fn take_polled(&mut self) -> Option<usize> {
        let at = self.polled.iter().position(|&lane| self.lanes[lane].as_ref().is_some_and(slot_posted))?;
        let lane = self.polled.remove(at);
        self.polled.push(lane);
        self.slots_first = false;
        self.slotted = Some(lane);
        Some(lane)
    }

    /// The quarantined lanes of word `w`, as bits.
    #[inline]
    fn quarantine_mask(&self, w: usize) -> u64 {
        self.quarantine_bits[w]
    }

    /// The first lane at or after `from` (wrapping once) whose pending bit is set and
    /// that is not quarantined.
    fn pending_from(&self, from: usize) -> Option<usize> {
        let n = self.lane_count();
        let words = n.div_ceil(64);
        let from = if from >= n { 0 } else { from };
        // Words from `from`'s (its lower bits masked), then around to it again.
        for k in 0..=words {
            let w = if from / 64 + k >= words { from / 64 + k - words } else { from / 64 + k };
            let mut bits = self.word(w);
            if k == 0 {
                bits &= !0u64 << (from % 64);
            } else if k == words {
                bits &= !(!0u64 << (from % 64));
            }
            while bits != 0 {
                let lane = w * 64 + bits.trailing_zeros() as usize;
                if !self.quarantined[lane] {
                    return Some(lane);
                }
                bits &= bits - 1;
            }
        }
        None
    }

    /// The receiver of lane `lane`, attaching to it on first use through a duplicate
    /// of the consumer's descriptor (whose description holds every lane's consumer
    /// role: see `Mailbox::attach`).
    fn lane(&mut self, lane: usize) -> Result<&mut Receiver> {
        if self.lanes[lane].is_none() {
            let mut rx = Receiver::attach(self.segment.share()?, crate::endpoint::Place::Lane(lane), false, None)?;
            rx.set_wait_policy(WaitPolicy::Block);
            if self.doorbell.is_some() {
                if let Some(name) = self.segment.name() {
                    rx.set_release_bell(name.to_owned(), Side::Data);
                }
            }
            self.lanes[lane] = Some(rx);
        }
        Ok(self.lanes[lane].as_mut().expect("attached above"))
    }

    /// One pass over the lanes whose bits are set, round robin from `next`: the first
    /// whose receiver begins a message (staged: it stays this handle's until taken)
    /// is returned. A lane with nothing to begin (empty, its producer gone, another
    /// copy of this consumer busy with it) has its bit cleared and looked at again;
    /// a corrupt lane is reported once and then skipped.
    fn find_ready(&mut self) -> Result<Option<usize>> {
        if self.polled.is_empty() {
            return self.find_pending();
        }
        if self.slots_first {
            if let Some(lane) = self.take_polled() {
                return Ok(Some(lane));
            }
        }
        if let Some(lane) = self.find_pending()? {
            self.slots_first = true;
            return Ok(Some(lane));
        }
        Ok(self.take_polled())
    }

    /// [`Inner::find_ready`] through the pending summary alone.
    fn find_pending(&mut self) -> Result<Option<usize>> {
        self.slotted = None;
        // The common look of a busy loop finds nothing: one load per 64 lanes and out
        // (the walk below costs a spinning RPC server ~100 instructions a turn, which
        // is latency added to every call that lands meanwhile).
        if !self.any_pending_bit() {
            return Ok(None);
        }
        let n = self.lane_count();
        let mut from = if self.next >= n { 0 } else { self.next };
        for _ in 0..n {
            let Some(lane) = self.pending_from(from) else { return Ok(None) };
            // A lane that cannot be attached is reported by `stage` below (and the
            // next look starts after it), not here: a `?` here would report it at
            // every look without moving on, starving the lanes after it.
            if self.calls && self.lane(lane).is_ok_and(|rx| slot_posted(rx)) {
                // A call in the lane's slot: taken before its ring's records (a client
                // posts there only with nothing of its own in flight). It takes its
                // turn as a record does: a client that posts its next call as soon as
                // it is answered must not keep the look on its lane.
                self.took_turn(lane);
                self.slotted = Some(lane);
                return Ok(Some(lane));
            }
            let staged = self.lane(lane).and_then(Receiver::stage);
            match staged {
                Ok(true) => {
                    self.took_turn(lane);
                    return Ok(Some(lane));
                }
                Ok(false) => {
                    let rx = self.lanes[lane].as_ref().expect("open lane");
                    let m = mailbox_control(&self.segment).expect("a validated mailbox segment");
                    // The bit comes back if the lane holds something after all (a copy
                    // of this consumer is in the middle of it): a later look takes it.
                    // (From this consumer's own position: records it holds for views
                    // were taken.)
                    let calls = self.calls;
                    clear_pending(m, lane, || rx.has_queued() || (calls && slot_posted(rx)));
                }
                Err(e) => {
                    // Reported once; the next look starts after this lane, so one bad
                    // lane does not starve the others. A lane whose ring is poisoned
                    // (its records cannot be trusted any more) is skipped from now on
                    // and its bit cleared; a bad message (already consumed) is not.
                    self.next = lane + 1;
                    self.burst = 0;
                    let poisoned = self.lanes[lane].as_ref().and_then(Receiver::store).is_some_and(|st| shmplane_shm::ring::poisoned(st) != 0);
                    if poisoned {
                        self.quarantined[lane] = true;
                        self.quarantine_bits[lane / 64] |= 1 << (lane % 64);
                        let m = mailbox_control(&self.segment).expect("a validated mailbox segment");
                        clear_pending(m, lane, || false);
                    }
                    return Err(e);
                }
            }
            if lane + 1 >= from + n {
                break;
            }
            from = lane + 1;
        }
        Ok(None)
    }

    /// Round robin in bursts, after a look found something on `lane`: stay on a lane
    /// for up to [`BURST`] messages in a row (its lines stay in this core's cache),
    /// then move on.
    fn took_turn(&mut self, lane: usize) {
        if lane == self.next && self.burst < BURST {
            self.burst += 1;
        } else if lane == self.next {
            self.next = lane + 1;
            self.burst = 0;
        } else {
            self.next = lane;
            self.burst = 1;
        }
    }

    /// After a receive from `lane`: if it left the lane empty, clear the lane's pending
    /// bit now, so that [`Mailbox::pending`] says `false` once everything was taken
    /// (`while mb.pending(): mb.recv()` must not block). A load of the lane's next
    /// header, plus a clearing RMW only when the lane ran empty.
    fn settle(&mut self, lane: usize) {
        // Releases queued by other threads while this receive ran (a long copy of
        // another lane's message): applied before the caller goes idle.
        self.apply_released();
        let Some(rx) = self.lanes[lane].as_ref().filter(|rx| !rx.is_closed()) else { return };
        let calls = self.calls;
        // A bit that reads clear needs no clearing (a call from a polled slot set
        // none): a producer that publishes now sets it, its fence ordering the publish
        // before its own load of the bit.
        if self.word(lane / 64) & (1 << (lane % 64)) != 0 && !(rx.has_queued() || (calls && slot_posted(rx))) {
            let m = mailbox_control(&self.segment).expect("a validated mailbox segment");
            clear_pending(m, lane, || rx.has_queued() || (calls && slot_posted(rx)));
        }
    }

    /// Apply the releases of views that other threads queued, on every lane that holds
    /// some (only once this consumer viewed anything): its producer may be waiting for
    /// that space. Each receive does this, and each wait slice.
    fn apply_released(&mut self) {
        if self.viewing.is_empty() {
            return;
        }
        // Only the lanes that held views (a consumer of 511 lanes pays for those, not
        // for all); a lane that holds nothing any more leaves the list.
        let lanes = &mut self.lanes;
        self.viewing.retain(|&lane| match lanes[lane].as_mut() {
            Some(rx) => {
                rx.apply_released();
                rx.holds() > 0
            }
            None => false,
        });
    }

    /// Note that `lane` holds a view now ([`Inner::apply_released`] looks at it).
    fn viewed(&mut self, lane: usize) {
        if !self.viewing.contains(&lane) {
            self.viewing.push(lane);
        }
    }

    /// Whether a producer may still send: `Ok` while one is attached and alive, or
    /// while none has joined yet; [`Error::Disconnected`] once every producer that
    /// joined closed or died. `full`: also check attached producers for death (a lock
    /// query per lane) and look into the lanes of producers that are gone for a record
    /// whose bit they died before setting; otherwise only their state words (one load
    /// each).
    fn producers_verdict(&self, full: bool) -> Result<()> {
        // A segment file truncated under us: what we read since is zeros.
        if full {
            self.segment.check_intact()?;
        } else if self.segment.tripped() {
            return Err(self.segment.truncated_error());
        }
        if joins(self.control()) == 0 || (self.persistent && !full) {
            return Ok(());
        }
        let mut alive = false;
        for lane in 0..self.lane_count() {
            let role = 1 + 2 * lane;
            let gone = match liveness::state(self.segment.role(role)) {
                ATTACHED | CLOSING if !full => return Ok(()),
                ATTACHED | CLOSING => match self.segment.peer_state(role)? {
                    PeerState::Alive(_) | PeerState::Vacant => {
                        alive = true;
                        false
                    }
                    PeerState::Closed | PeerState::Dead(_) => true,
                },
                VACANT => false,
                _ => true,
            };
            if gone && full {
                self.recover_orphan_bit(lane);
            }
        }
        if alive || self.persistent {
            Ok(())
        } else {
            Err(Error::Disconnected { role: "last of the mailbox's senders" })
        }
    }

    /// A producer that died between committing a record and setting its lane's bit
    /// left a message nobody would look for: set the bit if the lane holds one.
    fn recover_orphan_bit(&self, lane: usize) {
        let ready = |st: &SegmentRing| shmplane_shm::ring::data_ready(st) || (self.calls && st.call_slot().is_some_and(callslot::posted));
        let has_data = match &self.lanes[lane] {
            Some(rx) => rx.store().is_some_and(ready),
            // Not attached yet: look through a temporary view of the lane.
            None => self.segment.share().is_ok_and(|seg| ready(&SegmentRing::lane(seg, lane))),
        };
        if has_data {
            shmplane_shm::mailbox::mark_pending(self.control(), lane, || true);
        }
    }

    /// What a receive that found every lane empty reports without waiting:
    /// [`Error::Empty`], or [`Error::Disconnected`] once no producer is left (state
    /// words each time, a full liveness check at most every slice).
    fn empty_verdict(&mut self) -> Error {
        self.empty_polls += 1;
        let mut full = false;
        if self.empty_polls >= 16 {
            self.empty_polls = 0;
            let now = Instant::now();
            if self.last_check.is_none_or(|t| now.duration_since(t) >= SLICE) {
                self.last_check = Some(now);
                full = true;
            }
        }
        if full {
            self.recover_stray_polls();
        }
        match self.producers_verdict(full) {
            // Re-check: a producer's last message happens-before its close.
            Err(e) if !self.any_pending() => e,
            _ => Error::Empty,
        }
    }

    /// Wait per `wait` until a lane has a message begun (staged) for this handle; its
    /// index.
    fn ready_lane(&mut self, policy: WaitPolicy, wait: &mut Wait<'_>) -> Result<usize> {
        self.apply_released();
        if let Some(lane) = self.find_ready()? {
            return Ok(lane);
        }
        if !wait.blocks() {
            let verdict = self.empty_verdict();
            if matches!(verdict, Error::Empty) && self.doorbell.is_some() {
                // Waited on through the OS: a receive that finds nothing re-arms the
                // descriptor (as `readiness_fd` promises), so that a ring that brought
                // nothing to take (a view's release, a message another copy took) does
                // not leave it readable and a `select` loop spinning. Every time (a
                // drain syscall): whether it may be readable cannot be known without
                // one, since ringers write after they take the armed flag and view
                // releases after they queue (found in review: a gate on those spun).
                // Loops that only look (the RPC server's spin) use `pending`.
                self.arm();
            }
            return Err(verdict);
        }
        let mut history = std::mem::take(&mut self.history);
        let got = wait_for_then_sleep(
            self,
            |s| (&s.control().data_ready.value, &SharedFutex),
            (policy, &mut history),
            wait,
            Inner::find_ready,
            |_| false,
            |s| {
                s.apply_released();
                s.recover_stray_polls();
                match s.producers_verdict(true) {
                    Err(e) if !s.any_pending() => Err(e),
                    _ => Ok(()),
                }
            },
            // Clients post into polled slots without waking anyone: taken back first.
            Inner::unpoll_all,
        );
        self.history = history;
        got
    }

    /// Arm the doorbell: readable at the next message, or now if one is pending.
    fn arm(&mut self) {
        // Requests posted into polled slots set no bit: announced before arming (also
        // those of slots a copy of this server polled before it exited).
        self.unpoll_all();
        self.recover_stray_polls();
        let peer = if joins(self.control()) == 0 { VACANT } else { ATTACHED };
        let Some(d) = &mut self.doorbell else { return };
        d.prime(&mailbox_control(&self.segment).expect("a validated mailbox segment").data_ready.value, peer);
        // Releases queued by other threads after the drain rang it again; those queued
        // before it (since this receive's `apply_released`) are applied here, or a
        // producer waiting for that space would wait on a descriptor nobody rings.
        self.apply_released();
        // The re-check: pending bits (quarantined lanes masked: a poisoned lane would
        // keep the descriptor readable) and requests in polled slots.
        if self.any_pending() {
            if let Some(d) = &mut self.doorbell {
                d.ring_own(peer);
            }
        }
    }
}

impl Mailbox {
    /// Create a mailbox with a generated name, `max_senders` lanes of `lane_capacity`
    /// bytes each ([`DEFAULT_LANE_CAPACITY`], [`DEFAULT_MAX_SENDERS`] are good starts),
    /// and become its consumer.
    ///
    /// The segment is `max_senders` × (`lane_capacity` + 4 KiB) plus about
    /// (`max_senders` + 1) × 256 bytes of role table; each lane's pages are touched
    /// only once a producer uses it. Messages of any size fit.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (capacity not a power of two in 4 KiB..=2 GiB,
    /// `max_senders` not in 1..=511), [`Error::NoSpace`], [`Error::Os`].
    pub fn new(lane_capacity: usize, max_senders: usize) -> Result<Mailbox> {
        Mailbox::create(&generated_name(), lane_capacity, max_senders)
    }

    /// [`Mailbox::new`] with a chosen name (`[A-Za-z0-9._-]`, up to 200 bytes), so that
    /// unrelated processes can send with [`Sender::open`]. A stale segment of that name
    /// left by a crash is replaced.
    ///
    /// # Errors
    /// As [`Mailbox::new`], plus [`Error::InvalidName`] and [`Error::AlreadyExists`].
    pub fn create(name: &str, lane_capacity: usize, max_senders: usize) -> Result<Mailbox> {
        check_params(lane_capacity, max_senders)?;
        let params = Params { p0: lane_capacity as u64, p1: max_senders as u64 };
        let segment = Segment::create(name, SegmentKind::Mailbox, params)?;
        Mailbox::attach(segment, true)
    }

    /// Become the consumer of existing mailbox `name` (its previous consumer closed or
    /// died); messages its producers queued meanwhile are delivered.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::WrongKind`], [`Error::RoleTaken`] (a live
    /// consumer has it), [`Error::Corrupt`], [`Error::Incompatible`], [`Error::Os`].
    pub fn open(name: &str) -> Result<Mailbox> {
        Mailbox::attach(Segment::open(name, SegmentKind::Mailbox)?, true)
    }

    /// Adopt a descriptor of a mailbox segment whose description holds the consumer
    /// role (a duplicate of [`Mailbox::fd`]): how the consuming end moves to a child
    /// process. The copy and the original take turns on each lane (every message
    /// reaches exactly one of them), as copies of a [`Receiver`] do.
    ///
    /// # Errors
    /// As [`Mailbox::open`].
    pub fn from_fd(fd: OwnedFd, name: Option<String>) -> Result<Mailbox> {
        Mailbox::attach(Segment::from_fd(fd, name, SegmentKind::Mailbox)?, false)
    }

    fn attach(segment: Segment, fresh: bool) -> Result<Mailbox> {
        segment.claim_role(CONSUMER_ROLE)?;
        // Every lane's consumer role on this one description (OFD locks are per byte):
        // the lanes' receivers use duplicates of it, so copies of this consumer (a
        // fork child, a pickled handle) share them, and a producer waiting on a lane
        // sees this consumer's death on the lane's role too.
        for lane in 0..segment.info().param1 as usize {
            segment.claim_role(1 + 2 * lane + 1)?;
        }
        let control = mailbox_control(&segment).expect("a validated mailbox segment");
        if fresh {
            control.data_ready.value.reset_waiters();
        }
        let lanes = segment.info().param1 as usize;
        let mut role = Role::new(CONSUMER_ROLE);
        if fresh {
            role.register(&segment);
        }
        let inner = Inner {
            segment,
            role,
            lanes: (0..lanes).map(|_| None).collect(),
            next: 0,
            burst: 0,
            last: None,
            history: WaitHistory::default(),
            doorbell: None,
            quarantined: vec![false; lanes],
            quarantine_bits: vec![0; lanes.div_ceil(64)],
            persistent: false,
            viewing: Vec::new(),
            empty_polls: 0,
            last_check: None,
            calls: false,
            slotted: None,
            polled: Vec::new(),
            slots_first: false,
        };
        Ok(Mailbox { inner: Some(inner), policy: WaitPolicy::default(), closed_lanes: Vec::new() })
    }

    #[inline(always)]
    fn inner(&mut self) -> Result<&mut Inner> {
        // `let else`, not `ok_or(Error::Closed)`, which builds and drops an Error on
        // every call (see `Sender::inner`).
        let Some(inner) = self.inner.as_mut() else { return Err(Error::Closed) };
        Ok(inner)
    }

    /// A new producer handle: claims a free lane of this mailbox (a new open file
    /// description of the segment). Pass it to another thread, or to a child process
    /// by descriptor ([`Sender::fd`], [`Sender::lane`], [`Sender::from_fds_lane`]).
    ///
    /// # Errors
    /// [`Error::RoleTaken`] (all `max_senders` lanes have producers), [`Error::Closed`],
    /// [`Error::Os`].
    pub fn sender(&self) -> Result<Sender> {
        let inner = self.inner.as_ref().ok_or(Error::Closed)?;
        Sender::join(inner.segment.reopen()?)
    }

    /// True if a message is waiting: one load per 64 lanes (the `check_pause()`
    /// question), no syscall. A `false` is exact: nothing any producer committed
    /// before the call is waiting. A `true` is exact once receives have taken what
    /// they found, except after a message whose producer died or gave up part-way
    /// (its lane reads pending until a receive looks at it: [`Mailbox::pending_exact`]).
    #[inline]
    pub fn pending(&self) -> bool {
        self.inner.as_ref().is_some_and(Inner::any_pending)
    }

    /// A [`PendingProbe`]: [`Mailbox::pending`] for any thread, without this handle
    /// (it maps the segment once more; it keeps no descriptor and no role).
    ///
    /// # Errors
    /// [`Error::Closed`], [`Error::Os`].
    pub fn probe(&self) -> Result<PendingProbe> {
        let inner = self.inner.as_ref().ok_or(Error::Closed)?;
        PendingProbe::new(&inner.segment)
    }

    /// A [`Joiner`]: makes producers of this mailbox without this handle (so that a
    /// thread blocked in a receive does not stop another from adding producers).
    ///
    /// # Errors
    /// [`Error::Closed`], [`Error::Os`].
    pub fn joiner(&self) -> Result<Joiner> {
        let inner = self.inner.as_ref().ok_or(Error::Closed)?;
        Ok(Joiner { segment: inner.segment.reopen()? })
    }

    /// [`Mailbox::pending`], made exact: lanes whose bit is set but that turn out empty
    /// have their bits cleared. Costs a look at each flagged lane.
    ///
    /// # Errors
    /// [`Error::Corrupt`] (a malformed lane), [`Error::Os`].
    pub fn pending_exact(&mut self) -> Result<bool> {
        let Some(inner) = self.inner.as_mut() else { return Ok(false) };
        if !inner.any_pending() {
            return Ok(false);
        }
        match inner.find_ready()? {
            Some(lane) => {
                inner.lanes[lane].as_mut().expect("ready lane is open").unstage();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Begin receiving the next message from any producer, waiting per `wait`; see
    /// [`Receiver::begin`].
    ///
    /// # Errors
    /// [`Error::Empty`], [`Error::Timeout`], the hook's error, [`Error::Disconnected`]
    /// (every producer that joined closed or died, and everything was received; a
    /// mailbox no producer has joined yet is only empty), [`Error::Corrupt`],
    /// [`Error::Closed`].
    pub fn begin(&mut self, mut wait: Wait<'_>) -> Result<Incoming<'_>> {
        let policy = self.policy;
        let inner = self.inner()?;
        let lane = inner.ready_lane(policy, &mut wait)?;
        inner.last = Some(lane);
        Ok(inner.lanes[lane].as_mut().expect("ready lane is open").take_staged())
    }

    /// Wait per `wait` until a lane has a message begun for this handle (staged: it
    /// stays queued and this handle's until [`Mailbox::take_staged`]); its lane.
    pub(crate) fn stage_next(&mut self, wait: &mut Wait<'_>) -> Result<usize> {
        let policy = self.policy;
        let inner = self.inner()?;
        let lane = inner.ready_lane(policy, wait)?;
        inner.last = Some(lane);
        Ok(lane)
    }

    /// The head of the message staged on `lane`.
    pub(crate) fn staged_head(&self, lane: usize) -> Option<&crate::frame::Head> {
        self.inner.as_ref()?.lanes.get(lane)?.as_ref()?.staged_head()
    }

    /// The message staged on `lane` by [`Mailbox::stage_next`].
    ///
    /// # Panics
    /// If none is.
    pub(crate) fn take_staged(&mut self, lane: usize) -> Incoming<'_> {
        let inner = self.inner.as_mut().expect("staged on an open mailbox");
        inner.lanes[lane].as_mut().expect("ready lane is open").take_staged()
    }

    /// Look in the lanes' call slots too, before their rings (an RPC server).
    pub(crate) fn enable_call_slots(&mut self) {
        if let Some(inner) = self.inner.as_mut() {
            inner.calls = true;
        }
    }

    /// True if the lane that [`Mailbox::stage_next`] returned has a request in its call
    /// slot (nothing of its ring is staged).
    pub(crate) fn slotted(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.slotted.is_some())
    }

    /// Whether an RPC server completing a call in lane `lane`'s call slot marks it
    /// `POLLED` (see `Inner::keep_polling`).
    pub(crate) fn keep_polling(&mut self, lane: usize) -> bool {
        let spins = self.policy != WaitPolicy::Block;
        self.inner.as_mut().is_some_and(|i| i.keep_polling(lane, spins))
    }

    /// The call slot of lane `lane`, once its receiver is attached (after
    /// [`Mailbox::stage_next`] returned it).
    pub(crate) fn call_slot(&self, lane: usize) -> Option<&shmplane_shm::layout::CallSlot> {
        self.inner.as_ref()?.lanes.get(lane)?.as_ref()?.store()?.call_slot()
    }

    /// Receive the next message from any producer as a zero-copy view when it can be
    /// one (see [`Receiver::begin_view`]): held in its lane's ring until
    /// [`Mailbox::release`] of the returned lane and token, or copied out
    /// ([`Viewed::Copy`]: a message of several records, or one sent before the lane's
    /// producer learned that this consumer views; [`Mailbox::settle`] after reading it,
    /// as after [`Mailbox::begin`]). Returns the lane too. Held messages
    /// keep their lane's space: its producer waits (its timeouts apply) once the lane is
    /// full of them. Releases queued by other threads ([`Mailbox::releaser`]) are
    /// applied at each receive and each wait slice (50 ms).
    ///
    /// # Errors
    /// As [`Mailbox::begin`].
    pub fn begin_view(&mut self, mut wait: Wait<'_>) -> Result<(usize, Viewed<'_>)> {
        let policy = self.policy;
        let inner = self.inner()?;
        let lane = inner.ready_lane(policy, &mut wait)?;
        inner.last = Some(lane);
        let rx = inner.lanes[lane].as_mut().expect("ready lane is open");
        if let Err(e) = rx.prepare_views() {
            rx.unstage();
            return Err(e);
        }
        if let Some(held) = rx.view_staged_held() {
            inner.viewed(lane);
            // Taken: the lane's pending bit goes if nothing else is queued there.
            inner.settle(lane);
            return Ok((lane, Viewed::Held(held)));
        }
        // Copy it out, then `settle` (as after `begin`).
        Ok((lane, Viewed::Copy(inner.lanes[lane].as_mut().expect("ready lane is open").take_staged())))
    }

    /// Give back the space of a message held by [`Mailbox::begin_view`] on `lane`;
    /// false if `token` is not one of that lane's holds (see [`Receiver::release`]).
    pub fn release(&mut self, lane: usize, token: HoldToken) -> bool {
        let Some(inner) = self.inner.as_mut() else {
            return self.closed_lanes.iter_mut().find(|(l, _)| *l == lane).is_some_and(|(_, rx)| rx.release(token));
        };
        let Some(rx) = inner.lanes.get_mut(lane).and_then(Option::as_mut) else { return false };
        let released = rx.release(token);
        inner.settle(lane);
        released
    }

    /// Releases of `lane`'s held messages from any thread (see [`Receiver::releaser`]):
    /// applied at the mailbox's next receive or wait slice.
    pub fn releaser(&self, lane: usize) -> Option<Releaser> {
        self.inner.as_ref()?.lanes.get(lane)?.as_ref()?.releaser()
    }

    /// Messages held by views and not released, over every lane.
    pub fn holds(&self) -> usize {
        self.inner.as_ref().map_or(0, |i| i.lanes.iter().flatten().map(Receiver::holds).sum())
            + self.closed_lanes.iter().map(|(_, rx)| rx.holds()).sum::<usize>()
    }

    /// [`Mailbox::close`], first giving back every message views hold (they must no
    /// longer be read): for a process that exits with views alive.
    pub fn close_releasing_views(&mut self) {
        if let Some(inner) = self.inner.as_mut() {
            for rx in inner.lanes.iter_mut().flatten() {
                rx.close_releasing_views();
            }
        }
        for (_, rx) in &mut self.closed_lanes {
            rx.close_releasing_views();
        }
        self.closed_lanes.clear();
        self.close();
    }

    /// The lane (producer slot, `0..max_senders`) of the message the last
    /// [`Mailbox::begin`] returned, until [`Mailbox::settle`].
    pub fn last_lane(&self) -> Option<usize> {
        self.inner.as_ref().and_then(|i| i.last)
    }

    /// Keep waiting when every producer has gone instead of reporting
    /// [`Error::Disconnected`] (a server whose clients come and go).
    pub fn set_persistent(&mut self, persistent: bool) {
        if let Some(inner) = self.inner.as_mut() {
            inner.persistent = persistent;
        }
    }

    /// After the [`Incoming`] of [`Mailbox::begin`] was read or dropped: clear the
    /// pending bit of its lane if that left it empty, so that [`Mailbox::pending`]
    /// reads `false` once everything was taken ([`Mailbox::recv`] and the other
    /// receives do this themselves).
    pub fn settle(&mut self) {
        if let Some(inner) = self.inner.as_mut() {
            if let Some(lane) = inner.last.take() {
                inner.settle(lane);
            }
        }
    }

    /// Receive the next message as a [`Frame`], waiting per `wait` for it to begin.
    ///
    /// # Errors
    /// As [`Mailbox::begin`], plus [`Error::Truncated`] (its producer died or gave up
    /// part-way; that producer's next message is intact).
    pub fn recv_frame(&mut self, mut wait: Wait<'_>) -> Result<Frame> {
        let policy = self.policy;
        let inner = self.inner()?;
        let lane = inner.ready_lane(policy, &mut wait)?;
        let got = inner.lanes[lane].as_mut().expect("ready lane is open").recv_staged_frame(wait);
        inner.settle(lane);
        got
    }

    /// Receive the next message's payload, waiting per `wait`.
    ///
    /// # Errors
    /// As [`Mailbox::recv_frame`].
    pub fn recv_with(&mut self, mut wait: Wait<'_>) -> Result<Vec<u8>> {
        let policy = self.policy;
        let inner = self.inner()?;
        let lane = inner.ready_lane(policy, &mut wait)?;
        let got = inner.lanes[lane].as_mut().expect("ready lane is open").recv_staged(wait);
        inner.settle(lane);
        got
    }

    /// Receive one message, waiting as long as it takes.
    ///
    /// # Errors
    /// As [`Mailbox::recv_frame`].
    pub fn recv(&mut self) -> Result<Vec<u8>> {
        self.recv_with(Wait::forever())
    }

    /// Receive without waiting: one load per 64 lanes when empty (with a
    /// [`Mailbox::readiness_fd`] open, also a re-arm of the descriptor: a drain
    /// syscall and a fenced RMW; [`Mailbox::pending`] only looks).
    ///
    /// # Errors
    /// [`Error::Empty`]; otherwise as [`Mailbox::recv`].
    pub fn try_recv(&mut self) -> Result<Vec<u8>> {
        self.recv_with(Wait::no_wait())
    }

    /// Receive, waiting at most `timeout` for a message to begin.
    ///
    /// # Errors
    /// [`Error::Timeout`]; otherwise as [`Mailbox::recv`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        self.recv_with(Wait::timeout(timeout))
    }

    /// Wait until a message is ready, at most `timeout` (`None`: forever; zero: check
    /// once). `Ok(false)` on timeout; the message stays queued.
    ///
    /// # Errors
    /// As [`Mailbox::begin`].
    pub fn poll(&mut self, timeout: Option<Duration>) -> Result<bool> {
        let wait = if timeout == Some(Duration::ZERO) { Wait::no_wait() } else { Wait::optional(timeout) };
        self.poll_with(wait)
    }

    /// [`Mailbox::poll`] with a [`Wait`].
    ///
    /// # Errors
    /// As [`Mailbox::poll`].
    pub fn poll_with(&mut self, mut wait: Wait<'_>) -> Result<bool> {
        let policy = self.policy;
        let inner = self.inner()?;
        match inner.ready_lane(policy, &mut wait) {
            Ok(lane) => {
                // Leave it queued (and to any copy of this consumer).
                inner.lanes[lane].as_mut().expect("ready lane is open").unstage();
                inner.slotted = None;
                Ok(true)
            }
            Err(Error::Timeout | Error::Empty) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A descriptor for `select`/`poll`/`epoll`/asyncio: readable iff a message is
    /// pending, or every producer that had joined closed or died (end-of-file). The
    /// read end of the mailbox's doorbell FIFO `/dev/shm/shmplane.<name>@rx`, which
    /// producers write only while this handle waits through it. Call it again (or
    /// receive until `Empty`) before each wait to re-arm it.
    ///
    /// # Errors
    /// [`Error::Closed`]; [`Error::InvalidArgument`] (no name); [`Error::NotFound`],
    /// [`Error::Corrupt`] (the doorbell is missing or not a private FIFO), [`Error::Os`].
    pub fn readiness_fd(&mut self) -> Result<RawFd> {
        let inner = self.inner()?;
        // Views released by other threads: their space goes back before this handle
        // waits through the OS (as `Receiver::readiness_fd`).
        inner.apply_released();
        if inner.doorbell.is_none() {
            inner.doorbell = Some(Doorbell::open(&inner.segment, Side::Data)?);
            // Releases queued by other threads ring it too (as a channel's).
            if let Some(name) = inner.segment.name() {
                for rx in inner.lanes.iter().flatten() {
                    rx.set_release_bell(name.to_owned(), Side::Data);
                }
            }
        }
        inner.arm();
        Ok(inner.doorbell.as_ref().map(|d| d.bell.fd()).expect("opened above"))
    }

    /// The full liveness check of the producers, for waits outside this crate:
    /// `Ok` while a message is pending, a producer lives, or none has joined yet.
    ///
    /// # Errors
    /// [`Error::Disconnected`]; [`Error::Closed`]; [`Error::Os`].
    pub fn check_senders(&self) -> Result<()> {
        let inner = self.inner.as_ref().ok_or(Error::Closed)?;
        if inner.any_pending() {
            return Ok(());
        }
        inner.producers_verdict(true)
    }

    /// Producer handles attached now (their lanes' roles read attached; a producer
    /// that died unnoticed still counts until a receive or `check_senders` finds out).
    pub fn senders(&self) -> usize {
        self.inner.as_ref().map_or(0, |inner| {
            (0..inner.lane_count())
                .filter(|l| matches!(liveness::state(inner.segment.role(1 + 2 * l)), ATTACHED | CLOSING))
                .count()
        })
    }

    /// How blocking receives wait (default: [`WaitPolicy::Adaptive`]).
    pub fn wait_policy(&self) -> WaitPolicy {
        self.policy
    }

    /// The policy the next blocking receive follows: [`Mailbox::wait_policy`] with an
    /// adaptive spin as learned (shorter after long waits; none while the producer that
    /// woke this consumer last runs on its CPU: see `shmplane_shm::wait::WaitHistory`).
    pub fn current_wait_policy(&self) -> WaitPolicy {
        self.inner.as_ref().map_or(self.policy, |inner| inner.history.policy(self.policy))
    }

    /// Set how blocking receives wait.
    pub fn set_wait_policy(&mut self, policy: WaitPolicy) {
        self.policy = policy;
    }

    /// Each lane's ring capacity in bytes (0 once closed).
    pub fn lane_capacity(&self) -> usize {
        self.inner.as_ref().map_or(0, |i| i.segment.info().param0 as usize)
    }

    /// The most producer handles at once (0 once closed).
    pub fn max_senders(&self) -> usize {
        self.inner.as_ref().map_or(0, Inner::lane_count)
    }

    /// The mailbox's name (`None` once closed).
    pub fn name(&self) -> Option<&str> {
        self.inner.as_ref().and_then(|i| i.segment.name())
    }

    /// The segment file's path (`None` once closed).
    pub fn path(&self) -> Option<&str> {
        self.inner.as_ref().map(|i| i.segment.path())
    }

    /// The descriptor holding the consumer role (to pass to a child), `None` once closed.
    pub fn fd(&self) -> Option<RawFd> {
        self.inner.as_ref().and_then(|i| i.segment.fd())
    }

    /// True once [`Mailbox::close`] ran.
    pub fn is_closed(&self) -> bool {
        self.inner.is_none()
    }

    /// Close the consuming end: producers get [`Error::Disconnected`] when they next
    /// wait for room. The segment is removed once the last producer closes too.
    /// Idempotent; also done on drop.
    pub fn close(&mut self) {
        // Clients post into the slots this handle polls without waking anyone: a copy
        // of it that serves on (a fork's) must find their calls.
        if let Some(inner) = self.inner.as_mut() {
            inner.unpoll_all();
        }
        if let Some(Inner { segment, mut role, lanes, .. }) = self.inner.take() {
            for (l, rx) in lanes.into_iter().enumerate() {
                if let Some(mut rx) = rx {
                    rx.close();
                    if rx.holds() > 0 {
                        self.closed_lanes.push((l, rx));
                    }
                }
            }
            // A look at the segment that outlives our description, to wake producers
            // asleep for room once role 0 reads closed (they then report it at once).
            let probe = segment.reopen().ok();
            role.close(segment, None);
            if let Some(probe) = probe {
                shmplane_shm::store::wake_mailbox_producers(&probe);
            }
        }
    }
}

/// Makes producers of one mailbox ([`Mailbox::joiner`]): holds a descriptor of the
/// segment (no role).
#[derive(Debug)]
pub struct Joiner {
    segment: Segment,
}

impl Joiner {
    /// A new producer handle on a free lane (as [`Mailbox::sender`]).
    ///
    /// # Errors
    /// As [`Mailbox::sender`].
    pub fn sender(&self) -> Result<Sender> {
        Sender::join(self.segment.reopen()?)
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Some(i) => f
                .debug_struct("Mailbox")
                .field("path", &i.segment.path())
                .field("lane_capacity", &i.segment.info().param0)
                .field("max_senders", &i.lane_count())
                .field("policy", &self.policy)
                .finish(),
            None => f.write_str("Mailbox(closed)"),
        }
    }
}
