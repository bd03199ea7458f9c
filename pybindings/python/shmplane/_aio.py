"""asyncio for channels and slots: ``recv_async``, ``send_async``, ``async for``,
``wait``, and a slot's ``wait_for_update_async``.

No helper thread per endpoint: a coroutine tries the non-blocking call, and when it
would block it waits on the endpoint's readiness descriptor (``fileno()``: the read end
of the channel's doorbell FIFO, re-armed by that very call) with the event loop's
``add_reader``, then tries again. Peers write to the doorbell only while a handle waits
this way, so the send path of a channel nobody awaits makes no system call.

- Any number of coroutines may await one endpoint: one reader callback per descriptor
  wakes them all, and each tries its call again.
- Every wait is cut into slices of ``SLICE`` seconds: at the end of a slice without a
  ring the peer's liveness is checked (``PeerDeadError``/``DisconnectedError``), so a
  peer whose doorbell write end lives on elsewhere (a ``fork`` child that inherited its
  handle) is still seen to die, and a handle closed meanwhile raises ``ClosedError``.
- A descriptor that keeps reporting ready while the call still cannot proceed (another
  copy of the endpoint holds it for a message in progress) is retried after a short,
  growing sleep instead of in a busy loop.

Cancelling an awaiting coroutine loses nothing: a message is either returned, or it
stays in the channel (the receive happens in one non-blocking call after the wait).

Limits: a message larger than the ring is sent from a thread of the loop's default
executor (``try_send`` cannot stream it without blocking); such a send, once started,
completes even if the awaiting coroutine is cancelled, and while it runs the endpoint
is busy (other calls on it from the loop raise ``InvalidArgumentError``). A receive that
finds the first part of a chunked message takes the rest in the same call, blocking
the loop while the sender streams it (the sender is mid-message then, so this is short
unless the sender stalls).
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing.connection
import time
import weakref
from collections.abc import Iterable
from typing import Any

from .errors import CorruptSegmentError, DisconnectedError, Empty, Full, NotFoundError, ShmplaneOSError, Timeout

#: Seconds between liveness checks of the peer while a coroutine waits.
SLICE = 0.05

# One reader callback per (loop, descriptor); every coroutine waiting there has a future.
_waiters: dict[tuple[int, int], set[asyncio.Future[bool]]] = {}


async def _readable(fd: int, deadline: float | None) -> bool:
    """Wait until ``fd`` is readable (``True``), or the slice or ``deadline`` (loop time)
    ends (``False``)."""
    loop = asyncio.get_running_loop()
    key = (id(loop), fd)
    futs = _waiters.get(key)
    if futs is None:
        futs = _waiters[key] = set()

        def ready() -> None:
            for f in list(_waiters.get(key, ())):
                if not f.done():
                    f.set_result(True)

        loop.add_reader(fd, ready)
    fut: asyncio.Future[bool] = loop.create_future()
    futs.add(fut)
    wait = SLICE if deadline is None else max(0.0, min(SLICE, deadline - loop.time()))
    def slice_over() -> None:
        if not fut.done():
            fut.set_result(False)

    timer = loop.call_later(wait, slice_over)
    try:
        return await fut
    finally:
        timer.cancel()
        futs.discard(fut)
        if not futs:
            del _waiters[key]
            loop.remove_reader(fd)


def _deadline(timeout: float | None) -> float | None:
    if timeout is None or timeout == math.inf:
        return None
    if not timeout >= 0:  # also NaN
        raise ValueError(f"timeout must be None, inf or a number of seconds >= 0, got {timeout}")
    return asyncio.get_running_loop().time() + timeout


async def _wait_turn(endpoint: Any, fd: int, deadline: float | None, misses: int) -> int:
    """One wait of a retry loop; returns the new count of rings that did not help."""
    if deadline is not None and asyncio.get_running_loop().time() >= deadline:
        raise Timeout("timed out")
    if misses >= 2:
        # Rung, yet the call could not proceed, twice: another copy of this endpoint
        # holds it (a message in progress). Back off instead of spinning.
        await asyncio.sleep(min(0.0005 * 2 ** (misses - 2), SLICE))
    if await _readable(fd, deadline):
        return misses + 1
    endpoint._check_peer()  # a slice without a ring: is the peer still there?
    return 0


async def recv_async(rx: Any, timeout: float | None = None) -> Any:
    """Receive the next object without blocking the event loop.

    Args:
        rx: a ``shmplane.Receiver``.
        timeout: seconds (``None``: no limit).

    Raises:
        Timeout: nothing arrived within ``timeout``.
        DisconnectedError, PeerDeadError, TruncatedMessageError, ClosedError, ...: as
        ``recv`` (a dead or closed sender is seen within one ``SLICE``).
        ValueError: a negative or NaN timeout.
    """
    deadline = _deadline(timeout)
    misses = 0
    while True:
        try:
            return rx.try_recv()
        except Empty:
            pass
        # fileno() arms the doorbell: readable at once if a message came meanwhile.
        misses = await _wait_turn(rx, rx.fileno(), deadline, misses)


async def send_async(tx: Any, obj: Any, timeout: float | None = None) -> None:
    """Send ``obj`` without blocking the event loop (see the module's limits).

    Args:
        tx: a ``shmplane.Sender``.
        obj: bytes-like, ``numpy.ndarray`` or any picklable object.
        timeout: seconds (``None``: no limit).

    Raises:
        Timeout: no room within ``timeout``.
        DisconnectedError, PeerDeadError, ClosedError, ...: as ``send``.
        ValueError: a negative or NaN timeout.
    """
    deadline = _deadline(timeout)
    misses = 0
    need = _size_hint(obj, tx.max_message_size)
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
        try:
            fd = tx._space_fd(need)
        except (CorruptSegmentError, NotFoundError, ShmplaneOSError):
            # No usable doorbell (a mailbox lane's FIFO that another user planted, or
            # out of descriptors): wait in a thread instead.
            loop = asyncio.get_running_loop()
            left = None if deadline is None else max(0.0, deadline - loop.time())
            await loop.run_in_executor(None, tx.send, obj, left)
            return
        misses = await _wait_turn(tx, fd, deadline, misses)


def _size_hint(obj: Any, most: int) -> int:
    """Bytes of room to wait for: an over-estimate of ``obj``'s record (waiting for too
    little would wake us for room that does not fit it, over and over)."""
    try:
        n = memoryview(obj).nbytes
    except TypeError:
        return most  # a pickle: its size is unknown until it is encoded
    return min(most, n + 1024)  # the message head: dtype, shape, order


async def slot_update(slot: Any, since: int, timeout: float | None = None) -> int:
    """Wait until ``slot.version > since`` without blocking the event loop; return the
    new version.

    Args:
        slot: a ``shmplane.ByteSlot`` (what ``RawValue``/``RawArray`` wrap).
        since: the version last seen.
        timeout: seconds (``None``: no limit).

    Raises:
        Timeout: nothing was written within ``timeout``.
        ClosedError: the handle was closed.
        ValueError: a negative or NaN timeout.
        TypeError: ``since`` is not an int.
        OverflowError: ``since`` is negative or not below 2**64 (as the blocking
            ``wait_for_update`` raises).
    """
    if not isinstance(since, int):
        raise TypeError(f"since must be an int (a version), not {type(since).__name__}")
    if since < 0 or since >= 1 << 64:
        # As the blocking wait_for_update (a u64 argument) raises.
        raise OverflowError(f"since={since} is not a version (0 <= since < 2**64)")
    loop = asyncio.get_running_loop()
    deadline = _deadline(timeout)
    while True:
        v: int = slot.version
        if v > since:
            return v
        if deadline is not None and loop.time() >= deadline:
            raise Timeout("timed out")
        # Arms this handle's doorbell: readable at once if a write came meanwhile.
        fd = slot._update_fd(since)
        if fd is None:
            # Every doorbell entry of the slot is taken by other readers: poll.
            await asyncio.sleep(0.001)
            continue
        await _readable(fd, deadline)


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
    ``fileno()``, mixed. Waits in slices of ``SLICE`` seconds, checking the peers of
    shmplane endpoints between them (a peer that dies is reported within one slice
    even where its doorbell shows no end-of-file).

    Args:
        object_list: the objects to wait on.
        timeout: seconds (``None`` or ``inf``: no limit); returns ``[]`` on timeout.

    Raises:
        ValueError: a negative or NaN timeout.
    """
    objs = list(object_list)
    if timeout is not None and not timeout >= 0:  # also NaN
        raise ValueError(f"timeout must be None, inf or a number of seconds >= 0, got {timeout}")
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = SLICE if deadline is None else max(0.0, min(SLICE, deadline - time.monotonic()))
        ready = multiprocessing.connection.wait(objs, left)
        if ready:
            return ready
        gone = []
        for o in objs:
            check = getattr(o, "_check_peer", None)
            if check is not None:
                try:
                    check()
                except Exception:  # gone (or closed): receiving/sending raises now
                    gone.append(o)
        if gone:
            return gone
        if deadline is not None and time.monotonic() >= deadline:
            return []


