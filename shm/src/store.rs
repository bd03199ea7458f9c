//! [`RingStore`] over a [`Segment`]: the production (and heap-test) ring storage.

use crate::header::SegmentKind;
use crate::layout::{
    broadcast_control_offset, broadcast_cursor_offset, broadcast_ring_offset, BroadcastControl, ConsumerLine, SubscriberCursor,
    BROADCAST_LOSSY, CALL_SLOT_OFFSET, CallSlot, MAX_SUBSCRIBERS, mailbox_control_offset, mailbox_lane_stride, mailbox_lanes_offset, role_offset, EventCount, MailboxControl,
    RingControl, RoleEntry, CHANNEL_ROLES, DATA_ALIGN, MAX_MAILBOX_LANES,
};
use crate::ring::{ByteRingStore, RingError, RingStore};
use crate::region::TripFlag;
use crate::segment::Segment;
use crate::sync::AtomicU64;
use crate::bell::Ringer;
use crate::sync::AtomicU32;
use crate::wait::{Park, SharedFutex};

/// A channel segment, or one lane of a mailbox segment, seen as ring storage.
#[derive(Debug)]
pub struct SegmentRing {
    segment: Segment,
    capacity: usize,
    control: usize,
    data: usize,
    /// Role table indexes of this ring's producer and consumer roles (a broadcast's
    /// publisher store: its own role twice).
    roles: [usize; 2],
    /// Byte offset of the word holding this consumer's position.
    head: usize,
    /// Byte offset of this consumer's resume word (`ConsumerLine::resume`, or a
    /// subscriber cursor's).
    resume: usize,
    /// Set for a mailbox lane.
    lane: Option<Lane>,
    /// Set for a broadcast's publisher or subscriber.
    bcast: Option<Bcast>,
    park: RingPark,
    /// The mapping's SIGBUS-guard flag (the segment owns the mapping).
    tripped: TripFlag,
}

/// Where a broadcast's cursors are, and which one is this handle's.
#[derive(Debug, Clone, Copy)]
struct Bcast {
    /// Byte offset of the `BroadcastControl`.
    control: usize,
    /// The most subscribers (cursor lines).
    max: usize,
    /// This subscriber's index (`None`: the publisher).
    sub: Option<usize>,
    lossy: bool,
}

/// Where a mailbox lane reports: its pending bit and the mailbox's event count.
#[derive(Debug, Clone, Copy)]
struct Lane {
    index: usize,
    /// Byte offset of the `MailboxControl`.
    mailbox: usize,
}

/// The shared futex, plus this handle's write end of the peer's doorbell (if the
/// channel has doorbells; see [`crate::bell`]), or the path of one to open at the
/// first ring (a mailbox lane's, made by its sender when it first waits through the
/// OS).
#[derive(Debug, Default)]
pub struct RingPark {
    ringer: Option<Ringer>,
    lazy: Option<(String, crate::bell::Side, std::sync::OnceLock<Ringer>)>,
    /// A broadcast publisher's: the subscribers' doorbells, rung when armed.
    subscribers: Option<SubscriberBells>,
}

/// A broadcast publisher's view of its subscribers' doorbells (`@sub<i>`): the
/// subscriber arms its cursor line's `bell` before the data event's doorbell bit; the
/// publisher's ring takes every armed line's flag and rings its FIFO (opened at the
/// first ring and kept).
#[derive(Debug)]
struct SubscriberBells {
    name: String,
    /// Address of the segment mapping (owned by the `SegmentRing` holding this park).
    base: usize,
    control: usize,
    max: usize,
    ringers: std::sync::Mutex<Vec<Option<Ringer>>>,
}

impl SubscriberBells {
    fn ring(&self) {
        // SAFETY: `base` is the mapping of the validated broadcast segment held by the
        // SegmentRing whose park this is; `ring` runs only through that ring's `&self`
        // (its `segment` field keeps the mapping for as long), and nothing reads through
        // `base` when they drop. The control block and the `max` cursor lines lie inside
        // the mapping (checked by `SegmentRing::broadcast`, whose offsets
        // `set_subscriber_bells` copies).
        let bc: &BroadcastControl = unsafe { &*((self.base + self.control) as *const BroadcastControl) };
        let slots = crate::broadcast::slots(bc, self.max);
        let mut ringers = self.ringers.lock().unwrap_or_else(|e| e.into_inner());
        for i in 0..slots {
            // SAFETY: as above; line `i < max` lies inside the mapping.
            let line: &SubscriberCursor = unsafe { &*((self.base + self.control + size_of::<BroadcastControl>() + i * crate::layout::LINE) as *const SubscriberCursor) };
            if !crate::broadcast::take_bell(line) {
                continue;
            }
            if ringers.len() <= i {
                ringers.resize_with(i + 1, || None);
            }
            if ringers[i].is_none() {
                ringers[i] = Ringer::open(&self.name, crate::bell::Side::Subscriber(i)).ok();
            }
            if let Some(r) = &ringers[i] {
                r.ring();
            }
        }
    }
}

