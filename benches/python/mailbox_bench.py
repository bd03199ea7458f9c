"""Mailbox (many producers, one consumer): shmplane next to its peers, in one run.

Two workloads (``--workloads``):

``empty``
    The ``check_pause()`` case: the cost of asking an empty queue "is there a
    message?", as ``timeit`` statement strings that include the attribute lookup:
    ``mb.pending()`` against ``queue.SimpleQueue().empty()`` (a C method returning a
    bool: the yardstick, target ratio <= 1.2x), ``multiprocessing.Queue().empty()``,
    ``faster_fifo.Queue().empty()`` and a zmq PULL socket's ``poll(0)``, plus
    shmplane's own ``mb.poll(0)`` and ``mb.pending()`` with a message waiting. Each
    repeat times one candidate for about ``--empty-repeat-ms`` (a calibrated loop
    count); the candidates take turns repeat by repeat, in a rotating order, so that
    this noisy VM's drift hits all alike. Figures are ns per call of each repeat
    (timeit cannot time a 15 ns call by itself): percentiles over all repeats, the
    median per round, and the ratio to SimpleQueue.empty of the same repeat.
``mpsc``
    N producers -> 1 consumer (N from ``--producers``), 64-byte ``bytes`` messages.
    Each producer is a process (``spawn``) that opens its end, reports ready and
    waits on a shared Event, so that all start together; it then sends up to
    ``--messages`` messages or until ``--budget-s`` has passed (slow peers send
    fewer), then an end marker, and keeps its end open until the consumer has
    everything (a zmq PUSH that disconnects early can take messages still queued at
    the PULL end with it: libzmq issue 1264). Each message carries the producer's
    ``time.perf_counter_ns()`` (CLOCK_MONOTONIC, system-wide); the consumer (this
    process) receives everything and reports msg/s from its first receive to its
    last, and the one-way latency of every message (its receive time minus the
    stamp). Producers run flat out, so that latency is mostly time spent queued
    behind the backlog (bounded by each transport's buffer), not a wake-up latency.
    ``--no-latency`` drops the per-message stamp arithmetic from the consumer loop.

Transports (consumer side; ``--only``/``--skip`` select by name or name prefix):

``shmplane``        ``mb.recv(timeout)`` in a loop: what users write (the main line).
``shmplane-drain``  ``mb.try_recv()`` while ``mb.pending()``, else ``mb.recv(timeout)``.
``shmplane-many``   batches: each producer ``send_many`` 64 stamped messages at a time,
                    the consumer ``mb.recv_many(4096, timeout)``.
``shmplane-channel`` not a mailbox: one ``shmplane.channel`` whose Sender is pickled to
                    all N producers (copies take turns, one ring): what the mailbox's
                    lane per producer buys; for N=1 the SPSC baseline.
``mp-queue``        ``multiprocessing.Queue(maxsize=1024)``: ``put``/``get``.
``faster-fifo``     ``faster_fifo.Queue(1 MB)``: ``put``/``get``.
``faster-fifo-many`` batches as ``shmplane-many``: ``put_many`` of 64, ``get_many``.
``zmq``             N PUSH sockets -> 1 PULL over ``ipc://`` in a temporary directory.

Every workload runs ``--rounds`` times, the transports interleaved within a round in
a rotating order; tables show the median across rounds and the spread (min-max).

Watchdog: every wait of this process has a timeout. The consumer's receives carry the
transport's own timeout (``RECV_TIMEOUT_S``), except ``multiprocessing.Queue.get``,
whose timed form adds a ``poll`` system call per message: there a timer thread puts an
abort marker into the queue if the trial overruns. Producers are joined with a
timeout, then terminated, then killed. Optional peers (pyzmq, faster-fifo) are skipped
with a note when not installed.

``--plot [DIR]`` (matplotlib installed) writes into DIR (default ``benches/results/``)
``mailbox-mpsc-msgs.png``, the ``mpsc`` msg/s as bars, a group per producer count, a
whisker over the rounds (min-max), and ``mailbox-empty-check.png``, the ns per empty
check of every candidate (median of rounds, whisker min-max): both tables' figures that
compare at a glance. The latencies are percentiles only (not kept per message), so
there are no CDFs here.

Run ``ci/bench-mailbox.sh`` (installs the peers), or this file with the venv's python.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import importlib
import importlib.util
import json
import math
import multiprocessing
import os
import platform
import queue
import resource
import shlex
import shutil
import statistics
import struct
import sys
import tempfile
import threading
import time
import timeit
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, TypedDict

import plots  # benches/python/plots.py: optional pictures and progress bars
import shmplane
from wakeup import _child, _expect, _stop  # the same child plumbing as the wake-up bench

_CTX = multiprocessing.get_context("spawn")

RECV_TIMEOUT_S = 20.0
"""Timeout of every blocking receive/send (a hang guard only)."""

START_TIMEOUT_S = 60.0
"""Longest the parent waits for a producer's ready signal (spawn on 2 cores is slow)."""

JOIN_TIMEOUT_S = 5.0
"""Longest the parent waits for a producer to exit before terminating it."""


