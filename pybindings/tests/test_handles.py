"""Endpoints as handles: passing them to other processes, closing them, and the life
of the segment file behind them."""

from __future__ import annotations

import gc
import os
import pickle
import signal
import threading
from typing import Any

import numpy as np
import pytest

import shmplane
from shm_helpers import asleep_in_syscall, get_report, pause_forever, seg_path, wait_until

METHODS = ["fork", "spawn", "forkserver"]


# ------------------------------------------------------------ passing to children


def _recv_n(rx: shmplane.Receiver, n: int) -> list[Any]:
    with rx:
        return [rx.recv(timeout=20) for _ in range(n)]


def _send_n(tx: shmplane.Sender, n: int) -> int:
    with tx:
        for i in range(n):
            tx.send({"i": i, "data": np.full(1000, i)}, timeout=20)
    return n


@pytest.mark.parametrize("method", METHODS)
def test_receiver_passed_to_child(method: str, procs: Any) -> None:
    tx, rx = shmplane.channel(capacity=1 << 12)
    path = tx.path
    p, conn = procs.start_reporting(_recv_n, rx, 300, method=method)
    rx.close()  # right after start(): the child's copy keeps working
    assert rx.closed
    for i in range(300):
        tx.send(i, timeout=20)  # 300 messages through a 4 KiB ring: the child must drain it
    assert get_report(conn) == list(range(300))
    procs.join(p)
    tx.close()
    assert path and not os.path.exists(path)


@pytest.mark.parametrize("method", METHODS)
def test_sender_passed_to_child(method: str, procs: Any) -> None:
    tx, rx = shmplane.channel(capacity=1 << 16)
    path = rx.path
    p, conn = procs.start_reporting(_send_n, tx, 50, method=method)
    tx.close()
    for i in range(50):
        msg = rx.recv(timeout=20)
        assert msg["i"] == i and np.array_equal(msg["data"], np.full(1000, i))
    with pytest.raises(shmplane.DisconnectedError):
        rx.recv(timeout=20)  # the child closed its end
    assert get_report(conn) == 50
    procs.join(p)
    rx.close()
    assert path and not os.path.exists(path)


def _recv_one_then_wait(rx: shmplane.Receiver, conn: Any) -> None:
    conn.send(rx.recv(timeout=20))  # not closed: the child keeps its copy
    conn.recv()  # until the parent is done checking


@pytest.mark.parametrize("method", METHODS)
def test_parent_copy_takes_turns_with_a_child_that_still_holds_one(method: str, procs: Any) -> None:
    """A handle passed to a child is a copy, like a multiprocessing Connection: the
    parent's unclosed copy may receive once the child's is idle, from where the child
    left off (never a message the child already got)."""
    import multiprocessing as mp

    parent_conn, child_conn = mp.get_context(method).Pipe()
    tx, rx = shmplane.channel(capacity=1 << 16)
    p = procs.start(_recv_one_then_wait, rx, child_conn, method=method)
    child_conn.close()
    tx.send(b"first", timeout=10)
    assert parent_conn.poll(20) and parent_conn.recv() == b"first"
    tx.send(b"second", timeout=10)
    assert rx.poll(1)
    assert rx.recv(timeout=1) == b"second"
    with pytest.raises(shmplane.Empty):
        rx.try_recv()
    parent_conn.send("done")
    procs.join(p)
    parent_conn.close()
    tx.close()
    rx.close()


def _from_queue(q: Any, out: Any) -> None:
    rx = q.get(timeout=20)  # an endpoint arriving at an already-running child
    with rx:
        out.put([rx.recv(timeout=20) for _ in range(3)])
    out.put("closed")


@pytest.mark.parametrize("method", METHODS)
def test_endpoint_through_queue_to_running_child(method: str, procs: Any) -> None:
    import multiprocessing as mp

    ctx = mp.get_context(method)
    q, out = ctx.Queue(), ctx.Queue()
    p = procs.start(_from_queue, q, out, method=method)
    # The child is running, asleep in q.get(), before the endpoint exists.
    assert wait_until(lambda: asleep_in_syscall(p.pid, p.pid, ["poll"]), 30), "the child never waited in q.get()"
    tx, rx = shmplane.channel(capacity=1 << 16)
    q.put(rx)
    for i in range(3):
        tx.send(np.arange(i + 1), timeout=20)
    got = out.get(timeout=30)
    assert [g.tolist() for g in got] == [[0], [0, 1], [0, 1, 2]]
    assert out.get(timeout=30) == "closed"
    # A Queue pickles in its feeder thread: close our copy only once the child has it.
    rx.close()
    procs.join(p)
    tx.close()
    q.close()
    out.close()


