"""Every failure mode raises its own exception, in bounded time, and leaves the
channel (or the name) usable where that makes sense."""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from typing import Any

import numpy as np
import pytest

import shmplane
from shm_helpers import (
    VERSION_KIND_OFFSET,
    block_until_interrupted,
    get_report,
    interrupt_when_blocked,
    pause_forever,
    read_u64,
    seg_path,
    when_blocked,
    write_u64,
)

METHODS = ["fork", "spawn"]
WATCHDOG = 30


# ------------------------------------------------------------------ hierarchy


@pytest.mark.parametrize(
    ("exc", "bases"),
    [
        (shmplane.NotFoundError, (FileNotFoundError,)),
        (shmplane.AlreadyExistsError, (FileExistsError,)),
        (shmplane.InvalidNameError, (ValueError,)),
        (shmplane.InvalidArgumentError, (ValueError,)),
        (shmplane.WrongKindError, (TypeError,)),
        (shmplane.MessageTooLargeError, (ValueError,)),
        (shmplane.Full, (queue.Full,)),
        (shmplane.Empty, (queue.Empty,)),
        (shmplane.Timeout, (TimeoutError,)),
        (shmplane.PeerDeadError, (ConnectionResetError,)),
        (shmplane.DisconnectedError, (EOFError,)),
        (shmplane.ClosedError, (ValueError,)),
        (shmplane.NoSpaceError, (MemoryError,)),
        (shmplane.ShmplaneOSError, (OSError,)),
        (shmplane.CorruptSegmentError, ()),
        (shmplane.IncompatibleSegmentError, ()),
        (shmplane.RoleTakenError, ()),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_exception_hierarchy(exc: type, bases: tuple[type, ...]) -> None:
    assert issubclass(exc, shmplane.ShmplaneError)
    for b in bases:
        assert issubclass(exc, b)
    assert getattr(shmplane.errors, exc.__name__) is exc
    assert exc.__name__ in shmplane.__all__ and exc.__name__ in shmplane.errors.__all__


# ------------------------------------------------------------ names, arguments


@pytest.mark.parametrize("opener", [shmplane.Sender.open, shmplane.Receiver.open], ids=["Sender", "Receiver"])
def test_open_missing_name(opener: Any, shm_name: str) -> None:
    with pytest.raises(shmplane.NotFoundError) as info:
        opener(shm_name)
    assert isinstance(info.value, FileNotFoundError)
    assert not os.path.exists(seg_path(shm_name))


BAD_NAMES = ["", "a/b", "x" * 300, "bad name", "ümlaut", ".hidden", "a\x00b", "../etc", "tab\t", "x" * 201]


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: repr(n)[:20])
@pytest.mark.parametrize(
    "make",
    [
        lambda n: shmplane.channel(capacity=4096, name=n),
        lambda n: shmplane.Sender.create(n, 4096),
        lambda n: shmplane.Receiver.create(n, 4096),
        shmplane.Sender.open,
        shmplane.Receiver.open,
    ],
    ids=["channel", "Sender.create", "Receiver.create", "Sender.open", "Receiver.open"],
)
def test_invalid_names(make: Any, name: str) -> None:
    with pytest.raises(shmplane.InvalidNameError) as info:
        make(name)
    assert isinstance(info.value, ValueError)


def test_longest_valid_name(shm_name: str) -> None:
    name = (shm_name + "-" + "n" * 200)[:200]
    tx, rx = shmplane.channel(capacity=4096, name=name)
    try:
        assert tx.name == name and os.path.exists(seg_path(name))
    finally:
        tx.close()
        rx.close()
    assert not os.path.exists(seg_path(name))


BAD_CAPACITIES = [0, 1, 100, 2048, 4095, 4097, 5000, 3 << 20, (1 << 20) + 4096, 1 << 32, 1 << 40]


@pytest.mark.parametrize("capacity", BAD_CAPACITIES)
@pytest.mark.parametrize(
    "make",
    [
        lambda c, n: shmplane.channel(capacity=c, name=n),
        lambda c, n: shmplane.Sender.create(n, c),
        lambda c, n: shmplane.Receiver.create(n, c),
    ],
    ids=["channel", "Sender.create", "Receiver.create"],
)
def test_invalid_capacity(make: Any, capacity: int, shm_name: str) -> None:
    with pytest.raises(shmplane.InvalidArgumentError) as info:
        make(capacity, shm_name)
    assert isinstance(info.value, ValueError)
    assert not os.path.exists(seg_path(shm_name))


def test_negative_capacity_is_invalid_argument() -> None:
    with pytest.raises(shmplane.InvalidArgumentError):
        shmplane.channel(capacity=-4096)


@pytest.mark.parametrize("capacity", [4096, 1 << 13, 1 << 20])
def test_valid_capacities(capacity: int) -> None:
    tx, rx = shmplane.channel(capacity=capacity)
    with tx, rx:
        assert tx.capacity == rx.capacity == capacity
        assert tx.max_message_size == capacity - 16
        tx.send(b"x" * tx.max_message_size, timeout=5)  # fresh ring: the largest fits
        assert len(rx.recv(timeout=5)) == capacity - 16


def test_infinite_timeout_means_no_timeout() -> None:
    tx, rx = shmplane.channel(capacity=4096)
    with tx, rx:
        tx.send(b"x", timeout=float("inf"))
        assert rx.poll(float("inf"))
        assert rx.recv(timeout=float("inf")) == b"x"
        assert tx.poll_space(1, float("inf"))


@pytest.mark.parametrize("timeout", [-1.0, -0.001, float("nan"), float("-inf")])
def test_invalid_timeouts(timeout: float) -> None:
    tx, rx = shmplane.channel(capacity=4096)
    with tx, rx:
        for call in (
            lambda: rx.recv(timeout=timeout),
            lambda: rx.recv_bytes(timeout=timeout),
            lambda: rx.poll(timeout),
            lambda: tx.send(b"x", timeout=timeout),
            lambda: tx.poll_space(1, timeout),
        ):
            with pytest.raises(ValueError):
                call()
        tx.send(b"still fine")
        assert rx.recv(timeout=1) == b"still fine"


def test_name_in_use_already_exists(shm_name: str) -> None:
    tx, rx = shmplane.channel(capacity=4096, name=shm_name)
    try:
        for make in (
            lambda: shmplane.channel(capacity=4096, name=shm_name),
            lambda: shmplane.Sender.create(shm_name, 4096),
            lambda: shmplane.Receiver.create(shm_name, 4096),
        ):
            with pytest.raises(shmplane.AlreadyExistsError) as info:
                make()
            assert isinstance(info.value, FileExistsError)
        tx.send(b"unharmed")
        assert rx.recv(timeout=1) == b"unharmed"
    finally:
        tx.close()
        rx.close()


# ------------------------------------------------------------ damaged segments


def _garbage(name: str, size: int = 64 << 10) -> str:
    path = seg_path(name)
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    return path


@pytest.mark.parametrize("opener", [shmplane.Sender.open, shmplane.Receiver.open], ids=["Sender", "Receiver"])
def test_garbage_file_is_corrupt(opener: Any, shm_name: str) -> None:
    path = _garbage(shm_name)
    try:
        with pytest.raises(shmplane.CorruptSegmentError):
            opener(shm_name)
        with pytest.raises(shmplane.CorruptSegmentError):
            shmplane.channel(capacity=4096, name=shm_name)  # not ours: never replaced
        assert os.path.getsize(path) == 64 << 10
    finally:
        _remove(path)


def _remove(path: str) -> None:
    """Remove a segment file the test patched, and its doorbells (a close that cannot
    read the patched header leaves them)."""
    for p in (path, path + "@rx", path + "@tx"):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def _mailbox(name: str, capacity: int = 1 << 16) -> str:
    """A valid segment nobody has mapped: a sender created it and closed; the receiver
    role was never claimed, so the file stays for a receiver to come."""
    tx = shmplane.Sender.create(name, capacity)
    tx.send(b"left for the receiver")
    tx.close()
    path = seg_path(name)
    assert os.path.exists(path)
    return path


def test_mailbox_segment_is_valid(shm_name: str) -> None:
    """Control for the patched-segment tests: the unpatched file opens fine."""
    _mailbox(shm_name)
    rx = shmplane.Receiver.open(shm_name)
    assert rx.recv(timeout=1) == b"left for the receiver"
    with pytest.raises(shmplane.DisconnectedError):
        rx.recv(timeout=1)
    rx.close()
    assert not os.path.exists(seg_path(shm_name))


@pytest.mark.parametrize("opener", [shmplane.Sender.open, shmplane.Receiver.open], ids=["Sender", "Receiver"])
def test_wrong_kind(opener: Any, shm_name: str) -> None:
    path = _mailbox(shm_name)
    try:
        vk = read_u64(path, VERSION_KIND_OFFSET)
        assert vk >> 32 == 1  # a channel
        write_u64(path, VERSION_KIND_OFFSET, (vk & 0xFFFF_FFFF) | (2 << 32))  # kind := slot
        with pytest.raises(shmplane.WrongKindError) as info:
            opener(shm_name)
        assert isinstance(info.value, TypeError)
    finally:
        _remove(path)


@pytest.mark.parametrize("opener", [shmplane.Sender.open, shmplane.Receiver.open], ids=["Sender", "Receiver"])
def test_live_segment_patched_to_wrong_kind(opener: Any, shm_name: str) -> None:
    """Patched under live endpoints (as the brief describes): the open fails on the
    kind before it can fail on the taken role, and the live channel keeps working."""
    tx, rx = shmplane.channel(capacity=1 << 16, name=shm_name)
    path = seg_path(shm_name)
    vk = read_u64(path, VERSION_KIND_OFFSET)
    write_u64(path, VERSION_KIND_OFFSET, (vk & 0xFFFF_FFFF) | (2 << 32))
    try:
        with pytest.raises(shmplane.WrongKindError):
            opener(shm_name)
        write_u64(path, VERSION_KIND_OFFSET, (vk & ~0xFFFF_FFFF) | 0xBAD)
        with pytest.raises(shmplane.IncompatibleSegmentError):
            opener(shm_name)
    finally:
        write_u64(path, VERSION_KIND_OFFSET, vk)
    tx.send(b"ok")
    assert rx.recv(timeout=1) == b"ok"
    tx.close()
    rx.close()


def test_unknown_kind_is_corrupt(shm_name: str) -> None:
    path = _mailbox(shm_name)
    try:
        vk = read_u64(path, VERSION_KIND_OFFSET)
        write_u64(path, VERSION_KIND_OFFSET, (vk & 0xFFFF_FFFF) | (77 << 32))
        with pytest.raises(shmplane.CorruptSegmentError):
            shmplane.Receiver.open(shm_name)
    finally:
        _remove(path)


@pytest.mark.parametrize("version", ["zero", "previous", "next", 999, 0xFFFF_FFFF])
def test_other_abi_version(version: int | str, shm_name: str) -> None:
    path = _mailbox(shm_name)
    try:
        vk = read_u64(path, VERSION_KIND_OFFSET)
        ours = vk & 0xFFFF_FFFF
        other = {"zero": 0, "previous": ours - 1, "next": ours + 1}.get(version, version)  # type: ignore[call-overload]
        write_u64(path, VERSION_KIND_OFFSET, (vk & ~0xFFFF_FFFF) | other)
        for opener in (shmplane.Sender.open, shmplane.Receiver.open):
            with pytest.raises(shmplane.IncompatibleSegmentError):
                opener(shm_name)
    finally:
        _remove(path)


def test_bad_magic_is_corrupt(shm_name: str) -> None:
    path = _mailbox(shm_name)
    try:
        write_u64(path, 0, int.from_bytes(b"NOTSHMPL", "little"))
        with pytest.raises(shmplane.CorruptSegmentError):
            shmplane.Receiver.open(shm_name)
    finally:
        _remove(path)


@pytest.mark.parametrize("size", [8192, 100, 0x10000, 0x20000])
def test_resized_segment_is_corrupt(size: int, shm_name: str) -> None:
    """Truncated (or grown): the header's length no longer matches the file."""
    path = _mailbox(shm_name, capacity=1 << 16)
    try:
        assert os.path.getsize(path) not in (size,)
        os.truncate(path, size)
        for opener in (shmplane.Sender.open, shmplane.Receiver.open):
            with pytest.raises(shmplane.CorruptSegmentError):
                opener(shm_name)
    finally:
        _remove(path)


@pytest.mark.timeout(WATCHDOG)
def test_zero_length_file_is_corrupt_in_bounded_time(shm_name: str) -> None:
    """A creator that died between shm_open and writing anything leaves an empty file:
    open waits a little for it, then gives up."""
    path = seg_path(shm_name)
    open(path, "wb").close()
    try:
        for opener in (shmplane.Sender.open, shmplane.Receiver.open):
            with pytest.raises(shmplane.CorruptSegmentError):  # not a hang: the watchdog
                opener(shm_name)
    finally:
        _remove(path)


def test_old_zero_length_file_is_replaced_by_create(shm_name: str) -> None:
    path = seg_path(shm_name)
    open(path, "wb").close()
    old = time.time() - 60
    os.utime(path, (old, old))  # long past any creator's initialisation
    tx, rx = shmplane.channel(capacity=4096, name=shm_name)
    tx.send(b"fresh")
    assert rx.recv(timeout=1) == b"fresh"
    tx.close()
    rx.close()


# -------------------------------------------------------------- message sizes


_LARGER_THAN_THE_RING = [
    (4096, b"x" * 5000),
    (4096, b"x" * 4081),
    (4096, bytearray(4097)),
    (4096, np.arange(4096, dtype=np.uint8)),
    (4096, np.arange(4080 - 64, dtype=np.uint8)),  # fits raw, not with the array header
    (4096, {"blob": b"y" * 10_000, "arr": np.arange(3000.0)}),
    (1 << 16, np.arange(100_000.0)),
    (1 << 16, b"z" * 200_000),
]
_IDS = ["bytes-5000", "bytes-max+1", "bytearray", "array", "array-header", "pickle", "array-800k", "bytes-200k"]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


@pytest.mark.parametrize(("capacity", "obj"), _LARGER_THAN_THE_RING, ids=_IDS)
@pytest.mark.parametrize("how", ["send", "send-timeout"])
def test_message_larger_than_the_ring_streams_through(capacity: int, obj: Any, how: str) -> None:
    """Any size fits: a message larger than the ring goes in chunks as the receiver
    drains them (here a thread of this process)."""
    tx, rx = shmplane.channel(capacity=capacity)
    with tx, rx:
        errors: list[BaseException] = []

        def send() -> None:
            try:
                tx.send(obj) if how == "send" else tx.send(obj, timeout=20)
                tx.send(b"next", timeout=20)
            except BaseException as e:  # noqa: BLE001  (reported below)
                errors.append(e)

        t = threading.Thread(target=send)
        t.start()
        got = rx.recv(timeout=20)
        assert rx.recv(timeout=20) == b"next"
        t.join(20)
        assert not errors and _same(obj, got)


@pytest.mark.parametrize(("capacity", "obj"), _LARGER_THAN_THE_RING, ids=_IDS)
def test_try_send_of_what_does_not_fit_now_is_full(capacity: int, obj: Any) -> None:
    """try_send never waits, also not half-way through a message: a message that does
    not fit the free space now (or ever: larger than the ring) raises Full, and none
    of it is sent."""
    tx, rx = shmplane.channel(capacity=capacity)
    with tx, rx:
        with pytest.raises(shmplane.Full):
            tx.try_send(obj)
        with pytest.raises(shmplane.Empty):
            rx.try_recv()  # nothing of the refused message got through
        tx.send(b"still works", timeout=1)
        assert rx.recv(timeout=1) == b"still works"


def _recv_with_little_memory(rx: shmplane.Receiver, headroom: int) -> list[str]:
    import resource

    with open("/proc/self/statm") as f:
        vm_bytes = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (vm_bytes + headroom, resource.RLIM_INFINITY))
    seen = []
    with rx:
        try:
            rx.recv(timeout=20)
            seen.append("received")
        except shmplane.MessageTooLargeError as e:
            seen.append(f"too large {isinstance(e, ValueError)}")
        seen.append(repr(rx.recv(timeout=20)))
    return seen