MSG_SIZE = 64
_MSG = struct.Struct(f"=q{MSG_SIZE - 8}x")  # the stamp, then zero padding to 64 bytes
_STAMP = struct.Struct("=q")
_END = b"end!"  # a producer's last message (not 64 bytes long: the cheap test)
_ABORT = b"abort"  # the watchdog's marker (multiprocessing.Queue only)

LANE_CAPACITY = 1 << 16  # shmplane: bytes per producer lane
FF_BYTES = 1_000_000  # faster_fifo: shared buffer size
MPQ_MAXSIZE = 1024  # multiprocessing.Queue: bounded, so that producers feel back-pressure
FF_BATCH = 4096  # faster-fifo-many, shmplane-many: most messages per get_many / recv_many
SEND_BATCH = 64  # *-many producers: messages per send_many / put_many
LAT_STRIDE = 8  # *-many consumers: the latency of every 8th message is kept


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _optional(module: str) -> Any:
    """Import an optional peer's module (untyped: some ship no stubs)."""
    return importlib.import_module(module)


# --------------------------------------------------------------------------- statistics


class Pcts(TypedDict):
    """Nearest-rank percentiles (never a mean) of a sample, in its unit."""

    n: int
    p50: float
    p99: float
    p999: float
    min: float
    max: float


def percentiles(values: Sequence[float] | array.array[int], scale: float = 1.0) -> Pcts:
    """Nearest-rank p50/p99/p99.9 (and min/max) of ``values``, divided by ``scale``."""
    n = len(values)
    if not n:
        raise ValueError("no samples")
    try:
        import numpy as np

        s: Any = np.sort(np.asarray(values))
    except ImportError:
        s = sorted(values)

    def pct(q: float) -> float:
        return float(s[max(0, math.ceil(q * n) - 1)]) / scale

    return Pcts(
        n=n,
        p50=pct(0.50),
        p99=pct(0.99),
        p999=pct(0.999),
        min=float(s[0]) / scale,
        max=float(s[-1]) / scale,
    )


def _median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else math.nan


def _ratio(num: float | None, den: float | None) -> str:
    if num is None or den is None or not den or math.isnan(num) or math.isnan(den):
        return "-"
    r = num / den
    return f"{r:.2f}x" if r >= 0.1 else f"{r:.2g}x"


def format_table(header: Sequence[str], lines: Iterable[Sequence[str]]) -> str:
    rows = [tuple(header), *(tuple(line) for line in lines)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    )


Row = dict[str, Any]


def _selected(name: str, only: Sequence[str], skip: Sequence[str]) -> bool:
    def match(patterns: Sequence[str]) -> bool:
        return any(name == p or name.startswith(p + "-") for p in patterns)

    return (not only or match(only)) and not match(skip)


# --------------------------------------------------------------------------- empty check


@dataclass
class Probe:
    """One "is there a message?" candidate: a timeit statement and its globals."""

    name: str
    stmt: str
    env: dict[str, Any]
    transport: str  # the mpsc transport name that --only/--skip select it by
    number: int = 0  # loop count per repeat (calibrated)
    ns: list[list[float]] = field(default_factory=list)  # [round][repeat] ns/call
    ratio: list[list[float]] = field(default_factory=list)  # [round][repeat] x base


BASE_PROBE = "SimpleQueue.empty"


def _make_probes(
    args: argparse.Namespace, stack: contextlib.ExitStack, notes: list[str]
) -> list[Probe]:
    """The candidates, each on an empty queue made here (released by ``stack``)."""
    mb = shmplane.mailbox(capacity=LANE_CAPACITY, policy=args.policy, spin_us=args.spin_us)
    stack.callback(mb.close)
    tx = mb.sender()  # a realistic mailbox: one producer attached, nothing sent
    stack.callback(tx.close)
    full = shmplane.mailbox(capacity=LANE_CAPACITY, policy=args.policy, spin_us=args.spin_us)
    stack.callback(full.close)
    ftx = full.sender()
    stack.callback(ftx.close)
    ftx.send(bytes(MSG_SIZE), timeout=RECV_TIMEOUT_S)
    if not full.pending():
        raise RuntimeError("mb.pending() is False with a message waiting")
    sq: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    mpq = _CTX.Queue()
    stack.callback(mpq.cancel_join_thread)
    stack.callback(mpq.close)
    probes = [
        Probe(BASE_PROBE, "q.empty()", {"q": sq}, ""),
        Probe("shmplane pending", "mb.pending()", {"mb": mb}, "shmplane"),
        Probe("shmplane pending (1 waiting)", "mb.pending()", {"mb": full}, "shmplane"),
        Probe("shmplane poll(0)", "mb.poll(0)", {"mb": mb}, "shmplane"),
        Probe("mp.Queue.empty", "q.empty()", {"q": mpq}, "mp-queue"),
    ]
    if _have("faster_fifo"):
        ff = _optional("faster_fifo")
        probes.append(Probe(
                "faster_fifo.empty", "q.empty()", {"q": ff.Queue(FF_BYTES)}, "faster-fifo"
            ))
    else:
        notes.append("empty check: faster-fifo skipped, faster_fifo is not installed")
    if _have("zmq"):
        zmq = _optional("zmq")
        directory = tempfile.mkdtemp(prefix="shmplane-mailbox-zmq-")
        stack.callback(shutil.rmtree, directory, ignore_errors=True)
        ctx = zmq.Context()
        stack.callback(ctx.term)
        sock = ctx.socket(zmq.PULL)
        stack.callback(sock.close, 0)
        sock.bind(f"ipc://{directory}/empty")
        probes.append(Probe("zmq PULL poll(0)", "s.poll(0)", {"s": sock}, "zmq"))
    else:
        notes.append("empty check: zmq skipped, pyzmq is not installed")
    return [
        p
        for p in probes
        if p.name == BASE_PROBE or _selected(p.transport, args.only, args.skip)
    ]


