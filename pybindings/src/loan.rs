//! Zero-copy send: `with tx.loan(shape, dtype) as arr: ...` gives a writable ndarray in
//! the ring; the message is committed when the block ends and aborted if it raises.
//!
//! The loan is a `shmplane::DetachedLoan`: one record claimed with the array's header
//! written, the sender inside its operation (other sends refused) until the loan ends.
//! The ndarray's base is the `Loan` object; the loan keeps the segment mapped, so an
//! array kept past the block still points into mapped memory (but writing it then
//! writes into the ring under later messages: documented, as iceoryx2's loans).

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
use std::os::raw::{c_int, c_void};
use std::sync::{Arc, Mutex};

/// An open loan of ring space for one array message. See the stubs.
#[pyclass(module = "shmplane._shmplane", name = "Loan", frozen)]
pub struct PyLoan {
    sender: Py<PySender>,
    loan: Mutex<Option<DetachedLoan>>,
    meta: ArrayMeta,
    addr: usize,
    len: usize,
    /// Keeps the segment mapped while arrays over the loan may live.
    _mapping: Arc<dyn Any + Send + Sync>,
}

impl PyLoan {
    /// End the loan: commit (publish) or abort it. False if it had ended already.
    fn end(&self, py: Python<'_>, commit: bool) -> PyResult<bool> {
        let Some(loan) = self.loan.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() else { return Ok(false) };
        let sender = self.sender.get();
        let mut guard = sender.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if commit {
            guard.commit_loan(loan).map_err(|e| to_py(py, e))?;
        } else {
            guard.abort_loan(loan);
        }
        Ok(true)
    }
}

impl Drop for PyLoan {
    fn drop(&mut self) {
        // Never committed nor aborted (the object was dropped): aborted.
        if let Some(loan) = self.loan.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            let sender = self.sender.get();
            if let Ok(mut guard) = sender.inner.lock() {
                guard.abort_loan(loan);
            }
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
    let bytes = tx.loaned_bytes(&loan);
    let (addr, len) = (bytes.as_mut_ptr() as usize, bytes.len());
    let mapping = tx.mapping().ok_or_else(|| to_py(py, Error::Closed))?;
    drop(guard);
    Py::new(py, PyLoan { sender: slf.clone().unbind(), loan: Mutex::new(Some(loan)), meta, addr, len, _mapping: mapping })
}

#[pymethods]
impl PyLoan {
    /// A writable ndarray over the loaned ring space (shape, dtype and order as asked;
    /// its contents are unspecified until written). Each call returns a new array over
    /// the same bytes.
    ///
    /// Raises:
    ///     ValueError: the loan has ended.
    fn array<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let me = slf.get();
        if me.loan.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_none() {
            return Err(PyValueError::new_err("this loan has ended (committed or aborted)"));
        }
        writable_array(py, slf.as_any(), me.addr, me.len, &me.meta)
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

    /// True while the loan is open.
    #[getter]
    fn open(&self) -> bool {
        self.loan.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_some()
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

    fn __repr__(&self) -> String {
        let state = if self.open() { "open" } else { "ended" };
        format!("<shmplane.Loan {} {:?} order={:?} nbytes={} {state}>", self.meta.descr, self.meta.shape, self.meta.order, self.len)
    }
}

/// A writable ndarray of `meta` over the `len` bytes at `addr`, based on `owner`.
fn writable_array<'py>(py: Python<'py>, owner: &Bound<'py, PyAny>, addr: usize, len: usize, meta: &ArrayMeta) -> PyResult<Bound<'py, PyAny>> {
    use numpy::npyffi::{get_type_object, npy_intp, NpyTypes, PyArrayObject, PyArray_Descr, NPY_ARRAY_F_CONTIGUOUS, NPY_ARRAY_WRITEABLE, PY_ARRAY_API};
    static DTYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let dtype = DTYPE.import(py, "numpy", "dtype")?.call1((meta.descr.as_str(),))?;
    let itemsize: usize = dtype.getattr("itemsize")?.extract()?;
    let count = meta.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if count.and_then(|n| n.checked_mul(itemsize)) != Some(len) {
        return Err(PyValueError::new_err(format!("an array of {} {:?} in {len} bytes", meta.descr, meta.shape)));
    }
    let mut dims = meta.shape.iter().map(|&d| npy_intp::try_from(d)).collect::<Result<Vec<_>, _>>().map_err(|_| PyValueError::new_err("array too large"))?;
    let flags = NPY_ARRAY_WRITEABLE | if meta.order == Order::F { NPY_ARRAY_F_CONTIGUOUS } else { 0 };
    // SAFETY: numpy's API table is loaded (numpy is imported: `numpy.dtype` above).
    // `PyArray_NewFromDescr` steals the descriptor reference (`into_ptr`) and builds a
    // writable array of `dims` (copied) over `addr`: `len` bytes (checked above) of ring
    // space claimed for this loan, which nobody else writes or reads until it is
    // committed, and which stays mapped while `owner` (the loan, which keeps the mapping)
    // lives; `SetBaseObject` steals the reference to `owner`, so the array keeps it.
    unsafe {
        let ty = get_type_object(py, NpyTypes::PyArray_Type);
        let raw = PY_ARRAY_API.PyArray_NewFromDescr(
            py,
            ty,
            dtype.into_ptr().cast::<PyArray_Descr>(),
            dims.len() as c_int,
            dims.as_mut_ptr(),
            std::ptr::null_mut(),
            addr as *mut c_void,
            flags,
            std::ptr::null_mut(),
        );
        let arr = Bound::from_owned_ptr_or_err(py, raw)?;
        if PY_ARRAY_API.PyArray_SetBaseObject(py, arr.as_ptr().cast::<PyArrayObject>(), owner.clone().into_ptr()) != 0 {
            return Err(PyErr::fetch(py));
        }
        Ok(arr)
    }
}
