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
use shmplane::frame::{Container, NumberType, Numbers, NUMBERS_HEADER};
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

/// Encode `obj` if it is a list or tuple of at least [`MIN_LEN`] numbers of one type
/// and call `f` with the payload (header and numbers); `None` if it is not (`f` is not
/// called).
///
/// # Errors
/// `f`'s.
pub(crate) fn with_encoded<R>(obj: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> PyResult<R>) -> Option<PyResult<R>> {
    let (container, n) = if let Ok(l) = obj.cast_exact::<PyList>() {
        (Container::List, l.len())
    } else if let Ok(t) = obj.cast_exact::<PyTuple>() {
        (Container::Tuple, t.len())
    } else {
        return None;
    };
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
