"""iceoryx2 request-response as a Python RPC peer: an echo server and a timing client.

:func:`serve` is the body of a server process and :func:`round_trips` the client; both
are module-level so that a ``multiprocessing`` *spawn* child can import them. The
request and the response are both ``ctypes.c_uint8 * size`` (iceoryx2's Python binding
only moves fixed-size ``ctypes`` types, ``Slice`` s or flatbuffers; a fixed array is the
cheapest). The server copies each request's bytes into a loaned response
(``ctypes.memmove`` between the two shared-memory payloads) and sends it back.

How the two sides wait (``wait=``, the same on both sides; default ``"spin"``):

``"spin"`` (default, the lowest latency)
    Busy polling: the server loops on ``Server.receive()`` and the client on
    ``PendingResponse.receive()``. iceoryx2's request-response ports carry no wake-up
    of their own (``Server`` / ``PendingResponse`` cannot be attached to a ``WaitSet``;
    a ``WaitSet`` only takes event ``Listener`` s, fds, intervals and deadlines). Its
    own examples either poll ``receive()`` after ``node.wait(cycle_time)`` (a sleep: 100
    ms/1 s cycles there, far too slow for RPC) or pair the service with event services.
    Polling ``receive()`` with no sleep is the fastest the library allows; it costs one
    busy core per side. Every ``_POLL_EVERY`` empty polls the server checks its control
    pipe (EOF or any message ends it) and the client its watchdog.
``"yield"``
    The same polling with ``os.sched_yield()`` after an empty poll: kinder to a machine
    with fewer cores than busy processes, a little slower when cores are free.
``"event"``
    Blocking, the way iceoryx2 documents for request-response with wake-ups
    (``examples/python/request_response_with_events``): two event services next to the
    request-response one, ``<name>/req_ev`` (client notifies, server's ``Listener``
    waits) and ``<name>/res_ev`` (server notifies, client's ``Listener`` waits). No core
    burns while idle, but every call costs two notify/wake-ups. With several clients
    every client is woken by every response; each re-checks its own
    ``PendingResponse`` and waits again, so that stays correct.

Self-test: ``python benches/python/iox_rr.py [n] [size] [wait]`` spawns a server, makes
``n`` timed round trips (default 2000) and prints p50/p99 in microseconds.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

WAIT_MODES = ("spin", "yield", "event")
_POLL_EVERY = 1024  # empty polls between watchdog / control-pipe checks
_EVENT_SLICE_S = 0.05  # longest single Listener wait (the watchdog runs between them)
_CONNECT_RETRY_S = 0.001


def _payload_type(size: int) -> Any:
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    return ctypes.c_uint8 * size


def _open(service_name: str, size: int, wait: str) -> tuple[Any, Any, Any, Any, Any]:
    """``(iox2, node, request-response service, req event service, res event service)``;
    the event services are None unless ``wait == "event"``."""
    if wait not in WAIT_MODES:
        raise ValueError(f"wait must be one of {WAIT_MODES}, got {wait!r}")
    try:
        import iceoryx2 as iox2
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise NotImplementedError("iceoryx2 is not installed (pip install iceoryx2)") from e
    if not hasattr(iox2.ServiceBuilder, "request_response"):
        raise NotImplementedError(f"this iceoryx2 ({getattr(iox2, '__version__', '?')}) has no request-response in Python")

    iox2.set_log_level(iox2.LogLevel.Error)
    # Disabled: SIGTERM/SIGINT keep their default action, so Process.terminate() ends a
    # busy-polling server (HandleTerminationRequests would only report them via node.wait).
    node = iox2.NodeBuilder.new().signal_handling_mode(iox2.SignalHandlingMode.Disabled).create(iox2.ServiceType.Ipc)
    payload = _payload_type(size)
    svc = node.service_builder(iox2.ServiceName.new(service_name)).request_response(payload, payload).open_or_create()
    req_ev = res_ev = None
    if wait == "event":
        req_ev = node.service_builder(iox2.ServiceName.new(service_name + "/req_ev")).event().open_or_create()
        res_ev = node.service_builder(iox2.ServiceName.new(service_name + "/res_ev")).event().open_or_create()
    return iox2, node, svc, req_ev, res_ev


def serve(service_name: str, ready: Connection, size: int = 64, *, wait: str = "spin") -> None:
    """Server process body: echo every request of ``service_name`` (``size``-byte
    ``ctypes.c_uint8`` arrays both ways) until killed or until ``ready`` sees a message
    or EOF.

    Creates an iceoryx2 node, the request-response service (open_or_create) and a
    server port, sends ``"ready"`` on ``ready``, then loops: take each request
    (``Server.receive()``), loan a response from it, ``memmove`` the request's bytes
    into it, send it, release the request.

    Waiting (``wait``, see the module docstring): ``"spin"`` (default) busy-polls
    ``Server.receive()``: the lowest-latency way iceoryx2 offers, since request-response
    ports have no wake-up of their own; ``"yield"`` adds ``os.sched_yield()`` after an
    empty poll; ``"event"`` blocks on an event ``Listener`` that the client notifies
    after each request and notifies the client's after each response.
    """
    iox2, node, svc, req_ev, res_ev = _open(service_name, size, wait)
    server = svc.server_builder().create()
    listener = req_ev.listener_builder().create() if req_ev is not None else None
    notifier = res_ev.notifier_builder().create() if res_ev is not None else None
    memmove = ctypes.memmove
    do_yield = os.sched_yield if wait == "yield" else None
    slice_ = iox2.Duration.from_secs_f64(_EVENT_SLICE_S)
    can_poll = True

    def stop_requested() -> bool:
        nonlocal can_poll
        if not can_poll:
            return False
        try:
            return ready.poll()  # a message or EOF (the parent went away)
        except (OSError, ValueError):  # a write-only or closed end: only a signal stops us
            can_poll = False
            return False

    ready.send("ready")
    try:
        idle = 0
        while True:
            active = server.receive()
            if active is None:
                if listener is not None:
                    listener.timed_wait(slice_)  # consumes the pending activations
                    if stop_requested():
                        return
                    continue
                idle += 1
                if idle >= _POLL_EVERY:
                    idle = 0
                    if stop_requested():
                        return
                if do_yield is not None:
                    do_yield()
                continue
            idle = 0
            response = active.loan_uninit()
            memmove(response.payload_ptr, active.payload_ptr, size)
            response.assume_init().send()
            active.delete()
            if notifier is not None:
                notifier.notify()
    finally:
        for port in (notifier, listener, server):
            if port is not None:
                port.delete()


def round_trips(service_name: str, n: int, size: int = 64, timeout_s: float = 30.0, *, wait: str = "spin") -> list[int]:
    """Client: ``n`` timed echo round trips over ``service_name``, in nanoseconds.

    Opens the service (waiting up to ``timeout_s`` for a server to appear), makes
    ``n // 10`` warm-up round trips (each checks that the echo matches what was sent),
    then ``n`` timed ones: loan a ``size``-byte request, write it, send it, wait for the
    response (busy polling ``PendingResponse.receive()`` with ``wait="spin"``, see
    :func:`serve` for the others), release both; ``time.perf_counter_ns()`` around each
    whole call. Raises ``TimeoutError`` if one round trip takes longer than
    ``timeout_s`` (the watchdog is checked every ``_POLL_EVERY`` empty polls) and
    ``ConnectionError`` if the server drops a request without answering it.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    iox2, node, svc, req_ev, res_ev = _open(service_name, size, wait)
    client = svc.client_builder().create()
    listener = res_ev.listener_builder().create() if res_ev is not None else None
    notifier = req_ev.notifier_builder().create() if req_ev is not None else None
    do_yield = os.sched_yield if wait == "yield" else None
    slice_ = iox2.Duration.from_secs_f64(min(_EVENT_SLICE_S, timeout_s))
    timeout_ns = int(timeout_s * 1e9)
    now = time.perf_counter_ns
    memmove = ctypes.memmove
    payload = _payload_type(size)
    buf = payload()  # the request's bytes: a counter in the first (up to) 8 bytes
    tag_len = min(8, size)

    def call(check: bool) -> None:
        t0 = now()
        request = client.loan_uninit()
        memmove(request.payload_ptr, buf, size)
        pending = request.assume_init().send()
        if notifier is not None:
            notifier.notify()
        spins = 0
        while True:
            response = pending.receive()
            if response is not None:
                break
            if listener is not None:
                listener.timed_wait(slice_)
                spins = _POLL_EVERY
            else:
                spins += 1
                if do_yield is not None:
                    do_yield()
            if spins >= _POLL_EVERY:
                spins = 0
                if now() - t0 > timeout_ns:
                    pending.delete()
                    raise TimeoutError(f"iceoryx2 round trip on {service_name!r} took over {timeout_s} s")
                if not pending.is_connected:
                    response = pending.receive()  # the response may have raced the drop
                    if response is not None:
                        break
                    pending.delete()
                    raise ConnectionError(f"iceoryx2 server of {service_name!r} dropped a request unanswered")
        if check and ctypes.string_at(response.payload_ptr, size) != bytes(buf):
            raise RuntimeError("iceoryx2 echo mismatch")
        response.delete()
        pending.delete()

    try:
        _wait_for_server(client, size, timeout_s, service_name)
        for i in range(n // 10):
            memmove(buf, i.to_bytes(8, "little"), tag_len)
            call(True)
        out = [0] * n
        for i in range(n):
            t = now()
            call(False)
            out[i] = now() - t
        return out
    finally:
        for port in (notifier, listener, client):
            if port is not None:
                port.delete()


def _wait_for_server(client: Any, size: int, timeout_s: float, service_name: str) -> None:
    """Block until a request reaches a server (the server may still be starting)."""
    deadline = time.monotonic() + timeout_s
    while True:
        request = client.loan_uninit()
        ctypes.memset(request.payload_ptr, 0, size)
        pending = request.assume_init().send()
        connected = pending.number_of_server_connections
        if connected:
            # Drain this probe's echo so that it does not linger in the buffers.
            while pending.receive() is None:
                if time.monotonic() > deadline:
                    pending.delete()
                    raise TimeoutError(f"no response from the iceoryx2 server of {service_name!r} within {timeout_s} s")
            pending.delete()
            return
        pending.delete()
        if time.monotonic() > deadline:
            raise TimeoutError(f"no iceoryx2 server for {service_name!r} within {timeout_s} s")
        time.sleep(_CONNECT_RETRY_S)


# ------------------------------------------------------------------ self-test


def _pct(sorted_ns: list[int], q: float) -> float:
    i = min(len(sorted_ns) - 1, max(0, round(q * (len(sorted_ns) - 1))))
    return sorted_ns[i] / 1e3


def _self_test(n: int, size: int, wait: str) -> int:
    ctx = multiprocessing.get_context("spawn")
    name = f"iox-rr-selftest-{os.getpid()}-{time.time_ns()}"
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=serve, args=(name, child, size), kwargs={"wait": wait}, name="iox-rr-server", daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(60):
            raise TimeoutError("the iceoryx2 server sent no ready signal within 60 s")
        got = parent.recv()
        if got != "ready":
            raise RuntimeError(f"expected 'ready', got {got!r}")
        t = time.perf_counter()
        lat = sorted(round_trips(name, n, size, timeout_s=10.0, wait=wait))
        wall = time.perf_counter() - t
        print(
            f"iceoryx2 request-response echo, {size} B, wait={wait}: {n} round trips (+{n // 10} warm-up) in {wall:.2f} s; "
            f"p50 {_pct(lat, 0.5):.1f} us, p99 {_pct(lat, 0.99):.1f} us, min {lat[0] / 1e3:.1f} us, max {lat[-1] / 1e3:.1f} us"
        )
    finally:
        parent.close()  # EOF: the server leaves its loop at its next control check
        proc.join(5)
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    print(f"server exit code: {proc.exitcode}")
    return 0


if __name__ == "__main__":
    _n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    _size = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    _wait = sys.argv[3] if len(sys.argv) > 3 else "spin"
    sys.exit(_self_test(_n, _size, _wait))
