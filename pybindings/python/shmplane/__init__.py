"""shmplane: lock-free shared-memory channels, mailboxes, broadcasts and latest-value slots between processes.

Change one import and move datasets between processes at memory-bus speed:

    import shmplane
    tx, rx = shmplane.channel()          # like multiprocessing.Pipe(duplex=False)
    tx.send(numpy_array)                 # one copy into shared memory, no pickling
    arr = rx.recv(timeout=5.0)           # one copy out: same dtype and shape

Many senders, one receiver, with a "is there a message?" check as cheap as a flag:

    mb = shmplane.mailbox(name="worker")  # any process: shmplane.Sender.open("worker")
    if mb.pending():                     # one memory load
        cmd = mb.try_recv()

One publisher, many subscribers; each message written once:

    pub = shmplane.broadcast(name="frames")  # any process: shmplane.Subscriber.open("frames")
    sub = pub.subscribe()
    pub.send(numpy_array)                # every subscriber gets it (lossy=True: never waits)

Request/response, one message each way, each call run at most once:

    server = shmplane.RpcServer.create("worker")   # for request in server: request.reply(f(request.value))
    client = shmplane.RpcClient.connect("worker")  # any process
    result = client.call(numpy_array, timeout=5.0)
    proxy = shmplane.rpc.connect("instrument")     # method proxies: shmplane.rpc.serve(obj, name)

Latest values, as ``multiprocessing.sharedctypes`` with reads that are never torn:

    from shmplane import RawArray, RawValue
    params = RawArray("d", 16)           # params[:] is one consistent snapshot
    params.wait_for_update(params.version, timeout=1.0)

Messages of any size fit any channel (large ones stream through in chunks).
Endpoints are context managers, pickle into ``multiprocessing`` children (fork, spawn,
forkserver) as copies that take turns, like ``multiprocessing.Pipe`` connections, and
wait with the GIL released (Ctrl-C works). ``fileno()`` is a readiness descriptor for
``select``/``selectors``/asyncio; ``shmplane.wait([...])`` waits on many endpoints (and
sockets, connections) at once; ``await rx.recv_async()``, ``await tx.send_async(obj)``
and ``async for obj in rx`` serve asyncio programs. Errors derive from ``ShmplaneError``.
See README.md and docs/ for the design, the wire format and the measured figures.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import _handles  # noqa: F401  (pickling support for endpoints)
from . import errors
from ._shmplane import (
    DEFAULT_CAPACITY,
    DEFAULT_LANE_CAPACITY,
    DEFAULT_MAX_SENDERS,
    DEFAULT_MAX_SUBSCRIBERS,
    ByteSlot,
    Lease,
    Loan,
    Mailbox,
    Publisher,
    Receiver,
    Request,
    RpcClient,
    RpcServer,
    Sender,
    Subscriber,
    __version__,
    _channel,
)
from . import rpc
from ._aio import wait
from ._shmplane import gc as _gc
from .errors import *  # noqa: F403  (every exception class, listed in errors.__all__)
from .sharedctypes import RawArray, RawValue


def set_sharing(mode: int = 0, allow_uids: Iterable[int] = ()) -> None:
    """Share segments with other local users on purpose, for this whole process.

    By default shmplane creates every segment and doorbell with mode 0600 and opens
    only segments of this user with no group or other permission bits, so another
    local user cannot squat a name to receive our data or feed us forged records
    (``PermissionDeniedError``). This relaxes both:

    Args:
        mode: permission bits for group and/or others (within ``0o066``: read and
            write) that segments and doorbells created from now on get on top of
            ``0o600``; segments found with group/other bits are opened only if their
            bits are within ``mode``. ``0o060``: the file's group; ``0o066``: every
            local user.
        allow_uids: owners besides this process's own uid whose segments it opens.
            The other processes need the same call with this uid.

    Risks: every user let in can read everything sent through a shared segment and
    write anything into it (records, positions, role words). shmplane validates
    shared memory as untrusted input (a bad record is ``CorruptSegmentError``, never a
    crash), but such a user can drop, forge or replay messages, hold roles, or
    truncate the file. Share only with users you trust with the data and the traffic,
    preferably through a dedicated group. ``set_sharing()`` with no arguments goes
    back to the default.

    Raises:
        InvalidArgumentError: ``mode`` has bits outside ``0o066``.
        OverflowError, TypeError: a uid that is not a non-negative 32-bit integer.
    """
    from ._shmplane import _set_sharing

    _set_sharing(int(mode), [int(u) for u in allow_uids])


def _keep_sigbus_guard_on_top() -> None:
    """shmplane's SIGBUS guard turns a segment file truncated under a mapping into
    ``CorruptSegmentError`` (docs: Reliability); a SIGBUS handler installed after it
    would take those faults first and end the process. ``faulthandler`` is the one
    that Python programs (and pytest) install and remove: after each of its
    ``enable``/``disable`` the guard goes back on top, and faults that are not in
    shmplane's mappings still reach ``faulthandler`` (dump, then the default action)."""
    import faulthandler
    import functools

    from ._shmplane import _reinstall_sigbus_guard

    for fname in ("enable", "disable"):
        original = getattr(faulthandler, fname)
        if getattr(original, "_shmplane_guarded", False):
            continue

        def wrapper(*args: Any, __original: Any = original, **kwargs: Any) -> Any:
            try:
                return __original(*args, **kwargs)
            finally:
                _reinstall_sigbus_guard()

        functools.update_wrapper(wrapper, original)
        wrapper._shmplane_guarded = True  # type: ignore[attr-defined]
        setattr(faulthandler, fname, wrapper)


