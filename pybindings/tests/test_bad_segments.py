"""Foreign, damaged and dead segments give specific errors, never a hang or a crash."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import struct
import time
from typing import Any

import pytest

import shmplane
from shm_helpers import block_until_interrupted, interrupt_when_blocked, when_blocked

WATCHDOG = 30


def _name(tag: str) -> str:
    return f"t-{tag}-{os.getpid()}-{time.monotonic_ns() % 10**9}"


def _path(name: str) -> str:
    return f"/dev/shm/shmplane.{name}"


def _patch_u64(name: str, offset: int, fn) -> None:  # type: ignore[no-untyped-def]
    with open(_path(name), "r+b") as f:
        f.seek(offset)
        (v,) = struct.unpack("<Q", f.read(8))
        f.seek(offset)
        f.write(struct.pack("<Q", fn(v)))


def _made_by_sender(name: str) -> shmplane.Sender:
    tx = shmplane.Sender.create(name, 1 << 16)
    return tx


def test_wrong_kind() -> None:
    name = _name("kind")
    tx = _made_by_sender(name)
    try:
        _patch_u64(name, 8, lambda v: (v & 0xFFFF_FFFF) | (2 << 32))  # kind := slot
        with pytest.raises(shmplane.WrongKindError):
            shmplane.Receiver.open(name)
    finally:
        tx.close()
        if os.path.exists(_path(name)):
            os.unlink(_path(name))


def test_other_abi_version() -> None:
    name = _name("abi")
    tx = _made_by_sender(name)
    try:
        _patch_u64(name, 8, lambda v: (v & ~0xFFFF_FFFF) | 999)
        with pytest.raises(shmplane.IncompatibleSegmentError):
            shmplane.Receiver.open(name)
    finally:
        tx.close()
        if os.path.exists(_path(name)):
            os.unlink(_path(name))


def test_truncated_segment() -> None:
    name = _name("trunc")
    tx = _made_by_sender(name)
    tx.send(b"queued")  # a message for a receiver to come keeps the segment
    tx.close()  # closed, receiver never attached: the segment waits for its peer
    os.truncate(_path(name), 8192)
    try:
        with pytest.raises(shmplane.CorruptSegmentError, match="truncated|bytes"):
            shmplane.Receiver.open(name)
    finally:
        os.unlink(_path(name))


@pytest.mark.timeout(WATCHDOG)
def test_zero_length_file_is_corrupt_in_bounded_time() -> None:
    name = _name("empty")
    open(_path(name), "wb").close()
    try:
        with pytest.raises(shmplane.CorruptSegmentError):  # not a hang: the watchdog
            shmplane.Receiver.open(name)
    finally:
        os.unlink(_path(name))


def test_garbage_file_is_not_replaced_by_create() -> None:
    name = _name("junk")
    with open(_path(name), "wb") as f:
        f.write(os.urandom(1 << 16))
    try:
        with pytest.raises(shmplane.CorruptSegmentError):
            shmplane.channel(name=name)
        assert os.path.getsize(_path(name)) == 1 << 16
    finally:
        os.unlink(_path(name))


def _attach_and_hang(name: str, ready: Any) -> None:
    tx = shmplane.Sender.create(name, 1 << 16)
    rx = shmplane.Receiver.open(name)
    tx.send(b"x")
    del rx
    ready.send("attached")
    signal.pause()


@pytest.mark.timeout(WATCHDOG)
def test_stale_segment_of_killed_process_is_replaced() -> None:
    name = _name("stale")
    r, w = mp.get_context("spawn").Pipe(duplex=False)
    p = mp.get_context("spawn").Process(target=_attach_and_hang, args=(name, w), daemon=True)
    p.start()
    w.close()  # a child that dies first reads as EOF at once
    assert r.poll(20) and r.recv() == "attached"
    with pytest.raises(shmplane.AlreadyExistsError):
        shmplane.channel(name=name)  # its owner is alive
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    tx, rx = shmplane.channel(name=name)  # stale now: replaced, not AlreadyExists
    tx.send(b"fresh")
    assert rx.recv(timeout=1) == b"fresh"
    tx.close()
    rx.close()
    assert not os.path.exists(_path(name))


def _fill_then_wait(rx: shmplane.Receiver, ready: Any) -> None:
    ready.send("attached")  # rx is this process's receiver now (unpickled)
    signal.pause()


@pytest.mark.timeout(WATCHDOG)
def test_receiver_killed_while_sender_blocked_on_full_ring() -> None:
    tx, rx = shmplane.channel(capacity=1 << 12)
    r, w = mp.get_context("spawn").Pipe(duplex=False)
    p = mp.get_context("spawn").Process(target=_fill_then_wait, args=(rx, w), daemon=True)
    p.start()
    rx.close()
    w.close()
    # Killed once it holds the receiver: not while its start-up still carries it.
    assert r.poll(20) and r.recv() == "attached"
    while True:
        try:
            tx.try_send(b"y" * 500)
        except shmplane.Full:
            break
    # The receiver dies while the send is asleep waiting for room.
    killer = when_blocked(lambda: os.kill(p.pid, signal.SIGKILL), segment=tx.path)
    with pytest.raises(shmplane.PeerDeadError):
        tx.send(b"y" * 500, timeout=20)
    killer.join(10)
    p.join(10)
    tx.close()


def _recv_forever(rx: shmplane.Receiver, ready: Any) -> None:
    block_until_interrupted(ready, rx.recv)  # no timeout: only Ctrl-C ends this


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("policy", ["adaptive", "block", "spin"])
def test_ctrl_c_interrupts_blocked_recv(policy: str) -> None:
    ctx = mp.get_context("spawn")
    tx, rx = shmplane.channel(capacity=1 << 12, policy=policy)
    path = tx.path
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_recv_forever, args=(rx, w))
    p.start()
    try:
        rx.close()
        w.close()
        interrupt_when_blocked(p, r, spinning=policy == "spin", segment=path)
    finally:
        if p.is_alive():
            p.kill()
        p.join(10)
        tx.close()


FULL_SHM_SCRIPT = """
import os, shmplane
for make in (lambda: shmplane.channel(capacity=1 << 22), lambda: shmplane.RawArray("d", 1 << 19)):
    try:
        make()
    except shmplane.NoSpaceError as e:
        assert isinstance(e, MemoryError)
        print("NoSpaceError", sorted(os.listdir("/dev/shm")))
    else:
        print("created")
