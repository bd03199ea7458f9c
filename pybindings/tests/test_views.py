"""Zero-copy receive: ``recv(copy=False)`` and ``Receiver.lease()``.

Views of messages in shared memory (read-only memoryviews, ndarrays, pickle-5 buffers)
hold their ring space until the last view goes, in any order; the receiver goes on
meanwhile. Views stay readable after the receiver closes and in a fork child. Every
test has a watchdog (pytest-timeout) and bounded waits.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from typing import Any

import numpy as np
import pytest

import shmplane
from shm_helpers import wait_until_blocked, when_blocked

WATCHDOG = 60


def _held(rx: shmplane.Receiver) -> int:
    gc.collect()
    return rx.held


@pytest.mark.timeout(WATCHDOG)
def test_every_kind_is_viewed_read_only_and_equal() -> None:
    tx, rx = shmplane.channel(1 << 20)
    with tx, rx:
        arr = np.arange(12.0).reshape(3, 4)
        fortran = np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3))
        structured = np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8")])
        obj = {"x": np.arange(5), "s": "text", "n": [1, 2.5]}
        for sent in (b"bytes!", arr, fortran, structured, np.zeros((0, 3)), obj):
            tx.send(sent, timeout=5)
            got = rx.recv(timeout=5, copy=False)
            if isinstance(sent, bytes):
                assert isinstance(got, memoryview) and got.readonly and bytes(got) == sent
            elif isinstance(sent, np.ndarray):
                assert isinstance(got, np.ndarray) and not got.flags.writeable
                assert got.dtype == sent.dtype and got.shape == sent.shape
                np.testing.assert_array_equal(got, sent)
                if sent.size:
                    with pytest.raises(ValueError):
                        got.flat[0] = 1  # read-only
            else:
                assert got["s"] == "text" and got["n"] == [1, 2.5]
                np.testing.assert_array_equal(got["x"], sent["x"])  # type: ignore[index]
                assert not got["x"].flags.writeable
            del got
        assert _held(rx) == 0


@pytest.mark.timeout(WATCHDOG)
def test_views_released_in_any_order_free_the_ring_in_order() -> None:
    tx, rx = shmplane.channel(1 << 16)
    with tx, rx:
        block = 14 << 10  # four fill the 64 KiB ring
        views = []
        for i in range(4):
            tx.send(np.full(block // 8, float(i)), timeout=5)
            views.append(rx.recv(timeout=5, copy=False))
        assert _held(rx) == 4
        with pytest.raises(shmplane.Full):
            tx.try_send(np.zeros(block // 8))
        # Views of views keep the message: a slice and np.asarray of it.
        keep = np.asarray(views[0][10:20])
        del views[3], views[1]
        with pytest.raises(shmplane.Full):
            tx.try_send(np.zeros(block // 8))
        assert _held(rx) == 2
        views[0] = None  # the slice still holds the oldest
        with pytest.raises(shmplane.Full):
            tx.try_send(np.zeros(block // 8))
        assert (keep == 0.0).all()
        del keep
        assert _held(rx) == 1
        tx.try_send(np.zeros(block // 8))  # the oldest went: its space is back
        views.clear()
        assert _held(rx) == 0
        assert (rx.recv(timeout=5) == 0).all()


@pytest.mark.timeout(WATCHDOG)
def test_copies_received_behind_a_view_are_intact() -> None:
    tx, rx = shmplane.channel(1 << 16)
    with tx, rx:
        tx.send(b"a" * 1000, timeout=5)
        view = rx.recv(timeout=5, copy=False)
        for i in range(2000):  # the view pins the ring: the sender fills it, then stops
            try:
                tx.try_send(i.to_bytes(4, "little") * 100)
            except shmplane.Full:
                break
            assert rx.try_recv() == i.to_bytes(4, "little") * 100
        else:
            pytest.fail("the sender never filled the ring behind a held view")
        assert bytes(view) == b"a" * 1000
        del view
        for i in range(2000):  # released: the ring turns over freely again
            tx.send(i.to_bytes(4, "little") * 100, timeout=5)
            assert rx.recv(timeout=5) == i.to_bytes(4, "little") * 100


@pytest.mark.timeout(WATCHDOG)
def test_lease_context_manager_and_explicit_release() -> None:
    tx, rx = shmplane.channel(1 << 16)
    with tx, rx:
        tx.send(np.arange(4.0), timeout=5)
        with rx.lease(timeout=5) as lease:
            assert lease.in_place and lease.nbytes == 32 and not lease.released
            assert lease.value.sum() == 6.0
            assert "Lease" in repr(lease)
        assert lease.released and _held(rx) == 0
        with pytest.raises(BufferError):
            lease.value
        # A view kept past the block: released when it goes.
        tx.send(b"xyz", timeout=5)
        with rx.lease(timeout=5) as lease:
            kept = lease.value
        assert not lease.released and _held(rx) == 1
        with pytest.raises(BufferError):
            lease.release()  # a view is alive
        del kept
        assert lease.released and _held(rx) == 0
        lease.release()  # idempotent


@pytest.mark.timeout(WATCHDOG)
def test_a_view_outlives_the_receivers_close() -> None:
    tx, rx = shmplane.channel(1 << 16)
    name = tx.name or ""
    data = np.random.default_rng(1).random(1000)
    tx.send(data, timeout=5)
    view = rx.recv(timeout=5, copy=False)
    rx.close()
    tx.close()
    gc.collect()
    np.testing.assert_array_equal(view, data)  # still mapped
    # The receiver's close completes when the last view goes: the segment is removed.
    assert os.path.exists(f"/dev/shm/shmplane.{name}")
    del view
    gc.collect()
    assert not os.path.exists(f"/dev/shm/shmplane.{name}")


@pytest.mark.timeout(WATCHDOG)
def test_a_view_dropped_by_another_thread_frees_a_waiting_sender() -> None:
    tx, rx = shmplane.channel(1 << 16)
    with tx, rx:
        views = []
        for i in range(4):
            tx.send(np.full((14 << 10) // 8, float(i)), timeout=5)
            views.append(rx.recv(timeout=5, copy=False))
        sent = threading.Event()
        # 10 KB: more than the views leave free (4 x 14 KiB of 64 KiB), so the send
        # must wait for their space.
        after = b"after" + bytes(10_000)

        def send_more() -> None:
            tx.send(after, timeout=20)  # waits for the views' space
            sent.set()

        path = tx.path  # (the sender's lock is busy once it sends)
        threads = [threading.Thread(target=send_more)]
        threads[0].start()
        assert threads[0].native_id is not None
        # The send waits for the views' space: asleep for room, not yet started.
        wait_until_blocked(os.getpid(), threads[0].native_id, segment=path)
        assert not sent.is_set()
        # The views go while the main thread is asleep in recv (the receiver busy).
        threads.append(when_blocked(views.clear, segment=path))
        assert rx.recv(timeout=20) == after
        for t in threads:
            t.join(20)
        assert sent.is_set() and _held(rx) == 0


@pytest.mark.timeout(WATCHDOG)
def test_large_messages_come_whole_once_the_receiver_views() -> None:
    tx, rx = shmplane.channel(1 << 25)  # 32 MiB: whole up to a quarter, 8 MiB
    with tx, rx:
        big = np.random.default_rng(2).random(1_000_000)  # 8 MB
        tx.send(big, timeout=10)  # before the receiver asked: chunked, received by copy
        with rx.lease(timeout=10) as lease:
            assert not lease.in_place
            np.testing.assert_array_equal(lease.value, big)
        for _ in range(3):
            tx.send(big, timeout=10)
            got = rx.recv(timeout=10, copy=False)
            assert not got.flags.writeable  # a view, not a copy
            np.testing.assert_array_equal(got, big)
            del got
        # Larger than one record can be (half the ring): a copy, documented.
        huge = np.ones(1_100_000)  # 8.8 MB, over a quarter of the ring: chunked
        t = threading.Thread(target=tx.send, args=(huge,), kwargs={"timeout": 20})
        t.start()
        got = rx.recv(timeout=20, copy=False)
        t.join(20)
        assert got.flags.writeable and got.shape == huge.shape
        assert _held(rx) == 0


def _child_reads(conn: Any, view: Any, expected: bytes) -> None:
    conn.send(bytes(view) == expected)
    conn.close()


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_views_survive_fork_and_the_child_releases_nothing() -> None:
    import multiprocessing as mp

    tx, rx = shmplane.channel(1 << 16)
    with tx, rx:
        tx.send(b"p" * 100, timeout=5)
        view = rx.recv(timeout=5, copy=False)
        r, w = mp.get_context("fork").Pipe(duplex=False)
        p = mp.get_context("fork").Process(target=_child_reads, args=(w, view, b"p" * 100))
        p.start()
        w.close()
        assert r.poll(20) and r.recv() is True
        p.join(20)
        assert p.exitcode == 0
        # The child's copy of the view died with it without releasing the parent's,
        # and its receiver copy's close at exit did not take the role from the parent.
        assert _held(rx) == 1 and bytes(view) == b"p" * 100
        del view
        assert _held(rx) == 0


@pytest.mark.timeout(WATCHDOG)
def test_lossy_broadcast_refuses_views() -> None:
    pub = shmplane.broadcast(capacity=1 << 16, lossy=True)
    sub = pub.subscribe()
    with pub, sub:
        pub.send(b"x")
        with pytest.raises(shmplane.InvalidArgumentError):
            sub.recv(timeout=5, copy=False)


_KEPT: list[Any] = []


def _child_keeps_a_view(rx: Any, conn: Any) -> None:
    _KEPT.append(rx.recv(timeout=20, copy=False))
    conn.send(bytes(_KEPT[0]))
    conn.close()
    # Exits normally with the view alive: its receiver's close at exit gives it back.


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_child_exiting_with_views_alive_closes_cleanly(method: str) -> None:
    import multiprocessing as mp

    tx, rx = shmplane.channel(1 << 16)
    with tx:
        tx.send(b"view me", timeout=5)
        r, w = mp.get_context(method).Pipe(duplex=False)
        p = mp.get_context(method).Process(target=_child_keeps_a_view, args=(rx, w))
        p.start()
        w.close()
        rx.close()  # the child's copy is the receiver now
        assert r.poll(20) and r.recv() == b"view me"
        p.join(20)
        assert p.exitcode == 0
        # A clean close (not a death): the sender learns it when it waits for room.
        with pytest.raises(shmplane.DisconnectedError):
            for _ in range(10_000):
                tx.send(b"y" * 1000, timeout=10)


@pytest.mark.timeout(WATCHDOG)
def test_recv_into_checks_before_writing_and_keeps_a_refused_message() -> None:
    tx, rx = shmplane.channel(1 << 20)
    with tx, rx:
        arr = np.arange(12.0).reshape(3, 4)
        tx.send(arr, timeout=5)
        for bad in (np.zeros((4, 3)), np.zeros((3, 4), dtype=np.float32), np.zeros((3, 4), order="F"), bytearray(96)):
            before = bad.copy() if isinstance(bad, np.ndarray) else bytes(bad)
            with pytest.raises(shmplane.InvalidArgumentError, match="stays queued"):
                rx.recv_into(bad, timeout=5)
            assert (bad == before).all() if isinstance(bad, np.ndarray) else bytes(bad) == before
        out = np.empty((3, 4))
        assert rx.recv_into(out, timeout=5) == 96
        np.testing.assert_array_equal(out, arr)
        # Fortran order into a Fortran array; bytes into a larger buffer.
        tx.send(np.asfortranarray(arr), timeout=5)
        fout = np.empty((3, 4), order="F")
        assert rx.recv_into(fout, timeout=5) == 96
        np.testing.assert_array_equal(fout, arr)
        tx.send(b"abc", timeout=5)
        with pytest.raises(shmplane.InvalidArgumentError):
            rx.recv_into(b"xxxx", timeout=5)  # read-only
        buf = bytearray(8)
        assert rx.recv_into(buf, timeout=5) == 3 and bytes(buf[:3]) == b"abc"
        # A pickle has no buffer: refused, still queued, then received normally.
        tx.send({"a": 1}, timeout=5)
        with pytest.raises(shmplane.InvalidArgumentError, match="pickled"):
            rx.recv_into(bytearray(100), timeout=5)
        assert rx.recv(timeout=5) == {"a": 1}
        # Large (chunked) arrays copy straight into the destination.
        big = np.random.default_rng(3).random(500_000)  # 4 MB through a 1 MiB ring
        t = threading.Thread(target=tx.send, args=(big,), kwargs={"timeout": 20})
        t.start()
        bout = np.empty_like(big)
        assert rx.recv_into(bout, timeout=20) == big.nbytes
        t.join(20)
        np.testing.assert_array_equal(bout, big)
        with pytest.raises(shmplane.Timeout):
            rx.recv_into(bout, timeout=0.01)


@pytest.mark.timeout(WATCHDOG)
def test_no_base_in_a_views_chain_can_be_released_under_it() -> None:
    tx, rx = shmplane.channel(1 << 18)
    with tx, rx:
        ro = np.arange(10.0)
        ro.flags.writeable = False
        for sent in (np.arange(1000.0), {"x": np.arange(1000.0)}, {"r": ro}):
            tx.send(sent, timeout=5)
            got = rx.recv(timeout=5, copy=False)
            arr = got if isinstance(got, np.ndarray) else next(iter(got.values()))
            b: Any = arr
            while b is not None:
                assert not isinstance(b, memoryview), "a releasable memoryview under a live array"
                b = getattr(b, "base", None)
            lease_views = rx.held
            assert lease_views == 1
            del got, b
            gc.collect()
            assert rx.held == 1  # `arr` alone keeps it
            np.testing.assert_array_equal(arr, np.asarray(sent if isinstance(sent, np.ndarray) else next(iter(sent.values()))))
            del arr
            assert _held(rx) == 0


@pytest.mark.timeout(WATCHDOG)
def test_recv_into_trusts_the_buffer_not_the_objects_attributes() -> None:
    class Fake(bytearray):
        dtype = np.dtype("<f8")
        shape = (100_000,)

    tx, rx = shmplane.channel(1 << 21)
    with tx, rx:
        tx.send(np.zeros(100_000), timeout=5)
        with pytest.raises(shmplane.InvalidArgumentError, match="800000 bytes"):
            rx.recv_into(Fake(8), timeout=5)
        assert rx.recv(timeout=5).shape == (100_000,)


@pytest.mark.timeout(WATCHDOG)
def test_a_chunked_message_that_cannot_pass_held_views_is_refused_and_stays_queued() -> None:
    tx, rx = shmplane.channel(1 << 20)
    with tx, rx:
        tx.send(b"v" * 200_000, timeout=5)
        view = rx.recv(timeout=5, copy=False)
        big = b"c" * 900_000  # chunked (over a quarter), and it cannot fit beside the view
        t = threading.Thread(target=lambda: tx.send(big, timeout=10))
        t.start()
        with pytest.raises(shmplane.InvalidArgumentError, match="release them"):
            rx.recv(timeout=5)
        del view
        assert rx.recv(timeout=10) == big
        t.join(10)


def _send_loan_then_exit(tx: Any, n: int) -> None:
    with tx.loan(n, "<i4") as arr:
        arr[:] = np.arange(n, dtype="<i4")
    tx.close()  # `arr` still bound: the close must still be a clean one


@pytest.mark.timeout(WATCHDOG)
def test_loan_commits_at_the_end_of_the_block_and_aborts_on_an_exception() -> None:
    tx, rx = shmplane.channel(1 << 20)
    with tx, rx:
        with tx.loan((3, 4), "f4") as a:
            assert a.flags.writeable and a.shape == (3, 4) and a.dtype == np.float32
            a[:] = np.arange(12, dtype="f4").reshape(3, 4)
        np.testing.assert_array_equal(rx.recv(timeout=5), np.arange(12, dtype="f4").reshape(3, 4))
        with pytest.raises(RuntimeError):
            with tx.loan(5) as a:
                a[:] = 1.0
                raise RuntimeError("the producer failed part-way")
        with pytest.raises(shmplane.Empty):
            rx.try_recv()  # aborted: nothing was sent
        # Fortran order, explicit commit, sends refused while a loan is open.
        loan = tx.loan((2, 3), "<i8", order="F")
        assert loan.open and loan.nbytes == 48 and "open" in repr(loan)
        with pytest.raises(shmplane.InvalidArgumentError, match="loan"):
            tx.send(b"not now")
        arr = loan.array()
        arr[:] = [[1, 2, 3], [4, 5, 6]]
        del arr
        assert loan.commit() and not loan.open and not loan.commit()
        got = rx.recv(timeout=5)
        assert got.flags.f_contiguous
        np.testing.assert_array_equal(got, [[1, 2, 3], [4, 5, 6]])
        with pytest.raises(ValueError):
            loan.array()
        # A loan dropped without ending is aborted; the sender works on.
        tx.loan(3)
        gc.collect()
        tx.send(b"after", timeout=5)
        assert rx.recv(timeout=5) == b"after"
        # Errors: too large for one record, object dtypes, bad order.
        with pytest.raises(shmplane.MessageTooLargeError):
            tx.loan(1 << 20)
        with pytest.raises(ValueError):
            tx.loan(3, object)
        with pytest.raises(ValueError):
            tx.loan(3, order="K")
        # Zero-copy both ways: a loan received as a view.
        with tx.loan(1000) as a:
            a[:] = 2.5
        v = rx.recv(timeout=5, copy=False)
        assert not v.flags.writeable and (v == 2.5).all()


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_loan_in_a_child_process_reaches_the_parent(method: str) -> None:
    import multiprocessing as mp

    tx, rx = shmplane.channel(1 << 20)
    with rx:
        p = mp.get_context(method).Process(target=_send_loan_then_exit, args=(tx, 1000))
        p.start()
        tx.close()
        np.testing.assert_array_equal(rx.recv(timeout=20), np.arange(1000, dtype="<i4"))
        p.join(20)
        assert p.exitcode == 0
        with pytest.raises(shmplane.DisconnectedError):
            rx.recv(timeout=20)


@pytest.mark.timeout(WATCHDOG)
def test_a_kept_loan_array_turns_read_only_and_does_not_keep_the_sender() -> None:
    tx, rx = shmplane.channel(1 << 20)
    name = tx.name
    with tx.loan(3, "<i4") as a:
        a[:] = [1, 2, 3]
    assert not a.flags.writeable  # the loan ended: no writing under the receiver
    np.testing.assert_array_equal(rx.recv(timeout=5), [1, 2, 3])
    tx.close()  # `a` is alive: still a clean close
    with pytest.raises(shmplane.DisconnectedError):
        rx.recv(timeout=5)
    rx.close()
    assert not os.path.exists(f"/dev/shm/shmplane.{name}")
    assert (a == [1, 2, 3]).all()  # still mapped
    del a


@pytest.mark.timeout(WATCHDOG)
def test_a_loan_ended_while_another_thread_closes_the_sender_does_not_deadlock() -> None:
    tx, rx = shmplane.channel(1 << 20)
    with rx:
        loan = tx.loan(1000)
        t = threading.Thread(target=tx.close)
        t.start()
        time.sleep(0.005)
        try:
            loan.commit()
        except shmplane.ClosedError:
            pass
        t.join(10)
        assert not t.is_alive()
        del loan


def _child_sends_after_fork(tx: Any, conn: Any) -> None:
    try:
        tx.send(b"child", timeout=10)
        conn.send("sent")
    except Exception as e:  # pragma: no cover - reported to the parent
        conn.send(f"{type(e).__name__}: {e}")


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_fork_child_of_a_sender_with_an_open_loan_sends_after_the_parents_loan() -> None:
    import multiprocessing as mp

    tx, rx = shmplane.channel(1 << 20)
    with tx, rx:
        loan = tx.loan(3, "<i4")
        r, w = mp.get_context("fork").Pipe(duplex=False)
        p = mp.get_context("fork").Process(target=_child_sends_after_fork, args=(tx, w))
        p.start()
        w.close()
        # The child's send waits for the parent's open loan (the role lease: a copy
        # waiting for another copy's polls it every millisecond, asleep in between).
        wait_until_blocked(p.pid, p.pid, calls=("clock_nanosleep", "nanosleep"))
        with loan as a:
            a[:] = [7, 8, 9]
        assert r.poll(20) and r.recv() == "sent"
        p.join(20)
        np.testing.assert_array_equal(rx.recv(timeout=5), [7, 8, 9])
        assert rx.recv(timeout=5) == b"child"


def _view_and_hang(name: str, ready: Any, n: int) -> None:
    from shm_helpers import pause_forever

    rx = shmplane.Receiver.open(name)
    views = [rx.recv(timeout=20, copy=False) for _ in range(n)]
    ready.send([int(v[0]) for v in views])
    pause_forever()


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_receiver_killed_while_holding_views_loses_nothing_and_repeats_nothing(
    method: str, make_name: Any, procs: Any
) -> None:
    # SIGKILL a receiver that holds views of every message it took: the sender learns of
    # the death (it does not wait for the views' space for ever), and a new receiver
    # resumes after the last message the dead one took (its published resume position,
    # `ConsumerLine::resume`): every later message arrives once, in order, and none of
    # the three it had viewed arrives again.
    import multiprocessing as mp

    name = make_name("viewer")
    tx = shmplane.Sender.create(name, 1 << 16)
    with tx:
        for i in range(5):
            tx.send(np.full(1000, float(i)), timeout=5)
        r, w = mp.get_context(method).Pipe(duplex=False)
        p = procs.start(_view_and_hang, name, w, 3, method=method)
        w.close()
        assert r.poll(20) and r.recv() == [0, 1, 2]
        os.kill(p.pid, signal.SIGKILL)
        procs.join(p, exitcode=-signal.SIGKILL)
        with pytest.raises(shmplane.PeerDeadError):
            for i in range(5, 200):  # the ring fills behind the dead holder's views
                tx.send(np.full(1000, float(i)), timeout=10)
        rx = shmplane.Receiver.open(name)  # replaces the dead receiver
        with rx:
            got = []
            while True:
                try:
                    got.append(int(rx.try_recv()[0]))
                except shmplane.Empty:
                    break
            assert got[:2] == [3, 4], got[:10]  # nothing lost, nothing delivered twice
            assert got == sorted(got) and len(set(got)) == len(got)


def _copy_views_and_hang(rx: Any, ready: Any, n: int) -> None:
    from shm_helpers import pause_forever

    views = [rx.recv(timeout=20, copy=False) for _ in range(n)]
    ready.send([int(v[0]) for v in views])
    pause_forever()


@pytest.mark.timeout(WATCHDOG)
def test_a_copy_of_a_killed_viewer_is_not_ready_for_what_it_delivered(procs: Any) -> None:
    # Readiness of the copy left behind looks from the dead holder's resume position:
    # the three messages it viewed are no reason to wake up, and a new one is.
    import multiprocessing as mp

    tx, rx = shmplane.channel(1 << 16)
    with tx, rx:
        for i in range(3):
            tx.send(np.full(10, float(i)), timeout=5)
        r, w = mp.get_context("fork").Pipe(duplex=False)
        p = procs.start(_copy_views_and_hang, rx, w, 3, method="fork")
        w.close()
        assert r.poll(20) and r.recv() == [0, 1, 2]
        os.kill(p.pid, signal.SIGKILL)
        procs.join(p, exitcode=-signal.SIGKILL)
        import select

        fd = rx.fileno()  # armed: readable iff a message is there (no lease taken)
        assert select.select([fd], [], [], 0.2)[0] == [], "readable for messages the dead copy had delivered"
        assert not rx.poll(0), "ready for messages the dead copy had delivered"
        with pytest.raises(shmplane.Empty):
            rx.try_recv()
        tx.send(b"next", timeout=5)
        assert rx.poll(5)
        assert rx.try_recv() == b"next"
