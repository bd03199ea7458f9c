"""shmplane.RawArray against multiprocessing.sharedctypes.RawArray: the same operations
give the same results and the same exception types; whole reads are consistent
snapshots across processes; a SIGKILLed writer leaves the last complete value."""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import multiprocessing.sharedctypes as stdlib
import os
import pickle
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import shmplane
from shm_helpers import asleep_in_shmplane_wait, block_until_interrupted, interrupt_when_blocked, wait_until


class Point(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_double)]


class Outer(ctypes.Structure):
    _fields_ = [("p", Point), ("n", ctypes.c_ushort)]


def both(code: Any, init: Any) -> tuple[Any, Any]:
    return shmplane.RawArray(code, init), stdlib.RawArray(code, init)


def outcome(f: Callable[[], Any]) -> Any:
    """What `f` returns, or the type of what it raises."""
    try:
        r = f()
    except Exception as e:  # noqa: BLE001 - comparing behaviour, whatever it is
        return type(e)
    if isinstance(r, ctypes.Structure):
        return bytes(r)
    return r


NUMERIC = [("d", [1.5, -2.0, 3.25, 0.0, 9.0]), ("f", [0.5, 1.0, -4.0]), ("i", [1, -2, 3, 4]),
           ("I", [1, 2**31, 7]), ("b", [-1, 2, 3]), ("B", [250, 1, 2, 3, 4, 5]), ("h", [-300, 2]),
           ("H", [65000, 1]), ("l", [2**40, -5]), ("L", [2**63, 1]), ("q", [-(2**62), 4]),
           ("Q", [2**64 - 1, 0, 1]), (ctypes.c_bool, [True, False, True]), (ctypes.c_double, [1.0, 2.0])]

KEYS: list[Any] = [0, 1, -1, -2, 2, 10, -10, slice(None), slice(1, None), slice(None, None, -1),
                   slice(None, None, 2), slice(4, 0, -2), slice(-3, None), slice(5, 100), slice(3, 1),
                   1.5, "a", None, 2**70]


@pytest.mark.parametrize(("code", "init"), NUMERIC, ids=[str(c) for c, _ in NUMERIC])
def test_reads_match_stdlib(code: Any, init: list[Any]) -> None:
    ours, theirs = both(code, init)
    with ours:
        assert len(ours) == len(theirs)
        assert list(ours) == list(theirs)
        for key in KEYS:
            o, t = outcome(lambda: ours[key]), outcome(lambda: theirs[key])
            assert o == t, f"[{key!r}]: {o!r} != {t!r}"
            if not isinstance(t, type):
                assert [type(x) for x in (o if isinstance(o, list) else [o])] == \
                    [type(x) for x in (t if isinstance(t, list) else [t])]
        assert outcome(lambda: ours.value) == outcome(lambda: theirs.value) == AttributeError
        assert outcome(lambda: ours.raw) == outcome(lambda: theirs.raw) == AttributeError


def assignments(n: int) -> list[tuple[Any, Any]]:
    return [
        (0, 7), (-1, 3), (n, 1), (-n - 1, 1), (0, 1.5), (0, "x"), (0, None), ("a", 1), (1.0, 1),
        (slice(0, 2), [5, 6]), (slice(0, 2), [5]), (slice(0, 2), (8, 9)), (slice(None, None, -1), list(range(n))),
        (slice(None, None, 2), [4] * len(range(0, n, 2))), (slice(None, None, 2), [4]),
        (slice(0, 2), 5), (slice(3, 1), []), (slice(0, 1), ["x"]), (0, 2**40), (0, -1), (0, True),
    ]


@pytest.mark.parametrize(("code", "init"), NUMERIC, ids=[str(c) for c, _ in NUMERIC])
def test_assignments_match_stdlib(code: Any, init: list[Any]) -> None:
    ours, theirs = both(code, init)
    with ours:
        for key, value in assignments(len(init)):
            o = outcome(lambda: ours.__setitem__(key, value))
            t = outcome(lambda: theirs.__setitem__(key, value))
            assert o == t, f"[{key!r}] = {value!r}: {o!r} != {t!r}"
            assert ours[:] == theirs[:], f"after [{key!r}] = {value!r}"
        assert outcome(lambda: ours.__delitem__(0)) == outcome(lambda: theirs.__delitem__(0))


