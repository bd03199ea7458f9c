"""RawValue/RawArray (ABI 15 slots) against a hostile user with real processes: writers
killed with SIGKILL in the middle of writes, readers killed mid-read, two writer
processes racing, segment files truncated before and while open, foreign segments,
wrong types, odd names, bad timeouts, Ctrl-C, pickling, and handles used after
``close()``. Every write in the tearing tests writes one number into every element,
so a read with two different elements is torn. Each test has a watchdog; children
are started by the ``procs`` fixture (never outliving their test).

The offsets are those of ``docs/wire-format.md`` §2.6 (slot segment): the writer lock
word at 384, ``done`` at 392, ``seq`` at 400, copy 0 at 768 in 64-byte lines (seven
value words then the line's version), copy 1 after it (its lines end with a canary).

The defects this pass found (a writer tripped by a truncation holding the lock, a
file cut below its role table, zeros of a cut inside a page read as data, an async
wait taking a negative version, a pickled handle losing its policy) have tests here
that failed before their fixes."""

from __future__ import annotations

import asyncio
import ctypes
import glob
import math
import multiprocessing as mp
import os
import pickle
import random
import signal
import struct
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import shmplane
from shm_helpers import (
    block_until_interrupted,
    get_report,
    interrupt_when_blocked,
    read_u64,
    seg_path,
    thread_stat,
    wait_until,
)

WATCHDOG = 60
FORK = mp.get_context("fork")

LOCK_OFFSET, DONE_OFFSET, SEQ_OFFSET = 384, 392, 400
COPY0_OFFSET = 768


