//! Sleeping on a futex word that lives in shared memory.
//!
//! Only *shared* futexes (no `FUTEX_PRIVATE_FLAG`) work across processes: a private
//! futex is keyed by (mm, address) and a waker in another process never finds it. That
//! is why `parking_lot` and `atomic-wait` (private only) must not be used here.

use crate::sync::AtomicU32;
use std::time::Duration;

/// Sleep/wake on an `AtomicU32`. Production uses [`SharedFutex`]; loom models plug in a
/// condvar model with the same contract.
pub trait Park {
    /// Sleep while `*word == expected`, for at most `timeout` (`None`: no limit).
    /// May return spuriously; callers re-check their condition.
    fn park(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>);
    /// Wake every thread parked on `word`, in any process.
    fn unpark_all(&self, word: &AtomicU32);
    /// Ring the waiter's doorbell (an OS-level waiter armed it, see [`crate::bell`]).
    /// Nothing by default: stores without doorbells (heap rings, loom models).
    fn ring(&self) {}
}

/// `futex(2)` `FUTEX_WAIT`/`FUTEX_WAKE` without `FUTEX_PRIVATE_FLAG`, through the
/// `linux-futex` crate's `Futex<Shared>`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SharedFutex;

#[cfg(not(shmplane_loom))]
impl Park for SharedFutex {
    #[inline]
    fn park(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        use linux_futex::{AsFutex, Shared};
        let futex = AsFutex::<Shared>::as_futex(word);
        // Wrong value, interrupted, timed out and woken all mean "re-check".
        match timeout {
            Some(t) => drop(futex.wait_for(expected, t)),
            None => drop(futex.wait(expected)),
        }
    }

    #[inline]
    fn unpark_all(&self, word: &AtomicU32) {
        use linux_futex::{AsFutex, Shared};
        AsFutex::<Shared>::as_futex(word).wake(i32::MAX);
    }
}