def test_failed_slice_assignment_writes_nothing() -> None:
    # The stdlib writes the elements before the bad one; ours is one write or none.
    ours = shmplane.RawArray("d", [1.0, 2.0, 3.0])
    with pytest.raises(TypeError):
        ours[0:2] = [7.0, "x"]
    assert ours[:] == [1.0, 2.0, 3.0]
    ours.close()


def test_constructors_and_errors_match_stdlib() -> None:
    for args in [("d", 3), ("i", range(4)), ("d", []), ("d", 0), ("d", -1), ("d", "ab"), ("i", [1.5]),
                 ("z", 3), (ctypes.c_int, (1, 2)), ("c", b"abc"), ("u", "hé")]:
        t = outcome(lambda: stdlib.RawArray(*args))
        o = outcome(lambda: shmplane.RawArray(*args))
        if isinstance(t, type):
            # stdlib raises KeyError for an unknown typecode string; ours TypeError.
            assert o is t or (t is KeyError and o is TypeError), (args, o, t)
        else:
            assert o[:] == t[:] and len(o) == len(t), args
            o.close()
    with pytest.raises(TypeError, match="pointer"):
        shmplane.RawArray(ctypes.c_char_p, 2)
    with pytest.raises(TypeError, match="pointer"):
        shmplane.RawArray(ctypes.POINTER(ctypes.c_int), 2)


def test_char_arrays_match_stdlib() -> None:
    ours, theirs = both("c", b"hello\0xy")
    with ours:
        for key in [0, -1, slice(None), slice(None, None, 2), slice(1, 3), 9]:
            assert outcome(lambda: ours[key]) == outcome(lambda: theirs[key])
        assert (ours.value, ours.raw) == (theirs.value, theirs.raw)
        for attr, v in [("value", b"ab"), ("value", b"x" * 20), ("raw", b"12345678"), ("raw", b"1"),
                        ("raw", b"123456789"), ("value", "str")]:
            assert outcome(lambda: setattr(ours, attr, v)) == outcome(lambda: setattr(theirs, attr, v))
            assert ours.raw == theirs.raw, (attr, v)
        for key, v in [(0, b"z"), (0, 65), (0, b"zz"), (slice(1, 3), b"qq"), (slice(1, 3), b"q")]:
            assert outcome(lambda: ours.__setitem__(key, v)) == outcome(lambda: theirs.__setitem__(key, v))
            assert ours.raw == theirs.raw
    w_ours, w_theirs = both("u", "héllo")
    with w_ours:
        assert (w_ours.value, w_ours[1], w_ours[1:3]) == (w_theirs.value, w_theirs[1], w_theirs[1:3])
        w_ours.value, w_theirs.value = "ab", "ab"
        assert w_ours[:] == w_theirs[:]
        assert outcome(lambda: w_ours.raw) == outcome(lambda: w_theirs.raw) == AttributeError


def test_structure_elements_are_live_views() -> None:
    ours, theirs = both(Point, 3)
    with ours:
        for a in (ours, theirs):
            a[0].x = 5
            a[1] = (3, 4.0)
            a[2] = Point(7, 8.5)
            a[-1].y += 1
        for i in range(3):
            assert (ours[i].x, ours[i].y) == (theirs[i].x, theirs[i].y)
        assert [(p.x, p.y) for p in ours] == [(p.x, p.y) for p in theirs]
        with pytest.raises(TypeError):
            ours[0].x = "no"
        with pytest.raises(TypeError):
            theirs[0].x = "no"
        assert outcome(lambda: ours.__setitem__(0, 5)) == outcome(lambda: theirs.__setitem__(0, 5))
        snap = ours.snapshot()
        assert snap.dtype.names == ("x", "y") and snap["y"].tolist() == [0.0, 4.0, 9.5]
        assert bytes(ours.copy()) == bytes(theirs)
        nested = shmplane.RawArray(Outer, 2)
        nested[1].p.x = 4
        nested[1].n = 9
        assert (nested[1].p.x, nested[1].n, nested[0].p.x) == (4, 9, 0)
        nested.close()


