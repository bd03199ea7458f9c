"""Core behaviour in one place: round trips, real processes, dead peers, bad input."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal

import numpy as np
import pytest

import shmplane

WATCHDOG = 30  # seconds: every multi-process test fails instead of hanging


def _echo(rx: shmplane.Receiver, tx: shmplane.Sender) -> None:
    with rx, tx:
        for obj in rx:
            tx.send(obj)
            if obj is None:
                break


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_echo_child_roundtrip(method: str) -> None:
    tx, rx_child = shmplane.channel(capacity=1 << 22)
    tx_child, rx = shmplane.channel(capacity=1 << 22)
    p = mp.get_context(method).Process(target=_echo, args=(rx_child, tx_child), daemon=True)
    p.start()
    rx_child.close()  # the parent may close its copies of the child's ends at once
    tx_child.close()
    payloads = [b"", b"x" * 1000, np.arange(12, dtype=np.int16).reshape(3, 4), {"a": [1, 2.5, None]}]
    payloads += [np.random.rand(300_000) for _ in range(12)]  # 2.4 MB each: wraps the 4 MiB ring
    for obj in payloads:
        tx.send(obj, timeout=10)
        back = rx.recv(timeout=10)
        if isinstance(obj, np.ndarray):
            assert back.dtype == obj.dtype and back.shape == obj.shape and np.array_equal(back, obj)
        else:
            assert back == obj
    if method == "spawn":
        tx.close()
        with pytest.raises(shmplane.DisconnectedError):
            rx.recv(timeout=10)
    else:
        # Under fork the child inherits a copy of every endpoint, tx included, so (as
        # with multiprocessing.Pipe) closing ours is not the end of the stream.
        tx.send(None)
        assert rx.recv(timeout=10) is None
        tx.close()
    p.join(10)
    assert p.exitcode == 0
    rx.close()


def _send_forever(tx: shmplane.Sender) -> None:
    tx.send(b"alive")
    signal.pause()


@pytest.mark.timeout(WATCHDOG)
def test_sigkilled_sender_gives_peer_dead() -> None:
    tx, rx = shmplane.channel(capacity=1 << 16)
    p = mp.get_context("spawn").Process(target=_send_forever, args=(tx,), daemon=True)
    p.start()
    tx.close()
    assert rx.recv(timeout=10) == b"alive"
    os.kill(p.pid, signal.SIGKILL)
    with pytest.raises(shmplane.PeerDeadError):
        rx.recv(timeout=20)
    p.join(10)
    rx.close()


def test_bad_input_errors(tmp_path: object) -> None:
    with pytest.raises(shmplane.NotFoundError):
        shmplane.Receiver.open(f"missing-{os.getpid()}")
    with pytest.raises(shmplane.InvalidNameError):
        shmplane.channel(name="bad/name")
    with pytest.raises(shmplane.InvalidArgumentError):
        shmplane.channel(capacity=5000)
    name = f"garbage-{os.getpid()}"
    with open(f"/dev/shm/shmplane.{name}", "wb") as f:
        f.write(os.urandom(65536))
    try:
        with pytest.raises(shmplane.CorruptSegmentError):
            shmplane.Receiver.open(name)
    finally:
        os.unlink(f"/dev/shm/shmplane.{name}")
    tx, rx = shmplane.channel(capacity=4096, name=f"small-{os.getpid()}")
    with pytest.raises(shmplane.Full):
        tx.try_send(b"x" * 5000)  # larger than the ring: only a blocking send streams it
    with pytest.raises(shmplane.RoleTakenError):
        shmplane.Sender.open(f"small-{os.getpid()}")
    tx.send(b"still works")
    assert rx.recv(timeout=1) == b"still works"
    with pytest.raises(shmplane.Timeout):
        rx.recv(timeout=0.05)
    tx.close()
    rx.close()
    assert not os.path.exists(f"/dev/shm/shmplane.small-{os.getpid()}")


@pytest.mark.timeout(WATCHDOG)
def test_try_recv_mailbox_notices_dead_sender() -> None:
    import time

    tx, rx = shmplane.channel(capacity=1 << 16)
    p = mp.get_context("spawn").Process(target=_send_forever, args=(tx,), daemon=True)
    p.start()
    tx.close()
    assert rx.recv(timeout=10) == b"alive"
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    deadline = time.monotonic() + 10
    with pytest.raises(shmplane.PeerDeadError):
        while time.monotonic() < deadline:  # the check_pause() pattern: poll, mostly empty
            try:
                rx.try_recv()
            except shmplane.Empty:
                pass
    rx.close()


def test_import_needs_only_the_standard_library() -> None:
    # numpy is optional and nothing else is a dependency: block the usual suspects.
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for m in ('numpy', 'typing_extensions', 'mypy', 'pytest'):\n    sys.modules[m] = None\n"
        "import shmplane\n"
        "tx, rx = shmplane.channel(capacity=1 << 16); tx.send(b'ok'); print(rx.recv(timeout=5).decode())\n"
        "v = shmplane.RawArray('d', 2); v[1] = 2.5; print(v[:]); v.close(); tx.close(); rx.close()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.split("\n")[:2] == ["ok", "[0.0, 2.5]"], r.stderr[-1500:]


def test_version_is_the_installed_distributions() -> None:
    import importlib.metadata

    assert shmplane.__version__ == importlib.metadata.version("shmplane")
    assert "__version__" in shmplane.__all__
