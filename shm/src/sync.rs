//! The one place that names atomics, fences and spin hints.
//!
//! Under `cfg(shmplane_loom)` every item is loom's model, so the ring, the wait protocol
//! and the liveness words can be model-checked over heap-allocated layouts
//! (`loom-tests`). Everything else in the workspace imports from here; `clippy.toml`
//! forbids naming `std::sync::atomic` types directly.
//!
//! The name is `shmplane_loom`, not `loom`: the plain name would flip every dependency
//! that also checks `cfg(loom)`.

#[cfg(not(shmplane_loom))]
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
pub use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

#[cfg(shmplane_loom)]
pub use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// Tell the CPU (or loom's scheduler) that this thread is busy-waiting.
#[inline]
pub fn spin_hint() {
    #[cfg(not(shmplane_loom))]
    std::hint::spin_loop();
    #[cfg(shmplane_loom)]
    loom::thread::yield_now();
}

/// Give the rest of this time slice to another thread (or loom's scheduler).
#[inline]
pub fn yield_now() {
    #[cfg(not(shmplane_loom))]
    std::thread::yield_now();
    #[cfg(shmplane_loom)]
    loom::thread::yield_now();
}

#[cfg(not(shmplane_loom))]
#[allow(clippy::disallowed_types)]
static FORK_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Install (once per process) the `pthread_atfork` child handler behind
/// [`fork_generation`]. Call before the first [`fork_generation`] that matters (every
/// endpoint does, when it is created).
#[cfg(not(shmplane_loom))]
pub fn install_fork_hook() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    extern "C" fn after_fork_in_child() {
        FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
    }
    HOOK.call_once(|| {
        // SAFETY: the handler only does an atomic add, which is async-signal-safe.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
}

/// Number of `fork`s this process has gone through as the child (0 in the original
/// process), counted once [`install_fork_hook`] ran. Endpoints compare it with the value
/// they saw last to notice that they now live in a forked child and must re-register as
/// owner before first use. One relaxed load: it is on every operation's path.
#[cfg(not(shmplane_loom))]
#[inline]
pub fn fork_generation() -> u64 {
    // ORDERING: Relaxed: written in this process by the fork handler, which runs in the
    // thread that called fork, before fork returns in the child.
    FORK_GENERATION.load(Ordering::Relaxed)
}
