"""Round trips: what goes in comes out, in one process and across processes.

bytes-like objects come back as ``bytes``; C-contiguous arrays of plain dtypes come back
with the same dtype, shape and data; everything else goes through pickle-5. The ring is
wrapped many times with large and random-sized messages whose contents are checked.
"""

from __future__ import annotations

import collections
import math
import os
import threading
from typing import Any

import numpy as np
import pytest

import shmplane
from shm_helpers import get_report, payload, seg_path, sizes

METHODS = ["fork", "spawn"]
DTYPES = ["bool", "int8", "uint16", "int32", "int64", "float32", "float64", "complex128", "datetime64[ns]"]
SHAPES = [(), (0,), (7,), (3, 4, 5), (1000, 1000)]
STOP = "__stop_echo__"


# ------------------------------------------------------------------------ helpers


def make_array(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng([seed, len(shape), *shape, sum(map(ord, dtype))])
    n = math.prod(shape)
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)
    if dt.kind == "f":
        return (rng.standard_normal(n) * 1e3).astype(dt).reshape(shape)
    if dt.kind == "c":
        return (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dt).reshape(shape)
    if dt.kind == "M":
        return rng.integers(-(2**62), 2**62, size=shape, dtype=np.int64).astype(dt)
    raise AssertionError(dtype)


def capacity_for(nbytes: int) -> int:
    """A ring comfortably larger than one message of ``nbytes``."""
    cap = 1 << 16
    while cap < 2 * nbytes + 8192:
        cap <<= 1
    return cap


def assert_same(sent: Any, got: Any) -> None:
    """Deep equality with the types shmplane promises (bytes-likes arrive as bytes)."""
    if isinstance(sent, (bytes, bytearray, memoryview)):
        assert type(got) is bytes, type(got)
        assert got == bytes(sent)
    elif isinstance(sent, np.ndarray):
        assert isinstance(got, np.ndarray), type(got)
        assert type(got) is type(sent)
        assert got.dtype == sent.dtype, (got.dtype, sent.dtype)
        assert got.shape == sent.shape, (got.shape, sent.shape)
        if sent.dtype.hasobject:
            assert got.tolist() == sent.tolist()
        else:
            assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(sent).tobytes()
        if isinstance(sent, np.ma.MaskedArray):
            assert np.array_equal(np.ma.getmaskarray(got), np.ma.getmaskarray(sent))
    elif isinstance(sent, np.generic):
        assert type(got) is type(sent) and got == sent
    elif isinstance(sent, dict):
        assert type(got) is type(sent) and list(got) == list(sent)
        for k in sent:
            assert_same(sent[k], got[k])
    elif isinstance(sent, (list, tuple)):
        assert type(got) is type(sent) and len(got) == len(sent)
        for a, b in zip(sent, got):
            assert_same(a, b)
    else:
        assert type(got) is type(sent)
        assert got == sent


def try_send_drained(tx: shmplane.Sender, rx: shmplane.Receiver, obj: Any) -> None:
    """``tx.try_send(obj)`` on a ring this thread has drained through ``rx``.

    The receiver publishes its position in batches (and whenever it finds the ring
    empty), so right after a drain the sender may still see part of the ring as used:
    one empty poll of the receiver must make room."""
    for _ in range(3):
        try:
            tx.try_send(obj)
            return
        except shmplane.Full:
            with pytest.raises(shmplane.Empty):
                rx.try_recv()
    raise AssertionError("try_send: Full on a drained ring even after the receiver found it empty")


def roundtrip_in_process(obj: Any, capacity: int = 1 << 20) -> Any:
    tx, rx = shmplane.channel(capacity=capacity)
    with tx, rx:
        tx.send(obj, timeout=10)
        got = rx.recv(timeout=10)
        with pytest.raises(shmplane.Empty):
            rx.try_recv()  # exactly one message per send
        return got


class Point:
    """A user class (pickled by reference: importable in spawned children too)."""

    def __init__(self, x: int, y: list[int]) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


# --------------------------------------------------------------------- payloads

