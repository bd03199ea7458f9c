//! Zero-copy receive: `Receiver.recv(copy=False)` and `Receiver.lease()`.
//!
//! A `Lease` is a message held in the ring (`shmplane::Receiver::begin_view`): it
//! exports the message's bytes read-only through the buffer protocol, and the views
//! built on it (a memoryview, `np.frombuffer`, pickle-5's out-of-band buffers) keep it
//! alive by reference. When the last goes, the lease is deallocated and its ring space
//! released: directly if the receiver is free, else through the receiver's
//! `Releaser` queue (the receiving thread applies it within one wait slice). The
//! mapping is kept by the lease (an `Arc`), so a view outliving the receiver's close
//! still reads mapped memory.

use crate::endpoints::{receive_within, PyReceiver};
use crate::error::to_py;
use crate::wait::Timeout;
use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyList, PyTuple};
use shmplane::frame::{Kind, Order};
use shmplane::frame::Head;
use shmplane::{Error, Held, HoldToken, Releaser};
use std::any::Any;
use std::sync::{Arc, Mutex};
use std::os::raw::{c_int, c_void};

/// A received message viewed in place in shared memory (zero-copy). See the stubs.
#[pyclass(module = "shmplane._shmplane", name = "Lease", frozen)]
pub struct PyLease {
    /// Where the releases go: the receiver, or a mailbox and the lane it was held on.
    receiver: Source,
    releaser: Releaser,
    /// `None`: a message that could not be viewed in place (it spanned several
    /// records), received by copy into `copied`.
    held: Option<View>,
    /// Keeps the mapping the view points into until the lease is released (then
    /// dropped: a released lease does not keep the segment's file description).
    mapping: Mutex<Option<Arc<dyn Any + Send + Sync>>>,
    copied: Option<Py<PyAny>>,
    /// Bytes of the message's data (its parts: an array's elements, a pickle's stream
    /// and buffers).
    nbytes: usize,
    /// Exports and release state (changed with the GIL held; a mutex for `Sync`).
    state: Mutex<State>,
}

/// The handle a lease's message was received from.
enum Source {
    Receiver(Py<PyReceiver>),
    Mailbox(Py<crate::mailbox::PyMailbox>, usize),
    RpcReply(Py<crate::rpc::PyRpcClient>),
}

#[derive(Debug, Default)]
struct State {
    /// Buffer exports alive (memoryviews and what is built on them).
    exports: usize,
    released: bool,
    /// The `with` block ended while views were alive: release when the last goes.
    release_when_unviewed: bool,
}

/// Where a held message lies.
struct View {
    head: Head,
    token: HoldToken,
    addr: usize,
    len: usize,
}

fn codec<'py>(py: Python<'py>, name: &'static str, cell: &'static PyOnceLock<Py<PyAny>>) -> PyResult<&'py Bound<'py, PyAny>> {
    cell.import(py, "shmplane._codec", name)
}

impl PyLease {
    /// Give the ring space back now (idempotent). With the receiver free, at once;
    /// busy in another thread (waiting for the next message), through its queue.
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn give_back(&self) {
        if std::mem::replace(&mut self.state().released, true) {
            return;
        }
        let Some(held) = &self.held else { return };
        // The mapping first: after a close while views were alive, the last release
        // finishes the close, which must find no mapping of ours holding the segment's
        // file description (and with it the role's lock). `try_lock`: in a fork child a
        // thread that vanished may have held it (the mapping then stays).
        if let Ok(mut m) = self.mapping.try_lock() {
            m.take();
        }
        // With the endpoint free (or poisoned: a panic elsewhere), at once; busy in
        // another thread (waiting for the next message), through its queue, applied at
        // its next receive or wait slice.
        fn now_or_queued<T>(m: &std::sync::Mutex<T>, release: impl FnOnce(&mut T) -> bool, queue: impl FnOnce()) {
            match m.try_lock() {
                Ok(mut guard) => {
                    release(&mut guard);
                }
                Err(std::sync::TryLockError::Poisoned(p)) => {
                    release(&mut p.into_inner());
                }
                Err(std::sync::TryLockError::WouldBlock) => queue(),
            }
        }
        let token = held.token;
        let queue = || self.releaser.release(token);
        match &self.receiver {
            Source::Receiver(rx) => now_or_queued(&rx.get().inner, |r| r.release(token), queue),
            Source::RpcReply(client) => now_or_queued(&client.get().inner, |c| c.release_reply(token), queue),
            Source::Mailbox(mb, lane) => now_or_queued(&mb.get().inner, |m| m.release(*lane, token), queue),
        }
    }

