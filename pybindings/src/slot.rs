//! `ByteSlot`: the storage of Python's `RawValue`/`RawArray` (`shmplane/sharedctypes.py`),
//! a thin newtype over `shmplane::ByteSlot`; and `_SlotView`, their native base class:
//! `.value`, indexing and slicing of numeric elements without a Python frame or a
//! ctypes object, falling back to the subclass's ctypes hooks for everything else.

use crate::endpoints::tracked;
use crate::error::{to_py, IntoPyResult};
use crate::wait::{blocking_checked, Timeout};
use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyIndexError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyList, PySlice};
use shmplane::{ByteSlot, Error};
use std::os::fd::{FromRawFd, OwnedFd};

/// A latest value of raw bytes in shared memory (seqlock latch). See `shmplane.RawValue`.
///
///
/// Reads are the hot path (`RawValue.value` is ~60 ns in all), so the slot is not
/// behind a lock: it changes only in `close`, which holds the GIL *and* the `busy`
/// lock for writing. Code holding the GIL reads it freely (`with`), provided it runs no
/// Python code meanwhile (Python code could call `close`); code that releases the GIL
/// reads it holding `busy` for reading (`detached`). Free-threaded Python is not
/// supported (abi3 builds cannot target it), so the GIL is a real lock here.
///
/// A fork copies `busy` as it is: held for reading if another thread was waiting in
/// the parent, by a thread the child does not have. So `busy` belongs to one fork
/// generation, and the first user in a forked child replaces it with a free one.
#[pyclass(module = "shmplane._shmplane", name = "ByteSlot", frozen, weakref)]
pub struct PyByteSlot {
    inner: std::cell::UnsafeCell<ByteSlot>,
    busy: std::cell::UnsafeCell<Busy>,
}

/// The lock of GIL-free users, the fork generation it belongs to, and whether a
/// `close` is under way (new GIL-free users then get `Closed` instead of the lock, so
/// that a waiter that keeps re-entering its wait cannot starve `close`).
struct Busy {
    generation: u64,
    lock: std::sync::Arc<std::sync::RwLock<()>>,
    closing: bool,
}

impl Busy {
    fn new() -> Busy {
        shmplane::process::install_fork_hook();
        Busy { generation: shmplane::process::fork_generation(), lock: Default::default(), closing: false }
    }
}

// SAFETY: `inner` is mutated only by `close`, holding the GIL and `busy` for writing;
// shared references exist only under the GIL without running Python code (`with`) or
// under `busy` for reading (`detached`): never alongside the mutation. `busy` is read
// and replaced only under the GIL without running Python code (`busy`). ByteSlot is Sync.
unsafe impl Sync for PyByteSlot {}

impl PyByteSlot {
    fn new(slot: ByteSlot) -> PyByteSlot {
        PyByteSlot { inner: std::cell::UnsafeCell::new(slot), busy: std::cell::UnsafeCell::new(Busy::new()) }
    }

    /// The `busy` lock of this fork generation (a free one in a freshly forked child),
    /// or `None` once a close is under way. `close` marks it closing.
    fn busy(&self, _gil: Python<'_>, close: bool) -> Option<std::sync::Arc<std::sync::RwLock<()>>> {
        // SAFETY: only this function touches `busy`, holding the GIL (the token) and
        // running no Python code, so this is the only reference to it.
        let busy = unsafe { &mut *self.busy.get() };
        if busy.generation != shmplane::process::fork_generation() {
            *busy = Busy::new();
        }
        if busy.closing && !close {
            return None;
        }
        busy.closing |= close;
        Some(busy.lock.clone())
    }

    /// True once a `close` is under way (the GIL is the token).
    fn closing(&self, _gil: Python<'_>) -> bool {
        // SAFETY: `busy` is touched only under the GIL by code that runs no Python code;
        // this reads one flag of it.
        unsafe { &*self.busy.get() }.closing
    }

    /// Run `f` on the slot holding the GIL. `f` must not run Python code (nor create
    /// Python objects, which can start a collection and run finalizers).
    #[inline]
    fn with<T>(&self, _gil: Python<'_>, f: impl FnOnce(&ByteSlot) -> T) -> T {
        // SAFETY: we hold the GIL (the token), and `close` needs it to mutate `inner`;
        // `f` runs no Python code, so `close` cannot run until the borrow ends.
        f(unsafe { &*self.inner.get() })
    }

    /// Run `f` on the slot, releasing the GIL if it copies more than [`DETACH_BYTES`].
    fn run<T: Send>(
        &self,
        py: Python<'_>,
        bytes: usize,
        f: impl FnOnce(&ByteSlot) -> shmplane::Result<T> + Send,
    ) -> shmplane::Result<T> {
        if bytes > DETACH_BYTES { self.detached(py, f) } else { self.with(py, f) }
    }

    /// Read a consistent copy of the whole value into the `n` bytes at `dst`; its
    /// version.
    ///
    /// # Safety
    /// `dst` must be valid for writes of `n` bytes until this returns, and nothing else
    /// may access those bytes meanwhile (the GIL may be released during the copy).
    unsafe fn read_into_raw(&self, py: Python<'_>, dst: usize, n: usize) -> shmplane::Result<u64> {
        self.run(py, n, |s| {
            // SAFETY: the caller's contract.
            s.read_into(unsafe { std::slice::from_raw_parts_mut(dst as *mut u8, n) })
        })
    }

    /// Run the write `f` on the slot: holding the GIL for up to [`DETACH_BYTES`] (a few
    /// words: the GIL is cheaper to keep than to release), else without it. While
    /// another live writer keeps the writer lock (one stopped mid-write keeps it as long
    /// as it is stopped), the GIL-holding attempt gives up after one wait slice (its
    /// hook may run no Python code, so it cannot check for signals) and the write goes
    /// the GIL-free way, whose wait checks Ctrl-C and a `close` from another thread
    /// every slice. `f` may run twice: nothing is written by an attempt that gave up.
    fn write_op(
        &self,
        py: Python<'_>,
        bytes: usize,
        f: impl Fn(&ByteSlot, shmplane::Wait<'_>) -> shmplane::Result<u64> + Sync,
    ) -> PyResult<u64> {
        if bytes <= DETACH_BYTES {
            let mut contended = false;
            let mut give_up = || {
                contended = true;
                Err(Error::Interrupted)
            };
            let result = self.with(py, |s| f(s, shmplane::Wait::forever().with_hook(&mut give_up)));
            if !contended {
                return result.py_err(py);
            }
        }
        let Some(busy) = self.busy(py, false) else { return Err(to_py(py, Error::Closed)) };
        // Every slice: a `close` from another thread ends the wait with ClosedError.
        let closed = |py: Python<'_>| if self.closing(py) { Err(to_py(py, Error::Closed)) } else { Ok(()) };
        blocking_checked(py, &Timeout::forever(), closed, |wait| {
            let _reading = busy.read().unwrap_or_else(|e| e.into_inner());
            // SAFETY: `close` needs `busy` for writing to mutate `inner`.
            f(unsafe { &*self.inner.get() }, wait)
        })
    }

    /// Run `f` on the slot with the GIL released.
    fn detached<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&ByteSlot) -> shmplane::Result<T> + Send,
    ) -> shmplane::Result<T> {
        let Some(busy) = self.busy(py, false) else { return Err(Error::Closed) };
        py.detach(|| {
            let _reading = busy.read().unwrap_or_else(|e| e.into_inner());
            // SAFETY: `close` needs `busy` for writing to mutate `inner`.
            f(unsafe { &*self.inner.get() })
        })
    }
}

