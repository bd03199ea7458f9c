"""Peer transports that shmplane is benchmarked against.

Each *transfer peer* moves one payload from this (master) process to a worker
process started with the ``spawn`` start method, where it becomes usable again
(an ``ndarray`` for arrays, a ``list`` for lists); the worker then sends a small
ack. :func:`measure` times each transfer from just before the send to just
after the ack arrives.

Transfer peers (see :data:`PEERS`):

``floor_copyto``
    Not IPC: one ``np.copyto`` of the payload into a preallocated array in this
    process. For an ndarray that is the memcpy floor; for a list it is the
    list-to-float64 conversion.
``pickle5_pipe``
    Pickle protocol 5 with out-of-band buffers over a ``multiprocessing.Pipe``:
    the pickle header and each raw buffer go as separate ``send_bytes``
    messages and the worker rebuilds with ``pickle.loads(..., buffers=...)``.
    Arrays arrive backed by the received ``bytes``, so they are read-only.
``pipe_send``
    Plain ``Connection.send(obj)``.
``queue_put``
    ``multiprocessing.Queue.put(obj)``; the ack comes back on a second Queue.
``shared_memory_copy``
    A preallocated ``multiprocessing.shared_memory.SharedMemory`` segment. The
    master copies the array in (or pickles a non-array payload into it) and
    signals ``(dtype, shape, nbytes)`` over a Pipe; the worker copies the data
    out into a fresh object and acks.

:func:`stream_rate` measures one-way throughput of small messages through the
transports in :data:`STREAM_PEERS`.

Every wait in the master has a timeout and every worker is joined with a
timeout, then terminated, so a bug fails instead of hanging. Workers block
without timeouts so that no polling distorts what they measure; they are
daemonic, and the Pipe-based ones also see EOF if the master dies.

Worker targets are module-level so that spawned children can import them,
whether this file is run as a script or imported as ``peers``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import math
import multiprocessing
import pickle
import queue
import shutil
import struct
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.shared_memory import SharedMemory
from typing import Any, ClassVar, TypedDict

import numpy as np

DEFAULT_TIMEOUT_S = 30.0
"""Longest the master waits for a worker's ready signal, ack or result."""

JOIN_TIMEOUT_S = 10.0
"""Longest the master waits for a worker to exit before terminating it."""

_SIGNAL_GRACE_S = 2.0  # how long a terminated worker gets before it is killed

_CTX = multiprocessing.get_context("spawn")
_READY = b"ready"

Fingerprint = tuple[int, float, float]
"""``(size, first, last)`` of a payload: the worker's ack, checked by the master."""

_ACK = struct.Struct("=qdd")  # a packed Fingerprint
_COUNT = struct.Struct("=q")  # pickle5_pipe: number of out-of-band buffers, -1 = stop
# stream_rate: (worker's perf_counter_ns on receipt of the last message, count)
_RESULT = struct.Struct("=qq")


# --------------------------------------------------------------------------- helpers


def fingerprint(obj: Any) -> Fingerprint:
    """Return ``(size, first, last)`` of a non-empty ndarray or sequence."""
    if isinstance(obj, np.ndarray):
        return (obj.size, float(obj.flat[0]), float(obj.flat[-1]))
    return (len(obj), float(obj[0]), float(obj[-1]))


def make_array_payload(n: int = 1_000_000) -> np.ndarray:
    """Return ``n`` random float64 values as an ndarray (8 MB for the default)."""
    return np.random.default_rng(0).random(n)


def make_list_payload(n: int = 1_000_000) -> list[float]:
    """Return ``n`` random floats as a Python list."""
    values: list[float] = make_array_payload(n).tolist()
    return values


def _poll_recv_bytes(conn: Connection, timeout_s: float) -> bytes:
    """Receive one message, raising TimeoutError if none arrives in time."""
    if not conn.poll(timeout_s):
        raise TimeoutError(f"no message from the worker within {timeout_s:.1f} s")
    return conn.recv_bytes()


