"""Messages interrupted part-way, and peers that die mid-message.

A message larger than a chunk travels as a run of records. If its sender stops
part-way (SIGKILL, Ctrl-C, a timeout) the receiver gets one TruncatedMessageError for
it and the next message, from the same process or a new sender, small or chunked,
arrives intact, whether or not the receiver noticed first. If a receiver dies
part-way through a message, its successor skips what is left of it and reads the next
message whole: never a CorruptSegmentError. Kill times are random (seeded)."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import threading
import time
import zlib
from typing import Any

import numpy as np
import pytest

import shmplane
from shm_helpers import get_report, wait_until_blocked

METHODS = ["fork", "spawn"]
WATCHDOG = 90
BIG = 3_000_000  # float64 elements: 24 MB, hundreds of records of a 64 KiB ring


def _send_big(tx: shmplane.Sender, ready: Any) -> None:
    ready.send("sending")
    tx.send(np.arange(float(BIG)), timeout=30)
    pause = threading.Event()
    pause.wait(60)  # killed before this ends


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return bool(a == b)


def _first_then(rx: shmplane.Receiver, nxt: Any) -> str:
    """Receive until ``nxt``: returns what came first ('truncated', 'whole' or
    'next') and checks ``nxt`` intact and nothing after it."""
    try:
        first = _recv_from_successor(rx)
    except shmplane.TruncatedMessageError as e:
        assert "abandoned" in str(e)
        outcome = "truncated"
    else:
        if _same(first, nxt):
            return "next"
        assert _same(first, np.arange(float(BIG))), "neither the big message whole nor the next one"
        outcome = "whole"
    assert _same(_recv_from_successor(rx), nxt)
    with pytest.raises(shmplane.Empty):
        rx.try_recv()
    return outcome


def _recv_from_successor(rx: shmplane.Receiver) -> Any:
    """The next message; until a new sender has attached the old one reads as dead."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return rx.recv(timeout=30)
        except shmplane.PeerDeadError:
            assert time.monotonic() < deadline
            time.sleep(0.005)


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("next_kind", ["small", "chunked"])
@pytest.mark.parametrize("successor", ["kept-copy", "new-sender"])
@pytest.mark.parametrize("method", METHODS)
def test_sender_killed_mid_message(method: str, successor: str, next_kind: str, shm_name: str, procs: Any) -> None:
    rng = random.Random(zlib.crc32(f"{method} {successor} {next_kind}".encode()))
    outcomes = set()
    nxt: Any = b"next" if next_kind == "small" else np.arange(400_000.0)
    for round_ in range(4):
        name = f"{shm_name}-{round_}"
        tx, rx = shmplane.channel(capacity=1 << 16, name=name)
        ctx = mp.get_context(method)
        r, w = ctx.Pipe(duplex=False)
        p = procs.start(_send_big, tx, w, method=method)
        w.close()
        if successor == "new-sender":
            tx.close()  # the child's copy is the only one left
        assert r.poll(20) and r.recv() == "sending"
        noticed_first = round_ % 2 == 0
        got: list[str] = []
        reader = None
        if noticed_first:  # the receiver is reading when the kill comes
            reader = threading.Thread(target=lambda: got.append(_first_then(rx, nxt)))
            reader.start()
        time.sleep(rng.uniform(0, 0.03))
        os.kill(p.pid, signal.SIGKILL)
        procs.join(p, exitcode=-signal.SIGKILL)
        if successor == "new-sender":
            tx = shmplane.Sender.open(name)  # the dead sender's role is free again
        # The ring may be full of the dead sender's records: send from a thread.
        sender = threading.Thread(target=tx.send, args=(nxt,), kwargs={"timeout": 30})
        sender.start()
        if reader is None:
            got.append(_first_then(rx, nxt))
        else:
            reader.join(40)
        sender.join(40)
        assert got and not sender.is_alive()
        outcomes.add(got[0])
        tx.close()
        rx.close()
        r.close()
    assert outcomes <= {"truncated", "whole", "next"}


