"""A process that crashed leaves its anonymous segments in /dev/shm; the next process
that creates an anonymous one removes them (once per process), and never one that a
live process holds (issue 14: "the library also removes a crashed process's anonymous
segments at the next create")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import pytest

import shmplane

LEAVE = r"""
import os, sys, shmplane
tx, rx = shmplane.channel(1 << 16)            # anon-<pid>-...
v = shmplane.RawValue("d", 1.0)                # anon-value-<pid>-...
mb = shmplane.mailbox(1 << 16, max_senders=2)  # anon-<pid>-...
print(os.getpid(), flush=True)
sys.stdin.read()                               # killed here
"""

SWEEP = r"""
import shmplane
tx, rx = shmplane.channel(4096)                # the first anonymous create sweeps
tx.close(); rx.close()
"""


def mine(pid: int) -> list[str]:
    return sorted(f for f in os.listdir("/dev/shm") if f.startswith("shmplane.anon-") and f"-{pid}-" in f)


@pytest.mark.timeout(60)
def test_a_killed_process_anonymous_segments_are_swept_by_the_next_create() -> None:
    p = subprocess.Popen([sys.executable, "-c", LEAVE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    pid = int(p.stdout.readline())
    left = mine(pid)
    assert len(left) >= 3, left
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert mine(pid) == left  # nothing closed them
    # A live process's anonymous segment is never swept.
    tx, rx = shmplane.channel(4096)
    with tx, rx:
        ours = mine(os.getpid())
        assert ours
        subprocess.run([sys.executable, "-c", SWEEP], check=True, timeout=60)
        assert mine(pid) == [], mine(pid)
        assert set(ours) <= set(mine(os.getpid()))


@pytest.mark.timeout(60)
def test_sweep_keeps_a_dead_process_segment_that_a_live_one_still_holds() -> None:
    """An anonymous channel whose creator died, held by a live process: it stays."""
    leave = LEAVE.replace("sys.stdin.read()", "open(sys.argv[1], 'w').write(tx.name); sys.stdin.read()")
    marker = f"/tmp/shmplane-sweep-{os.getpid()}"
    p = subprocess.Popen([sys.executable, "-c", leave, marker], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    pid = int(p.stdout.readline())
    while not os.path.exists(marker) or not open(marker).read():
        pass
    name = open(marker).read()
    os.unlink(marker)
    # Hold the segment from this (live) process: a new receiver takes the dead one's
    # role after the kill.
    p.send_signal(signal.SIGKILL)
    p.wait()
    rx = shmplane.Receiver.open(name)
    with rx:
        subprocess.run([sys.executable, "-c", SWEEP], check=True, timeout=60)
        assert os.path.exists(f"/dev/shm/shmplane.{name}"), "a held segment was swept"
    shmplane.gc()
    for f in mine(pid):
        os.unlink(os.path.join("/dev/shm", f))
