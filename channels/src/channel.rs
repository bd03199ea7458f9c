//! SPSC channel of byte records over one shared-memory ring.

use crate::endpoint::{check_peer, generated_name, ring_error, wait_error, Owner, CONSUMER, PRODUCER};
use shmplane_shm::error::{Error, Result};
use shmplane_shm::header::SegmentKind;
use shmplane_shm::layout::{check_ring_capacity, ring_segment_len, MAX_RING_CAPACITY, MIN_RING_CAPACITY};
use shmplane_shm::ring::{self, Claim, Consumer, Producer, Record, RingStore, MAX_TAG};
use shmplane_shm::segment::Segment;
use shmplane_shm::store::SegmentRing;
use shmplane_shm::sync::Ordering;
use shmplane_shm::wait::{wait_until, WaitPolicy};
use std::fmt;
use std::os::fd::{OwnedFd, RawFd};
use std::time::{Duration, Instant};

fn check_capacity(capacity_bytes: usize) -> Result<()> {
    if check_ring_capacity(capacity_bytes as u64) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "capacity {capacity_bytes} bytes must be a power of two between {MIN_RING_CAPACITY} and {MAX_RING_CAPACITY}"
        )))
    }
}

/// Create a channel with a generated name and `capacity_bytes` of ring space (a power
/// of two, 4 KiB ..= 2 GiB). Both ends start in this process; pass one to another
/// process (by name with [`Receiver::open`], or by descriptor with `from_fd`).
///
/// The largest message is `capacity_bytes - 16` bytes ([`crate::max_message_len`]).
/// The segment is removed when both ends are closed.
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
    let segment = sender.producer.as_ref().expect("new sender is open").store().segment().reopen()?;
    let receiver = Receiver::attach(segment)?;
    Ok((sender, receiver))
}

fn create_segment(name: &str, capacity_bytes: usize) -> Result<Segment> {
    check_capacity(capacity_bytes)?;
    Segment::create(name, SegmentKind::Channel, ring_segment_len(capacity_bytes), capacity_bytes as u64, 0)
}

/// The producing end of a channel. At most one live `Sender` per channel, across all
/// processes ([`Error::RoleTaken`] otherwise).
pub struct Sender {
    producer: Option<Producer<SegmentRing>>,
    policy: WaitPolicy,
    owner: Owner,
}

impl Sender {
    /// Create channel `name` with `capacity_bytes` of ring space and attach as its sender.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::InvalidArgument`], [`Error::AlreadyExists`],
    /// [`Error::NoSpace`], [`Error::Os`].
    ///
    /// # Examples
    /// ```
    /// let mut tx = shmplane::Sender::create("doc-example-create", 4096)?;
    /// let mut rx = shmplane::Receiver::open("doc-example-create")?;
    /// tx.send(b"hi")?;
    /// assert_eq!(rx.recv()?, b"hi");
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn create(name: &str, capacity_bytes: usize) -> Result<Sender> {
        Sender::attach(create_segment(name, capacity_bytes)?)
    }

    /// Open existing channel `name` as its sender.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Corrupt`], [`Error::Incompatible`],
    /// [`Error::WrongKind`], [`Error::RoleTaken`], [`Error::Os`].
    ///
    /// # Examples
    /// ```
    /// let mut rx = shmplane::Receiver::create("doc-sender-open", 4096)?;
    /// let mut tx = shmplane::Sender::open("doc-sender-open")?;
    /// tx.send(b"x")?;
    /// assert_eq!(rx.recv()?, b"x");
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn open(name: &str) -> Result<Sender> {
        Sender::attach(Segment::open(name, SegmentKind::Channel)?)
    }

    /// Adopt a descriptor of a channel segment whose open file description holds (or
    /// may take) the sender role: how a handle moves into a child process.
    ///
    /// # Errors
    /// As [`Sender::open`].
    ///
    /// # Examples
    /// ```
    /// use std::os::fd::{BorrowedFd, OwnedFd};
    /// let (tx, mut rx) = shmplane::channel(4096)?;
    /// // What a child process does with a descriptor it inherited (same open file description).
    /// // SAFETY (doc example): the descriptor is open for the duration of the borrow.
    /// let fd: OwnedFd = unsafe { BorrowedFd::borrow_raw(tx.fd().unwrap()) }.try_clone_to_owned().unwrap();
    /// let name = tx.name().map(str::to_owned);
    /// drop(tx);
    /// let mut tx = shmplane::Sender::from_fd(fd, name)?;
    /// tx.send(b"moved")?;
    /// assert_eq!(rx.recv()?, b"moved");
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn from_fd(fd: OwnedFd, name: Option<String>) -> Result<Sender> {
        Sender::attach(Segment::from_fd(fd, name, SegmentKind::Channel)?)
    }

