"""Readiness that the OS can wait on: ``fileno()`` with ``select``/``selectors``/
``multiprocessing.connection.wait``, ``shmplane.wait`` over mixed objects, and asyncio
(``recv_async``, ``send_async``, ``async for``), with real processes.

The contract: a receiver's descriptor is readable iff ``try_recv`` would not raise
``Empty`` (a message, or the sender closed or died); a sender's once a small message
fits again (or the receiver is gone)."""

from __future__ import annotations

import asyncio
import importlib.util
import multiprocessing as mp
import os
import select
import selectors
import signal
import socket
import time
from typing import Any

import pytest

import shmplane
from shm_helpers import get_report

WATCHDOG = 60
METHODS = ["fork", "spawn", "forkserver"]


def readable(obj: Any, timeout: float = 0.0) -> bool:
    return bool(select.select([obj], [], [], timeout)[0])


# ------------------------------------------------------------------ children


def _send_later(tx: shmplane.Sender, items: list[Any], delay: float) -> int:
    with tx:
        for item in items:
            time.sleep(delay)
            tx.send(item, timeout=20)
    return len(items)


def _send_then_sleep(tx: shmplane.Sender, item: Any) -> None:
    tx.send(item, timeout=20)
    time.sleep(60)  # killed by the test


def _drain_after(rx: shmplane.Receiver, n: int, delay: float) -> int:
    with rx:
        time.sleep(delay)
        for _ in range(n):
            rx.recv(timeout=20)
    return n


def _echo(rx: shmplane.Receiver, tx: shmplane.Sender) -> int:
    n = 0
    with rx, tx:
        for obj in rx:
            tx.send(obj, timeout=20)
            n += 1
    return n


def _select_recv(rx: shmplane.Receiver, n: int) -> list[Any]:
    """In a child: wait for each message with select on the handed-over receiver."""
    got = []
    with rx:
        while len(got) < n:
            if select.select([rx], [], [], 20)[0]:
                got.append(rx.try_recv())
            else:
                raise TimeoutError("select never reported the message")
    return got


# ------------------------------------------------------------------ select / wait


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("method", METHODS)
def test_readiness_in_a_child_that_got_the_receiver(method: str, procs: Any) -> None:
    tx, rx = shmplane.channel(1 << 16)
    rx.fileno()  # armed in the parent first: the child's copy must still work
    with tx:
        p, conn = procs.start_reporting(_select_recv, rx, 3, method=method)
        rx.close()
        for i in range(3):
            time.sleep(0.02)
            tx.send(i, timeout=5)
        assert get_report(conn) == [0, 1, 2]
        procs.join(p)


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("method", METHODS)
def test_readable_iff_try_recv_would_not_raise_empty(method: str, procs: Any) -> None:
    tx, rx = shmplane.channel(1 << 16)
    with rx:
        assert not readable(rx)
        p, conn = procs.start_reporting(_send_later, tx, [b"a", b"b"], 0.05, method=method)
        tx.close()
        got = []
        while len(got) < 2:
            assert readable(rx, 10), "a message was sent but the descriptor never became readable"
            got.append(rx.try_recv())
            if len(got) == 1:
                # Taken: not readable again until the next message (or the close).
                assert not readable(rx), "still readable after the only message was taken"
                with pytest.raises(shmplane.Empty):
                    rx.try_recv()
        assert got == [b"a", b"b"]
        assert get_report(conn) == 2
        procs.join(p)
        # The sender closed: receiving raises, so the descriptor is readable for good.
        assert readable(rx, 10)
        with pytest.raises(shmplane.DisconnectedError):
            rx.try_recv()
        assert readable(rx, 0)


@pytest.mark.timeout(WATCHDOG)
def test_sender_that_never_came_is_not_ready(shm_name: str) -> None:
    with shmplane.Receiver.create(shm_name, 4096) as rx:
        assert not readable(rx, 0.05)
        with pytest.raises(shmplane.Empty):
            rx.try_recv()
        shmplane.Sender.open(shm_name).close()  # lets the segment go with the receiver


@pytest.mark.timeout(WATCHDOG)
def test_killed_sender_makes_the_receiver_readable(procs: Any) -> None:
    tx, rx = shmplane.channel(1 << 16)
    with rx:
        p = procs.start(_send_then_sleep, tx, b"last", method="spawn")
        tx.close()
        assert readable(rx, 10)
        assert rx.try_recv() == b"last"
        assert not readable(rx, 0.05)  # the sender lives and sends nothing
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
        # No code of the sender ran at its death: the kernel closed its doorbell end.
        assert readable(rx, 10)
        with pytest.raises(shmplane.PeerDeadError):
            rx.try_recv()