impl Park for RingPark {
    #[inline]
    fn park(&self, word: &AtomicU32, expected: u32, timeout: Option<std::time::Duration>) {
        SharedFutex.park(word, expected, timeout);
    }

    #[inline]
    fn unpark_all(&self, word: &AtomicU32) {
        SharedFutex.unpark_all(word);
    }

    fn ring(&self) {
        if let Some(s) = &self.subscribers {
            s.ring();
        }
        if let Some(r) = &self.ringer {
            r.ring();
        } else if let Some((name, side, cell)) = &self.lazy {
            // Rung only after the waiter armed, so its FIFO exists by now. Only a
            // successful open is kept: a failed one (out of descriptors) is retried at
            // the next ring rather than losing every later wake.
            match cell.get() {
                Some(r) => r.ring(),
                None => {
                    if let Ok(r) = Ringer::open(name, *side) {
                        cell.get_or_init(|| r).ring();
                    }
                }
            }
        }
    }
}

impl SegmentRing {
    /// Wrap a channel segment (header already validated).
    ///
    /// # Panics
    /// If the segment is not a validated channel segment.
    pub fn new(segment: Segment) -> SegmentRing {
        let info = segment.info();
        assert_eq!(info.kind, SegmentKind::Channel);
        let capacity = info.param0 as usize;
        assert_eq!(info.role_count, CHANNEL_ROLES, "a channel segment has {CHANNEL_ROLES} roles");
        let control = segment.control_offset();
        let data = (control + size_of::<RingControl>()).next_multiple_of(DATA_ALIGN);
        assert!(capacity.is_power_of_two() && data + capacity <= segment.region().len());
        let head = control + std::mem::offset_of!(RingControl, head);
        let resume = head + std::mem::offset_of!(ConsumerLine, resume);
        let tripped = segment.region().trip_flag();
        SegmentRing { segment, capacity, control, data, roles: [0, 1], head, resume, lane: None, bcast: None, park: RingPark::default(), tripped }
    }

    /// Wrap a broadcast segment (header already validated) as its publisher
    /// (`sub: None`) or as subscriber `sub`.
    ///
    /// # Panics
    /// If the segment is not a validated broadcast segment or has no subscriber `sub`.
    pub fn broadcast(segment: Segment, sub: Option<usize>) -> SegmentRing {
        let info = segment.info();
        assert_eq!(info.kind, SegmentKind::Broadcast);
        let capacity = info.param0 as usize;
        let max = (info.param1 & 0xFFFF_FFFF) as usize;
        let lossy = info.param1 & BROADCAST_LOSSY != 0;
        assert!(max <= MAX_SUBSCRIBERS && info.role_count == 1 + max && sub.is_none_or(|s| s < max), "no subscriber {sub:?}");
        let control = broadcast_ring_offset(max);
        let data = control + DATA_ALIGN;
        assert!(capacity.is_power_of_two() && data + capacity <= segment.region().len());
        let bc = broadcast_control_offset(max);
        let (roles, head, resume) = match sub {
            Some(i) => {
                let cursor = broadcast_cursor_offset(max, i);
                let (position, resume) = (std::mem::offset_of!(SubscriberCursor, position), std::mem::offset_of!(SubscriberCursor, resume));
                ([0, 1 + i], cursor + position, cursor + resume)
            }
            None => {
                let head = control + std::mem::offset_of!(RingControl, head);
                ([0, 0], head, head + std::mem::offset_of!(ConsumerLine, resume))
            }
        };
        let park = RingPark::default();
        let bcast = Some(Bcast { control: bc, max, sub, lossy });
        let tripped = segment.region().trip_flag();
        SegmentRing { segment, capacity, control, data, roles, head, resume, lane: None, bcast, park, tripped }
    }

    /// A broadcast's publisher: ring the subscribers' doorbells, found by segment name
    /// `name` (its own, or the one its descriptor was opened by).
    pub fn set_subscriber_bells(&mut self, name: String) {
        if let Some(b) = self.bcast.filter(|b| b.sub.is_none()) {
            self.park.subscribers = Some(SubscriberBells {
                name,
                base: self.segment.region().as_ptr() as usize,
                control: b.control,
                max: b.max,
                ringers: std::sync::Mutex::new(Vec::new()),
            });
        }
    }

    /// The broadcast subscriber this ring is, if it is one.
    pub fn subscriber_index(&self) -> Option<usize> {
        self.bcast.and_then(|b| b.sub)
    }

    /// True for a broadcast's publisher.
    pub fn is_publisher(&self) -> bool {
        self.bcast.is_some_and(|b| b.sub.is_none())
    }

    /// True for a lossy broadcast (publisher or subscriber).
    pub fn is_lossy(&self) -> bool {
        self.bcast.is_some_and(|b| b.lossy)
    }

