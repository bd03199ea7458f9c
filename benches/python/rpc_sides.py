"""A Python RPC round trip split by side: which share is the client's, which the server's.

Three rows per round, interleaved, 64-byte ``bytes`` calls, every end on the spin
policy, p50/p99 in ns of a loop of ``--calls`` timed calls after 5000 warm-up:

``rust -> rust``      ``target/release/rpc call 64 N``: a Rust client and a forked Rust
                      server (``call`` / ``recv``), the floor of the two below.
``python -> rust``    a Python ``RpcClient.call`` against ``target/release/rpc serve``
                      (a Rust echo server: ``recv_into`` / ``reply``): over the row
                      above, the Python client's share (its timing loop included).
``python -> python``  the same client against a Python ``RpcServer.serve(lambda v: v)``
                      in a spawned process: over the row above, the Python server's.

Run ``cargo build --release -p shmplane-benches --bin rpc`` first (``ci/bench-rpc.sh``
does). ``python benches/python/rpc_sides.py [--calls N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import shmplane

RPC = Path(__file__).resolve().parents[2] / "target" / "release" / "rpc"
CTX = multiprocessing.get_context("spawn")


def _py_server(name: str, ready: multiprocessing.synchronize.Event) -> None:
    server = shmplane.RpcServer.create(name, 4)
    server.set_policy("spin")
    ready.set()
    server.serve(lambda v: v)


def _client(name: str, calls: int) -> tuple[int, int]:
    client = shmplane.RpcClient.connect(name, timeout=10)
    client.set_policy("spin")
    msg = b"x" * 64
    for _ in range(5000):
        client.call(msg)
    now = time.perf_counter_ns
    ts = []
    for _ in range(calls):
        t = now()
        client.call(msg)
        ts.append(now() - t)
    client.close()
    ts.sort()
    return ts[calls // 2], ts[calls * 99 // 100]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    if not RPC.exists():
        print(f"{RPC} is missing: cargo build --release -p shmplane-benches --bin rpc", file=sys.stderr)
        return 2
    print(f"64-byte spin calls, p50 / p99 ns, {args.calls} calls per row, {os.cpu_count()} CPUs")
    for r in range(args.rounds):
        out = subprocess.run([str(RPC), "call", "64", str(args.calls)], capture_output=True, text=True, timeout=120, check=True).stdout
        m = re.search(r"p50 (\d+) ns, p99 (\d+) ns", out)
        rust = f"{m.group(1)} / {m.group(2)}" if m else out.strip()
        name = f"rpcsides-{os.getpid()}-{r}"
        srv = subprocess.Popen([str(RPC), "serve", name, "spin", "600"], stdout=subprocess.PIPE, text=True)
        try:
            assert srv.stdout is not None and srv.stdout.readline().startswith("serving")
            py_rust = _client(name, args.calls)
        finally:
            srv.kill()
            srv.wait(timeout=10)
            shmplane.gc()
        name += "-py"
        ready = CTX.Event()
        p = CTX.Process(target=_py_server, args=(name, ready), daemon=True)
        p.start()
        try:
            if not ready.wait(60):
                raise TimeoutError("the Python server did not start")
            py_py = _client(name, args.calls)
        finally:
            p.kill()
            p.join(10)
            shmplane.gc()
        print(f"round {r}: rust -> rust {rust}   python -> rust {py_rust[0]} / {py_rust[1]}   python -> python {py_py[0]} / {py_py[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