@pytest.mark.timeout(WATCHDOG)
def test_message_too_large_to_allocate_is_dropped(procs: Any) -> None:
    """A message the receiver cannot allocate (a 256 MB array in a process limited to
    64 MB more): MessageTooLargeError (a ValueError); the message is dropped and the
    next one arrives intact."""
    tx, rx = shmplane.channel(capacity=1 << 20)
    p, conn = procs.start_reporting(_recv_with_little_memory, rx, 64 << 20, method="fork")
    rx.close()
    with tx:
        tx.send(np.zeros(32 << 20), timeout=20)  # 256 MB, drained (skipped) by the child
        tx.send(b"next", timeout=20)
    assert get_report(conn) == ["too large True", "b'next'"]
    procs.join(p)


def _explode() -> None:
    raise RuntimeError("cannot rebuild this object")


class FailsToUnpickle:
    def __reduce__(self) -> tuple[Any, ...]:
        return (_explode, ())


@pytest.mark.parametrize(
    ("obj", "exc"),
    [
        (memoryview(b"abcdef")[::2], TypeError),  # non-contiguous: pickled, and memoryviews cannot be
        (lambda: 0, Exception),  # PicklingError / AttributeError
        (threading.Lock(), TypeError),
    ],
    ids=["strided-memoryview", "lambda", "lock"],
)
def test_unpicklable_object_raises_and_channel_survives(obj: Any, exc: type) -> None:
    tx, rx = shmplane.channel(capacity=4096)
    with tx, rx:
        with pytest.raises(exc):
            tx.send(obj, timeout=1)
        with pytest.raises(shmplane.Empty):
            rx.try_recv()  # nothing half-sent
        tx.send(b"next", timeout=1)
        assert rx.recv(timeout=1) == b"next"


