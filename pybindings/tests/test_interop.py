"""One message format for both languages: a Rust process (``channels/examples/
array_interop.rs``) and this Python process exchange numpy arrays through a channel,
with the dtype descriptor, shape and memory order intact."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import shmplane

ROOT = Path(__file__).resolve().parents[2]


def _example(mode: str, name: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["cargo", "run", "-q", "-p", "shmplane", "--example", "array_interop", "--", mode, name],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _fnv1a(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


@pytest.mark.timeout(600)
def test_python_receives_arrays_from_rust(shm_name: str) -> None:
    rx = shmplane.Receiver.create(shm_name, 1 << 16)
    with rx:
        p = _example("send", shm_name)
        try:
            a = rx.recv(timeout=540)  # the first call may build the example
            f = rx.recv(timeout=20)
            assert rx.recv(timeout=20) == b"done"
        finally:
            out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err[-2000:]
    assert isinstance(a, np.ndarray) and a.dtype == np.float64 and a.shape == (1000, 3)
    assert np.array_equal(a, np.arange(3000.0).reshape(1000, 3))
    assert a.flags.c_contiguous
    assert f.dtype == np.int32 and f.shape == (2, 3) and f.flags.f_contiguous and not f.flags.c_contiguous
    assert f.tolist() == [[1, 2, 3], [4, 5, 6]]


def _arrays() -> list[Any]:
    rng = np.random.default_rng(3)
    return [
        np.arange(12, dtype="<f8").reshape(3, 4),
        np.asfortranarray(np.arange(12, dtype="<i4").reshape(3, 4)),
        np.arange(6, dtype=">u2"),
        rng.random((2, 3, 4)).astype(np.float32),
        np.array([1 + 2j, 3 - 4j], dtype=np.complex128),
        np.array([True, False, True]),
        np.array(["2024-01-01", "2025-06-30"], dtype="datetime64[ns]"),
        np.array([b"ab", b"cde"], dtype="S3"),
        np.array(["xy", "z"], dtype="<U2"),
        np.array(7, dtype=np.int64),  # 0-d
        np.zeros((0, 5), dtype=np.uint8),  # empty
        rng.integers(0, 255, size=(300, 301), dtype=np.uint8),
    ]


@pytest.mark.timeout(600)
def test_rust_receives_arrays_from_python(shm_name: str) -> None:
    """Python sends arrays of several dtypes, byte orders and memory orders; Rust gets
    each with numpy's descriptor, the shape, the order and the bytes in memory order."""
    tx = shmplane.Sender.create(shm_name, 1 << 16)
    arrays = _arrays()
    with tx:
        p = _example("recv", shm_name)
        try:
            for arr in arrays:
                tx.send(arr, timeout=540)
            tx.send(b"done", timeout=60)
        finally:
            out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err[-2000:]
    lines = out.split("\n")[: len(arrays)]
    for arr, line in zip(arrays, lines):
        order = "F" if arr.flags.f_contiguous and not arr.flags.c_contiguous else "C"
        want = f"{arr.dtype.str} {order} {','.join(map(str, arr.shape))} {_fnv1a(arr.tobytes(order=order)):016x}"
        assert line == want, (arr, line)


def test_array_orders_round_trip_in_python(shm_name: str) -> None:
    # One thread sends and receives: every message must fit the ring at once.
    tx, rx = shmplane.channel(capacity=1 << 20, name=shm_name)
    with tx, rx:
        for arr in _arrays():
            tx.send(arr, timeout=5)
            back = rx.recv(timeout=5)
            assert back.dtype == arr.dtype and back.shape == arr.shape
            assert back.flags.f_contiguous == arr.flags.f_contiguous
            assert back.flags.c_contiguous == arr.flags.c_contiguous
            assert np.array_equal(back, arr)
        # Neither C- nor F-contiguous: pickled (a copy), same values.
        strided = np.arange(20.0)[::2]
        tx.send(strided, timeout=5)
        assert np.array_equal(rx.recv(timeout=5), strided)


def test_wire_version_is_exported() -> None:
    assert shmplane._shmplane.WIRE_VERSION == 2
    assert os.path.exists(ROOT / "docs" / "wire-format.md")
