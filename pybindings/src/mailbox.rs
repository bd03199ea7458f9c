//! The `Mailbox` Python class: the consuming end of a `shmplane::Mailbox` (many
//! producers, one consumer). Its senders are ordinary `Sender`s (`mb.sender()`,
//! `Sender.open(name)`), one lane each.

use crate::endpoints::{batch_end, batch_size, capacity_arg, collect_batch, lock, no_batch, owned_fd, parse_policy, policy_name, receive_within, tracked, PySender};
use crate::error::{to_py, IntoPyResult};
use crate::wait::{blocking_checked, lock_for_close, CloseFlag, Timeout};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use shmplane::{Error, Joiner, Mailbox, PendingProbe, Wait};
use std::sync::{Mutex, MutexGuard};

/// Default lane capacity of `shmplane.mailbox()` (bytes).
pub const DEFAULT_LANE_CAPACITY: usize = shmplane::DEFAULT_LANE_CAPACITY;
/// Default `max_senders` of `shmplane.mailbox()`.
pub const DEFAULT_MAX_SENDERS: usize = shmplane::DEFAULT_MAX_SENDERS;

/// The receiving end of a mailbox. See `shmplane.mailbox`.
#[pyclass(module = "shmplane._shmplane", name = "Mailbox", frozen, weakref)]
pub struct PyMailbox {
    pub(crate) inner: Mutex<Mailbox>,
    /// `pending()` without the lock: a mapping of the summary of its own.
    probe: PendingProbe,
    /// `sender()` without the lock (a thread may be blocked in `recv`).
    joiner: Mutex<Option<Joiner>>,
    pub(crate) closing: CloseFlag,
}

/// `PyMethodDef` of `Mailbox.pending` (see [`add_pending`]).
struct MethodDef(pyo3::ffi::PyMethodDef);
// SAFETY: the definition is immutable (CPython only reads it); its pointers are to
// 'static C strings and a function.
unsafe impl Sync for MethodDef {}

static PENDING_DEF: MethodDef = MethodDef(pyo3::ffi::PyMethodDef {
    ml_name: c"pending".as_ptr(),
    ml_meth: pyo3::ffi::PyMethodDefPointer { PyCFunction: pending_raw },
    ml_flags: pyo3::ffi::METH_NOARGS,
    ml_doc: c"pending() -> bool\n--\n\nTrue if a message is waiting: one load, no lock, no syscall.".as_ptr(),
});

/// `mb.pending()` as CPython calls it (METH_NOARGS).
unsafe extern "C" fn pending_raw(slf: *mut pyo3::ffi::PyObject, _args: *mut pyo3::ffi::PyObject) -> *mut pyo3::ffi::PyObject {
    // SAFETY: CPython calls a method with the GIL held.
    let py = unsafe { Python::assume_attached() };
    // SAFETY: `slf` is a live object for the call; the method descriptor made by
    // `add_pending` on the Mailbox type admits only instances of that type (CPython
    // checks the receiver's type before calling), so the cast holds; the class is
    // frozen, so `get` needs no borrow flag.
    let mb = unsafe { pyo3::Borrowed::from_ptr(py, slf).cast_unchecked::<PyMailbox>() };
    let any = mb.get().probe.any();
    // SAFETY: Py_True/Py_False are static objects; the caller receives a new reference.
    unsafe {
        let r = if any { pyo3::ffi::Py_True() } else { pyo3::ffi::Py_False() };
        pyo3::ffi::Py_IncRef(r);
        r
    }
}

/// Add `pending` to the Mailbox type as a plain C method (METH_NOARGS): CPython then
/// calls it as directly as `queue.SimpleQueue.empty`. A pyo3 method runs through its
/// trampoline (GIL-count bookkeeping, a type check, a panic guard): 19 against 14 ns
/// per call on this VM, which is the whole difference. `pending_raw` cannot panic.
pub(crate) fn add_pending(ty: &Bound<'_, pyo3::types::PyType>) -> PyResult<()> {
    let py = ty.py();
    // SAFETY: PENDING_DEF lives forever and CPython only reads it; `ty` is the Mailbox
    // type object.
    let descr = unsafe { pyo3::ffi::PyDescr_NewMethod(ty.as_ptr().cast(), std::ptr::from_ref(&PENDING_DEF.0).cast_mut()) };
    // SAFETY: a new reference or null with an exception set.
    let descr = unsafe { Bound::from_owned_ptr_or_err(py, descr)? };
    ty.setattr("pending", descr)
}