def _calibrate(p: Probe, repeat_ns: float) -> None:
    timer = timeit.Timer(p.stmt, globals=p.env)
    timer.timeit(1000)  # warm up
    per_call = timer.timeit(2000) / 2000 * 1e9
    p.number = max(100, int(repeat_ns / max(per_call, 1.0)))


def run_empty(args: argparse.Namespace, notes: list[str]) -> list[Row]:
    with contextlib.ExitStack() as stack:
        probes = _make_probes(args, stack, notes)
        timers = [timeit.Timer(p.stmt, globals=p.env) for p in probes]
        for p in probes:
            _calibrate(p, args.empty_repeat_ms * 1e6)
        base = probes[0]
        for _ in range(args.rounds):
            for p in probes:
                p.ns.append([])
                p.ratio.append([])
            for rep in range(args.empty_repeats):
                k = rep % len(probes)  # rotate who goes first
                order = list(range(len(probes)))[k:] + list(range(len(probes)))[:k]
                got = [0.0] * len(probes)
                for i in order:
                    got[i] = timers[i].timeit(probes[i].number) / probes[i].number * 1e9
                for i, p in enumerate(probes):
                    p.ns[-1].append(got[i])
                    p.ratio[-1].append(got[i] / got[0])
        rows = []
        for p in probes:
            pooled = [x for r in p.ns for x in r]
            round_medians = [_median(r) for r in p.ns]
            round_ratios = [_median(r) for r in p.ratio]
            rows.append(
                {
                    "name": p.name,
                    "stmt": p.stmt,
                    "number": p.number,
                    "ns": percentiles(pooled),
                    "round_median_ns": round_medians,
                    "median_ns": _median(round_medians),
                    "round_ratio": round_ratios,
                    "ratio": _median(round_ratios) if p is not base else 1.0,
                }
            )
        return rows


def empty_table(rows: Sequence[Row]) -> str:
    lines = []
    for r in rows:
        s = r["ns"]
        rr = r["round_ratio"]
        lines.append(
            [
                r["name"],
                r["stmt"],
                f"{s['p50']:.1f}",
                f"{s['p99']:.1f}",
                f"{s['p999']:.1f}",
                f"{r['median_ns']:.1f}",
                f"{min(r['round_median_ns']):.1f}-{max(r['round_median_ns']):.1f}",
                f"{r['ratio']:.2f}x",
                f"{min(rr):.2f}-{max(rr):.2f}",
            ]
        )
    return format_table(
        [
            "candidate",
            "statement",
            "p50 ns",
            "p99 ns",
            "p99.9 ns",
            "median ns",
            "rounds",
            "x SimpleQ",
            "rounds",
        ],
        lines,
    )


# --------------------------------------------------------------------------- producers


