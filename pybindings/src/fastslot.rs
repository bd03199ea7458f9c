//! `_FastSlotView` and `_FastField`: the hot reads of `RawValue`/`RawArray` (`.value`,
//! `arr[i]`, numeric structure fields, `arr.snapshot()`) as plain CPython slot
//! functions and a plain C method.
//!
//! pyo3's generated getters, `__getitem__` and `__get__` cost about 10 ns more than
//! ctypes' own C getters (a panic trap, an attach guard, a type check through the MRO,
//! result conversion), which is a third of a hot read: measured with
//! `benches/python/slots.py`, where these reads must cost no more than the stdlib's.
//! So this module creates, with the stable ABI's `PyType_FromSpecWithBases`, a
//! subclass of `_SlotView` whose `value` getset and `mp_subscript` slot, and a subclass
//! of `_Field` whose `tp_descr_get` slot, are `extern "C"` functions doing only the
//! fast case: a native number read as one committed word of the latch
//! (`ByteSlot::read_number`) and one `PyFloat`/`PyLong`. Anything else (slices,
//! non-numeric types, errors, a closed slot) goes to the base type's own pyo3 slot
//! function, which raises the errors inside pyo3's trampoline. The instance layout and
//! every other slot are the pyo3 base's (the subclasses add no storage).
//!
//! `snapshot()` is a METH_NOARGS method of `_FastSlotView` for the same reason (pyo3's
//! trampoline and argument handling were ~100 of its ~1500 instructions), and
//! `_own_fast_methods(RawArray)` gives `RawArray` its own method object of it: CPython
//! skips its generic call path (~150 instructions) only for instances of exactly the
//! method object's class. Measured with callgrind (instructions per `a.snapshot()` of
//! `RawArray('d', 16)`, loop excluded): 1547 before, ~1100 after, of which numpy's
//! array allocation and deallocation are ~760; with the array recycled
//! (`slot::Recycled`: refilled once only the view holds it) numpy is out of it: the
//! method's own work is ~260 (callgrind: `fast_snapshot` 88, the latch read 130, the C
//! call ~45), and `snapshot()` of 16 doubles went from 88 to ~30 ns.

use crate::slot::{PyField, PySlotView};
use pyo3::exceptions::PySystemError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use std::ffi::{c_int, c_uint, c_void};
use std::ptr::null_mut;
use std::sync::OnceLock;

/// pyo3's own slot functions of the base types, which the fast ones fall back to: they
/// do everything else (slices, other types, errors) inside pyo3's trampoline (attach
/// bookkeeping, panics trapped).
struct Full {
    value_get: ffi::getter,
    value_set: ffi::setter,
    value_closure: *mut c_void,
    subscript: ffi::binaryfunc,
    field_get: ffi::descrgetfunc,
    snapshot: ffi::PyCFunction,
}

// SAFETY: function pointers, and a getset closure pointer that pyo3 made for the
// process's lifetime and passes back unchanged; never dereferenced here.
unsafe impl Sync for Full {}
// SAFETY: as above.
unsafe impl Send for Full {}

static FULL: OnceLock<Full> = OnceLock::new();

/// The method table of `_FastSlotView` (`snapshot`, then the end marker), leaked by
/// `add` for the process: `own_methods` makes method objects of it for subclasses.
struct Methods(&'static [ffi::PyMethodDef; 2]);

// SAFETY: a table CPython and this module only read, alive for the process.
unsafe impl Sync for Methods {}
// SAFETY: as above.
unsafe impl Send for Methods {}

static METHODS: OnceLock<Methods> = OnceLock::new();

/// The fallbacks; set by `add` before either type exists.
fn full() -> &'static Full {
    FULL.get().expect("fastslot::add ran")
}

/// `obj` as a `_SlotView`.
///
/// # Safety
/// Attached to the interpreter, `obj` a live instance of `_SlotView` or a subclass.
unsafe fn view<'a, 'py>(py: Python<'py>, obj: *mut ffi::PyObject) -> Borrowed<'a, 'py, PySlotView> {
    // SAFETY: the caller's contract: `obj` is a live `_SlotView`, so the cast is exact.
    unsafe { Borrowed::from_ptr(py, obj).cast_unchecked::<PySlotView>() }
}

