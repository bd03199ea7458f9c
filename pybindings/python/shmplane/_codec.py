"""How Python objects travel through a channel (called by the native module).

- ``bytes``-like objects go as raw bytes (handled natively for ``bytes``).
- C-contiguous numpy arrays of plain dtypes go as ``[meta, data]``: the data is copied
  once into the ring and once out into a fresh array; nothing is pickled.
- Anything else is pickled with protocol 5; its out-of-band buffers (PEP 574) are
  copied straight into the ring. Unpickling runs arbitrary code: only receive objects
  from peers you trust, exactly as with ``multiprocessing``.
"""

from __future__ import annotations

import pickle
import sys
from typing import Any

from ._shmplane import MAX_PARTS, TAG_BYTES, TAG_NDARRAY, TAG_PICKLE

__all__ = ["encode", "alloc_array", "alloc_buffer", "unpickle"]


def _plain_ndarray(np: Any, obj: Any) -> bool:
    dt = obj.dtype
    return bool(obj.flags.c_contiguous) and not dt.hasobject and dt.fields is None and dt.subdtype is None


def encode(obj: Any) -> tuple[int, list[Any]]:
    """Return ``(tag, parts)``: the record tag and the buffers to copy, in order."""
    np = sys.modules.get("numpy")
    if np is not None and type(obj) is np.ndarray and _plain_ndarray(np, obj):
        meta = f"{obj.dtype.str}|{','.join(map(str, obj.shape))}".encode()
        return TAG_NDARRAY, [meta, obj.reshape(-1).view(np.uint8)]
    if isinstance(obj, (bytes, bytearray)):
        return TAG_BYTES, [obj]
    if isinstance(obj, memoryview) and obj.c_contiguous:
        return TAG_BYTES, [obj]
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    if len(buffers) >= MAX_PARTS:
        # More out-of-band buffers than a record may list: pickle them in-band instead.
        return TAG_PICKLE, [pickle.dumps(obj, protocol=5)]
    return TAG_PICKLE, [data, *(b.raw() for b in buffers)]


def alloc_array(meta: bytes) -> tuple[Any, Any]:
    """An uninitialised array for an ndarray record's ``meta``, and a flat ``uint8`` view
    of it to copy into (0-d arrays and dtypes like datetime64 export no usable buffer)."""
    import numpy as np

    dtype, _, shape = meta.decode("ascii").rpartition("|")
    dims = tuple(int(d) for d in shape.split(",") if d)
    arr = np.empty(dims, dtype=np.dtype(dtype))
    return arr, arr.reshape(-1).view(np.uint8)


def alloc_buffer(nbytes: int) -> Any:
    """A writable, uninitialised buffer for an out-of-band pickle buffer."""
    np = sys.modules.get("numpy")
    if np is not None:
        return np.empty(nbytes, dtype=np.uint8)
    return bytearray(nbytes)


def unpickle(data: bytes, buffers: list[Any]) -> Any:
    """Rebuild a pickled object with its out-of-band buffers."""
    return pickle.loads(data, buffers=buffers)