BYTES_LIKE = {
    "empty-bytes": b"",
    "one-byte": b"\x00",
    "bytes-1k": bytes(range(256)) * 4,
    "empty-bytearray": bytearray(),
    "bytearray": bytearray(b"hello\x00world"),
    "memoryview": memoryview(b"view of bytes"),
    "memoryview-slice": memoryview(bytes(range(100)))[10:60],
    "memoryview-empty": memoryview(b""),
    "memoryview-2d-array": memoryview(np.arange(12, dtype=np.float64).reshape(3, 4)),
    "bytes-300k": bytes(np.random.default_rng(3).integers(0, 256, 300_000, dtype=np.uint8)),
}


def strange_arrays() -> dict[str, np.ndarray]:
    """Arrays that cannot travel as raw C-contiguous data: they go through pickle."""
    base = np.arange(200, dtype=np.float64).reshape(10, 20)
    point = np.dtype([("x", "<f8"), ("y", "<i4"), ("tag", "S3")])
    nested = np.dtype([("id", "<u2"), ("pos", [("lat", "<f4"), ("lon", "<f4")]), ("hist", "<i8", (3,))])
    aligned = np.dtype({"names": ["a", "b"], "formats": ["u1", "<f8"]}, align=True)
    structured = np.zeros(5, dtype=point)
    structured["x"] = np.linspace(0, 1, 5)
    structured["y"] = np.arange(5)
    structured["tag"] = [b"a", b"bb", b"ccc", b"", b"e"]
    nest = np.zeros((2, 3), dtype=nested)
    nest["id"] = np.arange(6).reshape(2, 3)
    nest["pos"]["lat"] = 1.5
    nest["hist"] = np.arange(18).reshape(2, 3, 3)
    al = np.zeros(4, dtype=aligned)
    al["a"], al["b"] = [1, 2, 3, 4], [0.5, 1.5, 2.5, 3.5]
    return {
        "step-1d": np.arange(100, dtype=np.int32)[::3],
        "reversed": np.arange(50, dtype=np.int16)[::-1],
        "step-2d": base[::2, ::3],
        "column": base[:, 5],
        "transposed": base.T,
        "fortran-2d": np.asfortranarray(base),
        "fortran-3d": np.asfortranarray(np.arange(60, dtype=np.complex128).reshape(3, 4, 5)),
        "structured": structured,
        "structured-nested": nest,
        "structured-aligned": al,
        "structured-0d": np.zeros((), dtype=point),
        "object": np.array([1, "two", None, (3, 4)], dtype=object),
        "masked": np.ma.array([1.0, 2.0, 3.0], mask=[False, True, False]),
    }


def python_objects() -> dict[str, Any]:
    return {
        "none": None,
        "true": True,
        "int": -12345,
        "bigint": 2**200 + 1,
        "float": 1.25,
        "complex": 1 + 2j,
        "str": "grüße, 世界",
        "empty-list": [],
        "empty-dict": {},
        "empty-tuple": (),
        "tuple": (1, "a", b"b", None),
        "list": [1, 2.5, "x", None, [b"nested"]],
        "dict": {"a": 1, "b": [1, 2, {"c": (3, 4)}], 5: "int key"},
        "set": {1, 2, 3},
        "frozenset": frozenset({"a", "b"}),
        "user-class": Point(3, [1, 2]),
        "numpy-scalar": np.float32(2.5),
        "nested-arrays": {
            "weights": np.arange(1000, dtype=np.float32).reshape(10, 100),
            "ids": [np.arange(5), np.array([], dtype=np.int8)],
            "meta": ("run", 7, np.int64(3)),
            "strided": np.arange(30)[::2],
        },
        "floats-100k": [float(i) * 0.5 for i in range(100_000)],
    }


def all_payloads() -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = list(BYTES_LIKE.items())
    out += [(f"{d}-{s}", make_array(d, s)) for d in DTYPES for s in SHAPES]
    out += [(f"big-endian-{s}", make_array("int32", s).astype(">i4")) for s in SHAPES[:4]]
    out += list(strange_arrays().items())
    out += list(EDGE_ARRAYS.items())
    out += list(python_objects().items())
    return out


# ------------------------------------------------------------------ in process


@pytest.mark.parametrize("obj", BYTES_LIKE.values(), ids=BYTES_LIKE.keys())
def test_bytes_like_in_process(obj: Any) -> None:
    assert_same(obj, roundtrip_in_process(obj))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_plain_arrays_in_process(dtype: str, shape: tuple[int, ...]) -> None:
    a = make_array(dtype, shape)
    got = roundtrip_in_process(a, capacity_for(a.nbytes))
    assert_same(a, got)
    assert got.flags.c_contiguous and got.flags.writeable


