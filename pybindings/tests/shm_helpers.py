"""Helpers of the shmplane tests, importable by spawned children (no pytest needed)."""

from __future__ import annotations

import glob
import os
import random
import re
import signal
import struct
import sys
import threading
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


# ------------------------------------------------------------------ mutated segments
# test_fuzz_segments.py: a valid segment's bytes with a few seeded mutations, planted
# as a segment file (in the child that uses it, just before it does).

def _interesting_value(old: int, rng: random.Random) -> int:
    choices = [
        0,
        (1 << 64) - 1,
        rng.getrandbits(64),
        (old + rng.choice([1, -1, 8, -8, 4096, -4096])) % (1 << 64),
        old ^ (1 << rng.randrange(64)),
        1 << rng.randrange(64),
        (old & ~0xFFFF_FFFF) | 0xFFFF_FFFF,  # low u32 all ones
        (old & 0xFFFF_FFFF) | (rng.getrandbits(32) << 32),  # high u32 random
        (1 << 63) | rng.getrandbits(31) << 32 | rng.getrandbits(32),  # a committed record header
    ]
    return rng.choice(choices)


#: Tags of a record header (docs/wire-format.md §4.2, §5.1): messages whole and
#: chunked, continuations, with an envelope, and ring padding.
_TAGS = {t | e for t in (1, 2, 3, 4, 0x101, 0x102, 0x103, 0x104) for e in (0, 0x400)} | {0x200, 0x7FFF_FFFF}


def mutation_targets(data: bytes) -> tuple[list[int], list[int], list[int]]:
    """Word indexes of ``data`` worth mutating: the fields of its control structures
    (every word of a 128-byte line that holds something but is mostly zero: header,
    role entries, ring control blocks, cursors, positions, event counts; payload
    lines are dense), its record headers (COMMITTED, a known tag, a length within
    the file), and every word that holds something."""
    words = len(data) // 8
    values = struct.unpack_from(f"<{words}Q", data)
    fields = []
    for line in range(0, words, 16):
        live = sum(1 for v in values[line : line + 16] if v)
        if 0 < live <= 8:
            fields.extend(range(line, min(line + 16, words)))
    headers = [
        i for i, v in enumerate(values) if v >> 63 and (v >> 32) & 0x7FFF_FFFF in _TAGS and v & 0xFFFF_FFFF <= len(data)
    ]
    nonzero = [i for i, v in enumerate(values) if v]
    return fields, headers, nonzero


def mutate(template: bytes, rng: random.Random, targets: tuple[list[int], list[int], list[int]] | None = None) -> bytes:
    """One to four mutations of ``template``: an 8-byte word set to an interesting
    value (a field of a control structure, a record header, a word that holds
    something, any word: ``targets``, by default ``mutation_targets(template)``), or a
    single byte flipped. Deterministic for a given ``rng`` seed."""
    data = bytearray(template)
    words = len(data) // 8
    fields, headers, nonzero = mutation_targets(template) if targets is None else targets
    for _ in range(rng.randint(1, 4)):
        r = rng.random()
        if r < 0.1:
            at = rng.randrange(len(data))
            data[at] ^= 1 << rng.randrange(8)
            continue
        if r < 0.6 and fields:
            w = rng.choice(fields)
        elif r < 0.85 and headers:
            w = rng.choice(headers)
        elif r < 0.95 and nonzero:
            w = rng.choice(nonzero)
        else:
            w = rng.randrange(words)
        (old,) = struct.unpack_from("<Q", data, 8 * w)
        struct.pack_into("<Q", data, 8 * w, _interesting_value(old, rng))
    return bytes(data)