def _expect_ready(conn: Connection, timeout_s: float) -> None:
    message = _poll_recv_bytes(conn, timeout_s)
    if message != _READY:
        raise RuntimeError(f"expected a ready signal from the worker, got {message!r}")


def _queue_get(q: Any, timeout_s: float) -> Any:
    """``q.get`` with a timeout, raising TimeoutError instead of queue.Empty."""
    try:
        return q.get(timeout=timeout_s)
    except queue.Empty:
        raise TimeoutError(
            f"no message from the worker within {timeout_s:.1f} s"
        ) from None


def _send_ack(conn: Connection, obj: Any) -> None:
    conn.send_bytes(_ACK.pack(*fingerprint(obj)))


def _start_worker(target: Callable[..., None], *args: object) -> BaseProcess:
    """Start ``target(*args)`` in a daemonic spawned process."""
    proc = _CTX.Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


def _stop_worker(proc: BaseProcess, timeout_s: float = JOIN_TIMEOUT_S) -> None:
    """Join ``proc``; terminate (then kill) it if it hangs.

    Raises RuntimeError if the worker had to be stopped or exited with an error.
    """
    proc.join(timeout_s)
    hung = proc.is_alive()
    if hung:
        proc.terminate()
        proc.join(_SIGNAL_GRACE_S)
    if proc.is_alive():
        proc.kill()
        proc.join(_SIGNAL_GRACE_S)
    if hung or proc.exitcode != 0:
        state = "hung and was stopped" if hung else f"exited with code {proc.exitcode}"
        raise RuntimeError(f"worker {proc.name} {state}")


class _Watchdog:
    """Kills a worker that keeps the master blocked in a send for too long.

    A blocking write to a worker that is alive but no longer reading has no
    timeout of its own; killing the worker makes it fail with an OSError.
    Use ``with watchdog:`` around the sends; :meth:`stop` ends the thread.
    """

    _PERIOD_S = 0.25

    def __init__(self, proc: BaseProcess, timeout_s: float) -> None:
        self._proc = proc
        self._timeout_s = timeout_s
        self._deadline = math.inf
        self._fired = False
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"watchdog-{proc.name}", daemon=True
        )
        self._thread.start()

    def __enter__(self) -> None:
        self._deadline = time.monotonic() + self._timeout_s

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self._deadline = math.inf
        if exc is not None and self._fired:
            name, timeout_s = self._proc.name, self._timeout_s
            raise TimeoutError(
                f"worker {name} stopped reading for {timeout_s:.1f} s and was killed"
            ) from exc

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stopped.wait(self._PERIOD_S):
            if time.monotonic() > self._deadline:
                self._fired = True
                self._proc.kill()
                return


# --------------------------------------------------------------------------- peers


class Peer(ABC):
    """A transport measured by :func:`measure`.

    The master calls :meth:`open` once with a sample payload, :meth:`transfer`
    for every payload, then :meth:`close`. A closed peer can be opened again.
    """

    name: ClassVar[str]

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s

    @abstractmethod
    def open(self, sample: Any) -> None:
        """Start the worker and size any resources for payloads like ``sample``."""

    @abstractmethod
    def transfer(self, payload: Any) -> Fingerprint:
        """Send ``payload``, wait for the worker's ack and return it."""

    @abstractmethod
    def close(self) -> None:
        """Stop the worker and release every resource; safe to call twice."""


class FloorCopytoPeer(Peer):
    """``np.copyto`` of the payload into a preallocated array, in-process."""

    name = "floor_copyto"

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(timeout_s)
        self._dst: np.ndarray | None = None

    def open(self, sample: Any) -> None:
        self._dst = np.empty_like(np.asarray(sample))

    def transfer(self, payload: Any) -> Fingerprint:
        if self._dst is None:
            raise RuntimeError(f"{self.name} is not open")
        np.copyto(self._dst, payload)
        return fingerprint(self._dst)

    def close(self) -> None:
        self._dst = None