@pytest.mark.parametrize("shape", SHAPES[:4], ids=str)
def test_big_endian_array_keeps_byte_order(shape: tuple[int, ...]) -> None:
    a = make_array("int32", shape).astype(">i4")
    got = roundtrip_in_process(a)
    assert_same(a, got)
    assert got.dtype.byteorder == ">"


EDGE_ARRAYS = {
    "shape-0x5": np.zeros((0, 5)),
    "shape-5x0": np.zeros((5, 0), dtype=np.int16),
    "32-dims": np.arange(2.0).reshape((2,) + (1,) * 31),
    "float16": np.linspace(-1, 1, 9, dtype=np.float16),
    "longdouble": np.arange(5, dtype=np.longdouble) / 3,
    "clongdouble": np.arange(5, dtype=np.clongdouble) * 1j,
    "timedelta64": np.arange(4).astype("m8[ms]"),
    "datetime64-0d": np.array(np.datetime64("2020-01-01T00:00:00", "ns")),
    "void": np.frombuffer(b"abcdef", dtype="V2"),
    "bytes-S": np.array([b"a", b"bcd"]),
    "unicode-U": np.array(["grüße", "世界"]),
    "readonly": np.frombuffer(b"abcdefgh", dtype=np.uint8),
    "structured-empty": np.zeros(0, dtype=[("x", "<f8"), ("y", "<i4")]),
    "fortran-empty": np.asfortranarray(np.zeros((0, 3))),
    "object-0d": np.array(None, dtype=object),
}


@pytest.mark.parametrize("arr", EDGE_ARRAYS.values(), ids=EDGE_ARRAYS.keys())
def test_edge_case_arrays_in_process(arr: np.ndarray) -> None:
    got = roundtrip_in_process(arr)
    assert_same(arr, got)
    assert got.flags.writeable  # a fresh array, even when the sent one was read-only


@pytest.mark.parametrize("name", list(strange_arrays()))
def test_non_contiguous_and_structured_arrays_in_process(name: str) -> None:
    a = strange_arrays()[name]
    got = roundtrip_in_process(a)
    assert_same(a, got)
    if a.flags.f_contiguous and not a.flags.c_contiguous:
        assert got.flags.f_contiguous  # pickle keeps Fortran order


@pytest.mark.parametrize("name", list(python_objects()))
def test_python_objects_in_process(name: str) -> None:
    obj = python_objects()[name]
    assert_same(obj, roundtrip_in_process(obj, capacity=1 << 21))


@pytest.mark.parametrize(
    "count", [10, 4095, 4096, 5000]
)
def test_object_with_many_out_of_band_buffers(count: int) -> None:
    """Every C-contiguous array in a pickled object travels as its own out-of-band part."""
    obj = [np.full(3, i) for i in range(count)]
    got = roundtrip_in_process(obj, capacity=1 << 22)
    assert_same(obj, got)


def test_received_array_owns_its_memory() -> None:
    """A received array is a copy: later traffic through the ring must not change it."""
    tx, rx = shmplane.channel(capacity=1 << 16)
    with tx, rx:
        a = np.arange(4000, dtype=np.int64)  # 32 KB: half the ring
        tx.send(a, timeout=5)
        got = rx.recv(timeout=5)
        for i in range(8):  # overwrite every byte of the ring several times
            tx.send(np.full(4000, -i, dtype=np.int64), timeout=5)
            rx.recv(timeout=5)
        assert np.array_equal(got, a)
        got[:] = 7  # writable, and writing it does not disturb the channel
        tx.send(b"after", timeout=5)
        assert rx.recv(timeout=5) == b"after"


def test_many_small_messages_keep_order() -> None:
    tx, rx = shmplane.channel(capacity=1 << 12)
    with tx, rx:
        expected: collections.deque[int] = collections.deque()
        n = 0
        while n < 20_000:
            try:
                tx.try_send(n)
            except shmplane.Full:
                assert expected, "Full with nothing in flight"
                while expected:
                    assert rx.recv(timeout=5) == expected.popleft()
                try_send_drained(tx, rx, n)
            expected.append(n)
            n += 1
        while expected:
            assert rx.recv(timeout=5) == expected.popleft()