    /// The decoded object viewing the message.
    pub(crate) fn build<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let me = slf.get();
        let Some(held) = &me.held else {
            return Ok(me.copied.as_ref().expect("a copied lease").bind(py).clone());
        };
        if me.state().released {
            return Err(PyBufferError::new_err("this lease was released: its message is gone"));
        }
        // Every view is based on a part owner (a `_ViewPart`): it counts as a view of
        // the lease for as long as it lives, and nothing else can end that (a memoryview
        // base could be `release()`d under an array that still points into the ring).
        let part = |i: usize| -> PyResult<Bound<'py, PyViewPart>> {
            let (o, l) = held.head.part(i);
            me.state().exports += 1;
            Bound::new(py, PyViewPart { lease: slf.clone().unbind(), addr: held.addr + o, len: l })
        };
        let memoryview = |obj: &Bound<'py, PyViewPart>| pyo3::types::PyMemoryView::from(obj.as_any()).map(Bound::into_any);
        match held.head.kind() {
            Kind::Bytes => memoryview(&part(0)?),
            Kind::Array => {
                let meta = held.head.array().expect("an array head has its description");
                let owner = part(0)?;
                let (addr, len) = (owner.get().addr, owner.get().len);
                array_over(py, owner.as_any(), addr, len, meta, false)
            }
            Kind::Pickle => {
                static UNPICKLE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
                let bufs = PyList::empty(py);
                for i in 1..held.head.part_count() {
                    // Passed as they are: an unpickled array keeps its owner as its base.
                    bufs.append(part(i)?)?;
                }
                codec(py, "unpickle", &UNPICKLE)?.call1((memoryview(&part(0)?)?, bufs))
            }
            Kind::Numbers => {
                // Decoded straight from the ring into new objects: no view stays. The
                // part owner counts as a view while the decode runs, so that a
                // `release()` from a finalizer (a collection the allocations start)
                // is refused until it is done.
                let owner = part(0)?;
                let (addr, len) = (owner.get().addr, owner.get().len);
                // SAFETY: the part lies in held ring memory of the lease's mapping, which
                // stays mapped and unwritten while `owner` (a view of the lease) lives;
                // the slice is dropped before `owner`.
                let payload = unsafe { std::slice::from_raw_parts(addr as *const u8, len) };
                let out = crate::numbers::decode(py, payload);
                drop(owner);
                out
            }
        }
    }
}

/// One part of a held message, the base of the views built on it: it counts as a
/// view of its lease while it lives (see `PyLease::build`). Exports its bytes read-only
/// through the buffer protocol, without a release hook, so that numpy (`frombuffer`,
/// pickle-5 reconstruction) keeps it as an array's base as it is, not a memoryview of
/// it that could be released under the array.
#[pyclass(module = "shmplane._shmplane", name = "_ViewPart", frozen)]
pub struct PyViewPart {
    lease: Py<PyLease>,
    addr: usize,
    len: usize,
}

impl Drop for PyViewPart {
    fn drop(&mut self) {
        let lease = self.lease.get();
        let last = {
            let mut st = lease.state();
            st.exports = st.exports.saturating_sub(1);
            st.exports == 0 && st.release_when_unviewed
        };
        if last {
            lease.give_back();
        }
    }
}

#[pymethods]
impl PyViewPart {
    /// Read-only buffer over the part's bytes in the ring.
    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut ffi::Py_buffer, flags: c_int) -> PyResult<()> {
        if view.is_null() {
            return Err(PyBufferError::new_err("a NULL view"));
        }
        if flags & ffi::PyBUF_WRITABLE == ffi::PyBUF_WRITABLE {
            return Err(PyBufferError::new_err("a received message is read-only"));
        }
        let (addr, len) = (slf.get().addr, slf.get().len);
        // SAFETY: `view` is a non-NULL Py_buffer the caller owns for this call. The part
        // lies in held ring memory of the lease's mapping, which stays mapped and
        // unwritten while this part lives: it counts as a view of the lease, which is
        // neither released (`release()` refuses while views live) nor deallocated (this
        // part holds it); every export holds this part in `obj`.
        unsafe { fill_read_only(view, flags, slf.into_any().into_ptr(), addr, len) };
        Ok(())
    }

    fn __repr__(&self) -> String {
        format!("<shmplane._ViewPart nbytes={}>", self.len)
    }
}