    /// The broadcast control block, for a publisher or subscriber.
    pub fn broadcast_control(&self) -> Option<&BroadcastControl> {
        // SAFETY: `broadcast` checked the segment is a validated broadcast, whose
        // control block (atomics only, 128-aligned) lies at this offset in the region.
        self.bcast.map(|b| unsafe { self.segment.region().at::<BroadcastControl>(b.control) })
    }

    /// Cursor line `i` of a broadcast.
    ///
    /// # Panics
    /// If this is not a broadcast ring or `i` is out of range.
    pub fn cursor(&self, i: usize) -> &SubscriberCursor {
        let b = self.bcast.expect("a broadcast ring");
        assert!(i < b.max, "no cursor line {i}");
        // SAFETY: `broadcast` checked the segment holds `max` cursor lines (atomics
        // only, 128-aligned) after the control block, inside the region.
        unsafe { self.segment.region().at::<SubscriberCursor>(b.control + size_of::<BroadcastControl>() + i * crate::layout::LINE) }
    }

    /// The most subscribers of a broadcast (0 for other rings).
    pub fn max_subscribers(&self) -> usize {
        self.bcast.map_or(0, |b| b.max)
    }

    /// A broadcast subscriber joins: activates its cursor (lossless) or takes the
    /// publisher's newest position and message count (lossy), and stores its start
    /// position (see `crate::broadcast`).
    ///
    /// # Panics
    /// If this is not a subscriber's ring.
    pub fn join_subscriber(&self) -> u64 {
        let b = self.bcast.expect("a broadcast ring");
        let i = b.sub.expect("a subscriber");
        let bc = self.broadcast_control().expect("a broadcast ring");
        let line = self.cursor(i);
        if b.lossy {
            crate::broadcast::join_lossy(bc, line, i)
        } else {
            crate::broadcast::join_lossless(bc, line, i, &self.control().tail.value)
        }
    }

    /// A subscriber waiting through the OS: ask the publisher to ring `@sub<i>`
    /// (before the data event's doorbell bit is armed).
    pub fn arm_subscriber_bell(&self) {
        if let Some(i) = self.subscriber_index() {
            crate::broadcast::arm_bell(self.cursor(i));
        }
    }

    /// The publisher: stop waiting for subscribers whose roles closed, or (with
    /// `dead`) whose processes died. Returns how many it dropped.
    pub fn prune_subscribers(&self, dead: bool) -> usize {
        let Some(b) = self.bcast.filter(|b| b.sub.is_none()) else { return 0 };
        let bc = self.broadcast_control().expect("a broadcast ring");
        let mut dropped = 0;
        for i in 0..crate::broadcast::slots(bc, b.max) {
            let line = self.cursor(i);
            let ticket = crate::broadcast::ticket(line);
            if ticket == 0 {
                continue;
            }
            // By the role's lock alone: a subscriber that just took over the slot of a
            // dead one holds the lock before it activates, while the role's lease may
            // still name the dead one's copies (found by review).
            let gone = match crate::liveness::state(self.segment.role(1 + i)) {
                crate::liveness::CLOSED => true,
                _ if dead => matches!(self.segment.peer_state_by_lock(1 + i), Ok(crate::liveness::PeerState::Dead(_) | crate::liveness::PeerState::Closed)),
                _ => false,
            };
            if gone && crate::broadcast::deactivate(line, ticket) {
                dropped += 1;
            }
        }
        dropped
    }

    /// The publisher: ring the doorbell of every subscriber waiting through the OS.
    pub fn ring_subscribers(&self) {
        if let Some(s) = &self.park.subscribers {
            s.ring();
        }
    }

    /// The publisher: subscribers now (those that closed or died are dropped first).
    pub fn active_subscribers(&self) -> usize {
        let Some(b) = self.bcast else { return 0 };
        self.prune_subscribers(true);
        let bc = self.broadcast_control().expect("a broadcast ring");
        (0..crate::broadcast::slots(bc, b.max)).filter(|&i| crate::broadcast::ticket(self.cursor(i)) != 0).count()
    }


    /// Wrap lane `lane` of a mailbox segment (header already validated).
    ///
    /// # Panics
    /// If the segment is not a validated mailbox segment or has no lane `lane`.
    pub fn lane(segment: Segment, lane: usize) -> SegmentRing {
        let info = segment.info();
        assert_eq!(info.kind, SegmentKind::Mailbox);
        let (capacity, lanes) = (info.param0 as usize, info.param1 as usize);
        assert!(lane < lanes && lanes <= MAX_MAILBOX_LANES && info.role_count == 1 + 2 * lanes, "no lane {lane}");
        let control = mailbox_lanes_offset(lanes) + lane * mailbox_lane_stride(capacity);
        let data = control + DATA_ALIGN;
        assert!(capacity.is_power_of_two() && data + capacity <= segment.region().len());
        let roles = [1 + 2 * lane, 2 + 2 * lane];
        let lane = Some(Lane { index: lane, mailbox: mailbox_control_offset(lanes) });
        let head = control + std::mem::offset_of!(RingControl, head);
        let resume = head + std::mem::offset_of!(ConsumerLine, resume);
        let tripped = segment.region().trip_flag();
        SegmentRing { segment, capacity, control, data, roles, head, resume, lane, bcast: None, park: RingPark::default(), tripped }
    }