def test_snapshot_is_numpy_copy() -> None:
    a = shmplane.RawArray("d", [1.0, 2.0, 3.0])
    s = a.snapshot()
    assert isinstance(s, np.ndarray) and s.dtype == np.float64 and s.tolist() == [1.0, 2.0, 3.0]
    s[0] = 99  # a private copy
    assert a[0] == 1.0
    for code, dtype in [("i", np.int32), ("B", np.uint8), (ctypes.c_bool, np.bool_), ("f", np.float32), ("q", np.int64)]:
        b = shmplane.RawArray(code, 4)
        b[1] = 1
        assert b.snapshot().dtype == dtype and b.snapshot().tolist()[1] == 1
        b.close()
    assert shmplane.RawArray("d", 0).snapshot().shape == (0,)
    a.close()


def test_recycled_snapshots_are_new_arrays_to_their_holders() -> None:
    """`snapshot()` of up to 4 KiB refills an array it returned before once nothing else
    holds it (the free-list of CPython's floats): each caller still gets an array no one
    else holds, with the slot's values now, and an array whose holder reshaped, retyped,
    froze, viewed or weakly referenced it is never handed out again changed."""
    import weakref

    a = shmplane.RawArray("d", list(range(16)))
    x = a.snapshot()
    a[0] = 100.0
    y = a.snapshot()  # x is held: not reused
    assert y is not x and x[0] == 0 and y[0] == 100
    x[0] = -1.0  # a private copy
    assert a.snapshot()[0] == 100 and x[0] == -1 and y[0] == 100
    seen = set()
    for i in range(10):  # the previous result is still bound during the call
        a[2] = i
        s = a.snapshot()
        assert s[2] == i and s.tolist()[3:] == list(range(3, 16))
        seen.add(id(s))
    assert len(seen) <= 2
    del x, y, s
    # It is recycled: the handle keeps a reference (so the object outlives its name and
    # no other object can take its address), and the next snapshot() is that object.
    z = a.snapshot()
    plain = np.zeros(16)
    assert sys.getrefcount(z) == sys.getrefcount(plain) + 1  # the handle's
    zid = id(z)
    del z
    a[1] = 42.0
    z = a.snapshot()
    assert id(z) == zid and z[1] == 42 and z.tolist() == a[:]
    with pytest.raises(ValueError):
        z.resize(32)  # numpy's refcheck counts the handle's reference
    z.resize(32, refcheck=False)
    del z
    assert a.snapshot().shape == (16,)
    # Changed by a holder that then let it go: a fresh array of the right layout.
    changes: list[Callable[[np.ndarray], Any]] = [
        lambda v: setattr(v, "shape", (4, 4)),
        lambda v: setattr(v, "dtype", np.int64),
        lambda v: setattr(v.flags, "writeable", False),
    ]
    for change in changes:
        for _ in range(3):
            v = a.snapshot()
            change(v)
            del v
            w = a.snapshot()
            assert w.shape == (16,) and w.dtype == np.float64 and w.flags.writeable and w.flags.owndata and w.base is None
            assert w.tolist() == a[:]
            del w
    # Reachable only through a view, or a weak reference: never refilled under them.
    v = a.snapshot()
    tail = v[8:]
    del v
    a[8] = 7.0
    assert tail[0] == 8.0 and a.snapshot()[8] == 7.0 and tail[0] == 8.0
    u = a.snapshot()
    r = weakref.ref(u)
    before = u.tolist()
    del u
    a[9] = 9.5
    assert a.snapshot()[9] == 9.5
    assert r() is None or r().tolist() == before
    # close() releases the kept arrays: a weakly referenced one let go is freed.
    t = a.snapshot()
    r = weakref.ref(t)
    del t
    a.close()
    assert r() is None


