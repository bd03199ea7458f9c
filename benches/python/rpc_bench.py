"""RPC between two processes: shmplane beside its peers, in one run.

Workloads (``--workloads``):

``rr``
    A 64-byte call and its 64-byte reply, back to back, timed one by one in the client
    (this process; the server is a ``spawn`` child): p50/p99/p99.9 in µs. Rows:
    shmplane ``RpcClient.call`` with the ``spin``, ``adaptive`` (default) and ``block``
    policies; the same request/reply built by hand from two shmplane channels (spin);
    ``multiprocessing.Pipe`` (``send_bytes``/``recv_bytes``); a ``multiprocessing``
    manager proxy method; pyzmq REQ/REP over ``ipc://``; a ``socketpair``; iceoryx2
    request-response; and an asyncio streams RPC in the style of ``sipyco.pc_rpc``
    (one JSON line per call and per reply over a Unix socket). The Rust floors of the
    same run come from ``target/release/rpc floors``: one cache line moving with
    ownership, one line per direction, two channels in Rust, and two processes waking
    each other on a futex.
``big``
    Replies of an 8 MB float64 ndarray and of a list of 1,000,000 floats (medians of
    ``--big-reps`` calls), beside one ``np.copyto`` of 8 MB in this process and a
    one-way transfer of the same list on a shmplane channel (the child sends it when
    asked, as the server does); the 8 MB reply also through a 1 MiB reply channel
    (``reply_capacity=1 << 20``) beside the default 256 KiB.

Targets (issue "RPC"), printed as ratios: spin p50 ≤ 1.2x the hand-made two-channel
round trip and p99 ≤ 5 µs; adaptive p50 ≤ 1.2x spin's; block p50 ≤ max(1.2x the Rust
futex round trip, that round trip + 3 µs); 8 MB reply ≤ 2x ``np.copyto``; list reply ≤
1.1x the one-way channel transfer; ≥ 100x faster than the sipyco-style RPC.

``--plot [DIR]`` writes the ``rr`` round trips as a latency CDF (``rpc-64B-round-trip-cdf.png``
in DIR, default ``benches/results/``; needs matplotlib, see ``plots.py``).

Watchdog: every wait of this process has a timeout; children are terminated, then
killed. Peers not installed are skipped with a note. Run ``ci/bench-rpc.sh`` (installs
the peers and builds the Rust floors), or this file with the venv's python.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import shmplane

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import plots  # noqa: E402  (benches/python/plots.py: optional CDF pictures and progress bars)

ROOT = HERE.parent.parent
CTX = multiprocessing.get_context("spawn")
TIMEOUT = 60.0
PAYLOAD = b"x" * 64
ARRAY = np.random.default_rng(0).random(1 << 20)  # 8 MB
LIST_N = 1_000_000


def _hog() -> None:
    while True:
        pass


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# ------------------------------------------------------------------ servers


def _rpc_server(name: str, policy: str, ready: Any) -> None:
    big_list = [float(i) for i in range(LIST_N)]
    server = shmplane.RpcServer.create(name, 4)
    server.set_policy(policy)
    ready.send("ready")

    def handle(v: Any) -> Any:
        if v == b"array":
            return ARRAY
        if v == b"list":
            return big_list
        return v

    try:
        server.serve(handle)
    finally:
        server.close()


def _two_channel_server(req: str, rep: str, ready: Any) -> None:
    rx = shmplane.Receiver.open(req)
    tx = shmplane.Sender.open(rep)
    rx.set_policy("spin")
    tx.set_policy("spin")
    big_list = [float(i) for i in range(LIST_N)]
    ready.send("ready")
    while True:
        try:
            m = rx.recv_bytes()
        except (shmplane.DisconnectedError, shmplane.PeerDeadError):
            return
        tx.send(big_list if m == b"list" else m)


def _pipe_server(conn: Any) -> None:
    while True:
        try:
            conn.send_bytes(conn.recv_bytes())
        except EOFError:
            return


class Echo:
    def echo(self, b: bytes) -> bytes:
        return b


def _zmq_server(addr: str, ready: Any) -> None:
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.REP)
    s.bind(addr)
    ready.send("ready")
    while True:
        s.send(s.recv())


def _socket_server(sock: socket.socket) -> None:
    while True:
        buf = b""
        while len(buf) < 64:
            chunk = sock.recv(64 - len(buf))
            if not chunk:
                return
            buf += chunk
        sock.sendall(buf)


def _sipyco_server(path: str, ready: Any) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            line = await reader.readline()
            if not line:
                return
            obj = json.loads(line)
            ret = getattr(Echo(), obj["name"])(*obj["args"])
            writer.write((json.dumps({"status": "ok", "ret": ret}) + "\n").encode())
            await writer.drain()

    async def main() -> None:
        server = await asyncio.start_unix_server(handle, path)
        ready.send("ready")
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# ------------------------------------------------------------------ helpers


def _start(target: Callable[..., None], *args: Any) -> tuple[Any, Any]:
    r, w = CTX.Pipe(duplex=False)
    p = CTX.Process(target=target, args=(*args, w), daemon=True)
    p.start()
    if not r.poll(TIMEOUT) or r.recv() != "ready":
        p.kill()
        raise RuntimeError(f"{target.__name__} did not start")
    return p, r


def _stop(p: Any) -> None:
    p.terminate()
    p.join(5)
    if p.is_alive():
        p.kill()
        p.join(5)


def _timed(n: int, call: Callable[[], Any]) -> list[int]:
    for _ in range(max(n // 10, 10)):
        call()
    out = []
    deadline = time.monotonic() + TIMEOUT * 4
    for i in range(n):
        t = time.perf_counter_ns()
        call()
        out.append(time.perf_counter_ns() - t)
        if i % 1024 == 0 and time.monotonic() > deadline:
            raise TimeoutError("round trips took too long")
    return out


def _pcts(ns: list[int]) -> list[float]:
    s = sorted(ns)
    at = lambda q: s[min(len(s) - 1, int(len(s) * q))] / 1e3  # noqa: E731
    return [at(0.5), at(0.99), at(0.999)]


def _uniq(tag: str) -> str:
    return f"bench-rpc-{tag}-{os.getpid()}"


# ------------------------------------------------------------------ rows


def rr_shmplane(policy: str, n: int) -> list[int]:
    name = _uniq(policy)
    p, _ = _start(_rpc_server, name, policy)
    try:
        with shmplane.RpcClient.connect(name, timeout=TIMEOUT) as c:
            c.set_policy(policy)
            return _timed(n, lambda: c.call(PAYLOAD, timeout=TIMEOUT))
    finally:
        _stop(p)
        shmplane.gc()


def _two_channels() -> tuple[Any, Any, Any]:
    req, rep = _uniq("req"), _uniq("rep")
    tx = shmplane.Sender.create(req, 1 << 16)
    rx = shmplane.Receiver.create(rep, 1 << 20)
    tx.set_policy("spin")
    rx.set_policy("spin")
    p, _ = _start(_two_channel_server, req, rep)
    return p, tx, rx


def rr_two_channels(n: int) -> list[int]:
    p, tx, rx = _two_channels()

    def call() -> None:
        tx.send(PAYLOAD)
        rx.recv_bytes(timeout=TIMEOUT)

    try:
        return _timed(n, call)
    finally:
        tx.close()
        rx.close()
        _stop(p)
        shmplane.gc()  # the stopped server's ends: it was killed, not closed


def rr_pipe(n: int) -> list[int]:
    a, b = CTX.Pipe()
    p = CTX.Process(target=_pipe_server, args=(b,), daemon=True)
    p.start()
    b.close()

    def call() -> None:
        a.send_bytes(PAYLOAD)
        if not a.poll(TIMEOUT):
            raise TimeoutError
        a.recv_bytes()

    try:
        return _timed(n, call)
    finally:
        a.close()
        _stop(p)


from multiprocessing.managers import BaseManager  # noqa: E402


class EchoManager(BaseManager):
    pass


EchoManager.register("Echo", Echo)


def rr_manager(n: int) -> list[int]:
    m = EchoManager(ctx=CTX)
    m.start()
    try:
        proxy = m.Echo()  # type: ignore[attr-defined]
        return _timed(n, lambda: proxy.echo(PAYLOAD))
    finally:
        m.shutdown()


def rr_zmq(n: int) -> list[int]:
    import zmq

    addr = f"ipc://{tempfile.gettempdir()}/{_uniq('zmq')}"
    p, _ = _start(_zmq_server, addr)
    ctx = zmq.Context()
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.RCVTIMEO, int(TIMEOUT * 1000))
    s.connect(addr)

    def call() -> None:
        s.send(PAYLOAD)
        s.recv()

    try:
        return _timed(n, call)
    finally:
        s.close(0)
        ctx.term()
        _stop(p)


def rr_socketpair(n: int) -> list[int]:
    a, b = socket.socketpair()
    a.settimeout(TIMEOUT)
    p = CTX.Process(target=_socket_server, args=(b,), daemon=True)
    p.start()
    b.close()

    def call() -> None:
        a.sendall(PAYLOAD)
        got = b""
        while len(got) < 64:
            got += a.recv(64 - len(got))

    try:
        return _timed(n, call)
    finally:
        a.close()
        _stop(p)


def rr_iceoryx2(n: int) -> list[int]:
    import iox_rr

    name = _uniq("iox")
    p, _ = _start(iox_rr.serve, name)
    try:
        return iox_rr.round_trips(name, n, 64, TIMEOUT)
    finally:
        _stop(p)


def rr_sipyco(n: int) -> list[int]:
    path = f"{tempfile.gettempdir()}/{_uniq('sipyco')}.sock"
    p, _ = _start(_sipyco_server, path)

    async def main() -> list[int]:
        reader, writer = await asyncio.open_unix_connection(path)
        text = PAYLOAD.decode()
        out = []
        for i in range(n + n // 10):
            t = time.perf_counter_ns()
            writer.write((json.dumps({"action": "call", "name": "echo", "args": [text], "kwargs": {}}) + "\n").encode())
            line = await asyncio.wait_for(reader.readline(), TIMEOUT)
            assert json.loads(line)["ret"] == text
            if i >= n // 10:
                out.append(time.perf_counter_ns() - t)
        writer.close()
        return out

    try:
        return asyncio.run(main())
    finally:
        _stop(p)
        if os.path.exists(path):
            os.unlink(path)


def rust_floors(n: int) -> dict[str, list[float]] | None:
    exe = ROOT / "target" / "release" / "rpc"
    if not exe.exists():
        return None
    out = subprocess.run([str(exe), "floors", str(n)], capture_output=True, text=True, timeout=300, check=True)
    return {k: [x / 1e3 for x in v] for k, v in json.loads(out.stdout).items()}


# ------------------------------------------------------------------ big replies


def big(reps: int) -> dict[str, float]:
    res: dict[str, list[float]] = {"copyto_8MB": [], "rpc_array_8MB": [], "rpc_list_1M": [], "rpc_array_8MB_1MiB": [], "channel_list_1M": []}
    dst = np.empty_like(ARRAY)
    for _ in range(reps):
        t = time.perf_counter()
        np.copyto(dst, ARRAY)
        res["copyto_8MB"].append(time.perf_counter() - t)
    name = _uniq("big")
    p, _ = _start(_rpc_server, name, "adaptive")
    try:
        with shmplane.RpcClient.connect(name, timeout=TIMEOUT) as c:
            for key, req in (("rpc_array_8MB", b"array"), ("rpc_list_1M", b"list")):
                c.call(req, timeout=TIMEOUT)
                for _ in range(reps):
                    t = time.perf_counter()
                    got = c.call(req, timeout=TIMEOUT)
                    res[key].append(time.perf_counter() - t)
                    del got
        # The same with a 1 MiB reply channel (128 KiB chunks instead of 32 KiB).
        with shmplane.RpcClient.connect(name, timeout=TIMEOUT, reply_capacity=1 << 20) as c:
            c.call(b"array", timeout=TIMEOUT)
            for _ in range(reps):
                t = time.perf_counter()
                got = c.call(b"array", timeout=TIMEOUT)
                res["rpc_array_8MB_1MiB"].append(time.perf_counter() - t)
                del got
    finally:
        _stop(p)
        shmplane.gc()
    q, tx, rx = _two_channels()
    try:
        tx.send(b"list")
        rx.recv(timeout=TIMEOUT)
        for _ in range(reps):
            t = time.perf_counter()
            tx.send(b"list")
            got = rx.recv(timeout=TIMEOUT)
            res["channel_list_1M"].append(time.perf_counter() - t)
            del got
    finally:
        tx.close()  # the server's recv raises DisconnectedError: it returns, closing its ends
        rx.close()
        q.join(10)
        _stop(q)
    return {k: statistics.median(v) * 1e3 for k, v in res.items()}


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> list[Path]:
    """Run the bench; return the plots written (``--plot``)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20000, help="timed round trips per row (default 20000)")
    ap.add_argument("--workloads", default="rr,big")
    ap.add_argument("--big-reps", type=int, default=7)
    ap.add_argument("--only", default="", help="comma-separated rr rows to run")
    ap.add_argument("--quick", action="store_true", help="2000 calls, 3 big reps")
    ap.add_argument("--json", default="", help="write the figures here")
    ap.add_argument("--hogs", type=int, default=0, help="busy-loop processes running throughout (a loaded machine)")
    plots.add_plot_option(ap, "the rr latency CDF (rpc-64B-round-trip-cdf.png)")
    args = ap.parse_args(argv)
    args.plot = plots.plot_dir(args.plot)
    if args.quick:
        args.calls, args.big_reps = 2000, 3
    n = args.calls
    only = [x for x in args.only.split(",") if x]
    rows: dict[str, Callable[[], list[int]]] = {
        "shmplane-rpc-spin": lambda: rr_shmplane("spin", n),
        "shmplane-rpc-adaptive": lambda: rr_shmplane("adaptive", n),
        "shmplane-rpc-block": lambda: rr_shmplane("block", max(n // 4, 500)),
        "shmplane-2channels-spin": lambda: rr_two_channels(n),
        "mp-pipe": lambda: rr_pipe(max(n // 4, 500)),
        "mp-manager": lambda: rr_manager(max(n // 10, 200)),
        "socketpair": lambda: rr_socketpair(max(n // 4, 500)),
    }
    notes = []
    if _have("zmq"):
        rows["zmq-req-rep"] = lambda: rr_zmq(max(n // 4, 500))
    else:
        notes.append("pyzmq not installed: zmq-req-rep skipped")
    if _have("iceoryx2"):
        rows["iceoryx2-req-resp"] = lambda: rr_iceoryx2(max(n // 4, 500))
    else:
        notes.append("iceoryx2 not installed: iceoryx2-req-resp skipped")
    rows["asyncio-sipyco-style"] = lambda: rr_sipyco(max(n // 10, 200))
    out: dict[str, Any] = {"calls": n, "cpus": os.cpu_count(), "hogs": args.hogs, "rr": {}, "notes": notes}
    print(f"rpc bench: {n} calls per row, {os.cpu_count()} CPUs, {args.hogs} CPU hogs, python {sys.version.split()[0]}")
    hogs = [CTX.Process(target=_hog, daemon=True) for _ in range(args.hogs)]
    for h in hogs:
        h.start()
    samples: dict[str, list[int]] = {}
    try:
        _run(args, n, only, rows, out, notes, samples)
    finally:
        for h in hogs:
            _stop(h)
    if args.plot is None or not samples:
        return []
    title = f"(h) RPC: 64-byte call and reply, each round trip timed (up to {n} calls per transport)"
    return [plots.latency_cdfs(samples, title, args.plot / "rpc-64B-round-trip-cdf.png")]


def _run(args: argparse.Namespace, n: int, only: list[str], rows: dict[str, Callable[[], list[int]]], out: dict[str, Any], notes: list[str], samples: dict[str, list[int]]) -> None:
    if "rr" in args.workloads:
        floors = rust_floors(20000)
        if floors is None:
            notes.append("target/release/rpc not built: no Rust floors (cargo build --release -p shmplane-benches)")
        out["floors"] = floors
        for name, fn in plots.progress([r for r in rows.items() if not only or r[0] in only], desc="rr"):
            try:
                samples[name] = fn()
                out["rr"][name] = _pcts(samples[name])
            except Exception as e:  # noqa: BLE001  (a peer failing must not end the run)
                notes.append(f"{name} failed: {type(e).__name__}: {e}")
        spin = out["rr"].get("shmplane-rpc-spin")
        print(f"\n{'64-byte round trip, µs':<28} {'p50':>8} {'p99':>8} {'p99.9':>8}   p50 vs rpc-spin")
        for name, (p50, p99, p999) in out["rr"].items():
            ratio = f"{p50 / spin[0]:.2f}x" if spin else ""
            print(f"{name:<28} {p50:>8.2f} {p99:>8.2f} {p999:>8.2f}   {ratio}")
        if floors:
            for k, (p50, p99, p999) in floors.items():
                print(f"{'rust ' + k:<28} {p50:>8.2f} {p99:>8.2f} {p999:>8.2f}")
        rr = out["rr"]
        checks = []
        if spin and "shmplane-2channels-spin" in rr:
            checks.append(f"spin p50 {spin[0] / rr['shmplane-2channels-spin'][0]:.2f}x the two-channel round trip (target ≤ 1.2x); p99 {spin[1]:.2f} µs (target ≤ 5)")
        if spin and "shmplane-rpc-adaptive" in rr:
            checks.append(f"adaptive p50 {rr['shmplane-rpc-adaptive'][0] / spin[0]:.2f}x spin's (target ≤ 1.2x)")
        if floors and "shmplane-rpc-block" in rr:
            f = floors["futex_pingpong"][0]
            limit = max(1.2 * f, f + 3.0)
            checks.append(f"block p50 {rr['shmplane-rpc-block'][0]:.1f} µs vs limit {limit:.1f} µs (Rust futex round trip {f:.1f} µs): {rr['shmplane-rpc-block'][0] / limit:.2f}x the limit")
        if spin and "asyncio-sipyco-style" in rr:
            checks.append(f"sipyco-style / rpc-adaptive p50: {rr['asyncio-sipyco-style'][0] / rr.get('shmplane-rpc-adaptive', spin)[0]:.0f}x faster (target ≥ 100x)")
        out["checks"] = checks
        print("\n" + "\n".join(checks))
    if "big" in args.workloads:
        b = big(args.big_reps)
        out["big"] = b
        print(f"\nlarge replies, ms (median of {args.big_reps}):")
        for k, v in b.items():
            print(f"  {k:<18} {v:8.2f}")
        print(f"  8 MB ndarray reply {b['rpc_array_8MB'] / b['copyto_8MB']:.2f}x one np.copyto (target ≤ 2x); "
              f"with reply_capacity=1 MiB {b['rpc_array_8MB_1MiB'] / b['copyto_8MB']:.2f}x")
        print(f"  1M-float list reply {b['rpc_list_1M'] / b['channel_list_1M']:.2f}x the one-way channel transfer (target ≤ 1.1x)")
    for note in notes:
        print("note:", note)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    if written := main():
        print(f"\nplots: {', '.join(str(p) for p in written)}")