@pytest.mark.timeout(WATCHDOG)
def test_connection_wait_mixes_endpoints_pipes_and_sockets(procs: Any) -> None:
    tx1, rx1 = shmplane.channel(1 << 16)
    tx2, rx2 = shmplane.channel(1 << 16)
    a, b = mp.Pipe()
    s1, s2 = socket.socketpair()
    with rx1, rx2, tx2, s1, s2:
        objs = [rx1, rx2, a, s1]
        assert shmplane.wait(objs, 0.05) == []
        p, conn = procs.start_reporting(_send_later, tx1, [b"x"], 0.05, method="spawn")
        tx1.close()
        assert shmplane.wait(objs, 10) == [rx1]
        assert rx1.recv(timeout=1) == b"x"
        b.send("pipe")
        s2.send(b"sock")
        tx2.send(b"y")
        deadline = time.monotonic() + 10
        ready: set[int] = set()
        while len(ready) < 4 and time.monotonic() < deadline:
            ready |= {id(o) for o in mp.connection.wait(objs, 1)}
        # rx1 too: its sender closed, so receiving raises (DisconnectedError).
        assert ready == {id(rx1), id(rx2), id(a), id(s1)}
        with pytest.raises(shmplane.DisconnectedError):
            rx1.try_recv()
        assert get_report(conn) == 1
        procs.join(p)
    a.close()
    b.close()


@pytest.mark.timeout(WATCHDOG)
def test_selector_registered_once_stays_exact() -> None:
    """A selector registered once (asyncio's pattern): the receives re-arm it."""
    tx, rx = shmplane.channel(1 << 16)
    with tx, rx, selectors.DefaultSelector() as sel:
        sel.register(rx, selectors.EVENT_READ)
        assert sel.select(0) == []
        for round_ in range(50):
            tx.send(round_)
            assert [k.fileobj for k, _ in sel.select(5)] == [rx]
            assert rx.try_recv() == round_
            assert sel.select(0) == [], f"stale readiness after round {round_}"


@pytest.mark.timeout(WATCHDOG)
def test_sender_descriptor_waits_for_room(procs: Any) -> None:
    tx, rx = shmplane.channel(4096)
    with tx:
        n = 0
        for size in (500, 1):  # full to the last byte: not even a small message fits
            while True:
                try:
                    tx.try_send(b"z" * size)
                    n += 1
                except shmplane.Full:
                    break
        assert not readable(tx, 0.05)
        p, conn = procs.start_reporting(_drain_after, rx, n, 0.1, method="spawn")
        rx.close()
        assert readable(tx, 10)
        tx.send(b"fits now", timeout=5)
        assert get_report(conn) == n
        procs.join(p)


@pytest.mark.timeout(WATCHDOG)
def test_no_descriptor_or_file_leaks_over_many_channels() -> None:
    def fds() -> int:
        # Not counting the /proc/<pid>/stat files kept open per checked peer (at most
        # 16: the liveness cache of shm/src/liveness.rs).
        n = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            n += not target.startswith("/proc/")
        return n

    def ours() -> list[str]:
        return [f for f in os.listdir("/dev/shm") if f.startswith(f"shmplane.anon-{os.getpid()}-")]

    before_fds, before_files = fds(), ours()
    for i in range(10_000):
        tx, rx = shmplane.channel(4096)
        if i % 2:
            rx.fileno()
            tx.fileno()
        tx.close()
        rx.close()
    assert fds() == before_fds
    assert ours() == before_files


# ------------------------------------------------------------------ asyncio


def _loop_factories() -> list[Any]:
    factories: list[Any] = [asyncio.new_event_loop]
    if importlib.util.find_spec("uvloop") is not None:
        import uvloop

        factories.append(uvloop.new_event_loop)
    return factories


def run(coro: Any, factory: Any) -> Any:
    loop = factory()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


@pytest.fixture(params=_loop_factories(), ids=lambda f: f.__module__.split(".")[0])
def loop_factory(request: pytest.FixtureRequest) -> Any:
    return request.param


@pytest.mark.timeout(WATCHDOG)
def test_async_ping_pong_with_a_process(loop_factory: Any, procs: Any) -> None:
    req_tx, req_rx = shmplane.channel(1 << 16)
    rep_tx, rep_rx = shmplane.channel(1 << 16)
    p, conn = procs.start_reporting(_echo, req_rx, rep_tx, method="spawn")
    req_rx.close()
    rep_tx.close()

    async def main() -> list[Any]:
        got = []
        for i in range(200):
            await req_tx.send_async(i, timeout=10)
            got.append(await rep_rx.recv_async(timeout=10))
        req_tx.close()
        return got

    with rep_rx:
        assert run(main(), loop_factory) == list(range(200))
    assert get_report(conn) == 200
    procs.join(p)


