"""An asyncio master calling a worker without blocking its event loop, while other
tasks (here a ticker) keep running; the worker serves from its own event loop with
``shmplane.rpc.serve_async`` (its methods may be coroutines).

Run:  python examples/rpc/asyncio_master.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import time
from typing import Any

import shmplane


class Sensor:
    def __init__(self) -> None:
        self.reads = 0

    async def read(self, channel: int) -> float:
        await asyncio.sleep(0.001)  # an awaitable device read
        self.reads += 1
        return channel * 1.5

    def count(self) -> int:
        return self.reads


def worker(name: str, ready: Any) -> None:
    async def main() -> None:
        asyncio.get_running_loop().call_later(0.1, ready.send, "ready")
        await shmplane.rpc.serve_async(Sensor(), name)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


async def master(name: str, n: int) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    tick_task = asyncio.create_task(ticker())
    sensor = shmplane.rpc.connect(name, timeout=30)
    t = time.perf_counter()
    values = [await sensor.read.call_async(ch) for ch in range(n)]
    elapsed = time.perf_counter() - t
    assert values == [ch * 1.5 for ch in range(n)]
    print(f"{n} awaited calls in {elapsed * 1e3:.1f} ms; the ticker ran {ticks} times meanwhile")
    print("count() ->", await sensor.count.call_async())
    tick_task.cancel()
    sensor.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    name = f"example-sensor-{os.getpid()}"
    ctx = multiprocessing.get_context("spawn")
    r, w = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=worker, args=(name, w), daemon=True)
    proc.start()
    assert r.poll(30) and r.recv() == "ready"
    try:
        asyncio.run(master(name, 50 if args.quick else 500))
    finally:
        os.kill(proc.pid, 2)
        proc.join(10)
        if proc.is_alive():
            proc.kill()


if __name__ == "__main__":
    main()
