"""A broadcast whose shared words another process scribbles on while it runs: the
broadcast control block, the subscriber cursor lines, the ring's control block and
its data, written with random words as a hostile or broken process with write access
could. The publisher and subscribers (in a child process) may see typed errors
(``ShmplaneError`` subclasses) or wrong bytes, never a crash, a Rust panic or a hang.
The layout offsets are those of ``docs/wire-format.md`` §2.8."""

from __future__ import annotations

import multiprocessing
import os
import random
import struct
import time
from typing import Any

import pytest

import shmplane
from shm_helpers import seg_path

SUBS = 4
CAPACITY = 1 << 14


def _control_offset(subs: int) -> int:
    return 128 + 256 * (1 + subs)


def _ring_offset(subs: int) -> int:
    end_of_lines = _control_offset(subs) + 512 + 128 * subs
    return (end_of_lines + 4095) // 4096 * 4096


def _victim(name: str, ready: Any, errors: Any, seconds: float) -> None:
    """Publish and receive for ``seconds``, catching only shmplane's own errors."""
    pub = shmplane.Publisher.open(name)
    subs = [shmplane.Subscriber.open(name) for _ in range(2)]
    ready.set()
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        try:
            pub.send(i.to_bytes(8, "little") * (1 + i % 50), timeout=0.05)
        except shmplane.ShmplaneError:
            errors.value += 1
        for s in subs:
            try:
                s.recv(timeout=0.01)
            except shmplane.ShmplaneError:
                errors.value += 1
        i += 1
    pub.close()
    for s in subs:
        s.close()


@pytest.mark.parametrize("lossy", [False, True])
def test_scribbled_broadcast_gives_typed_errors_never_a_crash(lossy: bool, make_name: Any) -> None:
    name = make_name("hostile")
    creator = shmplane.Publisher.create(name, CAPACITY, lossy=lossy, max_subscribers=SUBS)
    keep = shmplane.Subscriber.open(name)  # keeps the segment alive meanwhile
    creator.close()  # the child takes the role over
    path = seg_path(name)
    size = os.path.getsize(path)
    start = _control_offset(SUBS)
    ring = _ring_offset(SUBS)
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    errors = ctx.Value("q", 0)
    child = ctx.Process(target=_victim, args=(name, ready, errors, 2.0), daemon=True)
    child.start()
    assert ready.wait(30), "the victim did not start"
    rng = random.Random(1)
    with open(path, "r+b") as f:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and child.is_alive():
            # A burst of random 8-byte words: the broadcast and ring control blocks,
            # the cursor lines, or the data area.
            for _ in range(8):
                region = rng.random()
                if region < 0.4:
                    off = rng.randrange(start, ring + 1024) & ~7
                else:
                    off = rng.randrange(ring + 4096, size - 8) & ~7
                f.seek(off)
                f.write(struct.pack("<Q", rng.getrandbits(64)))
            f.flush()
            time.sleep(0.002)
    child.join(30)
    if child.is_alive():
        child.kill()
        child.join(5)
        pytest.fail("the broadcast hung under a scribbler")
    assert child.exitcode == 0, f"the victim died (exit code {child.exitcode}): a crash or a panic"
    assert errors.value > 0, "the scribbler hit nothing: the test tests nothing"
    keep.close()
    shmplane.gc()
