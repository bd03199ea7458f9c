"""The pictures of the benches and the demo: ``benches/python/plots.py`` and ``--plot``.

matplotlib is optional: neither the library nor this suite needs it (``ci/demo.sh``
installs it). No test here skips: each checks the case this interpreter is in. With
matplotlib, every drawing function, and every bench's code that turns its figures into
pictures, writes a non-empty PNG from small synthetic figures, and two benches run with
``--plot`` write theirs; without it, every drawing function raises ImportError and a
bench run with ``--plot`` says so in one line and writes nothing, its figures printed
all the same. (The demo's ``--plot`` is ``test_examples.py``'s.) Nothing here measures
time: the benches run in their smallest modes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from test_examples import ROOT, _env, _imports

BENCHES = ROOT / "benches" / "python"
sys.path.insert(0, str(BENCHES))
import plots  # noqa: E402

HAVE_MATPLOTLIB = _imports("matplotlib")
PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == PNG and path.stat().st_size > 1000


# ------------------------------------------------------------- synthetic figures

def _cdfs(d: Path) -> list[Path]:
    ns = {"shmplane": [1000.0 + 10 * i for i in range(50)], "pipe": [5000.0 + 90 * i for i in range(50)]}
    return [plots.latency_cdfs(ns, "latency", d / "cdf.png")]


def _throughput(d: Path) -> list[Path]:
    sizes = [64, 1 << 10, 16 << 10, 1 << 20]
    series = {
        "shmplane": [(s, 300.0 * (s / 64) ** 0.6) for s in sizes],
        "mp_queue": [(s, 12.0 * (s / 64) ** 0.7) for s in sizes],
        "faster_fifo": [(64, 9.0), (1 << 20, -1.0)],  # a failed point is left out
    }
    return [plots.throughput_vs_size(series, "stream", d / "throughput.png")]


def _latency_size(d: Path) -> list[Path]:
    series = {"np.copyto (floor)": [(10**6, 36.0), (8 * 10**6, 627.0)], "shmplane view": [(10**6, 3.1), (8 * 10**6, 5.0)]}
    return [plots.latency_vs_size(series, "view", d / "latency-size.png")]


def _cpu(d: Path) -> list[Path]:
    c = plots.CpuLatency
    idle = {"shmplane-default": c(1.1, 13.0, 47.4), "shmplane-spin": c(100.0, 3.1, 16.6), "pipe": c(1.3, 21.1, 67.6),
            "socketpair": c(1.3, 21.0, 60.0)}  # on top of pipe: the labels must still be placed
    return [plots.cpu_vs_latency({"w5": idle, "w5hogs": {"pipe": c(0.9, 7.9, 27.8)}}, "wake-up", d / "cpu.png")]


def _bars(d: Path) -> list[Path]:
    b = plots.Bar
    groups = {"1 producer": {"shmplane": b(1.2e6, 1.1e6, 1.3e6), "zmq": b(6e5, 5e5, 7e5)},
              "4 producers": {"shmplane": b(2.2e6, 2.1e6, 2.3e6)}}
    return [plots.bars(groups, "mailbox", d / "bars.png", "msg/s", log=True, reference=("floor", 3e6)),
            plots.bars(groups, "mailbox", d / "bars-linear.png", "msg/s")]


def _wakeup(d: Path) -> list[Path]:
    import wakeup

    def row(name: str, cpu: float, p50: float) -> dict[str, object]:
        return {"name": name, "cpu_pct": cpu, "stats": {"p50": p50, "p99": 3 * p50}}

    out = {"w5": [row("shmplane-default", 1.0, 13.0), row("pipe", 1.3, 21.0), {"name": "zmq", "error": "x"}],
           "w5hogs": [row("shmplane-default", 0.9, 5.4)]}
    args = argparse.Namespace(hogs=2, period_ms=1.0, seconds=1.0, rounds=2)
    return wakeup.plot_w5(out, args, d)


def _mailbox(d: Path) -> list[Path]:
    import mailbox_bench

    def row(name: str, rate: float) -> dict[str, object]:
        return {"name": name, "msg_per_s": rate, "msg_per_s_min": 0.9 * rate, "msg_per_s_max": 1.1 * rate}

    empty = [{"name": n, "median_ns": ns, "round_median_ns": [ns, 1.2 * ns]}
             for n, ns in (("SimpleQueue.empty", 15.0), ("shmplane pending", 16.0), ("mp.Queue.empty", 900.0))]
    out = {"args": {"rounds": 2}, "empty": empty,
           "mpsc": {"1": [row("shmplane", 1e6), row("mp-queue", 1e5)], "4": [row("shmplane", 2e6), {"name": "zmq", "error": "x"}]}}
    return mailbox_bench.plot_results(out, d)


def _broadcast(d: Path) -> list[Path]:
    import broadcast_bench

    fanout = [{"transport": k, "subscribers": n, "rounds": [{"per_sub_msgs": r}, {"per_sub_msgs": 1.2 * r}]}
              for k, n, r in (("shmplane", 1, 1e6), ("zmq", 1, 4e5), ("shmplane", 4, 5e5))]
    array = [{"transport": k, "subscribers": 4, "copyto_ms": 0.6, "rounds": [{"all_received_ms": {"p50": ms, "p99": 2 * ms}}]}
             for k, ms in (("shmplane", 3.6), ("mp-queue", 63.0))]
    args = argparse.Namespace(rounds=2, array_mb=8.0)
    return broadcast_bench.plot_results({"fanout": fanout, "array": array}, args, d)


def _view(d: Path) -> list[Path]:
    import view_bench

    pooled = {mb: {"np.copyto (floor)": [mb * 80e-6] * 5, "shmplane view: recv(copy=False) alone": [4e-6, 5e-6, 6e-6]}
              for mb in (1, 8)}
    return view_bench.plot_rows(pooled, argparse.Namespace(repeat=1, hogs=0), d)


def _lists(d: Path) -> list[Path]:
    import lists_bench

    rows: dict[str, list[float] | None] = {"shmplane channel": [27.0, 28.0], "pickle-5 over Pipe": [64.0, 70.0],
                                           "msgpack over Pipe": None}
    return [lists_bench.plot_kind(rows, "floats", argparse.Namespace(n=1_000_000, rounds=2), d)]


DRAWINGS: dict[str, tuple[Callable[[Path], list[Path]], list[str]]] = {
    "latency_cdfs": (_cdfs, ["cdf.png"]),
    "throughput_vs_size": (_throughput, ["throughput.png"]),
    "latency_vs_size": (_latency_size, ["latency-size.png"]),
    "cpu_vs_latency": (_cpu, ["cpu.png"]),
    "bars": (_bars, ["bars.png", "bars-linear.png"]),
    "wakeup": (_wakeup, ["wakeup-cpu-vs-latency.png"]),
    "mailbox_bench": (_mailbox, ["mailbox-mpsc-msgs.png", "mailbox-empty-check.png"]),
    "broadcast_bench": (_broadcast, ["broadcast-fanout-msgs.png", "broadcast-array.png"]),
    "view_bench": (_view, ["view-p50-vs-size.png", "view-1MB-cdf.png", "view-8MB-cdf.png"]),
    "lists_bench": (_lists, ["lists-floats-cdf.png"]),
}


@pytest.mark.parametrize("what", list(DRAWINGS))
def test_drawing_writes_a_png_or_needs_matplotlib(what: str, tmp_path: Path) -> None:
    draw, names = DRAWINGS[what]
    if not HAVE_MATPLOTLIB:
        with pytest.raises(ImportError):
            draw(tmp_path)
        assert not list(tmp_path.iterdir())
        return
    written = draw(tmp_path)
    assert sorted(p.name for p in written) == sorted(names)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    for path in written:
        assert _is_png(path), path


# ------------------------------------------------------------- the option itself

def test_plot_option_and_its_default_directory(capsys: pytest.CaptureFixture[str]) -> None:
    ap = argparse.ArgumentParser()
    plots.add_plot_option(ap, "pictures")
    assert ap.parse_args([]).plot is None
    assert ap.parse_args(["--plot"]).plot == plots.DEFAULT_DIR == ROOT / "benches" / "results"
    assert ap.parse_args(["--plot", "elsewhere"]).plot == Path("elsewhere")
    assert plots.plot_dir(None) is None
    got = plots.plot_dir(Path("elsewhere"))
    err = capsys.readouterr().err
    if HAVE_MATPLOTLIB:
        assert got == Path("elsewhere") and err == ""
    else:
        assert got is None and err == plots.NO_MATPLOTLIB + "\n"


def test_size_labels() -> None:
    assert [plots.size_label(n) for n in (64, 1 << 10, 16 << 10, 1 << 20, 8 * 10**6, 1500)] == [
        "64 B", "1 KiB", "16 KiB", "1 MiB", "8 MB", "1500 B"]


# ------------------------------------------------------------- benches run with --plot

BENCH_RUNS = {
    # Lists of 2,000 numbers, one round: the smallest run there is.
    "lists_bench": (["lists_bench.py", "--n", "2000", "--rounds", "1"], ["lists-floats-cdf.png", "lists-ints-cdf.png"],
                    "floats:"),
    # One round of 0.3 s of w5 for two transports.
    "wakeup": (["wakeup.py", "--workloads", "w5", "--only", "shmplane-default,pipe", "--rounds", "1", "--seconds", "0.3"],
               ["wakeup-cpu-vs-latency.png"], "shmplane-default"),
}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("bench", list(BENCH_RUNS))
def test_bench_plots_when_matplotlib_is_there(bench: str, tmp_path: Path) -> None:
    argv, names, expect = BENCH_RUNS[bench]
    out_dir = tmp_path / "plots"
    done = subprocess.run([sys.executable, str(BENCHES / argv[0]), *argv[1:], "--plot", str(out_dir)], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, f"{bench} exited with {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert expect in done.stdout, done.stdout  # the figures, printed either way
    if not HAVE_MATPLOTLIB:
        assert plots.NO_MATPLOTLIB in done.stderr
        assert "plots:" not in done.stdout
        assert not out_dir.exists()
        return
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(names)
    assert all(_is_png(out_dir / n) for n in names)
    assert f"plots: {out_dir / names[0]}" in done.stdout