class _PipePeer(Peer):
    """A peer whose worker talks to the master over one duplex Pipe.

    Subclasses start their worker with :meth:`_start` from :meth:`open` and
    implement :meth:`_send_payload`; the worker acks with :func:`_send_ack`.
    """

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(timeout_s)
        self._conn: Connection | None = None
        self._proc: BaseProcess | None = None
        self._watchdog: _Watchdog | None = None

    def _start(self, target: Callable[..., None], *args: object) -> None:
        """Start ``target(conn, *args)`` and wait for its ready signal."""
        self._conn, child_conn = _CTX.Pipe()
        self._proc = _start_worker(target, child_conn, *args)
        child_conn.close()
        self._watchdog = _Watchdog(self._proc, self.timeout_s)
        _expect_ready(self._conn, self.timeout_s)

    @abstractmethod
    def _send_payload(self, conn: Connection, payload: Any) -> None:
        """Send ``payload`` to the worker."""

    def _send_stop(self, conn: Connection) -> None:
        conn.send(None)

    def transfer(self, payload: Any) -> Fingerprint:
        if self._conn is None or self._watchdog is None:
            raise RuntimeError(f"{self.name} is not open")
        with self._watchdog:
            self._send_payload(self._conn, payload)
        return _ACK.unpack(_poll_recv_bytes(self._conn, self.timeout_s))

    def close(self) -> None:
        proc, self._proc = self._proc, None
        watchdog, self._watchdog = self._watchdog, None
        try:
            if proc is not None and self._conn is not None and watchdog is not None:
                with contextlib.suppress(OSError), watchdog:  # the worker may be gone
                    self._send_stop(self._conn)
                watchdog.stop()
            if proc is not None:
                _stop_worker(proc)
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _pickle5_worker(conn: Connection) -> None:
    conn.send_bytes(_READY)
    while (count := _COUNT.unpack(conn.recv_bytes())[0]) >= 0:
        header = conn.recv_bytes()
        buffers = [conn.recv_bytes() for _ in range(count)]
        _send_ack(conn, pickle.loads(header, buffers=buffers))


class Pickle5PipePeer(_PipePeer):
    """Pickle protocol 5 with out-of-band buffers over a Pipe."""

    name = "pickle5_pipe"

    def open(self, sample: Any) -> None:
        self._start(_pickle5_worker)

    def _send_payload(self, conn: Connection, payload: Any) -> None:
        buffers: list[pickle.PickleBuffer] = []
        header = pickle.dumps(payload, protocol=5, buffer_callback=buffers.append)
        conn.send_bytes(_COUNT.pack(len(buffers)))
        conn.send_bytes(header)
        for buffer in buffers:
            conn.send_bytes(buffer.raw())

    def _send_stop(self, conn: Connection) -> None:
        conn.send_bytes(_COUNT.pack(-1))


def _pipe_send_worker(conn: Connection) -> None:
    conn.send_bytes(_READY)
    while (obj := conn.recv()) is not None:
        _send_ack(conn, obj)


class PipeSendPeer(_PipePeer):
    """Plain ``Connection.send(obj)``."""

    name = "pipe_send"

    def open(self, sample: Any) -> None:
        self._start(_pipe_send_worker)

    def _send_payload(self, conn: Connection, payload: Any) -> None:
        conn.send(payload)


def _queue_worker(inbox: Any, acks: Any) -> None:
    acks.put(_READY)
    while (obj := inbox.get()) is not None:
        acks.put(fingerprint(obj))


