"""Broadcast (one publisher, many subscribers) with real processes: subscribers in
children (fork, spawn, forkserver) and joining by name, every subscriber gets every
message in order, back-pressure of the lossless kind and LaggedError of the lossy one,
a subscriber or the publisher killed (SIGKILL), pickled handles, readiness and
asyncio, bad arguments, and no leaked segments."""

from __future__ import annotations

import asyncio
import os
import pickle
import select
import signal
import time
from typing import Any

import numpy as np
import pytest

import shmplane
from shm_helpers import get_report

METHODS = ["fork", "spawn", "forkserver"]


# ------------------------------------------------------------------ children


def _subscribe_and_count(name: str, ready: Any, n: int) -> list[Any]:
    with shmplane.Subscriber.open(name) as sub:
        ready.send("joined")
        got = [sub.recv(timeout=20) for _ in range(n)]
    return [g if not isinstance(g, np.ndarray) else float(g.sum()) for g in got]


def _recv_n(sub: shmplane.Subscriber, n: int) -> list[Any]:
    with sub:
        return [sub.recv(timeout=20) for _ in range(n)]


def _read_one_then_sleep(name: str, ready: Any) -> None:
    sub = shmplane.Subscriber.open(name)
    ready.send("joined")
    sub.recv(timeout=20)
    time.sleep(60)  # killed by the test


def _publish(pub: shmplane.Publisher, n: int) -> int:
    with pub:
        for i in range(n):
            pub.send(i, timeout=20)
    return n


def _publish_forever(name: str, ready: Any) -> None:
    pub = shmplane.Publisher.open(name)
    ready.send("publishing")
    i = 0
    while True:
        pub.send(i, timeout=20)
        i += 1


# --------------------------------------------------------------------- tests


def test_every_subscriber_gets_every_kind_in_order(shm_name: str) -> None:
    with shmplane.Publisher.create(shm_name, 1 << 16) as pub:
        subs = [pub.subscribe() for _ in range(3)]
        big = np.arange(300_000, dtype=np.float64)  # 2.4 MB: 37 ring laps
        items: list[Any] = [b"bytes", np.arange(12).reshape(3, 4), {"obj": [1, 2]}, "text"]
        done: list[Any] = []
        # The big array laps the ring: the subscribers must drain while it streams.
        import threading

        def drain(s: shmplane.Subscriber) -> None:
            done.append([s.recv(timeout=20) for _ in range(len(items) + 1)])

        threads = [threading.Thread(target=drain, args=(s,)) for s in subs]
        for t in threads:
            t.start()
        for it in items:
            pub.send(it)
        pub.send(big)
        for t in threads:
            t.join(30)
        assert len(done) == 3
        for got in done:
            assert got[0] == b"bytes"
            assert np.array_equal(got[1], items[1])
            assert got[2] == {"obj": [1, 2]} and got[3] == "text"
            assert np.array_equal(got[4], big)
        for s in subs:
            s.close()


def test_subscribers_receive_only_after_joining(shm_name: str) -> None:
    pub = shmplane.broadcast(4096, name=shm_name)
    pub.send("nobody hears this")
    a = pub.subscribe()
    pub.send(1)
    b = shmplane.Subscriber.open(shm_name)
    pub.send(2)
    assert [a.try_recv(), a.try_recv(), b.try_recv()] == [1, 2, 2]
    with pytest.raises(shmplane.Empty):
        b.try_recv()
    pub.close()
    with pytest.raises(shmplane.DisconnectedError):
        a.recv(timeout=5)
    a.close()
    b.close()


def test_lossless_back_pressure_and_leaving(shm_name: str) -> None:
    pub = shmplane.Publisher.create(shm_name, 4096)
    fast, slow = pub.subscribe(), pub.subscribe()
    assert pub.subscribers == 2 and not pub.lossy
    sent = 0
    while True:
        try:
            pub.try_send(b"x" * 100)
        except shmplane.Full:
            break
        sent += 1
        fast.try_recv()
    assert sent > 10
    with pytest.raises(shmplane.Timeout):
        pub.send(b"x" * 100, timeout=0.05)
    slow.close()  # the slowest leaves: the publisher waits no longer
    pub.send(b"y" * 100, timeout=5)
    assert pub.subscribers == 1
    pub.close()
    fast.close()


