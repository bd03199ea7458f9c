//! Broadcast: one publisher, many subscribers (SPMC), for messages of any size.
//!
//! One segment holds one record ring (the channel's: `shmplane_shm::ring`) and a
//! cursor line per subscriber. The publisher writes each message once; every
//! subscriber copies it out on its own, in parallel, and stores its own position.
//!
//! - **Lossless** (default): the publisher reuses ring space only once the slowest
//!   live subscriber released it (the LMAX Disruptor's gating sequences), and waits,
//!   under its wait policy and deadline, while that subscriber catches up. A
//!   subscriber that closes or dies stops gating it (the publisher drops a dead one at
//!   its next liveness check, every 50 ms while it waits).
//! - **Lossy** (`lossy = true`): the publisher never waits. Before it reuses space it
//!   moves the *oldest record held* forward (Aeron's broadcast buffer); a subscriber
//!   that fell a lap behind gets [`Error::Lagged`] with the number of messages it
//!   missed, then continues from the oldest message still held (tokio's `broadcast`
//!   semantics).
//!
//! A subscriber receives every message published after it joined, in order. The
//! join protocol, the scan and the lossy checks are in `shmplane_shm::broadcast`
//! (modelled in `loom-tests`). A [`Publisher`] is a [`Sender`] and a [`Subscriber`] a
//! [`Receiver`] (they deref to them): every send and receive, zero-copy loans,
//! waiting, readiness descriptors and copies in child processes work as for
//! channels. Zero-copy views (`peek`) of a lossy broadcast are refused: its publisher
//! may overwrite the bytes meanwhile.

use super::spsc::{Receiver, Sender};
use crate::endpoint::{generated_name, Place};
use shmplane_shm::bell::Ringer;
use shmplane_shm::error::{Error, Result};
use shmplane_shm::header::SegmentKind;
use shmplane_shm::kind::Params;
use shmplane_shm::layout::{check_ring_capacity, BROADCAST_LOSSY, MAX_RING_CAPACITY, MAX_SUBSCRIBERS, MIN_RING_CAPACITY};
use shmplane_shm::segment::Segment;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::os::fd::OwnedFd;

/// Subscribers a broadcast made without a limit can have at once.
pub const DEFAULT_MAX_SUBSCRIBERS: usize = 64;

/// The publishing end of a broadcast: a [`Sender`] whose messages reach every
/// subscriber.
///
/// # Examples
/// ```
/// let mut publisher = shmplane::Publisher::create("doc-broadcast", 1 << 16, false)?;
/// let mut a = shmplane::Subscriber::open("doc-broadcast")?;
/// let mut b = shmplane::Subscriber::open("doc-broadcast")?;
/// publisher.send(b"to all")?;
/// assert_eq!(a.recv()?, b"to all");
/// assert_eq!(b.recv()?, b"to all");
/// # Ok::<(), shmplane::Error>(())
/// ```
pub struct Publisher {
    tx: Sender,
}

/// A subscribing end of a broadcast: a [`Receiver`] of every message published after
/// it joined.
pub struct Subscriber {
    rx: Receiver,
}

fn check_params(capacity_bytes: usize, max_subscribers: usize) -> Result<()> {
    if !check_ring_capacity(capacity_bytes as u64) {
        return Err(Error::InvalidArgument(format!(
            "capacity {capacity_bytes} bytes must be a power of two between {MIN_RING_CAPACITY} and {MAX_RING_CAPACITY}"
        )));
    }
    if max_subscribers == 0 || max_subscribers > MAX_SUBSCRIBERS {
        return Err(Error::InvalidArgument(format!(
            "max_subscribers {max_subscribers} must be between 1 and {MAX_SUBSCRIBERS}"
        )));
    }
    Ok(())
}

impl Publisher {
    /// Create a broadcast with a generated name, a ring of `capacity_bytes` (a power
    /// of two, 4 KiB ..= 2 GiB) and room for [`DEFAULT_MAX_SUBSCRIBERS`] subscribers.
    /// The segment is `capacity_bytes` + 4 KiB + 384 bytes per subscriber slot + 1 KiB,
    /// in whole pages. A lossy broadcast takes messages of one record
    /// ([`Sender::max_message_len`]) or of at most `capacity_bytes / 2`, whichever is
    /// larger ([`Error::TooLarge`] beyond: streaming through in chunks, they would be
    /// overwritten before subscribers read them).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`], [`Error::NoSpace`], [`Error::Os`].
    pub fn new(capacity_bytes: usize, lossy: bool) -> Result<Publisher> {
        Publisher::create_with(&generated_name(), capacity_bytes, DEFAULT_MAX_SUBSCRIBERS, lossy)
    }

    /// Create broadcast `name` (`[A-Za-z0-9._-]`, up to 200 bytes) with room for
    /// [`DEFAULT_MAX_SUBSCRIBERS`] subscribers; subscribers join with
    /// [`Subscriber::open`]. A stale segment of that name left by a crash is replaced.
    ///
    /// # Errors
    /// As [`Publisher::new`], plus [`Error::InvalidName`] and [`Error::AlreadyExists`].
    pub fn create(name: &str, capacity_bytes: usize, lossy: bool) -> Result<Publisher> {
        Publisher::create_with(name, capacity_bytes, DEFAULT_MAX_SUBSCRIBERS, lossy)
    }

    /// [`Publisher::create`] with room for `max_subscribers` (1 ..= 512) at once.
    ///
    /// # Errors
    /// As [`Publisher::create`].
    pub fn create_with(name: &str, capacity_bytes: usize, max_subscribers: usize, lossy: bool) -> Result<Publisher> {
        check_params(capacity_bytes, max_subscribers)?;
        let p1 = max_subscribers as u64 | if lossy { BROADCAST_LOSSY } else { 0 };
        let segment = Segment::create(name, SegmentKind::Broadcast, Params { p0: capacity_bytes as u64, p1 })?;
        Ok(Publisher { tx: Sender::attach(segment, Place::Publisher, true, None)? })
    }

