"""Latest-value reads and writes: shmplane.RawValue/RawArray beside the stdlib, one run.

Run: ``.venv/bin/python benches/python/slots.py`` (``--quick`` for a smoke run).

For each subject it reports, in nanoseconds per operation:

* **hot read, idle**: reads in batches of ``BATCH``; p50 over the per-read times of the
  batches;
* **hot read, writer busy**, two patterns: a forked writer process assigns one element
  (``elem``: ``a[0] = x``, ``v.value = x``, ``s.a = x``) or the whole value (``whole``:
  ``a[:] = [x] * n``) in a tight loop while this process reads; p50 and p99.9; and for
  arrays a third, ``last``: the writer assigns the last element (``a[n - 1] = x``, on
  another cache line than the first), p50. The reader runs on the first allowed CPU
  and the writer on the second;
* **write**: hot whole-value assignments, no other writer;
* **cold read**: single reads after a random 0-10 ms sleep (``COLD`` samples, the
  median is the headline), timed with ``perf_counter_ns`` minus its own median cost.

It also counts **torn** whole reads: the writer stores arrays whose elements are all
equal, so a read with two different elements mixes two writes. The stdlib's ``arr[:]``
can tear; shmplane's never should (the tests assert it; here it is a figure).

Floors, for orientation: the Python cost of a no-op attribute read on a plain object,
and ``perf_counter_ns`` itself.

``--paired`` measures the pairs of the ratio table instead, each pair in one window:
one writer process writes both subjects in turn (``a(i); b(i)``: the same rate of
writes to each), and the reader alternates batches of the two (``ROUNDS`` pairs of
batches, the order swapped every round); the ratio is the median of the per-round
ratios, with its interquartile range. A drift of the host (another tenant, a CPU
frequency change) then falls on both sides of every ratio, where the default mode
measures the two subjects seconds apart. ``--load N`` adds N busy-loop processes
(CPU hogs, unpinned) for the whole run, in either mode.

``--repeat K`` (default 3) runs every subject K times, one after the other, and the
ratio table gives the median of the K per-repeat ratios with their range: a shared VM
drifts over minutes, and a ratio of two figures taken seconds apart carries less of
that drift than one of two medians taken minutes apart. A subject marked slow (the
stdlib array under its ``Lock``, which a busy writer holds for milliseconds) is read
in batches of 10 under a writer, so the run stays a few minutes long.
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

import numpy as np

import shmplane

BATCH = 1000


class Pair(ctypes.Structure):
    _fields_ = [("a", ctypes.c_int), ("b", ctypes.c_int)]


@dataclass
class Subject:
    """One thing to read: `make()` builds (obj, read, writers); `writers` maps a writer
    pattern ("elem": one element or field assigned in a loop, "whole": the whole value
    assigned, and for arrays "last": the last element assigned, on another cache line
    than the first) to `write(i)`; `torn(v)` checks a whole read."""

    name: str
    make: Callable[[], tuple[Any, Callable[[], Any], dict[str, Callable[[int], None]]]]
    torn: Callable[[Any], bool] | None = None
    slow: bool = False  # reads of ~100 µs or more under a writer: 20 batches of 10 reads there


def _all_equal(v: Any) -> bool:
    return len(set(v)) > 1


def subjects() -> list[Subject]:
    def raw_value(mod: Any) -> Callable[[], Any]:
        def make() -> Any:
            v = mod.RawValue("d", 1.0)
            def write(i: int) -> None:
                v.value = float(i)
            return v, (lambda: v.value), {"elem": write, "whole": write}
        return make

    def value_locked() -> Any:
        v = mp.Value("d", 1.0)
        def write(i: int) -> None:
            v.value = float(i)
        return v, (lambda: v.value), {"elem": write, "whole": write}

    def array(mod: Any, n: int, how: str) -> Callable[[], Any]:
        def make() -> Any:
            a = mod.RawArray("d", n)
            lock = mp.Lock()
            if how == "elem":
                read: Callable[[], Any] = lambda: a[0]
            elif how == "slice":
                read = lambda: a[:]
            elif how == "numpy":
                read = lambda: np.asarray(a)
            elif how == "locked":
                def read() -> Any:
                    with lock:
                        return a[:]
            else:
                read = a.snapshot
            def whole(i: int) -> None:
                if how == "locked":
                    with lock:
                        a[:] = [float(i)] * n
                else:
                    a[:] = [float(i)] * n
            def elem(i: int) -> None:
                if how == "locked":
                    with lock:
                        a[0] = float(i)
                else:
                    a[0] = float(i)
            def last(i: int) -> None:
                if how == "locked":
                    with lock:
                        a[n - 1] = float(i)
                else:
                    a[n - 1] = float(i)
            return a, read, {"elem": elem, "whole": whole, "last": last}
        return make

    def pair(mod: Any, fields: bool = False) -> Callable[[], Any]:
        def make() -> Any:
            v = mod.RawValue(Pair, 1, 1)
            if mod is shmplane and not fields:
                def read() -> Any:
                    s = v.snapshot()
                    return (s.a, s.b)
            else:  # field by field, as stdlib code does (each field consistent, the pair not)
                read = lambda: (v.a, v.b)
            def whole(i: int) -> None:
                if mod is shmplane:
                    v._slot.write(bytes(Pair(i, i)))
                else:
                    v.a = i
                    v.b = i
            def elem(i: int) -> None:
                v.a = i
            return v, read, {"elem": elem, "whole": whole}
        return make

    def shm_struct() -> Any:
        seg = shared_memory.SharedMemory(create=True, size=8)
        buf = seg.buf
        def write(i: int) -> None:
            struct.pack_into("d", buf, 0, float(i))
        return seg, (lambda: struct.unpack_from("d", buf, 0)[0]), {"elem": write, "whole": write}

    return [
        Subject("shmplane RawValue('d').value", raw_value(shmplane)),
        Subject("stdlib   RawValue('d').value", raw_value(std)),
        Subject("stdlib   Value('d').value (lock)", value_locked),
        Subject("stdlib   shared_memory+unpack_from", shm_struct),
        Subject("shmplane RawArray('d',16)[0]", array(shmplane, 16, "elem")),
        Subject("stdlib   RawArray('d',16)[0]", array(std, 16, "elem")),
        Subject("shmplane RawArray('d',16)[:]", array(shmplane, 16, "slice"), _all_equal),
        Subject("shmplane RawArray('d',16).snapshot()", array(shmplane, 16, "snap"), _all_equal),
        Subject("shmplane np.asarray(RawArray('d',16))", array(shmplane, 16, "numpy"), _all_equal),
        Subject("stdlib   RawArray('d',16)[:]", array(std, 16, "slice"), _all_equal),
        Subject("shmplane RawArray('d',1000)[:]", array(shmplane, 1000, "slice"), _all_equal),
        Subject("shmplane RawArray('d',1000).snapshot()", array(shmplane, 1000, "snap"), _all_equal),
        Subject("stdlib   RawArray('d',1000)[:]", array(std, 1000, "slice"), _all_equal),
        Subject("stdlib   RawArray('d',1000)[:] (Lock)", array(std, 1000, "locked"), _all_equal, slow=True),
        Subject("shmplane RawValue(2-int struct)", pair(shmplane), lambda v: v[0] != v[1]),
        Subject("shmplane RawValue(2-int struct) fields", pair(shmplane, fields=True), lambda v: v[0] != v[1]),
        Subject("stdlib   RawValue(2-int struct)", pair(std), lambda v: v[0] != v[1]),
    ]


def _pin(k: int) -> None:
    """Run on CPU `k` of the ones allowed (the reader on the first, the writer on the
    second): otherwise the scheduler sometimes puts both on one CPU, and the same
    subject measured 46 or 86 ns from one writer process to the next."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        os.sched_setaffinity(0, {cpus[k % len(cpus)]})


