"""The main job: a master process streams real datasets to a worker process.

The master spawns a worker and sends it (a) a 1,000,000-element float64 ndarray
(8 MB) many times, (a2) a 3,000,000-element one (24 MB, 24 times shmplane's default
1 MiB ring, which every shmplane channel here uses) and (b) a Python list of 1,000,000
floats; the worker turns each into a usable object (an ndarray / a list) and
acknowledges it over a second channel. The same transfers then run over the peers in the same run:
pickle-5 with out-of-band buffers over ``multiprocessing.Pipe``, ``Pipe.send``,
``multiprocessing.Queue``, ``multiprocessing.shared_memory`` + copy, and the floor
(one ``np.copyto`` of the payload in one process). Then a one-way stream of
64-byte messages through shmplane and the stream peers, and (c2) the same stream's
throughput against the message size, 64 B to 1 MiB. Finally (d) latest values:
the master publishes a 16-double parameter vector over and over; a worker follows
it as it changes (blocking in ``wait_for_update``, or polling) and acks the value it
saw; the master times publish -> ack and the worker counts torn (mixed) reads, beside
``multiprocessing.sharedctypes.RawArray``. Then mailboxes: (e) a worker loop that
checks its mailbox every iteration (``mb.pending()``) and obeys pause / resume /
terminate sent by the master and by an unrelated process (examples/check_pause), with
the cost of that check beside ``multiprocessing``'s; (f) four producer processes into
one mailbox, beside ``multiprocessing.Queue``, faster-fifo and pyzmq PUSH/PULL
(benches/python/mailbox_bench.py). Finally (g) broadcast: one publisher to four
subscriber processes, 64-byte messages and an 8 MB dataset, beside pyzmq PUB/SUB,
a ``multiprocessing.Queue`` per subscriber, faster-fifo and iceoryx2
(benches/python/broadcast_bench.py). Last, (h) RPC: the master calls a worker process
(64-byte calls with the spin and default policies, and replies of an 8 MB array and a
list of a million floats), beside ``multiprocessing.Pipe``, a ``multiprocessing``
manager proxy, pyzmq REQ/REP, a socketpair, iceoryx2 request-response and a
sipyco-style asyncio RPC, with the Rust floors (benches/python/rpc_bench.py).

Run:  python examples/dataset_transfer/main.py [--reps N] [--quick] [--plot [DIR]]
Prints per-transfer p50/p99/p99.9 in microseconds and the ratios. With ``--plot`` and
matplotlib installed, also writes PNG latency CDFs of shmplane beside each peer for
(a), (a2), (b), (d) and (h), and (c2)'s throughput against message size, into DIR
(default benches/results/). With tqdm installed, a progress bar shows on a terminal
while the peers are measured.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import shmplane

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benches" / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "check_pause"))
import peers  # noqa: E402  (benches/python/peers.py: the peer transports)
import plots  # noqa: E402  (benches/python/plots.py: optional CDF pictures and progress bars)
import mailbox_bench  # noqa: E402  (benches/python/mailbox_bench.py: N producers -> 1 consumer)
import broadcast_bench  # noqa: E402  (benches/python/broadcast_bench.py: 1 publisher -> N subscribers)
import rpc_bench  # noqa: E402  (benches/python/rpc_bench.py: request/response)
import check_pause  # noqa: E402  (examples/check_pause/check_pause.py)

_CTX = multiprocessing.get_context("spawn")


def say(line: str) -> None:
    """Print a line of figures (above the progress bar, if one is showing)."""
    try:
        from tqdm import tqdm
    except ImportError:
        print(line, flush=True)
        return
    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()


def _shmplane_worker(rx: shmplane.Receiver, acks: shmplane.Sender, policy: str) -> None:
    """Receive payloads until None; acknowledge each with its fingerprint."""
    rx.set_policy(policy)
    with rx, acks:
        acks.send(b"ready")
        for obj in rx:
            if obj is None:
                break
            acks.send(peers._ACK.pack(*peers.fingerprint(obj)))


class ShmplanePeer(peers.Peer):
    """shmplane channel master -> worker, acks over a second shmplane channel, with the
    default wait policy (adaptive: spin 20 us, then sleep on a futex)."""

    name = "shmplane"
    policy = "adaptive"

    def open(self, sample: Any) -> None:
        # The default 1 MiB ring: messages of any size stream through it in chunks.
        self._tx, rx = shmplane.channel(policy=self.policy)
        ack_tx, self._acks = shmplane.channel(capacity=1 << 16, policy=self.policy)
        self._proc = _CTX.Process(target=_shmplane_worker, args=(rx, ack_tx, self.policy), daemon=True)
        self._proc.start()
        rx.close()  # the child owns these ends now, as with multiprocessing.Pipe
        ack_tx.close()
        if self._acks.recv(timeout=self.timeout_s) != b"ready":
            raise RuntimeError("shmplane worker did not start")

    def transfer(self, payload: Any) -> peers.Fingerprint:
        self._tx.send(payload, timeout=self.timeout_s)
        return peers._ACK.unpack(self._acks.recv(timeout=self.timeout_s))

    def close(self) -> None:
        try:
            self._tx.send(None, timeout=self.timeout_s)
        finally:
            peers._stop_worker(self._proc)
            self._tx.close()
            self._acks.close()


class ShmplaneSpinPeer(ShmplanePeer):
    """The same with the spin policy: both sides busy-poll while waiting, so neither
    sleeps and the scheduler never puts them on one core (see README)."""

    name = "shmplane_spin"
    policy = "spin"


def _shmplane_stream_worker(rx: shmplane.Receiver, ctrl: shmplane.Sender, n: int) -> None:
    with rx, ctrl:
        rx.recv()  # priming message
        ctrl.send(b"ready")
        recv = rx.recv
        for _ in range(n):
            recv()
        ctrl.send(peers._RESULT.pack(time.perf_counter_ns(), n))


def shmplane_stream_rate(n: int, message_size: int = 64, policy: str = "adaptive") -> float:
    """Messages/s of a one-way stream of ``n`` messages of ``message_size`` bytes."""
    tx, rx = shmplane.channel(capacity=1 << 20, policy=policy)
    ctrl_tx, ctrl_rx = shmplane.channel(capacity=1 << 12)
    proc = _CTX.Process(target=_shmplane_stream_worker, args=(rx, ctrl_tx, n), daemon=True)
    proc.start()
    rx.close()
    ctrl_tx.close()
    try:
        message = bytes(message_size)
        tx.send(message)
        if ctrl_rx.recv(timeout=peers.DEFAULT_TIMEOUT_S) != b"ready":
            raise RuntimeError("stream worker did not start")
        send = tx.send
        start = time.perf_counter_ns()
        for _ in range(n):
            send(message)
        end_ns, count = peers._RESULT.unpack(ctrl_rx.recv(timeout=peers.DEFAULT_TIMEOUT_S))
    finally:
        peers._stop_worker(proc)
        tx.close()
        ctrl_rx.close()
    if count != n:
        raise RuntimeError(f"stream worker counted {count} of {n}")
    return n / ((end_ns - start) / 1e9)


STREAM_SIZES = (64, 1 << 10, 16 << 10, 256 << 10, 1 << 20)
"""(c2): message sizes, bytes; 64 B is part (c)'s figure."""
QUICK_STREAM_SIZES = (64, 1 << 20)  # --quick: one large size (chunked through the ring)


