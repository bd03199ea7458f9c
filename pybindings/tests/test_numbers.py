"""Lists and tuples of numbers (the homogeneous fast path, message tag 4): they arrive
as the same container of equal numbers of the same types, on every primitive; anything
that is not a list or tuple of exact floats or of exact 64-bit ints goes through pickle
and keeps its types too."""

from __future__ import annotations

import math
import multiprocessing as mp
import struct
from typing import Any

import numpy as np
import pytest

import shmplane


class MyFloat(float):
    pass


def same(a: Any, b: Any) -> bool:
    """Equal containers of equal items of the same types; floats compared bit for bit."""
    if type(a) is not type(b) or len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if type(x) is not type(y):
            return False
        if isinstance(x, float):
            if struct.pack("<d", x) != struct.pack("<d", y):
                return False
        elif x != y:
            return False
    return True


NAN_PAYLOAD = struct.unpack("<d", struct.pack("<Q", 0x7FF8_0000_DEAD_BEEF))[0]

CASES = {
    "floats": [float(i) / 3 for i in range(100)],
    "special floats": [math.nan, NAN_PAYLOAD, -0.0, 0.0, math.inf, -math.inf, 5e-324] + [1.5] * 20,
    "ints": list(range(-50, 50)),
    "int64 edges": [-(2**63), 2**63 - 1, 0, -1] * 5,
    "tuple of floats": tuple(float(i) for i in range(40)),
    "tuple of ints": tuple(range(40)),
    "short list": [1.0, 2.0],
    "bools": [True, False] * 10,
    "big int": [1] * 20 + [2**64],
    "int then float": [1] * 20 + [1.0],
    "float then int": [1.0] * 20 + [1],
    "float subclass": [MyFloat(1.0)] * 20,
    "nested": [[1.0]] * 20,
    "strings": ["a"] * 20,
}


@pytest.mark.parametrize("name", list(CASES))
def test_lists_round_trip_with_their_types(name: str) -> None:
    obj = CASES[name]
    tx, rx = shmplane.channel(1 << 20)
    tx.send(obj)
    assert same(rx.recv(), obj)
    tx.send(obj)
    assert same(rx.recv(copy=False), obj)  # no view of a list: a list all the same
    tx.close()
    rx.close()


@pytest.mark.timeout(60)
def test_large_list_crosses_in_chunks_and_recv_into_refuses_it() -> None:
    big = [float(i) for i in range(300_000)]  # 2.4 MB: chunked on a 1 MiB ring
    tx, rx = shmplane.channel(1 << 20)
    p = mp.get_context("fork").Process(target=_send_twice, args=(tx, big))
    p.start()
    with pytest.raises(shmplane.InvalidArgumentError, match="list or tuple of numbers"):
        rx.recv_into(np.empty(300_000), timeout=30)
    assert rx.recv(timeout=30) == big  # the refused message stayed queued
    assert rx.recv(timeout=30) == big
    p.join(30)
    assert p.exitcode == 0
    tx.close()
    rx.close()


def _send_twice(tx: Any, obj: Any) -> None:
    tx.send(obj)
    tx.send(obj)
    tx.close()


@pytest.mark.timeout(60)
def test_mailbox_broadcast_and_rpc_carry_lists() -> None:
    floats = [float(i) for i in range(1000)]
    ints = tuple(range(1000))
    mb = shmplane.mailbox(1 << 20)
    s = mb.sender()
    s.send(floats)
    assert same(mb.recv(timeout=5), floats)
    s.close()
    mb.close()
    pub = shmplane.broadcast(1 << 20)
    sub = pub.subscribe()
    pub.send(ints)
    assert same(sub.recv(timeout=5), ints)
    sub.close()
    pub.close()
    name = f"numbers-rpc-{mp.current_process().pid}"
    server = shmplane.RpcServer.create(name)
    p = mp.get_context("fork").Process(target=_serve_one, args=(server,))
    p.start()
    client = shmplane.RpcClient.connect(name, timeout=10)
    assert same(client.call(floats, timeout=10), floats)
    client.close()
    p.join(30)
    server.close()