@dataclass
class ProdSpec:
    """What a producer child gets: the transport kind and its end (a handle, or a
    name / address to open), plus the shmplane wait policy to set on it."""

    kind: str
    obj: Any
    policy: str | None = None
    spin_us: float = 20.0
    batch: int = 0  # > 0: send in batches of this many (send_many / put_many)


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _producer(
    ctrl: Connection,
    spec: ProdSpec,
    start: Any,  # a multiprocessing Event
    n_msgs: int,
    budget_s: float,
) -> None:
    """Send up to ``n_msgs`` stamped 64-byte messages, for at most ``budget_s`` once
    ``start`` is set, then the end marker; report how many were sent."""
    pc = time.perf_counter_ns
    pack = _MSG.pack
    kind = spec.kind
    sent = 0
    closer: Callable[[], object]
    if kind == "shmplane":
        tx: shmplane.Sender = (
            shmplane.Sender.open(spec.obj) if isinstance(spec.obj, str) else spec.obj
        )
        if spec.policy is not None:
            tx.set_policy(spec.policy, spec.spin_us)
        closer, info = tx.close, tx.policy
    elif kind in ("mpq", "ff"):
        q = spec.obj
        closer, info = (lambda: None), ""
    elif kind == "zmq":
        zmq = _optional("zmq")
        zctx = zmq.Context()
        sock = zctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDTIMEO, int(RECV_TIMEOUT_S * 1000))
        sock.connect(spec.obj)

        def closer() -> None:
            sock.close(linger=int(RECV_TIMEOUT_S * 1000))  # deliver the end marker
            zctx.term()

        info = ""
    else:
        raise ValueError(f"unknown kind {kind!r}")
    try:
        ctrl.send(("ready", info))
        if not start.wait(START_TIMEOUT_S):
            raise TimeoutError("no start signal from the parent")
        cpu0 = _cpu_s()
        deadline = pc() + int(budget_s * 1e9)
        # One loop per kind, each the transport's natural call, no extra indirection.
        if spec.batch:
            # Batches of stamped messages, each stamped as it is made.
            many = tx.send_many if kind == "shmplane" else q.put_many
            timeout = (RECV_TIMEOUT_S,) if kind == "shmplane" else (True, RECV_TIMEOUT_S)
            sent = 0
            while sent < n_msgs:
                now = pc()
                if now >= deadline:
                    break
                k = min(spec.batch, n_msgs - sent)
                many([pack(pc()) for _ in range(k)], *timeout)
                sent += k
            many([_END], *timeout)
        elif kind == "shmplane":
            send = tx.send
            for sent in range(n_msgs):  # noqa: B007
                now = pc()
                if now >= deadline:
                    break
                send(pack(now), RECV_TIMEOUT_S)
            else:
                sent = n_msgs
            send(_END, RECV_TIMEOUT_S)
        elif kind in ("mpq", "ff"):
            put = q.put
            for sent in range(n_msgs):  # noqa: B007
                now = pc()
                if now >= deadline:
                    break
                put(pack(now), True, RECV_TIMEOUT_S)
            else:
                sent = n_msgs
            put(_END, True, RECV_TIMEOUT_S)
        else:
            zsend = sock.send
            for sent in range(n_msgs):  # noqa: B007
                now = pc()
                if now >= deadline:
                    break
                zsend(pack(now))
            else:
                sent = n_msgs
            zsend(_END)
        ctrl.send(("ok", {"sent": sent, "cpu_s": _cpu_s() - cpu0}))
        # Close only once the consumer has everything: a zmq PUSH that disconnects
        # can take messages still queued at the PULL end with it (libzmq #1264).
        if ctrl.poll(START_TIMEOUT_S):
            ctrl.recv()
    finally:
        closer()


# --------------------------------------------------------------------------- consumer


def _end(m: Any) -> int:
    """A message that is not 64 bytes: a producer's end marker, or the watchdog's."""
    if m == _END:
        return 1
    if m == _ABORT:
        raise TimeoutError("watchdog: the trial overran its time limit")
    raise RuntimeError(f"unexpected message {m!r:.60}")


@dataclass
class Got:
    """What a consumer loop saw: data messages, first/last receive times (ns)."""

    n: int
    t0: int
    t1: int
    spurious: int = 0  # shmplane-drain: pending() true, then try_recv raised Empty


def consume_single(
    recv: Callable[[Any], Any], arg: Any, n_prod: int, lat: array.array[int] | None
) -> Got:
    """``recv(arg)`` until every producer's end marker came."""
    pc = time.perf_counter_ns
    ends = 0
    m = recv(arg)  # the first message starts the clock
    t0 = t1 = pc()
    if lat is None:
        n = 0
        if len(m) == MSG_SIZE:
            n += 1
        else:
            ends += _end(m)
        while ends < n_prod:
            m = recv(arg)
            if len(m) == MSG_SIZE:
                n += 1
            else:
                ends += _end(m)
        return Got(n, t0, pc())
    unpack = _STAMP.unpack_from
    append = lat.append
    if len(m) == MSG_SIZE:
        append(t0 - unpack(m)[0])
    else:
        ends += _end(m)
    while ends < n_prod:
        m = recv(arg)
        now = pc()
        if len(m) == MSG_SIZE:
            append(now - unpack(m)[0])
            t1 = now
        else:
            ends += _end(m)
    return Got(len(lat), t0, t1)


def consume_drain(mb: Any, n_prod: int, lat: array.array[int] | None) -> Got:
    """shmplane: ``try_recv`` while ``pending()``, else a blocking ``recv``."""
    pc = time.perf_counter_ns
    pending, try_recv, recv = mb.pending, mb.try_recv, mb.recv
    empty = shmplane.Empty
    ends = n = spurious = 0
    t0 = t1 = 0
    unpack = _STAMP.unpack_from
    append = lat.append if lat is not None else None
    while ends < n_prod:
        if pending():
            try:
                m = try_recv()
            except empty:
                spurious += 1
                m = recv(RECV_TIMEOUT_S)
        else:
            m = recv(RECV_TIMEOUT_S)
        now = pc()
        if not t0:
            t0 = now
        if len(m) == MSG_SIZE:
            n += 1
            if append is not None:
                append(now - unpack(m)[0])
            t1 = now
        else:
            ends += _end(m)
    return Got(n, t0, t1 if append is not None else pc(), spurious)


