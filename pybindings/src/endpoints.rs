//! `Sender` and `Receiver` Python classes: thin newtypes over `shmplane`'s.
//!
//! The message format (bytes, arrays, pickles, chunking, truncation) lives in the
//! `shmplane` crate (`frame`); this file turns Python objects into its `Outgoing`
//! messages and its received heads into Python objects. Small messages go with the GIL
//! held and no waiting; anything that waits or copies a lot runs without the GIL in
//! the crate's wait loop, which checks for signals every slice (`crate::wait`).

use crate::error::{exception, to_py, IntoPyResult};
use crate::wait::{blocking, blocking_checked, lock_for_close, CloseFlag, Timeout, GIL_RELEASE_BYTES};
use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyMemoryError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyTuple};
use shmplane::frame::{self, ArrayMeta, Kind, Order, OutBuf, Outgoing, TAG_ARRAY, TAG_BYTES, TAG_PICKLE};
use shmplane::{Error, Incoming, Receiver, Sender, Wait, WaitPolicy};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

/// Default ring capacity of `shmplane.channel()`.
pub const DEFAULT_CAPACITY: usize = shmplane::DEFAULT_CAPACITY;

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
        "adaptive" if (0.0..=1e9).contains(&spin_us) => {
            Ok(WaitPolicy::Adaptive { spin: Duration::from_secs_f64(spin_us * 1e-6) })
        }
        _ => Err(PyValueError::new_err(format!(
            "policy must be 'spin', 'adaptive' or 'block' (0 <= spin_us <= 1e9), got {policy:?} (spin_us={spin_us})"
        ))),
    }
}

pub(crate) fn policy_name(p: WaitPolicy) -> String {
    match p {
        WaitPolicy::Spin => "spin".into(),
        WaitPolicy::Block => "block".into(),
        WaitPolicy::Adaptive { spin } => format!("adaptive(spin_us={})", spin.as_secs_f64() * 1e6),
    }
}

