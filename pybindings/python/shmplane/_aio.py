"""asyncio for channels: ``recv_async``, ``send_async``, ``async for`` and ``wait``.

No helper thread per endpoint: a coroutine tries the non-blocking call, and when it
would block it waits on the endpoint's readiness descriptor (``fileno()``: the read end
of the channel's doorbell FIFO, re-armed by that very call) with the event loop's
``add_reader``, then tries again. Peers write to the doorbell only while a handle waits
this way, so the send path of a channel nobody awaits makes no system call.

Cancelling an awaiting coroutine loses nothing: a message is either returned, or it
stays in the channel (the receive happens in one non-blocking call after the wait).

Limits: a message larger than the ring is sent from a thread of the loop's default
executor (``try_send`` cannot stream it without blocking), and such a send, once
started, completes even if the awaiting coroutine is cancelled. A receive that finds
the first part of a chunked message takes the rest in the same call, blocking the loop
while the sender streams it (the sender is mid-message then, so this is short unless
the sender stalls).
"""

from __future__ import annotations

import asyncio
import multiprocessing.connection
from collections.abc import Iterable
from typing import Any

from .errors import DisconnectedError, Empty, Full, Timeout


async def _readable(fd: int, deadline: float | None) -> None:
    """Wait until ``fd`` is readable, or raise ``Timeout`` at ``deadline`` (loop time)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(fd, ready)
    try:
        if deadline is None:
            await fut
        else:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise Timeout("timed out")
            try:
                await asyncio.wait_for(fut, remaining)
            except asyncio.TimeoutError:
                raise Timeout("timed out") from None
    finally:
        loop.remove_reader(fd)


def _deadline(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if not timeout >= 0:  # also NaN
        raise ValueError(f"timeout must be None or a finite number of seconds >= 0, got {timeout}")
    return asyncio.get_running_loop().time() + timeout


async def recv_async(rx: Any, timeout: float | None = None) -> Any:
    """Receive the next object without blocking the event loop.

    Args:
        rx: a ``shmplane.Receiver``.
        timeout: seconds (``None``: no limit).

    Raises:
        Timeout: nothing arrived within ``timeout``.
        DisconnectedError, PeerDeadError, TruncatedMessageError, ...: as ``recv``.
    """
    deadline = _deadline(timeout)
    while True:
        try:
            return rx.try_recv()
        except Empty:
            pass
        # Arms the doorbell; readable at once if a message came meanwhile.
        await _readable(rx.fileno(), deadline)


async def send_async(tx: Any, obj: Any, timeout: float | None = None) -> None:
    """Send ``obj`` without blocking the event loop (see the module's limits).

    Args:
        tx: a ``shmplane.Sender``.
        obj: bytes-like, ``numpy.ndarray`` or any picklable object.
        timeout: seconds (``None``: no limit).

    Raises:
        Timeout: no room within ``timeout``.
        DisconnectedError, PeerDeadError, ...: as ``send``.
    """
    deadline = _deadline(timeout)
    while True:
        try:
            tx.try_send(obj)
            return
        except Full:
            pass
        if tx.poll_space(tx.max_message_size, 0.0):
            # The ring is free and the message still does not fit: it must stream
            # through in chunks, which only a blocking send can do.
            loop = asyncio.get_running_loop()
            left = None if deadline is None else max(0.0, deadline - loop.time())
            await loop.run_in_executor(None, tx.send, obj, left)
            return
        await _readable(tx._space_fd(_size_hint(obj, tx.max_message_size)), deadline)


def _size_hint(obj: Any, most: int) -> int:
    """Bytes of room to wait for: an over-estimate of ``obj``'s record (waiting for too
    little would wake us for room that does not fit it, over and over)."""
    try:
        n = memoryview(obj).nbytes
    except TypeError:
        return most  # a pickle: its size is unknown until it is encoded
    return min(most, n + 1024)  # the message head: dtype, shape, order


class AsyncReceive:
    """``async for obj in rx``: objects until the sender closes."""

    def __init__(self, rx: Any) -> None:
        self._rx = rx

    def __aiter__(self) -> AsyncReceive:
        return self

    async def __anext__(self) -> Any:
        try:
            # A message is usually there in a stream: no second coroutine for it.
            return self._rx.try_recv()
        except Empty:
            pass
        except DisconnectedError:
            raise StopAsyncIteration from None
        try:
            return await recv_async(self._rx)
        except DisconnectedError:
            raise StopAsyncIteration from None


def wait(object_list: Iterable[Any], timeout: float | None = None) -> list[Any]:
    """Wait until one or more of ``object_list`` is ready; return those that are.

    As ``multiprocessing.connection.wait``: the objects may be shmplane endpoints
    (a ``Receiver`` is ready when ``try_recv`` would not raise ``Empty``: a message,
    or its sender closed or died; a ``Sender`` when a small message fits again, or its
    receiver is gone), ``multiprocessing`` connections, sockets, or anything with a
    ``fileno()``, mixed.

    Args:
        object_list: the objects to wait on.
        timeout: seconds (``None``: no limit); returns ``[]`` on timeout.
    """
    return multiprocessing.connection.wait(object_list, timeout)
