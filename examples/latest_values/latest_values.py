"""Latest values: a writer process publishes a parameter vector, a reader follows it.

The writer (a ``spawn`` child) publishes ``--updates`` versions of an 8-double
parameter vector into a ``shmplane.RawArray`` (``params[:] = vector``: one write, all
of it or none), then a ``shmplane.RawValue`` of a ``ctypes.Structure`` saying how far
it got. The reader (this process) sleeps in ``status.wait_for_update(since, timeout)``
until the next write, then takes ``params.snapshot()``: one consistent numpy copy,
never a mix of two updates (the check below counts mixed reads; with
``multiprocessing.sharedctypes.RawArray`` some reads would be). A latest-value slot
keeps only the newest value: the reader sees the updates it has time for, and always
the last one.

Run:  python examples/latest_values/latest_values.py [--quick]
"""

from __future__ import annotations

import argparse
import ctypes
import multiprocessing
import time

import numpy as np

import shmplane

WIDTH = 8


class Status(ctypes.Structure):
    """What the writer says about its progress (each field write is its own write)."""

    _fields_ = [("update", ctypes.c_int64), ("done", ctypes.c_bool)]


def vector(update: int) -> np.ndarray:
    """Update ``k`` of the parameter vector: every element says which update it is."""
    return update + np.arange(WIDTH) / 100


def writer(params: shmplane.RawArray, status: shmplane.RawValue, updates: int, period_s: float) -> None:
    """The child: publish ``updates`` versions, then say it is done."""
    with params, status:  # this process's handles; the slots live while any process holds one
        for k in range(1, updates + 1):
            params[:] = vector(k).tolist()  # one consistent write of all elements
            status.update = k  # written after the vector: the vector is at least this new
            time.sleep(period_s)
        status.done = True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer updates (for tests)")
    ap.add_argument("--updates", type=int, default=None, help="updates to publish (default 2000; 200 with --quick)")
    args = ap.parse_args()
    updates = args.updates or (200 if args.quick else 2000)
    ctx = multiprocessing.get_context("spawn")
    with shmplane.RawArray("d", WIDTH) as params, shmplane.RawValue(Status) as status:
        proc = ctx.Process(target=writer, args=(params, status, updates, 0.001), daemon=True)
        proc.start()
        try:
            wakes = torn = 0
            since = status.version
            deadline = time.monotonic() + 60
            while True:
                try:
                    since = status.wait_for_update(since, timeout=1.0)
                except shmplane.Timeout:
                    if not proc.is_alive() or time.monotonic() > deadline:
                        raise RuntimeError(f"the writer stopped early (exit code {proc.exitcode})") from None
                    continue
                wakes += 1
                st = status.snapshot()  # a ctypes copy of both fields, read at once
                vec = params.snapshot()  # a numpy copy of all elements, read at once
                if not np.array_equal(vec, vector(int(vec[0]))):
                    torn += 1
                assert vec[0] >= st.update, "the vector is written before the status"
                if st.done:
                    break
            print(f"writer published {updates} updates; the reader woke {wakes} times "
                  f"(a latest-value slot keeps only the newest: intermediate ones may be skipped)")
            print(f"final update {int(vec[0])}: params = {np.round(vec, 2).tolist()}")
            print(f"torn reads: {torn}")
            print(f"params[3] = {params[3]} (one element, read as one word); status.update = {status.update}")
        finally:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    if proc.exitcode != 0:
        raise SystemExit(f"writer exited with {proc.exitcode}")


if __name__ == "__main__":
    main()