    fn attach(segment: Segment) -> Result<Sender> {
        let owner = Owner::current();
        segment.claim_role(PRODUCER, owner.id())?;
        let path = segment.path().to_owned();
        let store = SegmentRing::new(segment);
        store.control().space_ready.value.reset_waiters();
        let producer = Producer::attach(store).map_err(|e| Error::Corrupt { path, what: e.to_string() })?;
        Ok(Sender { producer: Some(producer), policy: WaitPolicy::default(), owner })
    }

    #[inline(always)]
    fn producer(&mut self) -> Result<&mut Producer<SegmentRing>> {
        // `let else`, not `ok_or(Error::Closed)`: that builds and drops an Error (which
        // has drop glue) on every send: measured 10% of the per-message instructions.
        let Some(producer) = self.producer.as_mut() else { return Err(Error::Closed) };
        let segment = producer.store().segment();
        self.owner.check(&segment.header().roles[PRODUCER], "sender", segment)?;
        Ok(producer)
    }

    /// How blocking operations wait (default: [`WaitPolicy::Adaptive`]).
    ///
    /// # Examples
    /// ```
    /// let (mut tx, _rx) = shmplane::channel(4096)?;
    /// assert!(matches!(tx.wait_policy(), shmplane::WaitPolicy::Adaptive { .. }));
    /// tx.set_wait_policy(shmplane::WaitPolicy::Spin);
    /// assert_eq!(tx.wait_policy(), shmplane::WaitPolicy::Spin);
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn wait_policy(&self) -> WaitPolicy {
        self.policy
    }

    /// Set how blocking operations wait.
    ///
    /// # Examples
    /// ```
    /// let (mut tx, _rx) = shmplane::channel(8192)?;
    /// tx.set_wait_policy(shmplane::WaitPolicy::Block);
    /// assert_eq!(tx.wait_policy(), shmplane::WaitPolicy::Block);
    /// assert_eq!(tx.capacity(), 8192);
    /// assert!(tx.name().is_some() && tx.path().is_some() && tx.fd().is_some());
    /// tx.close();
    /// assert!(tx.is_closed() && tx.name().is_none());
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn set_wait_policy(&mut self, policy: WaitPolicy) {
        self.policy = policy;
    }

    /// Largest message in bytes (`capacity - 16`).
    ///
    /// # Errors
    /// [`Error::Closed`].
    ///
    /// # Examples
    /// ```
    /// let (tx, rx) = shmplane::channel(4096)?;
    /// assert_eq!(tx.max_message_len()?, 4080);
    /// assert_eq!(tx.capacity(), 4096);
    /// assert_eq!(tx.name(), rx.name());
    /// assert!(tx.path().unwrap().starts_with("/dev/shm/shmplane."));
    /// assert!(tx.fd().is_some() && !tx.is_closed());
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn max_message_len(&self) -> Result<usize> {
        match &self.producer {
            Some(p) => Ok(p.max_payload()),
            None => Err(Error::Closed),
        }
    }

    /// Ring capacity in bytes, or 0 once closed.
    ///
    /// # Examples
    /// ```
    /// let (mut tx, _rx) = shmplane::channel(8192)?;
    /// tx.set_wait_policy(shmplane::WaitPolicy::Block);
    /// assert_eq!(tx.wait_policy(), shmplane::WaitPolicy::Block);
    /// assert_eq!(tx.capacity(), 8192);
    /// assert!(tx.name().is_some() && tx.path().is_some() && tx.fd().is_some());
    /// tx.close();
    /// assert!(tx.is_closed() && tx.name().is_none());
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn capacity(&self) -> usize {
        self.producer.as_ref().map_or(0, |p| p.store().capacity())
    }

    /// The channel's name (`None` once closed).
    ///
    /// # Examples
    /// ```
    /// let (mut tx, _rx) = shmplane::channel(8192)?;
    /// tx.set_wait_policy(shmplane::WaitPolicy::Block);
    /// assert_eq!(tx.wait_policy(), shmplane::WaitPolicy::Block);
    /// assert_eq!(tx.capacity(), 8192);
    /// assert!(tx.name().is_some() && tx.path().is_some() && tx.fd().is_some());
    /// tx.close();
    /// assert!(tx.is_closed() && tx.name().is_none());
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn name(&self) -> Option<&str> {
        self.producer.as_ref().and_then(|p| p.store().segment().name())
    }

    /// The segment file's path (`None` once closed).
    ///
    /// # Examples
    /// ```
    /// let (mut tx, _rx) = shmplane::channel(8192)?;
    /// tx.set_wait_policy(shmplane::WaitPolicy::Block);
    /// assert_eq!(tx.wait_policy(), shmplane::WaitPolicy::Block);
    /// assert_eq!(tx.capacity(), 8192);
    /// assert!(tx.name().is_some() && tx.path().is_some() && tx.fd().is_some());
    /// tx.close();
    /// assert!(tx.is_closed() && tx.name().is_none());
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn path(&self) -> Option<&str> {
        self.producer.as_ref().map(|p| p.store().segment().path())
    }

