//! Wait protocol: busy-poll → yield → shared futex, with no syscall when nobody sleeps.
//!
//! Each direction of a structure has an [`EventCount`] (epoch + waiters). The protocol
//! is an eventcount (Vyukov; the shared-futex form follows shadow's `vasi-sync`):
//!
//! ```text
//! waiter                                   notifier (after publishing its data)
//!   e = epoch.load(Acquire)                  light fence (compiler fence)
//!   waiters.fetch_add(1, AcqRel)             if waiters.load(Relaxed) != 0:
//!   heavy fence (membarrier)                     epoch.fetch_add(1, Release)
//!   if ready(): waiters -= 1; done               futex_wake(epoch, all)
//!   futex_wait(epoch, e, slice)
//!   waiters -= 1; loop
//! ```
//!
//! Why no wake is lost: the light/heavy pair (see [`crate::sync`] and [`crate::process`]) orders
//! like two `SeqCst` fences around a Dekker pattern, so either the waiter's `ready()`
//! re-check sees the data, or the notifier sees `waiters != 0`. In the second case the
//! notifier's bump comes after the waiter read `e` (the waiter's Acquire load cannot
//! read a bump whose notifier read the later announcement), so `futex_wait(epoch, e)`
//! returns at once or is woken.
//!
//! The notifier's side is on every publish, so it must be cheap: a full fence there
//! drains the store buffer, which holds stores to the very line the consumer polls,
//! and measured 30-40 % of a 64-byte send across processes. The waiter's side runs only
//! on the way to sleep. In a process where `membarrier` is unavailable the notifier
//! uses an AcqRel RMW of `waiters` instead (both RMWs are then totally ordered, and the
//! later one reads the earlier); loom checks that RMW form, which stands for the fence
//! pair (`loom-tests/tests/wait.rs`), since loom does not model `membarrier`. A waiter
//! whose heavy fence fails (or with `SHMPLANE_NO_MEMBARRIER` set) sleeps at most 1 ms
//! at a time.
//!
//! The heavy fence is not free either (an IPI to every CPU running a shmplane process:
//! 15 µs per call on this VM), so [`wait_until`] announces its first sleep without it
//! and caps that sleep at 100 µs: most waits that reach the futex end within it, and
//! the rare wake lost to a notifier's undrained store buffer costs at most that long
//! (plus the kernel's timer slack, 50 µs by default). Later sleeps are fenced.
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

/// Longest sleep of a waiter whose heavy fence failed: with it, a notifier's light
/// fence is not ordered against the waiter's announcement, so a wake can be lost; the
/// waiter then notices the data after at most this long.
const UNFENCED_NAP: Duration = Duration::from_millis(1);

/// Longest first sleep of [`wait_until`], which announces itself without the heavy
/// fence: a `membarrier` IPIs the peer's CPU and cost 15 µs per call on this VM (and
/// ~6 % of an 8 MB transfer, whose waits are mostly shorter than this). A wake lost in
/// the race the fence closes (the notifier's publish still in its store buffer) costs
/// at most this long; later sleeps of the same wait are fenced.
const FIRST_NAP: Duration = Duration::from_micros(100);

impl EventCount {
    /// Wake every sleeper, if there is one. Call after publishing the data a waiter
    /// polls for. When nobody sleeps this costs a compiler fence and one load of a line
    /// only sleepers write (or, in a process without `membarrier`, a full fence).
    #[inline]
    pub fn notify<P: Park>(&self, park: &P) {
        if self.has_waiters() {
            // ORDERING: Release so the woken thread's Acquire epoch load sees the data.
            self.epoch.fetch_add(1, Ordering::Release);
            park.unpark_all(&self.epoch);
        }
    }

    /// Store→load ordering between the caller's publish and the `waiters` load, paired
    /// with the fence in [`EventCount::prepare_wait`] (Dekker: either the waiter's
    /// re-check sees the data, or this sees the waiter).
    #[inline(always)]
    fn has_waiters(&self) -> bool {
        // ORDERING: the hot side of the Dekker pair of `crate::sync` (light fence, or
        // an AcqRel RMW of `waiters`), partner of `prepare_wait`'s RMW of `waiters`
        // and heavy fence.
        crate::sync::load_after_store_u32(&self.waiters) != 0
    }

