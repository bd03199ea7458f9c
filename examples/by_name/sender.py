"""A sending process of examples/by_name: joins mailbox NAME by name and sends a few messages.

Run by hand (after or before ``receiver.py``; it waits for the mailbox to appear):
    python examples/by_name/sender.py NAME [--who ID] [--count N]
"""

from __future__ import annotations

import argparse
import os
import time

import shmplane


def open_when_created(name: str, timeout: float) -> shmplane.Sender:
    """``Sender.open(name)``, retried until the receiver has created the mailbox
    (``Sender.open`` takes no timeout; ``RpcClient.connect`` does)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return shmplane.Sender.open(name)  # a lane of its own in mailbox `name`
        except shmplane.NotFoundError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", help="the mailbox's name, as given to receiver.py")
    ap.add_argument("--who", default=f"sender-{os.getpid()}")
    ap.add_argument("--count", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the mailbox, and for room")
    args = ap.parse_args()
    with open_when_created(args.name, args.timeout) as tx:
        print(f"{args.who}: joined {tx.path}", flush=True)
        for i in range(args.count):
            tx.send((args.who, f"reading {i}: {20 + i / 10:.1f} C"), timeout=args.timeout)
        tx.send((args.who, "bye"), timeout=args.timeout)
    print(f"{args.who}: sent {args.count} messages and bye", flush=True)


if __name__ == "__main__":
    main()