def test_unpickling_error_consumes_the_message() -> None:
    """The receiver's unpickling error propagates; that message is dropped (as with
    multiprocessing.Connection.recv) and the next one arrives intact."""
    tx, rx = shmplane.channel(capacity=4096)
    with tx, rx:
        tx.send(FailsToUnpickle(), timeout=1)
        tx.send(b"next", timeout=1)
        with pytest.raises(RuntimeError, match="cannot rebuild"):
            rx.recv(timeout=1)
        assert rx.recv(timeout=1) == b"next"


def test_try_send_full_then_drain() -> None:
    tx, rx = shmplane.channel(capacity=4096)
    with tx, rx:
        n = 0
        with pytest.raises(shmplane.Full) as info:
            while True:
                tx.try_send(n.to_bytes(2, "little") * 100)
                n += 1
                assert n < 100, "a 4 KiB ring cannot hold 100 messages of 200 bytes"
        assert isinstance(info.value, queue.Full)
        assert n > 0
        assert not tx.poll_space(200)
        with pytest.raises(shmplane.Timeout):
            tx.send(b"x" * 200, timeout=0.05)
        for i in range(n):
            assert rx.recv(timeout=1) == i.to_bytes(2, "little") * 100
        with pytest.raises(shmplane.Empty):
            rx.try_recv()
        assert tx.poll_space(200, timeout=1)
        tx.try_send(b"room again")
        assert rx.recv(timeout=1) == b"room again"


