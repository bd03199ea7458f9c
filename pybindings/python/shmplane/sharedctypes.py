"""Drop-in for ``multiprocessing.sharedctypes.RawValue`` and ``RawArray``.

``shmplane.RawValue(typecode_or_type, *args)`` and
``shmplane.RawArray(typecode_or_type, size_or_initializer)`` take the same typecodes
and ctypes types (including ``ctypes.Structure``/``Union`` subclasses without
pointers) and behave like the stdlib objects for ``.value``, fields, indexing
(negative too), slicing with steps, slice assignment, ``len``, iteration, ``.raw`` and
``.value`` of char arrays, and their errors (``IndexError``, ``TypeError``,
``ValueError``), so existing code can change one import.

Where the stdlib is undefined ours is better: the value lives in a seqlock latch
(two copies, Linux ``seqcount_latch``; see ``shm/src/seqlock.rs``), so every read of
a whole value or a slice (``arr[:]``, ``snapshot()``, ``np.asarray(arr)``, a struct's
``snapshot()``) is a consistent snapshot of one write; a number (``.value``,
``arr[i]``, a numeric field) is read as one word of the copy that holds only finished
writes, at the cost of a plain shared number (no sequence, no retry): a value of a
finished write, never older than ``version`` said, never going back. Readers do not block writers
(unless starved: see below) and never wait on a dead process, and a slice assignment is published as one write
(all of it or none). Element and field writes from different processes never lose
each other's updates. Reads above 64 KiB release the GIL.

Extras: ``version``, ``wait_for_update(since, timeout)``, ``snapshot()`` (RawArray: a
numpy copy in one consistent read; RawValue: a ctypes copy), ``copy()`` (a ctypes
copy), ``attach(name, ...)`` from an unrelated process, context managers, and
pickling into ``multiprocessing`` children under fork and spawn.

Differences from the stdlib, all deliberate:

* no live buffer / ``ctypes.addressof``: the bytes are not one fixed array (two
  copies), so ``memoryview(arr)``, ``np.asarray(arr)`` and ``np.frombuffer(arr)`` give
  a *read-only snapshot* (one consistent read, numbers only), not a live view; write
  by item or slice assignment;
* elements that are arrays (``RawArray(c_int * 2, n)``) and array fields of a
  structure read as ctypes copies, not live views (structure elements and nested
  structure fields *are* live views, as in the stdlib);
* so ``arr[0][1] = x`` on an array of arrays, or ``s.v[0] = x`` on an array field,
  changes a copy and is lost: assign the whole element/field instead;
* writing a bit field rewrites its storage unit from a fresh copy, like C does, so
  two processes writing *sibling bit fields at the same time* can lose one update
  (other field, element and slice writes never lose each other's updates);
* values are at most 256 MiB (``InvalidArgumentError``, a ``ValueError``);
* a reader that keeps losing the race against writers (a large array read while
  elements are written faster than it can be copied) takes the writer lock for one
  read after 16 attempts (Linux's ``read_seqbegin_or_lock``), so it always finishes.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import sys
from collections.abc import Iterator
from multiprocessing.sharedctypes import typecode_to_type  # type: ignore[attr-defined]
from typing import Any, Self

from ._shmplane import MAX_SLOT_BYTES, ByteSlot, _FastField, _FastSlotView, _SlotView, _own_fast_methods, _sweep_dead_anonymous_once
from .errors import ClosedError, CorruptSegmentError, InvalidArgumentError

__all__ = ["RawValue", "RawArray"]

_counter = itertools.count(1)
# ctypes types whose elements the native base decodes and encodes itself, with their
# struct-module codes (sizes are checked by the native side).
_NATIVE = {
    ctypes.c_byte: "b", ctypes.c_ubyte: "B", ctypes.c_short: "h", ctypes.c_ushort: "H",
    ctypes.c_int: "i", ctypes.c_uint: "I", ctypes.c_long: "l", ctypes.c_ulong: "L",
    ctypes.c_longlong: "q", ctypes.c_ulonglong: "Q", ctypes.c_float: "f",
    ctypes.c_double: "d", ctypes.c_bool: "?",
}
_POINTERS = (ctypes.c_char_p, ctypes.c_wchar_p, ctypes.c_void_p)
# ctypes codes of numbers: the kind letter of their Rust name.
_NUMBER_CODES = {"b": "i", "B": "u", "h": "i", "H": "u", "i": "i", "I": "u", "l": "i", "L": "u",
                 "q": "i", "Q": "u", "f": "f", "d": "f"}
_COMPOUND = (ctypes.Structure, ctypes.Union)


def _is_compound(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, _COMPOUND)


_RESERVED = frozenset({"_slot", "_offset", "_type", "_ctype"})
_NATIVE_ORDER = "__ctype_le__" if sys.byteorder == "little" else "__ctype_be__"


def _describe(type_: Any) -> str:
    """A stable description of a ctypes type: what makes two types read the same bytes
    the same way (codes, byte order, field names, offsets, bit widths, sizes)."""
    if _is_compound(type_):
        fields = []
        for f in type_._fields_:
            if f[0] in _RESERVED:
                raise TypeError(f"field name {f[0]!r} is reserved by shmplane; rename the field")
            bits = f":{f[2]}bits" if len(f) > 2 else ""
            fields.append(f"{f[0]}@{getattr(type_, f[0]).offset}{bits}:{_describe(f[1])}")
        kind = "union" if issubclass(type_, ctypes.Union) else "struct"
        return f"{kind} {type_.__name__}{{{','.join(fields)}}}/{ctypes.sizeof(type_)}/{ctypes.alignment(type_)}"
    if isinstance(type_, type) and issubclass(type_, ctypes.Array):
        return f"[{_describe(type_._type_)};{type_._length_}]"
    if (isinstance(type_, type) and issubclass(type_, ctypes._Pointer)) or type_ in _POINTERS:
        raise TypeError(f"{type_.__name__} holds a pointer, which means nothing in another process")
    code = getattr(type_, "_type_", None)
    if getattr(type_, _NATIVE_ORDER, type_) is not type_:  # a byte-swapped number
        return f"swapped {code}/{ctypes.sizeof(type_)}"
    if isinstance(code, str) and code in _NUMBER_CODES:
        # Numbers by kind and width, as Rust names them (i64, f64, ...): the same
        # description whichever ctypes alias (c_long, c_longlong, c_int64) named it.
        return f"{_NUMBER_CODES[code]}{8 * ctypes.sizeof(type_)}"
    return f"{code or type_.__name__}/{ctypes.sizeof(type_)}"


def _fingerprint(description: str) -> int:
    """FNV-1a (64-bit, never 0) of a type description: the slot header's type check,
    computed the same way as Rust's ``shmplane::slot::fingerprint`` so that
    ``RawValue('d')`` is a Rust ``Slot<f64>`` and ``RawArray('d', n)`` a
    ``Slot<[f64; n]>``."""
    h = 0xCBF29CE484222325
    for b in description.encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h or 1


def _resolve(typecode_or_type: Any) -> Any:
    """The ctypes type of a typecode or type; TypeError for anything else or pointers."""
    type_ = typecode_to_type.get(typecode_or_type, typecode_or_type) if isinstance(typecode_or_type, str) \
        else typecode_or_type
    ok = isinstance(type_, type) and issubclass(type_, (ctypes._SimpleCData, ctypes.Array, ctypes._Pointer, *_COMPOUND))
    if not ok:
        raise TypeError(f"expected a multiprocessing typecode or a ctypes type, got {typecode_or_type!r}")
    _describe(type_)  # raises TypeError for pointers, also nested in fields
    return type_


def _new_name(kind: str) -> str:
    # ``anon-``: a generated name, which the first one in a process sweeps for dead
    # processes' leftovers (as channels' names do).
    _sweep_dead_anonymous_once()
    return f"anon-{kind}-{os.getpid()}-{next(_counter)}-{os.urandom(4).hex()}"


def _picklable(type_: Any) -> Any:
    """``type_`` in a form pickle can carry (ctypes array types are built on the fly and
    cannot be pickled by reference)."""
    if isinstance(type_, type) and issubclass(type_, ctypes.Array):
        return ("array", _picklable(type_._type_), type_._length_)
    return type_


def _unpickled(token: Any) -> Any:
    if isinstance(token, tuple):
        return _unpickled(token[1]) * token[2]
    return token


def _rebuild(cls: Any, slot: ByteSlot, token: Any) -> Any:
    return cls._wrap(slot, _unpickled(token))


def _check_length(slot: ByteSlot, type_: Any) -> None:
    """Refuse (closing it) a slot whose length is not that of ``type_``, which its
    type fingerprint matched: the header contradicts itself (another process's bytes;
    the creator always makes the two agree)."""
    if len(slot) != ctypes.sizeof(type_):
        name = slot.name
        slot.close()
        raise CorruptSegmentError(
            f"slot {name!r} holds {len(slot)} bytes, but its type fingerprint says "
            f"{_describe(type_)} ({ctypes.sizeof(type_)} bytes)"
        )


def _coerce(type_: Any, v: Any) -> Any:
    """``v`` as a ``type_`` instance with ctypes' own conversions and errors."""
    if isinstance(v, type_):
        return v
    if _is_compound(type_) and isinstance(v, tuple):
        return type_(*v)
    if issubclass(type_, ctypes.Array):
        out = type_()
        out[:] = v
        return out
    return type_(v)


