"""Idle-wait CPU cost and wake-up latency of shmplane next to its peers, in one run.

Every transport runs as two processes started with the ``spawn`` method, with this
(parent) process only orchestrating. Workloads (``--workloads``):

``w5``
    "1 msg per ms": a producer sends one 8-byte ``perf_counter_ns`` stamp every
    ``--period-ms`` for ``--seconds``, paced by absolute deadlines with
    ``time.sleep``; a deadline missed by more than a whole period is dropped (counted
    as ``skipped``) rather than caught up with a burst, so that every message finds
    the consumer idle. The consumer blocks in a receive loop; wake latency is its
    ``perf_counter_ns()`` right after the receive returns minus the stamp
    (CLOCK_MONOTONIC is system-wide). Consumer CPU is its ``getrusage`` user+system
    time from the first message to the end-of-run sentinel, over the wall time of
    that window, as % of one core. The first ``W5_WARMUP`` latencies are dropped.
``w5hogs``
    The same, with ``--hogs`` busy-loop processes started before and killed after
    each transport's run.
``rr``
    Request/reply over two one-way links: the client sends 64 bytes, the server
    echoes them, back to back; round-trip time per request.
``async``
    The client of ``rr`` as an asyncio coroutine (server: the blocking ``rr``
    server, the same for every row), and a one-way ``async for`` stream of 64-byte
    messages (producer: plain blocking sends). shmplane rows need
    ``Receiver.recv_async``; uvloop rows need uvloop.

Watchdog: every wait of the parent has a timeout, after which it terminates then
kills the children; children's receives carry the transport's own timeout
(``RECV_TIMEOUT_S``), except ``multiprocessing.Pipe``, which has none: a ``poll``
before each ``recv_bytes`` would add a system call to what is measured, so Pipe
readers rely on EOF (the parent closes its copies, so a dead peer is seen) and on
the parent's watchdog. Optional peers (posix_ipc, pyzmq, iceoryx2, uvloop) are
skipped with a note when not installed.

``--plot [DIR]`` (matplotlib installed) writes ``wakeup-cpu-vs-latency.png`` into DIR
(default ``benches/results/``): the trade-off the ``w5`` tables measure, a point per
transport at (consumer CPU %, wake p50) with a whisker to its p99, a panel for ``w5``
and one for ``w5hogs`` (``plots.cpu_vs_latency``).

Run ``ci/bench-wakeup.sh`` (installs the peers), or this file with the venv's python.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import ctypes
import importlib.util
import json
import math
import multiprocessing
import os
import platform
import resource
import shutil
import socket
import struct
import sys
import tempfile
import time
import traceback
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Sequence,
)
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Protocol, TypedDict, TypeVar

import plots  # benches/python/plots.py: optional pictures
import shmplane

_CTX = multiprocessing.get_context("spawn")

RECV_TIMEOUT_S = 30.0
"""Timeout of every blocking receive/send in the children (a hang guard only)."""

START_TIMEOUT_S = 60.0
"""Longest the parent waits for a child's ready signal (spawn is slow under hogs)."""

JOIN_TIMEOUT_S = 5.0
"""Longest the parent waits for a child to exit before terminating it."""

_SIGNAL_GRACE_S = 2.0  # how long a terminated child gets before it is killed

W5_WARMUP = 50
"""Messages sent (and received) before the latency statistics start."""

SHM_CAPACITY = 1 << 16
MSG_SIZE = 64  # rr / async payload
_STAMP = struct.Struct("=q")
_SENTINEL = -1  # w5: the stamp that ends the run
_STOP = b"stop"  # rr: a request of another length than MSG_SIZE ends the server
_IOX_BUFFER = 64  # iceoryx2 subscriber buffer (samples), ample at one message per ms

T = TypeVar("T")


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _optional(module: str) -> Any:
    """Import an optional peer's module (untyped: some ship no stubs)."""
    return importlib.import_module(module)


def shmplane_has_asyncio() -> bool:
    """Whether this shmplane build has the asyncio API (``Receiver.recv_async``)."""
    return hasattr(shmplane.Receiver, "recv_async")


# --------------------------------------------------------------------------- endpoints


@dataclass
class EndSpec:
    """One end of a one-way link, picklable into a spawned child.

    ``obj`` is the transport's handle (a shmplane endpoint, a Connection, a socket) or
    its name / address; ``policy`` is the shmplane wait policy the child sets on it,
    None to keep what it was created with.
    """

    kind: str
    obj: Any
    policy: str | None = None


