"""Fault injection through real segment files (issue 13 part 4): every primitive's
segment, made valid and then mutated, is opened and used by a child process, which
must see only results and ``ShmplaneError`` subclasses: never a signal death, a
hang, a Rust panic or another exception.

For each kind (channel, RawArray, RawValue, mailbox, broadcast lossless and lossy,
RPC server) a template segment is made with real traffic in it (queued messages of
every codec, a chunked message already through the ring, cursors, lanes, a request).
Each mutant is a copy of its bytes with a few seeded mutations (words of the header,
role table and control blocks, record headers and payload set to 0, all ones, a
power of two, a neighbour of their value or random bits; single bytes flipped),
written as a new ``/dev/shm/shmplane.<name>`` file with mode 0600. One child per kind
(``python -c``, ``faulthandler`` on; a watchdog on the parent's side kills it when
one mutant takes over ``WATCHDOG_PER_MUTANT`` seconds) takes the
mutants one after another: opens every role, runs every operation with short
timeouts, closes, then creates over the name (refused, or the finished file
replaced). Exceptions raised while unpickling a forged pickle message are allowed:
unpickling trusts the peer by design (``shmplane._codec``), as ``multiprocessing`` does.

``SHMPLANE_FUZZ_MUTANTS`` (default 30 per kind) and ``SHMPLANE_FUZZ_SEED`` (default 0)
size and vary a run: ``SHMPLANE_FUZZ_MUTANTS=2000 pytest test_fuzz_segments.py``.
A failing mutant is kept under pytest's ``tmp_path`` (its path is in the message);
``python test_fuzz_segments.py <kind> <that file>`` replays it.
"""

from __future__ import annotations

import glob
import os
import random
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import shmplane
from shm_helpers import PREFIX, SHM_DIR, mutate, seg_path

MUTANTS = int(os.environ.get("SHMPLANE_FUZZ_MUTANTS", "30"))
SEED = int(os.environ.get("SHMPLANE_FUZZ_SEED", "0"))
#: Seconds a child may spend on one mutant before the watchdog calls it a hang and
#: kills it (the operations' own timeouts add up to well under a second).
WATCHDOG_PER_MUTANT = 10.0

# --------------------------------------------------------------------- templates


def _channel(name: str) -> Iterator[None]:
    tx, rx = shmplane.channel(1 << 14, name=name)
    # A chunked message through the ring first (its records stay in the data area,
    # behind the consumer: a forged position brings them back), then one message of
    # each codec queued.
    big = bytes(range(256)) * 160
    t = threading.Thread(target=tx.send, args=(big,), kwargs={"timeout": 20})
    t.start()
    assert rx.recv(timeout=20) == big
    t.join()
    for m in (b"bytes", np.arange(12.0).reshape(3, 4), [1.0, 2.5], (1, 2, 3), {"pickled": 1}, b"x" * 3000):
        tx.send(m, timeout=5)
    yield
    tx.close()
    rx.close()


def _raw_array(name: str) -> Iterator[None]:
    a = shmplane.RawArray("d", 16, name=name)
    for i in range(16):
        a[i] = i * 1.5
    a[2:6] = [7.0, 8.0, 9.0, 10.0]
    yield
    a.close()


def _raw_value(name: str) -> Iterator[None]:
    v = shmplane.RawValue("d", 2.5, name=name)
    v.value = 3.25
    yield
    v.close()


def _mailbox(name: str) -> Iterator[None]:
    mb = shmplane.mailbox(1 << 12, name=name, max_senders=4)
    a, b = mb.sender(), mb.sender()
    for i in range(3):
        a.send(b"a" * (100 + i), timeout=5)
        b.send(np.arange(i + 1), timeout=5)
    assert mb.recv(timeout=5) is not None
    yield
    for h in (a, b, mb):
        h.close()


def _broadcast(lossy: bool) -> Callable[[str], Iterator[None]]:
    def make(name: str) -> Iterator[None]:
        pub = shmplane.Publisher.create(name, 1 << 13, lossy=lossy, max_subscribers=4)
        s1, s2 = pub.subscribe(), pub.subscribe()
        for i in range(12):
            pub.send(i.to_bytes(8, "little") * (1 + 4 * i), timeout=5)
        for _ in range(5):
            s1.recv(timeout=5)
        yield
        for h in (s1, s2, pub):
            h.close()

    return make