/// A `max_senders` argument: out-of-range values are an `InvalidArgumentError` (the
/// library's own check), not an `OverflowError` from the integer conversion.
fn senders_arg(py: Python<'_>, max_senders: i64) -> PyResult<usize> {
    usize::try_from(max_senders).map_err(|_| {
        to_py(py, Error::InvalidArgument(format!("max_senders {max_senders} must be in 1..={}", shmplane::MAX_SENDERS)))
    })
}


impl PyMailbox {
    fn new(py: Python<'_>, mb: Mailbox) -> PyResult<PyMailbox> {
        let probe = mb.probe().py_err(py)?;
        let joiner = mb.joiner().py_err(py)?;
        Ok(PyMailbox { inner: Mutex::new(mb), probe, joiner: Mutex::new(Some(joiner)), closing: CloseFlag::default() })
    }

    pub(crate) fn lock(&self, py: Python<'_>) -> PyResult<MutexGuard<'_, Mailbox>> {
        lock(py, &self.inner, "Mailbox")
    }

    fn recv_obj(&self, py: Python<'_>, timeout: Option<f64>, block: bool, raw: bool) -> PyResult<Py<PyAny>> {
        let timeout = Timeout::new(timeout, block)?;
        let mut guard = self.lock(py)?;
        self.recv_locked(py, &mut guard, &timeout, raw)
    }

    /// [`PyMailbox::recv_obj`] through `mb`, this mailbox's locked end.
    fn recv_locked(&self, py: Python<'_>, mb: &mut Mailbox, timeout: &Timeout, raw: bool) -> PyResult<Py<PyAny>> {
        loop {
            // With the GIL and no waiting: the common case of a message already there.
            let got = match mb.begin(Wait::no_wait()) {
                Ok(incoming) => Some(receive_within(py, incoming, raw, &Timeout::forever(), Some(&self.closing))),
                Err(Error::Empty) if timeout.blocks() => None,
                Err(e) => return Err(to_py(py, e)),
            };
            if let Some(got) = got {
                mb.settle();
                return got;
            }
            if !blocking_checked(py, timeout, |py| self.closing.check(py), |wait| mb.poll_with(wait))? {
                return Err(to_py(py, Error::Timeout));
            }
        }
    }
}

#[pymethods]
impl PyMailbox {
    /// Create mailbox `name` and become its consumer.
    #[staticmethod]
    #[pyo3(signature = (name, capacity=DEFAULT_LANE_CAPACITY as i64, max_senders=DEFAULT_MAX_SENDERS as i64))]
    fn create<'py>(py: Python<'py>, name: &str, capacity: i64, max_senders: i64) -> PyResult<Bound<'py, Self>> {
        let capacity = capacity_arg(py, capacity)?;
        let max_senders = senders_arg(py, max_senders)?;
        let mb = py.detach(|| Mailbox::create(name, capacity, max_senders)).py_err(py)?;
        tracked(py, PyMailbox::new(py, mb)?)
    }

    /// A mailbox with a generated name (`shmplane.mailbox(name=None)`).
    #[staticmethod]
    fn _new<'py>(py: Python<'py>, capacity: i64, max_senders: i64) -> PyResult<Bound<'py, Self>> {
        let capacity = capacity_arg(py, capacity)?;
        let max_senders = senders_arg(py, max_senders)?;
        let mb = py.detach(|| Mailbox::new(capacity, max_senders)).py_err(py)?;
        tracked(py, PyMailbox::new(py, mb)?)
    }

    /// Become the consumer of existing mailbox `name` (its previous one is gone).
    #[staticmethod]
    #[pyo3(signature = (name, timeout=0.0))]
    fn open<'py>(py: Python<'py>, name: &str, timeout: Option<f64>) -> PyResult<Bound<'py, Self>> {
        let mb = crate::wait::open_waiting(py, timeout, || Mailbox::open(name))?;
        tracked(py, PyMailbox::new(py, mb)?)
    }

    /// Adopt descriptor `fd` (ownership passes to the Mailbox). Used by unpickling.
    #[staticmethod]
    #[pyo3(signature = (fd, name=None))]
    fn _from_fd<'py>(py: Python<'py>, fd: i32, name: Option<String>) -> PyResult<Bound<'py, Self>> {
        let fd = owned_fd(fd)?;
        let mb = py.detach(|| Mailbox::from_fd(fd, name)).py_err(py)?;
        tracked(py, PyMailbox::new(py, mb)?)
    }

    /// A new producer handle of this mailbox (a Sender on a lane of its own). Works
    /// while another thread is blocked in a receive.
    fn sender<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PySender>> {
        let guard = lock(py, &self.joiner, "Mailbox")?;
        let joiner = guard.as_ref().ok_or_else(|| to_py(py, Error::Closed))?;
        let s = py.detach(|| joiner.sender()).py_err(py)?;
        tracked(py, PySender::wrap(s))
    }

    /// Receive the next object, waiting at most `timeout` seconds (None: forever);
    /// `copy=False`: a view of it in shared memory (see the stubs).
    #[pyo3(signature = (timeout=None, copy=true))]
    fn recv(slf: &Bound<'_, Self>, timeout: Option<f64>, copy: bool) -> PyResult<Py<PyAny>> {
        if !copy {
            return crate::lease::recv_view_mailbox(slf.py(), slf, timeout, true);
        }
        slf.get().recv_obj(slf.py(), timeout, true, false)
    }

    /// Receive without waiting; raises `shmplane.Empty` if nothing is there.
    #[pyo3(signature = (copy=true))]
    fn try_recv(slf: &Bound<'_, Self>, copy: bool) -> PyResult<Py<PyAny>> {
        if !copy {
            return crate::lease::recv_view_mailbox(slf.py(), slf, None, false);
        }
        slf.get().recv_obj(slf.py(), None, false, false)
    }

    /// Receive a batch: the next object, waiting at most `timeout` seconds for it (as
    /// `recv`), then those already there in any lane, up to `max_messages` in all (see
    /// the stubs).
    #[pyo3(signature = (max_messages=1024, timeout=None))]
    fn recv_many<'py>(slf: &Bound<'py, Self>, max_messages: i64, timeout: Option<f64>) -> PyResult<Bound<'py, PyList>> {
        let (py, this) = (slf.py(), slf.get());
        let max = batch_size(max_messages).map_err(|e| no_batch(py, e))?;
        let timeout = Timeout::new(timeout, true).map_err(|e| no_batch(py, e))?;
        // Held from the first message to the last (as `Receiver.recv_many`).
        let mut guard = this.lock(py).map_err(|e| no_batch(py, e))?;
        let mb: &mut Mailbox = &mut guard;
        let first = this.recv_locked(py, mb, &timeout, false);
        // An ending (closed, no senders left) ends the batch here and is raised by the
        // next receive; other errors (a malformed message, a poisoned lane: reported
        // once) are raised now.
        collect_batch(py, max, first, || {
            let incoming = match mb.begin(Wait::no_wait()) {
                Ok(incoming) => incoming,
                Err(e) => return batch_end(py, e),
            };
            let got = receive_within(py, incoming, false, &Timeout::forever(), Some(&this.closing));
            mb.settle();
            Some(got)
        })
    }

    /// The next message as a `Lease` viewing it in shared memory, waiting at most
    /// `timeout` seconds (see the stubs).
    #[pyo3(signature = (timeout=None))]
    fn lease(slf: &Bound<'_, Self>, timeout: Option<f64>) -> PyResult<Py<crate::lease::PyLease>> {
        crate::lease::lease_next_mailbox(slf.py(), slf, timeout, true)
    }

    /// Messages held by live views (`recv(copy=False)`, leases) and not released yet.
    #[getter]
    fn held(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.lock(py)?.holds())
    }

    /// Close at process exit (`shmplane._handles`): views still alive die with the
    /// process, so their messages are given back first and the close completes now.
    fn _close_at_exit(&self, py: Python<'_>) -> PyResult<()> {
        self.probe.close();
        let Some(mut guard) = lock_for_close(py, &self.inner, &self.closing) else { return Ok(()) };
        let mb = &mut *guard;
        py.detach(|| mb.close_releasing_views());
        Ok(())
    }

    /// Receive the next message's logical payload as bytes, whatever was sent.
    #[pyo3(signature = (timeout=None))]
    fn recv_bytes(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        self.recv_obj(py, timeout, true, true)
    }

    /// True if a message is ready, waiting at most `timeout` seconds (None: forever).
    #[pyo3(signature = (timeout=0.0))]
    fn poll(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let timeout = Timeout::new(timeout, true)?;
        let mut guard = self.lock(py)?;
        let mb: &mut Mailbox = &mut guard;
        if timeout.is_zero() {
            return mb.poll_with(Wait::no_wait()).or_else(crate::endpoints::ended_is_ready).py_err(py);
        }
        blocking_checked(py, &timeout, |py| self.closing.check(py), |wait| mb.poll_with(wait).or_else(crate::endpoints::ended_is_ready))
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Iterate over received objects until every sender has closed.
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match self.recv_obj(py, None, true, false) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyEOFError>(py) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Readiness descriptor (see the stub).
    fn fileno(&self, py: Python<'_>) -> PyResult<i32> {
        self.lock(py)?.readiness_fd().map_err(|e| to_py(py, e))
    }

    /// The full liveness check of the senders (asyncio layer, once per wait slice).
    fn _check_peer(&self, py: Python<'_>) -> PyResult<()> {
        self.lock(py)?.check_senders().map_err(|e| to_py(py, e))
    }

    /// ``await mb.recv_async(timeout=None)``.
    #[pyo3(signature = (timeout=None))]
    fn recv_async<'py>(slf: &Bound<'py, Self>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("shmplane._aio")?.call_method1("recv_async", (slf, timeout))
    }

    /// ``async for obj in mb``.
    fn __aiter__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("shmplane._aio")?.call_method1("AsyncReceive", (slf,))
    }

    /// Close the receiving end (idempotent); a receive of another thread blocked on it
    /// ends with ClosedError within one wait slice.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.probe.close();
        lock(py, &self.joiner, "Mailbox")?.take();
        let Some(mut guard) = lock_for_close(py, &self.inner, &self.closing) else { return Ok(()) };
        let mb = &mut *guard;
        py.detach(|| mb.close());
        Ok(())
    }

    /// The segment descriptor (what pickling duplicates: its description holds the
    /// consumer's roles).
    fn _segment_fd(&self, py: Python<'_>) -> PyResult<i32> {
        self.lock(py)?.fd().ok_or_else(|| to_py(py, Error::Closed))
    }

    #[getter]
    fn name(&self, py: Python<'_>) -> PyResult<Option<String>> {
        Ok(self.lock(py)?.name().map(str::to_owned))
    }

    #[getter]
    fn path(&self, py: Python<'_>) -> PyResult<Option<String>> {
        Ok(self.lock(py)?.path().map(str::to_owned))
    }

    /// Each lane's ring capacity in bytes.
    #[getter]
    fn capacity(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.lock(py)?.lane_capacity())
    }

    #[getter]
    fn max_senders(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.lock(py)?.max_senders())
    }

    /// Producer handles attached now.
    #[getter]
    fn senders(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.lock(py)?.senders())
    }

    #[getter]
    fn closed(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.lock(py)?.is_closed())
    }

    #[getter]
    fn policy(&self, py: Python<'_>) -> PyResult<String> {
        Ok(policy_name(self.lock(py)?.wait_policy()))
    }

    #[pyo3(signature = (policy, spin_us=20.0))]
    fn set_policy(&self, py: Python<'_>, policy: &str, spin_us: f64) -> PyResult<()> {
        let p = parse_policy(policy, spin_us)?;
        self.lock(py)?.set_wait_policy(p);
        Ok(())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("shmplane._handles")?.call_method1("reduce_mailbox", (slf,))
    }

    fn __repr__(&self) -> String {
        match self.inner.try_lock() {
            Ok(m) if m.is_closed() => "<shmplane.Mailbox closed>".into(),
            Ok(m) => format!(
                "<shmplane.Mailbox name={:?} capacity={} max_senders={} senders={} policy={}>",
                m.name().unwrap_or(""),
                m.lane_capacity(),
                m.max_senders(),
                m.senders(),
                policy_name(m.wait_policy())
            ),
            Err(_) => "<shmplane.Mailbox busy>".into(),
        }
    }
}
