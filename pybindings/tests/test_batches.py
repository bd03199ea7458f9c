"""Batches: ``send_many`` on every sending end and ``recv_many`` on every receiving end
(channel, mailbox, broadcast), with real processes for the mailbox and broadcast: order
kept, nothing lost or repeated, every message type, ``max_messages``, timeouts, and the
errors that say how far a batch got (``sent``, ``received``) so that none is lost."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest

import shmplane

WATCHDOG = 60


def _refuse() -> None:
    raise ValueError("this object refuses to be unpickled")


class _FailsToUnpickle:
    """Pickles fine; unpickling it raises ValueError."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_refuse, ())


def _send_batches(tx: shmplane.Sender, who: int, n: int, batch: int) -> int:
    with tx:
        for start in range(0, n, batch):
            assert tx.send_many([(who, i) for i in range(start, min(n, start + batch))], timeout=20) == min(batch, n - start)
    return n


def _recv_all(rx: Any, n: int) -> list[Any]:
    got: list[Any] = []
    while len(got) < n:
        got += rx.recv_many(timeout=20)
    return got


# ------------------------------------------------------------------ channel


def test_a_batch_of_every_kind_arrives_in_order(shm_name: str) -> None:
    arr = np.arange(12, dtype=np.int32).reshape(3, 4)
    big = bytes(range(256)) * 4096  # 1 MiB: chunked through the 64 KiB ring
    objs: list[Any] = [b"one", arr, {"k": [1, 2]}, [1.5, 2.5], big, b"", (3, "x"), 7]
    with shmplane.Receiver.create(shm_name, 1 << 16) as rx, shmplane.Sender.open(shm_name) as tx:
        got: list[Any] = []
        # The 1 MiB message needs the receiver while it is sent: a thread takes batches.
        import threading

        t = threading.Thread(target=lambda: got.extend(_recv_all(rx, len(objs))))
        t.start()
        assert tx.send_many(objs, timeout=WATCHDOG) == len(objs)
        t.join(WATCHDOG)
        assert not t.is_alive()
    assert len(got) == len(objs)
    for a, b in zip(got, objs):
        if isinstance(b, np.ndarray):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype
        else:
            assert a == b and type(a) is type(b)


def test_recv_many_takes_what_is_there_up_to_max_messages() -> None:
    tx, rx = shmplane.channel(1 << 16)
    with tx, rx:
        assert tx.send_many(i.to_bytes(4, "little") for i in range(10)) == 10  # a generator
        first = rx.recv_many(4, timeout=1)
        assert first == [i.to_bytes(4, "little") for i in range(4)]
        rest = rx.recv_many(timeout=1)  # the default (1024): all that is left
        assert rest == [i.to_bytes(4, "little") for i in range(4, 10)]
        with pytest.raises(shmplane.Timeout):
            rx.recv_many(timeout=0.05)
        with pytest.raises(shmplane.Timeout):
            rx.recv_many(timeout=0)
        for bad in (0, -1):
            with pytest.raises(ValueError, match="max_messages"):
                rx.recv_many(bad, timeout=0)
        assert tx.send_many([]) == 0


def test_send_many_that_times_out_says_how_many_went() -> None:
    tx, rx = shmplane.channel(4096)
    objs = [i.to_bytes(8, "little") * 8 for i in range(1000)]  # 64-byte messages
    with tx, rx:
        with pytest.raises(shmplane.Timeout) as info:
            tx.send_many(objs, timeout=0.1)
        sent = info.value.sent  # type: ignore[attr-defined]
        assert 0 < sent < len(objs)
        got = _recv_all(rx, sent)
        assert got == objs[:sent]
        with pytest.raises(shmplane.Timeout):
            rx.recv_many(timeout=0.05)  # nothing beyond what it said went
        # The retry of the rest delivers each message once, in order.
        import threading

        rest: list[Any] = []
        t = threading.Thread(target=lambda: rest.extend(_recv_all(rx, len(objs) - sent)))
        t.start()
        assert tx.send_many(objs[sent:], timeout=WATCHDOG) == len(objs) - sent
        t.join(WATCHDOG)
        assert rest == objs[sent:]


