"""Optional extras of the demo and the benches: PNG pictures (matplotlib) and progress
bars (tqdm). Both are used when installed (``ci/demo.sh`` and the ``ci/bench-*.sh``
set-ups install them) and skipped when not: nothing else needs them, and the printed
figures are the same either way.

In every picture shmplane's series (names starting with ``shmplane``) are solid and
thick, the peers' thin and dashed (in bars: paler):

- :func:`latency_cdfs`: the whole latency distribution of each transport (log x);
- :func:`throughput_vs_size` and :func:`latency_vs_size`: one line per transport against
  the message size (log-log);
- :func:`cpu_vs_latency`: the idle-wait trade-off, a point per transport at (consumer
  CPU %, wake latency p50) with a whisker up to its p99;
- :func:`bars`: grouped bars (a group per producer or subscriber count, a bar per
  transport) with whiskers, for figures that are rates or single costs.

Every function writes one PNG with a plain ``matplotlib.figure.Figure`` (no pyplot: no
backend, no global state) and returns its path; each raises ImportError if matplotlib
is missing, so callers check :func:`plot_dir` (or :func:`have_matplotlib`) first. The
benches take ``--plot [DIR]`` (:func:`add_plot_option`), default ``benches/results/``.
"""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar

# numpy and matplotlib are imported where they are used: the benches import this module
# in every spawned child, which must not pay for them.
if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

T = TypeVar("T")

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "results"
"""Where ``--plot`` without a directory writes: ``benches/results/`` (git ignores PNGs
there)."""

NO_MATPLOTLIB = "note: --plot needs matplotlib (pip install matplotlib): no plots written"
"""The one line a run with ``--plot`` prints on stderr when matplotlib is missing."""


def have_matplotlib() -> bool:
    """True if matplotlib imports (installed and working)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def add_plot_option(parser: argparse.ArgumentParser, what: str) -> None:
    """Add ``--plot [DIR]`` to ``parser``: write ``what`` (PNG files) into DIR, by
    default :data:`DEFAULT_DIR`."""
    parser.add_argument(
        "--plot", nargs="?", type=Path, const=DEFAULT_DIR, default=None, metavar="DIR",
        help=f"write {what} into DIR (default benches/results/); needs matplotlib",
    )


def plot_dir(requested: Path | None) -> Path | None:
    """The directory to write pictures into: ``requested`` (the value of ``--plot``), or
    None when none was asked for, or when matplotlib is missing (then with
    :data:`NO_MATPLOTLIB` on stderr)."""
    if requested is not None and not have_matplotlib():
        print(NO_MATPLOTLIB, file=sys.stderr)
        return None
    return requested


def progress(items: Iterable[T], desc: str, total: int | None = None) -> Iterable[T]:
    """``items`` with a tqdm bar on stderr while they are consumed, if tqdm is installed
    and stderr is a terminal; ``items`` unchanged otherwise."""
    try:
        # No stubs unless types-tqdm is installed.
        from tqdm import tqdm  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        return items
    # disable=None: no bar unless stderr is a terminal (logs and tests stay clean);
    # leave=False: the bar disappears when done, leaving only the printed figures.
    bar: Iterable[T] = tqdm(items, desc=desc, total=total, leave=False, disable=None)
    return bar


# --------------------------------------------------------------------------- common


def is_ours(name: str) -> bool:
    """Whether series ``name`` is shmplane's (drawn highlighted)."""
    return name.startswith("shmplane")


def _line_style(name: str) -> dict[str, Any]:
    if is_ours(name):
        return {"linewidth": 2.2, "linestyle": "-"}
    return {"linewidth": 1.2, "linestyle": "--"}


_MARKERS = "osD^vP*Xph<>"
# Enough distinct colours for the view bench's eleven rows (the default cycle has ten).
_COLORS = [f"C{i}" for i in range(10)] + ["#3b3b3b", "#8c564b99", "#17becf99"]


def _figure(width: float = 7.0, height: float = 4.0) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure  # no pyplot: no backend or global state

    fig = Figure(figsize=(width, height), dpi=90)
    return fig, fig.add_subplot()