    /// The descriptor holding this end's role (to pass to a child), `None` once closed.
    ///
    /// # Examples
    /// ```
    /// let (mut tx, _rx) = shmplane::channel(8192)?;
    /// tx.set_wait_policy(shmplane::WaitPolicy::Block);
    /// assert_eq!(tx.wait_policy(), shmplane::WaitPolicy::Block);
    /// assert_eq!(tx.capacity(), 8192);
    /// assert!(tx.name().is_some() && tx.path().is_some() && tx.fd().is_some());
    /// tx.close();
    /// assert!(tx.is_closed() && tx.name().is_none());
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn fd(&self) -> Option<RawFd> {
        self.producer.as_ref().and_then(|p| p.store().segment().fd())
    }

    /// True once [`Sender::close`] ran.
    ///
    /// # Examples
    /// ```
    /// let (mut tx, _rx) = shmplane::channel(8192)?;
    /// tx.set_wait_policy(shmplane::WaitPolicy::Block);
    /// assert_eq!(tx.wait_policy(), shmplane::WaitPolicy::Block);
    /// assert_eq!(tx.capacity(), 8192);
    /// assert!(tx.name().is_some() && tx.path().is_some() && tx.fd().is_some());
    /// tx.close();
    /// assert!(tx.is_closed() && tx.name().is_none());
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        self.producer.is_none()
    }

    #[inline(always)]
    fn claim(&mut self, len: usize, deadline: Option<Instant>, block: bool) -> Result<Claim> {
        let producer = self.producer()?;
        match producer.try_claim(len) {
            Ok(Some(claim)) => Ok(claim),
            Ok(None) if !block => Err(Error::Full),
            Ok(None) => self.wait_for_claim(len, deadline),
            Err(e) => Err(ring_error(e, producer.store().segment())),
        }
    }

    /// Slow half of `claim`: the ring is full; wait for the consumer per the policy.
    #[cold]
    #[inline(never)]
    fn wait_for_claim(&mut self, len: usize, deadline: Option<Instant>) -> Result<Claim> {
        let policy = self.policy;
        let producer = self.producer()?;
        let seg_err = |e, p: &Producer<SegmentRing>| ring_error(e, p.store().segment());
        wait_until(
            producer,
            |p| (&p.store().control().space_ready.value, p.store().park()),
            policy,
            deadline,
            |p| p.try_claim(len).map_err(|e| seg_err(e, p)),
            |p| {
                let poisoned = p.store().control().poisoned.value.load(Ordering::Relaxed);
                check_peer(p.store().segment(), CONSUMER, poisoned)
            },
        )
        .map_err(wait_error)
    }

    #[inline]
    fn send_impl(&mut self, msg: &[u8], deadline: Option<Instant>, block: bool) -> Result<()> {
        let claim = self.claim(msg.len(), deadline, block)?;
        let producer = self.producer.as_mut().expect("claimed on an open sender");
        producer.write(&claim, 0, msg);
        producer.commit(claim, msg.len(), 0);
        Ok(())
    }

    /// Send one message, waiting (per the wait policy) while the ring is full.
    ///
    /// # Errors
    /// [`Error::TooLarge`] (never fits), [`Error::PeerDead`] / [`Error::Disconnected`]
    /// (the receiver died / closed while we waited for space), [`Error::Corrupt`],
    /// [`Error::RoleTaken`] (this handle was passed to another process),
    /// [`Error::Closed`].
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = shmplane::channel(4096)?;
    /// tx.send(b"ping")?;
    /// assert_eq!(rx.recv()?, b"ping");
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.send_impl(msg, None, true)
    }

    /// Send without waiting.
    ///
    /// # Errors
    /// [`Error::Full`] if there is no room now; otherwise as [`Sender::send`].
    ///
    /// # Examples
    /// ```
    /// let (mut tx, _rx) = shmplane::channel(4096)?;
    /// while tx.try_send(&[0; 1000]).is_ok() {}
    /// assert!(matches!(tx.try_send(&[0; 1000]), Err(shmplane::Error::Full)));
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn try_send(&mut self, msg: &[u8]) -> Result<()> {
        self.send_impl(msg, None, false)
    }

    /// Send, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// [`Error::Timeout`]; otherwise as [`Sender::send`].
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let (mut tx, _rx) = shmplane::channel(4096)?;
    /// tx.send_timeout(&[0; 4000], Duration::from_millis(10))?;
    /// let full = tx.send_timeout(&[0; 4000], Duration::from_millis(10));
    /// assert!(matches!(full, Err(shmplane::Error::Timeout)));
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Result<()> {
        self.send_impl(msg, Some(Instant::now() + timeout), true)
    }

    /// Reserve `len` bytes in the ring to write a message in place (zero-copy),
    /// waiting at most `timeout` (`None`: forever) for room. Publish with
    /// [`Loan::commit`]; dropping the loan aborts it.
    ///
    /// # Errors
    /// [`Error::Timeout`]; otherwise as [`Sender::send`].
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = shmplane::channel(4096)?;
    /// let mut loan = tx.loan(4, None)?;
    /// loan.as_mut_slice().copy_from_slice(b"abcd");
    /// loan.commit();
    /// assert_eq!(&*rx.peek(None)?, b"abcd");
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn loan(&mut self, len: usize, timeout: Option<Duration>) -> Result<Loan<'_>> {
        let claim = self.claim(len, timeout.map(|t| Instant::now() + t), true)?;
        Ok(Loan { producer: self.producer.as_mut().expect("open"), claim: Some(claim), tag: 0 })
    }

    /// [`Sender::loan`] without waiting.
    ///
    /// # Errors
    /// [`Error::Full`]; otherwise as [`Sender::send`].
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = shmplane::channel(4096)?;
    /// let mut loan = tx.try_loan(3)?;
    /// loan.as_mut_slice().copy_from_slice(b"abc");
    /// loan.commit();
    /// assert_eq!(rx.recv()?, b"abc");
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn try_loan(&mut self, len: usize) -> Result<Loan<'_>> {
        let claim = self.claim(len, None, false)?;
        Ok(Loan { producer: self.producer.as_mut().expect("open"), claim: Some(claim), tag: 0 })
    }

    /// Wait until a message of `len` bytes fits, at most `timeout` (`None`: forever;
    /// zero: check once). `Ok(false)` on timeout. Nothing is reserved: a following
    /// [`Sender::try_send`] of at most `len` bytes from this thread then succeeds.
    ///
    /// # Errors
    /// As [`Sender::send`].
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let (mut tx, _rx) = shmplane::channel(4096)?;
    /// assert!(tx.poll_space(4000, Some(Duration::ZERO))?);
    /// tx.send(&[0; 4000])?;
    /// assert!(!tx.poll_space(4000, Some(Duration::from_millis(5)))?);
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn poll_space(&mut self, len: usize, timeout: Option<Duration>) -> Result<bool> {
        let block = timeout != Some(Duration::ZERO);
        match self.claim(len, timeout.map(|t| Instant::now() + t), block) {
            Ok(_unused_claim) => Ok(true),
            Err(Error::Timeout | Error::Full) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Close this end: the receiver gets [`Error::Disconnected`] after draining. If this
    /// handle was shared with another process (fork, descriptor passing), the role stays
    /// with that process. Idempotent; also done on drop.
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = shmplane::channel(4096)?;
    /// tx.send(b"last")?;
    /// tx.close();
    /// assert!(tx.is_closed());
    /// assert_eq!(rx.recv()?, b"last");
    /// assert!(matches!(rx.recv(), Err(shmplane::Error::Disconnected { .. })));
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn close(&mut self) {
        if let Some(p) = self.producer.take() {
            p.into_store().into_segment().close_role(PRODUCER, self.owner.pid());
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.producer {
            Some(p) => f
                .debug_struct("Sender")
                .field("path", &p.store().segment().path())
                .field("capacity", &p.store().capacity())
                .field("policy", &self.policy)
                .finish(),
            None => f.write_str("Sender(closed)"),
        }
    }
}

/// Space in the ring lent by [`Sender::loan`]: write the message, then [`Loan::commit`].
/// Dropping it without committing publishes nothing.
pub struct Loan<'a> {
    producer: &'a mut Producer<SegmentRing>,
    claim: Option<Claim>,
    tag: u32,
}

impl Loan<'_> {
    /// The lent bytes (their previous contents are unspecified).
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = shmplane::channel(4096)?;
    /// let mut loan = tx.loan(8, None)?;
    /// assert_eq!((loan.len(), loan.is_empty()), (8, false));
    /// loan.as_mut_slice().copy_from_slice(&7u64.to_le_bytes());
    /// loan.set_tag(5)?;
    /// loan.commit_len(8)?;
    /// let msg = rx.peek(None)?;
    /// assert_eq!((msg.tag(), &msg[..]), (5, &7u64.to_le_bytes()[..]));
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.producer.payload_mut(self.claim.as_ref().expect("uncommitted"))
    }

    /// Length of the loan in bytes.
    ///
    /// # Examples
    /// ```
    /// let (mut tx, _rx) = shmplane::channel(4096)?;
    /// let loan = tx.loan(16, None)?;
    /// assert_eq!(loan.len(), 16);
    /// drop(loan); // aborted: nothing published
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.claim.as_ref().map_or(0, Claim::len)
    }

    /// True for a zero-length loan.
    ///
    /// # Examples
    /// ```
    /// let (mut tx, _rx) = shmplane::channel(4096)?;
    /// assert!(tx.loan(0, None)?.is_empty());
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Set the record's tag (`0..=0x7FFF_FFFE`) that [`Message::tag`] reports.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `tag` is out of range.
    ///
    /// # Examples
    /// ```
    /// let (mut tx, _rx) = shmplane::channel(4096)?;
    /// let mut loan = tx.loan(1, None)?;
    /// assert!(loan.set_tag(u32::MAX).is_err());
    /// loan.set_tag(42)?;
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn set_tag(&mut self, tag: u32) -> Result<()> {
        if tag > MAX_TAG {
            return Err(Error::InvalidArgument(format!("tag {tag} exceeds {MAX_TAG}")));
        }
        self.tag = tag;
        Ok(())
    }

    /// Publish the whole loan.
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = shmplane::channel(4096)?;
    /// let mut loan = tx.loan(2, None)?;
    /// loan.as_mut_slice().copy_from_slice(b"ok");
    /// loan.commit();
    /// assert_eq!(rx.recv()?, b"ok");
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn commit(mut self) {
        let claim = self.claim.take().expect("uncommitted");
        let len = claim.len();
        self.producer.commit(claim, len, self.tag);
    }

    /// Publish only the first `len` bytes.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `len` exceeds the loan.
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = shmplane::channel(4096)?;
    /// let mut loan = tx.loan(100, None)?;       // reserve the most we might write
    /// loan.as_mut_slice()[..3].copy_from_slice(b"abc");
    /// loan.commit_len(3)?;                       // publish what we wrote
    /// assert_eq!(rx.recv()?, b"abc");
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn commit_len(mut self, len: usize) -> Result<()> {
        if len > self.len() {
            return Err(Error::InvalidArgument(format!("commit of {len} bytes exceeds the {}-byte loan", self.len())));
        }
        let claim = self.claim.take().expect("uncommitted");
        self.producer.commit(claim, len, self.tag);
        Ok(())
    }
}

