//! Wait protocol: busy-poll → shared futex, with no syscall when nobody sleeps.
//!
//! Each direction of a structure has an [`EventCount`] (epoch + waiters). The protocol
//! is an eventcount (Vyukov; the shared-futex form follows shadow's `vasi-sync`):
//!
//! ```text
//! waiter                                   notifier (after publishing its data)
//!   e = epoch.load(Acquire)                  light fence (compiler fence)
//!   waiters.fetch_add(1, AcqRel)             w = waiters.load(Relaxed)
//!   fence: heavy (membarrier) the first      if w has FENCED:
//!     time, then SeqCst while FENCED             fence(SeqCst); w = waiters.load()
//!   if ready(): waiters -= 1; done           if w counts sleepers:
//!   futex_wait(epoch, e, slice)                  epoch.fetch_add(1, Release)
//!   waiters -= 1; loop                           futex_wake(epoch, all)
//! ```
//!
//! Why no wake is lost: the waiter's announcement and the notifier's publish form a
//! Dekker pattern, so each side needs store→load ordering. The notifier is on every
//! publish and must stay cheap: a full fence there drains the store buffer, which holds
//! stores to the very line the consumer polls, and measured 30-40 % of a 64-byte send
//! across processes. So the ordering is asymmetric (see [`crate::sync`] and
//! [`crate::process`]): the notifier issues a compiler fence, and the waiter a
//! `membarrier(2)` (an IPI to every CPU running a shmplane process: 15 µs on this VM),
//! which orders like two `SeqCst` fences. In the second case of Dekker the notifier's
//! bump comes after the waiter read `e`, so `futex_wait(epoch, e)` returns at once or is
//! woken.
//!
//! A consumer fed one message per millisecond sleeps once per message, and a
//! membarrier per sleep would cost it more CPU than the sleep itself. So the first
//! sleeper sets [`FENCED`] in `waiters` before its heavy fence: from then on notifiers
//! see it and issue a real fence before deciding (cheap at that pace), and later
//! sleepers need only a `SeqCst` fence of their own (see [`EventCount::prepare_wait`]).
//! A waiter whose waits keep ending without sleeping clears it again
//! ([`EventCount::relax`], from [`WaitHistory`]), giving a streaming producer its light
//! fence back. In a process where `membarrier` is unavailable the notifier uses an
//! AcqRel RMW of `waiters` instead (both RMWs are then totally ordered, and the later
//! one reads the earlier); loom checks that RMW form, which stands for the fence pair,
//! and the FENCED form with real fences (`loom-tests/tests/wait.rs`), since loom does
//! not model `membarrier`. A waiter whose heavy fence fails (membarrier refused to its
//! process) sleeps at most 1 ms at a time.
//!
//! Policies trade latency for CPU: [`WaitPolicy::Spin`] never sleeps, [`WaitPolicy::Block`]
//! sleeps at once, [`WaitPolicy::Adaptive`] (default) spins up to its spin time, as
//! long as its [`WaitHistory`] says recent messages came within it and the peer that
//! last woke it runs on another CPU ([`EventCount::waker_cpu`]), then sleeps. Every
//! policy wakes at least every [`SLICE`] to run the caller's per-slice check (peer
//! liveness), so a dead peer is noticed within one slice.

mod futex;

pub use futex::{Park, SharedFutex};

use crate::layout::EventCount;
use crate::sync::{spin_hint, Ordering};
use std::time::{Duration, Instant};

/// Longest single sleep. Also the period of the caller's per-slice check (liveness),
/// so it bounds how long a waiter on a dead peer takes to notice.
pub const SLICE: Duration = Duration::from_millis(50);

