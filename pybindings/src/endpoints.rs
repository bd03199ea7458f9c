//! `Sender` and `Receiver` Python classes: thin newtypes over `shmplane`'s.

use crate::codec::{multipart_len, parse_multipart, write_multipart, Part, TAG_BYTES, TAG_NDARRAY, TAG_PICKLE};
use crate::error::{to_py, IntoPyResult};
use crate::wait::{deadline, maybe_detach, next_slice, GIL_RELEASE_BYTES};
use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyTuple};
use shmplane::{Error, Message, Receiver, Sender, WaitPolicy};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

/// Default ring capacity of `shmplane.channel()`: 16 MiB.
pub const DEFAULT_CAPACITY: usize = 16 << 20;

fn codec<'py>(py: Python<'py>, name: &'static str, cell: &'static PyOnceLock<Py<PyAny>>) -> PyResult<&'py Bound<'py, PyAny>> {
    cell.import(py, "shmplane._codec", name)
}

macro_rules! codec_fn {
    ($py:expr, $name:literal) => {{
        static CELL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        codec($py, $name, &CELL)
    }};
}

pub(crate) fn parse_policy(policy: &str, spin_us: f64) -> PyResult<WaitPolicy> {
    match policy {
        "spin" => Ok(WaitPolicy::Spin),
        "block" => Ok(WaitPolicy::Block),
        "adaptive" if spin_us.is_finite() && spin_us >= 0.0 => {
            Ok(WaitPolicy::Adaptive { spin: Duration::from_secs_f64(spin_us * 1e-6) })
        }
        _ => Err(PyValueError::new_err(format!(
            "policy must be 'spin', 'adaptive' or 'block' (spin_us >= 0), got {policy:?} (spin_us={spin_us})"
        ))),
    }
}

fn policy_name(p: WaitPolicy) -> String {
    match p {
        WaitPolicy::Spin => "spin".into(),
        WaitPolicy::Block => "block".into(),
        WaitPolicy::Adaptive { spin } => format!("adaptive(spin_us={})", spin.as_secs_f64() * 1e6),
    }
}

fn lock<'a, T>(py: Python<'_>, m: &'a Mutex<T>, what: &str) -> PyResult<MutexGuard<'a, T>> {
    match m.try_lock() {
        Ok(g) => Ok(g),
        Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
        Err(TryLockError::WouldBlock) => Err(to_py(
            py,
            Error::InvalidArgument(format!(
                "this {what} is in use by another thread; an endpoint serves one thread at a time (use one channel per thread)"
            )),
        )),
    }
}

