//! Descriptors of every layout shared between processes.
//!
//! Modelled on Agrona's `RingBufferDescriptor` and Aeron's `aeron_rb.h`: one `#[repr(C)]`
//! struct per shared layout, control words on their own 128-byte lines at explicit
//! offsets (two adjacent 64-byte lines, because Intel's spatial prefetcher pulls pairs),
//! and `const` assertions that pin every size and offset. A change to any of them must
//! bump [`ABI_VERSION`]; [`LAYOUT_HASH`] is stored in every segment header so that a
//! binary built with a different layout refuses the segment instead of misreading it.
//!
//! Every field of a shared layout is an atomic: a peer process may write any byte at
//! any time, so plain (non-atomic) reads of shared bytes would be data races.

use crate::sync::{AtomicU32, AtomicU64};

/// Size of one padded control line in bytes. Fixed (not target-dependent like
/// crossbeam's `CachePadded`) because both processes must agree on it.
pub const LINE: usize = 128;

/// Alignment of the data area inside a segment: one page, so that records can be
/// handed out page-aligned for large zero-copy payloads.
pub const DATA_ALIGN: usize = 4096;

/// Magic number at offset 0 of every shmplane segment: `b"SHMPLANE"` little-endian.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMPLANE");

/// Version of the shared-memory ABI: the layouts of this file and the protocols run over
/// them. Bump on any change to either. 3: notifiers skip their fence, so every waiter
/// must issue the heavy half (`membarrier`) before it re-checks (see [`crate::wait`]).
/// 4: a role table sized by the segment kind, after a one-line header; role entries
/// carry the copy lease of [`crate::lease`]; the header records the message format's
/// version ([`WIRE_VERSION`]). 5: `EventCount::waiters` carries the sleeping regime
/// and the doorbell bits, and notifiers ring channel doorbells ([`crate::bell`]).
/// 6: mailboxes (kind 3); `RingStatus::wake_at` (a producer asleep for room is woken
/// once its record and half the ring are free); slot writer ids carry the low bits of
/// the writer's start time.
/// 7: broadcast (kind 4): subscriber cursor lines and the lossy oldest/newest pairs;
/// `EventCount::waiters` bit 28 `ARMED` (notifiers skip the wake syscall while every
/// counted sleeper was already woken).
/// 8: `RingStatus::whole` (a consumer that views messages in place asks the producer
/// for one record per message); consumers hold records and release them out of order.
/// 9: copy 1 of a slot of up to three words on its own line; slot readers of a number load one word
/// of copy 1 without the sequence, and `done` is stored with Release (see
/// [`crate::seqlock`]: "Committed words"); consumers publish a resume position while
/// they hold records ([`ConsumerLine::resume`], [`SubscriberCursor::resume`]).
/// 10: spacers (a padding record of its header alone after a large record, see
/// [`crate::ring`]), which older consumers would refuse as corrupt.
/// 11: a call slot in each mailbox lane's control page ([`CallSlot`], see
/// [`crate::callslot`]): an RPC client posts a small request there, and the server
/// replies in place.
/// 12: the call slot's state word is `seq << 3 | POLLED | phase`: a server that polls
/// the slot directly lets clients post without a pending bit (see
/// [`crate::callslot::POLLED`]); the slot keeps the envelope's id and flags in `meta`
/// instead of in front of the payload, so that a call of up to 48 bytes and the slot's
/// header share one line ([`crate::callslot::meta`]).
/// 13: a slot's copy 0 follows the sequence at once for values of any size (it had
/// lines of its own above three words; see [`SLOT_DATA_OFFSET`]).
/// 14: a version word in every 64-byte line of a slot's copies (seven value words
/// each) instead of one latch sequence in front of copy 0; the writer's sequence moves
/// into [`SlotWriter`] (see [`crate::seqlock`]).
/// 15: a slot is made whole before its header is published (both copies hold the
/// initial value, every copy-0 line version is 2, `seq = done = 2`) and every line of
/// copy 1 ends with [`SLOT_CANARY`] (a line's marker, copy 0's version included, is
/// its last word: [`SLOT_MARKER_WORD`]), so a line a truncation zeroed (a cut inside a
/// mapped page raises no SIGBUS) reads as corrupt instead of as data.
pub const ABI_VERSION: u32 = 15;

/// Version of the message format that channels carry in their records (tags, array
/// descriptors, multipart payloads, chunking; `docs/wire-format.md`, implemented by the
/// `shmplane` crate's `frame` module). Stored in every segment header; a segment of
/// another version is refused as incompatible.
pub const WIRE_VERSION: u32 = 2;