    /// Announce a sleeper. Returns the epoch to pass to [`EventCount::sleep`]. The
    /// caller must re-check its condition after this and call
    /// [`EventCount::finish_wait`] exactly once afterwards.
    ///
    /// Costs a `membarrier(2)` system call (an IPI to each CPU running a shmplane
    /// process: 15 µs on this VM) so that notifiers can skip their fence; it runs only
    /// on the way to sleep.
    #[inline]
    pub fn prepare_wait(&self) -> u32 {
        let epoch = self.prepare_wait_unfenced();
        // ORDERING: heavy half of the asymmetric fence, partner of `has_waiters`' light
        // fence: the caller's re-check comes after every notifier's earlier publish.
        // If it could not be issued, `sleep` caps the sleep (a wake may be lost).
        let _ = crate::sync::heavy_fence();
        epoch
    }

    /// [`EventCount::prepare_wait`] without the heavy fence: a notifier whose publish
    /// is still in its store buffer may miss this sleeper, so the caller must bound the
    /// sleep that follows (as [`wait_until`] does with its first, short sleep).
    #[inline]
    pub fn prepare_wait_unfenced(&self) -> u32 {
        // ORDERING: Acquire, partner of notify's Release bump: read before announcing.
        let epoch = self.epoch.load(Ordering::Acquire);
        // ORDERING: AcqRel, partner of notify's AcqRel RMW in the full-fence form. A
        // light-fence notifier is ordered against it only by `prepare_wait`'s heavy
        // fence; without that, nothing orders the two (hence the bounded sleep).
        self.waiters.fetch_add(1, Ordering::AcqRel);
        epoch
    }