pub(crate) fn lock<'a, T>(py: Python<'_>, m: &'a Mutex<T>, what: &str) -> PyResult<MutexGuard<'a, T>> {
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
pub(crate) fn owned_fd(fd: i32) -> PyResult<OwnedFd> {
    if fd < 0 {
        return Err(PyValueError::new_err(format!("invalid descriptor {fd}")));
    }
    // SAFETY: the Python caller (shmplane._handles) passes a descriptor it owns and gives
    // up (DupFd.detach()); it is closed exactly once, by the OwnedFd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Hold the buffers of `objs` (buffer-protocol objects, C-contiguous).
fn buffers(objs: &[Bound<'_, PyAny>]) -> PyResult<Vec<PyUntypedBuffer>> {
    objs.iter()
        .map(|o| {
            let buf = PyUntypedBuffer::get(o)?;
            if !buf.is_c_contiguous() {
                return Err(PyTypeError::new_err("buffer is not C-contiguous"));
            }
            Ok(buf)
        })
        .collect()
}

/// The bytes of a held buffer.
fn bytes_of(buf: &PyUntypedBuffer) -> &[u8] {
    if buf.len_bytes() == 0 {
        return &[];
    }
    // SAFETY: the buffer is exported (held) for as long as the borrow of `buf`, and is
    // C-contiguous (checked in `buffers`), so its `len_bytes` bytes are readable. A
    // Python thread that writes the object meanwhile races with the copy, as with any
    // extension that reads a buffer with the GIL released (numpy's own copies too): the
    // bytes sent are then some mix of old and new, which the sender asked for.
    unsafe { std::slice::from_raw_parts(buf.buf_ptr() as *const u8, buf.len_bytes()) }
}

/// Most parts (pickle stream plus out-of-band buffers) whose multipart header, with
/// the chunk header in front, fits one record of `max_record` bytes.
fn max_parts(max_record: usize) -> usize {
    let room = (max_record.saturating_sub(frame::chunk_header_len()) / frame::PART_ALIGN) * frame::PART_ALIGN;
    (room.saturating_sub(8) / 8).min(frame::MAX_PARTS)
}

/// Send `msg`: with the GIL and no wait if it goes as one small record and there is
/// room, else without the GIL in the crate's wait loop (signals checked every slice).
fn send_message(py: Python<'_>, tx: &mut Sender, msg: &Outgoing<'_>, timeout: &Timeout, closing: &CloseFlag) -> PyResult<()> {
    let one_record = msg.total() <= tx.max_message_len().py_err(py)? && msg.total() <= frame::CHUNK_THRESHOLD;
    if one_record && msg.total() < GIL_RELEASE_BYTES {
        match tx.send_message(msg, Wait::no_wait()) {
            Ok(()) => return Ok(()),
            Err(Error::Full) if timeout.blocks() => {}
            Err(e) => return Err(to_py(py, e)),
        }
    }
    blocking_checked(py, timeout, |py| closing.check(py), |wait| tx.send_message(msg, wait))
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
            /// Close this end (idempotent). A call of another thread blocked on this
            /// end ends with ClosedError within one wait slice (50 ms).
            fn close(&self, py: Python<'_>) -> PyResult<()> {
                let Some(mut guard) = lock_for_close(py, &self.inner, &self.closing) else { return Ok(()) };
                let endpoint = &mut *guard;
                py.detach(|| endpoint.close());
                Ok(())
            }

            /// The descriptor of the segment that holds this end's role (what pickling
            /// duplicates into a child). Not for waiting: use ``fileno()``.
            fn _segment_fd(&self, py: Python<'_>) -> PyResult<i32> {
                self.lock(py)?.fd().ok_or_else(|| to_py(py, Error::Closed))
            }

            /// The descriptor of this end's write end of the peer's doorbell (pickling
            /// duplicates it with the segment's), or None.
            fn _doorbell_fd(&self, py: Python<'_>) -> PyResult<Option<i32>> {
                Ok(self.lock(py)?.doorbell_fd())
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

/// What `shmplane._codec.encode` returns: the tag, the buffers to copy, and an array's
/// `(dtype.str, shape, order)`.
type Encoded<'py> = (u32, Vec<Bound<'py, PyAny>>, Option<(String, Vec<usize>, String)>);

/// The sending end of a channel. See `shmplane.channel`.
#[pyclass(module = "shmplane._shmplane", name = "Sender", frozen, weakref, subclass)]
pub struct PySender {
    pub(crate) inner: Mutex<Sender>,
    pub(crate) closing: CloseFlag,
}

impl PySender {
    pub(crate) fn lock(&self, py: Python<'_>) -> PyResult<MutexGuard<'_, Sender>> {
        lock(py, &self.inner, "Sender")
    }

    fn send_obj(&self, py: Python<'_>, obj: &Bound<'_, PyAny>, timeout: Option<f64>, block: bool) -> PyResult<()> {
        self.send_within(py, obj, &Timeout::new(timeout, block)?)
    }

    /// Send `obj`, waiting for room until `timeout`'s deadline.
    fn send_within(&self, py: Python<'_>, obj: &Bound<'_, PyAny>, timeout: &Timeout) -> PyResult<()> {
        if let Ok(b) = obj.cast_exact::<PyBytes>() {
            let mut guard = self.lock(py)?;
            return send_message(py, &mut guard, &Outgoing::bytes(b.as_bytes()), timeout, &self.closing);
        }
        // A large list of floats: encoded straight into the ring, with the GIL held
        // (a consistent snapshot), if it all fits now; else encoded first, as below.
        let streamed = crate::numbers::with_streamed(obj, |msg| {
            let mut guard = self.lock(py)?;
            match guard.send_message(msg, Wait::no_wait()) {
                Ok(()) => Ok(true),
                Err(Error::Full) => Ok(false),
                Err(e) => Err(to_py(py, e)),
            }
        });
        if let Some(sent) = streamed {
            if sent? {
                return Ok(());
            }
        }
        let max_record = self.lock(py)?.max_message_len().unwrap_or(0);
        with_outgoing(py, obj, max_record, |msg| {
            let mut guard = self.lock(py)?;
            send_message(py, &mut guard, &msg, timeout, &self.closing)
        })
    }
}

/// `e` with attribute `name` set to `value` (how many messages a batch call handled
/// before it failed: `sent`, or the list `received`).
pub(crate) fn with_attr<'py>(py: Python<'py>, e: PyErr, name: &str, value: impl IntoPyObject<'py>) -> PyErr {
    // An exception that refuses the attribute is raised as it is.
    let _ = e.value(py).setattr(name, value);
    e
}

/// A batch: its `first` message (received waiting), then up to `max` messages in all,
/// each from `next` (`None` once nothing more is there now). Every error carries the
/// messages before it as the exception's `received` (`[]` for the first one's), so
/// that none is lost: a message of `next` that fails to decode, or a report of
/// [`batch_end`].
pub(crate) fn collect_batch<'py>(
    py: Python<'py>,
    max: usize,
    first: PyResult<Py<PyAny>>,
    mut next: impl FnMut() -> Option<PyResult<Py<PyAny>>>,
) -> PyResult<Bound<'py, PyList>> {
    let first = first.map_err(|e| no_batch(py, e))?;
    let out = PyList::new(py, [first])?;
    while out.len() < max {
        match next() {
            None => break,
            Some(Ok(obj)) => out.append(obj)?,
            Some(Err(e)) => return Err(with_attr(py, e, "received", &out)),
        }
    }
    Ok(out)
}

/// What a batch makes of `begin`'s error `e` after its first message: `None` for an
/// ending that stays (nothing more there now, the end closed, the peer closed or
/// died), which the next receive raises; else the error, to be raised now with the
/// batch so far. A lossy subscriber's lag and a malformed message (or a mailbox lane
/// found poisoned) are reported once, by the `begin` that moved past them: a batch
/// that stopped there silently would lose the report.
pub(crate) fn batch_end(py: Python<'_>, e: Error) -> Option<PyResult<Py<PyAny>>> {
    match e {
        Error::Empty | Error::Disconnected { .. } | Error::PeerDead { .. } | Error::Closed => None,
        e => Some(Err(to_py(py, e))),
    }
}

/// `e`, raised by a batch receive before it took anything: with `received` = `[]`.
pub(crate) fn no_batch(py: Python<'_>, e: PyErr) -> PyErr {
    with_attr(py, e, "received", PyList::empty(py))
}

/// `max_messages` of a batch receive: at least 1.
pub(crate) fn batch_size(max_messages: i64) -> PyResult<usize> {
    usize::try_from(max_messages)
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| PyValueError::new_err(format!("max_messages must be at least 1, got {max_messages}")))
}

/// Encode `obj` (bytes fast, else through `shmplane._codec.encode`: an ndarray, a
/// bytes-like object, or a pickle-5 stream with its out-of-band buffers) and hand the
/// message to `f` while its buffers are held. `max_record`: the largest record of the
/// ring it goes to (bounds how many out-of-band buffers one message may describe).
///
/// # Errors
/// The codec's errors (unpicklable objects), an invalid array description, `f`'s.
pub(crate) fn with_outgoing<R>(py: Python<'_>, obj: &Bound<'_, PyAny>, max_record: usize, f: impl FnOnce(Outgoing<'_>) -> PyResult<R>) -> PyResult<R> {
    if let Ok(b) = obj.cast_exact::<PyBytes>() {
        return f(Outgoing::bytes(b.as_bytes()));
    }
    let bad = |what: String| to_py(py, Error::InvalidArgument(what));
    let mut f = Some(f);
    let numbers = crate::numbers::with_encoded(obj, |payload| {
        let f = f.take().expect("called once");
        f(Outgoing::numbers(payload).map_err(bad)?)
    });
    if let Some(sent) = numbers {
        return sent;
    }
    let f = f.expect("not called: not a list of numbers");
    let encoded = codec_fn!(py, "encode")?.call1((obj, max_parts(max_record)))?;
    let (tag, objs, meta): Encoded<'_> = encoded.extract()?;
    let held = buffers(&objs)?;
    let parts: Vec<&[u8]> = held.iter().map(bytes_of).collect();
    let msg = match (tag, &parts[..], meta) {
        (TAG_BYTES, [data], None) => Outgoing::bytes(data),
        (TAG_ARRAY, [data], Some((descr, shape, order))) => {
            let order = if order == "F" { Order::F } else { Order::C };
            let meta = ArrayMeta::new(&descr, &shape, order).map_err(bad)?;
            Outgoing::array(&meta, data).map_err(bad)?
        }
        (TAG_PICKLE, [stream, buffers @ ..], None) => Outgoing::pickle(stream, buffers).map_err(bad)?,
        _ => return Err(PyTypeError::new_err("shmplane._codec.encode returned an unknown encoding")),
    };
    f(msg)
}

endpoint_pymethods!(PySender, "sender", "Sender", {
    /// Lend ring space for one array message written in place (zero-copy send): use as
    /// ``with tx.loan(shape, dtype) as arr:`` (see the stubs).
    #[pyo3(signature = (shape, dtype=None, order="C", timeout=None))]
    fn loan(slf: &Bound<'_, Self>, shape: &Bound<'_, PyAny>, dtype: Option<&Bound<'_, PyAny>>, order: &str, timeout: Option<f64>) -> PyResult<Py<crate::loan::PyLoan>> {
        let shape: Vec<usize> = match shape.extract::<usize>() {
            Ok(n) => vec![n],
            Err(_) => shape.extract()?,
        };
        let float64 = pyo3::types::PyString::new(slf.py(), "float64").into_any();
        crate::loan::open_loan(slf.py(), slf, shape, dtype.unwrap_or(&float64), order, timeout)
    }

    /// A descriptor that ``select``, ``selectors``, ``multiprocessing.connection.wait``
    /// and asyncio's ``add_reader`` can wait on for room: readable once a small
    /// message fits again, or the receiver closed or died (see ``Receiver.fileno``;
    /// the FIFO is ``/dev/shm/shmplane.<name>@tx``, or ``@tx<lane>`` for a mailbox's
    /// sender, where the receiver's death does not show: ``_check_peer`` does). Each
    /// call re-arms it.
    ///
    /// Raises:
    ///     As ``Receiver.fileno``.
    fn fileno(&self, py: Python<'_>) -> PyResult<i32> {
        self.lock(py)?.readiness_fd(1).map_err(|e| to_py(py, e))
    }

    /// The full liveness check of the receiver: raises PeerDeadError / DisconnectedError
    /// if it is gone (used by the asyncio layer once per wait slice).
    fn _check_peer(&self, py: Python<'_>) -> PyResult<()> {
        self.lock(py)?.check_receiver().map_err(|e| to_py(py, e))
    }

    /// ``fileno()`` armed for room for a message of ``nbytes`` (one record at most).
    fn _space_fd(&self, py: Python<'_>, nbytes: usize) -> PyResult<i32> {
        self.lock(py)?.readiness_fd(nbytes).map_err(|e| to_py(py, e))
    }

    /// ``await tx.send_async(obj, timeout=None)``: send without blocking the event loop
    /// (see ``shmplane._aio``).
    #[pyo3(signature = (obj, timeout=None))]
    fn send_async<'py>(slf: &Bound<'py, Self>, obj: &Bound<'py, PyAny>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("shmplane._aio")?.call_method1("send_async", (slf, obj, timeout))
    }

    /// Create channel `name` (capacity in bytes, a power of two) and attach as sender.
    #[staticmethod]
    #[pyo3(signature = (name, capacity=DEFAULT_CAPACITY as i64))]
    fn create<'py>(py: Python<'py>, name: &str, capacity: i64) -> PyResult<Bound<'py, Self>> {
        let capacity = capacity_arg(py, capacity)?;
        let s = py.detach(|| Sender::create(name, capacity)).py_err(py)?;
        tracked(py, PySender { inner: Mutex::new(s), closing: CloseFlag::default() })
    }

    /// Open existing channel `name` as its sender, waiting at most `timeout` seconds
    /// for its creator (see the stubs).
    #[staticmethod]
    #[pyo3(signature = (name, timeout=0.0))]
    fn open<'py>(py: Python<'py>, name: &str, timeout: Option<f64>) -> PyResult<Bound<'py, Self>> {
        let s = crate::wait::open_waiting(py, timeout, || Sender::open(name))?;
        tracked(py, PySender { inner: Mutex::new(s), closing: CloseFlag::default() })
    }

    /// Adopt descriptor `fd` (ownership passes to the Sender). Used by unpickling;
    /// `lane`: the mailbox lane of a mailbox's sender.
    #[staticmethod]
    #[pyo3(signature = (fd, name=None, doorbell_fd=None, lane=None))]
    fn _from_fd<'py>(py: Python<'py>, fd: i32, name: Option<String>, doorbell_fd: Option<i32>, lane: Option<usize>) -> PyResult<Bound<'py, Self>> {
        let fd = owned_fd(fd)?;
        let doorbell = doorbell_fd.map(owned_fd).transpose()?;
        let s = py.detach(|| Sender::from_fds_lane(fd, doorbell, name, lane)).py_err(py)?;
        tracked(py, PySender { inner: Mutex::new(s), closing: CloseFlag::default() })
    }

    /// The mailbox lane this sender writes (None: a channel's sender).
    fn _lane(&self, py: Python<'_>) -> PyResult<Option<usize>> {
        Ok(self.lock(py)?.lane())
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

    /// Send every object of `objs` in order, each as its own message (as `send`),
    /// waiting for room until `timeout` seconds from the first wait (one deadline for
    /// the whole batch); the number sent (see the stubs).
    #[pyo3(signature = (objs, timeout=None))]
    fn send_many(&self, py: Python<'_>, objs: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<usize> {
        let timeout = Timeout::new(timeout, true).map_err(|e| with_attr(py, e, "sent", 0usize))?;
        // A str or a buffer (bytes, an ndarray) is iterable, but sending its characters,
        // bytes or rows one by one is never what was meant.
        // SAFETY: `objs` is a live object; PyObject_CheckBuffer only reads its type.
        if objs.is_instance_of::<pyo3::types::PyString>() || unsafe { pyo3::ffi::PyObject_CheckBuffer(objs.as_ptr()) } != 0 {
            let e = PyTypeError::new_err(format!(
                "send_many takes an iterable of messages (a list, a generator), not a {}: to send it as one message, use send",
                objs.get_type().name().map_or_else(|_| "buffer".to_owned(), |n| n.to_string())
            ));
            return Err(with_attr(py, e, "sent", 0usize));
        }
        let mut sent = 0usize;
        for obj in objs.try_iter().map_err(|e| with_attr(py, e, "sent", 0usize))? {
            let sent_one = obj.and_then(|obj| self.send_within(py, &obj, &timeout));
            sent_one.map_err(|e| with_attr(py, e, "sent", sent))?;
            sent += 1;
        }
        Ok(sent)
    }

    /// Send the bytes of one contiguous buffer as `bytes`.
    #[pyo3(signature = (buf, timeout=None))]
    fn send_bytes(&self, py: Python<'_>, buf: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<()> {
        let timeout = Timeout::new(timeout, true)?;
        let held = buffers(std::slice::from_ref(buf))?;
        let mut guard = self.lock(py)?;
        send_message(py, &mut guard, &Outgoing::bytes(bytes_of(&held[0])), &timeout, &self.closing)
    }

    /// Wait until a message of `nbytes` fits (timeout in seconds; None = forever).
    #[pyo3(signature = (nbytes=0, timeout=0.0))]
    fn poll_space(&self, py: Python<'_>, nbytes: usize, timeout: Option<f64>) -> PyResult<bool> {
        let timeout = Timeout::new(timeout, true)?;
        let mut guard = self.lock(py)?;
        let tx: &mut Sender = &mut guard;
        if timeout.is_zero() {
            return tx.poll_space_with(nbytes, Wait::no_wait()).py_err(py);
        }
        blocking_checked(py, &timeout, |py| self.closing.check(py), |wait| tx.poll_space_with(nbytes, wait))
    }

    /// Largest message payload in bytes that travels as one record.
    #[getter]
    fn max_message_size(&self, py: Python<'_>) -> PyResult<usize> {
        self.lock(py)?.max_message_len().py_err(py)
    }
});