    /// Become the publisher of existing broadcast `name` (its publisher closed or
    /// died): subscribers keep their positions and receive what this one publishes.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::WrongKind`], [`Error::RoleTaken`] (a live
    /// publisher has it), [`Error::Corrupt`], [`Error::Incompatible`], [`Error::Os`].
    pub fn open(name: &str) -> Result<Publisher> {
        let segment = Segment::open(name, SegmentKind::Broadcast)?;
        Ok(Publisher { tx: Sender::attach(segment, Place::Publisher, true, None)? })
    }

    /// Adopt a descriptor of a broadcast segment whose description holds the
    /// publisher role (a duplicate of [`Sender::fd`]): how the publisher moves to a
    /// child process. The copy and the original take turns, each message whole.
    ///
    /// # Errors
    /// As [`Publisher::open`].
    pub fn from_fd(fd: OwnedFd, name: Option<String>) -> Result<Publisher> {
        let segment = Segment::from_fd(fd, name, SegmentKind::Broadcast)?;
        Ok(Publisher { tx: Sender::attach(segment, Place::Publisher, false, None)? })
    }

    /// A new subscriber in this process (as [`Subscriber::open`] of this broadcast's
    /// name): it receives what is published from now on.
    ///
    /// # Errors
    /// As [`Subscriber::open`]; [`Error::Closed`].
    pub fn subscribe(&self) -> Result<Subscriber> {
        let segment = self.tx.segment().ok_or(Error::Closed)?.reopen()?;
        Subscriber::join(segment)
    }

    /// Subscribers now: those that joined and neither closed nor died (this drops
    /// those that did: one liveness check each). 0 once closed.
    pub fn subscribers(&self) -> usize {
        self.tx.subscribers().unwrap_or(0)
    }

    /// The most subscribers at once (0 once closed).
    pub fn max_subscribers(&self) -> usize {
        self.tx.max_subscribers().unwrap_or(0)
    }

    /// True for a lossy broadcast.
    pub fn is_lossy(&self) -> bool {
        self.tx.is_lossy()
    }

    /// The publisher as a plain [`Sender`].
    pub fn into_sender(self) -> Sender {
        self.tx
    }
}

impl Subscriber {
    /// Join broadcast `name` as a new subscriber, in the first free subscriber slot:
    /// it receives every message published from now on.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::WrongKind`], [`Error::AllTaken`] (every
    /// subscriber slot is taken), [`Error::Corrupt`], [`Error::Incompatible`],
    /// [`Error::Os`].
    pub fn open(name: &str) -> Result<Subscriber> {
        Subscriber::join(Segment::open(name, SegmentKind::Broadcast)?)
    }

    fn join(segment: Segment) -> Result<Subscriber> {
        let max = (segment.info().param1 & 0xFFFF_FFFF) as usize;
        for i in 0..max {
            match segment.claim_role(1 + i) {
                Ok(()) => return Ok(Subscriber { rx: Receiver::attach(segment, Place::Subscriber(i), true, None)? }),
                Err(Error::RoleTaken { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::AllTaken { role: "subscriber", path: segment.path().to_owned(), count: max })
    }

    /// Adopt a descriptor of a broadcast segment whose description holds subscriber
    /// slot `index` ([`Subscriber::index`] and [`Receiver::fd`] of the original): how a
    /// subscriber moves to a child process. The copy shares the original's position:
    /// they take turns, and each message reaches one of them (as copies of a
    /// [`Receiver`]). `doorbell`: the original's [`Receiver::doorbell_fd`], if any.
    ///
    /// # Errors
    /// As [`Subscriber::open`]; [`Error::InvalidArgument`] for a slot the broadcast
    /// lacks.
    pub fn from_fd(fd: OwnedFd, doorbell: Option<OwnedFd>, name: Option<String>, index: usize) -> Result<Subscriber> {
        let ringer = doorbell.map(Ringer::from_fd).transpose()?;
        let segment = Segment::from_fd(fd, name, SegmentKind::Broadcast)?;
        if index as u64 >= segment.info().param1 & 0xFFFF_FFFF {
            return Err(Error::InvalidArgument(format!("{} has no subscriber slot {index}", segment.path())));
        }
        Ok(Subscriber { rx: Receiver::attach(segment, Place::Subscriber(index), false, ringer)? })
    }

    /// This subscriber's slot (`None` once closed).
    pub fn index(&self) -> Option<usize> {
        self.rx.subscriber_index()
    }

    /// True for a lossy broadcast.
    pub fn is_lossy(&self) -> bool {
        self.rx.is_lossy()
    }

    /// The subscriber as a plain [`Receiver`].
    pub fn into_receiver(self) -> Receiver {
        self.rx
    }
}

impl Deref for Publisher {
    type Target = Sender;
    fn deref(&self) -> &Sender {
        &self.tx
    }
}

impl DerefMut for Publisher {
    fn deref_mut(&mut self) -> &mut Sender {
        &mut self.tx
    }
}

impl Deref for Subscriber {
    type Target = Receiver;
    fn deref(&self) -> &Receiver {
        &self.rx
    }
}

impl DerefMut for Subscriber {
    fn deref_mut(&mut self) -> &mut Receiver {
        &mut self.rx
    }
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("path", &self.tx.path())
            .field("lossy", &self.is_lossy())
            .field("subscribers", &self.subscribers())
            .finish()
    }
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber").field("path", &self.rx.path()).field("index", &self.index()).finish()
    }
}