def _wrap(title: str, width_in: float) -> str:
    """``title`` with each of its lines folded to fit a ``width_in``-inch-wide figure at
    10 points."""
    chars = max(40, int(width_in * 12))
    return "\n".join(textwrap.fill(line, chars) for line in title.split("\n"))


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _plain_log_ticks(axis: Any, fmt: Any = None) -> None:
    """Plain numbers (``20``, ``0.5``; or ``fmt``'s) on a log axis; the minor ticks
    labelled too when it spans less than a decade, those at 2 and 5 times a power of
    ten when it spans less than two."""
    from matplotlib import ticker

    plain = fmt if fmt is not None else ticker.FuncFormatter(lambda v, _: f"{v:g}")
    axis.set_major_formatter(plain)
    lo, hi = axis.get_view_interval()
    if lo > 0 and hi / lo < 10:
        axis.set_minor_formatter(plain)
    elif lo > 0 and hi / lo < 100:
        def some(v: float, pos: Any = None) -> str:
            mantissa = round(v / 10 ** math.floor(math.log10(v)), 6) if v > 0 else 0
            return str(plain(v, pos)) if mantissa in (2, 5) else ""

        axis.set_minor_formatter(ticker.FuncFormatter(some))
    else:
        axis.set_minor_formatter(ticker.NullFormatter())