class QueuePutPeer(Peer):
    """``multiprocessing.Queue.put(obj)``, acked through a second Queue."""

    name = "queue_put"

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(timeout_s)
        self._inbox: Any = None
        self._acks: Any = None
        self._proc: BaseProcess | None = None

    def open(self, sample: Any) -> None:
        self._inbox, self._acks = _CTX.Queue(), _CTX.Queue()
        self._proc = _start_worker(_queue_worker, self._inbox, self._acks)
        ready = _queue_get(self._acks, self.timeout_s)
        if ready != _READY:
            raise RuntimeError(
                f"expected a ready signal from the worker, got {ready!r}"
            )

    def transfer(self, payload: Any) -> Fingerprint:
        if self._proc is None:
            raise RuntimeError(f"{self.name} is not open")
        self._inbox.put(payload)
        ack: Fingerprint = _queue_get(self._acks, self.timeout_s)
        return ack

    def close(self) -> None:
        proc, self._proc = self._proc, None
        try:
            if proc is not None:
                self._inbox.put(None)
                _stop_worker(proc)
        finally:
            for q in (self._inbox, self._acks):
                if q is not None:
                    # Never block on flushing a queue that a dead worker will not drain.
                    q.cancel_join_thread()
                    q.close()
            self._inbox = self._acks = None


def _attach_shared_memory(name: str) -> SharedMemory:
    """Attach to an existing segment without taking over its cleanup.

    Python 3.13+ can opt out of resource tracking. Before that, a spawned child
    shares its parent's resource tracker, whose registry is a set: attaching
    re-registers the name as a no-op, and the creator's ``unlink()``
    unregisters it once, so nothing leaks and no warning is printed.
    """
    if sys.version_info >= (3, 13):
        return SharedMemory(name=name, track=False)
    return SharedMemory(name=name)


_ShmHeader = tuple[np.dtype | None, tuple[int, ...], int]
"""``(dtype, shape, nbytes)`` of an array in shared memory, or
``(None, (), nbytes)`` for a pickle of a non-array payload."""


def _mapped(shm: SharedMemory) -> memoryview:
    """Return the segment's memory, which is gone once the segment is closed."""
    if shm.buf is None:
        raise RuntimeError(f"shared memory {shm.name} is closed")
    return shm.buf


def _write_shared(shm: SharedMemory, payload: Any) -> _ShmHeader:
    """Copy ``payload`` into ``shm`` and describe it for :func:`_read_shared`."""
    buf = _mapped(shm)
    if isinstance(payload, np.ndarray):
        _check_fits(payload.nbytes, buf)
        np.copyto(
            np.ndarray(payload.shape, payload.dtype, buffer=buf[: payload.nbytes]),
            payload,
        )
        return (payload.dtype, payload.shape, payload.nbytes)
    data = pickle.dumps(payload, protocol=5)
    _check_fits(len(data), buf)
    buf[: len(data)] = data
    return (None, (), len(data))


def _check_fits(nbytes: int, buf: memoryview) -> None:
    if nbytes > len(buf):
        raise ValueError(
            f"payload of {nbytes} bytes exceeds the {len(buf)}-byte segment"
        )


def _read_shared(shm: SharedMemory, header: _ShmHeader) -> Any:
    """Return a fresh object copied out of ``shm``; no view of it survives."""
    buf = _mapped(shm)
    dtype, shape, nbytes = header
    if dtype is None:
        return pickle.loads(buf[:nbytes])
    return np.array(np.ndarray(shape, dtype, buffer=buf[:nbytes]), copy=True)


def _shared_memory_worker(conn: Connection, shm_name: str) -> None:
    shm = _attach_shared_memory(shm_name)
    try:
        conn.send_bytes(_READY)
        while (header := conn.recv()) is not None:
            _send_ack(conn, _read_shared(shm, header))
    finally:
        shm.close()


class SharedMemoryCopyPeer(_PipePeer):
    """Copy through a preallocated SharedMemory segment, signalled over a Pipe."""

    name = "shared_memory_copy"

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(timeout_s)
        self._shm: SharedMemory | None = None

    def open(self, sample: Any) -> None:
        is_array = isinstance(sample, np.ndarray)
        size = sample.nbytes if is_array else len(pickle.dumps(sample, protocol=5))
        self._shm = SharedMemory(create=True, size=max(size, 1))
        self._start(_shared_memory_worker, self._shm.name)

    def _send_payload(self, conn: Connection, payload: Any) -> None:
        if self._shm is None:
            raise RuntimeError(f"{self.name} is not open")
        conn.send(_write_shared(self._shm, payload))

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._shm is not None:
                self._shm.close()
                self._shm.unlink()
                self._shm = None