_keep_sigbus_guard_on_top()

__all__ = [
    "__version__",
    "channel",
    "mailbox",
    "broadcast",
    "gc",
    "set_sharing",
    "wait",
    "Sender",
    "Receiver",
    "Lease",
    "Loan",
    "Mailbox",
    "Publisher",
    "Subscriber",
    "RpcServer",
    "RpcClient",
    "Request",
    "rpc",
    "RawValue",
    "RawArray",
    "ByteSlot",
    "DEFAULT_CAPACITY",
    "DEFAULT_LANE_CAPACITY",
    "DEFAULT_MAX_SENDERS",
    "DEFAULT_MAX_SUBSCRIBERS",
    *errors.__all__,
]


def channel(
    capacity: int = DEFAULT_CAPACITY,
    name: str | None = None,
    *,
    policy: str = "adaptive",
    spin_us: float = 20.0,
) -> tuple[Sender, Receiver]:
    """Create a one-way channel and return ``(sender, receiver)``.

    Args:
        capacity: ring size in bytes, a power of two from 4096 to 2**31 (default
            1 MiB, ``DEFAULT_CAPACITY``). Messages of any size fit: one larger than
            ``capacity - 16`` bytes (or than 1 MiB) streams through in chunks while the
            receiver drains them. The segment in ``/dev/shm`` takes ``capacity`` bytes
            plus one 4 KiB page, committed at creation.
        name: segment name (``[A-Za-z0-9._-]``, at most 200 bytes) so that unrelated
            processes can attach with ``Receiver.open(name)`` / ``Sender.open(name)``;
            ``None`` generates one. The segment lives at ``/dev/shm/shmplane.<name>``
            and is removed when both ends are closed.
        policy: how blocked calls wait: ``"spin"`` (lowest latency, burns a core),
            ``"adaptive"`` (spin ``spin_us`` microseconds, then sleep on a futex),
            ``"block"`` (sleep at once).
        spin_us: busy-poll time in microseconds for ``"adaptive"``.

    Raises:
        InvalidArgumentError: capacity is not a power of two in range.
        InvalidNameError: the name has characters outside ``[A-Za-z0-9._-]``.
        AlreadyExistsError: a live channel already has this name.
        NoSpaceError: ``/dev/shm`` cannot hold ``capacity`` more bytes.
    """
    tx, rx = _channel(capacity, name)
    tx.set_policy(policy, spin_us)
    rx.set_policy(policy, spin_us)
    return tx, rx


