//! The one place that names the atomics, fences and spin hints that shared-memory
//! algorithms use (the loom shim, as tokio's `src/loom/` and crossbeam's `primitive`).
//!
//! Under `cfg(shmplane_loom)` every item is loom's model, so the ring, the wait
//! protocol, the role leases and the seqlock can be model-checked over heap-allocated
//! layouts (`loom-tests`). Everything else in the workspace imports from here (or from
//! methods of `shm` types); `ci/lint-sync.sh` rejects atomics and `Ordering` named
//! anywhere else, except the process-local flags of [`crate::process`].
//!
//! The name is `shmplane_loom`, not `loom`: the plain name would flip every dependency
//! that also checks `cfg(loom)`.
//!
//! # Store→load ordering on a hot path (Dekker)
//! Two protocols need "my store, then your store is visible to my load, or mine to
//! yours" between a hot side and a rare side: the eventcount (publish data, then look
//! for sleepers / announce a sleeper, then re-check the data) and the role lease (mark
//! myself active, then check I still hold the lease / take the lease, then look for
//! active copies). [`load_after_store_u32`]/[`load_after_store_u64`] are the hot
//! side's load and [`heavy_fence`] the rare side's fence:
//!
//! - with `membarrier(2)` (see [`crate::process`]) the hot side pays a compiler fence
//!   and a plain load, the rare side an IPI to every CPU running a shmplane process;
//! - without it (old kernels, seccomp, `SHMPLANE_NO_MEMBARRIER`) and under loom the hot
//!   side's load is an `AcqRel` read-modify-write of the same word that the rare side
//!   modifies with an RMW: RMWs of one word are totally ordered and the later one reads
//!   the earlier, which gives the same guarantee, and is the form loom checks.

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

/// The hot side's load of `word` after its own earlier stores (see the module docs):
/// ordered after them against a [`heavy_fence`] (or an RMW of `word`) on the rare side.
#[inline(always)]
pub fn load_after_store_u32(word: &AtomicU32) -> u32 {
    #[cfg(not(shmplane_loom))]
    if crate::process::light_fence_ok() {
        // ORDERING: light half of an asymmetric fence, partner of `heavy_fence`.
        crate::process::light_fence();
        return word.load(Ordering::Relaxed);
    }
    // ORDERING: AcqRel RMW, partner of the rare side's RMW of the same word.
    word.fetch_add(0, Ordering::AcqRel)
}

/// [`load_after_store_u32`] for a 64-bit word.
#[inline(always)]
pub fn load_after_store_u64(word: &AtomicU64) -> u64 {
    #[cfg(not(shmplane_loom))]
    if crate::process::light_fence_ok() {
        // ORDERING: light half of an asymmetric fence, partner of `heavy_fence`.
        crate::process::light_fence();
        return word.load(Ordering::Relaxed);
    }
    // ORDERING: AcqRel RMW, partner of the rare side's RMW of the same word.
    word.fetch_add(0, Ordering::AcqRel)
}

/// The rare side's fence, after its RMW of the word the hot side loads with
/// [`load_after_store_u32`]/[`load_after_store_u64`] and before its own loads. A
/// `membarrier` where available (15 µs on the VM it was measured on); nothing under
/// loom, whose models check the RMW form. `false`: it could not be issued while a peer
/// might use the light fence (membarrier refused to this process): the caller must
/// make up for it (see [`crate::process`]).
#[inline]
#[must_use = "a failed heavy fence must be made up for"]
pub fn heavy_fence() -> bool {
    #[cfg(not(shmplane_loom))]
    return crate::process::heavy_fence();
    #[cfg(shmplane_loom)]
    true
}