/// A value on its own 128-byte line.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub struct Padded<T> {
    /// The padded value.
    pub value: T,
}

/// Epoch + waiters pair: the futex word a side sleeps on and the count of sleepers
/// that tells the other side whether a wake syscall is needed (see [`crate::wait`]).
#[repr(C)]
#[derive(Debug, Default)]
pub struct EventCount {
    /// Futex word. Incremented (wrapping) by the notifier when `waiters != 0`.
    pub epoch: AtomicU32,
    /// Low 28 bits: number of threads, in any process, between `prepare_wait` and
    /// `finish_wait`. Bit 28 `ARMED`: a sleeper announced itself since the last wake.
    /// Bit 30 `FENCED`: the waiting side is in its sleeping regime and
    /// notifiers fence before deciding; bit 29 `FENCED_READY`: that regime is in force
    /// (see `crate::wait`).
    pub waiters: AtomicU32,
    /// CPU + 1 of the notifier that last woke sleepers here (0: none yet). A hint,
    /// written on the wake path only (a syscall follows): a woken waiter that runs on
    /// that CPU shares it with its peer, and its next adaptive wait sleeps at once
    /// instead of spinning (see `crate::wait::WaitHistory`). It lies in what was the
    /// padding of this line: a segment of a build without it reads 0 (unknown).
    pub waker_cpu: AtomicU32,
}

/// Copies of one role that may use it, one after another (see [`crate::lease`]):
/// processes that inherited or were passed a handle of the endpoint and used it.
pub const MAX_COPIES: usize = 8;

/// One copy of an endpoint that has used its role (see [`crate::lease`]).
#[repr(C)]
#[derive(Debug, Default)]
pub struct CopyEntry {
    /// Process key ([`crate::liveness::key_of`]: pid and start time) of the process
    /// whose copy owns this entry; 0 = free. Set by compare-and-swap from 0 (or from a
    /// dead process's key), cleared when the copy closes.
    pub owner: AtomicU64,
    /// The copy's number within its process (diagnostics only).
    pub copy: AtomicU32,
    /// What the copy is doing ([`crate::lease`]): 0 idle, 1 inside an operation on the
    /// role, 2 waiting for its turn (it wants the lease). Written only by the owning
    /// copy (plain stores: the hot path); read by copies taking the lease.
    pub state: AtomicU32,
}

/// One endpoint role's record (see [`crate::liveness`] and [`crate::lease`]): its
/// state, which copy may operate on it, and which copies exist.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub struct RoleEntry {
    /// [`crate::liveness`] state: 0 vacant, 1 attached, 2 closed, 3 closing.
    pub state: AtomicU32,
    _pad: AtomicU32,
    /// The copy that may operate on the role: `acquisition count << 4 | copy index`
    /// (index into `copies`); 0 = none since the role was attached or released.
    /// The count makes the values of successive acquisitions differ (it starts again
    /// after a release to 0, which is harmless: only the owner of a copy entry writes
    /// values with its index).
    pub lease: AtomicU64,
    /// The copies that have used the role.
    pub copies: [CopyEntry; MAX_COPIES],
}

/// Largest role table: enough for a mailbox of 1023 producers.
pub const MAX_ROLES: usize = 1024;

/// Byte offset (in the segment file) of the byte-range lock of the initialising
/// creator. Locks may lie beyond end of file; they never touch the mapping.
pub const INIT_LOCK_BYTE: u64 = 1 << 40;
/// Byte offset of role `i`'s lock: `ROLE_LOCK_BYTE + i`.
pub const ROLE_LOCK_BYTE: u64 = INIT_LOCK_BYTE + 16;
/// Byte offset of the first copy claim lock (see [`copy_lock_byte`]).
pub const COPY_LOCK_BYTE: u64 = INIT_LOCK_BYTE + 16 + MAX_ROLES as u64;

/// Byte offset of the lock that the copy owning entry `index` of role `role` holds on
/// a descriptor of its own (see [`crate::lease::Copies`]).
pub const fn copy_lock_byte(role: usize, index: usize) -> u64 {
    COPY_LOCK_BYTE + (role * MAX_COPIES + index) as u64
}

