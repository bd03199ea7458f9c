//! Lists and tuples of numbers at memory speed (`shmplane::frame::Numbers`, tag 4):
//! a `list` or `tuple` of at least [`MIN_LEN`] exact `float`s, or of exact `int`s that
//! fit in 64 bits, crosses as 8 bytes per number instead of a pickle: encoded here in
//! one C-API loop, decoded in one loop into a list (or tuple) of new objects. Anything
//! else (a `bool`, a subclass, a big int, a mix) goes through pickle as before, so the
//! receiver always gets what was sent: the same container of equal numbers of the same
//! types (floats bit for bit: NaN payloads, -0.0, infinities).

use crate::error::to_py;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use shmplane::frame::{Container, NumberType, Numbers, Outgoing, NUMBERS_HEADER};
use shmplane::Error;
use std::cell::Cell;

/// Shorter lists go through pickle (its fixed cost is small, and their types are kept
/// by the same code as any other object's).
pub(crate) const MIN_LEN: usize = 16;

/// Scratch buffers above this size are not kept for the next message (each thread
/// that sends or receives lists keeps at most this much per direction).
const KEEP_SCRATCH: usize = 16 << 20;

thread_local! {
    /// The encoding buffer and the receiving buffer, kept between messages so that a
    /// large list does not fault in fresh pages each time (8 MB of fresh pages cost
    /// more than decoding a million floats' worth of them).
    static SEND_SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    static RECV_SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// This thread's receiving buffer (empty, with the capacity of the last one), to give
/// back with [`give_recv_scratch`]. A nested receive (a signal handler's, while the
/// GIL is released) finds none and allocates its own.
pub(crate) fn take_recv_scratch() -> Vec<u8> {
    let mut v = RECV_SCRATCH.with(Cell::take);
    v.clear();
    v
}

/// Keep `v` as this thread's receiving buffer (unless it is very large).
pub(crate) fn give_recv_scratch(v: Vec<u8>) {
    keep(&RECV_SCRATCH, v);
}

fn keep(slot: &'static std::thread::LocalKey<Cell<Vec<u8>>>, v: Vec<u8>) {
    if v.capacity() <= KEEP_SCRATCH {
        slot.with(|s| {
            let old = s.take();
            s.set(if old.capacity() > v.capacity() { old } else { v });
        });
    }
}

/// `obj`'s container and length if it is exactly a `list` or a `tuple`.
fn container_of(obj: &Bound<'_, PyAny>) -> Option<(Container, usize)> {
    if let Ok(l) = obj.cast_exact::<PyList>() {
        Some((Container::List, l.len()))
    } else if let Ok(t) = obj.cast_exact::<PyTuple>() {
        Some((Container::Tuple, t.len()))
    } else {
        None
    }
}

/// Encode `obj` if it is a list or tuple of at least [`MIN_LEN`] numbers of one type
/// and call `f` with the payload (header and numbers); `None` if it is not (`f` is not
/// called).
///
/// # Errors
/// `f`'s.
pub(crate) fn with_encoded<R>(obj: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> PyResult<R>) -> Option<PyResult<R>> {
    let (container, n) = container_of(obj)?;
    if n < MIN_LEN {
        return None;
    }
    // A signal handler run while `f` waits may send another list from this thread: it
    // then finds no buffer and encodes into a fresh one.
    let mut buf = SEND_SCRATCH.with(Cell::take);
    buf.clear();
    if let Err(e) = buf.try_reserve(NUMBERS_HEADER + 8 * n) {
        return Some(Err(pyo3::exceptions::PyMemoryError::new_err(format!("a list of {n} numbers: {e}"))));
    }
    let out = encode_into(obj, container, n, &mut buf).then(|| f(&buf));
    keep(&SEND_SCRATCH, buf);
    out
}

/// Append the payload of `obj` (a list or tuple of `n` items) to `buf`; false if its
/// items are not all exact floats or all exact ints in `i64` range.
fn encode_into(obj: &Bound<'_, PyAny>, container: Container, n: usize, buf: &mut Vec<u8>) -> bool {
    let p = obj.as_ptr();
    // SAFETY: `p` is a live list or tuple (checked by the caller) and `i < n` is within
    // its length: no Python code runs in this loop (the checks and conversions below
    // call none for exact floats and ints), so nothing can shrink it meanwhile. The
    // items are borrowed references, used before the next iteration.
    let item = |i: usize| unsafe {
        match container {
            Container::List => ffi::PyList_GetItem(p, i as ffi::Py_ssize_t),
            Container::Tuple => ffi::PyTuple_GetItem(p, i as ffi::Py_ssize_t),
        }
    };
    // SAFETY: the first item is a live object (above); the checks read its type only.
    let ty = unsafe {
        let first = item(0);
        if ffi::PyFloat_CheckExact(first) != 0 {
            NumberType::F64
        } else if ffi::PyLong_CheckExact(first) != 0 {
            NumberType::I64
        } else {
            return false;
        }
    };
    // Reserved by the caller (`try_reserve`: no abort when memory runs out).
    buf.extend_from_slice(&Numbers::header(container, ty));
    for i in 0..n {
        let x = item(i);
        // SAFETY: `x` is a live item (above). For an exact float PyFloat_AsDouble cannot
        // fail; for an exact int PyLong_AsLongLongAndOverflow reports overflow in
        // `over` without raising (and calls no `__index__`).
        let bits = unsafe {
            match ty {
                NumberType::F64 => {
                    if ffi::PyFloat_CheckExact(x) == 0 {
                        return false;
                    }
                    ffi::PyFloat_AsDouble(x).to_le_bytes()
                }
                NumberType::I64 => {
                    if ffi::PyLong_CheckExact(x) == 0 {
                        return false;
                    }
                    let mut over = 0;
                    let v = ffi::PyLong_AsLongLongAndOverflow(x, &mut over);
                    if over != 0 {
                        return false;
                    }
                    v.to_le_bytes()
                }
            }
        };
        buf.extend_from_slice(&bits);
    }
    true
}

/// The list or tuple a numbers payload (another process's bytes) describes.
///
/// # Errors
/// `CorruptSegmentError` for a malformed payload, `MemoryError`.
pub(crate) fn decode<'py>(py: Python<'py>, payload: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let (container, ty, data) = Numbers::parse(payload)
        .map_err(|what| to_py(py, Error::Corrupt { path: "(a received numbers message)".into(), what }))?;
    let n = data.len() / 8;
    let len = ffi::Py_ssize_t::try_from(n).map_err(|_| pyo3::exceptions::PyMemoryError::new_err("too many numbers"))?;
    // SAFETY: attached (the token); a new list/tuple of `n` empty slots, or NULL with an
    // exception set.
    let out = unsafe {
        Bound::from_owned_ptr_or_err(py, match container {
            Container::List => ffi::PyList_New(len),
            Container::Tuple => ffi::PyTuple_New(len),
        })?
    };
    for (i, chunk) in data.chunks_exact(8).enumerate() {
        let b: [u8; 8] = chunk.try_into().expect("8 bytes");
        // SAFETY: attached; each constructor returns a new reference or NULL with an
        // exception set.
        let x = unsafe {
            match ty {
                NumberType::F64 => ffi::PyFloat_FromDouble(f64::from_le_bytes(b)),
                NumberType::I64 => ffi::PyLong_FromLongLong(i64::from_le_bytes(b)),
            }
        };
        if x.is_null() {
            return Err(PyErr::fetch(py)); // `out` is dropped with its filled slots
        }
        // SAFETY: `out` is the new container of `n` slots made above, not yet seen by
        // any Python code, and `i < n`; SetItem steals `x`.
        unsafe {
            match container {
                Container::List => ffi::PyList_SetItem(out.as_ptr(), i as ffi::Py_ssize_t, x),
                Container::Tuple => ffi::PyTuple_SetItem(out.as_ptr(), i as ffi::Py_ssize_t, x),
            };
        }
    }
    Ok(out)
}

