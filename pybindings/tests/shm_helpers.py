"""Helpers of the shmplane tests, importable by spawned children (no pytest needed)."""

from __future__ import annotations

import os
import re
import signal
import struct
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

SHM_DIR = "/dev/shm"
PREFIX = "shmplane."

#: Byte offset of the header's u64 holding the ABI version (low 32 bits) and the
#: segment kind (high 32 bits); of the creator's pid (u32).
VERSION_KIND_OFFSET = 8
CREATOR_PID_OFFSET = 48


def seg_path(name: str) -> str:
    return f"{SHM_DIR}/{PREFIX}{name}"


def list_segments() -> list[str]:
    try:
        return [f[len(PREFIX) :] for f in os.listdir(SHM_DIR) if f.startswith(PREFIX)]
    except FileNotFoundError:
        return []


def segment_is_ours(name: str, pids: Iterable[int]) -> bool:
    """True if segment ``name`` was made by one of ``pids``: its name carries the pid
    (``anon-<pid>-...``, ``pyt<pid>-...``, ``...-<pid>-...``) or its header's creator does."""
    pids = set(pids)
    for token in re.split(r"[-_.]", name):
        digits = token[3:] if token.startswith("pyt") else token
        if digits.isdigit() and int(digits) in pids:
            return True
    try:
        # O_NONBLOCK: a doorbell (``<name>@rx``, a FIFO) opens at once and reads empty;
        # a plain open() of it would wait for a writer, possibly forever.
        fd = os.open(seg_path(name), os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        raw = os.pread(fd, 4, CREATOR_PID_OFFSET)
    except OSError:  # a FIFO cannot seek
        return False
    finally:
        os.close(fd)
    return len(raw) == 4 and struct.unpack("<I", raw)[0] in pids


def read_u64(path: str, offset: int) -> int:
    with open(path, "rb") as f:
        f.seek(offset)
        return struct.unpack("<Q", f.read(8))[0]


def write_u64(path: str, offset: int, value: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack("<Q", value))


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# ------------------------------------------------------------------ deterministic data


def payload(seed: int, i: int, size: int) -> bytes:
    """``size`` pseudo-random bytes, the same in every process for ``(seed, i)``."""
    import numpy as np

    return np.random.default_rng([seed, i]).bytes(size)


def sizes(seed: int, count: int, high: int) -> list[int]:
    import numpy as np

    return [int(s) for s in np.random.default_rng([seed, 999_999]).integers(0, high + 1, size=count)]


# ------------------------------------------------------------------ child reporting


def report(conn: Any, fn: Callable[..., Any], *args: Any) -> None:
    """Child entry point: run ``fn(*args)`` and send ``("ok", result)`` or
    ``("err", summary, traceback)`` on ``conn``."""
    try:
        result = fn(*args)
    except BaseException as e:  # noqa: BLE001 - everything goes back to the test
        try:
            conn.send(("err", f"{type(e).__module__}.{type(e).__name__}: {e}", traceback.format_exc()))
        finally:
            conn.close()
        return
    conn.send(("ok", result))
    conn.close()


def get_report(conn: Any, timeout: float = 30.0) -> Any:
    """The child's result; raises AssertionError with the child's traceback on error."""
    if not conn.poll(timeout):
        raise AssertionError(f"child did not report within {timeout} s")
    try:
        status, *rest = conn.recv()
    except EOFError:
        raise AssertionError("child died without reporting") from None
    if status != "ok":
        raise AssertionError(f"child failed: {rest[0]}\n{rest[1]}")
    return rest[0]


def block_until_interrupted(ready: Any, blocking_call: Callable[[], Any]) -> None:
    """Child entry point for Ctrl-C tests: send "ready", run ``blocking_call`` (which
    only Ctrl-C should end), then report how it ended on ``ready`` and ``_exit``:
    "KeyboardInterrupt" and 42, another exception and 1, or "returned" and 2."""
    try:
        ready.send("ready")
        blocking_call()
    except KeyboardInterrupt:
        ready.send("KeyboardInterrupt")
        os._exit(42)
    except BaseException as e:  # noqa: BLE001 - everything goes back to the test
        ready.send(f"{type(e).__name__}: {e}")
        os._exit(1)
    ready.send("returned")
    os._exit(2)


def pause_forever() -> None:
    while True:
        signal.pause()