def test_wrap_700k_messages_in_process() -> None:
    """Capacity 1 MiB, 50 messages of 700 KB, sent and received by one thread: every
    message after the first wraps the ring.

    A message larger than half the ring needs a padding record to the end of the ring
    that the receiver must skip first, so from a single thread the send is a try_send
    plus one empty poll of the receiver (a blocking send would wait for a receiver that
    cannot run: see test_wrap_700k_messages_two_threads)."""
    tx, rx = shmplane.channel(capacity=1 << 20)
    with tx, rx:
        for i in range(50):
            data = payload(1, i, 700_000)
            try_send_drained(tx, rx, data)
            got = rx.recv(timeout=10)
            assert got == data, f"message {i} corrupted"


def test_wrap_700k_messages_two_threads() -> None:
    """The same with blocking sends from a second thread of this process."""
    tx, rx = shmplane.channel(capacity=1 << 20)
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            for i in range(50):
                tx.send(payload(1, i, 700_000), timeout=20)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=produce)
    t.start()
    try:
        for i in range(50):
            assert rx.recv(timeout=20) == payload(1, i, 700_000), f"message {i} corrupted"
    finally:
        t.join(30)
        tx.close()
        rx.close()
    assert not errors, errors


def test_wrap_random_sizes_in_process() -> None:
    """Random sizes 0..200 KB, sent in bursts until the ring is full, then drained."""
    tx, rx = shmplane.channel(capacity=1 << 20)
    with tx, rx:
        todo = sizes(2, 600, 200_000)
        pending: collections.deque[tuple[int, bytes]] = collections.deque()
        i = 0
        while i < len(todo) or pending:
            while i < len(todo):
                data = payload(2, i, todo[i])
                try:
                    if pending:
                        tx.try_send(data)
                    else:  # a message of at most 200 KB must fit a drained 1 MiB ring
                        try_send_drained(tx, rx, data)
                except shmplane.Full:
                    break
                pending.append((i, data))
                i += 1
            while pending:
                j, data = pending.popleft()
                got = rx.recv(timeout=10)
                assert got == data, f"message {j} ({len(data)} bytes) corrupted"