/// Reads above this many bytes release the GIL (the copy dwarfs the release).
const DETACH_BYTES: usize = 1 << 16;

/// numpy's array type and the dtypes of the numeric struct-module codes, fetched once
/// (by the first `snapshot()`): the hot path makes its array with one numpy call and
/// no lookups.
struct Numpy {
    array_type: Py<PyAny>,
    /// By [`Numpy::new_array`]'s index: b B h H i I q Q f d ?.
    dtypes: [Py<numpy::PyArrayDescr>; 11],
}

static NUMPY: pyo3::sync::PyOnceLock<Numpy> = pyo3::sync::PyOnceLock::new();

impl Numpy {
    /// Import numpy (an ImportError if it is missing: the numpy crate would panic) and
    /// fetch the types.
    fn load(py: Python<'_>) -> PyResult<Numpy> {
        use numpy::{dtype, npyffi};
        py.import("numpy")?;
        // SAFETY: attached; numpy imports (above), so its API table loads; the type
        // object is static in numpy, and we keep a reference to it.
        let array_type = unsafe { Bound::from_borrowed_ptr(py, npyffi::get_type_object(py, npyffi::NpyTypes::PyArray_Type).cast()) }.unbind();
        let dtypes = [
            dtype::<i8>(py),
            dtype::<u8>(py),
            dtype::<i16>(py),
            dtype::<u16>(py),
            dtype::<i32>(py),
            dtype::<u32>(py),
            dtype::<i64>(py),
            dtype::<u64>(py),
            dtype::<f32>(py),
            dtype::<f64>(py),
            dtype::<bool>(py),
        ]
        .map(Bound::unbind);
        Ok(Numpy { array_type, dtypes })
    }

    /// A new uninitialised C-contiguous 1-d array of `len` elements of native numeric
    /// struct-module `code` ('l'/'L' are 8 bytes: `PySlotView::new` checks), made by
    /// one call of numpy's C API: a new reference, or null with an exception set on
    /// failure; `None` for another code.
    #[inline]
    fn new_array(&self, py: Python<'_>, code: char, len: usize) -> Option<*mut pyo3::ffi::PyObject> {
        use numpy::npyffi::{npy_intp, PyArray_Descr, PY_ARRAY_API};
        let descr = self.descr(code)?;
        let mut dims = [len as npy_intp];
        // SAFETY: attached (the token); `load` loaded numpy's API table, and
        // `array_type` is its array type. `PyArray_NewFromDescr` steals a reference to
        // the descriptor (the INCREF) and copies `dims`; no data pointer: numpy
        // allocates the `len` elements itself.
        Some(unsafe {
            pyo3::ffi::Py_INCREF(descr);
            PY_ARRAY_API.PyArray_NewFromDescr(
                py,
                self.array_type.as_ptr().cast(),
                descr.cast::<PyArray_Descr>(),
                1,
                dims.as_mut_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
                std::ptr::null_mut(),
            )
        })
    }

    /// The dtype of native numeric struct-module `code` (borrowed), `None` for another.
    #[inline]
    fn descr(&self, code: char) -> Option<*mut pyo3::ffi::PyObject> {
        let i = match code {
            'b' => 0,
            'B' => 1,
            'h' => 2,
            'H' => 3,
            'i' => 4,
            'I' => 5,
            'l' | 'q' => 6,
            'L' | 'Q' => 7,
            'f' => 8,
            'd' => 9,
            '?' => 10,
            _ => return None,
        };
        Some(self.dtypes[i].as_ptr())
    }
}

/// `snapshot()` arrays of at most this many bytes are recycled ([`Recycled`]): below it
/// numpy's allocation and deallocation are most of the cost (~800 of ~1100
/// instructions for 16 doubles), above it the copy is.
const RECYCLE_BYTES: usize = 4096;

/// The last two small arrays `snapshot()` returned, each with a reference kept: the
/// free-list pattern of CPython's own floats. An array that only this keeps alive (its
/// reference count 1: no name, view or buffer export reaches it) and that has no weak
/// reference is refilled and handed out again instead of a new one; to its caller it
/// is a new array, which nothing else holds. Two, so that `x = arr.snapshot()` in a
/// loop, where the previous `x` is still bound during the call, alternates between
/// them. An array whose shape, strides, dtype or flags its holder changed, or that is
/// weakly referenced, is let go at the next `snapshot()`.
///
/// What its holders can see: `sys.getrefcount` counts the kept reference, so
/// `ndarray.resize` needs `refcheck=False`; an array they let go lives (and its weak
/// references' callbacks wait) until the view's next `snapshot()` or `close()`.
/// Memory: at most two arrays of [`RECYCLE_BYTES`] per view.
#[derive(Default)]
struct Recycled {
    arrays: [std::cell::Cell<*mut pyo3::ffi::PyObject>; 2],
    /// Which entry the next kept array replaces when both are held by their callers.
    next: std::cell::Cell<usize>,
}

// SAFETY: the cells are read and written only holding the GIL (every method takes the
// token; the abi3 binding is never free-threaded, so the GIL is a real lock) and no
// reference into them outlives a method; `Drop` attaches before releasing the arrays.
unsafe impl Sync for Recycled {}
// SAFETY: as above: the pointers are Python objects, used only attached.
unsafe impl Send for Recycled {}

impl Recycled {
    /// A kept array that nothing else holds and that still has the layout `snapshot()`
    /// made (`len` elements of `elem` bytes of dtype `descr`, `flags`), as a new
    /// reference; arrays changed by their holders and let go are released on the way.
    /// Releasing one may run Python code (its weak references' callbacks), which may
    /// re-enter this view: an entry is cleared before its array is released.
    fn take(&self, _attached: Python<'_>, descr: *mut pyo3::ffi::PyObject, len: usize, elem: usize) -> Option<*mut pyo3::ffi::PyObject> {
        for slot in &self.arrays {
            let arr = slot.get();
            // SAFETY: a non-null entry is a numpy array we hold a reference to (see
            // `keep`); attached (the token).
            if arr.is_null() || unsafe { pyo3::ffi::Py_REFCNT(arr) } != 1 {
                continue;
            }
            // SAFETY: as above: an ndarray, so its fields are numpy's public struct
            // (not free-threaded: the abi3 binding never is), `nd` >= 1 dimensions.
            let same = unsafe {
                let f = &*numpy::npyffi::_PyArray_GET_ITEM_DATA(arr.cast());
                f.nd == 1
                    && *f.dimensions == len as numpy::npyffi::npy_intp
                    && *f.strides == elem as numpy::npyffi::npy_intp
                    && f.descr.cast() == descr
                    && f.flags == SNAPSHOT_FLAGS
                    && f.base.is_null()
                    && f.weakreflist.is_null()
                    && !f.data.is_null()
            };
            if same {
                // SAFETY: a new reference for the caller; ours stays.
                unsafe { pyo3::ffi::Py_INCREF(arr) };
                return Some(arr);
            }
            // Reshaped, retyped, made read-only or weakly referenced by a holder that
            // let it go: release it (the entry is cleared first, see above).
            slot.set(std::ptr::null_mut());
            // SAFETY: our reference, the last: the array is freed (attached).
            unsafe { pyo3::ffi::Py_DECREF(arr) };
        }
        None
    }

