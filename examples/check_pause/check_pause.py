"""check_pause: a worker loop that asks "was I told to pause?" on every iteration.

Lab-control frameworks run experiment loops that call ``check_pause()`` thousands of
times per run; almost always the answer is no, so the check must cost about as much
as reading a flag, while anyone (the master, a GUI, a scheduler) can drop a message
in. Here the worker owns a ``shmplane.mailbox``; its loop calls ``mb.pending()`` (one
memory load) each iteration and acts on ``pause`` / ``resume`` / ``terminate``. The
commands come from two senders: the master (a sender made with ``mb.sender()``) and
a second, *unrelated* process started with ``subprocess`` that joins by name with
``shmplane.Sender.open(name)``.

It prints, for each command, who sent it and how long it took from the send to the
worker acting on it; then what the check costs per loop iteration beside the usual
ways of doing it (``multiprocessing.Queue.empty()``, ``multiprocessing.Event.is_set()``,
``Connection.poll()``, and the cheapest check Python has, ``queue.SimpleQueue.empty()``).

Run:  python examples/check_pause/check_pause.py [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import subprocess
import sys
import time
import timeit
from typing import Any

import shmplane

_CTX = multiprocessing.get_context("spawn")

#: What the unrelated process runs: join the mailbox by name, send one command.
_OUTSIDER = (
    "import shmplane, sys, time\n"
    "tx = shmplane.Sender.open(sys.argv[1])\n"
    "tx.send((sys.argv[2], 'outsider', time.perf_counter_ns()), timeout=10)\n"
    "tx.close()\n"
)


def worker(mb: shmplane.Mailbox, report: Any) -> None:
    """The experiment loop: a unit of work, then the check, forever until terminated."""
    acted: list[tuple[str, str, int]] = []
    iterations = 0
    paused_s = 0.0
    with mb:
        report.send("ready")
        while True:
            if mb.pending():  # check_pause(): one load while nothing is there
                cmd, who, sent_ns = mb.try_recv()
                acted.append((cmd, who, time.perf_counter_ns() - sent_ns))
                if cmd == "pause":
                    t0 = time.monotonic()
                    while cmd not in ("resume", "terminate"):
                        cmd, who, sent_ns = mb.recv(timeout=30)  # sleeps, no CPU
                        acted.append((cmd, who, time.perf_counter_ns() - sent_ns))
                    paused_s += time.monotonic() - t0
                if cmd == "terminate":
                    break
            sum(range(50))  # one unit of the experiment's work
            iterations += 1
    report.send((iterations, paused_s, acted))


def send_from_outsider(name: str, cmd: str) -> None:
    subprocess.run([sys.executable, "-c", _OUTSIDER, name, cmd], check=True, timeout=30)


def command_demo(pause_s: float) -> None:
    name = f"check-pause-{os.getpid()}"
    mb = shmplane.mailbox(name=name, max_senders=8)
    master = mb.sender()
    report, report_w = _CTX.Pipe(duplex=False)
    p = _CTX.Process(target=worker, args=(mb, report_w), daemon=True)
    p.start()
    mb.close()  # the worker's copy is the receiving end now
    try:
        if not report.poll(60) or report.recv() != "ready":
            raise RuntimeError("the worker did not start")
        script = [
            ("master", "pause"),
            ("outsider", "resume"),
            ("outsider", "pause"),
            ("master", "resume"),
            ("master", "terminate"),
        ]
        for who, cmd in script:
            time.sleep(pause_s)
            if who == "master":
                master.send((cmd, "master", time.perf_counter_ns()), timeout=10)
            else:
                send_from_outsider(name, cmd)
        if not report.poll(60):
            raise RuntimeError("the worker did not report")
        iterations, paused_s, acted = report.recv()
    finally:
        master.close()
        p.join(10)
        if p.is_alive():
            p.kill()
    print(f"(e) check_pause: a worker loop checks its mailbox every iteration ({iterations:,} iterations,"
          f" {paused_s:.2f} s paused); commands from the master and from an unrelated process:")
    for cmd, who, ns in acted:
        print(f"  {cmd:<10} from {who:<9} acted on after {ns / 1e3:8.1f} us")


def check_costs(number: int) -> None:
    """ns per check of an empty queue, with the attribute lookup, as a loop does it."""
    mb = shmplane.mailbox(max_senders=2)
    mpq: Any = _CTX.Queue()
    event = _CTX.Event()
    r, w = _CTX.Pipe(duplex=False)
    candidates = {
        "shmplane mb.pending()": ("mb.pending()", {"mb": mb}),
        "queue.SimpleQueue().empty()": ("q.empty()", {"q": queue.SimpleQueue()}),
        "multiprocessing Event.is_set()": ("e.is_set()", {"e": event}),
        "multiprocessing Connection.poll()": ("c.poll()", {"c": r}),
        "multiprocessing Queue.empty()": ("q.empty()", {"q": mpq}),
    }
    best: dict[str, float] = {k: float("inf") for k in candidates}
    for _ in range(5):  # interleaved repeats; the best of each
        for label, (stmt, env) in candidates.items():
            n = number if "multiprocessing" not in label else max(1, number // 50)
            best[label] = min(best[label], timeit.timeit(stmt, globals=env, number=n) / n * 1e9)
    base = best["queue.SimpleQueue().empty()"]
    print("  cost of the check on an empty queue (ns per call, best of 5):")
    for label, ns in best.items():
        print(f"    {label:<36} {ns:9.1f} ns  {ns / base:7.2f}x SimpleQueue.empty")
    mb.close()
    mpq.close()
    r.close()
    w.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short pauses, fewer timing loops (smoke test)")
    args = parser.parse_args(argv)
    command_demo(0.05 if args.quick else 0.3)
    check_costs(200_000 if args.quick else 2_000_000)
    print()


if __name__ == "__main__":
    main()