/// Segment header: the first line of every segment, followed by the role table
/// (`role_count` [`RoleEntry`]s at [`ROLE_TABLE_OFFSET`]) and then the kind's own
/// layout at [`control_offset`]. Written by the creator before it stores `init_state =
/// READY` (Release); read by openers only after an Acquire load of `init_state` sees
/// `READY`, and then validated field by field (untrusted input).
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub struct SegmentHeader {
    /// [`MAGIC`].
    pub magic: AtomicU64,
    /// [`ABI_VERSION`] in the low 32 bits, [`crate::header::SegmentKind`] in the high 32.
    pub version_kind: AtomicU64,
    /// [`LAYOUT_HASH`] of the creating binary.
    pub layout_hash: AtomicU64,
    /// Total segment length in bytes; must equal the file size.
    pub total_len: AtomicU64,
    /// Kind-specific parameter 0 (see [`crate::kind`]).
    pub param0: AtomicU64,
    /// Kind-specific parameter 1 (see [`crate::kind`]).
    pub param1: AtomicU64,
    /// Process id of the creator.
    pub creator_pid: AtomicU32,
    /// `INIT_BUSY` (0) while the creator writes the header, `INIT_READY` when usable.
    pub init_state: AtomicU32,
    /// [`WIRE_VERSION`] of the creating library.
    pub wire_version: AtomicU32,
    /// Number of entries in the role table (as the kind's spec computes it).
    pub role_count: AtomicU32,
    _reserved: [AtomicU64; 8],
}

/// Byte offset of the role table: right after the one-line header.
pub const ROLE_TABLE_OFFSET: usize = size_of::<SegmentHeader>();
/// Size of one role entry in bytes.
pub const ROLE_ENTRY_SIZE: usize = size_of::<RoleEntry>();

/// Byte offset of role `role`'s entry.
pub const fn role_offset(role: usize) -> usize {
    ROLE_TABLE_OFFSET + role * ROLE_ENTRY_SIZE
}

/// Byte offset of a kind's control block in a segment with `role_count` roles: right
/// after the role table, on a 128-byte line.
pub const fn control_offset(role_count: usize) -> usize {
    role_offset(role_count)
}

/// `init_state` while the creator is still writing the header.
pub const INIT_BUSY: u32 = 0;
/// `init_state` once the segment is fully initialised.
pub const INIT_READY: u32 = 0x5245_4459; // "REDY" read as a big-endian number

/// Control block of an SPSC record ring. Producer- and consumer-written words sit on
/// separate lines so that neither side's stores invalidate the other's hot line.
#[repr(C)]
#[derive(Debug, Default)]
pub struct RingControl {
    /// Producer position: total bytes committed since creation. Written only by the
    /// producer (after each commit), read to resume after a producer restarts.
    pub tail: Padded<AtomicU64>,
    /// Consumer position (total bytes released since creation) and resume position.
    /// Written only by the consumer; the position is read by the producer when its
    /// cached copy says the ring is full.
    pub head: Padded<ConsumerLine>,
    /// Consumer sleeps here waiting for data; producer notifies after each commit.
    pub data_ready: Padded<EventCount>,
    /// Producer sleeps here waiting for space; consumer notifies after each release.
    pub space_ready: Padded<EventCount>,
    /// Poisoning and the producer's cut mark: written rarely, read by the consumer
    /// while it waits part-way through a message.
    pub status: Padded<RingStatus>,
}

/// The consumer's line of a ring (see [`RingControl::head`]).
#[repr(C)]
#[derive(Debug, Default)]
pub struct ConsumerLine {
    /// Consumer position: total bytes released since creation.
    pub position: AtomicU64,
    /// Where a copy of the consumer that takes over resumes if it is ahead of
    /// `position`: the private position of a consumer that holds records (zero-copy
    /// views), published at each record it moves past while it holds any. Records
    /// between `position` and here were delivered (held, or received behind a hold):
    /// a copy that takes over after the holder died skips them instead of delivering
    /// them twice, and gives their space back (see `ring::Consumer::resync`).
    pub resume: AtomicU64,
}

/// The rarely-written words of a ring (see [`RingControl::status`]).
#[repr(C)]
#[derive(Debug, Default)]
pub struct RingStatus {
    /// Non-zero once a side found the ring corrupt (the reason code).
    pub poisoned: AtomicU32,
    /// Non-zero once the consumer asked to view messages in place (zero-copy receive):
    /// the producer then sends every message that fits one record as one record,
    /// instead of streaming those over [`CHUNK_THRESHOLD`](../../shmplane/frame) bytes
    /// in chunks (a chunked message cannot be viewed whole). A hint: read Relaxed.
    pub whole: AtomicU32,
    /// `position + 1` where the producer abandoned a message that spans several
    /// records (0: never): a consumer part-way through a message that finds nothing
    /// more at this position knows the rest will not come (see `crate::ring`).
    pub cut: AtomicU64,
    /// The consumer position at which the producer, asleep waiting for room, wants to
    /// be woken (once half the ring, or its record, is free): a consumer wakes it only
    /// when its position reaches this, not at every record it frees (see
    /// `crate::ring`). 0: at once.
    pub wake_at: AtomicU64,
}