/// `value` getter of `_FastSlotView`.
unsafe extern "C" fn value_get(obj: *mut ffi::PyObject, _closure: *mut c_void) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a getter attached, with `obj` an instance of the getset's
    // type (`getset_get` checks it): a `_FastSlotView`, so a `_SlotView`.
    let py = unsafe { Python::assume_attached() };
    // SAFETY: as above.
    if let Some(p) = unsafe { view(py, obj) }.get().fast_item(py, 0, true) {
        return p;
    }
    let f = full();
    // SAFETY: pyo3's getter of `_SlotView.value`, called as CPython would call it.
    unsafe { (f.value_get)(obj, f.value_closure) }
}

/// `value` setter of `_FastSlotView`: pyo3's (writes are not this module's hot path).
unsafe extern "C" fn value_set(obj: *mut ffi::PyObject, value: *mut ffi::PyObject, _closure: *mut c_void) -> c_int {
    let f = full();
    // SAFETY: pyo3's setter of `_SlotView.value`, called as CPython would call it.
    unsafe { (f.value_set)(obj, value, f.value_closure) }
}

/// `mp_subscript` of `_FastSlotView`: `arr[i]` for an `int` `i` here, else pyo3's
/// `__getitem__`.
unsafe extern "C" fn subscript(obj: *mut ffi::PyObject, key: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: CPython calls `mp_subscript` attached, with `obj` an instance of the type
    // (a `_FastSlotView`, so a `_SlotView`) and `key` a live object.
    let py = unsafe { Python::assume_attached() };
    // SAFETY: `key` is live (above); `PyLong_CheckExact` reads only its type.
    if unsafe { ffi::PyLong_CheckExact(key) } != 0 {
        // SAFETY: `key` is an exact int. -1 with an error set is an overflow: cleared,
        // and the full path below raises IndexError for it.
        let i = unsafe { ffi::PyLong_AsSsize_t(key) };
        // SAFETY: attached (above).
        if i == -1 && !unsafe { ffi::PyErr_Occurred() }.is_null() {
            // SAFETY: attached; an error is set.
            unsafe { ffi::PyErr_Clear() };
        } else {
            // SAFETY: as above: `obj` is a live `_SlotView`.
            let v = unsafe { view(py, obj) };
            if let Some(p) = v.get().fast_item(py, i, false) {
                return p;
            }
        }
    }
    // SAFETY: pyo3's `mp_subscript` of `_SlotView`, called as CPython would call it.
    unsafe { (full().subscript)(obj, key) }
}

/// `snapshot()` of `_FastSlotView` (METH_NOARGS): a numeric array of up to 64 KiB
/// here, else pyo3's `snapshot`.
unsafe extern "C" fn snapshot(obj: *mut ffi::PyObject, noargs: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a method attached, with `obj` an instance of the method's
    // type (`method_vectorcall_NOARGS` checks it): a `_FastSlotView`, so a `_SlotView`.
    let py = unsafe { Python::assume_attached() };
    // SAFETY: as above.
    if let Some(p) = unsafe { view(py, obj) }.get().fast_snapshot(py) {
        return p;
    }
    // SAFETY: pyo3's METH_NOARGS function of `_SlotView.snapshot`, called as CPython
    // would call it.
    unsafe { (full().snapshot)(obj, noargs) }
}

/// `tp_descr_get` of `_FastField`: `obj.field` for a `RawValue` of a structure.
unsafe extern "C" fn field_get(
    descr: *mut ffi::PyObject,
    obj: *mut ffi::PyObject,
    owner: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls `tp_descr_get` attached, with `descr` an instance of the
    // type (a `_FastField`, so a `_Field`) and `obj`, `owner` live or null.
    let py = unsafe { Python::assume_attached() };
    if !obj.is_null() {
        // SAFETY: as above.
        let field = unsafe { Borrowed::from_ptr(py, descr).cast_unchecked::<PyField>() };
        let (offset, code, size) = field.get().spec();
        // SAFETY: `obj` is live (checked non-null above).
        let target = unsafe { Borrowed::from_ptr(py, obj) };
        // `size` is 1, 2, 4 or 8 (`PyField::new` checks): a mask, not a division.
        if offset & (size - 1) == 0 {
            if let Ok(v) = target.cast::<PySlotView>() {
                if let Some(p) = v.get().fast_field(py, offset, code, size) {
                    return p;
                }
            }
        }
    }
    // SAFETY: pyo3's `tp_descr_get` of `_Field`, called as CPython would call it.
    unsafe { (full().field_get)(descr, obj, owner) }
}