/// The receiving end of a channel. See `shmplane.channel`.
#[pyclass(module = "shmplane._shmplane", name = "Receiver", frozen, weakref, subclass)]
pub struct PyReceiver {
    pub(crate) inner: Mutex<Receiver>,
    pub(crate) closing: CloseFlag,
}

/// A new `bytes` of `len` uninitialised bytes and a destination over its buffer. It
/// must be filled before any Python code sees it. (`PyBytes::new_with` would zero it
/// first: a second pass over 8 MB.)
fn uninit_bytes(py: Python<'_>, len: usize) -> PyResult<(Bound<'_, PyAny>, OutBuf<'static>)> {
    let n = pyo3::ffi::Py_ssize_t::try_from(len).map_err(|_| PyMemoryError::new_err("message too large"))?;
    // SAFETY: a NULL source asks CPython for an uninitialised bytes object of `n` bytes.
    let raw = unsafe { pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), n) };
    // SAFETY: `raw` is a new reference, or NULL with an exception set.
    let obj = unsafe { Bound::from_owned_ptr_or_err(py, raw)? };
    // SAFETY: `raw` is a bytes object whose buffer holds `n` (+1) bytes and lives as long
    // as `obj`, which the caller keeps until the copy is done; no Python code has seen
    // it, so nothing else touches the bytes; they are only written through the OutBuf.
    let dst = unsafe { OutBuf::from_raw(pyo3::ffi::PyBytes_AsString(raw).cast(), len) };
    Ok((obj, dst))
}