    /// The mailbox lane this ring is, if it is one.
    pub fn lane_index(&self) -> Option<usize> {
        self.lane.map(|l| l.index)
    }

    /// Role table index of this ring's role `r` (0 producer, 1 consumer).
    #[inline]
    pub fn role_index(&self, r: usize) -> usize {
        self.roles[r]
    }

    /// Byte offset of this ring's control block in the segment.
    pub fn control_offset(&self) -> usize {
        self.control
    }

    /// Wakes whoever waits on this ring's data event, from any thread, without keeping
    /// the mapping alive (see [`DataWaker`]).
    pub fn data_waker(&self) -> DataWaker {
        DataWaker { region: std::sync::Arc::downgrade(&self.segment.mapping()), offset: self.data_event_offset() }
    }

    /// Byte offset of [`RingStore::data_event`] in the segment.
    pub fn data_event_offset(&self) -> usize {
        match self.lane {
            Some(l) => l.mailbox + std::mem::offset_of!(MailboxControl, data_ready),
            None => self.control + std::mem::offset_of!(RingControl, data_ready),
        }
    }

    /// The mailbox control block, for a lane.
    pub fn mailbox(&self) -> Option<&MailboxControl> {
        // SAFETY: `lane` checked the segment is a validated mailbox, whose control
        // block (atomics only, 128-aligned) lies at this offset inside the region.
        self.lane.map(|l| unsafe { self.segment.region().at::<MailboxControl>(l.mailbox) })
    }

    /// The call slot of a mailbox lane ([`crate::callslot`]); `None` for other rings.
    pub fn call_slot(&self) -> Option<&CallSlot> {
        // SAFETY: `lane` checked that the lane's control page (DATA_ALIGN bytes from
        // `control`) lies inside the region; the slot is at a 128-aligned offset in it
        // (layout's assertions) and holds atomics only.
        self.lane.map(|_| unsafe { self.segment.region().at::<CallSlot>(self.control + CALL_SLOT_OFFSET) })
    }

    /// A mailbox lane's producer, after posting a request in the lane's call slot: mark
    /// the lane pending (while `posted()` says the request is still there, as
    /// `notify_data` does for records) and wake the consumer if it sleeps (doorbells
    /// included). `streak` as for [`EventCount::notify_counted`].
    pub fn notify_posted(&self, posted: impl Fn() -> bool, streak: &mut u32) {
        if let (Some(l), Some(m)) = (self.lane, self.mailbox()) {
            crate::mailbox::mark_pending(m, l.index, posted);
            m.data_ready.value.notify_counted(&self.park, streak);
        }
    }

    /// The descriptor of this handle's write end of the peer's doorbell, if any.
    pub fn ringer_fd(&self) -> Option<std::os::fd::RawFd> {
        self.park.ringer.as_ref().map(Ringer::fd)
    }

    /// Ring `ringer` (the peer's doorbell) when a waiter armed it.
    pub fn set_ringer(&mut self, ringer: Option<Ringer>) {
        self.park.ringer = ringer;
    }

    /// Ring doorbell `side` of segment `name`, opened at the first ring, when a waiter
    /// armed it (a mailbox lane's consumer ringing the lane's sender).
    pub fn set_lazy_ringer(&mut self, name: String, side: crate::bell::Side) {
        self.park.lazy = Some((name, side, std::sync::OnceLock::new()));
    }

    /// The segment.
    pub fn segment(&self) -> &Segment {
        &self.segment
    }

    /// Role `R`'s entry (0 producer, 1 consumer), without a run-time bounds check: the
    /// hot path of every operation (see [`crate::lease`]).
    #[inline(always)]
    pub fn role<const R: usize>(&self) -> &RoleEntry {
        const { assert!(R < CHANNEL_ROLES) };
        // SAFETY: `new` checked the segment has CHANNEL_ROLES roles, `lane` that it has
        // 1 + 2 * lanes with `roles = [1 + 2 * lane, 2 + 2 * lane]`, and `broadcast`
        // that it has 1 + max with `roles[1] = 1 + sub`, `sub < max`; so entry
        // `roles[R]` lies in the validated role table; RoleEntry is atomics-only and
        // 128-aligned there.
        unsafe { self.segment.region().at(role_offset(self.roles[R])) }
    }

    /// Unwrap the segment (to close it).
    pub fn into_segment(self) -> Segment {
        self.segment
    }

