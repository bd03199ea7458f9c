"""RPC replies as zero-copy views (``client.call(obj, copy=False)``; issue 12 item 1,
"RPC replies where it applies"), with the server in another process."""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

import numpy as np
import pytest

import shmplane

WATCHDOG = 60


def _serve(name: str, ready: Any) -> None:
    with shmplane.RpcServer.create(name, max_clients=2) as server:
        ready.set()
        for request in server:
            what = request.value
            if what == "stop":
                request.reply("bye")
                return
            if what == "boom":
                try:
                    raise ValueError("no such thing")
                except ValueError as e:
                    request.reply_error(type(e).__name__, str(e))
                continue
            if isinstance(what, tuple) and what[0] == "stream":
                for i in range(what[1]):
                    request.reply(b"s" * what[2], last=i == what[1] - 1)
                continue
            if isinstance(what, tuple) and what[0] == "bytes":
                try:
                    request.reply(b"b" * what[1])
                except shmplane.Timeout:
                    pass  # the client held its reply channel full: it gets ReplyLost
                continue
            request.reply(np.full(what, 7.0) if isinstance(what, int) else what)


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_replies_as_views(make_name: Any, method: str) -> None:
    name = make_name("rpcv")
    ctx = mp.get_context(method)
    ready = ctx.Event()
    p = ctx.Process(target=_serve, args=(name, ready))
    p.start()
    try:
        assert ready.wait(WATCHDOG)
        # 4 MiB reply channel: replies up to 1 MiB come whole.
        with shmplane.RpcClient.connect(name, timeout=WATCHDOG, reply_capacity=4 << 20) as client:
            views = []
            for n in (1000, 100_000):
                a = client.call(n, timeout=WATCHDOG, copy=False)
                assert not a.flags.writeable and a.shape == (n,) and (a == 7.0).all()
                views.append(a)
            # A small reply to a small call travels in the call slot: a copy.
            small = client.call(10, timeout=WATCHDOG, copy=False)
            assert small.flags.writeable and small.shape == (10,) and (small == 7.0).all()
            # Views held across calls: later replies still arrive, earlier ones intact.
            assert all((v == 7.0).all() for v in views)
            back = b"bytes back" * 30
            mv = client.call(back, timeout=WATCHDOG, copy=False)
            assert isinstance(mv, memoryview) and mv.readonly and bytes(mv) == back
            assert client.call(b"bytes back", timeout=WATCHDOG, copy=False) == b"bytes back"
            obj = client.call({"k": [1, 2]}, timeout=WATCHDOG, copy=False)
            assert obj == {"k": [1, 2]}
            # Errors still raise; a reply too large to be one record comes as a copy.
            with pytest.raises(shmplane.RemoteError, match="no such thing"):
                client.call("boom", timeout=WATCHDOG, copy=False)
            big = client.call(300_000, timeout=WATCHDOG, copy=False)
            assert big.flags.writeable and (big == 7.0).all()
            del views, mv, big, a
            assert client.call(5, timeout=WATCHDOG).tolist() == [7.0] * 5
            assert client.call("stop", timeout=WATCHDOG, copy=False) == "bye"
    finally:
        p.join(WATCHDOG)
    assert p.exitcode == 0


