"""``shmplane bench``: a quick side-by-side run on the user's machine.

Two processes exchange messages through shmplane and through every peer that is
installed, in one run, and the command prints p50/p99/p99.9 and the ratio of each
peer's p50 to shmplane's:

- ``ping``: a 64-byte message there and back (round trip, µs): shmplane channels (one
  each way, adaptive waiting), ``multiprocessing.Pipe``, and if installed pyzmq PAIR
  over ``ipc://`` and faster-fifo queues.
- ``array``: an 8 MB float64 array one way, acknowledged (ms): shmplane with one copy
  in and a view out (``recv(copy=False)``), shmplane with a copy out too, pickle-5 over
  a ``Pipe``, ``multiprocessing.shared_memory`` with one copy in and a view out.

The repository's ``benches/python`` scripts measure more (wakeups, many producers,
subscribers, lists, slots, RPC) and pin CPUs; this is the five-second version.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import time
from collections.abc import Callable
from typing import Any

_CTX = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context("spawn")


def _percentiles(xs: list[float]) -> tuple[float, float, float]:
    s = sorted(xs)

    def at(q: float) -> float:
        return s[min(len(s) - 1, int(q * len(s)))]

    return at(0.5), at(0.99), at(0.999)


# ------------------------------------------------------------------ ping (64 bytes)


def _echo_shmplane(rx: Any, tx: Any) -> None:
    with rx, tx:
        while True:
            m = rx.recv_bytes(timeout=30)
            if m == b"":
                return
            tx.send_bytes(m)


def _ping_shmplane(n: int) -> list[float]:
    import shmplane

    a_tx, a_rx = shmplane.channel(1 << 16)
    b_tx, b_rx = shmplane.channel(1 << 16)
    p = _CTX.Process(target=_echo_shmplane, args=(a_rx, b_tx), daemon=True)
    p.start()
    a_rx.close()
    b_tx.close()
    msg = b"x" * 64
    out = []
    with a_tx, b_rx:
        for i in range(n):
            t = time.perf_counter_ns()
            a_tx.send_bytes(msg)
            b_rx.recv_bytes(timeout=30)
            if i >= n // 10:
                out.append((time.perf_counter_ns() - t) / 1e3)
        a_tx.send_bytes(b"")
    p.join(30)
    return out


def _echo_pipe(conn: Any) -> None:
    while True:
        m = conn.recv_bytes()
        if not m:
            return
        conn.send_bytes(m)


def _ping_pipe(n: int) -> list[float]:
    a, b = _CTX.Pipe()
    p = _CTX.Process(target=_echo_pipe, args=(b,), daemon=True)
    p.start()
    msg = b"x" * 64
    out = []
    for i in range(n):
        t = time.perf_counter_ns()
        a.send_bytes(msg)
        a.recv_bytes()
        if i >= n // 10:
            out.append((time.perf_counter_ns() - t) / 1e3)
    a.send_bytes(b"")
    p.join(30)
    return out


def _echo_zmq(addr: str) -> None:
    import zmq  # type: ignore[import-not-found,unused-ignore]

    s: Any = zmq.Context.instance().socket(zmq.PAIR)
    s.connect(addr)
    while True:
        m = s.recv()
        if not m:
            break
        s.send(m)
    s.close(linger=0)


def _ping_zmq(n: int) -> list[float]:
    import zmq  # type: ignore[import-not-found,unused-ignore]

    addr = f"ipc:///tmp/shmplane-bench-{os.getpid()}"
    s: Any = zmq.Context.instance().socket(zmq.PAIR)
    s.bind(addr)
    p = _CTX.Process(target=_echo_zmq, args=(addr,), daemon=True)
    p.start()
    msg = b"x" * 64
    out = []
    try:
        for i in range(n):
            t = time.perf_counter_ns()
            s.send(msg)
            s.recv()
            if i >= n // 10:
                out.append((time.perf_counter_ns() - t) / 1e3)
        s.send(b"")
        p.join(30)
    finally:
        s.close(linger=0)
    return out


def _echo_ff(q_in: Any, q_out: Any) -> None:
    while True:
        m = q_in.get(timeout=30)
        if m == b"":
            return
        q_out.put(m)


def _ping_faster_fifo(n: int) -> list[float]:
    from faster_fifo import Queue  # type: ignore[import-not-found,unused-ignore]

    q_in, q_out = Queue(1 << 16), Queue(1 << 16)
    p = _CTX.Process(target=_echo_ff, args=(q_in, q_out), daemon=True)
    p.start()
    msg = b"x" * 64
    out = []
    for i in range(n):
        t = time.perf_counter_ns()
        q_in.put(msg)
        q_out.get(timeout=30)
        if i >= n // 10:
            out.append((time.perf_counter_ns() - t) / 1e3)
    q_in.put(b"")
    p.join(30)
    return out


# ------------------------------------------------------------- array (8 MB, one way)


def _sink_shmplane(rx: Any, ack: Any, copy: bool) -> None:
    with rx, ack:
        while True:
            a = rx.recv(timeout=30, copy=copy)
            if a is None:
                return
            del a  # a view gives its ring space back here
            ack.send_bytes(b"k")


def _array_shmplane_view(n: int, arr: Any) -> list[float]:
    return _array_shmplane(n, arr, copy=False)


def _array_shmplane(n: int, arr: Any, copy: bool = True) -> list[float]:
    import shmplane

    # A message up to a quarter of the ring travels as one record, which a view can
    # show in place (larger ones arrive in chunks, by copy): 64 MiB for 8 MB.
    tx, rx = shmplane.channel(64 << 20)
    ack_tx, ack_rx = shmplane.channel(4096)
    p = _CTX.Process(target=_sink_shmplane, args=(rx, ack_tx, copy), daemon=True)
    p.start()
    rx.close()
    ack_tx.close()
    out = []
    with tx, ack_rx:
        for i in range(n):
            t = time.perf_counter_ns()
            tx.send(arr)
            ack_rx.recv_bytes(timeout=30)
            if i >= 1:
                out.append((time.perf_counter_ns() - t) / 1e6)
        tx.send(None)
    p.join(30)
    return out


def _sink_pipe(conn: Any) -> None:
    while True:
        header = conn.recv_bytes()
        if header == b"stop":
            return
        buf = conn.recv_bytes()
        pickle.loads(header, buffers=[buf])
        conn.send_bytes(b"k")


def _array_pickle_pipe(n: int, arr: Any) -> list[float]:
    a, b = _CTX.Pipe()
    p = _CTX.Process(target=_sink_pipe, args=(b,), daemon=True)
    p.start()
    out = []
    for i in range(n):
        t = time.perf_counter_ns()
        bufs: list[pickle.PickleBuffer] = []
        header = pickle.dumps(arr, protocol=5, buffer_callback=bufs.append)
        a.send_bytes(header)
        a.send_bytes(bufs[0].raw())
        a.recv_bytes()
        if i >= 1:
            out.append((time.perf_counter_ns() - t) / 1e6)
    a.send_bytes(b"stop")
    p.join(30)
    return out


def _sink_shared_memory(name: str, nbytes: int, conn: Any) -> None:
    import numpy as np
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(name=name)
    try:
        while conn.recv_bytes() == b"go":
            view = np.ndarray((nbytes // 8,), dtype=np.float64, buffer=shm.buf)
            del view
            conn.send_bytes(b"k")
    finally:
        shm.close()


def _array_shared_memory(n: int, arr: Any) -> list[float]:
    import numpy as np
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(create=True, size=arr.nbytes)
    a, b = _CTX.Pipe()
    p = _CTX.Process(target=_sink_shared_memory, args=(shm.name, arr.nbytes, b), daemon=True)
    p.start()
    dst = np.ndarray(arr.shape, dtype=arr.dtype, buffer=shm.buf)
    out = []
    try:
        for i in range(n):
            t = time.perf_counter_ns()
            np.copyto(dst, arr)
            a.send_bytes(b"go")
            a.recv_bytes()
            if i >= 1:
                out.append((time.perf_counter_ns() - t) / 1e6)
        a.send_bytes(b"stop")
        p.join(30)
    finally:
        del dst
        shm.close()
        shm.unlink()
    return out


# --------------------------------------------------------------------------- run


def _installed(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def run(quick: bool = False, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run both measurements; returns {"ping": {...}, "array": {...}} with, per
    subject, ``p50``, ``p99``, ``p999`` (µs for ping, ms for array), ``n`` and
    ``ratio`` (its p50 over shmplane's), or ``skipped`` with the reason."""
    say = progress or (lambda s: None)
    n_ping = 2_000 if quick else 20_000
    n_array = 10 if quick else 60
    results: dict[str, Any] = {"ping": {}, "array": {}}
    pings: list[tuple[str, Callable[[int], list[float]], str | None]] = [
        ("shmplane", _ping_shmplane, None),
        ("multiprocessing.Pipe", _ping_pipe, None),
        ("pyzmq PAIR ipc", _ping_zmq, "zmq"),
        ("faster-fifo", _ping_faster_fifo, "faster_fifo"),
    ]
    for label, fn, module in pings:
        if module is not None and not _installed(module):
            results["ping"][label] = {"skipped": f"{module} not installed"}
            continue
        say(f"ping: {label}")
        results["ping"][label] = _summary(fn(n_ping))
    if _installed("numpy"):
        import numpy as np

        arr = np.random.default_rng(0).random(1 << 20)  # 8 MB
        arrays: list[tuple[str, Callable[[int, Any], list[float]]]] = [
            ("shmplane", _array_shmplane_view),
            ("shmplane, copy out", _array_shmplane),
            ("pickle-5 over a Pipe", _array_pickle_pipe),
            ("shared_memory copy + view", _array_shared_memory),
        ]
        for label, afn in arrays:
            say(f"array: {label}")
            results["array"][label] = _summary(afn(n_array, arr))
    else:
        results["array"]["shmplane"] = {"skipped": "numpy not installed"}
    for group in results.values():
        base = group.get("shmplane", {}).get("p50")
        for r in group.values():
            if "p50" in r and base:
                r["ratio"] = r["p50"] / base
    return results


def _summary(xs: list[float]) -> dict[str, Any]:
    p50, p99, p999 = _percentiles(xs)
    return {"p50": p50, "p99": p99, "p999": p999, "n": len(xs)}


def format_table(results: dict[str, Any]) -> str:
    """The results as two text tables."""
    lines = []
    for group, unit, title in (("ping", "µs", "64-byte round trip"), ("array", "ms", "8 MB float64 array, one way + ack (shmplane: copy in, view out)")):
        rows = results.get(group, {})
        if not rows:
            continue
        lines.append(f"{title} ({unit}; ratio = p50 / shmplane's p50)")
        lines.append(f"  {'':<28}{'p50':>10}{'p99':>10}{'p99.9':>10}{'ratio':>9}")
        for label, r in rows.items():
            if "skipped" in r:
                lines.append(f"  {label:<28}  skipped: {r['skipped']}")
                continue
            ratio = f"{r['ratio']:.2f}x" if "ratio" in r else ""
            lines.append(f"  {label:<28}{r['p50']:>10.2f}{r['p99']:>10.2f}{r['p999']:>10.2f}{ratio:>9}")
        lines.append("")
    return "\n".join(lines)
