"""Ctrl-C ends every call that blocks. Each test sends SIGINT only once the child is
seen inside its call (``shm_helpers.wait_until_blocked``: asleep on a futex word of a
shmplane segment, or burning CPU in a wait that never sleeps), and the call itself
must raise KeyboardInterrupt (``block_until_interrupted``): not a signal caught before
the call began or after it returned. (The channel's send and recv under every wait
policy, and RawArray.wait_for_update, are in test_errors.py and test_rawarray.py.)"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import shmplane
from shm_helpers import (
    SHM_DIR,
    PREFIX,
    block_until_interrupted,
    interrupt_when_blocked,
    read_u64,
    thread_stat,
    wait_until,
    wait_until_blocked,
)

WATCHDOG = 60
FORK = mp.get_context("fork")


def _interrupt(procs: Any, call: Callable[[], Any], **blocked: Any) -> None:
    """Run ``call`` in a forked child until Ctrl-C; check that SIGINT, sent while the
    child is blocked in it (``blocked`` as for ``wait_until_blocked``), ends it."""
    r, w = FORK.Pipe(duplex=False)
    p = procs.start(block_until_interrupted, w, call, method="fork")
    w.close()
    interrupt_when_blocked(p, r, **blocked)
    procs.join(p, exitcode=42)


def _fill(tx: shmplane.Sender, size: int = 500) -> None:
    with pytest.raises(shmplane.Full):
        while True:
            tx.try_send(b"f" * size)


@pytest.mark.timeout(WATCHDOG)
def test_poll_without_timeout(procs: Any) -> None:
    tx, rx = shmplane.channel(capacity=1 << 12)
    with tx, rx:
        _interrupt(procs, lambda: rx.poll(None), segment=tx.path)


@pytest.mark.timeout(WATCHDOG)
def test_poll_space_without_timeout(procs: Any) -> None:
    tx, rx = shmplane.channel(capacity=1 << 12)
    with tx, rx:
        _fill(tx)
        _interrupt(procs, lambda: tx.poll_space(500, timeout=None), segment=tx.path)


@pytest.mark.timeout(WATCHDOG)
def test_recv_bytes(procs: Any) -> None:
    tx, rx = shmplane.channel(capacity=1 << 12)
    with tx, rx:
        _interrupt(procs, rx.recv_bytes, segment=tx.path)


@pytest.mark.timeout(WATCHDOG)
def test_raw_value_wait_for_update(procs: Any) -> None:
    v = shmplane.RawValue("d", 1.0)
    with v:
        _interrupt(procs, lambda: v.wait_for_update(v.version), segment=f"{SHM_DIR}/{PREFIX}{v.name}")


@pytest.mark.timeout(WATCHDOG)
def test_mailbox_recv(procs: Any) -> None:
    mb = shmplane.mailbox(4096)
    with mb:
        _interrupt(procs, mb.recv, segment=mb.path)


@pytest.mark.timeout(WATCHDOG)
def test_mailbox_poll_without_timeout(procs: Any) -> None:
    mb = shmplane.mailbox(4096)
    with mb:
        _interrupt(procs, lambda: mb.poll(None), segment=mb.path)


@pytest.mark.timeout(WATCHDOG)
def test_subscriber_recv(procs: Any) -> None:
    pub = shmplane.broadcast(capacity=4096)
    with pub:
        sub = pub.subscribe()
        with sub:
            _interrupt(procs, sub.recv, segment=pub.path)


@pytest.mark.timeout(WATCHDOG)
def test_publisher_send_on_a_full_lossless_ring(procs: Any) -> None:
    pub = shmplane.broadcast(capacity=4096)
    with pub:
        sub = pub.subscribe()  # never reads: the ring fills
        with sub:
            _fill(pub)
            _interrupt(procs, lambda: pub.send(b"f" * 500), segment=pub.path)


@pytest.mark.timeout(WATCHDOG)
def test_rpc_call_to_a_server_that_never_replies(make_name: Any, procs: Any) -> None:
    server = shmplane.RpcServer.create(make_name("rpc"))
    with server:
        client = shmplane.RpcClient.connect(server.name, timeout=10)
        with client:
            # The request goes out; the reply never comes: the child sleeps on its
            # reply channel (a segment of its own, so any shmplane segment counts).
            _interrupt(procs, lambda: client.call("hello"))


@pytest.mark.timeout(WATCHDOG)
def test_rpc_server_recv(make_name: Any, procs: Any) -> None:
    server = shmplane.RpcServer.create(make_name("rpc"))
    with server:
        _interrupt(procs, server.recv)


def _send_one(tx: shmplane.Sender, data: bytes) -> None:
    tx.send(data)


@pytest.mark.timeout(WATCHDOG)
def test_receive_in_the_middle_of_a_chunked_message(procs: Any) -> None:
    """A 64 KiB message through a 4 KiB ring: the sender writes the first chunks, waits
    for room, and is stopped (SIGSTOP: alive, so no PeerDeadError) before the receiver
    starts. The receiver takes those chunks and then waits for the rest, which never
    comes: only Ctrl-C ends that."""
    tx, rx = shmplane.channel(capacity=1 << 12)
    path = tx.path
    sender = procs.start(_send_one, tx, b"m" * (1 << 16), method="fork")
    tx.close()
    try:
        wait_until_blocked(sender.pid, sender.pid, segment=path)  # the ring is full
        os.kill(sender.pid, signal.SIGSTOP)
        assert wait_until(lambda: thread_stat(sender.pid, sender.pid)[0] == "T", 10)
        _interrupt(procs, rx.recv, segment=path)
    finally:
        os.kill(sender.pid, signal.SIGKILL)
        os.kill(sender.pid, signal.SIGCONT)
        procs.join(sender, exitcode=-signal.SIGKILL)
        rx.close()


# ------------------------------------------------------- a slot's stopped writer

#: Byte offset of a slot segment's writer lock word (``layout::SLOT_CONTROL_OFFSET``,
#: ``SlotWriter::owner``): 0 when free, else the holder's id.
SLOT_LOCK_OFFSET = 384


def _write_forever(slot: shmplane.ByteSlot, data: bytes) -> None:
    while True:
        slot.write(data)


def _stop_holding_the_lock(p: Any, path: str) -> None:
    """SIGSTOP writer ``p`` (which writes all the time) at a moment it holds the
    slot's writer lock: stop it, look at the lock word, let it go on if it is free."""
    for _ in range(200):
        os.kill(p.pid, signal.SIGSTOP)
        assert wait_until(lambda: thread_stat(p.pid, p.pid)[0] == "T", 10)
        if read_u64(path, SLOT_LOCK_OFFSET) != 0:
            return
        os.kill(p.pid, signal.SIGCONT)
        wait_until(lambda: read_u64(path, SLOT_LOCK_OFFSET) != 0, 1, interval=0.001)
    raise AssertionError("never caught the writer holding the lock")