    /// Keep a reference to `arr`, a new array of `snapshot()`, for a later `take`. The
    /// array it replaces may be freed, running Python code (as in `take`).
    fn keep(&self, _attached: Python<'_>, arr: *mut pyo3::ffi::PyObject) {
        // SAFETY: the caller's new array (attached): our own reference to it.
        if unsafe { (*numpy::npyffi::_PyArray_GET_ITEM_DATA(arr.cast())).flags } != SNAPSHOT_FLAGS {
            return;
        }
        // SAFETY: as above; the reference `arrays` keeps.
        unsafe { pyo3::ffi::Py_INCREF(arr) };
        let i = match self.arrays.iter().position(|a| a.get().is_null()) {
            Some(i) => i,
            None => {
                let i = self.next.get() % 2;
                self.next.set(i + 1);
                i
            }
        };
        let old = self.arrays[i].replace(arr);
        if !old.is_null() {
            // SAFETY: our reference (attached); the entry already holds `arr`.
            unsafe { pyo3::ffi::Py_DECREF(old) };
        }
    }

    /// Release the kept arrays (`close()`), as in `take`.
    fn clear(&self, _attached: Python<'_>) {
        for slot in &self.arrays {
            let arr = slot.replace(std::ptr::null_mut());
            if !arr.is_null() {
                // SAFETY: our reference (attached); the entry is already cleared.
                unsafe { pyo3::ffi::Py_DECREF(arr) };
            }
        }
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        if self.arrays.iter().any(|a| !a.get().is_null()) {
            Python::attach(|py| self.clear(py));
        }
    }
}

/// The flags of a new 1-d array numpy made and owns: both contiguities, its own data,
/// aligned, writeable.
const SNAPSHOT_FLAGS: std::ffi::c_int = numpy::npyffi::NPY_ARRAY_C_CONTIGUOUS
    | numpy::npyffi::NPY_ARRAY_F_CONTIGUOUS
    | numpy::npyffi::NPY_ARRAY_OWNDATA
    | numpy::npyffi::NPY_ARRAY_ALIGNED
    | numpy::npyffi::NPY_ARRAY_WRITEABLE;

/// The data pointer of numpy array `arr`.
///
/// # Safety
/// `arr` must be a numpy array.
#[inline]
unsafe fn array_data(arr: &Bound<'_, PyAny>) -> *mut u8 {
    // SAFETY: the caller's contract: `arr` is an ndarray (attached: the token).
    unsafe { (*numpy::npyffi::_PyArray_GET_ITEM_DATA(arr.as_ptr().cast())).data.cast() }
}

/// A new reference to the number of struct-module `code` (a native numeric code:
/// `PySlotView::new` and `PyField::new` check them) whose bytes are `n`, zero-extended
/// in the low bits (`ByteSlot::read_number`, `ByteSlot::number_in_word`), made by the C
/// API directly (null with an exception set on failure).
#[inline]
fn new_number(code: char, n: u64) -> *mut pyo3::ffi::PyObject {
    use pyo3::ffi;
    // SAFETY: attached (every caller holds the GIL: slot functions CPython calls
    // attached, or pyo3 methods); each constructor returns a new reference or null
    // with an exception set.
    unsafe {
        match code {
            'd' => ffi::PyFloat_FromDouble(f64::from_bits(n)),
            'l' | 'q' => ffi::PyLong_FromLongLong(n as i64),
            'L' | 'Q' => ffi::PyLong_FromUnsignedLongLong(n),
            'i' => ffi::PyLong_FromLongLong((n as u32 as i32).into()),
            'I' => ffi::PyLong_FromUnsignedLongLong(n),
            'f' => ffi::PyFloat_FromDouble(f32::from_bits(n as u32).into()),
            'h' => ffi::PyLong_FromLongLong((n as u16 as i16).into()),
            'H' => ffi::PyLong_FromUnsignedLongLong(n),
            'b' => ffi::PyLong_FromLongLong((n as u8 as i8).into()),
            'B' => ffi::PyLong_FromUnsignedLongLong(n),
            '?' => ffi::PyBool_FromLong((n != 0).into()),
            _ => {
                ffi::PyErr_SetString(ffi::PyExc_SystemError, c"shmplane: no native decoding for this code".as_ptr());
                std::ptr::null_mut()
            }
        }
    }
}

/// A new list of the `n` numbers of struct-module `code` (native numeric: checked in
/// `PySlotView::new`) at element positions `at(0..n)` of `buf`, built with the C API
/// in one tight loop per type (a list of 1000 doubles is most of an `arr[:]`).
fn list_of<'py>(py: Python<'py>, code: char, buf: &[u8], n: usize, at: impl Fn(usize) -> usize) -> PyResult<Bound<'py, PyList>> {
    use pyo3::ffi;
    // SAFETY: attached (the token); PyList_New returns a new reference or null with an
    // exception set.
    let list = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyList_New(n as ffi::Py_ssize_t))? }.cast_into::<PyList>()?;
    macro_rules! fill {
        ($t:ty, $make:expr) => {{
            const SIZE: usize = size_of::<$t>();
            for k in 0..n {
                let i = at(k) * SIZE;
                let bytes: [u8; SIZE] = buf[i..i + SIZE].try_into().expect("slice of SIZE bytes");
                // SAFETY: attached; the constructor returns a new reference or null with
                // an exception set.
                let item = unsafe { $make(<$t>::from_ne_bytes(bytes)) };
                if item.is_null() {
                    return Err(PyErr::fetch(py));
                }
                // SAFETY: `list` is a new list of `n` empty items and `k < n`;
                // PyList_SetItem steals `item`.
                unsafe { ffi::PyList_SetItem(list.as_ptr(), k as ffi::Py_ssize_t, item) };
            }
        }};
    }
    match code {
        'd' => fill!(f64, ffi::PyFloat_FromDouble),
        'f' => fill!(f32, |v: f32| ffi::PyFloat_FromDouble(v.into())),
        'l' | 'q' => fill!(i64, ffi::PyLong_FromLongLong),
        'L' | 'Q' => fill!(u64, ffi::PyLong_FromUnsignedLongLong),
        'i' => fill!(i32, |v: i32| ffi::PyLong_FromLongLong(v.into())),
        'I' => fill!(u32, |v: u32| ffi::PyLong_FromUnsignedLongLong(v.into())),
        'h' => fill!(i16, |v: i16| ffi::PyLong_FromLongLong(v.into())),
        'H' => fill!(u16, |v: u16| ffi::PyLong_FromUnsignedLongLong(v.into())),
        'b' => fill!(i8, |v: i8| ffi::PyLong_FromLongLong(v.into())),
        'B' => fill!(u8, |v: u8| ffi::PyLong_FromUnsignedLongLong(v.into())),
        '?' => fill!(u8, |v: u8| ffi::PyBool_FromLong((v != 0).into())),
        _ => return Err(PyValueError::new_err(format!("no native decoding for {code:?}"))),
    }
    Ok(list)
}