def test_wrap_mixed_kinds_in_process() -> None:
    """bytes, arrays and pickles of random sizes interleaved through a small ring."""
    rng = np.random.default_rng(5)
    tx, rx = shmplane.channel(capacity=1 << 18)
    with tx, rx:
        for i in range(400):
            kind = i % 3
            n = int(rng.integers(0, 30_000))
            if kind == 0:
                obj: Any = payload(5, i, n)
            elif kind == 1:
                obj = rng.standard_normal(n // 8)
            else:
                obj = {"i": i, "arr": rng.integers(0, 100, n // 8), "s": "x" * (n % 100)}
            tx.send(obj, timeout=10)
            assert_same(obj, rx.recv(timeout=10))


# ------------------------------------------------------------ across processes


def _echo(rx: shmplane.Receiver, tx: shmplane.Sender) -> int:
    """Echo every message back until STOP; returns how many were echoed."""
    n = 0
    with rx, tx:
        while True:
            obj = rx.recv(timeout=60)
            if isinstance(obj, str) and obj == STOP:
                return n
            tx.send(obj, timeout=60)
            n += 1


def _stop_echo(procs: Any, p: Any, conn: Any, tx: shmplane.Sender, rx: shmplane.Receiver, count: int) -> None:
    tx.send(STOP, timeout=10)
    assert get_report(conn, 30) == count
    # Join before closing our ends: under fork the child holds inherited copies of
    # them, and closing while it lives leaks the segment (see test_handles).
    procs.join(p)
    tx.close()
    rx.close()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("method", METHODS)
def test_echo_child_all_payloads(method: str, procs: Any) -> None:
    """Parent sends every kind of payload; a child echoes it back on a second channel."""
    tx, rx_child = shmplane.channel(capacity=1 << 25)
    tx_child, rx = shmplane.channel(capacity=1 << 25)
    p, conn = procs.start_reporting(_echo, rx_child, tx_child, method=method)
    rx_child.close()  # the parent may close its copies of the child's ends at once
    tx_child.close()
    items = all_payloads()
    for name, obj in items:
        tx.send(obj, timeout=30)
        try:
            assert_same(obj, rx.recv(timeout=30))
        except AssertionError as e:
            raise AssertionError(f"payload {name!r}: {e}") from e
    _stop_echo(procs, p, conn, tx, rx, len(items))


def _stream_out(tx: shmplane.Sender, seed: int) -> int:
    """Send 50 messages of 700 KB then 500 of random size 0..200 KB, as fast as possible."""
    with tx:
        for i in range(50):
            tx.send(payload(seed, i, 700_000), timeout=60)
        for i, n in enumerate(sizes(seed, 500, 200_000)):
            tx.send(payload(seed, 1000 + i, n), timeout=60)
    return 550


@pytest.mark.timeout(180)
@pytest.mark.parametrize("method", METHODS)
def test_stream_from_child_wraps_ring(method: str, procs: Any) -> None:
    """A child streams into a 1 MiB ring while the parent reads and checks every byte,
    then closes: the parent gets DisconnectedError after the last message."""
    seed = 11
    tx, rx = shmplane.channel(capacity=1 << 20)
    p, conn = procs.start_reporting(_stream_out, tx, seed, method=method)
    tx.close()
    for i in range(50):
        assert rx.recv(timeout=30) == payload(seed, i, 700_000), f"700 KB message {i} corrupted"
    for i, n in enumerate(sizes(seed, 500, 200_000)):
        got = rx.recv(timeout=30)
        assert len(got) == n and got == payload(seed, 1000 + i, n), f"random message {i} corrupted"
    with pytest.raises(shmplane.DisconnectedError):
        rx.recv(timeout=30)
    assert get_report(conn) == 550
    procs.join(p)
    rx.close()


def _verify_in(rx: shmplane.Receiver, seed: int) -> int:
    """Receive and check the stream of test_stream_to_child_wraps_ring."""
    with rx:
        for i in range(50):
            if rx.recv(timeout=60) != payload(seed, i, 700_000):
                raise AssertionError(f"700 KB message {i} corrupted")
        for i, n in enumerate(sizes(seed, 500, 200_000)):
            got = rx.recv(timeout=60)
            if len(got) != n or got != payload(seed, 1000 + i, n):
                raise AssertionError(f"random message {i} ({n} bytes) corrupted")
        end = rx.recv(timeout=60)
        if end != STOP:
            raise AssertionError(f"unexpected trailing message {end!r}")
    return 550


@pytest.mark.timeout(180)
@pytest.mark.parametrize("method", METHODS)
def test_stream_to_child_wraps_ring(method: str, procs: Any) -> None:
    seed = 12
    tx, rx = shmplane.channel(capacity=1 << 20)
    p, conn = procs.start_reporting(_verify_in, rx, seed, method=method)
    rx.close()
    for i in range(50):
        tx.send(payload(seed, i, 700_000), timeout=30)
    for i, n in enumerate(sizes(seed, 500, 200_000)):
        tx.send(payload(seed, 1000 + i, n), timeout=30)
    tx.send(STOP, timeout=30)
    assert get_report(conn, 60) == 550
    procs.join(p)
    tx.close()


def _echo_named(name_in: str, name_out: str) -> int:
    """Echo server that attaches by name (unrelated processes)."""
    rx = shmplane.Receiver.open(name_in)
    tx = shmplane.Sender.open(name_out)
    return _echo(rx, tx)


@pytest.mark.parametrize("method", METHODS)
def test_echo_child_attached_by_name(method: str, make_name: Any, procs: Any) -> None:
    a, b = make_name("a"), make_name("b")
    tx = shmplane.Sender.create(a, 1 << 20)
    rx = shmplane.Receiver.create(b, 1 << 20)
    p, conn = procs.start_reporting(_echo_named, a, b, method=method)
    msgs = [b"", b"x" * 100_000, np.arange(10.0), {"k": [1, 2]}, "text"]
    for m in msgs:
        tx.send(m, timeout=20)
        assert_same(m, rx.recv(timeout=20))
    _stop_echo(procs, p, conn, tx, rx, len(msgs))
    assert not os.path.exists(seg_path(a)) and not os.path.exists(seg_path(b))