@pytest.mark.timeout(WATCHDOG)
def test_async_for_until_the_sender_closes(loop_factory: Any, procs: Any) -> None:
    tx, rx = shmplane.channel(1 << 16)
    items = [b"a", {"b": 2}, 3.0]
    p, conn = procs.start_reporting(_send_later, tx, items, 0.01, method="spawn")
    tx.close()

    async def main() -> list[Any]:
        return [obj async for obj in rx]

    with rx:
        assert run(main(), loop_factory) == items
    assert get_report(conn) == 3
    procs.join(p)


@pytest.mark.timeout(WATCHDOG)
def test_cancelled_receive_loses_nothing(loop_factory: Any) -> None:
    tx, rx = shmplane.channel(1 << 16)

    async def main() -> Any:
        task = asyncio.ensure_future(rx.recv_async())
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        tx.send(b"kept")
        return await rx.recv_async(timeout=5)

    with tx, rx:
        assert run(main(), loop_factory) == b"kept"


@pytest.mark.timeout(WATCHDOG)
def test_async_timeouts(loop_factory: Any) -> None:
    tx, rx = shmplane.channel(4096)

    async def main() -> None:
        with pytest.raises(shmplane.Timeout):
            await rx.recv_async(timeout=0.05)
        while True:
            try:
                tx.try_send(b"f" * 1000)
            except shmplane.Full:
                break
        with pytest.raises(shmplane.Timeout):
            await tx.send_async(b"g" * 1000, timeout=0.05)
        with pytest.raises(ValueError):
            await rx.recv_async(timeout=-1)

    with tx, rx:
        run(main(), loop_factory)


@pytest.mark.timeout(WATCHDOG)
def test_async_send_larger_than_the_ring(loop_factory: Any) -> None:
    np = pytest.importorskip("numpy")
    tx, rx = shmplane.channel(4096)
    big = np.arange(100_000, dtype=np.float64)  # 800 kB through a 4 KiB ring

    async def main() -> None:
        await tx.send_async(big, timeout=20)
        tx.close()

    with rx:
        async def both() -> Any:
            send = asyncio.ensure_future(main())
            got = await rx.recv_async(timeout=20)
            await send
            return got

        got = run(both(), loop_factory)
    assert (got == big).all()


# ------------------------------------------------------------------ from review


def _forked_child_recv_async(rx: shmplane.Receiver) -> str:
    async def main() -> str:
        try:
            while True:
                await rx.recv_async(timeout=20)
        except shmplane.PeerDeadError:
            return "PeerDeadError"

    return asyncio.run(main())


def _send_and_die(tx: shmplane.Sender) -> None:
    tx.send(b"last", timeout=5)
    os._exit(0)  # no close: a death, as far as the channel can tell


@pytest.mark.timeout(WATCHDOG)
def test_fork_child_sees_its_parents_sender_die(procs: Any) -> None:
    """A fork child inherits the sender's doorbell write end with the handle; the
    sender dying elsewhere then shows no end-of-file there, and the asyncio layer's
    per-slice liveness check must still report it."""
    tx, rx = shmplane.channel(1 << 16)
    with rx:
        p, conn = procs.start_reporting(_forked_child_recv_async, rx, method="fork")
        killer = procs.start(_send_and_die, tx, method="fork")
        tx.close()
        procs.join(killer)
        assert get_report(conn) == "PeerDeadError"
        procs.join(p)


@pytest.mark.timeout(WATCHDOG)
def test_two_coroutines_awaiting_one_receiver_both_get_a_message(loop_factory: Any) -> None:
    tx, rx = shmplane.channel(1 << 16)

    async def main() -> list[Any]:
        a = asyncio.ensure_future(rx.recv_async(timeout=10))
        b = asyncio.ensure_future(rx.recv_async(timeout=10))
        await asyncio.sleep(0.02)
        tx.send(b"1")
        tx.send(b"2")
        return sorted(await asyncio.gather(a, b))

    with tx, rx:
        assert run(main(), loop_factory) == [b"1", b"2"]


@pytest.mark.timeout(WATCHDOG)
def test_sender_descriptor_before_any_receiver(shm_name: str) -> None:
    """Ringing its own doorbell while the receiver's role is vacant must not leave
    the FIFO reporting end-of-file (readable for good) once the ring is full."""
    with shmplane.Sender.create(shm_name, 4096) as tx:
        assert readable(tx, 0)  # room: ready
        while True:
            try:
                tx.try_send(b"q" * 100)
            except shmplane.Full:
                break
        for size in (1,):
            while True:
                try:
                    tx.try_send(b"q" * size)
                except shmplane.Full:
                    break
        assert not readable(tx, 0.05)
        rx = shmplane.Receiver.open(shm_name)
        rx.recv(timeout=5)
        assert readable(tx, 5)
        rx.close()