/// [`new_number`] as an owned object for pyo3 code.
#[inline]
fn decode_number(py: Python<'_>, code: char, n: u64) -> PyResult<Py<PyAny>> {
    // SAFETY: `new_number` returns a new reference or null with an exception set.
    Ok(unsafe { Bound::from_owned_ptr_or_err(py, new_number(code, n)) }?.unbind())
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
        tracked(py, PyByteSlot::new(slot))
    }

    /// Open slot `name`, checking `fingerprint`.
    #[staticmethod]
    #[pyo3(signature = (name, fingerprint, timeout=0.0))]
    fn open<'py>(py: Python<'py>, name: &str, fingerprint: u64, timeout: Option<f64>) -> PyResult<Bound<'py, Self>> {
        let slot = crate::wait::open_waiting(py, timeout, || ByteSlot::open(name, fingerprint))?;
        tracked(py, PyByteSlot::new(slot))
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
        tracked(py, PyByteSlot::new(slot))
    }

    /// A consistent copy of the value as bytes.
    fn read<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let len = self.with(py, ByteSlot::len);
        let mut out = vec![0u8; len];
        // SAFETY: `out` is ours, `len` bytes, and lives across the call.
        unsafe { self.read_into_raw(py, out.as_mut_ptr() as usize, len) }.py_err(py)?;
        Ok(PyBytes::new(py, &out))
    }

    /// Replace the value with the bytes of `data` (exactly `len` bytes); returns the
    /// new version.
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<u64> {
        let buf = PyUntypedBuffer::get(data)?;
        if !buf.is_c_contiguous() {
            return Err(PyTypeError::new_err("value is not a contiguous buffer"));
        }
        let (ptr, n) = (buf.buf_ptr() as usize, buf.len_bytes());
        let write = |s: &ByteSlot, wait: shmplane::Wait<'_>| {
            // SAFETY: the exported buffer is readable for len_bytes while `buf` lives
            // (until the end of this function). Like numpy's own GIL-free copies, we
            // assume no other thread resizes the source meanwhile.
            s.write_with(unsafe { std::slice::from_raw_parts(ptr as *const u8, n) }, wait)
        };
        self.write_op(py, n, write)
    }

    /// Read a consistent copy into the writable C-contiguous buffer `out` (exactly
    /// `len` bytes, e.g. a numpy array); returns its version. The GIL is released
    /// for values over 64 KiB.
    fn read_into(&self, py: Python<'_>, out: &Bound<'_, PyAny>) -> PyResult<u64> {
        let buf = PyUntypedBuffer::get(out)?;
        if buf.readonly() || !buf.is_c_contiguous() {
            return Err(PyTypeError::new_err("read_into needs a writable C-contiguous buffer"));
        }
        // SAFETY: the exported buffer is writable for len_bytes while `buf` lives (until
        // the end of this function). Like numpy's own GIL-free copies, we assume no
        // other thread touches the destination meanwhile.
        unsafe { self.read_into_raw(py, buf.buf_ptr() as usize, buf.len_bytes()) }.py_err(py)
    }

    /// A consistent copy of bytes `offset .. offset + n`.
    fn read_at<'py>(&self, py: Python<'py>, offset: usize, n: usize) -> PyResult<Bound<'py, PyBytes>> {
        let len = self.with(py, ByteSlot::len);
        if offset.checked_add(n).is_none_or(|end| end > len) {
            return Err(to_py(py, Error::InvalidArgument(format!("bytes {offset}..+{n} are outside the {len}-byte value"))));
        }
        let mut out = vec![0u8; n];
        self.with(py, |s| s.read_at(offset, &mut out)).py_err(py)?;
        Ok(PyBytes::new(py, &out))
    }

    /// Write `data` as elements of `elem` bytes, element `k` at byte `offset + k *
    /// stride`, in one consistent write (other bytes unchanged); the new version.
    fn write_strided(&self, py: Python<'_>, offset: usize, stride: usize, elem: usize, data: &[u8]) -> PyResult<u64> {
        self.write_op(py, data.len(), |s, wait| s.write_strided_with(offset, stride, elem, data, wait))
    }

    /// The current version: grows with every completed write.
    #[getter]
    fn version(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |s| s.version()).py_err(py)
    }

    /// Wait until the version is greater than `since` (timeout in seconds, None: forever);
    /// returns the new version. GIL released; Ctrl-C works.
    #[pyo3(signature = (since, timeout=None))]
    fn wait_for_update(&self, py: Python<'_>, since: u64, timeout: Option<f64>) -> PyResult<u64> {
        let timeout = Timeout::new(timeout, true)?;
        let Some(busy) = self.busy(py, false) else { return Err(to_py(py, Error::Closed)) };
        // Every slice: a `close` from another thread ends the wait with ClosedError.
        let closed = |py: Python<'_>| if self.closing(py) { Err(to_py(py, Error::Closed)) } else { Ok(()) };
        blocking_checked(py, &timeout, closed, |wait| {
            let _reading = busy.read().unwrap_or_else(|e| e.into_inner());
            // SAFETY: `close` needs `busy` for writing to mutate `inner`.
            unsafe { &*self.inner.get() }.wait_for_update_with(since, wait)
        })
    }

    /// A descriptor readable once the version is greater than ``since`` (re-armed by each
    /// call), or None when the slot's doorbell table is full (see
    /// ``shmplane._aio.slot_update``).
    fn _update_fd(&self, py: Python<'_>, since: u64) -> PyResult<Option<i32>> {
        self.with(py, |s| s.update_fd(since)).map_err(|e| to_py(py, e))
    }

    /// How ``wait_for_update`` waits: 'spin', 'block' or 'adaptive(spin_us=N)'.
    #[getter]
    fn policy(&self, py: Python<'_>) -> String {
        crate::endpoints::policy_name(self.with(py, ByteSlot::wait_policy))
    }

    /// Set how ``wait_for_update`` waits ('spin', 'adaptive' or 'block'; spin_us for
    /// adaptive), as for channels.
    #[pyo3(signature = (policy, spin_us=20.0))]
    fn set_policy(&self, py: Python<'_>, policy: &str, spin_us: f64) -> PyResult<()> {
        let p = crate::endpoints::parse_policy(policy, spin_us)?;
        self.with(py, |s| s.set_wait_policy(p));
        Ok(())
    }

    /// Value length in bytes.
    fn __len__(&self, py: Python<'_>) -> usize {
        self.with(py, ByteSlot::len)
    }

    /// The type fingerprint stored at creation.
    #[getter]
    fn fingerprint(&self, py: Python<'_>) -> u64 {
        self.with(py, ByteSlot::fingerprint)
    }

    /// The slot's name.
    #[getter]
    fn name(&self, py: Python<'_>) -> Option<String> {
        self.with(py, |s| s.name().map(str::to_owned))
    }

    /// The descriptor holding this handle.
    fn fileno(&self, py: Python<'_>) -> PyResult<i32> {
        self.with(py, |s| s.fd()).ok_or_else(|| to_py(py, Error::Closed))
    }

    /// Close this handle (idempotent); the segment goes with the last handle.
    fn close(&self, py: Python<'_>) {
        let busy = self.busy(py, true).expect("close always gets the lock");
        // Waiting for a GIL-free user (at most one wait slice) must not hold the GIL:
        // every other thread would stop meanwhile.
        let _writing = loop {
            match busy.try_write() {
                Ok(guard) => break guard,
                Err(std::sync::TryLockError::Poisoned(e)) => break e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    py.detach(|| std::thread::sleep(std::time::Duration::from_micros(200)));
                }
            }
        };
        // SAFETY: we hold the GIL (excluding `with`) and `busy` for writing (excluding
        // `detached`): this is the only reference to `inner` now. ByteSlot::close runs
        // no Python code.
        unsafe { &mut *self.inner.get() }.close();
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("shmplane._handles")?.call_method1("reduce_slot", (slf,))
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        self.with(py, |s| format!("<shmplane.ByteSlot name={:?} len={}>", s.name().unwrap_or(""), s.len()))
    }
}

