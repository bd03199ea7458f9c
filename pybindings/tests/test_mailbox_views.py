"""Zero-copy receive from a mailbox (issue 12 item 1, "mailbox ... where it applies"):
``mb.recv(copy=False)`` / ``mb.lease()`` view a message in its sender's lane, held
until the last view goes, with real producer processes; a producer waiting for space
behind held views gets it once they go; close and exit with views alive."""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

import shmplane

WATCHDOG = 60


def _produce(tx: Any, tag: int, n: int) -> None:
    with tx:
        for i in range(n):
            tx.send(np.full(1000, tag * 1000 + i, dtype=np.int64), timeout=WATCHDOG)


@pytest.mark.timeout(WATCHDOG * 2)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_views_from_two_producers_in_order_per_producer(method: str) -> None:
    ctx = mp.get_context(method)
    # 64 KiB lanes: each 8 KB array is one record (under a quarter of the lane).
    with shmplane.mailbox(1 << 16, max_senders=4) as mb:
        procs = [ctx.Process(target=_produce, args=(mb.sender(), tag, 40)) for tag in (1, 2)]
        for p in procs:
            p.start()
        seen: dict[int, list[int]] = {1: [], 2: []}
        views = 0
        for _ in range(80):
            a = mb.recv(timeout=WATCHDOG, copy=False)
            assert not a.flags.writeable
            views += a.base is not None
            v = int(a[0])
            assert (a == v).all()
            seen[v // 1000].append(v % 1000)
            del a
        for p in procs:
            p.join(WATCHDOG)
        assert seen == {1: list(range(40)), 2: list(range(40))}
        assert views >= 70, views  # the first message of each lane may be a copy
        assert mb.held == 0


@pytest.mark.timeout(WATCHDOG)
def test_a_producer_waiting_behind_held_views_gets_the_space_when_they_go() -> None:
    with shmplane.mailbox(1 << 16, max_senders=2) as mb:
        tx = mb.sender()
        with tx:
            tx.send(b"warm-up")
            assert mb.recv(timeout=5) == b"warm-up"
            held = []
            # Hold views until the lane is full: the next send times out, nothing lost.
            for i in range(100):
                try:
                    tx.send(np.full(1000, i, dtype=np.int64), timeout=0.2)
                except shmplane.Timeout:
                    break
                held.append(mb.recv(timeout=5, copy=False))
            else:
                pytest.fail("the lane never filled behind held views")
            assert mb.held == len(held) > 3
            assert [int(a[0]) for a in held] == list(range(len(held)))
            held.clear()
            gc.collect()
            assert mb.held == 0
            tx.send(np.full(1000, 7, dtype=np.int64), timeout=5)
            got = mb.recv(timeout=5, copy=False)
            assert int(got[0]) == 7


@pytest.mark.timeout(WATCHDOG)
def test_lease_and_views_outlive_the_mailbox_close() -> None:
    mb = shmplane.mailbox(1 << 16, max_senders=2)
    tx = mb.sender()
    tx.send(np.arange(100.0))
    tx.send(b"bytes")
    with mb.lease(timeout=5) as lease:
        arr = lease.value
        mv = mb.recv(timeout=5, copy=False)
        assert bytes(mv) == b"bytes"
        mb.close()
        # Still mapped and intact after the close.
        assert arr.tolist() == list(np.arange(100.0)) and bytes(mv) == b"bytes"
    del arr, mv
    tx.close()


EXIT = r"""
import numpy as np, shmplane, sys
mb = shmplane.mailbox(1 << 16, max_senders=2, name=sys.argv[1])
tx = mb.sender()
tx.send(np.arange(10.0)); tx.send(np.arange(10.0))
keep = [mb.recv(timeout=5, copy=False), mb.recv(timeout=5, copy=False)]
print(mb.held)
# exits with views alive: the close at exit gives them back first
"""


@pytest.mark.timeout(WATCHDOG)
def test_exit_with_views_alive_closes_cleanly(make_name: Any) -> None:
    name = make_name("exit")
    p = subprocess.run([sys.executable, "-c", EXIT, name], capture_output=True, text=True, timeout=WATCHDOG)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "2"
    assert not [f for f in os.listdir("/dev/shm") if f.startswith(f"shmplane.{name}")]


@pytest.mark.timeout(WATCHDOG)
def test_a_chunked_message_behind_held_views_is_refused_at_once_and_stays_queued() -> None:
    """As a channel: it could never end while the views pin its lane (review finding:
    the mailbox waited for chunks that could not come, then lost the message)."""
    import threading
    import time

    with shmplane.mailbox(4096, max_senders=2) as mb:
        tx = mb.sender()
        with tx:
            tx.send(b"w")
            mb.recv(timeout=5)
            tx.send(b"h" * 100)
            view = mb.recv(timeout=5, copy=False)
            sent: list[str] = []
            t = threading.Thread(target=lambda: (tx.send(b"B" * 20000, timeout=30), sent.append("sent")))
            t.start()
            time.sleep(0.2)
            with pytest.raises(shmplane.InvalidArgumentError, match="release them"):
                mb.recv(timeout=1)
            del view  # the space goes back: the message arrives whole
            assert mb.recv(timeout=30) == b"B" * 20000
            t.join(30)
            assert sent == ["sent"]


@pytest.mark.timeout(WATCHDOG)
def test_views_dropped_in_another_thread_free_their_lane_for_an_idle_consumer() -> None:
    """The lane's producer waits for space held by views that another thread drops
    while the consumer waits through the OS (select on fileno): the release rings the
    mailbox's doorbell and the next receive gives the space back (review finding:
    nothing applied the queued releases)."""
    import select
    import threading

    with shmplane.mailbox(1 << 14, max_senders=2) as mb:
        tx = mb.sender()
        with tx:
            tx.send(b"warm")
            assert mb.recv(timeout=5) == b"warm"
            views = []
            while True:
                try:
                    tx.send(b"x" * 1000, timeout=0.1)
                except shmplane.Timeout:
                    break
                views.append(mb.recv(timeout=5, copy=False))
            fd = mb.fileno()
            done: list[bool] = []
            worker = threading.Thread(target=lambda: (tx.send(b"after", timeout=20), done.append(True)))
            worker.start()
            threading.Thread(target=views.clear).start()  # dropped in another thread
            got = None
            for _ in range(100):
                if select.select([fd], [], [], 0.5)[0]:
                    try:
                        got = mb.try_recv()
                        break
                    except shmplane.Empty:
                        continue
            worker.join(20)
            assert got == b"after" and done == [True]
            assert mb.held == 0


@pytest.mark.timeout(WATCHDOG)
def test_a_receive_that_finds_nothing_re_arms_the_descriptor() -> None:
    """A ring with nothing left to take (the message was taken, a view released by
    another thread) leaves the descriptor readable; the `try_recv` that then finds the
    mailbox empty re-arms it, as `fileno`'s contract says ("receive until Empty"), so
    that a `select` loop sleeps instead of spinning (found as the flaky test above: the
    descriptor stayed readable until the next `fileno()`, and the loop ran out of tries
    before the producer's message came)."""
    import select

    with shmplane.mailbox(1 << 14, max_senders=2) as mb:
        with mb.sender() as tx:
            fd = mb.fileno()
            assert select.select([fd], [], [], 0)[0] == []  # armed, nothing pending
            for _ in range(3):
                tx.send(b"x" * 100)
                assert select.select([fd], [], [], 5)[0] == [fd]
                view = mb.recv(timeout=5, copy=False)
                assert bytes(view) == b"x" * 100
                del view
                with pytest.raises(shmplane.Empty):
                    mb.try_recv()
                assert select.select([fd], [], [], 0)[0] == []  # re-armed: sleeps again
            assert mb.held == 0
