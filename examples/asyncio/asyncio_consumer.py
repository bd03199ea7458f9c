"""asyncio: one event loop awaits a mailbox and a latest-value slot while other coroutines run.

Two producer processes (``spawn`` children) send readings into a ``shmplane.mailbox``
and publish how far they got in a ``shmplane.RawArray`` (one element each). This
process runs one event loop with three coroutines:

- the consumer awaits ``mb.recv_async(timeout=...)`` until every producer has closed
  its sender (``DisconnectedError``);
- a watcher awaits ``progress.wait_for_update_async(since, timeout=...)`` and prints
  the producers' progress as it changes;
- a ticker wakes every 5 ms, to show the loop is never blocked.

Neither await uses a helper thread: each waits on a descriptor (``fileno()``) with the
loop's ``add_reader``. ``async for reading in mb`` is the same loop without a timeout.

Run:  python examples/asyncio/asyncio_consumer.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import time

import shmplane

PRODUCERS = 2


def producer(index: int, tx: shmplane.Sender, progress: shmplane.RawArray, count: int) -> None:
    """A child: send ``count`` readings, then close (the consumer sees it)."""
    with tx, progress:
        for i in range(count):
            tx.send((index, i, 20.0 + index + i / 100), timeout=10)
            progress[index] = i + 1  # this producer's element only
            time.sleep(0.002)


async def consume(mb: shmplane.Mailbox) -> list[tuple[int, int, float]]:
    readings = []
    while True:
        try:
            readings.append(await mb.recv_async(timeout=10))
        except shmplane.DisconnectedError:  # every producer closed, all received
            return readings


async def watch(progress: shmplane.RawArray, total: int) -> None:
    since = progress.version
    mark = 0
    while True:
        try:
            since = await progress.wait_for_update_async(since, timeout=1.0)
        except shmplane.Timeout:
            continue
        snap = progress.snapshot()  # every element, read at once
        if snap.sum() >= mark:  # about every fifth of the way: the output stays short
            print(f"  watcher: progress {snap.tolist()}")
            mark = snap.sum() + total // 5


async def tick(counter: list[int]) -> None:
    while True:
        await asyncio.sleep(0.005)
        counter[0] += 1


async def run(mb: shmplane.Mailbox, progress: shmplane.RawArray, count: int) -> None:
    ticks = [0]
    others = [asyncio.create_task(watch(progress, count * PRODUCERS)), asyncio.create_task(tick(ticks))]
    t0 = time.perf_counter()
    readings = await consume(mb)
    elapsed = time.perf_counter() - t0
    for task in others:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    by_producer = {i: [r for r in readings if r[0] == i] for i in range(PRODUCERS)}
    in_order = all([r[1] for r in rs] == list(range(len(rs))) for rs in by_producer.values())
    print(f"consumer: received {len(readings)} readings from {PRODUCERS} producers in {elapsed:.2f} s; "
          f"each producer's in the order sent: {in_order}")
    print(f"ticker: ran {ticks[0]} times meanwhile (the loop never blocked)")
    print(f"final progress {progress.snapshot().tolist()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer readings (for tests)")
    args = ap.parse_args()
    count = 50 if args.quick else 500
    ctx = multiprocessing.get_context("spawn")
    with shmplane.mailbox(max_senders=PRODUCERS) as mb, shmplane.RawArray("q", PRODUCERS) as progress:
        children = []
        for i in range(PRODUCERS):
            tx = mb.sender()
            p = ctx.Process(target=producer, args=(i, tx, progress, count), daemon=True)
            p.start()
            tx.close()  # the child's copy is the sender now
            children.append(p)
        try:
            asyncio.run(run(mb, progress, count))
        finally:
            for p in children:
                p.join(10)
                if p.is_alive():
                    p.kill()
    failed = [p.exitcode for p in children if p.exitcode != 0]
    if failed:  # a producer that died counts as closed: the consumer ends early
        raise SystemExit(f"producers exited with {failed}")


if __name__ == "__main__":
    main()