/// Fill `view` as a read-only, one-dimensional byte buffer over `len` bytes at `addr`,
/// owned by `obj` (a new reference, stolen).
///
/// # Safety
/// `view` is a valid, non-NULL Py_buffer; `addr..addr + len` stays readable for as long
/// as `obj` lives.
unsafe fn fill_read_only(view: *mut ffi::Py_buffer, flags: c_int, obj: *mut ffi::PyObject, addr: usize, len: usize) {
    // SAFETY: as the caller promises; shape and strides point into the view itself
    // (valid as long as it is), as CPython's `PyBuffer_FillInfo` does.
    unsafe {
        (*view).obj = obj;
        (*view).buf = addr as *mut c_void;
        (*view).len = len as ffi::Py_ssize_t;
        (*view).readonly = 1;
        (*view).itemsize = 1;
        (*view).format = if flags & ffi::PyBUF_FORMAT == ffi::PyBUF_FORMAT { c"B".as_ptr().cast_mut() } else { std::ptr::null_mut() };
        (*view).ndim = 1;
        (*view).shape = if flags & ffi::PyBUF_ND == ffi::PyBUF_ND { &raw mut (*view).len } else { std::ptr::null_mut() };
        (*view).strides = if flags & ffi::PyBUF_STRIDES == ffi::PyBUF_STRIDES { &raw mut (*view).itemsize } else { std::ptr::null_mut() };
        (*view).suboffsets = std::ptr::null_mut();
        (*view).internal = std::ptr::null_mut();
    }
}

/// A read-only ndarray of `meta` over the `len` bytes at `addr`, whose base is `owner`
/// (the part's `_ViewPart`, which keeps the hold). One call of numpy's C API instead of
/// `np.frombuffer` and `reshape` in Python (each touching cold memory right after a
/// large message was written).
pub(crate) fn array_over<'py>(
    py: Python<'py>,
    owner: &Bound<'py, PyAny>,
    addr: usize,
    len: usize,
    meta: &shmplane::frame::ArrayMeta,
    writable: bool,
) -> PyResult<Bound<'py, PyAny>> {
    use numpy::npyffi::{get_type_object, npy_intp, NpyTypes, PyArrayObject, PyArray_Descr, NPY_ARRAY_F_CONTIGUOUS, NPY_ARRAY_WRITEABLE, PY_ARRAY_API};
    static DTYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let dtype = DTYPE.import(py, "numpy", "dtype")?.call1((meta.descr.as_str(),))?;
    let itemsize: usize = dtype.getattr("itemsize")?.extract()?;
    let count = meta.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if count.and_then(|n| n.checked_mul(itemsize)) != Some(len) {
        return Err(to_py(py, Error::Corrupt { path: String::new(), what: format!("an array of {} {:?} in {len} bytes", meta.descr, meta.shape) }));
    }
    let mut dims = meta.shape.iter().map(|&d| npy_intp::try_from(d)).collect::<Result<Vec<_>, _>>().map_err(|_| PyBufferError::new_err("array too large"))?;
    let flags = if meta.order == Order::F { NPY_ARRAY_F_CONTIGUOUS } else { 0 } | if writable { NPY_ARRAY_WRITEABLE } else { 0 };
    // SAFETY: numpy's API table is loaded by its first use (numpy is imported: the
    // `numpy.dtype` above imported it). `PyArray_NewFromDescr` steals the
    // reference to the descriptor (`into_ptr`) and builds an array of `dims` (copied)
    // over `addr`: `len` bytes (checked above) that stay mapped while `owner` lives,
    // read-only for a view (held ring memory: `owner` counts as a view of the lease,
    // so the hold is not released), writable only for a loan (ring space claimed for
    // it, which nobody else touches until it is committed: then the loan makes the
    // array read-only). `SetBaseObject` steals the reference to `owner` and makes it
    // the array's base, so the array keeps it.
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

impl Drop for PyLease {
    fn drop(&mut self) {
        self.give_back();
    }
}

