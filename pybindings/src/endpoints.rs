//! `Sender` and `Receiver` Python classes: thin newtypes over `shmplane`'s.

use crate::codec::{
    parse_multipart, Layout, Part, Scatter, CHUNK, CHUNKED, CHUNK_THRESHOLD, TAG_BYTES, TAG_CONTINUATION, TAG_NDARRAY,
    TAG_PICKLE,
};
use crate::error::{to_py, IntoPyResult};
use crate::wait::{deadline, maybe_detach, next_slice, GIL_RELEASE_BYTES};
use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyTuple};
use shmplane::{Error, Receiver, Sender, WaitPolicy};
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

/// A capacity argument in bytes: negative values are an `InvalidArgumentError`, not an
/// `OverflowError` from the integer conversion.
pub(crate) fn capacity_arg(py: Python<'_>, capacity: i64) -> PyResult<usize> {
    usize::try_from(capacity).map_err(|_| {
        to_py(py, Error::InvalidArgument(format!("capacity {capacity} bytes must be a power of two >= 4096")))
    })
}

/// Wrap a new endpoint and register it with `shmplane._handles.track`, which closes it
/// when its process exits (multiprocessing children end with `os._exit`, skipping
/// destructors: without this the peer would see a clean exit as a death).
pub(crate) fn tracked<T: pyo3::PyClass + Into<pyo3::PyClassInitializer<T>>>(py: Python<'_>, value: T) -> PyResult<Bound<'_, T>> {
    let obj = Bound::new(py, value)?;
    py.import("shmplane._handles")?.call_method1("track", (&obj,))?;
    Ok(obj)
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

/// Publish one record of `len` bytes with `tag`, filled by `fill`, waiting for room
/// in GIL-free slices with signal checks (`deadline = None`: no limit).
fn put_record(
    py: Python<'_>,
    sender: &mut Sender,
    tag: u32,
    len: usize,
    deadline: Option<std::time::Instant>,
    block: bool,
    fill: impl Fn(&mut [u8]) + Sync,
) -> PyResult<()> {
    let big = len >= GIL_RELEASE_BYTES;
    loop {
        let attempt = |s: &mut Sender| -> Result<bool, Error> {
            let mut loan = match s.try_loan(len) {
                Ok(loan) => loan,
                Err(Error::Full) => return Ok(false),
                Err(e) => return Err(e),
            };
            loan.set_tag(tag)?;
            fill(loan.as_mut_slice());
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
        if !py.detach(|| sender.poll_space(len, Some(slice))).py_err(py)? {
            py.check_signals()?;
        }
    }
}

/// The `#[pymethods]` block of an endpoint class: its own methods, then the ones
/// Sender and Receiver share (close, fileno, name, path, capacity, closed, policy,
/// context manager, pickling, repr).
macro_rules! endpoint_pymethods {
    ($ty:ident, $kind:literal, $class:literal, { $($own:tt)* }) => {
        #[pymethods]
        impl $ty {
            $($own)*

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

            fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
                slf.py().import("shmplane._handles")?.call_method1("reduce_endpoint", (slf, $kind))
            }

            fn __repr__(&self) -> String {
                match self.inner.try_lock() {
                    Ok(e) if e.is_closed() => concat!("<shmplane.", $class, " closed>").into(),
                    Ok(e) => format!(
                        concat!("<shmplane.", $class, " name={:?} capacity={} policy={}>"),
                        e.name().unwrap_or(""),
                        e.capacity(),
                        policy_name(e.wait_policy())
                    ),
                    Err(_) => concat!("<shmplane.", $class, " busy>").into(),
                }
            }
        }
    };
}

/// The sending end of a channel. See `shmplane.channel`.
#[pyclass(module = "shmplane._shmplane", name = "Sender", frozen, weakref)]
pub struct PySender {
    inner: Mutex<Sender>,
}

impl PySender {
    fn lock(&self, py: Python<'_>) -> PyResult<MutexGuard<'_, Sender>> {
        lock(py, &self.inner, "Sender")
    }

    /// Send a logical payload with `tag`: one record, or a chunked run of records if it
    /// is large (see `codec`). `timeout` bounds the wait for the first record's room;
    /// once a message has started, its remaining chunks follow as the receiver drains.
    fn send_layout(&self, py: Python<'_>, tag: u32, layout: &Layout, timeout: Option<f64>, block: bool) -> PyResult<()> {
        let deadline = deadline(timeout)?;
        let mut guard = self.lock(py)?;
        let sender: &mut Sender = &mut guard;
        let total = layout.total();
        let max = sender.max_message_len().py_err(py)?;
        // Chunk only what would fit whole: "too large" keeps its meaning.
        if total <= CHUNK_THRESHOLD || total.saturating_add(8) > max {
            return put_record(py, sender, tag, total, deadline, block, |dst| {
                // SAFETY: the caller holds the parts' buffers for this call.
                unsafe { layout.gather(0, dst) }
            });
        }
        let chunk = CHUNK.min(max / 4);
        let first = chunk - 8;
        put_record(py, sender, tag | CHUNKED, chunk, deadline, block, |dst| {
            dst[..8].copy_from_slice(&(total as u64).to_le_bytes());
            // SAFETY: as above.
            unsafe { layout.gather(0, &mut dst[8..]) };
        })?;
        let mut off = first;
        while off < total {
            let n = chunk.min(total - off);
            put_record(py, sender, TAG_CONTINUATION, n, None, true, |dst| {
                // SAFETY: as above.
                unsafe { layout.gather(off, dst) }
            })?;
            off += n;
        }
        Ok(())
    }

    fn send_obj(&self, py: Python<'_>, obj: &Bound<'_, PyAny>, timeout: Option<f64>, block: bool) -> PyResult<()> {
        if let Ok(b) = obj.cast_exact::<PyBytes>() {
            let data = b.as_bytes();
            let part = Part { addr: data.as_ptr() as usize, len: data.len() };
            return self.send_layout(py, TAG_BYTES, &Layout::raw(&[part]), timeout, block);
        }
        let encoded = codec_fn!(py, "encode")?.call1((obj,))?;
        let (tag, objs): (u32, Vec<Bound<'_, PyAny>>) = encoded.extract()?;
        let (_held, parts) = buffers(&objs)?;
        let layout = if tag == TAG_BYTES {
            Layout::raw(&parts)
        } else {
            Layout::multipart(&parts).ok_or_else(|| PyValueError::new_err("message too large"))?
        };
        self.send_layout(py, tag, &layout, timeout, block)
    }
}

endpoint_pymethods!(PySender, "sender", "Sender", {
    /// Create channel `name` (capacity in bytes, a power of two) and attach as sender.
    #[staticmethod]
    #[pyo3(signature = (name, capacity=DEFAULT_CAPACITY as i64))]
    fn create<'py>(py: Python<'py>, name: &str, capacity: i64) -> PyResult<Bound<'py, Self>> {
        let capacity = capacity_arg(py, capacity)?;
        let s = py.detach(|| Sender::create(name, capacity)).py_err(py)?;
        tracked(py, PySender { inner: Mutex::new(s) })
    }

    /// Open existing channel `name` as its sender.
    #[staticmethod]
    fn open<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, Self>> {
        let s = py.detach(|| Sender::open(name)).py_err(py)?;
        tracked(py, PySender { inner: Mutex::new(s) })
    }

    /// Adopt descriptor `fd` (ownership passes to the Sender). Used by unpickling.
    #[staticmethod]
    #[pyo3(signature = (fd, name=None))]
    fn _from_fd<'py>(py: Python<'py>, fd: i32, name: Option<String>) -> PyResult<Bound<'py, Self>> {
        let fd = owned_fd(fd)?;
        let s = py.detach(|| Sender::from_fd(fd, name)).py_err(py)?;
        tracked(py, PySender { inner: Mutex::new(s) })
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
        self.send_layout(py, TAG_BYTES, &Layout::raw(&parts), timeout, true)
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

    /// Largest message payload in bytes.
    #[getter]
    fn max_message_size(&self, py: Python<'_>) -> PyResult<usize> {
        self.lock(py)?.max_message_len().py_err(py)
    }
});

/// The receiving end of a channel. See `shmplane.channel`.
#[pyclass(module = "shmplane._shmplane", name = "Receiver", frozen, weakref)]
pub struct PyReceiver {
    inner: Mutex<RecvState>,
}

/// A new `bytes` of `len` uninitialised bytes and the address of its buffer. It must be
/// filled before any Python code sees it. (`PyBytes::new_with` would zero it first: a
/// second pass over 8 MB.)
fn uninit_bytes(py: Python<'_>, len: usize) -> PyResult<(Bound<'_, PyAny>, usize)> {
    let n = pyo3::ffi::Py_ssize_t::try_from(len).map_err(|_| PyValueError::new_err("message too large"))?;
    // SAFETY: a NULL source asks CPython for an uninitialised bytes object of `n` bytes.
    let raw = unsafe { pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), n) };
    // SAFETY: `raw` is a new reference, or NULL with an exception set.
    let obj = unsafe { Bound::from_owned_ptr_or_err(py, raw)? };
    // SAFETY: `raw` is a bytes object; its buffer holds `n` bytes.
    let addr = unsafe { pyo3::ffi::PyBytes_AsString(raw) } as usize;
    Ok((obj, addr))
}