/// Lists of floats at least this large (the numbers' bytes) are encoded straight into
/// the ring a record at a time ([`with_streamed`]), so that the receiver decodes the
/// first records while the rest are written: a message chunked anyway
/// (`frame::CHUNK_THRESHOLD`).
const STREAM_MIN_BYTES: usize = shmplane::frame::CHUNK_THRESHOLD;

/// The items of a list or tuple whose items are all exact floats, for a fill callback.
struct FloatItems {
    seq: *mut ffi::PyObject,
    container: Container,
    n: usize,
}

// SAFETY: a `FloatItems` is only used by the thread that made it, while it holds the
// GIL (see `with_streamed`): `Sync` only because `Outgoing`'s fill callbacks must be.
unsafe impl Sync for FloatItems {}

impl FloatItems {
    /// Write bytes `offset..offset + dst.len()` of the numbers (8 little-endian bytes
    /// each) into `dst`.
    fn fill(&self, offset: usize, dst: &mut [u8]) {
        let value = |i: usize| {
            assert!(i < self.n, "filled past the numbers");
            // SAFETY: `seq` is a live list or tuple of `n` exact floats that cannot change
            // meanwhile: the GIL has been held since they were checked (`with_streamed`),
            // and `i < n` (asserted): the item is a borrowed reference to an exact float, for
            // which PyFloat_AsDouble cannot fail.
            unsafe {
                let item = match self.container {
                    Container::List => ffi::PyList_GetItem(self.seq, i as ffi::Py_ssize_t),
                    Container::Tuple => ffi::PyTuple_GetItem(self.seq, i as ffi::Py_ssize_t),
                };
                ffi::PyFloat_AsDouble(item).to_le_bytes()
            }
        };
        let mut i = offset / 8;
        let mut out = dst;
        // A number split at the start of this range.
        let skip = offset % 8;
        if skip != 0 {
            let take = (8 - skip).min(out.len());
            out[..take].copy_from_slice(&value(i)[skip..skip + take]);
            out = &mut out[take..];
            i += 1;
        }
        let mut words = out.chunks_exact_mut(8);
        for w in &mut words {
            w.copy_from_slice(&value(i));
            i += 1;
        }
        // A number split at the end of it.
        let rest = words.into_remainder();
        if !rest.is_empty() {
            let k = rest.len();
            rest.copy_from_slice(&value(i)[..k]);
        }
    }
}

