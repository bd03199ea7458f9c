"""shmplane.RawValue against multiprocessing.sharedctypes.RawValue: same results for
the same operations, plus consistent snapshots across processes."""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import multiprocessing.sharedctypes as stdlib
import os
import pickle
import signal
import time
from typing import Any

import pytest

import shmplane


class Pair(ctypes.Structure):
    _fields_ = [("a", ctypes.c_int64), ("b", ctypes.c_int64)]


class Point(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_double)]


class Eight(ctypes.Structure):
    _fields_ = [(f"w{i}", ctypes.c_uint64) for i in range(8)]


SCALARS = [("d", 1.5), ("f", 0.25), ("i", -7), ("l", 2**40), ("q", -(2**62)), ("b", -3), ("B", 200),
           ("h", -300), ("H", 65000), ("I", 2**31), ("c", b"x"), (ctypes.c_double, 3.0),
           (ctypes.c_bool, True), (ctypes.c_ulonglong, 2**64 - 1)]


@pytest.mark.parametrize(("code", "init"), SCALARS, ids=[str(c) for c, _ in SCALARS])
def test_scalar_value_matches_stdlib(code: object, init: object) -> None:
    ours, theirs = shmplane.RawValue(code, init), stdlib.RawValue(code, init)
    assert ours.value == theirs.value and type(ours.value) is type(theirs.value)
    new = init * 2 if isinstance(init, (int, float)) and not isinstance(init, bool) else init
    if isinstance(new, int) and code in ("b", "B", "h", "H", "i", "I"):
        new = init  # keep in range
    ours.value = new
    theirs.value = new
    assert ours.value == theirs.value
    ours.close()


def test_default_value_and_errors_match_stdlib() -> None:
    assert shmplane.RawValue("d").value == stdlib.RawValue("d").value == 0.0
    for bad in (lambda m: m.RawValue("d", "text"), lambda m: m.RawValue("i", 1.5)):
        with pytest.raises(TypeError):
            bad(stdlib)
        with pytest.raises(TypeError):
            bad(shmplane)
    with pytest.raises((KeyError, TypeError)):
        stdlib.RawValue("z", 1)
    with pytest.raises(TypeError):
        shmplane.RawValue("z", 1)
    with pytest.raises(TypeError, match="pointer"):
        shmplane.RawValue(ctypes.c_char_p, b"x")


def test_structure_fields_match_stdlib() -> None:
    ours, theirs = shmplane.RawValue(Point, 1, 2.5), stdlib.RawValue(Point, 1, 2.5)
    assert (ours.x, ours.y) == (theirs.x, theirs.y)
    ours.x, theirs.x = 9, 9
    assert (ours.x, ours.y) == (theirs.x, theirs.y)
    with pytest.raises(TypeError):
        theirs.x = "no"
    with pytest.raises(TypeError):
        ours.x = "no"
    snap = ours.snapshot()
    assert isinstance(snap, Point) and (snap.x, snap.y) == (9, 2.5)


def test_attach_by_name_checks_the_type() -> None:
    v = shmplane.RawValue("d", 4.0)
    assert shmplane.RawValue.attach(v.name, "d").value == 4.0
    with pytest.raises(shmplane.WrongKindError):
        shmplane.RawValue.attach(v.name, "q")
    with pytest.raises(shmplane.WrongKindError):
        shmplane.RawValue.attach(v.name, Point)
    with pytest.raises(shmplane.NotFoundError):
        shmplane.RawValue.attach("no-such-value-" + str(os.getpid()), "d")


def test_version_and_wait_for_update() -> None:
    v = shmplane.RawValue("i", 0)
    since = v.version
    with pytest.raises(shmplane.Timeout):
        v.wait_for_update(since, timeout=0.05)
    v.value = 1
    assert v.wait_for_update(since, timeout=1) > since


def _hammer_struct(v: shmplane.RawValue) -> None:
    i = 0
    slot = v._slot
    while True:
        i += 1
        slot.write(bytes(Eight(*([i] * 8))))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_never_torn_across_processes_and_writer_killed(method: str) -> None:
    v = shmplane.RawValue(Eight, *([0] * 8))
    p = mp.get_context(method).Process(target=_hammer_struct, args=(v,), daemon=True)
    p.start()
    deadline = time.monotonic() + 20
    seen = set()
    while len(seen) < 500 and time.monotonic() < deadline:
        s = v.snapshot()
        words = [getattr(s, f"w{i}") for i in range(8)]
        assert len(set(words)) == 1, f"torn: {words}"
        seen.add(words[0])
    assert len(seen) >= 500, "the writer made no progress"
    os.kill(p.pid, signal.SIGKILL)  # very likely mid-write
    p.join(10)
    a = v.snapshot()
    assert len({getattr(a, f"w{i}") for i in range(8)}) == 1
    v._slot.write(bytes(Eight(*([7] * 8))))  # the write side was taken over
    assert v.snapshot().w5 == 7


def _child_reads(v: shmplane.RawValue, out: "mp.Queue[object]") -> None:
    out.put(v.value)
    v.value = 99.0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_passes_to_children(method: str) -> None:
    ctx = mp.get_context(method)
    v = shmplane.RawValue("d", 12.5)
    q = ctx.Queue()
    p = ctx.Process(target=_child_reads, args=(v, q))
    p.start()
    assert q.get(timeout=30) == 12.5
    p.join(30)
    assert p.exitcode == 0
    assert v.value == 99.0
    assert pickle.loads(pickle.dumps(v)).value == 99.0