/// Slot `slot` of `t` (a pyo3 type: a heap type, so `PyType_GetSlot` works).
fn slot_of(t: &Bound<'_, pyo3::types::PyType>, slot: c_int) -> PyResult<*mut c_void> {
    // SAFETY: `t` is a live type object; PyType_GetSlot only reads it.
    let p = unsafe { ffi::PyType_GetSlot(t.as_type_ptr(), slot) };
    if p.is_null() {
        return Err(PySystemError::new_err(format!("shmplane: {t} lacks slot {slot}")));
    }
    Ok(p)
}

/// pyo3's slot functions of `_SlotView` and `_Field` (see [`Full`]).
fn find_full(py: Python<'_>) -> PyResult<Full> {
    let view_t = py.get_type::<PySlotView>();
    let getsets = slot_of(&view_t, ffi::Py_tp_getset)?.cast::<ffi::PyGetSetDef>();
    let mut value = None;
    // SAFETY: `tp_getset` is an array ended by an entry with a null name (CPython's
    // contract for `PyTypeObject.tp_getset`), alive as long as the type (forever).
    unsafe {
        let mut d = getsets;
        while !(*d).name.is_null() {
            if std::ffi::CStr::from_ptr((*d).name) == c"value" {
                value = Some(((*d).get, (*d).set, (*d).closure));
            }
            d = d.add(1);
        }
    }
    let Some((Some(get), Some(set), closure)) = value else {
        return Err(PySystemError::new_err("shmplane: _SlotView has no value getter and setter"));
    };
    let methods = slot_of(&view_t, ffi::Py_tp_methods)?.cast::<ffi::PyMethodDef>();
    let mut snapshot = None;
    // SAFETY: `tp_methods` is an array ended by an entry with a null name (CPython's
    // contract for `PyTypeObject.tp_methods`), alive as long as the type (forever); a
    // METH_NOARGS entry's function is a `PyCFunction`.
    unsafe {
        let mut d = methods;
        while !(*d).ml_name.is_null() {
            if std::ffi::CStr::from_ptr((*d).ml_name) == c"snapshot" && (*d).ml_flags == ffi::METH_NOARGS {
                snapshot = Some((*d).ml_meth.PyCFunction);
            }
            d = d.add(1);
        }
    }
    let Some(snapshot) = snapshot else {
        return Err(PySystemError::new_err("shmplane: _SlotView has no METH_NOARGS snapshot"));
    };
    let subscript = slot_of(&view_t, ffi::Py_mp_subscript)?;
    let field_get = slot_of(&py.get_type::<PyField>(), ffi::Py_tp_descr_get)?;
    // SAFETY: the slots' documented signatures (`mp_subscript`: binaryfunc,
    // `tp_descr_get`: descrgetfunc), as CPython stores them.
    let (subscript, field_get) = unsafe {
        (
            std::mem::transmute::<*mut c_void, ffi::binaryfunc>(subscript),
            std::mem::transmute::<*mut c_void, ffi::descrgetfunc>(field_get),
        )
    };
    Ok(Full { value_get: get, value_set: set, value_closure: closure, subscript, field_get, snapshot })
}

/// A heap type `name` (a `shmplane._shmplane` attribute) subclassing `base`, with
/// `slots` (ended by the zero slot); the spec and slots live for the process, as
/// CPython expects of a spec's strings and getset tables.
fn subclass<'py>(py: Python<'py>, name: &'static std::ffi::CStr, base: Bound<'py, pyo3::types::PyType>, slots: Vec<ffi::PyType_Slot>) -> PyResult<Bound<'py, PyAny>> {
    let slots: &'static mut [ffi::PyType_Slot] = Box::leak(slots.into_boxed_slice());
    let spec: &'static mut ffi::PyType_Spec = Box::leak(Box::new(ffi::PyType_Spec {
        name: name.as_ptr(),
        basicsize: 0, // the base's layout
        itemsize: 0,
        flags: (ffi::Py_TPFLAGS_DEFAULT | ffi::Py_TPFLAGS_BASETYPE) as c_uint,
        slots: slots.as_mut_ptr(),
    }));
    let bases = PyTuple::new(py, [base])?;
    // SAFETY: `spec` and everything it points to live for the process; `bases` is a
    // tuple of one type that accepts subclasses (pyo3 `subclass`).
    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyType_FromSpecWithBases(spec, bases.as_ptr())) }
}

