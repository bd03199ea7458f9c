"""List, inspect, watch and remove shmplane's shared-memory segments.

The ``shmplane`` command: see what segments exist, who holds them, and remove the ones
nobody will use again.

    shmplane ls [--json]            every segment: name, kind, size, creator, roles, age
    shmplane inspect NAME [--json]  one segment: header fields and every role's holder
    shmplane gc [--dry-run]         remove stale segments (all holders closed or dead)
    shmplane watch NAME [--interval S] [--count N]   byte rate and fill, until Ctrl-C
    shmplane bench [--quick] [--json]   shmplane beside the installed peers, ratios

Also ``python -m shmplane ...``. Read only except ``gc``, which removes a segment only
if no process holds any of its locks (comparing the file's identity before unlinking).
Exit codes: 0 success, 1 an error (printed), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from typing import Any

from . import _shmplane

_UNITS = (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


def _size(n: int) -> str:
    for unit, scale in _UNITS:
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _age(s: float) -> str:
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f}m"
    if s < 172800:
        return f"{s / 3600:.0f}h"
    return f"{s / 86400:.0f}d"


def _roles(seg: dict[str, Any]) -> str:
    if seg["error"]:
        return "-"
    if seg["kind"] == "slot":
        return "alive" if seg["roles"] and seg["roles"][0]["state"] == "alive" else "unused"
    counts = Counter(r["state"] for r in seg["roles"])
    if seg["kind"] in ("channel",):
        return " ".join(f"{r['name']}:{r['state']}" + (f"({r['pid']})" if r["pid"] else "") for r in seg["roles"])
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items()) if state != "vacant") or "none attached"


def cmd_ls(args: argparse.Namespace) -> int:
    segs = _shmplane._survey()
    if args.json:
        json.dump(segs, sys.stdout, indent=1)
        print()
        return 0
    if not segs:
        print("no shmplane segments in /dev/shm")
        return 0
    rows = [("NAME", "KIND", "SIZE", "CREATOR", "AGE", "ROLES", "")]
    for s in segs:
        rows.append(
            (
                s["name"],
                s["kind"] or "?",
                _size(s["size"]),
                str(s["creator_pid"] or "-"),
                _age(s["age_s"]),
                _roles(s),
                "stale" if s["stale"] else (f"unreadable: {s['error']}" if s["error"] else ""),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + ("  " + r[-1] if r[-1] else ""))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    if not os.path.exists(f"/dev/shm/shmplane.{args.name}"):
        print(f"shmplane: no segment named {args.name!r} (/dev/shm/shmplane.{args.name}); see shmplane ls", file=sys.stderr)
        return 1
    seg = _shmplane._survey(args.name)[0]
    if args.json:
        json.dump(seg, sys.stdout, indent=1)
        print()
        return 0 if not seg["error"] else 1
    print(f"name:      {seg['name']}  (/dev/shm/shmplane.{seg['name']})")
    print(f"kind:      {seg['kind'] or '?'}")
    print(f"size:      {_size(seg['size'])} ({seg['size']} bytes)")
    print(f"age:       {_age(seg['age_s'])}")
    print(f"creator:   pid {seg['creator_pid']}")
    p0, p1 = seg["params"]
    what = {
        "channel": f"ring capacity {_size(p0)}",
        "slot": f"value size {p0} bytes, type fingerprint {p1:#x}",
        "mailbox": f"lane capacity {_size(p0)}, {p1} lanes",
        "broadcast": f"ring capacity {_size(p0)}, {p1 & 0xFFFFFFFF} subscriber slots{', lossy' if p1 >> 32 else ''}",
    }.get(seg["kind"] or "", f"{p0}, {p1}")
    print(f"params:    {what}")
    print(f"stale:     {'yes (shmplane gc removes it)' if seg['stale'] else 'no'}")
    if seg["published_bytes"] is not None:
        print(f"written:   {_size(seg['published_bytes'])} since creation (records included)")
    if seg["pending_bytes"] is not None:
        cap = p0 * (p1 if seg["kind"] == "mailbox" else 1)
        fill = f" ({100 * seg['pending_bytes'] / cap:.0f}% of the ring{'s' if seg['kind'] == 'mailbox' else ''})" if cap else ""
        print(f"pending:   {_size(seg['pending_bytes'])} not yet received{fill}")
    if seg["error"]:
        print(f"error:     {seg['error']}")
        return 1
    shown = [r for r in seg["roles"] if r["state"] != "vacant" or seg["kind"] in ("channel", "slot")]
    print(f"roles:     {len(seg['roles'])} ({len(seg['roles']) - len(shown)} vacant not shown)")
    for r in shown:
        pid = f" pid {r['pid']}" if r["pid"] else ""
        print(f"  {r['index']:>4}  {r['name']:<11} {r['state']}{pid}")
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    import time

    if not os.path.exists(f"/dev/shm/shmplane.{args.name}"):
        print(f"shmplane: no segment named {args.name!r}; see shmplane ls", file=sys.stderr)
        return 1
    prev = _shmplane._survey(args.name)[0]
    if prev["published_bytes"] is None:
        print(f"shmplane: {args.name} is a {prev['kind'] or 'unreadable'} segment: nothing to watch", file=sys.stderr)
        return 1
    t_prev = time.monotonic()
    n = 0
    print(f"{'time':>8}  {'bytes/s':>12}  {'pending':>10}  roles")
    try:
        while args.count is None or n < args.count:
            time.sleep(args.interval)
            cur = _shmplane._survey(args.name)[0]
            now = time.monotonic()
            if cur["published_bytes"] is None:
                print("segment gone")
                return 0
            rate = (cur["published_bytes"] - prev["published_bytes"]) / max(now - t_prev, 1e-9)
            pending = "-" if cur["pending_bytes"] is None else _size(cur["pending_bytes"])
            print(f"{time.strftime('%H:%M:%S'):>8}  {_size(int(rate)) + '/s':>12}  {pending:>10}  {_roles(cur)}", flush=True)
            prev, t_prev = cur, now
            n += 1
    except KeyboardInterrupt:
        pass
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    if args.dry_run:
        stale = [s["name"] for s in _shmplane._survey() if s["stale"]]
        for name in stale:
            print(f"would remove {name}")
        print(f"{len(stale)} stale segment(s)")
        return 0
    removed = _shmplane.gc()
    for name in removed:
        print(f"removed {name}")
    print(f"{len(removed)} removed")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from . import _bench

    def progress(label: str) -> None:
        if not args.json:
            print(f"  running {label} ...", file=sys.stderr, flush=True)

    results = _bench.run(quick=args.quick, progress=progress)
    if args.json:
        json.dump(results, sys.stdout, indent=1)
        print()
    else:
        print(_bench.format_table(results))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shmplane", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ls", help="list every segment")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_ls)
    p = sub.add_parser("inspect", help="one segment's header and roles")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_inspect)
    p = sub.add_parser("watch", help="a segment's byte rate and fill, refreshed until Ctrl-C")
    p.add_argument("name")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between samples (default 1)")
    p.add_argument("--count", type=int, default=None, help="stop after this many samples")
    p.set_defaults(func=cmd_watch)
    p = sub.add_parser("gc", help="remove stale segments")
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    p.set_defaults(func=cmd_gc)
    p = sub.add_parser("bench", help="a quick run of shmplane beside the installed peers (Pipe, pyzmq, faster-fifo, shared_memory)")
    p.add_argument("--quick", action="store_true", help="fewer rounds (about a second)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_bench)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:
        return 0
    except Exception as e:  # noqa: BLE001  (a command prints what went wrong)
        print(f"shmplane: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
