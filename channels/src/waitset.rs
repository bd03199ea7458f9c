//! Waiting on many endpoints at once: [`WaitSet`].
//!
//! Spin-then-block, as one endpoint's wait: busy-poll every endpoint's readiness for
//! the policy's spin time (learned from recent waits, see
//! `shmplane_shm::wait::WaitHistory`), then arm each endpoint's doorbell
//! ([`Receiver::readiness_fd`], [`Sender::readiness_fd`]) and sleep in `poll(2)` on all
//! of them. Readiness means what it means for the descriptors: a receive would not
//! report `Empty` (a message, or the sender closed or died), a send of a small message
//! would not report `Full` (or the receiver is gone).

use crate::{Receiver, Sender};
use shmplane_shm::error::Result;
use shmplane_shm::wait::{WaitHistory, WaitPolicy, SLICE};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// What arming an endpoint's doorbell found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Armed {
    /// Wait for this descriptor to become readable.
    Fd(RawFd),
    /// Ready already: the peer is gone (its doorbell has no writer left and the
    /// liveness check says closed or dead).
    Ready,
    /// The doorbell has no writer although the peer lives (its handle could not open
    /// the doorbell): poll this endpoint in short naps instead.
    Poll,
}

/// An endpoint a [`WaitSet`] can wait on.
pub trait Waitable {
    /// Ready now (one or two loads, no syscall).
    fn ready_now(&mut self) -> bool;
    /// The full liveness check of the peer: `true` if it is gone (closed or dead)
    /// and nothing is left to take. Run once per [`SLICE`]: a peer whose doorbell
    /// write end lives on in another process (a `fork` child that inherited the
    /// handle and never used it) dies without an end-of-file.
    fn peer_gone(&mut self) -> bool;
    /// Arm the doorbell (see [`Receiver::readiness_fd`]).
    ///
    /// # Errors
    /// As [`Receiver::readiness_fd`].
    fn arm(&mut self) -> Result<Armed>;
}

impl Waitable for Receiver {
    fn ready_now(&mut self) -> bool {
        self.ready_or_gone()
    }

    fn peer_gone(&mut self) -> bool {
        self.check_sender().is_err()
    }

    fn arm(&mut self) -> Result<Armed> {
        self.arm_for_set()
    }
}

impl Waitable for Sender {
    fn ready_now(&mut self) -> bool {
        self.room_or_gone()
    }

    fn peer_gone(&mut self) -> bool {
        self.check_receiver().is_err()
    }

    fn arm(&mut self) -> Result<Armed> {
        self.arm_for_set()
    }
}

/// Longest sleep while some endpoint can only be polled ([`Armed::Poll`]).
const POLL_NAP: Duration = Duration::from_millis(1);

/// Waits on many endpoints with one spin-then-block policy.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use shmplane::WaitSet;
/// let (mut tx1, mut rx1) = shmplane::channel(4096)?;
/// let (mut tx2, mut rx2) = shmplane::channel(4096)?;
/// let mut set = WaitSet::new();
/// assert!(set.wait(&mut [&mut rx1, &mut rx2], Some(Duration::from_millis(10)))?.is_empty());
/// tx2.send(b"second")?;
/// assert_eq!(set.wait(&mut [&mut rx1, &mut rx2], None)?, [1]);
/// assert_eq!(rx2.try_recv()?, b"second");
/// # drop(tx1);
/// # Ok::<(), shmplane::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct WaitSet {
    policy: WaitPolicy,
    history: WaitHistory,
}

impl WaitSet {
    /// A set with the default (adaptive) policy.
    pub fn new() -> WaitSet {
        WaitSet::default()
    }

    /// A set that waits per `policy` ([`WaitPolicy::Spin`] never sleeps).
    pub fn with_policy(policy: WaitPolicy) -> WaitSet {
        WaitSet { policy, history: WaitHistory::default() }
    }

    /// Wait until at least one of `endpoints` is ready, at most `timeout` (`None`:
    /// no limit); return the indices of those ready (empty on timeout).
    ///
    /// # Errors
    /// An endpoint's [`Receiver::readiness_fd`] error (closed, no doorbell), or
    /// `poll(2)`'s; [`shmplane_shm::error::Error::InvalidArgument`] for no endpoints.
    pub fn wait(&mut self, endpoints: &mut [&mut dyn Waitable], timeout: Option<Duration>) -> Result<Vec<usize>> {
        if endpoints.is_empty() {
            return Err(shmplane_shm::error::Error::InvalidArgument("WaitSet::wait needs at least one endpoint".into()));
        }
        let start = Instant::now();
        let deadline = timeout.and_then(|t| start.checked_add(t));
        let ready = |eps: &mut [&mut dyn Waitable]| -> Vec<usize> {
            eps.iter_mut().enumerate().filter_map(|(i, e)| e.ready_now().then_some(i)).collect()
        };
        let spin = match self.policy {
            WaitPolicy::Spin => None,
            WaitPolicy::Block => Some(Duration::ZERO),
            p @ WaitPolicy::Adaptive { .. } => match self.history.policy(p) {
                WaitPolicy::Adaptive { spin } => Some(spin),
                _ => Some(Duration::ZERO),
            },
        };
        let mut polls = 0u32;
        loop {
            let now = ready(endpoints);
            if !now.is_empty() {
                self.history.record(start.elapsed(), self.policy, false);
                return Ok(now);
            }
            polls += 1;
            if polls % 64 == 0 || spin == Some(Duration::ZERO) {
                let t = Instant::now();
                if deadline.is_some_and(|d| t >= d) {
                    return Ok(Vec::new());
                }
                if spin.is_some_and(|s| t.duration_since(start) >= s) {
                    break;
                }
            }
            std::hint::spin_loop();
        }
        // Block: arm every doorbell (arming re-checks and rings the endpoint's own
        // doorbell if it is ready, so poll returns at once then), then sleep in poll.
        loop {
            let mut fds = Vec::with_capacity(endpoints.len());
            let mut nap = None;
            for (i, e) in endpoints.iter_mut().enumerate() {
                match e.arm()? {
                    Armed::Fd(fd) => fds.push(fd),
                    Armed::Ready => {
                        self.history.record(start.elapsed(), self.policy, true);
                        return Ok(vec![i]);
                    }
                    Armed::Poll => nap = Some(POLL_NAP),
                }
            }
            let nap = nap.unwrap_or(SLICE);
            let left = deadline.map_or(nap, |d| d.saturating_duration_since(Instant::now()).min(nap));
            let hits = shmplane_shm::bell::poll_readable(&fds, Some(left))?;
            let now = ready(endpoints);
            if !now.is_empty() {
                self.history.record(start.elapsed(), self.policy, true);
                return Ok(now);
            }
            if !hits.iter().any(|&h| h) {
                // A slice without a ring: look at the peers (see `Waitable::peer_gone`).
                let gone: Vec<usize> =
                    endpoints.iter_mut().enumerate().filter_map(|(i, e)| e.peer_gone().then_some(i)).collect();
                if !gone.is_empty() {
                    return Ok(gone);
                }
            }
            // Rung for something another copy took, or woken by a peer that went away
            // (arming again tells): wait again.
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Vec::new());
            }
        }
    }
}