/// Take ownership of descriptor `fd`.
fn owned_fd(fd: i32) -> PyResult<OwnedFd> {
    if fd < 0 {
        return Err(PyValueError::new_err(format!("invalid descriptor {fd}")));
    }
    // SAFETY: the Python caller (shmplane._handles) passes a descriptor it owns and gives
    // up (DupFd.detach()); it is closed exactly once, by the OwnedFd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Hold the buffers of `objs` (buffer-protocol objects) and describe them as parts.
fn buffers(objs: &[Bound<'_, PyAny>]) -> PyResult<(Vec<PyUntypedBuffer>, Vec<Part>)> {
    let mut held = Vec::with_capacity(objs.len());
    let mut parts = Vec::with_capacity(objs.len());
    for o in objs {
        let buf = PyUntypedBuffer::get(o)?;
        if !buf.is_c_contiguous() {
            return Err(PyTypeError::new_err("buffer is not C-contiguous"));
        }
        parts.push(Part { addr: buf.buf_ptr() as usize, len: buf.len_bytes() });
        held.push(buf);
    }
    Ok((held, parts))
}

/// The sending end of a channel. See `shmplane.channel`.
#[pyclass(module = "shmplane._shmplane", name = "Sender", frozen)]
pub struct PySender {
    inner: Mutex<Sender>,
}

impl PySender {
    fn lock(&self, py: Python<'_>) -> PyResult<MutexGuard<'_, Sender>> {
        lock(py, &self.inner, "Sender")
    }

    /// Send `parts` as one record with `tag` (multipart unless a single raw part).
    fn send_parts(&self, py: Python<'_>, tag: u32, parts: &[Part], multipart: bool, timeout: Option<f64>, block: bool) -> PyResult<()> {
        let deadline = deadline(timeout)?;
        let total = if multipart {
            multipart_len(parts).ok_or_else(|| PyValueError::new_err("message too large"))?
        } else {
            parts.iter().map(|p| p.len).sum()
        };
        let mut guard = self.lock(py)?;
        let sender: &mut Sender = &mut guard;
        let big = total >= GIL_RELEASE_BYTES;
        loop {
            let attempt = |s: &mut Sender| -> Result<bool, Error> {
                let mut loan = match s.try_loan(total) {
                    Ok(loan) => loan,
                    Err(Error::Full) => return Ok(false),
                    Err(e) => return Err(e),
                };
                loan.set_tag(tag)?;
                let dst = loan.as_mut_slice();
                if multipart {
                    // SAFETY: the parts' buffers are held by the caller for this call.
                    unsafe { write_multipart(dst, parts) };
                } else {
                    let mut at = 0;
                    for p in parts {
                        // SAFETY: as above.
                        let src = unsafe { std::slice::from_raw_parts(p.addr as *const u8, p.len) };
                        dst[at..at + p.len].copy_from_slice(src);
                        at += p.len;
                    }
                }
                loan.commit();
                Ok(true)
            };
            if maybe_detach(py, big, || attempt(sender)).py_err(py)? {
                return Ok(());
            }
            if !block {
                return Err(to_py(py, Error::Full));
            }
            let Some(slice) = next_slice(deadline) else { return Err(to_py(py, Error::Timeout)) };
            let ready = py.detach(|| sender.poll_space(total, Some(slice))).py_err(py)?;
            if !ready {
                py.check_signals()?;
            }
        }
    }

    fn send_obj(&self, py: Python<'_>, obj: &Bound<'_, PyAny>, timeout: Option<f64>, block: bool) -> PyResult<()> {
        if let Ok(b) = obj.cast_exact::<PyBytes>() {
            let data = b.as_bytes();
            let part = Part { addr: data.as_ptr() as usize, len: data.len() };
            return self.send_parts(py, TAG_BYTES, &[part], false, timeout, block);
        }
        let encoded = codec_fn!(py, "encode")?.call1((obj,))?;
        let (tag, objs): (u32, Vec<Bound<'_, PyAny>>) = encoded.extract()?;
        let (_held, parts) = buffers(&objs)?;
        self.send_parts(py, tag, &parts, tag != TAG_BYTES, timeout, block)
    }
}

#[pymethods]
impl PySender {
    /// Create channel `name` (capacity in bytes, a power of two) and attach as sender.
    #[staticmethod]
    #[pyo3(signature = (name, capacity=DEFAULT_CAPACITY))]
    fn create(py: Python<'_>, name: &str, capacity: usize) -> PyResult<Self> {
        let s = py.detach(|| Sender::create(name, capacity)).py_err(py)?;
        Ok(PySender { inner: Mutex::new(s) })
    }

    /// Open existing channel `name` as its sender.
    #[staticmethod]
    fn open(py: Python<'_>, name: &str) -> PyResult<Self> {
        let s = py.detach(|| Sender::open(name)).py_err(py)?;
        Ok(PySender { inner: Mutex::new(s) })
    }

    /// Adopt descriptor `fd` (ownership passes to the Sender). Used by unpickling.
    #[staticmethod]
    #[pyo3(signature = (fd, name=None))]
    fn _from_fd(py: Python<'_>, fd: i32, name: Option<String>) -> PyResult<Self> {
        let fd = owned_fd(fd)?;
        let s = py.detach(|| Sender::from_fd(fd, name)).py_err(py)?;
        Ok(PySender { inner: Mutex::new(s) })
    }

    /// Send `obj`: bytes-like, numpy array, or any picklable object.
    #[pyo3(signature = (obj, timeout=None))]
    fn send(&self, py: Python<'_>, obj: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<()> {
        self.send_obj(py, obj, timeout, true)
    }

    /// Send without waiting; raises `shmplane.Full` if there is no room now.
    fn try_send(&self, py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        self.send_obj(py, obj, None, false)
    }

    /// Send the bytes of one contiguous buffer as `bytes`.
    #[pyo3(signature = (buf, timeout=None))]
    fn send_bytes(&self, py: Python<'_>, buf: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<()> {
        let (_held, parts) = buffers(std::slice::from_ref(buf))?;
        self.send_parts(py, TAG_BYTES, &parts, false, timeout, true)
    }

    /// Wait until a message of `nbytes` fits (timeout in seconds; None = forever).
    #[pyo3(signature = (nbytes=0, timeout=0.0))]
    fn poll_space(&self, py: Python<'_>, nbytes: usize, timeout: Option<f64>) -> PyResult<bool> {
        let deadline = deadline(timeout)?;
        let mut guard = self.lock(py)?;
        let sender: &mut Sender = &mut guard;
        loop {
            let slice = next_slice(deadline).unwrap_or(Duration::ZERO);
            if py.detach(|| sender.poll_space(nbytes, Some(slice))).py_err(py)? {
                return Ok(true);
            }
            if slice.is_zero() {
                return Ok(false);
            }
            py.check_signals()?;
        }
    }

    /// Close this end (idempotent).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let mut guard = self.lock(py)?;
        let endpoint = &mut *guard;
        py.detach(|| endpoint.close());
        Ok(())
    }

    /// The descriptor holding this end's role.
    fn fileno(&self, py: Python<'_>) -> PyResult<i32> {
        self.lock(py)?.fd().ok_or_else(|| to_py(py, Error::Closed))
    }

    /// The channel's name.
    #[getter]
    fn name(&self, py: Python<'_>) -> PyResult<Option<String>> {
        Ok(self.lock(py)?.name().map(str::to_owned))
    }

    /// The segment file path.
    #[getter]
    fn path(&self, py: Python<'_>) -> PyResult<Option<String>> {
        Ok(self.lock(py)?.path().map(str::to_owned))
    }

    /// Ring capacity in bytes (0 once closed).
    #[getter]
    fn capacity(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.lock(py)?.capacity())
    }

    /// Largest message payload in bytes.
    #[getter]
    fn max_message_size(&self, py: Python<'_>) -> PyResult<usize> {
        self.lock(py)?.max_message_len().py_err(py)
    }

    /// True once closed.
    #[getter]
    fn closed(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.lock(py)?.is_closed())
    }

    /// Wait policy: 'spin', 'block' or 'adaptive(spin_us=...)'.
    #[getter]
    fn policy(&self, py: Python<'_>) -> PyResult<String> {
        Ok(policy_name(self.lock(py)?.wait_policy()))
    }

    /// Set the wait policy ('spin', 'adaptive' or 'block'; spin_us for adaptive).
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
        slf.py().import("shmplane._handles")?.call_method1("reduce_endpoint", (slf, "sender"))
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        match self.inner.try_lock() {
            Ok(s) if s.is_closed() => "<shmplane.Sender closed>".into(),
            Ok(s) => format!(
                "<shmplane.Sender name={:?} capacity={} policy={}>",
                s.name().unwrap_or(""),
                s.capacity(),
                policy_name(s.wait_policy())
            ),
            Err(_) => {
                let _ = py;
                "<shmplane.Sender busy>".into()
            }
        }
    }
}