def test_fingerprints_match_rusts() -> None:
    # The same pinned values as channels/src/slot.rs's cross_language_fingerprints_are_pinned:
    # a Rust Slot<f64> is RawValue('d'), a Slot<[f64; n]> is RawArray('d', n).
    from shmplane.sharedctypes import _describe, _fingerprint

    assert _fingerprint("value:" + _describe(ctypes.c_double)) == 0x473fa9b0ea2fb518
    assert _fingerprint("array:" + _describe(ctypes.c_double)) == 0x60976123783e405c
    for alias in (ctypes.c_int64, ctypes.c_longlong, ctypes.c_long):
        assert _fingerprint("value:" + _describe(alias)) == 0x60cf9ab0f88bb8b9
    assert _fingerprint("array:" + _describe(ctypes.c_ubyte)) == 0x2a80921bbd95e6d1


@pytest.mark.timeout(600)
def test_rust_opens_python_slots_by_name() -> None:
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    a = shmplane.RawArray("d", [1.5] * 16, name=f"interop-a-{os.getpid()}")
    v = shmplane.RawValue("q", -5, name=f"interop-v-{os.getpid()}")
    try:
        r = subprocess.run(
            ["cargo", "run", "-q", "-p", "shmplane", "--example", "slot_interop", "--", a.name, v.name],
            cwd=root, capture_output=True, text=True, timeout=540,
        )
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.split() == ["1.5", "-5"]
        assert a[:] == [7.0] * 16 and v.value == -9
    finally:
        a.close()
        v.close()


def test_native_fields_convert_like_ctypes() -> None:
    ours, theirs = shmplane.RawValue(Point, 1, 2.5), stdlib.RawValue(Point, 1, 2.5)
    for field, value in [("x", 2**40 + 3), ("x", -1), ("y", 3), ("y", True), ("x", True), ("y", 1e300)]:
        setattr(ours, field, value)
        setattr(theirs, field, value)
        assert (ours.x, ours.y) == (theirs.x, theirs.y), (field, value)
        assert type(getattr(ours, field)) is type(getattr(theirs, field))
    for field, value in [("x", 1.5), ("y", "s"), ("x", None)]:
        with pytest.raises(TypeError):
            setattr(theirs, field, value)
        with pytest.raises(TypeError):
            setattr(ours, field, value)
    assert type(ours).x.fallback.__doc__.startswith("field 'x'")  # the ctypes-based path
    ours.close()


def test_attach_refuses_same_shape_other_layout() -> None:
    # Byte order and bit widths are part of the type check, not just names and sizes.
    class BE(ctypes.BigEndianStructure):
        _fields_ = [("a", ctypes.c_int), ("b", ctypes.c_double)]

    class LE(ctypes.Structure):
        _fields_ = [("a", ctypes.c_int), ("b", ctypes.c_double)]

    class Bits1(ctypes.Structure):
        _fields_ = [("a", ctypes.c_uint, 4), ("b", ctypes.c_uint, 28)]

    class Bits2(ctypes.Structure):
        _fields_ = [("a", ctypes.c_uint, 28), ("b", ctypes.c_uint, 4)]

    for made, other in [(BE, LE), (Bits1, Bits2)]:
        v = shmplane.RawValue(made)
        with pytest.raises(shmplane.WrongKindError):
            shmplane.RawValue.attach(v.name, other)
        v.close()
    be = shmplane.RawArray(ctypes.c_int.__ctype_be__, [1, 2, 3])
    with pytest.raises(shmplane.WrongKindError):
        shmplane.RawArray.attach(be.name, "i")
    assert be[:] == [1, 2, 3] and shmplane.RawValue(BE, 7, 1.5).a == 7
    be.close()


def test_reserved_field_names_and_deep_anonymous_members() -> None:
    class Clash(ctypes.Structure):
        _fields_ = [("_offset", ctypes.c_int), ("y", ctypes.c_int)]

    class Outer(ctypes.Structure):
        _fields_ = [("x", ctypes.c_int), ("inner", Clash)]

    for t in (Clash, Outer):
        with pytest.raises(TypeError, match="reserved"):
            shmplane.RawValue(t)

    class A(ctypes.Structure):
        _fields_ = [("deep", ctypes.c_int)]

    class B(ctypes.Structure):
        _anonymous_ = ("a",)
        _fields_ = [("a", A), ("mid", ctypes.c_int)]

    class C(ctypes.Structure):
        _anonymous_ = ("b",)
        _fields_ = [("b", B), ("top", ctypes.c_int)]

    for mod in (stdlib, shmplane):
        c = mod.RawValue(C)
        c.deep, c.mid, c.top = 1, 2, 3
        assert (c.deep, c.mid, c.top, c.b.a.deep) == (1, 2, 3, 1), mod
    with pytest.raises(TypeError):
        del c.deep
    c.close()


@pytest.mark.timeout(60)
def test_value_and_field_reads_never_go_back() -> None:
    rounds = 20_000
    d = shmplane.RawValue("q", 0)
    s = shmplane.RawValue(Pair, 0, 0)
    p = mp.get_context("fork").Process(target=_write_both, args=(d, s, rounds))
    p.start()
    last = [0, 0, 0]
    while p.is_alive():
        for k, x in enumerate((d.value, s.a, s.b)):
            assert x >= last[k], f"read {k} went back from {last[k]} to {x}"
            last[k] = x
    p.join(30)
    assert p.exitcode == 0
    assert (d.value, s.a, s.b) == (rounds, rounds, rounds)
    d.close()
    s.close()


def _write_both(d: Any, s: Any, rounds: int) -> None:
    for i in range(1, rounds + 1):
        d.value = i
        s.a = i
        s.b = i


def test_closed_value_and_fields_raise_closed_error() -> None:
    d = shmplane.RawValue("d", 1.0)
    s = shmplane.RawValue(Pair, 1, 2)
    d.close()
    s.close()
    with pytest.raises(shmplane.ClosedError):
        d.value
    with pytest.raises(shmplane.ClosedError):
        s.a