def test_snapshot_fast_and_full_paths_agree() -> None:
    # The C method (up to 64 KiB) and pyo3's method (larger: the GIL is released) give
    # the same fresh arrays; partial last words; a subclass of RawArray; ClosedError.
    for code, n in [("b", 3), ("h", 5), ("i", 7), ("f", 9), ("d", 16), ("Q", 1), ("d", 8193)]:
        a = shmplane.RawArray(code, n)
        a[n - 1] = 1
        s = a.snapshot()
        assert s.flags.owndata and s.flags.writeable and s.flags.c_contiguous and s.base is None
        assert s.shape == (n,) and s.tolist() == [0] * (n - 1) + [1], (code, n)
        assert a.snapshot() is not s
        a.close()
        with pytest.raises(shmplane.ClosedError):
            a.snapshot()
    assert type(shmplane.RawArray("d", 1)).__dict__["snapshot"] is not shmplane._shmplane._FastSlotView.__dict__["snapshot"]

    class Sub(shmplane.RawArray):
        pass

    b = Sub("d", [1.5, 2.5])
    assert b.snapshot().tolist() == [1.5, 2.5]
    b.close()
    with pytest.raises(TypeError):
        shmplane.RawArray.snapshot(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        shmplane._shmplane._own_fast_methods(int)  # type: ignore[arg-type]


def test_attach_by_name_checks_the_type() -> None:
    a = shmplane.RawArray("i", [1, 2, 3])
    b = shmplane.RawArray.attach(a.name, "i")
    assert b[:] == [1, 2, 3] and len(b) == 3
    b[0] = 9
    assert a[0] == 9
    with pytest.raises(shmplane.WrongKindError):
        shmplane.RawArray.attach(a.name, "d")
    with pytest.raises(shmplane.WrongKindError):
        shmplane.RawValue.attach(a.name, "i")
    with pytest.raises(shmplane.NotFoundError):
        shmplane.RawArray.attach(f"no-such-array-{os.getpid()}", "i")
    assert "RawArray" in repr(a) and "c_int[3]" in repr(a)
    b.close()
    a.close()


def test_version_and_wait_for_update() -> None:
    a = shmplane.RawArray("d", 4)
    since = a.version
    with pytest.raises(shmplane.Timeout):
        a.wait_for_update(since, timeout=0.05)
    a[2] = 1.0
    assert a.wait_for_update(since, timeout=1) > since
    a.close()


def test_closed_array_raises() -> None:
    a = shmplane.RawArray("d", 4)
    a.close()
    with pytest.raises(shmplane.ShmplaneError):
        a[0]
    with pytest.raises(shmplane.ShmplaneError):
        a[0] = 1.0


def _hammer(a: shmplane.RawArray, n: int) -> None:
    i = 0
    while True:
        i += 1
        a[:] = [i] * n


def _bump_odd(a: shmplane.RawArray, rounds: int) -> None:
    for i in range(1, rounds + 1):
        a[1] = i


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_never_torn_across_processes_and_writer_killed(method: str) -> None:
    n = 64
    a = shmplane.RawArray("q", n)
    p = mp.get_context(method).Process(target=_hammer, args=(a, n), daemon=True)
    p.start()
    deadline = time.monotonic() + 20
    seen: set[int] = set()
    while len(seen) < 300 and time.monotonic() < deadline:
        for whole in (a[:], a.snapshot().tolist(), a[::3], list(a)):
            assert len(set(whole)) == 1, f"torn: {sorted(set(whole))}"
            seen.add(whole[0])
    assert len(seen) >= 300, "the writer made no progress"
    os.kill(p.pid, signal.SIGKILL)  # very likely mid-write
    p.join(10)
    assert len(set(a[:])) == 1
    a[:] = [7] * n  # the write side was taken over from the dead writer
    assert a[:] == [7] * n
    a.close()


@pytest.mark.timeout(60)
def test_element_writes_from_two_processes_lose_nothing() -> None:
    rounds = 20_000
    a = shmplane.RawArray("q", 3)
    p = mp.get_context("fork").Process(target=_bump_odd, args=(a, rounds))
    p.start()
    for i in range(1, rounds + 1):
        a[0] = i
    p.join(30)
    assert p.exitcode == 0
    assert a[:] == [rounds, rounds, 0]
    a.close()


def _child_sums(a: shmplane.RawArray, out: "mp.Queue[object]") -> None:
    out.put(sum(a))
    a[0] = -1.0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_passes_to_children(method: str) -> None:
    ctx = mp.get_context(method)
    a = shmplane.RawArray("d", [1.0, 2.0, 3.0])
    q = ctx.Queue()
    p = ctx.Process(target=_child_sums, args=(a, q))
    p.start()
    assert q.get(timeout=30) == 6.0
    p.join(30)
    assert p.exitcode == 0
    assert a[0] == -1.0
    b = pickle.loads(pickle.dumps(a))
    assert b[:] == [-1.0, 2.0, 3.0]
    b.close()
    a.close()


def _blocked_wait(a: shmplane.RawArray, ready: Any) -> None:
    block_until_interrupted(ready, lambda: a.wait_for_update(a.version))  # only Ctrl-C ends it


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_ctrl_c_interrupts_wait_for_update(method: str) -> None:
    ctx = mp.get_context(method)
    a = shmplane.RawArray("d", 2)
    path = f"/dev/shm/shmplane.{a.name}"
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_blocked_wait, args=(a, w))
    p.start()
    try:
        w.close()
        interrupt_when_blocked(p, r, segment=path)  # asleep on the slot's futex first
    finally:
        if p.is_alive():
            p.kill()
            p.join(5)
        a.close()


