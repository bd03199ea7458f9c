"""Broadcast (one publisher, many subscribers): shmplane next to its peers, in one run.

Two workloads (``--workloads``):

``fanout``
    1 publisher -> N subscribers (N from ``--subscribers``), 64-byte ``bytes``
    messages, every process started with ``spawn``. Subscribers join, report ready and
    wait on a shared Event with the publisher, so that all start together; the
    publisher sends up to ``--messages`` messages or until ``--budget-s`` has passed
    (slow peers send fewer), then an end marker. Each message carries the publisher's
    ``time.perf_counter_ns()`` (CLOCK_MONOTONIC, system-wide); each subscriber
    receives until the marker and reports its msg/s from its first receive to its
    last, and the one-way latency of every message (receive time minus stamp). The
    publisher runs flat out, so latency is mostly time queued behind the backlog
    (bounded by each transport's buffer), not a wake-up latency. Reported: msg/s per
    subscriber (median over subscribers) and in total, latency percentiles over all
    subscribers' messages, and the share of messages a subscriber received (lossy
    transports drop some).
``array``
    An 8 MB float64 ndarray (``--array-mb``) to N subscribers, ``--array-reps``
    times, one at a time (the publisher waits for every subscriber's ack before the
    next). Per array: the time from the publisher's send to the last subscriber's
    ``recv`` returning the array (each subscriber holds its own copy, or with
    ``shmplane-view`` its view), next to one ``np.copyto`` of the same array in this
    process before the runs (the floor: one copy; a broadcast to N subscribers that
    copy out is one copy in and N out, on this machine's cores), and beside it the same
    copy timed between the row's arrays (after the broadcast has flushed the caches).

Transports (``--only``/``--skip`` select by name or prefix):

``shmplane``        ``shmplane.broadcast`` (lossless): ``pub.send`` / ``sub.recv``.
``shmplane-many``   the same broadcast in batches: ``pub.send_many`` of 64 messages (the
                    batch stamped once, when it is made: a stamped message costs ~280
                    ns of Python, 6x what ``send_many`` spends on it),
                    ``sub.recv_many(4096)``; the latency of every 8th message is kept.
                    fanout only.
``shmplane-view``   the same broadcast on a 64 MiB ring (an 8 MB message is one record
                    of at most a quarter of it), subscribers receiving with
                    ``sub.recv(copy=False)``: the array is a read-only view of the ring
                    (no copy out; the subscriber does not read it), dropped before the
                    ack. Each subscriber asks for whole records before it reports ready,
                    and fails the row if an array comes as a copy. array only.
``shmplane-lossy``  ``shmplane.broadcast(lossy=True)``: the publisher never waits; a
                    subscriber that falls a lap behind gets ``LaggedError`` (counted).
``zmq``             PUB -> N SUB over ``ipc://`` (high-water marks off: lossless as
                    long as memory lasts; a short settle after the subscriptions).
``mp-queue``        one ``multiprocessing.Queue(maxsize=1024)`` per subscriber: the
                    publisher puts every message N times (what users do today).
``faster-fifo``     one ``faster_fifo.Queue(1 MB)`` per subscriber, likewise.
``iceoryx2``        publish-subscribe of a 64-byte ctypes payload, no overflow, the
                    publisher retrying until delivered (lossless); subscribers poll
                    ``receive()`` (busy). fanout only.

Every workload runs ``--rounds`` times (fanout: transports interleaved in a rotating
order; array: each transport's rounds in a row);
tables show medians across rounds. Every wait of this process has a timeout;
children are joined, then terminated, then killed. Optional peers are skipped with a
note when not installed. Run ``ci/bench-broadcast.sh`` (installs the peers).

``--plot [DIR]`` (matplotlib installed) writes into DIR (default ``benches/results/``)
``broadcast-fanout-msgs.png``, msg/s per subscriber as bars, a group per subscriber
count (median of rounds, whisker min-max), and ``broadcast-array.png``, the time until
the last subscriber has the array, a group per subscriber count (p50, whisker up to
the p99, medians of rounds), with one ``np.copyto`` as a dashed line. Latencies are
kept as percentiles only, so there are no CDFs here.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import ctypes
import json
import multiprocessing
import os
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plots  # noqa: E402  (benches/python/plots.py: optional pictures and progress bars)
from mailbox_bench import _have, _median, _ratio, _selected, format_table, percentiles  # noqa: E402
from wakeup import _child, _expect, _stop  # noqa: E402  (the child plumbing of the other benches)

CTX = multiprocessing.get_context("spawn")
START_TIMEOUT_S = 60.0
RECV_TIMEOUT_S = 30.0
STAMP = struct.Struct("<q")
END = b"\xff" * 8
MSG_LEN = 64
SEND_BATCH = 64  # shmplane-many: messages per send_many
RECV_BATCH = 4096  # shmplane-many: most messages per recv_many
LAT_STRIDE = 8  # shmplane-many: the latency of every 8th message is kept
_IOX_BUFFER = 256


# ----------------------------------------------------------------- transports


@dataclass
class Spec:
    kind: str
    name: str  # segment name / endpoint / directory
    n: int
    queues: Any = None  # mp-queue / faster-fifo: one per subscriber


class _IoxMsg(ctypes.Structure):
    _fields_ = [("stamp", ctypes.c_int64), ("pad", ctypes.c_uint8 * (MSG_LEN - 8))]


def _iox_service(name: str, n: int) -> tuple[Any, Any, Any]:
    import iceoryx2 as iox2

    iox2.set_log_level(iox2.LogLevel.Error)
    node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
    svc = (
        node.service_builder(iox2.ServiceName.new(name))
        .publish_subscribe(_IoxMsg)
        .enable_safe_overflow(False)
        .subscriber_max_buffer_size(_IOX_BUFFER)
        .max_subscribers(max(n, 2))
        .open_or_create()
    )
    return iox2, node, svc


def make_publisher(spec: Spec, handle: Any = None) -> tuple[Callable[[Any], None], Callable[[], None]]:
    """``(send(obj), close())`` of the publishing side; ``handle``: shmplane's
    Publisher, made by the parent (a pickled copy in a child: copies take turns)."""
    if spec.kind.startswith("shmplane"):
        return handle.send, handle.close
    if spec.kind == "zmq":
        import zmq

        ctx = zmq.Context()
        sock = ctx.socket(zmq.PUB)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.bind(spec.name)

        def close() -> None:
            sock.close(linger=2000)
            ctx.term()

        return sock.send, close
    if spec.kind in ("mp-queue", "faster-fifo"):
        qs = spec.queues

        def send(b: bytes) -> None:
            for q in qs:
                q.put(b, timeout=RECV_TIMEOUT_S)

        return send, lambda: None
    if spec.kind == "iceoryx2":
        iox2, node, svc = _iox_service(spec.name, spec.n)
        publisher = svc.publisher_builder().backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered).create()

        def send_iox(b: bytes) -> None:
            sample = publisher.loan_uninit()
            sample = sample.write_payload(_IoxMsg(STAMP.unpack_from(b)[0]))
            sample.send()

        def close_iox() -> None:
            publisher.delete()

        return send_iox, close_iox
    raise ValueError(spec.kind)


def make_subscriber(spec: Spec, index: int) -> tuple[Callable[[], Any], Callable[[], None]]:
    """``(recv() -> message (or None when a lossy one missed some), close())``."""
    if spec.kind.startswith("shmplane"):
        import shmplane

        sub = shmplane.Subscriber.open(spec.name)
        if spec.kind == "shmplane-view":
            # A first zero-copy receive asks the publisher for whole records (else the
            # first array may come in chunks, received as a copy).
            with contextlib.suppress(shmplane.Empty):
                sub.try_recv(copy=False)

            def recv_view() -> Any:
                m = sub.recv(RECV_TIMEOUT_S, copy=False)
                if m[1].flags.writeable:
                    raise RuntimeError("shmplane-view: an array came as a copy, not a view")
                return m

            return recv_view, sub.close
        if spec.kind == "shmplane-lossy":

            def recv_lossy() -> Any:
                try:
                    return sub.recv(RECV_TIMEOUT_S)
                except shmplane.LaggedError:
                    return None

            return recv_lossy, sub.close
        return (lambda: sub.recv(RECV_TIMEOUT_S)), sub.close
    if spec.kind == "zmq":
        import zmq

        ctx = zmq.Context()
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.RCVTIMEO, int(RECV_TIMEOUT_S * 1000))
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(spec.name)

        def close() -> None:
            sock.close(linger=0)
            ctx.term()

        return sock.recv, close
    if spec.kind in ("mp-queue", "faster-fifo"):
        q = spec.queues[index]
        return (lambda: q.get(timeout=RECV_TIMEOUT_S)), lambda: None
    if spec.kind == "iceoryx2":
        _, node, svc = _iox_service(spec.name, spec.n)
        sub = svc.subscriber_builder().buffer_size(_IOX_BUFFER).create()

        def recv_iox() -> Any:
            deadline = time.monotonic() + RECV_TIMEOUT_S
            while True:
                sample = sub.receive()
                if sample is not None:
                    stamp = sample.payload().contents.stamp
                    sample.delete()
                    return STAMP.pack(stamp)
                if time.monotonic() > deadline:
                    raise TimeoutError("iceoryx2 receive timed out")

        return recv_iox, sub.delete
    raise ValueError(spec.kind)


# ------------------------------------------------------------------- children


def _fan_subscriber_many(conn: Connection, spec: Spec, go: Any, with_lat: bool) -> None:
    """shmplane-many: ``recv_many`` batches until the end marker (the publisher's last
    message, so the last of its batch)."""
    import shmplane

    sub = shmplane.Subscriber.open(spec.name)
    conn.send(("ready", None))
    if not go.wait(START_TIMEOUT_S):
        raise TimeoutError("no start")
    lat = array.array("q")
    count = 0
    first = last = 0
    now = time.perf_counter_ns
    unpack = STAMP.unpack_from
    while True:
        batch = sub.recv_many(RECV_BATCH, RECV_TIMEOUT_S)
        t = now()
        if first == 0:
            first = t
        ended = batch[-1][:8] == END
        n = len(batch) - ended
        if n:
            last = t
            count += n
            if with_lat:
                for m in batch[:n:LAT_STRIDE]:
                    lat.append(t - unpack(m)[0])
        if ended:
            break
    sub.close()
    conn.send(("done", (count, 0, first, last, lat.tobytes())))


def _fan_subscriber(conn: Connection, spec: Spec, index: int, go: Any, with_lat: bool) -> None:
    if spec.kind == "shmplane-many":
        _fan_subscriber_many(conn, spec, go, with_lat)
        return
    recv, close = make_subscriber(spec, index)
    conn.send(("ready", None))
    if not go.wait(START_TIMEOUT_S):
        raise TimeoutError("no start")
    lat = array.array("q")
    count = missed = 0
    first = last = 0
    now = time.perf_counter_ns
    while True:
        m = recv()
        if m is None:
            missed += 1
            continue
        t = now()
        if first == 0:
            first = t
        if m[:8] == END:
            break
        last = t
        count += 1
        if with_lat:
            lat.append(t - STAMP.unpack_from(m)[0])
    close()
    conn.send(("done", (count, missed, first, last, lat.tobytes())))


def _fan_publisher(conn: Connection, spec: Spec, handle: Any, go: Any, messages: int, budget_s: float, settle_s: float) -> None:
    send, close = make_publisher(spec, handle)
    if settle_s:
        time.sleep(settle_s)  # zmq: let the subscriptions reach the publisher
    conn.send(("ready", None))
    if not go.wait(START_TIMEOUT_S):
        raise TimeoutError("no start")
    pad = bytes(MSG_LEN - 8)
    now = time.perf_counter_ns
    deadline = now() + int(budget_s * 1e9)
    sent = 0
    pack = STAMP.pack
    if spec.kind == "shmplane-many":
        send_many = handle.send_many
        while sent < messages and now() <= deadline:
            k = min(SEND_BATCH, messages - sent)
            # One stamp per batch: making a stamped message costs ~280 ns of Python,
            # 6x what send_many spends on it; every message's latency counts from the
            # batch's making (an upper bound).
            send_many([pack(now()) + pad] * k, RECV_TIMEOUT_S)
            sent += k
    while sent < messages and spec.kind != "shmplane-many":
        send(pack(now()) + pad)
        sent += 1
        if sent % 1024 == 0 and now() > deadline:
            break
    send(END + pad)
    close()
    conn.send(("done", sent))


def _array_subscriber(conn: Connection, spec: Spec, index: int, reps: int) -> None:
    recv, close = make_subscriber(spec, index)
    conn.send(("ready", None))
    lat = []
    for _ in range(reps):
        m = recv()
        t = time.perf_counter_ns()
        if spec.kind == "zmq":
            stamp = STAMP.unpack(m)[0]
            arr = np.frombuffer(recv(), dtype=np.float64)
        else:
            stamp, arr = m
        assert arr.shape[0] > 0
        t = time.perf_counter_ns()
        lat.append(t - stamp)
        del m, arr  # shmplane-view: done with it, the ring space goes back before the ack
        conn.send(("got", None))
    close()
    conn.send(("done", lat))


# ----------------------------------------------------------------------- runs


def _setup(kind: str, n: int, tmp: str, tag: str) -> tuple[Spec, Any]:
    """The transport's spec, and shmplane's Publisher (made here; the publishing child
    gets a pickled copy) or None."""
    name = f"bcb-{os.getpid()}-{tag}"
    if kind.startswith("shmplane"):
        import shmplane

        capacity = 64 << 20 if kind == "shmplane-view" else 1 << 20
        pub = shmplane.Publisher.create(name, capacity, lossy=kind == "shmplane-lossy", max_subscribers=max(n, 1))
        return Spec(kind, name, n), pub
    if kind == "zmq":
        return Spec(kind, f"ipc://{tmp}/{name}", n), None
    if kind == "mp-queue":
        qs = [CTX.Queue(maxsize=1024) for _ in range(n)]
        return Spec(kind, name, n, qs), None
    if kind == "faster-fifo":
        import faster_fifo

        qs = [faster_fifo.Queue(1 << 20) for _ in range(n)]
        return Spec(kind, name, n, qs), None
    if kind == "iceoryx2":
        return Spec(kind, name, n), None
    raise ValueError(kind)


def run_fanout(kind: str, n: int, args: argparse.Namespace, tmp: str, tag: str) -> dict[str, Any]:
    spec, handle = _setup(kind, n, tmp, tag)
    go = CTX.Event()
    procs: list[tuple[Any, Connection]] = []
    try:
        for i in range(n):
            a, b = CTX.Pipe()
            p = CTX.Process(target=_child, args=(b, _fan_subscriber, spec, i, go, not args.no_latency), name=f"{kind}-sub{i}", daemon=True)
            p.start()
            b.close()
            procs.append((p, a))
            _expect(p, a, "ready", START_TIMEOUT_S)
        a, b = CTX.Pipe()
        settle = 0.5 if kind == "zmq" else 0.0
        pp = CTX.Process(target=_child, args=(b, _fan_publisher, spec, handle, go, args.messages, args.budget_s, settle), name=f"{kind}-pub", daemon=True)
        pp.start()
        b.close()
        _expect(pp, a, "ready", START_TIMEOUT_S)
        go.set()
        sent = _expect(pp, a, "done", args.budget_s + RECV_TIMEOUT_S + 30)
        results = [_expect(p, c, "done", RECV_TIMEOUT_S + 30) for p, c in procs]
    finally:
        for p, _ in procs:
            _stop(p)
        with contextlib.suppress(Exception):
            _stop(pp)
        if handle is not None:
            handle.close()
    rates, got, lats = [], [], array.array("q")
    for count, missed, first, last, lat in results:
        rates.append(count / ((last - first) / 1e9) if last > first else 0.0)
        got.append(count / sent if sent else 0.0)
        lats.frombytes(lat)
    return {
        "transport": kind,
        "subscribers": n,
        "sent": sent,
        "per_sub_msgs": _median(rates),
        "total_msgs": sum(rates),
        "received_share": min(got),
        "latency_us": percentiles(lats, 1e3) if len(lats) else None,
    }


def run_array(kind: str, n: int, args: argparse.Namespace, tmp: str, tag: str) -> dict[str, Any]:
    spec, handle = _setup(kind, n, tmp, tag)
    arr = np.random.default_rng(1).random(int(args.array_mb * (1 << 20)) // 8)
    procs: list[tuple[Any, Connection]] = []
    send: Callable[[Any], None] | None = None
    close: Callable[[], None] = lambda: None
    per_rep: list[float] = []
    # The same copy timed between this run's arrays (the subscribers idle then), after
    # the broadcast has flushed the caches; shown beside the floor.
    scratch = np.empty_like(arr)
    np.copyto(scratch, arr)
    floors: list[float] = []
    try:
        for i in range(n):
            a, b = CTX.Pipe()
            p = CTX.Process(target=_child, args=(b, _array_subscriber, spec, i, args.array_reps), name=f"{kind}-asub{i}", daemon=True)
            p.start()
            b.close()
            procs.append((p, a))
            _expect(p, a, "ready", START_TIMEOUT_S)
        send, close = make_publisher(spec, handle)
        if kind == "zmq":
            time.sleep(0.5)  # let the subscriptions reach the publisher

        for _ in range(args.array_reps):
            t0 = time.perf_counter_ns()
            if kind == "zmq":
                send(STAMP.pack(t0))  # type: ignore[misc]
                send(memoryview(arr))  # type: ignore[misc]
            else:
                send((t0, arr))  # type: ignore[misc]
            for p, c in procs:
                _expect(p, c, "got", RECV_TIMEOUT_S)
            per_rep.append((time.perf_counter_ns() - t0) / 1e6)
            t1 = time.perf_counter_ns()
            np.copyto(scratch, arr)
            floors.append((time.perf_counter_ns() - t1) / 1e6)
        close()
        lats = [_expect(p, c, "done", RECV_TIMEOUT_S) for p, c in procs]
    finally:
        for p, _ in procs:
            _stop(p)
        if handle is not None:
            handle.close()
    # The last subscriber's recv of each array (its own clock stamp), in ms.
    last = [max(sub[r] for sub in lats) / 1e6 for r in range(args.array_reps)]
    return {"transport": kind, "subscribers": n, "all_received_ms": percentiles(last), "with_acks_ms": _median(per_rep), "copyto_between_ms": _median(floors)}


def copyto_ms(mb: float, reps: int) -> float:
    a = np.random.default_rng(2).random(int(mb * (1 << 20)) // 8)
    b = np.empty_like(a)
    ts = []
    for _ in range(max(reps, 5)):
        t = time.perf_counter_ns()
        np.copyto(b, a)
        ts.append((time.perf_counter_ns() - t) / 1e6)
    return _median(ts)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subscribers", default="1,2,4", help="comma-separated subscriber counts")
    ap.add_argument("--messages", type=int, default=300_000)
    ap.add_argument("--budget-s", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--array-mb", type=float, default=8.0)
    ap.add_argument("--array-reps", type=int, default=15)
    ap.add_argument("--workloads", default="fanout,array")
    ap.add_argument("--only", default="")
    ap.add_argument("--skip", default="")
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--quick", action="store_true", help="small and fast (a smoke run)")
    ap.add_argument("--json", default="")
    plots.add_plot_option(ap, "broadcast-fanout-msgs.png and broadcast-array.png")
    args = ap.parse_args(argv)
    plot_dir = plots.plot_dir(args.plot)
    if args.quick:
        args.messages, args.budget_s, args.rounds, args.array_reps = 20_000, 0.5, 1, 3
    subs = [int(x) for x in args.subscribers.split(",") if x]
    only = [x for x in args.only.split(",") if x]
    skip = [x for x in args.skip.split(",") if x]
    workloads = args.workloads.split(",")
    notes: list[str] = []
    kinds = []
    for k, mod in [("shmplane", "shmplane"), ("shmplane-many", "shmplane"), ("shmplane-view", "shmplane"), ("shmplane-lossy", "shmplane"), ("zmq", "zmq"), ("mp-queue", "multiprocessing"), ("faster-fifo", "faster_fifo"), ("iceoryx2", "iceoryx2")]:
        if not _selected(k, only, skip):
            continue
        if not _have(mod):
            notes.append(f"{k}: skipped ({mod} is not installed; ci/bench-broadcast.sh installs it)")
            continue
        kinds.append(k)
    print(f"broadcast bench: {os.cpu_count()} CPUs, subscribers {subs}, rounds {args.rounds}; " f"python {sys.version.split()[0]}")
    out: dict[str, Any] = {"fanout": [], "array": [], "notes": notes}
    tmp = tempfile.mkdtemp(prefix="bcb-")
    try:
        if "fanout" in workloads:
            for n in subs:
                fan = [k for k in kinds if k != "shmplane-view"]  # arrays only
                if not fan:
                    continue
                rows: dict[str, list[dict[str, Any]]] = {k: [] for k in fan}
                for r in plots.progress(range(args.rounds), desc=f"fanout N={n} rounds"):
                    order = fan[r % len(fan) :] + fan[: r % len(fan)]
                    for k in order:
                        try:
                            rows[k].append(run_fanout(k, n, args, tmp, f"f{n}{r}{k}"))
                        except Exception as e:  # noqa: BLE001 - a peer's failure is a note, not the end of the run
                            notes.append(f"{k} fanout N={n} round {r}: {type(e).__name__}: {e}")
                table = []
                base = _median([x["per_sub_msgs"] for x in rows.get("shmplane", [])]) if rows.get("shmplane") else None
                for k in fan:
                    if not rows[k]:
                        continue
                    per = _median([x["per_sub_msgs"] for x in rows[k]])
                    tot = _median([x["total_msgs"] for x in rows[k]])
                    share = min(x["received_share"] for x in rows[k])
                    lat = rows[k][len(rows[k]) // 2]["latency_us"]
                    lat_s = "-" if lat is None else f"{lat['p50']:.1f} / {lat['p99']:.1f} / {lat['p999']:.1f}"
                    table.append([k, f"{per / 1e6:.2f} M", f"{tot / 1e6:.2f} M", f"{share:.1%}", lat_s, _ratio(base, per) if k != "shmplane" else "1.00x"])
                    out["fanout"].append({"transport": k, "subscribers": n, "rounds": rows[k]})
                print(f"\nfanout: 1 publisher -> {n} subscribers, {MSG_LEN}-byte messages (median of {args.rounds} rounds)")
                print(format_table(["transport", "msg/s per sub", "msg/s total", "received", "latency us p50/p99/p99.9", "shmplane is"], table))
        if "array" in workloads:
            floor = copyto_ms(args.array_mb, args.array_reps)
            print(f"\narray: {args.array_mb:g} MB float64 ndarray to N subscribers; one np.copyto here: {floor:.2f} ms before the runs (the floor)")
            for n in subs:
                table = []
                for k in kinds:
                    if k in ("iceoryx2", "faster-fifo", "shmplane-lossy", "shmplane-many"):
                        continue  # fixed-size samples / 1 MB queues / not for datasets
                    res = []
                    for r in plots.progress(range(args.rounds), desc=f"array N={n} {k} rounds"):
                        try:
                            res.append(run_array(k, n, args, tmp, f"a{n}{r}{k}"))
                        except Exception as e:  # noqa: BLE001
                            notes.append(f"{k} array N={n} round {r}: {type(e).__name__}: {e}")
                    if not res:
                        continue
                    p50 = _median([x["all_received_ms"]["p50"] for x in res])
                    p99 = _median([x["all_received_ms"]["p99"] for x in res])
                    cold = _median([x["copyto_between_ms"] for x in res])
                    table.append([k, f"{p50:.2f}", f"{p99:.2f}", f"{p50 / floor:.2f}x", f"{cold:.2f}", f"{p50 / cold:.2f}x"])
                    out["array"].append({"transport": k, "subscribers": n, "rounds": res, "copyto_ms": floor, "copyto_between_ms": cold})
                print(f"\narray to {n} subscribers: time until the last subscriber has its copy (ms; shmplane-view: its view);")
                print("the floor: np.copyto before the runs; 'between': the same copy timed between the row's arrays (cold caches)")
                print(format_table(["transport", "p50", "p99", "p50 / floor", "between", "p50 / between"], table))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for note in notes:
        print("note:", note)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)
    if plot_dir is not None:
        written = plot_results(out, args, plot_dir)
        if written:
            print(f"\nplots: {', '.join(str(p) for p in written)}")
    return 0


def plot_results(out: dict[str, Any], args: argparse.Namespace, directory: Path) -> list[Path]:
    """``broadcast-fanout-msgs.png`` and ``broadcast-array.png`` in ``directory`` from the
    figures of the workloads that ran (see the module's docstring)."""
    def group(n: int) -> str:
        return f"{n} subscriber{'s' if n != 1 else ''}"

    written = []
    fanout: dict[str, dict[str, plots.Bar]] = {}
    for row in out["fanout"]:
        per = [x["per_sub_msgs"] for x in row["rounds"]]
        fanout.setdefault(group(row["subscribers"]), {})[row["transport"]] = plots.Bar(_median(per), min(per), max(per))
    if fanout:
        title = (f"broadcast: 1 publisher -> N subscriber processes, {MSG_LEN}-byte messages, "
                 f"median of {args.rounds} round(s) (whisker: min-max)")
        written.append(plots.bars(fanout, title, directory / "broadcast-fanout-msgs.png",
                                  "msg/s per subscriber (log scale)", log=True))
    arrays: dict[str, dict[str, plots.Bar]] = {}
    floor = None
    for row in out["array"]:
        p50 = _median([x["all_received_ms"]["p50"] for x in row["rounds"]])
        p99 = _median([x["all_received_ms"]["p99"] for x in row["rounds"]])
        arrays.setdefault(group(row["subscribers"]), {})[row["transport"]] = plots.Bar(p50, p50, p99)
        floor = row["copyto_ms"]
    if arrays:
        title = (f"broadcast: a float64 ndarray of {args.array_mb:g} MB to N subscriber processes, "
                 f"until the last has its copy: p50, whisker to p99 (medians of {args.rounds} round(s))")
        reference = None if floor is None else (f"one np.copyto here ({floor:.2f} ms)", floor)
        written.append(plots.bars(arrays, title, directory / "broadcast-array.png", "ms (log scale)",
                                  log=True, reference=reference))
    return written


if __name__ == "__main__":
    sys.exit(main())