/// The receiving end of a channel. See `shmplane.channel`.
#[pyclass(module = "shmplane._shmplane", name = "Receiver", frozen)]
pub struct PyReceiver {
    inner: Mutex<Receiver>,
}

/// Allocate a `bytes` of `src.len()` and copy `src` into it, once (GIL released for
/// big ones). `PyBytes::new_with` would zero the bytes first: a second pass over 8 MB.
fn new_bytes<'py>(py: Python<'py>, src: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    if src.len() < GIL_RELEASE_BYTES {
        return Ok(PyBytes::new(py, src).into_any());
    }
    let len = pyo3::ffi::Py_ssize_t::try_from(src.len()).map_err(|_| PyValueError::new_err("message too large"))?;
    // SAFETY: a NULL source asks CPython for an uninitialised bytes object of `len`.
    let raw = unsafe { pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), len) };
    // SAFETY: `raw` is a new reference or NULL with an exception set.
    let obj = unsafe { Bound::from_owned_ptr_or_err(py, raw)? };
    // SAFETY: `raw` is a bytes object; its buffer holds `len` bytes.
    let dst = unsafe { pyo3::ffi::PyBytes_AsString(raw) } as usize;
    py.detach(|| {
        // SAFETY: the new bytes object is referenced only by `obj` (no Python code has
        // seen it), so filling it before returning it is the documented idiom.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
    });
    Ok(obj)
}

