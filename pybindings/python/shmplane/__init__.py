"""shmplane: lock-free shared-memory channels and latest-value slots between processes.

Change one import and move datasets between processes at memory-bus speed::

    import shmplane
    tx, rx = shmplane.channel()          # like multiprocessing.Pipe(duplex=False)
    tx.send(numpy_array)                 # one copy into shared memory, no pickling
    arr = rx.recv(timeout=5.0)           # one copy out: same dtype and shape

Latest values, as ``multiprocessing.sharedctypes`` with reads that are never torn::

    from shmplane import RawArray, RawValue
    params = RawArray("d", 16)           # params[:] is one consistent snapshot
    params.wait_for_update(params.version, timeout=1.0)

Messages of any size fit any channel (large ones stream through in chunks).
Endpoints are context managers, pickle into ``multiprocessing`` children (fork, spawn,
forkserver) as copies that take turns, like ``multiprocessing.Pipe`` connections, and
wait with the GIL released (Ctrl-C works). ``fileno()`` is a readiness descriptor for
``select``/``selectors``/asyncio; ``shmplane.wait([...])`` waits on many endpoints (and
sockets, connections) at once; ``await rx.recv_async()``, ``await tx.send_async(obj)``
and ``async for obj in rx`` serve asyncio programs. Errors derive from :class:`ShmplaneError`.
See README.md and docs/ for the design, the wire format and the measured figures.
"""

from __future__ import annotations

from . import _handles  # noqa: F401  (pickling support for endpoints)
from . import errors
from ._shmplane import DEFAULT_CAPACITY, ByteSlot, Receiver, Sender, _channel
from ._aio import wait
from ._shmplane import gc as _gc
from .errors import *  # noqa: F403  (every exception class, listed in errors.__all__)
from .sharedctypes import RawArray, RawValue

__all__ = ["channel", "gc", "wait", "Sender", "Receiver", "RawValue", "RawArray", "ByteSlot", "DEFAULT_CAPACITY", *errors.__all__]


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


def gc() -> list[str]:
    """Remove this user's stale segments (owners died, or every end closed).

    Returns the names removed.
    """
    return _gc()