def _interrupted_then_more(tx: shmplane.Sender, ready: Any) -> str:
    with tx:
        ready.send("sending")
        try:
            tx.send(np.arange(float(BIG)))  # the receiver does not read yet: blocks
        except KeyboardInterrupt:
            ready.send("interrupted")
        else:
            return "not interrupted"
        tx.send(b"next", timeout=30)
        tx.send(np.arange(500_000.0), timeout=30)  # chunked too
    return "done"


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("method", METHODS)
def test_ctrl_c_mid_send_then_more_sends(method: str, procs: Any) -> None:
    """Ctrl-C in the middle of a chunked send, then two more sends from the same
    process (a small one and a chunked one): one TruncatedMessageError, then both."""
    tx, rx = shmplane.channel(capacity=1 << 16)
    path = tx.path
    r, w = mp.get_context(method).Pipe(duplex=False)
    p, conn = procs.start_reporting(_interrupted_then_more, tx, w, method=method)
    tx.close()
    w.close()
    with rx:
        assert r.poll(20) and r.recv() == "sending"
        # Well into the send: the ring is full and the sender asleep, waiting for room.
        wait_until_blocked(p.pid, p.pid, segment=path)
        os.kill(p.pid, signal.SIGINT)
        # Receive only once the child has stopped: a receiver draining at once could
        # let the send finish before its next signal check (Python then raises the
        # KeyboardInterrupt after a send that completed, as it does after any call).
        assert r.poll(20) and r.recv() == "interrupted"
        with pytest.raises(shmplane.TruncatedMessageError):
            rx.recv(timeout=30)
        assert rx.recv(timeout=30) == b"next"
        assert np.array_equal(rx.recv(timeout=30), np.arange(500_000.0))
        assert get_report(conn) == "done"
        procs.join(p)
    r.close()


def _recv_big_slowly(rx: shmplane.Receiver, ready: Any) -> None:
    ready.send("receiving")
    rx.recv(timeout=30)
    threading.Event().wait(60)


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("successor", ["kept-copy", "new-receiver"])
@pytest.mark.parametrize("method", METHODS)
def test_receiver_killed_mid_message(method: str, successor: str, shm_name: str, procs: Any) -> None:
    """A receiver SIGKILLed part-way through a 24 MB message: its successor (the
    parent's kept copy, or a new receiver opened by name) gets either the whole message
    (killed before it began) or skips the rest of it, and then the next message whole.
    A sender that was blocked gets PeerDeadError when no receiver copy is left, and
    every message it sends to the new receiver arrives."""
    rng = random.Random(zlib.crc32(f"{method} {successor}".encode()))
    for round_ in range(4):
        name = f"{shm_name}-{round_}"
        tx, rx = shmplane.channel(capacity=1 << 16, name=name)
        ctx = mp.get_context(method)
        r, w = ctx.Pipe(duplex=False)
        p = procs.start(_recv_big_slowly, rx, w, method=method)
        w.close()
        if successor == "new-receiver":
            rx.close()
        assert r.poll(20) and r.recv() == "receiving"
        result: list[Any] = []

        def send_big() -> None:
            try:
                tx.send(np.arange(float(BIG)), timeout=30)
                result.append("sent")
            except shmplane.ShmplaneError as e:
                result.append(e)

        sender = threading.Thread(target=send_big)
        sender.start()
        time.sleep(rng.uniform(0, 0.03))
        os.kill(p.pid, signal.SIGKILL)
        procs.join(p, exitcode=-signal.SIGKILL)
        if successor == "new-receiver":
            sender.join(40)  # no receiver copy left: the blocked send fails...
            assert result and (result[0] == "sent" or isinstance(result[0], shmplane.PeerDeadError)), result
            rx = shmplane.Receiver.open(name)  # ...until a new receiver takes over
            msgs = [f"resent {i}" for i in range(100)]
            resend = threading.Thread(target=lambda: [tx.send(m, timeout=30) for m in msgs])
            resend.start()
            got = []
            while len(got) < len(msgs):
                try:
                    m = rx.recv(timeout=30)
                except shmplane.TruncatedMessageError:
                    continue  # the big message, if the dead receiver had not begun it
                if isinstance(m, np.ndarray):
                    assert np.array_equal(m, np.arange(float(BIG)))
                    continue
                got.append(m)
            resend.join(40)
            assert got == msgs  # every re-sent message, in order
        else:
            # The kept copy drains what the dead one left (the sender, still alive,
            # finishes), then gets the next message whole.
            def then_next() -> None:
                sender.join(40)
                tx.send(b"next", timeout=30)

            follow = threading.Thread(target=then_next)
            follow.start()
            try:
                m = rx.recv(timeout=30)
            except shmplane.TruncatedMessageError:
                pytest.fail("a kept receiver copy must not truncate a message a live sender is sending")
            if isinstance(m, np.ndarray):  # the dead copy had not begun it
                assert np.array_equal(m, np.arange(float(BIG)))
                m = rx.recv(timeout=30)
            assert m == b"next"
            follow.join(40)
            assert result == ["sent"]
        with pytest.raises(shmplane.Empty):
            rx.try_recv()
        tx.close()
        rx.close()
        r.close()