PEERS: dict[str, type[Peer]] = {
    cls.name: cls
    for cls in (
        FloorCopytoPeer,
        Pickle5PipePeer,
        PipeSendPeer,
        QueuePutPeer,
        SharedMemoryCopyPeer,
    )
}
"""Transfer peers by name, in table order."""


def measure(peer: Peer, payload: Any, *, reps: int, warmup: int) -> list[int]:
    """Open ``peer``, run ``warmup`` untimed then ``reps`` timed transfers, close it.

    Returns one wall time per timed transfer in nanoseconds, from just before
    the send to just after the ack. Raises RuntimeError if an ack does not
    match the payload's :func:`fingerprint`.
    """
    expected = fingerprint(payload)
    durations: list[int] = []
    try:
        peer.open(payload)
        for i in range(warmup + reps):
            start = time.perf_counter_ns()
            ack = peer.transfer(payload)
            end = time.perf_counter_ns()
            if ack != expected:
                raise RuntimeError(
                    f"{peer.name}: ack {ack} does not match payload {expected}"
                )
            if i >= warmup:
                durations.append(end - start)
    finally:
        peer.close()
    return durations


# --------------------------------------------------------------------------- streams

STREAM_PEERS: tuple[str, ...] = (
    "mp_queue",
    "zmq_push_pull",
    "faster_fifo",
    "pipe_send_bytes",
)
"""Transports :func:`stream_rate` knows; see :func:`available_stream_peers`."""

_OPTIONAL_MODULES = {"zmq_push_pull": "zmq", "faster_fifo": "faster_fifo"}


def available_stream_peers() -> list[str]:
    """Return the :data:`STREAM_PEERS` whose optional module is installed."""
    return [
        peer
        for peer in STREAM_PEERS
        if peer not in _OPTIONAL_MODULES
        or importlib.util.find_spec(_OPTIONAL_MODULES[peer])
    ]


def _count_messages(
    ctrl: Connection, n_messages: int, receive: Callable[[], int]
) -> None:
    """Take the priming message, signal ready, count ``n_messages``, report.

    ``receive`` blocks until it takes at least one message and returns how
    many it took. The report is this process's ``perf_counter_ns`` on receipt
    of the last message: CLOCK_MONOTONIC is system-wide, so the master can
    subtract its own start time from it.
    """
    receive()
    ctrl.send_bytes(_READY)
    count = 0
    while count < n_messages:
        count += receive()
    ctrl.send_bytes(_RESULT.pack(time.perf_counter_ns(), count))


def _mp_queue_stream_worker(ctrl: Connection, n_messages: int, q: Any) -> None:
    def receive() -> int:
        q.get()
        return 1

    _count_messages(ctrl, n_messages, receive)


def _pipe_stream_worker(ctrl: Connection, n_messages: int, reader: Connection) -> None:
    def receive() -> int:
        reader.recv_bytes()
        return 1

    _count_messages(ctrl, n_messages, receive)


def _faster_fifo_stream_worker(ctrl: Connection, n_messages: int, q: Any) -> None:
    def receive() -> int:
        # faster_fifo has no untimed blocking get; the timeout is free here.
        return len(q.get_many(timeout=DEFAULT_TIMEOUT_S))

    _count_messages(ctrl, n_messages, receive)


def _zmq_stream_worker(ctrl: Connection, n_messages: int, address: str) -> None:
    import zmq

    context = zmq.Context()
    sock = context.socket(zmq.PULL)

    def receive() -> int:
        sock.recv(copy=False)
        return 1

    try:
        sock.connect(address)
        _count_messages(ctrl, n_messages, receive)
    finally:
        sock.close(linger=0)
        context.term()