def test_send_many_stops_at_an_unpicklable_object() -> None:
    tx, rx = shmplane.channel(1 << 16)
    with tx, rx:
        objs: list[Any] = [b"a", b"b", lambda: None, b"c"]
        with pytest.raises((pickle.PicklingError, AttributeError, TypeError)) as info:
            tx.send_many(objs)
        assert info.value.sent == 2  # type: ignore[attr-defined]
        assert rx.recv_many(timeout=1) == [b"a", b"b"]
        with pytest.raises(shmplane.Timeout):
            rx.recv_many(timeout=0.05)

        def failing() -> Any:
            yield b"x"
            raise KeyError("the iterable failed")

        with pytest.raises(KeyError) as kinfo:
            tx.send_many(failing())
        assert kinfo.value.sent == 1  # type: ignore[attr-defined]
        assert rx.recv_many(timeout=1) == [b"x"]

        # Not iterable at all: nothing went (review: `sent` was missing here).
        with pytest.raises(TypeError) as tinfo:
            tx.send_many(5)  # type: ignore[arg-type]
        assert tinfo.value.sent == 0  # type: ignore[attr-defined]


def test_a_message_that_fails_to_decode_carries_the_batch_before_it() -> None:
    tx, rx = shmplane.channel(1 << 16)
    with tx, rx:
        tx.send_many([b"a", (1, 2), _FailsToUnpickle(), b"after"])
        with pytest.raises(ValueError, match="refuses") as info:
            rx.recv_many(timeout=1)
        assert info.value.received == [b"a", (1, 2)]  # type: ignore[attr-defined]
        assert rx.recv_many(timeout=1) == [b"after"]


def test_a_batch_ends_before_the_disconnection_and_the_next_call_raises_it() -> None:
    tx, rx = shmplane.channel(1 << 16)
    with rx:
        tx.send_many([b"1", b"2", b"3"])
        tx.close()
        assert rx.recv_many(timeout=1) == [b"1", b"2", b"3"]
        with pytest.raises(shmplane.DisconnectedError):
            rx.recv_many(timeout=1)


def test_closed_ends_refuse_batches() -> None:
    tx, rx = shmplane.channel(1 << 16)
    tx.close()
    rx.close()
    with pytest.raises(shmplane.ClosedError):
        tx.send_many([b"x"])
    with pytest.raises(shmplane.ClosedError):
        rx.recv_many(timeout=0)


# ------------------------------------------------------------------ mailbox, broadcast


@pytest.mark.parametrize("method", ["fork", "spawn"])
@pytest.mark.timeout(WATCHDOG)
def test_mailbox_batches_from_several_processes_keep_each_senders_order(procs: Any, method: str) -> None:
    n, who = 2000, 3
    with shmplane.mailbox(capacity=4096) as mb:
        senders = [mb.sender() for _ in range(who)]
        children = [procs.start(_send_batches, tx, w, n, 64, method=method) for w, tx in enumerate(senders)]
        for tx in senders:  # the children hold theirs
            tx.close()
        got = _recv_all(mb, n * who)
        for p in children:
            procs.join(p)
        assert len(got) == n * who
        for w in range(who):
            assert [i for (s, i) in got if s == w] == list(range(n)), f"sender {w}: order or count"
        with pytest.raises(shmplane.DisconnectedError):  # every sender closed, all taken
            mb.recv_many(timeout=WATCHDOG)
        assert mb.pending() is False


def test_mailbox_batch_keeps_a_decode_failure_and_what_came_before() -> None:
    with shmplane.mailbox(capacity=4096) as mb, mb.sender() as tx:
        tx.send_many([b"a", _FailsToUnpickle(), b"b"])
        with pytest.raises(ValueError, match="refuses") as info:
            mb.recv_many(timeout=1)
        assert info.value.received == [b"a"]  # type: ignore[attr-defined]
        assert mb.recv_many(timeout=1) == [b"b"]
        with pytest.raises(ValueError, match="max_messages"):
            mb.recv_many(0)


@pytest.mark.timeout(WATCHDOG)
def test_broadcast_batches_reach_every_subscriber(procs: Any) -> None:
    n = 3000
    with shmplane.broadcast(capacity=1 << 16) as pub:
        subs = [pub.subscribe() for _ in range(2)]
        reporters = [procs.start_reporting(_recv_all, s, n) for s in subs]
        for s in subs:
            s.close()
        for start in range(0, n, 100):
            assert pub.send_many([i.to_bytes(4, "little") for i in range(start, start + 100)], timeout=WATCHDOG) == 100
        want = [i.to_bytes(4, "little") for i in range(n)]
        from shm_helpers import get_report

        for p, conn in reporters:
            assert get_report(conn, WATCHDOG) == want
            procs.join(p)


