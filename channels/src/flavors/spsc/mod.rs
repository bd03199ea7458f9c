//! SPSC channel: one shared-memory record ring (Agrona's `OneToOneRingBuffer` with
//! rtrb's cached indices: `shmplane_shm::ring`), one sender and one receiver, each of
//! which may have copies in several processes (serialised by the role lease:
//! `shmplane_shm::lease`). Messages of any size travel in the format of
//! [`crate::frame`].

mod receiver;
mod sender;

pub use receiver::{Held, HoldToken, Incoming, Message, Receiver, Releaser, Viewed};
pub(crate) use receiver::{frame_of, payload_of};
pub use sender::{DetachedLoan, Loan, Sender};

use crate::endpoint::generated_name;
use shmplane_shm::error::{Error, Result};
use shmplane_shm::header::SegmentKind;
use shmplane_shm::kind::Params;
use shmplane_shm::layout::{check_ring_capacity, MAX_RING_CAPACITY, MIN_RING_CAPACITY};
use shmplane_shm::bell::{Bell, Ringer, Side};
use shmplane_shm::liveness;
use shmplane_shm::segment::Segment;

/// Ring capacity of a channel made without one, in bytes (1 MiB): with messages of any
/// size streaming through, a small ring costs nothing in throughput (an 8 MB array
/// crosses a 1 MiB ring as well as a 16 MiB one) and dozens of channels fit Docker's
/// default 64 MB `/dev/shm`. Each channel commits its ring plus one 4 KiB page.
pub const DEFAULT_CAPACITY: usize = 1 << 20;

fn check_capacity(capacity_bytes: usize) -> Result<()> {
    if check_ring_capacity(capacity_bytes as u64) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "capacity {capacity_bytes} bytes must be a power of two between {MIN_RING_CAPACITY} and {MAX_RING_CAPACITY}"
        )))
    }
}

/// The name `segment`'s doorbells go by: its own, or for a copy made from a
/// descriptor without a name, the name the descriptor was opened by.
pub(crate) fn doorbell_name(segment: &Segment) -> Option<String> {
    if let Some(name) = segment.name() {
        return Some(name.to_owned());
    }
    let link = std::fs::read_link(format!("/proc/self/fd/{}", segment.fd()?)).ok()?;
    let name = link.to_str()?.strip_prefix("/dev/shm/shmplane.")?;
    (!name.ends_with(" (deleted)")).then(|| name.to_owned())
}

/// This handle's write end of the peer's doorbell on `side` (`None`: the channel's name
/// is gone, so no peer can wait through the OS either).
fn open_ringer(segment: &Segment, side: Side) -> Option<Ringer> {
    Ringer::open(&doorbell_name(segment)?, side).ok()
}

/// The waiting side's end of its doorbell (see `shmplane_shm::bell`), opened the first
/// time the handle is waited on through the OS.
#[derive(Debug)]
pub(crate) struct Doorbell {
    pub(crate) bell: Bell,
    /// A write end kept after ringing our own doorbell while the peer's role was
    /// vacant (see `Bell::ring_own`); dropped once the peer is attached.
    placeholder: Option<std::fs::File>,
    /// A write end kept for the doorbell's life (a mailbox lane's sender: the
    /// consumer opens its write end only at its first ring, so our own rings must not
    /// leave the FIFO without a writer, which would read as the consumer's close).
    _pinned: Option<std::fs::File>,
}

