"""Broadcast: one publisher sends a dataset once; several subscriber processes each get all of it.

The publisher (this process) creates a ``shmplane.broadcast``, subscribes one
subscriber per child *before* starting it (so none can miss the first message) and
hands it to a ``spawn`` child, which owns it from then on. It then publishes a small
header, an 8 MB float64 array and a list of 100,000 floats: each is written into the
ring once, whatever the number of subscribers, and each subscriber copies it out in
parallel. Lossless (the default): the publisher waits for the slowest subscriber, so
every subscriber gets every message. Each subscriber computes a checksum of what it
received and reports it over a ``shmplane.mailbox`` (many senders, one receiver); the
publisher compares them with its own.

Run:  python examples/broadcast/broadcast.py [--quick] [--subscribers N]
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import time
from typing import Any

import numpy as np

import shmplane


def checksum(obj: Any) -> str:
    """A digest of an ndarray's bytes or of a list of floats."""
    data = obj.tobytes() if isinstance(obj, np.ndarray) else np.asarray(obj, dtype=np.float64).tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def subscriber(index: int, sub: shmplane.Subscriber, report: shmplane.Sender) -> None:
    """A child: receive until the publisher closes, then report what arrived."""
    with sub, report:
        header = sub.recv(timeout=30)
        sums = []
        t0 = time.perf_counter()
        for _ in range(header["messages"]):
            sums.append(checksum(sub.recv(timeout=30)))
        elapsed = time.perf_counter() - t0
        try:
            sub.recv(timeout=30)  # nothing more: the publisher closed
        except shmplane.DisconnectedError:
            pass
        report.send((index, os.getpid(), sums, elapsed), timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smaller dataset (for tests)")
    ap.add_argument("--subscribers", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    dataset = [rng.random(250_000 if args.quick else 1_000_000), rng.random(100_000).tolist()]
    expected = [checksum(d) for d in dataset]

    ctx = multiprocessing.get_context("spawn")
    with shmplane.broadcast(capacity=1 << 20) as pub, shmplane.mailbox(max_senders=args.subscribers) as reports:
        children = []
        for i in range(args.subscribers):
            sub, report = pub.subscribe(), reports.sender()  # joined now: it gets everything from here on
            p = ctx.Process(target=subscriber, args=(i, sub, report), daemon=True)
            p.start()
            sub.close()  # the child's copy is the subscriber now
            report.close()
            children.append(p)
        try:
            print(f"publisher: {pub.subscribers} subscribers on /dev/shm/shmplane.{pub.name}")
            pub.send({"messages": len(dataset)}, timeout=30)
            for d in dataset:
                pub.send(d, timeout=30)  # written once; waits for the slowest subscriber
            print(f"publisher: sent a {dataset[0].nbytes / 1e6:.1f} MB array and a list of "
                  f"{len(dataset[1]):,} floats, each once")
            pub.close()  # subscribers see DisconnectedError after the last message
            for _ in children:
                index, pid, sums, elapsed = reports.recv(timeout=60)
                ok = "ok" if sums == expected else "MISMATCH"
                print(f"subscriber {index} (pid {pid}): checksums {' '.join(sums)} {ok}, received in {elapsed * 1e3:.1f} ms")
                if sums != expected:
                    raise SystemExit(f"subscriber {index} received something else")
        finally:
            for p in children:
                p.join(10)
                if p.is_alive():
                    p.kill()
    failed = [p.exitcode for p in children if p.exitcode != 0]
    if failed:
        raise SystemExit(f"subscribers exited with {failed}")
    print(f"all {args.subscribers} subscribers received the same dataset (expected {' '.join(expected)})")


if __name__ == "__main__":
    main()