class TxEnd(Protocol):
    info: str

    def send(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class RxEnd(Protocol):
    info: str

    def recv(self, timeout: float) -> bytes:
        """The next message; TimeoutError after ``timeout`` s, EOFError if closed."""
        ...

    def close(self) -> None: ...


def _set_socket_timeouts(sock: socket.socket, timeout: float) -> None:
    """Kernel timeouts on a blocking socket: no poll() before each call, unlike
    ``settimeout``; a call that times out raises BlockingIOError."""
    tv = struct.pack("@ll", int(timeout), int((timeout % 1) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


class _ShmTx:
    def __init__(self, spec: EndSpec) -> None:
        self.tx: shmplane.Sender = spec.obj
        if spec.policy is not None:
            self.tx.set_policy(spec.policy)
        self.info = self.tx.policy

    def send(self, data: bytes) -> None:
        self.tx.send_bytes(data, timeout=RECV_TIMEOUT_S)

    def close(self) -> None:
        self.tx.close()


class _ShmRx:
    def __init__(self, spec: EndSpec) -> None:
        self.rx: shmplane.Receiver = spec.obj
        if spec.policy is not None:
            self.rx.set_policy(spec.policy)
        self.info = self.rx.policy

    def recv(self, timeout: float) -> bytes:
        return self.rx.recv_bytes(timeout=timeout)

    def close(self) -> None:
        self.rx.close()


class _PipeTx:
    info = ""

    def __init__(self, spec: EndSpec) -> None:
        self.conn: Connection = spec.obj

    def send(self, data: bytes) -> None:
        self.conn.send_bytes(data)

    def close(self) -> None:
        self.conn.close()


class _PipeRx:
    info = ""

    def __init__(self, spec: EndSpec) -> None:
        self.conn: Connection = spec.obj

    def recv(self, timeout: float) -> bytes:
        # No timeout (see the module docstring): EOF or the parent's watchdog.
        return self.conn.recv_bytes()

    def close(self) -> None:
        self.conn.close()


class _SockTx:
    info = ""

    def __init__(self, spec: EndSpec) -> None:
        self.sock: socket.socket = spec.obj
        _set_socket_timeouts(self.sock, RECV_TIMEOUT_S)

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except BlockingIOError:
            raise TimeoutError("socket send timed out") from None

    def close(self) -> None:
        self.sock.close()


class _SockRx:
    info = ""

    def __init__(self, spec: EndSpec) -> None:
        self.sock: socket.socket = spec.obj
        _set_socket_timeouts(self.sock, RECV_TIMEOUT_S)

    def recv(self, timeout: float) -> bytes:
        # The kernel timeout set above (every caller passes RECV_TIMEOUT_S).
        try:
            data = self.sock.recv(256)
        except BlockingIOError:
            raise TimeoutError("socket receive timed out") from None
        if not data:
            raise EOFError("the socket peer closed")
        return data

    def close(self) -> None:
        self.sock.close()


class _MqTx:
    info = ""

    def __init__(self, spec: EndSpec) -> None:
        posix_ipc = _optional("posix_ipc")
        self.mq = posix_ipc.MessageQueue(spec.obj, read=False)

    def send(self, data: bytes) -> None:
        posix_ipc = _optional("posix_ipc")
        try:
            self.mq.send(data, timeout=RECV_TIMEOUT_S)
        except posix_ipc.BusyError:
            raise TimeoutError("mq_send timed out") from None

    def close(self) -> None:
        self.mq.close()


class _MqRx:
    info = ""

    def __init__(self, spec: EndSpec) -> None:
        posix_ipc = _optional("posix_ipc")
        self.busy = posix_ipc.BusyError
        self.mq = posix_ipc.MessageQueue(spec.obj, write=False)

    def recv(self, timeout: float) -> bytes:
        try:
            data: bytes = self.mq.receive(timeout)[0]
        except self.busy:
            raise TimeoutError("mq_receive timed out") from None
        return data

    def close(self) -> None:
        self.mq.close()


class _ZmqTx:
    """PUSH, connecting to the receiver's ipc:// address."""

    info = ""

    def __init__(self, spec: EndSpec) -> None:
        import zmq  # type: ignore[import-not-found, unused-ignore]

        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUSH)
        self.sock.setsockopt(zmq.SNDTIMEO, int(RECV_TIMEOUT_S * 1000))
        self.sock.connect(spec.obj)

    def send(self, data: bytes) -> None:
        import zmq  # type: ignore[import-not-found, unused-ignore]

        try:
            self.sock.send(data)
        except zmq.Again:
            raise TimeoutError("zmq send timed out") from None

    def close(self) -> None:
        self.sock.close(linger=int(RECV_TIMEOUT_S * 1000))  # deliver the sentinel
        self.ctx.term()


class _ZmqRx:
    """PULL, bound to the link's ipc:// address."""

    info = ""

    def __init__(self, spec: EndSpec) -> None:
        import zmq  # type: ignore[import-not-found, unused-ignore]

        self.again = zmq.Again
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PULL)
        self.sock.setsockopt(zmq.RCVTIMEO, int(RECV_TIMEOUT_S * 1000))
        self.sock.bind(spec.obj)

    def recv(self, timeout: float) -> bytes:
        try:
            data: bytes = self.sock.recv()
        except self.again:
            raise TimeoutError("zmq receive timed out") from None
        return data

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


class _IoxEnd:
    """iceoryx2: publish-subscribe of a ``c_uint64`` plus an event service whose
    notifier wakes the subscriber's listener (the event-based-communication pattern).
    Carries 8-byte messages only (w5)."""

    info = ""

    def __init__(self, spec: EndSpec, sender: bool) -> None:
        iox2 = _optional("iceoryx2")
        iox2.set_log_level(iox2.LogLevel.Error)
        self.iox2 = iox2
        self.node: Any = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
        name = iox2.ServiceName.new(spec.obj)
        self.pubsub: Any = (
            self.node.service_builder(name)
            .publish_subscribe(ctypes.c_uint64)
            .subscriber_max_buffer_size(_IOX_BUFFER)
            .open_or_create()
        )
        self.event: Any = self.node.service_builder(name).event().open_or_create()
        self.ports: list[Any] = []
        if sender:
            self.publisher: Any = self.pubsub.publisher_builder().create()
            self.notifier: Any = self.event.notifier_builder().create()
            self.ports += [self.publisher, self.notifier]
        else:
            self.subscriber: Any = (
                self.pubsub.subscriber_builder().buffer_size(_IOX_BUFFER).create()
            )
            self.listener: Any = self.event.listener_builder().create()
            self.ports += [self.subscriber, self.listener]

    def close(self) -> None:
        # Children leave through os._exit, which runs no destructors: release the
        # ports and the node now or their resources stay behind as a dead node's.
        for port in self.__dict__.get("ports", ()):
            port.delete()
        self.__dict__.clear()


class _IoxTx(_IoxEnd):
    def __init__(self, spec: EndSpec) -> None:
        super().__init__(spec, sender=True)

    def send(self, data: bytes) -> None:
        sample = self.publisher.loan_uninit()
        sample = sample.write_payload(
            ctypes.c_uint64(_STAMP.unpack(data)[0] & (2**64 - 1))
        )
        sample.send()
        self.notifier.notify()


class _IoxRx(_IoxEnd):
    def __init__(self, spec: EndSpec) -> None:
        super().__init__(spec, sender=False)

    def recv(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            sample = self.subscriber.receive()
            if sample is not None:
                value: int = sample.payload().contents.value
                sample.delete()
                if value >= 2**63:
                    value -= 2**64
                return _STAMP.pack(value)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("iceoryx2 listener wait timed out")
            self.listener.timed_wait(self.iox2.Duration.from_secs_f64(remaining))


_TX: dict[str, Callable[[EndSpec], TxEnd]] = {
    "shmplane": _ShmTx,
    "pipe": _PipeTx,
    "socketpair": _SockTx,
    "socketstream": _SockTx,
    "posix-mq": _MqTx,
    "zmq": _ZmqTx,
    "iceoryx2": _IoxTx,
}
_RX: dict[str, Callable[[EndSpec], RxEnd]] = {
    "shmplane": _ShmRx,
    "pipe": _PipeRx,
    "socketpair": _SockRx,
    "posix-mq": _MqRx,
    "zmq": _ZmqRx,
    "iceoryx2": _IoxRx,
}


# --------------------------------------------------------------------------- links


@dataclass
class Link:
    """A one-way link made by the parent: the two ends to hand to the children."""

    tx: EndSpec
    rx: EndSpec
    # The parent's copies, closed once the children hold theirs (so that EOF works).
    release: list[Callable[[], object]] = field(default_factory=list)


_link_counter = 0


def _uid() -> str:
    global _link_counter
    _link_counter += 1
    return f"{os.getpid()}-{_link_counter}"


def _check_shm_leak(path: str | None) -> None:
    """Called once every end is closed: the segment must be gone."""
    if path and os.path.exists(path):
        print(f"  warning: leaked segment {path}; removing it", file=sys.stderr)
        with contextlib.suppress(OSError):
            os.unlink(path)


def make_link(kind: str, policy: str | None, stack: contextlib.ExitStack) -> Link:
    """Create a one-way link of ``kind``; ``stack`` releases everything it holds."""
    if kind == "shmplane":
        stx, srx = shmplane.channel(capacity=SHM_CAPACITY)
        stack.callback(_check_shm_leak, stx.path)  # runs last: after both closes
        stack.callback(stx.close)
        stack.callback(srx.close)
        return Link(
            EndSpec(kind, stx, policy),
            EndSpec(kind, srx, policy),
            [stx.close, srx.close],
        )
    if kind == "pipe":
        reader, writer = _CTX.Pipe(duplex=False)
        stack.callback(writer.close)
        stack.callback(reader.close)
        return Link(
            EndSpec(kind, writer), EndSpec(kind, reader), [writer.close, reader.close]
        )
    if kind in ("socketpair", "socketstream"):
        sock_type = (
            socket.SOCK_SEQPACKET if kind == "socketpair" else socket.SOCK_STREAM
        )
        a, b = socket.socketpair(socket.AF_UNIX, sock_type)
        stack.callback(a.close)
        stack.callback(b.close)
        return Link(EndSpec(kind, a), EndSpec(kind, b), [a.close, b.close])
    if kind == "posix-mq":
        posix_ipc = _optional("posix_ipc")
        name = f"/shmplane-wakeup-{_uid()}"
        mq = posix_ipc.MessageQueue(
            name, posix_ipc.O_CREX, mode=0o600, max_messages=10, max_message_size=256
        )
        stack.callback(mq.unlink)
        stack.callback(mq.close)
        return Link(EndSpec(kind, name), EndSpec(kind, name))
    if kind == "zmq":
        directory = tempfile.mkdtemp(prefix="shmplane-wakeup-zmq-")
        stack.callback(shutil.rmtree, directory, ignore_errors=True)
        address = f"ipc://{directory}/link"
        return Link(EndSpec(kind, address), EndSpec(kind, address))
    if kind == "iceoryx2":
        name = f"shmplane-wakeup/{_uid()}"
        stack.callback(_iceoryx_cleanup)
        return Link(EndSpec(kind, name), EndSpec(kind, name))
    raise ValueError(f"unknown link kind {kind!r}")


def _iceoryx_cleanup() -> None:
    """Remove what a killed iceoryx2 child left behind (no-op after a clean run)."""
    with contextlib.suppress(Exception):
        iox2 = _optional("iceoryx2")
        iox2.set_log_level(iox2.LogLevel.Error)
        node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
        node.try_cleanup_dead_nodes()
        del node


# --------------------------------------------------------------------------- children


def _rusage() -> tuple[float, int, int]:
    """(user + system CPU seconds, voluntary, involuntary context switches)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime, ru.ru_nvcsw, ru.ru_nivcsw


def _child(ctrl: Connection, target: Callable[..., object], *args: object) -> None:
    """Run ``target(ctrl, *args)``; report an exception to the parent, then exit 1."""
    try:
        target(ctrl, *args)
    except BaseException:
        with contextlib.suppress(Exception):
            ctrl.send(("error", traceback.format_exc()))
        raise
    finally:
        ctrl.close()


def _wait_go(ctrl: Connection) -> None:
    if not ctrl.poll(START_TIMEOUT_S):
        raise TimeoutError("no go from the parent")
    ctrl.recv()


def _hog() -> None:
    while True:
        pass


def _w5_consumer(ctrl: Connection, spec: EndSpec) -> None:
    rx = _RX[spec.kind](spec)
    try:
        ctrl.send(("ready", rx.info))
        lat = array.array("q")
        t0 = t1 = 0
        ru0: tuple[float, int, int] | None = None
        while True:
            data = rx.recv(RECV_TIMEOUT_S)
            now = time.perf_counter_ns()
            stamp = _STAMP.unpack(data)[0]
            if ru0 is None:
                ru0, t0 = _rusage(), now
            if stamp == _SENTINEL:
                t1 = now
                break
            lat.append(now - stamp)
        ru1 = _rusage()
        ctrl.send(
            (
                "ok",
                {
                    "lat_ns": lat.tolist(),
                    "cpu_s": ru1[0] - ru0[0],
                    "wall_s": (t1 - t0) / 1e9,
                    "nvcsw": ru1[1] - ru0[1],
                    "nivcsw": ru1[2] - ru0[2],
                },
            )
        )
    finally:
        rx.close()


def _w5_producer(ctrl: Connection, spec: EndSpec, n_msgs: int, period_ns: int) -> None:
    tx = _TX[spec.kind](spec)
    try:
        ctrl.send(("ready", tx.info))
        _wait_go(ctrl)
        ru0 = _rusage()
        skipped = 0
        deadline = time.perf_counter_ns() + period_ns
        for i in range(n_msgs + 1):
            delay = deadline - time.perf_counter_ns()
            if delay > 0:
                time.sleep(delay / 1e9)
            elif -delay > period_ns:  # late by whole periods: drop them, do not burst
                missed = -delay // period_ns
                skipped += missed
                deadline += missed * period_ns
            tx.send(_STAMP.pack(_SENTINEL if i == n_msgs else time.perf_counter_ns()))
            deadline += period_ns
        ru1 = _rusage()
        ctrl.send(("ok", {"cpu_s": ru1[0] - ru0[0], "skipped": skipped}))
    finally:
        tx.close()


def _rr_server(ctrl: Connection, req: EndSpec, rep: EndSpec) -> None:
    rx, tx = _RX[req.kind](req), _TX[rep.kind](rep)
    try:
        ctrl.send(("ready", rx.info))
        n = 0
        while (msg := rx.recv(RECV_TIMEOUT_S)) != _STOP:
            tx.send(msg)
            n += 1
        ctrl.send(("ok", {"echoed": n}))
    finally:
        rx.close()
        tx.close()


def _rr_client(ctrl: Connection, req: EndSpec, rep: EndSpec, total: int) -> None:
    tx, rx = _TX[req.kind](req), _RX[rep.kind](rep)
    try:
        ctrl.send(("ready", rx.info))
        _wait_go(ctrl)
        msg = bytes(range(MSG_SIZE))
        lat = array.array("q", bytes(8 * total))
        for i in range(total):
            t0 = time.perf_counter_ns()
            tx.send(msg)
            reply = rx.recv(RECV_TIMEOUT_S)
            lat[i] = time.perf_counter_ns() - t0
            if len(reply) != MSG_SIZE:
                raise RuntimeError(f"bad reply of {len(reply)} bytes")
        tx.send(_STOP)
        ctrl.send(("ok", {"lat_ns": lat.tolist()}))
    finally:
        tx.close()
        rx.close()


def _run_loop(loop_kind: str, coro: Coroutine[Any, Any, T]) -> T:
    if loop_kind == "uvloop":
        import uvloop  # type: ignore[import-not-found, unused-ignore]

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    return asyncio.run(coro)


async def _pingpong(
    send: Callable[[bytes], Awaitable[object]],
    recv: Callable[[], Awaitable[bytes]],
    total: int,
) -> list[int]:
    msg = bytes(range(MSG_SIZE))
    lat = array.array("q", bytes(8 * total))
    for i in range(total):
        t0 = time.perf_counter_ns()
        await send(msg)
        reply = await recv()
        lat[i] = time.perf_counter_ns() - t0
        if len(reply) != MSG_SIZE:
            raise RuntimeError(f"bad reply of {len(reply)} bytes")
    await send(_STOP)
    return lat.tolist()


def _async_client(
    ctrl: Connection,
    req: EndSpec,
    rep: EndSpec,
    total: int,
    loop_kind: str,
    budget_s: float,
) -> None:
    """The rr client as a coroutine; ``budget_s`` bounds the whole run."""

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        send: Callable[[bytes], Awaitable[object]]
        recv: Callable[[], Awaitable[bytes]]
        if req.kind == "shmplane":
            tx: Any = req.obj
            rx: Any = rep.obj

            def send(m: bytes) -> Awaitable[object]:
                sent: Awaitable[object] = tx.send_async(m, timeout=RECV_TIMEOUT_S)
                return sent

            def recv() -> Awaitable[bytes]:
                got: Awaitable[bytes] = rx.recv_async(timeout=RECV_TIMEOUT_S)
                return got

        else:
            stx: socket.socket = req.obj
            srx: socket.socket = rep.obj
            stx.setblocking(False)
            srx.setblocking(False)

            def send(m: bytes) -> Awaitable[object]:
                return loop.sock_sendall(stx, m)

            def recv() -> Awaitable[bytes]:
                return loop.sock_recv(srx, 256)

        return await asyncio.wait_for(_pingpong(send, recv, total), budget_s)

    try:
        ctrl.send(("ready", loop_kind))
        _wait_go(ctrl)
        ctrl.send(("ok", {"lat_ns": _run_loop(loop_kind, main())}))
    finally:
        req.obj.close()  # shmplane endpoints and sockets alike
        rep.obj.close()


def _stream_producer(ctrl: Connection, spec: EndSpec, n_msgs: int) -> None:
    tx = _TX[spec.kind](spec)
    try:
        ctrl.send(("ready", tx.info))
        _wait_go(ctrl)
        msg = bytes(range(MSG_SIZE))
        for _ in range(n_msgs):
            tx.send(msg)
        ctrl.send(("ok", {}))
    finally:
        tx.close()  # the consumer's iteration ends here


def _async_stream_consumer(
    ctrl: Connection, spec: EndSpec, loop_kind: str, budget_s: float
) -> None:
    """``async for`` over the messages until the producer closes; reports the rate
    from the first message to the last."""

    async def messages() -> AsyncIterator[bytes]:
        if spec.kind == "shmplane":
            rx: Any = spec.obj
            if hasattr(rx, "__aiter__"):
                async for m in rx:
                    yield m
            else:
                while True:
                    try:
                        yield await rx.recv_async(timeout=RECV_TIMEOUT_S)
                    except EOFError:  # DisconnectedError
                        return
            return
        sock: socket.socket = spec.obj
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            while True:
                try:
                    yield await reader.readexactly(MSG_SIZE)
                except asyncio.IncompleteReadError:
                    return
        finally:
            writer.close()

    async def count() -> tuple[int, int, int]:
        n = t0 = t1 = 0
        # `async for` straight over the receiver when it is one (what users write);
        # the wrapping generator costs every row an extra `asend` per message.
        source: Any = spec.obj if hasattr(spec.obj, "__aiter__") else messages()
        async for m in source:
            t1 = time.perf_counter_ns()
            if n == 0:
                t0 = t1
            n += 1
            if len(m) != MSG_SIZE:
                raise RuntimeError(f"bad message of {len(m)} bytes")
        return n, t0, t1

    async def main() -> tuple[int, int, int]:
        return await asyncio.wait_for(count(), budget_s)

    try:
        ctrl.send(("ready", loop_kind))
        n, t0, t1 = _run_loop(loop_kind, main())
        ctrl.send(("ok", {"count": n, "wall_s": (t1 - t0) / 1e9}))
    finally:
        spec.obj.close()


# --------------------------------------------------------------------------- parent


def _expect(proc: BaseProcess, conn: Connection, tag: str, timeout: float) -> Any:
    """Wait for ``(tag, payload)`` from a child; raise on timeout, error or death."""
    if not conn.poll(timeout):
        raise TimeoutError(f"{proc.name}: nothing within {timeout:.0f} s (killed)")
    try:
        got, payload = conn.recv()
    except EOFError:
        proc.join(JOIN_TIMEOUT_S)
        raise RuntimeError(f"{proc.name} died (exit code {proc.exitcode})") from None
    if got == "error":
        # The child printed the whole traceback to its stderr already.
        raise RuntimeError(f"{proc.name}: {payload.strip().splitlines()[-1]}")
    if got != tag:
        raise RuntimeError(f"{proc.name}: expected {tag!r}, got {got!r}")
    return payload


def _stop(proc: BaseProcess, timeout: float = JOIN_TIMEOUT_S) -> None:
    proc.join(timeout)
    if proc.is_alive():
        proc.terminate()
        proc.join(_SIGNAL_GRACE_S)
    if proc.is_alive():
        proc.kill()
        proc.join(_SIGNAL_GRACE_S)
    with contextlib.suppress(ValueError):
        proc.close()


class _Children:
    """Starts children; the ExitStack it is given stops them (join, terminate, kill)."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self.stack = stack

    def start(
        self, name: str, target: Callable[..., object], *args: object
    ) -> tuple[BaseProcess, Connection]:
        conn, child_conn = _CTX.Pipe()
        self.stack.callback(conn.close)
        proc = _CTX.Process(
            target=_child, args=(child_conn, target, *args), name=name, daemon=True
        )
        proc.start()
        self.stack.callback(_stop, proc)
        child_conn.close()
        return proc, conn

    def hogs(self, n: int) -> None:
        for i in range(n):
            proc = _CTX.Process(target=_hog, name=f"hog{i}", daemon=True)
            proc.start()
            self.stack.callback(_stop, proc, 0.0)
        if n:
            time.sleep(0.2)


@dataclass(frozen=True)
class Transport:
    name: str
    kind: str
    policy: str | None = None  # shmplane policy set in the children
    loop: str = "asyncio"  # async workload: the client's event loop
    needs: tuple[str, ...] = ()  # optional modules

    def missing(self) -> list[str]:
        return [m for m in self.needs if not _have(m)]


W5_TRANSPORTS = (
    Transport("shmplane-block", "shmplane", "block"),
    Transport("shmplane-default", "shmplane"),
    Transport("shmplane-spin", "shmplane", "spin"),
    Transport("pipe", "pipe"),
    Transport("socketpair", "socketpair"),
    Transport("posix-mq", "posix-mq", needs=("posix_ipc",)),
    Transport("zmq", "zmq", needs=("zmq",)),
    Transport("iceoryx2", "iceoryx2", needs=("iceoryx2",)),
)
RR_TRANSPORTS = (
    Transport("shmplane-default", "shmplane"),
    Transport("shmplane-spin", "shmplane", "spin"),
    Transport("pipe", "pipe"),
    Transport("socketpair", "socketpair"),
)
ASYNC_PINGPONG = (
    Transport("socketpair-asyncio", "socketpair"),
    Transport("socketpair-uvloop", "socketpair", loop="uvloop", needs=("uvloop",)),
    Transport("shmplane-asyncio", "shmplane"),
    Transport("shmplane-uvloop", "shmplane", loop="uvloop", needs=("uvloop",)),
)
ASYNC_STREAM = (
    Transport("socketpair-asyncio-stream", "socketstream"),
    Transport(
        "socketpair-uvloop-stream", "socketstream", loop="uvloop", needs=("uvloop",)
    ),
    Transport("shmplane-asyncio-stream", "shmplane"),
    Transport("shmplane-uvloop-stream", "shmplane", loop="uvloop", needs=("uvloop",)),
)


class Stats(TypedDict):
    """Latency statistics in microseconds (nearest-rank percentiles)."""

    n: int
    mean: float
    p50: float
    p99: float
    p999: float


def summarize(lat_ns: Sequence[int]) -> Stats:
    if not lat_ns:
        raise ValueError("no latencies")
    s = sorted(lat_ns)

    def pct(q: float) -> float:
        return s[max(0, math.ceil(q * len(s)) - 1)] / 1e3

    return Stats(
        n=len(s),
        mean=sum(s) / len(s) / 1e3,
        p50=pct(0.50),
        p99=pct(0.99),
        p999=pct(0.999),
    )


Row = dict[str, Any]


def run_w5(t: Transport, seconds: float, period_ms: float, hogs: int) -> Row:
    period_ns = int(period_ms * 1e6)
    n_msgs = W5_WARMUP + max(1, int(seconds * 1e3 / period_ms))
    with contextlib.ExitStack() as stack:
        kids = _Children(stack)
        kids.hogs(hogs)
        link = make_link(t.kind, t.policy, stack)
        cons, cons_conn = kids.start(f"{t.name}-consumer", _w5_consumer, link.rx)
        info = _expect(cons, cons_conn, "ready", START_TIMEOUT_S)
        prod, prod_conn = kids.start(
            f"{t.name}-producer", _w5_producer, link.tx, n_msgs, period_ns
        )
        _expect(prod, prod_conn, "ready", START_TIMEOUT_S)
        for release in link.release:
            release()
        prod_conn.send("go")
        budget = n_msgs * period_ms / 1e3 * 2 + 30
        res = _expect(cons, cons_conn, "ok", budget)
        pres = _expect(prod, prod_conn, "ok", 30)
    lat = res.pop("lat_ns")[W5_WARMUP:]
    return {
        "name": t.name,
        "policy": info,
        "hogs": hogs,
        "stats": summarize(lat),
        "cpu_pct": 100.0 * res["cpu_s"] / res["wall_s"],
        "consumer": res,
        "producer": pres,
        "lat_ns": lat,
    }


def run_rr(t: Transport, round_trips: int, warmup: int) -> Row:
    with contextlib.ExitStack() as stack:
        kids = _Children(stack)
        req = make_link(t.kind, t.policy, stack)
        rep = make_link(t.kind, t.policy, stack)
        srv, srv_conn = kids.start(f"{t.name}-server", _rr_server, req.rx, rep.tx)
        info = _expect(srv, srv_conn, "ready", START_TIMEOUT_S)
        cli, cli_conn = kids.start(
            f"{t.name}-client", _rr_client, req.tx, rep.rx, warmup + round_trips
        )
        _expect(cli, cli_conn, "ready", START_TIMEOUT_S)
        for release in req.release + rep.release:
            release()
        cli_conn.send("go")
        res = _expect(cli, cli_conn, "ok", 120)
        _expect(srv, srv_conn, "ok", 30)
    lat = res["lat_ns"][warmup:]
    return {"name": t.name, "policy": info, "stats": summarize(lat), "lat_ns": lat}


def run_async_pingpong(t: Transport, round_trips: int, warmup: int) -> Row:
    with contextlib.ExitStack() as stack:
        kids = _Children(stack)
        req = make_link(t.kind, t.policy, stack)
        rep = make_link(t.kind, t.policy, stack)
        srv, srv_conn = kids.start(f"{t.name}-server", _rr_server, req.rx, rep.tx)
        _expect(srv, srv_conn, "ready", START_TIMEOUT_S)
        cli, cli_conn = kids.start(
            f"{t.name}-client",
            _async_client,
            req.tx,
            rep.rx,
            warmup + round_trips,
            t.loop,
            100.0,
        )
        _expect(cli, cli_conn, "ready", START_TIMEOUT_S)
        for release in req.release + rep.release:
            release()
        cli_conn.send("go")
        res = _expect(cli, cli_conn, "ok", 120)
        _expect(srv, srv_conn, "ok", 30)
    lat = res["lat_ns"][warmup:]
    return {"name": t.name, "loop": t.loop, "stats": summarize(lat), "lat_ns": lat}


def run_async_stream(t: Transport, n_msgs: int) -> Row:
    with contextlib.ExitStack() as stack:
        kids = _Children(stack)
        link = make_link(t.kind, t.policy, stack)
        cons, cons_conn = kids.start(
            f"{t.name}-consumer", _async_stream_consumer, link.rx, t.loop, 100.0
        )
        _expect(cons, cons_conn, "ready", START_TIMEOUT_S)
        prod, prod_conn = kids.start(
            f"{t.name}-producer", _stream_producer, link.tx, n_msgs
        )
        _expect(prod, prod_conn, "ready", START_TIMEOUT_S)
        for release in link.release:
            release()
        prod_conn.send("go")
        res = _expect(cons, cons_conn, "ok", 120)
        _expect(prod, prod_conn, "ok", 30)
    if res["count"] != n_msgs:
        raise RuntimeError(f"received {res['count']} of {n_msgs} messages")
    rate = (n_msgs - 1) / res["wall_s"] if res["wall_s"] > 0 else math.nan
    return {
        "name": t.name,
        "loop": t.loop,
        "count": n_msgs,
        "wall_s": res["wall_s"],
        "msg_per_s": rate,
    }


# --------------------------------------------------------------------------- reporting


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


def _by_name(rows: Sequence[Row]) -> dict[str, Row]:
    return {r["name"]: r for r in rows if "stats" in r}


def w5_table(rows: Sequence[Row], with_hogs: bool) -> str:
    ok = _by_name(rows)
    pipe_cpu = ok["pipe"]["cpu_pct"] if "pipe" in ok else None
    mq_p50 = ok["posix-mq"]["stats"]["p50"] if "posix-mq" in ok else None
    block_p50 = ok["shmplane-block"]["stats"]["p50"] if "shmplane-block" in ok else None
    header = [
        "transport",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "CPU %",
        "CPU x pipe",
        "p50 x posix-mq",
    ]
    if with_hogs:
        header.append("p50 x shmplane-block")
    lines = []
    for r in rows:
        if "stats" not in r:
            lines.append([r["name"], "FAILED", *["-"] * (len(header) - 2)])
            continue
        s = r["stats"]
        line = [
            r["name"],
            f"{s['p50']:.1f}",
            f"{s['p99']:.1f}",
            f"{s['p999']:.1f}",
            f"{r['cpu_pct']:.1f}",
            _ratio(r["cpu_pct"], pipe_cpu),
            _ratio(s["p50"], mq_p50),
        ]
        if with_hogs:
            line.append(
                _ratio(s["p50"], block_p50) if r["name"].startswith("shmplane") else ""
            )
        lines.append(line)
    return format_table(header, lines)


def latency_table(rows: Sequence[Row]) -> str:
    lines = []
    for r in rows:
        if "stats" not in r:
            lines.append([r["name"], "FAILED", "-", "-"])
            continue
        s = r["stats"]
        lines.append(
            [r["name"], f"{s['p50']:.1f}", f"{s['p99']:.1f}", f"{s['p999']:.1f}"]
        )
    return format_table(["transport", "p50 us", "p99 us", "p99.9 us"], lines)


def _selected(name: str, only: Sequence[str], skip: Sequence[str]) -> bool:
    def match(patterns: Sequence[str]) -> bool:
        return any(name == p or name.startswith(p + "-") for p in patterns)

    return (not only or match(only)) and not match(skip)


def _run_rows(
    transports: Sequence[Transport],
    args: argparse.Namespace,
    run: Callable[[Transport], Row],
    notes: list[str],
    desc: str = "",
) -> list[Row]:
    rows: list[Row] = []
    for t in plots.progress(transports, desc=desc):
        if not _selected(t.name, args.only, args.skip):
            continue
        missing = t.missing()
        if missing:
            note = f"  {t.name}: skipped, {', '.join(missing)} is not installed"
            print(note)
            notes.append(note.strip())
            continue
        try:
            rows.append(run(t))
        except Exception as exc:  # one broken transport must not sink the run
            print(f"  {t.name}: FAILED: {exc}", file=sys.stderr)
            rows.append({"name": t.name, "error": str(exc)})
    return rows


def _merge_rounds(rounds: list[list[Row]]) -> list[Row]:
    """One row per transport from several interleaved rounds: latencies pooled, CPU
    as total CPU time over total wall time; a round that failed fails the row."""
    merged: dict[str, Row] = {}
    order: list[str] = []
    for rows in rounds:
        for row in rows:
            name = row["name"]
            if name not in merged:
                order.append(name)
                merged[name] = dict(row)
                merged[name]["lat_ns"] = list(row.get("lat_ns", []))
                if "error" not in row:
                    merged[name]["consumer"] = dict(row["consumer"])
                continue
            m = merged[name]
            if "error" in m:
                continue
            if "error" in row:
                merged[name] = {"name": name, "error": row["error"]}
                continue
            m["lat_ns"].extend(row["lat_ns"])
            m["consumer"]["cpu_s"] += row["consumer"]["cpu_s"]
            m["consumer"]["wall_s"] += row["consumer"]["wall_s"]
    for m in merged.values():
        if "error" not in m:
            m["stats"] = summarize(m["lat_ns"])
            m["cpu_pct"] = 100.0 * m["consumer"]["cpu_s"] / m["consumer"]["wall_s"]
    return [merged[n] for n in order]


def plot_w5(out: dict[str, Any], args: argparse.Namespace, directory: Path) -> list[Path]:
    """Draw the ``w5`` / ``w5hogs`` rows of ``out`` as consumer CPU against wake
    latency (``wakeup-cpu-vs-latency.png`` in ``directory``); nothing if neither ran."""
    panels: dict[str, dict[str, plots.CpuLatency]] = {}
    for workload, hogs in (("w5", 0), ("w5hogs", args.hogs)):
        points = {
            r["name"]: plots.CpuLatency(r["cpu_pct"], r["stats"]["p50"], r["stats"]["p99"])
            for r in out.get(workload, [])
            if "stats" in r
        }
        if points:
            panels[f"{workload}: {hogs} CPU hogs"] = points
    if not panels:
        return []
    title = (
        f"wake-up: 1 message per {args.period_ms:g} ms, {args.seconds:g} s per transport "
        f"in {args.rounds} rounds; the consumer's CPU while it waits against its wake latency"
    )
    return [plots.cpu_vs_latency(panels, title, directory / "wakeup-cpu-vs-latency.png")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="w5 run length per transport"
    )
    parser.add_argument(
        "--period-ms", type=float, default=1.0, help="w5 message period"
    )
    parser.add_argument(
        "--hogs", type=int, default=2, help="busy-loop processes in w5hogs"
    )
    parser.add_argument(
        "--rounds", type=int, default=5,
        help="w5: interleaved rounds of seconds/rounds each (default 5)"
    )
    parser.add_argument(
        "--round-trips", type=int, default=20_000, help="rr / async ping-pong"
    )
    parser.add_argument(
        "--stream-messages", type=int, default=100_000, help="async stream"
    )
    parser.add_argument(
        "--only", default="", help="NAME[,NAME]: transports (or name prefixes) to run"
    )
    parser.add_argument(
        "--skip",
        default="",
        help="NAME[,NAME]: transports (or name prefixes) not to run",
    )
    parser.add_argument(
        "--workloads", default="w5,w5hogs,rr,async", help="subset of w5,w5hogs,rr,async"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 1 s runs, 2000 round trips"
    )
    parser.add_argument("--json", metavar="PATH", help="dump the raw figures here")
    plots.add_plot_option(parser, "wakeup-cpu-vs-latency.png (w5, w5hogs)")
    args = parser.parse_args(argv)
    plot_dir = plots.plot_dir(args.plot)
    args.only = [s for s in args.only.split(",") if s]
    args.skip = [s for s in args.skip.split(",") if s]
    if args.quick:
        args.seconds = min(args.seconds, 1.0)
        args.round_trips = min(args.round_trips, 2000)
        args.stream_messages = min(args.stream_messages, 20_000)
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = set(workloads) - {"w5", "w5hogs", "rr", "async"}
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    rr_warmup = max(100, args.round_trips // 10)

    notes: list[str] = []
    native = shmplane._shmplane.__file__ or "?"
    built = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.stat(native).st_mtime))
    out: dict[str, Any] = {
        "args": {k: v for k, v in vars(args).items()},
        "host": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "loadavg_start": os.getloadavg(),
            "shmplane_native": native,
            "shmplane_built": built,
        },
        "notes": notes,
    }
    print(
        f"wakeup bench: {os.cpu_count()} CPUs, python {sys.version.split()[0]}, "
        f"load average {os.getloadavg()[0]:.2f} at start, shmplane built {built}"
    )

    w5_label = (
        f"1 msg per {args.period_ms:g} ms for {args.seconds:g} s "
        f"in {args.rounds} interleaved rounds, each after {W5_WARMUP} warm-up"
    )
    for workload, hogs in (("w5", 0), ("w5hogs", args.hogs)):
        if workload not in workloads:
            continue
        if workload == "w5hogs" and hogs <= 0:
            print("\nw5hogs: skipped (--hogs 0)")
            continue
        print(
            f"\n{workload}: {w5_label}, {hogs} CPU hogs; consumer CPU in % of one core"
        )

        def w5(t: Transport, hogs: int = hogs) -> Row:
            return run_w5(t, args.seconds / args.rounds, args.period_ms, hogs)

        # Rounds: every transport runs `rounds` times for seconds/rounds, interleaved,
        # so that this machine's drift (load, vCPU wake-up costs) hits all alike.
        rounds = [
            _run_rows(W5_TRANSPORTS, args, w5, notes, f"{workload} round {i + 1}")
            for i in range(args.rounds)
        ]
        rows = _merge_rounds(rounds)
        print(w5_table(rows, with_hogs=hogs > 0))
        out[workload] = rows

    if "rr" in workloads:
        print(
            f"\nrr: {MSG_SIZE}-byte request/reply, {args.round_trips} round trips "
            f"after {rr_warmup} warm-up"
        )
        rows = _run_rows(
            RR_TRANSPORTS,
            args,
            lambda t: run_rr(t, args.round_trips, rr_warmup),
            notes,
            "rr",
        )
        print(latency_table(rows))
        ok = _by_name(rows)
        if "shmplane-default" in ok and "shmplane-spin" in ok:
            d, s = (
                ok["shmplane-default"]["stats"]["p50"],
                ok["shmplane-spin"]["stats"]["p50"],
            )
            print(f"shmplane default / spin p50: {_ratio(d, s)}")
        out["rr"] = rows

    if "async" in workloads:
        has_async = shmplane_has_asyncio()
        if not has_async:
            note = "shmplane asyncio: not available in this build"
            print(f"\n{note}")
            notes.append(note)
        pingpong = [t for t in ASYNC_PINGPONG if has_async or t.kind != "shmplane"]
        stream = [t for t in ASYNC_STREAM if has_async or t.kind != "shmplane"]
        print(
            f"\nasync ping-pong: {MSG_SIZE}-byte request/reply from a coroutine, "
            f"{args.round_trips} round trips after {rr_warmup} warm-up "
            "(server: blocking)"
        )
        rows = _run_rows(
            pingpong,
            args,
            lambda t: run_async_pingpong(t, args.round_trips, rr_warmup),
            notes,
        )
        print(latency_table(rows))
        out["async_pingpong"] = rows
        print(
            f"\nasync stream: `async for` over {args.stream_messages} "
            f"{MSG_SIZE}-byte messages"
        )
        srows = _run_rows(
            stream, args, lambda t: run_async_stream(t, args.stream_messages), notes
        )
        print(
            format_table(
                ["transport", "msg/s"],
                [
                    [
                        r["name"],
                        f"{r['msg_per_s']:,.0f}" if "msg_per_s" in r else "FAILED",
                    ]
                    for r in srows
                ],
            )
        )
        out["async_stream"] = srows

    out["host"]["loadavg_end"] = os.getloadavg()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, default=str)
        print(f"\nraw figures: {args.json}")
    if plot_dir is not None:
        written = plot_w5(out, args, plot_dir)
        if written:
            print(f"\nplots: {', '.join(str(p) for p in written)}")
    failed = [
        r["name"]
        for k in ("w5", "w5hogs", "rr", "async_pingpong", "async_stream")
        for r in out.get(k, [])
        if "error" in r
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