def _rpc(name: str) -> Iterator[None]:
    server = shmplane.RpcServer.create(name, max_clients=4, capacity=1 << 13)
    client = shmplane.RpcClient.connect(name, timeout=10)
    assert not server.pending()
    client._send_call(("a request", np.arange(3)), timeout=5)  # queued, never served
    yield
    client.close()
    server.close()


TEMPLATES: dict[str, Callable[[str], Iterator[None]]] = {
    "channel": _channel,
    "raw_array": _raw_array,
    "raw_value": _raw_value,
    "mailbox": _mailbox,
    "broadcast": _broadcast(False),
    "broadcast_lossy": _broadcast(True),
    "rpc": _rpc,
}


def _template_bytes(kind: str, name: str) -> bytes:
    """The bytes of a valid ``kind`` segment with traffic in it (read while its
    handles are open; they are closed, and the segment removed, afterwards)."""
    gen = TEMPLATES[kind](name)
    next(gen)
    try:
        with open(seg_path(name), "rb") as f:
            return f.read()
    finally:
        for _ in gen:
            pass


# --------------------------------------------------------------------- mutations


# ------------------------------------------------------------------------- child

CHILD = r'''
import faulthandler, json, random, sys
faulthandler.enable()
import numpy as np
import shmplane

T = 0.01
kind, tests, template_path, seed, first_mutant, mutants, prefix = sys.argv[1:]
sys.path.insert(0, tests)
from shm_helpers import mutate, mutation_targets, plant_segment, remove_segment


def in_unpickle(tb):
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "unpickle" and code.co_filename.endswith("_codec.py"):
            return True
        tb = tb.tb_next
    return False


STATS = {}


def count(what):
    STATS[what] = STATS.get(what, 0) + 1


def attempt(fn, *args, **kwargs):
    """fn's result, or None for a shmplane error (or a forged pickle's)."""
    try:
        result = fn(*args, **kwargs)
    except shmplane.ShmplaneError as e:
        count(type(e).__name__)
        return None
    except Exception as e:
        if in_unpickle(e.__traceback__):
            count("unpickling")
            return None
        raise
    count("result")
    return result


def opened(handle):
    count("opened" if handle is not None else "refused")
    return handle


def close(*handles):
    for h in handles:
        if h is not None:
            attempt(h.close)


def receive(rx):
    attempt(rx.poll, 0)
    attempt(rx.poll, T)
    for _ in range(3):
        attempt(rx.try_recv)
    attempt(rx.recv, timeout=T)
    attempt(rx.recv_bytes, timeout=T)
    view = attempt(rx.recv, timeout=T, copy=False)
    del view
    lease = attempt(rx.lease, timeout=T)
    if lease is not None:
        attempt(lambda: lease.value)
        attempt(lease.release)
    if hasattr(rx, "recv_into"):
        attempt(rx.recv_into, bytearray(1 << 15), timeout=T)
    attempt(rx.fileno)
    attempt(lambda: rx.held)


def send(tx):
    attempt(tx.try_send, b"x")
    attempt(tx.send, b"y" * 300, timeout=T)
    attempt(tx.send, np.arange(100.0), timeout=T)
    attempt(tx.send, [1.0, 2.0], timeout=T)
    attempt(tx.send, b"z" * 40000, timeout=T)  # chunked
    attempt(tx.poll_space, 100, T)
    loan = attempt(tx.loan, 16, np.uint8, timeout=T)
    if loan is not None:
        attempt(loan.commit)
    attempt(tx.fileno)


def channel(name):
    rx = opened(attempt(shmplane.Receiver.open, name))
    tx = attempt(shmplane.Sender.open, name)
    if rx is not None:
        receive(rx)
    if tx is not None:
        send(tx)
    if rx is not None:
        receive(rx)
    close(tx, rx)
    pair = attempt(shmplane.channel, 1 << 12, name=name)
    close(*(pair or ()))


SLOT_OPS = [
    lambda a: a.snapshot(),
    lambda a: a.version,
    lambda a: a.wait_for_update(0, timeout=T),
    lambda a: a.wait_for_update(a.version, timeout=T),
    lambda a: a._slot.read(),
    lambda a: a._slot.write(bytes(len(a._slot))),
    lambda a: a._slot.read_at(0, 8),
]
ARRAY_OPS = [
    lambda a: a[:],
    lambda a: a[0],
    lambda a: a[-1],
    lambda a: a[1:5:2],
    lambda a: np.asarray(a),
    lambda a: a.__setitem__(0, 1.5),
    lambda a: a.__setitem__(slice(0, 2), [1.0, 2.0]),
]
VALUE_OPS = [lambda v: v.value, lambda v: setattr(v, "value", 4.5)]


def slot(name, attach, ops):
    a = opened(attempt(attach, name))
    if a is not None:
        for op in SLOT_OPS + ops:
            attempt(op, a)
        close(a)
    close(attempt(attach, name))


def mailbox(name):
    mb = opened(attempt(shmplane.Mailbox.open, name))
    tx = attempt(shmplane.Sender.open, name)
    if mb is not None:
        attempt(mb.pending)
        attempt(lambda: mb.senders)
        receive(mb)
        own = attempt(mb.sender)
        if own is not None:
            send(own)
            close(own)
    if tx is not None:
        send(tx)
    if mb is not None:
        receive(mb)
    close(tx, mb)
    close(attempt(shmplane.mailbox, 1 << 12, name=name))


def broadcast(name):
    pub = opened(attempt(shmplane.Publisher.open, name))
    sub = attempt(shmplane.Subscriber.open, name)
    subs = [sub]
    if pub is not None:
        attempt(lambda: pub.subscribers)
        subs.append(attempt(pub.subscribe))
        send(pub)
    for s in subs:
        if s is not None:
            receive(s)
    close(*subs, pub)
    close(attempt(shmplane.Publisher.create, name, 1 << 12))


def rpc(name):
    client = opened(attempt(shmplane.RpcClient.connect, name, timeout=T))
    if client is not None:
        attempt(client.call, "hello", timeout=T)
        attempt(client.call, np.arange(3), timeout=T, retry=True)
        attempt(client.is_connected)
        close(client)
    server = attempt(shmplane.RpcServer.create, name)
    if server is not None:
        attempt(server.pending)
        request = attempt(server.try_recv)
        if request is not None:
            attempt(request.reply, "answer", timeout=T)
        attempt(server.recv, timeout=T)
        close(server)


def selftest(name):
    """The harness's own check: each way a mutant can fail."""
    import os, signal, time
    how, i = name.rsplit("-", 2)[1:]
    if i != "2":
        return
    if how == "raise":
        raise KeyError("not a shmplane error")
    if how == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    if how == "hang":
        time.sleep(3600)


#: Kinds whose segments come with doorbell FIFOs (<name>@rx, <name>@tx).
DOORBELLS = {"channel", "mailbox", "broadcast", "broadcast_lossy", "rpc"}

OPS = {
    "selftest": selftest,
    "channel": channel,
    "raw_array": lambda n: slot(n, lambda name: shmplane.RawArray.attach(name, "d"), ARRAY_OPS),
    "raw_value": lambda n: slot(n, lambda name: shmplane.RawValue.attach(name, "d"), VALUE_OPS),
    "mailbox": mailbox,
    "broadcast": broadcast,
    "broadcast_lossy": broadcast,
    "rpc": rpc,
}

with open(template_path, "rb") as f:
    template = f.read()
targets = mutation_targets(template)
for i in range(int(first_mutant), int(first_mutant) + int(mutants)):
    # Planted just before use (and removed after): a concurrent shmplane.gc()
    # elsewhere would remove a waiting mutant, which nobody holds.
    name = f"{prefix}{i}"
    data = template if seed == "-" else mutate(template, random.Random(f"{seed}-{kind}-{i}"), targets)
    plant_segment(name, data, kind in DOORBELLS)
    print("mutant", i, flush=True)
    OPS[kind](name)
    remove_segment(name)
print("stats", json.dumps(STATS), flush=True)
print("done", flush=True)
'''


