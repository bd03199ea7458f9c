//! `ByteSlot`: the storage of Python's `RawValue`/`RawArray` (`shmplane/sharedctypes.py`),
//! a thin newtype over `shmplane::ByteSlot`, with native fast paths for scalar values.

use crate::endpoints::tracked;
use crate::error::{to_py, IntoPyResult};
use crate::wait::{deadline, next_slice};
use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use shmplane::{ByteSlot, Error};
use std::os::fd::{FromRawFd, OwnedFd};

/// A latest value of raw bytes in shared memory (seqlock latch). See `shmplane.RawValue`.
#[pyclass(module = "shmplane._shmplane", name = "ByteSlot", frozen, weakref)]
pub struct PyByteSlot {
    inner: std::sync::RwLock<ByteSlot>,
}

impl PyByteSlot {
    fn with<T>(&self, f: impl FnOnce(&ByteSlot) -> T) -> T {
        f(&self.inner.read().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Decode the native-endian scalar of struct-module `code` from `b`.
fn decode_scalar(py: Python<'_>, code: char, b: &[u8]) -> PyResult<Py<PyAny>> {
    macro_rules! num {
        ($t:ty) => {{
            let v = <$t>::from_ne_bytes(b.try_into().map_err(|_| PyValueError::new_err("size mismatch"))?);
            Ok(v.into_pyobject(py)?.into_any().unbind())
        }};
    }
    match code {
        'b' => num!(i8),
        'B' => num!(u8),
        'h' => num!(i16),
        'H' => num!(u16),
        'i' => num!(i32),
        'I' => num!(u32),
        'l' | 'q' => num!(i64),
        'L' | 'Q' => num!(u64),
        'f' => num!(f32),
        'd' => num!(f64),
        '?' => Ok(pyo3::types::PyBool::new(py, b.first().is_some_and(|&x| x != 0)).to_owned().into_any().unbind()),
        _ => Err(PyValueError::new_err(format!("no native decoding for {code:?}"))),
    }
}

#[pymethods]
impl PyByteSlot {
    /// Create slot `name` holding the bytes of `data`, tagged with `fingerprint`.
    #[staticmethod]
    fn create<'py>(py: Python<'py>, name: &str, data: &Bound<'py, PyAny>, fingerprint: u64) -> PyResult<Bound<'py, Self>> {
        let buf = PyUntypedBuffer::get(data)?;
        if !buf.is_c_contiguous() {
            return Err(PyTypeError::new_err("initial value is not a contiguous buffer"));
        }
        // SAFETY: the exported buffer is readable for len_bytes while `buf` lives.
        let bytes = unsafe { std::slice::from_raw_parts(buf.buf_ptr() as *const u8, buf.len_bytes()) };
        let slot = ByteSlot::create(name, bytes, fingerprint).py_err(py)?;
        tracked(py, PyByteSlot { inner: std::sync::RwLock::new(slot) })
    }

    /// Open slot `name`, checking `fingerprint`.
    #[staticmethod]
    fn open<'py>(py: Python<'py>, name: &str, fingerprint: u64) -> PyResult<Bound<'py, Self>> {
        let slot = py.detach(|| ByteSlot::open(name, fingerprint)).py_err(py)?;
        tracked(py, PyByteSlot { inner: std::sync::RwLock::new(slot) })
    }

    /// Adopt descriptor `fd` (ownership passes to the slot). Used by unpickling.
    #[staticmethod]
    #[pyo3(signature = (fd, name=None))]
    fn _from_fd<'py>(py: Python<'py>, fd: i32, name: Option<String>) -> PyResult<Bound<'py, Self>> {
        if fd < 0 {
            return Err(PyValueError::new_err(format!("invalid descriptor {fd}")));
        }
        // SAFETY: shmplane._handles passes a descriptor it owns and gives up.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let slot = py.detach(|| ByteSlot::from_fd(fd, name)).py_err(py)?;
        tracked(py, PyByteSlot { inner: std::sync::RwLock::new(slot) })
    }

    /// A consistent copy of the value as bytes.
    fn read<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        self.with(|s| {
            let mut out = vec![0u8; s.len()];
            s.read_into(&mut out).py_err(py)?;
            Ok(PyBytes::new(py, &out))
        })
    }

    /// A consistent read of a scalar of struct-module `code` (native order), decoded
    /// without an intermediate bytes object.
    fn read_scalar(&self, py: Python<'_>, code: char) -> PyResult<Py<PyAny>> {
        self.with(|s| {
            let mut out = [0u8; 8];
            let n = s.len();
            if n > 8 {
                return Err(PyValueError::new_err("not a scalar slot"));
            }
            s.read_into(&mut out[..n]).py_err(py)?;
            decode_scalar(py, code, &out[..n])
        })
    }

    /// Replace the value with the bytes of `data` (exactly `len` bytes); returns the
    /// new version.
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<u64> {
        let buf = PyUntypedBuffer::get(data)?;
        if !buf.is_c_contiguous() {
            return Err(PyTypeError::new_err("value is not a contiguous buffer"));
        }
        // SAFETY: as in create.
        let bytes = unsafe { std::slice::from_raw_parts(buf.buf_ptr() as *const u8, buf.len_bytes()) };
        self.with(|s| s.write(bytes)).py_err(py)
    }

    /// The current version: changes after every write.
    #[getter]
    fn version(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(|s| s.version()).py_err(py)
    }

    /// Wait until the version differs from `since` (timeout in seconds, None: forever);
    /// returns the new version. GIL released; Ctrl-C works.
    #[pyo3(signature = (since, timeout=None))]
    fn wait_for_update(&self, py: Python<'_>, since: u64, timeout: Option<f64>) -> PyResult<u64> {
        let deadline = deadline(timeout)?;
        loop {
            let Some(slice) = next_slice(deadline) else { return Err(to_py(py, Error::Timeout)) };
            let r = py.detach(|| self.with(|s| s.wait_for_update(since, Some(slice))));
            match r {
                Ok(v) => return Ok(v),
                Err(Error::Timeout) => py.check_signals()?,
                Err(e) => return Err(to_py(py, e)),
            }
        }
    }

    /// Value length in bytes.
    fn __len__(&self) -> usize {
        self.with(ByteSlot::len)
    }

    /// The type fingerprint stored at creation.
    #[getter]
    fn fingerprint(&self) -> u64 {
        self.with(ByteSlot::fingerprint)
    }

    /// The slot's name.
    #[getter]
    fn name(&self) -> Option<String> {
        self.with(|s| s.name().map(str::to_owned))
    }

    /// The descriptor holding this handle.
    fn fileno(&self, py: Python<'_>) -> PyResult<i32> {
        self.with(|s| s.fd()).ok_or_else(|| to_py(py, Error::Closed))
    }

    /// Close this handle (idempotent); the segment goes with the last handle.
    fn close(&self) {
        self.inner.write().unwrap_or_else(|e| e.into_inner()).close();
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("shmplane._handles")?.call_method1("reduce_slot", (slf,))
    }

    fn __repr__(&self) -> String {
        self.with(|s| format!("<shmplane.ByteSlot name={:?} len={}>", s.name().unwrap_or(""), s.len()))
    }
}