/// Encode `v` as the native-endian scalar of struct-module `code` into `out` (its
/// first `size` bytes), with ctypes' semantics for the exact types it accepts: floats
/// for 'f'/'d', ints masked to the width for integer codes, bools for '?'. `false`:
/// not a fast-path case (the caller asks ctypes, which also raises ctypes' errors).
/// Copy `v` into `out` (`n` elements of struct-module `code`, native order) if it is a
/// 1-d buffer of exactly `n` elements of that type (any strides): the bytes ctypes'
/// conversion of each element would give. False (nothing written) for anything else:
/// the caller converts element by element.
///
/// # Errors
/// The buffer's copy failed (a Python error from the exporter).
fn copy_from_buffer(py: Python<'_>, code: char, v: &Bound<'_, PyAny>, n: usize, out: &mut [u8]) -> PyResult<bool> {
    use pyo3::buffer::PyBuffer;
    macro_rules! take {
        ($t:ty) => {{
            let Ok(buf) = PyBuffer::<$t>::get(v) else { return Ok(false) };
            // The format checked here, not only by pyo3 (0.30 takes '>' for native on a
            // little-endian machine, and 'c' for u8: found in review): a bare letter, or
            // one marked native ('@', '=', this machine's order mark), and the code's own.
            let format = buf.format().to_bytes();
            let mark = if cfg!(target_endian = "little") { b'<' } else { b'>' };
            let letter = match format {
                [c] => *c,
                [m, c] if *m == b'@' || *m == b'=' || *m == mark => *c,
                _ => return Ok(false),
            };
            let same = letter == code as u8 || matches!((code, letter), ('l', b'q') | ('q', b'l') | ('L', b'Q') | ('Q', b'L'));
            if !same {
                return Ok(false);
            }
            if buf.dimensions() != 1 || buf.item_count() != n || out.len() != n * size_of::<$t>() {
                return Ok(false);
            }
            let mut items = vec![<$t>::default(); n];
            buf.copy_to_slice(py, &mut items)?;
            for (o, x) in out.chunks_exact_mut(size_of::<$t>()).zip(&items) {
                o.copy_from_slice(&x.to_ne_bytes());
            }
            Ok(true)
        }};
    }
    match code {
        'd' => take!(f64),
        'f' => take!(f32),
        'q' | 'l' => take!(i64),
        'Q' | 'L' => take!(u64),
        'i' => take!(i32),
        'I' => take!(u32),
        'h' => take!(i16),
        'H' => take!(u16),
        'b' => take!(i8),
        'B' => take!(u8),
        _ => Ok(false),
    }
}

fn encode_scalar(code: char, v: &Bound<'_, PyAny>, out: &mut [u8; 8]) -> bool {
    macro_rules! put {
        ($x:expr) => {{
            let b = $x.to_ne_bytes();
            out[..b.len()].copy_from_slice(&b);
            true
        }};
    }
    match code {
        'd' | 'f' => {
            // Subclasses too (numpy's float64): ctypes takes a float's stored value
            // (`PyFloat_AsDouble` calls no `__float__` for one).
            let Ok(f) = v.cast::<PyFloat>() else { return false };
            let x = f.value();
            if code == 'd' { put!(x) } else { put!(x as f32) }
        }
        '?' => match v.cast_exact::<PyBool>() {
            Ok(b) => put!(u8::from(b.is_true())),
            Err(_) => false,
        },
        _ => {
            if !v.is_exact_instance_of::<PyInt>() {
                return false;
            }
            // Masking (ctypes' semantics for out-of-range ints) of whichever of i64/u64 holds it.
            let bits = match (v.extract::<i64>(), v.extract::<u64>()) {
                (Ok(x), _) => x as u64,
                (_, Ok(x)) => x,
                _ => return false,
            };
            match code {
                'b' | 'B' => put!(bits as u8),
                'h' | 'H' => put!(bits as u16),
                'i' | 'I' => put!(bits as u32),
                'l' | 'L' | 'q' | 'Q' => put!(bits),
                _ => false,
            }
        }
    }
}

/// Native base of `shmplane.RawValue` and `shmplane.RawArray`: a view of `len`
/// elements of `elem` bytes in a slot. With a numeric struct-module `code`, `.value`
/// (scalars), `len()`, indexing and slicing run here; otherwise (and for values the
/// fast path does not take) they call the subclass hooks `_get_value`, `_set_value`,
/// `_getitem`, `_setitem` and `_encode`, which go through ctypes.
#[pyclass(module = "shmplane._shmplane", name = "_SlotView", subclass, frozen, weakref)]
pub struct PySlotView {
    slot: Py<PyByteSlot>,
    code: Option<char>,
    elem: usize,
    len: usize,
    scalar: bool,
    /// Small arrays `snapshot()` handed out, refilled once nobody else holds them.
    recycled: Recycled,
}

impl PySlotView {
    /// The hot path of `.value` (`i == 0`, `scalar`) and `[i]` of a numeric view (see
    /// `fastslot`): element `i` (negative from the end), read as one committed word
    /// (`ByteSlot::committed_word`), as a new reference (null with an exception set if
    /// Python is out of memory). `None` for anything else, errors included: the caller
    /// then takes the full path, which raises them.
    #[inline(always)]
    pub(crate) fn fast_item(&self, py: Python<'_>, i: isize, scalar: bool) -> Option<*mut pyo3::ffi::PyObject> {
        let code = self.code?;
        if scalar != self.scalar {
            // `.value` of an array, or `[i]` of a scalar (the full path raises).
            return None;
        }
        let at = if (i as usize) < self.len { i as usize } else { self.position(i).ok()? };
        let byte = at * self.elem;
        let w = self.slot.get().with(py, |s| s.committed_word(byte / 8))?;
        // An 8-byte number is its word (the common case: no shift or mask).
        let n = if self.elem == 8 { w } else { ByteSlot::number_in_word(w, byte % 8, self.elem) };
        Some(new_number(code, n))
    }

    /// The hot path of a numeric field (`PyField`) of the structure this view holds at
    /// byte 0: `size` bytes at `offset` (naturally aligned: the caller checks), of
    /// struct-module `code`; as `fast_item`.
    #[inline(always)]
    pub(crate) fn fast_field(&self, py: Python<'_>, offset: usize, code: char, size: usize) -> Option<*mut pyo3::ffi::PyObject> {
        if offset + size > self.elem * self.len {
            return None;
        }
        let w = self.slot.get().with(py, |s| s.committed_word(offset / 8))?;
        Some(new_number(code, ByteSlot::number_in_word(w, offset % 8, size)))
    }