def _stream_rate(name: str, n: int, message_size: int) -> float:
    """Messages/s of transport ``name`` of (c): shmplane (either policy) or a stream peer."""
    if name == "shmplane":
        return shmplane_stream_rate(n, message_size)
    if name == "shmplane (spin)":
        return shmplane_stream_rate(n, message_size, policy="spin")
    return peers.stream_rate(name, n, message_size=message_size)


def stream_sweep(rates_64: dict[str, float], sizes: tuple[int, ...], point_s: float,
                 plot_dir: Path | None) -> list[Path]:
    """(c2): the one-way stream of (c) with larger messages, each transport of (c) at
    each size; prints MB/s (and the ratio to mp_queue's) and plots it against the size.

    64 B is (c)'s figure. Every other point streams a count of messages meant to take
    about ``point_s`` seconds (plus a process spawn). The rate at the next size lies,
    roughly, between the previous size's rate in messages/s (a larger message is not
    quicker) and its rate in bytes/s (nor slower per byte): the count comes from the
    geometric mean of the two when sizes grow 16x or less, and nearer the bytes/s bound
    for larger steps, so that a point overshoots its time by 4x at most. A point that
    fails is reported and left out; the others stand."""
    names = list(rates_64)
    print(f"(c2) the same stream against message size: MB/s (x mp_queue); 64 B from (c), "
          f"larger messages ~{point_s:g} s of streaming per point", flush=True)
    mbps: dict[str, dict[int, float]] = {name: {64: rate * 64 / 1e6} for name, rate in rates_64.items()}
    last = {name: (64, rate) for name, rate in rates_64.items()}  # (size, msg/s) measured last
    failed: list[str] = []
    points = [(size, name) for size in sizes if size != 64 for name in names]
    for size, name in plots.progress(points, desc="(c2) stream sizes"):
        prev_size, prev_rate = last[name]
        # msg/s: prev_rate * (prev_size / size) ** e lies between the bounds for e in
        # [0, 1]; e = 0.5 (the geometric mean) for a 16x step, more for larger ones.
        e = max(0.5, 1 - math.log(4) / math.log(size / prev_size))
        guess = prev_rate * (prev_size / size) ** e
        n = max(10, min(2_000_000, int(guess * point_s)))
        try:
            rate = _stream_rate(name, n, size)
        except Exception as exc:  # noqa: BLE001  (one peer failing must not end the demo)
            failed.append(f"{name} at {plots.size_label(size)}: {type(exc).__name__}: {exc}")
            continue
        last[name] = (size, rate)
        mbps[name][size] = rate * size / 1e6

    def cell(name: str, size: int) -> str:
        v, ref = mbps[name].get(size), mbps.get("mp_queue", {}).get(size)
        if v is None:
            return "-"
        return f"{v:,.0f} ({v / ref:.1f}x)" if ref else f"{v:,.0f}"

    cells = {name: [cell(name, size) for size in sizes] for name in names}
    width = max([10, *(len(c) for row in cells.values() for c in row)])
    print(f"  {'transport':<18}" + "".join(f" {plots.size_label(size):>{width}}" for size in sizes))
    for name in names:
        print(f"  {name:<18}" + "".join(f" {c:>{width}}" for c in cells[name]))
    for note in failed:
        print(f"  (failed, left out: {note})")
    if plot_dir is None:
        return []
    series = {name: sorted(by_size.items()) for name, by_size in mbps.items()}
    title = (f"(c2) one-way stream, one send per message: throughput against message size\n"
             f"64 B from (c); larger messages ~{point_s:g} s per point")
    return [plots.throughput_vs_size(series, title, plot_dir / "c2-stream-throughput-vs-size.png")]