/// How a blocked operation waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitPolicy {
    /// Busy-poll until ready: lowest latency, burns a core while waiting.
    Spin,
    /// Busy-poll for up to `spin` (less while recent waits outlasted it, see
    /// [`WaitHistory`]), then sleep on the futex.
    Adaptive {
        /// How long to busy-poll before sleeping, at most.
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

/// Longest sleep of a waiter whose heavy fence failed: with it, a notifier's light
/// fence is not ordered against the waiter's announcement, so a wake can be lost; the
/// waiter then notices the data after at most this long.
const UNFENCED_NAP: Duration = Duration::from_millis(1);


impl EventCount {
    /// Wake every sleeper, if there is one. Call after publishing the data a waiter
    /// polls for. When nobody sleeps and the waiting side is not in its sleeping
    /// regime this costs a compiler fence and one load of a line only waiters write
    /// (or, in a process without `membarrier`, a full fence); in the sleeping regime
    /// ([`FENCED`]) a full fence and a second load; a syscall only for sleepers.
    #[inline]
    pub fn notify<P: Park>(&self, park: &P) {
        let waiters = self.has_waiters();
        if waiters != 0 {
            self.notify_seen(park, waiters);
        }
    }

    /// [`EventCount::notify`] for a notifier that keeps `streak` (its own, private):
    /// after [`NOTIFIER_RELAX_AFTER`] notifies in a row that found the sleeping regime
    /// with nobody asleep, it ends the regime itself ([`EventCount::relax`]). A
    /// consumer that slept once (waiting for the first message) and then keeps up
    /// without waiting would otherwise leave this notifier fencing on every publish.
    #[inline]
    pub fn notify_counted<P: Park>(&self, park: &P, streak: &mut u32) {
        let waiters = self.has_waiters();
        if waiters != 0 {
            self.notify_tracked(park, waiters, streak);
        }
    }

    /// [`EventCount::notify_counted`] that wakes sleepers only if `due()` says their
    /// wait is over (doorbells are rung regardless). For a waiter that publishes what
    /// it waits for before announcing itself (a producer's "wake me once half the
    /// ring is free": see `crate::ring`), so that a notifier does not pay a wake per
    /// record for a sleeper that would only go back to sleep. `due` runs after an
    /// Acquire fence that orders it after the sleepers' announcements.
    #[inline]
    pub fn notify_counted_when<P: Park>(&self, park: &P, streak: &mut u32, due: impl FnOnce() -> bool) {
        let waiters = self.has_waiters();
        if waiters != 0 {
            self.notify_tracked_when(park, waiters, streak, due);
        }
    }

    #[cold]
    #[inline(never)]
    fn notify_tracked_when<P: Park>(&self, park: &P, waiters: u32, streak: &mut u32, due: impl FnOnce() -> bool) {
        if self.notify_seen_when(park, waiters, due) {
            *streak += 1;
            if *streak >= NOTIFIER_RELAX_AFTER {
                *streak = 0;
                self.relax();
            }
        } else {
            *streak = 0;
        }
    }

    #[cold]
    #[inline(never)]
    fn notify_tracked<P: Park>(&self, park: &P, waiters: u32, streak: &mut u32) {
        if self.notify_seen(park, waiters) {
            *streak += 1;
            if *streak >= NOTIFIER_RELAX_AFTER {
                *streak = 0;
                self.relax();
            }
        } else {
            *streak = 0;
        }
    }

    /// Slow half of [`EventCount::notify`]: `waiters` is what its hot-path load of
    /// `waiters` (after the light fence) read. Public for the loom models, which model
    /// that load as a plain `Relaxed` one to check the [`FENCED`] regime.
    ///
    /// Returns `true` if it found the sleeping regime with nobody to wake (a fence
    /// paid for nothing).
    #[cold]
    #[inline(never)]
    pub fn notify_seen<P: Park>(&self, park: &P, waiters: u32) -> bool {
        self.notify_seen_when(park, waiters, || true)
    }

    /// [`EventCount::notify_seen`], waking sleepers only if `due()` (see
    /// [`EventCount::notify_counted_when`]).
    #[inline]
    pub fn notify_seen_when<P: Park>(&self, park: &P, waiters: u32, due: impl FnOnce() -> bool) -> bool {
        let waiters = if waiters & FENCED != 0 {
            // ORDERING: SeqCst fence, partner of the SeqCst fence that `prepare_wait`
            // issues after announcing itself while FENCED is in force (Dekker: either
            // that waiter's re-check sees our publish, or this load sees the waiter).
            crate::sync::fence(Ordering::SeqCst);
            // ORDERING: Relaxed: ordered by the fence above.
            self.waiters.load(Ordering::Relaxed)
        } else {
            waiters
        };
        // ORDERING: Acquire fence, partner of the sleepers' AcqRel announcement RMW
        // that our load of `waiters` read: what they stored before it (the state
        // `due` reads) is visible to `due`.
        // ARMED clear: every counted sleeper announced before the last wake's bump (it
        // read an older epoch, so it is awake or will not sleep): no syscall. With
        // several consumers (a broadcast's subscribers), woken ones stay counted until
        // they run; each publish would otherwise pay a wake that wakes nobody.
        if waiters & COUNT_MASK != 0 && waiters & ARMED != 0 && {
            crate::sync::fence(Ordering::Acquire);
            due()
        } {
            // ORDERING: AcqRel RMW, before the bump: a sleeper announcing after it
            // sets ARMED again (RMWs of `waiters` are totally ordered); one announcing
            // before it read an epoch older than the bump (its epoch load precedes its
            // announcement, which this RMW reads).
            self.waiters.fetch_and(!ARMED, Ordering::AcqRel);
            // ORDERING: Relaxed, published by the Release bump below (partner: the
            // woken waiter's Acquire `epoch_moved` in `sleep_phase`, which reads this
            // bump or a later one of its release sequence). A hint: a stale value,
            // or another notifier's, only costs that waiter one spin or one early
            // sleep.
            self.waker_cpu.store(current_cpu(), Ordering::Relaxed);
            // ORDERING: Release so the woken thread's Acquire epoch load sees the data.
            self.epoch.fetch_add(1, Ordering::Release);
            park.unpark_all(&self.epoch);
        }
        // ORDERING: AcqRel RMW: one notifier takes the armed doorbell (RMWs of
        // `waiters` are totally ordered), so a waiter gets one ring per arming.
        if waiters & DOORBELL != 0 && self.waiters.fetch_and(!DOORBELL, Ordering::AcqRel) & DOORBELL != 0 {
            park.ring();
        }
        waiters & (COUNT_MASK | DOORBELL) == 0
    }

    /// Ask notifiers to ring the doorbell (see [`crate::bell`]) at their next notify:
    /// the waiter's side of an OS-level wait, ordered like [`EventCount::prepare_wait`]
    /// (the caller re-checks its condition afterwards, and rings its own doorbell if
    /// it already holds). Enters the sleeping regime ([`FENCED`]) so that notifiers
    /// fence before they look for the doorbell.
    pub fn arm_doorbell(&self) {
        // ORDERING: AcqRel RMW, as `prepare_wait`'s announcement.
        let prev = self.waiters.fetch_or(DOORBELL, Ordering::AcqRel);
        self.enter_fenced(prev);
    }

    /// The fence after an announcement (`prev`: `waiters` before it): a `SeqCst` fence
    /// in the sleeping regime, else enter the regime with a heavy fence.
    fn enter_fenced(&self, prev: u32) {
        if prev & FENCED_READY != 0 {
            // ORDERING: SeqCst fence, partner of `notify_seen`'s SeqCst fence: every
            // notifier now sees FENCED (set before an earlier sleeper's heavy fence
            // completed, which happens-before our read of FENCED_READY) and fences.
            crate::sync::fence(Ordering::SeqCst);
            return;
        }
        // ORDERING: AcqRel RMW: FENCED must be visible to notifiers that run after the
        // heavy fence below.
        self.waiters.fetch_or(FENCED, Ordering::AcqRel);
        // ORDERING: heavy half of the asymmetric fence, partner of `has_waiters`' light
        // fence: our re-check comes after every notifier's earlier publish, and every
        // later notifier sees FENCED. If it could not be issued, `sleep` caps the
        // sleep (a wake may be lost) and FENCED_READY stays clear.
        if crate::sync::heavy_fence() {
            // ORDERING: AcqRel RMW, read by later sleepers' AcqRel `fetch_add`.
            self.waiters.fetch_or(FENCED_READY, Ordering::AcqRel);
        }
    }

    /// Store→load ordering between the caller's publish and the `waiters` load, paired
    /// with the fence in [`EventCount::prepare_wait`] (Dekker: either the waiter's
    /// re-check sees the data, or this sees the waiter).
    #[inline(always)]
    fn has_waiters(&self) -> u32 {
        // ORDERING: the hot side of the Dekker pair of `crate::sync` (light fence, or
        // an AcqRel RMW of `waiters`), partner of `prepare_wait`'s RMW of `waiters`
        // and heavy fence.
        crate::sync::load_after_store_u32(&self.waiters)
    }

    /// Announce a sleeper. Returns the epoch to pass to [`EventCount::sleep`]. The
    /// caller must re-check its condition after this and call
    /// [`EventCount::finish_wait`] exactly once afterwards.
    ///
    /// The announcement must be ordered against every notifier's publish (a Dekker
    /// pair) while notifiers pay only a compiler fence on their hot path. The first
    /// sleeper of a sleeping regime pays for that with a `membarrier(2)` (an IPI to
    /// each CPU running a shmplane process: 15 µs on this VM) and leaves [`FENCED`]
    /// set, which makes notifiers use a real fence from then on; later sleepers then
    /// need only a fence of their own, until [`EventCount::relax`] ends the regime.
    /// This is asymmetric Dekker synchronization with the bias revoked by the sleeper
    /// (Dice, Lev and Moir, "Scalable and Fast Asymmetric Dekker Synchronization",
    /// 2010; the membarrier form of liburcu).
    #[inline]
    pub fn prepare_wait(&self) -> u32 {
        // ORDERING: Acquire, partner of notify's Release bump: read before announcing.
        let epoch = self.epoch.load(Ordering::Acquire);
        // The AcqRel announcement (partner of the notifier's AcqRel RMW in the
        // full-fence form; reads FENCED_READY set by an earlier sleeper after its
        // heavy fence).
        let prev = self.announce();
        self.enter_fenced(prev);
        epoch
    }

    /// Count a sleeper and set [`ARMED`], in one RMW (a notifier that sees the count
    /// must see the bit). Returns `waiters` before it.
    #[inline]
    fn announce(&self) -> u32 {
        // ORDERING: Relaxed first guess; the AcqRel CAS below is the announcement.
        let mut w = self.waiters.load(Ordering::Relaxed);
        loop {
            // ORDERING: AcqRel, see `prepare_wait`; Relaxed on failure (retried).
            match self.waiters.compare_exchange_weak(w, w.wrapping_add(1) | ARMED, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(prev) => return prev,
                Err(now) => w = now,
            }
        }
    }

    /// [`EventCount::prepare_wait`] without any fence: a notifier may miss this
    /// sleeper, so the caller must bound the sleep that follows (a wait whose deadline
    /// passed, which only polls once more).
    #[inline]
    pub fn prepare_wait_unfenced(&self) -> u32 {
        // ORDERING: Acquire, partner of notify's Release bump: read before announcing.
        let epoch = self.epoch.load(Ordering::Acquire);
        // The announcement (see `prepare_wait`). A light-fence notifier is not
        // ordered against it (hence the bounded sleep).
        self.announce();
        epoch
    }

    /// Sleep until the epoch moves away from `epoch`, a wake, or `timeout`. At most
    /// 1 ms when this process cannot issue heavy fences (see the module docs). Returns
    /// the timeout it slept with.
    #[inline]
    pub fn sleep<P: Park>(&self, park: &P, epoch: u32, timeout: Option<Duration>) -> Option<Duration> {
        #[cfg(not(shmplane_loom))]
        let timeout = if crate::process::sleep_cap_needed() {
            Some(timeout.map_or(UNFENCED_NAP, |t| t.min(UNFENCED_NAP)))
        } else {
            timeout
        };
        park.park(&self.epoch, epoch, timeout);
        timeout
    }

    /// Withdraw the announcement of [`EventCount::prepare_wait`].
    #[inline]
    pub fn finish_wait(&self) {
        // The last sleeper out also clears ARMED (one RMW: a sleeper announcing
        // meanwhile either came first, and the count stays, or sets it again), so
        // that an idle count of 0 leaves notifiers on their hot path.
        // ORDERING: Relaxed: the count only decides whether notify issues a syscall.
        let mut w = self.waiters.load(Ordering::Relaxed);
        loop {
            let mut new = w.wrapping_sub(1);
            if new & COUNT_MASK == 0 {
                new &= !ARMED;
            }
            // ORDERING: Relaxed, as above.
            match self.waiters.compare_exchange_weak(w, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(now) => w = now,
            }
        }
    }

    /// End the sleeping regime (clear [`FENCED`]) if nobody sleeps: called by a waiter
    /// whose waits keep ending without sleeping, so that notifiers go back to the
    /// light fence. A sleeper that announces itself meanwhile makes this a no-op
    /// (the RMWs of `waiters` are totally ordered), and one that comes after sees
    /// FENCED_READY clear and issues the heavy fence again.
    pub fn relax(&self) {
        // ORDERING: Relaxed load: a hint only; the CAS decides.
        let w = self.waiters.load(Ordering::Relaxed);
        if w != 0 && w & !(FENCED | FENCED_READY | ARMED) == 0 {
            // ORDERING: Relaxed CAS: orders nothing but the RMW order of `waiters`.
            let _ = self.waiters.compare_exchange(w, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// True if the epoch moved away from `epoch` (somebody notified since), read
    /// with Acquire so that what the notifier stored before its bump (its
    /// [`EventCount::waker_cpu`]) is visible.
    pub fn epoch_moved(&self, epoch: u32) -> bool {
        // ORDERING: Acquire, partner of the notifier's Release bump (`notify_seen_when`,
        // `wake_all`).
        self.epoch.load(Ordering::Acquire) != epoch
    }

    /// How many threads sleep (or are about to) on this event count.
    pub fn sleepers(&self) -> u32 {
        // ORDERING: Relaxed: a report for tests and diagnostics.
        self.waiters.load(Ordering::Relaxed) & COUNT_MASK
    }

    /// True while the waiting side is in its sleeping regime (notifiers fence).
    pub fn is_fenced(&self) -> bool {
        // ORDERING: Relaxed: a report for tests and diagnostics.
        self.waiters.load(Ordering::Relaxed) & FENCED != 0
    }

    /// Reset the sleeper count: called by a new owner of the only role that waits here,
    /// so that a sleeper that died mid-wait does not cost every notify a syscall. Keeps
    /// notifiers fencing ([`FENCED`] without [`FENCED_READY`]: the next sleeper issues
    /// the heavy fence again), so that a sleeper half-way through entering the regime
    /// cannot be left relying on it.
    pub fn reset_waiters(&self) {
        // ORDERING: Relaxed: a reset of a count; FENCED only makes notifiers stricter.
        self.waiters.store(FENCED, Ordering::Relaxed);
    }

    /// Wake every sleeper unconditionally (the peer closed: they should look at once).
    pub fn wake_all<P: Park>(&self, park: &P) {
        // Not a peer answering: a waiter woken by this must not take the last
        // notifier's CPU for this one's.
        // ORDERING: Relaxed, published by the Release bump below (as in
        // `notify_seen_when`).
        self.waker_cpu.store(0, Ordering::Relaxed);
        // ORDERING: Release: the woken thread's Acquire epoch load sees the close.
        self.epoch.fetch_add(1, Ordering::Release);
        park.unpark_all(&self.epoch);
    }
}

/// This thread's CPU + 1 (0: unknown), as [`EventCount::waker_cpu`] holds it.
/// `sched_getcpu(3)` reads the kernel's rseq area (glibc 2.35+) or calls the vDSO's
/// `getcpu` (x86-64): no syscall there; only ever called next to a futex syscall.
#[inline]
fn current_cpu() -> u32 {
    #[cfg(not(shmplane_loom))]
    {
        // SAFETY: no arguments, no memory of ours touched.
        let cpu = unsafe { libc::sched_getcpu() };
        u32::try_from(cpu).map_or(0, |c| c.wrapping_add(1))
    }
    #[cfg(shmplane_loom)]
    0
}

/// Bits of [`EventCount::waiters`] that count sleepers.
pub const COUNT_MASK: u32 = (1 << 28) - 1;
/// Bit of [`EventCount::waiters`]: the waiting side is in its sleeping regime, and
/// notifiers issue a full fence before deciding whether to wake (see
/// [`EventCount::prepare_wait`]).
pub const FENCED: u32 = 1 << 30;
/// Bit of [`EventCount::waiters`]: a waiter armed its doorbell ([`crate::bell`]); the
/// next notifier clears it and rings.
pub const DOORBELL: u32 = 1 << 31;
/// Bit of [`EventCount::waiters`]: a sleeper announced itself since the last wake
/// (set with the count by [`EventCount::prepare_wait`], cleared by the notifier that
/// wakes, and by the last sleeper out): while it is clear, every counted sleeper is
/// already awake or about to see a newer epoch, and notifiers skip the syscall.
pub const ARMED: u32 = 1 << 28;
/// Bit of [`EventCount::waiters`]: [`FENCED`] is in force (the sleeper that set it
/// completed its heavy fence), so a sleeper needs only a fence of its own.
pub const FENCED_READY: u32 = 1 << 29;

/// Waits in a row that end without sleeping before a waiter ends the sleeping regime
/// ([`EventCount::relax`]): notifiers then drop their full fence, which costs a
/// streaming producer a store-buffer drain per message.
const RELAX_AFTER: u32 = 64;

/// Notifies in a row that found the sleeping regime with nobody asleep before a
/// notifier ends the regime ([`EventCount::notify_counted`]).
pub const NOTIFIER_RELAX_AFTER: u32 = 256;

/// What one endpoint handle remembers of its recent waits (private to the handle), so
/// that [`WaitPolicy::Adaptive`] spins when messages come within its spin window and
/// goes straight to sleep when they do not, as glibc's adaptive mutex tunes its spin
/// count from past acquisitions and Linux busy-poll budgets do.
///
/// After a wait that slept, the next one spins half as long, unless the whole wait
/// lasted no longer than the policy's spin (then spinning would have caught it: full
/// spin again). A wait that ended while spinning restores the full spin. So at one
/// message per millisecond an adaptive consumer stops spinning after a few messages,
/// and a burst brings the spin back at its first short wait.
#[derive(Clone, Copy, Debug, Default)]
pub struct WaitHistory {
    /// Learned spin, ns; `None`: the policy's full spin.
    spin_ns: Option<u32>,
    /// Waits in a row that ended without sleeping.
    awake: u32,
    /// When the per-slice check (peer liveness: about ten syscalls) is due again. A
    /// consumer fed once per millisecond sleeps once per message; checking before each
    /// sleep cost it more CPU than the sleep. `None`: before the first sleep.
    next_check: Option<Instant>,
    /// The last wait was woken by a notifier on this thread's CPU: the peer shares it,
    /// so an adaptive wait sleeps at once (see [`WaitHistory::spin`]).
    shared_cpu: bool,
}

impl WaitHistory {
    /// How long an adaptive wait with `full` spin should busy-poll now: nothing while
    /// the peer that woke this thread last runs on the same CPU. Spinning then holds
    /// the peer off the CPU it needs to answer: two request/reply peers that the
    /// scheduler put on one core (it does, after sleeps and wakes) each spun their
    /// whole spin before the other could run, 31 µs a round trip with a 20 µs spin
    /// (Python echo, both pinned to one CPU) where sleeping at once takes 7.4 µs, and
    /// the scheduler, which counts the spinning as load, kept them there. Sleeping
    /// lowers that load, the scheduler spreads them, and the first wake from another
    /// CPU brings the spin back.
    pub fn spin(&self, full: Duration) -> Duration {
        if self.shared_cpu {
            return Duration::ZERO;
        }
        self.learned(full)
    }

    /// The spin learned from the waits' lengths alone (see [`WaitHistory::spin`]).
    fn learned(&self, full: Duration) -> Duration {
        self.spin_ns.map_or(full, |ns| Duration::from_nanos(u64::from(ns)).min(full))
    }

    /// True while the last wake came from a notifier on this thread's CPU.
    pub fn shares_cpu(&self) -> bool {
        self.shared_cpu
    }

    /// The spin an adaptive `policy` should use now (`policy` itself otherwise).
    pub fn policy(&self, policy: WaitPolicy) -> WaitPolicy {
        match policy {
            WaitPolicy::Adaptive { spin } => WaitPolicy::Adaptive { spin: self.spin(spin) },
            other => other,
        }
    }

    /// Learn from a wait that did not go through this module (a wait on many
    /// endpoints): it lasted `waited` in all and `slept` or not.
    pub fn record(&mut self, waited: Duration, policy: WaitPolicy, slept: bool) {
        let full = match policy {
            WaitPolicy::Adaptive { spin } => spin,
            _ => return,
        };
        if slept {
            self.slept(waited, Some(full));
        } else {
            self.spin_ns = None;
        }
    }

    /// A wait ended without sleeping.
    fn awake(&mut self, ev: &EventCount) {
        self.spin_ns = None;
        self.awake = self.awake.wrapping_add(1);
        if self.awake % RELAX_AFTER == 0 {
            ev.relax();
        }
    }

    /// A wait slept, and lasted `waited` in all; `full` is the policy's spin.
    fn slept(&mut self, waited: Duration, full: Option<Duration>) {
        self.awake = 0;
        let Some(full) = full else { return };
        if waited <= full {
            self.spin_ns = None;
        } else {
            let half = self.learned(full).as_nanos() / 2;
            // Below half a µs a spin catches nothing a futex wake would not.
            self.spin_ns = Some(if half < 500 { 0 } else { u32::try_from(half).unwrap_or(u32::MAX) });
        }
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
/// and keeps its latency, as long as its polls are cheap (a channel's, measured: no
/// pause in a two-channel round trip); an RPC client's poll looks at its call slot and
/// its reply channel, a few of them covered a round trip and counted it short, so RPC
/// waits run exempt (`without_slip`). Limits: per thread, not per endpoint (a thread serving
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

    /// Pause for one slip (about `SLIP_NS`).
    pub fn pause() {
        #[cfg(not(shmplane_loom))]
        for _ in 0..tuning().1 {
            super::spin_hint();
        }
    }

    #[cfg(not(shmplane_loom))]
    thread_local! {
        /// Waits of this thread neither slip nor count as short (`without`).
        static EXEMPT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        static LAST_WAIT_SHORT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        /// A poll paused (`super::pace`) since the wait loop last asked (`took_pace`).
        static PACED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Pause for one slip inside a poll, and tell the wait loop ([`took_pace`]).
    pub fn pace() {
        pause();
        #[cfg(not(shmplane_loom))]
        PACED.with(|c| c.set(true));
    }

    /// Whether a poll paused since the last call; forgets it.
    #[inline]
    pub fn took_pace() -> bool {
        #[cfg(not(shmplane_loom))]
        return PACED.with(|c| c.get() && c.replace(false));
        #[cfg(shmplane_loom)]
        false
    }

    /// Whether the previous wait was short; forgets it (a wait is long until it
    /// proves short). Never inside [`without`] (the flag is left for the next wait
    /// outside it).
    #[inline]
    pub fn take() -> bool {
        #[cfg(not(shmplane_loom))]
        return !EXEMPT.with(std::cell::Cell::get) && LAST_WAIT_SHORT.with(|c| c.replace(false));
        #[cfg(shmplane_loom)]
        false
    }

    #[inline]
    pub fn record_short_wait() {
        #[cfg(not(shmplane_loom))]
        if !EXEMPT.with(std::cell::Cell::get) {
            LAST_WAIT_SHORT.with(|c| c.set(true));
        }
    }

    /// Run `f` with this thread's waits exempt from slipping (see
    /// `super::without_slip`).
    pub fn without<T>(f: impl FnOnce() -> T) -> T {
        #[cfg(not(shmplane_loom))]
        {
            struct Restore(bool);
            impl Drop for Restore {
                fn drop(&mut self) {
                    EXEMPT.with(|c| c.set(self.0));
                }
            }
            let _restore = Restore(EXEMPT.with(|c| c.replace(true)));
            f()
        }
        #[cfg(shmplane_loom)]
        f()
    }
}

/// Run `f` with this thread's waits exempt from temporal slipping (see `slip`): for a
/// wait whose answer is the peer's response to what this thread just sent (an RPC
/// client waiting for its reply, an RPC server for its next call), where a pause is
/// pure latency. Such a wait was meant never to count as short (a round trip takes
/// longer than a short wait), but shortness is counted in polls, and a poll of a line
/// the peer is writing costs a line transfer (0.1-0.3 µs), not the ~18 ns the count
/// assumes: measured here, a 64-byte RPC round trip of 0.57-0.68 µs took 0.90-1.06 µs
/// with slips (`target/release/rpc call`).
pub fn without_slip<T>(f: impl FnOnce() -> T) -> T {
    slip::without(f)
}

/// Pause about 0.8 µs (the slip of [`wait_until_learning`], timed in pause
/// instructions calibrated once per process), for a producer that waits for room in a
/// full ring between two reads of the consumer's position. Every read takes the line
/// that holds that position away from the consumer, which must win it back (a
/// cache-line round trip, 0.1-0.3 µs) before it can publish the next release: polled
/// back to back, the consumer pays that for every record it frees and a streaming
/// producer is held to the round-trip rate (measured: a 64-byte stream at 127 ns per
/// message where the line round trip costs 135 ns, 7.8 M msg/s). A producer waits for
/// half a ring at least (`Producer::wake_due`), more than the consumer frees in a pause
/// unless the ring is a few KiB, so the pause costs a latency of at most one pause.
///
/// [`wait_until_learning`] reads its clock after every poll that paced (instead of
/// every 64 polls, 50 µs of pauses): its spin time, deadline and per-slice check keep
/// their timing, and a wait that paced never counts as short (see `slip`).
pub fn pace() {
    slip::pace();
}

/// Suspected lost wake-ups in this process: sleeps of at least 20 ms that ran to their
/// timeout, after which the awaited condition held although no notifier had bumped the
/// epoch. Every sleep is bounded (a slice at most), so a lost wake costs latency, not a
/// hang; this count lets tests assert that none happened. Shorter sleeps (the rest of
/// a slice, down to 100 µs) do not count: a notifier preempted between its publish and
/// its notify (a window of nanoseconds, but a scheduler slice of milliseconds when CPU
/// hogs preempt it there) would count as one; seen once in CI under two hogs (the echo
/// child of `every_wakeup_happens_under_load_adaptive`). A wake that is really lost
/// recurs, and most sleeps are longer (a slice is 50 ms).
pub fn suspected_lost_wakes() -> u64 {
    #[cfg(not(shmplane_loom))]
    return lost::count();
    #[cfg(shmplane_loom)]
    0
}

#[cfg(not(shmplane_loom))]
mod lost {
    use crate::sync::{AtomicU64, Ordering};
    static SUSPECTED: AtomicU64 = AtomicU64::new(0);

    /// Sleeps shorter than this are not suspected (see `super::suspected_lost_wakes`):
    /// longer than a scheduler keeps a runnable thread off the CPU under load (a few ms).
    pub const MIN_NAP: std::time::Duration = std::time::Duration::from_millis(20);

    #[cold]
    pub fn suspect() {
        // ORDERING: Relaxed: a counter read by tests after joining.
        SUSPECTED.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count() -> u64 {
        // ORDERING: Relaxed: see `suspect`.
        SUSPECTED.load(Ordering::Relaxed)
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
/// None` waits forever. Without a [`WaitHistory`] an adaptive policy spins its full
/// time on every wait (see [`wait_until_learning`]).
///
/// # Errors
/// [`WaitError::TimedOut`] once `deadline` passed (after one last poll);
/// [`WaitError::Failed`] with the first error `poll` or `every_slice` returned.
pub fn wait_until<C, T, E, P: Park>(
    ctx: &mut C,
    event: impl Fn(&C) -> (&EventCount, &P),
    policy: WaitPolicy,
    deadline: Option<Instant>,
    poll: impl FnMut(&mut C) -> Result<Option<T>, E>,
    every_slice: impl FnMut(&mut C) -> Result<(), E>,
) -> Result<T, WaitError<E>> {
    wait_until_learning(ctx, event, policy, &mut WaitHistory::default(), deadline, poll, every_slice)
}

/// [`wait_until`] for an endpoint that keeps a [`WaitHistory`]: an adaptive policy
/// spins as long as the history says, and the outcome of this wait goes into it.
///
/// Phases: busy-poll (forever for [`WaitPolicy::Spin`], the learned spin for
/// [`WaitPolicy::Adaptive`], not at all for [`WaitPolicy::Block`]), then sleep on the
/// futex in slices. There is no `sched_yield` phase: with other runnable threads on the
/// CPU a yield hands them the CPU for up to a scheduler slice (milliseconds) while this
/// waiter is not registered as a sleeper, so a message arriving then waits for the
/// slice to end; a futex sleeper is woken at once, with the scheduler's wake-up
/// preference.
///
/// # Errors
/// As [`wait_until`].
pub fn wait_until_learning<C, T, E, P: Park>(
    ctx: &mut C,
    event: impl Fn(&C) -> (&EventCount, &P),
    policy: WaitPolicy,
    history: &mut WaitHistory,
    deadline: Option<Instant>,
    poll: impl FnMut(&mut C) -> Result<Option<T>, E>,
    every_slice: impl FnMut(&mut C) -> Result<(), E>,
) -> Result<T, WaitError<E>> {
    wait_until_learning_then_sleep(ctx, event, policy, history, deadline, poll, every_slice, |_| {})
}

/// [`wait_until_learning`] that runs `before_sleep` once, after the busy-poll phase
/// and before the first sleep (an RPC server takes back the call slots it polls
/// directly: see `crate::callslot::POLLED`); the sleep phase's polls follow it.
///
/// # Errors
/// As [`wait_until`].
#[allow(clippy::too_many_arguments)]
pub fn wait_until_learning_then_sleep<C, T, E, P: Park>(
    ctx: &mut C,
    event: impl Fn(&C) -> (&EventCount, &P),
    policy: WaitPolicy,
    history: &mut WaitHistory,
    deadline: Option<Instant>,
    mut poll: impl FnMut(&mut C) -> Result<Option<T>, E>,
    mut every_slice: impl FnMut(&mut C) -> Result<(), E>,
    before_sleep: impl FnOnce(&mut C),
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
        history.awake(event(ctx).0);
        return Ok(v);
    }
    // The clock is first read after 64 polls (a vDSO `clock_gettime` costs ~20 ns, as
    // much as the rest of a short wait), or after the first poll that paced (`pace`:
    // 64 of those take 50 µs): `spin` and the first slice count from there.
    let mut paced = slip::took_pace();
    let mut start: Option<Instant> = None;
    let mut next_check = None;
    let full_spin = match policy {
        WaitPolicy::Spin => None,
        WaitPolicy::Adaptive { spin } => Some(spin),
        WaitPolicy::Block => Some(Duration::ZERO),
    };
    let spin_for = full_spin.map(|s| history.spin(s));
    // Phase 1: busy-poll (forever for Spin).
    let mut spins: u32 = 0;
    loop {
        if let Some(v) = poll(ctx).map_err(WaitError::Failed)? {
            if !slipped && !paced && spins < slip::short_polls() {
                slip::record_short_wait();
            }
            history.awake(event(ctx).0);
            return Ok(v);
        }
        spins = spins.wrapping_add(1);
        let paused = slip::took_pace();
        paced |= paused;
        if spins % 64 == 0 || paused || spin_for == Some(Duration::ZERO) {
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
    let started = start.unwrap_or_else(Instant::now);
    before_sleep(ctx);
    let result = sleep_phase(ctx, &event, deadline, history, &mut poll, &mut every_slice);
    // Its polls may have paced: not news to this thread's next wait.
    let _ = slip::took_pace();
    history.slept(started.elapsed(), full_spin);
    result
}

/// Phase 2 of [`wait_until_learning`]: sleep on the futex in slices, running
/// `every_slice` when `due` says (before the first sleep of a handle, then every
/// [`SLICE`] across its waits) and at the deadline.
fn sleep_phase<C, T, E, P: Park>(
    ctx: &mut C,
    event: &impl Fn(&C) -> (&EventCount, &P),
    deadline: Option<Instant>,
    history: &mut WaitHistory,
    poll: &mut impl FnMut(&mut C) -> Result<Option<T>, E>,
    every_slice: &mut impl FnMut(&mut C) -> Result<(), E>,
) -> Result<T, WaitError<E>> {
    let due = &mut history.next_check;
    let mut next_check = due.unwrap_or_else(Instant::now);
    loop {
        // A wait whose deadline passed only polls once more: no fence for that.
        let epoch = if deadline.is_some_and(|d| Instant::now() >= d) {
            event(ctx).0.prepare_wait_unfenced()
        } else {
            event(ctx).0.prepare_wait()
        };
        let ready = poll(ctx);
        let now = Instant::now();
        let outcome = match ready {
            Ok(Some(v)) => {
                // The peer answered while this thread ran: not held off by it.
                history.shared_cpu = false;
                Some(Ok(v))
            }
            Err(e) => Some(Err(WaitError::Failed(e))),
            Ok(None) if deadline.is_some_and(|d| now >= d) => {
                Some(every_slice(ctx).map_err(WaitError::Failed).and(Err(WaitError::TimedOut)))
            }
            Ok(None) if now >= next_check => {
                next_check = now + SLICE;
                *due = Some(next_check);
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
        let slept = ev.sleep(park, epoch, Some(nap)).unwrap_or(nap);
        ev.finish_wait();
        // Woken, most likely because the data is there: look before announcing again.
        if let Some(v) = poll(ctx).map_err(WaitError::Failed)? {
            let ev = event(ctx).0;
            if ev.epoch_moved(epoch) {
                // Woken by a notifier (or one notified meanwhile): on this CPU?
                // ORDERING: Relaxed, made visible by `epoch_moved`'s Acquire load.
                let waker = ev.waker_cpu.load(Ordering::Relaxed);
                history.shared_cpu = waker != 0 && waker == current_cpu();
            } else {
                #[cfg(not(shmplane_loom))]
                if slept >= lost::MIN_NAP && now.elapsed() >= slept {
                    lost::suspect();
                }
            }
            return Ok(v);
        }
    }
}

#[cfg(all(test, not(shmplane_loom)))]
mod tests {
    use super::*;

    const FULL: Duration = Duration::from_micros(20);

    #[test]
    fn adaptive_spin_halves_after_long_waits_and_comes_back() {
        let ev = EventCount::default();
        let mut h = WaitHistory::default();
        assert_eq!(h.spin(FULL), FULL);
        // One message per millisecond: every wait sleeps and lasts ~1 ms.
        let mut spins = vec![];
        for _ in 0..8 {
            h.slept(Duration::from_millis(1), Some(FULL));
            spins.push(h.spin(FULL).as_nanos());
        }
        assert_eq!(spins, [10_000, 5_000, 2_500, 1_250, 625, 0, 0, 0]);
        // A wait that slept but would have been caught by the full spin restores it.
        h.slept(Duration::from_micros(12), Some(FULL));
        assert_eq!(h.spin(FULL), FULL);
        h.slept(Duration::from_millis(1), Some(FULL));
        // So does a wait that ended while spinning.
        h.awake(&ev);
        assert_eq!(h.spin(FULL), FULL);
        assert_eq!(h.policy(WaitPolicy::Block), WaitPolicy::Block);
        // Sharing the CPU with the waker skips the spin, but a long wait meanwhile
        // halves what was learned, not the skipped spin: the first wake from another
        // CPU brings back half the spin, not none.
        h.shared_cpu = true;
        assert_eq!(h.spin(FULL), Duration::ZERO);
        h.slept(Duration::from_millis(1), Some(FULL));
        h.shared_cpu = false;
        assert_eq!(h.spin(FULL), FULL / 2);
    }

    #[test]
    fn polls_that_pace_have_the_clock_read_after_each() {
        // (event count, polls so far)
        type Ctx = (EventCount, u32);
        fn event(c: &Ctx) -> (&EventCount, &SharedFutex) {
            (&c.0, &SharedFutex)
        }
        let paced = |c: &mut Ctx| {
            c.1 += 1;
            pace();
            Ok::<Option<()>, u32>(None)
        };
        // A deadline already passed ends the wait at the first clock read: not 64 polls
        // (50 µs of pauses) later.
        let mut ctx: Ctx = (EventCount::default(), 0);
        let r = wait_until(&mut ctx, event, WaitPolicy::Spin, Some(Instant::now()), paced, |_| Ok(()));
        assert_eq!(r, Err(WaitError::TimedOut));
        assert!(ctx.1 <= 2, "{} paced polls before the deadline was looked at", ctx.1);
        // A spin of 1 ns ends at the second clock read (the first per-slice check comes
        // before the first sleep): not after 128 polls, 100 µs of pauses.
        let mut ctx: Ctx = (EventCount::default(), 0);
        let policy = WaitPolicy::Adaptive { spin: Duration::from_nanos(1) };
        let r = wait_until(&mut ctx, event, policy, None, paced, |c| Err(c.1));
        assert!(matches!(r, Err(WaitError::Failed(n)) if n <= 8), "{r:?}: paced polls before the sleep phase");
    }

    /// Pin the calling thread to `cpu`; false if refused, or if `sched_getcpu` does
    /// not then report it (a sandbox that fakes CPUs).
    fn pin(cpu: usize) -> bool {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above; `cpu` < CPU_SETSIZE (it came from the allowed set).
        unsafe { libc::CPU_SET(cpu, &mut set) };
        // SAFETY: pid 0 is this thread; `set` is a valid cpu_set_t of the size given.
        let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
        rc == 0 && usize::try_from(current_cpu()).is_ok_and(|c| c == cpu + 1)
    }

    /// CPUs this process may run on.
    fn allowed_cpus() -> Vec<usize> {
        // SAFETY: a zeroed cpu_set_t is a valid empty set, filled by the call.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: pid 0 is this thread; `set` is a valid cpu_set_t of the size given.
        let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
        assert_eq!(rc, 0);
        // SAFETY: reads inside `set`.
        (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect()
    }

    /// A waiter sleeps (Block), a notifier on `notifier_cpu` wakes it on `waiter_cpu`:
    /// the history it keeps, read after the wake; None if the threads cannot be pinned.
    fn history_after_a_wake(waiter_cpu: usize, notifier_cpu: usize) -> Option<WaitHistory> {
        use crate::sync::AtomicU32;
        use std::sync::Arc;
        let shared = Arc::new((EventCount::default(), AtomicU32::new(0)));
        let theirs = Arc::clone(&shared);
        let waiter = std::thread::spawn(move || {
            if !pin(waiter_cpu) {
                // Wakes the notifier's loop below, which then finds it cannot pin.
                theirs.0.prepare_wait_unfenced();
                return None;
            }
            let mut h = WaitHistory::default();
            let mut ctx = theirs;
            // The deadline is the watchdog: a lost wake fails instead of hanging.
            let deadline = Some(Instant::now() + Duration::from_secs(20));
            fn event(c: &Arc<(EventCount, AtomicU32)>) -> (&EventCount, &SharedFutex) {
                (&c.0, &SharedFutex)
            }
            // ORDERING: Acquire, partner of the notifier's Release store.
            let ready = |c: &mut Arc<(EventCount, AtomicU32)>| Ok::<_, ()>((c.1.load(Ordering::Acquire) != 0).then_some(()));
            let r = wait_until_learning(&mut ctx, event, WaitPolicy::Block, &mut h, deadline, ready, |_| Ok(()));
            assert_eq!(r, Ok(()));
            Some(h)
        });
        let notifier = std::thread::spawn(move || {
            let pinned = pin(notifier_cpu);
            let t = Instant::now();
            while shared.0.sleepers() == 0 {
                assert!(t.elapsed() < Duration::from_secs(20), "the waiter never slept");
                std::thread::sleep(Duration::from_millis(1));
            }
            // Announced: let it get into the futex (a waiter preempted between its
            // announcement and its sleep would find the data without a wake).
            std::thread::sleep(Duration::from_millis(20));
            // ORDERING: Release, partner of the waiter's Acquire load.
            shared.1.store(1, Ordering::Release);
            shared.0.notify(&SharedFutex);
            pinned
        });
        let pinned = notifier.join().unwrap();
        waiter.join().unwrap().filter(|_| pinned)
    }

    #[test]
    fn a_waiter_woken_from_its_own_cpu_skips_the_spin_of_its_next_wait() {
        let cpus = allowed_cpus();
        let Some(h) = history_after_a_wake(cpus[0], cpus[0]) else {
            eprintln!("skipped: threads cannot be pinned to a CPU here");
            return;
        };
        assert!(h.shares_cpu(), "woken by a notifier on its own CPU");
        assert_eq!(h.spin(FULL), Duration::ZERO);
        assert_eq!(h.policy(WaitPolicy::Adaptive { spin: FULL }), WaitPolicy::Adaptive { spin: Duration::ZERO });
        // What it learned from the wait's length is kept for when the CPU is its own.
        assert_eq!(h.learned(FULL), Duration::ZERO, "a Block wait learns no spin");
        if let [a, b, ..] = cpus[..] {
            let h = history_after_a_wake(a, b).expect("pinned once, pinned again");
            assert!(!h.shares_cpu(), "woken from CPU {b} on CPU {a}");
        }
    }

    #[test]
    fn sleeping_regime_ends_after_a_run_of_awake_waits() {
        if !crate::process::heavy_fence_works() {
            return; // membarrier refused here (seccomp): the regime never becomes ready
        }
        let ev = EventCount::default();
        let mut h = WaitHistory::default();
        let _ = ev.prepare_wait();
        ev.finish_wait();
        assert!(ev.is_fenced(), "a sleeper leaves notifiers fencing");
        assert_eq!(ev.sleepers(), 0);
        h.slept(Duration::from_millis(1), Some(FULL));
        for _ in 0..RELAX_AFTER - 1 {
            h.awake(&ev);
        }
        assert!(ev.is_fenced());
        h.awake(&ev);
        assert!(!ev.is_fenced(), "relaxed after {RELAX_AFTER} waits that did not sleep");
        // Not while somebody sleeps.
        let _ = ev.prepare_wait();
        ev.finish_wait();
        let _ = ev.prepare_wait();
        ev.relax();
        assert!(ev.is_fenced());
        ev.finish_wait();
        ev.relax();
        assert!(!ev.is_fenced());
    }

    #[test]
    fn a_notifier_ends_an_idle_sleeping_regime() {
        let ev = EventCount::default();
        let _ = ev.prepare_wait();
        ev.finish_wait();
        assert!(ev.is_fenced());
        let mut streak = 0;
        for _ in 0..NOTIFIER_RELAX_AFTER - 1 {
            ev.notify_counted(&SharedFutex, &mut streak);
        }
        assert!(ev.is_fenced());
        ev.notify_counted(&SharedFutex, &mut streak);
        assert!(!ev.is_fenced(), "{NOTIFIER_RELAX_AFTER} fences paid for nothing end the regime");
        // A reset by a new owner keeps notifiers fencing until it relaxes again.
        ev.reset_waiters();
        assert!(ev.is_fenced());
        ev.relax();
        assert!(!ev.is_fenced());
    }
}
