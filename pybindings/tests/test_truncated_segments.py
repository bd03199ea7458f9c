"""A segment file truncated by another process while mapped: every operation of every
primitive raises ``CorruptSegmentError`` (or, for a non-blocking look at an empty
ring, ``Empty``), never dies of SIGBUS, and the process still closes and exits
cleanly (issue 13 part 1).

``faulthandler`` is on in each child (as under pytest), enabled before shmplane; two
cases enable it after the segment was mapped and disable it before the exit.

Each operation runs in its own child process (``python -c``), once with the file cut
to 0 bytes and once to its first page (4096 bytes: the header survives): a SIGBUS the
guard missed kills only that child, and shows here as its exit status. Cut to a page,
an operation whose memory survived may still succeed (what it wrote is in the file,
where a peer reads it), so each is repeated until it fails, and it must fail with
``CorruptSegmentError``; only operations whose memory lies in the first page
(``SURVIVE_A_PAGE_CUT``) must instead keep working, intact.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

CHILD = r"""
import faulthandler, os, sys
op, cut = sys.argv[1], sys.argv[2]
if not op.startswith("fh_"):
    faulthandler.enable()      # as pytest does, before shmplane: ours goes on top
import numpy as np
import shmplane

tag = sys.argv[3]
T = 0.3

def trunc(path):
    os.truncate(path, 0 if cut == "zero" else 4096)

def repeat(f, n=20000, check=None):
    for _ in range(n):
        got = f()
        if check is not None:
            assert check(got), (op, got)
    # Never failed: its memory survived the cut (the first page), and every result
    # was checked intact.
    print("INTACT")

keep = []
def channel():
    tx, rx = shmplane.channel(1 << 16, name=f"trunc-{tag}")
    keep.extend([tx, rx])
    return tx, rx

