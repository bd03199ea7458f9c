"""How Python objects become messages and back (called by the native module).

The message format itself (tags, array descriptors, multipart payloads, chunking) is
implemented once, in Rust (``shmplane::frame``; ``docs/wire-format.md``); this module
only says what a Python object is made of and allocates what a received one needs.

- ``bytes``-like objects go as raw bytes (handled natively for ``bytes``).
- A ``list`` or ``tuple`` of 16 or more exact floats, or exact ints in ``i64`` range,
  is handled natively before this module is asked (a numbers message: 8 bytes per
  number, no pickle; ``pybindings/src/numbers.rs``).
- C- or Fortran-contiguous numpy arrays of plain dtypes go as an array message
  (descriptor ``dtype.str``, shape, order, and the data): copied once into the ring and
  once out into a fresh array of the same dtype, shape and order; nothing is pickled.
- Anything else is pickled with protocol 5; its out-of-band buffers (PEP 574) are
  copied straight into the ring. Unpickling runs arbitrary code: only receive objects
  from peers you trust, exactly as with ``multiprocessing``.
"""

from __future__ import annotations

import pickle
import sys
from typing import Any

from ._shmplane import MAX_PARTS, TAG_ARRAY, TAG_BYTES, TAG_PICKLE

__all__ = ["encode", "alloc_array", "alloc_buffer", "unpickle"]

#: A message's encoding: its tag, the buffers to copy in order, and for an array
#: ``(dtype.str, shape, order)``.
Encoded = tuple[int, list[Any], "tuple[str, list[int], str] | None"]


def _plain_dtype(dt: Any) -> bool:
    return not dt.hasobject and dt.fields is None and dt.subdtype is None


def encode(obj: Any, max_parts: int = MAX_PARTS) -> Encoded:
    """Return ``(tag, buffers, array description)`` for ``obj``. A pickle with more
    than ``max_parts`` parts (its stream and out-of-band buffers: more than the
    channel's first record can describe) is pickled in-band instead."""
    np = sys.modules.get("numpy")
    if np is not None and type(obj) is np.ndarray and _plain_dtype(obj.dtype):
        flags = obj.flags
        order = "C" if flags.c_contiguous else "F" if flags.f_contiguous else None
        if order is not None:
            flat = obj.reshape(-1, order=order).view(np.uint8)
            return TAG_ARRAY, [flat], (obj.dtype.str, list(obj.shape), order)
    if isinstance(obj, (bytes, bytearray)):
        return TAG_BYTES, [obj], None
    if isinstance(obj, memoryview) and obj.c_contiguous:
        return TAG_BYTES, [obj], None
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    if len(buffers) + 1 > min(max_parts, MAX_PARTS):
        # More out-of-band buffers than a message may list: pickle them in-band instead.
        return TAG_PICKLE, [pickle.dumps(obj, protocol=5)], None
    try:
        raws = [b.raw() for b in buffers]
    except BufferError:
        # A non-contiguous out-of-band buffer cannot be copied as one part.
        return TAG_PICKLE, [pickle.dumps(obj, protocol=5)], None
    return TAG_PICKLE, [data, *raws], None


def alloc_array(descr: str, shape: list[int], order: str) -> tuple[Any, Any]:
    """An uninitialised array of dtype ``descr``, ``shape`` and ``order`` ('C'/'F'), and a
    flat ``uint8`` view of its memory to copy into (0-d arrays and dtypes like
    datetime64 export no usable buffer of their own)."""
    import numpy as np

    arr = np.empty(tuple(shape), dtype=np.dtype(descr), order=order)  # type: ignore[call-overload]
    return arr, arr.reshape(-1, order=order).view(np.uint8)  # type: ignore[call-overload]


def alloc_buffer(nbytes: int) -> Any:
    """A writable, uninitialised buffer for an out-of-band pickle buffer."""
    np = sys.modules.get("numpy")
    if np is not None:
        return np.empty(nbytes, dtype=np.uint8)
    return bytearray(nbytes)


def unpickle(data: bytes, buffers: list[Any]) -> Any:
    """Rebuild a pickled object with its out-of-band buffers."""
    return pickle.loads(data, buffers=buffers)
