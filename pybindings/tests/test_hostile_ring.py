"""Records a broken or hostile peer lays around the whole ring (found by fuzzing the
ring decoder, ``fuzz/fuzz_targets/ring.rs``): the receiver must report corruption or
honour its deadline, never loop forever. The records are written straight into the
segment file, as another process with write access could."""

from __future__ import annotations

import os
import struct

import pytest

import shmplane
from shm_helpers import read_u64, seg_path, write_u64

CAPACITY = 64 << 10
COMMITTED = 1 << 63
CONTINUATION = 0x200
PADDING = 0x7FFFFFFF
RECORD = 128  # bytes per record laid down: header (8) + payload (120); 512 tile the ring


def _lay_records(name: str, tag: int) -> None:
    """Fill the data area (the file's last CAPACITY bytes) with committed records."""
    path = seg_path(name)
    size = os.path.getsize(path)
    word = struct.pack("<Q", COMMITTED | (tag << 32) | (RECORD - 8))
    with open(path, "r+b") as f:
        for offset in range(0, CAPACITY, RECORD):
            f.seek(size - CAPACITY + offset)
            f.write(word)


def test_continuations_around_the_ring_end_at_the_deadline(shm_name: str) -> None:
    tx, rx = shmplane.channel(CAPACITY, name=shm_name)
    with tx, rx:
        _lay_records(shm_name, CONTINUATION)
        with pytest.raises(shmplane.Empty):
            rx.try_recv()
        with pytest.raises(TimeoutError):  # at its deadline, not a hang (the watchdog)
            rx.recv(timeout=0.2)


def test_padding_around_the_ring_is_corrupt(shm_name: str) -> None:
    tx, rx = shmplane.channel(CAPACITY, name=shm_name)
    with tx, rx:
        _lay_records(shm_name, PADDING)
        with pytest.raises(shmplane.CorruptSegmentError):
            rx.recv(timeout=5.0)


# ------------------------------------------------ poisoned ring, forged chunk headers
# A live channel whose ring another process scribbles on (docs/wire-format.md §4.6,
# §7): the checks the Rust decoders make must reach Python as CorruptSegmentError.

HEAD_OFFSET = 768  # RingControl.head: the consumer position (wire format §2.4)
POISONED_OFFSET = 1152  # RingControl.status.poisoned (u32): 0, or the reason code
POISON_BAD_RECORD = 1
CHUNKED_BYTES = 0x101  # first record of a chunked bytes message
TAG_CONTINUATION = 0x200


def _forge(name: str, records: list[tuple[int, bytes, int | None]]) -> None:
    """Lay ``(tag, payload, len)`` records (``len`` None: the payload's) at the
    receiver's position, header word last, as a producer would publish them."""
    path = seg_path(name)
    pos = read_u64(path, HEAD_OFFSET)
    base = os.path.getsize(path) - CAPACITY
    with open(path, "r+b") as f:
        for tag, data, length in records:
            f.seek(base + pos + 8)
            f.write(data)
            f.seek(base + pos)
            f.write(struct.pack("<Q", COMMITTED | (tag << 32) | (len(data) if length is None else length)))
            pos += 8 + (len(data) + 7) // 8 * 8


def _poisoned(name: str) -> int:
    return read_u64(seg_path(name), POISONED_OFFSET) & 0xFFFF_FFFF


@pytest.mark.parametrize("header", ["longer than the ring", "not committed"])
def test_impossible_record_header_poisons_the_ring(header: str, shm_name: str) -> None:
    tx, rx = shmplane.channel(CAPACITY, name=shm_name)
    with tx, rx:
        tx.send(b"before")
        assert rx.recv(timeout=5) == b"before"
        if header == "longer than the ring":
            _forge(shm_name, [(1, b"", CAPACITY)])
        else:  # a non-zero header word without COMMITTED
            path = seg_path(shm_name)
            write_u64(path, os.path.getsize(path) - CAPACITY + read_u64(path, HEAD_OFFSET), (1 << 32) | 8)
        with pytest.raises(shmplane.CorruptSegmentError, match="record header"):
            rx.recv(timeout=5)
        assert _poisoned(shm_name) == POISON_BAD_RECORD
        with pytest.raises(shmplane.CorruptSegmentError):
            rx.try_recv()  # poisoned for good
        # The sender learns it too, once it waits (its per-slice check): not a Timeout.
        with pytest.raises(shmplane.Full):
            while True:
                tx.try_send(b"x" * 1000)
        with pytest.raises(shmplane.CorruptSegmentError):
            tx.send(b"x" * 1000, timeout=20)


CHUNK_FORGERIES = {
    # A continuation whose offset is not where the message stands.
    "wrong offset": [(CHUNKED_BYTES, struct.pack("<Q", 100) + b"a" * 24, None),
                     (TAG_CONTINUATION, struct.pack("<Q", 7) + b"b" * 16, None)],
    # A continuation carrying more than the message has left.
    "past the total": [(CHUNKED_BYTES, struct.pack("<Q", 100) + b"a" * 24, None),
                       (TAG_CONTINUATION, struct.pack("<Q", 24) + b"b" * 200, None)],
    # A first record holding more than the total it announces.
    "total below the first record": [(CHUNKED_BYTES, struct.pack("<Q", 4) + b"a" * 24, None)],
    # A chunked first record too short for its chunk header.
    "no chunk header": [(CHUNKED_BYTES, b"1234", None)],
}


@pytest.mark.parametrize("records", CHUNK_FORGERIES.values(), ids=CHUNK_FORGERIES.keys())
def test_chunk_header_contradicting_its_message_is_corrupt(records: list[tuple[int, bytes, int | None]], shm_name: str) -> None:
    tx, rx = shmplane.channel(CAPACITY, name=shm_name)
    with tx, rx:
        tx.send(b"before")
        assert rx.recv(timeout=5) == b"before"
        _forge(shm_name, records)
        with pytest.raises(shmplane.CorruptSegmentError, match="received message"):
            rx.recv(timeout=5)
        # The receiver consumed the bad record(s): a message-level error does not
        # poison the ring.
        assert _poisoned(shm_name) == 0
        with pytest.raises(shmplane.Empty):
            rx.try_recv()