/// A destination over the writable buffer of `obj` (a fresh array or bytearray), which
/// must be exactly `len` bytes; the export is pushed to `exports` and must be held
/// until the copy is done.
fn export(py: Python<'_>, obj: &Bound<'_, PyAny>, len: usize, exports: &mut Vec<PyUntypedBuffer>) -> PyResult<OutBuf<'static>> {
    let buf = PyUntypedBuffer::get(obj)?;
    if buf.readonly() || !buf.is_c_contiguous() || buf.len_bytes() != len {
        return Err(to_py(
            py,
            Error::InvalidArgument(format!("a {len}-byte part does not fit its {}-byte destination", buf.len_bytes())),
        ));
    }
    // SAFETY: the buffer is writable, C-contiguous and `len` bytes long (checked); the
    // export is held in `exports` until the copy is done; the object is new (made by
    // `_codec`), so no other code writes it meanwhile.
    let dst = unsafe { OutBuf::from_raw(buf.buf_ptr().cast(), len) };
    exports.push(buf);
    Ok(dst)
}

/// `MemoryError` while allocating a message's destination is a message too large for
/// this process: `MessageTooLargeError`, and the message is consumed.
pub(crate) fn too_large(py: Python<'_>, total: usize, e: PyErr) -> PyErr {
    if e.is_instance_of::<PyMemoryError>(py) {
        exception(py, "MessageTooLargeError", format!("a message of {total} bytes cannot be allocated in this process ({e}); it was dropped"))
    } else {
        e
    }
}