/// Receive the next message as a lease (see `PyReceiver::recv_view`): held in place, or
/// (a message of several records) received by copy.
pub(crate) fn lease_next(py: Python<'_>, slf: &Bound<'_, PyReceiver>, timeout: Option<f64>, block: bool) -> PyResult<Py<PyLease>> {
    let timeout = Timeout::new(timeout, block)?;
    let me = slf.get();
    let mut guard = me.lock(py)?;
    let rx: &mut shmplane::Receiver = &mut guard;
    let releaser = rx.releaser().ok_or_else(|| to_py(py, Error::Closed))?;
    let make = |held: Option<Held>, copied: Option<Py<PyAny>>, nbytes: usize| {
        let (held, mapping) = match held.map(Held::into_parts) {
            Some((head, token, addr, len, mapping)) => (Some(View { head, token, addr, len }), Some(mapping)),
            None => (None, None),
        };
        let lease = PyLease {
            receiver: Source::Receiver(slf.clone().unbind()),
            releaser: releaser.clone(),
            held,
            mapping: Mutex::new(mapping),
            copied,
            nbytes,
            state: Mutex::default(),
        };
        Py::new(py, lease)
    };
    loop {
        // With the GIL and no waiting: the common case of a message already there.
        match rx.begin_view(shmplane::Wait::no_wait()) {
            Ok(shmplane::Viewed::Held(h)) => {
                let n = (0..h.head().part_count()).map(|i| h.head().part_len(i)).sum();
                return make(Some(h), None, n);
            }
            Ok(shmplane::Viewed::Copy(incoming)) => {
                let n = (0..incoming.head().part_count()).map(|i| incoming.head().part_len(i)).sum();
                let copy = receive_within(py, incoming, false, &Timeout::forever(), Some(&me.closing))?;
                return make(None, Some(copy), n);
            }
            Err(Error::Empty) if timeout.blocks() => {}
            Err(e) => return Err(to_py(py, e)),
        }
        // Wait for one to begin without the GIL, then take it as above.
        if !crate::wait::blocking_checked(py, &timeout, |py| me.closing.check(py), |wait| rx.poll_with(wait))? {
            return Err(to_py(py, Error::Timeout));
        }
    }
}

impl PyLease {
    /// A lease of an RPC reply held in `client`'s reply channel.
    pub(crate) fn of_rpc_reply(py: Python<'_>, client: &Bound<'_, crate::rpc::PyRpcClient>, releaser: Releaser, held: Held) -> PyResult<Py<PyLease>> {
        let n = (0..held.head().part_count()).map(|i| held.head().part_len(i)).sum();
        let (head, token, addr, len, mapping) = held.into_parts();
        Py::new(
            py,
            PyLease {
                receiver: Source::RpcReply(client.clone().unbind()),
                releaser,
                held: Some(View { head, token, addr, len }),
                mapping: Mutex::new(Some(mapping)),
                copied: None,
                nbytes: n,
                state: Mutex::default(),
            },
        )
    }
}

/// [`lease_next`] of a mailbox: the next message from any producer, held in its lane
/// (`shmplane::Mailbox::begin_view`) or received by copy.
pub(crate) fn lease_next_mailbox(py: Python<'_>, slf: &Bound<'_, crate::mailbox::PyMailbox>, timeout: Option<f64>, block: bool) -> PyResult<Py<PyLease>> {
    let timeout = Timeout::new(timeout, block)?;
    let me = slf.get();
    let mut guard = me.lock(py)?;
    let mb: &mut shmplane::Mailbox = &mut guard;
    loop {
        // With the GIL and no waiting: the common case of a message already there.
        let got = match mb.begin_view(shmplane::Wait::no_wait()) {
            Ok((lane, shmplane::Viewed::Held(h))) => Some((lane, Ok(h), 0)),
            Ok((lane, shmplane::Viewed::Copy(incoming))) => {
                let n = (0..incoming.head().part_count()).map(|i| incoming.head().part_len(i)).sum();
                Some((lane, Err(receive_within(py, incoming, false, &Timeout::forever(), Some(&me.closing))), n))
            }
            Err(Error::Empty) if timeout.blocks() => None,
            Err(e) => return Err(to_py(py, e)),
        };
        if let Some((lane, got, n)) = got {
            let releaser = mb.releaser(lane).ok_or_else(|| to_py(py, Error::Closed))?;
            let lease = match got {
                Ok(h) => {
                    let n = (0..h.head().part_count()).map(|i| h.head().part_len(i)).sum();
                    let (head, token, addr, len, mapping) = h.into_parts();
                    PyLease {
                        receiver: Source::Mailbox(slf.clone().unbind(), lane),
                        releaser,
                        held: Some(View { head, token, addr, len }),
                        mapping: Mutex::new(Some(mapping)),
                        copied: None,
                        nbytes: n,
                        state: Mutex::default(),
                    }
                }
                Err(copy) => {
                    mb.settle();
                    PyLease {
                        receiver: Source::Mailbox(slf.clone().unbind(), lane),
                        releaser,
                        held: None,
                        mapping: Mutex::new(None),
                        copied: Some(copy?),
                        nbytes: n,
                        state: Mutex::default(),
                    }
                }
            };
            return Py::new(py, lease);
        }
        // Wait for one to begin without the GIL, then take it as above.
        if !crate::wait::blocking_checked(py, &timeout, |py| me.closing.check(py), |wait| mb.poll_with(wait))? {
            return Err(to_py(py, Error::Timeout));
        }
    }
}