def test_closing_while_another_thread_waits_is_safe() -> None:
    # close() waits (without the GIL) for the waiter to leave its GIL-free wait (at most
    # one 50 ms slice); the waiter then sees the slot closed, never unmapped memory.
    import threading

    a = shmplane.RawArray("d", 2)
    path = f"/dev/shm/shmplane.{a.name}"
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            a.wait_for_update(a.version, timeout=30)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=wait)
    t.start()
    # Close only once the waiter sleeps on the slot's futex (inside its GIL-free wait).
    assert t.native_id is not None
    assert wait_until(lambda: asleep_in_shmplane_wait(os.getpid(), t.native_id, path), 20), "the waiter never slept"
    a.close()
    # The waiter ends with ClosedError (as the docs promise), not with its own 30 s
    # Timeout: close() does not wait for the waiter's timeout.
    t.join(20)
    assert not t.is_alive(), "close() did not end the wait"
    assert len(errors) == 1 and isinstance(errors[0], shmplane.ClosedError), errors


class Bits(ctypes.Structure):
    _fields_ = [("a", ctypes.c_int, 3), ("b", ctypes.c_int, 5), ("s", ctypes.c_char * 4)]


class Inner(ctypes.Structure):
    _fields_ = [("a", ctypes.c_int), ("b", ctypes.c_int)]


class Anon(ctypes.Structure):
    _anonymous_ = ("u",)
    _fields_ = [("u", Inner), ("c", ctypes.c_int)]


def test_structure_field_kinds_match_stdlib() -> None:
    for mod in (stdlib, shmplane):
        x = mod.RawValue(Bits)
        x.a, x.b, x.s = 3, 7, b"ab"
        assert (x.a, x.b, x.s) == (3, 7, b"ab"), mod
        y = mod.RawValue(Anon)
        y.a, y.c = 4, 5
        assert (y.a, y.c, y.u.a) == (4, 5, 4), mod
        v = mod.RawValue(ctypes.c_int * 3, 1, 2, 3)
        v[1] = 5
        assert (v[:], len(v), list(v)) == ([1, 5, 3], 3, [1, 5, 3]), mod
        arr = mod.RawArray(Inner, 2)
        arr[1].b = 9
        copy = pickle.loads(pickle.dumps(arr[1]))
        assert isinstance(copy, Inner) and copy.b == 9, mod
    for obj in (x, y, v, arr):
        obj.close()


def _element_writer(a: shmplane.RawArray, stop: Any) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        a[0] = float(i)


@pytest.mark.timeout(60)
def test_large_reads_finish_while_elements_are_written() -> None:
    # Element writes flip the latch every few hundred ns, far faster than 32 MB can be
    # copied: lock-free attempts alone would retry until the writer stops.
    ctx = mp.get_context("fork")
    a = shmplane.RawArray("d", 4_000_000)
    stop = ctx.Event()
    p = ctx.Process(target=_element_writer, args=(a, stop), daemon=True)
    p.start()
    try:
        while a[0] == 0.0:
            time.sleep(0.001)
        for _ in range(3):  # a livelock would hang here until the watchdog
            snap = a.snapshot()
            assert snap.shape == (4_000_000,) and snap[1:].max() == 0.0
        assert p.is_alive(), "the writer stopped: nothing was measured"
    finally:
        stop.set()
        p.join(10)
        a.close()


def _fork_then_close(a: shmplane.RawArray, out: Any) -> None:
    a[0] = 1.0
    out.put("done")  # the child then exits: its exit finalizers close `a`