def test_try_recv_empty() -> None:
    tx, rx = shmplane.channel(capacity=4096)
    with tx, rx:
        with pytest.raises(shmplane.Empty) as info:
            rx.try_recv()
        assert isinstance(info.value, queue.Empty)
        assert rx.poll() is False
        assert rx.poll(0.02) is False


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("call", ["recv", "recv_bytes"])
def test_recv_timeout(call: str) -> None:
    tx, rx = shmplane.channel(capacity=4096)
    with tx, rx:
        with pytest.raises(shmplane.Timeout) as info:
            getattr(rx, call)(timeout=0.05)
        assert isinstance(info.value, TimeoutError)
        with pytest.raises(TimeoutError):
            rx.recv(timeout=0)
        # A timeout is a deadline, not a check: a message sent while the call sleeps
        # (before its deadline) is what it returns.
        sender = when_blocked(lambda: tx.send(b"in time"), tx.path)
        assert getattr(rx, call)(timeout=20) == b"in time"
        sender.join()


# ------------------------------------------------------------------- roles


def test_second_sender_in_same_process(shm_name: str) -> None:
    tx, rx = shmplane.channel(capacity=4096, name=shm_name)
    try:
        with pytest.raises(shmplane.RoleTakenError):
            shmplane.Sender.open(shm_name)
        with pytest.raises(shmplane.RoleTakenError):
            shmplane.Receiver.open(shm_name)
        tx.send(b"first sender unharmed")
        assert rx.recv(timeout=1) == b"first sender unharmed"
        tx.close()
        tx2 = shmplane.Sender.open(shm_name)  # a closed role can be taken again
        tx2.send(b"second sender")
        assert rx.recv(timeout=1) == b"second sender"
        tx2.close()
    finally:
        tx.close()
        rx.close()


