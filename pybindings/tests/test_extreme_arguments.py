"""Every public call with extreme arguments: huge, negative, NaN and infinite numbers,
empty and oversized names and shapes. Each either works or raises an ``Exception``
(``ValueError``, ``OverflowError``, ``TypeError`` or a ``shmplane`` error) that says
what went wrong; none lets a Rust panic through (pyo3's ``PanicException`` derives
from ``BaseException``, so ``except Exception`` would miss it), none hangs (a blocking
call is only given a huge timeout where it finds what it waits for at once), none
crashes the process (issue 13 part 3).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import pytest

import shmplane

WATCHDOG = 120

BIG_INTS = [2**31, 2**32, 2**62, 2**63 - 1, 2**63, 2**64, 2**200, -1, -(2**63), -(2**64)]
BAD_FLOATS = [math.nan, -1.0, -math.inf, -1e300]
HUGE_FLOATS = [math.inf, 1e300, 2.0**64, 1e18]
# Capacities: every extreme but 2**31, which is valid (the largest ring) and would
# commit 2 GiB of /dev/shm per call.
CAPS = [c for c in BIG_INTS if c != 2**31] + [2**31 + 1, 0, 1, 7]


def outcome(call: Callable[[], Any]) -> str:
    """'ok', or the name of the Exception raised; fails on anything else."""
    try:
        call()
    except Exception as e:  # noqa: BLE001 - any Exception is a clean outcome here
        assert type(e).__name__ != "PanicException", repr(e)
        assert str(e), f"{type(e).__name__} without a message"
        return type(e).__name__
    except BaseException as e:  # a PanicException, or worse
        pytest.fail(f"{type(e).__module__}.{type(e).__name__} escaped: {e!r}")
    return "ok"


@pytest.mark.timeout(WATCHDOG)
def test_channel_constructors(make_name: Any) -> None:
    for cap in CAPS:
        r = outcome(lambda: [h.close() for h in shmplane.channel(cap)])
        assert r in {"ok", "ValueError", "OverflowError", "InvalidArgumentError", "MessageTooLargeError", "NoSpaceError"}, (cap, r)
    for name in ["", "x" * 10_000, "a/b", "..", "\0", "é", " "]:
        assert outcome(lambda: shmplane.channel(4096, name=name)) != "ok", repr(name)
    for cap in CAPS:
        outcome(lambda: [h.close() for h in (shmplane.mailbox(capacity=cap),)])
        outcome(lambda: [h.close() for h in (shmplane.mailbox(max_senders=cap),)])
        outcome(lambda: [h.close() for h in (shmplane.broadcast(capacity=cap),)])
        outcome(lambda: [h.close() for h in (shmplane.broadcast(max_subscribers=cap),)])
        outcome(lambda: shmplane.RpcServer.create(make_name("rpc"), max_clients=cap).close())
        outcome(lambda: shmplane.RpcServer.create(make_name("rpc"), capacity=cap).close())
    for t in BAD_FLOATS:
        outcome(lambda: shmplane.RpcServer.create(make_name("rpc"), reply_timeout=t).close())
        assert outcome(lambda: shmplane.RpcClient.connect(make_name("none"), timeout=t)) == "ValueError", t


@pytest.mark.timeout(WATCHDOG)
def test_channel_calls() -> None:
    tx, rx = shmplane.channel(1 << 16)
    with tx, rx:
        for t in BAD_FLOATS:
            assert outcome(lambda: tx.send(b"x", timeout=t)) == "ValueError", t
            assert outcome(lambda: rx.recv(timeout=t)) == "ValueError", t
            assert outcome(lambda: rx.poll(t)) == "ValueError", t
            assert outcome(lambda: tx.poll_space(1, timeout=t)) == "ValueError", t
            assert outcome(lambda: rx.recv_into(bytearray(8), timeout=t)) == "ValueError", t
            assert outcome(lambda: rx.lease(timeout=t)) == "ValueError", t
            assert outcome(lambda: tx.loan(8, timeout=t)) == "ValueError", t
            assert outcome(lambda: rx.recv_bytes(timeout=t)) == "ValueError", t
        for t in HUGE_FLOATS:
            # Each finds what it waits for at once.
            assert outcome(lambda: tx.send(b"x", timeout=t)) == "ok", t
            assert outcome(lambda: rx.poll(t)) == "ok", t
            assert outcome(lambda: rx.recv(timeout=t)) == "ok", t
            assert outcome(lambda: tx.poll_space(1, timeout=t)) == "ok", t
            tx.send(b"y")
            assert outcome(lambda: rx.recv_bytes(timeout=t)) == "ok", t
            with tx.loan(8, timeout=t) as a:
                a[:] = 1
            assert outcome(lambda: rx.lease(timeout=t).release()) == "ok", t
        for n in BIG_INTS:
            outcome(lambda: tx.poll_space(n, timeout=0))
            outcome(lambda: tx.loan(n, timeout=0))
            outcome(lambda: tx.loan((n, n), "f8", timeout=0))
            outcome(lambda: tx.loan((2, n), "f8", timeout=0))
        for policy, spin in [("adaptive", 1e300), ("adaptive", math.nan), ("adaptive", -1.0), ("adaptive", math.inf), ("spin", 2.0**70), ("nope", 1.0)]:
            outcome(lambda: tx.set_policy(policy, spin))
            outcome(lambda: rx.set_policy(policy, spin))
        tx.set_policy("adaptive")
        rx.set_policy("adaptive")
        for shape in [(0,), (0, 2**40), ()]:
            assert outcome(lambda: tx.send(np.zeros(shape), timeout=1)) == "ok", shape
            assert outcome(lambda: rx.recv(timeout=1)) == "ok", shape
        for dtype in ["S0", "U0", "V0", object]:
            outcome(lambda: tx.loan(4, dtype, timeout=0))
        tx.send(np.arange(3.0))
        for out in [np.empty(0), np.empty((2**20, 0)), bytearray(0), memoryview(b"ro")]:
            outcome(lambda: rx.recv_into(out, timeout=0))
        assert rx.recv(timeout=1).tolist() == [0.0, 1.0, 2.0]


@pytest.mark.timeout(WATCHDOG)
def test_slot_calls(make_name: Any) -> None:
    for n in BIG_INTS + [0]:
        outcome(lambda: shmplane.RawArray("d", n).close())
        outcome(lambda: shmplane.RawArray("b", n).close())
    for v in [2**64, -(2**64), 2**200, math.nan, math.inf, 1e300]:
        outcome(lambda: shmplane.RawValue("q", v).close())
        outcome(lambda: shmplane.RawValue("B", v).close())
    with shmplane.RawArray("d", 8) as arr, shmplane.RawValue("i", 0) as val:
        for i in BIG_INTS:
            if i != -1:  # arr[-1] is the last element
                assert outcome(lambda: arr[i]) in {"IndexError", "OverflowError"}, i
                assert outcome(lambda: arr.__setitem__(i, 1.0)) in {"IndexError", "OverflowError"}, i
            outcome(lambda: arr[i:i])
            outcome(lambda: arr[::i] if i else None)
            outcome(lambda: arr.__setitem__(slice(i, None), []))
            outcome(lambda: setattr(val, "value", i))
            outcome(lambda: arr.wait_for_update(i, timeout=0))
        for t in BAD_FLOATS:
            assert outcome(lambda: arr.wait_for_update(0, timeout=t)) == "ValueError", t
        arr[0] = 1.0
        for t in HUGE_FLOATS:
            assert outcome(lambda: arr.wait_for_update(0, timeout=t)) == "ok", t
        for policy, spin in [("adaptive", 1e300), ("adaptive", math.nan), ("spin", -1.0)]:
            outcome(lambda: arr.set_policy(policy, spin))
        slot = arr._slot
        for off in BIG_INTS:
            outcome(lambda: slot.read_at(off, 8))
            outcome(lambda: slot.read_at(0, off))
            outcome(lambda: slot.write_strided(off, 8, 8, b"\0" * 8))
            outcome(lambda: slot.write_strided(0, off, 8, b"\0" * 16))
            outcome(lambda: slot.write_strided(0, 8, off, b"\0" * 16))
        assert arr[:] == [1.0] + [0.0] * 7


@pytest.mark.timeout(WATCHDOG)
def test_mailbox_broadcast_rpc_calls(make_name: Any) -> None:
    mb = shmplane.mailbox(1 << 16)
    pub = shmplane.broadcast(1 << 16)
    server = shmplane.RpcServer.create(make_name("rpc"), max_clients=2)
    client = shmplane.RpcClient.connect(server.name, timeout=10)
    with mb, pub, server, client:
        tx = mb.sender()
        sub = pub.subscribe()
        with tx, sub:
            for t in BAD_FLOATS:
                assert outcome(lambda: mb.recv(timeout=t)) == "ValueError", t
                assert outcome(lambda: mb.poll(t)) == "ValueError", t
                assert outcome(lambda: sub.recv(timeout=t)) == "ValueError", t
                assert outcome(lambda: server.recv(timeout=t)) == "ValueError", t
                assert outcome(lambda: client.call(b"x", timeout=t)) == "ValueError", t
            for t in HUGE_FLOATS:
                tx.send(b"m")
                assert outcome(lambda: mb.recv(timeout=t)) == "ok", t
                pub.send(b"p")
                assert outcome(lambda: sub.recv(timeout=t)) == "ok", t
            for policy, spin in [("adaptive", 1e300), ("block", math.nan)]:
                outcome(lambda: mb.set_policy(policy, spin))
                outcome(lambda: server.set_policy(policy, spin))
                outcome(lambda: client.set_policy(policy, spin))
            client_ok = outcome(lambda: client.call(b"q", timeout=0))
            assert client_ok in {"TimeoutError", "ShmplaneTimeoutError", "Timeout"} or client_ok.endswith("Error"), client_ok
