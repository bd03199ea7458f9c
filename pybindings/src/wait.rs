//! Waiting from Python: timeouts as [`Wait`]s, and the one way the binding blocks —
//! without the GIL, inside the `shmplane` crate's wait loop, with a per-slice hook that
//! re-takes the GIL and checks for signals (so Ctrl-C ends any wait within one 50 ms
//! slice and raises `KeyboardInterrupt`).

use pyo3::prelude::*;
use shmplane::{Error, Wait};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Copies of at least this many bytes run with the GIL released.
pub const GIL_RELEASE_BYTES: usize = 64 * 1024;

/// Looks an RPC call (for its reply) or server (for its next call) takes with the GIL
/// held, a pause instruction apart, before it releases the GIL to wait: ~1-2 µs, about
/// what an answer from a Python peer takes. Releasing and re-taking the GIL, and
/// setting up the wait with its signal-checking hook, cost more than a look.
pub const GIL_SPIN_LOOKS: u32 = 32;

/// Look up to [`GIL_SPIN_LOOKS`] times, with the GIL held, for `ready` to say true:
/// not under [`shmplane::WaitPolicy::Block`], and under an adaptive policy (as its
/// endpoint learned it: none while the peer shares the CPU) no longer than its spin,
/// at ~50 ns a look. True once it did.
///
/// # Errors
/// `ready`'s error.
pub fn spin_holding_gil(policy: shmplane::WaitPolicy, mut ready: impl FnMut() -> Result<bool, Error>) -> Result<bool, Error> {
    let looks = match policy {
        shmplane::WaitPolicy::Block => 0,
        // No longer than the spin asked for (or learned): a look costs ~40-60 ns.
        shmplane::WaitPolicy::Adaptive { spin } => GIL_SPIN_LOOKS.min(u32::try_from(spin.as_nanos() / 50).unwrap_or(u32::MAX)),
        shmplane::WaitPolicy::Spin => GIL_SPIN_LOOKS,
    };
    for _ in 0..looks {
        if ready()? {
            return Ok(true);
        }
        std::hint::spin_loop();
    }
    Ok(false)
}

/// A Python `timeout` in seconds (`None`: forever) for one call; `block = false` never
/// waits. The deadline is made when the call first has to wait (or asks whether the
/// time is up), not when it starts: reading the clock costs 20-200 ns (~120 ns on this
/// project's VM), a tenth of a small RPC, and most calls with a timeout never wait. The
/// time a call spends before its first wait (its first attempt, a copy) is not counted.
#[derive(Debug)]
pub struct Timeout {
    /// `None`: no limit (`None`, `inf`, or more than a point in time can hold).
    limit: Option<Duration>,
    block: bool,
    /// `now + limit`, made on first use (`None`: forever).
    deadline: OnceLock<Option<Instant>>,
}

impl Timeout {
    /// Check `timeout` as [`Timeout::new`] does (for a call that keeps only the
    /// seconds).
    ///
    /// # Errors
    /// As [`Timeout::new`].
    fn check(timeout: Option<f64>) -> PyResult<()> {
        match timeout {
            Some(t) if t.is_nan() || t < 0.0 => {
                Err(pyo3::exceptions::PyValueError::new_err(format!("timeout must be None, inf or a number of seconds >= 0, got {t}")))
            }
            _ => Ok(()),
        }
    }

    /// Parse `timeout` (seconds; `None` or `inf`: no timeout). A timeout too large to be
    /// a duration waits forever. Reads no clock.
    ///
    /// # Errors
    /// `ValueError` for a negative or NaN timeout, or `-inf`.
    pub fn new(timeout: Option<f64>, block: bool) -> PyResult<Timeout> {
        Timeout::check(timeout)?;
        // None or inf (or years): no limit.
        let limit = timeout.and_then(|t| Duration::try_from_secs_f64(t).ok());
        Ok(Timeout { limit, block, deadline: OnceLock::new() })
    }

    /// Wait forever.
    pub fn forever() -> Timeout {
        Timeout { limit: None, block: true, deadline: OnceLock::new() }
    }

    /// True if the call may wait.
    pub fn blocks(&self) -> bool {
        self.block
    }

    /// The deadline, made on the first call (`None`: forever).
    fn deadline(&self) -> Option<Instant> {
        match self.limit {
            None => None,
            Some(limit) => *self.deadline.get_or_init(|| Instant::now().checked_add(limit)),
        }
    }

    /// True for a zero timeout: check once, never wait. Reads no clock.
    pub fn is_zero(&self) -> bool {
        self.limit.is_some_and(|limit| limit.is_zero())
    }

    /// True once the time is up: at once for a zero timeout, else once the deadline
    /// (made at the first call) passed.
    pub fn expired(&self) -> bool {
        self.is_zero() || self.deadline().is_some_and(|d| d <= Instant::now())
    }

    /// The time left before the deadline (`None`: forever).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline().map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// The deadline as a [`Wait`] (no hook); the deadline is made now if it was not
    /// (never for a call that does not block: it reads no clock).
    pub fn wait(&self) -> Wait<'static> {
        if !self.block {
            return Wait::no_wait();
        }
        match self.deadline() {
            None => Wait::forever(),
            Some(d) => Wait::until(d),
        }
    }
}