    /// The hot path of `snapshot()` (see `fastslot`): all elements of a numeric view
    /// of up to [`DETACH_BYTES`] as a new 1-d array, made by one numpy call (cached
    /// type and dtype) and filled by one latch read straight into its data, holding the
    /// GIL. A new reference (null with an exception set if numpy is out of memory), or
    /// `None` for anything else, errors included (numpy not loaded yet, a closed slot):
    /// the caller then takes the full path, which raises them.
    #[inline]
    pub(crate) fn fast_snapshot(&self, py: Python<'_>) -> Option<*mut pyo3::ffi::PyObject> {
        let n = self.len * self.elem;
        if self.code.is_none() || n > DETACH_BYTES {
            return None;
        }
        let np = NUMPY.get(py)?;
        let recycle = n <= RECYCLE_BYTES;
        let reused = if recycle { self.recycled.take(py, np.descr(self.code?)?, self.len, self.elem) } else { None };
        let arr = match reused {
            Some(arr) => arr,
            None => np.new_array(py, self.code?, self.len)?,
        };
        if arr.is_null() {
            return Some(arr);
        }
        // SAFETY: `arr` is a live array (non-null above).
        let data = unsafe { array_data(Borrowed::from_ptr(py, arr).as_any()) };
        let read = self.slot.get().with(py, |s| {
            // SAFETY: `arr` was just created (or recycled: checked the same) C-contiguous
            // with `len` elements of `elem` bytes (checked in `new`): `n` bytes at
            // `data`; only we hold it (a recycled one: the caller's new reference and
            // `recycled`'s) and run no Python code, so nothing else touches them. They
            // are written as raw bytes (no `bool` is formed from them).
            s.read_into(unsafe { std::slice::from_raw_parts_mut(data, n) })
        });
        if read.is_err() {
            // SAFETY: our new reference; the array has no base and runs no Python code
            // when freed.
            unsafe { pyo3::ffi::Py_DECREF(arr) };
            return None;
        }
        if recycle && reused.is_none() {
            self.recycled.keep(py, arr);
        }
        Some(arr)
    }

    /// Element index `i` (negative from the end) as a position, or IndexError.
    fn position(&self, i: isize) -> PyResult<usize> {
        let n = self.len as isize;
        let j = if i < 0 { i + n } else { i };
        if (0..n).contains(&j) { Ok(j as usize) } else { Err(PyIndexError::new_err("invalid index")) }
    }

    fn index_of(&self, key: &Bound<'_, PyAny>) -> PyResult<usize> {
        match key.extract::<isize>() {
            Ok(i) => self.position(i),
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyOverflowError>(key.py()) => {
                Err(PyIndexError::new_err("invalid index"))
            }
            Err(_) => Err(PyTypeError::new_err("indices must be integers")),
        }
    }

    /// Encode `v` into `out` (`elem` bytes) for this view's element, by the fast path
    /// or the subclass's ctypes hook.
    fn encode_into(slf: &Bound<'_, Self>, v: &Bound<'_, PyAny>, out: &mut [u8]) -> PyResult<()> {
        let this = slf.get();
        let mut b = [0u8; 8];
        if let Some(code) = this.code {
            if encode_scalar(code, v, &mut b) {
                out.copy_from_slice(&b[..this.elem]);
                return Ok(());
            }
        }
        let enc = slf.call_method1("_encode", (v,))?;
        let bytes = enc.cast::<PyBytes>()?.as_bytes();
        if bytes.len() != this.elem {
            return Err(PyValueError::new_err(format!("_encode gave {} bytes for a {}-byte element", bytes.len(), this.elem)));
        }
        out.copy_from_slice(bytes);
        Ok(())
    }
}

#[pymethods]
impl PySlotView {
    /// `slot` viewed as `length` elements of `elem_size` bytes; `code` is the
    /// struct-module code of a numeric element (None: the ctypes hooks do the work);
    /// `scalar`: a single value (`.value` reads it).
    #[new]
    #[pyo3(signature = (slot, code, elem_size, length, scalar))]
    fn new(py: Python<'_>, slot: Py<PyByteSlot>, code: Option<char>, elem_size: usize, length: usize, scalar: bool) -> PyResult<Self> {
        let bytes = slot.get().with(py, ByteSlot::len);
        if elem_size.checked_mul(length) != Some(bytes) {
            return Err(PyValueError::new_err(format!("{length} elements of {elem_size} bytes do not fill a {bytes}-byte slot")));
        }
        if let Some(c) = code {
            let size = match c {
                'b' | 'B' | '?' => 1,
                'h' | 'H' => 2,
                'i' | 'I' | 'f' => 4,
                'l' | 'L' | 'q' | 'Q' | 'd' => 8,
                _ => return Err(PyValueError::new_err(format!("no native element code {c:?}"))),
            };
            if size != elem_size {
                return Err(PyValueError::new_err(format!("code {c:?} is {size} bytes, not {elem_size}")));
            }
        }
        Ok(PySlotView { slot, code, elem: elem_size, len: length, scalar, recycled: Recycled::default() })
    }

    /// The underlying ByteSlot.
    #[getter]
    fn _slot(&self, py: Python<'_>) -> Py<PyByteSlot> {
        self.slot.clone_ref(py)
    }

    /// A scalar's value, read consistently (`_get_value()` for other types).
    #[getter]
    pub(crate) fn value(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let this = slf.get();
        let py = slf.py();
        match this.code {
            Some(code) if this.scalar => {
                // A numeric scalar is at most 8 bytes at offset 0: one committed word,
                // one cache line, no sequence (`ByteSlot::read_number`).
                let n = this.slot.get().with(py, |s| s.read_number(0, this.elem)).py_err(py)?;
                decode_number(py, code, n)
            }
            _ => Ok(slf.call_method0("_get_value")?.unbind()),
        }
    }

    #[setter]
    pub(crate) fn set_value(slf: &Bound<'_, Self>, v: &Bound<'_, PyAny>) -> PyResult<()> {
        let this = slf.get();
        let py = slf.py();
        let mut b = [0u8; 8];
        match this.code {
            Some(code) if this.scalar && encode_scalar(code, v, &mut b) => {
                let elem = this.elem;
                this.slot.get().write_op(py, elem, |s, wait| s.write_with(&b[..elem], wait))?;
                Ok(())
            }
            _ => slf.call_method1("_set_value", (v,)).map(drop),
        }
    }

    fn __len__(&self) -> usize {
        self.len
    }