/// The consuming end of a channel. At most one live `Receiver` per channel.
pub struct Receiver {
    consumer: Option<Consumer<SegmentRing>>,
    policy: WaitPolicy,
    owner: Owner,
    /// Empty non-blocking receives since the last full liveness check.
    empty_polls: u32,
    /// When the last full liveness check of a non-blocking receive ran.
    last_check: Option<Instant>,
}

/// Every this many empty `try_recv`s, look at the clock; at most every
/// [`shmplane_shm::wait::SLICE`], check the sender's liveness (a syscall).
const EMPTY_POLLS_PER_CLOCK_READ: u32 = 16;

impl Receiver {
    /// Create channel `name` with `capacity_bytes` of ring space and attach as receiver.
    ///
    /// # Errors
    /// As [`Sender::create`].
    ///
    /// # Examples
    /// ```
    /// let mut rx = shmplane::Receiver::create("doc-receiver-create", 1 << 16)?;
    /// let mut tx = shmplane::Sender::open("doc-receiver-create")?;
    /// tx.send(b"hello")?;
    /// assert_eq!(rx.recv()?, b"hello");
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn create(name: &str, capacity_bytes: usize) -> Result<Receiver> {
        Receiver::attach(create_segment(name, capacity_bytes)?)
    }

    /// Open existing channel `name` as its receiver.
    ///
    /// # Errors
    /// As [`Sender::open`].
    ///
    /// # Examples
    /// ```
    /// let mut tx = shmplane::Sender::create("doc-receiver-open", 4096)?;
    /// tx.send(b"queued before the receiver attached")?;
    /// let mut rx = shmplane::Receiver::open("doc-receiver-open")?;
    /// assert_eq!(rx.recv()?, b"queued before the receiver attached");
    /// assert!(matches!(shmplane::Receiver::open("doc-receiver-open"), Err(shmplane::Error::RoleTaken { .. })));
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn open(name: &str) -> Result<Receiver> {
        Receiver::attach(Segment::open(name, SegmentKind::Channel)?)
    }