# ------------------------------------------------------------------ review: one-shot reports mid-batch
# `begin` consumes some reports as it returns them: a lossy subscriber's lag (it skips
# to the oldest message held) and a malformed message (it is dropped). A batch that
# ends at such an error must still raise it, now or at the next call.

_LAPPER: list[Any] = []


def _publish_a_lap() -> str:
    pub = _LAPPER[0]
    for i in range(2000):  # far more than a 4 KiB ring holds: the subscriber is lapped
        pub.try_send(i)
    return "first"


class _LapsWhenUnpickled:
    """Unpickling it (the batch's first message) makes the publisher lap the subscriber
    before the batch looks for its next message."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_publish_a_lap, ())


def _drain(rx: Any) -> tuple[list[Any], int]:
    """Everything ``rx.recv_many`` gives until a Timeout, and the messages its
    LaggedErrors said were missed (a batch before the error rides on ``received``)."""
    got: list[Any] = []
    missed = 0
    while True:
        try:
            got += rx.recv_many(timeout=0.2)
        except shmplane.LaggedError as e:
            got += getattr(e, "received", [])
            missed += e.missed
        except shmplane.Timeout:
            return got, missed


def test_a_lag_found_mid_batch_is_reported(shm_name: str) -> None:
    pub = shmplane.broadcast(4096, name=shm_name, lossy=True)
    sub = pub.subscribe()
    _LAPPER[:] = [pub]
    try:
        pub.send(_LapsWhenUnpickled())
        pub.send(b"second")  # overwritten by the lap
        got, missed = _drain(sub)
        assert got[0] == "first"
        assert missed > 0, "the lap found after the batch's first message was never reported"
        # Every message is accounted for, once: the first, the missed, those received.
        assert 1 + missed + (len(got) - 1) == 2 + 2000
        assert got[1:] == list(range(2000 - (len(got) - 1), 2000))
    finally:
        _LAPPER.clear()
        sub.close()
        pub.close()


def test_a_corrupt_message_found_mid_batch_is_reported(shm_name: str) -> None:
    import os
    import struct

    from shm_helpers import read_u64, seg_path

    capacity = 1 << 16
    tx, rx = shmplane.channel(capacity, name=shm_name)
    with tx, rx:
        tx.send(b"first")  # one 16-byte record (8 of header, 5 of payload padded to 8)
        # Behind it, a committed record of an unknown tag, as a broken peer could lay
        # (the layout of test_hostile_ring.py).
        path = seg_path(shm_name)
        pos = read_u64(path, 768) + 16
        with open(path, "r+b") as f:
            base = os.path.getsize(path) - capacity
            f.seek(base + pos + 8)
            f.write(b"garbage!")
            f.seek(base + pos)
            f.write(struct.pack("<Q", (1 << 63) | (0x7 << 32) | 8))
        raised = None
        try:
            got = rx.recv_many(timeout=1)
        except shmplane.CorruptSegmentError as e:
            got, raised = e.received, e  # type: ignore[attr-defined]
        assert got == [b"first"]
        if raised is None:
            with pytest.raises(shmplane.CorruptSegmentError):
                rx.recv_many(timeout=0.2)


def _lay_after(path: str, marker: bytes, tag: int, payload: bytes) -> None:
    """Lay a committed record of ``tag`` right after the one-record message ``marker``
    (found by its bytes: a ring's or a mailbox lane's), as a broken peer could."""
    import struct

    with open(path, "r+b") as f:
        data = f.read()
        at = data.index(marker)
        assert data.find(marker, at + 1) < 0
        pos = at + (len(marker) + 7) // 8 * 8
        f.seek(pos + 8)
        f.write(payload)
        f.seek(pos)
        f.write(struct.pack("<Q", (1 << 63) | (tag << 32) | len(payload)))


def test_a_corrupt_message_found_mid_mailbox_batch_is_reported(shm_name: str) -> None:
    from shm_helpers import seg_path

    marker = b"first message of the mailbox batch"
    with shmplane.mailbox(capacity=4096, name=shm_name) as mb, mb.sender() as tx:
        tx.send(marker)
        _lay_after(seg_path(shm_name), marker, 0x7, b"garbage!")
        raised = None
        try:
            got = mb.recv_many(timeout=1)
        except shmplane.CorruptSegmentError as e:
            got, raised = e.received, e  # type: ignore[attr-defined]
        assert got == [marker]
        if raised is None:
            with pytest.raises(shmplane.CorruptSegmentError):
                mb.recv_many(timeout=0.2)


# ------------------------------------------------------------------ review: the batch holds its end throughout


@pytest.mark.parametrize("end", ["channel", "mailbox"])
def test_a_batch_keeps_its_first_message_when_another_thread_takes_the_end(end: str) -> None:
    """A thread that takes the receiver between the batch's first message and the rest
    (here: started by a garbage collection that the batch's list allocation runs, as
    CPython 3.11 collects there) must not make the batch lose the message it took: the
    batch holds the receiver from its first message to its last."""
    import gc
    import threading
    import time

    tx: Any
    rx: Any
    if end == "channel":
        tx, rx = shmplane.channel(4096)
    else:
        rx = shmplane.mailbox(capacity=4096)
        tx = rx.sender()
    other: list[Any] = []

    def intruder() -> None:
        try:
            other.append(rx.recv(timeout=0.3))  # waits holding the receiver
        except Exception as e:  # Timeout, in use (InvalidArgumentError), closed
            other.append(e)

    armed = {"on": False}
    started: list[threading.Thread] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and armed["on"]:
            armed["on"] = False
            t = threading.Thread(target=intruder)
            started.append(t)
            t.start()
            time.sleep(0.05)  # it takes the receiver (if it is free) and waits there

    threshold = gc.get_threshold()
    gc.callbacks.append(on_gc)
    try:
        with tx, rx:
            for _ in range(3):
                tx.send(b"first")
                other.clear()
                started.clear()
                gc.collect()
                armed["on"] = True
                gc.set_threshold(1)
                try:
                    got = rx.recv_many(timeout=1)
                finally:
                    gc.set_threshold(*threshold)
                    armed["on"] = False
                    for t in started:
                        t.join(WATCHDOG)
                assert started, "no garbage collection ran during the batch"
                assert got == [b"first"]
                assert not any(isinstance(x, bytes) for x in other)
    finally:
        gc.callbacks.remove(on_gc)
        gc.set_threshold(*threshold)


@pytest.mark.parametrize("end", ["channel", "mailbox"])
def test_a_first_message_that_fails_to_decode_carries_an_empty_batch(end: str) -> None:
    """As ``send_many``'s ``sent`` (0 when the first message failed), ``received`` is
    there whichever message of the batch failed: ``e.received`` is the batch so far."""
    tx: Any
    rx: Any
    if end == "channel":
        tx, rx = shmplane.channel(1 << 16)
    else:
        rx = shmplane.mailbox(capacity=4096)
        tx = rx.sender()
    with tx, rx:
        tx.send_many([_FailsToUnpickle(), b"after"])
        with pytest.raises(ValueError, match="refuses") as info:
            rx.recv_many(timeout=1)
        assert info.value.received == []  # type: ignore[attr-defined]
        assert rx.recv_many(timeout=1) == [b"after"]
        with pytest.raises(shmplane.Timeout) as tinfo:
            rx.recv_many(timeout=0)
        assert tinfo.value.received == []  # type: ignore[attr-defined]


def test_send_many_refuses_a_single_message_that_happens_to_be_iterable() -> None:
    tx, rx = shmplane.channel(1 << 16)
    with tx, rx:
        for one in (b"abc", bytearray(b"abc"), memoryview(b"abc"), "abc", np.arange(3)):
            with pytest.raises(TypeError, match="iterable of messages") as info:
                tx.send_many(one)  # type: ignore[arg-type]
            assert info.value.sent == 0  # type: ignore[attr-defined]
        with pytest.raises(shmplane.Timeout):
            rx.recv_many(timeout=0.05)  # nothing went
        assert tx.send_many((b"abc", "abc")) == 2  # a tuple of them is a batch
        assert rx.recv_many(timeout=1) == [b"abc", "abc"]


def test_bad_arguments_carry_sent_and_received_too() -> None:
    tx, rx = shmplane.channel(1 << 16)
    with tx, rx:
        for bad in (float("nan"), -1.0, float("-inf")):
            with pytest.raises(ValueError) as sinfo:
                tx.send_many([b"a"], timeout=bad)
            assert sinfo.value.sent == 0  # type: ignore[attr-defined]
            with pytest.raises(ValueError) as rinfo:
                rx.recv_many(timeout=bad)
            assert rinfo.value.received == []  # type: ignore[attr-defined]
        with pytest.raises(ValueError) as minfo:
            rx.recv_many(0)
        assert minfo.value.received == []  # type: ignore[attr-defined]
        with pytest.raises(shmplane.Timeout):
            rx.recv_many(timeout=0.01)  # nothing was sent
