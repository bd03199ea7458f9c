//! Segment kinds: one [`KindSpec`] per kind declares its roles, its parameters, its
//! size and how an opener validates them. Adding a primitive (mailbox, broadcast, RPC)
//! means adding a kind here and its layout in [`crate::layout`]; the segment lifecycle,
//! the role table, liveness and `gc` work from the spec.
//!
//! Every segment is `[header line][role table: role_count entries][kind's layout]`
//! (see [`crate::layout::control_offset`]).

use crate::layout::{
    check_ring_capacity, ring_segment_len, slot_segment_len, CHANNEL_ROLES, MAX_RING_CAPACITY, MAX_SLOT_BYTES,
    MIN_RING_CAPACITY, SLOT_ROLES,
};

/// What a segment holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum SegmentKind {
    /// SPSC channel: one record ring. Roles: 0 producer (sender), 1 consumer (receiver).
    Channel = 1,
    /// Latest-value slot (seqlock latch). One role, shared by every handle.
    Slot = 2,
}

/// The two kind-specific words of a segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Params {
    /// Parameter 0 (channel: ring capacity in bytes; slot: value size in bytes).
    pub p0: u64,
    /// Parameter 1 (channel: 0; slot: fingerprint of the value's type).
    pub p1: u64,
}

/// Everything the core needs to know about one segment kind.
#[derive(Debug)]
pub struct KindSpec {
    /// The kind.
    pub kind: SegmentKind,
    /// Human-readable name ("channel", "slot").
    pub name: &'static str,
    /// Role names by role number; a table longer than this repeats the last name (the
    /// producers of a mailbox).
    pub role_names: &'static [&'static str],
    /// Number of roles in the segment's role table for these parameters.
    pub role_count: fn(Params) -> usize,
    /// Total segment length in bytes for these parameters, or why they are invalid
    /// (an opener's error message).
    pub segment_len: fn(Params) -> Result<usize, String>,
    /// True if records carry the message format ([`crate::layout::WIRE_VERSION`]), so
    /// an opener must check its version.
    pub carries_messages: bool,
}

impl KindSpec {
    /// Name of role `role`.
    pub fn role_name(&self, role: usize) -> &'static str {
        self.role_names[role.min(self.role_names.len() - 1)]
    }
}

const CHANNEL: KindSpec = KindSpec {
    kind: SegmentKind::Channel,
    name: "channel",
    role_names: &["sender", "receiver"],
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
    role_names: &["handle"],
    role_count: |_| SLOT_ROLES,
    segment_len: |p| {
        if p.p0 > MAX_SLOT_BYTES as u64 {
            return Err(format!("slot of {} bytes exceeds the {MAX_SLOT_BYTES}-byte limit", p.p0));
        }
        Ok(slot_segment_len(p.p0 as usize))
    },
    carries_messages: false,
};

impl SegmentKind {
    /// This kind's spec.
    pub fn spec(self) -> &'static KindSpec {
        match self {
            SegmentKind::Channel => &CHANNEL,
            SegmentKind::Slot => &SLOT,
        }
    }

    /// Human-readable name.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The kind stored as `raw` in a header, if it is one.
    pub fn from_u32(raw: u32) -> Option<SegmentKind> {
        [SegmentKind::Channel, SegmentKind::Slot].into_iter().find(|k| *k as u32 == raw)
    }
}