/// If `obj` is a large list or tuple of exact floats (at least [`STREAM_MIN_BYTES`] of
/// numbers), call `send` with a numbers message whose bytes are read from the items as
/// each record is written, and return its result; `None` (without calling it) for
/// anything else. `send` must not release the GIL (a non-blocking send), so that the
/// items are the ones checked, and no other thread changes the list meanwhile: a list
/// sent this way is one consistent snapshot, as when it is encoded first.
pub(crate) fn with_streamed<R>(obj: &Bound<'_, PyAny>, send: impl FnOnce(&Outgoing<'_>) -> PyResult<R>) -> Option<PyResult<R>> {
    let (container, n) = container_of(obj)?;
    if n.saturating_mul(8) < STREAM_MIN_BYTES {
        return None;
    }
    let seq = obj.as_ptr();
    // SAFETY: `seq` is a live list or tuple of `n` items (checked above); no Python code
    // runs in this loop (type checks only), so it cannot change meanwhile.
    let all_floats = (0..n).all(|i| unsafe {
        let item = match container {
            Container::List => ffi::PyList_GetItem(seq, i as ffi::Py_ssize_t),
            Container::Tuple => ffi::PyTuple_GetItem(seq, i as ffi::Py_ssize_t),
        };
        ffi::PyFloat_CheckExact(item) != 0
    });
    if !all_floats {
        return None;
    }
    let items = FloatItems { seq, container, n };
    let fill = |offset: usize, dst: &mut [u8]| items.fill(offset, dst);
    let msg = match Outgoing::numbers_filled(Numbers::header(container, NumberType::F64), n, &fill) {
        Ok(m) => m,
        Err(what) => return Some(Err(to_py(obj.py(), Error::InvalidArgument(what)))),
    };
    Some(send(&msg))
}

