//! Writing and validating the segment header ([`SegmentHeader`]).
//!
//! The creator writes every field with Relaxed stores and publishes them with a Release
//! store of `init_state = INIT_READY`. An opener treats every byte as untrusted input:
//! it checks magic, ABI version, layout hash, kind, that `total_len` equals the file
//! size, and the kind's parameters, and returns a typed error for each mismatch.

use crate::error::{Error, Result};
use crate::layout::{
    check_ring_capacity, ring_segment_len, slot_segment_len, SegmentHeader, MAX_SLOT_BYTES, ABI_VERSION, INIT_READY, LAYOUT_HASH, MAGIC,
};
use crate::sync::Ordering;

/// What a segment holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum SegmentKind {
    /// SPSC channel: one record ring. Roles: 0 producer, 1 consumer.
    Channel = 1,
    /// Latest-value slot (seqlock).
    Slot = 2,
}

impl SegmentKind {
    /// Human-readable name.
    pub fn name(self) -> &'static str {
        match self {
            SegmentKind::Channel => "channel",
            SegmentKind::Slot => "slot",
        }
    }

    /// Names of the kind's roles, indexed by role number.
    pub fn roles(self) -> &'static [&'static str] {
        match self {
            SegmentKind::Channel => &["sender", "receiver"],
            SegmentKind::Slot => &["handle"],
        }
    }

    fn from_u32(v: u32) -> Option<SegmentKind> {
        match v {
            1 => Some(SegmentKind::Channel),
            2 => Some(SegmentKind::Slot),
            _ => None,
        }
    }
}

/// Validated header contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderInfo {
    /// Segment kind.
    pub kind: SegmentKind,
    /// Total length in bytes.
    pub total_len: u64,
    /// Kind parameter 0 (channel: ring capacity in bytes; slot: value size in bytes).
    pub param0: u64,
    /// Kind parameter 1 (slot: fingerprint of the value's type).
    pub param1: u64,
    /// Creator's process id.
    pub creator_pid: u32,
}

/// Write a fresh header and publish it (`init_state = READY`, Release). The rest of
/// the segment must already be initialised (all-zero is the initial state of every
/// layout, which a new file provides).
pub fn write_header(h: &SegmentHeader, kind: SegmentKind, total_len: u64, param0: u64, param1: u64) {
    h.magic.store(MAGIC, Ordering::Relaxed);
    h.version_kind.store(u64::from(ABI_VERSION) | (u64::from(kind as u32) << 32), Ordering::Relaxed);
    h.layout_hash.store(LAYOUT_HASH, Ordering::Relaxed);
    h.total_len.store(total_len, Ordering::Relaxed);
    h.param0.store(param0, Ordering::Relaxed);
    h.param1.store(param1, Ordering::Relaxed);
    h.creator_pid.store(std::process::id(), Ordering::Relaxed);
    // ORDERING: Release, partner of `is_ready`'s Acquire: every field above is visible
    // to an opener that sees READY.
    h.init_state.store(INIT_READY, Ordering::Release);
}

/// True once the creator published the header.
pub fn is_ready(h: &SegmentHeader) -> bool {
    // ORDERING: Acquire, partner of write_header's Release.
    h.init_state.load(Ordering::Acquire) == INIT_READY
}

/// True if the first 8 bytes are shmplane's magic.
pub fn has_magic(h: &SegmentHeader) -> bool {
    h.magic.load(Ordering::Relaxed) == MAGIC
}

/// Validate a published header against the file it came from.
///
/// # Errors
/// [`Error::Corrupt`] (bad magic, sizes, parameters), [`Error::Incompatible`] (other
/// ABI version or layout), [`Error::WrongKind`].
pub fn validate(h: &SegmentHeader, file_len: u64, expected: SegmentKind, path: &str) -> Result<HeaderInfo> {
    let corrupt = |what: String| Err(Error::Corrupt { path: path.to_owned(), what });
    if !has_magic(h) {
        return corrupt("not a shmplane segment (bad magic number)".into());
    }
    let version_kind = h.version_kind.load(Ordering::Relaxed);
    let version = version_kind as u32;
    if version != ABI_VERSION {
        return Err(Error::Incompatible {
            path: path.to_owned(),
            what: format!("ABI version {version}, this library speaks {ABI_VERSION}"),
        });
    }
    let hash = h.layout_hash.load(Ordering::Relaxed);
    if hash != LAYOUT_HASH {
        return Err(Error::Incompatible {
            path: path.to_owned(),
            what: format!("layout hash {hash:#x}, this build has {LAYOUT_HASH:#x}"),
        });
    }
    let raw_kind = (version_kind >> 32) as u32;
    let Some(kind) = SegmentKind::from_u32(raw_kind) else {
        return corrupt(format!("unknown segment kind {raw_kind}"));
    };
    if kind != expected {
        return Err(Error::WrongKind { path: path.to_owned(), expected: expected.name(), found: kind.name().into() });
    }
    let total_len = h.total_len.load(Ordering::Relaxed);
    if total_len != file_len {
        return corrupt(format!("header says {total_len} bytes but the file has {file_len} (truncated or resized)"));
    }
    let param0 = h.param0.load(Ordering::Relaxed);
    if kind == SegmentKind::Channel
        && (!check_ring_capacity(param0) || ring_segment_len(param0 as usize) as u64 != total_len)
    {
        return corrupt(format!("ring capacity {param0} is not a valid power of two for a {total_len}-byte segment"));
    }
    if kind == SegmentKind::Slot
        && (param0 > MAX_SLOT_BYTES as u64 || slot_segment_len(param0 as usize) as u64 != total_len)
    {
        return corrupt(format!("slot of {param0} bytes does not fit a {total_len}-byte segment"));
    }
    let param1 = h.param1.load(Ordering::Relaxed);
    Ok(HeaderInfo { kind, total_len, param0, param1, creator_pid: h.creator_pid.load(Ordering::Relaxed) })
}
