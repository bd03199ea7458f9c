"""Deliberate sharing between local users (``shmplane.set_sharing``, issue 13 part 2):
off by default; with it, a segment created with group/other bits by one user is opened
by another user that trusts the owner's uid. Runs the second user as ``nobody``
through ``setuid`` (root only)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

import shmplane

NOBODY = 65534

CREATOR = r"""
import sys, shmplane
name, trusted = sys.argv[1], int(sys.argv[2])
shmplane.set_sharing(0o066, [trusted])
tx = shmplane.Sender.create(name, 4096)
tx.send(b"shared hello")
print("ready", flush=True)
sys.stdin.read()
tx.close()
"""

JOINER = r"""
import os, sys
import shmplane                # before setuid: the interpreter's files may be root's only
os.setgid(65534); os.setuid(65534)
name, share = sys.argv[1], sys.argv[2] == "share"
if share:
    shmplane.set_sharing(0o066, [0])
try:
    rx = shmplane.Receiver.open(name)
except shmplane.PermissionDeniedError as e:
    print("refused:", e); sys.exit(0)
print(rx.recv(timeout=30).decode(), flush=True)
rx.close()
"""


def test_set_sharing_validates_its_mode() -> None:
    with pytest.raises(shmplane.InvalidArgumentError):
        shmplane.set_sharing(0o700)
    with pytest.raises(shmplane.InvalidArgumentError):
        shmplane.set_sharing(0o001)
    assert shmplane._shmplane._sharing() == (0, [])


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a second user (setuid)")
@pytest.mark.timeout(60)
def test_another_user_joins_only_when_both_sides_share() -> None:
    name = f"share-{uuid.uuid4().hex[:10]}"
    env = dict(os.environ)
    creator = subprocess.Popen(
        [sys.executable, "-c", CREATOR, name, str(NOBODY)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert creator.stdout is not None and creator.stdout.readline().strip() == "ready"
        st = os.stat(f"/dev/shm/shmplane.{name}")
        assert st.st_mode & 0o777 == 0o666
        # Without its own set_sharing, the other user refuses a root-owned segment.
        p = subprocess.run([sys.executable, "-c", JOINER, name, "no"], capture_output=True, text=True, timeout=30, env=env)
        assert p.returncode == 0 and p.stdout.startswith("refused:") and "set_sharing" in p.stdout, p.stdout + p.stderr
        # With it, it receives.
        p = subprocess.run([sys.executable, "-c", JOINER, name, "share"], capture_output=True, text=True, timeout=30, env=env)
        assert p.returncode == 0 and p.stdout.strip() == "shared hello", p.stdout + p.stderr
    finally:
        if creator.stdin is not None:
            creator.stdin.close()
        creator.wait(30)
        for f in os.listdir("/dev/shm"):
            if name in f:
                os.unlink(os.path.join("/dev/shm", f))