@pytest.mark.timeout(WATCHDOG)
def test_close_during_recv_async_raises_closed(loop_factory: Any) -> None:
    tx, rx = shmplane.channel(1 << 16)

    async def main() -> None:
        task = asyncio.ensure_future(rx.recv_async())
        await asyncio.sleep(0.02)
        rx.close()
        with pytest.raises(shmplane.ClosedError):
            await task

    with tx:
        run(main(), loop_factory)


@pytest.mark.timeout(WATCHDOG)
def test_cancel_after_the_ring_loses_nothing(loop_factory: Any) -> None:
    """Cancelled after the message arrived and the reader callback may have run, but
    before the coroutine resumed: the message is returned or stays queued."""
    tx, rx = shmplane.channel(1 << 16)

    async def main() -> Any:
        got = []
        for i in range(50):
            task = asyncio.ensure_future(rx.recv_async(timeout=10))
            await asyncio.sleep(0.001 * (i % 3))
            tx.send(i)
            for _ in range(i % 4):
                await asyncio.sleep(0)
            task.cancel()
            try:
                got.append(await task)
            except asyncio.CancelledError:
                got.append(await rx.recv_async(timeout=5))
        return got

    with tx, rx:
        assert run(main(), loop_factory) == list(range(50))


# ------------------------------------------------------------------ slots


def _write_values(name: str, n: int, delay: float) -> int:
    v = shmplane.RawValue.attach(name, "q")
    with v:
        for i in range(1, n + 1):
            time.sleep(delay)
            v.value = i
    return n


def _arm_and_hang(name: str) -> None:
    v = shmplane.RawValue.attach(name, "q")
    v._slot._update_fd(v.version)  # a doorbell entry and FIFO of this process
    time.sleep(60)  # killed by the test


@pytest.mark.timeout(WATCHDOG)
def test_slot_wait_for_update_async_with_a_writer_process(loop_factory: Any, make_name: Any, procs: Any) -> None:
    name = make_name("slot")
    v = shmplane.RawValue("q", 0, name=name)
    p, conn = procs.start_reporting(_write_values, name, 20, 0.005, method="spawn")

    async def main() -> int:
        since = v.version
        while v.value < 20:
            since = await v.wait_for_update_async(since, timeout=10)
        return int(v.value)

    with v:
        assert run(main(), loop_factory) == 20
        assert get_report(conn) == 20
        procs.join(p)


@pytest.mark.timeout(WATCHDOG)
def test_slot_two_handles_awaiting_both_wake(loop_factory: Any, make_name: Any) -> None:
    name = make_name("slot2")
    a = shmplane.RawValue("q", 0, name=name)
    b = shmplane.RawValue.attach(name, "q")

    async def main() -> list[int]:
        sa, sb = a.version, b.version
        ta = asyncio.ensure_future(a.wait_for_update_async(sa, timeout=10))
        tb = asyncio.ensure_future(b.wait_for_update_async(sb, timeout=10))
        await asyncio.sleep(0.02)
        a.value = 7
        await asyncio.gather(ta, tb)
        return [int(a.value), int(b.value)]

    with a, b:
        assert run(main(), loop_factory) == [7, 7]


@pytest.mark.timeout(WATCHDOG)
def test_slot_dead_reader_entry_is_freed_by_the_next_write(make_name: Any, procs: Any) -> None:
    name = make_name("slot3")
    with shmplane.RawValue("q", 0, name=name) as v:
        p = procs.start(_arm_and_hang, name, method="spawn")
        deadline = time.monotonic() + 20
        mine = f"shmplane.{name}@w{p.pid}."
        while not any(f.startswith(mine) for f in os.listdir("/dev/shm")):
            assert time.monotonic() < deadline, "the child never armed its doorbell"
            time.sleep(0.01)
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
        since = v.version
        v._slot._update_fd(since)  # arm: the next write rings every entry
        v.value = 1
        assert not any(f.startswith(mine) for f in os.listdir("/dev/shm")), "the dead reader's doorbell was not removed"


