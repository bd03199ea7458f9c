"""Every example under ``examples/`` runs to completion, as a user would run it.

Each script runs as a subprocess of this interpreter (``sys.executable``), importing the
same ``shmplane`` package as this test (its directory leads ``PYTHONPATH``), under a
watchdog: a subprocess timeout, on expiry the script's whole process group is killed.
It must exit 0, print what it is about, and leave none of its segments in ``/dev/shm``
(those named after its pid or created by it; other processes' segments are not
looked at, as other test runs may share the machine). Nothing here measures time.

A script added under ``examples/`` without an entry in ``EXAMPLES`` (or ``HELPERS``)
fails ``test_every_example_script_is_run``: this file is the one place examples run.
"""

from __future__ import annotations

import os
import re
import signal
import site
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import shmplane
from shm_helpers import list_segments, segment_is_ours, wait_until

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = ROOT / "examples"


@dataclass(frozen=True)
class Example:
    script: str  # under examples/
    args: tuple[str, ...]
    expect: tuple[str, ...]  # lines (or parts of lines) that stdout must contain
    timeout_s: float = 120.0

    @property
    def id(self) -> str:
        return self.script.removesuffix(".py")


EXAMPLES = [
    Example("latest_values/latest_values.py", ("--quick",), ("final update 200: params = [200.0,", "torn reads: 0")),
    Example(
        "broadcast/broadcast.py",
        ("--quick",),
        ("publisher: 3 subscribers", "subscriber 2 (pid", "all 3 subscribers received the same dataset"),
    ),
    Example(
        "asyncio/asyncio_consumer.py",
        ("--quick",),
        (
            "consumer: received 100 readings from 2 producers",
            "each producer's in the order sent: True",
            "final progress [50, 50]",
        ),
    ),
    Example(
        "by_name/run.py",
        ("--quick",),
        (
            "sender-a: joined /dev/shm/shmplane.by-name-demo-",
            "sender-b: sent 2 messages and bye",
            "receiver: 'reading 2: 20.2 C' from sender-a",
            "receiver: 5 messages; 2 senders said bye",
            "removed after every process closed",
        ),
    ),
    Example(
        "check_pause/check_pause.py",
        ("--quick",),
        (
            "pause      from master",
            "resume     from outsider",
            "pause      from outsider",
            "terminate  from master",
            "shmplane mb.pending()",
        ),
    ),
    Example(
        "rpc/master_worker.py",
        ("--quick",),
        ("set_voltage(1.5) -> 1.5", "RemoteError ValueError", "retry -> measured for 0.3 s (call #", "round trip over"),
        timeout_s=240,
    ),
    Example(
        "rpc/large_replies.py",
        ("--quick",),
        ("list of 1,000,000 floats: one reply", "8.4 MB float64 array: one reply", "worker stopped"),
        timeout_s=240,
    ),
    Example("rpc/asyncio_master.py", ("--quick",), ("awaited calls in", "count() -> 50"), timeout_s=240),
    # The main job's smoke run (every section, a few repetitions each); --plot is added
    # by the test. The peers that are not installed are skipped by the demo itself.
    Example(
        "dataset_transfer/main.py",
        ("--quick",),
        (
            "(a) float64 ndarray of 1,000,000 elements",
            "shmplane_wait",
            "(c2) the same stream against message size",
            "(e) check_pause",
            "(g) broadcast",
            "(h) RPC",
        ),
        timeout_s=480,
    ),
]

#: Scripts that an example above starts itself (by_name/run.py starts these two).
HELPERS = {"by_name/receiver.py", "by_name/sender.py"}

#: Plots the demo writes with --plot when matplotlib is installed.
DEMO_PLOTS = ["a-ndarray-cdf.png", "a2-ndarray-large-cdf.png", "b-list-cdf.png", "c2-stream-throughput-vs-size.png",
              "d-latest-values-cdf.png", "rpc-64B-round-trip-cdf.png"]


def _env() -> dict[str, str]:
    """This environment, with the directory of the shmplane this test imported first on
    ``PYTHONPATH`` (it reaches the examples' own children too), unless that is a
    site-packages directory (already on every interpreter's path)."""
    env = dict(os.environ)
    package_parent = str(Path(shmplane.__file__).resolve().parents[1])
    if package_parent not in site.getsitepackages():
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    return env


def _imports(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _ours(name: str, pid: int) -> bool:
    """Segment or doorbell ``name`` belongs to the run of process ``pid``: its name carries
    the pid, or (a segment, not a doorbell FIFO, which must not be opened) its header
    names it as the creator."""
    base, _, _ = name.partition("@")
    if str(pid) in re.split(r"[-_.]", base):
        return True
    return "@" not in name and segment_is_ours(name, [pid])


def _run(example: Example, *extra: str) -> subprocess.CompletedProcess[str]:
    before = set(list_segments())
    cmd = [sys.executable, str(EXAMPLES_DIR / example.script), *example.args, *extra]
    # A session of its own: on a timeout, its children (spawned workers, subprocesses)
    # are killed with it.
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=example.timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{example.script} did not finish in {example.timeout_s} s\n--- stdout\n{out}\n--- stderr\n{err}")
    assert proc.returncode == 0, f"{example.script} exited with {proc.returncode}\n--- stdout\n{out}\n--- stderr\n{err}"
    for line in example.expect:
        assert line in out, f"{line!r} not in the output of {example.script}:\n{out}"

    def leaked() -> list[str]:
        return sorted(n for n in set(list_segments()) - before if _ours(n, proc.pid))

    # Every end closed when the processes exited; the last closer removed the segment.
    # (A grace period only, for a child's exit still being reaped.)
    wait_until(lambda: not leaked(), timeout=3.0)
    assert not leaked(), f"{example.script} left segments in /dev/shm: {leaked()}"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_every_example_script_is_run() -> None:
    scripts = {p.relative_to(EXAMPLES_DIR).as_posix() for p in EXAMPLES_DIR.rglob("*.py")}
    covered = {e.script for e in EXAMPLES} | HELPERS
    assert scripts == covered, f"not run here: {sorted(scripts - covered)}; listed but missing: {sorted(covered - scripts)}"
    for folder in {Path(s).parent for s in scripts}:
        assert (EXAMPLES_DIR / folder / "README.md").is_file(), f"examples/{folder} has no README.md"


@pytest.mark.parametrize(
    "example",
    [pytest.param(e, id=e.id, marks=pytest.mark.timeout(e.timeout_s + 30))
     for e in EXAMPLES if not e.script.startswith("dataset_transfer/")],
)
def test_example_runs(example: Example) -> None:
    _run(example)


@pytest.mark.timeout(540)  # the demo's own timeout_s, and time to kill it
def test_demo_runs_and_plots_when_matplotlib_is_there(tmp_path: Path) -> None:
    (demo,) = [e for e in EXAMPLES if e.script.startswith("dataset_transfer/")]
    done = _run(demo, "--plot", str(tmp_path))
    if not _imports("matplotlib"):
        assert "--plot needs matplotlib" in done.stderr
        assert not list(tmp_path.iterdir())
    else:
        written = sorted(p.name for p in tmp_path.iterdir())
        assert written == sorted(DEMO_PLOTS), written
        for name in written:
            assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "plots: " in done.stdout