def _from_pipe(conn: Any) -> Any:
    kind = conn.recv()
    end = conn.recv()
    with end:
        if kind == "rx":
            result = [end.recv(timeout=20) for _ in range(3)]
        else:
            for i in range(3):
                end.send(f"msg {i}", timeout=20)
            result = 3
    conn.send(result)
    return result


@pytest.mark.parametrize("kind", ["rx", "tx"])
@pytest.mark.parametrize("method", METHODS)
def test_endpoint_through_pipe_to_running_child(method: str, kind: str, procs: Any) -> None:
    import multiprocessing as mp

    parent_conn, child_conn = mp.get_context(method).Pipe()
    p = procs.start(_from_pipe, child_conn, method=method)
    child_conn.close()
    tx, rx = shmplane.channel(capacity=1 << 16)
    parent_conn.send(kind)
    if kind == "rx":
        parent_conn.send(rx)
        rx.close()  # Pipe.send pickled it already: closing at once is fine
        for i in range(3):
            tx.send(i * 10, timeout=20)
        assert parent_conn.poll(30)
        assert parent_conn.recv() == [0, 10, 20]
    else:
        parent_conn.send(tx)
        tx.close()
        assert [rx.recv(timeout=20) for _ in range(3)] == ["msg 0", "msg 1", "msg 2"]
        with pytest.raises(shmplane.DisconnectedError):
            rx.recv(timeout=20)
        assert parent_conn.poll(30)
        assert parent_conn.recv() == 3
    procs.join(p)
    tx.close()
    rx.close()
    parent_conn.close()


def _use_and_exit_without_close(rx: shmplane.Receiver) -> Any:
    return rx.recv(timeout=20)  # the child returns without closing rx


@pytest.mark.parametrize("method", METHODS)
def test_segment_removed_after_child_exits(method: str, shm_name: str, procs: Any) -> None:
    """The child ends without closing its end; once the child has exited and the parent
    closes its own end, the segment file is gone."""
    tx, rx = shmplane.channel(capacity=1 << 16, name=shm_name)
    p, conn = procs.start_reporting(_use_and_exit_without_close, rx, method=method)
    rx.close()
    tx.send(b"hello", timeout=10)
    assert get_report(conn) == b"hello"
    procs.join(p)
    assert os.path.exists(seg_path(shm_name))  # our sender is still open
    tx.close()
    assert not os.path.exists(seg_path(shm_name))


def _drain_until_none(rx: shmplane.Receiver, parent_closed: Any) -> int:
    n = 0
    with rx:
        while rx.recv(timeout=20) is not None:
            n += 1
    assert parent_closed.wait(20)  # the child is still alive when the parent closes its end
    return n


@pytest.mark.parametrize("method", METHODS)
def test_segment_removed_when_parent_closes_before_child_exits(method: str, shm_name: str, procs: Any) -> None:
    """The usual pattern: send a sentinel, close, then join. Every endpoint ends up
    closed (the child's by `with`, the parent's by close()), so the file must go."""
    path = seg_path(shm_name)
    import multiprocessing as mp

    tx, rx = shmplane.channel(capacity=1 << 16, name=shm_name)
    parent_closed = mp.get_context(method).Event()
    p, conn = procs.start_reporting(_drain_until_none, rx, parent_closed, method=method)
    rx.close()
    for i in range(10):
        tx.send(i, timeout=10)
    tx.send(None, timeout=10)
    tx.close()  # while the child is still running
    parent_closed.set()
    assert get_report(conn) == 10
    procs.join(p)
    try:
        assert wait_until(lambda: not os.path.exists(path), 2.0), f"{path} left behind"
    finally:
        if os.path.exists(path):
            os.unlink(path)  # keep the fixture's leak check for other tests


def _idle_until(event: Any) -> None:
    assert event.wait(20)


def test_fork_child_with_inherited_sender_copy_does_not_fake_a_death(procs: Any) -> None:
    import multiprocessing as mp

    tx, rx = shmplane.channel(capacity=1 << 16)
    parent_closed = mp.get_context("fork").Event()
    try:
        p = procs.start(_idle_until, parent_closed, method="fork")  # inherits copies of tx and rx, never uses them
        tx.send(b"last", timeout=5)
        tx.close()  # clean close while the child lives
        assert p.is_alive()
        parent_closed.set()
        procs.join(p)
        assert rx.recv(timeout=5) == b"last"
        with pytest.raises(shmplane.DisconnectedError):
            rx.recv(timeout=5)
    finally:
        tx.close()
        rx.close()


# --------------------------------------------------------------- repr, close, ...


def test_repr_contains_name_and_capacity(shm_name: str) -> None:
    tx, rx = shmplane.channel(capacity=1 << 16, name=shm_name, policy="block")
    for end, cls in ((tx, "Sender"), (rx, "Receiver")):
        r = repr(end)
        assert cls in r and shm_name in r and "65536" in r and "block" in r, r
    tx.close()
    rx.close()
    assert "closed" in repr(tx) and "closed" in repr(rx)