def consume_batch(
    get_many: Callable[[], list[Any]], n_prod: int, lat: array.array[int] | None
) -> Got:
    """``get_many()`` (faster_fifo's, or shmplane's ``recv_many``) until every
    producer's end marker came: one receive time per batch. The batch is counted and
    checked with C-speed list methods (a per-message Python loop would cost as much
    as the transport); the latency of every ``LAT_STRIDE``-th message is kept."""
    pc = time.perf_counter_ns
    unpack = _STAMP.unpack_from
    ends = n = 0
    t0 = t1 = 0
    while ends < n_prod:
        batch = get_many()
        now = pc()
        if not t0:
            t0 = now
        k = batch.count(_END)
        if batch.count(_ABORT):
            _end(_ABORT)
        if sum(map(len, batch)) != MSG_SIZE * (len(batch) - k) + len(_END) * k:
            bad = next(m for m in batch if len(m) != MSG_SIZE and m != _END)
            _end(bad)
        ends += k
        if len(batch) > k:
            n += len(batch) - k
            t1 = now
            if lat is not None:
                for m in batch[::LAT_STRIDE]:
                    if len(m) == MSG_SIZE:
                        lat.append(now - unpack(m)[0])
    return Got(n, t0, t1 if lat is not None else pc())


# --------------------------------------------------------------------------- trials


@dataclass(frozen=True)
class Transport:
    name: str
    kind: str  # shmplane, mpq, ff, zmq
    mode: str = "single"  # consumer loop: single, drain, batch
    needs: tuple[str, ...] = ()  # optional modules

    def missing(self) -> list[str]:
        return [m for m in self.needs if not _have(m)]


TRANSPORTS = (
    Transport("shmplane", "shmplane"),
    Transport("shmplane-drain", "shmplane", "drain"),
    Transport("shmplane-many", "shmplane", "batch"),
    Transport("shmplane-channel", "channel"),
    Transport("mp-queue", "mpq"),
    Transport("faster-fifo", "ff", needs=("faster_fifo",)),
    Transport("faster-fifo-many", "ff", "batch", needs=("faster_fifo",)),
    Transport("zmq", "zmq", needs=("zmq",)),
)


def _check_shm_leak(path: str | None) -> None:
    """Called once every end is closed: the segment must be gone."""
    if path and os.path.exists(path):
        print(f"  warning: leaked segment {path}; removing it", file=sys.stderr)
        with contextlib.suppress(OSError):
            os.unlink(path)


def _start_child(
    stack: contextlib.ExitStack, name: str, target: Callable[..., object], *args: object
) -> tuple[BaseProcess, Connection]:
    conn, child_conn = _CTX.Pipe()
    stack.callback(conn.close)
    proc = _CTX.Process(
        target=_child, args=(child_conn, target, *args), name=name, daemon=True
    )
    proc.start()
    stack.callback(_stop, proc)
    child_conn.close()
    return proc, conn


