//! Writing and validating the segment header ([`SegmentHeader`]).
//!
//! The creator writes every field with Relaxed stores and publishes them with a Release
//! store of `init_state = INIT_READY`. An opener treats every byte as untrusted input:
//! it checks magic, ABI version, layout hash, message-format version, kind, that
//! `total_len` equals the file size, and the kind's parameters and role count against
//! its [`crate::kind::KindSpec`], and returns a typed error for each mismatch.

use crate::error::{Error, Result};
pub use crate::kind::SegmentKind;
use crate::kind::Params;
use crate::layout::{SegmentHeader, ABI_VERSION, INIT_READY, LAYOUT_HASH, MAGIC, MAX_ROLES, WIRE_VERSION};
use crate::sync::Ordering;

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
    /// Entries in the role table.
    pub role_count: usize,
    /// Creator's process id.
    pub creator_pid: u32,
}

impl HeaderInfo {
    /// The kind parameters.
    pub fn params(&self) -> Params {
        Params { p0: self.param0, p1: self.param1 }
    }
}

/// Write a fresh header and publish it (`init_state = READY`, Release). The rest of
/// the segment must already be initialised (all-zero is the initial state of every
/// layout, which a new file provides).
pub fn write_header(h: &SegmentHeader, info: &HeaderInfo) {
    h.magic.store(MAGIC, Ordering::Relaxed);
    h.version_kind.store(u64::from(ABI_VERSION) | (u64::from(info.kind as u32) << 32), Ordering::Relaxed);
    h.layout_hash.store(LAYOUT_HASH, Ordering::Relaxed);
    h.total_len.store(info.total_len, Ordering::Relaxed);
    h.param0.store(info.param0, Ordering::Relaxed);
    h.param1.store(info.param1, Ordering::Relaxed);
    h.creator_pid.store(info.creator_pid, Ordering::Relaxed);
    h.wire_version.store(WIRE_VERSION, Ordering::Relaxed);
    h.role_count.store(info.role_count as u32, Ordering::Relaxed);
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
    // ORDERING: Relaxed: read after `is_ready`'s Acquire, or as a best-effort probe.
    h.magic.load(Ordering::Relaxed) == MAGIC
}

/// The kind word of a header, whatever its state (for `gc`).
pub fn raw_kind(h: &SegmentHeader) -> u32 {
    // ORDERING: Relaxed: a best-effort probe of an untrusted header.
    (h.version_kind.load(Ordering::Relaxed) >> 32) as u32
}

/// True if the header's fields all read zero (a creator that died before its first
/// store).
pub fn is_zero(h: &SegmentHeader) -> bool {
    // ORDERING: Relaxed: a best-effort probe of an untrusted header.
    [&h.magic, &h.version_kind, &h.layout_hash, &h.total_len, &h.param0, &h.param1]
        .iter()
        .all(|w| w.load(Ordering::Relaxed) == 0)
        && [&h.creator_pid, &h.init_state, &h.wire_version, &h.role_count]
            .iter()
            .all(|w| w.load(Ordering::Relaxed) == 0)
}

/// Validate a published header against the file it came from. `expected`: the kinds
/// the caller accepts (`WrongKind` names the first); empty accepts any known kind
/// (inspection, `gc`, the fuzzer).
///
/// # Errors
/// [`Error::Corrupt`] (bad magic, sizes, parameters, role count),
/// [`Error::Incompatible`] (other ABI version, layout or message-format version),
/// [`Error::WrongKind`].
pub fn validate(h: &SegmentHeader, file_len: u64, expected: &[SegmentKind], path: &str) -> Result<HeaderInfo> {
    let corrupt = |what: String| Err(Error::Corrupt { path: path.to_owned(), what });
    let incompatible = |what: String| Err(Error::Incompatible { path: path.to_owned(), what });
    if !has_magic(h) {
        return corrupt("not a shmplane segment (bad magic number)".into());
    }
    // ORDERING (every load below): Relaxed; the caller's Acquire load of `init_state`
    // (`is_ready`) made the creator's stores visible.
    let version_kind = h.version_kind.load(Ordering::Relaxed);
    let version = version_kind as u32;
    if version != ABI_VERSION {
        return incompatible(format!("it has ABI version {version}, this library speaks ABI version {ABI_VERSION}"));
    }
    let raw_kind = (version_kind >> 32) as u32;
    let Some(kind) = SegmentKind::from_u32(raw_kind) else {
        return corrupt(format!("unknown segment kind {raw_kind}"));
    };
    let spec = kind.spec();
    let wire = h.wire_version.load(Ordering::Relaxed);
    if spec.carries_messages && wire != WIRE_VERSION {
        return incompatible(format!(
            "its messages use wire format version {wire}, this library speaks version {WIRE_VERSION}"
        ));
    }
    let hash = h.layout_hash.load(Ordering::Relaxed);
    if hash != LAYOUT_HASH {
        return incompatible(format!("layout hash {hash:#x}, this build has {LAYOUT_HASH:#x}"));
    }
    if !expected.is_empty() && !expected.contains(&kind) {
        return Err(Error::WrongKind { path: path.to_owned(), expected: expected[0].name(), found: kind.name().into() });
    }
    let total_len = h.total_len.load(Ordering::Relaxed);
    if total_len != file_len {
        return corrupt(format!("header says {total_len} bytes but the file has {file_len} (truncated or resized)"));
    }
    let params = Params { p0: h.param0.load(Ordering::Relaxed), p1: h.param1.load(Ordering::Relaxed) };
    let expected_len = match (spec.segment_len)(params) {
        Ok(len) => len,
        Err(what) => return corrupt(what),
    };
    if expected_len as u64 != total_len {
        return corrupt(format!("a {} with these parameters is {expected_len} bytes, not {total_len}", spec.name));
    }
    let role_count = h.role_count.load(Ordering::Relaxed) as usize;
    if role_count != (spec.role_count)(params) || role_count == 0 || role_count > MAX_ROLES {
        return corrupt(format!("role table of {role_count} entries does not fit a {}", spec.name));
    }
    Ok(HeaderInfo {
        kind,
        total_len,
        param0: params.p0,
        param1: params.p1,
        role_count,
        creator_pid: h.creator_pid.load(Ordering::Relaxed),
    })
}