/// `Mailbox.recv(copy=False)`: the lease's value.
pub(crate) fn recv_view_mailbox(py: Python<'_>, slf: &Bound<'_, crate::mailbox::PyMailbox>, timeout: Option<f64>, block: bool) -> PyResult<Py<PyAny>> {
    let lease = lease_next_mailbox(py, slf, timeout, block)?;
    let value = PyLease::build(lease.bind(py))?;
    Ok(value.unbind())
}

/// `recv(copy=False)`: the lease's value (the lease lives as long as views of it).
pub(crate) fn recv_view(py: Python<'_>, slf: &Bound<'_, PyReceiver>, timeout: Option<f64>, block: bool) -> PyResult<Py<PyAny>> {
    let lease = lease_next(py, slf, timeout, block)?;
    let value = PyLease::build(lease.bind(py))?;
    Ok(value.unbind())
}

#[pymethods]
impl PyLease {
    /// The message as an object viewing shared memory: a read-only ``memoryview``
    /// (bytes), a read-only ndarray (arrays), the unpickled object with its
    /// out-of-band buffers as read-only views (pickles). Each access builds a new view;
    /// a message received by copy (it spanned several records) returns that copy.
    ///
    /// Raises:
    ///     BufferError: the lease was released.
    #[getter]
    fn value<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        PyLease::build(slf)
    }

    /// Bytes of the message's data (an array's elements; a pickle's stream and
    /// out-of-band buffers).
    #[getter]
    fn nbytes(&self) -> usize {
        self.nbytes
    }

    /// True if the message is viewed in place (False: it was received by copy).
    #[getter]
    fn in_place(&self) -> bool {
        self.held.is_some()
    }

    /// True once released.
    #[getter]
    fn released(&self) -> bool {
        self.state().released
    }

    /// Give the message's ring space back to the sender now, instead of when the
    /// last view goes. Idempotent.
    ///
    /// Raises:
    ///     BufferError: views of the message are still alive (drop them first: the
    ///         sender would overwrite what they show).
    fn release(&self) -> PyResult<()> {
        let (n, released) = {
            let st = self.state();
            (st.exports, st.released)
        };
        if n > 0 && !released {
            return Err(PyBufferError::new_err(format!(
                "{n} view(s) of this message are still alive; drop them (del the arrays and memoryviews) before releasing it"
            )));
        }
        self.give_back();
        Ok(())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Release at the end of the block; if views made inside it are still alive,
    /// the space is released when the last of them goes instead.
    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, PyTuple>) -> bool {
        let unviewed = {
            let mut st = self.state();
            st.release_when_unviewed = true;
            st.exports == 0
        };
        if unviewed {
            self.give_back();
        }
        false
    }

    fn __repr__(&self) -> String {
        let (exports, released) = {
            let st = self.state();
            (st.exports, st.released)
        };
        let state = if released { " released" } else { "" };
        match &self.held {
            Some(h) => format!("<shmplane.Lease {:?} nbytes={} views={}{}>", h.head.kind(), self.nbytes, exports, state),
            None => format!("<shmplane.Lease (received by copy){state}>"),
        }
    }

    /// Read-only buffer over the message's logical payload in the ring.
    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut ffi::Py_buffer, flags: c_int) -> PyResult<()> {
        let me = slf.get();
        let Some(held) = &me.held else {
            return Err(PyBufferError::new_err("this message was received by copy: use .value"));
        };
        if view.is_null() {
            return Err(PyBufferError::new_err("a NULL view"));
        }
        if flags & ffi::PyBUF_WRITABLE == ffi::PyBUF_WRITABLE {
            return Err(PyBufferError::new_err("a received message is read-only"));
        }
        {
            let mut st = me.state();
            if st.released {
                return Err(PyBufferError::new_err("this lease was released: its message is gone"));
            }
            st.exports += 1;
        }
        // SAFETY: `view` is a non-NULL Py_buffer the caller owns for this call. The
        // bytes [addr, addr + len) lie in the ring's data area of a mapping the lease
        // keeps until it is released (`mapping`), and stay unwritten until then: the
        // sender does not reuse held space, and the hold is released only when the
        // lease is deallocated (after every export, each of which holds a reference to
        // it in `obj`) or by `release`, which refuses while exports are alive.
        unsafe { fill_read_only(view, flags, slf.clone().into_any().into_ptr(), held.addr, held.len) };
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        let last = {
            let mut st = self.state();
            st.exports = st.exports.saturating_sub(1);
            st.exports == 0 && st.release_when_unviewed
        };
        if last {
            self.give_back();
        }
    }
}