@pytest.mark.timeout(WATCHDOG)
def test_slot_more_async_readers_than_doorbells(loop_factory: Any, make_name: Any) -> None:
    name = make_name("slot4")
    first = shmplane.RawValue("q", 0, name=name)
    others = [shmplane.RawValue.attach(name, "q") for _ in range(20)]  # 16 doorbells

    async def main() -> list[int]:
        tasks = [asyncio.ensure_future(h.wait_for_update_async(h.version, timeout=10)) for h in others]
        await asyncio.sleep(0.05)
        first.value = 5
        await asyncio.gather(*tasks)
        return [int(h.value) for h in others]

    try:
        assert run(main(), loop_factory) == [5] * 20
    finally:
        for h in others:
            h.close()
        first.close()
    assert not [f for f in os.listdir("/dev/shm") if f.startswith(f"shmplane.{name}")]


@pytest.mark.timeout(WATCHDOG)
def test_slot_close_during_wait_raises_closed(loop_factory: Any, make_name: Any) -> None:
    name = make_name("slot5")
    keep = shmplane.RawValue("q", 0, name=name)
    v = shmplane.RawValue.attach(name, "q")

    async def main() -> None:
        task = asyncio.ensure_future(v.wait_for_update_async(v.version))
        await asyncio.sleep(0.02)
        v.close()
        with pytest.raises(shmplane.ClosedError):
            await task

    with keep:
        run(main(), loop_factory)


def _arm_then_exit(name: str) -> None:
    v = shmplane.RawValue.attach(name, "q")
    v._slot._update_fd(v.version)
    os._exit(0)  # no close: its doorbell entry and FIFO stay behind


@pytest.mark.timeout(WATCHDOG)
def test_slot_table_full_of_dead_readers_is_reclaimed(make_name: Any, procs: Any) -> None:
    name = make_name("slot6")
    with shmplane.RawValue("q", 0, name=name) as v:
        for _ in range(16):
            procs.join(procs.start(_arm_then_exit, name, method="fork"))
        v._slot._update_fd(v.version)  # arm once and let a write ring them all...
        v.value = 1
        for _ in range(16):  # ...and once more with every one of them dead and rung
            procs.join(procs.start(_arm_then_exit, name, method="fork"))
        v.value = 2  # DOORBELL was cleared by the first write: these are not rung
        other = shmplane.RawValue.attach(name, "q")
        with other:
            assert other._slot._update_fd(other.version) is not None, "no doorbell entry for a live reader"
    assert not [f for f in os.listdir("/dev/shm") if f.startswith(f"shmplane.{name}")]


@pytest.mark.timeout(WATCHDOG)
def test_extreme_timeouts() -> None:
    tx, rx = shmplane.channel(4096)
    with tx, rx:
        for bad in (float("nan"), -1.0):
            with pytest.raises(ValueError):
                shmplane.wait([rx], bad)
        tx.send(b"x")
        assert shmplane.wait([rx], float("inf")) == [rx]
        assert shmplane.wait([rx], 1e300) == [rx]

        async def main() -> None:
            assert await rx.recv_async(timeout=1e300) == b"x"
            for bad in (float("nan"), -1.0):
                with pytest.raises(ValueError):
                    await rx.recv_async(timeout=bad)

        asyncio.run(main())


def test_largest_messages_keep_the_descriptor_readable_for_the_padding(shm_name: str) -> None:
    """Review (spacers, ABI 10): a consumer that receives when `fileno()` is readable
    (select, then try_recv until Empty) and a producer of the channel's largest
    messages. The 8-byte end padding before each such message has the spacer's header
    word; `data_ready` (the doorbell's armed check) looks past it, so the descriptor
    stays unreadable while the padding holds the 8 bytes the producer waits for: both
    wait (here 3 s). Same root cause as test_mailbox's
    `test_largest_messages_back_to_back_do_not_stall`; a race (2 of 4 runs stalled)."""
    import select
    import threading

    cap = 1 << 16
    tx, rx = shmplane.channel(cap, name=shm_name)
    size = cap - 16
    result: dict[str, str] = {}

    def produce() -> None:
        i = 0
        try:
            for i in range(300):
                tx.send(bytes([i % 256]) * size, timeout=3)
            result["sent"] = "all"
        except Exception as e:  # noqa: BLE001 - reported below
            result["sent"] = f"{type(e).__name__} at message {i}"

    t = threading.Thread(target=produce)
    t.start()
    got = 0
    try:
        fd = rx.fileno()
        while got < 300:
            readable, _, _ = select.select([fd], [], [], 3)
            if not readable:
                break
            while True:
                try:
                    rx.try_recv()
                except shmplane.Empty:
                    break
                got += 1
            rx.fileno()  # re-arm
    finally:
        t.join(10)
        tx.close()
        rx.close()
    assert (got, result) == (300, {"sent": "all"})
