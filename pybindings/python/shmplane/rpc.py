"""Method proxies over shmplane RPC, in the manner of ``sipyco.pc_rpc`` and
``multiprocessing`` managers: expose an object's public methods under a name, call them
from any process as ``proxy.method(*args, **kwargs)``.

    # worker process
    shmplane.rpc.serve(Instrument(), "instrument")          # blocks, serving calls

    # master process
    inst = shmplane.rpc.connect("instrument", timeout=10)
    inst.set_voltage(1.5)                                   # runs in the worker
    data = inst.read_trace(1_000_000)                       # a list or ndarray, one reply
    await inst.read_trace.call_async(10)                    # from asyncio

Each call travels as one pickled ``(method, args, kwargs)`` request (ndarrays inside go
out of band, without a copy into the pickle) and one reply; a method that raises sends
``RemoteError`` (type name, message and the worker's traceback) and the worker keeps
serving. Names starting with ``_`` are not callable (``AttributeError`` on the client,
``RemoteError`` if forced). Calls run at most once, as ``RpcClient.call``.
"""

from __future__ import annotations

import inspect
from typing import Any

from ._shmplane import RpcClient, RpcServer

__all__ = ["serve", "serve_async", "connect", "Proxy", "Method", "dispatch"]

# Ask the server which methods the target has (the one request that is not a call).
_LIST = "__shmplane_methods__"


def _methods(target: Any) -> list[str]:
    return sorted(n for n in dir(target) if not n.startswith("_") and callable(getattr(target, n, None)))


def dispatch(target: Any, request: Any) -> Any:
    """Run one proxy request ``(method, args, kwargs)`` on ``target``.

    Raises:
        AttributeError: a private (``_``-prefixed) or unknown method name.
        TypeError: a malformed request.
        Exception: whatever the method raises.
    """
    if request == _LIST:
        return _methods(target)
    if not (isinstance(request, tuple) and len(request) == 3 and isinstance(request[0], str)):
        raise TypeError(f"a proxy request is (method, args, kwargs), got {type(request).__name__}")
    name, args, kwargs = request
    if name.startswith("_"):
        raise AttributeError(f"{name!r} is private: only public methods can be called")
    method = getattr(target, name, None)
    if method is None or not callable(method):
        raise AttributeError(f"{type(target).__name__} has no public method {name!r}")
    return method(*args, **kwargs)


def serve(target: Any, name: str, *, max_clients: int = 64, policy: str = "adaptive", spin_us: float = 20.0) -> None:
    """Expose ``target``'s public methods as server ``name`` and serve calls until the
    server is closed (from another thread) or Ctrl-C (which returns quietly).

    Raises:
        AlreadyExistsError: a live server has ``name``.
        InvalidNameError, NoSpaceError: as ``RpcServer.create``.
    """
    with RpcServer.create(name, max_clients) as server:
        server.set_policy(policy, spin_us)
        try:
            server.serve(lambda request: dispatch(target, request))
        except KeyboardInterrupt:
            pass  # Ctrl-C: stop serving; the server closes on the way out


async def serve_async(target: Any, name: str, *, max_clients: int = 64) -> None:
    """``serve`` from an asyncio event loop: a method that is a coroutine function is
    awaited; the loop stays free while no call is waiting."""
    server = RpcServer.create(name, max_clients)

    async def handle(request: Any) -> Any:
        result = dispatch(target, request)
        if inspect.isawaitable(result):
            result = await result
        return result

    try:
        await server.serve_async(handle)
    finally:
        server.close()


class Method:
    """One remote method: call it (blocking) or ``await m.call_async(...)``."""

    def __init__(self, proxy: Proxy, name: str) -> None:
        self._proxy = proxy
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the method in the server's process and return its result, waiting at
        most the proxy's ``timeout``. Raises as ``RpcClient.call``."""
        return self._proxy._client.call((self._name, args, kwargs), timeout=self._proxy._timeout)

    async def call_async(self, *args: Any, **kwargs: Any) -> Any:
        """The call without blocking the event loop."""
        return await self._proxy._client.call_async((self._name, args, kwargs), self._proxy._timeout)

    def __repr__(self) -> str:
        return f"<shmplane.rpc.Method {self._name} of {self._proxy._client.name!r}>"


class Proxy:
    """The client side of ``serve``: attribute access gives a ``Method`` for each public
    method the target had when the proxy connected. Picklable (the copy connects as a
    client of its own). A context manager; ``close()`` frees the client's slot."""

    def __init__(self, client: RpcClient, timeout: float | None = None) -> None:
        self._client = client
        self._timeout = timeout
        self._names = frozenset(client.call(_LIST, timeout=timeout))

    def __getattr__(self, name: str) -> Method:
        if name.startswith("_"):
            raise AttributeError(f"{name!r} is private: only public methods can be called")
        if name not in self._names:
            raise AttributeError(f"the object served as {self._client.name!r} has no public method {name!r}")
        return Method(self, name)

    def __dir__(self) -> list[str]:
        return sorted(self._names)

    def close(self) -> None:
        """Close the client (idempotent): frees its slot on the server."""
        self._client.close()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, tuple[str, float | None]]:
        return (connect, (self._client.name, self._timeout))

    def __repr__(self) -> str:
        return f"<shmplane.rpc.Proxy of {self._client.name!r}: {', '.join(sorted(self._names))}>"


def connect(name: str, timeout: float | None = None, *, policy: str = "adaptive", spin_us: float = 20.0) -> Proxy:
    """A proxy of the object served as ``name``, waiting at most ``timeout`` seconds for
    the server to appear; ``timeout`` also bounds each call.

    Raises:
        NotFoundError: no server within ``timeout``.
        RoleTakenError: the server has ``max_clients`` clients already.
        PeerDeadError, DisconnectedError: the server died or closed (on any call).
    """
    client = RpcClient.connect(name, timeout)
    client.set_policy(policy, spin_us)
    return Proxy(client, timeout)