def _open_role(name: str, role: str) -> str:
    cls = shmplane.Sender if role == "sender" else shmplane.Receiver
    try:
        end = cls.open(name)
    except shmplane.ShmplaneError as e:
        return type(e).__name__
    if role == "sender":
        end.send(b"from the child", timeout=5)
    end.close()
    return "opened"


@pytest.mark.parametrize("role", ["sender", "receiver"])
@pytest.mark.parametrize("method", METHODS)
def test_second_endpoint_from_another_process(method: str, role: str, shm_name: str, procs: Any) -> None:
    tx, rx = shmplane.channel(capacity=4096, name=shm_name)
    p, conn = procs.start_reporting(_open_role, shm_name, role, method=method)
    assert get_report(conn) == "RoleTakenError"
    procs.join(p)
    if role == "sender":
        tx.close()  # now the role is free: a child can take it
        p, conn = procs.start_reporting(_open_role, shm_name, role, method=method)
        assert get_report(conn) == "opened"
        procs.join(p)
        assert rx.recv(timeout=5) == b"from the child"
        with pytest.raises(shmplane.DisconnectedError):
            rx.recv(timeout=5)
    tx.close()
    rx.close()


# ------------------------------------------------------------ dead and closed peers


def _send_then_hang(tx: shmplane.Sender, ready: Any, n: int) -> None:
    for i in range(n):
        tx.send(i, timeout=10)
    ready.send("ready")
    pause_forever()


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("method", METHODS)
def test_sender_killed_while_receiver_blocks(method: str, procs: Any) -> None:
    """SIGKILL the sender while we block in recv(): PeerDeadError (before the call's
    own timeout), after the messages it sent before dying."""
    import multiprocessing as mp

    tx, rx = shmplane.channel(capacity=1 << 16)
    r, w = mp.get_context(method).Pipe(duplex=False)
    p = procs.start(_send_then_hang, tx, w, 5, method=method)
    tx.close()
    w.close()
    assert r.poll(20) and r.recv() == "ready"
    assert [rx.recv(timeout=5) for _ in range(5)] == list(range(5))
    killer = when_blocked(lambda: os.kill(p.pid, signal.SIGKILL), rx.path)
    try:
        with pytest.raises(shmplane.PeerDeadError) as info:
            rx.recv(timeout=20)
        assert isinstance(info.value, ConnectionResetError)
    finally:
        killer.join()
        procs.join(p, exitcode=-signal.SIGKILL)
    with pytest.raises(shmplane.PeerDeadError):
        rx.recv(timeout=5)  # stays dead
    rx.close()