def test_properties(shm_name: str) -> None:
    tx, rx = shmplane.channel(capacity=1 << 16, name=shm_name)
    try:
        for end in (tx, rx):
            assert end.name == shm_name
            assert end.path == seg_path(shm_name)
            assert end.capacity == 1 << 16
            assert not end.closed
            assert isinstance(end.fileno(), int) and end.fileno() >= 0
            assert end.policy == "adaptive(spin_us=20)"
        assert tx.max_message_size == (1 << 16) - 16
        assert tx.fileno() != rx.fileno()
        for policy, text in (("spin", "spin"), ("block", "block"), ("adaptive", "adaptive(spin_us=5)")):
            tx.set_policy(policy, 5.0)
            rx.set_policy(policy, 5.0)
            assert tx.policy == rx.policy == text
        with pytest.raises(ValueError):
            tx.set_policy("bogus")
        with pytest.raises(ValueError):
            rx.set_policy("adaptive", -1.0)
    finally:
        tx.close()
        rx.close()
    for end in (tx, rx):
        assert end.closed and end.capacity == 0 and end.name is None


def test_anonymous_channels_get_distinct_names() -> None:
    pairs = [shmplane.channel(capacity=4096) for _ in range(5)]
    assert len({tx.name for tx, _ in pairs}) == 5
    for tx, rx in pairs:
        assert tx.name and rx.name == tx.name
        path = tx.path
        assert path == seg_path(tx.name) and os.path.exists(path)
        tx.close()
        rx.close()
        assert not os.path.exists(path)


def test_invalid_policy_creates_nothing(shm_name: str) -> None:
    with pytest.raises(ValueError):
        shmplane.channel(capacity=4096, name=shm_name, policy="bogus")
    gc.collect()
    assert not os.path.exists(seg_path(shm_name))


def test_context_manager_closes(shm_name: str) -> None:
    with shmplane.channel(capacity=4096, name=shm_name)[0] as tx:
        pass  # the receiver was dropped at once (closed by its finaliser)
    assert tx.closed
    tx2, rx2 = shmplane.channel(capacity=4096, name=shm_name)
    with tx2 as a, rx2 as b:
        assert a is tx2 and b is rx2
        a.send(b"x")
        assert b.recv(timeout=1) == b"x"
    assert tx2.closed and rx2.closed
    assert not os.path.exists(seg_path(shm_name))


def test_context_manager_closes_on_exception(shm_name: str) -> None:
    tx, rx = shmplane.channel(capacity=4096, name=shm_name)
    with pytest.raises(RuntimeError, match="boom"):
        with tx, rx:
            raise RuntimeError("boom")  # __exit__ must not swallow it
    assert tx.closed and rx.closed
    assert not os.path.exists(seg_path(shm_name))


def test_close_is_idempotent(shm_name: str) -> None:
    tx, rx = shmplane.channel(capacity=4096, name=shm_name)
    for _ in range(3):
        tx.close()
        rx.close()
    assert not os.path.exists(seg_path(shm_name))


SENDER_OPS = {
    "send": lambda tx: tx.send(b"x", timeout=0.1),
    "send-array": lambda tx: tx.send(np.arange(3), timeout=0.1),
    "try_send": lambda tx: tx.try_send(b"x"),
    "send_bytes": lambda tx: tx.send_bytes(b"x", timeout=0.1),
    "poll_space": lambda tx: tx.poll_space(1),
    "fileno": lambda tx: tx.fileno(),
    "max_message_size": lambda tx: tx.max_message_size,
    "pickle": lambda tx: pickle.dumps(tx),
}
RECEIVER_OPS = {
    "recv": lambda rx: rx.recv(timeout=0.1),
    "try_recv": lambda rx: rx.try_recv(),
    "recv_bytes": lambda rx: rx.recv_bytes(timeout=0.1),
    "poll": lambda rx: rx.poll(0.01),
    "fileno": lambda rx: rx.fileno(),
    "next": lambda rx: next(iter(rx)),
    "pickle": lambda rx: pickle.dumps(rx),
}


@pytest.mark.parametrize("op", SENDER_OPS.values(), ids=SENDER_OPS.keys())
def test_closed_sender_raises_closed_error(op: Any) -> None:
    tx, rx = shmplane.channel(capacity=4096)
    tx.close()
    with pytest.raises(shmplane.ClosedError):
        op(tx)
    rx.close()


@pytest.mark.parametrize("op", RECEIVER_OPS.values(), ids=RECEIVER_OPS.keys())
def test_closed_receiver_raises_closed_error(op: Any) -> None:
    tx, rx = shmplane.channel(capacity=4096)
    tx.send(b"pending")  # even with a message waiting
    rx.close()
    with pytest.raises(shmplane.ClosedError):
        op(rx)
    tx.close()