LATEST_WIDTH = 16


def _latest_worker(kind: str, arr: Any, ack: Any, done: Any) -> None:
    """Follow `arr` until it holds -1s; ack each value seen; count torn reads."""
    torn = seen = 0
    version = 0
    last = 0.0
    read = lambda: arr[:]  # a list of floats from both (shmplane: one consistent read)
    while True:
        if kind == "shmplane_wait":
            version = arr.wait_for_update(version, timeout=30)
        elif kind == "shmplane_poll":
            while arr.version == version:
                pass
            version = arr.version
        else:  # stdlib: poll one element for a change
            while arr[0] == last:
                pass
        while True:  # read the whole vector until it is not a mix of two updates
            snap = read()
            seen += 1
            if all(x == snap[0] for x in snap):
                break
            torn += 1
        last = snap[0]
        ack.value = float(last)
        if last < 0:
            break
    done.put((seen, torn))


def latest_values(reps: int, plot_dir: Path | None = None) -> list[Path]:
    """(d): publish -> seen latency of a 16-double vector, shmplane vs stdlib RawArray."""
    print(f"(d) latest values: {reps} updates of a {LATEST_WIDTH}-double vector, master publishes -> "
          "worker sees a consistent copy -> ack", flush=True)
    from multiprocessing import sharedctypes

    rows = []
    series: dict[str, list[int]] = {}
    for kind in plots.progress(("shmplane_wait", "shmplane_poll", "stdlib_poll"), desc="(d) latest values"):
        mod: Any = shmplane if kind.startswith("shmplane") else sharedctypes
        arr, ack = mod.RawArray("d", LATEST_WIDTH), mod.RawValue("d", 0.0)
        done = _CTX.Queue()
        p = _CTX.Process(target=_latest_worker, args=(kind, arr, ack, done), daemon=True)
        p.start()
        durations = []
        try:
            for i in range(1, reps + 2):
                value = float(i) if i <= reps else -1.0
                t0 = time.perf_counter_ns()
                arr[:] = [value] * LATEST_WIDTH
                deadline = t0 + 30 * 10**9
                while ack.value != value:
                    now = time.perf_counter_ns()
                    if now > deadline or (now - t0 > 10**9 and not p.is_alive()):
                        raise TimeoutError(f"{kind}: the worker did not ack update {i} (exit code {p.exitcode})")
                if 3 < i <= reps:
                    durations.append(time.perf_counter_ns() - t0)
            seen, torn = done.get(timeout=30)
        finally:
            p.join(10)
            if p.is_alive():
                p.kill()
        if kind.startswith("shmplane"):
            arr.close()
            ack.close()
        rows.append((kind, peers.summarize(durations), seen, torn))
        series[kind] = durations
    print(f"  {'transport':<16} {'p50 us':>8} {'p99 us':>8} {'p99.9 us':>9}  torn reads seen by the worker")
    for kind, s, seen, torn in rows:
        print(f"  {kind:<16} {s['p50']:8.1f} {s['p99']:8.1f} {s['p999']:9.1f}  {torn} of {seen}")
    if plot_dir is None:
        return []
    title = f"(d) latest values: publish -> ack of a {LATEST_WIDTH}-double vector, {reps} updates"
    return [plots.latency_cdfs(series, title, plot_dir / "d-latest-values-cdf.png")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=40, help="timed transfers per transport (default 40)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed transfers per transport")
    parser.add_argument("--elements", type=int, default=1_000_000, help="payload length (default 1,000,000)")
    parser.add_argument("--stream-messages", type=int, default=1_000_000, help="64-byte messages per stream")
    parser.add_argument("--quick", action="store_true", help="few repetitions (smoke test)")
    plots.add_plot_option(parser, "latency CDF and stream throughput PNGs")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.warmup, args.stream_messages = 5, 1, 20_000
    plot_dir = plots.plot_dir(args.plot)
    written: list[Path] = []

    transports: dict[str, type[peers.Peer]] = {"shmplane": ShmplanePeer, "shmplane_spin": ShmplaneSpinPeer, **peers.PEERS}
    array = peers.make_array_payload(args.elements)
    big = peers.make_array_payload(3 * args.elements)
    payloads = (
        (f"(a) float64 ndarray of {args.elements:,} elements ({array.nbytes / 1e6:.0f} MB)", array, None, "a-ndarray"),
        (
            f"(a2) float64 ndarray of {3 * args.elements:,} elements ({big.nbytes / 1e6:.0f} MB, "
            f"{big.nbytes / shmplane.DEFAULT_CAPACITY:.0f}x the 1 MiB ring)",
            big,
            ("shmplane", "shmplane_spin", "floor_copyto", "pickle5_pipe"),
            "a2-ndarray-large",
        ),
        (f"(b) Python list of {args.elements:,} floats", peers.make_list_payload(args.elements), None, "b-list"),
    )
    for label, payload, only, slug in payloads:
        print(f"{label}: {args.reps} timed transfers after {args.warmup} warm-up, master -> worker -> ack", flush=True)
        rows = []
        series: dict[str, list[int]] = {}
        chosen = [(name, cls) for name, cls in transports.items() if only is None or name in only]
        for name, cls in plots.progress(chosen, desc=label.split(" ", 1)[0]):
            t0 = time.perf_counter()
            durations = peers.measure(cls(), payload, reps=args.reps, warmup=args.warmup)
            rows.append((name, peers.summarize(durations)))
            series[name] = durations
            say(f"  measured {name:<20} in {time.perf_counter() - t0:5.1f} s")
        print(peers.format_table(rows))
        if plot_dir is not None:
            title = f"{label}\n{args.reps} transfers per transport, master -> worker -> ack"
            written.append(plots.latency_cdfs(series, title, plot_dir / f"{slug}-cdf.png"))
        p50 = {name: s["p50"] for name, s in rows}
        others = [("pickle5_pipe", "pickle-5 over a Pipe"), ("pipe_send", "Pipe.send"), ("queue_put", "Queue.put")]
        faster = "".join(f"{p50[k] / p50['shmplane']:.1f}x faster than {what}, " for k, what in others if k in p50)
        print(
            f"  shmplane p50 is {p50['shmplane'] / p50['floor_copyto']:.2f}x the copy floor, {faster}"
            f"with the spin policy {p50['shmplane_spin'] / p50['floor_copyto']:.2f}x the floor\n",
            flush=True,
        )

    print(f"(c) one-way stream of {args.stream_messages:,} 64-byte bytes messages", flush=True)
    rates = {"shmplane": shmplane_stream_rate(args.stream_messages)}
    rates["shmplane (spin)"] = shmplane_stream_rate(args.stream_messages, policy="spin")
    available = peers.available_stream_peers()
    for peer in peers.STREAM_PEERS:
        if peer in available:
            rates[peer] = peers.stream_rate(peer, min(args.stream_messages, 200_000))
    for name, rate in rates.items():
        print(f"  {name:<18} {rate:>12,.0f} msg/s   {rate / rates['mp_queue']:6.1f}x mp_queue")
    missing = sorted(set(peers.STREAM_PEERS) - set(available))
    if missing:
        print(f"  (not installed, skipped: {', '.join(missing)})")
    print()
    if args.quick:
        written += stream_sweep(rates, QUICK_STREAM_SIZES, 0.02, plot_dir)
    else:
        written += stream_sweep(rates, STREAM_SIZES, 0.25, plot_dir)
    print()
    written += latest_values(200 if args.quick else 5000, plot_dir)
    print()
    # (e) the check_pause loop over a mailbox, (f) many producers -> one consumer.
    check_pause.command_demo(0.05 if args.quick else 0.3)
    check_pause.check_costs(200_000 if args.quick else 2_000_000)
    print(f"\n(f) mailbox: 4 producer processes -> 1 consumer, 64-byte messages, beside the peers", flush=True)
    mailbox_args = ["--producers", "4", "--workloads", "mpsc", "--no-latency"]
    mailbox_args += ["--quick"] if args.quick else ["--rounds", "3", "--messages", "200000", "--budget-s", "2"]
    mailbox_bench.main(mailbox_args)
    print(f"\n(g) broadcast: 1 publisher -> 4 subscriber processes, beside the peers", flush=True)
    broadcast_args = ["--subscribers", "4", "--no-latency"]
    broadcast_args += ["--quick"] if args.quick else ["--rounds", "3", "--messages", "200000", "--budget-s", "2", "--array-reps", "15"]
    broadcast_bench.main(broadcast_args)
    print(f"\n(h) RPC: the master calls a worker process, beside the peers", flush=True)
    rpc_args = ["--quick"] if args.quick else ["--calls", "20000", "--big-reps", "7"]
    if plot_dir is not None:
        rpc_args += ["--plot", str(plot_dir)]
    written += rpc_bench.main(rpc_args)
    if written:
        print(f"\nplots: {', '.join(str(p) for p in written)}")


if __name__ == "__main__":
    main()