# One call at a time per client: coroutines of one event loop that share a client (an
# ``rpc.Proxy``'s methods do) take turns; the call number checks the rest. A lock per
# (client, loop): an asyncio.Lock belongs to the loop that first waits on it.
_call_locks: weakref.WeakKeyDictionary[Any, dict[int, asyncio.Lock]] = weakref.WeakKeyDictionary()


async def call_async(client: Any, obj: Any, timeout: float | None = None, retry: bool = False, copy: bool = True) -> Any:
    """Call an RPC server without blocking the event loop: the request is sent at once
    (a large one from a thread of the loop's default executor), then the reply is
    awaited on the client's readiness descriptor. Coroutines sharing one client take
    turns (a client makes one call at a time).

    ``copy=False``: the reply as a zero-copy view, as ``RpcClient.call(copy=False)``.

    Raises:
        As ``RpcClient.call``; ``Timeout`` after ``timeout`` seconds (the call may then
        be retried with ``retry=True``: it runs at most once).
    """
    loop = asyncio.get_running_loop()
    locks = _call_locks.setdefault(client, {})
    lock = locks.get(id(loop))
    if lock is None:
        for key in [k for k in locks if k != id(loop)]:
            if not locks[key].locked():
                del locks[key]  # a loop that is gone, most likely
        lock = locks[id(loop)] = asyncio.Lock()
    deadline = _deadline(timeout)
    if not lock.locked():
        await lock.acquire()  # free: taken at once (wait_for with no time left would refuse it)
    else:
        try:
            # The turn counts against the deadline; a call that times out waiting for it
            # sends nothing.
            await asyncio.wait_for(lock.acquire(), None if deadline is None else max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            raise Timeout("timed out waiting for this client's previous call to end") from None
    release = True
    try:
        try:
            seq = client._send_call(obj, 0.0, retry)  # all of it now, or Full and nothing sent
        except Full:
            # No room now: send from a thread (it waits there for room; retry: the same call).
            left = None if deadline is None else max(0.0, deadline - loop.time())
            sending = loop.run_in_executor(None, client._send_call, obj, left, True)
            try:
                seq = await asyncio.shield(sending)
            except asyncio.CancelledError:
                # The thread still holds the client, sending: the turn passes on only
                # when it is done (the next call would find the client busy).
                release = False
                sending.add_done_callback(lambda _: lock.release())
                raise
        misses = 0
        parts: list[Any] = []
        while True:
            try:
                got = client._next_part(0.0, seq, copy)
            except Empty:
                misses = await _wait_turn(client, client.fileno(), deadline, misses)
                continue
            if got is None:
                return parts if len(parts) != 1 else parts[0]
            part, more = got
            parts.append(part)
            if not more:
                return part if len(parts) == 1 else parts
    finally:
        if release:
            lock.release()


async def serve_async(server: Any, handler: Any) -> None:
    """Serve calls from the event loop: ``handler(value)`` (a function or a coroutine
    function) is awaited for each request in turn; its result is the reply, an
    exception it raises goes to the client as ``RemoteError``. Returns when the server
    is closed."""
    import inspect
    import traceback

    from .errors import ClosedError, ShmplaneError

    def answer_error(request: Any, e: BaseException) -> None:
        try:
            request.reply_error(type(e).__name__, str(e), "".join(traceback.format_exception(e)))
        except ShmplaneError:
            pass  # given up after the reply timeout, or closed: nothing more to do

    while True:
        try:
            request = await recv_async(server)
        except ClosedError:
            return
        except CorruptSegmentError:
            continue  # one client's corrupt lane: reported once, then skipped
        try:
            result = handler(request.value)
            if inspect.isawaitable(result):
                result = await result
        except Exception as e:  # noqa: BLE001  (sent to the client)
            answer_error(request, e)
            continue
        except BaseException as e:  # cancelled, KeyboardInterrupt: answer, then stop
            answer_error(request, e)
            raise
        try:
            request.reply(result)  # waits (blocking the loop) at most the reply timeout
        except Timeout:
            pass  # given up (the client did not make room): its retry is told ReplyLost
        except ClosedError:
            return
        except Exception as e:  # noqa: BLE001  (nothing sent: an unpicklable result, ...)
            answer_error(request, e)