def _writer(write: Callable[[int], None], stop: Any) -> None:
    # Stops when asked (checked every 64 writes), never killed mid-write: a writer
    # killed holding the stdlib subject's Lock would block every later read forever.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _pin(1)
    i = 0
    while not stop.value:
        for _ in range(64):
            i += 1
            write(i)


class _affinity:
    """Temporarily widen this process's CPU set (children inherit it at fork)."""

    def __init__(self, cpus: set[int]) -> None:
        self.cpus = cpus

    def __enter__(self) -> None:
        self.saved = os.sched_getaffinity(0)
        os.sched_setaffinity(0, self.cpus)

    def __exit__(self, *exc: object) -> None:
        os.sched_setaffinity(0, self.saved)


def _pcts(xs: list[float]) -> tuple[float, float, float]:
    xs = sorted(xs)
    pick = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]
    return pick(0.5), pick(0.99), pick(0.999)


def hot(read: Callable[[], Any], batches: int, per_batch: int = BATCH) -> list[float]:
    out = []
    rng = range(per_batch // 10)
    for _ in range(batches):
        t0 = time.perf_counter_ns()
        for _ in rng:  # unrolled x10: the loop itself is part of every figure
            read(); read(); read(); read(); read(); read(); read(); read(); read(); read()
        out.append((time.perf_counter_ns() - t0) / per_batch)
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


PAIRS = [
    ("RawValue('d').value", "shmplane RawValue('d').value", "stdlib   RawValue('d').value", "<= 1.0 each"),
    ("RawArray('d',16)[0]", "shmplane RawArray('d',16)[0]", "stdlib   RawArray('d',16)[0]", "<= 1.0 each"),
    ("16 doubles, arr[:] list", "shmplane RawArray('d',16)[:]", "stdlib   RawArray('d',16)[:]", "<= 1.0 each"),
    ("16 doubles, consistent snapshot", "shmplane RawArray('d',16).snapshot()", "stdlib   RawArray('d',16)[:]",
     "<= 0.33 idle, whole; <= 1.0 elem"),
    ("1000 doubles, arr[:] list", "shmplane RawArray('d',1000)[:]", "stdlib   RawArray('d',1000)[:]", "<= 1.0 each"),
    ("2-int struct, fields vs fields", "shmplane RawValue(2-int struct) fields", "stdlib   RawValue(2-int struct)",
     "<= 1.0 each"),
]


def _hog(stop: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    x = 0
    while not stop.value:
        for _ in range(100_000):
            x += 1


def _stop_process(p: Any) -> None:
    p.join(10)
    if p.is_alive():
        p.terminate()
        p.join(10)
    if p.is_alive():
        p.kill()
        p.join(10)


def run_paired(rounds: int, allowed: set[int], ctx: Any) -> None:
    """`--paired`: every pair of `PAIRS` under every writer pattern, the two subjects
    read in alternating batches while one writer writes both (see the module docs)."""
    by_name = {s.name: s for s in subjects()}
    print(f"\n# paired: {rounds} rounds of one batch of {BATCH} reads each side (order swapped every round), "
          "one writer writing both subjects in turn; ratio = median of per-round ratios [interquartile range]")
    print(f"{'pair':34s} {'writer':6s} {'shmplane':>9s} {'stdlib':>8s} {'ratio':>6s} {'IQR':>13s}  target")
    for label, a_name, b_name, target in PAIRS:
        a_obj, read_a, writers_a = by_name[a_name].make()
        b_obj, read_b, writers_b = by_name[b_name].make()
        for pattern in ("idle", "elem", "whole", "last"):
            if pattern != "idle" and (pattern not in writers_a or pattern not in writers_b):
                continue
            writer = None
            stop = ctx.RawValue("b", 0)
            if pattern != "idle":
                wa, wb = writers_a[pattern], writers_b[pattern]

                def both(i: int, wa: Callable[[int], None] = wa, wb: Callable[[int], None] = wb) -> None:
                    # The two subjects in turn: each sees the same rate of writes.
                    wa(i)
                    wb(i)

                with _affinity(allowed):
                    writer = ctx.Process(target=_writer, args=(both, stop), daemon=True)  # fork: no pickling
                    writer.start()
                time.sleep(0.05)
            try:
                ta: list[float] = []
                tb: list[float] = []
                ratios: list[float] = []
                for k in range(rounds):
                    if k % 2 == 0:
                        x = hot(read_a, 1)[0]
                        y = hot(read_b, 1)[0]
                    else:
                        y = hot(read_b, 1)[0]
                        x = hot(read_a, 1)[0]
                    ta.append(x)
                    tb.append(y)
                    ratios.append(x / y)
            finally:
                stop.value = 1
                if writer is not None:
                    _stop_process(writer)
            q = statistics.quantiles(ratios, n=4)
            print(f"{label:34s} {pattern:6s} {statistics.median(ta):9.0f} {statistics.median(tb):8.0f} "
                  f"{statistics.median(ratios):6.2f} {f'[{q[0]:.2f}-{q[2]:.2f}]':>13s}  {target}", flush=True)
        for obj in (a_obj, b_obj):
            if hasattr(obj, "close") and type(obj).__module__.startswith("shmplane"):
                obj.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="few samples (smoke run)")
    ap.add_argument("--cold", type=int, default=200, help="cold samples per subject")
    ap.add_argument("--repeat", type=int, default=3, help="runs of every subject; ratios are medians over them")
    ap.add_argument("--paired", action="store_true", help="the ratio table's pairs, each read in alternating batches")
    ap.add_argument("--rounds", type=int, default=300, help="--paired: rounds (pairs of batches) per pair and writer")
    ap.add_argument("--load", type=int, default=0, help="busy-loop processes (CPU hogs) running for the whole run")
    args = ap.parse_args()
    batches = 50 if args.quick else 400
    allowed = os.sched_getaffinity(0)
    ctx = mp.get_context("fork")
    hog_stop = ctx.RawValue("b", 0)
    hogs = [ctx.Process(target=_hog, args=(hog_stop,), daemon=True) for _ in range(args.load)]
    for h in hogs:
        h.start()
    try:
        if args.load:
            print(f"# load: {args.load} busy-loop processes (unpinned)")
        _pin(0)
        if args.paired:
            run_paired(20 if args.quick else args.rounds, allowed, ctx)
            return 0
        return run_all(args, batches, allowed, ctx)
    finally:
        hog_stop.value = 1
        for h in hogs:
            _stop_process(h)


def run_all(args: Any, batches: int, allowed: set[int], ctx: Any) -> int:
    cold_n = 20 if args.quick else args.cold
    timer_ns = statistics.median(-time.perf_counter_ns() + time.perf_counter_ns() for _ in range(10001))
    timer_ns = -timer_ns if timer_ns < 0 else timer_ns

    class Plain:
        value = 1.0
    plain = Plain()
    floor = statistics.median(hot(lambda: plain.value, batches))

    print(f"# slots bench: {os.cpu_count()} cores, Python {sys.version.split()[0]}, batches of {BATCH} reads, "
          f"{cold_n} cold samples; perf_counter_ns costs {timer_ns:.0f} ns (subtracted from cold)")
    print(f"# floor: lambda calling a plain attribute read, {floor:.0f} ns (included in every hot figure)")
    head = (f"{'subject':40s} {'idle p50':>8s} {'elem p50':>8s} {'p99.9':>7s} {'whole p50':>9s} {'p99.9':>7s} "
            f"{'last p50':>8s} {'write':>7s} {'cold p50':>8s} {'torn':>7s}")
    print(head)
    runs: list[dict[tuple[str, str], float]] = []
    for rep in range(max(1, args.repeat)):
        if args.repeat > 1:
            print(f"# run {rep + 1} of {args.repeat}", flush=True)
        runs.append(run_subjects(args, batches, cold_n, timer_ns, allowed, ctx))
    report_ratios(runs)
    return 0


def run_subjects(args: Any, batches: int, cold_n: int, timer_ns: float, allowed: set[int], ctx: Any) -> dict[tuple[str, str], float]:
    """One run of every subject: prints its row, returns its p50s by (subject, pattern)."""
    results: dict[tuple[str, str], float] = {}
    for s in subjects():
        obj, read, writers = s.make()
        idle = statistics.median(hot(read, batches))
        results[(s.name, "idle")] = idle
        w = statistics.median(hot_write(writers["whole"], max(10, batches // 10)))
        c = cold(read, cold_n, timer_ns)
        row: dict[str, tuple[float, float]] = {}
        torn = None
        for pattern in ("elem", "whole", "last"):
            if pattern not in writers:
                continue
            stop = ctx.RawValue("b", 0)
            with _affinity(allowed):  # the writer may move to the second CPU
                writer = ctx.Process(target=_writer, args=(writers[pattern], stop), daemon=True)
                writer.start()
            try:
                time.sleep(0.05)
                p50, _, p999 = _pcts(hot(read, 20, per_batch=10) if s.slow else hot(read, batches))
                row[pattern] = (p50, p999)
                results[(s.name, pattern)] = p50
                if pattern == "whole" and s.torn:
                    torn = torn_fraction(read, s.torn, 2000 if args.quick or s.slow else 20000)
            finally:
                stop.value = 1
                _stop_process(writer)
        c50, _, _ = _pcts(c)
        torn_s = "-" if torn is None else f"{100 * torn:.2f}%"
        last_s = f"{row['last'][0]:8.0f}" if "last" in row else f"{'-':>8s}"
        print(f"{s.name:40s} {idle:8.0f} {row['elem'][0]:8.0f} {row['elem'][1]:7.0f} {row['whole'][0]:9.0f} "
              f"{row['whole'][1]:7.0f} {last_s} {w:7.0f} {c50:8.0f} {torn_s:>7s}", flush=True)
        if isinstance(obj, shared_memory.SharedMemory):
            obj.close()
            obj.unlink()
        elif hasattr(obj, "close") and type(obj).__module__.startswith("shmplane"):
            obj.close()

    return results


def report_ratios(runs: list[dict[tuple[str, str], float]]) -> None:
    """The ratio table: per pair and writer pattern, the median over runs of the
    per-run ratio of p50s, and (with several runs) their range."""
    print(f"\n# ratios (p50): shmplane / stdlib per writer pattern, lower is better; median of {len(runs)} run(s)"
          + (" [min-max]" if len(runs) > 1 else ""))
    print(f"{'':45s} {'idle':>14s} {'elem':>14s} {'whole':>14s} {'last':>14s}  target")
    pairs = [
        ("RawValue('d').value", "shmplane RawValue('d').value", "stdlib   RawValue('d').value", "<= 1.0 each"),
        ("RawArray('d',16)[0]", "shmplane RawArray('d',16)[0]", "stdlib   RawArray('d',16)[0]", "<= 1.0 each"),
        ("16 doubles, arr[:] list", "shmplane RawArray('d',16)[:]", "stdlib   RawArray('d',16)[:]", "<= 1.0 each"),
        ("16 doubles, consistent snapshot", "shmplane RawArray('d',16).snapshot()", "stdlib   RawArray('d',16)[:]",
         "<= 0.33 idle, whole; <= 1.0 elem"),
        ("16 doubles, np.asarray vs arr[:]", "shmplane np.asarray(RawArray('d',16))", "stdlib   RawArray('d',16)[:]",
         ""),
        ("1000 doubles, arr[:] list", "shmplane RawArray('d',1000)[:]", "stdlib   RawArray('d',1000)[:]", "<= 1.0 each"),
        ("1000 doubles, snapshot vs [:] under Lock", "shmplane RawArray('d',1000).snapshot()",
         "stdlib   RawArray('d',1000)[:] (Lock)", "< 1.0"),
        ("RawValue vs Value with its lock", "shmplane RawValue('d').value", "stdlib   Value('d').value (lock)", ""),
        ("2-int struct, fields vs fields", "shmplane RawValue(2-int struct) fields", "stdlib   RawValue(2-int struct)",
         "<= 1.0 each"),
        ("2-int struct, snapshot vs fields", "shmplane RawValue(2-int struct)", "stdlib   RawValue(2-int struct)", ""),
    ]
    for label, a, b, target in pairs:
        cells = []
        for p in ("idle", "elem", "whole", "last"):
            if (a, p) not in runs[0] or (b, p) not in runs[0]:
                cells.append(f"{'-':>5s}{'':9s}")
                continue
            rs = [r[(a, p)] / r[(b, p)] for r in runs]
            span = f" [{min(rs):.2f}-{max(rs):.2f}]" if len(rs) > 1 else ""
            cells.append(f"{statistics.median(rs):5.2f}{span:>9s}")
        print(f"{label:45s} {' '.join(cells)}  {target}")


if __name__ == "__main__":
    sys.exit(main())