fn corrupt(py: Python<'_>, path: &str, what: String) -> PyErr {
    to_py(py, Error::Corrupt { path: path.to_owned(), what: format!("received message: {what}") })
}

/// A message being received: its destination objects and where its bytes go.
struct Incoming<'py> {
    result: Bound<'py, PyAny>,
    /// `Some((pickle stream, out-of-band buffers))` for a pickled message.
    unpickle: Option<Bound<'py, PyList>>,
    scatter: Scatter,
    /// Destination buffers exported for the copies; released before returning.
    exports: Vec<PyUntypedBuffer>,
    total: usize,
    received: usize,
    /// The channel's segment file, for error messages.
    path: String,
}

impl<'py> Incoming<'py> {
    /// Allocate the destinations of a message from its first record.
    fn begin(py: Python<'py>, tag: u32, payload: &[u8], raw: bool, path: &str) -> PyResult<(Incoming<'py>, usize)> {
        let (total, skip) = if tag & CHUNKED != 0 {
            let Some(head) = payload.get(..8) else {
                return Err(corrupt(py, path, "chunked message without its length".into()));
            };
            let total = u64::from_le_bytes(head.try_into().expect("8 bytes"));
            let total = usize::try_from(total)
                .ok()
                .filter(|&t| t >= payload.len() - 8 && t <= isize::MAX as usize)
                .ok_or_else(|| corrupt(py, path, format!("chunked message claims {total} bytes")))?;
            (total, 8)
        } else {
            (payload.len(), 0)
        };
        let data = &payload[skip..];
        let mut inc = Incoming {
            result: py.None().into_bound(py),
            unpickle: None,
            scatter: Scatter::default(),
            exports: Vec::new(),
            total,
            received: 0,
            path: path.to_owned(),
        };
        let base = if raw { TAG_BYTES } else { tag & !CHUNKED };
        match base {
            TAG_BYTES => {
                let (obj, addr) = uninit_bytes(py, total)?;
                inc.scatter.push(0, total, addr);
                inc.result = obj;
            }
            TAG_NDARRAY => {
                let parts = parse_multipart(data, total).map_err(|w| corrupt(py, path, w))?;
                let [(mo, ml), (doff, dl)] = parts[..] else {
                    return Err(corrupt(py, path, format!("ndarray message has {} parts, expected 2", parts.len())));
                };
                let meta = data.get(mo..mo + ml).ok_or_else(|| corrupt(py, path, "ndarray metadata not in the first record".into()))?;
                let (arr, flat): (Bound<'py, PyAny>, Bound<'py, PyAny>) =
                    codec_fn!(py, "alloc_array")?.call1((PyBytes::new(py, meta),))?.extract()?;
                inc.target(py, &flat, doff, dl)?;
                inc.result = arr;
            }
            TAG_PICKLE => {
                let parts = parse_multipart(data, total).map_err(|w| corrupt(py, path, w))?;
                let (po, pl) = parts[0];
                let (stream, addr) = uninit_bytes(py, pl)?;
                inc.scatter.push(po, pl, addr);
                let bufs = PyList::empty(py);
                for &(o, l) in &parts[1..] {
                    let b = codec_fn!(py, "alloc_buffer")?.call1((l,))?;
                    inc.target(py, &b, o, l)?;
                    bufs.append(b)?;
                }
                inc.result = stream;
                inc.unpickle = Some(bufs);
            }
            other => return Err(corrupt(py, path, format!("unknown record tag {other:#x}"))),
        }
        Ok((inc, skip))
    }

