"""Records a broken or hostile peer lays around the whole ring (found by fuzzing the
ring decoder, ``fuzz/fuzz_targets/ring.rs``): the receiver must report corruption or
honour its deadline, never loop forever. The records are written straight into the
segment file, as another process with write access could."""

from __future__ import annotations

import os
import struct

import pytest

import shmplane
from shm_helpers import seg_path

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
