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
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_chunked_roundtrips_across_processes(method: str) -> None:
    cap = 1 << 23  # 8 MiB ring: the 8 MB array is one chunked run, wrapping the ring
    tx, rx_child = shmplane.channel(capacity=cap)
    tx_child, rx = shmplane.channel(capacity=1 << 24)
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