def plant_segment(name: str, data: bytes, doorbells: bool) -> None:
    """``data`` as segment ``name`` (mode 0600, as shmplane makes them), with empty
    doorbells if its kind has them."""
    fd = os.open(seg_path(name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)
    if doorbells:
        for end in ("@rx", "@tx"):
            os.mkfifo(seg_path(name) + end, 0o600)
            os.chmod(seg_path(name) + end, 0o600)


def remove_segment(name: str) -> None:
    """Remove segment file ``name`` and whatever shmplane made beside it: doorbells
    (``<name>@...``), an RPC server's reply channels (``<name>.reply-...``)."""
    for path in [seg_path(name), *glob.glob(glob.escape(seg_path(name)) + "@*"), *glob.glob(glob.escape(seg_path(name)) + ".reply-*")]:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


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


# ------------------------------------------------------------------ where a thread waits

#: Numbers of the system calls a blocked shmplane call sleeps in, by machine.
_SYSCALLS = {
    "x86_64": {"futex": 202, "poll": 7, "ppoll": 271, "select": 23, "pselect6": 270, "nanosleep": 35, "clock_nanosleep": 230},
    "aarch64": {"futex": 98, "ppoll": 73, "pselect6": 72, "nanosleep": 101, "clock_nanosleep": 115},
}
_FUTEX_PRIVATE_FLAG = 128


def _syscall_numbers() -> dict[str, int]:
    machine = os.uname().machine
    if machine not in _SYSCALLS:
        raise NotImplementedError(f"no system call numbers for {machine}")
    return _SYSCALLS[machine]


def thread_stat(pid: int, tid: int) -> tuple[str, int]:
    """The kernel's scheduling state of thread ``tid`` of ``pid`` ('R', 'S', 'T', ...)
    and the CPU time it has used, in clock ticks (user + system)."""
    with open(f"/proc/{pid}/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return fields[0], int(fields[11]) + int(fields[12])


def shm_mappings(pid: int) -> list[tuple[int, int, str]]:
    """``(start, end, path)`` of each mapping of a shmplane segment in ``pid``."""
    out = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            path = parts[5].strip().removesuffix(" (deleted)") if len(parts) == 6 else ""
            if path.startswith(SHM_DIR + "/" + PREFIX):
                start, end = (int(x, 16) for x in parts[0].split("-"))
                out.append((start, end, path))
    return out


def _blocking_syscall(pid: int, tid: int) -> list[int] | None:
    """The number and arguments of the system call thread ``tid`` of ``pid`` is asleep
    in (state 'S'), or None (running, stopped, gone, or not in a system call)."""
    try:
        state, _ = thread_stat(pid, tid)
        with open(f"/proc/{pid}/task/{tid}/syscall") as f:
            words = f.read().split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    if state != "S" or not words or not words[0].isdigit():
        return None
    return [int(words[0])] + [int(w, 16) for w in words[1:]]


def asleep_in_syscall(pid: int, tid: int, calls: Iterable[str]) -> bool:
    """True if thread ``tid`` of ``pid`` is asleep in the kernel in one of ``calls``
    (names, e.g. "poll")."""
    numbers = _syscall_numbers()
    call = _blocking_syscall(pid, tid)
    return call is not None and call[0] in [numbers[c] for c in calls if c in numbers]


def asleep_in_shmplane_wait(pid: int, tid: int, segment: str | None = None, calls: Iterable[str] = ("futex",)) -> bool:
    """True if thread ``tid`` of ``pid`` is asleep in the kernel in one of ``calls``; for
    ``futex``, a shared (not process-private) wait on a word inside a mapped shmplane
    segment (``segment``: that one's path): the sleep of a shmplane wait, which no
    Python code (the GIL, a lock, a pipe) and no other part of a call sleeps in."""
    numbers = _syscall_numbers()
    call = _blocking_syscall(pid, tid)
    if call is None or call[0] not in [numbers[c] for c in calls if c in numbers]:
        return False
    if call[0] != numbers["futex"]:
        return True
    addr, op = call[1], call[2]
    if op & _FUTEX_PRIVATE_FLAG:
        return False
    return any(start <= addr < end and (segment is None or path == segment) for start, end, path in shm_mappings(pid))


def block_until_interrupted(ready: Any, blocking_call: Callable[[], Any]) -> None:
    """Child entry point for Ctrl-C tests (the parent runs ``interrupt_when_blocked``):
    send ``("ready", thread id)``, run ``blocking_call`` (which only Ctrl-C should end),
    then report how it ended on ``ready`` and exit: "KeyboardInterrupt" and 42 for a
    SIGINT handled while the call ran, "KeyboardInterrupt outside the call" and 43 for
    one handled before it began or after it ended, another exception and 1, or
    "returned" and 2. It exits through ``sys.exit``, so that a ``multiprocessing``
    child runs its exit finalizers (which close shmplane handles) as a program
    interrupted by Ctrl-C would."""
    inside = False
    where: list[bool] = []

    def on_sigint(signum: int, frame: Any) -> None:
        where.append(inside)
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, on_sigint)
    try:
        ready.send(("ready", threading.get_native_id()))
        inside = True
        blocking_call()
        inside = False
    except KeyboardInterrupt:
        inside = False
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if where == [True]:
            ready.send("KeyboardInterrupt")
            sys.exit(42)
        ready.send("KeyboardInterrupt outside the call")
        sys.exit(43)
    except BaseException as e:  # noqa: BLE001 - everything goes back to the test
        ready.send(f"{type(e).__name__}: {e}")
        sys.exit(1)
    ready.send("returned")
    sys.exit(2)


#: CPU time (clock ticks) a spinning call must have burnt before it counts as inside
#: its wait: far more than the few bytecodes between "ready" and the call.
SPIN_TICKS = 20


def wait_until_blocked(
    pid: int,
    tid: int,
    *,
    spinning: bool = False,
    segment: str | None = None,
    calls: Iterable[str] = ("futex",),
    timeout: float = 30.0,
) -> None:
    """Wait until thread ``tid`` of ``pid`` is inside a blocked shmplane call: asleep
    in its wait (``asleep_in_shmplane_wait``), or for a call that never sleeps
    (``spinning``: the spin policy, a writer waiting for the slot's lock) runnable and
    burning CPU since this was called. AssertionError after ``timeout``."""
    if spinning:
        _, base = thread_stat(pid, tid)

        def blocked() -> bool:
            state, ticks = thread_stat(pid, tid)
            return state == "R" and ticks - base >= SPIN_TICKS

    else:

        def blocked() -> bool:
            return asleep_in_shmplane_wait(pid, tid, segment, calls)

    if not wait_until(blocked, timeout, interval=0.005):
        raise AssertionError(f"thread {tid} of {pid} never blocked in a shmplane wait: {thread_stat(pid, tid)}")


def when_blocked(
    action: Callable[[], Any], segment: str | None = None, timeout: float = 20.0, calls: Iterable[str] | None = None
) -> threading.Thread:
    """Run ``action`` in a new thread once the calling thread is asleep in a shmplane
    wait (``asleep_in_shmplane_wait`` on ``segment``), or in one of ``calls`` if given
    (``asleep_in_syscall``: ``select``, ``poll``...): "while the call blocks", without
    a sleep standing in for it. Join the returned thread afterwards. If the caller
    never blocks within ``timeout``, ``action`` never runs (the blocked call then ends
    by its own timeout and the test fails on that)."""
    pid, tid = os.getpid(), threading.get_native_id()

    def blocked() -> bool:
        if calls is not None:
            return asleep_in_syscall(pid, tid, calls)
        return asleep_in_shmplane_wait(pid, tid, segment)

    def run() -> None:
        if wait_until(blocked, timeout, interval=0.002):
            action()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def interrupt_when_blocked(p: Any, conn: Any, timeout: float = 20.0, **blocked: Any) -> None:
    """Parent side of ``block_until_interrupted`` in child ``p`` reporting on ``conn``:
    wait for "ready", then until the child's thread is inside its blocked call
    (``wait_until_blocked(**blocked)``), send SIGINT and check that the call raised
    KeyboardInterrupt (the child exits 42). A call that ignores Ctrl-C fails after
    ``timeout``; the child is left to the caller's cleanup."""
    assert conn.poll(timeout), "the child never got ready"
    status, tid = conn.recv()
    assert status == "ready", status
    wait_until_blocked(p.pid, tid, timeout=timeout, **blocked)
    os.kill(p.pid, signal.SIGINT)
    p.join(timeout)
    assert not p.is_alive(), f"Ctrl-C did not end the blocked call within {timeout} s"
    report = conn.recv() if conn.poll(1) else "<nothing>"
    assert report == "KeyboardInterrupt" and p.exitcode == 42, (report, p.exitcode)


def pause_forever() -> None:
    while True:
        signal.pause()
