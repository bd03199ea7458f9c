"""Arrays of every plain dtype and shape come back with the same dtype, shape and data;
other arrays (non-contiguous, Fortran, structured, object) go through pickle-5."""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np
import pytest

import shmplane

DTYPES = ["bool", "int8", "uint8", "uint16", "int32", "int64", "float16", "float32", "float64",
          "complex64", "complex128", "datetime64[ns]", "timedelta64[us]", "<U7", "S5", ">i4"]
SHAPES = [(), (0,), (7,), (3, 4, 5), (1000, 1000)]


def _make(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(abs(hash((dtype, shape))) % 2**32)
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * np.dtype(dtype).itemsize, dtype=np.uint8)
    arr = raw.view(dtype).reshape(shape)
    if arr.dtype.kind in "fc":
        arr = np.asarray(np.nan_to_num(arr))  # NaN != NaN would fail the equality check
    return arr


def _same(a: np.ndarray, b: object) -> None:
    assert isinstance(b, np.ndarray)
    assert b.dtype == a.dtype and b.shape == a.shape
    assert a.tobytes() == np.ascontiguousarray(b).tobytes()


CASES = [(d, s) for d in DTYPES for s in SHAPES if not (d in ("<U7", "S5", "float16") and s == (1000, 1000))]


@pytest.mark.parametrize(("dtype", "shape"), CASES)
def test_plain_arrays_in_process(dtype: str, shape: tuple[int, ...]) -> None:
    tx, rx = shmplane.channel(capacity=1 << 25)
    with tx, rx:
        a = _make(dtype, shape)
        tx.send(a)
        b = rx.recv(timeout=5)
        _same(a, b)
        assert b.flags.writeable and b.flags.c_contiguous


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(40.0).reshape(5, 8)[:, ::3],  # non-contiguous
        np.asfortranarray(np.arange(12).reshape(3, 4)),  # Fortran order
        np.array([(1, 2.5), (3, 4.5)], dtype=[("a", "i4"), ("b", "f8")]),  # structured
        np.array([1, "two", None], dtype=object),  # object
    ],
    ids=["strided", "fortran", "structured", "object"],
)
def test_other_arrays_via_pickle(arr: np.ndarray) -> None:
    tx, rx = shmplane.channel(capacity=1 << 16)
    with tx, rx:
        tx.send(arr)
        back = rx.recv(timeout=5)
        assert back.dtype == arr.dtype and back.shape == arr.shape
        assert (back == arr).all()


def _sum_all(q: "mp.Queue[object]", out: "mp.Queue[object]") -> None:
    rx = q.get(timeout=20)  # an endpoint arriving at an already-running child
    with rx:
        out.put(sum(float(rx.recv(timeout=20).sum()) for _ in range(3)))


@pytest.mark.timeout(60)
def test_endpoint_sent_through_a_queue_to_a_running_child() -> None:
    ctx = mp.get_context("spawn")
    q, out = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=_sum_all, args=(q, out), daemon=True)
    p.start()
    tx, rx = shmplane.channel(capacity=1 << 22)
    path = tx.path  # captured before close: a closed end has no name or path
    assert path is not None
    q.put(rx)
    for i in range(3):
        tx.send(np.full(100_000, float(i)), timeout=20)
    assert out.get(timeout=30) == pytest.approx(300_000.0)
    rx.close()
    tx.close()
    p.join(20)
    assert p.exitcode == 0
    # Both ends closed (the child's at its exit): the segment is gone.
    deadline = time.monotonic() + 5
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not os.path.exists(path)