    /// A subscriber's own cursor line (its `head` word is the line's first).
    #[inline]
    fn head_cursor(&self) -> &SubscriberCursor {
        // SAFETY: for a subscriber, `head` is the offset of its cursor line (position
        // is the line's first field), 128-aligned inside the region (checked by
        // `broadcast`); atomics only.
        unsafe { self.segment.region().at(self.head) }
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: data + capacity <= region length (checked in new).
        unsafe { self.segment.region().as_ptr().add(self.data) }
    }
}

// SAFETY: `new` checked that the data area (`capacity` bytes, a power of two, from the
// page-aligned data offset) and the control block lie inside the mapping, which lives as
// long as the store; `header` asserts its offset; `read`/`write` copy the given range.
unsafe impl RingStore for SegmentRing {
    type Park = RingPark;

    #[inline]
    fn control(&self) -> &RingControl {
        // SAFETY: RingControl is atomics-only, at the 128-aligned control offset, inside
        // the region (new checked the segment length).
        unsafe { self.segment.region().at(self.control) }
    }

    #[inline]
    fn capacity(&self) -> usize {
        self.capacity
    }

    #[inline]
    fn header(&self, offset: usize) -> &AtomicU64 {
        assert!(offset < self.capacity && offset % 8 == 0, "header offset out of range");
        // SAFETY: in bounds and 8-aligned (asserted; the data area is page-aligned); an
        // AtomicU64 may alias memory that peers access atomically.
        unsafe { &*(self.data().add(offset) as *const AtomicU64) }
    }

    #[inline]
    unsafe fn write(&self, offset: usize, src: &[u8]) {
        debug_assert!(offset + src.len() <= self.capacity);
        // SAFETY: caller guarantees the range is in bounds and exclusively ours.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.data().add(offset), src.len()) };
    }

    #[inline]
    unsafe fn read(&self, offset: usize, dst: *mut u8, len: usize) {
        debug_assert!(offset + len <= self.capacity);
        if self.bcast.is_some_and(|b| b.lossy && b.sub.is_some()) {
            // A lossy publisher may be overwriting these bytes while we copy them (the
            // copy is then discarded: `Consumer::check_read`): volatile loads, so that
            // the racing read is not a data race the compiler may exploit (as
            // crossbeam's seqlock reads).
            // SAFETY: as below; `volatile_copy` reads only `offset..offset + len`.
            unsafe { volatile_copy(self.data().add(offset), dst, len) };
            return;
        }
        // SAFETY: caller guarantees the range is in bounds and holds an acquired record,
        // and that `dst` is valid for `len` writes outside the ring.
        unsafe { std::ptr::copy_nonoverlapping(self.data().add(offset), dst, len) };
    }

    #[inline]
    fn park(&self) -> &RingPark {
        &self.park
    }

    #[inline]
    fn data_event(&self) -> &EventCount {
        match self.mailbox() {
            Some(m) => &m.data_ready.value,
            None => &self.control().data_ready.value,
        }
    }

    #[inline]
    fn notify_data(&self, streak: &mut u32) {
        match (self.lane, self.mailbox()) {
            (Some(l), Some(m)) => {
                let ctl = self.control();
                crate::mailbox::mark_pending(m, l.index, || {
                    // ORDERING: Acquire, partner of the consumer's Release in `advance`;
                    // the tail is our own store.
                    ctl.head.value.position.load(crate::sync::Ordering::Acquire) < ctl.tail.value.load(crate::sync::Ordering::Relaxed)
                });
                m.data_ready.value.notify_counted(&self.park, streak);
            }
            _ => self.control().data_ready.value.notify_counted(&self.park, streak),
        }
    }

    #[inline]
    fn head_word(&self) -> &AtomicU64 {
        // SAFETY: `head` is the 8-aligned offset of this consumer's position word
        // (the ring's `head`, or a broadcast cursor line's `position`), inside the
        // region (checked by the constructors); atomics only.
        unsafe { self.segment.region().at(self.head) }
    }

    #[inline]
    fn holds_records(&self) -> bool {
        !self.bcast.is_some_and(|b| b.lossy && b.sub.is_some())
    }

    #[inline]
    fn resume_word(&self) -> &AtomicU64 {
        // SAFETY: `resume` is the 8-aligned offset of this consumer's resume word (the
        // ring's head line, or a broadcast cursor line), inside the region (checked by
        // the constructors with the position word, on the same line); atomics only.
        unsafe { self.segment.region().at(self.resume) }
    }

    #[inline]
    fn store_head(&self, head: u64, tag: u32) {
        match self.bcast {
            Some(b) if b.sub.is_some() => {
                crate::broadcast::store_position(self.head_cursor(), head, crate::broadcast::starts_message(tag), b.lossy);
            }
            // ORDERING: Release, partner of the producer's Acquire in
            // `consumers_position`.
            _ => self.head_word().store(head, crate::sync::Ordering::Release),
        }
    }