/// A numbers message decoded as its records arrive (see [`receive_streamed`]): the
/// header, then the numbers into a new list or tuple, kept untracked by the garbage
/// collector (so no Python code can reach it) until it is whole.
struct Decoder {
    total: usize,
    header: [u8; NUMBERS_HEADER],
    got_header: usize,
    out: Option<(Py<PyAny>, Container, NumberType)>,
    filled: usize,
    carry: [u8; 8],
    carried: usize,
}

impl Decoder {
    fn new(total: usize) -> Decoder {
        Decoder { total, header: [0; NUMBERS_HEADER], got_header: 0, out: None, filled: 0, carry: [0; 8], carried: 0 }
    }

    fn corrupt(py: Python<'_>, what: String) -> PyErr {
        to_py(py, Error::Corrupt { path: "(a received numbers message)".into(), what })
    }

    /// Take the next bytes of the payload.
    fn feed(&mut self, py: Python<'_>, mut bytes: &[u8]) -> PyResult<()> {
        if self.out.is_none() {
            let take = (NUMBERS_HEADER - self.got_header).min(bytes.len());
            self.header[self.got_header..self.got_header + take].copy_from_slice(&bytes[..take]);
            self.got_header += take;
            bytes = &bytes[take..];
            if self.got_header < NUMBERS_HEADER {
                return Ok(());
            }
            let (container, ty, _) = Numbers::parse(&self.header).map_err(|what| Self::corrupt(py, what))?;
            let data = self.total.saturating_sub(NUMBERS_HEADER);
            if data % 8 != 0 {
                return Err(Self::corrupt(py, format!("a numbers message carries {data} bytes, not whole 8-byte numbers")));
            }
            let len = ffi::Py_ssize_t::try_from(data / 8).map_err(|_| pyo3::exceptions::PyMemoryError::new_err("too many numbers"))?;
            // SAFETY: attached (the token); a new list/tuple of `len` empty slots, or NULL
            // with an exception set. Untracked at once: a half-filled container (NULL
            // slots) must not be reachable through `gc.get_objects()` while this thread
            // waits for the next record without the GIL; tracked again when whole.
            // (Not for no numbers: `PyTuple_New(0)` is the interpreter's one empty tuple,
            // shared by every thread, and there is nothing to fill.)
            let seq = unsafe {
                let seq = Bound::from_owned_ptr_or_err(py, match container {
                    Container::List => ffi::PyList_New(len),
                    Container::Tuple => ffi::PyTuple_New(len),
                })?;
                if len > 0 {
                    ffi::PyObject_GC_UnTrack(seq.as_ptr().cast());
                }
                seq
            };
            self.out = Some((seq.unbind(), container, ty));
        }
        let Some((seq, container, ty)) = &self.out else { unreachable!("made above") };
        let (seq, container, ty) = (seq.as_ptr(), *container, *ty);
        let n = (self.total - NUMBERS_HEADER) / 8;
        let put = |filled: &mut usize, b: [u8; 8]| -> PyResult<()> {
            if *filled >= n {
                return Err(Self::corrupt(py, format!("more than the {n} numbers announced")));
            }
            // SAFETY: attached; each constructor returns a new reference or NULL with an
            // exception set.
            let x = unsafe {
                match ty {
                    NumberType::F64 => ffi::PyFloat_FromDouble(f64::from_le_bytes(b)),
                    NumberType::I64 => ffi::PyLong_FromLongLong(i64::from_le_bytes(b)),
                }
            };
            if x.is_null() {
                return Err(PyErr::fetch(py)); // the container is dropped with its filled slots
            }
            // SAFETY: `seq` is the new container of `n` slots made above, reachable by no
            // Python code (untracked, not returned yet; a tuple's only reference is ours), and
            // `filled < n`; SetItem steals `x` into an empty slot.
            unsafe {
                match container {
                    Container::List => ffi::PyList_SetItem(seq, *filled as ffi::Py_ssize_t, x),
                    Container::Tuple => ffi::PyTuple_SetItem(seq, *filled as ffi::Py_ssize_t, x),
                };
            }
            *filled += 1;
            Ok(())
        };
        if self.carried > 0 {
            let take = (8 - self.carried).min(bytes.len());
            self.carry[self.carried..self.carried + take].copy_from_slice(&bytes[..take]);
            self.carried += take;
            bytes = &bytes[take..];
            if self.carried < 8 {
                return Ok(());
            }
            put(&mut self.filled, self.carry)?;
            self.carried = 0;
        }
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            put(&mut self.filled, w.try_into().expect("8 bytes"))?;
        }
        let rest = words.remainder();
        self.carry[..rest.len()].copy_from_slice(rest);
        self.carried = rest.len();
        Ok(())
    }

    /// The whole list or tuple.
    fn finish(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let n = self.total.saturating_sub(NUMBERS_HEADER) / 8;
        match self.out {
            Some((seq, _, _)) if self.filled == n && self.carried == 0 => {
                if n > 0 {
                    // SAFETY: attached; `seq` was untracked when made (it has numbers)
                    // and is tracked once, now that every slot holds one.
                    unsafe { ffi::PyObject_GC_Track(seq.as_ptr().cast()) };
                }
                Ok(seq)
            }
            _ => Err(Self::corrupt(py, format!("{} of {n} numbers arrived", self.filled))),
        }
    }
}

