"""Exceptions raised by shmplane. All derive from ``ShmplaneError``.

Several also derive from the built-in exception that existing code already catches
(``Timeout`` is a ``TimeoutError``, ``DisconnectedError`` an ``EOFError``
like ``multiprocessing.Connection.recv`` raises, ``Full``/``Empty`` are
``queue.Full``/``queue.Empty``), so switching to shmplane keeps ``except`` clauses working.
"""

from __future__ import annotations

import queue

__all__ = [
    "ShmplaneError",
    "NotFoundError",
    "AlreadyExistsError",
    "InvalidNameError",
    "InvalidArgumentError",
    "CorruptSegmentError",
    "IncompatibleSegmentError",
    "WrongKindError",
    "MessageTooLargeError",
    "Full",
    "Empty",
    "Timeout",
    "PeerDeadError",
    "DisconnectedError",
    "RoleTakenError",
    "ClosedError",
    "TruncatedMessageError",
    "LaggedError",
    "RemoteError",
    "NoSpaceError",
    "ShmplaneOSError",
    "PermissionDeniedError",
]


class ShmplaneError(Exception):
    """Base class of every shmplane error."""


class NotFoundError(ShmplaneError, FileNotFoundError):
    """No segment has this name: create it first or check the name."""


class AlreadyExistsError(ShmplaneError, FileExistsError):
    """A live segment (or one waiting for its peer) already has this name."""


class InvalidNameError(ShmplaneError, ValueError):
    """The name breaks the rules: 1-200 bytes of ``[A-Za-z0-9._-]``, not starting with '.'."""


class InvalidArgumentError(ShmplaneError, ValueError):
    """An argument is out of range (capacity not a power of two, ...)."""


class CorruptSegmentError(ShmplaneError):
    """The segment is not a valid shmplane segment: garbage, truncated, half-initialised
    by a creator that died, or a ring holding a malformed record."""


class IncompatibleSegmentError(ShmplaneError):
    """The segment was made by a shmplane with another ABI version or layout."""


class WrongKindError(ShmplaneError, TypeError):
    """The segment holds another kind of structure (e.g. a slot opened as a channel)."""


class MessageTooLargeError(ShmplaneError, ValueError):
    """A message this endpoint cannot carry, or this process cannot take. Messages of
    any size stream through any ring, except: a loan (``Sender.loan``) is one record,
    at most ``max_message_size``; a lossy broadcast takes one record or half its ring,
    whichever is larger; a message's header (its description of the parts) must fit one
    record; and a received message this process cannot allocate is dropped with this
    error. Create the endpoint with a larger capacity, or send the message otherwise."""


class Full(ShmplaneError, queue.Full):
    """``try_send``: no room in the ring right now."""


class Empty(ShmplaneError, queue.Empty):
    """``try_recv``: nothing to receive right now."""


class Timeout(ShmplaneError, TimeoutError):
    """A timed operation ran out of time."""


class PeerDeadError(ShmplaneError, ConnectionResetError):
    """The process at the other end died without closing it."""


class DisconnectedError(ShmplaneError, EOFError):
    """The other end was closed and everything it sent has been received."""


class RoleTakenError(ShmplaneError):
    """Another live endpoint already holds this role (a second ``Sender.open`` of a
    channel whose sender lives, a ``Mailbox.open`` or ``Publisher.open`` while the
    receiver or publisher lives); every slot of a shared role is taken (a mailbox's
    ``max_senders``, a broadcast's ``max_subscribers``, an RPC server's
    ``max_clients``); or more than 8 processes use copies of one endpoint at once."""


class ClosedError(ShmplaneError, ValueError):
    """The endpoint was closed."""


class TruncatedMessageError(ShmplaneError):
    """The sender abandoned a large (chunked) message part-way: it was interrupted, or
    died. The partial message was dropped; the next message is intact."""


class LaggedError(ShmplaneError):
    """A subscriber of a lossy broadcast fell a lap behind: the publisher overwrote
    ``missed`` messages before this subscriber read them. Receiving continues from the
    oldest message still held (the semantics of tokio's ``broadcast`` channel)."""

    def __init__(self, message: str = "", missed: int = 0) -> None:
        super().__init__(message)
        #: Messages lost to this subscriber.
        self.missed = missed

    def __reduce__(self) -> tuple[type, tuple[str, int]]:
        return (type(self), (str(self), self.missed))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r}, missed={self.missed})"


class RemoteError(ShmplaneError):
    """An RPC server's handler raised while serving this call (or the server could not
    answer it: ``kind`` ``"ReplyLost"``). The server goes on serving.

    Attributes:
        kind: the exception's type name on the server (``"ValueError"``).
        message: its message (``str(exc)``).
        traceback: the server's formatted traceback (``""`` if none).
    """

    def __init__(self, text: str = "", kind: str = "", message: str = "", traceback: str = "") -> None:
        super().__init__(text)
        self.kind = kind
        self.message = message
        self.traceback = traceback

    def __reduce__(self) -> tuple[type, tuple[str, str, str, str]]:
        return (type(self), (str(self), self.kind, self.message, self.traceback))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, message={self.message!r})"

    def __str__(self) -> str:
        text = super().__str__()
        if self.traceback:
            return f"{text}\n\nServer traceback:\n{self.traceback.rstrip()}"
        return text


class NoSpaceError(ShmplaneError, MemoryError):
    """``/dev/shm`` has no room for the segment: free space or use a smaller capacity."""


class ShmplaneOSError(ShmplaneError, OSError):
    """Any other operating-system error (``errno`` is set)."""


class PermissionDeniedError(ShmplaneOSError, PermissionError):
    """A segment this process must not trust: another user owns it, or its mode lets
    other users in (shmplane creates every segment 0600, so such a file was planted or
    changed: another local user could read what you send or forge what you receive).
    Also the operating system's own refusals (``EACCES``, ``EPERM``)."""
