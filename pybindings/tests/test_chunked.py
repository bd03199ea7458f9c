"""Large messages travel as chunked runs of records (pipelined copy-in / copy-out)."""

from __future__ import annotations

import multiprocessing as mp
import pickle

import numpy as np
import pytest

import shmplane

WATCHDOG = 60


def _echo_all(rx: shmplane.Receiver, tx: shmplane.Sender) -> None:
    with rx, tx:
        for obj in rx:
            tx.send(obj)
            if obj is None:
                break


def _check(obj: object, back: object) -> None:
    if isinstance(obj, np.ndarray):
        assert isinstance(back, np.ndarray) and back.dtype == obj.dtype and back.shape == obj.shape
        assert np.array_equal(back, obj)
    elif isinstance(obj, dict):
        assert isinstance(back, dict) and back.keys() == obj.keys()
        for k in obj:
            _check(obj[k], back[k])
    else:
        assert back == obj


def _payloads(cap: int) -> list[object]:
    rng = np.random.default_rng(7)
    max_msg = cap - 16
    return [
        rng.random(1_000_000),  # 8 MB: chunked
        rng.integers(0, 255, size=(1500, 1201), dtype=np.uint8),  # odd size, chunked
        bytes(rng.integers(0, 255, size=3_000_001, dtype=np.uint8)),  # chunked bytes
        {"a": rng.random(400_000), "b": rng.random(300_000).astype(np.float32), "n": 3},  # pickle + OOB
        [float(i) for i in range(200_000)],  # in-band pickle, > 1 MiB
        b"z" * (max_msg - 8),  # the largest bytes message that still chunks
        b"small",
        None,
    ]


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("cap", [1 << 23, 1 << 16], ids=["8MiB-ring", "64KiB-ring"])
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_chunked_roundtrips_across_processes(method: str, cap: int) -> None:
    # 8 MiB ring: the 8 MB array is one chunked run, wrapping the ring; 64 KiB ring:
    # every large message is many times the ring.
    tx, rx_child = shmplane.channel(capacity=cap)
    tx_child, rx = shmplane.channel(capacity=cap)
    p = mp.get_context(method).Process(target=_echo_all, args=(rx_child, tx_child), daemon=True)
    p.start()
    rx_child.close()
    tx_child.close()
    try:
        for obj in _payloads(cap):
            tx.send(obj, timeout=20)
            _check(obj, rx.recv(timeout=20))
    finally:
        p.join(20)
        tx.close()
        rx.close()
    assert p.exitcode == 0


def test_chunked_recv_bytes_is_the_logical_payload() -> None:
    tx, rx = shmplane.channel(capacity=1 << 23)
    with tx, rx:
        data = bytes(range(256)) * 8192  # 2 MiB: chunked
        # Concurrent reader needed: the message is larger than half the ring, so send
        # from a thread while this thread receives.
        import threading

        t = threading.Thread(target=tx.send, args=(data,), kwargs={"timeout": 20})
        t.start()
        assert rx.recv_bytes(timeout=20) == data
        t.join(20)


def _recv_and_check(rx: shmplane.Receiver, n: int) -> list[bool]:
    with rx:
        return [bool(np.array_equal(rx.recv(timeout=30), np.arange(3_000_000.0) + i)) for i in range(n)]


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_24mb_arrays_through_a_1mib_channel(method: str) -> None:
    """Any size fits any ring: 24 MB arrays stream through the default 1 MiB ring as
    the receiver drains them, intact."""
    from shm_helpers import get_report, report

    tx, rx = shmplane.channel()
    assert tx.capacity == shmplane.DEFAULT_CAPACITY == 1 << 20
    ctx = mp.get_context(method)
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=report, args=(w, _recv_and_check, rx, 3), daemon=True)
    p.start()
    w.close()
    rx.close()
    with tx:
        for i in range(3):
            tx.send(np.arange(3_000_000.0) + i, timeout=30)
    assert get_report(r) == [True, True, True]
    p.join(20)
    assert p.exitcode == 0