/// Writer lock of a latest-value slot: who writes now, and how far writes completed.
#[repr(C)]
#[derive(Debug, Default)]
pub struct SlotWriter {
    /// 0 when free, else the holder's `liveness::writer_id` (pid, low bits of its start
    /// time, thread id; see `crate::seqlock`).
    pub owner: AtomicU64,
    /// Sequence at which the last write completed. `!= seq` after a writer died
    /// mid-write: the next writer repairs the torn copy first.
    pub done: AtomicU64,
    /// The writer's sequence: `done + 1` (odd) while a write is in copy 0, `done + 2`
    /// while it is in copy 1, then `done` again. Readers never load it (they check the
    /// line versions); repair reads it to tell which copy is intact.
    pub seq: AtomicU64,
}

/// Control block of a latest-value slot (a seqlock latch; see [`crate::seqlock`]):
/// the lines only writers and sleepers touch. The versions readers check are in the
/// data block, one in front of each line of each copy (see [`SLOT_DATA_OFFSET`]).
#[repr(C)]
#[derive(Debug, Default)]
pub struct SlotControl {
    /// The writer lock and completion mark, written only by writers.
    pub writer: Padded<SlotWriter>,
    /// Readers blocked in `wait_for_update` sleep here; writers notify after each write.
    pub updated: Padded<EventCount>,
    /// Readers waiting through the OS (asyncio): each entry `pid << 32 | serial` names
    /// a reader's doorbell FIFO `shmplane.<name>@w<pid>.<serial>` (0: free), rung by
    /// a writer when `updated` has its doorbell armed (see `crate::bell`).
    pub bells: Padded<[AtomicU64; SLOT_BELLS]>,
}

/// Readers of one slot that can wait through the OS at the same time.
pub const SLOT_BELLS: usize = 16;

/// Roles of a slot segment: one, the handles (which hold a shared lock on its byte).
pub const SLOT_ROLES: usize = 1;
/// Byte offset of the slot control block in a slot segment.
pub const SLOT_CONTROL_OFFSET: usize = control_offset(SLOT_ROLES);
/// Byte offset of a slot's data block: copy 0 then copy 1 of the value, each in 64-byte
/// lines of seven value words and a marker word (copy 0: the line's version, an
/// `AtomicU64` odd while a writer changes the line; copy 1: [`SLOT_CANARY`]; see
/// [`SLOT_MARKER_WORD`]); the last line's unused words stay zero.
///
/// Value word `i` is word `i % 7` of line `i / 7`. A write claims and releases only
/// the lines it changes, so a whole read under a writer of one element moves that
/// element's line only, as the stdlib's unsynchronized read does (ABI 13 kept one latch
/// sequence in front of copy 0, a second line to move whenever the element was not in
/// the sequence's line: `arr[:]` of 16 doubles under `a[15] = x` took 1.48-1.57x the
/// stdlib's). A whole read touches `ceil(w / 7)` lines of one copy. A number read
/// (`seqlock::read_committed_word`) touches only copy 1's line of its word, which a
/// writer stores once per write, so under a busy writer it moves one line per write as
/// a ctypes `RawValue` read does.
pub const SLOT_DATA_OFFSET: usize = SLOT_CONTROL_OFFSET + size_of::<SlotControl>();
/// Cache line size the slot data block is laid out for, in bytes.
pub const SLOT_LINE: usize = 64;

/// Largest slot payload in bytes (256 MiB: a RawArray of 32 M doubles).
pub const MAX_SLOT_BYTES: usize = 1 << 28;

/// Payload words (8 bytes each) of a slot of `bytes` bytes (at least one).
pub const fn slot_words(bytes: usize) -> usize {
    if bytes == 0 {
        1
    } else {
        bytes.div_ceil(8)
    }
}

/// Value words per 64-byte line of a slot copy (after the line's version word).
pub const SLOT_LINE_WORDS: usize = SLOT_LINE / 8 - 1;