# -- live views of structures (RawValue of a Structure, RawArray elements, nested fields)


def _field_property(owner: Any, fname: str, ftype: Any) -> property:
    desc = getattr(owner, fname)
    offset, size = desc.offset, ctypes.sizeof(ftype)  # a bit field: its storage unit
    whole = ctypes.sizeof(owner)

    if _is_compound(ftype):
        view = _view_class(ftype)

        def get(self: Any) -> Any:
            return view._at(self._slot, self._offset + offset)
    else:
        def get(self: Any) -> Any:
            # ctypes decodes the field from a consistent copy of the whole structure:
            # bit fields, char arrays as bytes, and so on, exactly as it would.
            return getattr(owner.from_buffer_copy(self._slot.read_at(self._offset, whole)), fname)

    def set(self: Any, v: Any) -> None:
        # ctypes converts and validates through a scratch copy of the owner; only the
        # field's own bytes (for a bit field, its storage unit) are written.
        scratch = owner.from_buffer_copy(self._slot.read_at(self._offset, whole))
        setattr(scratch, fname, v)
        self._slot.write_strided(self._offset + offset, size, size, bytes(scratch)[offset:offset + size])

    prop = property(get, set, doc=f"field {fname!r} ({ftype.__name__}, {size} bytes at +{offset})")
    if ftype in _NATIVE and desc.size == size:  # a native-order number, not a bit field
        return _FastField(offset, _NATIVE[ftype], size, prop)  # type: ignore[return-value]
    return prop


