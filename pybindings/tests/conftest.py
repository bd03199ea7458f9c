"""Fixtures shared by the shmplane test suite.

- ``shm_name`` / ``make_name``: unique segment names per test (pid + sanitised test name);
  after the test, no ``/dev/shm/shmplane.<name>`` may be left behind.
- ``procs``: starts ``multiprocessing`` children and never lets one outlive its test
  (join with a timeout, then terminate, then kill).
- A session check: every ``/dev/shm/shmplane.*`` segment created by this test session
  (by the pytest process or one of its children) must be gone at the end.
- Every test gets a pytest-timeout watchdog (``DEFAULT_TIMEOUT`` unless it sets its own).
"""

from __future__ import annotations

import gc
import itertools
import multiprocessing as mp
import multiprocessing.process
import os
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shm_helpers import SHM_DIR, list_segments, seg_path, segment_is_ours

DEFAULT_TIMEOUT = 120  # seconds, for tests without their own @pytest.mark.timeout

#: pids of the pytest process and of every child it started (see _record_child_pids).
SESSION_PIDS: set[int] = {os.getpid()}
_SEGMENTS_BEFORE: set[str] = set()


# --------------------------------------------------------------------------- watchdog


def pytest_configure(config: pytest.Config) -> None:
    _check_installed()
    if not config.pluginmanager.hasplugin("timeout"):
        # Keep the markers valid without the plugin; the suite then has no watchdog
        # beyond the join timeouts of the tests themselves.
        config.addinivalue_line("markers", "timeout(seconds): per-test watchdog (needs pytest-timeout)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TIMEOUT))


# ------------------------------------------------------------- which shmplane

#: The repository: the suite tests whichever ``shmplane`` imports, the source tree's
#: (``maturin develop``) or an installed wheel (``ci/wheel.sh``).
REPO = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _shmplane_dir() -> str:
    import shmplane

    return os.path.realpath(os.path.dirname(shmplane.__file__))


def _check_installed() -> None:
    """With ``SHMPLANE_TEST_INSTALLED=1`` (ci/wheel.sh), refuse to test a ``shmplane``
    imported from inside the repository: the run is meant for the installed wheel."""
    if os.environ.get("SHMPLANE_TEST_INSTALLED") and (_shmplane_dir() + os.sep).startswith(REPO + os.sep):
        raise pytest.UsageError(f"SHMPLANE_TEST_INSTALLED is set but shmplane comes from the source tree: {_shmplane_dir()}")


def pytest_report_header(config: pytest.Config) -> str:
    import shmplane

    return f"shmplane {shmplane.__version__} from {_shmplane_dir()}"


# ------------------------------------------------------------- session leak check


def _record_child_pids() -> None:
    """Remember the pid of every multiprocessing child this session starts, so the
    session check can tell our segments from those of unrelated processes."""
    original = multiprocessing.process.BaseProcess.start
    if getattr(original, "_shmplane_tests", False):
        return

    def start(self: Any) -> None:
        original(self)
        if self.pid is not None:
            SESSION_PIDS.add(self.pid)

    start._shmplane_tests = True  # type: ignore[attr-defined]
    multiprocessing.process.BaseProcess.start = start  # type: ignore[method-assign]


def pytest_sessionstart(session: pytest.Session) -> None:
    # Files the tests plant in /dev/shm (garbage, truncated, zero-length segments) get
    # mode 0600 like the ones shmplane makes, so that opening them reaches the checks a
    # test is about: shmplane refuses any file that lets other users in.
    os.umask(0o077)
    _SEGMENTS_BEFORE.clear()
    _SEGMENTS_BEFORE.update(list_segments())
    _record_child_pids()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    gc.collect()

    def leaked() -> list[str]:
        new = set(list_segments()) - _SEGMENTS_BEFORE
        return sorted(n for n in new if segment_is_ours(n, SESSION_PIDS))

    deadline = time.monotonic() + 3.0
    names = leaked()
    while names and time.monotonic() < deadline:
        time.sleep(0.05)
        names = leaked()
    if names:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        msg = f"shmplane segments created by this test session were leaked in {SHM_DIR}: " + ", ".join(names)
        if reporter is not None:
            reporter.write_sep("!", "LEAKED SHMPLANE SEGMENTS", red=True)
            reporter.write_line(msg, red=True)
        else:
            print(msg)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# ------------------------------------------------------------------------ names

_counter = itertools.count()


def _sanitize(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


@pytest.fixture
def make_name(request: pytest.FixtureRequest) -> Iterator[Callable[[str], str]]:
    """Factory of unique segment names for this test; each one is checked for leaks."""
    made: list[str] = []
    base = _sanitize(request.node.name)

    def make(tag: str = "") -> str:
        suffix = f"-{next(_counter)}" + (f"-{_sanitize(tag)}" if tag else "")
        head = f"pyt{os.getpid()}-"
        name = head + base[: 200 - len(head) - len(suffix)] + suffix
        made.append(name)
        return name

    yield make

    gc.collect()  # endpoints that the test dropped without closing
    leaked = []
    for name in made:
        path = seg_path(name)
        deadline = time.monotonic() + 2.0
        while os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.02)
        if os.path.exists(path):
            leaked.append(path)
            try:
                os.unlink(path)  # do not let one failure spill into later tests
            except FileNotFoundError:
                pass
    if leaked:
        pytest.fail(f"segment(s) leaked by the test: {leaked}", pytrace=False)


@pytest.fixture
def shm_name(make_name: Callable[[str], str]) -> str:
    """A unique channel name for this test (``pyt<pid>-<test name>-<n>``)."""
    return make_name("")


# -------------------------------------------------------------------- processes


class Procs:
    """Starts children; makes sure none survives its test."""

    def __init__(self) -> None:
        self.started: list[mp.process.BaseProcess] = []

    def start(self, target: Callable[..., Any], *args: Any, method: str = "spawn", daemon: bool = True) -> Any:
        p = mp.get_context(method).Process(target=target, args=args, daemon=daemon)
        p.start()
        self.started.append(p)
        return p

    def start_reporting(
        self, target: Callable[..., Any], *args: Any, method: str = "spawn"
    ) -> tuple[Any, Any]:
        """Start ``shm_helpers.report(conn, target, *args)`` in a child: returns the
        process and the read end of the pipe on which the child reports."""
        from shm_helpers import report

        ctx = mp.get_context(method)
        r, w = ctx.Pipe(duplex=False)
        p = self.start(report, w, target, *args, method=method)
        w.close()
        return p, r

    @staticmethod
    def kill(p: Any) -> None:
        if p.is_alive():
            p.terminate()
            p.join(3)
        if p.is_alive():
            p.kill()
            p.join(3)

    def join(self, p: Any, timeout: float = 20.0, exitcode: int | None = 0) -> int | None:
        """Join ``p`` (killing it after ``timeout``) and check its exit code."""
        p.join(timeout)
        if p.is_alive():
            self.kill(p)
            pytest.fail(f"child {p.pid} still running after {timeout} s: killed")
        if exitcode is not None:
            assert p.exitcode == exitcode, f"child {p.pid} exit code {p.exitcode}, expected {exitcode}"
        return p.exitcode

    def cleanup(self) -> None:
        for p in self.started:
            p.join(5)
            self.kill(p)


@pytest.fixture
def procs(make_name: Callable[[str], str]) -> Iterator[Procs]:
    """Children of this test. Depends on ``make_name`` so that the children are reaped
    before the names are checked for leaks."""
    pool = Procs()
    try:
        yield pool
    finally:
        pool.cleanup()