/// Index within a slot line of its marker word: copy 0's line version, copy 1's
/// [`SLOT_CANARY`]. The last word, after the seven value words: a cut of the file
/// anywhere at or before a line's values (a cut inside a mapped page zeroes from there
/// to the page's end, and a 64-byte line never spans two pages) zeroes its marker too.
pub const SLOT_MARKER_WORD: usize = SLOT_LINE_WORDS;

/// The marker word ([`SLOT_MARKER_WORD`]) of every line of a slot's copy 1 (where copy
/// 0 keeps its line's version), stored when the slot is made and never written again:
/// a reader of copy 1 that finds another value (zeros, after a cut inside a mapped
/// page) reports the slot corrupt (ASCII "SHMPSLOT", little-endian).
pub const SLOT_CANARY: u64 = u64::from_le_bytes(*b"SHMPSLOT");

/// Lines per copy of a slot of `bytes` bytes.
pub const fn slot_lines(bytes: usize) -> usize {
    slot_words(bytes).div_ceil(SLOT_LINE_WORDS)
}

/// Byte offset of copy 0 of a slot of any size: the data block's start.
pub const fn slot_copy0_offset(_bytes: usize) -> usize {
    SLOT_DATA_OFFSET
}

/// Byte offset of copy 1 of a slot of `bytes` bytes: after copy 0's lines.
pub const fn slot_copy1_offset(bytes: usize) -> usize {
    slot_copy0_offset(bytes) + slot_lines(bytes) * SLOT_LINE
}

/// Total segment length in bytes of a slot of `bytes` bytes.
pub const fn slot_segment_len(bytes: usize) -> usize {
    (slot_copy1_offset(bytes) + slot_lines(bytes) * SLOT_LINE).next_multiple_of(LINE)
}

/// Size of a record header in bytes (one `u64`: see [`crate::ring`]).
pub const RECORD_HEADER: usize = 8;
/// Alignment of every record, in bytes.
pub const RECORD_ALIGN: usize = 8;

/// Roles of a channel segment: 0 producer (sender), 1 consumer (receiver).
pub const CHANNEL_ROLES: usize = 2;
/// Byte offset of the ring control block in a channel segment.
pub const RING_CONTROL_OFFSET: usize = control_offset(CHANNEL_ROLES);
/// Byte offset of the ring's data area in a channel segment.
pub const RING_DATA_OFFSET: usize =
    (RING_CONTROL_OFFSET + size_of::<RingControl>()).next_multiple_of(DATA_ALIGN);

/// Most producer lanes of a mailbox: its role table (the consumer, then a producer
/// and a consumer role per lane) holds at most [`MAX_ROLES`] entries.
pub const MAX_MAILBOX_LANES: usize = (MAX_ROLES - 1) / 2;
/// Words of a mailbox's pending summary (one bit per lane).
pub const MAILBOX_PENDING_WORDS: usize = MAX_MAILBOX_LANES.div_ceil(64);

/// Control block of a mailbox (many producers, one consumer; see
/// `shmplane::Mailbox`): one SPSC ring ("lane") per producer handle, after this block,
/// and a summary of which lanes may hold messages, so that the consumer's empty check
/// is one load and its wait is one futex that every producer notifies.
#[repr(C)]
#[derive(Debug, Default)]
pub struct MailboxControl {
    /// Bit `i % 64` of word `i / 64`: lane `i` may hold a message. Set by the lane's
    /// producer after it publishes (if clear), cleared by the consumer when it finds
    /// the lane empty (then it looks again: see `crate::mailbox`).
    pub pending: Padded<[AtomicU64; MAILBOX_PENDING_WORDS]>,
    /// The consumer sleeps here; every lane's producer notifies after each publish.
    pub data_ready: Padded<EventCount>,
    /// Producer handles that claimed a lane since creation (0: nobody has sent yet, so
    /// an empty mailbox is not disconnected).
    pub joins: Padded<AtomicU64>,
}

/// Byte offset of the mailbox control block in a mailbox with `lanes` lanes.
pub const fn mailbox_control_offset(lanes: usize) -> usize {
    control_offset(1 + 2 * lanes)
}

/// Byte offset of lane 0 (its ring control block; its data follows one page later).
pub const fn mailbox_lanes_offset(lanes: usize) -> usize {
    (mailbox_control_offset(lanes) + size_of::<MailboxControl>()).next_multiple_of(DATA_ALIGN)
}

/// Bytes from one lane to the next: a page for its ring control block, then its data.
pub const fn mailbox_lane_stride(capacity: usize) -> usize {
    DATA_ALIGN + capacity
}

