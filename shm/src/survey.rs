//! What segments exist and who holds them: the data of the `shmplane ls` and `shmplane
//! inspect` commands. Read only: a survey opens each segment's file, validates its
//! header as an opener does (the bytes are another process's), asks the kernel which
//! role locks are held, and claims nothing.

use crate::header::SegmentKind;
use crate::liveness::PeerState;
use crate::segment::Segment;
use std::time::SystemTime;

/// One role of a surveyed segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleSummary {
    /// The role's number in the role table.
    pub index: usize,
    /// Its name ("sender", "receiver", "subscriber", ...).
    pub name: &'static str,
    /// "vacant" (never claimed), "alive", "closed" or "dead".
    pub state: &'static str,
    /// The holder's process id (0 if unknown or none).
    pub pid: u32,
}

/// One surveyed segment.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentSummary {
    /// The name (`/dev/shm/shmplane.<name>`).
    pub name: String,
    /// The kind's name ("channel", "slot", "mailbox", "broadcast"), if the header is valid.
    pub kind: Option<&'static str>,
    /// Size of the file in bytes.
    pub size: u64,
    /// Seconds since the file was last modified (its creation, mostly).
    pub age_s: f64,
    /// The creator's process id (from the header).
    pub creator_pid: u32,
    /// Kind parameters 0 and 1 (capacity, lanes, subscribers; see `kind::Params`).
    pub params: (u64, u64),
    /// Every role's state.
    pub roles: Vec<RoleSummary>,
    /// Stale: nobody will use it again (what `gc` removes).
    pub stale: bool,
    /// Bytes written into its ring(s) since creation (channel, every mailbox lane,
    /// broadcast): the difference between two surveys is the byte rate.
    pub published_bytes: Option<u64>,
    /// Bytes written and not yet released by the consumer (channel, mailbox lanes; a
    /// broadcast's are per subscriber and not summed). Records and padding included.
    pub pending_bytes: Option<u64>,
    /// Why the segment could not be read (not ours, corrupt, another ABI).
    pub error: Option<String>,
}

const KINDS: [SegmentKind; 4] = [SegmentKind::Channel, SegmentKind::Slot, SegmentKind::Mailbox, SegmentKind::Broadcast];

/// The names of every shmplane segment of this machine's `/dev/shm` (doorbells left
/// out), sorted.
pub fn names() -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir(crate::region::SHM_DIR) {
        for entry in dir.flatten() {
            let file_name = entry.file_name();
            let Some(full) = file_name.to_str() else { continue };
            if crate::bell::segment_of(full).is_some() {
                continue;
            }
            if let Some(name) = full.strip_prefix(crate::region::PREFIX) {
                out.push(name.to_owned());
            }
        }
    }
    out.sort();
    out
}

/// Survey segment `name`.
pub fn survey(name: &str) -> SegmentSummary {
    let path = crate::region::shm_path(name);
    let meta = std::fs::metadata(&path).ok();
    let size = meta.as_ref().map_or(0, std::fs::Metadata::len);
    let age_s = meta
        .and_then(|m| m.modified().ok())
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    let stale = matches!(crate::gc::stale(name), Ok(Some(_)));
    let mut s = SegmentSummary {
        name: name.to_owned(),
        kind: None,
        size,
        age_s,
        creator_pid: 0,
        params: (0, 0),
        roles: Vec::new(),
        stale,
        published_bytes: None,
        pending_bytes: None,
        error: None,
    };
    // No waiting for a creator still initialising (or one that died leaving an empty
    // file): reported as such at once.
    match Segment::open_any_within(name, &KINDS, std::time::Duration::ZERO) {
        Ok(seg) => {
            let info = seg.info();
            s.kind = Some(info.kind.name());
            s.creator_pid = info.creator_pid;
            s.params = (info.param0, info.param1);
            for r in 0..info.role_count {
                let (state, pid) = match seg.peer_state_by_lock(r) {
                    Ok(PeerState::Vacant) => ("vacant", 0),
                    Ok(PeerState::Alive(pid)) => ("alive", pid),
                    Ok(PeerState::Closed) => ("closed", 0),
                    Ok(PeerState::Dead(pid)) => ("dead", pid),
                    Err(_) => ("unknown", 0),
                };
                s.roles.push(RoleSummary { index: r, name: seg.role_name(r), state, pid });
            }
            (s.published_bytes, s.pending_bytes) = ring_levels(&seg);
        }
        Err(e) => s.error = Some(e.to_string()),
    }
    s
}

/// (bytes published, bytes pending) of the ring(s) of `seg`, read from their control
/// words (untrusted: a pending count larger than the ring reads as unknown).
fn ring_levels(seg: &Segment) -> (Option<u64>, Option<u64>) {
    use crate::ring::RingStore;
    use crate::store::SegmentRing;
    let info = seg.info();
    let level = |ring: &SegmentRing| {
        let c = ring.control();
        // ORDERING: Acquire, partners of the producer's and consumer's Release stores;
        // a snapshot for display only.
        let (tail, head) = (c.tail.value.load(crate::sync::Ordering::Acquire), c.head.value.position.load(crate::sync::Ordering::Acquire));
        (tail, tail.checked_sub(head).filter(|&p| p <= info.param0))
    };
    match info.kind {
        SegmentKind::Channel => match seg.share() {
            Ok(dup) => {
                let (tail, pending) = level(&SegmentRing::new(dup));
                (Some(tail), pending)
            }
            Err(_) => (None, None),
        },
        SegmentKind::Mailbox => {
            let (mut published, mut pending) = (0u64, Some(0u64));
            for lane in 0..info.param1 as usize {
                let Ok(dup) = seg.share() else { return (None, None) };
                let (tail, p) = level(&SegmentRing::lane(dup, lane));
                published = published.wrapping_add(tail);
                pending = pending.zip(p).map(|(a, b)| a + b);
            }
            (Some(published), pending)
        }
        SegmentKind::Broadcast => match seg.share() {
            Ok(dup) => (Some(level(&SegmentRing::broadcast(dup, None)).0), None),
            Err(_) => (None, None),
        },
        SegmentKind::Slot => (None, None),
    }
}
