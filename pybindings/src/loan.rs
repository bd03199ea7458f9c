//! Zero-copy send: `with tx.loan(shape, dtype) as arr: ...` gives a writable ndarray in
//! the ring; the message is committed when the block ends and aborted if it raises.
//!
//! The loan is a `shmplane::DetachedLoan`: one record claimed with the array's header
//! written, the sender inside its operation (other sends refused) until the loan ends.
//! The ndarray's base is the `Loan` object, which keeps a second, read-write mapping of
//! the segment that holds no locks (`Sender::loaned_region`): an array kept past the
//! block still points into mapped memory, and does not keep the sender's role. Arrays
//! handed out turn read-only when the loan ends.

use crate::endpoints::PySender;
use crate::error::to_py;
use crate::wait::{blocking_checked, Timeout};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyTuple;
use shmplane::frame::{ArrayMeta, Order, Outgoing};
use shmplane::{DetachedLoan, Error, Wait};
use std::any::Any;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An open loan of ring space for one array message. See the stubs.
#[pyclass(module = "shmplane._shmplane", name = "Loan", frozen)]
pub struct PyLoan {
    /// The sender, while the loan is open (let go at its end: a loan kept as an object
    /// must not keep the sender from being collected and closed).
    sender: Mutex<Option<Py<PySender>>>,
    loan: Mutex<Option<DetachedLoan>>,
    meta: ArrayMeta,
    addr: usize,
    len: usize,
    /// The fork generation the loan was taken in (a fork child's copy is not its own).
    generation: u64,
    /// Weak references to the arrays handed out: made read-only when the loan ends.
    arrays: Mutex<Vec<Py<PyAny>>>,
    /// Keeps the loan mapping (a second mapping that holds no locks) while arrays over
    /// the loan may live.
    _mapping: Arc<dyn Any + Send + Sync>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Run `f` on the sender, waiting for its lock without the GIL (a close in another
/// thread holds it across a wait that ends only with the GIL back). `None` if it could
/// not be had within 10 s (1 s in a fork child, where a vanished thread may hold it).
fn with_sender<R>(py: Python<'_>, sender: &PySender, f: impl FnOnce(&mut shmplane::Sender) -> R) -> Option<R> {
    let start = Instant::now();
    loop {
        match sender.inner.try_lock() {
            Ok(mut g) => return Some(f(&mut g)),
            Err(std::sync::TryLockError::Poisoned(p)) => return Some(f(&mut p.into_inner())),
            Err(std::sync::TryLockError::WouldBlock) => {
                let limit = if shmplane::process::fork_generation() > 0 { Duration::from_secs(1) } else { Duration::from_secs(10) };
                if start.elapsed() > limit {
                    return None;
                }
                py.detach(|| std::thread::sleep(Duration::from_millis(1)));
            }
        }
    }
}

impl PyLoan {
    /// True if the loan is open and this process's.
    fn is_open(&self, py: Python<'_>) -> bool {
        if self.generation != shmplane::process::fork_generation() || locked(&self.loan).is_none() {
            return false;
        }
        // A closed sender ended it.
        match locked(&self.sender).as_ref() {
            Some(s) => match s.get().inner.try_lock() {
                Ok(tx) => tx.loan_open(),
                Err(_) => true,
            },
            None => {
                let _ = py;
                false
            }
        }
    }

    /// End the loan: commit (publish) or abort it. False if it had ended already (or
    /// is not this process's).
    fn end(&self, py: Python<'_>, commit: bool) -> PyResult<bool> {
        if self.generation != shmplane::process::fork_generation() {
            return Ok(false);
        }
        let Some(loan) = locked(&self.loan).take() else { return Ok(false) };
        let sender = locked(&self.sender).take();
        // Arrays handed out become read-only: writing one after the end would write into
        // the ring under the receiver's (and later messages') feet.
        for weak in std::mem::take(&mut *locked(&self.arrays)) {
            if let Ok(arr) = weak.bind(py).call0() {
                if !arr.is_none() {
                    let _ = arr.getattr("flags").and_then(|f| f.setattr("writeable", false));
                }
            }
        }
        let Some(sender) = sender else { return Ok(false) };
        let result = with_sender(py, sender.get(), |tx| if commit { tx.commit_loan(loan) } else { tx.abort_loan(loan); Ok(()) });
        match result {
            Some(Ok(())) => Ok(true),
            Some(Err(e)) => Err(to_py(py, e)),
            None => Err(to_py(py, Error::InvalidArgument("the sender stayed busy in another thread: the loan could not be ended".into()))),
        }
    }
}

impl Drop for PyLoan {
    fn drop(&mut self) {
        // Never committed nor aborted (the object was dropped): aborted.
        if locked(&self.loan).is_some() && self.generation == shmplane::process::fork_generation() {
            Python::attach(|py| {
                let _ = self.end(py, false);
            });
        }
    }
}

/// `tx.loan(shape, dtype, order, timeout)`.
pub(crate) fn open_loan(py: Python<'_>, slf: &Bound<'_, PySender>, shape: Vec<usize>, dtype: &Bound<'_, PyAny>, order: &str, timeout: Option<f64>) -> PyResult<Py<PyLoan>> {
    static DTYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let dt = DTYPE.import(py, "numpy", "dtype")?.call1((dtype,))?;
    if dt.getattr("hasobject")?.extract::<bool>()? || !dt.getattr("fields")?.is_none() || !dt.getattr("subdtype")?.is_none() {
        return Err(PyValueError::new_err(format!("a loan is of a plain dtype (no objects, fields or subarrays), not {dt}")));
    }
    if dt.getattr("itemsize")?.extract::<usize>()? == 0 {
        return Err(PyValueError::new_err(format!("a loan is of a sized dtype ('S10', '<U4', ...), not {dt}")));
    }
    let descr: String = dt.getattr("str")?.extract()?;
    let order = match order {
        "C" => Order::C,
        "F" => Order::F,
        _ => return Err(PyValueError::new_err(format!("order must be 'C' or 'F', not {order:?}"))),
    };
    let meta = ArrayMeta::new(&descr, &shape, order).map_err(|e| to_py(py, Error::InvalidArgument(e)))?;
    let msg = Outgoing::array_lent(&meta).map_err(|e| to_py(py, Error::InvalidArgument(e)))?;
    let timeout = Timeout::new(timeout, true)?;
    let me = slf.get();
    let mut guard = me.lock(py)?;
    let tx: &mut shmplane::Sender = &mut guard;
    let loan = match tx.loan_message(&msg, Wait::no_wait()) {
        Ok(l) => l,
        Err(Error::Full) if timeout.blocks() => blocking_checked(py, &timeout, |py| me.closing.check(py), |w| tx.loan_message(&msg, w))?,
        Err(e) => return Err(to_py(py, e)),
    };
    let (mapping, addr, len) = match tx.loaned_region(&loan) {
        Ok(r) => r,
        Err(e) => {
            tx.abort_loan(loan);
            return Err(to_py(py, e));
        }
    };
    drop(guard);
    Py::new(
        py,
        PyLoan {
            sender: Mutex::new(Some(slf.clone().unbind())),
            loan: Mutex::new(Some(loan)),
            meta,
            addr,
            len,
            generation: shmplane::process::fork_generation(),
            arrays: Mutex::default(),
            _mapping: mapping,
        },
    )
}

#[pymethods]
impl PyLoan {
    /// A writable ndarray over the loaned ring space (shape, dtype and order as asked;
    /// its contents are unspecified until written). Each call returns a new array over
    /// the same bytes; all of them turn read-only when the loan ends.
    ///
    /// Raises:
    ///     ValueError: the loan has ended (or was taken in the parent of this fork).
    fn array<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let me = slf.get();
        if !me.is_open(py) {
            return Err(PyValueError::new_err("this loan has ended (committed, aborted, its sender closed, or taken before a fork)"));
        }
        let arr = crate::lease::array_over(py, slf.as_any(), me.addr, me.len, &me.meta, true)?;
        static WEAKREF: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let weak = WEAKREF.import(py, "weakref", "ref")?.call1((&arr,))?;
        locked(&me.arrays).push(weak.unbind());
        Ok(arr)
    }

    /// Publish the message (idempotent: False if the loan had ended).
    fn commit(&self, py: Python<'_>) -> PyResult<bool> {
        self.end(py, true)
    }

    /// Abandon the message: nothing is published (False if the loan had ended).
    fn abort(&self, py: Python<'_>) -> PyResult<bool> {
        self.end(py, false)
    }

    /// Bytes lent (the array's data).
    #[getter]
    fn nbytes(&self) -> usize {
        self.len
    }

    /// True while the loan is open (in this process, its sender open).
    #[getter]
    fn open(&self, py: Python<'_>) -> bool {
        self.is_open(py)
    }

    fn __enter__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        PyLoan::array(slf)
    }

    /// Commit if the block ended normally, abort if it raised.
    #[pyo3(signature = (exc_type, *_rest))]
    fn __exit__(&self, py: Python<'_>, exc_type: &Bound<'_, PyAny>, _rest: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.end(py, exc_type.is_none())?;
        Ok(false)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let state = if self.is_open(py) { "open" } else { "ended" };
        format!("<shmplane.Loan {} {:?} order={:?} nbytes={} {state}>", self.meta.descr, self.meta.shape, self.meta.order, self.len)
    }
}
