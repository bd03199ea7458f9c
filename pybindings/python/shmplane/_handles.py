"""Passing endpoints to other processes (pickling support).

An endpoint pickles as a duplicate of its segment descriptor via
``multiprocessing.reduction.DupFd``: under ``spawn``/``forkserver`` the child inherits
the descriptor at start, otherwise ``multiprocessing``'s resource sharer hands it over.
The descriptor shares the endpoint's open file description, so the role (and its
lock) moves with it and the parent may close its copy right after ``start()``, as with
``multiprocessing.Pipe``. Under ``fork`` the child inherits the object itself.
"""

from __future__ import annotations

from multiprocessing.reduction import DupFd
from typing import Any

from ._shmplane import Receiver, Sender

__all__ = ["reduce_endpoint"]


def _rebuild(kind: str, dupfd: Any, name: str | None, policy: str) -> Sender | Receiver:
    fd = dupfd.detach()
    cls = Sender if kind == "sender" else Receiver
    endpoint = cls._from_fd(fd, name)
    if policy.startswith("adaptive(spin_us="):
        endpoint.set_policy("adaptive", float(policy[len("adaptive(spin_us=") : -1]))
    else:
        endpoint.set_policy(policy)
    return endpoint


def reduce_endpoint(endpoint: Sender | Receiver, kind: str) -> tuple[Any, tuple[Any, ...]]:
    """``__reduce__`` of Sender/Receiver."""
    return _rebuild, (kind, DupFd(endpoint.fileno()), endpoint.name, endpoint.policy)
