"""Optional extras of the demo and the benches: latency CDF pictures (matplotlib) and
progress bars (tqdm). Both are used when installed (``ci/demo.sh`` installs them) and
skipped silently when not: nothing else needs them, and the printed figures are the
same either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def have_matplotlib() -> bool:
    """True if matplotlib imports (installed and working)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def progress(items: Iterable[T], desc: str, total: int | None = None) -> Iterable[T]:
    """``items`` with a tqdm bar on stderr while they are consumed, if tqdm is installed
    and stderr is a terminal; ``items`` unchanged otherwise."""
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    # disable=None: no bar unless stderr is a terminal (logs and tests stay clean);
    # leave=False: the bar disappears when done, leaving only the printed figures.
    bar: Iterable[T] = tqdm(items, desc=desc, total=total, leave=False, disable=None)
    return bar


def latency_cdfs(series: Mapping[str, Sequence[float]], title: str, path: Path) -> Path:
    """Write a PNG of the latency CDF of each series (nanoseconds, drawn in µs on a log
    x axis): shmplane's series as solid thick lines, the peers' as thin dashed ones.
    The printed tables give the percentiles; the picture gives the whole distribution.

    Raises ImportError if matplotlib is not installed (see ``have_matplotlib``)."""
    from matplotlib import ticker
    from matplotlib.figure import Figure  # no pyplot: no backend or global state

    fig = Figure(figsize=(7.0, 4.0), dpi=90)
    ax = fig.add_subplot()
    for name, ns in series.items():
        us = np.sort(np.asarray(ns, dtype=np.float64)) / 1e3
        if not len(us):
            continue
        # Steps from 0 at the fastest transfer up to 1 at the slowest.
        x = np.concatenate(([us[0]], us))
        frac = np.arange(len(us) + 1) / len(us)
        ours = name.startswith("shmplane")
        style: dict[str, Any] = {"linewidth": 2.2, "linestyle": "-"} if ours else {"linewidth": 1.2, "linestyle": "--"}
        ax.step(x, frac, where="post", label=name, **style)
    ax.set_xscale("log")
    plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    lo, hi = ax.get_xlim()
    # Label the 2..9 ticks too when the axis spans less than a decade and a half.
    ax.xaxis.set_minor_formatter(plain if hi / lo < 30 else ticker.NullFormatter())
    ax.set_xlabel("latency per transfer, µs (log scale)")
    ax.set_ylabel("fraction of transfers ≤ x")
    ax.set_ylim(0, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