@pytest.mark.timeout(WATCHDOG)
def test_pending_messages_survive_sender_death(procs: Any) -> None:
    """Messages committed before the sender died are delivered, then PeerDeadError."""
    import multiprocessing as mp

    tx, rx = shmplane.channel(capacity=1 << 16)
    r, w = mp.get_context("spawn").Pipe(duplex=False)
    p = procs.start(_send_then_hang, tx, w, 20)
    tx.close()
    w.close()
    assert r.poll(20) and r.recv() == "ready"
    os.kill(p.pid, signal.SIGKILL)
    procs.join(p, exitcode=-signal.SIGKILL)
    assert [rx.recv(timeout=5) for _ in range(20)] == list(range(20))
    with pytest.raises(shmplane.PeerDeadError):
        rx.recv(timeout=10)
    rx.close()


@pytest.mark.timeout(WATCHDOG)
def test_try_recv_notices_dead_sender(procs: Any) -> None:
    import multiprocessing as mp

    tx, rx = shmplane.channel(capacity=4096)
    r, w = mp.get_context("spawn").Pipe(duplex=False)
    p = procs.start(_send_then_hang, tx, w, 0)
    tx.close()
    w.close()
    assert r.poll(20) and r.recv() == "ready"
    os.kill(p.pid, signal.SIGKILL)
    procs.join(p, exitcode=-signal.SIGKILL)
    # try_recv looks at the sender's liveness only every 256 empty polls (and at most
    # every 50 ms): poll briskly, and give up after 10 s.
    deadline = time.monotonic() + 10
    polls = 0
    with pytest.raises(shmplane.PeerDeadError):
        while time.monotonic() < deadline:
            try:
                rx.try_recv()
            except shmplane.Empty:
                polls += 1
                time.sleep(0.001)
        raise AssertionError(f"try_recv still said Empty after {polls} polls over 10 s since the sender died")
    rx.close()


def _hold_receiver(rx: shmplane.Receiver, ready: Any) -> None:
    rx.poll(0)  # attached and registered in this process
    ready.send("ready")
    pause_forever()


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("method", METHODS)
def test_receiver_killed_while_sender_blocked_on_full_ring(method: str, procs: Any) -> None:
    import multiprocessing as mp

    tx, rx = shmplane.channel(capacity=1 << 12)
    r, w = mp.get_context(method).Pipe(duplex=False)
    p = procs.start(_hold_receiver, rx, w, method=method)
    rx.close()
    w.close()
    assert r.poll(20) and r.recv() == "ready"
    with pytest.raises(shmplane.Full):
        for _ in range(100):
            tx.try_send(b"y" * 500)
    killer = when_blocked(lambda: os.kill(p.pid, signal.SIGKILL), tx.path)
    try:
        with pytest.raises(shmplane.PeerDeadError):
            tx.send(b"y" * 500, timeout=20)
    finally:
        killer.join()
        procs.join(p, exitcode=-signal.SIGKILL)
    tx.close()


def test_receiver_closed_while_sender_blocked_on_full_ring() -> None:
    tx, rx = shmplane.channel(capacity=1 << 12)
    with pytest.raises(shmplane.Full):
        for _ in range(100):
            tx.try_send(b"y" * 500)
    closer = when_blocked(rx.close, tx.path)
    try:
        with pytest.raises(shmplane.DisconnectedError):
            tx.send(b"y" * 500, timeout=10)
    finally:
        closer.join()
    tx.close()


def test_clean_close_disconnects_after_draining_in_process() -> None:
    tx, rx = shmplane.channel(capacity=1 << 16)
    msgs = [b"", b"a", np.arange(5), {"k": 1}, None, "last"]
    for m in msgs:
        tx.send(m)
    tx.close()
    got = [rx.recv(timeout=1) for _ in msgs]
    assert got[:2] == msgs[:2] and np.array_equal(got[2], msgs[2]) and got[3:] == msgs[3:]
    for _ in range(3):  # and keeps saying so
        with pytest.raises(shmplane.DisconnectedError) as info:
            rx.recv(timeout=1)
        assert isinstance(info.value, EOFError)
    with pytest.raises(shmplane.DisconnectedError):
        rx.try_recv()
    rx.close()