"""


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a 1 MiB /dev/shm in a private mount namespace")
def test_full_dev_shm_is_no_space_error_and_leaves_nothing() -> None:
    import subprocess
    import sys

    # A private mount namespace with a 1 MiB tmpfs on /dev/shm: neither a 4 MiB channel
    # nor a 4 MiB array (8 MiB with its two copies) fits.
    cmd = f"mount -t tmpfs -o size=1m tmpfs /dev/shm && exec {sys.executable} -c '{FULL_SHM_SCRIPT}'"
    out = subprocess.run(["unshare", "--mount", "sh", "-c", cmd], capture_output=True, text=True, timeout=WATCHDOG)
    assert out.returncode == 0, out.stderr
    # An error at create time, and no file left.
    assert out.stdout.split("\n") == ["NoSpaceError []", "NoSpaceError []", ""], out.stdout


def test_bad_slot_segments_are_clear_errors() -> None:
    # Garbage, a truncated slot, a slot whose header claims another size, and a channel
    # attached as a slot: each a specific error, never a crash or a misread.
    junk = _name("slotjunk")
    with open(_path(junk), "wb") as f:
        f.write(os.urandom(4096))
    try:
        with pytest.raises(shmplane.CorruptSegmentError):
            shmplane.RawArray.attach(junk, "d")
        with pytest.raises(shmplane.CorruptSegmentError):
            shmplane.RawArray("d", 4, name=junk)  # create does not replace it either
    finally:
        os.unlink(_path(junk))
    a = shmplane.RawArray("d", 1000, name=_name("slottrunc"))
    path = _path(a.name)
    try:
        os.truncate(path, 4096)
        with pytest.raises(shmplane.CorruptSegmentError):
            shmplane.RawArray.attach(a.name, "d")
        os.truncate(path, 0)  # our close probes the header: it must not read past the end
    finally:
        a.close()
        if os.path.exists(path):
            os.unlink(path)
    tx, rx = shmplane.channel(name=_name("notaslot"))
    with tx, rx:
        with pytest.raises(shmplane.WrongKindError):
            shmplane.RawValue.attach(tx.name, "d")


# Found by the segment fuzzer (test_fuzz_segments.py): each was a Rust panic or a
# foreign exception type before its fix.


def test_slot_length_contradicting_its_type_is_corrupt() -> None:
    # The header's value length (param0, offset 32) no longer fits the type its
    # fingerprint names: 0 bytes for a double, 127 bytes for an array of doubles.
    cases = [
        (lambda n: shmplane.RawValue("d", 1.0, name=n), lambda n: shmplane.RawValue.attach(n, "d"), 8, 0),
        (lambda n: shmplane.RawArray("d", 16, name=n), lambda n: shmplane.RawArray.attach(n, "d"), 128, 127),
    ]
    for make, attach, length, forged in cases:
        name = _name("slotlen")
        handle = make(name)
        try:
            _patch_u64(name, 32, lambda v: forged)
            with pytest.raises(shmplane.CorruptSegmentError, match="fingerprint"):
                attach(name)
        finally:
            _patch_u64(name, 32, lambda v: length)
            handle.close()


def test_a_header_counting_no_roles_is_corrupt_for_create_and_left_by_gc() -> None:
    # A broadcast's bytes with role_count (offset 60) zeroed, in a file nobody holds:
    # create reported nothing sensible (gc's "finished?" indexed an empty role list).
    made = shmplane.Publisher.create(_name("roles-src"), 4096)
    assert made.name is not None
    with open(_path(made.name), "rb") as f:
        data = bytearray(f.read())
    made.close()
    struct.pack_into("<I", data, 60, 0)
    name = _name("noroles")
    fd = os.open(_path(name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, bytes(data))
    os.close(fd)
    try:
        with pytest.raises(shmplane.CorruptSegmentError, match="no roles"):
            shmplane.Publisher.create(name, 4096)
        shmplane.gc()
        assert os.path.exists(_path(name))  # not ours to judge, nor to remove
    finally:
        os.unlink(_path(name))


def test_joining_a_mailbox_lane_whose_consumer_position_is_misaligned() -> None:
    # Lane 0's RingControl.head (4096 + 128 with 4 lanes: docs/wire-format.md §2.7)
    # overwritten with a position no consumer writes; a producer joining the lane
    # looked at the record there through a misaligned offset (a panic).
    name = _name("lanehead")
    mb = shmplane.mailbox(4096, name=name, max_senders=4)
    try:
        first = mb.sender()
        first.send(b"x")
        assert mb.recv(timeout=5) == b"x"
        first.close()  # lane 0 is free again
        _patch_u64(name, 4096 + 128, lambda v: 0xFFFF_FFFF)
        with pytest.raises(shmplane.CorruptSegmentError, match="position"):
            shmplane.Sender.open(name)
    finally:
        _patch_u64(name, 4096 + 128, lambda v: 0x10)
        mb.close()