def _total_len(n_doubles: int) -> int:
    lines = -(-max(1, n_doubles) // 7)
    return -(-(COPY0_OFFSET + 128 * lines) // 128) * 128


# ------------------------------------------------------------ writers killed mid-write


def _whole_writer(name: str, n: int, ready: Any, repair_first: bool) -> None:
    """Take the write side over (a dead predecessor's torn write is repaired by the
    first write, or first by ``wait_for_update``), then write ever larger numbers into
    every element, alternating slice assignment (read-modify-write) and whole-value
    writes (two code paths), until killed."""
    a = shmplane.RawArray.attach(name, "d")
    if repair_first:
        a.wait_for_update(0, timeout=0)
    x = max(a[:])
    buf = np.empty(n)
    ready.send("go")
    ready.close()
    i = 0
    while True:
        i += 1
        x += 1.0
        if i % 2:
            a[:] = [x] * n
        else:
            buf[:] = x
            a._slot.write(buf)


def _checking_reader(name: str, n: int, stop: Any) -> dict[str, Any]:
    """Read in every way until ``stop`` is set, then once more. Whole reads of one
    range must never be torn nor go back (one series for all of them: they read the
    same range), a read's version never goes back, ``version`` never goes back, and
    each element read never goes back."""
    a = shmplane.RawArray.attach(name, "d")
    out = np.empty(n)
    errors: list[str] = []
    last_whole, last_version, last_read_version = -1.0, 0, 0
    last_elem: dict[int, float] = {}
    elems = sorted({0, min(6, n - 1), min(7, n - 1), n // 2, n - 1})
    reads = 0

    def whole(kind: str, values: list[float]) -> None:
        nonlocal last_whole
        if len(set(values)) != 1:
            errors.append(f"torn {kind}: {sorted(set(values))[:4]}")
        if values[0] < last_whole:
            errors.append(f"{kind} went back from {last_whole} to {values[0]}")
        last_whole = max(last_whole, values[0])

    final = False
    while not final and len(errors) < 10:
        final = stop.is_set()
        v = a.version
        if v < last_version:
            errors.append(f"version went back from {last_version} to {v}")
        last_version = v
        whole("a[:]", a[:])
        whole("snapshot", a.snapshot().tolist())
        whole("asarray", np.asarray(a).tolist())
        whole("memoryview", memoryview(a).tolist())
        rv = a._slot.read_into(out)
        whole("read_into", out.tolist())
        if rv < last_read_version:
            errors.append(f"read_into's version went back from {last_read_version} to {rv}")
        last_read_version = rv
        for k in elems:
            e = a[k]
            if e < last_elem.get(k, -1.0):
                errors.append(f"a[{k}] went back from {last_elem[k]} to {e}")
            last_elem[k] = e
        reads += 1
    a.close()
    return {"reads": reads, "errors": errors, "last": last_whole}


def _stop_mid_write(pid: int, path: str, tries: int = 1000) -> bool:
    """SIGSTOP ``pid`` (which writes all the time) at a moment it is half-way through
    a write (``done != seq``: a SIGKILL now leaves a torn copy to repair), or, after
    half the ``tries``, at one it holds the writer lock. False if never caught."""
    for k in range(tries):
        os.kill(pid, signal.SIGSTOP)
        assert wait_until(lambda: thread_stat(pid, pid)[0] == "T", 10)
        if read_u64(path, LOCK_OFFSET) != 0:
            if read_u64(path, DONE_OFFSET) != read_u64(path, SEQ_OFFSET) or k >= tries // 2:
                return True
        os.kill(pid, signal.SIGCONT)
        time.sleep(random.random() * 0.0002)
    return False


def _check_whole(a: shmplane.RawArray, last: float) -> float:
    for values in (a[:], a.snapshot().tolist(), np.asarray(a).tolist()):
        assert len(set(values)) == 1, f"torn: {sorted(set(values))[:4]}"
        assert values[0] >= last, f"went back from {last} to {values[0]}"
        last = values[0]
    return last


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("n", [1, 7, 8, 15, 16, 100, 1000])
def test_writers_killed_mid_write_never_tear_hang_or_go_back(n: int, make_name: Any, procs: Any) -> None:
    """Writers SIGKILLed half-way through a write (caught there with SIGSTOP first),
    after a random time, six times over (slice assignment and whole writes); a reader
    in another process checks every read throughout, also while the dead writer's
    torn write is unrepaired; after each death a new writer process takes over
    (repairing it, on its first write or in ``wait_for_update``) and its writes are
    seen."""
    rng = random.Random(n)
    name = make_name(f"n{n}")
    path = seg_path(name)
    a = shmplane.RawArray("d", n, name=name)
    stop = FORK.Event()
    reader, report = procs.start_reporting(_checking_reader, name, n, stop, method="fork")
    last, torn_writes = -1.0, 0
    for trial in range(6):
        r, w = FORK.Pipe(duplex=False)
        writer = procs.start(_whole_writer, name, n, w, bool(trial % 2), method="fork")
        w.close()
        assert r.poll(20) and r.recv() == "go", "a new writer could not take over"
        before = a.version
        # The new writer makes progress: it took the lock over from the dead one.
        assert wait_until(lambda: a.version >= before + 3, 10), "writes stopped after a writer was killed"
        time.sleep(rng.uniform(0.001, 0.02))
        assert _stop_mid_write(writer.pid, path), "never caught the writer mid-write"
        torn_writes += read_u64(path, DONE_OFFSET) != read_u64(path, SEQ_OFFSET)
        os.kill(writer.pid, signal.SIGKILL)
        procs.join(writer, exitcode=-signal.SIGKILL)
        # The dead writer's state, unrepaired: reads here and in the reader never wait
        # and are whole.
        deadline = time.monotonic() + 0.03
        while time.monotonic() < deadline:
            last = _check_whole(a, last)
    # This process takes over last: its write is seen here and by the reader.
    final = max(a[:]) + 1.0
    a[:] = [final] * n
    assert a[:] == [final] * n and a.snapshot().tolist() == [final] * n
    assert read_u64(path, DONE_OFFSET) == read_u64(path, SEQ_OFFSET), "the torn write was not repaired"
    time.sleep(0.05)
    stop.set()
    result = get_report(report, 30)
    procs.join(reader)
    assert result["errors"] == [], result["errors"]
    assert result["reads"] > 0 and result["last"] == final, result
    a.close()
    # Kills that left a write half done (done != seq): nearly always all six.
    assert torn_writes >= 1, "no kill landed inside a write"


# ------------------------------------------------------------ readers killed mid-read


def _element_writer(name: str) -> None:
    a = shmplane.RawArray.attach(name, "d")
    n = len(a)
    i = 0
    while True:
        i += 1
        a[i % n] = float(i)


def _big_reader(name: str, ready: Any) -> None:
    a = shmplane.RawArray.attach(name, "d")
    ready.send("go")
    ready.close()
    while True:
        a.snapshot()
        np.asarray(a)
        a[::2]


@pytest.mark.timeout(WATCHDOG)
def test_readers_killed_mid_read_disturb_nothing(make_name: Any, procs: Any) -> None:
    """Large reads under a fast element writer (they may take the writer lock for one
    read, Linux's read_seqbegin_or_lock) killed at random moments: the writer in
    another process keeps writing, and the value stays whole."""
    rng = random.Random(7)
    name = make_name()
    n = 1 << 17  # 1 MiB: two lock-free tries, then the writer lock
    a = shmplane.RawArray("d", n, name=name)
    writer = procs.start(_element_writer, name, method="fork")
    for _ in range(6):
        r, w = FORK.Pipe(duplex=False)
        reader = procs.start(_big_reader, name, w, method="fork")
        w.close()
        assert r.poll(20) and r.recv() == "go"
        time.sleep(rng.uniform(0.005, 0.05))
        os.kill(reader.pid, signal.SIGKILL)
        procs.join(reader, exitcode=-signal.SIGKILL)
        v = a.version
        assert wait_until(lambda: a.version >= v + 50, 10), "the writer stopped after a reader was killed"
    os.kill(writer.pid, signal.SIGKILL)
    procs.join(writer, exitcode=-signal.SIGKILL)
    a[:] = [3.0] * n
    assert a.snapshot().tolist() == [3.0] * n
    a.close()


def _async_waiter(name: str, ready: Any) -> None:
    a = shmplane.RawArray.attach(name, "d")

    async def wait() -> None:
        ready.send("armed")
        ready.close()
        await a.wait_for_update_async(a.version + 10**9)  # never satisfied

    asyncio.run(wait())


@pytest.mark.timeout(WATCHDOG)
def test_async_waiters_killed_leave_the_doorbells_working(make_name: Any, procs: Any) -> None:
    """More readers than doorbell entries (16) wait through their FIFOs and are
    SIGKILLed; the table is reclaimed (a new async waiter is woken by the next write)
    and the last close removes every FIFO. The name is the longest allowed (200)."""
    name = make_name().ljust(200, "x")
    a = shmplane.RawArray("d", 4, name=name)
    waiters = []
    for _ in range(20):
        r, w = FORK.Pipe(duplex=False)
        waiters.append(procs.start(_async_waiter, name, w, method="fork"))
        w.close()
        assert r.poll(20) and r.recv() == "armed"
    assert wait_until(lambda: len(glob.glob(glob.escape(seg_path(name)) + "@w*")) >= 16, 10)
    for p in waiters:
        os.kill(p.pid, signal.SIGKILL)
        procs.join(p, exitcode=-signal.SIGKILL)
    b = shmplane.RawArray.attach(name, "d")

    async def main() -> int:
        since = b.version
        task = asyncio.ensure_future(b.wait_for_update_async(since, timeout=10))
        await asyncio.sleep(0.1)
        a[0] = 1.0
        return await task

    assert asyncio.run(main()) > 1
    b.close()
    a.close()
    assert glob.glob(glob.escape(seg_path(name)) + "*") == []


# ------------------------------------------------------------ two writers racing


def _racing_writer(name: str, n: int, parity: int, rounds: int) -> None:
    a = shmplane.RawArray.attach(name, "d")
    buf = np.empty(n)
    for i in range(1, rounds + 1):
        x = float(2 * i + parity)
        if i % 2:
            a[:] = [x] * n
        else:
            buf[:] = x
            a._slot.write(buf)


def _slice_writer(name: str, lo: int, hi: int, parity: int, rounds: int) -> None:
    a = shmplane.RawArray.attach(name, "d")
    for i in range(1, rounds + 1):
        a[lo:hi] = [float(2 * i + parity)] * (hi - lo)


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("n", [1, 8, 1000])
def test_two_writer_processes_serialize_whole_writes(n: int, make_name: Any, procs: Any) -> None:
    """Writers serialize on the writer lock: each write is published whole (reads are
    never a mix of the two writers), nothing is lost or left half done, and the last
    value is one of the two last writes."""
    rounds = 3000 if n < 1000 else 1000
    a = shmplane.RawArray("d", n, name=make_name())
    base = a.version
    writers = [procs.start(_racing_writer, a.name, n, parity, rounds, method="fork") for parity in (0, 1)]
    reads = 0
    while any(p.is_alive() for p in writers) or reads == 0:
        values = a[:]
        assert len(set(values)) == 1, f"torn: {sorted(set(values))[:4]}"
        reads += 1
    for p in writers:
        procs.join(p)
    assert a[0] in (2.0 * rounds, 2.0 * rounds + 1)
    assert a.version == base + 2 * rounds, "a write was lost or counted twice"
    a.close()


@pytest.mark.timeout(WATCHDOG)
def test_two_writer_processes_of_overlapping_slices(make_name: Any, procs: Any) -> None:
    """a[0:20] and a[10:30] written by two processes: every read sees each slice
    assignment whole (the overlap holds the value of whichever wrote last)."""
    a = shmplane.RawArray("d", 30, name=make_name())
    writers = [
        procs.start(_slice_writer, a.name, 0, 20, 0, 4000, method="fork"),
        procs.start(_slice_writer, a.name, 10, 30, 1, 4000, method="fork"),
    ]
    while any(p.is_alive() for p in writers):
        v = a[:]
        assert len(set(v[0:10])) == len(set(v[10:20])) == len(set(v[20:30])) == 1, v
        assert v[10] in (v[0], v[20]), v
    for p in writers:
        procs.join(p)
    assert a[:] in ([8000.0] * 20 + [8001.0] * 10, [8000.0] * 10 + [8001.0] * 20)
    a.close()


# ------------------------------------------------------------ truncated segment files


def _plant(name: str, data: bytes) -> None:
    fd = os.open(seg_path(name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def _slot_bytes(n: int) -> bytes:
    a = shmplane.RawArray("d", [5.0] * n)
    with open(seg_path(a.name or ""), "rb") as f:
        data = f.read()
    a.close()
    return data


@pytest.mark.timeout(WATCHDOG)
def test_truncated_or_extended_files_are_corrupt_on_attach(make_name: Any) -> None:
    """A slot file cut (or grown) anywhere, before anyone opens it: attach raises
    CorruptSegmentError at once, never maps what is not there."""
    data = _slot_bytes(100)
    total = len(data)
    assert total == _total_len(100)
    for size in [1, 8, 127, 128, 129, 383, 384, 512, 767, 768, 1000, total - 64, total - 1, total + 1, total + 4096]:
        name = make_name(str(size))
        _plant(name, (data + bytes(8192))[:size])
        try:
            with pytest.raises(shmplane.CorruptSegmentError):
                shmplane.RawArray.attach(name, "d")
            with pytest.raises(shmplane.CorruptSegmentError):
                shmplane.RawArray.attach(name, "d", timeout=0.2)  # not NotFound-style waiting
        finally:
            os.unlink(seg_path(name))


def _victim(name: str, write: bool, ready: Any) -> str:
    a = shmplane.RawArray.attach(name, "d")
    n = len(a)
    ready.set()
    deadline = time.monotonic() + 20
    i = 0
    try:
        while time.monotonic() < deadline:
            i += 1
            if write:
                a[:] = [float(i)] * n
            else:
                values = a[:]
                assert len(set(values)) == 1, values
                a.snapshot()
    except shmplane.CorruptSegmentError as e:
        assert "truncated" in str(e), str(e)
        a.close()
        return "corrupt"
    return "never noticed"


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("cut", [0, 4096, 8192])
def test_truncated_under_a_writer_and_a_reader_in_other_processes(cut: int, make_name: Any, procs: Any) -> None:
    """Cut at a page boundary while a writer and a reader (each in its own process)
    work on an array of 1000 doubles (19 KiB): each gets CorruptSegmentError (never
    SIGBUS, never a torn read), closes, and exits cleanly; so does this process."""
    name = make_name()
    a = shmplane.RawArray("d", 1000, name=name)
    started = [FORK.Event(), FORK.Event()]
    children = [procs.start_reporting(_victim, name, write, ev, method="fork") for write, ev in zip((True, False), started)]
    for ev in started:
        assert ev.wait(20)
    time.sleep(0.05)
    os.truncate(seg_path(name), cut)
    for p, report in children:
        assert get_report(report, 30) == "corrupt"
        procs.join(p)
    with pytest.raises(shmplane.CorruptSegmentError):
        a[:] = [1.0] * 1000
    a.close()
    if os.path.exists(seg_path(name)):  # a file cut below its header is not ours to judge
        os.unlink(seg_path(name))


# ------------------------------------------------------------ foreign segments, types, names


@pytest.mark.timeout(WATCHDOG)
def test_foreign_kinds_and_random_bytes_are_refused(make_name: Any) -> None:
    junk = make_name("junk")
    rng = random.Random(3)
    data = bytearray(_slot_bytes(100))
    data[128:] = rng.randbytes(len(data) - 128)  # a valid slot header, random contents
    _plant(junk, bytes(data))
    try:
        # Random words in the writer lock, versions and copies: a typed error or whole
        # values, never a crash or a hang.
        try:
            a = shmplane.RawArray.attach(junk, "d")
        except shmplane.ShmplaneError:
            pass
        else:
            for op in (lambda: a[:], lambda: a.snapshot(), lambda: a[3], lambda: a.version, lambda: a.wait_for_update(0, timeout=0.05)):
                try:
                    op()
                except shmplane.ShmplaneError:
                    pass
            a.close()
    finally:
        if os.path.exists(seg_path(junk)):
            os.unlink(seg_path(junk))
    mb = shmplane.mailbox(4096, name=make_name("mb"))
    pub = shmplane.broadcast(4096, name=make_name("pub"))
    tx, rx = shmplane.channel(4096, name=make_name("ch"))
    for h in (mb, pub, tx):
        with pytest.raises(shmplane.WrongKindError):
            shmplane.RawArray.attach(h.name, "d")
        with pytest.raises(shmplane.WrongKindError):
            shmplane.RawValue.attach(h.name, "d")
        with pytest.raises(shmplane.AlreadyExistsError):
            shmplane.RawArray("d", 3, name=h.name)  # a live segment is never replaced
    for h in (mb, pub, tx, rx):
        h.close()


class _P(ctypes.Structure):
    _fields_ = [("x", ctypes.c_double)]


@pytest.mark.timeout(WATCHDOG)
def test_wrong_types_and_sizes_on_attach(make_name: Any) -> None:
    a = shmplane.RawArray("d", 8, name=make_name("a"))
    v = shmplane.RawValue("d", 1.0, name=make_name("v"))
    for wrong in ["f", "q", "i", "b", ctypes.c_double * 8, ctypes.c_double * 4, _P, ctypes.c_longdouble]:
        with pytest.raises(shmplane.WrongKindError):
            shmplane.RawArray.attach(a.name, wrong)
    with pytest.raises(shmplane.WrongKindError):
        shmplane.RawValue.attach(a.name, "d")  # an array is not a value of its element type
    with pytest.raises(shmplane.WrongKindError):
        shmplane.RawArray.attach(v.name, "d")
    with pytest.raises(shmplane.WrongKindError):
        shmplane.RawValue.attach(v.name, ctypes.c_double * 1)
    for bad in [b"d", None, 1.5, "zz", ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]:
        with pytest.raises(TypeError):
            shmplane.RawArray.attach(a.name, bad)
    assert shmplane.RawArray.attach(a.name, "d")[:] == [0.0] * 8
    a.close()
    v.close()


@pytest.mark.timeout(WATCHDOG)
def test_odd_names(make_name: Any) -> None:
    for bad in ["", ".", "..", ".hidden", "a/b", "../etc", "a b", "é", "\0", "a@w1.2", "@rx", "x" * 201, "a\nb"]:
        with pytest.raises(shmplane.InvalidNameError):
            shmplane.RawValue("d", 1.0, name=bad)
        with pytest.raises(shmplane.InvalidNameError):
            shmplane.RawArray.attach(bad, "d")
    assert issubclass(shmplane.InvalidNameError, ValueError)
    pid = os.getpid()
    for name in [f"-{pid}", f"-rf{pid}", f"_{pid}", f"a.b.c{pid}", f"shmplane.x{pid}", f"{pid}".ljust(200, "x")]:
        with shmplane.RawValue("d", 2.5, name=name) as v, shmplane.RawValue.attach(name, "d") as w:
            v.value = 4.0
            assert w.value == 4.0
        assert not os.path.exists(seg_path(name))


# ------------------------------------------------------------ timeouts, Ctrl-C


@pytest.mark.timeout(WATCHDOG)
def test_bad_timeouts_on_every_wait(make_name: Any) -> None:
    a = shmplane.RawArray("d", 2, name=make_name())
    missing = make_name("missing")
    waits: list[Callable[[Any], Any]] = [
        lambda t: a.wait_for_update(a.version, timeout=t),
        lambda t: asyncio.run(a.wait_for_update_async(a.version, timeout=t)),
        lambda t: shmplane.RawArray.attach(missing, "d", timeout=t),
        lambda t: shmplane.RawValue.attach(missing, "d", timeout=t),
    ]
    for wait in waits:
        for t in [math.nan, -1.0, -1e-9, -math.inf, -(2**70)]:
            with pytest.raises(ValueError):
                wait(t)
        for t in ["1", b"1", [1]]:
            with pytest.raises(TypeError):
                wait(t)
        for t in [0, 0.0, -0.0, 1e-300, 5e-324, 0.01]:
            with pytest.raises((shmplane.Timeout, shmplane.NotFoundError)):
                wait(t)
    # Huge timeouts where what is waited for is there at once: no overflow.
    for t in [math.inf, 1e300, 2.0**64, 2**64, 10**30]:
        assert a.wait_for_update(0, timeout=t) == a.version
        assert asyncio.run(a.wait_for_update_async(0, timeout=t)) == a.version
        with shmplane.RawArray.attach(a.name or "", "d", timeout=t) as b:
            assert b.name == a.name
    a.close()


def _wait_forever_spinning(a: shmplane.RawArray, ready: Any) -> None:
    a.set_policy("spin")
    block_until_interrupted(ready, lambda: a.wait_for_update(a.version, timeout=1e9))


def _wait_blocking(a: shmplane.RawArray, ready: Any) -> None:
    a.set_policy("block")
    block_until_interrupted(ready, lambda: a.wait_for_update(a.version, timeout=3600))


def _attach_forever(name: str, ready: Any) -> None:
    block_until_interrupted(ready, lambda: shmplane.RawValue.attach(name, "d", timeout=None))


def _async_wait_forever(a: shmplane.RawArray, ready: Any) -> None:
    block_until_interrupted(ready, lambda: asyncio.run(a.wait_for_update_async(a.version)))


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("how", ["spin", "block", "attach", "async"])
def test_ctrl_c_ends_every_wait(how: str, make_name: Any, procs: Any) -> None:
    """Ctrl-C (SIGINT, sent once the child is inside the wait) ends a wait under the
    spin and block policies with huge timeouts, an attach waiting for a creator, and
    an asyncio wait (test_rawarray.py has the adaptive wait without a timeout)."""
    a = shmplane.RawArray("d", 2, name=make_name())
    target, arg = {
        "spin": (_wait_forever_spinning, a),
        "block": (_wait_blocking, a),
        "attach": (_attach_forever, make_name("later")),
        "async": (_async_wait_forever, a),
    }[how]
    r, w = FORK.Pipe(duplex=False)
    p = procs.start(target, arg, w, method="fork")
    w.close()
    if how == "async":
        # It sleeps in epoll_wait, which shm_helpers cannot tell from other sleeps.
        assert r.poll(20) and r.recv()[0] == "ready"
        time.sleep(0.3)
        os.kill(p.pid, signal.SIGINT)
        p.join(20)
        assert not p.is_alive(), "Ctrl-C did not end the async wait"
        assert (r.recv() if r.poll(1) else None, p.exitcode) == ("KeyboardInterrupt", 42)
    else:
        blocked: dict[str, Any] = {
            "spin": {"spinning": True},
            "block": {"segment": seg_path(a.name or "")},
            "attach": {"calls": ("nanosleep", "clock_nanosleep")},
        }[how]
        interrupt_when_blocked(p, r, **blocked)
    a.close()


# ------------------------------------------------------------ pickling, close


def _child_uses(a: shmplane.RawArray, v: shmplane.RawValue) -> tuple[list[float], float]:
    got = (a[:], v.value)
    a[:] = [9.0, 9.0, 9.0]
    v.value = -1.0
    return got


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_handles_pickled_to_children_outlive_the_parents_close(method: str, procs: Any) -> None:
    """The parent closes its handles right after ``start()``: the child's copies
    (passed descriptors) still work, and the segments go with the last handle."""
    a = shmplane.RawArray("d", [1.0, 2.0, 3.0])
    v = shmplane.RawValue("d", 0.5)
    keep = shmplane.RawArray.attach(a.name or "", "d")
    names = [a.name, v.name]
    p, report = procs.start_reporting(_child_uses, a, v, method=method)
    a.close()
    v.close()
    assert get_report(report, 30) == ([1.0, 2.0, 3.0], 0.5)
    procs.join(p)
    assert keep[:] == [9.0, 9.0, 9.0]
    keep.close()
    assert wait_until(lambda: not any(os.path.exists(seg_path(n or "")) for n in names), 5)
    with pytest.raises(shmplane.ClosedError):
        pickle.dumps(a)


def _child_policy(a: shmplane.RawArray) -> str:
    return a.policy


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_pickled_handle_keeps_its_wait_policy(method: str, procs: Any) -> None:
    with shmplane.RawArray("d", 2) as a:
        a.set_policy("block")
        p, report = procs.start_reporting(_child_policy, a, method=method)
        assert get_report(report, 30) == "block"
        procs.join(p)


@pytest.mark.timeout(WATCHDOG)
def test_every_operation_after_close() -> None:
    a = shmplane.RawArray("d", [1.0, 2.0, 3.0])
    v = shmplane.RawValue("d", 7.5)
    snaps = [a.snapshot(), a.snapshot(), a.snapshot()]  # recycled arrays among them
    mv, arr, mvv, copy = memoryview(a), np.asarray(a), memoryview(v), a.copy()
    a.close()
    a.close()  # idempotent
    v.close()
    ops: list[Callable[[], Any]] = [
        lambda: a[0], lambda: a[:], lambda: a[::2], lambda: a.__setitem__(0, 1.0),
        lambda: a.__setitem__(slice(None), [1.0] * 3), lambda: a.snapshot(), lambda: a.copy(),
        lambda: np.asarray(a), lambda: memoryview(a), lambda: list(a), lambda: a.version,
        lambda: a.wait_for_update(0, timeout=0), lambda: a.wait_for_update(0, timeout=None),
        lambda: asyncio.run(a.wait_for_update_async(0)), lambda: pickle.dumps(a), lambda: a._slot.fileno(),
        lambda: a._slot.read(), lambda: v.value, lambda: setattr(v, "value", 1.0), lambda: v.snapshot(),
        lambda: memoryview(v), lambda: v.version, lambda: pickle.dumps(v),
    ]  # fmt: skip
    for op in ops:
        with pytest.raises(shmplane.ClosedError):
            op()
    assert len(a) == 3 and a.name is None and "RawArray" in repr(a)
    # What was read before the close stays valid, and is nobody else's memory now.
    others = [shmplane.RawArray("d", [8.0] * 3) for _ in range(4)]
    for x in others:
        x.snapshot()
        x.close()
    for s in snaps:
        assert s.tolist() == [1.0, 2.0, 3.0]
    assert mv.tolist() == arr.tolist() == list(copy) == [1.0, 2.0, 3.0]
    assert mvv.tolist() == 7.5
    mv.release()
    mvv.release()


def test_repr_of_a_closed_value_does_not_raise() -> None:
    v = shmplane.RawValue("d", 1.0)
    v.close()
    assert "closed" in repr(v)


# ------------------------------------------------------------ defects found by this pass


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("cut", [300, 1500, 2000, "regrown"])
def test_cut_inside_a_page_is_corrupt(cut: int | str, make_name: Any) -> None:
    """A cut inside a mapped page zeroes the page's tail and raises no SIGBUS (nor does
    a file cut to 0 and grown back): the zeros must read as corruption, never as data
    (a slot's copy-0 line versions are never 0, copy 1's lines start with a canary)."""
    a = shmplane.RawArray("d", [5.0] * 100, name=make_name())  # 2688 bytes: one page
    path = seg_path(a.name or "")
    try:
        if cut == "regrown":
            size = os.path.getsize(path)
            os.truncate(path, 0)
            os.truncate(path, size)
        else:
            os.truncate(path, cut)
        # Element 99 lies in the last line of both copies, which every cut here zeroed.
        ops = [lambda: a[99], lambda: a.__setitem__(99, 1.0), lambda: a.__setitem__(slice(None), [1.0] * 100)]
        if cut == "regrown" or int(cut) < 768:
            # The control block (384..768) was cut too: the version (its `done` word)
            # reads as zeros. A cut past it leaves the count of writes, but no value.
            ops += [lambda: a.version, lambda: a.wait_for_update(0, timeout=0.2)]
        for op in ops:
            with pytest.raises(shmplane.CorruptSegmentError):
                op()
        # Reads of lines the cut left (copy 0 whole at 2000) may return the value,
        # never the zeros.
        for read in (lambda: a[:], lambda: a.snapshot(), lambda: np.asarray(a), lambda: [a[0]], lambda: [a[50]]):
            try:
                got = list(read())
            except shmplane.CorruptSegmentError:
                continue
            assert set(got) == {5.0}, got
    finally:
        a.close()
        if os.path.exists(path):
            os.unlink(path)


@pytest.mark.timeout(WATCHDOG)
def test_no_cut_inside_the_data_reads_zeros_as_data(make_name: Any) -> None:
    """Every cut on an 8-byte boundary from copy 0's first line to the end of copy 1
    (found in review: with a line's marker first, a cut inside a line kept the marker
    and zeroed the values after it): every read returns the value or raises
    CorruptSegmentError, never a zero nobody wrote."""
    n = 20  # three lines per copy: copy 0 at 768, copy 1 at 960, the file 1152 bytes
    end = COPY0_OFFSET + 2 * 64 * 3
    for cut in range(COPY0_OFFSET, end, 8):
        a = shmplane.RawArray("d", [5.0] * n, name=make_name())
        path = seg_path(a.name or "")
        try:
            os.truncate(path, cut)
            reads: list[Callable[[], Any]] = [lambda: a[:], lambda: a.snapshot(), lambda: np.asarray(a),
                                              lambda: a[3:11], lambda: a[13:]]  # fmt: skip
            reads += [lambda i=i: [a[i]] for i in range(n)]
            for read in reads:
                try:
                    got = list(read())
                except shmplane.CorruptSegmentError:
                    continue
                assert set(got) == {5.0}, f"cut at {cut}: {got}"
        finally:
            a.close()
            if os.path.exists(path):
                os.unlink(path)


@pytest.mark.timeout(WATCHDOG)
def test_a_cut_inside_the_one_line_of_a_struct() -> None:
    class P(ctypes.Structure):
        _fields_ = [("x", ctypes.c_double), ("y", ctypes.c_double)]

    for cut in (COPY0_OFFSET + 8, COPY0_OFFSET + 16, COPY0_OFFSET + 56, COPY0_OFFSET + 64 + 8):
        v = shmplane.RawValue(P, 1.0, 2.0)
        path = seg_path(v.name or "")
        try:
            os.truncate(path, cut)
            for read in (lambda: v.snapshot(), lambda: v):
                try:
                    s = read()
                    got = (s.x, s.y)
                except shmplane.CorruptSegmentError:
                    continue
                assert got == (1.0, 2.0), f"cut at {cut}: {got}"
        finally:
            v.close()
            if os.path.exists(path):
                os.unlink(path)


def _write_until_corrupt(name: str, q: Any) -> None:
    a = shmplane.RawArray.attach(name, "d")
    q.put("go")
    i = 0
    try:
        while True:
            i += 1
            a[:] = [float(i)] * len(a)
    except shmplane.CorruptSegmentError:
        a.close()
        q.put("corrupt")
    time.sleep(60)  # alive: its id stays in the shared lock word


def _element_write(name: str, attached: Any, go: Any) -> str:
    a = shmplane.RawArray.attach(name, "d")  # open before the truncation
    attached.set()
    assert go.wait(20)
    try:
        a[0] = 1.0
    except shmplane.CorruptSegmentError:
        return "corrupt"
    return "wrote"


@pytest.mark.timeout(WATCHDOG)
def test_writer_tripped_by_a_truncation_does_not_block_other_writers(make_name: Any, procs: Any) -> None:
    name = make_name()
    a = shmplane.RawArray("d", 1000, name=name)
    q, attached, go = FORK.Queue(), FORK.Event(), FORK.Event()
    other, report = procs.start_reporting(_element_write, name, attached, go, method="fork")
    assert attached.wait(20)
    tripped = procs.start(_write_until_corrupt, name, q, method="fork")
    assert q.get(timeout=20) == "go"
    time.sleep(0.05)
    os.truncate(seg_path(name), 8192)  # page 0 (the lock word) survives
    assert q.get(timeout=20) == "corrupt"  # it tripped mid-write, holding the lock
    go.set()  # the other writer, whose handle predates the cut, writes element 0
    try:
        assert get_report(report, 3) == "corrupt"
    finally:
        procs.kill(other)
        procs.kill(tripped)
        a.close()
        if os.path.exists(seg_path(name)):
            os.unlink(seg_path(name))


@pytest.mark.timeout(WATCHDOG)
def test_a_slot_cut_below_its_role_table_can_be_created_again(make_name: Any) -> None:
    name = make_name()
    a = shmplane.RawArray("d", 100, name=name)
    os.truncate(seg_path(name), 300)
    a.close()
    try:
        # Nobody holds it any more: replaced by a fresh slot (not AlreadyExists), and the
        # last close removed it already.
        with shmplane.RawArray("d", 100, name=name) as b:
            assert b[:] == [0.0] * 100
    finally:
        if os.path.exists(seg_path(name)):
            os.unlink(seg_path(name))


def test_async_wait_refuses_a_negative_since() -> None:
    with shmplane.RawArray("d", 1) as a:
        with pytest.raises(OverflowError):
            a.wait_for_update(-1, timeout=0)
        with pytest.raises(OverflowError):
            asyncio.run(a.wait_for_update_async(-1, timeout=0))