    #[inline]
    fn consumers_position(&self, floor: u64, tail: u64, need: u64) -> Result<u64, RingError> {
        match self.bcast {
            Some(b) if b.sub.is_none() => {
                let bc = self.broadcast_control().expect("a broadcast ring");
                if b.lossy {
                    if need == 0 {
                        return Ok(crate::broadcast::oldest_position(&bc.oldest.value));
                    }
                    return crate::broadcast::reclaim(self, &bc.oldest.value, tail, need);
                }
                Ok(crate::broadcast::slowest(bc, b.max, |i| self.cursor(i), floor, tail))
            }
            // ORDERING: Acquire, partner of the consumer's Release in `store_head`.
            _ => Ok(self.head_word().load(crate::sync::Ordering::Acquire)),
        }
    }

    #[inline]
    fn published(&self, tail: u64, tag: u32) {
        if self.bcast.is_some_and(|b| b.lossy && b.sub.is_none()) {
            let bc = self.broadcast_control().expect("a broadcast ring");
            let (_, seq) = crate::broadcast::read_pair(&bc.newest.value);
            let seq = seq.wrapping_add(u64::from(crate::broadcast::starts_message(tag)));
            crate::broadcast::write_pair(&bc.newest.value, tail, seq);
        }
    }

    fn resumed(&self, tail: u64) -> Result<(), RingError> {
        match self.bcast {
            Some(b) if b.lossy && b.sub.is_none() => {
                crate::broadcast::resync_newest(self, &self.broadcast_control().expect("a broadcast ring").newest.value, tail)
            }
            _ => Ok(()),
        }
    }

    #[inline(always)]
    fn tripped(&self) -> bool {
        self.tripped.get()
    }

    #[inline]
    fn overrun(&self, position: u64) -> bool {
        match self.bcast {
            Some(b) if b.lossy => crate::broadcast::overrun(&self.broadcast_control().expect("a broadcast ring").oldest.value, position),
            _ => false,
        }
    }

    fn skip_to_oldest(&self, head: u64) -> Option<(u64, u64)> {
        let bc = self.broadcast_control().expect("a broadcast ring");
        crate::broadcast::skip_to_oldest(&bc.oldest.value, self.head_cursor(), head)
    }

    #[inline]
    fn lossy(&self) -> bool {
        self.bcast.is_some_and(|b| b.lossy && b.sub.is_none())
    }

    #[inline]
    fn prefetch(&self, offset: usize, write: bool) {
        let p = self.data().wrapping_add(offset.min(self.capacity - 1));
        prefetch_line(p, write);
    }
}

/// Copy `len` bytes from `src` (shared memory another process may be writing) to
/// `dst` with volatile loads: bytes up to an 8-byte boundary, then words, then bytes.
///
/// # Safety
/// `src` valid for reads and `dst` for writes of `len` bytes; they do not overlap.
unsafe fn volatile_copy(src: *const u8, dst: *mut u8, len: usize) {
    let head = src.align_offset(8).min(len);
    let words = (len - head) / 8;
    // SAFETY: every access is within `0..len` of `src`/`dst` (the caller's contract);
    // the word loads are 8-aligned (after `head` bytes); the stores are unaligned.
    unsafe {
        for i in 0..head {
            dst.add(i).write(std::ptr::read_volatile(src.add(i)));
        }
        for w in 0..words {
            let at = head + 8 * w;
            let word = std::ptr::read_volatile(src.add(at).cast::<u64>());
            dst.add(at).cast::<u64>().write_unaligned(word);
        }
        for i in head + 8 * words..len {
            dst.add(i).write(std::ptr::read_volatile(src.add(i)));
        }
    }
}

/// Ask for the cache line at `p`: shared for reading, or owned (`write`), so a later
/// store does not wait for the other core to give the line up.
#[inline(always)]
fn prefetch_line(p: *const u8, write: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        if write {
            // `_mm_prefetch::<_MM_HINT_ET0>` compiles to a plain `prefetcht0` unless the
            // build enables `prfchw`, so emit PREFETCHW itself. Intel CPUs without it
            // (before Broadwell) decode `0F 0D /1` as a NOP; every AMD64 CPU has it.
            // SAFETY: a prefetch never faults, writes nothing architecturally and
            // touches no registers but its address operand.
            unsafe { std::arch::asm!("prefetchw [{p}]", p = in(reg) p, options(nostack, preserves_flags, readonly)) };
        } else {
            // SAFETY: as above; `_mm_prefetch` takes any address.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast()) };
        }
    }
    let _ = (p, write);
}

// SAFETY: `data_ptr` is byte 0 of the data area `header`/`read`/`write` address,
// valid for `capacity` bytes while the mapping lives (as long as the store).
unsafe impl ByteRingStore for SegmentRing {
    #[inline]
    fn data_ptr(&self) -> *mut u8 {
        self.data()
    }
}

