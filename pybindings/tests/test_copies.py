"""Copies of an endpoint, as with ``multiprocessing.Pipe`` connections: a handle passed
to a child (fork, spawn or forkserver) is a copy, the parent may keep its own, and
copies used one after another lose nothing and repeat nothing. Copies used at the same
time take turns, each message whole."""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

import numpy as np
import pytest

import shmplane
from shm_helpers import get_report

METHODS = ["fork", "spawn", "forkserver"]
WATCHDOG = 60


def _send_all(tx: shmplane.Sender, items: list[Any]) -> int:
    with tx:
        for item in items:
            tx.send(item, timeout=20)
    return len(items)


def _recv_n(rx: shmplane.Receiver, n: int) -> list[Any]:
    with rx:
        return [rx.recv(timeout=20) for _ in range(n)]


def _empty(rx: shmplane.Receiver) -> bool:
    try:
        rx.try_recv()
    except shmplane.Empty:
        return True
    return False


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("parent_first", [False, True], ids=["child-first", "parent-first"])
@pytest.mark.parametrize("method", METHODS)
def test_kept_sender_copy_appends_after_the_child(method: str, parent_first: bool, procs: Any) -> None:
    tx, rx = shmplane.channel(capacity=1 << 16)
    with tx, rx:
        if parent_first:
            tx.send(b"0", timeout=5)
        p, conn = procs.start_reporting(_send_all, tx, [b"a", b"b", b"c"], method=method)
        assert get_report(conn) == 3
        procs.join(p)
        tx.send(b"d", timeout=5)  # the kept copy: appends, never overwrites
        want = ([b"0"] if parent_first else []) + [b"a", b"b", b"c", b"d"]
        assert [rx.recv(timeout=5) for _ in want] == want
        assert _empty(rx)


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("method", METHODS)
def test_kept_receiver_copy_resumes_after_the_child(method: str, procs: Any) -> None:
    tx, rx = shmplane.channel(capacity=1 << 16)
    with tx, rx:
        for m in (b"a", b"b", b"c", b"d"):
            tx.send(m, timeout=5)
        p, conn = procs.start_reporting(_recv_n, rx, 3, method=method)
        assert get_report(conn) == [b"a", b"b", b"c"]
        procs.join(p)
        assert rx.recv(timeout=5) == b"d"  # never a, b or c again
        assert _empty(rx)


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("method", METHODS)
def test_parent_sender_after_the_receiver_child_read(method: str, procs: Any) -> None:
    """The receiver's child reads a, b, c and exits; then the parent's sender sends 200
    messages of 100 bytes (several laps of a small ring): the parent's kept receiver gets
    every one, in order, and the ring stays sound."""
    tx, rx = shmplane.channel(capacity=4096)
    with tx, rx:
        for m in (b"a", b"b", b"c"):
            tx.send(m, timeout=5)
        p, conn = procs.start_reporting(_recv_n, rx, 3, method=method)
        assert get_report(conn) == [b"a", b"b", b"c"]
        procs.join(p)
        for i in range(200):
            tx.send(bytes([i % 256]) * 100, timeout=5)
            assert rx.recv(timeout=5) == bytes([i % 256]) * 100
        assert _empty(rx)


def _take_turns(tx: shmplane.Sender, rx: shmplane.Receiver, conn: Any) -> None:
    for round_ in range(3):
        conn.recv()  # our turn
        tx.send(f"child {round_}".encode(), timeout=5)
        conn.send(rx.recv(timeout=5))
    conn.recv()  # keep the copies (alive, unclosed) until told


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("method", METHODS)
def test_copies_in_live_processes_take_turns(method: str, procs: Any) -> None:
    """A child keeps both ends open and alive; the parent's copies and the child's are
    used by turns: each side receives exactly what was sent since the other's turn."""
    parent_conn, child_conn = mp.get_context(method).Pipe()
    tx, rx = shmplane.channel(capacity=1 << 16)
    p = procs.start(_take_turns, tx, rx, child_conn, method=method)
    child_conn.close()
    with tx, rx:
        for round_ in range(3):
            parent_conn.send("go")
            assert parent_conn.recv() == f"child {round_}".encode()
            tx.send(f"parent {round_}".encode(), timeout=5)
            assert rx.recv(timeout=5) == f"parent {round_}".encode()
            assert _empty(rx)
        parent_conn.send("done")
        procs.join(p)
    parent_conn.close()


def _payload(who: int, i: int) -> Any:
    if i % 50 == 7:
        return np.full(40_000 + who, i, dtype=np.int64)  # 320 KB: many records of the ring
    return (who, i, b"x" * (i % 300))


def _send_numbered(tx: shmplane.Sender, who: int, n: int, go: Any) -> int:
    go.wait(20)
    for i in range(n):
        tx.send(_payload(who, i), timeout=30)
    tx.close()
    return n


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("method", METHODS)
def test_concurrent_sender_copies_interleave_whole_messages(method: str, procs: Any) -> None:
    """Two siblings send at the same time through copies of one sender: every message
    arrives once and whole, each sender's in its order (no RoleTakenError, no loss)."""
    ctx = mp.get_context(method)
    go = ctx.Event()
    tx, rx = shmplane.channel(capacity=1 << 16)
    n = 150
    started = [procs.start_reporting(_send_numbered, tx, who, n, go, method=method) for who in (1, 2)]
    tx.close()
    go.set()
    nxt = {1: 0, 2: 0}
    with rx:
        for _ in range(2 * n):
            m = rx.recv(timeout=30)
            if isinstance(m, np.ndarray):
                who, i = len(m) - 40_000, int(m[0])
                assert np.all(m == i)
            else:
                who, i, pad = m
                assert pad == b"x" * (i % 300)
            assert i == nxt[who], f"sender {who}: got {i}, expected {nxt[who]}"
            nxt[who] += 1
        for p, conn in started:
            assert get_report(conn) == n
            procs.join(p)
        with pytest.raises(shmplane.DisconnectedError):
            rx.recv(timeout=10)


def _recv_until_stop(rx: shmplane.Receiver, go: Any) -> list[int]:
    go.wait(20)
    got = []
    while True:
        m = rx.recv(timeout=30)
        if isinstance(m, bytes) and m == b"stop":
            break
        got.append(int(m[0]) if isinstance(m, np.ndarray) else m)
    rx.close()
    return got


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("method", METHODS)
def test_concurrent_receiver_copies_split_the_stream(method: str, procs: Any) -> None:
    """Two siblings receive at the same time through copies of one receiver: every
    message reaches exactly one of them, whole."""
    ctx = mp.get_context(method)
    go = ctx.Event()
    tx, rx = shmplane.channel(capacity=1 << 16)
    started = [procs.start_reporting(_recv_until_stop, rx, go, method=method) for _ in range(2)]
    rx.close()
    go.set()
    n = 400
    with tx:
        for i in range(n):
            tx.send(np.full(30_000, i) if i % 40 == 3 else i, timeout=30)
        tx.send(b"stop", timeout=30)
        tx.send(b"stop", timeout=30)
        seen = []
        for p, conn in started:
            seen += get_report(conn)
            procs.join(p)
    assert sorted(seen) == list(range(n))