def run():
    if op.startswith(("send", "try_send", "loan", "poll_space")):
        tx, rx = channel()
        tx.send(b"queued")
        trunc(tx.path)
        if op == "send_bytes": repeat(lambda: tx.send(b"x" * 16, timeout=T))
        elif op == "send_array": repeat(lambda: tx.send(np.ones(500), timeout=T))
        elif op == "send_large": repeat(lambda: tx.send(np.ones(40_000), timeout=T))
        elif op == "send_pickle": repeat(lambda: tx.send({"a": [1, 2, 3]}, timeout=T))
        elif op == "try_send": repeat(lambda: tx.try_send(b"y" * 100))
        elif op == "poll_space": repeat(lambda: (tx.poll_space(60_000, timeout=T), tx.send(b"z" * 30_000, timeout=T)))
        elif op == "loan":
            def loan():
                with tx.loan(1000, "f8", timeout=T) as a:
                    a[:] = 1.0
            repeat(loan)
    elif op == "fh_enabled_after":
        # faulthandler installed over the guard after the segment was mapped.
        tx, rx = channel()
        tx.send(np.arange(100.0))
        faulthandler.enable()
        trunc(rx.path)
        repeat(lambda: rx.recv(timeout=T))
    elif op == "fh_disabled_at_exit":
        # pytest's order: enable before, disable at the end; the close at exit must
        # still find the guard.
        faulthandler.enable()
        tx, rx = channel()
        tx.send(b"queued")
        faulthandler.disable()
        trunc(rx.path)
        print("CORRUPT")       # nothing to raise: the exit below must not die
    elif op.startswith(("recv", "try_recv", "poll", "lease")):
        tx, rx = channel()
        tx.send(np.arange(100.0))
        trunc(rx.path)
        if op == "recv": repeat(lambda: rx.recv(timeout=T))
        elif op == "recv_view": repeat(lambda: rx.recv(timeout=T, copy=False))
        elif op == "recv_bytes": repeat(lambda: rx.recv_bytes(timeout=T))
        elif op == "recv_into": repeat(lambda: rx.recv_into(np.empty(100), timeout=T))
        elif op == "lease": repeat(lambda: rx.lease(timeout=T).release())
        elif op == "poll": repeat(lambda: (rx.poll(T), rx.recv(timeout=T)))
        elif op == "try_recv": repeat(lambda: rx.try_recv(), n=3)
    elif op.startswith("slot_"):
        arr = shmplane.RawArray("d", 1000, name=f"trunc-{tag}")
        val = shmplane.RawValue("d", 1.5, name=f"trunc-v-{tag}")
        keep.extend([arr, val])
        trunc(f"/dev/shm/shmplane.trunc-{tag}")
        trunc(f"/dev/shm/shmplane.trunc-v-{tag}")
        if op == "slot_item": repeat(lambda: arr[999])
        elif op == "slot_slice": repeat(lambda: arr[:])
        elif op == "slot_snapshot": repeat(lambda: arr.snapshot())
        elif op == "slot_setitem": repeat(lambda: arr.__setitem__(999, 2.0))
        elif op == "slot_setslice": repeat(lambda: arr.__setitem__(slice(None), [3.0] * 1000))
        elif op == "slot_value": repeat(lambda: val.value, n=200, check=lambda v: v == 1.5)
        elif op == "slot_set_value": repeat(lambda: setattr(val, "value", 4.0), n=200)
        elif op == "slot_version": repeat(lambda: arr.version, n=200, check=lambda v: v == 1)
        elif op == "slot_wait": repeat(lambda: arr.wait_for_update(arr.version, timeout=T))
        elif op == "slot_asarray": repeat(lambda: np.asarray(arr))
    elif op.startswith("mailbox_"):
        mb = shmplane.mailbox(1 << 16, name=f"trunc-{tag}", max_senders=4)
        tx = mb.sender()
        keep.extend([mb, tx])
        tx.send(b"queued")
        trunc(f"/dev/shm/shmplane.trunc-{tag}")
        if op == "mailbox_send": repeat(lambda: tx.send(b"m" * 3000, timeout=T))
        elif op == "mailbox_recv": repeat(lambda: mb.recv(timeout=T))
        elif op == "mailbox_poll": repeat(lambda: (mb.poll(T), mb.recv(timeout=T)))
    elif op.startswith("broadcast_"):
        pub = shmplane.broadcast(1 << 16, name=f"trunc-{tag}")
        sub = pub.subscribe()
        keep.extend([pub, sub])
        pub.send(b"queued")
        trunc(f"/dev/shm/shmplane.trunc-{tag}")
        if op == "broadcast_send": repeat(lambda: pub.send(b"b" * 3000, timeout=T))
        elif op == "broadcast_recv": repeat(lambda: sub.recv(timeout=T))
    elif op.startswith("rpc_"):
        server = shmplane.RpcServer.create(f"trunc-{tag}", max_clients=2)
        client = shmplane.RpcClient.connect(f"trunc-{tag}", timeout=5)
        keep.extend([server, client])
        trunc(f"/dev/shm/shmplane.trunc-{tag}")
        if op == "rpc_call": repeat(lambda: client.call(b"q" * 3000, timeout=T))
        elif op == "rpc_recv": repeat(lambda: server.recv(timeout=T))
    else:
        raise SystemExit(f"unknown op {op}")

try:
    run()
except shmplane.CorruptSegmentError as e:
    assert "truncated" in str(e), str(e)
    print("CORRUPT")