def _serve_one(server: Any) -> None:
    for request in server:
        request.reply(request.value)
        break


def test_a_lease_of_a_list_decodes_from_the_ring_and_keeps_nothing() -> None:
    floats = [float(i) for i in range(100)]
    tx, rx = shmplane.channel(1 << 20)
    tx.send(floats)
    with rx.lease(timeout=5) as lease:
        assert lease.value == floats and lease.value is not lease.value  # built per access
        assert not lease.released
    assert rx.held == 0
    tx.send(floats)
    lease = rx.lease(timeout=5)
    v = lease.value
    lease.release()  # no view of a list holds the message
    assert v == floats and rx.held == 0
    tx.close()
    rx.close()


@pytest.mark.timeout(60)
def test_a_list_too_large_for_memory_is_a_memory_error_not_an_abort() -> None:
    code = (
        "import resource, shmplane\n"
        "tx, rx = shmplane.channel(1 << 16)\n"
        "big = [1.5] * 20_000_000\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_AS)\n"
        "import os\n"
        "rss = int(open('/proc/self/statm').read().split()[0]) * os.sysconf('SC_PAGE_SIZE')\n"
        "resource.setrlimit(resource.RLIMIT_AS, (rss + (64 << 20), hard))\n"
        "try:\n"
        "    tx.send(big, timeout=1)\n"
        "except MemoryError:\n"
        "    print('MemoryError')\n"
    )
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50)
    assert out.returncode == 0 and "MemoryError" in out.stdout, (out.returncode, out.stdout, out.stderr[-500:])


# Large lists of floats are encoded straight into the ring a record at a time, and
# decoded as the records arrive (numbers.rs `with_streamed` / `receive_streamed`). The
# records' boundaries fall at any byte offset (the first record ends on a tile boundary
# that depends on what was sent before), also inside a number.
STREAMED = [math.nan, NAN_PAYLOAD, -0.0, math.inf, -math.inf, 5e-324] + [i / 7 for i in range(200_000)]


@pytest.mark.parametrize("shift", [0, 1, 3, 7, 13, 4096 + 5])
@pytest.mark.parametrize("container", [list, tuple])
def test_large_float_lists_stream_through_records_split_anywhere(shift: int, container: Any) -> None:
    obj = container(STREAMED)
    tx, rx = shmplane.channel(1 << 23)  # 8 MiB: the 1.6 MB list fits, so it is streamed
    for _ in range(3):  # at several producer positions
        tx.send(b"x" * shift)
        tx.send(obj)
        assert rx.recv() == b"x" * shift
        assert same(rx.recv(), obj)
    tx.close()
    rx.close()


def test_a_large_list_with_one_odd_item_late_keeps_its_types() -> None:
    for odd in (1, MyFloat(2.0), "s", None):
        obj = [1.5] * 300_000 + [odd]
        tx, rx = shmplane.channel(1 << 23)
        tx.send(obj)
        got = rx.recv()
        assert len(got) == len(obj) and type(got[-1]) is type(odd) and got[:-1] == obj[:-1]
        tx.close()
        rx.close()


def test_a_large_list_cut_part_way_is_truncated_and_the_next_message_intact() -> None:
    big = [float(i) for i in range(400_000)]  # 3.2 MB on a 1 MiB ring: cannot all fit
    tx, rx = shmplane.channel(1 << 20)
    with pytest.raises(TimeoutError):
        tx.send(big, timeout=0.2)  # nobody reads: cut after the first records
    tx.send(b"next")
    with pytest.raises(shmplane.TruncatedMessageError):
        rx.recv(timeout=5)
    assert rx.recv(timeout=5) == b"next"
    tx.close()
    rx.close()