def _send_and_close(tx: shmplane.Sender, n: int) -> int:
    with tx:
        for i in range(n):
            tx.send(i, timeout=10)
    return n


@pytest.mark.parametrize("method", METHODS)
def test_clean_close_disconnects_after_draining_across_processes(method: str, procs: Any) -> None:
    tx, rx = shmplane.channel(capacity=1 << 16)
    p, conn = procs.start_reporting(_send_and_close, tx, 200, method=method)
    tx.close()  # right after start(), before the child is done
    assert get_report(conn) == 200
    procs.join(p)  # everything is pending in the ring now
    assert [rx.recv(timeout=5) for _ in range(200)] == list(range(200))
    with pytest.raises(shmplane.DisconnectedError):
        rx.recv(timeout=5)
    rx.close()


@pytest.mark.parametrize("method", METHODS)
def test_clean_close_disconnects_when_parent_closes_its_copy_late(method: str, procs: Any) -> None:
    tx, rx = shmplane.channel(capacity=1 << 16)
    p, conn = procs.start_reporting(_send_and_close, tx, 3, method=method)
    assert get_report(conn) == 3
    procs.join(p)
    tx.close()  # our copy, closed only after the child closed its end and exited
    try:
        assert [rx.recv(timeout=5) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(shmplane.DisconnectedError):
            rx.recv(timeout=5)
    finally:
        rx.close()


def _send_and_return(tx: shmplane.Sender, n: int) -> None:
    for i in range(n):
        tx.send(i, timeout=10)
    # returns with tx open: multiprocessing's exit finalizers close it


def _send_and_os_exit(tx: shmplane.Sender, n: int) -> None:
    for i in range(n):
        tx.send(i, timeout=10)
    os._exit(0)  # no finalizers: the sender dies open


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
@pytest.mark.parametrize(
    ("exit_by", "error"),
    [(_send_and_return, shmplane.DisconnectedError), (_send_and_os_exit, shmplane.PeerDeadError)],
    ids=["returns", "os._exit"],
)
def test_child_that_exits_with_its_sender_open(exit_by: Any, error: type, method: str, procs: Any) -> None:
    """README (Notes): endpoints close themselves when a multiprocessing child ends, so
    a child that sent and returned reads as closed (DisconnectedError), not dead; one
    that leaves through os._exit itself closes nothing and reads as dead."""
    tx, rx = shmplane.channel(capacity=1 << 16)
    p = procs.start(exit_by, tx, 3, method=method)
    tx.close()
    try:
        assert [rx.recv(timeout=20) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(error):
            rx.recv(timeout=20)
        procs.join(p)
    finally:
        rx.close()


EXIT_SCRIPT = """
import os, sys, shmplane
tx = shmplane.Sender.open(sys.argv[1])
tx.send(b"sent")
if sys.argv[2] == "os._exit":
    os._exit(0)
"""  # else: the interpreter's normal exit, tx still open


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize(("how", "error"), [("exit", shmplane.DisconnectedError), ("os._exit", shmplane.PeerDeadError)])
def test_program_that_exits_with_its_sender_open(how: str, error: type, shm_name: str) -> None:
    """The same for a program that is not a multiprocessing child: its normal exit
    closes its endpoints (atexit), os._exit does not."""
    import subprocess
    import sys

    rx = shmplane.Receiver.create(shm_name, 4096)
    try:
        out = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, shm_name, how], capture_output=True, text=True, timeout=WATCHDOG)
        assert out.returncode == 0, out.stderr
        assert rx.recv(timeout=5) == b"sent"
        with pytest.raises(error):
            rx.recv(timeout=20)
    finally:
        rx.close()


# ------------------------------------------------------------- stale segments


def _create_named_and_hang(name: str, ready: Any) -> None:
    tx = shmplane.Sender.create(name, 1 << 16)
    rx = shmplane.Receiver.open(name)
    tx.send(b"never read")
    ready.send("ready")
    pause_forever()
    del tx, rx


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("method", METHODS)
def test_stale_segment_of_killed_process_is_replaced(method: str, shm_name: str, procs: Any) -> None:
    import multiprocessing as mp

    r, w = mp.get_context(method).Pipe(duplex=False)
    p = procs.start(_create_named_and_hang, shm_name, w, method=method)
    w.close()
    assert r.poll(20) and r.recv() == "ready"
    with pytest.raises(shmplane.AlreadyExistsError):
        shmplane.channel(capacity=4096, name=shm_name)  # its owner is alive
    os.kill(p.pid, signal.SIGKILL)
    procs.join(p, exitcode=-signal.SIGKILL)
    assert os.path.exists(seg_path(shm_name))  # left behind by the dead process
    tx, rx = shmplane.channel(capacity=4096, name=shm_name)  # replaced, no AlreadyExistsError
    assert tx.capacity == 4096
    with pytest.raises(shmplane.Empty):
        rx.try_recv()  # a fresh ring: the dead process's message is gone
    tx.send(b"fresh")
    assert rx.recv(timeout=1) == b"fresh"
    tx.close()
    rx.close()