def run_trial(t: Transport, n_prod: int, args: argparse.Namespace) -> Row:
    """One N->1 run of transport ``t``: spawn, gate, consume, check, summarize."""
    lat: array.array[int] | None = None if args.no_latency else array.array("q")
    release: list[Callable[[], object]] = []
    with contextlib.ExitStack() as stack:
        specs: list[ProdSpec]
        consume: Callable[[], Got]
        info = ""
        batch = SEND_BATCH if t.mode == "batch" else 0
        if t.kind == "shmplane":
            mb = shmplane.mailbox(
                capacity=LANE_CAPACITY,
                max_senders=max(shmplane.DEFAULT_MAX_SENDERS, n_prod),
                policy=args.policy,
                spin_us=args.spin_us,
            )
            stack.callback(_check_shm_leak, mb.path)  # runs last: after every close
            stack.callback(mb.close)
            info = mb.policy
            if args.join == "open":
                specs = [
                    ProdSpec("shmplane", mb.name, args.policy, args.spin_us, batch)
                    for _ in range(n_prod)
                ]
            else:
                senders = [mb.sender() for _ in range(n_prod)]
                for s in senders:
                    stack.callback(s.close)
                    release.append(s.close)
                specs = [
                    ProdSpec("shmplane", s, args.policy, args.spin_us, batch)
                    for s in senders
                ]
            if t.mode == "batch":
                consume = lambda: consume_batch(  # noqa: E731
                    lambda: mb.recv_many(FF_BATCH, RECV_TIMEOUT_S), n_prod, lat
                )
            elif t.mode == "drain":
                consume = lambda: consume_drain(mb, n_prod, lat)  # noqa: E731
            else:
                consume = lambda: consume_single(mb.recv, RECV_TIMEOUT_S, n_prod, lat)  # noqa: E731
        elif t.kind == "channel":
            ctx_, crx = shmplane.channel(
                capacity=LANE_CAPACITY, policy=args.policy, spin_us=args.spin_us
            )
            stack.callback(_check_shm_leak, crx.path)
            stack.callback(crx.close)
            stack.callback(ctx_.close)
            release.append(ctx_.close)
            info = crx.policy
            specs = [
                ProdSpec("shmplane", ctx_, args.policy, args.spin_us)
                for _ in range(n_prod)
            ]
            consume = lambda: consume_single(crx.recv, RECV_TIMEOUT_S, n_prod, lat)  # noqa: E731
        elif t.kind == "mpq":
            mpq = _CTX.Queue(MPQ_MAXSIZE)
            stack.callback(mpq.cancel_join_thread)
            stack.callback(mpq.close)
            specs = [ProdSpec("mpq", mpq) for _ in range(n_prod)]
            consume = lambda: consume_single(mpq.get, True, n_prod, lat)  # noqa: E731
        elif t.kind == "ff":
            ff = _optional("faster_fifo")
            fq = ff.Queue(FF_BYTES)
            specs = [ProdSpec("ff", fq, batch=batch) for _ in range(n_prod)]
            if t.mode == "batch":
                consume = lambda: consume_batch(  # noqa: E731
                    lambda: fq.get_many(True, RECV_TIMEOUT_S, FF_BATCH), n_prod, lat
                )
            else:
                consume = lambda: consume_single(fq.get, True, n_prod, lat)  # noqa: E731
        elif t.kind == "zmq":
            zmq = _optional("zmq")
            directory = tempfile.mkdtemp(prefix="shmplane-mailbox-zmq-")
            stack.callback(shutil.rmtree, directory, ignore_errors=True)
            address = f"ipc://{directory}/pull"
            zctx = zmq.Context()
            stack.callback(zctx.term)
            pull = zctx.socket(zmq.PULL)
            stack.callback(pull.close, 0)
            pull.setsockopt(zmq.RCVTIMEO, int(RECV_TIMEOUT_S * 1000))
            pull.bind(address)
            specs = [ProdSpec("zmq", address) for _ in range(n_prod)]
            consume = lambda: consume_single(pull.recv, 0, n_prod, lat)  # noqa: E731
        else:
            raise ValueError(f"unknown kind {t.kind!r}")

        start = _CTX.Event()
        kids = [
            _start_child(
                stack, f"{t.name}-p{i}", _producer, spec, start, args.messages, args.budget_s
            )
            for i, spec in enumerate(specs)
        ]
        for proc, conn in kids:
            _expect(proc, conn, "ready", START_TIMEOUT_S)
        for close in release:  # the children hold their copies now
            close()
        limit_s = args.budget_s + RECV_TIMEOUT_S + 10
        watchdog: threading.Timer | None = None
        if t.kind == "mpq":
            watchdog = threading.Timer(limit_s, mpq.put, (_ABORT, True, RECV_TIMEOUT_S))
            watchdog.daemon = True
            watchdog.start()
        start.set()
        try:
            got = consume()
        except (queue.Empty, TimeoutError) as exc:
            raise TimeoutError(f"consumer: {type(exc).__name__} {exc}") from None
        except Exception as exc:
            if t.kind == "zmq" and isinstance(exc, _optional("zmq").Again):
                raise TimeoutError("consumer: zmq receive timed out") from None
            raise
        finally:
            if watchdog is not None:
                watchdog.cancel()
        results = [_expect(proc, conn, "ok", RECV_TIMEOUT_S) for proc, conn in kids]
        for _, conn in kids:  # now they may close
            with contextlib.suppress(OSError):
                conn.send("bye")
    sent = sum(r["sent"] for r in results)
    if got.n != sent:
        raise RuntimeError(f"received {got.n} of {sent} messages")
    wall_s = (got.t1 - got.t0) / 1e9
    row: Row = {
        "name": t.name,
        "producers": n_prod,
        "info": info,
        "received": got.n,
        "sent_per_producer": [r["sent"] for r in results],
        "producer_cpu_s": [r["cpu_s"] for r in results],
        "wall_s": wall_s,
        "msg_per_s": (got.n - 1) / wall_s if wall_s > 0 and got.n > 1 else math.nan,
        "spurious": got.spurious,
    }
    if lat is not None and len(lat):
        row["lat_us"] = percentiles(lat, 1e3)
    return row


def _merge(rows: Sequence[Row]) -> Row:
    """One row per transport from its rounds: medians and spreads; any failure fails."""
    errors = [r["error"] for r in rows if "error" in r]
    name = rows[0]["name"]
    if errors:
        return {"name": name, "error": errors[0], "rounds": list(rows)}
    rates = [r["msg_per_s"] for r in rows]
    merged: Row = {
        "name": name,
        "producers": rows[0]["producers"],
        "msg_per_s": _median(rates),
        "msg_per_s_min": min(rates),
        "msg_per_s_max": max(rates),
        "per_producer_median": _median(
            [statistics.median(r["sent_per_producer"]) for r in rows]
        ),
        "spurious": sum(r["spurious"] for r in rows),
        "rounds": list(rows),
    }
    if all("lat_us" in r for r in rows):
        merged["lat_us"] = {
            k: _median([r["lat_us"][k] for r in rows]) for k in ("p50", "p99", "p999")
        }
        merged["lat_p99_spread"] = (
            min(r["lat_us"]["p99"] for r in rows),
            max(r["lat_us"]["p99"] for r in rows),
        )
    return merged


def mpsc_table(rows: Sequence[Row], with_lat: bool) -> str:
    ok = {r["name"]: r for r in rows if "error" not in r}
    shm = ok["shmplane"]["msg_per_s"] if "shmplane" in ok else None
    header = ["transport", "msg/s", "rounds min-max", "shmplane / this", "msgs/producer"]
    if with_lat:
        header += ["lat p50 us", "p99 us", "p99.9 us"]
    lines = []
    for r in rows:
        if "error" in r:
            lines.append([r["name"], "FAILED", *["-"] * (len(header) - 2)])
            continue
        line = [
            r["name"],
            f"{r['msg_per_s']:,.0f}",
            f"{r['msg_per_s_min'] / 1e3:,.0f}k-{r['msg_per_s_max'] / 1e3:,.0f}k",
            _ratio(shm, r["msg_per_s"]),
            f"{r['per_producer_median']:,.0f}",
        ]
        if with_lat:
            s = r.get("lat_us")
            line += (
                [f"{s['p50']:,.1f}", f"{s['p99']:,.1f}", f"{s['p999']:,.1f}"]
                if s
                else ["-"] * 3
            )
        lines.append(line)
    return format_table(header, lines)