def test_closed_error_is_a_value_error() -> None:
    tx, rx = shmplane.channel(capacity=4096)
    tx.close()
    rx.close()
    with pytest.raises(ValueError):
        tx.send(b"x")


def test_segment_file_lives_until_both_ends_close(shm_name: str) -> None:
    path = seg_path(shm_name)
    tx, rx = shmplane.channel(capacity=4096, name=shm_name)
    assert os.path.exists(path)
    tx.close()
    assert os.path.exists(path)  # the receiver may still drain
    rx.close()
    assert not os.path.exists(path)
    tx, rx = shmplane.channel(capacity=4096, name=shm_name)  # the name is free again
    rx.close()
    assert os.path.exists(path)
    tx.close()
    assert not os.path.exists(path)


def test_dropped_endpoints_remove_the_segment(shm_name: str) -> None:
    tx, rx = shmplane.channel(capacity=4096, name=shm_name)
    del tx, rx
    gc.collect()
    assert not os.path.exists(seg_path(shm_name))


def test_receiver_iteration_ends_on_close() -> None:
    tx, rx = shmplane.channel(capacity=4096)
    for i in range(5):
        tx.send(i)
    tx.close()
    assert list(rx) == [0, 1, 2, 3, 4]
    rx.close()


def test_endpoint_busy_in_another_thread() -> None:
    """An endpoint serves one thread at a time: a second thread gets an error, not a
    data race, and the first thread's call is undisturbed."""
    tx, rx = shmplane.channel(capacity=4096)
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(rx.recv(timeout=10)))
    t.start()
    assert wait_until(lambda: "busy" in repr(rx), 5.0)  # the thread is blocked in recv
    with pytest.raises(shmplane.InvalidArgumentError, match="another thread"):
        rx.try_recv()
    tx.send(b"to the thread")
    t.join(10)
    assert got == [b"to the thread"]
    tx.close()
    rx.close()


# --------------------------------------------------------------------------- gc


def test_gc_returns_list_of_names() -> None:
    removed = shmplane.gc()
    assert isinstance(removed, list) and all(isinstance(n, str) for n in removed)


def _create_and_hang(name: str, ready: Any) -> None:
    tx = shmplane.Sender.create(name, 1 << 16)
    rx = shmplane.Receiver.open(name)
    tx.send(b"x")
    ready.send("ready")
    pause_forever()
    del tx, rx


@pytest.mark.timeout(30)
def test_gc_removes_segment_of_killed_process(shm_name: str, procs: Any) -> None:
    import multiprocessing as mp

    r, w = mp.get_context("spawn").Pipe(duplex=False)
    p = procs.start(_create_and_hang, shm_name, w)
    w.close()
    assert r.poll(20) and r.recv() == "ready"
    assert shm_name not in shmplane.gc()  # its owner is alive
    assert os.path.exists(seg_path(shm_name))
    os.kill(p.pid, signal.SIGKILL)
    procs.join(p, exitcode=-signal.SIGKILL)
    assert shm_name in shmplane.gc()
    assert not os.path.exists(seg_path(shm_name))


def test_open_waits_for_a_creator_that_comes_later(make_name: Any) -> None:
    """``open(name, timeout=...)`` retries while the segment does not exist yet (a
    creator starting in another process), as ``RpcClient.connect`` does; 0 (the
    default) does not wait."""
    import threading

    name, mb_name, slot_name = make_name("late"), make_name("late-mb"), make_name("late-slot")
    with pytest.raises(shmplane.NotFoundError):
        shmplane.Sender.open(name)
    with pytest.raises(ValueError):
        shmplane.Sender.open(name, timeout=-1.0)
    made: list[Any] = []

    opener = threading.get_native_id()

    def create() -> None:
        # Only once the opener is waiting (asleep between its tries).
        assert wait_until(lambda: asleep_in_syscall(os.getpid(), opener, ["clock_nanosleep", "nanosleep"]), 20)
        made.append(shmplane.Receiver.create(name, 4096))
        made.append(shmplane.mailbox(4096, name=mb_name))
        made.append(shmplane.RawValue("d", 2.5, name=slot_name))

    t = threading.Thread(target=create)
    t.start()
    tx = shmplane.Sender.open(name, timeout=30)
    mtx = shmplane.Sender.open(mb_name, timeout=30)
    v = shmplane.RawValue.attach(slot_name, "d", timeout=30)
    t.join()
    rx, mb, v0 = made
    with tx, rx, mtx, mb, v, v0:
        tx.send(b"hi")
        assert rx.recv(timeout=5) == b"hi"
        mtx.send(b"mb")
        assert mb.recv(timeout=5) == b"mb"
        assert v.value == 2.5
    with pytest.raises(shmplane.NotFoundError):
        shmplane.Receiver.open(make_name("never"), timeout=0.05)