@pytest.mark.timeout(60)
def test_fork_while_another_thread_waits_then_child_closes() -> None:
    # The parent's waiting thread holds the handle's GIL-free lock at fork time; the
    # child must not inherit that as a lock nobody will release.
    import threading

    ctx = mp.get_context("fork")
    a = shmplane.RawArray("d", 2)
    stop = threading.Event()

    def watch() -> None:
        v = a.version
        while not stop.is_set():
            try:
                v = a.wait_for_update(v, timeout=0.2)
            except shmplane.Timeout:
                pass

    t = threading.Thread(target=watch)
    t.start()
    try:
        time.sleep(0.1)
        q = ctx.Queue()
        p = ctx.Process(target=_fork_then_close, args=(a, q))
        p.start()
        assert q.get(timeout=20) == "done"
        p.join(10)
        assert p.exitcode == 0, "the forked child hung closing its copy"
        assert a[0] == 1.0
    finally:
        stop.set()
        t.join(10)
        if p.is_alive():
            p.kill()
        a.close()


def test_snapshot_without_numpy_is_an_import_error() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['numpy'] = None\n"
        "import shmplane\n"
        "a = shmplane.RawArray('d', 2); a[0] = 1.5\n"
        "try:\n    a.snapshot()\nexcept ImportError:\n    print('ImportError', a[:])\n"
        "a.close()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "ImportError [1.5, 0.0]", r.stderr[-1000:]


def test_buffer_and_numpy_give_read_only_consistent_snapshots() -> None:
    a = shmplane.RawArray("d", [1.0, 2.0, 3.0])
    m = memoryview(a)
    assert (m.format, m.shape, m.readonly, m.tolist()) == ("d", (3,), True, [1.0, 2.0, 3.0])
    a[0] = 7.0
    assert m.tolist()[0] == 1.0, "a buffer is a snapshot taken at export, not a live view"
    m.release()
    x = np.asarray(a)
    assert x.dtype == np.float64 and x.tolist() == [7.0, 2.0, 3.0] and not x.flags.writeable
    with pytest.raises(ValueError):
        x[0] = 1.0
    y = np.array(a)  # a private, writable copy
    y[0] = 5.0
    assert a[0] == 7.0
    assert np.asarray(a, dtype=np.float32).dtype == np.float32
    with pytest.raises(ValueError, match="without a copy"):
        a.__array__(copy=False)
    with pytest.raises(ValueError):
        np.frombuffer(a, dtype=np.float64).setflags(write=True)
    v = shmplane.RawValue("q", 7)
    assert memoryview(v).tolist() == 7 and int(np.asarray(v)) == 7
    # Structures have no buffer; numpy reads them through __array__ (one snapshot).
    s = shmplane.RawArray(Point, 2)
    s[1].x = 4
    with pytest.raises(BufferError, match="snapshot"):
        memoryview(s)
    arr = np.asarray(s)
    assert arr.shape == (2,) and arr["x"].tolist() == [0, 4]
    a.close()
    with pytest.raises(shmplane.ClosedError):
        memoryview(a)
    for h in (v, s):
        h.close()


def test_writable_buffer_requests_are_refused() -> None:
    import struct

    a = shmplane.RawArray("d", 3)
    # Both ask for a writable buffer; the refusal surfaces as their TypeError.
    with pytest.raises((TypeError, BufferError)):
        (ctypes.c_double * 3).from_buffer(a)
    with pytest.raises((TypeError, BufferError)):
        struct.pack_into("d", a, 0, 1.0)
    assert a[:] == [0.0, 0.0, 0.0]
    a.close()


@pytest.mark.timeout(60)
def test_numpy_and_buffer_reads_are_never_torn() -> None:
    n = 64
    a = shmplane.RawArray("q", n)
    p = mp.get_context("fork").Process(target=_hammer, args=(a, n), daemon=True)
    p.start()
    try:
        deadline = time.monotonic() + 20
        seen: set[int] = set()
        while len(seen) < 200 and time.monotonic() < deadline:
            for whole in (np.asarray(a).tolist(), memoryview(a).tolist()):
                assert len(set(whole)) == 1, f"torn: {sorted(set(whole))}"
                seen.add(whole[0])
        assert len(seen) >= 200, "the writer made no progress"
    finally:
        p.kill()
        p.join(10)
    a.close()


def _count_up(a: shmplane.RawArray, n: int, rounds: int) -> None:
    for i in range(1, rounds + 1):
        a[:] = [i] * n


