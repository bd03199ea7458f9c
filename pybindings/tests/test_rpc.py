"""RPC with real processes: servers and clients in children (fork, spawn), every kind of
request and reply (bytes, objects, an 8 MB ndarray, a list of a million floats) in one
message each, streams, RemoteError with the server's traceback, at-most-once under
retries and late replies, a server killed (SIGKILL) and replaced, a client killed and
its slot reused, Ctrl-C in a waiting call, method proxies, asyncio, pickled clients,
and bad arguments."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import threading
import time
from typing import Any

import numpy as np
import pytest

import shmplane
from shm_helpers import get_report, wait_until_blocked, when_blocked

# ------------------------------------------------------------------ children


def _echo_server(name: str, ready: Any, max_clients: int = 8) -> None:
    with shmplane.RpcServer.create(name, max_clients) as server:
        ready.send("serving")

        def handle(value: Any) -> Any:
            if isinstance(value, str) and value == "hang":
                time.sleep(60)
            if isinstance(value, str) and value == "raise":
                raise ValueError("bad value from the client")
            if isinstance(value, str) and value == "stop":
                raise SystemExit(0)  # not an Exception: ends serve(); the server closes
            return value

        server.serve(handle)


def _client_calls(name: str, tag: int, n: int) -> int:
    with shmplane.RpcClient.connect(name, timeout=20) as client:
        for i in range(n):
            assert client.call((tag, i, "x" * (i % 300)), timeout=20) == (tag, i, "x" * (i % 300))
    return n


def _connect_then_sleep(name: str, ready: Any) -> None:
    client = shmplane.RpcClient.connect(name, timeout=20)
    assert client.call("hello", timeout=20) == "hello"
    ready.send("connected")
    time.sleep(60)  # killed by the test


def _call_with_pickled_client(client: shmplane.RpcClient) -> Any:
    with client:
        return client.call(("from child", os.getpid()), timeout=20)


class Instrument:
    def __init__(self) -> None:
        self.voltage = 0.0

    def set_voltage(self, v: float) -> float:
        self.voltage = v
        return v

    def trace(self, n: int) -> list[float]:
        return [float(i) for i in range(n)]

    def frame(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.full(shape, 7.0)

    def fail(self) -> None:
        raise KeyError("no such channel")

    def _secret(self) -> str:
        return "never"

    async def later(self, x: int) -> int:
        await asyncio.sleep(0)
        return x + 1


def _serve_instrument(name: str, ready: Any) -> None:
    threading.Timer(0.2, lambda: ready.send("serving")).start()
    shmplane.rpc.serve(Instrument(), name)


def _serve_instrument_async(name: str, ready: Any) -> None:
    async def main() -> None:
        asyncio.get_running_loop().call_later(0.2, ready.send, "serving")
        await shmplane.rpc.serve_async(Instrument(), name)

    asyncio.run(main())


def _stop(name: str, procs: Any, p: Any) -> None:
    """End an ``_echo_server`` cleanly (so that it removes its segments)."""
    with shmplane.RpcClient.connect(name, timeout=10) as client:
        # The handler's SystemExit stops serve(), which first answers the call.
        with pytest.raises(shmplane.RemoteError, match="stopped"):
            client.call("stop", timeout=20)
    procs.join(p)


def _interrupt(procs: Any, p: Any) -> None:
    """End a serving child with Ctrl-C (SIGINT): ``serve`` raises KeyboardInterrupt and
    the server closes on the way out, removing its segments."""
    os.kill(p.pid, signal.SIGINT)
    procs.join(p, exitcode=None)


def _wait_for(conn: Any, what: str, timeout: float = 30) -> None:
    assert conn.poll(timeout), f"child did not say {what!r}"
    assert conn.recv() == what


def _start_server(procs: Any, target: Any, name: str, method: str = "spawn") -> Any:
    ctx = __import__("multiprocessing").get_context(method)
    r, w = ctx.Pipe(duplex=False)
    p = procs.start(target, name, w, method=method)
    _wait_for(r, "serving")
    return p


def _thread_server(name: str, handler: Any, max_clients: int = 4) -> tuple[shmplane.RpcServer, threading.Thread]:
    server = shmplane.RpcServer.create(name, max_clients)
    t = threading.Thread(target=server.serve, args=(handler,), daemon=True)
    t.start()
    return server, t


# --------------------------------------------------------------------- tests


def test_every_kind_and_size_in_one_reply(make_name: Any) -> None:
    server, t = _thread_server(make_name("s"), lambda v: v)
    with shmplane.RpcClient.connect(server.name, timeout=10) as client:
        assert client.call(b"raw") == b"raw"
        assert client.call(None) is None
        assert client.call({"a": [1, 2.5, "x"]}) == {"a": [1, 2.5, "x"]}
        a = np.arange(12, dtype=np.int16).reshape(3, 4).T
        got = client.call(a)
        assert got.dtype == a.dtype and got.shape == a.shape and (got == a).all()
        big = np.random.default_rng(1).random(1 << 20)  # 8 MB: larger than every ring
        assert np.array_equal(client.call(big), big)
        floats = [float(i) for i in range(1_000_000)]
        assert client.call(floats) == floats
        assert client.seq == 6
    server.close()
    t.join(5)
    assert not t.is_alive()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_many_clients_in_children(procs: Any, make_name: Any, method: str) -> None:
    name = make_name("s")
    server_proc = _start_server(procs, _echo_server, name, method)
    children = [procs.start_reporting(_client_calls, name, tag, 200, method=method) for tag in range(4)]
    assert [get_report(r, 60) for _, r in children] == [200] * 4
    with shmplane.RpcClient.connect(name, timeout=10) as client:
        assert client.call("still serving") == "still serving"
    _stop(name, procs, server_proc)


def test_remote_error_carries_type_message_and_traceback(procs: Any, make_name: Any) -> None:
    name = make_name("s")
    p = _start_server(procs, _echo_server, name)
    with shmplane.RpcClient.connect(name, timeout=10) as client:
        with pytest.raises(shmplane.RemoteError) as info:
            client.call("raise", timeout=10)
        e = info.value
        assert (e.kind, e.message) == ("ValueError", "bad value from the client")
        assert "Traceback" in e.traceback and "handle" in e.traceback
        assert "ValueError" in str(e)
        assert pickle.loads(pickle.dumps(e)).kind == "ValueError"
        assert client.call("after", timeout=10) == "after"  # the server goes on
    _stop(name, procs, p)


def test_streams(make_name: Any) -> None:
    server = shmplane.RpcServer.create(make_name("s"))

    def serve() -> None:
        for request in server:
            n = request.value
            for i in range(n):
                request.reply(np.full(3, i), last=False)
            request.reply("done")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    with shmplane.RpcClient.connect(server.name, timeout=10) as client:
        parts = list(client.stream(4, timeout=10))
        assert [p.tolist() for p in parts[:4]] == [[i] * 3 for i in range(4)] and parts[4] == "done"
        # A plain call answered by a stream gets the parts as a list.
        assert client.call(1, timeout=10)[1] == "done"
        # An abandoned stream is discarded by the next call.
        it = client.stream(5, timeout=10)
        next(it)
        assert client.call(0, timeout=10) == "done"
    server.close()
    t.join(5)


def test_a_retry_runs_the_call_once_and_late_replies_are_dropped(make_name: Any) -> None:
    runs: list[Any] = []
    release = threading.Event()
    server = shmplane.RpcServer.create(make_name("s"))

    def serve() -> None:
        for request in server:
            runs.append(request.value)
            if request.value == "slow":
                release.wait(20)
            request.reply(("done", request.value))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    with shmplane.RpcClient.connect(server.name, timeout=10) as client:
        with pytest.raises(shmplane.Timeout):
            client.call("slow", timeout=0.05)
        release.set()
        # The retry of the call in progress gets its reply; the call ran once.
        assert client.call("slow", timeout=10, retry=True) == ("done", "slow")
        assert runs == ["slow"]
        # A call that timed out and was not retried: its late reply never answers the next.
        release.clear()
        with pytest.raises(shmplane.Timeout):
            client.call("slow", timeout=0.05)
        release.set()
        assert client.call("next", timeout=10) == ("done", "next")
        assert runs == ["slow", "slow", "next"]
        # retry=True after an answered call is a new call.
        assert client.call("again", timeout=10, retry=True) == ("done", "again")
    server.close()
    t.join(5)
    # The retry was not sent again: the client waited for the call it had posted in its
    # call slot (a request through the lane's ring is sent again and dropped as a
    # duplicate: channels/tests/rpc.rs covers both).
    assert server.duplicates == 0
    # "next" goes through the slot unless the timed-out "slow" still ran there.
    assert server.slot_calls in (3, 4)


def test_killed_server_fails_calls_and_a_new_one_serves(procs: Any, make_name: Any) -> None:
    name = make_name("s")
    first = _start_server(procs, _echo_server, name)
    client = shmplane.RpcClient.connect(name, timeout=10)
    assert client.call("one", timeout=10) == "one"
    result: list[Any] = []

    def pending() -> None:
        try:
            client.call("hang", timeout=30)
        except Exception as e:  # noqa: BLE001
            result.append(e)

    t = threading.Thread(target=pending)
    t.start()
    assert t.native_id is not None
    wait_until_blocked(os.getpid(), t.native_id)  # the call waits for its reply
    os.kill(first.pid, signal.SIGKILL)
    procs.join(first, exitcode=None)
    t.join(10)
    assert not t.is_alive(), "the pending call did not end"
    assert isinstance(result[0], shmplane.PeerDeadError) and "server" in str(result[0])
    assert not client.is_connected()
    with pytest.raises(shmplane.PeerDeadError):
        client.call("two", timeout=10)
    second = _start_server(procs, _echo_server, name)
    with shmplane.RpcClient.connect(name, timeout=10) as fresh:
        assert fresh.call("three", timeout=10) == "three"
    with pytest.raises(shmplane.PeerDeadError):
        client.call("stale", timeout=10)
    client.close()
    _stop(name, procs, second)


def test_killed_client_frees_its_slot(procs: Any, make_name: Any) -> None:
    one = make_name("one")
    server, t = _thread_server(one, lambda v: v, max_clients=1)
    ctx = __import__("multiprocessing").get_context("spawn")
    for _ in range(2):
        r, w = ctx.Pipe(duplex=False)
        victim = procs.start(_connect_then_sleep, one, w)
        _wait_for(r, "connected")
        with pytest.raises(shmplane.RoleTakenError):
            shmplane.RpcClient.connect(one, timeout=1)
        os.kill(victim.pid, signal.SIGKILL)
        procs.join(victim, exitcode=None)
        with shmplane.RpcClient.connect(one, timeout=10) as client:
            assert client.call("mine", timeout=10) == "mine"
    server.close()
    t.join(5)


def test_ctrl_c_interrupts_a_waiting_call(make_name: Any) -> None:
    server = shmplane.RpcServer.create(make_name("s"))  # never answers
    client = shmplane.RpcClient.connect(server.name, timeout=10)
    # SIGINT only once this thread sleeps waiting for the reply.
    timer = when_blocked(lambda: os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        client.call("wait", timeout=30)
    timer.join()
    # The call can be retried safely; the server sees it once.
    request = server.recv(timeout=10)
    assert request.value == "wait"
    request.reply("answered")
    assert client.call("wait", timeout=10, retry=True) == "answered"
    client.close()
    server.close()


def test_close_from_another_thread_ends_a_blocked_call_and_recv(make_name: Any) -> None:
    server = shmplane.RpcServer.create(make_name("s"))
    client = shmplane.RpcClient.connect(server.name, timeout=10)
    errors: list[Any] = []

    def call() -> None:
        try:
            client.call("x")
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=call)
    t.start()
    request = server.recv(timeout=10)
    client.close()
    t.join(10)
    assert isinstance(errors[0], shmplane.ClosedError)
    assert request.reply("too late") in (True, False)
    got: list[Any] = []
    t2 = threading.Thread(target=lambda: got.append(list(server)))
    t2.start()
    assert t2.native_id is not None
    wait_until_blocked(os.getpid(), t2.native_id)  # the iteration waits for a request
    server.close()
    t2.join(10)
    assert got == [[]]


def test_method_proxies(procs: Any, make_name: Any) -> None:
    name = make_name("s")
    p = _start_server(procs, _serve_instrument, name)
    with shmplane.rpc.connect(name, timeout=10) as inst:
        assert "set_voltage" in dir(inst) and "_secret" not in dir(inst)
        assert inst.set_voltage(1.5) == 1.5
        trace = inst.trace(1_000_000)
        assert len(trace) == 1_000_000 and trace[-1] == 999_999.0
        assert inst.frame((1024, 1024)).shape == (1024, 1024)
        with pytest.raises(AttributeError):
            inst._secret()
        with pytest.raises(AttributeError):
            inst.nonexistent()
        with pytest.raises(shmplane.RemoteError) as info:
            inst.fail()
        assert info.value.kind == "KeyError"
        # Forced through the raw client: refused on the server too.
        with pytest.raises(shmplane.RemoteError, match="private"):
            inst._client.call(("_secret", (), {}), timeout=10)
        assert "Proxy" in repr(inst)
        copy = pickle.loads(pickle.dumps(inst))
        assert copy.set_voltage(2.0) == 2.0
        copy.close()
    _interrupt(procs, p)


def test_asyncio_client_and_server(procs: Any, make_name: Any) -> None:
    name = make_name("s")
    p = _start_server(procs, _serve_instrument_async, name)

    async def main() -> None:
        inst = shmplane.rpc.connect(name, timeout=10)
        results = await asyncio.gather(inst.later.call_async(1), asyncio.sleep(0.01))
        assert results[0] == 2
        assert await inst.set_voltage.call_async(3.0) == 3.0
        client = shmplane.RpcClient.connect(name, timeout=10)
        big = await client.call_async(("trace", (200_000,), {}), 10)
        assert len(big) == 200_000
        with pytest.raises(shmplane.RemoteError):
            await client.call_async(("fail", (), {}), 10)
        client.close()
        inst.close()

    asyncio.run(main())
    _interrupt(procs, p)


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_pickled_client_connects_as_a_client_of_its_own(procs: Any, make_name: Any, method: str) -> None:
    server, t = _thread_server(make_name("s"), lambda v: v)
    client = shmplane.RpcClient.connect(server.name, timeout=10)
    p, r = procs.start_reporting(_call_with_pickled_client, client, method=method)
    got = get_report(r, 30)
    assert got[0] == "from child"
    assert client.call("parent", timeout=10) == "parent"
    procs.join(p)
    client.close()
    server.close()
    t.join(5)


def test_bad_arguments_and_names(make_name: Any) -> None:
    name = make_name("s")
    with pytest.raises(shmplane.NotFoundError):
        shmplane.RpcClient.connect(name, timeout=0.05)
    server = shmplane.RpcServer.create(name, 2)
    with pytest.raises(shmplane.AlreadyExistsError):
        shmplane.RpcServer.create(name)
    with pytest.raises(shmplane.InvalidNameError):
        shmplane.RpcServer.create("x" * 190)
    with pytest.raises(shmplane.InvalidArgumentError):
        shmplane.RpcServer.create(make_name("z"), 0)
    with pytest.raises(ValueError):
        shmplane.RpcClient.connect(name, timeout=-1)
    with pytest.raises(shmplane.InvalidArgumentError):
        pickle.dumps(server)
    _tx, _rx = shmplane.channel(4096, name=make_name("chan"))
    _tx.close()
    with pytest.raises(shmplane.WrongKindError):
        shmplane.RpcClient.connect(_rx.name, timeout=1)
    _rx.close()
    client = shmplane.RpcClient.connect(name, timeout=1)
    assert "RpcServer" in repr(server) and "RpcClient" in repr(client)
    with pytest.raises(shmplane.Timeout):
        client.call("nobody answers", timeout=0.05)
    client.close()
    with pytest.raises(shmplane.ClosedError):
        client.call("x")
    server.close()


def test_an_unpicklable_result_is_sent_as_an_error_and_serving_goes_on(make_name: Any) -> None:
    def handler(v: Any) -> Any:
        if v == "lock":
            return threading.Lock()  # cannot be pickled
        return v

    server, t = _thread_server(make_name("s"), handler)
    with shmplane.RpcClient.connect(server.name, timeout=10) as client:
        with pytest.raises(shmplane.RemoteError) as info:
            client.call("lock", timeout=10)
        assert "pickle" in str(info.value).lower()
        assert client.call("fine", timeout=10) == "fine"
    server.close()
    t.join(5)
    assert not t.is_alive()


def test_a_client_that_stops_reading_does_not_hold_the_server(make_name: Any) -> None:
    name = make_name("s")
    server = shmplane.RpcServer.create(name, 4, reply_timeout=0.2)
    big = np.zeros(1 << 18)  # 2 MB: more than the idle client's reply channel holds

    def handler(v: Any) -> Any:
        if v == "big":
            time.sleep(0.1)  # the caller has given up by then, and does not read
            return big
        return v

    def serve() -> None:
        server.serve(handler)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    idle = shmplane.RpcClient.connect(name, timeout=10, reply_capacity=4096)
    with pytest.raises(shmplane.Timeout):
        idle.call("big", timeout=0.02)
    with shmplane.RpcClient.connect(name, timeout=10) as busy:
        assert busy.call("still served", timeout=10) == "still served"
    with pytest.raises((shmplane.RemoteError, shmplane.TruncatedMessageError)):
        idle.call("big", timeout=10, retry=True)
    idle.close()
    server.close()
    t.join(5)


def _counting_server(name: str, ready: Any) -> None:
    runs: dict[Any, int] = {}

    def handle(v: Any) -> Any:
        op, key = v
        if op == "count":
            return runs.get(key, 0)
        runs[key] = runs.get(key, 0) + 1
        time.sleep(0.3)  # longer than the caller's first timeout
        return ("done", key)

    with shmplane.RpcServer.create(name) as server:
        ready.send("serving")
        try:
            server.serve(handle)
        except KeyboardInterrupt:
            pass


def test_at_most_once_with_the_server_in_another_process(procs: Any, make_name: Any) -> None:
    name = make_name("s")
    p = _start_server(procs, _counting_server, name)
    with shmplane.RpcClient.connect(name, timeout=10) as client:
        # A retry of a call still running: answered once it is done, run once.
        with pytest.raises(shmplane.Timeout):
            client.call(("slow", 1), timeout=0.05)
        assert client.call(("slow", 1), timeout=10, retry=True) == ("done", 1)
        assert client.call(("count", 1), timeout=10) == 1
        # A retry of a call answered after the caller gave up: its reply, not a rerun.
        with pytest.raises(shmplane.Timeout):
            client.call(("slow", 2), timeout=0.05)
        time.sleep(0.5)
        assert client.call(("slow", 2), timeout=10, retry=True) == ("done", 2)
        assert client.call(("count", 2), timeout=10) == 1
        # A late reply is never the answer to the next call.
        with pytest.raises(shmplane.Timeout):
            client.call(("slow", 3), timeout=0.05)
        assert client.call(("count", 3), timeout=10) == 1
    _interrupt(procs, p)


def test_a_hundred_clients_commit_a_few_tens_of_mib(make_name: Any) -> None:
    name = make_name("s")
    server = shmplane.RpcServer.create(name, 100)
    clients = [shmplane.RpcClient.connect(name, timeout=10) for _ in range(100)]
    files = [f for f in os.listdir("/dev/shm") if f.startswith(f"shmplane.{name}")]
    total = sum(os.stat(os.path.join("/dev/shm", f)).st_size for f in files)
    assert len([f for f in files if ".reply-" in f and "@" not in f]) == 100
    assert total < 40 * 2**20, f"{total / 2**20:.1f} MiB"
    for c in clients:
        c.close()
    server.close()


def test_concurrent_call_async_on_one_client_take_turns(make_name: Any) -> None:
    server, t = _thread_server(make_name("s"), lambda v: ("reply to", v))

    async def main() -> list[Any]:
        client = shmplane.RpcClient.connect(server.name, timeout=10)
        try:
            return list(await asyncio.gather(*(client.call_async(i, 10) for i in range(20))))
        finally:
            client.close()

    assert asyncio.run(main()) == [("reply to", i) for i in range(20)]
    server.close()
    t.join(5)


def test_call_async_timeout_zero_with_a_free_client_and_cancel_during_a_large_send(make_name: Any) -> None:
    server, t = _thread_server(make_name("s"), lambda v: len(v) if isinstance(v, bytes) else v)

    async def main() -> tuple[Any, Any]:
        client = shmplane.RpcClient.connect(server.name, timeout=10)
        try:
            # A free client: its turn is taken at once, even with no time to wait for it
            # (the reply itself may then still time out).
            try:
                first = await client.call_async("ping", 0)
            except shmplane.Timeout as e:
                assert "previous call" not in str(e)
                first = "timed out waiting for the reply"
            # Cancelled while a large request is sent from a thread: the next call waits
            # for that thread to let go of the client, then works.
            task = asyncio.ensure_future(client.call_async(b"x" * (4 << 20), 10))
            await asyncio.sleep(0.001)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            return first, await client.call_async("after", 10)
        finally:
            client.close()

    first, after = asyncio.run(main())
    assert first in ("ping", "timed out waiting for the reply")
    assert after == "after"
    server.close()
    t.join(5)


def test_a_reply_that_cannot_be_sent_is_answered_with_the_error(make_name: Any) -> None:
    # 700 out-of-band buffers: a header larger than one record of a 4 KiB reply channel.
    server, t = _thread_server(make_name("s"), lambda v: [np.zeros(1) for _ in range(700)])
    with shmplane.RpcClient.connect(server.name, timeout=10, reply_capacity=4096) as client:
        with pytest.raises(shmplane.RemoteError) as info:
            client.call("many buffers", timeout=10)
        assert info.value.kind == "MessageTooLargeError"
    server.close()
    t.join(5)


def test_an_abandoned_stream_iterator_raises_instead_of_taking_the_next_calls_parts(make_name: Any) -> None:
    server = shmplane.RpcServer.create(make_name("s"))

    def serve() -> None:
        for request in server:
            for i in range(3):
                request.reply((request.value, i), last=False)
            request.reply((request.value, "end"))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    with shmplane.RpcClient.connect(server.name, timeout=10) as client:
        first = client.stream("a", timeout=10)
        assert next(first) == ("a", 0)
        second = client.stream("b", timeout=10)
        assert next(second) == ("b", 0)
        with pytest.raises(shmplane.InvalidArgumentError):
            next(first)
        assert list(second) == [("b", 1), ("b", 2), ("b", "end")]
    server.close()
    t.join(5)
