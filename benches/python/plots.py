"""Optional extras of the demo and the benches: PNG pictures (matplotlib) and progress
bars (tqdm). Both are used when installed (``ci/demo.sh`` installs them) and skipped
when not: nothing else needs them, and the printed figures are the same either way.

In every picture shmplane's series (names starting with ``shmplane``) are solid and
thick, the peers' thin and dashed:

- :func:`latency_cdfs`: the whole latency distribution of each transport (log x);
- :func:`throughput_vs_size`: one line per transport against the message size (log-log).

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
from typing import TYPE_CHECKING, Any, Literal, TypeVar

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
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10), ("MB", 10**6), ("kB", 10**3)):
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
