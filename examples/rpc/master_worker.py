"""A master calling a worker's methods through shmplane RPC method proxies.

The worker process exposes an ``Instrument`` object with ``shmplane.rpc.serve``; the
master (this process) gets a proxy with ``shmplane.rpc.connect`` and calls its methods
as if they were local: small calls (a setter, a status query), a call whose error
comes back as ``RemoteError`` with the worker's traceback, and a retry after a timeout
that the worker runs only once. It prints the round trip of the small calls.

Run:  python examples/rpc/master_worker.py [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
from typing import Any

import shmplane


class Instrument:
    """What the worker exposes: public methods are callable, ``_private`` ones are not."""

    def __init__(self) -> None:
        self.voltage = 0.0
        self.calls = 0

    def set_voltage(self, volts: float) -> float:
        if not -10.0 <= volts <= 10.0:
            raise ValueError(f"{volts} V is outside the +-10 V range")
        self.voltage = volts
        return volts

    def status(self) -> dict[str, Any]:
        self.calls += 1
        return {"voltage": self.voltage, "calls": self.calls, "pid": os.getpid()}

    def slow_measurement(self, seconds: float) -> str:
        self.calls += 1
        time.sleep(seconds)
        return f"measured for {seconds} s (call #{self.calls})"

    def _calibration_table(self) -> list[float]:
        return [1.0, 2.0]


def worker(name: str) -> None:
    shmplane.rpc.serve(Instrument(), name)  # until Ctrl-C (SIGINT) or the process ends


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer calls (for tests)")
    args = ap.parse_args()
    name = f"example-instrument-{os.getpid()}"
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=worker, args=(name,), daemon=True)
    proc.start()
    try:
        with shmplane.rpc.connect(name, timeout=30) as inst:
            print("methods:", ", ".join(dir(inst)))
            print("set_voltage(1.5) ->", inst.set_voltage(1.5))
            print("status() ->", inst.status())
            try:
                inst.set_voltage(42.0)
            except shmplane.RemoteError as e:
                print(f"set_voltage(42.0) -> RemoteError {e.kind}: {e.message}")
            try:
                inst._calibration_table()
            except AttributeError as e:
                print("_calibration_table() ->", "AttributeError:", e)
            # A call that times out can be retried: the worker runs it once.
            client = inst._client
            try:
                client.call(("slow_measurement", (0.3,), {}), timeout=0.05)
            except shmplane.Timeout:
                print("slow_measurement(0.3) timed out after 50 ms; retrying")
            print("retry ->", client.call(("slow_measurement", (0.3,), {}), timeout=10, retry=True))
            n = 2000 if args.quick else 20000
            times = []
            for _ in range(n):
                t = time.perf_counter_ns()
                inst.status()
                times.append(time.perf_counter_ns() - t)
            times.sort()
            print(
                f"status() round trip over {n} calls: p50 {times[n // 2] / 1e3:.1f} us, "
                f"p99 {times[int(n * 0.99)] / 1e3:.1f} us, mean {statistics.fmean(times) / 1e3:.1f} us"
            )
            print("status() ->", inst.status())
    finally:
        os.kill(proc.pid, 2)  # SIGINT: serve() ends and closes the server
        proc.join(10)
        if proc.is_alive():
            proc.kill()


if __name__ == "__main__":
    main()