def size_label(nbytes: float) -> str:
    """``64 B``, ``16 KiB``, ``1 MiB`` for binary sizes, ``8 MB`` for decimal ones."""
    n = int(nbytes)
    # MB before KiB: 64,000,000 bytes is also 62,500 KiB.
    for unit, scale in (("MiB", 1 << 20), ("MB", 10**6), ("KiB", 1 << 10), ("kB", 10**3)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{nbytes:g} B"


# --------------------------------------------------------------------------- pictures


def latency_cdfs(series: Mapping[str, Sequence[float]], title: str, path: Path) -> Path:
    """Write a PNG of the latency CDF of each series (nanoseconds, drawn in µs on a log
    x axis): shmplane's series as solid thick lines, the peers' as thin dashed ones.
    The printed tables give the percentiles; the picture gives the whole distribution.

    Raises ImportError if matplotlib is not installed (see ``have_matplotlib``)."""
    import numpy as np

    fig, ax = _figure()
    for i, (name, ns) in enumerate(series.items()):
        us = np.sort(np.asarray(ns, dtype=np.float64)) / 1e3
        if not len(us):
            continue
        # Steps from 0 at the fastest transfer up to 1 at the slowest.
        x = np.concatenate(([us[0]], us))
        frac = np.arange(len(us) + 1) / len(us)
        ax.step(x, frac, where="post", label=name, color=_COLORS[i % len(_COLORS)], **_line_style(name))
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis)
    ax.set_xlabel("latency per transfer, µs (log scale)")
    ax.set_ylabel("fraction of transfers ≤ x")
    ax.set_ylim(0, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(_wrap(title, fig.get_figwidth()), fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def _vs_size(series: Mapping[str, Sequence[tuple[int, float]]], title: str, path: Path, ylabel: str,
             legend_loc: Literal["best", "upper left"]) -> Path:
    fig, ax = _figure()
    sizes: set[int] = set()
    for i, (name, points) in enumerate(series.items()):
        pts = sorted((s, v) for s, v in points if v > 0)
        if not pts:
            continue
        sizes.update(s for s, _ in pts)
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, label=name, marker=_MARKERS[i % len(_MARKERS)], markersize=6 if is_ours(name) else 4,
                color=_COLORS[i % len(_COLORS)], **_line_style(name))
    ax.set_xscale("log")
    ax.set_yscale("log")
    # One tick per measured size, labelled as a size (the sizes are few and far apart).
    from matplotlib import ticker

    ax.xaxis.set_major_locator(ticker.FixedLocator(sorted(sizes)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: size_label(v)))
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    _plain_log_ticks(ax.yaxis)
    ax.set_xlabel("message size (log scale)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(_wrap(title, fig.get_figwidth()), fontsize=10)
    ax.legend(fontsize=7, loc=legend_loc)
    return _save(fig, path)


def throughput_vs_size(series: Mapping[str, Sequence[tuple[int, float]]], title: str, path: Path,
                       unit: str = "MB/s") -> Path:
    """Write a PNG of throughput against message size, log-log: one line per series,
    each a sequence of ``(message size in bytes, throughput in unit)``; shmplane's
    series solid and thick, the peers' thin and dashed. Points of throughput 0 or less
    (a failed run) are left out.

    Raises ImportError if matplotlib is not installed (see ``have_matplotlib``)."""
    return _vs_size(series, title, path, f"throughput, {unit} (log scale)", "best")


def latency_vs_size(series: Mapping[str, Sequence[tuple[int, float]]], title: str, path: Path,
                    ylabel: str = "p50 latency, µs (log scale)") -> Path:
    """Write a PNG of a latency against message size, log-log: one line per series,
    each a sequence of ``(message size in bytes, µs)``; styles as in
    :func:`throughput_vs_size`. A cost that does not grow with the size is a flat line.

    Raises ImportError if matplotlib is not installed (see ``have_matplotlib``)."""
    return _vs_size(series, title, path, ylabel, "upper left")


def _label_points(ax: Axes, points: Mapping[str, tuple[float, float]], color: Mapping[str, str]) -> None:
    """Name each point beside it, trying a few places around it in turn so that no two
    labels overlap (greedy, in the figure's pixels; the axes' limits must be final)."""
    fig = ax.get_figure()
    px = (fig.dpi if fig is not None else 72.0) / 72.0  # pixels per point
    taken: list[tuple[float, float, float, float]] = []  # markers and label boxes, pixels
    for x, y in points.values():
        mx, my = ax.transData.transform((x, y))
        taken.append((mx - 5 * px, my - 5 * px, mx + 5 * px, my + 5 * px))
    # (dx, dy) in points from the point to the label's left (or right) middle.
    offsets = [(8, 0), (8, 9), (8, -9), (-8, 0), (-8, 9), (-8, -9), (8, 18), (8, -18), (-8, 18), (-8, -18)]
    for name, (x, y) in sorted(points.items(), key=lambda kv: (kv[1][1], kv[1][0])):
        bx, by = ax.transData.transform((x, y))
        w, h = 4.3 * len(name) * px, 8 * px  # about the size of 7-point text
        for dx, dy in offsets:
            left = bx + dx * px if dx > 0 else bx + dx * px - w
            box = (left, by + dy * px - h / 2, left + w, by + dy * px + h / 2)
            if not any(box[0] < t[2] and t[0] < box[2] and box[1] < t[3] and t[1] < box[3] for t in taken):
                break
        else:
            dx, dy = offsets[0]
            left = bx + dx * px
            box = (left, by - h / 2, left + w, by + h / 2)
        taken.append(box)
        ax.annotate(name, (x, y), xytext=(dx, dy), textcoords="offset points", va="center",
                    ha="left" if dx > 0 else "right", fontsize=7, color=color[name],
                    fontweight="bold" if is_ours(name) else "normal")


class CpuLatency(NamedTuple):
    """One transport's point in :func:`cpu_vs_latency`."""

    cpu_pct: float  # the waiting side's CPU time over wall time, % of one core
    p50_us: float  # wake latency, median
    p99_us: float  # wake latency, 99th percentile (the whisker's top)


def cpu_vs_latency(panels: Mapping[str, Mapping[str, CpuLatency]], title: str, path: Path) -> Path:
    """Write a PNG of the idle-wait trade-off: for each panel (a workload, such as an
    idle machine and one with CPU hogs) a labelled point per transport at (consumer CPU
    %, wake latency p50), a whisker from the p50 up to the p99. Both axes are log
    scales: the waiters that sleep use about 1 % of a core and the spinning ones 100 %,
    and latencies span microseconds to milliseconds. shmplane's points are large, filled
    and labelled in bold; the peers' small and hollow. Down and to the left is better.

    Raises ImportError if matplotlib is not installed (see ``have_matplotlib``)."""
    from matplotlib.figure import Figure

    shown = {k: v for k, v in panels.items() if v}
    fig = Figure(figsize=(6.0 * max(1, len(shown)), 4.6), dpi=90)
    axes = fig.subplots(1, max(1, len(shown)), squeeze=False)[0]
    names = list(dict.fromkeys(n for pts in shown.values() for n in pts))
    color = {n: _COLORS[i % len(_COLORS)] for i, n in enumerate(names)}
    for ax, (panel, points) in zip(axes, shown.items(), strict=False):
        for name, p in points.items():
            ours = is_ours(name)
            ax.errorbar(
                [p.cpu_pct], [p.p50_us], yerr=[[0.0], [max(0.0, p.p99_us - p.p50_us)]],
                fmt="o" if ours else "s", markersize=9 if ours else 6, capsize=3,
                color=color[name], markerfacecolor=color[name] if ours else "none",
                elinewidth=1.6 if ours else 0.9, markeredgewidth=1.5, zorder=3 if ours else 2,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        lo = min(p.cpu_pct for p in points.values())
        ax.set_xlim(max(lo / 2, 1e-2), 250)
        ax.autoscale_view()
        _label_points(ax, {n: (p.cpu_pct, p.p50_us) for n, p in points.items()}, color)
        _plain_log_ticks(ax.xaxis)
        _plain_log_ticks(ax.yaxis)
        ax.set_xlabel("consumer CPU while waiting, % of one core (log scale)")
        ax.set_ylabel("wake latency p50, µs (log; whisker to p99)")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(panel, fontsize=9)
    fig.suptitle(_wrap(title, fig.get_figwidth()), fontsize=10)
    return _save(fig, path)


class Bar(NamedTuple):
    """One bar of :func:`bars`: its height and the whisker's ends (equal to ``value``
    for no whisker)."""

    value: float
    lo: float
    hi: float


def bars(groups: Mapping[str, Mapping[str, Bar]], title: str, path: Path, ylabel: str, *,
         log: bool = False, reference: tuple[str, float] | None = None) -> Path:
    """Write a PNG of grouped bars: a group per key of ``groups`` (a producer count, a
    subscriber count) along x, in it a bar per series (a transport, the same colour in
    every group) with a whisker from ``lo`` to ``hi``. shmplane's bars are opaque with a
    dark edge, the peers' paler. ``log``: a log y axis (for figures that span decades);
    ``reference``: a labelled horizontal dashed line (a floor) at that value.

    Raises ImportError if matplotlib is not installed (see ``have_matplotlib``)."""
    names = list(dict.fromkeys(n for g in groups.values() for n in g))
    fig, ax = _figure(max(7.0, 3.0 + 0.4 * len(names) * len(groups)), 4.2)
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        xs, vals, lows, highs = [], [], [], []
        for gi, g in enumerate(groups.values()):
            if name in g:
                b = g[name]
                xs.append(gi - 0.4 + width * (i + 0.5))
                vals.append(b.value)
                lows.append(max(0.0, b.value - b.lo))
                highs.append(max(0.0, b.hi - b.value))
        ours = is_ours(name)
        ax.bar(xs, vals, width * 0.92, label=name, color=_COLORS[i % len(_COLORS)], alpha=1.0 if ours else 0.55,
               edgecolor="black" if ours else "none", linewidth=1.2, yerr=[lows, highs], capsize=2,
               error_kw={"elinewidth": 0.9})
    if reference is not None:
        ax.axhline(reference[1], color="black", linestyle="--", linewidth=1.0, label=reference[0])
    ax.set_xticks(range(len(groups)), list(groups))
    from matplotlib import ticker

    # 1.5 M, 200 k, 15: rates and costs read without an exponent.
    eng = ticker.EngFormatter(sep=" ")
    if log:
        ax.set_yscale("log")
        # Room below the shortest bar, so that it does not look like nothing.
        smallest = min((b.lo for g in groups.values() for b in g.values() if b.lo > 0), default=None)
        if smallest is not None:
            ax.set_ylim(bottom=smallest / 3)
        _plain_log_ticks(ax.yaxis, eng)
    else:
        ax.yaxis.set_major_formatter(eng)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.suptitle(_wrap(title, fig.get_figwidth()), fontsize=10)  # over the legend too
    # Beside the axes, not over the bars.
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _save(fig, path)