@dataclass(frozen=True)
class _StreamChannel:
    """The master's side of a stream and how to start its worker."""

    send: Callable[[bytes], object]
    worker_target: Callable[..., None]
    worker_args: tuple[object, ...]
    # Ends that only the worker uses; the master closes its copies once it started.
    child_ends: tuple[Connection, ...] = ()


def _open_mp_queue(
    cleanup: contextlib.ExitStack, timeout_s: float, message_size: int
) -> _StreamChannel:
    q = _CTX.Queue()
    cleanup.callback(q.close)
    cleanup.callback(q.cancel_join_thread)
    return _StreamChannel(q.put, _mp_queue_stream_worker, (q,))


def _open_pipe(
    cleanup: contextlib.ExitStack, timeout_s: float, message_size: int
) -> _StreamChannel:
    reader, writer = _CTX.Pipe(duplex=False)
    cleanup.callback(writer.close)
    return _StreamChannel(writer.send_bytes, _pipe_stream_worker, (reader,), (reader,))


def _open_zmq(
    cleanup: contextlib.ExitStack, timeout_s: float, message_size: int
) -> _StreamChannel:
    import zmq

    directory = tempfile.mkdtemp(prefix="peers-zmq-")
    cleanup.callback(shutil.rmtree, directory, ignore_errors=True)
    context = zmq.Context()
    cleanup.callback(context.term)
    sock = context.socket(zmq.PUSH)
    cleanup.callback(sock.close, linger=0)
    # A send that blocks for timeout_s raises zmq.Again.
    sock.setsockopt(zmq.SNDTIMEO, int(timeout_s * 1000))
    address = f"ipc://{directory}/stream"
    sock.bind(address)
    return _StreamChannel(sock.send, _zmq_stream_worker, (address,))


def _open_faster_fifo(
    cleanup: contextlib.ExitStack, timeout_s: float, message_size: int
) -> _StreamChannel:
    import faster_fifo

    # 1 MiB, or room for four messages when they are larger (a message must fit whole).
    q = faster_fifo.Queue(max_size_bytes=max(1 << 20, 4 * (message_size + 1024)))
    cleanup.callback(q.close)

    def send(message: bytes) -> None:
        q.put(message, timeout=timeout_s)

    return _StreamChannel(send, _faster_fifo_stream_worker, (q,))


_STREAM_OPENERS: dict[
    str, Callable[[contextlib.ExitStack, float, int], _StreamChannel]
] = {
    "mp_queue": _open_mp_queue,
    "zmq_push_pull": _open_zmq,
    "faster_fifo": _open_faster_fifo,
    "pipe_send_bytes": _open_pipe,
}


