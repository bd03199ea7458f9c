"""A worker whose calls return a list of a million floats and an 8 MB array, each in
one reply (one length-prefixed message written once, not one message per element).

The worker serves with ``RpcServer.serve``; the master calls ``RpcClient.call`` and
prints how long each reply took beside one ``np.copyto`` of 8 MB in this process.

Run:  python examples/rpc/large_replies.py [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from typing import Any

import numpy as np

import shmplane


def worker(name: str, ready: Any) -> None:
    trace = [float(i) * 0.5 for i in range(1_000_000)]
    frame = np.arange(1 << 20, dtype=np.float64)  # 8 MB

    def handle(request: Any) -> Any:
        if request == "trace":
            return trace
        if request == "frame":
            return frame
        if request == "stop":
            raise SystemExit(0)
        raise KeyError(request)

    with shmplane.RpcServer.create(name) as server:
        ready.send("ready")
        server.serve(handle)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (for tests)")
    args = ap.parse_args()
    reps = 3 if args.quick else 10
    name = f"example-large-{os.getpid()}"
    ctx = multiprocessing.get_context("spawn")
    r, w = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=worker, args=(name, w), daemon=True)
    proc.start()
    assert r.poll(30) and r.recv() == "ready"
    try:
        with shmplane.RpcClient.connect(name, timeout=30) as client:
            for what in ("trace", "frame"):
                best = float("inf")
                for _ in range(reps):
                    t = time.perf_counter()
                    got = client.call(what, timeout=60)
                    best = min(best, time.perf_counter() - t)
                if isinstance(got, list):
                    assert len(got) == 1_000_000 and got[-1] == 999_999 * 0.5
                    print(f"list of {len(got):,} floats: one reply in {best * 1e3:.1f} ms")
                else:
                    assert got.shape == (1 << 20,) and got[-1] == (1 << 20) - 1
                    print(f"{got.nbytes / 1e6:.1f} MB float64 array: one reply in {best * 1e3:.2f} ms")
            a = np.arange(1 << 20, dtype=np.float64)
            dst = np.empty_like(a)
            t = time.perf_counter()
            np.copyto(dst, a)
            print(f"(one np.copyto of 8 MB here: {(time.perf_counter() - t) * 1e3:.2f} ms)")
            try:
                client.call("stop", timeout=10)
            except (shmplane.RemoteError, shmplane.DisconnectedError, shmplane.PeerDeadError):
                print("worker stopped")
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()


if __name__ == "__main__":
    main()