def mailbox(
    capacity: int = DEFAULT_LANE_CAPACITY,
    name: str | None = None,
    max_senders: int = DEFAULT_MAX_SENDERS,
    *,
    policy: str = "adaptive",
    spin_us: float = 20.0,
) -> Mailbox:
    """Create a mailbox (many senders, one receiver) and return its receiving end.

    Any process may drop messages in: ``mb.sender()`` makes a sender here (picklable
    into ``multiprocessing`` children), and ``shmplane.Sender.open(name)`` joins from an
    unrelated process. Each sender writes a lane (an SPSC ring) of its own, so senders
    never wait for each other, each one's messages arrive in the order it sent them,
    and a sender that crashes, even mid-message, strands only its own lane.
    ``mb.pending()`` answers "is there a message?" with one memory load (the
    ``check_pause()`` loop); ``recv``/``try_recv``/``poll``/iteration, ``fileno()``,
    ``recv_async`` and ``async for`` work as on a ``Receiver``.

    Args:
        capacity: each lane's ring size in bytes, a power of two from 4096 to 2**31
            (default 64 KiB). Messages of any size fit (larger ones stream through).
        name: segment name (``[A-Za-z0-9._-]``, at most 200 bytes) for
            ``Sender.open(name)``; ``None`` generates one. The segment is
            ``/dev/shm/shmplane.<name>``: ``max_senders`` x (``capacity`` + 4 KiB) bytes
            (4.3 MB by default), removed when the receiver and every sender closed.
        max_senders: most senders at once, 1 to 511 (default 64); a sender that
            closes frees its lane for the next.
        policy: how blocked receives wait (see ``channel``).
        spin_us: busy-poll time in microseconds for ``"adaptive"``.

    Raises:
        InvalidArgumentError: capacity or max_senders out of range.
        InvalidNameError, AlreadyExistsError, NoSpaceError: as ``channel``.
    """
    mb = Mailbox.create(name, capacity, max_senders) if name is not None else Mailbox._new(capacity, max_senders)
    mb.set_policy(policy, spin_us)
    return mb


def broadcast(
    capacity: int = DEFAULT_CAPACITY,
    name: str | None = None,
    lossy: bool = False,
    max_subscribers: int = DEFAULT_MAX_SUBSCRIBERS,
    *,
    policy: str = "adaptive",
    spin_us: float = 20.0,
) -> Publisher:
    """Create a broadcast (one publisher, many subscribers) and return its publisher.

    Subscribers join with ``pub.subscribe()`` here, ``shmplane.Subscriber.open(name)``
    from any process, or a pickled subscriber passed to a child; each receives every
    message published after it joined, in order. The publisher writes each message
    once (any size: bytes, ndarrays, picklable objects); subscribers copy it out in
    parallel. ``Publisher.create(name, ...)`` is the same with a chosen name.

    Args:
        capacity: ring size in bytes, a power of two from 4096 to 2**31 (default
            1 MiB). Larger messages stream through in chunks.
        name: segment name (``[A-Za-z0-9._-]``, at most 200 bytes); ``None`` generates
            one. The segment (``capacity`` + 4 KiB + 384 bytes per subscriber slot +
            1 KiB, in whole pages) is removed once the publisher and every subscriber
            closed.
        lossy: ``False`` (default): the publisher waits, under its policy and timeout,
            for the slowest live subscriber (one that closes or dies stops holding it
            back). ``True``: the publisher never waits; a subscriber that fell a lap
            behind gets ``LaggedError`` (with ``.missed``, the number of messages it
            lost) and continues from the oldest message still held (the semantics of
            tokio's broadcast channel; the algorithm is Aeron's broadcast buffer).
            A lossy broadcast takes messages of one record (``max_message_size``) or
            up to ``capacity / 2`` bytes, whichever is larger (``MessageTooLargeError``
            beyond: they would be overwritten as they stream).
        max_subscribers: subscriber slots, 1 to 512 (default 64); a subscriber that
            closes frees its slot.
        policy: how blocked sends wait (see ``channel``).
        spin_us: busy-poll time in microseconds for ``"adaptive"``.

    Raises:
        InvalidArgumentError: capacity or max_subscribers out of range.
        InvalidNameError, AlreadyExistsError, NoSpaceError: as ``channel``.
    """
    if name is None:
        pub = Publisher._new(capacity, lossy, max_subscribers)
    else:
        pub = Publisher.create(name, capacity, lossy, max_subscribers)
    pub.set_policy(policy, spin_us)
    return pub


def gc() -> list[str]:
    """Remove this user's stale segments (owners died, or every end closed).

    Returns the names removed.
    """
    return _gc()
