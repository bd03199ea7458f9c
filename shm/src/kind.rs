//! Segment kinds: one [`KindSpec`] per kind declares its roles, its parameters, its
//! size and how an opener validates them. Adding a primitive (mailbox, broadcast, RPC)
//! means adding a kind here and its layout in [`crate::layout`]; the segment lifecycle,
//! the role table, liveness and `gc` work from the spec.
//!
//! Every segment is `[header line][role table: role_count entries][kind's layout]`
//! (see [`crate::layout::control_offset`]).

use crate::layout::{
    broadcast_segment_len, check_ring_capacity, mailbox_segment_len, BROADCAST_LOSSY, MAX_SUBSCRIBERS, ring_segment_len, slot_segment_len, CHANNEL_ROLES, MAX_MAILBOX_LANES,
    MAX_RING_CAPACITY, MAX_SLOT_BYTES, MIN_RING_CAPACITY, SLOT_ROLES,
};

/// What a segment holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum SegmentKind {
    /// SPSC channel: one record ring. Roles: 0 producer (sender), 1 consumer (receiver).
    Channel = 1,
    /// Latest-value slot (seqlock latch). One role, shared by every handle.
    Slot = 2,
    /// Mailbox (MPSC): one SPSC ring per producer handle ("lane"). Roles: 0 the
    /// consumer (receiver), then per lane `i` a producer (`1 + 2i`) and the consumer's
    /// hold on that lane (`2 + 2i`).
    Mailbox = 3,
    /// Broadcast (SPMC): one record ring, a cursor line per subscriber. Roles: 0 the
    /// publisher, `1 + i` subscriber `i`.
    Broadcast = 4,
}

/// The two kind-specific words of a segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Params {
    /// Parameter 0 (channel: ring capacity in bytes; slot: value size in bytes;
    /// mailbox: each lane's ring capacity in bytes).
    pub p0: u64,
    /// Parameter 1 (channel: 0; slot: fingerprint of the value's type; mailbox: number
    /// of lanes, the most producer handles at once).
    pub p1: u64,
}

/// Everything the core needs to know about one segment kind.
#[derive(Debug)]
pub struct KindSpec {
    /// The kind.
    pub kind: SegmentKind,
    /// Human-readable name ("channel", "slot").
    pub name: &'static str,
    /// Name of a role by its number.
    pub role_name: fn(usize) -> &'static str,
    /// Number of roles in the segment's role table for these parameters.
    pub role_count: fn(Params) -> usize,
    /// Total segment length in bytes for these parameters, or why they are invalid
    /// (an opener's error message).
    pub segment_len: fn(Params) -> Result<usize, String>,
    /// True if records carry the message format ([`crate::layout::WIRE_VERSION`]), so
    /// an opener must check its version.
    pub carries_messages: bool,
}


const CHANNEL: KindSpec = KindSpec {
    kind: SegmentKind::Channel,
    name: "channel",
    role_name: |r| if r == 0 { "sender" } else { "receiver" },
    role_count: |_| CHANNEL_ROLES,
    segment_len: |p| {
        if !check_ring_capacity(p.p0) {
            return Err(format!(
                "ring capacity {} is not a power of two in {MIN_RING_CAPACITY}..={MAX_RING_CAPACITY}",
                p.p0
            ));
        }
        if p.p1 != 0 {
            return Err(format!("channel parameter 1 is {:#x}, not 0", p.p1));
        }
        Ok(ring_segment_len(p.p0 as usize))
    },
    carries_messages: true,
};

const SLOT: KindSpec = KindSpec {
    kind: SegmentKind::Slot,
    name: "slot",
    role_name: |_| "handle",
    role_count: |_| SLOT_ROLES,
    segment_len: |p| {
        if p.p0 > MAX_SLOT_BYTES as u64 {
            return Err(format!("slot of {} bytes exceeds the {MAX_SLOT_BYTES}-byte limit", p.p0));
        }
        Ok(slot_segment_len(p.p0 as usize))
    },
    carries_messages: false,
};

const MAILBOX: KindSpec = KindSpec {
    kind: SegmentKind::Mailbox,
    name: "mailbox",
    role_name: |r| if r % 2 == 1 { "sender" } else { "receiver" },
    role_count: |p| 1 + 2 * (p.p1 as usize).min(MAX_MAILBOX_LANES),
    segment_len: |p| {
        if !check_ring_capacity(p.p0) {
            return Err(format!(
                "lane capacity {} is not a power of two in {MIN_RING_CAPACITY}..={MAX_RING_CAPACITY}",
                p.p0
            ));
        }
        if p.p1 == 0 || p.p1 > MAX_MAILBOX_LANES as u64 {
            return Err(format!("a mailbox of {} lanes: it must have 1..={MAX_MAILBOX_LANES}", p.p1));
        }
        let len = (p.p0 as u128 + crate::layout::DATA_ALIGN as u128) * p.p1 as u128;
        if len > (1u128 << 40) {
            return Err(format!("{} lanes of {} bytes exceed 1 TiB", p.p1, p.p0));
        }
        Ok(mailbox_segment_len(p.p0 as usize, p.p1 as usize))
    },
    carries_messages: true,
};

const BROADCAST: KindSpec = KindSpec {
    kind: SegmentKind::Broadcast,
    name: "broadcast",
    role_name: |r| if r == 0 { "publisher" } else { "subscriber" },
    role_count: |p| 1 + ((p.p1 & 0xFFFF_FFFF) as usize).min(MAX_SUBSCRIBERS),
    segment_len: |p| {
        if !check_ring_capacity(p.p0) {
            return Err(format!(
                "ring capacity {} is not a power of two in {MIN_RING_CAPACITY}..={MAX_RING_CAPACITY}",
                p.p0
            ));
        }
        let subs = p.p1 & 0xFFFF_FFFF;
        if subs == 0 || subs > MAX_SUBSCRIBERS as u64 || p.p1 & !(0xFFFF_FFFF | BROADCAST_LOSSY) != 0 {
            return Err(format!("broadcast parameter {:#x}: 1..={MAX_SUBSCRIBERS} subscribers and the lossy flag", p.p1));
        }
        Ok(broadcast_segment_len(p.p0 as usize, subs as usize))
    },
    carries_messages: true,
};

impl SegmentKind {
    /// This kind's spec.
    pub fn spec(self) -> &'static KindSpec {
        match self {
            SegmentKind::Channel => &CHANNEL,
            SegmentKind::Slot => &SLOT,
            SegmentKind::Mailbox => &MAILBOX,
            SegmentKind::Broadcast => &BROADCAST,
        }
    }

    /// Human-readable name.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The kind stored as `raw` in a header, if it is one.
    pub fn from_u32(raw: u32) -> Option<SegmentKind> {
        [SegmentKind::Channel, SegmentKind::Slot, SegmentKind::Mailbox, SegmentKind::Broadcast].into_iter().find(|k| *k as u32 == raw)
    }
}