/// Allocate the destinations of `incoming` (with the GIL), copy it (without the GIL if
/// it is large or spans several records), and build the Python object; the rest of a
/// message that spans several records is waited for at most `within`, and ended by
/// `closing` (a close from another thread).
pub(crate) fn receive_within(py: Python<'_>, incoming: Incoming<'_>, raw: bool, within: &Timeout, closing: Option<&CloseFlag>) -> PyResult<Py<PyAny>> {
    receive_classified(py, incoming, raw, within, closing).map_err(|(e, _)| e)
}

/// [`receive_within`], telling whether an error came while the message was being read
/// (`false`: it was not read whole: truncated, timed out, interrupted by a signal
/// handler's exception or a close) or after it was taken (`true`: it could not be
/// allocated or decoded). An RPC server abandons the first (the client's retry runs)
/// and answers the second.
pub(crate) fn receive_classified(
    py: Python<'_>,
    incoming: Incoming<'_>,
    raw: bool,
    within: &Timeout,
    closing: Option<&CloseFlag>,
) -> Result<Py<PyAny>, (PyErr, bool)> {
    let taken = |e: PyErr| (e, true);
    let head = incoming.head();
    if !raw && head.kind() == Kind::Numbers && head.is_chunked() {
        // Decoded as the records arrive, while the sender writes the rest.
        return crate::numbers::receive_streamed(py, incoming, within, closing);
    }
    let total = head.total();
    let big = head.is_chunked() || total >= GIL_RELEASE_BYTES;
    if !big && (raw || head.kind() == Kind::Bytes) {
        // The common small message: one record of bytes (or any, as bytes), copied into
        // a new `bytes` with the GIL (no destination list, nothing to decode).
        let (obj, dst) = uninit_bytes(py, total).map_err(|e| taken(too_large(py, total, e)))?;
        incoming.read_payload_into(dst, Wait::no_wait()).py_err(py).map_err(|e| (e, false))?;
        return Ok(obj.unbind());
    }
    let mut exports = Vec::new();
    let mut dests = Vec::with_capacity(head.part_count());
    let mut unpickle = None;
    let mut numbers: Option<(Vec<u8>, usize)> = None;
    let result: Bound<'_, PyAny> = if raw {
        let (obj, dst) = uninit_bytes(py, total).map_err(|e| taken(too_large(py, total, e)))?;
        dests.push(dst);
        obj
    } else {
        match head.kind() {
            Kind::Bytes => {
                let (obj, dst) = uninit_bytes(py, head.part_len(0)).map_err(|e| taken(too_large(py, total, e)))?;
                dests.push(dst);
                obj
            }
            Kind::Array => {
                let meta = head.array().expect("an array head has its description");
                let order = if meta.order == Order::F { "F" } else { "C" };
                let alloc = codec_fn!(py, "alloc_array").map_err(taken)?.call1((meta.descr.as_str(), meta.shape.clone(), order));
                let (arr, flat): (Bound<'_, PyAny>, Bound<'_, PyAny>) =
                    alloc.map_err(|e| taken(too_large(py, total, e)))?.extract().map_err(taken)?;
                dests.push(export(py, &flat, head.part_len(0), &mut exports).map_err(taken)?);
                arr
            }
            Kind::Pickle => {
                let (stream, dst) = uninit_bytes(py, head.part_len(0)).map_err(|e| taken(too_large(py, total, e)))?;
                dests.push(dst);
                let bufs = PyList::empty(py);
                for i in 1..head.part_count() {
                    let len = head.part_len(i);
                    let b = codec_fn!(py, "alloc_buffer").map_err(taken)?.call1((len,)).map_err(|e| taken(too_large(py, total, e)))?;
                    dests.push(export(py, &b, len, &mut exports).map_err(taken)?);
                    bufs.append(b).map_err(taken)?;
                }
                unpickle = Some(bufs);
                stream
            }
            Kind::Numbers => {
                // The payload lands in this thread's kept scratch buffer (no fresh pages
                // per message); the list is built from it.
                let len = head.part_len(0);
                let mut v = crate::numbers::take_recv_scratch();
                v.try_reserve_exact(len).map_err(|e| taken(too_large(py, total, PyMemoryError::new_err(e.to_string()))))?;
                // SAFETY: `v` has capacity for `len` bytes and stays alive and unmoved
                // (its heap block does not move while we only set its length) until the
                // copy is done; nothing else touches its spare capacity.
                dests.push(unsafe { OutBuf::from_raw(v.as_mut_ptr(), len) });
                numbers = Some((v, len));
                py.None().into_bound(py)
            }
        }
    };
    let copy = move |wait: Wait<'_>| {
        if raw {
            incoming.read_payload_into(dests.pop().expect("one destination"), wait)
        } else {
            incoming.read_into(dests, wait)
        }
    };
    let read = |e: PyErr| (e, false);
    if big {
        match closing {
            Some(flag) => blocking_checked(py, within, |py| flag.check(py), copy).map_err(read)?,
            None => blocking(py, within, copy).map_err(read)?,
        }
    } else {
        // One record: nothing to wait for.
        copy(Wait::no_wait()).py_err(py).map_err(read)?;
    }
    for buf in exports {
        buf.release(py);
    }
    if let Some((mut v, len)) = numbers {
        // SAFETY: the copy succeeded, so it wrote all `len` bytes of the reserved space.
        unsafe { v.set_len(len) };
        let out = crate::numbers::decode(py, &v);
        crate::numbers::give_recv_scratch(v);
        return Ok(out.map_err(|e| taken(too_large(py, total, e)))?.unbind());
    }
    match unpickle {
        None => Ok(result.unbind()),
        Some(bufs) => Ok(codec_fn!(py, "unpickle").map_err(taken)?.call1((result, bufs)).map_err(taken)?.unbind()),
    }
}

