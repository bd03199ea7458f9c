"""Drop-in for ``multiprocessing.sharedctypes.RawValue`` (``RawArray`` follows).

``shmplane.RawValue(typecode_or_type, *args)`` takes the same typecodes and ctypes
types (including ``ctypes.Structure`` subclasses without pointers) and behaves like the
stdlib object for ``.value`` and field access, but every whole read is a consistent
snapshot (a seqlock latch: readers never see a torn value and never wait for a
writer or on a dead one), and it also offers ``version``, ``wait_for_update`` and
``snapshot()``, can be attached by name from an unrelated process
(``RawValue.attach(name, type)``), and pickles into ``multiprocessing`` children under
fork and spawn.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import os
from multiprocessing.sharedctypes import typecode_to_type
from typing import Any

from ._shmplane import ByteSlot

__all__ = ["RawValue"]

_counter = itertools.count(1)
# struct-module codes the native side decodes without building a ctypes object.
_NATIVE = {
    ctypes.c_byte: "b", ctypes.c_ubyte: "B", ctypes.c_short: "h", ctypes.c_ushort: "H",
    ctypes.c_int: "i", ctypes.c_uint: "I", ctypes.c_long: "l", ctypes.c_ulong: "L",
    ctypes.c_longlong: "q", ctypes.c_ulonglong: "Q", ctypes.c_float: "f",
    ctypes.c_double: "d", ctypes.c_bool: "?",
}


def _describe(type_: Any) -> str:
    """A stable description of a ctypes type: its code or fields, size and alignment."""
    if isinstance(type_, type) and issubclass(type_, (ctypes.Structure, ctypes.Union)):
        fields = ",".join(f"{f[0]}:{_describe(f[1])}" for f in type_._fields_)
        return f"{type_.__name__}{{{fields}}}/{ctypes.sizeof(type_)}/{ctypes.alignment(type_)}"
    if isinstance(type_, type) and issubclass(type_, ctypes.Array):
        return f"[{_describe(type_._type_)};{type_._length_}]"
    if isinstance(type_, type) and issubclass(type_, ctypes._Pointer):
        raise TypeError(f"{type_.__name__} holds a pointer, which means nothing in another process")
    return f"{getattr(type_, '_type_', type_.__name__)}/{ctypes.sizeof(type_)}"


def _fingerprint(type_: Any) -> int:
    digest = hashlib.blake2b(_describe(type_).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1


_POINTERS = (ctypes.c_char_p, ctypes.c_wchar_p, ctypes.c_void_p)


def _check_no_pointers(type_: Any) -> None:
    if type_ in _POINTERS:
        raise TypeError(f"{type_.__name__} is a pointer, which means nothing in another process")
    _describe(type_)  # raises for pointer types
    if isinstance(type_, type) and issubclass(type_, (ctypes.Structure, ctypes.Union)):
        for field in type_._fields_:
            _check_no_pointers(field[1])


class RawValue:
    """A ctypes value in shared memory; see the module docs.

    ``RawValue('d', 1.5).value`` reads a consistent snapshot (native fast path for
    numeric typecodes); assigning ``.value`` or a field writes the whole value.

    Raises:
        TypeError: unknown typecode, pointer types, or values ctypes rejects.
        shmplane.WrongKindError: ``attach`` to a slot of another type.
    """

    __slots__ = ("_slot", "_type", "_code", "__weakref__")

    def __init__(self, typecode_or_type: Any, *args: Any, name: str | None = None) -> None:
        type_ = typecode_to_type.get(typecode_or_type, typecode_or_type)
        if not (isinstance(type_, type) and issubclass(type_, ctypes._SimpleCData | ctypes.Structure | ctypes.Union)):
            raise TypeError(f"expected a typecode or a ctypes type, got {typecode_or_type!r}")
        _check_no_pointers(type_)
        initial = type_(*args)
        name = name or f"value-{os.getpid()}-{next(_counter)}-{os.urandom(4).hex()}"
        object.__setattr__(self, "_slot", ByteSlot.create(name, bytes(initial), _fingerprint(type_)))
        object.__setattr__(self, "_type", type_)
        object.__setattr__(self, "_code", _NATIVE.get(type_))

    @classmethod
    def attach(cls, name: str, typecode_or_type: Any) -> RawValue:
        """Attach to the value named ``name`` (``.name`` of the creator), checking the type."""
        type_ = typecode_to_type.get(typecode_or_type, typecode_or_type)
        return cls._wrap(ByteSlot.open(name, _fingerprint(type_)), type_)

    @classmethod
    def _wrap(cls, slot: ByteSlot, type_: Any) -> RawValue:
        self = object.__new__(cls)
        object.__setattr__(self, "_slot", slot)
        object.__setattr__(self, "_type", type_)
        object.__setattr__(self, "_code", _NATIVE.get(type_))
        return self

    def snapshot(self) -> Any:
        """A private ctypes copy of the whole value, read consistently."""
        return self._type.from_buffer_copy(self._slot.read())

    @property
    def value(self) -> Any:
        if self._code is not None:
            return self._slot.read_scalar(self._code)
        return self.snapshot().value

    @value.setter
    def value(self, v: Any) -> None:
        self._slot.write(bytes(self._type(v)))

    def __getattr__(self, field: str) -> Any:
        if issubclass(self._type, (ctypes.Structure, ctypes.Union)):
            return getattr(self.snapshot(), field)
        raise AttributeError(f"{type(self).__name__} of {self._type.__name__} has no attribute {field!r}")

    def __setattr__(self, field: str, v: Any) -> None:
        if field != "value" and issubclass(self._type, (ctypes.Structure, ctypes.Union)):
            copy = self.snapshot()
            setattr(copy, field, v)  # ctypes validates (TypeError, AttributeError)
            self._slot.write(bytes(copy))
        else:
            object.__setattr__(self, field, v)

    @property
    def version(self) -> int:
        """Changes after every write (one atomic load)."""
        return self._slot.version

    def wait_for_update(self, since: int, timeout: float | None = None) -> int:
        """Block (GIL released, Ctrl-C works) until ``version != since``; the new version.

        Raises shmplane.Timeout after ``timeout`` seconds."""
        return self._slot.wait_for_update(since, timeout)

    @property
    def name(self) -> str | None:
        """Name to ``attach`` by from an unrelated process."""
        return self._slot.name

    def close(self) -> None:
        """Release this handle (the memory goes with the last one)."""
        self._slot.close()

    def __reduce__(self) -> tuple[Any, ...]:
        return RawValue._wrap, (self._slot, self._type)

    def __repr__(self) -> str:
        return f"<shmplane.RawValue {self.snapshot()!r}>"
