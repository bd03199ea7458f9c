"""Latest-value reads and writes: shmplane.RawValue/RawArray beside the stdlib, one run.

Run: ``.venv/bin/python benches/python/slots.py`` (``--quick`` for a smoke run).

For each subject it reports, in nanoseconds per operation:

* **hot read, writer busy**: a forked writer process assigns the value in a tight loop
  while this process reads it in batches of ``BATCH`` reads; p50/p99/p99.9 are over the
  per-read times of the batches (the issue's "writer busy in another process");
* **hot read, idle**: the same without the writer;
* **write**: hot assignments, no other writer;
* **cold read**: single reads after a random 0-10 ms sleep (``COLD`` samples, the
  median is the headline), timed with ``perf_counter_ns`` minus its own median cost.

It also counts **torn** whole reads: the writer stores arrays whose elements are all
equal, so a read with two different elements mixes two writes. The stdlib's ``arr[:]``
can tear; shmplane's never should (the tests assert it; here it is a figure).

Floors, for orientation: the Python cost of a no-op attribute read on a plain object,
and ``perf_counter_ns`` itself.
"""

from __future__ import annotations

import argparse
import ctypes
import multiprocessing as mp
import os
import random
import signal
import statistics
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import shared_memory
from multiprocessing import sharedctypes as std
from typing import Any

import shmplane

BATCH = 1000


class Pair(ctypes.Structure):
    _fields_ = [("a", ctypes.c_int), ("b", ctypes.c_int)]


@dataclass
class Subject:
    """One thing to read: `make()` builds (obj, read, write(i)); `torn(v)` checks a read."""

    name: str
    make: Callable[[], tuple[Any, Callable[[], Any], Callable[[int], None]]]
    torn: Callable[[Any], bool] | None = None


def _all_equal(v: Any) -> bool:
    return len(set(v)) > 1


def subjects() -> list[Subject]:
    def raw_value(mod: Any) -> Callable[[], Any]:
        def make() -> Any:
            v = mod.RawValue("d", 1.0)
            def write(i: int) -> None:
                v.value = float(i)
            return v, (lambda: v.value), write
        return make

    def value_locked() -> Any:
        v = mp.Value("d", 1.0)
        def write(i: int) -> None:
            v.value = float(i)
        return v, (lambda: v.value), write

    def array(mod: Any, n: int, how: str) -> Callable[[], Any]:
        def make() -> Any:
            a = mod.RawArray("d", n)
            lock = mp.Lock()
            if how == "elem":
                read: Callable[[], Any] = lambda: a[0]
            elif how == "slice":
                read = lambda: a[:]
            elif how == "locked":
                def read() -> Any:
                    with lock:
                        return a[:]
            else:
                read = a.snapshot
            def write(i: int) -> None:
                if how == "locked":
                    with lock:
                        a[:] = [float(i)] * n
                else:
                    a[:] = [float(i)] * n
            return a, read, write
        return make

    def pair(mod: Any, fields: bool = False) -> Callable[[], Any]:
        def make() -> Any:
            v = mod.RawValue(Pair, 1, 1)
            if mod is shmplane and not fields:
                def read() -> Any:
                    s = v.snapshot()
                    return (s.a, s.b)
                def write(i: int) -> None:
                    v._slot.write(bytes(Pair(i, i)))
            else:  # field by field, as stdlib code does (each field consistent, the pair not)
                read = lambda: (v.a, v.b)
                def write(i: int) -> None:
                    v.a = i
                    v.b = i
            return v, read, write
        return make

    def shm_struct() -> Any:
        seg = shared_memory.SharedMemory(create=True, size=8)
        buf = seg.buf
        def write(i: int) -> None:
            struct.pack_into("d", buf, 0, float(i))
        return seg, (lambda: struct.unpack_from("d", buf, 0)[0]), write

    return [
        Subject("shmplane RawValue('d').value", raw_value(shmplane)),
        Subject("stdlib   RawValue('d').value", raw_value(std)),
        Subject("stdlib   Value('d').value (lock)", value_locked),
        Subject("stdlib   shared_memory+unpack_from", shm_struct),
        Subject("shmplane RawArray('d',16)[0]", array(shmplane, 16, "elem")),
        Subject("stdlib   RawArray('d',16)[0]", array(std, 16, "elem")),
        Subject("shmplane RawArray('d',16)[:]", array(shmplane, 16, "slice"), _all_equal),
        Subject("shmplane RawArray('d',16).snapshot()", array(shmplane, 16, "snap"), _all_equal),
        Subject("stdlib   RawArray('d',16)[:]", array(std, 16, "slice"), _all_equal),
        Subject("shmplane RawArray('d',1000)[:]", array(shmplane, 1000, "slice"), _all_equal),
        Subject("shmplane RawArray('d',1000).snapshot()", array(shmplane, 1000, "snap"), _all_equal),
        Subject("stdlib   RawArray('d',1000)[:]", array(std, 1000, "slice"), _all_equal),
        Subject("stdlib   RawArray('d',1000)[:] (Lock)", array(std, 1000, "locked"), _all_equal),
        Subject("shmplane RawValue(2-int struct)", pair(shmplane), lambda v: v[0] != v[1]),
        Subject("shmplane RawValue(2-int struct) fields", pair(shmplane, fields=True), lambda v: v[0] != v[1]),
        Subject("stdlib   RawValue(2-int struct)", pair(std), lambda v: v[0] != v[1]),
    ]


def _writer(write: Callable[[int], None]) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    i = 0
    while True:
        i += 1
        write(i)