/// Total segment length in bytes of a mailbox of `lanes` lanes of `capacity` bytes.
pub const fn mailbox_segment_len(capacity: usize, lanes: usize) -> usize {
    mailbox_lanes_offset(lanes) + lanes * mailbox_lane_stride(capacity)
}

/// Bytes of record a [`CallSlot`] holds: its envelope and payload (240; a bytes
/// request or reply of up to 224 bytes of payload).
pub const CALL_SLOT_BYTES: usize = 240;

/// Byte offset of a mailbox lane's [`CallSlot`] from the lane's ring control block,
/// in the same page (the ring's control lines end well before it).
pub const CALL_SLOT_OFFSET: usize = 2048;

/// A mailbox lane's *call slot* (256 bytes: four 64-byte lines): where an RPC client posts a small
/// request (one record: an envelope and up to 224 bytes of payload) and the server
/// writes the reply over it, so that a call moves the same lines to the server and
/// back, with ownership, instead of a record through the request lane and another
/// through the reply channel. `state` says whose it is (see [`crate::callslot`]);
/// `meta` holds the envelope's client id and flags, the record's tag and the payload's
/// length ([`crate::callslot::meta`]; the call number is the state's); `data` the
/// payload, whose first 48 bytes share the first line with `state` and `meta`.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub struct CallSlot {
    /// The call's number, whether the server polls the slot, and the phase:
    /// `seq << 3 | POLLED | phase`.
    pub state: AtomicU64,
    /// The envelope's client id (bits 32-63) and flags (24-31), the record's tag
    /// (8-23) and the payload's length in bytes (0-7).
    pub meta: AtomicU64,
    /// The payload, little-endian words.
    pub data: [AtomicU64; CALL_SLOT_BYTES / 8],
}

/// Most subscribers of a broadcast (its role table holds the publisher and one role
/// per subscriber, at most [`MAX_ROLES`]).
pub const MAX_SUBSCRIBERS: usize = 512;
/// Flag in a broadcast's parameter 1 (above the subscriber count): lossy (the
/// publisher never waits; a subscriber that falls a lap behind skips ahead).
pub const BROADCAST_LOSSY: u64 = 1 << 32;

/// Control block of a broadcast (one publisher, many subscribers; see
/// `shmplane::Publisher`): one record ring that every subscriber reads with a cursor of
/// its own (a line each, after this block), in the manner of the LMAX Disruptor's
/// gating sequences.
#[repr(C)]
#[derive(Debug, Default)]
pub struct BroadcastControl {
    /// One past the highest subscriber index that ever joined: the publisher scans
    /// cursor lines `0..slots`. Only grows (`fetch_max` by joiners).
    pub slots: Padded<AtomicU64>,
    /// Join tickets handed out (`fetch_add`): a subscriber's ticket marks its cursor
    /// line active, so that removing a dead subscriber (compare-and-swap of its
    /// ticket) never removes the next subscriber of the same line.
    pub joins: Padded<AtomicU64>,
    /// Lossy: how far the publisher reclaimed (see [`OldestRecord`]).
    pub oldest: Padded<OldestRecord>,
    /// Lossy: the publisher's position and its count of messages begun, after each
    /// record (the same seqlock): where a joiner starts, with an exact count.
    pub newest: Padded<OldestRecord>,
}

/// A pair of words a lossy broadcast's publisher alone writes, readable consistently
/// by subscribers: the oldest record it still holds (`BroadcastControl::oldest`:
/// records before its position may be overwritten; `seq` messages began before it),
/// or its newest position and message count (`BroadcastControl::newest`). Two copies
/// and a version (a latch, as the slots' double buffer): the writer fills the copy the
/// version does not name, then bumps the version; a reader takes the named copy and
/// re-checks the version. A writer that dies part-way leaves the version naming the
/// intact copy, so readers never wait for it (see `crate::broadcast::read_pair`).
#[repr(C)]
#[derive(Debug, Default)]
pub struct OldestRecord {
    /// Updates so far; copy `version & 1` is current.
    pub version: AtomicU64,
    /// Ring position of each copy (a record boundary).
    pub position: [AtomicU64; 2],
    /// Messages begun before `position`, since creation, of each copy.
    pub seq: [AtomicU64; 2],
}

