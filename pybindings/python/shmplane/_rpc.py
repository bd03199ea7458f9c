"""Streams of replies for ``RpcClient.stream`` (the iteration lives in Python so that a
generator can be abandoned: the rest of an abandoned stream is discarded by the next
call, whose replies carry a newer sequence number; the abandoned iterator then raises
InvalidArgumentError instead of yielding that call's parts)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def stream(client: Any, obj: Any, timeout: float | None = None) -> Iterator[Any]:
    """Call with ``obj`` and yield each part of the reply until the last (inclusive).

    Raises:
        RemoteError: the handler raised (after the parts sent before it).
        PeerDeadError, DisconnectedError, Timeout, ClosedError: as ``RpcClient.call``.
    """
    seq = client._send_call(obj, timeout)

    def parts() -> Iterator[Any]:
        while True:
            # Raises InvalidArgumentError if another call was made on the client meanwhile.
            got = client._next_part(timeout, seq)
            if got is None:
                return
            part, more = got
            yield part
            if not more:
                return

    return parts()