    /// Adopt a descriptor of a channel segment (see [`Sender::from_fd`]).
    ///
    /// # Errors
    /// As [`Sender::open`].
    ///
    /// # Examples
    /// ```
    /// use std::os::fd::{BorrowedFd, OwnedFd};
    /// let (mut tx, rx) = shmplane::channel(4096)?;
    /// // SAFETY (doc example): the descriptor is open for the duration of the borrow.
    /// let fd: OwnedFd = unsafe { BorrowedFd::borrow_raw(rx.fd().unwrap()) }.try_clone_to_owned().unwrap();
    /// let name = rx.name().map(str::to_owned);
    /// drop(rx);
    /// let mut rx = shmplane::Receiver::from_fd(fd, name)?;
    /// tx.send(b"moved")?;
    /// assert_eq!(rx.recv()?, b"moved");
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn from_fd(fd: OwnedFd, name: Option<String>) -> Result<Receiver> {
        Receiver::attach(Segment::from_fd(fd, name, SegmentKind::Channel)?)
    }

    fn attach(segment: Segment) -> Result<Receiver> {
        let owner = Owner::current();
        segment.claim_role(CONSUMER, owner.id())?;
        let path = segment.path().to_owned();
        let store = SegmentRing::new(segment);
        store.control().data_ready.value.reset_waiters();
        let consumer = Consumer::attach(store).map_err(|e| Error::Corrupt { path, what: e.to_string() })?;
        Ok(Receiver { consumer: Some(consumer), policy: WaitPolicy::default(), owner, empty_polls: 0, last_check: None })
    }