/// Copy `incoming` into the caller's `out` (see `Receiver.recv_into`), after checking
/// that it fits; on a mismatch the message stays queued and nothing is written.
fn receive_into(py: Python<'_>, incoming: Incoming<'_>, out: &Bound<'_, PyAny>, closing: &CloseFlag) -> PyResult<usize> {
    let head = incoming.head();
    let refuse = |what: String| to_py(py, Error::InvalidArgument(format!("{what}; the message stays queued (receive it with recv)")));
    let buf = PyUntypedBuffer::get(out)?;
    if buf.readonly() {
        return Err(refuse("the destination is read-only".into()));
    }
    let len = match head.kind() {
        Kind::Pickle => return Err(refuse("the next message is a pickled object, which has no buffer to receive into".into())),
        Kind::Numbers => return Err(refuse("the next message is a list or tuple of numbers, which has no buffer to receive into".into())),
        Kind::Bytes => {
            let len = head.part_len(0);
            if !buf.is_c_contiguous() || buf.len_bytes() < len {
                return Err(refuse(format!(
                    "the next message is {len} bytes; the destination is {} bytes{}",
                    buf.len_bytes(),
                    if buf.is_c_contiguous() { "" } else { " and not contiguous" }
                )));
            }
            len
        }
        Kind::Array => {
            let meta = head.array().expect("an array head has its description");
            let dtype: String = out.getattr("dtype").and_then(|d| d.getattr("str")).and_then(|s| s.extract()).map_err(|_| {
                refuse(format!("the next message is an array ({} {:?}); the destination is not an ndarray", meta.descr, meta.shape))
            })?;
            let shape: Vec<usize> = out.getattr("shape")?.extract()?;
            let contiguous = if meta.order == Order::F { buf.is_fortran_contiguous() } else { buf.is_c_contiguous() };
            // The exported buffer's own size decides what may be written (the `dtype`
            // and `shape` attributes are only what the object says of itself).
            let len = head.part_len(0);
            if dtype != meta.descr || shape != meta.shape || !contiguous || buf.len_bytes() != len {
                let order = if meta.order == Order::F { "F" } else { "C" };
                return Err(refuse(format!(
                    "the next message is a {order}-ordered array of dtype {} and shape {:?} ({len} bytes); the destination is {dtype} {shape:?} ({} bytes){}",
                    meta.descr,
                    meta.shape,
                    buf.len_bytes(),
                    if contiguous { "" } else { " and not contiguous in that order" }
                )));
            }
            len
        }
    };
    let big = head.is_chunked() || len >= GIL_RELEASE_BYTES;
    // SAFETY: the buffer is writable and contiguous with at least `len` bytes (checked
    // above), and stays exported (held in `buf`) until the copy is done.
    let dst = unsafe { OutBuf::from_raw(buf.buf_ptr().cast(), len) };
    let copy = move |wait: Wait<'_>| incoming.read_into(vec![dst], wait);
    let result = if big {
        blocking_checked(py, &Timeout::forever(), |py| closing.check(py), copy)
    } else {
        copy(Wait::no_wait()).py_err(py)
    };
    buf.release(py);
    result.map(|()| len)
}