/// A slot segment seen as seqlock storage.
#[derive(Debug)]
pub struct SegmentSlot {
    segment: Segment,
    words: usize,
    lines: usize,
    copies: [usize; 2],
}

impl SegmentSlot {
    /// Wrap a validated slot segment.
    ///
    /// # Panics
    /// If the segment is not a validated slot segment.
    pub fn new(segment: Segment) -> SegmentSlot {
        let info = segment.info();
        assert_eq!(info.kind, SegmentKind::Slot);
        let bytes = info.param0 as usize;
        assert!(crate::layout::slot_segment_len(bytes) <= segment.region().len());
        let copies = [crate::layout::slot_copy0_offset(bytes), crate::layout::slot_copy1_offset(bytes)];
        SegmentSlot { words: crate::layout::slot_words(bytes), lines: crate::layout::slot_lines(bytes), copies, segment }
    }

    /// The segment.
    pub fn segment(&self) -> &Segment {
        &self.segment
    }

    /// Unwrap the segment (to close it).
    pub fn into_segment(self) -> Segment {
        self.segment
    }
}

/// A slot's futex, plus its reader doorbells: a writer's notify that finds the
/// doorbell armed rings every reader FIFO named in the slot's table.
impl Park for SegmentSlot {
    #[inline]
    fn park(&self, word: &AtomicU32, expected: u32, timeout: Option<std::time::Duration>) {
        SharedFutex.park(word, expected, timeout);
    }

    #[inline]
    fn unpark_all(&self, word: &AtomicU32) {
        SharedFutex.unpark_all(word);
    }

    fn ring(&self) {
        if let Some(name) = self.segment.name() {
            crate::bell::ring_slot_readers(name, &crate::seqlock::SlotStore::control(self).bells.value);
        }
    }
}

impl crate::seqlock::SlotStore for SegmentSlot {
    type Park = SegmentSlot;

    #[inline]
    fn control(&self) -> &crate::layout::SlotControl {
        // SAFETY: SlotControl is atomics-only, at its fixed 128-aligned offset, inside
        // the region (new checked the segment length).
        unsafe { self.segment.region().at(crate::layout::SLOT_CONTROL_OFFSET) }
    }

    #[inline]
    fn words(&self) -> usize {
        self.words
    }

    #[inline]
    fn copy_lines(&self, copy: usize) -> &[AtomicU64] {
        assert!(copy < 2, "slot copy out of range");
        // SAFETY: `lines * 8` AtomicU64s from the copy's offset are inside the region
        // (new checked the length against `slot_segment_len`) and 64-aligned (both copy
        // offsets are the 128-aligned data offset plus whole 64-byte lines); atomics
        // only, so a peer's stores are not data races; they live as long as `self` (the
        // mapping).
        unsafe {
            std::slice::from_raw_parts(
                self.segment.region().as_ptr().add(self.copies[copy]).cast::<AtomicU64>(),
                self.lines * (crate::layout::SLOT_LINE_WORDS + 1),
            )
        }
    }

    #[inline]
    fn park(&self) -> &SegmentSlot {
        self
    }
}

/// The control block of a mailbox segment (`None` for another kind).
#[inline]
pub fn mailbox_control(segment: &Segment) -> Option<&MailboxControl> {
    let info = segment.info_ref();
    if info.kind != SegmentKind::Mailbox {
        return None;
    }
    let off = mailbox_control_offset(info.param1 as usize);
    assert!(off + size_of::<MailboxControl>() <= segment.region().len());
    // SAFETY: a validated mailbox segment (its length was checked against its
    // parameters) has its control block, atomics only and 128-aligned, at this offset;
    // asserted in bounds above.
    Some(unsafe { segment.region().at::<MailboxControl>(off) })
}

/// The call slot of lane `lane` of a mailbox segment ([`crate::callslot`]), through
/// the consumer's own mapping (no lane handle): `None` for another kind or a lane it
/// does not have.
pub fn mailbox_call_slot(segment: &Segment, lane: usize) -> Option<&CallSlot> {
    let info = segment.info_ref();
    let (capacity, lanes) = (info.param0 as usize, info.param1 as usize);
    if info.kind != SegmentKind::Mailbox || lane >= lanes {
        return None;
    }
    let off = mailbox_lanes_offset(lanes) + lane * mailbox_lane_stride(capacity) + CALL_SLOT_OFFSET;
    assert!(off + size_of::<CallSlot>() <= segment.region().len());
    // SAFETY: a validated mailbox segment (its length was checked against its
    // parameters) has lane `lane`'s control page at this offset, and its call slot,
    // atomics only and 128-aligned, CALL_SLOT_OFFSET into it (as `SegmentRing::lane`
    // and `call_slot` compute it); asserted in bounds above.
    Some(unsafe { segment.region().at::<CallSlot>(off) })
}