def run_mpsc(
    n_prod: int, args: argparse.Namespace, notes: list[str]
) -> list[Row]:
    transports: list[Transport] = []
    for t in TRANSPORTS:
        if not _selected(t.name, args.only, args.skip):
            continue
        missing = t.missing()
        if missing:
            note = f"{t.name}: skipped, {', '.join(missing)} is not installed"
            if note not in notes:
                print(f"  {note}")
                notes.append(note)
            continue
        transports.append(t)
    per_name: dict[str, list[Row]] = {t.name: [] for t in transports}
    for rnd in plots.progress(range(args.rounds), desc=f"mpsc N={n_prod} rounds"):
        k = rnd % max(1, len(transports))  # rotate who goes first
        for t in transports[k:] + transports[:k]:
            try:
                row = run_trial(t, n_prod, args)
            except Exception as exc:  # one broken transport must not sink the run
                print(f"  {t.name} (N={n_prod}, round {rnd + 1}): FAILED: {exc}",
                      file=sys.stderr)
                row = {"name": t.name, "producers": n_prod, "error": str(exc)}
            row["round"] = rnd + 1
            per_name[t.name].append(row)
            if args.verbose and "error" not in row:
                print(f"    round {rnd + 1} {t.name}: {row['msg_per_s']:,.0f} msg/s")
    return [_merge(rows) for rows in per_name.values() if rows]


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--producers", default="1,4", help="N[,N...]: producer counts (default 1,4)"
    )
    parser.add_argument(
        "--messages", type=int, default=200_000,
        help="most messages per producer per trial (default 200000)",
    )
    parser.add_argument(
        "--budget-s", type=float, default=3.0,
        help="most seconds a producer sends per trial; slow peers send fewer (default 3)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3,
        help="interleaved rounds of every workload (default 3)",
    )
    parser.add_argument(
        "--empty-repeats", type=int, default=40,
        help="empty check: timed repeats per candidate per round (default 40)",
    )
    parser.add_argument(
        "--empty-repeat-ms", type=float, default=2.0,
        help="empty check: length of one repeat (default 2 ms)",
    )
    parser.add_argument(
        "--policy", default="adaptive", choices=("adaptive", "spin", "block"),
        help="shmplane wait policy of the mailbox and its senders (default adaptive)",
    )
    parser.add_argument(
        "--spin-us", type=float, default=20.0, help="shmplane adaptive spin (default 20)"
    )
    parser.add_argument(
        "--join", default="pickle", choices=("pickle", "open"),
        help="shmplane producers get mb.sender() pickled, or Sender.open(mb.name)",
    )
    parser.add_argument(
        "--no-latency", action="store_true",
        help="consumer skips the per-message latency arithmetic",
    )
    parser.add_argument(
        "--workloads", default="empty,mpsc", help="subset of empty,mpsc"
    )
    parser.add_argument(
        "--only", default="", help="NAME[,NAME]: transports (or name prefixes) to run"
    )
    parser.add_argument(
        "--skip", default="", help="NAME[,NAME]: transports (or name prefixes) not to run"
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="smoke run (< ~20 s): 1 round, 50000 messages, 0.5 s budget",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print each trial")
    parser.add_argument("--json", metavar="PATH", help="dump the figures here")
    plots.add_plot_option(parser, "mailbox-mpsc-msgs.png and mailbox-empty-check.png")
    args = parser.parse_args(argv)
    plot_dir = plots.plot_dir(args.plot)
    args.only = [s for s in args.only.split(",") if s]
    args.skip = [s for s in args.skip.split(",") if s]
    try:
        producers = [int(s) for s in args.producers.split(",") if s]
    except ValueError:
        parser.error("--producers takes comma-separated integers")
    if not producers or min(producers) < 1:
        parser.error("--producers: at least one count, each >= 1")
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = set(workloads) - {"empty", "mpsc"}
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    if args.quick:
        args.rounds = 1
        args.messages = min(args.messages, 50_000)
        args.budget_s = min(args.budget_s, 0.5)
        args.empty_repeats = min(args.empty_repeats, 10)
        args.empty_repeat_ms = min(args.empty_repeat_ms, 1.0)
    if args.rounds < 1 or args.messages < 1 or args.empty_repeats < 1:
        parser.error("--rounds, --messages and --empty-repeats must be >= 1")

    notes: list[str] = []
    native = shmplane._shmplane.__file__ or "?"
    built = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.stat(native).st_mtime))
    cpus = os.cpu_count() or 1
    command = shlex.join([sys.executable, *(sys.argv if argv is None else ["mailbox_bench.py", *argv])])
    out: dict[str, Any] = {
        "args": {k: v for k, v in vars(args).items()},
        "command": command,
        "host": {
            "cpus": cpus,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "loadavg_start": os.getloadavg(),
            "shmplane_native": native,
            "shmplane_built": built,
        },
        "notes": notes,
    }
    print(
        f"mailbox bench: {cpus} CPUs, python {sys.version.split()[0]} "
        f"({platform.python_implementation()}), {platform.platform()}"
    )
    print(
        f"load average {os.getloadavg()[0]:.2f} at start, shmplane built {built}, "
        f"policy {args.policy}"
        + (f" (spin {args.spin_us:g} us)" if args.policy == "adaptive" else "")
    )
    print(f"command: {command}")
    if "mpsc" in workloads and max(producers) + 1 > cpus:
        note = (
            f"note: {cpus} CPUs: the N producers and the consumer (N+1 processes) share "
            f"{cpus} cores, so mpsc throughput includes scheduling: a process that "
            "spins or sleeps badly takes time from one that would make progress"
        )
        print(note)
        notes.append(note)

    failed = False
    if "empty" in workloads:
        print(
            f"\nempty check: ns per call incl. attribute lookup (timeit), "
            f"{args.rounds} round(s) x {args.empty_repeats} repeats of "
            f"~{args.empty_repeat_ms:g} ms, candidates interleaved; percentiles over "
            "repeats, median per round; x SimpleQ: median ratio to "
            "SimpleQueue.empty of the same repeat"
        )
        try:
            erows = run_empty(args, notes)
        except Exception as exc:
            print(f"  empty check FAILED: {exc}", file=sys.stderr)
            traceback.print_exc()
            failed = True
        else:
            print(empty_table(erows))
            pend = next((r for r in erows if r["name"] == "shmplane pending"), None)
            if pend is not None:
                verdict = "ok" if pend["ratio"] <= 1.2 else "MISSED"
                print(
                    f"mb.pending() / SimpleQueue.empty(): {pend['ratio']:.2f}x "
                    f"(target <= 1.20x: {verdict}; per round "
                    + ", ".join(f"{x:.2f}" for x in pend["round_ratio"])
                    + ")"
                )
            out["empty"] = erows

    if "mpsc" in workloads:
        out["mpsc"] = {}
        for n_prod in producers:
            print(
                f"\nmpsc N={n_prod}: {n_prod} producer process(es) -> 1 consumer, "
                f"{MSG_SIZE}-byte bytes, up to {args.messages:,} msgs or "
                f"{args.budget_s:g} s per producer, {args.rounds} interleaved round(s); "
                "msg/s first to last receive (median of rounds)"
                + ("" if args.no_latency else "; latency: stamp to receive, queueing included")
            )
            rows = run_mpsc(n_prod, args, notes)
            print(mpsc_table(rows, with_lat=not args.no_latency))
            spur = next((r["spurious"] for r in rows if r["name"] == "shmplane-drain"
                         and "error" not in r), 0)
            if spur:
                print(f"  shmplane-drain: pending() was true but try_recv() raised "
                      f"Empty {spur} time(s)")
            out["mpsc"][str(n_prod)] = rows
            failed |= any("error" in r for r in rows)

    if notes:
        print("\nnotes:")
        for n in notes:
            print(f"  {n}")
    out["host"]["loadavg_end"] = os.getloadavg()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, default=str)
        print(f"\nfigures: {args.json}")
    if plot_dir is not None:
        written = plot_results(out, plot_dir)
        if written:
            print(f"\nplots: {', '.join(str(p) for p in written)}")
    return 1 if failed else 0