    /// The buffer protocol: a read-only buffer of a private snapshot of all elements,
    /// read consistently (one latch read, as `snapshot()`), kept until the buffer is
    /// released. So `memoryview(arr)` and `np.asarray(arr)` are one consistent read
    /// (no live view: the value is two copies that writers flip between). Numbers only
    /// (struct-module format of the element, native order; a scalar has 0 dimensions).
    ///
    /// Raises `BufferError` for a writable request or non-numeric elements (use
    /// `snapshot()`), and the read's errors (`ClosedError`).
    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut pyo3::ffi::Py_buffer, flags: std::ffi::c_int) -> PyResult<()> {
        use pyo3::exceptions::PyBufferError;
        use pyo3::ffi;
        if view.is_null() {
            return Err(PyBufferError::new_err("a NULL view"));
        }
        if flags & ffi::PyBUF_WRITABLE == ffi::PyBUF_WRITABLE {
            return Err(PyBufferError::new_err(
                "shmplane slots export read-only snapshots (one consistent read); write by item or slice assignment",
            ));
        }
        let this = slf.get();
        let py = slf.py();
        let Some(code) = this.code else {
            return Err(PyBufferError::new_err("only values and arrays of numbers export a buffer; use snapshot()"));
        };
        let n = this.elem * this.len;
        let mut export = Box::new(Export {
            data: vec![0u64; n.div_ceil(8).max(1)],
            shape: this.len as ffi::Py_ssize_t,
            stride: this.elem as ffi::Py_ssize_t,
            format: [code as u8, 0],
        });
        let dst = export.data.as_mut_ptr() as usize;
        // SAFETY: `export.data` holds at least `n` bytes, is ours alone until the buffer
        // is filled below, and stays put (boxed) while the read may release the GIL.
        unsafe { this.slot.get().read_into_raw(py, dst, n) }.py_err(py)?;
        let (elem, scalar) = (this.elem, this.scalar);
        let e = Box::into_raw(export);
        // SAFETY: `view` is a non-NULL Py_buffer the caller owns for this call; every
        // pointer stored in it points into `*e`, which lives until `__releasebuffer__`
        // (CPython calls it once per successful export) frees it; `obj` is a new
        // reference to the exporter, as the protocol requires.
        unsafe {
            (*view).obj = slf.into_any().into_ptr();
            (*view).buf = (*e).data.as_mut_ptr().cast();
            (*view).len = n as ffi::Py_ssize_t;
            (*view).readonly = 1;
            (*view).itemsize = elem as ffi::Py_ssize_t;
            (*view).format =
                if flags & ffi::PyBUF_FORMAT == ffi::PyBUF_FORMAT { (*e).format.as_mut_ptr().cast() } else { std::ptr::null_mut() };
            (*view).ndim = if scalar { 0 } else { 1 };
            let nd = !scalar && flags & ffi::PyBUF_ND == ffi::PyBUF_ND;
            (*view).shape = if nd { &mut (*e).shape } else { std::ptr::null_mut() };
            let strided = !scalar && flags & ffi::PyBUF_STRIDES == ffi::PyBUF_STRIDES;
            (*view).strides = if strided { &mut (*e).stride } else { std::ptr::null_mut() };
            (*view).suboffsets = std::ptr::null_mut();
            (*view).internal = e.cast();
        }
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, view: *mut pyo3::ffi::Py_buffer) {
        // SAFETY: CPython passes back the view `__getbuffer__` filled, once; `internal`
        // is the Box it leaked.
        drop(unsafe { Box::from_raw((*view).internal.cast::<Export>()) });
    }

    /// Release the arrays `snapshot()` keeps for recycling (`close()` calls it; they
    /// would otherwise live as long as this view).
    fn _release_snapshots(&self, py: Python<'_>) {
        self.recycled.clear(py);
    }

    /// All elements as a new 1-d numpy array in one consistent read. Numeric elements
    /// are handled here; others go to the subclass hook `_snapshot()`.
    fn snapshot(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let this = slf.get();
        let py = slf.py();
        if this.code.is_none() {
            return Ok(slf.call_method0("_snapshot")?.unbind());
        }
        // The numpy crate panics if numpy cannot be imported: ask Python first, once.
        let np = NUMPY.get_or_try_init(py, || Numpy::load(py))?;
        if let Some(p) = this.fast_snapshot(py) {
            // SAFETY: a new reference, or null with an exception set.
            return Ok(unsafe { Bound::from_owned_ptr_or_err(py, p) }?.unbind());
        }
        // Over DETACH_BYTES (the read releases the GIL), or an error to raise.
        let Some(arr) = this.code.and_then(|c| np.new_array(py, c, this.len)) else {
            return Err(PyValueError::new_err("no native dtype for this code"));
        };
        // SAFETY: a new reference, or null with an exception set.
        let arr = unsafe { Bound::from_owned_ptr_or_err(py, arr) }?;
        // SAFETY: `arr` was just created C-contiguous with `len` elements of `elem` bytes
        // (checked in `new`); we hold the only reference to it, so no Python code can
        // reach it during the read, with or without the GIL. It is written as raw bytes
        // (no `bool` is formed from them).
        unsafe { this.slot.get().read_into_raw(py, array_data(&arr) as usize, this.len * this.elem) }.py_err(py)?;
        Ok(arr.unbind())
    }

    /// Element `key` (negative from the end), or a list of the elements of slice `key`
    /// read as one consistent snapshot.
    pub(crate) fn __getitem__(slf: &Bound<'_, Self>, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let this = slf.get();
        let py = slf.py();
        if this.scalar {
            return Err(not_subscriptable(slf, "is not subscriptable"));
        }
        let Some(code) = this.code else {
            return Ok(slf.call_method1("_getitem", (key,))?.unbind());
        };
        if let Ok(slice) = key.cast::<PySlice>() {
            let ix = slice.indices(this.len as isize)?;
            let n = ix.slicelength;
            if n == 0 {
                return Ok(PyList::empty(py).into_any().unbind());
            }
            let last = ix.start + (n as isize - 1) * ix.step;
            let (lo, hi) = (ix.start.min(last) as usize, ix.start.max(last) as usize);
            let span = (hi - lo + 1) * this.elem;
            let mut stack = [0u8; 512];
            let mut heap = Vec::new();
            let buf: &mut [u8] = if span <= stack.len() {
                &mut stack[..span]
            } else {
                heap.resize(span, 0);
                &mut heap
            };
            this.slot.get().with(py, |s| s.read_at(lo * this.elem, buf)).py_err(py)?;
            let at = |k: usize| (ix.start + k as isize * ix.step) as usize - lo;
            return Ok(list_of(py, code, buf, n, at)?.into_any().unbind());
        }
        let i = this.index_of(key)?;
        // An element is a naturally aligned number: one committed word.
        let n = this.slot.get().with(py, |s| s.read_number(i * this.elem, this.elem)).py_err(py)?;
        decode_number(py, code, n)
    }

    fn __delitem__(&self, _key: &Bound<'_, PyAny>) -> PyResult<()> {
        Err(PyTypeError::new_err("Array does not support item deletion"))
    }

    /// Assign element `key`, or the elements of slice `key` from a sequence of the same
    /// length, as one consistent write (nothing is written if any element is rejected).
    fn __setitem__(slf: &Bound<'_, Self>, key: &Bound<'_, PyAny>, v: &Bound<'_, PyAny>) -> PyResult<()> {
        let this = slf.get();
        let py = slf.py();
        if this.scalar {
            return Err(not_subscriptable(slf, "does not support item assignment"));
        }
        if this.code.is_none() {
            return slf.call_method1("_setitem", (key, v)).map(drop);
        }
        let mut data = Vec::new();
        if let Ok(slice) = key.cast::<PySlice>() {
            let ix = slice.indices(this.len as isize)?;
            let n = ix.slicelength;
            let size_error = || PyValueError::new_err("Can only assign sequence of same size");
            // As ctypes: the length first (nothing is converted for a wrong size).
            if v.len().map_err(|_| size_error())? != n {
                return Err(size_error());
            }
            data.resize(n * this.elem, 0);
            // A 1-d buffer of this element type (an ndarray of the same dtype) is the
            // elements' bytes already: one copy instead of a conversion per element
            // (numpy scalars are not exact floats or ints: each took ctypes' path).
            let bulk = match this.code {
                Some(code) => copy_from_buffer(py, code, v, n, &mut data)?,
                None => false,
            };
            if !bulk {
                let mut k = 0;
                for item in v.try_iter().map_err(|_| size_error())? {
                    let Some(out) = data.get_mut(k * this.elem..(k + 1) * this.elem) else {
                        return Err(size_error()); // the sequence grew meanwhile
                    };
                    Self::encode_into(slf, &item?, out)?;
                    k += 1;
                }
                if k != n {
                    return Err(size_error()); // the sequence shrank meanwhile
                }
            }
            if n == 0 {
                return Ok(());
            }
            // Elements in ascending position order, so that the stride is positive.
            let last = ix.start + (n as isize - 1) * ix.step;
            if ix.step < 0 {
                data = data.chunks_exact(this.elem).rev().flatten().copied().collect();
            }
            let stride = ix.step.unsigned_abs() * this.elem;
            let first = ix.start.min(last) as usize * this.elem;
            let elem = this.elem;
            this.slot.get().write_op(py, data.len(), |s, wait| s.write_strided_with(first, stride, elem, &data, wait))?;
            return Ok(());
        }
        let i = this.index_of(key)?;
        let mut one = [0u8; 8];
        Self::encode_into(slf, v, &mut one[..this.elem])?;
        let elem = this.elem;
        this.slot.get().write_op(py, elem, |s, wait| s.write_strided_with(i * elem, elem.max(1), elem, &one[..elem], wait))?;
        Ok(())
    }
}