def test_lossy_never_waits_and_reports_what_was_missed(shm_name: str) -> None:
    pub = shmplane.broadcast(4096, name=shm_name, lossy=True)
    reader, laggard = pub.subscribe(), pub.subscribe()
    assert pub.lossy and laggard.lossy
    for i in range(2000):
        pub.try_send(i)
        assert reader.try_recv() == i
    with pytest.raises(shmplane.LaggedError) as info:
        laggard.recv(timeout=5)
    missed = info.value.missed
    assert 1900 < missed < 2000
    assert [laggard.try_recv() for _ in range(missed, 2000)] == list(range(missed, 2000))
    with pytest.raises(shmplane.Empty):
        laggard.try_recv()
    err = pickle.loads(pickle.dumps(info.value))
    assert isinstance(err, shmplane.LaggedError) and err.missed == missed
    for h in (pub, reader, laggard):
        h.close()


@pytest.mark.parametrize("method", METHODS)
def test_subscribers_in_children_get_everything(method: str, procs: Any, make_name: Any) -> None:
    name = make_name("b")
    ctx = __import__("multiprocessing").get_context(method)
    with shmplane.Publisher.create(name, 1 << 16) as pub:
        kids = []
        for _ in range(3):
            r, w = ctx.Pipe(duplex=False)
            p, conn = procs.start_reporting(_subscribe_and_count, name, w, 200, method=method)
            assert r.poll(30) and r.recv() == "joined"
            kids.append((p, conn))
        assert pub.subscribers == 3
        for i in range(199):
            pub.send(i, timeout=20)
        pub.send(np.ones(1_000_000))  # 8 MB to all three
        for p, conn in kids:
            got = get_report(conn)
            assert got[:199] == list(range(199)) and got[199] == 1_000_000.0
            procs.join(p)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pickled_subscriber_shares_its_position(method: str, procs: Any, shm_name: str) -> None:
    pub = shmplane.Publisher.create(shm_name, 1 << 16)
    sub = pub.subscribe()
    for i in range(10):
        pub.send(i)
    assert sub.recv() == 0
    p, conn = procs.start_reporting(_recv_n, sub, 4, method=method)
    assert get_report(conn) == [1, 2, 3, 4]
    procs.join(p)
    assert sub.recv(timeout=5) == 5  # the copy took 1-4: nothing repeated
    sub.close()
    pub.close()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pickled_publisher_appends(method: str, procs: Any, shm_name: str) -> None:
    pub = shmplane.Publisher.create(shm_name, 1 << 16)
    sub = pub.subscribe()
    p = procs.start(_publish, pub, 5, method=method)
    procs.join(p)
    pub.send("parent")
    assert [sub.recv(timeout=5) for _ in range(6)] == [0, 1, 2, 3, 4, "parent"]
    pub.close()
    sub.close()


def test_killed_subscriber_stops_holding_the_publisher(procs: Any, make_name: Any) -> None:
    name = make_name("k")
    ctx = __import__("multiprocessing").get_context("spawn")
    pub = shmplane.Publisher.create(name, 4096)
    r, w = ctx.Pipe(duplex=False)
    victim = procs.start(_read_one_then_sleep, name, w)
    assert r.poll(30) and r.recv() == "joined"
    pub.send("first")
    # Fill the ring: the victim stops reading.
    while True:
        try:
            pub.try_send(b"z" * 200)
        except shmplane.Full:
            break
    os.kill(victim.pid, signal.SIGKILL)
    procs.join(victim, exitcode=None)
    pub.send(b"a" * 200, timeout=10)  # the dead subscriber is dropped at a liveness check
    assert pub.subscribers == 0
    pub.close()


def test_killed_publisher_is_reported_after_draining(procs: Any, make_name: Any) -> None:
    name = make_name("kp")
    ctx = __import__("multiprocessing").get_context("spawn")
    pub = shmplane.Publisher.create(name, 1 << 16)
    sub = pub.subscribe()
    pub.close()  # a new publisher takes the role over in the child
    r, w = ctx.Pipe(duplex=False)
    victim = procs.start(_publish_forever, name, w)
    assert r.poll(30) and r.recv() == "publishing"
    assert sub.recv(timeout=20) == 0
    os.kill(victim.pid, signal.SIGKILL)
    procs.join(victim, exitcode=None)
    last = -1
    with pytest.raises(shmplane.PeerDeadError):
        while True:
            v = sub.recv(timeout=20)
            assert v == last + 2 if last == -1 else v == last + 1
            last = v
    sub.close()


