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
            for n in (10, 1000, 100_000):
                a = client.call(n, timeout=WATCHDOG, copy=False)
                assert not a.flags.writeable and a.shape == (n,) and (a == 7.0).all()
                views.append(a)
            # Views held across calls: later replies still arrive, earlier ones intact.
            assert all((v == 7.0).all() for v in views)
            mv = client.call(b"bytes back", timeout=WATCHDOG, copy=False)
            assert isinstance(mv, memoryview) and mv.readonly and bytes(mv) == b"bytes back"
            obj = client.call({"k": [1, 2]}, timeout=WATCHDOG, copy=False)
            assert obj == {"k": [1, 2]}
            # Errors still raise; a reply too large to be one record comes as a copy.
            with pytest.raises(shmplane.RemoteError, match="no such thing"):
                client.call("boom", timeout=WATCHDOG, copy=False)
            big = client.call(300_000, timeout=WATCHDOG, copy=False)
            assert big.flags.writeable and (big == 7.0).all()
            del views, mv, big
            assert client.call(5, timeout=WATCHDOG).tolist() == [7.0] * 5
            assert client.call("stop", timeout=WATCHDOG, copy=False) == "bye"
    finally:
        p.join(WATCHDOG)
    assert p.exitcode == 0