/// What a buffer export of a `_SlotView` points into: the snapshot and its shape,
/// stride and format, freed when the buffer is released.
struct Export {
    data: Vec<u64>,
    shape: pyo3::ffi::Py_ssize_t,
    stride: pyo3::ffi::Py_ssize_t,
    format: [u8; 2],
}

/// A numeric field of a structure held in a slot, as a native descriptor: `obj.field`
/// reads just the field's bytes (one consistent read) and decodes them here;
/// assignment encodes with ctypes' semantics and writes just those bytes. `obj` is a
/// `RawValue` of the structure (a `_SlotView`, the structure at byte 0) or a view with
/// `_slot` and `_offset` attributes (a structure element of a `RawArray`). Values the
/// fast path does not take go to `fallback` (the ctypes-based property).
#[pyclass(module = "shmplane._shmplane", name = "_Field", subclass, frozen)]
pub struct PyField {
    offset: usize,
    code: char,
    size: usize,
    fallback: Py<PyAny>,
}

impl PyField {
    /// Offset, struct-module code and size of this field (for `fastslot`).
    pub(crate) fn spec(&self) -> (usize, char, usize) {
        (self.offset, self.code, self.size)
    }

    /// The slot of the structure `obj` views, and the byte offset of this field in it.
    fn target<'py>(obj: &Bound<'py, PyAny>, field: usize) -> PyResult<(Bound<'py, PyByteSlot>, usize)> {
        if let Ok(view) = obj.cast::<PySlotView>() {
            return Ok((view.get().slot.bind(obj.py()).clone(), field));
        }
        let slot = obj.getattr("_slot")?.cast_into::<PyByteSlot>()?;
        let base: usize = obj.getattr("_offset")?.extract()?;
        let at = base.checked_add(field).ok_or_else(|| PyValueError::new_err("structure offset out of range"))?;
        Ok((slot, at))
    }
}

#[pymethods]
impl PyField {
    /// Field of `size` bytes at byte `offset` of the structure, struct-module `code`;
    /// `fallback`: a property doing the same through ctypes.
    #[new]
    fn new(offset: usize, code: char, size: usize, fallback: Py<PyAny>) -> PyResult<Self> {
        if !decode_size_ok(code, size) {
            return Err(PyValueError::new_err(format!("no native field of code {code:?} and {size} bytes")));
        }
        Ok(PyField { offset, code, size, fallback })
    }

    pub(crate) fn __get__<'py>(
        slf: &Bound<'py, Self>,
        obj: Option<&Bound<'py, PyAny>>,
        _owner: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let Some(obj) = obj else { return Ok(slf.clone().into_any().unbind()) };
        let py = slf.py();
        let this = slf.get();
        let (slot, at) = Self::target(obj, this.offset)?;
        if at % this.size == 0 {
            // A naturally aligned field: one committed word (`ByteSlot::read_number`).
            let n = slot.get().with(py, |s| s.read_number(at, this.size)).py_err(py)?;
            return decode_number(py, this.code, n);
        }
        // A packed structure's misaligned field may straddle two words: its bytes, read
        // consistently, placed as a word's first bytes.
        let mut out = [0u8; 8];
        slot.get().with(py, |s| s.read_at(at, &mut out[..this.size])).py_err(py)?;
        decode_number(py, this.code, ByteSlot::number_in_word(u64::from_ne_bytes(out), 0, this.size))
    }

    fn __set__(slf: &Bound<'_, Self>, obj: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let mut b = [0u8; 8];
        if !encode_scalar(this.code, value, &mut b) {
            return this.fallback.bind(py).call_method1("__set__", (obj, value)).map(drop);
        }
        let (slot, at) = Self::target(obj, this.offset)?;
        let size = this.size;
        slot.get().write_op(py, size, |s, wait| s.write_strided_with(at, size.max(1), size, &b[..size], wait))?;
        Ok(())
    }

    fn __delete__(&self, _obj: &Bound<'_, PyAny>) -> PyResult<()> {
        Err(PyTypeError::new_err("can't delete attribute"))
    }

    /// The ctypes-based property this field stands in for.
    #[getter]
    fn fallback(&self, py: Python<'_>) -> Py<PyAny> {
        self.fallback.clone_ref(py)
    }
}

/// Whether struct-module `code` is a native number of `size` bytes.
fn decode_size_ok(code: char, size: usize) -> bool {
    matches!(
        (code, size),
        ('b' | 'B' | '?', 1) | ('h' | 'H', 2) | ('i' | 'I' | 'f', 4) | ('l' | 'L' | 'q' | 'Q' | 'd', 8)
    )
}

/// `TypeError` for indexing a scalar view (a `RawValue`), worded as the stdlib's for
/// its ctypes object: "'c_double' object is not subscriptable".
#[cold]
fn not_subscriptable(slf: &Bound<'_, PySlotView>, what: &str) -> PyErr {
    let name = slf
        .getattr("_type")
        .and_then(|t| t.getattr("__name__"))
        .map_or_else(|_| "RawValue".to_owned(), |n| n.to_string());
    pyo3::exceptions::PyTypeError::new_err(format!("'{name}' object {what}"))
}