def _pcts(xs: list[float]) -> tuple[float, float, float]:
    xs = sorted(xs)
    pick = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]
    return pick(0.5), pick(0.99), pick(0.999)


def hot(read: Callable[[], Any], batches: int) -> list[float]:
    out = []
    rng = range(BATCH // 10)
    for _ in range(batches):
        t0 = time.perf_counter_ns()
        for _ in rng:  # unrolled x10: the loop itself is part of every figure
            read(); read(); read(); read(); read(); read(); read(); read(); read(); read()
        out.append((time.perf_counter_ns() - t0) / BATCH)
    return out


def hot_write(write: Callable[[int], None], batches: int) -> list[float]:
    out = []
    for b in range(batches):
        t0 = time.perf_counter_ns()
        for i in range(BATCH):
            write(i)
        out.append((time.perf_counter_ns() - t0) / BATCH)
    return out


def cold(read: Callable[[], Any], samples: int, timer_ns: float) -> list[float]:
    out = []
    for _ in range(samples):
        time.sleep(random.uniform(0, 0.010))
        t0 = time.perf_counter_ns()
        read()
        out.append(time.perf_counter_ns() - t0 - timer_ns)
    return out


def torn_fraction(read: Callable[[], Any], torn: Callable[[Any], bool], n: int) -> float:
    return sum(torn(read()) for _ in range(n)) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="few samples (smoke run)")
    ap.add_argument("--cold", type=int, default=200, help="cold samples per subject")
    args = ap.parse_args()
    batches = 50 if args.quick else 400
    cold_n = 20 if args.quick else args.cold
    ctx = mp.get_context("fork")
    timer_ns = statistics.median(-time.perf_counter_ns() + time.perf_counter_ns() for _ in range(10001))
    timer_ns = -timer_ns if timer_ns < 0 else timer_ns

    class Plain:
        value = 1.0
    plain = Plain()
    floor = statistics.median(hot(lambda: plain.value, batches))

    print(f"# slots bench: {os.cpu_count()} cores, Python {sys.version.split()[0]}, batches of {BATCH} reads, "
          f"{cold_n} cold samples; perf_counter_ns costs {timer_ns:.0f} ns (subtracted from cold)")
    print(f"# floor: lambda calling a plain attribute read, {floor:.0f} ns (included in every hot figure)")
    head = f"{'subject':40s} {'busy p50':>9s} {'p99':>7s} {'p99.9':>8s} {'idle p50':>9s} {'write':>7s} {'cold p50':>9s} {'cold p99':>9s} {'torn':>7s}"
    print(head)
    results: dict[str, float] = {}
    for s in subjects():
        obj, read, write = s.make()
        idle = statistics.median(hot(read, batches))
        w = statistics.median(hot_write(write, max(10, batches // 10)))
        c = cold(read, cold_n, timer_ns)
        writer = ctx.Process(target=_writer, args=(write,), daemon=True)
        writer.start()
        try:
            time.sleep(0.05)
            busy = hot(read, batches)
            torn = torn_fraction(read, s.torn, 2000 if args.quick else 20000) if s.torn else None
        finally:
            writer.terminate()
            writer.join(10)
            if writer.is_alive():
                writer.kill()
                writer.join(10)
        p50, p99, p999 = _pcts(busy)
        c50, c99, _ = _pcts(c)
        results[s.name] = p50
        torn_s = "-" if torn is None else f"{100 * torn:.2f}%"
        print(f"{s.name:40s} {p50:9.0f} {p99:7.0f} {p999:8.0f} {idle:9.0f} {w:7.0f} {c50:9.0f} {c99:9.0f} {torn_s:>7s}",
              flush=True)
        if isinstance(obj, shared_memory.SharedMemory):
            obj.close()
            obj.unlink()
        elif hasattr(obj, "close") and type(obj).__module__.startswith("shmplane"):
            obj.close()

    r = results
    print("\n# ratios (writer busy, p50): shmplane / stdlib, lower is better")
    pairs = [
        ("RawValue('d').value", "shmplane RawValue('d').value", "stdlib   RawValue('d').value", "target <= 1.0"),
        ("RawArray('d',16)[0]", "shmplane RawArray('d',16)[0]", "stdlib   RawArray('d',16)[0]", ""),
        ("16 doubles, consistent snapshot", "shmplane RawArray('d',16).snapshot()", "stdlib   RawArray('d',16)[:]",
         "target <= 0.33"),
        ("16 doubles, arr[:] list", "shmplane RawArray('d',16)[:]", "stdlib   RawArray('d',16)[:]", ""),
        ("1000 doubles, snapshot vs [:] under Lock", "shmplane RawArray('d',1000).snapshot()",
         "stdlib   RawArray('d',1000)[:] (Lock)", "target < 1.0"),
        ("1000 doubles, arr[:] vs [:] under Lock", "shmplane RawArray('d',1000)[:]",
         "stdlib   RawArray('d',1000)[:] (Lock)", ""),
        ("RawValue vs Value with its lock", "shmplane RawValue('d').value", "stdlib   Value('d').value (lock)", ""),
        ("2-int struct, snapshot vs fields", "shmplane RawValue(2-int struct)", "stdlib   RawValue(2-int struct)", ""),
        ("2-int struct, fields vs fields", "shmplane RawValue(2-int struct) fields", "stdlib   RawValue(2-int struct)", ""),
    ]
    for label, a, b, target in pairs:
        print(f"{label:45s} {r[a] / r[b]:6.2f}  {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