class _StructView:
    """A live view of a structure at ``_offset`` in a slot: field reads and writes go
    to shared memory (each one consistent); ``snapshot()`` reads all fields at once."""

    __slots__ = ("_slot", "_offset")
    _slot: ByteSlot
    _offset: int
    _ctype: Any = None

    @classmethod
    def _at(cls, slot: ByteSlot, offset: int) -> Any:
        self = object.__new__(cls)
        self._slot = slot
        self._offset = offset
        return self

    def snapshot(self) -> Any:
        """A private ctypes copy of the whole structure, read consistently."""
        return self._ctype.from_buffer_copy(self._slot.read_at(self._offset, ctypes.sizeof(self._ctype)))

    def __reduce__(self) -> tuple[Any, ...]:
        # As the stdlib pickles a structure element: a copy of its bytes.
        return self._ctype.from_buffer_copy, (bytes(self.snapshot()),)

    def __repr__(self) -> str:
        fields = ", ".join(f"{f[0]}={getattr(self, f[0])!r}" for f in self._ctype._fields_)
        return f"<shmplane view of {self._ctype.__name__}({fields})>"


_views: dict[Any, Any] = {}
_dtypes: dict[Any, Any] = {}
_value_classes: dict[Any, Any] = {}


def _add_fields(ns: dict[str, Any], type_: Any) -> None:
    def reachable(t: Any) -> dict[str, Any]:
        # The fields of `t`, and those of its anonymous members (at any depth), which
        # ctypes makes reachable directly.
        fields = {f[0]: f[1] for f in t._fields_}
        for name in getattr(t, "_anonymous_", ()):
            fields.update(reachable(fields[name]))
        return fields

    for name, ftype in reachable(type_).items():
        if hasattr(type_, name):  # ctypes exports no name for a nested anonymous member
            ns[name] = _field_property(type_, name, ftype)


def _view_class(type_: Any) -> Any:
    cls = _views.get(type_)
    if cls is None:
        ns: dict[str, Any] = {"__slots__": (), "_ctype": type_}
        _add_fields(ns, type_)
        cls = _views[type_] = type(f"{type_.__name__}View", (_StructView,), ns)
    return cls