/// Copy `src` into the writable buffer of `dst`, which must be exactly as long.
fn copy_into(py: Python<'_>, dst: &Bound<'_, PyAny>, src: &[u8]) -> PyResult<()> {
    let buf = PyUntypedBuffer::get(dst)?;
    if buf.readonly() || !buf.is_c_contiguous() || buf.len_bytes() != src.len() {
        return Err(to_py(
            py,
            Error::Corrupt {
                path: String::new(),
                what: format!("received part of {} bytes does not fit its {}-byte destination", src.len(), buf.len_bytes()),
            },
        ));
    }
    let addr = buf.buf_ptr() as usize;
    maybe_detach(py, src.len() >= GIL_RELEASE_BYTES, || {
        // SAFETY: `buf` keeps the destination's buffer exported (alive, not resized) and
        // it is writable, contiguous and exactly `src.len()` bytes (checked above).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), addr as *mut u8, src.len()) };
    });
    drop(buf);
    Ok(())
}

fn corrupt(py: Python<'_>, what: String) -> PyErr {
    to_py(py, Error::Corrupt { path: String::new(), what })
}

fn decode<'py>(py: Python<'py>, msg: &Message<'_>) -> PyResult<Bound<'py, PyAny>> {
    let payload: &[u8] = msg;
    match msg.tag() {
        TAG_BYTES => new_bytes(py, payload),
        TAG_NDARRAY => {
            let parts = parse_multipart(payload).map_err(|w| corrupt(py, w))?;
            let [(mo, ml), (doff, dl)] = parts[..] else {
                return Err(corrupt(py, format!("ndarray record has {} parts, expected 2", parts.len())));
            };
            let meta = PyBytes::new(py, &payload[mo..mo + ml]);
            let arr = codec_fn!(py, "alloc_array")?.call1((meta,))?;
            copy_into(py, &arr, &payload[doff..doff + dl])?;
            Ok(arr)
        }
        TAG_PICKLE => {
            let parts = parse_multipart(payload).map_err(|w| corrupt(py, w))?;
            let (po, pl) = parts[0];
            let data = new_bytes(py, &payload[po..po + pl])?;
            let bufs = PyList::empty(py);
            for &(o, l) in &parts[1..] {
                let b = codec_fn!(py, "alloc_buffer")?.call1((l,))?;
                copy_into(py, &b, &payload[o..o + l])?;
                bufs.append(b)?;
            }
            codec_fn!(py, "unpickle")?.call1((data, bufs))
        }
        other => Err(corrupt(py, format!("unknown record tag {other}"))),
    }
}

impl PyReceiver {
    fn lock(&self, py: Python<'_>) -> PyResult<MutexGuard<'_, Receiver>> {
        lock(py, &self.inner, "Receiver")
    }

    fn recv_obj(&self, py: Python<'_>, timeout: Option<f64>, block: bool, raw: bool) -> PyResult<Py<PyAny>> {
        let deadline = deadline(timeout)?;
        let mut guard = self.lock(py)?;
        let receiver: &mut Receiver = &mut guard;
        loop {
            match receiver.try_peek() {
                Ok(msg) => {
                    let out = if raw { new_bytes(py, &msg) } else { decode(py, &msg) };
                    drop(msg);
                    return out.map(Bound::unbind);
                }
                Err(Error::Empty) if block => {}
                Err(e) => return Err(to_py(py, e)),
            }
            let Some(slice) = next_slice(deadline) else { return Err(to_py(py, Error::Timeout)) };
            let ready = py.detach(|| receiver.poll(Some(slice))).py_err(py)?;
            if !ready {
                py.check_signals()?;
            }
        }
    }
}

#[pymethods]
impl PyReceiver {
    /// Create channel `name` (capacity in bytes, a power of two) and attach as receiver.
    #[staticmethod]
    #[pyo3(signature = (name, capacity=DEFAULT_CAPACITY))]
    fn create(py: Python<'_>, name: &str, capacity: usize) -> PyResult<Self> {
        let r = py.detach(|| Receiver::create(name, capacity)).py_err(py)?;
        Ok(PyReceiver { inner: Mutex::new(r) })
    }

