"""Zero-copy receive (``recv(copy=False)``) side by side with its peers, in one run.

For each array size (1, 8, 64 MB of float64) a sender process and this receiver:

- ``view``: the message is queued and whole (``poll()`` said so); the time of
  ``rx.recv(copy=False)`` alone, which returns a read-only ndarray viewing the ring.
- ``send+view``: from the sender's clock before ``tx.send(arr)`` (one copy into the
  ring) to the receiver holding the view (``perf_counter`` is CLOCK_MONOTONIC, one clock
  for both processes); the sender's own stamp travels in the array.
- ``send+recv (copy)``: the same with ``rx.recv()`` (an owned copy).
- ``loan+copyto+commit+view``: zero-copy both ways: the sender fills a loan of ring space
  (``with tx.loan(n) as a: np.copyto(a, arr)``), the receiver views it (iceoryx2's
  row below does the same with its sample loans).
- ``shared_memory+view``: ``multiprocessing.shared_memory``: ``np.copyto`` into the
  block, a byte down a ``Pipe`` to say so, ``np.ndarray(buffer=shm.buf)`` on the other
  side (what users hand-build).
- ``iceoryx2``: its publish-subscribe of a ``Slice[c_double]``: the sender loans a
  sample, ``np.copyto`` into it and sends; the receiver views the sample's payload
  (``np.frombuffer``), the same zero-copy receive (skipped if ``iceoryx2`` is missing;
  ``ci/bench-view.sh`` installs it).
- ``np.copyto``: one copy of the array in one process (the floor of any send that
  copies once).

Each message is acknowledged before the next (no queueing). Reports p50/p99/p99.9 in
µs and ratios to ``np.copyto`` (same size, same run). ``--repeat K`` (default 3) runs
every row K times, interleaved (copyto, view, ..., copyto, view, ...), and pools the
samples, so that a machine whose speed drifts during the run (a shared VM) moves the
floor and the rows alike; the last column gives the range of the K per-repeat p50
ratios. Usage: ``python benches/python/view_bench.py [--sizes 1,8,64] [--rounds N]
[--repeat K] [--hogs N] [--plot [DIR]]``.

``--plot [DIR]`` (matplotlib installed) writes into DIR (default ``benches/results/``)
``view-p50-vs-size.png``, the pooled p50 of every row against the array size (log-log),
and ``view-<N>MB-cdf.png``, the latency CDFs of every row at each size. The first is the
bench's claim in one picture: a view costs the same whatever the size (a flat line)
while every row that copies climbs with ``np.copyto``; CDFs of one size could not show
that, and the per-size CDFs add what a p50 hides (the tails of a shared VM).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import numpy as np

import plots  # benches/python/plots.py: optional pictures and progress bars
import shmplane


def pct(xs: list[float]) -> tuple[float, float, float]:
    a = np.array(xs) * 1e6
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(np.percentile(a, 99.9))


def _sender(tx: Any, ack: Any, n: int, rounds: int, loan: bool = False) -> None:
    arr = np.random.default_rng(0).random(n)
    for i in range(rounds):
        arr[0] = i
        arr[1] = time.perf_counter()
        if loan:
            with tx.loan(n, timeout=60) as dst:
                np.copyto(dst, arr)
        else:
            tx.send(arr, timeout=60)
        ack.recv()
    tx.close()


def _shm_sender(name: str, conn: Any, n: int, rounds: int) -> None:
    shm = shared_memory.SharedMemory(name=name)
    dst: np.ndarray = np.ndarray((n,), dtype=np.float64, buffer=shm.buf)
    arr = np.random.default_rng(0).random(n)
    for i in range(rounds):
        arr[0] = i
        arr[1] = time.perf_counter()
        np.copyto(dst, arr)
        conn.send_bytes(b"1")
        conn.recv_bytes()
    del dst
    shm.close()


def run_channel(n: int, rounds: int, copy: bool, loan: bool = False, mailbox: bool = False) -> tuple[list[float], list[float]]:
    """(recv-only times, end-to-end times) in seconds; `mailbox`: through a mailbox's
    lane instead of a channel."""
    # Four times the message: a viewing receiver gets messages up to a quarter whole.
    cap = 1 << max(16, int(n * 8 * 4 + (1 << 20)).bit_length())
    rx: Any
    if mailbox:
        rx = shmplane.mailbox(cap, max_senders=2)
        tx = rx.sender()
    else:
        tx, rx = shmplane.channel(cap)
    rx.set_policy("spin")
    if not copy:
        # Ask for whole messages before the first one is sent.
        tx.send(b"hello", timeout=10)
        _ = rx.recv(timeout=10, copy=False)
        del _
    ack_r, ack_w = mp.Pipe(duplex=False)
    p = mp.get_context("fork").Process(target=_sender, args=(tx, ack_r, n, rounds, loan))
    p.start()
    tx.close()
    only, e2e = [], []
    for i in range(rounds):
        while not rx.poll(None):
            pass
        t0 = time.perf_counter()
        v = rx.recv(timeout=60, copy=copy)
        t1 = time.perf_counter()
        assert v[0] == i
        if not copy:
            assert not v.flags.writeable, "expected a view"
        only.append(t1 - t0)
        e2e.append(t1 - v[1])
        del v
        ack_w.send(1)
    p.join(60)
    rx.close()
    return only, e2e


def run_shm(n: int, rounds: int) -> list[float]:
    shm = shared_memory.SharedMemory(create=True, size=n * 8)
    a, b = mp.Pipe()
    p = mp.get_context("fork").Process(target=_shm_sender, args=(shm.name, b, n, rounds))
    p.start()
    out = []
    for i in range(rounds):
        a.recv_bytes()
        v: np.ndarray = np.ndarray((n,), dtype=np.float64, buffer=shm.buf)
        t1 = time.perf_counter()
        assert v[0] == i
        out.append(t1 - v[1])
        del v
        a.send_bytes(b"1")
    p.join(60)
    shm.close()
    shm.unlink()
    return out


def _iox_service(name: str) -> Any:
    import ctypes

    import iceoryx2 as iox2

    iox2.set_log_level(iox2.LogLevel.Error)
    node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
    svc = node.service_builder(iox2.ServiceName.new(name)).publish_subscribe(iox2.Slice[ctypes.c_double]).open_or_create()
    return node, svc


def _iox_sender(name: str, conn: Any, n: int, rounds: int) -> None:
    import ctypes

    node, svc = _iox_service(name)
    pub = svc.publisher_builder().initial_max_slice_len(n).create()
    conn.send_bytes(b"1")
    arr = np.random.default_rng(0).random(n)
    for i in range(rounds):
        conn.recv_bytes()
        arr[0] = i
        arr[1] = time.perf_counter()
        sample = pub.loan_slice_uninit(n)
        dst = np.frombuffer((ctypes.c_double * n).from_address(sample.payload().as_ptr()), dtype=np.float64)
        np.copyto(dst, arr)
        del dst
        sample.assume_init().send()
    pub.delete()
    del svc, node


def run_iox(n: int, rounds: int) -> tuple[list[float], list[float]] | None:
    try:
        import iceoryx2  # noqa: F401
    except ImportError:
        return None
    name = f"shmplane-view-bench-{os.getpid()}-{n}"
    node, svc = _iox_service(name)
    sub = svc.subscriber_builder().create()
    a, b = mp.Pipe()
    p = mp.get_context("fork").Process(target=_iox_sender, args=(name, b, n, rounds))
    p.start()
    a.recv_bytes()  # the publisher exists
    only, e2e = [], []
    for i in range(rounds):
        a.send_bytes(b"1")
        deadline = time.monotonic() + 60
        while True:
            t0 = time.perf_counter()
            sample = sub.receive()
            if sample is not None:
                break
            if time.monotonic() > deadline:
                raise TimeoutError("iceoryx2 receive timed out")
        v = np.frombuffer(sample.payload().as_memory_view(), dtype=np.float64)
        t1 = time.perf_counter()
        assert v[0] == i
        only.append(t1 - t0)
        e2e.append(t1 - v[1])
        del v
        sample.delete()
    p.join(60)
    sub.delete()
    del svc, node
    return only, e2e


def run_copyto(n: int, rounds: int) -> list[float]:
    src = np.random.default_rng(0).random(n)
    dst = np.empty_like(src)
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        out.append(time.perf_counter() - t0)
    return out


def hog() -> None:
    x = 0
    while True:
        x += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1,8,64", help="MB, comma-separated")
    ap.add_argument("--rounds", type=int, default=0, help="messages per row (default by size)")
    ap.add_argument("--hogs", type=int, default=0, help="CPU-hog processes running meanwhile")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved repeats of every row, pooled")
    plots.add_plot_option(ap, "view-p50-vs-size.png and view-<N>MB-cdf.png")
    args = ap.parse_args()
    plot_dir = plots.plot_dir(args.plot)
    pooled: dict[int, dict[str, list[float]]] = {}  # MB -> row -> seconds, for --plot
    hogs = [mp.get_context("fork").Process(target=hog, daemon=True) for _ in range(args.hogs)]
    for h in hogs:
        h.start()
    print(
        f"# view_bench: {os.cpu_count()} CPUs, {args.hogs} hogs, {args.repeat} interleaved repeats;"
        " times in µs (p50 / p99 / p99.9), ratio of pooled p50s, range of per-repeat ratios"
    )
    try:
        for mb in [int(s) for s in args.sizes.split(",")]:
            n = mb * 1_000_000 // 8
            rounds = args.rounds or max(20, 400 // mb)
            runs: list[dict[str, list[float]]] = []
            for _ in plots.progress(range(max(1, args.repeat)), desc=f"{mb} MB repeats"):
                floor_run = run_copyto(n, rounds)
                view_only, view_e2e = run_channel(n, rounds, copy=False)
                copy_only, copy_e2e = run_channel(n, rounds, copy=True)
                _, loan_e2e = run_channel(n, rounds, copy=False, loan=True)
                mb_only, mb_e2e = run_channel(n, rounds, copy=False, mailbox=True)
                # In the order of the printed table.
                rows: dict[str, list[float]] = {
                    "np.copyto (floor)": floor_run,
                    "shmplane view: recv(copy=False) alone": view_only,
                    "shmplane send+view": view_e2e,
                    "shmplane send+recv (copy)": copy_e2e,
                    "shmplane loan+copyto+commit+view": loan_e2e,
                    "shmplane recv (copy) alone": copy_only,
                    "shmplane mailbox view alone": mb_only,
                    "shmplane mailbox send+view": mb_e2e,
                    "shared_memory copyto+Pipe+view": run_shm(n, rounds),
                }
                iox = run_iox(n, rounds)
                if iox is not None:
                    rows["iceoryx2 view: receive+frombuffer alone"] = iox[0]
                    rows["iceoryx2 loan+copyto+send+view"] = iox[1]
                runs.append(rows)
            pooled[mb] = {label: [x for r in runs for x in r[label]] for label in runs[0]}
            floor = pct(pooled[mb]["np.copyto (floor)"])
            print(f"\n{mb} MB ({rounds} messages x {len(runs)} repeats)")
            for label, samples in pooled[mb].items():
                p50, p99, p999 = pct(samples)
                ratios = [pct(r[label])[0] / pct(r["np.copyto (floor)"])[0] for r in runs]
                print(
                    f"  {label:40s} {p50:10.1f} {p99:10.1f} {p999:10.1f}   {p50 / floor[0]:6.2f}x copyto"
                    f"  [{min(ratios):.2f}-{max(ratios):.2f}]"
                )
    finally:
        for h in hogs:
            h.kill()
    if plot_dir is not None and pooled:
        written = plot_rows(pooled, args, plot_dir)
        print(f"\nplots: {', '.join(str(p) for p in written)}")


def plot_rows(pooled: dict[int, dict[str, list[float]]], args: argparse.Namespace, directory: Path) -> list[Path]:
    """``view-p50-vs-size.png`` and a ``view-<N>MB-cdf.png`` per size (see the module's
    docstring) from the pooled samples (seconds) of every row at every size (MB)."""
    how = f"{args.repeat} interleaved repeats pooled, {args.hogs} CPU hogs"
    vs_size: dict[str, list[tuple[int, float]]] = {}
    for mb, rows in pooled.items():
        for label, xs in rows.items():
            vs_size.setdefault(label, []).append((mb * 1_000_000, pct(xs)[0]))
    title = f"float64 arrays between two processes, p50 of each row against the size\n{how}"
    written = [plots.latency_vs_size(vs_size, title, directory / "view-p50-vs-size.png")]
    for mb, rows in pooled.items():
        ns = {label: [x * 1e9 for x in xs] for label, xs in rows.items()}
        title = f"{mb} MB float64 arrays between two processes: every row's latency\n{how}"
        written.append(plots.latency_cdfs(ns, title, directory / f"view-{mb}MB-cdf.png"))
    return written


if __name__ == "__main__":
    main()