    /// Route logical bytes `start..start+len` into the writable buffer of `dst`.
    fn target(&mut self, py: Python<'_>, dst: &Bound<'py, PyAny>, start: usize, len: usize) -> PyResult<()> {
        let buf = PyUntypedBuffer::get(dst)?;
        if buf.readonly() || !buf.is_c_contiguous() || buf.len_bytes() != len {
            return Err(corrupt(py, &self.path, format!("a {len}-byte part does not fit its {}-byte destination", buf.len_bytes())));
        }
        self.scatter.push(start, len, buf.buf_ptr() as usize);
        self.exports.push(buf);
        Ok(())
    }

    /// Copy the next `data` of the message into place (GIL released for big copies).
    fn feed(&mut self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        if data.len() > self.total - self.received {
            return Err(corrupt(py, &self.path, format!("message overruns its announced {} bytes", self.total)));
        }
        let (scatter, at) = (&self.scatter, self.received);
        // SAFETY: the destinations are new objects (uninitialised bytes no Python code has
        // seen, or buffers exported in `exports`, writable and exactly sized).
        maybe_detach(py, data.len() >= GIL_RELEASE_BYTES, || unsafe { scatter.scatter(at, data) });
        self.received += data.len();
        Ok(())
    }

    fn finish(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        for buf in self.exports {
            buf.release(py);
        }
        match self.unpickle {
            None => Ok(self.result),
            Some(bufs) => codec_fn!(py, "unpickle")?.call1((self.result, bufs)),
        }
    }
}