/// One subscriber's cursor line in a broadcast.
#[repr(C)]
#[derive(Debug, Default)]
pub struct SubscriberCursor {
    /// The subscriber's ring position: bytes of records it released.
    pub position: AtomicU64,
    /// Lossy: messages that began before `position` (to count what a lag skipped).
    pub seq: AtomicU64,
    /// The subscriber's join ticket while its cursor gates the publisher; 0: not.
    pub active: AtomicU64,
    /// Non-zero while the subscriber waits through the OS: the publisher rings its
    /// doorbell (`@sub<i>`) when the ring's data event has its doorbell armed.
    pub bell: AtomicU64,
    /// The subscriber's resume position, as [`ConsumerLine::resume`].
    pub resume: AtomicU64,
}

/// Byte offset of the broadcast control block in a broadcast of `subs` subscribers.
pub const fn broadcast_control_offset(subs: usize) -> usize {
    control_offset(1 + subs)
}

/// Byte offset of subscriber `i`'s cursor line.
pub const fn broadcast_cursor_offset(subs: usize, i: usize) -> usize {
    broadcast_control_offset(subs) + size_of::<BroadcastControl>() + i * LINE
}

/// Byte offset of a broadcast's ring control block (its data follows one page later).
pub const fn broadcast_ring_offset(subs: usize) -> usize {
    broadcast_cursor_offset(subs, subs).next_multiple_of(DATA_ALIGN)
}

/// Total segment length in bytes of a broadcast of `subs` subscribers and a ring of
/// `capacity` bytes.
pub const fn broadcast_segment_len(capacity: usize, subs: usize) -> usize {
    broadcast_ring_offset(subs) + DATA_ALIGN + capacity
}

/// Smallest ring data capacity in bytes.
pub const MIN_RING_CAPACITY: usize = 4096;
/// Largest ring data capacity in bytes (record lengths are `u32`).
pub const MAX_RING_CAPACITY: usize = 1 << 31;

/// Checks a ring data capacity: a power of two in
/// [`MIN_RING_CAPACITY`]`..=`[`MAX_RING_CAPACITY`]. The single place this rule lives.
pub const fn check_ring_capacity(capacity: u64) -> bool {
    capacity.is_power_of_two()
        && capacity >= MIN_RING_CAPACITY as u64
        && capacity <= MAX_RING_CAPACITY as u64
}

/// Total segment length in bytes of a channel with `capacity` data bytes.
pub const fn ring_segment_len(capacity: usize) -> usize {
    RING_DATA_OFFSET + capacity
}

/// FNV-1a over the layout constants: any change to a shared layout changes this. (The
/// message format has its own version, [`WIRE_VERSION`], checked on its own so that a
/// mismatch names both versions.)
pub const LAYOUT_HASH: u64 = {
    let parts: [u64; 41] = [
        ABI_VERSION as u64,
        size_of::<SegmentHeader>() as u64,
        std::mem::offset_of!(SegmentHeader, init_state) as u64,
        std::mem::offset_of!(SegmentHeader, role_count) as u64,
        size_of::<RoleEntry>() as u64,
        std::mem::offset_of!(RoleEntry, lease) as u64,
        std::mem::offset_of!(RoleEntry, copies) as u64,
        size_of::<CopyEntry>() as u64,
        MAX_COPIES as u64,
        size_of::<RingControl>() as u64,
        std::mem::offset_of!(RingControl, head) as u64,
        std::mem::offset_of!(ConsumerLine, resume) as u64,
        std::mem::offset_of!(SubscriberCursor, resume) as u64,
        std::mem::offset_of!(RingControl, data_ready) as u64,
        std::mem::offset_of!(RingControl, space_ready) as u64,
        RING_DATA_OFFSET as u64,
        RECORD_HEADER as u64,
        INIT_LOCK_BYTE,
        ROLE_LOCK_BYTE,
        COPY_LOCK_BYTE,
        size_of::<SlotControl>() as u64,
        SLOT_CONTROL_OFFSET as u64,
        (slot_copy0_offset(128) - SLOT_DATA_OFFSET) as u64,
        SLOT_LINE as u64,
        (slot_copy1_offset(8) - SLOT_DATA_OFFSET) as u64,
        SLOT_LINE_WORDS as u64,
        SLOT_CANARY,
        SLOT_MARKER_WORD as u64,
        std::mem::offset_of!(SlotWriter, seq) as u64,
        size_of::<MailboxControl>() as u64,
        std::mem::offset_of!(MailboxControl, data_ready) as u64,
        std::mem::offset_of!(RingStatus, wake_at) as u64,
        MAX_MAILBOX_LANES as u64,
        size_of::<BroadcastControl>() as u64,
        std::mem::offset_of!(BroadcastControl, oldest) as u64,
        size_of::<SubscriberCursor>() as u64,
        MAX_SUBSCRIBERS as u64,
        BROADCAST_LOSSY,
        size_of::<CallSlot>() as u64,
        CALL_SLOT_OFFSET as u64,
        CALL_SLOT_BYTES as u64,
    ];
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < parts.len() {
        let mut b = 0;
        while b < 8 {
            h ^= (parts[i] >> (8 * b)) & 0xff;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
            b += 1;
        }
        i += 1;
    }
    h
};