def _run_child(
    kind: str, template: str, seed: str, count: int, prefix: str, first: int = 0, per_mutant: float | None = None
) -> tuple[str, int | None, str]:
    """Run the child over mutants ``first .. first + count`` of the template file
    ``template`` (``seed`` "-": the template itself, unmutated), planted one at a time
    as ``<prefix><i>``: ``(outcome, index of the last mutant started, output)``;
    outcome "ok", "hang" (a mutant that took over ``per_mutant`` seconds,
    ``WATCHDOG_PER_MUTANT`` by default: the child is killed), or "exit <status>"
    (negative: the signal that ended it)."""
    import queue

    per_mutant = WATCHDOG_PER_MUTANT if per_mutant is None else per_mutant
    tests = os.path.dirname(os.path.abspath(__file__))
    args = [kind, tests, template, seed, str(first), str(count), prefix]
    proc = subprocess.Popen([sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str | None] = queue.Queue()
    err: list[str] = []

    def pump_stdout() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    def pump_stderr() -> None:
        assert proc.stderr is not None
        err.append(proc.stderr.read())

    readers = [threading.Thread(target=pump_stdout, daemon=True), threading.Thread(target=pump_stderr, daemon=True)]
    for t in readers:
        t.start()
    out: list[str] = []
    last: int | None = None
    wait = 60.0  # the child's start: imports
    while True:
        try:
            line = lines.get(timeout=wait)
        except queue.Empty:
            proc.kill()
            proc.wait()
            for t in readers:
                t.join(10)
            return "hang", last, "".join(out)[-2000:] + "".join(err)[-6000:]
        if line is None:
            break
        out.append(line)
        if line.startswith("mutant "):
            last = int(line.split()[1])
            wait = per_mutant
    proc.wait()
    for t in readers:
        t.join(10)
    text = "".join(out) + "".join(err)
    if proc.returncode == 0 and "".join(out).rstrip().endswith("done"):
        return "ok", None, text
    return f"exit {proc.returncode}", last, text[-8000:]


def _stats(output: str) -> dict[str, int]:
    """What the child counted: handles opened or refused, operations that returned a
    result, errors by type."""
    import json

    lines = [line for line in output.splitlines() if line.startswith("stats ")]
    return json.loads(lines[-1][len("stats ") :]) if lines else {}


def _last_started(stdout: str) -> int | None:
    lines = [line for line in stdout.splitlines() if line.startswith("mutant ")]
    return int(lines[-1].split()[1]) if lines else None


def _remove_planted(prefix: str) -> None:
    for path in glob.glob(f"{SHM_DIR}/{PREFIX}{prefix}*"):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


@pytest.mark.timeout(120 + MUTANTS * 2)
@pytest.mark.parametrize("kind", TEMPLATES)
def test_mutated_segments_give_typed_errors(kind: str, make_name: Callable[[str], str], tmp_path: Any) -> None:
    template = tmp_path / f"{kind}.seg"
    template.write_bytes(_template_bytes(kind, make_name(kind)))
    prefix = f"pyt{os.getpid()}-fuzz-{kind}-"
    try:
        outcome, last, output = _run_child(kind, str(template), str(SEED), MUTANTS, prefix)
    finally:
        _remove_planted(prefix)
    if outcome == "ok":
        stats = _stats(output)
        # The mutants were opened and used, not all refused at the door.
        assert stats.get("opened", 0) > 0 and stats.get("result", 0) > 0, stats
        print(f"{kind}: {MUTANTS} mutants (seed {SEED}): {stats}")
        return
    kept = None
    if last is not None:
        kept = tmp_path / f"{kind}-mutant-{last}.seg"
        kept.write_bytes(mutate(template.read_bytes(), random.Random(f"{SEED}-{kind}-{last}")))
    pytest.fail(f"{kind}: {outcome} at mutant {last} (seed {SEED}, kept as {kept}; replay: python {__file__} {kind} {kept})\n{output}")


@pytest.mark.parametrize(("how", "outcome"), [("raise", "exit 1"), ("crash", f"exit {-11}"), ("hang", "hang")])
def test_the_harness_reports_what_it_must(how: str, outcome: str, tmp_path: Any) -> None:
    """A foreign exception, a signal death and a hang each fail the run, naming the
    mutant (the third of three here)."""
    template = tmp_path / "empty.seg"
    template.write_bytes(bytes(64))
    prefix = f"pyt{os.getpid()}-fuzz-selftest-{how}-"
    try:
        got, last, _ = _run_child("selftest", str(template), "-", 3, prefix, per_mutant=2)
    finally:
        _remove_planted(prefix)
    assert (got, last) == (outcome, 2)


def test_mutations_are_reproducible_and_change_the_template() -> None:
    template = bytes(range(256)) * 64
    a = mutate(template, random.Random("0-channel-3"))
    assert a == mutate(template, random.Random("0-channel-3"))
    assert a != template and len(a) == len(template)


if __name__ == "__main__":
    # Replay a kept mutant: python test_fuzz_segments.py <kind> <mutant file>
    prefix = f"fuzz-replay-{os.getpid()}-"
    try:
        outcome, _, output = _run_child(sys.argv[1], os.path.abspath(sys.argv[2]), "-", 1, prefix)
    finally:
        _remove_planted(prefix)
    print(outcome)
    print(output)