def test_select_sees_each_subscriber(shm_name: str) -> None:
    pub = shmplane.Publisher.create(shm_name, 4096)
    a, b = pub.subscribe(), pub.subscribe()
    assert select.select([a, b], [], [], 0)[0] == []
    pub.send("ring")
    ready: set[Any] = set()
    deadline = time.monotonic() + 5
    while len(ready) < 2 and time.monotonic() < deadline:
        ready |= set(select.select([a, b], [], [], 1)[0])
    assert ready == {a, b}
    assert a.try_recv() == "ring" and b.try_recv() == "ring"
    assert select.select([a, b], [], [], 0)[0] == []
    for h in (pub, a, b):
        h.close()


def test_asyncio_subscribers(shm_name: str) -> None:
    pub = shmplane.Publisher.create(shm_name, 4096)
    subs = [pub.subscribe() for _ in range(2)]

    async def main() -> list[list[Any]]:
        async def consume(s: shmplane.Subscriber) -> list[Any]:
            return [await s.recv_async(timeout=10) for _ in range(50)]

        tasks = [asyncio.ensure_future(consume(s)) for s in subs]
        for i in range(50):
            await pub.send_async(i, timeout=10)
        return list(await asyncio.gather(*tasks))

    assert asyncio.run(main()) == [list(range(50))] * 2
    for h in (pub, *subs):
        h.close()


def test_slots_limits_and_bad_arguments(shm_name: str) -> None:
    pub = shmplane.Publisher.create(shm_name, 4096, max_subscribers=2)
    a = shmplane.Subscriber.open(shm_name)
    b = shmplane.Subscriber.open(shm_name)
    with pytest.raises(shmplane.RoleTakenError):
        shmplane.Subscriber.open(shm_name)
    b.close()
    c = shmplane.Subscriber.open(shm_name)
    assert c.index == 1 and pub.max_subscribers == 2
    with pytest.raises(shmplane.RoleTakenError):
        shmplane.Publisher.open(shm_name)
    with pytest.raises(shmplane.InvalidArgumentError):
        shmplane.broadcast(4096, max_subscribers=0)
    with pytest.raises(shmplane.InvalidArgumentError):
        shmplane.broadcast(1000)
    with pytest.raises(shmplane.WrongKindError):
        shmplane.Receiver.open(shm_name)
    with pytest.raises(shmplane.NotFoundError):
        shmplane.Subscriber.open(shm_name + "-nope")
    for h in (pub, a, c):
        h.close()


def test_repr_and_lossy_peek_refused(shm_name: str) -> None:
    pub = shmplane.broadcast(4096, name=shm_name, lossy=True)
    sub = pub.subscribe()
    assert "Publisher" in repr(pub) and "lossy=True" in repr(pub) and "subscribers=1/64" in repr(pub)
    assert "Subscriber" in repr(sub) and "index=0" in repr(sub)
    assert isinstance(pub, shmplane.Sender) and isinstance(sub, shmplane.Receiver)
    pub.close()
    sub.close()
    assert repr(pub) == "<shmplane.Publisher closed>"


def test_review_edges(shm_name: str) -> None:
    """What a second review found: lossy size limit, poll keeping a lag, refused
    Subscriber.create, range errors, the all-slots-taken message, Python-style repr."""
    pub = shmplane.broadcast(1 << 14, name=shm_name, lossy=True, max_subscribers=1)
    sub = pub.subscribe()
    assert "lossy=True" in repr(pub)
    pub.send(b"x" * 16_000)  # one record: fine
    with pytest.raises(shmplane.MessageTooLargeError):
        pub.send(b"x" * 20_000)  # would stream in chunks longer than half the ring
    for i in range(2000):
        pub.send(i)
    assert sub.poll()  # a lag to report counts as ready...
    with pytest.raises(shmplane.LaggedError) as info:
        sub.try_recv()  # ...and the next receive reports it
    assert "missed=" in repr(info.value)
    sub.try_recv()
    with pytest.raises(shmplane.RoleTakenError, match="all 1 subscriber slots"):
        pub.subscribe()
    with pytest.raises(shmplane.InvalidArgumentError):
        shmplane.Subscriber.create(shm_name + "-x")
    for bad in (-1, 0, 513):
        with pytest.raises(shmplane.InvalidArgumentError):
            shmplane.broadcast(4096, max_subscribers=bad)
    pub.close()
    with pytest.raises(shmplane.DisconnectedError, match="publisher"):
        while True:
            sub.recv(timeout=5)
    sub.close()
