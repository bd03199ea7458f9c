"""Lists of numbers between two processes: a list of 1 M floats (and of 1 M ints) from
a sender process to a usable list in the receiver, shmplane beside pickle-5 over a
``multiprocessing.Pipe``, ``multiprocessing.Queue``, msgpack over a ``Pipe`` (if
installed), and faster-fifo (if installed), in one run.

Run: ``bash ci/bench-lists.sh`` (installs msgpack and faster-fifo), or
``.venv/bin/python benches/python/lists_bench.py [--n 1000000] [--rounds 15] [--plot [DIR]]``.
``--plot [DIR]`` (matplotlib installed) writes the CDFs of every subject's times,
``lists-floats-cdf.png`` and ``lists-ints-cdf.png``, into DIR (default
``benches/results/``).

Each round: the receiver says "go" over a pipe; the sender stamps
``time.perf_counter_ns()`` (CLOCK_MONOTONIC: one clock for every process) into shared
memory and sends the list; the receiver stops the clock once it holds the list (and
has checked its length). Reported: p50, p99 (of few rounds: the max), p50 ratio to
pickle-5 over a Pipe. The list is built once and reused; every subject frees the
previous list before the next round.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import multiprocessing as mp
import os
import pickle
import statistics
import sys
import time
from collections.abc import Callable
from multiprocessing import sharedctypes
from pathlib import Path
from typing import Any

import plots  # benches/python/plots.py: optional pictures and progress bars
import shmplane


def _data(kind: str, n: int) -> list[Any]:
    return [float(i) + 0.5 for i in range(n)] if kind == "floats" else list(range(-n // 2, n - n // 2))


# Each subject: make() -> (send(obj), recv() -> obj, close()), built before the fork so
# that both processes share the transport.
def shmplane_channel(nbytes: int) -> Any:
    tx, rx = shmplane.channel(max(1 << 24, 2 * nbytes))
    return tx.send, rx.recv, lambda: (tx.close(), rx.close())


def pickle_pipe(nbytes: int) -> Any:
    a, b = mp.Pipe(duplex=False)
    return (lambda o: b.send_bytes(pickle.dumps(o, protocol=5))), (lambda: pickle.loads(a.recv_bytes())), \
        lambda: (a.close(), b.close())


def mp_queue(nbytes: int) -> Any:
    q: Any = mp.Queue()
    return q.put, q.get, q.close


def msgpack_pipe(nbytes: int) -> Any:
    import msgpack

    a, b = mp.Pipe(duplex=False)
    return (lambda o: b.send_bytes(msgpack.packb(o))), (lambda: msgpack.unpackb(a.recv_bytes())), \
        lambda: (a.close(), b.close())


def faster_fifo_queue(nbytes: int) -> Any:
    import faster_fifo

    q = faster_fifo.Queue(max_size_bytes=max(1 << 26, 4 * nbytes))
    return (lambda o: q.put(o, timeout=30)), (lambda: q.get(timeout=30)), q.close


SUBJECTS: dict[str, Callable[[int], Any]] = {
    "shmplane channel": shmplane_channel,
    "pickle-5 over Pipe": pickle_pipe,
    "mp.Queue": mp_queue,
    "msgpack over Pipe": msgpack_pipe,
    "faster-fifo": faster_fifo_queue,
}


def _sender(send: Callable[[Any], None], go: Any, stamp: Any, kind: str, n: int, rounds: int) -> None:
    data = _data(kind, n)
    for _ in range(rounds):
        go.recv_bytes()
        stamp.value = time.perf_counter_ns()
        send(data)


def run(name: str, kind: str, n: int, rounds: int) -> list[float] | None:
    try:
        send, recv, close = SUBJECTS[name](8 * n)
    except ImportError:
        return None
    go_r, go_w = mp.Pipe(duplex=False)
    stamp = sharedctypes.RawValue(ctypes.c_int64, 0)
    p = mp.get_context("fork").Process(target=_sender, args=(send, go_r, stamp, kind, n, rounds), daemon=True)
    p.start()
    out = []
    try:
        for _ in range(rounds):
            gc.collect()
            go_w.send_bytes(b"g")
            obj = recv()
            t1 = time.perf_counter_ns()
            assert len(obj) == n and type(obj) is list, (name, type(obj))
            out.append((t1 - stamp.value) / 1e6)
            del obj
    finally:
        p.join(60)
        if p.is_alive():
            p.kill()
        close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="numbers per list")
    ap.add_argument("--rounds", type=int, default=15)
    plots.add_plot_option(ap, "lists-floats-cdf.png and lists-ints-cdf.png")
    args = ap.parse_args()
    plot_dir = plots.plot_dir(args.plot)
    written: list[Path] = []
    print(f"# lists bench: {os.cpu_count()} cores, Python {sys.version.split()[0]}, lists of {args.n} numbers, "
          f"{args.rounds} rounds; ms from the sender's send to a usable list in the receiver")
    for kind in ("floats", "ints"):
        rows = {name: run(name, kind, args.n, args.rounds) for name in plots.progress(SUBJECTS, desc=kind)}
        base = statistics.median(rows["pickle-5 over Pipe"] or [float("nan")])
        print(f"\n{kind}:")
        print(f"{'subject':22s} {'p50 ms':>8s} {'max ms':>8s} {'vs pickle-5':>12s}")
        for name, xs in rows.items():
            if xs is None:
                print(f"{name:22s} {'(not installed)':>30s}")
                continue
            p50 = statistics.median(xs)
            print(f"{name:22s} {p50:8.1f} {max(xs):8.1f} {p50 / base:11.2f}x")
        if plot_dir is not None:
            written.append(plot_kind(rows, kind, args, plot_dir))
    if written:
        print(f"\nplots: {', '.join(str(p) for p in written)}")
    return 0


def plot_kind(rows: dict[str, list[float] | None], kind: str, args: argparse.Namespace, directory: Path) -> Path:
    """``lists-<kind>-cdf.png`` in ``directory``: the CDF of every subject's times (ms;
    None for a subject not installed)."""
    title = f"a list of {args.n:,} {kind} from a sender process to a usable list here\n{args.rounds} rounds per subject"
    ns = {name: [x * 1e6 for x in xs] for name, xs in rows.items() if xs is not None}
    return plots.latency_cdfs(ns, title, directory / f"lists-{kind}-cdf.png")


if __name__ == "__main__":
    sys.exit(main())