// The shared layout is pinned: these hold for the std atomics that production uses
// (loom's atomics are bigger, and loom models build these structs on the heap only).
#[cfg(not(shmplane_loom))]
const _: () = {
    use std::mem::offset_of;
    assert!(size_of::<EventCount>() == 12);
    assert!(size_of::<CopyEntry>() == 16);
    assert!(offset_of!(RoleEntry, lease) == 8);
    assert!(offset_of!(RoleEntry, copies) == 16);
    assert!(size_of::<RoleEntry>() == 2 * LINE);
    assert!(offset_of!(SegmentHeader, magic) == 0);
    assert!(offset_of!(SegmentHeader, version_kind) == 8);
    assert!(offset_of!(SegmentHeader, init_state) == 52);
    assert!(offset_of!(SegmentHeader, wire_version) == 56);
    assert!(offset_of!(SegmentHeader, role_count) == 60);
    assert!(size_of::<SegmentHeader>() == LINE);
    assert!(ROLE_TABLE_OFFSET % LINE == 0 && ROLE_ENTRY_SIZE % LINE == 0);
    assert!(offset_of!(RingControl, tail) == 0);
    assert!(offset_of!(RingControl, head) == LINE);
    assert!(offset_of!(RingControl, data_ready) == 2 * LINE);
    assert!(offset_of!(RingControl, space_ready) == 3 * LINE);
    assert!(offset_of!(RingControl, status) == 4 * LINE);
    assert!(offset_of!(RingStatus, cut) == 8);
    assert!(offset_of!(RingStatus, wake_at) == 16);
    assert!(size_of::<RingControl>() == 5 * LINE);
    assert!(RING_CONTROL_OFFSET == 640);
    assert!(RING_DATA_OFFSET == DATA_ALIGN);
    assert!(check_ring_capacity(MIN_RING_CAPACITY as u64));
    assert!(size_of::<SlotWriter>() == 24);
    assert!(offset_of!(SlotControl, writer) == 0);
    assert!(offset_of!(SlotControl, updated) == LINE);
    assert!(offset_of!(SlotControl, bells) == 2 * LINE);
    assert!(size_of::<SlotControl>() == 3 * LINE);
    assert!(SLOT_CONTROL_OFFSET == 384);
    assert!(slot_segment_len(8) - SLOT_DATA_OFFSET == LINE);
    assert!(slot_copy1_offset(56) == SLOT_DATA_OFFSET + SLOT_LINE);
    assert!(slot_copy1_offset(64) == SLOT_DATA_OFFSET + 2 * SLOT_LINE);
    assert!(slot_copy1_offset(128) == SLOT_DATA_OFFSET + 3 * SLOT_LINE);
    assert!(slot_segment_len(128) - SLOT_DATA_OFFSET == 6 * SLOT_LINE);
    assert!(SLOT_DATA_OFFSET % LINE == 0);
    assert!(offset_of!(MailboxControl, data_ready) == LINE);
    assert!(offset_of!(MailboxControl, joins) == 2 * LINE);
    assert!(size_of::<MailboxControl>() == 3 * LINE);
    assert!(size_of::<RingControl>() <= DATA_ALIGN);
    assert!(size_of::<RingControl>() <= CALL_SLOT_OFFSET && CALL_SLOT_OFFSET + size_of::<CallSlot>() <= DATA_ALIGN);
    assert!(size_of::<CallSlot>() == 2 * LINE && CALL_SLOT_OFFSET % LINE == 0);
    assert!(2 * MAX_MAILBOX_LANES < MAX_ROLES);
    assert!(size_of::<BroadcastControl>() == 4 * LINE);
    assert!(offset_of!(BroadcastControl, oldest) == 2 * LINE);
    assert!(size_of::<SubscriberCursor>() == 40 && size_of::<SubscriberCursor>() <= LINE);
    assert!(offset_of!(ConsumerLine, resume) == 8);
    assert!(MAX_SUBSCRIBERS < MAX_ROLES);
    assert!(broadcast_ring_offset(1) % DATA_ALIGN == 0);
};
