//! What this process is: fork detection, asymmetric fences (`membarrier(2)`), and the
//! key that names a process across pid reuse.
//!
//! Process-local state only (never shared memory), which is why this file, unlike the
//! algorithms, names std atomics directly (`ci/lint-sync.sh` allows it).
//!
//! Sources: `pthread_atfork(3)`; liburcu's and Folly's asymmetric fences
//! (`asymmetricLightBarrier`/`asymmetricHeavyBarrier`; Desnoyers et al., "User-Level
//! Implementations of Read-Copy Update", IEEE TPDS 2012); `proc(5)` for start times.

use std::sync::atomic::Ordering;

#[allow(clippy::disallowed_types)]
static FORK_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Install (once per process) the `pthread_atfork` child handler behind
/// [`fork_generation`]. Call before the first [`fork_generation`] that matters (every
/// endpoint does, when it is created).
pub fn install_fork_hook() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    extern "C" fn after_fork_in_child() {
        FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
    }
    HOOK.call_once(|| {
        // SAFETY: the handler only does an atomic add, which is async-signal-safe.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
    // Register for asymmetric fences now, not on the first send: registering can
    // take an RCU grace period in a multi-threaded process.
    asymmetric::light_fence_ok();
}

/// Number of `fork`s this process has gone through as the child (0 in the original
/// process), counted once [`install_fork_hook`] ran. Endpoints compare it with the value
/// they saw last to notice that they now live in a forked child and must re-register as
/// owner before first use. One relaxed load: it is on every operation's path.
#[inline]
pub fn fork_generation() -> u64 {
    // ORDERING: Relaxed: written in this process by the fork handler, which runs in the
    // thread that called fork, before fork returns in the child.
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// Asymmetric fences through Linux `membarrier(2)` (the scheme of liburcu and of Folly's
/// `asymmetricLightBarrier`/`asymmetricHeavyBarrier`; Desnoyers et al., "User-Level
/// Implementations of Read-Copy Update", IEEE TPDS 2012).
///
/// A hot path that needs store→load ordering against a rare path (a notifier checking
/// for sleepers after every publish, against a thread about to sleep) pays only a
/// compiler fence ([`light_fence_ok`] said yes), and the rare path calls
/// [`heavy_fence`]: `MEMBARRIER_CMD_GLOBAL_EXPEDITED` makes every CPU that is running a
/// thread of *any registered process on the machine* (every shmplane process) execute
/// a full barrier before the call returns, and a thread that is not running passed one
/// when it was switched out. The pair then orders like two `SeqCst` fences. The cost is
/// on the heavy side: an IPI to each such CPU (15 µs per call on this VM, and a short
/// interruption of the threads there).
///
/// A process registers (`MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED`, Linux >= 4.16) when
/// its first endpoint is made ([`install_fork_hook`]), and again in every
/// forked child. If that fails (old kernel, seccomp, valgrind), its hot paths keep a
/// full fence (an RMW). `SHMPLANE_NO_MEMBARRIER` (read at first use) keeps a process
/// from registering, so its hot paths keep the full fence too (and its CPUs receive no
/// IPIs); its heavy fences are still real membarriers, because peers that registered
/// rely on them (a process that used a plain fence there broke the lease's mutual
/// exclusion against a registered peer: found by review). Only where membarrier is
/// refused to this process (seccomp) do its heavy fences fall short; the callers make
/// up for it: waiters cap every sleep at 1 ms, lease takers wait a grace period.
mod asymmetric {
    use std::sync::atomic::{AtomicU8, Ordering};

    const UNKNOWN: u8 = 0;
    const LIGHT: u8 = 1;
    const FULL: u8 = 2;
    /// Whether this process's notifiers may use the light fence.
    static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);
    /// Set once `SHMPLANE_NO_MEMBARRIER` was seen (read again by the fork handler,
    /// which must not call `getenv`).
    static DISABLED: AtomicU8 = AtomicU8::new(0);
    /// Set once the fork handler is installed (or being installed by another thread).
    static HOOKED: AtomicU8 = AtomicU8::new(0);
    /// How this process's heavy fences fare: 0 untried or working; [`NO_KERNEL`] the
    /// kernel has no membarrier (so no process can use the light fence: a full fence is
    /// enough); [`REFUSED`] membarrier is refused to this process only (seccomp) while
    /// peers may rely on it: the caller must make up for it (see [`heavy_fence`]).
    static HEAVY_FAILED: AtomicU8 = AtomicU8::new(0);
    const NO_KERNEL: u8 = 1;
    const REFUSED: u8 = 2;

    thread_local! {
        /// A heavy fence of this thread failed for a reason that may pass: cap the
        /// next sleep only.
        static CAP_NEXT_SLEEP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// `membarrier(cmd)`: `Ok` or the errno.
    fn membarrier(cmd: libc::c_int) -> Result<(), i32> {
        // SAFETY: membarrier(cmd, flags = 0, cpu_id = 0) takes integers only and
        // touches no memory of ours.
        if unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0 as libc::c_uint, 0 as libc::c_int) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        }
    }

    /// (Re-)register this process; async-signal-safe (one syscall, atomic loads and
    /// stores).
    fn register() -> bool {
        // ORDERING (all three flags here and below): Relaxed; process-local flags that
        // order nothing else. A stale `UNKNOWN` costs one more registration syscall, a
        // stale `FULL` one full fence.
        let ok = DISABLED.load(Ordering::Relaxed) == 0
            && membarrier(libc::MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED as libc::c_int).is_ok();
        STATE.store(if ok { LIGHT } else { FULL }, Ordering::Relaxed);
        ok
    }

    extern "C" fn after_fork_in_child() {
        // Registration lives in the mm; do not rely on fork copying it.
        register();
    }

    /// First use in this process: read the environment, install the fork handler
    /// (without blocking: a thread that forks meanwhile must not leave its child stuck
    /// on a half-run `Once`), register.
    #[cold]
    #[inline(never)]
    fn first_use() -> bool {
        if std::env::var_os("SHMPLANE_NO_MEMBARRIER").is_some() {
            // Not registering: this process's hot paths keep full fences. Its heavy
            // fences still IPI the processes that did register, which rely on them.
            // ORDERING: Relaxed, see `register`.
            DISABLED.store(1, Ordering::Relaxed);
        }
        // ORDERING: Relaxed, see `register`: only decides who calls pthread_atfork.
        if HOOKED.swap(1, Ordering::Relaxed) == 0 {
            // SAFETY: the handler only makes a syscall and loads/stores atomics, all
            // async-signal-safe.
            unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
        }
        register()
    }

    /// True if this process is registered, so [`light_fence`] may stand in for a full
    /// fence opposite [`heavy_fence`].
    #[inline]
    pub fn light_fence_ok() -> bool {
        // ORDERING: Relaxed, see `register`.
        match STATE.load(Ordering::Relaxed) {
            LIGHT => true,
            FULL => false,
            _ => first_use(),
        }
    }

    /// The light half: keeps the compiler from moving the following loads above the
    /// preceding stores; the CPU's reordering is undone by [`heavy_fence`]'s IPI.
    #[inline(always)]
    pub fn light_fence() {
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
    }

    /// The heavy half: a full barrier here and on every running thread of every
    /// registered process (`MEMBARRIER_CMD_GLOBAL_EXPEDITED`, which needs no
    /// registration of the caller: a process that does not register itself, as with
    /// `SHMPLANE_NO_MEMBARRIER`, still orders against peers that did). Returns `false`
    /// if it could not be issued while peers might rely on it (membarrier refused to
    /// this process only, or failed for a reason that may pass): the caller must make
    /// up for it (sleep caps for a waiter, a grace period for a lease taker). A kernel
    /// without membarrier is `true`: then no process has the light fence.
    pub fn heavy_fence() -> bool {
        // ORDERING: Relaxed loads and stores of HEAVY_FAILED, see `register`.
        let ok = match HEAVY_FAILED.load(Ordering::Relaxed) {
            NO_KERNEL => true,
            REFUSED => false,
            _ => match membarrier(libc::MEMBARRIER_CMD_GLOBAL_EXPEDITED as libc::c_int) {
                Ok(()) => return true,
                Err(libc::ENOSYS) => {
                    HEAVY_FAILED.store(NO_KERNEL, Ordering::Relaxed);
                    true
                }
                // Not allowed here (seccomp) or not enabled: for good.
                Err(libc::EINVAL | libc::EPERM) => {
                    HEAVY_FAILED.store(REFUSED, Ordering::Relaxed);
                    false
                }
                Err(_) => {
                    CAP_NEXT_SLEEP.with(|c| c.set(true));
                    false
                }
            },
        };
        // ORDERING: SeqCst fence, partner only of a peer's full-fence (RMW) hot path;
        // it is not ordered against a peer's light fence (hence the return value).
        std::sync::atomic::fence(Ordering::SeqCst);
        ok
    }

    /// True if heavy fences work in this process (membarrier available and allowed).
    pub fn heavy_fence_works() -> bool {
        // ORDERING: Relaxed, see `register`.
        if STATE.load(Ordering::Relaxed) == UNKNOWN {
            first_use();
        }
        // ORDERING: Relaxed, see `register`.
        HEAVY_FAILED.load(Ordering::Relaxed) == 0
    }

    /// True if this thread's next sleep must be short: membarrier is refused to this
    /// process, or the last heavy fence of this thread failed. Consumes the one-off flag.
    #[inline]
    pub fn sleep_cap_needed() -> bool {
        // ORDERING: Relaxed, see `register`.
        HEAVY_FAILED.load(Ordering::Relaxed) == REFUSED || CAP_NEXT_SLEEP.with(|c| c.replace(false))
    }
}

pub use asymmetric::{heavy_fence, heavy_fence_works, light_fence, light_fence_ok, sleep_cap_needed};

/// A new copy number, unique within this process (and never 0): each endpoint handle
/// takes one when it is made, so that two handles of one role in the same process are
/// two copies to the role lease ([`crate::lease`]).
pub fn next_copy_number() -> u32 {
    #[allow(clippy::disallowed_types)]
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    // ORDERING: Relaxed: only uniqueness matters, which the RMW gives.
    match NEXT.fetch_add(1, Ordering::Relaxed) {
        0 => NEXT.fetch_add(1, Ordering::Relaxed),
        n => n,
    }
}