/// Receive a numbers message that spans several records, decoding each record as it
/// arrives (with the GIL, which the wait for the next record releases) while the
/// sender writes the rest: the list is ready about when its last record is.
///
/// # Errors
/// `(error, taken)` as `endpoints::receive_classified`: a decode error (`MemoryError`, a
/// malformed payload: `CorruptSegmentError`) is `taken`; one of the read (truncated,
/// timed out, interrupted, closed) is not.
pub(crate) fn receive_streamed(
    py: Python<'_>,
    incoming: shmplane::Incoming<'_>,
    within: &crate::wait::Timeout,
    closing: Option<&crate::wait::CloseFlag>,
) -> Result<Py<PyAny>, (PyErr, bool)> {
    let total = incoming.head().total();
    let mut decoder = Decoder::new(total);
    let mut decode_error: Option<PyErr> = None;
    let result = {
        let decoder = &mut decoder;
        let decode_error = &mut decode_error;
        let copy = move |wait: shmplane::Wait<'_>| {
            let mut sink = |bytes: &[u8]| {
                Python::attach(|py| decoder.feed(py, bytes)).map_err(|e| {
                    *decode_error = Some(e);
                    Error::Interrupted
                })
            };
            incoming.read_streamed(&mut sink, wait)
        };
        match closing {
            Some(flag) => crate::wait::blocking_checked(py, within, |py| flag.check(py), copy),
            None => crate::wait::blocking(py, within, copy),
        }
    };
    // A list this process cannot allocate: MessageTooLargeError, as for any message.
    if let Some(e) = decode_error {
        return Err((crate::endpoints::too_large(py, total, e), true));
    }
    result.map_err(|e| (e, false))?;
    decoder.finish(py).map_err(|e| (crate::endpoints::too_large(py, total, e), true))
}