impl Doorbell {
    pub(crate) fn open(segment: &Segment, side: Side) -> Result<Doorbell> {
        let name = doorbell_name(segment).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{} has no name left to find its doorbell by; waiting through select/asyncio needs a named channel",
                segment.path()
            ))
        })?;
        let pinned_side = matches!(side, Side::LaneSpace(_) | Side::Subscriber(_));
        if pinned_side {
            shmplane_shm::bell::ensure(&name, side)?;
        }
        let bell = Bell::open(&name, side)?;
        let pinned = if pinned_side {
            Some(bell.own_writer().ok_or_else(|| Error::InvalidArgument(format!("cannot open a write end of the doorbell of {}", segment.path())))?)
        } else {
            None
        };
        Ok(Doorbell { bell, placeholder: None, _pinned: pinned })
    }

    /// Make the descriptor's state exact: drain it, arm the doorbell on `event` (the
    /// caller's re-check follows inside `ready`), and ring it ourselves if `ready()`
    /// already holds. `peer` is the peer role's state word. Returns `true` if the
    /// doorbell has no writer left (every handle of the peer closed or died): the
    /// caller should check the peer now.
    pub(crate) fn arm(&mut self, event: &shmplane_shm::layout::EventCount, peer: u32, ready: impl FnOnce() -> bool) -> bool {
        let peer_gone = self.prime(event, peer);
        if ready() {
            self.ring_own(peer);
        }
        peer_gone
    }

    /// The first half of [`Doorbell::arm`]: drain and arm (the caller re-checks, then
    /// calls [`Doorbell::ring_own`] if its condition holds).
    pub(crate) fn prime(&mut self, event: &shmplane_shm::layout::EventCount, peer: u32) -> bool {
        // A peer handle opens its write end before it claims its role: once the role
        // reads attached (or later), ours is not needed to keep end-of-file away.
        if peer != liveness::VACANT {
            self.placeholder = None;
        }
        let peer_gone = self.bell.drain();
        event.arm_doorbell();
        peer_gone
    }

    /// The second half of [`Doorbell::arm`]: make the descriptor readable now.
    pub(crate) fn ring_own(&mut self, peer: u32) {
        let w = self.bell.ring_own();
        if peer == liveness::VACANT && self.placeholder.is_none() {
            self.placeholder = w;
        }
    }
}

pub(super) fn create_segment(name: &str, capacity_bytes: usize) -> Result<Segment> {
    check_capacity(capacity_bytes)?;
    Segment::create(name, SegmentKind::Channel, Params { p0: capacity_bytes as u64, p1: 0 })
}

/// Create a channel with a generated name and `capacity_bytes` of ring space (a power
/// of two, 4 KiB ..= 2 GiB; [`DEFAULT_CAPACITY`] is a good start). Both ends start in
/// this process; pass one to another process (by name with [`Receiver::open`], or by
/// descriptor with `from_fd`).
///
/// Messages of any size fit: one larger than a record streams through the ring in
/// chunks. The segment (`capacity_bytes` + 4 KiB) is removed when both ends are closed.
///
/// # Errors
/// [`Error::InvalidArgument`] (capacity), [`Error::NoSpace`] (`/dev/shm` full),
/// [`Error::Os`].
///
/// # Examples
/// ```
/// let (mut tx, mut rx) = shmplane::channel(4096)?;
/// tx.send(&[1, 2, 3])?;
/// assert_eq!(rx.recv()?, [1, 2, 3]);
/// let big = vec![7u8; 100_000];         // 24x the ring: streams through in chunks
/// let t = std::thread::spawn(move || { tx.send(&big).map(|_| big) });
/// assert_eq!(rx.recv()?, t.join().unwrap()?);
/// # Ok::<(), shmplane::Error>(())
/// ```
pub fn channel(capacity_bytes: usize) -> Result<(Sender, Receiver)> {
    channel_named(&generated_name(), capacity_bytes)
}

/// [`channel`] with a chosen name (`[A-Za-z0-9._-]`, up to 200 bytes): the segment is
/// `/dev/shm/shmplane.<name>`. A stale segment of that name left by a crash is replaced.
///
/// # Errors
/// As [`channel`], plus [`Error::InvalidName`] and [`Error::AlreadyExists`].
///
/// # Examples
/// ```
/// let (mut tx, mut rx) = shmplane::channel_named("doc-example-pair", 4096)?;
/// tx.send(b"x")?;
/// assert_eq!(rx.try_recv()?, b"x");
/// # Ok::<(), shmplane::Error>(())
/// ```
pub fn channel_named(name: &str, capacity_bytes: usize) -> Result<(Sender, Receiver)> {
    let sender = Sender::create(name, capacity_bytes)?;
    let segment = sender.segment().expect("new sender is open").reopen()?;
    let receiver = Receiver::attach(segment, crate::endpoint::Place::Channel, true, None)?;
    Ok((sender, receiver))
}