# Everything still open is closed at exit (the automatic close must not crash either).
"""

OPS = [
    "send_bytes", "send_array", "send_large", "send_pickle", "try_send", "poll_space", "loan",
    "recv", "recv_view", "recv_bytes", "recv_into", "lease", "poll", "try_recv",
    "slot_item", "slot_slice", "slot_snapshot", "slot_setitem", "slot_setslice", "slot_value",
    "slot_set_value", "slot_version", "slot_wait", "slot_asarray",
    "mailbox_send", "mailbox_recv", "mailbox_poll",
    "broadcast_send", "broadcast_recv",
    "rpc_call", "rpc_recv",
    "fh_enabled_after", "fh_disabled_at_exit",
]  # fmt: skip


# A small RawValue lies wholly in the segment's first page: cut to that page, it keeps
# working, intact (nothing of it was lost), and must not raise.
# The same for a slot's version word.
SURVIVE_A_PAGE_CUT = {"slot_value", "slot_set_value", "slot_version"}


@pytest.mark.parametrize("cut", ["zero", "page"])
@pytest.mark.parametrize("op", OPS)
def test_operation_on_a_truncated_segment_raises_and_never_crashes(op: str, cut: str) -> None:
    tag = uuid.uuid4().hex[:12]
    try:
        p = subprocess.run(
            [sys.executable, "-c", CHILD, op, cut, tag], capture_output=True, text=True, timeout=60
        )
    finally:
        for name in os.listdir("/dev/shm"):
            if tag in name:
                os.unlink(os.path.join("/dev/shm", name))
    assert p.returncode == 0, f"{op} ({cut}): exit status {p.returncode}\n{p.stdout}\n{p.stderr}"
    expected = {"CORRUPT"}
    if cut == "page" and op in SURVIVE_A_PAGE_CUT:
        expected = {"INTACT"}
    assert p.stdout.strip() in expected, f"{op} ({cut}): {p.stdout}\n{p.stderr}"


FOREIGN = r"""
import faulthandler, mmap, os, sys, tempfile
if sys.argv[1] == "faulthandler":
    faulthandler.enable()
import shmplane
tx, rx = shmplane.channel(1 << 16, name="foreign-" + sys.argv[2])   # installs the guard
path = os.path.join("/dev/shm", "shmplane-test-foreign-" + sys.argv[2])
with open(path, "w+b") as f:
    f.truncate(1 << 16)
    m = mmap.mmap(f.fileno(), 1 << 16)
    os.unlink(path)
    f.truncate(0)
    print("touching", flush=True)
    m[40000]                            # not ours: must still kill the process
print("survived", flush=True)
"""


@pytest.mark.parametrize("mode", ["default", "faulthandler"])
def test_a_sigbus_outside_shmplane_mappings_still_kills_the_process(mode: str) -> None:
    """The guard takes only faults in its own mappings; others reach the handler that
    was there before (Python's faulthandler, or the default action)."""
    import signal

    tag = uuid.uuid4().hex[:12]
    try:
        p = subprocess.run([sys.executable, "-c", FOREIGN, mode, tag], capture_output=True, text=True, timeout=60)
    finally:
        for name in os.listdir("/dev/shm"):
            if tag in name:
                os.unlink(os.path.join("/dev/shm", name))
    assert "touching" in p.stdout and "survived" not in p.stdout, p.stdout + p.stderr
    assert p.returncode == -signal.SIGBUS, (p.returncode, p.stderr)
    if mode == "faulthandler":
        assert "Bus error" in p.stderr, p.stderr


SENT = r"""
import os, signal, sys
got = []
signal.signal(signal.SIGBUS, lambda s, f: got.append(s))
import shmplane
tx, rx = shmplane.channel(4096, name="sent-" + sys.argv[1])   # installs the guard
os.kill(os.getpid(), signal.SIGBUS)                          # sent, not a fault
tx.close(); rx.close()
print("handled" if got == [signal.SIGBUS] else f"lost {got}")
"""


def test_a_sent_sigbus_reaches_the_handler_installed_before() -> None:
    tag = uuid.uuid4().hex[:12]
    try:
        p = subprocess.run([sys.executable, "-c", SENT, tag], capture_output=True, text=True, timeout=60)
    finally:
        for name in os.listdir("/dev/shm"):
            if tag in name:
                os.unlink(os.path.join("/dev/shm", name))
    assert p.returncode == 0 and p.stdout.strip() == "handled", (p.returncode, p.stdout, p.stderr)