/// Run `f` without the GIL, giving it a [`Wait`] for `timeout` whose hook, every wait
/// slice, re-takes the GIL, checks for signals and runs `check` (a handle's own
/// "closed meanwhile?"). The first exception (a signal handler's `KeyboardInterrupt`,
/// or `check`'s) ends the wait and is raised.
///
/// # Errors
/// That exception, or `f`'s error mapped by `crate::error`.
pub fn blocking_checked<T: Send>(
    py: Python<'_>,
    timeout: &Timeout,
    mut check: impl FnMut(Python<'_>) -> PyResult<()> + Send,
    f: impl for<'w> FnOnce(Wait<'w>) -> Result<T, Error> + Send,
) -> PyResult<T> {
    let mut raised: Option<PyErr> = None;
    let result = py.detach(|| {
        let mut hook = || {
            Python::attach(|py| py.check_signals().and_then(|()| check(py))).map_err(|e| {
                raised = Some(e);
                Error::Interrupted
            })
        };
        f(timeout.wait().with_hook(&mut hook))
    });
    match (result, raised) {
        (Err(Error::Interrupted), Some(e)) => Err(e),
        (r, _) => crate::error::IntoPyResult::py_err(r, py),
    }
}

/// [`blocking_checked`] with signal checks only.
///
/// # Errors
/// As [`blocking_checked`].
pub fn blocking<T: Send>(
    py: Python<'_>,
    timeout: &Timeout,
    f: impl for<'w> FnOnce(Wait<'w>) -> Result<T, Error> + Send,
) -> PyResult<T> {
    blocking_checked(py, timeout, |_| Ok(()), f)
}

/// A close requested from another thread while this endpoint's lock is held by a call
/// that blocks: the call's per-slice hook sees it and ends with `ClosedError`, so the
/// close can take the lock (as closing a socket ends a `recv` blocked on it).
#[derive(Debug, Default)]
pub struct CloseFlag(std::sync::Mutex<bool>);

impl CloseFlag {
    /// Ask blocked calls to end.
    pub fn request(&self) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = true;
    }

    /// True once a close was requested.
    pub fn is_requested(&self) -> bool {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `ClosedError` once a close was requested (a blocking call's per-slice check).
    ///
    /// # Errors
    /// `ClosedError`.
    pub fn check(&self, py: Python<'_>) -> PyResult<()> {
        if *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
            Err(crate::error::to_py(py, Error::Closed))
        } else {
            Ok(())
        }
    }
}

/// Lock `m` for a close: at once if free; else ask the holder (a call blocked in a
/// wait) to end through `flag`, and wait for it without the GIL. `None` in a fork child
/// whose lock stays taken for a second: the holder was a thread of the parent that does
/// not exist here and will never let go (the child's copy is then left to the process's
/// exit, which releases its locks with its descriptors).
pub fn lock_for_close<'a, T: Send>(py: Python<'_>, m: &'a std::sync::Mutex<T>, flag: &CloseFlag) -> Option<std::sync::MutexGuard<'a, T>> {
    match m.try_lock() {
        Ok(g) => Some(g),
        Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => {
            flag.request();
            // The holder sees the flag at its next wait slice and lets go; a guard
            // cannot leave `detach` (it is not Send), so look again every millisecond.
            let start = Instant::now();
            loop {
                match m.try_lock() {
                    Ok(g) => return Some(g),
                    Err(std::sync::TryLockError::Poisoned(p)) => return Some(p.into_inner()),
                    Err(std::sync::TryLockError::WouldBlock) => {
                        if shmplane::process::fork_generation() > 0 && start.elapsed() > Duration::from_secs(1) {
                            return None;
                        }
                        py.detach(|| std::thread::sleep(Duration::from_millis(1)));
                    }
                }
            }
        }
    }
}

/// `open()` a segment by name, waiting at most `timeout` (seconds; `None` or `inf`:
/// forever; 0: not at all) for a creator that has not created it yet: each
/// [`Error::NotFound`] is retried after a pause (1 ms growing to 20 ms) without the GIL,
/// with Ctrl-C checked between tries, as `RpcClient.connect` waits for its server.
///
/// # Errors
/// `ValueError` for a bad timeout; `KeyboardInterrupt`; `open`'s last error
/// (`NotFoundError` once the timeout passed).
pub fn open_waiting<T: Send>(py: Python<'_>, timeout: Option<f64>, open: impl Fn() -> Result<T, Error> + Sync) -> PyResult<T> {
    let limit = Timeout::new(timeout, true)?;
    let mut pause = Duration::from_millis(1);
    loop {
        match py.detach(&open) {
            Err(Error::NotFound { .. }) if !limit.expired() => {
                let nap = limit.remaining().map_or(pause, |left| pause.min(left));
                py.detach(|| std::thread::sleep(nap));
                py.check_signals()?;
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            other => return crate::error::IntoPyResult::py_err(other, py),
        }
    }
}