WRITES = {
    "element": lambda a: a.__setitem__(0, 1.0),
    "slice": lambda a: a.__setitem__(slice(0, 3), [1.0, 2.0, 3.0]),
    "whole-value": lambda a: a._slot.write(np.ones(len(a))),
}


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
def test_write_waiting_for_a_stopped_writer(write: Callable[[Any], Any], procs: Any) -> None:
    """A writer stopped (SIGSTOP, a debugger) mid-write holds the writer lock and is
    alive, so it is never replaced: another writer waits for as long as it is stopped,
    and Ctrl-C must end that wait. (Readers do not wait: the latch.)"""
    a = shmplane.RawArray("d", 1 << 21)  # 16 MiB: a write holds the lock for a while
    path = f"{SHM_DIR}/{PREFIX}{a.name}"
    writer = procs.start(_write_forever, a._slot, bytes(8 << 21), method="fork")
    try:
        _stop_holding_the_lock(writer, path)
        _interrupt(procs, lambda: write(a), spinning=True)
        assert a[1] == 0.0  # readers go on: the last complete value
        assert read_u64(path, SLOT_LOCK_OFFSET) != 0  # still the stopped writer's
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        os.kill(writer.pid, signal.SIGCONT)
        procs.join(writer, exitcode=-signal.SIGKILL)
        a.close()