@pytest.mark.timeout(WATCHDOG)
def test_held_reply_views_never_stall_the_next_calls(make_name: Any) -> None:
    """Review findings: a chunked reply behind held views is refused at once (it stalled
    the server for its reply timeout and was lost); a call while views fill the reply
    channel is refused before it is sent (it could hang for ever); the parts of a
    streamed reply come as copies (collected as views they filled the channel)."""
    name = make_name("rpcv-stall")
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    p = ctx.Process(target=_serve, args=(name, ready))
    p.start()
    try:
        assert ready.wait(WATCHDOG)
        with shmplane.RpcClient.connect(name, timeout=WATCHDOG) as client:  # 256 KiB replies
            parts = client.call(("stream", 6, 60_000), timeout=WATCHDOG, copy=False)
            assert [bytes(x) for x in parts] == [b"s" * 60_000] * 6
            held = [client.call(("bytes", 60_000), timeout=WATCHDOG, copy=False) for _ in range(2)]
            assert client.held == 2 and all(isinstance(v, memoryview) for v in held)
            with pytest.raises(shmplane.InvalidArgumentError, match="release them"):
                client.call(("bytes", 1_000_000), timeout=5, copy=False)  # chunked: refused
            # The refused reply stays the call's: with the views dropped, a retry gets it
            # (or, if the server gave up meanwhile, ReplyLost: it is never run twice).
            held.clear()
            assert client.held == 0
            try:
                assert client.call(("bytes", 1_000_000), timeout=WATCHDOG, retry=True) == b"b" * 1_000_000
            except shmplane.RemoteError as e:
                assert "ReplyLost" in str(e)
            # Views of more than half the reply channel: the next call is refused before
            # it is sent (its reply might not fit: the server would stall, the reply be
            # lost).
            with pytest.raises(shmplane.InvalidArgumentError, match="reply views this client holds"):
                for _ in range(5):
                    held.append(client.call(("bytes", 64_000), timeout=WATCHDOG, copy=False))
            assert len(held) >= 2
            held.clear()
            assert client.call(("bytes", 10), timeout=WATCHDOG) == b"b" * 10
            assert client.call("stop", timeout=WATCHDOG) == "bye"
    finally:
        p.join(10)
        if p.is_alive():
            p.kill()
            p.join()
    assert p.exitcode == 0


EXIT = r"""
import sys, shmplane
c = shmplane.RpcClient.connect(sys.argv[1], timeout=30)
v = c.call(100, timeout=30, copy=False)
if sys.argv[2] == "close":
    c.close()
# exits with the reply view alive
"""


@pytest.mark.timeout(WATCHDOG)
@pytest.mark.parametrize("close", ["close", "noclose"])
def test_a_client_exiting_with_reply_views_leaves_no_reply_channel(make_name: Any, close: str) -> None:
    import glob
    import subprocess
    import sys

    name = make_name("rpcv-exit")
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    p = ctx.Process(target=_serve, args=(name, ready))
    p.start()
    try:
        assert ready.wait(WATCHDOG)
        out = subprocess.run([sys.executable, "-c", EXIT, name, close], capture_output=True, text=True, timeout=WATCHDOG)
        assert out.returncode == 0, out.stderr
        assert glob.glob(f"/dev/shm/shmplane.{name}.reply*") == []
        with shmplane.RpcClient.connect(name, timeout=WATCHDOG) as client:
            assert client.call("stop", timeout=WATCHDOG) == "bye"
    finally:
        p.join(WATCHDOG)


@pytest.mark.timeout(WATCHDOG)
def test_call_async_returns_views_too(make_name: Any) -> None:
    import asyncio

    name = make_name("rpcva")
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    p = ctx.Process(target=_serve, args=(name, ready))
    p.start()
    try:
        assert ready.wait(WATCHDOG)
        with shmplane.RpcClient.connect(name, timeout=WATCHDOG, reply_capacity=4 << 20) as client:

            async def main() -> None:
                a = await client.call_async(1000, timeout=WATCHDOG, copy=False)
                assert not a.flags.writeable and (a == 7.0).all()
                assert client.held == 1
                b = await client.call_async(1000, timeout=WATCHDOG)  # a copy, as before
                assert b.flags.writeable and (b == 7.0).all() and client.held == 1
                del a
                assert client.held == 0
                # A stream answering call_async(copy=False) comes as a list of copies.
                parts = await client.call_async(("stream", 3, 10), timeout=WATCHDOG, copy=False)
                assert parts == [b"s" * 10] * 3 and client.held == 0
                assert await client.call_async("stop", timeout=WATCHDOG, copy=False) == "bye"

            asyncio.run(main())
    finally:
        p.join(WATCHDOG)
    assert p.exitcode == 0
