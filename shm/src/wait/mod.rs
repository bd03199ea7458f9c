//! Wait protocol: busy-poll → yield → shared futex, with no syscall when nobody sleeps.
//!
//! Each direction of a structure has an [`EventCount`] (epoch + waiters). The protocol
//! is an eventcount (Vyukov; the shared-futex form follows shadow's `vasi-sync`):
//!
//! ```text
//! waiter                                   notifier (after publishing its data)
//!   e = epoch.load(Acquire)                  if waiters.fetch_add(0, AcqRel) != 0:
//!   waiters.fetch_add(1, AcqRel)                 epoch.fetch_add(1, Release)
//!   if ready(): waiters -= 1; done               futex_wake(epoch, all)
//!   futex_wait(epoch, e, slice)
//!   waiters -= 1; loop
//! ```
//!
//! Why no wake is lost: the two `waiters` RMWs are totally ordered. If the waiter's comes
//! first, the notifier reads `waiters != 0` and bumps the epoch after the waiter read `e`,
//! so `futex_wait(epoch, e)` returns at once or is woken. If the notifier's comes first,
//! the waiter's RMW reads from it (release sequence), so the data published before it
//! happens-before the waiter's `ready()` re-check. The RMW form needs no `SeqCst` fences,
//! which loom can check exactly (`loom-tests/tests/wait.rs`).
//!
//! Policies trade latency for CPU: [`WaitPolicy::Spin`] never sleeps, [`WaitPolicy::Block`]
//! sleeps at once, [`WaitPolicy::Adaptive`] (default) spins a few µs, yields a few times,
//! then sleeps. Every policy wakes at least every [`SLICE`] to run the caller's
//! per-slice check (peer liveness), so a dead peer is noticed within one slice.

mod futex;

pub use futex::{Park, SharedFutex};

use crate::layout::EventCount;
use crate::sync::{spin_hint, yield_now, Ordering};
use std::time::{Duration, Instant};

/// Longest single sleep. Also the period of the caller's per-slice check (liveness),
/// so it bounds how long a waiter on a dead peer takes to notice.
pub const SLICE: Duration = Duration::from_millis(50);

/// How a blocked operation waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitPolicy {
    /// Busy-poll until ready: lowest latency, burns a core while waiting.
    Spin,
    /// Busy-poll for `spin`, then yield a few times, then sleep on the futex.
    Adaptive {
        /// How long to busy-poll before yielding.
        spin: Duration,
    },
    /// Sleep on the futex at once: least CPU, a futex wake (~5-20 µs) of latency.
    Block,
}

impl Default for WaitPolicy {
    fn default() -> Self {
        WaitPolicy::Adaptive { spin: DEFAULT_SPIN }
    }
}

/// Default busy-poll time of [`WaitPolicy::Adaptive`].
pub const DEFAULT_SPIN: Duration = Duration::from_micros(20);
/// Number of `sched_yield` calls of [`WaitPolicy::Adaptive`] between spinning and sleeping.
const YIELDS: u32 = 8;

impl EventCount {
    /// Wake every sleeper, if there is one. Call after publishing the data a waiter
    /// polls for. Costs one uncontended RMW when nobody sleeps.
    #[inline]
    pub fn notify<P: Park>(&self, park: &P) {
        // ORDERING: AcqRel RMW, partner of the AcqRel `waiters` RMW in `prepare_wait`:
        // one of the two reads the other (see module docs).
        if self.waiters.fetch_add(0, Ordering::AcqRel) != 0 {
            // ORDERING: Release so the woken thread's Acquire epoch load sees the data.
            self.epoch.fetch_add(1, Ordering::Release);
            park.unpark_all(&self.epoch);
        }
    }

    /// Announce a sleeper. Returns the epoch to pass to [`EventCount::sleep`]. The
    /// caller must re-check its condition after this and call
    /// [`EventCount::finish_wait`] exactly once afterwards.
    #[inline]
    pub fn prepare_wait(&self) -> u32 {
        // ORDERING: Acquire, partner of notify's Release bump: read before announcing.
        let epoch = self.epoch.load(Ordering::Acquire);
        // ORDERING: AcqRel, partner of notify's AcqRel RMW.
        self.waiters.fetch_add(1, Ordering::AcqRel);
        epoch
    }

    /// Sleep until the epoch moves away from `epoch`, a wake, or `timeout`.
    #[inline]
    pub fn sleep<P: Park>(&self, park: &P, epoch: u32, timeout: Option<Duration>) {
        park.park(&self.epoch, epoch, timeout);
    }