def stream_rate(
    peer: str,
    n_messages: int,
    *,
    message_size: int = 64,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> float:
    """Return the one-way rate, in messages/s, of ``n_messages`` small messages.

    ``peer`` is one of :data:`STREAM_PEERS`. After one untimed priming message
    the master sends ``n_messages`` messages of ``message_size`` bytes, one
    send call each; the time runs from the first send to the worker's receipt
    of the last message. The faster_fifo worker receives with ``get_many``,
    the others one message per call. ``timeout_s`` bounds every wait of the
    master, including the whole timed send loop.
    """
    if peer not in _STREAM_OPENERS:
        raise ValueError(
            f"unknown stream peer {peer!r}; expected one of {STREAM_PEERS}"
        )
    message = bytes(message_size)
    with contextlib.ExitStack() as cleanup:
        channel = _STREAM_OPENERS[peer](cleanup, timeout_s, message_size)
        ctrl, child_ctrl = _CTX.Pipe()
        cleanup.callback(ctrl.close)
        proc = _start_worker(
            channel.worker_target, child_ctrl, n_messages, *channel.worker_args
        )
        cleanup.callback(_stop_worker, proc)  # runs before the channel closes
        watchdog = _Watchdog(proc, timeout_s)
        cleanup.callback(watchdog.stop)
        for end in (child_ctrl, *channel.child_ends):
            end.close()
        channel.send(message)
        _expect_ready(ctrl, timeout_s)
        start = time.perf_counter_ns()
        with watchdog:
            for _ in range(n_messages):
                channel.send(message)
        end_ns: int
        count: int
        end_ns, count = _RESULT.unpack(_poll_recv_bytes(ctrl, timeout_s))
    if count != n_messages:
        raise RuntimeError(f"{peer}: worker counted {count} of {n_messages} messages")
    return count / ((end_ns - start) / 1e9)


# --------------------------------------------------------------------------- reporting


class Summary(TypedDict):
    """Latency statistics in microseconds (nearest-rank percentiles)."""

    n: int
    mean: float
    p50: float
    p99: float
    p999: float


def summarize(durations_ns: Sequence[int]) -> Summary:
    """Summarize nanosecond durations as microsecond statistics."""
    if not durations_ns:
        raise ValueError("no durations to summarize")
    us = np.asarray(durations_ns, dtype=np.float64) / 1e3
    p50, p99, p999 = np.percentile(us, [50, 99, 99.9], method="inverted_cdf")
    return Summary(
        n=len(us),
        mean=float(us.mean()),
        p50=float(p50),
        p99=float(p99),
        p999=float(p999),
    )


def format_table(
    rows: Sequence[tuple[str, Summary]],
    *,
    floor: str = FloorCopytoPeer.name,
    reference: str = Pickle5PipePeer.name,
) -> str:
    """Return an aligned text table of ``(transport, summary)`` rows.

    Columns: transport, p50, p99, p99.9 (microseconds), p50 as a multiple of the
    ``floor`` row's p50, and speed-up vs the ``reference`` row (its p50 divided
    by this row's p50, so above 1 means faster). A ratio whose row is missing
    shows as ``-``.
    """
    p50_by_name = {name: summary["p50"] for name, summary in rows}

    def ratio(numerator: float | None, denominator: float | None) -> str:
        if numerator is None or not denominator:
            return "-"
        return f"{numerator / denominator:.2f}x"

    header = (
        "transport",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "x floor",
        f"speed-up vs {reference}",
    )
    lines = [header]
    for name, s in rows:
        lines.append(
            (
                name,
                f"{s['p50']:.1f}",
                f"{s['p99']:.1f}",
                f"{s['p999']:.1f}",
                ratio(s["p50"], p50_by_name.get(floor)),
                ratio(p50_by_name.get(reference), s["p50"]),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Print latency tables for both payloads and the stream rates."""
    parser = argparse.ArgumentParser(description="Benchmark the peer transports.")
    parser.add_argument("--reps", type=int, default=20, help="timed transfers per peer")
    parser.add_argument(
        "--warmup", type=int, default=3, help="untimed transfers per peer"
    )
    parser.add_argument(
        "--elements", type=int, default=1_000_000, help="payload length"
    )
    parser.add_argument(
        "--stream-messages", type=int, default=200_000, help="messages per stream"
    )
    args = parser.parse_args(argv)

    array = make_array_payload(args.elements)
    payloads = (
        (
            f"float64 ndarray, {args.elements} elements ({array.nbytes / 1e6:.0f} MB)",
            array,
        ),
        (f"list of {args.elements} floats", make_list_payload(args.elements)),
    )
    for label, payload in payloads:
        rows = [
            (
                name,
                summarize(measure(cls(), payload, reps=args.reps, warmup=args.warmup)),
            )
            for name, cls in PEERS.items()
        ]
        print(f"{label}: {args.reps} reps after {args.warmup} warm-up")
        print(format_table(rows))
        print()

    print(f"64-byte one-way stream, {args.stream_messages} messages")
    available = available_stream_peers()
    for peer in STREAM_PEERS:
        if peer in available:
            print(
                f"  {peer:<16} {stream_rate(peer, args.stream_messages):>12,.0f} msg/s"
            )
        else:
            print(f"  {peer:<16} skipped: {_OPTIONAL_MODULES[peer]} is not installed")


if __name__ == "__main__":
    main()
