//! Waiting with the GIL released, in slices, with Ctrl-C checks between slices.

use pyo3::prelude::*;
use std::time::{Duration, Instant};

/// Longest stretch spent without the GIL before checking for signals (Ctrl-C).
pub const SIGNAL_SLICE: Duration = Duration::from_millis(50);

/// Copies of at least this many bytes run with the GIL released.
pub const GIL_RELEASE_BYTES: usize = 64 * 1024;

/// A Python `timeout` in seconds (`None`: forever) as a deadline.
///
/// # Errors
/// `ValueError` for a negative or non-finite timeout.
pub fn deadline(timeout: Option<f64>) -> PyResult<Option<Instant>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_finite() && t >= 0.0 => Ok(Some(Instant::now() + Duration::from_secs_f64(t))),
        Some(t) => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "timeout must be None or a finite number of seconds >= 0, got {t}"
        ))),
    }
}

/// The next slice to wait, or `None` if the deadline has passed.
pub fn next_slice(deadline: Option<Instant>) -> Option<Duration> {
    match deadline {
        None => Some(SIGNAL_SLICE),
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            (!left.is_zero()).then(|| left.min(SIGNAL_SLICE))
        }
    }
}

/// Run `f` with the GIL released if `big`, else with it held.
#[inline]
pub fn maybe_detach<T: Send>(py: Python<'_>, big: bool, f: impl FnOnce() -> T + Send) -> T {
    if big {
        py.detach(f)
    } else {
        f()
    }
}