def plot_results(out: dict[str, Any], directory: Path) -> list[Path]:
    """``mailbox-mpsc-msgs.png`` and ``mailbox-empty-check.png`` in ``directory`` from
    the figures of the workloads that ran (see the module's docstring)."""
    written = []
    mpsc = {
        f"{n} producer{'s' if n != '1' else ''}": {
            r["name"]: plots.Bar(r["msg_per_s"], r["msg_per_s_min"], r["msg_per_s_max"])
            for r in rows
            if "error" not in r
        }
        for n, rows in out.get("mpsc", {}).items()
    }
    if any(mpsc.values()):
        args = out["args"]
        title = (
            f"mailbox: N producer processes -> 1 consumer, {MSG_SIZE}-byte messages, "
            f"median of {args['rounds']} round(s) (whisker: min-max)"
        )
        written.append(plots.bars(mpsc, title, directory / "mailbox-mpsc-msgs.png",
                                  "msg/s, all producers together (log scale)", log=True))
    if out.get("empty"):
        empty = {
            "an empty queue: is there a message?": {
                r["name"]: plots.Bar(
                    r["median_ns"], min(r["round_median_ns"]), max(r["round_median_ns"])
                )
                for r in out["empty"]
            }
        }
        title = "the empty check: ns per call, attribute lookup included (median of rounds, whisker: min-max)"
        written.append(plots.bars(empty, title, directory / "mailbox-empty-check.png",
                                  "ns per call (log scale)", log=True))
    return written


if __name__ == "__main__":
    sys.exit(main())