@pytest.mark.timeout(60)
def test_element_reads_follow_version_and_never_go_back() -> None:
    """Element and field reads take one committed word (no sequence): each must be of
    a finished write at least as new as `version` said before the read, and never go
    back to an older write."""
    n, rounds = 16, 20_000
    a = shmplane.RawArray("q", n)
    base = a.version
    p = mp.get_context("fork").Process(target=_count_up, args=(a, n, rounds))
    p.start()
    last = [0] * n
    reads = 0
    while p.is_alive() or reads == 0:
        v = a.version - base  # the writer's write number `v` (value `v`) has finished
        for k in (0, 7, 8, n - 1, -1):
            x = a[k]
            assert x >= v, f"version said write {v} finished, then a[{k}] = {x}"
            assert x >= last[k], f"a[{k}] went back from {last[k]} to {x}"
            last[k] = x
        reads += 1
    p.join(30)
    assert p.exitcode == 0
    assert a[:] == [rounds] * n and a.version - base == rounds
    a.close()


def test_wait_for_update_then_element_read_sees_the_write() -> None:
    a = shmplane.RawArray("d", 4)
    for i in range(1, 200):
        since = a.version
        a[2] = float(i)
        assert a.wait_for_update(since, timeout=1) > since
        assert a[2] == float(i)
    # A version from the future (a read's, or a bogus one) waits for a newer write.
    with pytest.raises(shmplane.Timeout):
        a.wait_for_update(a.version + 1, timeout=0.02)
    a.close()


@pytest.mark.parametrize(
    ("code", "values"),
    [
        ("d", np.arange(10, dtype=np.float64) / 3),  # the same dtype: one copy
        ("d", (np.arange(20, dtype=np.float64) / 3)[::2]),  # strided
        ("d", np.arange(10, dtype=np.float32)),  # another dtype: element by element
        ("d", np.arange(10, dtype=np.int64)),
        ("i", np.arange(10, dtype=np.int32) - 5),
        ("i", np.arange(10, dtype=np.int64) * (1 << 33)),  # masked, as ctypes does
        ("q", np.arange(10, dtype=np.int64) - 5),
        ("B", np.arange(10, dtype=np.uint8)),
        ("f", np.arange(10, dtype=np.float64) / 3),
    ],
)
def test_ndarrays_in_and_out_as_the_stdlib(code: str, values: np.ndarray) -> None:
    """Arrays made from, and slices assigned from, ndarrays hold what the stdlib's
    hold (a same-dtype ndarray is copied whole, others element by element)."""
    ours, std = shmplane.RawArray(code, values), stdlib.RawArray(code, values.tolist())
    try:
        assert ours[:] == std[:]
        ours[:] = values[::-1]
        std[:] = values[::-1].tolist()
        assert ours[:] == std[:]
        ours[1::3] = values[: len(range(1, 10, 3))]
        std[1::3] = values[: len(range(1, 10, 3))].tolist()
        assert ours[:] == std[:]
        with pytest.raises(ValueError, match="same size"):
            ours[:] = values[:-1]
    finally:
        ours.close()


def test_a_same_dtype_ndarray_is_assigned_in_one_copy() -> None:
    """Not timed (tests assert behaviour): numpy scalars (not exact floats) took
    ctypes' conversion per element, ~1 µs each; the bulk path never iterates."""
    n = 1000

    class NoIter(np.ndarray):
        def __iter__(self) -> Any:
            raise AssertionError("iterated")

    values = np.arange(n, dtype=np.float64).view(NoIter)
    a = shmplane.RawArray("d", n)
    try:
        a[:] = values
        assert a[:] == list(range(n))
    finally:
        a.close()


@pytest.mark.parametrize("dtype", [">i4", ">f8", "<i4", "=f8"])
def test_byte_swapped_ndarrays_are_assigned_by_value(dtype: str) -> None:
    """Found in review: pyo3 0.30 took a big-endian buffer for a native one, and its
    bytes were copied unswapped."""
    code = "i" if "i" in dtype else "d"
    values = np.arange(1, 5).astype(dtype)
    ours, std = shmplane.RawArray(code, 4), stdlib.RawArray(code, 4)
    try:
        ours[:] = values
        std[:] = values.tolist()
        assert ours[:] == std[:] == [1, 2, 3, 4]
        ours[::-1] = values
        assert ours[:] == [4, 3, 2, 1]
    finally:
        ours.close()
