"""The ``shmplane`` command, run as a subprocess: ls (text and JSON), inspect of each
kind, gc --dry-run and gc, errors and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import shmplane


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shmplane", *args], capture_output=True, text=True, timeout=60)


def test_ls_and_inspect_every_kind(make_name: Any) -> None:
    chan, mb_name, pub_name, slot_name, rpc_name = (make_name(k) for k in ("chan", "mb", "pub", "slot", "rpc"))
    tx, rx = shmplane.channel(4096, name=chan)
    mb = shmplane.mailbox(4096, name=mb_name)
    snd = mb.sender()
    pub = shmplane.broadcast(4096, name=pub_name)
    sub = pub.subscribe()
    slot = shmplane.RawValue("d", 1.5, name=slot_name)
    server = shmplane.RpcServer.create(rpc_name, 2)
    client = shmplane.RpcClient.connect(rpc_name, timeout=5)
    try:
        out = run("ls")
        assert out.returncode == 0, out.stderr
        for name in (chan, mb_name, pub_name, slot_name, rpc_name):
            assert name in out.stdout
        segs = {s["name"]: s for s in json.loads(run("ls", "--json").stdout)}
        assert segs[chan]["kind"] == "channel" and [r["state"] for r in segs[chan]["roles"]] == ["alive", "alive"]
        assert segs[mb_name]["kind"] == "mailbox" and segs[pub_name]["kind"] == "broadcast"
        assert segs[slot_name]["kind"] == "slot" and not segs[chan]["stale"]
        assert any(n.startswith(rpc_name + ".reply-") for n in segs)
        for name, kind in ((chan, "channel"), (mb_name, "mailbox"), (pub_name, "broadcast"), (slot_name, "slot")):
            out = run("inspect", name)
            assert out.returncode == 0, out.stderr
            assert f"kind:      {kind}" in out.stdout
        assert "ring capacity 4.0 KiB" in run("inspect", chan).stdout
        one = json.loads(run("inspect", mb_name, "--json").stdout)
        assert one["params"][1] == shmplane.DEFAULT_MAX_SENDERS
    finally:
        for h in (tx, rx, snd, mb, sub, pub, client, server):
            h.close()
        del slot


def test_gc_dry_run_lists_only_stale_segments(make_name: Any) -> None:
    name = make_name("live")
    tx, rx = shmplane.channel(4096, name=name)
    out = run("gc", "--dry-run")
    assert out.returncode == 0 and f"would remove {name}" not in out.stdout
    assert "stale segment(s)" in out.stdout
    tx.close()
    rx.close()


def test_errors_and_usage() -> None:
    out = run("inspect", "no-such-segment-here")
    assert out.returncode == 1 and "no segment named" in out.stderr
    out = run("frobnicate")
    assert out.returncode == 2
    assert run("--help").returncode == 0 and "inspect" in run("--help").stdout


def test_an_end_closed_before_its_peer_came_leaves_nothing_unless_it_queued(make_name: Any) -> None:
    import os

    def files(n: str) -> list[str]:
        return [f for f in os.listdir("/dev/shm") if f == f"shmplane.{n}" or f.startswith(f"shmplane.{n}@")]

    a, b, c = make_name("a"), make_name("b"), make_name("c")
    shmplane.Sender.create(a, 4096).close()
    shmplane.Receiver.create(b, 4096).close()
    assert files(a) == [] and files(b) == []  # was left forever: gc saw a peer to wait for
    tx = shmplane.Sender.create(c, 4096)
    tx.send(b"kept for a receiver that comes later")
    tx.close()
    assert f"shmplane.{c}" in files(c)  # what it queued waits for its receiver
    rx = shmplane.Receiver.open(c)
    assert rx.recv(timeout=5) == b"kept for a receiver that comes later"
    rx.close()
    assert files(c) == []


def test_inspect_shows_pending_bytes_and_watch_the_rate(make_name: Any) -> None:
    name = make_name("w")
    tx, rx = shmplane.channel(1 << 16, name=name)
    tx.send(b"x" * 1000)
    seg = json.loads(run("inspect", name, "--json").stdout)
    assert seg["pending_bytes"] >= 1000 and seg["published_bytes"] >= 1000
    assert "pending:" in run("inspect", name).stdout
    rx.recv(timeout=5)
    assert json.loads(run("inspect", name, "--json").stdout)["pending_bytes"] == 0
    proc = subprocess.Popen([sys.executable, "-m", "shmplane", "watch", name, "--interval", "0.2", "--count", "3"], stdout=subprocess.PIPE, text=True)
    for _ in range(50):
        tx.send(b"y" * 1000)
        rx.recv(timeout=5)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out.count("/s") >= 3, out
    tx.close()
    rx.close()
    assert run("watch", "no-such-segment-here").returncode == 1


def test_ls_reports_an_empty_segment_file_at_once(make_name: Any) -> None:
    # A creator between shm_open and its first write (or one that died there) leaves an
    # empty file: ls reports it as being initialised without waiting for it (opening
    # waits 2 s for a creator; a survey of many such files must not).
    import os

    name = make_name("empty")
    path = f"/dev/shm/shmplane.{name}"
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    os.close(fd)
    try:
        segs = {s["name"]: s for s in json.loads(run("ls", "--json").stdout)}
        assert "has not finished initialising" in (segs[name]["error"] or "")
    finally:
        os.unlink(path)


def test_bench_runs_beside_the_installed_peers() -> None:
    out = run("bench", "--quick", "--json")
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)
    ping, array = results["ping"], results["array"]
    assert ping["shmplane"]["p50"] > 0 and ping["shmplane"]["ratio"] == 1.0
    assert ping["multiprocessing.Pipe"]["n"] > 0 and ping["multiprocessing.Pipe"]["ratio"] > 0
    for label in ("pyzmq PAIR ipc", "faster-fifo"):  # measured if installed, else skipped
        assert "p50" in ping[label] or "not installed" in ping[label]["skipped"]
    for label in ("shmplane", "shmplane, copy out", "pickle-5 over a Pipe", "shared_memory copy + view"):
        assert array[label]["p99"] >= array[label]["p50"] > 0
    text = run("bench", "--quick")
    assert text.returncode == 0 and "64-byte round trip" in text.stdout and "ratio" in text.stdout
    for sub in ("ls", "inspect", "gc", "watch", "bench"):
        assert run(sub, "--help").returncode == 0, sub