    /// Withdraw the announcement of [`EventCount::prepare_wait`].
    #[inline]
    pub fn finish_wait(&self) {
        // ORDERING: Relaxed: the count only decides whether notify issues a syscall.
        self.waiters.fetch_sub(1, Ordering::Relaxed);
    }

    /// Reset the sleeper count: called by a new owner of the only role that waits here,
    /// so that a sleeper that died mid-wait does not cost every notify a syscall.
    pub fn reset_waiters(&self) {
        self.waiters.store(0, Ordering::Relaxed);
    }
}

/// Why [`wait_until`] gave up.
#[derive(Debug, PartialEq, Eq)]
pub enum WaitError<E> {
    /// The deadline passed before the condition held.
    TimedOut,
    /// The poll or the per-slice check returned an error.
    Failed(E),
}

/// Wait until `poll` returns `Some`, following `policy`, sleeping on the event count
/// that `event` picks out of `ctx`.
///
/// `ctx` is the state the closures work on (a ring producer or consumer); it is passed
/// to each closure in turn so they can borrow it mutably. `poll` runs on every spin and
/// after every wake; `every_slice` at most every [`SLICE`] (peer liveness). `deadline =
/// None` waits forever.
///
/// # Errors
/// [`WaitError::TimedOut`] once `deadline` passed (after one last poll);
/// [`WaitError::Failed`] with the first error `poll` or `every_slice` returned.
pub fn wait_until<C, T, E, P: Park>(
    ctx: &mut C,
    event: impl Fn(&C) -> (&EventCount, &P),
    policy: WaitPolicy,
    deadline: Option<Instant>,
    mut poll: impl FnMut(&mut C) -> Result<Option<T>, E>,
    mut every_slice: impl FnMut(&mut C) -> Result<(), E>,
) -> Result<T, WaitError<E>> {
    // Ready already: no clock read (the common case when the peer keeps pace).
    if let Some(v) = poll(ctx).map_err(WaitError::Failed)? {
        return Ok(v);
    }
    let start = Instant::now();
    let mut next_check = start + SLICE;
    let spin_for = match policy {
        WaitPolicy::Spin => None,
        WaitPolicy::Adaptive { spin } => Some(spin),
        WaitPolicy::Block => Some(Duration::ZERO),
    };
    // Phase 1: busy-poll (forever for Spin).
    let mut spins: u32 = 0;
    loop {
        if let Some(v) = poll(ctx).map_err(WaitError::Failed)? {
            return Ok(v);
        }
        spins = spins.wrapping_add(1);
        if spins % 64 == 0 || spin_for == Some(Duration::ZERO) {
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                // A dead peer is the better answer than a timeout (and short waits,
                // e.g. Python's signal slices, would otherwise never check it).
                every_slice(ctx).map_err(WaitError::Failed)?;
                return Err(WaitError::TimedOut);
            }
            if now >= next_check {
                every_slice(ctx).map_err(WaitError::Failed)?;
                next_check = now + SLICE;
            }
            if spin_for.is_some_and(|s| now.duration_since(start) >= s) {
                break;
            }
        }
        spin_hint();
    }
    // Phase 2: yield a few times (Adaptive only).
    if matches!(policy, WaitPolicy::Adaptive { .. }) {
        for _ in 0..YIELDS {
            yield_now();
            if let Some(v) = poll(ctx).map_err(WaitError::Failed)? {
                return Ok(v);
            }
        }
    }
    // Phase 3: sleep on the futex in slices; check the peer before the first sleep.
    next_check = Instant::now();
    loop {
        let epoch = event(ctx).0.prepare_wait();
        let ready = poll(ctx);
        let now = Instant::now();
        let outcome = match ready {
            Ok(Some(v)) => Some(Ok(v)),
            Err(e) => Some(Err(WaitError::Failed(e))),
            Ok(None) if deadline.is_some_and(|d| now >= d) => {
                Some(every_slice(ctx).map_err(WaitError::Failed).and(Err(WaitError::TimedOut)))
            }
            Ok(None) if now >= next_check => {
                next_check = now + SLICE;
                every_slice(ctx).err().map(|e| Err(WaitError::Failed(e)))
            }
            Ok(None) => None,
        };
        if let Some(outcome) = outcome {
            event(ctx).0.finish_wait();
            return outcome;
        }
        let mut nap = next_check.saturating_duration_since(now).max(Duration::from_micros(100));
        if let Some(d) = deadline {
            nap = nap.min(d.saturating_duration_since(now));
        }
        let (ev, park) = event(ctx);
        ev.sleep(park, epoch, Some(nap));
        ev.finish_wait();
    }
}