/// Give `cls`, a Python subclass of `_FastSlotView`, method objects of its own for
/// `_FastSlotView`'s C methods (`snapshot`) that it does not define itself.
///
/// CPython (3.11+) calls a C method straight from the bytecode (its
/// `PRECALL_NO_KW_METHOD_DESCRIPTOR_NOARGS` specialisation) only for instances of
/// exactly the method object's class; an instance of a subclass takes the generic call
/// path every time (about 150 instructions more than the call itself). A method object
/// of `cls` calls the same C function; instances of subclasses of `cls` still work (the
/// generic path checks `isinstance`).
#[pyfunction(name = "_own_fast_methods")]
fn own_fast_methods(cls: &Bound<'_, pyo3::types::PyType>) -> PyResult<()> {
    let py = cls.py();
    let view = py.import("shmplane._shmplane")?.getattr("_FastSlotView")?;
    if !cls.is_subclass(&view)? {
        return Err(pyo3::exceptions::PyTypeError::new_err(format!("{cls} is not a subclass of _FastSlotView")));
    }
    let Some(methods) = METHODS.get() else { return Err(PySystemError::new_err("shmplane: fastslot::add did not run")) };
    let own = cls.getattr("__dict__")?;
    for def in methods.0.iter().take_while(|d| !d.ml_name.is_null()) {
        // SAFETY: a non-null name of our table: a static C string.
        let name = unsafe { std::ffi::CStr::from_ptr(def.ml_name) }.to_str().expect("ASCII method names");
        if own.contains(name)? {
            continue;
        }
        // SAFETY: attached; `cls` is a live type, a subclass of `_FastSlotView` (checked
        // above), so the C function's receiver (an instance of `cls`: CPython checks)
        // is a `_SlotView`; `def` lives for the process.
        let descr = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyDescr_NewMethod(cls.as_type_ptr(), std::ptr::from_ref(def).cast_mut())) }?;
        cls.setattr(name, descr)?;
    }
    Ok(())
}

/// Add `_FastSlotView` and `_FastField` to the module.
pub fn add(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    if FULL.get().is_none() {
        let _ = FULL.set(find_full(py)?);
    }
    let getset: &'static mut [ffi::PyGetSetDef; 2] = Box::leak(Box::new([
        ffi::PyGetSetDef {
            name: c"value".as_ptr(),
            get: Some(value_get),
            set: Some(value_set),
            doc: c"The value (a number: one committed word of the latch, as a plain shared number reads).".as_ptr(),
            closure: null_mut(),
        },
        ffi::PyGetSetDef { name: std::ptr::null(), get: None, set: None, doc: std::ptr::null(), closure: null_mut() },
    ]));
    let methods: &'static mut [ffi::PyMethodDef; 2] = Box::leak(Box::new([
        ffi::PyMethodDef {
            ml_name: c"snapshot".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer { PyCFunction: snapshot },
            ml_flags: ffi::METH_NOARGS,
            ml_doc: c"All elements as a new 1-d numpy array in one consistent read (numeric elements here; others: the subclass hook _snapshot()). Up to 4 KiB, the array is one of the last two it returned, refilled once nothing else held it.".as_ptr(),
        },
        ffi::PyMethodDef::zeroed(),
    ]));
    let view = subclass(
        py,
        c"shmplane._shmplane._FastSlotView",
        py.get_type::<PySlotView>(),
        vec![
            ffi::PyType_Slot { slot: ffi::Py_tp_getset, pfunc: getset.as_mut_ptr().cast() },
            ffi::PyType_Slot { slot: ffi::Py_mp_subscript, pfunc: subscript as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_tp_methods, pfunc: methods.as_mut_ptr().cast() },
            ffi::PyType_Slot { slot: 0, pfunc: null_mut() },
        ],
    )?;
    let _ = METHODS.set(Methods(methods));
    m.add("_FastSlotView", view)?;
    m.add_function(wrap_pyfunction!(own_fast_methods, m)?)?;
    let field = subclass(
        py,
        c"shmplane._shmplane._FastField",
        py.get_type::<PyField>(),
        vec![
            ffi::PyType_Slot { slot: ffi::Py_tp_descr_get, pfunc: field_get as *mut c_void },
            ffi::PyType_Slot { slot: 0, pfunc: null_mut() },
        ],
    )?;
    m.add("_FastField", field)?;
    Ok(())
}