    #[inline(always)]
    fn consumer<'a>(
        consumer: &'a mut Option<Consumer<SegmentRing>>,
        owner: &mut Owner,
    ) -> Result<&'a mut Consumer<SegmentRing>> {
        let Some(consumer) = consumer.as_mut() else { return Err(Error::Closed) };
        let segment = consumer.store().segment();
        owner.check(&segment.header().roles[CONSUMER], "receiver", segment)?;
        Ok(consumer)
    }

    /// How blocking operations wait (default: [`WaitPolicy::Adaptive`]).
    ///
    /// # Examples
    /// ```
    /// let (_tx, mut rx) = shmplane::channel(8192)?;
    /// rx.set_wait_policy(shmplane::WaitPolicy::Block);
    /// assert_eq!(rx.wait_policy(), shmplane::WaitPolicy::Block);
    /// assert_eq!(rx.capacity(), 8192);
    /// assert!(rx.name().is_some() && rx.path().is_some() && rx.fd().is_some());
    /// rx.close();
    /// assert!(rx.is_closed() && rx.name().is_none());
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn wait_policy(&self) -> WaitPolicy {
        self.policy
    }

    /// Set how blocking operations wait.
    ///
    /// # Examples
    /// ```
    /// let (_tx, mut rx) = shmplane::channel(8192)?;
    /// rx.set_wait_policy(shmplane::WaitPolicy::Block);
    /// assert_eq!(rx.wait_policy(), shmplane::WaitPolicy::Block);
    /// assert_eq!(rx.capacity(), 8192);
    /// assert!(rx.name().is_some() && rx.path().is_some() && rx.fd().is_some());
    /// rx.close();
    /// assert!(rx.is_closed() && rx.name().is_none());
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn set_wait_policy(&mut self, policy: WaitPolicy) {
        self.policy = policy;
    }

    /// Ring capacity in bytes, or 0 once closed.
    ///
    /// # Examples
    /// ```
    /// let (_tx, mut rx) = shmplane::channel(8192)?;
    /// rx.set_wait_policy(shmplane::WaitPolicy::Block);
    /// assert_eq!(rx.wait_policy(), shmplane::WaitPolicy::Block);
    /// assert_eq!(rx.capacity(), 8192);
    /// assert!(rx.name().is_some() && rx.path().is_some() && rx.fd().is_some());
    /// rx.close();
    /// assert!(rx.is_closed() && rx.name().is_none());
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn capacity(&self) -> usize {
        self.consumer.as_ref().map_or(0, |c| c.store().capacity())
    }

    /// The channel's name (`None` once closed).
    ///
    /// # Examples
    /// ```
    /// let (_tx, mut rx) = shmplane::channel(8192)?;
    /// rx.set_wait_policy(shmplane::WaitPolicy::Block);
    /// assert_eq!(rx.wait_policy(), shmplane::WaitPolicy::Block);
    /// assert_eq!(rx.capacity(), 8192);
    /// assert!(rx.name().is_some() && rx.path().is_some() && rx.fd().is_some());
    /// rx.close();
    /// assert!(rx.is_closed() && rx.name().is_none());
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn name(&self) -> Option<&str> {
        self.consumer.as_ref().and_then(|c| c.store().segment().name())
    }

    /// The segment file's path (`None` once closed).
    ///
    /// # Examples
    /// ```
    /// let (_tx, mut rx) = shmplane::channel(8192)?;
    /// rx.set_wait_policy(shmplane::WaitPolicy::Block);
    /// assert_eq!(rx.wait_policy(), shmplane::WaitPolicy::Block);
    /// assert_eq!(rx.capacity(), 8192);
    /// assert!(rx.name().is_some() && rx.path().is_some() && rx.fd().is_some());
    /// rx.close();
    /// assert!(rx.is_closed() && rx.name().is_none());
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn path(&self) -> Option<&str> {
        self.consumer.as_ref().map(|c| c.store().segment().path())
    }

    /// The descriptor holding this end's role (to pass to a child), `None` once closed.
    ///
    /// # Examples
    /// ```
    /// let (_tx, mut rx) = shmplane::channel(8192)?;
    /// rx.set_wait_policy(shmplane::WaitPolicy::Block);
    /// assert_eq!(rx.wait_policy(), shmplane::WaitPolicy::Block);
    /// assert_eq!(rx.capacity(), 8192);
    /// assert!(rx.name().is_some() && rx.path().is_some() && rx.fd().is_some());
    /// rx.close();
    /// assert!(rx.is_closed() && rx.name().is_none());
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn fd(&self) -> Option<RawFd> {
        self.consumer.as_ref().and_then(|c| c.store().segment().fd())
    }

    /// True once [`Receiver::close`] ran.
    ///
    /// # Examples
    /// ```
    /// let (_tx, mut rx) = shmplane::channel(8192)?;
    /// rx.set_wait_policy(shmplane::WaitPolicy::Block);
    /// assert_eq!(rx.wait_policy(), shmplane::WaitPolicy::Block);
    /// assert_eq!(rx.capacity(), 8192);
    /// assert!(rx.name().is_some() && rx.path().is_some() && rx.fd().is_some());
    /// rx.close();
    /// assert!(rx.is_closed() && rx.name().is_none());
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        self.consumer.is_none()
    }

    #[inline(always)]
    fn next(&mut self, deadline: Option<Instant>, block: bool) -> Result<Record> {
        let consumer = Self::consumer(&mut self.consumer, &mut self.owner)?;
        match consumer.try_peek() {
            Ok(Some(r)) => Ok(r),
            Ok(None) if !block => self.empty(),
            Ok(None) => self.wait_for_record(deadline),
            Err(e) => Err(ring_error(e, consumer.store().segment())),
        }
    }

    /// Slow half of a non-blocking `next`: the ring is empty. Tells an empty ring from
    /// a closed or dead sender.
    #[cold]
    #[inline(never)]
    fn empty(&mut self) -> Result<Record> {
        let consumer = Self::consumer(&mut self.consumer, &mut self.owner)?;
        let seg_err = |e, c: &Consumer<SegmentRing>| ring_error(e, c.store().segment());
        // Cheap disconnect check: one atomic load of the peer's state word; a full
        // liveness check (dead sender) at most every SLICE.
        let state = consumer.store().segment().header().roles[PRODUCER].state.load(Ordering::Acquire);
        let mut verdict = (state == shmplane_shm::liveness::CLOSED).then_some(Error::Disconnected { role: "sender" });
        self.empty_polls += 1;
        if verdict.is_none() && self.empty_polls >= EMPTY_POLLS_PER_CLOCK_READ {
            self.empty_polls = 0;
            let now = Instant::now();
            if self.last_check.is_none_or(|t| now.duration_since(t) >= shmplane_shm::wait::SLICE) {
                self.last_check = Some(now);
                let poisoned = consumer.store().control().poisoned.value.load(Ordering::Relaxed);
                verdict = check_peer(consumer.store().segment(), PRODUCER, poisoned).err();
            }
        }
        if let Some(e) = verdict {
            // The sender's last records happen-before its close or death.
            if let Some(r) = consumer.try_peek().map_err(|e| seg_err(e, consumer))? {
                return Ok(r);
            }
            return Err(e);
        }
        Err(Error::Empty)
    }

    /// Slow half of a blocking `next`: wait for a record per the policy.
    #[cold]
    #[inline(never)]
    fn wait_for_record(&mut self, deadline: Option<Instant>) -> Result<Record> {
        let policy = self.policy;
        let consumer = Self::consumer(&mut self.consumer, &mut self.owner)?;
        let seg_err = |e, c: &Consumer<SegmentRing>| ring_error(e, c.store().segment());
        wait_until(
            consumer,
            |c| (&c.store().control().data_ready.value, c.store().park()),
            policy,
            deadline,
            |c| c.try_peek().map_err(|e| seg_err(e, c)),
            |c| {
                let poisoned = c.store().control().poisoned.value.load(Ordering::Relaxed);
                match check_peer(c.store().segment(), PRODUCER, poisoned) {
                    // The peer's last records happen-before its close: drain them first.
                    Err(e @ (Error::Disconnected { .. } | Error::PeerDead { .. })) => {
                        match c.try_peek().map_err(|e| seg_err(e, c))? {
                            Some(_) => Ok(()),
                            None => Err(e),
                        }
                    }
                    other => other,
                }
            },
        )
        .map_err(wait_error)
    }

    fn recv_impl(&mut self, deadline: Option<Instant>, block: bool) -> Result<Vec<u8>> {
        let record = self.next(deadline, block)?;
        let consumer = self.consumer.as_mut().expect("open");
        let out = consumer.payload(&record).to_vec();
        consumer.release(record);
        Ok(out)
    }

    /// Receive one message, waiting (per the wait policy) while the ring is empty.
    ///
    /// # Errors
    /// [`Error::Disconnected`] (the sender closed and everything was received),
    /// [`Error::PeerDead`] (the sender died and everything was received),
    /// [`Error::Corrupt`] (a malformed record; the ring is poisoned),
    /// [`Error::RoleTaken`], [`Error::Closed`].
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = shmplane::channel(4096)?;
    /// tx.send(b"x")?;
    /// drop(tx);
    /// assert_eq!(rx.recv()?, b"x");
    /// assert!(matches!(rx.recv(), Err(shmplane::Error::Disconnected { .. })));
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn recv(&mut self) -> Result<Vec<u8>> {
        self.recv_impl(None, true)
    }

    /// Receive without waiting: one atomic load when empty.
    ///
    /// # Errors
    /// [`Error::Empty`]; otherwise as [`Receiver::recv`].
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = shmplane::channel(4096)?;
    /// assert!(matches!(rx.try_recv(), Err(shmplane::Error::Empty)));  // one atomic load
    /// tx.send(b"x")?;
    /// assert_eq!(rx.try_recv()?, b"x");
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn try_recv(&mut self) -> Result<Vec<u8>> {
        self.recv_impl(None, false)
    }

    /// Receive, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Timeout`]; otherwise as [`Receiver::recv`].
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let (_tx, mut rx) = shmplane::channel(4096)?;
    /// assert!(matches!(rx.recv_timeout(Duration::from_millis(5)), Err(shmplane::Error::Timeout)));
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        self.recv_impl(Some(Instant::now() + timeout), true)
    }

    /// Look at the next message in place (zero-copy), waiting at most `timeout`
    /// (`None`: forever). Its ring space is released when the [`Message`] drops.
    ///
    /// # Errors
    /// [`Error::Timeout`]; otherwise as [`Receiver::recv`].
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = shmplane::channel(4096)?;
    /// tx.send(b"in place")?;
    /// {
    ///     let msg = rx.peek(None)?;        // a view into shared memory
    ///     assert_eq!(&*msg, b"in place");
    /// }                                    // released here
    /// assert!(matches!(rx.try_recv(), Err(shmplane::Error::Empty)));
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn peek(&mut self, timeout: Option<Duration>) -> Result<Message<'_>> {
        let record = self.next(timeout.map(|t| Instant::now() + t), true)?;
        Ok(Message { consumer: self.consumer.as_mut().expect("open"), record: Some(record) })
    }

    /// [`Receiver::peek`] without waiting.
    ///
    /// # Errors
    /// [`Error::Empty`]; otherwise as [`Receiver::recv`].
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = shmplane::channel(4096)?;
    /// assert!(matches!(rx.try_peek(), Err(shmplane::Error::Empty)));
    /// tx.send(b"x")?;
    /// assert_eq!(&*rx.try_peek()?, b"x");
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn try_peek(&mut self) -> Result<Message<'_>> {
        let record = self.next(None, false)?;
        Ok(Message { consumer: self.consumer.as_mut().expect("open"), record: Some(record) })
    }

    /// Wait until a message is ready, at most `timeout` (`None`: forever; zero: check
    /// once), like `multiprocessing.Connection.poll`. `Ok(false)` on timeout. The
    /// message stays in the ring for the next receive.
    ///
    /// # Errors
    /// As [`Receiver::recv`] ([`Error::Disconnected`] once the sender closed and
    /// everything was received).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let (mut tx, mut rx) = shmplane::channel(4096)?;
    /// assert!(!rx.poll(Some(Duration::ZERO))?);
    /// tx.send(b"x")?;
    /// assert!(rx.poll(None)?);
    /// assert_eq!(rx.recv()?, b"x"); // poll does not consume
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn poll(&mut self, timeout: Option<Duration>) -> Result<bool> {
        let block = timeout != Some(Duration::ZERO);
        match self.next(timeout.map(|t| Instant::now() + t), block) {
            Ok(_still_at_head) => Ok(true),
            Err(Error::Timeout | Error::Empty) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Close this end: the sender gets [`Error::Disconnected`] when it next waits.
    /// Idempotent; also done on drop.
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = shmplane::channel(4096)?;
    /// rx.close();
    /// assert!(matches!(rx.recv(), Err(shmplane::Error::Closed)));
    /// // The sender learns it when it next waits for room.
    /// while tx.try_send(&[0; 1000]).is_ok() {}
    /// assert!(matches!(tx.send(&[0; 1000]), Err(shmplane::Error::Disconnected { .. })));
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn close(&mut self) {
        if let Some(c) = self.consumer.take() {
            c.into_store().into_segment().close_role(CONSUMER, self.owner.pid());
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.consumer {
            Some(c) => f
                .debug_struct("Receiver")
                .field("path", &c.store().segment().path())
                .field("capacity", &c.store().capacity())
                .field("policy", &self.policy)
                .finish(),
            None => f.write_str("Receiver(closed)"),
        }
    }
}

/// A received message still in the ring (zero-copy). Derefs to its bytes; its space is
/// released when it drops.
pub struct Message<'a> {
    consumer: &'a mut Consumer<SegmentRing>,
    record: Option<Record>,
}

impl Message<'_> {
    /// The sender's tag (0 unless set with [`Loan::set_tag`]).
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = shmplane::channel(4096)?;
    /// tx.send(b"untagged")?;
    /// assert_eq!(rx.peek(None)?.tag(), 0);
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn tag(&self) -> u32 {
        self.record.as_ref().map_or(0, Record::tag)
    }
}

impl std::ops::Deref for Message<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.consumer.payload(self.record.as_ref().expect("unreleased"))
    }
}

impl Drop for Message<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.record.take() {
            self.consumer.release(r);
        }
    }
}

// The ring's own limits, re-checked here so a change there fails this build.
const _: () = assert!(ring::max_payload(MIN_RING_CAPACITY) == MIN_RING_CAPACITY - 16);
