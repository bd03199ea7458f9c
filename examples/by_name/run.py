"""By name: unrelated processes (started with ``subprocess``, not ``multiprocessing``) meet by a name.

``receiver.py NAME`` creates a mailbox called NAME (``/dev/shm/shmplane.NAME``);
each ``sender.py NAME`` joins it with ``shmplane.Sender.open(NAME)`` — nothing is
inherited or pickled, the name is all they share. This script starts the senders
first (they wait for the mailbox to appear), then the receiver, waits for all three
with a timeout, prints what each printed, and checks that the segment is gone once
every process has closed its end.

Run:  python examples/by_name/run.py [--quick]
(or by hand: ``receiver.py NAME`` in one terminal, ``sender.py NAME`` in two others).
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="accepted for symmetry; this example is short")
    ap.parse_args()
    name = f"by-name-demo-{os.getpid()}"  # unique per run: two runs do not meet
    python = [sys.executable, "-u"]
    roles = {
        "sender-a": [*python, str(HERE / "sender.py"), name, "--who", "sender-a"],
        "sender-b": [*python, str(HERE / "sender.py"), name, "--who", "sender-b", "--count", "2"],
        "receiver": [*python, str(HERE / "receiver.py"), name, "--senders", "2"],
    }
    procs = {role: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for role, cmd in roles.items()}
    failed = []
    for role, p in procs.items():
        try:
            out, _ = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        print(out, end="")
        if p.returncode != 0:
            failed.append(f"{role} exited with {p.returncode}")
    left = glob.glob(f"/dev/shm/shmplane.{name}*")  # the segment and its doorbells (@rx, ...)
    gone = not left
    print(f"segment /dev/shm/shmplane.{name} {'removed' if gone else 'STILL THERE'} after every process closed")
    if failed or not gone:
        raise SystemExit("; ".join(failed) or "segment left behind")


if __name__ == "__main__":
    main()