# --------------------------------------------------------------------- Ctrl-C


def _blocked_recv(rx: shmplane.Receiver, ready: Any) -> None:
    block_until_interrupted(ready, rx.recv)  # no timeout: only Ctrl-C ends this


def _blocked_send(tx: shmplane.Sender, ready: Any) -> None:
    try:
        while True:
            tx.try_send(b"f" * 500)
    except shmplane.Full:
        pass
    # Ring full, no timeout: only Ctrl-C ends this.
    block_until_interrupted(ready, lambda: tx.send(b"f" * 500))


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("policy", ["adaptive", "block", "spin"])
@pytest.mark.parametrize("side", ["recv", "send"])
@pytest.mark.parametrize("method", METHODS)
def test_ctrl_c_interrupts_blocked_call(method: str, side: str, policy: str, procs: Any) -> None:
    """SIGINT sent once the child is seen inside its wait (asleep on the channel's
    futex, or spinning) ends the call with KeyboardInterrupt."""
    import multiprocessing as mp

    tx, rx = shmplane.channel(capacity=1 << 12, policy=policy)
    path = tx.path
    r, w = mp.get_context(method).Pipe(duplex=False)
    if side == "recv":
        p = procs.start(_blocked_recv, rx, w, method=method)
        rx.close()
    else:
        p = procs.start(_blocked_send, tx, w, method=method)
        tx.close()
    w.close()
    interrupt_when_blocked(p, r, spinning=policy == "spin", segment=path)
    procs.join(p, exitcode=42)
    tx.close()
    rx.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("end", ["receiver", "sender", "mailbox"])
def test_close_from_another_thread_ends_a_blocked_call(end: str) -> None:
    import threading
    import time

    tx, rx = shmplane.channel(capacity=4096)
    mb = shmplane.mailbox(4096)
    if end == "sender":
        while True:
            try:
                tx.try_send(bytes(1000))
            except shmplane.Full:
                break
    target = {"receiver": rx, "sender": tx, "mailbox": mb}[end]
    blocked = threading.Event()
    outcome: list[BaseException] = []

    def call() -> None:
        blocked.set()
        try:
            if end == "sender":
                tx.send(bytes(1000), timeout=20)
            else:
                target.recv(timeout=20)  # type: ignore[union-attr]
        except BaseException as e:  # noqa: BLE001 - the outcome is what we check
            outcome.append(e)

    t = threading.Thread(target=call)
    t.start()
    blocked.wait(5)
    while not outcome and t.is_alive():
        target.close()  # refused by nobody: it waits for the blocked call to end
        t.join(0.5)
    t.join(10)
    assert not t.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], shmplane.ClosedError), outcome
    for o in (tx, rx, mb):
        o.close()


def test_empty_names_are_refused() -> None:
    for make in (
        lambda: shmplane.channel(4096, name=""),
        lambda: shmplane.mailbox(4096, name=""),
        lambda: shmplane.RawValue("d", 1.0, name=""),
        lambda: shmplane.RawArray("d", 4, name=""),
        lambda: shmplane.Sender.open(""),
    ):
        with pytest.raises(shmplane.InvalidNameError):
            make()


def test_a_segment_others_may_write_is_refused(shm_name: str) -> None:
    tx, rx = shmplane.channel(4096, name=shm_name)
    path = tx.path
    assert path is not None
    os.chmod(path, 0o666)  # as a squatter's planted segment would be
    try:
        with pytest.raises(shmplane.PermissionDeniedError) as info:
            shmplane.Receiver.open(shm_name)
        assert isinstance(info.value, PermissionError) and "mode 666" in str(info.value)
    finally:
        os.chmod(path, 0o600)
        tx.close()
        rx.close()


def test_a_segment_of_another_user_is_refused(shm_name: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a segment to another user")  # CI runs as root
    tx, rx = shmplane.channel(4096, name=shm_name)
    path = tx.path
    assert path is not None
    os.chown(path, 65534, -1)  # nobody: a squatter's segment
    try:
        with pytest.raises(shmplane.PermissionDeniedError) as info:
            shmplane.Sender.open(shm_name)
        assert "owned by uid 65534" in str(info.value)
        with pytest.raises(shmplane.PermissionDeniedError):
            shmplane.channel(4096, name=shm_name)  # create never reuses a planted file
    finally:
        os.chown(path, 0, -1)
        tx.close()
        rx.close()