/// A mailbox's pending summary in a mapping of its own (no descriptor, no role): lets
/// any thread ask "is a message waiting?" with one load per 64 lanes, without the
/// consumer's handle, for as long as the probe lives.
#[derive(Debug)]
pub struct PendingProbe {
    region: std::sync::Arc<crate::region::Region>,
    offset: usize,
    words: usize,
    /// The bits of the last word that name lanes (a stray bit beyond them, in shared
    /// memory that is untrusted, must not read as a message).
    last_mask: u64,
    /// Non-zero once [`PendingProbe::close`] ran: [`PendingProbe::any`] says false.
    closed: AtomicU32,
}

impl PendingProbe {
    /// Map `segment` (a mailbox) again for probing.
    ///
    /// # Errors
    /// [`crate::Error::WrongKind`] for another kind; [`crate::Error::InvalidArgument`]
    /// for a heap segment; [`crate::Error::Os`].
    pub fn new(segment: &Segment) -> crate::Result<PendingProbe> {
        let info = segment.info();
        if info.kind != SegmentKind::Mailbox {
            return Err(crate::Error::WrongKind {
                path: segment.path().to_owned(),
                expected: "mailbox",
                found: info.kind.name().into(),
            });
        }
        let lanes = info.param1 as usize;
        let offset = mailbox_control_offset(lanes);
        let region = segment.reopen()?.into_region();
        assert!(offset + size_of::<MailboxControl>() <= region.len());
        let rest = lanes % 64;
        let last_mask = if rest == 0 { !0 } else { (1u64 << rest) - 1 };
        Ok(PendingProbe { region, offset, words: lanes.div_ceil(64), last_mask, closed: AtomicU32::new(0) })
    }

    /// From now on, [`PendingProbe::any`] says false (the mailbox handle it probes for
    /// was closed).
    pub fn close(&self) {
        // ORDERING: Relaxed: a flag of this process's handle; a probe racing the close
        // may answer either way.
        self.closed.store(1, crate::sync::Ordering::Relaxed);
    }

    /// True if any lane may hold a message (see `shmplane::Mailbox::pending`).
    #[inline]
    pub fn any(&self) -> bool {
        // ORDERING: Relaxed (see `close`).
        if self.closed.load(crate::sync::Ordering::Relaxed) != 0 {
            return false;
        }
        // SAFETY: `new` checked (asserted) the control block lies inside the mapping,
        // at the 128-aligned offset of a validated mailbox; atomics only.
        let m: &MailboxControl = unsafe { self.region.at(self.offset) };
        let last = self.words - 1;
        (0..last).any(|w| crate::mailbox::pending_word(m, w) != 0) || crate::mailbox::pending_word(m, last) & self.last_mask != 0
    }
}

/// Wake every producer of mailbox `segment` asleep waiting for room on its lane (each
/// lane's `space_ready`), and ring each lane doorbell a sender made (a sender waiting
/// through the OS): after the consumer closed, so that they see it at once.
pub fn wake_mailbox_producers(segment: &Segment) {
    if let Some(name) = segment.name() {
        for lane in 0..segment.info_ref().param1 as usize {
            if let Ok(r) = Ringer::open(name, crate::bell::Side::LaneSpace(lane)) {
                r.ring();
            }
        }
    }
    let info = segment.info_ref();
    if info.kind != SegmentKind::Mailbox {
        return;
    }
    let (capacity, lanes) = (info.param0 as usize, info.param1 as usize);
    for lane in 0..lanes {
        let off = mailbox_lanes_offset(lanes) + lane * mailbox_lane_stride(capacity) + std::mem::offset_of!(RingControl, space_ready);
        assert!(off + size_of::<EventCount>() <= segment.region().len());
        // SAFETY: a validated mailbox segment holds every lane's RingControl (atomics
        // only, 128-aligned) at this offset; asserted in bounds above.
        let ev: &EventCount = unsafe { segment.region().at(off) };
        ev.wake_all(&SharedFutex);
    }
}

/// Wakes the waiters of a ring's data event (a receiver waiting for a message) from any
/// thread: a view of a message released by another thread while the receiver waits.
/// Holds the mapping weakly: it never keeps a closed segment mapped (nor its file
/// description, which holds the role locks).
#[derive(Debug, Clone)]
pub struct DataWaker {
    region: std::sync::Weak<crate::region::Region>,
    offset: usize,
}

impl DataWaker {
    /// Wake every waiter (they re-check and sleep again if nothing changed for them).
    pub fn wake(&self) {
        let Some(region) = self.region.upgrade() else { return };
        if self.offset + std::mem::size_of::<crate::layout::EventCount>() > region.len() {
            return;
        }
        // SAFETY: in bounds (checked), the 8-aligned offset of an EventCount in the
        // kind's layout (`data_event_offset`); atomics only.
        let ev: &crate::layout::EventCount = unsafe { region.at(self.offset) };
        ev.wake_all(&SharedFutex);
    }
}