@pytest.mark.timeout(120)
def test_a_list_decoded_part_way_is_invisible_to_the_garbage_collector() -> None:
    # A half-built list (empty slots) must not be reachable while the receiver waits
    # for its next record without the GIL: another thread walks every object meanwhile.
    import gc
    import threading

    big = [float(i) for i in range(600_000)]  # chunked on a 1 MiB ring, sent by a child
    tx, rx = shmplane.channel(1 << 20)
    p = mp.get_context("fork").Process(target=_send_n, args=(tx, big, 5))
    p.start()
    stop = threading.Event()

    def walk() -> None:
        while not stop.is_set():
            for o in gc.get_objects():
                if type(o) is list and len(o) == len(big):
                    o[-1]  # a NULL slot here would crash
            gc.collect()

    t = threading.Thread(target=walk)
    t.start()
    try:
        for _ in range(5):
            assert rx.recv(timeout=60) == big
    finally:
        stop.set()
        t.join(60)
    p.join(30)
    assert p.exitcode == 0
    tx.close()
    rx.close()


def _send_n(tx: Any, obj: Any, n: int) -> None:
    for _ in range(n):
        tx.send(obj)
    tx.close()


def _recv_list_with_little_memory(rx: Any, headroom: int) -> list[str]:
    import os
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
        except MemoryError as e:
            seen.append(f"MemoryError {e!r}")
        seen.append(repr(rx.recv(timeout=20)))
    return seen


@pytest.mark.timeout(60)
def test_a_streamed_list_too_large_to_allocate_is_message_too_large(procs: Any) -> None:
    """Review (streamed lists): as any message this process cannot allocate (the
    documented contract of recv, test_errors' 256 MB array), a chunked list of numbers
    the receiver cannot allocate is MessageTooLargeError and is dropped. The old path
    mapped the MemoryError (`too_large`); `receive_streamed` lets it out as is."""
    from shm_helpers import get_report

    tx, rx = shmplane.channel(1 << 20)
    # Spawned: a fork of this test process, after the test above ran a thread, aborted
    # on a small allocation under the limit ("memory allocation of 1 bytes failed";
    # not investigated further: the limit is the process's whole address space).
    p, conn = procs.start_reporting(_recv_list_with_little_memory, rx, 32 << 20, method="spawn")
    rx.close()
    big = [1.5] * 8_000_000  # 64 MB of numbers: a 64 MB list alone does not fit
    with tx:
        tx.send(big, timeout=20)  # drained (skipped) by the child
        tx.send(b"next", timeout=20)
    assert get_report(conn) == ["too large True", "b'next'"]
    procs.join(p)


def test_a_hostile_empty_chunked_tuple_does_not_track_the_empty_tuple_singleton(shm_name: str) -> None:
    """Review (streamed lists): a chunked numbers message whose total is its 8-byte
    header alone (a tuple of no numbers; no correct sender makes one, any peer can)
    makes `Decoder` untrack and then `PyObject_GC_Track` the interpreter's empty-tuple
    singleton (`PyTuple_New(0)`). It stays tracked (gc.get_objects() lists it); two
    threads receiving such messages at once abort the process: the second Track of
    an object already tracked is a fatal error ("object already tracked by the garbage
    collector"; reproduced with 3 threads x 30000 messages)."""
    import gc

    from shm_helpers import seg_path

    tx, rx = shmplane.channel(1 << 16, name=shm_name)
    with tx, rx:
        # A bytes record, retagged in the segment as TAG_NUMBERS | CHUNKED: chunk header
        # (total 8), then a numbers header (tuple of f64).
        tx.send(struct.pack("<Q", 8) + bytes([1, ord("d"), 0, 0, 0, 0, 0, 0]))
        with open(seg_path(shm_name), "r+b") as f:
            f.seek(4096)  # the first record of a fresh channel: data offset 0
            assert struct.unpack("<Q", f.read(8))[0] == (1 << 63) | (1 << 32) | 16
            f.seek(4096)
            f.write(struct.pack("<Q", (1 << 63) | (0x104 << 32) | 16))
        assert not gc.is_tracked(())
        got = rx.recv(timeout=5)
        assert got == ()
        assert not gc.is_tracked(()), "the empty tuple singleton is now tracked by the GC"