/// A receiver plus what it remembers between calls.
pub struct RecvState {
    rx: Receiver,
    /// A chunked message was abandoned half-way (Ctrl-C, error): drop its remaining
    /// continuation records before the next message.
    discard: bool,
    /// The segment file, for error messages.
    path: String,
}

impl RecvState {
    fn new(rx: Receiver) -> RecvState {
        let path = rx.path().unwrap_or_default().to_owned();
        RecvState { rx, discard: false, path }
    }
}

impl std::ops::Deref for RecvState {
    type Target = Receiver;
    fn deref(&self) -> &Receiver {
        &self.rx
    }
}

impl std::ops::DerefMut for RecvState {
    fn deref_mut(&mut self) -> &mut Receiver {
        &mut self.rx
    }
}

impl PyReceiver {
    fn lock(&self, py: Python<'_>) -> PyResult<MutexGuard<'_, RecvState>> {
        lock(py, &self.inner, "Receiver")
    }

    fn recv_obj(&self, py: Python<'_>, timeout: Option<f64>, block: bool, raw: bool) -> PyResult<Py<PyAny>> {
        let deadline = deadline(timeout)?;
        let mut guard = self.lock(py)?;
        let state: &mut RecvState = &mut guard;
        loop {
            let first = match state.rx.try_peek() {
                Ok(msg) if state.discard && msg.tag() == TAG_CONTINUATION => continue,
                Ok(msg) if msg.tag() == TAG_CONTINUATION => {
                    drop(msg);
                    return Err(corrupt(py, &state.path, "a continuation record without its message".into()));
                }
                Ok(msg) => {
                    state.discard = false;
                    let (mut inc, skip) = Incoming::begin(py, msg.tag(), &msg, raw, &state.path)?;
                    inc.feed(py, &msg[skip..])?;
                    Some(inc)
                }
                Err(Error::Empty) if block => None,
                Err(e) => return Err(to_py(py, e)),
            };
            if let Some(mut inc) = first {
                if inc.received < inc.total {
                    state.discard = true;
                    receive_rest(py, &mut state.rx, &mut inc)?;
                    state.discard = false;
                }
                return inc.finish(py).map(Bound::unbind);
            }
            let Some(slice) = next_slice(deadline) else { return Err(to_py(py, Error::Timeout)) };
            if !py.detach(|| state.rx.poll(Some(slice))).py_err(py)? {
                py.check_signals()?;
            }
        }
    }
}

/// Receive the continuation records of a chunked message. The sender is committed to
/// them, so there is no deadline; Ctrl-C and a dead or closed sender still end it.
fn receive_rest(py: Python<'_>, rx: &mut Receiver, inc: &mut Incoming<'_>) -> PyResult<()> {
    while inc.received < inc.total {
        let got = match rx.try_peek() {
            Ok(msg) if msg.tag() == TAG_CONTINUATION => {
                inc.feed(py, &msg)?;
                true
            }
            Ok(_) => {
                return Err(to_py(py, Error::Truncated { received: inc.received, total: inc.total }));
            }
            Err(Error::Empty) => false,
            Err(e) => return Err(to_py(py, e)),
        };
        if !got && !py.detach(|| rx.poll(Some(crate::wait::SIGNAL_SLICE))).py_err(py)? {
            py.check_signals()?;
        }
    }
    Ok(())
}

endpoint_pymethods!(PyReceiver, "receiver", "Receiver", {
    /// Create channel `name` (capacity in bytes, a power of two) and attach as receiver.
    #[staticmethod]
    #[pyo3(signature = (name, capacity=DEFAULT_CAPACITY as i64))]
    fn create<'py>(py: Python<'py>, name: &str, capacity: i64) -> PyResult<Bound<'py, Self>> {
        let capacity = capacity_arg(py, capacity)?;
        let r = py.detach(|| Receiver::create(name, capacity)).py_err(py)?;
        tracked(py, PyReceiver { inner: Mutex::new(RecvState::new(r)) })
    }

    /// Open existing channel `name` as its receiver.
    #[staticmethod]
    fn open<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, Self>> {
        let r = py.detach(|| Receiver::open(name)).py_err(py)?;
        tracked(py, PyReceiver { inner: Mutex::new(RecvState::new(r)) })
    }

    /// Adopt descriptor `fd` (ownership passes to the Receiver). Used by unpickling.
    #[staticmethod]
    #[pyo3(signature = (fd, name=None))]
    fn _from_fd<'py>(py: Python<'py>, fd: i32, name: Option<String>) -> PyResult<Bound<'py, Self>> {
        let fd = owned_fd(fd)?;
        let r = py.detach(|| Receiver::from_fd(fd, name)).py_err(py)?;
        tracked(py, PyReceiver { inner: Mutex::new(RecvState::new(r)) })
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
});

impl PySender {
    pub(crate) fn wrap(s: Sender) -> Self {
        PySender { inner: Mutex::new(s) }
    }
}

impl PyReceiver {
    pub(crate) fn wrap(r: Receiver) -> Self {
        PyReceiver { inner: Mutex::new(RecvState::new(r)) }
    }
}