impl PyReceiver {
    pub(crate) fn lock(&self, py: Python<'_>) -> PyResult<MutexGuard<'_, Receiver>> {
        lock(py, &self.inner, "Receiver")
    }

    fn recv_obj(&self, py: Python<'_>, timeout: Option<f64>, block: bool, raw: bool) -> PyResult<Py<PyAny>> {
        let timeout = Timeout::new(timeout, block)?;
        let mut guard = self.lock(py)?;
        self.recv_locked(py, &mut guard, &timeout, raw)
    }

    /// [`PyReceiver::recv_obj`] through `rx`, this receiver's locked end.
    fn recv_locked(&self, py: Python<'_>, rx: &mut Receiver, timeout: &Timeout, raw: bool) -> PyResult<Py<PyAny>> {
        loop {
            // With the GIL and no waiting: the common case of a message already there.
            match rx.begin(Wait::no_wait()) {
                Ok(incoming) => return receive_within(py, incoming, raw, &Timeout::forever(), Some(&self.closing)),
                Err(Error::Empty) if timeout.blocks() => {}
                Err(e) => return Err(to_py(py, e)),
            }
            // Wait for one to begin without the GIL, then take it as above (another
            // copy of this receiver may take it first: then wait again).
            if !blocking_checked(py, timeout, |py| self.closing.check(py), |wait| rx.poll_with(wait))? {
                return Err(to_py(py, Error::Timeout));
            }
        }
    }
}

endpoint_pymethods!(PyReceiver, "receiver", "Receiver", {
    /// Create channel `name` (capacity in bytes, a power of two) and attach as receiver.
    #[staticmethod]
    #[pyo3(signature = (name, capacity=DEFAULT_CAPACITY as i64))]
    fn create<'py>(py: Python<'py>, name: &str, capacity: i64) -> PyResult<Bound<'py, Self>> {
        let capacity = capacity_arg(py, capacity)?;
        let r = py.detach(|| Receiver::create(name, capacity)).py_err(py)?;
        tracked(py, PyReceiver { inner: Mutex::new(r), closing: CloseFlag::default() })
    }

