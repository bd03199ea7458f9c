"""The receiving process of examples/by_name: creates mailbox NAME and prints what arrives.

Run by hand in one terminal, then ``sender.py`` in others (or ``run.py`` for all):
    python examples/by_name/receiver.py NAME [--senders N]
"""

from __future__ import annotations

import argparse
import time

import shmplane


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", help="the mailbox's name: /dev/shm/shmplane.NAME")
    ap.add_argument("--senders", type=int, default=2, help="stop after this many senders said bye")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each message")
    args = ap.parse_args()
    # Created here; removed when this end and every sender have closed (or by
    # `shmplane gc` if they were all killed). A live mailbox of the same name raises
    # AlreadyExistsError; a stale one (every holder dead) is reused.
    with shmplane.mailbox(name=args.name) as mb:
        print(f"receiver: created {mb.path}, waiting for {args.senders} senders", flush=True)
        byes = messages = 0
        deadline = time.monotonic() + args.timeout
        while byes < args.senders:
            try:
                who, what = mb.recv(timeout=max(0.0, deadline - time.monotonic()))  # Timeout if nothing comes
            except shmplane.DisconnectedError:
                # Every sender that joined so far has closed, but others may still
                # join by name. recv raises this at once rather than waiting for a
                # new sender, so wait here (briefly) and try again.
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)
                continue
            deadline = time.monotonic() + args.timeout
            if what == "bye":
                byes += 1
            else:
                messages += 1
                print(f"receiver: {what!r} from {who}", flush=True)
        print(f"receiver: {messages} messages; {byes} senders said bye", flush=True)


if __name__ == "__main__":
    main()