    /// Sleep until the epoch moves away from `epoch`, a wake, or `timeout`. At most
    /// 1 ms when this process cannot issue heavy fences (see the module docs).
    #[inline]
    pub fn sleep<P: Park>(&self, park: &P, epoch: u32, timeout: Option<Duration>) {
        #[cfg(not(shmplane_loom))]
        let timeout = if crate::process::sleep_cap_needed() {
            Some(timeout.map_or(UNFENCED_NAP, |t| t.min(UNFENCED_NAP)))
        } else {
            timeout
        };
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

/// Temporal slipping (Giacomoni, Moseley and Vachharajani, "FastForward for Efficient
/// Pipeline Parallelism", PPoPP 2008): a consumer that keeps catching up with a
/// streaming producer polls the very cache line the producer is writing, and every
/// poll takes the line away from the producer in the middle of a record, so both slow
/// down (measured here: a 64-byte stream at ~50 ns/message instead of ~40). After a
/// *short* wait (the data came within ~0.1 µs, i.e. the peer publishes every few tens
/// of ns), the next wait first pauses ~0.8 µs (both timed in pause instructions,
/// calibrated once per process), so the waiter slips a few records behind and then
/// reads finished lines. A wait that slipped says nothing about the peer's pace (the
/// data is always there after the pause), so it never counts as short: the wait after
/// it polls at once and measures again. A request/reply peer on another core makes
/// every unslipped wait long (a round trip is 0.25 µs or more here), so it never slips
/// and keeps its latency. Limits: per thread, not per endpoint (a thread serving
/// several channels shares one history, which can cost it one pause now and then), and
/// a request/reply peer on the sibling hyperthread can answer within 0.1 µs and then
/// pays a pause every other round trip.
mod slip {
    /// A wait that ended within about this long was short: the peer publishes every few
    /// tens of ns. A round trip between two cores takes longer (0.25 µs or more here).
    const SHORT_NS: u32 = 100;
    /// How long a slip pauses: long enough for a streaming producer to write ~2 KiB.
    const SLIP_NS: u32 = 800;

    /// (polls of a short wait, pause instructions of a slip), from the duration of one
    /// pause instruction measured once (13 ns here; up to ~40 ns on other x86 parts,
    /// a few ns on others), so both mean the same time on every CPU.
    #[cfg(not(shmplane_loom))]
    fn tuning() -> (u32, u32) {
        static TUNING: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
        *TUNING.get_or_init(|| {
            const N: u32 = 256;
            let t = std::time::Instant::now();
            for _ in 0..N {
                super::spin_hint();
            }
            let pause_ns = (t.elapsed().as_nanos() / u128::from(N)).clamp(1, 1000) as u32;
            // A poll costs a few ns besides its pause.
            ((SHORT_NS / (pause_ns + 5)).max(2), (SLIP_NS / pause_ns).clamp(8, 1024))
        })
    }

    /// Polls below which a wait counts as short.
    #[inline]
    pub fn short_polls() -> u32 {
        #[cfg(not(shmplane_loom))]
        return tuning().0;
        #[cfg(shmplane_loom)]
        0
    }

    /// Pause for one slip.
    pub fn pause() {
        #[cfg(not(shmplane_loom))]
        for _ in 0..tuning().1 {
            super::spin_hint();
        }
    }

    #[cfg(not(shmplane_loom))]
    thread_local! {
        static LAST_WAIT_SHORT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Whether the previous wait was short; forgets it (a wait is long until it
    /// proves short).
    #[inline]
    pub fn take() -> bool {
        #[cfg(not(shmplane_loom))]
        return LAST_WAIT_SHORT.with(|c| c.replace(false));
        #[cfg(shmplane_loom)]
        false
    }

    #[inline]
    pub fn record_short_wait() {
        #[cfg(not(shmplane_loom))]
        LAST_WAIT_SHORT.with(|c| c.set(true));
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
    let slipped = slip::take();
    if slipped {
        slip::pause();
    }
    // Ready already: no clock read (the common case when the peer keeps pace).
    if let Some(v) = poll(ctx).map_err(WaitError::Failed)? {
        if !slipped {
            slip::record_short_wait();
        }
        return Ok(v);
    }
    // The clock is first read after 64 polls (a vDSO `clock_gettime` costs ~20 ns, as
    // much as the rest of a short wait): `spin` and the first slice count from there.
    let mut start: Option<Instant> = None;
    let mut next_check = None;
    let spin_for = match policy {
        WaitPolicy::Spin => None,
        WaitPolicy::Adaptive { spin } => Some(spin),
        WaitPolicy::Block => Some(Duration::ZERO),
    };
    // Phase 1: busy-poll (forever for Spin).
    let mut spins: u32 = 0;
    loop {
        if let Some(v) = poll(ctx).map_err(WaitError::Failed)? {
            if !slipped && spins < slip::short_polls() {
                slip::record_short_wait();
            }
            return Ok(v);
        }
        spins = spins.wrapping_add(1);
        if spins % 64 == 0 || spin_for == Some(Duration::ZERO) {
            let now = Instant::now();
            let started = *start.get_or_insert(now);
            if deadline.is_some_and(|d| now >= d) {
                // A dead peer is the better answer than a timeout (and short waits,
                // e.g. Python's signal slices, would otherwise never check it).
                every_slice(ctx).map_err(WaitError::Failed)?;
                return Err(WaitError::TimedOut);
            }
            if now >= *next_check.get_or_insert(now + SLICE) {
                every_slice(ctx).map_err(WaitError::Failed)?;
                next_check = Some(now + SLICE);
            }
            if spin_for.is_some_and(|s| now.duration_since(started) >= s) {
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
    let mut next_check = Instant::now();
    let mut fenced = false;
    loop {
        // A wait whose deadline passed only polls once more: no heavy fence for that.
        let fence = fenced && deadline.is_none_or(|d| Instant::now() < d);
        let epoch = if fence { event(ctx).0.prepare_wait() } else { event(ctx).0.prepare_wait_unfenced() };
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
        if !fenced {
            nap = nap.min(FIRST_NAP);
        }
        let (ev, park) = event(ctx);
        ev.sleep(park, epoch, Some(nap));
        ev.finish_wait();
        // Woken, most likely because the data is there: look before announcing again,
        // which costs a heavy fence (an IPI to the peer's CPU, several µs on a VM).
        if let Some(v) = poll(ctx).map_err(WaitError::Failed)? {
            return Ok(v);
        }
        fenced = true;
    }
}
