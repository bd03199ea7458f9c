"""Passing endpoints to other processes (pickling support).

An endpoint pickles as a duplicate of its segment descriptor via
``multiprocessing.reduction.DupFd``: under ``spawn``/``forkserver`` the child inherits
the descriptor at start, otherwise ``multiprocessing``'s resource sharer hands it over.
The descriptor shares the endpoint's open file description, so the role (and its
lock) moves with it and the parent may close its copy right after ``start()``, as with
``multiprocessing.Pipe``. Under ``fork`` the child inherits the object itself.
"""

from __future__ import annotations

import weakref
from multiprocessing import util
from multiprocessing.reduction import DupFd
from typing import Any

from ._shmplane import Receiver, Sender

__all__ = ["reduce_endpoint", "reduce_mailbox", "track"]


def _close_if_alive(ref: "weakref.ref[Sender | Receiver]") -> None:
    endpoint = ref()
    if endpoint is not None:
        at_exit = getattr(endpoint, "_close_at_exit", None)
        # A receiver's views die with the process: their messages are given back so
        # that the close completes (a peer sees a clean close, not a death).
        (at_exit or endpoint.close)()


def track(endpoint: Sender | Receiver) -> None:
    """Close ``endpoint`` when this process exits, even through ``os._exit`` as
    ``multiprocessing`` children do (its exit function runs these finalizers), so a
    peer sees a clean close (DisconnectedError), not a death. Holds only a weak
    reference: an endpoint that is garbage-collected first closes itself.

    A ``fork`` child inherits every endpoint but not the finalizers (multiprocessing
    drops the parent's): ``register_after_fork`` tracks the inherited copies again in
    the child, so its exit closes them too (a copy it never used just lets go of it)."""
    util.Finalize(endpoint, _close_if_alive, args=(weakref.ref(endpoint),), exitpriority=10)
    util.register_after_fork(endpoint, track)


def _set_policy(endpoint: Any, policy: str) -> None:
    if policy.startswith("adaptive(spin_us="):
        endpoint.set_policy("adaptive", float(policy[len("adaptive(spin_us=") : -1]))
    else:
        endpoint.set_policy(policy)


def _rebuild(kind: str, dupfd: Any, name: str | None, policy: str, doorbell: Any = None, lane: int | None = None) -> Sender | Receiver:
    fd = dupfd.detach()
    bell = None if doorbell is None else doorbell.detach()
    endpoint: Sender | Receiver
    if kind == "publisher":
        from ._shmplane import Publisher

        endpoint = Publisher._from_fd(fd, name)
    elif kind == "subscriber":
        from ._shmplane import Subscriber

        assert lane is not None
        endpoint = Subscriber._from_fd(fd, lane, name, bell)
    elif kind == "sender":
        endpoint = Sender._from_fd(fd, name, bell, lane)
    else:
        endpoint = Receiver._from_fd(fd, name, bell)
    _set_policy(endpoint, policy)
    return endpoint


def reduce_endpoint(endpoint: Sender | Receiver, kind: str) -> tuple[Any, tuple[Any, ...]]:
    """``__reduce__`` of Sender/Receiver."""
    bell = endpoint._doorbell_fd()
    # The doorbell's write end travels too: while the copy is in flight the FIFO must
    # keep a writer, or a waiter on the other end would read the peer as closed.
    # A mailbox's sender carries its lane: the copy writes the same one.
    # A subscriber carries its slot (the copy shares its position).
    if kind == "publisher":
        lane = None
    elif kind == "subscriber":
        lane = getattr(endpoint, "index")
    else:
        lane = endpoint._lane() if isinstance(endpoint, Sender) else None
    return _rebuild, (
        kind,
        DupFd(endpoint._segment_fd()),
        endpoint.name,
        endpoint.policy,
        None if bell is None else DupFd(bell),
        lane,
    )


def _rebuild_mailbox(dupfd: Any, name: str | None, policy: str) -> Any:
    from ._shmplane import Mailbox

    mb = Mailbox._from_fd(dupfd.detach(), name)
    _set_policy(mb, policy)
    return mb


def reduce_mailbox(mb: Any) -> tuple[Any, tuple[Any, ...]]:
    """``__reduce__`` of Mailbox: a duplicate of its segment descriptor, whose open file
    description holds the receiver's roles (every lane's), so the copy takes turns
    with the original on each lane, as a Receiver's copies do."""
    return _rebuild_mailbox, (DupFd(mb._segment_fd()), mb.name, mb.policy)


def _rebuild_slot(dupfd: Any, name: str | None, policy: str | None = None) -> Any:
    from ._shmplane import ByteSlot

    slot = ByteSlot._from_fd(dupfd.detach(), name)
    if policy is not None:
        _set_policy(slot, policy)
    return slot


def reduce_slot(slot: Any) -> tuple[Any, tuple[Any, ...]]:
    """``__reduce__`` of ByteSlot: a duplicate of its descriptor, like the endpoints,
    and its wait policy (a child waits as the parent's handle was set to)."""
    return _rebuild_slot, (DupFd(slot.fileno()), slot.name, slot.policy)