# -- RawValue


class _SlotHandle:
    """What RawValue and RawArray share: versions, waits, the name, closing."""

    __slots__ = ()

    @property
    def _slot(self) -> ByteSlot:  # the native base's, for the type checker
        raise NotImplementedError

    @property
    def version(self) -> int:
        """Grows with every completed write (one atomic load). Element, field and
        ``.value`` reads made after it return that write or a later one. A writer that
        died half-way through a write holds it back until the next write or a
        ``wait_for_update`` (which finishes such a write within one wait slice)."""
        return self._slot.version

    def wait_for_update(self, since: int, timeout: float | None = None) -> int:
        """Block until ``version > since`` and return the new version (versions only
        grow; a ``since`` from the future waits for a newer write).

        The GIL is released and Ctrl-C works. ``timeout`` is in seconds (None: forever).

        Raises:
            shmplane.Timeout: nothing was written within ``timeout``.
        """
        return self._slot.wait_for_update(since, timeout)

    async def wait_for_update_async(self, since: int, timeout: float | None = None) -> int:
        """``await``-able ``wait_for_update``: waits on this handle's doorbell FIFO
        (``/dev/shm/shmplane.<name>@w<pid>.<n>``, rung by writers only while a reader
        waits this way) with the event loop's ``add_reader``; no helper thread.

        Raises:
            shmplane.Timeout: nothing was written within ``timeout``.
            shmplane.ClosedError: the handle was closed.
            ValueError: a negative or NaN timeout.
            OverflowError: ``since`` is negative (as ``wait_for_update``).
        """
        from ._aio import slot_update

        return await slot_update(self._slot, since, timeout)

    @property
    def policy(self) -> str:
        """How ``wait_for_update`` waits: 'spin', 'block' or 'adaptive(spin_us=N)'."""
        return self._slot.policy

    def set_policy(self, policy: str, spin_us: float = 20.0) -> None:
        """Set how ``wait_for_update`` waits, as for channels: ``"adaptive"`` (default:
        spin up to ``spin_us`` µs while updates come that fast, then sleep on a futex),
        ``"spin"`` (burns a core), ``"block"`` (sleep at once).

        Raises:
            ValueError: unknown policy or spin_us out of 0..=1e9.
        """
        self._slot.set_policy(policy, spin_us)

    @property
    def name(self) -> str | None:
        """Name to ``attach`` by from an unrelated process."""
        return self._slot.name

    def close(self) -> None:
        """Release this handle (the shared memory goes with the last one) and the arrays
        ``snapshot()`` keeps for reuse."""
        self._slot.close()
        release = getattr(self, "_release_snapshots", None)
        if release is not None:
            release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()