    /// Open existing channel `name` as its receiver, waiting at most `timeout` seconds
    /// for its creator (see the stubs).
    #[staticmethod]
    #[pyo3(signature = (name, timeout=0.0))]
    fn open<'py>(py: Python<'py>, name: &str, timeout: Option<f64>) -> PyResult<Bound<'py, Self>> {
        let r = crate::wait::open_waiting(py, timeout, || Receiver::open(name))?;
        tracked(py, PyReceiver { inner: Mutex::new(r), closing: CloseFlag::default() })
    }

    /// Adopt descriptor `fd` (ownership passes to the Receiver). Used by unpickling.
    #[staticmethod]
    #[pyo3(signature = (fd, name=None, doorbell_fd=None))]
    fn _from_fd<'py>(py: Python<'py>, fd: i32, name: Option<String>, doorbell_fd: Option<i32>) -> PyResult<Bound<'py, Self>> {
        let fd = owned_fd(fd)?;
        let doorbell = doorbell_fd.map(owned_fd).transpose()?;
        let r = py.detach(|| Receiver::from_fds(fd, doorbell, name)).py_err(py)?;
        tracked(py, PyReceiver { inner: Mutex::new(r), closing: CloseFlag::default() })
    }

    /// Receive the next message into `out` (a writable buffer or ndarray), waiting at
    /// most `timeout` seconds; returns the bytes written (see the stubs).
    #[pyo3(signature = (out, timeout=None))]
    fn recv_into(&self, py: Python<'_>, out: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<usize> {
        let timeout = Timeout::new(timeout, true)?;
        let mut guard = self.lock(py)?;
        let rx: &mut Receiver = &mut guard;
        loop {
            match rx.begin_kept(Wait::no_wait()) {
                Ok(incoming) => return receive_into(py, incoming, out, &self.closing),
                Err(Error::Empty) if timeout.blocks() => {}
                Err(e) => return Err(to_py(py, e)),
            }
            if !blocking_checked(py, &timeout, |py| self.closing.check(py), |wait| rx.poll_with(wait))? {
                return Err(to_py(py, Error::Timeout));
            }
        }
    }

    /// Receive the next object, waiting at most `timeout` seconds (None: forever);
    /// `copy=False`: a view of it in shared memory (see the stubs).
    #[pyo3(signature = (timeout=None, copy=true))]
    fn recv(slf: &Bound<'_, Self>, timeout: Option<f64>, copy: bool) -> PyResult<Py<PyAny>> {
        if !copy {
            return crate::lease::recv_view(slf.py(), slf, timeout, true);
        }
        slf.get().recv_obj(slf.py(), timeout, true, false)
    }

    /// Receive without waiting; raises `shmplane.Empty` if nothing is there.
    #[pyo3(signature = (copy=true))]
    fn try_recv(slf: &Bound<'_, Self>, copy: bool) -> PyResult<Py<PyAny>> {
        if !copy {
            return crate::lease::recv_view(slf.py(), slf, None, false);
        }
        slf.get().recv_obj(slf.py(), None, false, false)
    }

    /// Receive a batch: the next object, waiting at most `timeout` seconds for it (as
    /// `recv`), then those already there, up to `max_messages` in all (see the stubs).
    #[pyo3(signature = (max_messages=1024, timeout=None))]
    fn recv_many<'py>(slf: &Bound<'py, Self>, max_messages: i64, timeout: Option<f64>) -> PyResult<Bound<'py, PyList>> {
        let (py, this) = (slf.py(), slf.get());
        let max = batch_size(max_messages).map_err(|e| no_batch(py, e))?;
        let timeout = Timeout::new(timeout, true).map_err(|e| no_batch(py, e))?;
        // Held from the first message to the last: a thread that took this end in
        // between would make the batch fail with its first message taken.
        let mut guard = this.lock(py).map_err(|e| no_batch(py, e))?;
        let rx: &mut Receiver = &mut guard;
        let first = this.recv_locked(py, rx, &timeout, false);
        // An ending (closed, peer gone) ends the batch here and is raised by the next
        // receive; other errors (a lag, a malformed message) are raised now.
        collect_batch(py, max, first, || match rx.begin(Wait::no_wait()) {
            Ok(incoming) => Some(receive_within(py, incoming, false, &Timeout::forever(), Some(&this.closing))),
            Err(e) => batch_end(py, e),
        })
    }

    /// Receive the next message as a `Lease` viewing it in shared memory, waiting at
    /// most `timeout` seconds (see the stubs).
    #[pyo3(signature = (timeout=None))]
    fn lease(slf: &Bound<'_, Self>, timeout: Option<f64>) -> PyResult<Py<crate::lease::PyLease>> {
        crate::lease::lease_next(slf.py(), slf, timeout, true)
    }

    /// Close at process exit (`shmplane._handles`): views still alive die with the
    /// process, so their messages are given back first and the close completes now.
    fn _close_at_exit(&self, py: Python<'_>) -> PyResult<()> {
        let Some(mut guard) = lock_for_close(py, &self.inner, &self.closing) else { return Ok(()) };
        let rx = &mut *guard;
        py.detach(|| rx.close_releasing_views());
        Ok(())
    }

    /// Messages held by live views (`recv(copy=False)`, leases) and not released yet.
    #[getter]
    fn held(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.lock(py)?.holds())
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
        let rx: &mut Receiver = &mut guard;
        if timeout.is_zero() {
            return rx.poll_with(Wait::no_wait()).or_else(crate::endpoints::ended_is_ready).py_err(py);
        }
        blocking_checked(py, &timeout, |py| self.closing.check(py), |wait| rx.poll_with(wait).or_else(crate::endpoints::ended_is_ready))
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// A descriptor that ``select``, ``selectors``, ``multiprocessing.connection.wait``
    /// and asyncio's ``add_reader`` can wait on: readable iff ``try_recv`` would not
    /// raise ``Empty`` (a message is queued, or the sender closed or died). Each call
    /// re-arms it (``select`` and ``connection.wait`` call it before every wait), and so
    /// does every receive that empties the channel. The descriptor (the read end of the
    /// channel's doorbell FIFO, ``/dev/shm/shmplane.<name>@rx``) belongs to this handle:
    /// do not close it. Senders write to it only while a handle waits this way.
    ///
    /// Raises:
    ///     ClosedError: this end is closed.
    ///     InvalidArgumentError: the channel's name is gone (nothing to find the
    ///         doorbell by), or another thread is using this end.
    ///     NotFoundError, CorruptSegmentError: the doorbell is missing or not a
    ///         private FIFO.
    fn fileno(&self, py: Python<'_>) -> PyResult<i32> {
        self.lock(py)?.readiness_fd().map_err(|e| to_py(py, e))
    }

    /// The full liveness check of the sender: raises PeerDeadError / DisconnectedError
    /// if it is gone and nothing is queued (the asyncio layer, once per wait slice).
    fn _check_peer(&self, py: Python<'_>) -> PyResult<()> {
        self.lock(py)?.check_sender().map_err(|e| to_py(py, e))
    }

    /// ``await rx.recv_async(timeout=None)``: receive without blocking the event loop
    /// (see ``shmplane._aio``).
    #[pyo3(signature = (timeout=None))]
    fn recv_async<'py>(slf: &Bound<'py, Self>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("shmplane._aio")?.call_method1("recv_async", (slf, timeout))
    }

    /// ``async for obj in rx``: receive until the sender closes.
    fn __aiter__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("shmplane._aio")?.call_method1("AsyncReceive", (slf,))
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
        PySender { inner: Mutex::new(s), closing: CloseFlag::default() }
    }
}

impl PyReceiver {
    pub(crate) fn wrap(r: Receiver) -> Self {
        PyReceiver { inner: Mutex::new(r), closing: CloseFlag::default() }
    }
}

/// `poll` as `multiprocessing.Connection.poll`: true when the next receive would not
/// wait, the end of the stream included (it then raises `DisconnectedError` or
/// `PeerDeadError`), as the descriptor of `fileno()` is readable then.
pub(crate) fn ended_is_ready(e: shmplane::Error) -> shmplane::Result<bool> {
    match e {
        shmplane::Error::Disconnected { .. } | shmplane::Error::PeerDead { .. } => Ok(true),
        e => Err(e),
    }
}