    /// Open existing channel `name` as its receiver.
    #[staticmethod]
    fn open(py: Python<'_>, name: &str) -> PyResult<Self> {
        let r = py.detach(|| Receiver::open(name)).py_err(py)?;
        Ok(PyReceiver { inner: Mutex::new(r) })
    }

    /// Adopt descriptor `fd` (ownership passes to the Receiver). Used by unpickling.
    #[staticmethod]
    #[pyo3(signature = (fd, name=None))]
    fn _from_fd(py: Python<'_>, fd: i32, name: Option<String>) -> PyResult<Self> {
        let fd = owned_fd(fd)?;
        let r = py.detach(|| Receiver::from_fd(fd, name)).py_err(py)?;
        Ok(PyReceiver { inner: Mutex::new(r) })
    }

    /// Receive the next object, waiting at most `timeout` seconds (None: forever).
    #[pyo3(signature = (timeout=None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        self.recv_obj(py, timeout, true, false)
    }

    /// Receive without waiting; raises `shmplane.Empty` if nothing is there.
    fn try_recv(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.recv_obj(py, None, false, false)
    }

    /// Receive the next record's raw payload as bytes, whatever was sent.
    #[pyo3(signature = (timeout=None))]
    fn recv_bytes(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        self.recv_obj(py, timeout, true, true)
    }

    /// True if a message is ready, waiting at most `timeout` seconds (None: forever).
    #[pyo3(signature = (timeout=0.0))]
    fn poll(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let deadline = deadline(timeout)?;
        let mut guard = self.lock(py)?;
        let receiver: &mut Receiver = &mut guard;
        loop {
            let slice = next_slice(deadline).unwrap_or(Duration::ZERO);
            let ready = if slice.is_zero() {
                receiver.poll(Some(slice))
            } else {
                py.detach(|| receiver.poll(Some(slice)))
            };
            if ready.py_err(py)? {
                return Ok(true);
            }
            if slice.is_zero() {
                return Ok(false);
            }
            py.check_signals()?;
        }
    }

    /// Close this end (idempotent).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let mut guard = self.lock(py)?;
        let endpoint = &mut *guard;
        py.detach(|| endpoint.close());
        Ok(())
    }

    /// The descriptor holding this end's role.
    fn fileno(&self, py: Python<'_>) -> PyResult<i32> {
        self.lock(py)?.fd().ok_or_else(|| to_py(py, Error::Closed))
    }

    /// The channel's name.
    #[getter]
    fn name(&self, py: Python<'_>) -> PyResult<Option<String>> {
        Ok(self.lock(py)?.name().map(str::to_owned))
    }

    /// The segment file path.
    #[getter]
    fn path(&self, py: Python<'_>) -> PyResult<Option<String>> {
        Ok(self.lock(py)?.path().map(str::to_owned))
    }

    /// Ring capacity in bytes (0 once closed).
    #[getter]
    fn capacity(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.lock(py)?.capacity())
    }

    /// True once closed.
    #[getter]
    fn closed(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.lock(py)?.is_closed())
    }

    /// Wait policy: 'spin', 'block' or 'adaptive(spin_us=...)'.
    #[getter]
    fn policy(&self, py: Python<'_>) -> PyResult<String> {
        Ok(policy_name(self.lock(py)?.wait_policy()))
    }

    /// Set the wait policy ('spin', 'adaptive' or 'block'; spin_us for adaptive).
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

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Iterate over received objects until the sender closes.
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match self.recv_obj(py, None, true, false) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyEOFError>(py) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("shmplane._handles")?.call_method1("reduce_endpoint", (slf, "receiver"))
    }

    fn __repr__(&self) -> String {
        match self.inner.try_lock() {
            Ok(r) if r.is_closed() => "<shmplane.Receiver closed>".into(),
            Ok(r) => format!(
                "<shmplane.Receiver name={:?} capacity={} policy={}>",
                r.name().unwrap_or(""),
                r.capacity(),
                policy_name(r.wait_policy())
            ),
            Err(_) => "<shmplane.Receiver busy>".into(),
        }
    }
}

impl PySender {
    pub(crate) fn wrap(s: Sender) -> Self {
        PySender { inner: Mutex::new(s) }
    }
}

impl PyReceiver {
    pub(crate) fn wrap(r: Receiver) -> Self {
        PyReceiver { inner: Mutex::new(r) }
    }
}