class RawValue(_FastSlotView, _SlotHandle):
    """A ctypes value in shared memory, like ``multiprocessing.RawValue``.

    ``RawValue('d', 1.5).value`` reads a consistent snapshot (natively for numeric
    typecodes: about one cache-line read plus a float object); assigning ``.value`` or
    a structure field writes it (a field write changes only that field's bytes).
    ``RawValue(typecode_or_type, *args, name=None)`` creates one: see ``__new__``.
    """

    __slots__ = ("_type",)
    _type: Any
    _offset = 0

    def __new__(cls, typecode_or_type: Any, *args: Any, name: str | None = None) -> RawValue:
        """Create a value in shared memory.

        Args:
            typecode_or_type: a ``multiprocessing``/``array`` typecode (``'d'``, ``'i'``,
                ``'c'``, ...) or a ctypes type: a simple type, an array type, or a
                ``Structure``/``Union`` without pointers.
            *args: the initial value, as for the ctypes type (zero by default).
            name: segment name to ``attach`` by (``[A-Za-z0-9._-]``); generated if None.

        Raises:
            TypeError: unknown typecode, pointer types, or values ctypes rejects.
            shmplane.NoSpaceError: ``/dev/shm`` is full.
            shmplane.AlreadyExistsError: ``name`` is taken by a live value.
            shmplane.InvalidNameError: ``name`` breaks the naming rules.
            shmplane.InvalidArgumentError: a value larger than 256 MiB.
        """
        type_ = _resolve(typecode_or_type)
        initial = type_(*args)
        slot = ByteSlot.create(_new_name("value") if name is None else name, bytes(initial), _fingerprint("value:" + _describe(type_)))
        return cls._wrap(slot, type_)  # type: ignore[return-value]

    @classmethod
    def attach(cls, name: str, typecode_or_type: Any, timeout: float | None = 0.0) -> RawValue:
        """Attach to the value named ``name`` (``.name`` of the creator) from any process,
        waiting at most ``timeout`` seconds for it to be created (0: not at all; None:
        forever).

        Raises:
            shmplane.NotFoundError: no such value (after ``timeout``).
            shmplane.WrongKindError: it holds another type, or is not a slot.
            shmplane.CorruptSegmentError: its length contradicts its type.
            ValueError: a negative or NaN timeout.
        """
        type_ = _resolve(typecode_or_type)
        return cls._wrap(ByteSlot.open(name, _fingerprint("value:" + _describe(type_)), timeout), type_)

    @classmethod
    def _wrap(cls, slot: ByteSlot, type_: Any) -> Any:
        if issubclass(type_, ctypes.Array):
            # RawValue(c_int * 3, ...) is an array, as in the stdlib: index it.
            return RawArray._wrap(slot, type_)
        if _is_compound(type_) and cls is RawValue:
            found = _value_classes.get(type_)
            if found is not None:
                cls = found
            else:
                ns: dict[str, Any] = {"__slots__": (), "_ctype": type_}
                _add_fields(ns, type_)
                cls = _value_classes[type_] = type(f"RawValue[{type_.__name__}]", (RawValue,), ns)
        _check_length(slot, type_)
        self = _SlotView.__new__(cls, slot, _NATIVE.get(type_), ctypes.sizeof(type_), 1, True)
        self._type = type_
        return self

    def snapshot(self) -> Any:
        """A private ctypes copy of the whole value, read consistently."""
        return self._type.from_buffer_copy(self._slot.read())

    copy = snapshot

    # hooks of the native base for non-numeric types
    def _get_value(self) -> Any:
        if _is_compound(self._type):
            raise AttributeError(f"{self._type.__name__!r} object has no attribute 'value'")
        return self.snapshot().value

    def _set_value(self, v: Any) -> None:
        if _is_compound(self._type):
            raise AttributeError(f"{self._type.__name__!r} object has no attribute 'value'")
        self._slot.write(bytes(_coerce(self._type, v)))

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (RawValue, self._slot, _picklable(self._type))

    def __repr__(self) -> str:
        try:
            value = repr(self.snapshot())
        except ClosedError:  # a repr must not raise (debuggers, logs, tracebacks)
            value = "(closed)"
        return f"<shmplane.RawValue {value} name={self.name!r}>"


# -- RawArray


def _array_from_buffer(elem: Any, init: Any) -> Any:
    """``init`` as a ctypes array of ``elem`` made with one copy, if it is a 1-d
    C-contiguous buffer of exactly that element type in native order (an ndarray of
    the same dtype): the bytes ctypes' conversion of each element would give. ``None``
    for anything else (the caller converts element by element, as ctypes does)."""
    code = getattr(elem, "_type_", None)
    if not isinstance(code, str) or len(code) != 1:
        return None  # structures and arrays of arrays
    try:
        view = memoryview(init)
    except TypeError:
        return None
    with view:
        order = "<" if sys.byteorder == "little" else ">"
        if (
            view.ndim != 1
            or not view.c_contiguous
            or view.format not in (code, "@" + code, "=" + code, order + code)
            or view.itemsize != ctypes.sizeof(elem)
        ):
            return None
        return (elem * len(view)).from_buffer_copy(view)


class RawArray(_FastSlotView, _SlotHandle):
    """A ctypes array in shared memory, like ``multiprocessing.RawArray``.

    Indexing returns one element and slicing a list, each read as one consistent
    snapshot; ``snapshot()`` returns all of it as a new numpy array in one read (up to
    4 KiB of numbers: one of the last two it returned, refilled, once nothing else
    holds it, as CPython recycles floats; ~30 ns for 16 doubles; the handle keeps a
    reference to those two, so ``sys.getrefcount`` counts one more, ``ndarray.resize``
    needs ``refcheck=False``, and one let go is freed at the next ``snapshot()`` or at
    ``close()``). Element
    and slice assignment are single writes (a slice: all of it or nothing). Elements
    that are structures are live views, as in the stdlib.
    ``RawArray(typecode_or_type, size_or_initializer, name=None)`` creates one: see
    ``__new__``.
    """

    __slots__ = ("_type",)
    _type: Any

    def __new__(cls, typecode_or_type: Any, size_or_initializer: Any, *, name: str | None = None) -> RawArray:
        """Create an array in shared memory.

        Args:
            typecode_or_type: a typecode (``'d'``, ``'i'``, ``'c'``, ...) or a ctypes type
                without pointers.
            size_or_initializer: the number of elements (zero-filled) or a sequence of
                initial values.
            name: segment name to ``attach`` by (``[A-Za-z0-9._-]``); generated if None.

        Raises:
            TypeError: unknown typecode, pointer types, or initial values ctypes rejects.
            ValueError: a negative size.
            shmplane.InvalidArgumentError: more than 256 MiB.
            shmplane.NoSpaceError: ``/dev/shm`` is full.
            shmplane.AlreadyExistsError: ``name`` is taken by a live value.
            shmplane.InvalidNameError: ``name`` breaks the naming rules.
        """
        elem = _resolve(typecode_or_type)
        n = size_or_initializer if isinstance(size_or_initializer, int) else len(size_or_initializer)
        if n < 0:
            raise ValueError(f"RawArray of {n} elements: the size must not be negative")
        if n * ctypes.sizeof(elem) > MAX_SLOT_BYTES:
            # Refused before ctypes allocates the zero-filled initial value.
            raise InvalidArgumentError(
                f"RawArray of {n} x {ctypes.sizeof(elem)} bytes: a slot value is at most {MAX_SLOT_BYTES} bytes"
            )
        if isinstance(size_or_initializer, int):
            initial = (elem * size_or_initializer)()
        else:
            initial = _array_from_buffer(elem, size_or_initializer)
            if initial is None:
                initial = (elem * len(size_or_initializer))(*size_or_initializer)
        slot = ByteSlot.create(_new_name("array") if name is None else name, bytes(initial), _fingerprint("array:" + _describe(elem)))
        return cls._wrap(slot, type(initial))

    @classmethod
    def attach(cls, name: str, typecode_or_type: Any, timeout: float | None = 0.0) -> RawArray:
        """Attach to the array named ``name`` from any process; its length comes from
        the segment. ``timeout``: as ``RawValue.attach``.

        Raises:
            shmplane.NotFoundError: no such array (after ``timeout``).
            shmplane.WrongKindError: its elements are of another type, or not a slot.
            shmplane.CorruptSegmentError: its length is not whole elements.
            TypeError: zero-sized elements.
            ValueError: a negative or NaN timeout.
        """
        elem = _resolve(typecode_or_type)
        slot = ByteSlot.open(name, _fingerprint("array:" + _describe(elem)), timeout)
        size = ctypes.sizeof(elem)
        if size == 0:
            slot.close()
            raise TypeError(f"a {len(slot)}-byte slot is not an array of {elem.__name__}")
        # A length that is not whole elements fails _check_length in _wrap.
        return cls._wrap(slot, elem * -(-len(slot) // size))

    @classmethod
    def _wrap(cls, slot: ByteSlot, type_: Any) -> RawArray:
        elem = type_._type_
        _check_length(slot, type_)
        self = _SlotView.__new__(cls, slot, _NATIVE.get(elem), ctypes.sizeof(elem), type_._length_, False)
        self._type = type_
        return self

    # snapshot(): all elements as a new 1-d numpy array in one consistent read; native
    # for numeric elements (the base class), else this hook (structured dtypes, chars).
    def _snapshot(self) -> Any:
        import numpy as np

        dtype = _dtypes.get(self._type._type_)
        if dtype is None:
            dtype = _dtypes[self._type._type_] = np.dtype(self._type._type_)
        out = np.empty(len(self), dtype=dtype)
        self._slot.read_into(out)  # type: ignore[arg-type]  # ndarray exports a buffer
        return out

    def copy(self) -> Any:
        """A private ctypes array copy of all elements, read consistently."""
        return self._type.from_buffer_copy(self._slot.read())

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> Any:
        """``np.asarray(arr)`` / ``np.array(arr)``: all elements in one consistent read.

        Arrays of numbers also export a read-only buffer of such a snapshot, which
        numpy takes first (``np.asarray(arr)``, even with ``copy=False``, then returns a
        read-only array over that private snapshot, never over shared memory); this
        method serves the rest (structures, chars) and explicit calls, with a fresh
        array.

        Raises:
            ValueError: ``copy=False``: this method cannot hand out a view of the
                shared elements (they are two copies that writers flip between).
        """
        if copy is False:
            raise ValueError("a shmplane RawArray cannot be viewed without a copy: use np.asarray(arr) or snapshot()")
        out = self.snapshot()
        return out if dtype is None else out.astype(dtype, copy=False)

    def __iter__(self) -> Iterator[Any]:
        """Iterate over one consistent snapshot (structure elements: live views)."""
        return iter(self[:])

    # hooks of the native base for non-numeric elements
    def _getitem(self, key: Any) -> Any:
        elem = self._type._type_
        if _is_compound(elem):
            view, size = _view_class(elem), ctypes.sizeof(elem)
            if isinstance(key, slice):
                return [view._at(self._slot, i * size) for i in range(*key.indices(len(self)))]
            if type(key) is int and 0 <= key < len(self):  # the common case, briefly
                return view._at(self._slot, key * size)
            return view._at(self._slot, self._position(key) * size)
        if isinstance(key, slice):
            return self.copy()[key]
        i = self._position(key)
        size = ctypes.sizeof(elem)
        return (elem * 1).from_buffer_copy(self._slot.read_at(i * size, size))[0]

    def _setitem(self, key: Any, v: Any) -> None:
        elem = self._type._type_
        size = ctypes.sizeof(elem)
        if isinstance(key, slice):
            positions = range(*key.indices(len(self)))
            scratch = (elem * len(positions))()
            try:
                if _is_compound(elem):
                    items = list(v)
                    if len(items) != len(positions):
                        raise ValueError("Can only assign sequence of same size")
                    for k, item in enumerate(items):
                        scratch[k] = item  # ctypes' conversions and errors
                else:
                    scratch[:] = v
            except TypeError as e:
                if "len()" in str(e) or "not iterable" in str(e):
                    raise ValueError("Can only assign sequence of same size") from None
                raise
            data = bytes(scratch)
            if positions.step < 0:
                data = b"".join(data[k * size:(k + 1) * size] for k in reversed(range(len(positions))))
                positions = positions[::-1]
            if positions:
                self._slot.write_strided(positions[0] * size, positions.step * size, size, data)
            return
        i = self._position(key)
        scratch = (elem * 1)()
        scratch[0] = v  # ctypes' conversions and errors
        self._slot.write_strided(i * size, size, size, bytes(scratch))

    def _encode(self, v: Any) -> bytes:
        scratch = (self._type._type_ * 1)()
        scratch[0] = v  # ctypes' conversions and errors
        return bytes(scratch)

    def _position(self, key: Any) -> int:
        try:
            i = key.__index__()
        except AttributeError:
            raise TypeError("indices must be integers") from None
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("invalid index")
        return i

    def _char_array(self) -> Any:
        elem = self._type._type_
        if elem not in (ctypes.c_char, ctypes.c_wchar):
            raise AttributeError(f"{self._type.__name__!r} object has no attribute 'value'")
        return elem

    def _get_value(self) -> Any:
        self._char_array()
        return self.copy().value

    def _set_value(self, v: Any) -> None:
        elem = self._char_array()
        scratch = self._type()
        scratch.value = v  # ctypes' checks: type, "byte string too long"
        n = min(len(v) + 1, len(self)) * ctypes.sizeof(elem)  # the value and its NUL
        if n:
            self._slot.write_strided(0, n, n, bytes(scratch)[:n])

    @property
    def raw(self) -> bytes:
        """All bytes of a ``c_char`` array (read consistently)."""
        if self._type._type_ is not ctypes.c_char:
            raise AttributeError(f"{self._type.__name__!r} object has no attribute 'raw'")
        return self._slot.read()

    @raw.setter
    def raw(self, v: bytes) -> None:
        if self._type._type_ is not ctypes.c_char:
            raise AttributeError(f"{self._type.__name__!r} object has no attribute 'raw'")
        scratch = self._type()
        scratch.raw = v  # ctypes' checks
        if len(v):
            self._slot.write_strided(0, len(v), len(v), bytes(scratch)[:len(v)])

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (RawArray, self._slot, _picklable(self._type))

    def __repr__(self) -> str:
        elem = self._type._type_
        return f"<shmplane.RawArray {elem.__name__}[{len(self)}] name={self.name!r}>"


# snapshot() as a method object of RawArray itself: CPython calls a C method straight
# from the bytecode only for instances of exactly the method's class.
_own_fast_methods(RawArray)
