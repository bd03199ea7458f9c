"""Type stubs of the native module ``shmplane._shmplane``."""

from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from typing import Any, NoReturn, final

from typing_extensions import Buffer, Self, disjoint_base

__version__: str
"""The package's version (the Rust workspace's, e.g. ``"0.1.0"``)."""
DEFAULT_CAPACITY: int
"""Default ring capacity of a channel or broadcast in bytes: 1 MiB."""
DEFAULT_LANE_CAPACITY: int
"""Default ring capacity of each mailbox lane (and RPC request lane) in bytes: 64 KiB."""
DEFAULT_MAX_SENDERS: int
"""Default number of lanes of a mailbox (senders at once): 64."""
DEFAULT_MAX_SUBSCRIBERS: int
"""Default number of subscriber slots of a broadcast: 64."""
TAG_BYTES: int
"""Message tag of a bytes message (docs/wire-format.md, 5.1)."""
TAG_ARRAY: int
"""Message tag of an array message (docs/wire-format.md, 5.1)."""
TAG_PICKLE: int
"""Message tag of a pickle-5 message (docs/wire-format.md, 5.1)."""
MAX_PARTS: int
"""Most parts of a multipart payload (an array's description and data; a pickle's
stream and its out-of-band buffers): docs/wire-format.md, 5.4."""
WIRE_VERSION: int
"""Version of the message format this build reads and writes (docs/wire-format.md)."""
MAX_SLOT_BYTES: int
"""The largest value a slot (``RawValue``, ``RawArray``, ``ByteSlot``) holds, in bytes
(256 MiB)."""

def _channel(capacity: int = ..., name: str | None = None) -> tuple[Sender, Receiver]: ...
def _sweep_dead_anonymous_once() -> None: ...
def _own_fast_methods(cls: type[_FastSlotView]) -> None: ...
def _reinstall_sigbus_guard() -> None: ...
def _set_sharing(mode: int = 0, allow_uids: list[int] = ...) -> None: ...
def _sharing() -> tuple[int, list[int]]: ...
def gc() -> list[str]:
    """Remove this user's stale segments (every holder closed or died); returns their
    names."""
def _survey(name: str | None = None) -> list[dict[str, Any]]: ...
@final
class Loan:
    """An open loan of ring space for one array message, written in place (zero-copy
    send): ``with tx.loan((480, 640), "u2") as frame: camera.read_into(frame)``. The
    block's value is a writable ndarray over the ring; the message is published when the
    block ends, abandoned (nothing sent) if it raises, and abandoned if the Loan is
    dropped open. While the loan is open the sender refuses other sends and
    ``poll_space`` (InvalidArgumentError), and other handles of it, also in this
    process, wait. When the loan ends the arrays it handed out turn read-only (views
    made from them do not: do not keep them: the bytes then belong to the receiver, and
    later to other messages). The arrays point into a second mapping of the channel that
    holds no locks: keeping one never keeps the sender's role, and cannot crash. A fork
    child's copy of an open loan is not its own (``open`` is false there)."""

    def array(self) -> Any:
        """A writable ndarray over the loaned bytes (a new array each call; contents
        unspecified until written). Raises ValueError once the loan ended."""
    def commit(self) -> bool:
        """Publish the message; False if the loan had ended already."""
    def abort(self) -> bool:
        """Abandon the message (nothing is sent); False if the loan had ended."""
    @property
    def nbytes(self) -> int:
        """Bytes lent: the array's data."""
    @property
    def open(self) -> bool:
        """True until committed or aborted."""
    def __enter__(self) -> Any: ...
    def __exit__(self, exc_type: object, *rest: object) -> bool: ...

@disjoint_base
class Sender:
    """The sending end of a channel (one per channel across all processes).

    ``send`` copies the message into the ring once: bytes-like objects as bytes, C- or
    Fortran-contiguous numpy arrays as their data plus dtype, shape and order, anything
    else as pickle protocol 5 with out-of-band buffers. Messages of any size: one larger
    than a record streams through the ring in chunks as the receiver drains them.
    Blocks (GIL released, Ctrl-C works) while the ring is full.

    A Sender passed to another process (pickled, or inherited by ``fork``) is a copy,
    as with ``multiprocessing.Pipe``: the parent may keep its own; copies used one after
    another append, and copies used at once take turns, each message whole.
    """

    @staticmethod
    def create(name: str, capacity: int = ...) -> Sender:
        """Create channel ``name`` (capacity in bytes, a power of two) as its sender.

        Raises InvalidNameError, InvalidArgumentError, AlreadyExistsError, NoSpaceError."""
    @staticmethod
    def open(name: str, timeout: float | None = 0.0) -> Sender:
        """Attach to existing channel ``name`` as its sender, or join mailbox ``name``
        as a new sender (a lane of its own; see ``shmplane.mailbox``).

        ``timeout``: seconds to wait for the segment to be created (its creator may be
        starting in another process), retrying while it does not exist; 0 (the
        default): not at all; None or ``inf``: forever. Ctrl-C ends the wait.

        Raises NotFoundError (none by that name, after ``timeout``), CorruptSegmentError,
        IncompatibleSegmentError, WrongKindError, RoleTakenError (a live sender exists;
        for a mailbox, all of its ``max_senders`` lanes have senders), ValueError (a
        negative or NaN timeout)."""
    @staticmethod
    def _from_fd(fd: int, name: str | None = None, doorbell_fd: int | None = None, lane: int | None = None) -> Sender: ...
    def _lane(self) -> int | None: ...
    def loan(self, shape: int | tuple[int, ...] | list[int], dtype: Any = None, order: str = "C", timeout: float | None = None) -> Loan:
        """Lend ring space for one array message of ``shape`` and ``dtype`` (default
        float64; a plain dtype: no objects, fields or subarrays) in ``order`` ('C' or
        'F'), waiting at most ``timeout`` seconds for room: ``with tx.loan(shape, dtype)
        as arr: fill(arr)`` publishes it at the end of the block (see ``Loan``). The
        receiver gets an ndarray as from ``send``. A loan is one record: the data plus
        the array's description (about 100 bytes) must fit ``max_message_size``; one
        over half the ring may wait, even on an empty ring, until the receiver has
        skipped the padding at the ring's end.

        Raises MessageTooLargeError (more than one record of this channel),
        InvalidArgumentError (a loan is open already), ValueError (dtype, order),
        Timeout, DisconnectedError, PeerDeadError, ClosedError."""
    def send(self, obj: Any, timeout: float | None = None) -> None:
        """Send ``obj`` (any size), waiting at most ``timeout`` seconds (None: forever)
        for room; the timeout covers the whole message. If the send stops part-way
        (timeout, Ctrl-C, the receiver gone), the receiver gets TruncatedMessageError
        for it and the next message is intact.

        Raises Timeout, KeyboardInterrupt, PeerDeadError / DisconnectedError (the
        receiver died / closed while we waited), RoleTakenError (too many processes use
        copies of this sender), ValueError (negative or non-finite timeout),
        CorruptSegmentError, ClosedError; and whatever pickling ``obj`` raises."""
    def try_send(self, obj: Any) -> None:
        """Send without waiting. Raises Full if the whole message does not fit now
        (always, for a message larger than the ring: only ``send`` streams those)."""
    def send_many(self, objs: Iterable[Any], timeout: float | None = None) -> int:
        """Send every object of ``objs`` in order, each as its own message (exactly as
        ``send`` would, any type or size), in one call: the loop runs in Rust, the
        GIL held while the ring has room (64-byte messages: 45 ns each, against 110
        ns for ``send`` in a Python loop). The
        receiver may take them one by one or with ``recv_many``. ``timeout``: seconds
        (None: forever) that the batch may wait for room in all, counted from its first
        wait (time spent by the iterable making its objects is not bounded). Returns the number
        sent (``len(objs)`` for a list).

        Raises as ``send``; the exception's ``sent`` attribute says how many messages
        of the batch went before it (those are delivered; the one that failed and the
        rest were not sent, so a retry sends ``objs[e.sent:]``). Also whatever
        iterating ``objs`` raises (with ``sent``), and TypeError (``sent`` = 0) for a
        ``str`` or a buffer (bytes, bytearray, memoryview, ndarray): iterable, but
        not a batch of messages (send it with ``send``)."""
    def send_bytes(self, buf: Buffer, timeout: float | None = None) -> None:
        """Send the bytes of a C-contiguous buffer; the receiver gets ``bytes``."""
    def poll_space(self, nbytes: int = 0, timeout: float | None = 0.0) -> bool:
        """True once a ``nbytes`` message fits, waiting at most ``timeout`` seconds."""
    def close(self) -> None:
        """Close this end (idempotent). The receiver gets DisconnectedError after draining.
        A send of another thread blocked on this end ends with ClosedError within one
        wait slice (50 ms)."""
    def fileno(self) -> int:
        """A descriptor for ``select``/``selectors``/``multiprocessing.connection.wait``
        and asyncio's ``add_reader``: readable once a small message fits again, or the
        receiver closed or died (the read end of ``/dev/shm/shmplane.<name>@tx``).
        Each call re-arms it. Do not close it.

        Raises ClosedError, InvalidArgumentError (the channel's name is gone, or another
        thread uses this end), NotFoundError / CorruptSegmentError (no private doorbell)."""
    def _space_fd(self, nbytes: int) -> int: ...
    def _check_peer(self) -> None: ...
    def _segment_fd(self) -> int: ...
    def _doorbell_fd(self) -> int | None: ...
    def send_async(self, obj: Any, timeout: float | None = None) -> Coroutine[Any, Any, None]:
        """``await tx.send_async(obj)``: send without blocking the event loop (waits on
        ``fileno()`` with ``add_reader``; no helper thread). A message larger than the
        ring goes from the loop's default executor. Raises as ``send``; Timeout."""
    @property
    def name(self) -> str | None:
        """The channel's name (None once closed)."""
    @property
    def path(self) -> str | None:
        """The segment's file, ``/dev/shm/shmplane.<name>`` (None once closed)."""
    @property
    def capacity(self) -> int:
        """Ring capacity in bytes (0 once closed)."""
    @property
    def max_message_size(self) -> int:
        """Largest payload in bytes that travels as one record (capacity - 16); larger
        messages go in chunks."""
    @property
    def closed(self) -> bool:
        """True once closed."""
    @property
    def policy(self) -> str:
        """'spin', 'block' or 'adaptive(spin_us=N)'."""
    def set_policy(self, policy: str, spin_us: float = 20.0) -> None:
        """Set how blocked calls wait: ``"spin"``, ``"adaptive"`` (spin ``spin_us``
        microseconds, then sleep on a futex) or ``"block"`` (see ``shmplane.channel``).
        Raises ValueError (unknown policy, or spin_us outside 0..=1e9)."""
    def __enter__(self) -> Self: ...
    def __exit__(self, *args: object) -> bool: ...
    def __reduce__(self) -> tuple[Any, ...]: ...

@final
class Lease:
    """A received message held in the channel's shared memory (zero-copy): see
    ``Receiver.recv(copy=False)`` and ``Receiver.lease()``. Exports the message's data
    through the buffer protocol (read-only bytes, 8-byte aligned); every view made from
    it keeps it alive. Its ring space is released when the lease and every view of it
    are gone, at the end of a ``with`` block (or, if views made inside are still alive,
    when the last goes), or by ``release()``. A release from another thread while the
    receiver waits in ``recv`` takes effect at once (the receiver is woken)."""

    @property
    def value(self) -> Any:
        """The message viewing shared memory: a read-only memoryview (bytes), ndarray
        (arrays) or the unpickled object (out-of-band buffers as views); a new view at
        each access. A list or tuple of numbers is decoded from the ring into a new
        list/tuple at each access and keeps no view (``nbytes`` counts its 8-byte
        header). Raises BufferError once released. A message received by copy
        (``in_place`` false) returns that copy, also after release."""
    @property
    def nbytes(self) -> int:
        """Bytes of the message's data (an array's elements; a pickle's stream and
        buffers)."""
    @property
    def in_place(self) -> bool:
        """True if viewed in shared memory; False if it was received by copy (it
        spanned several records: larger than a quarter of the ring, or larger than
        1 MiB and sent before the sender saw the receiver ask for whole messages)."""
    @property
    def released(self) -> bool:
        """True once the ring space was given back."""
    def release(self) -> None:
        """Give the ring space back now (idempotent). Raises BufferError while views of
        the message are alive (drop them first: the sender would overwrite them)."""
    def __enter__(self) -> Lease: ...
    def __exit__(self, *args: object) -> bool: ...

@disjoint_base
class Receiver:
    """The receiving end of a channel (one per channel across all processes).

    ``recv`` returns what was sent: ``bytes``, an ndarray of the same dtype, shape and
    order, or the unpickled object. Blocks (GIL released, Ctrl-C works) while empty.
    Iterating yields messages until the sender closes. Copies (pickled to a child,
    inherited by ``fork``) take turns: every message reaches exactly one copy.
    """

    @staticmethod
    def create(name: str, capacity: int = ...) -> Receiver:
        """Create channel ``name`` as its receiver. Raises as Sender.create."""
    @staticmethod
    def open(name: str, timeout: float | None = 0.0) -> Receiver:
        """Attach to existing channel ``name`` as its receiver, waiting at most
        ``timeout`` seconds for it to be created, as ``Sender.open``. Raises as
        Sender.open."""
    @staticmethod
    def _from_fd(fd: int, name: str | None = None, doorbell_fd: int | None = None) -> Receiver: ...
    def recv(self, timeout: float | None = None, copy: bool = True) -> Any:
        """Receive the next message, waiting at most ``timeout`` seconds (None: forever)
        for it to begin; a message that began is received to its end.

        ``copy=False``: zero-copy. The result views the message in a read-only mapping
        of the channel's shared memory: a ``memoryview`` (bytes), an ndarray (arrays),
        the unpickled object with its pickle-5 out-of-band buffers (ndarrays) as views;
        a list or tuple of numbers is built from the ring (no view of it stays).
        The message's ring space stays taken while any view of it lives (slices,
        ``np.asarray`` of it, views passed to other threads: anything whose base chain
        reaches it) and is released when the last goes, in any order; the receiver goes
        on receiving meanwhile. Holding views holds ring space (every record after the
        oldest view alive): a sender waits for it (its own ``timeout`` ends that wait),
        and while views live other copies of this receiver (another process's) wait.
        For explicit release use ``lease()``. The first ``copy=False`` receive asks the
        sender to send every message up to a quarter of the ring as one record and
        larger ones in chunks; a message that is not one record of at most a quarter
        of the ring is received by copy (a writable array: ``flags.writeable`` tells).
        A chunked message that cannot fit beside the views held raises
        InvalidArgumentError at once and stays queued (release views first). ``close()`` with views alive completes when the
        last goes; views stay readable after it. A fork child may read inherited views,
        but the parent may release them meanwhile. Not on a lossy broadcast
        (InvalidArgumentError: its publisher overwrites without waiting).

        Raises Timeout, KeyboardInterrupt, DisconnectedError (sender closed, all
        received), PeerDeadError (sender died, all received), TruncatedMessageError (the
        sender stopped part-way through this message: it is dropped, the next one is
        intact), MessageTooLargeError (it cannot be allocated here: dropped),
        CorruptSegmentError, RoleTakenError, ClosedError, InvalidArgumentError
        (``copy=False`` on a lossy broadcast); and whatever unpickling raises (the
        message is consumed)."""
    def try_recv(self, copy: bool = True) -> Any:
        """Receive without waiting (``copy``: as ``recv``). Raises Empty if nothing is
        there."""
    def recv_many(self, max_messages: int = 1024, timeout: float | None = None) -> list[Any]:
        """Receive a batch: wait at most ``timeout`` seconds (None: forever) for the
        next message, as ``recv`` does, then take the messages already there without
        waiting, up to ``max_messages`` (>= 1) in all. Returns a list of at least one
        object, in the order sent (copies, as ``recv()``). As faster-fifo's
        ``get_many`` (64-byte messages: 140 ns each, against 205 ns for ``recv`` in a
        Python loop).

        Raises as ``recv`` when nothing came within ``timeout`` (Timeout, or the
        channel's end: DisconnectedError, PeerDeadError, ...). Once a message is in the
        batch, such an ending stops the batch and is raised by the next receive. A
        message that fails to decode (unpickling raised, a truncated message) raises
        its error with the messages taken before it as the exception's ``received``
        list, so none is lost; so do the errors a receive reports only once, found
        after the first message: LaggedError (a lossy subscriber that fell a lap
        behind; the batch continues from the oldest message held at the next call)
        and CorruptSegmentError (a malformed message, dropped). Every error of a
        receive carries ``received`` (``[]`` when it came before any message was
        taken), as ``send_many``'s carry ``sent``. ValueError for ``max_messages``
        < 1."""
    def recv_into(self, out: Buffer, timeout: float | None = None) -> int:
        """Receive the next message into ``out`` (one copy, no allocation), waiting at
        most ``timeout`` seconds for it to begin; returns the bytes written. For an
        array message ``out`` must be a writable ndarray of the same ``dtype.str``,
        shape and order (C or Fortran contiguous); for bytes, any writable C-contiguous
        buffer at least as long (a ``bytearray``, a ``memoryview``, an ndarray). On a
        mismatch, or for a pickled object, nothing is written and the message stays
        queued (InvalidArgumentError). Raises as ``recv`` otherwise."""
    def _close_at_exit(self) -> None: ...
    def lease(self, timeout: float | None = None) -> Lease:
        """Receive the next message as a ``Lease`` (zero-copy, as ``recv(copy=False)``)
        whose ring space can be released explicitly: ``with rx.lease() as m:
        use(m.value)``. Raises as ``recv``."""
    @property
    def held(self) -> int:
        """Messages held in the ring by live views (``recv(copy=False)``, leases) and
        not released yet."""
    def recv_bytes(self, timeout: float | None = None) -> bytes:
        """Receive the next message's payload as bytes, whatever was sent (an array's
        or pickle's encoding: docs/wire-format.md). Raises as ``recv``."""
    def poll(self, timeout: float | None = 0.0) -> bool:
        """True if the next receive would not wait, waiting at most ``timeout`` seconds
        for that: a message is ready, or (as ``multiprocessing.Connection.poll`` at end
        of file) every sender closed or died and nothing is queued, so the receive
        raises ``DisconnectedError`` or ``PeerDeadError``."""
    def close(self) -> None:
        """Close this end (idempotent). A receive of another thread blocked on this end
        ends with ClosedError within one wait slice (50 ms)."""
    def fileno(self) -> int:
        """A descriptor for ``select``/``selectors``/``multiprocessing.connection.wait``
        and asyncio's ``add_reader``: readable iff ``try_recv`` would not raise Empty (a
        message is queued, or the sender closed or died). Each call re-arms it, and so
        does every receive that empties the channel. It is the read end of the
        channel's doorbell FIFO (``/dev/shm/shmplane.<name>@rx``), which senders write
        to only while a handle waits this way. Do not close it.

        Raises ClosedError, InvalidArgumentError (the channel's name is gone, or another
        thread uses this end), NotFoundError / CorruptSegmentError (no private doorbell)."""
    def _segment_fd(self) -> int: ...
    def _doorbell_fd(self) -> int | None: ...
    def _check_peer(self) -> None: ...
    def recv_async(self, timeout: float | None = None) -> Coroutine[Any, Any, Any]:
        """``await rx.recv_async(timeout=None)``: receive without blocking the event loop
        (waits on ``fileno()`` with ``add_reader``; no helper thread). Cancelling it
        loses nothing: the message stays in the channel. Raises as ``recv``; Timeout."""
    def __aiter__(self) -> AsyncIterator[Any]:
        """``async for obj in rx``: objects until the sender closes."""
    @property
    def name(self) -> str | None:
        """The channel's name (None once closed)."""
    @property
    def path(self) -> str | None:
        """The segment's file, ``/dev/shm/shmplane.<name>`` (None once closed)."""
    @property
    def capacity(self) -> int:
        """Ring capacity in bytes (0 once closed)."""
    @property
    def closed(self) -> bool:
        """True once closed."""
    @property
    def policy(self) -> str:
        """'spin', 'block' or 'adaptive(spin_us=N)'."""
    def set_policy(self, policy: str, spin_us: float = 20.0) -> None:
        """Set how blocked calls wait (see ``Sender.set_policy``)."""
    def __enter__(self) -> Self: ...
    def __exit__(self, *args: object) -> bool: ...
    def __iter__(self) -> Self: ...
    def __next__(self) -> Any: ...
    def __reduce__(self) -> tuple[Any, ...]: ...

@final
class Publisher(Sender):
    """The publishing end of a broadcast (one publisher, many subscribers; see
    ``shmplane.broadcast``). Every ``Sender`` method works: ``send``/``try_send``/
    ``send_async``, ``fileno()`` (room for a message), pickling into children (copies
    take turns, each message whole). A message is written once, whatever the number of
    subscribers.

    Lossless (default): ``send`` waits, under the wait policy and ``timeout``, while
    the slowest live subscriber holds the ring (Disruptor gating sequences); a
    subscriber that closes stops holding it at once, one that dies within 50 ms of
    the publisher's next wait. With no subscriber, messages are dropped (as PUB/SUB).
    Lossy: ``send`` never waits (Aeron's broadcast buffer); laggards get
    ``LaggedError``.
    """

    @staticmethod
    def create(name: str, capacity: int = ..., lossy: bool = False, max_subscribers: int = ...) -> Publisher:
        """Create broadcast ``name``: a ring of ``capacity`` bytes (a power of two,
        4096 to 2**31; default 1 MiB) and ``max_subscribers`` slots (1 to 512, default
        64). The segment is ``capacity`` + 4 KiB + 384 bytes per slot + 1 KiB, in whole
        pages (``capacity`` + 36 KiB for 64 slots). A lossy broadcast takes messages of
        one record (``max_message_size``) or of at most ``capacity / 2`` bytes, whichever
        is larger (a longer one, streaming through in chunks, would be overwritten
        before subscribers read it: MessageTooLargeError, not lost).

        Raises InvalidArgumentError, InvalidNameError, AlreadyExistsError, NoSpaceError."""
    @staticmethod
    def _new(capacity: int = ..., lossy: bool = False, max_subscribers: int = ...) -> Publisher: ...
    @staticmethod
    def open(name: str, timeout: float | None = 0.0) -> Publisher:
        """Become the publisher of existing broadcast ``name`` (its publisher closed or
        died); subscribers keep their positions. ``timeout``: as ``Sender.open``. Raises
        NotFoundError, WrongKindError, RoleTakenError (a live publisher has it),
        CorruptSegmentError, IncompatibleSegmentError, ValueError (a bad timeout)."""
    @staticmethod
    def _from_fd(fd: int, name: str | None = None) -> Publisher: ...  # type: ignore[override]
    def subscribe(self) -> Subscriber:
        """A new subscriber in this process: it receives what is published from now on.
        Raises RoleTakenError (every slot taken), ClosedError."""
    @property
    def subscribers(self) -> int:
        """Subscribers now: those that joined and neither closed nor died (one
        liveness check each)."""
    @property
    def max_subscribers(self) -> int:
        """Subscriber slots: most subscribers at once."""
    @property
    def lossy(self) -> bool:
        """True for a lossy broadcast."""

@final
class Subscriber(Receiver):
    """A subscribing end of a broadcast: receives every message published after it
    joined, in order. Every ``Receiver`` method works (``recv``, ``try_recv``,
    ``poll``, iteration, ``fileno()``: its own doorbell ``@sub<i>``, ``recv_async``,
    ``async for``). Pickled into a child, the copy shares this subscriber's position
    (they take turns, each message reaches one of them); a child that wants every
    message itself opens its own with ``Subscriber.open(name)``. A ``fork`` child
    inherits a copy of every subscriber, as of every endpoint: the slot then lives (and
    holds a lossless publisher back) until the child exits or closes its copy; close
    the copies you do not use, or use ``spawn``.

    ``poll()`` is True when a message is ready or a lag is to be reported; the next
    ``recv`` raises the ``LaggedError``.

    From a lossy broadcast, ``recv`` raises ``LaggedError`` (``.missed``: messages
    lost) when the publisher overwrote messages this subscriber had not read; the next
    ``recv`` returns the oldest message still held.
    """

    @staticmethod
    def open(name: str, timeout: float | None = 0.0) -> Subscriber:
        """Join broadcast ``name`` in its first free slot, waiting at most ``timeout``
        seconds for it to be created, as ``Sender.open``. Raises NotFoundError,
        WrongKindError, RoleTakenError (every slot taken), CorruptSegmentError,
        IncompatibleSegmentError, ValueError (a bad timeout)."""
    @staticmethod
    def create(*args: Any, **kwargs: Any) -> Subscriber:  # type: ignore[override]
        """Refused (InvalidArgumentError): a broadcast is created by its publisher
        (``Publisher.create`` or ``shmplane.broadcast``)."""
    @staticmethod
    def _from_fd(fd: int, index: int, name: str | None = None, doorbell_fd: int | None = None) -> Subscriber: ...  # type: ignore[override]
    @property
    def index(self) -> int | None:
        """This subscriber's slot (None once closed)."""
    @property
    def lossy(self) -> bool:
        """True for a lossy broadcast."""

@final
class ByteSlot:
    """A latest value of raw bytes in shared memory (seqlock latch); the storage of
    ``shmplane.RawValue``. Reads are consistent snapshots that never wait for a writer."""

    @staticmethod
    def create(name: str, data: Buffer, fingerprint: int) -> ByteSlot:
        """Create slot ``name`` holding ``data``; raises AlreadyExistsError, InvalidNameError."""
    @staticmethod
    def open(name: str, fingerprint: int, timeout: float | None = 0.0) -> ByteSlot:
        """Open slot ``name``, waiting at most ``timeout`` seconds for it to be created
        (as ``Sender.open``); raises NotFoundError, WrongKindError (other type),
        ValueError (a bad timeout)."""
    @staticmethod
    def _from_fd(fd: int, name: str | None = None) -> ByteSlot: ...
    def read(self) -> bytes:
        """A consistent copy of the value."""
    def read_into(self, out: Buffer) -> int:
        """Read a consistent copy into writable buffer ``out`` (exactly ``len(self)``
        bytes, e.g. a numpy array); returns its version. GIL released above 64 KiB."""
    def read_at(self, offset: int, n: int) -> bytes:
        """A consistent copy of bytes ``offset .. offset + n``; InvalidArgumentError
        outside the value."""
    def write_strided(self, offset: int, stride: int, elem: int, data: bytes) -> int:
        """Write ``data`` as ``elem``-byte elements, element ``k`` at byte ``offset + k *
        stride``, as one consistent write (other bytes kept); returns the new version."""
    def write(self, data: Buffer) -> int:
        """Replace the value (exactly ``len(self)`` bytes); returns the new version."""
    @property
    def version(self) -> int:
        """Grows with every completed write."""
    def wait_for_update(self, since: int, timeout: float | None = None) -> int:
        """Block until ``version > since`` (GIL released); raises Timeout."""
    def __len__(self) -> int: ...
    @property
    def policy(self) -> str:
        """'spin', 'block' or 'adaptive(spin_us=N)'."""
    def set_policy(self, policy: str, spin_us: float = 20.0) -> None:
        """Set how ``wait_for_update`` waits, as for channels. Raises ValueError."""
    def _update_fd(self, since: int) -> int | None: ...
    @property
    def fingerprint(self) -> int:
        """The type fingerprint stored at creation (``open`` must name the same)."""
    @property
    def name(self) -> str | None:
        """The slot's name (None once closed)."""
    def fileno(self) -> int:
        """The descriptor of the segment this handle holds (not a readiness
        descriptor). Raises ClosedError."""
    def close(self) -> None:
        """Close this handle (idempotent); the segment goes with the last handle."""
    def __reduce__(self) -> tuple[Any, ...]: ...

@disjoint_base
class _SlotView:
    """Native base of ``shmplane.RawValue`` / ``shmplane.RawArray``: ``length`` elements
    of ``elem_size`` bytes in ``slot``; numeric elements (struct-module ``code``) are
    read and written natively, others through the subclass's ctypes hooks."""

    def __new__(cls, slot: ByteSlot, code: str | None, elem_size: int, length: int, scalar: bool) -> Self: ...
    @property
    def _slot(self) -> ByteSlot: ...
    @property
    def value(self) -> Any: ...
    @value.setter
    def value(self, v: Any) -> None: ...
    def snapshot(self) -> Any: ...
    def _release_snapshots(self) -> None: ...
    def __len__(self) -> int: ...
    def __getitem__(self, key: Any, /) -> Any: ...
    def __setitem__(self, key: Any, value: Any, /) -> None: ...
    def __delitem__(self, key: Any, /) -> None: ...

class _FastSlotView(_SlotView):
    """``_SlotView`` whose ``value`` and ``[i]`` of numbers run as plain C slots (one
    committed word of the latch, no sequence), and ``snapshot()`` of up to 64 KiB of
    numbers as a plain C method: the base of ``RawValue``/``RawArray``."""

    def snapshot(self) -> Any: ...

@disjoint_base
class _Field:
    """A numeric structure field read and written natively (a descriptor)."""

    def __new__(cls, offset: int, code: str, size: int, fallback: property) -> Self: ...
    def __get__(self, obj: Any, owner: Any = None, /) -> Any: ...
    def __set__(self, obj: Any, value: Any, /) -> None: ...
    @property
    def fallback(self) -> property: ...

class _FastField(_Field):
    """``_Field`` whose reads of an aligned number run as a plain C ``__get__``."""

@final
class Mailbox:
    """The receiving end of a mailbox: many senders, one receiver (MPSC). See
    ``shmplane.mailbox``.

    Every sender (``mb.sender()``, ``Sender.open(name)``) writes a lane of its own (an
    SPSC ring of ``capacity`` bytes), so senders never wait for each other and each
    one's messages arrive in the order it sent them; the receiver takes turns over
    the lanes that hold messages. A sender that dies, even part-way through a
    message, strands nothing: its committed messages arrive, the one it was writing
    raises TruncatedMessageError once, and the next sender takes its lane over.
    ``recv`` returns what was sent (bytes, ndarrays, objects; any size) and blocks with
    the GIL released (Ctrl-C works). Pickles into ``multiprocessing`` children (the
    copy takes turns with the original, as a Receiver's copies do). Segment:
    ``/dev/shm/shmplane.<name>``, ``max_senders`` x (``capacity`` + 4 KiB) bytes, removed
    when the receiver and every sender closed. Lanes: Agrona ``ManyToOneRingBuffer``'s
    problem (a dead producer's claim blocks the consumer until ``unblock()``) avoided
    by giving each producer its own ``OneToOneRingBuffer``; see docs/design.md.
    """

    @staticmethod
    def create(name: str, capacity: int = ..., max_senders: int = ...) -> Mailbox:
        """Create mailbox ``name`` and become its receiver (see ``shmplane.mailbox``).

        Raises InvalidNameError, InvalidArgumentError, AlreadyExistsError, NoSpaceError."""
    @staticmethod
    def open(name: str, timeout: float | None = 0.0) -> Mailbox:
        """Become the receiver of existing mailbox ``name`` (its previous receiver
        closed or died); what senders queued meanwhile is delivered. ``timeout``: as
        ``Sender.open``.

        Raises NotFoundError, WrongKindError, RoleTakenError (a live receiver has it),
        CorruptSegmentError, IncompatibleSegmentError, ValueError (a bad timeout)."""
    @staticmethod
    def _new(capacity: int, max_senders: int) -> Mailbox: ...
    @staticmethod
    def _from_fd(fd: int, name: str | None = None) -> Mailbox: ...
    def _segment_fd(self) -> int: ...
    def sender(self) -> Sender:
        """A new sender of this mailbox, on a free lane (picklable into children).
        Works while another thread is blocked in ``recv``.

        Raises RoleTakenError (all ``max_senders`` lanes have senders), ClosedError."""
    def pending(self) -> bool:
        """True if a message is waiting: one memory load, no lock, no syscall (the
        ``check_pause()`` question; as cheap as ``queue.SimpleQueue().empty()``).
        False is exact: nothing a sender committed before the call is waiting. True
        may, rarely, name a message a receive took a moment before, or one whose
        sender died part-way: follow it with ``try_recv``, which raises Empty then.
        False once closed."""
    def recv(self, timeout: float | None = None, copy: bool = True) -> Any:
        """Receive the next message from any sender, waiting at most ``timeout``
        seconds (None: forever) for one to begin.

        ``copy=False``: zero-copy, as ``Receiver.recv(copy=False)``: a read-only
        ndarray, memoryview, or unpickled object whose out-of-band buffers view the
        message in its sender's lane; the lane's space is given back when the last
        view goes. Held views keep that lane's space: its sender waits (its timeout
        applies) once the lane is full of them. A view dropped in another thread
        while this one receives is given back at the mailbox's next receive or wait
        slice (50 ms). A message of several records (larger than a quarter of the
        lane, or sent before the lane's sender learned that views are taken) arrives
        as a copy.

        Raises Timeout, KeyboardInterrupt, DisconnectedError (every sender that joined
        closed or died, and all was received; a mailbox no sender has joined is only
        empty), TruncatedMessageError (that sender stopped part-way through this
        message: it is dropped, its next one is intact), MessageTooLargeError,
        CorruptSegmentError, ClosedError; and whatever unpickling raises."""
    def try_recv(self, copy: bool = True) -> Any:
        """Receive without waiting (``copy`` as for ``recv``). Raises Empty if nothing
        is there."""
    def recv_many(self, max_messages: int = 1024, timeout: float | None = None) -> list[Any]:
        """Receive a batch from any senders: wait at most ``timeout`` seconds (None:
        forever) for the next message, as ``recv`` does, then take the messages already
        there in any lane without waiting, up to ``max_messages`` (>= 1) in all. Each
        sender's messages keep their order; lanes take turns as for ``recv``. Errors
        as ``Receiver.recv_many`` (DisconnectedError once every sender closed and all
        was received; a decode failure, or a CorruptSegmentError found after the first
        message, carries the batch so far as ``received``)."""
    def lease(self, timeout: float | None = None) -> Lease:
        """The next message as a ``Lease`` viewing it in its sender's lane (as
        ``Receiver.lease``), waiting at most ``timeout`` seconds. Raises as ``recv``."""
    @property
    def held(self) -> int:
        """Messages held by live views (``recv(copy=False)``, leases) and not released."""
    def recv_bytes(self, timeout: float | None = None) -> bytes:
        """Receive the next message's payload as bytes, whatever was sent."""
    def poll(self, timeout: float | None = 0.0) -> bool:
        """True if the next receive would not wait, waiting at most ``timeout`` seconds
        for that: a message is ready, or (as ``multiprocessing.Connection.poll`` at end
        of file) every sender closed or died and nothing is queued, so the receive
        raises ``DisconnectedError`` or ``PeerDeadError``."""
    def close(self) -> None:
        """Close the receiving end (idempotent); senders get DisconnectedError when they
        next wait for room. A receive of another thread blocked on it ends with
        ClosedError within one wait slice (50 ms)."""
    def fileno(self) -> int:
        """A descriptor for ``select``/``selectors``/``multiprocessing.connection.wait``
        and asyncio: readable iff a message is pending, or every sender that joined has
        closed or died (end-of-file). The read end of the mailbox's doorbell FIFO
        (``/dev/shm/shmplane.<name>@rx``), written by senders only while a handle waits
        this way. Each call re-arms it, as does every receive. Do not close it.

        Raises ClosedError, InvalidArgumentError (no name), NotFoundError /
        CorruptSegmentError (no private doorbell)."""
    def _check_peer(self) -> None: ...
    def recv_async(self, timeout: float | None = None) -> Coroutine[Any, Any, Any]:
        """``await mb.recv_async(timeout=None)``: receive without blocking the event
        loop. Raises as ``recv``; Timeout."""
    def __aiter__(self) -> AsyncIterator[Any]:
        """``async for obj in mb``: objects until every sender closed."""
    def __iter__(self) -> Self: ...
    def __next__(self) -> Any: ...
    @property
    def name(self) -> str | None:
        """The mailbox's name (None once closed)."""
    @property
    def path(self) -> str | None:
        """The segment's file, ``/dev/shm/shmplane.<name>`` (None once closed)."""
    @property
    def capacity(self) -> int:
        """Each lane's ring capacity in bytes (0 once closed)."""
    @property
    def max_senders(self) -> int:
        """Most senders at once (lanes)."""
    @property
    def senders(self) -> int:
        """Senders attached now (one that died unnoticed counts until a receive finds out)."""
    @property
    def closed(self) -> bool:
        """True once closed."""
    @property
    def policy(self) -> str:
        """'spin', 'block' or 'adaptive(spin_us=N)'."""
    def set_policy(self, policy: str, spin_us: float = 20.0) -> None:
        """Set how blocked receives wait (see ``Sender.set_policy``)."""
    def __enter__(self) -> Self: ...
    def __exit__(self, *args: object) -> bool: ...
    def __reduce__(self) -> tuple[Any, ...]: ...

DEFAULT_MAX_CLIENTS: int
"""Default number of clients of an RPC server at once: 64."""

@final
class RpcServer:
    """The serving end of a request/response endpoint: any number of ``RpcClient``s
    (up to ``max_clients`` at once, in any processes) call it; each call is one message
    each way, of any kind and size (bytes, ndarrays, any picklable object; an 8 MB
    array or a list of a million floats is one reply), and runs at most once however
    often a client retries it.

    Layout: a mailbox of one request lane per client (``capacity`` bytes each; larger
    requests stream through in chunks) at ``/dev/shm/shmplane.<name>``, plus a reply
    channel per client that the client creates (``<name>.reply-<id>``, 256 KiB by
    default: 100 clients commit 33 MB in all). Every request and reply carries a 16-byte envelope (call number, client
    id, flags). The server keeps, per client, the last call's number and state and a
    copy of its final reply if it is at most 64 KiB (until the client's next call): a
    retry of a running call waits for its reply, a retry of an answered one gets it
    from the client's channel or from that copy; an older number is dropped (Birrell &
    Nelson, "Implementing Remote Procedure Calls", 1984). One server per name; a server
    that died is replaced by the next ``create`` (its clients get PeerDeadError).
    ``recv``/iteration/``serve`` block with the GIL released (Ctrl-C works). Not
    picklable. While one thread serves, the others may read ``name`` and
    ``max_clients`` and call ``close``; the other properties raise
    InvalidArgumentError ("in use by another thread") then.
    """

    @staticmethod
    def create(name: str, max_clients: int = ..., capacity: int = ..., reply_timeout: float = 5.0) -> RpcServer:
        """Create server ``name`` (``[A-Za-z0-9._-]``, at most 185 bytes) for up to
        ``max_clients`` clients at once (default 64, at most 511), each with a request
        lane of ``capacity`` bytes (a power of two >= 4096; default 64 KiB). Commits
        ``max_clients`` x (``capacity`` + 4 KiB) bytes (4.3 MB by default).
        ``reply_timeout`` (seconds): how long a reply waits for room in a client's
        reply channel before it is given up (one client that stops reading must not
        hold the server); the call then counts as answered and its retry raises
        RemoteError of kind ``"ReplyLost"``; it is never run again.

        Raises AlreadyExistsError (a live server has the name), InvalidNameError,
        InvalidArgumentError, NoSpaceError, ValueError (a reply_timeout that is not a
        positive number)."""
    def recv(self, timeout: float | None = None) -> Request:
        """The next call (``request.value`` is the request object), waiting at most
        ``timeout`` seconds (None: forever). Retries and stale duplicates never come
        out here. A request not read whole (its client died, gave up or stalled
        part-way: each record must come within ``reply_timeout`` of the one before) is
        skipped, and its retry runs; one that arrived whole but cannot be taken (unpicklable, too large
        to allocate) is answered with that error.

        Raises Timeout, KeyboardInterrupt, ClosedError, CorruptSegmentError (a client's
        lane is corrupt: reported once, then skipped)."""
    def try_recv(self) -> Request:
        """The next call without waiting. Raises Empty if none is waiting."""
    def __iter__(self) -> RpcServer: ...
    def __next__(self) -> Request:
        """The next call, waiting forever; iteration ends when the server is closed
        (from another thread)."""
    def serve(self, handler: Callable[[Any], Any]) -> None:
        """Serve calls until the server is closed: ``handler(request.value)``'s return
        value is the reply; an ``Exception`` it raises, or one raised encoding its
        result (an unpicklable object), is sent to the client as RemoteError (its type
        name, message and traceback) and serving goes on, as it does past a reply given
        up after the reply timeout and past a client's corrupt lane. KeyboardInterrupt,
        SystemExit and other BaseExceptions propagate. Requests are handled one at a
        time in this thread; replying from other threads while this one waits in
        ``recv`` raises InvalidArgumentError ("in use by another thread")."""
    def serve_async(self, handler: Callable[[Any], Any]) -> Coroutine[Any, Any, None]:
        """``await server.serve_async(handler)``: ``serve`` from an event loop;
        ``handler`` may be a coroutine function. Returns when the server is closed."""
    def recv_async(self, timeout: float | None = None) -> Coroutine[Any, Any, Request]:
        """``await server.recv_async()``: the next call without blocking the loop."""
    def __aiter__(self) -> AsyncIterator[Request]: ...
    def fileno(self) -> int:
        """Readiness descriptor: readable when a call may be waiting (the mailbox's
        doorbell ``/dev/shm/shmplane.<name>@rx``; see ``Mailbox.fileno``)."""
    def _check_peer(self) -> None: ...
    def pending(self) -> bool:
        """True if a call may be waiting (one load per 64 clients)."""
    def close(self) -> None:
        """Close (idempotent): calls waiting for a reply raise DisconnectedError; a
        ``recv`` or ``serve`` of another thread ends within one wait slice (50 ms)."""
    @property
    def name(self) -> str:
        """The server's name."""
    @property
    def clients(self) -> int:
        """Clients connected now."""
    @property
    def max_clients(self) -> int:
        """Most clients at once (request lanes)."""
    @property
    def duplicates(self) -> int:
        """Requests dropped as retries of running or answered calls, or stale
        duplicates, since creation."""
    @property
    def slot_calls(self) -> int:
        """Calls whose request came through its client's call slot (the fast path of
        small calls: a request of at most 224 bytes with its 16-byte envelope, and a
        reply that fits there too, written over each other in one 256-byte slot of
        shared memory), since creation."""
    @property
    def closed(self) -> bool:
        """True once closed."""
    @property
    def policy(self) -> str:
        """'spin', 'block' or 'adaptive(spin_us=N)'."""
    def set_policy(self, policy: str, spin_us: float = 20.0) -> None:
        """How ``recv`` waits (``"spin"``, ``"adaptive"``, ``"block"``), and replies for
        room."""
    def __enter__(self) -> RpcServer: ...
    def __exit__(self, *args: object) -> bool: ...
    def __reduce__(self) -> NoReturn: ...

@final
class Request:
    """One call received by an ``RpcServer``: answer it with ``reply`` (once, or as a
    stream of ``reply(..., last=False)`` parts then a final one) or ``reply_error``."""

    @property
    def value(self) -> Any:
        """The request object."""
    @property
    def client(self) -> int:
        """The calling client's id (random, 32 bits)."""
    @property
    def seq(self) -> int:
        """The call's number (1, 2, ... per client)."""
    @property
    def slot(self) -> int:
        """The client's slot on the server (``0..max_clients``)."""
    @property
    def answered(self) -> bool:
        """True once the final reply was sent."""
    def reply(self, obj: Any, last: bool = True, timeout: float | None = None) -> bool:
        """Send ``obj`` (bytes, ndarray, any picklable object, any size: one message)
        as the reply; ``last=False`` sends one part of a stream (more follow). Waits at
        most ``timeout`` seconds (None: the server's ``reply_timeout``) for room in the
        client's reply channel. False if the client is gone (closed or died): the reply
        is dropped.

        Raises InvalidArgumentError (already answered, or not running here: a new
        client took the slot, or the server was closed), Timeout (the client did not
        make room: the reply is given up, the call counts as answered though
        ``answered`` stays False, and the client's retry is told it is lost; a stream's
        client is sent that error once there is room), MessageTooLargeError (its header
        does not fit one record of the client's reply channel: nothing sent, the call
        still runs), KeyboardInterrupt; and whatever pickling raises (nothing is sent
        then)."""
    def reply_error(self, kind: str, message: str, traceback: str = "") -> bool:
        """Answer with an error: the client's call raises RemoteError with these.
        Raises as ``reply``."""

@final
class RpcClient:
    """A client of an ``RpcServer``: one call at a time (a thread each, or one client
    per thread). Pickles into children as a new client of the same server (its own
    slot and reply channel), and a ``fork`` child that inherited a client becomes one
    at its first call. A context manager; ``close()`` frees the slot."""

    @staticmethod
    def connect(name: str, timeout: float | None = None, reply_capacity: int = ...) -> RpcClient:
        """Connect to server ``name``, waiting at most ``timeout`` seconds (None:
        forever) for it to be created; the reply channel has ``reply_capacity`` bytes
        (a power of two >= 4096; default 256 KiB; larger replies stream through it in
        chunks of an eighth of it: a client of many large replies may ask for 1 MiB).

        Raises NotFoundError (no server by then), RoleTakenError (``max_clients``
        clients are connected), WrongKindError (not an RPC server), InvalidNameError,
        NoSpaceError, ValueError (a negative or NaN timeout), KeyboardInterrupt."""
    def call(self, obj: Any, timeout: float | None = None, retry: bool = False, copy: bool = True) -> Any:
        """Send ``obj`` (any size and kind) and return the reply, waiting at most
        ``timeout`` seconds in all (None: forever; a dead server ends the wait within
        50 ms). ``retry=True`` repeats the last call if it got no reply (it timed out or
        was interrupted): the server runs it at most once, and answers with its reply;
        otherwise it is a new call. A reply to an earlier call is never returned. A
        streamed reply comes back as a list of its parts.

        ``copy=False``: the reply as a zero-copy view in this client's reply channel,
        as ``Receiver.recv(copy=False)`` (a read-only ndarray, memoryview, or unpickled
        object whose out-of-band buffers are views); its space is given back when the
        last view goes. A reply of several records (larger than a quarter of the reply
        channel: ``reply_capacity`` at ``connect``) comes back as a copy, and so does a
        small reply to a small call (a record of at most 240 bytes with its envelope,
        written in the client's call slot: the fast path of small calls). A held reply
        keeps its space: a later call's reply waits for it (within the server's reply
        timeout), and one that travels in chunks and cannot fit beside it raises
        InvalidArgumentError ("release them first"): drop reply views before the next
        call when replies are large. A call made while reply views keep more than half
        of the reply channel is refused before anything is sent
        (InvalidArgumentError). Parts of a streamed reply come as copies.

        Raises RemoteError (the handler raised; the server goes on), Timeout,
        KeyboardInterrupt (both: retry safely with ``retry=True``), PeerDeadError /
        DisconnectedError (the server died or closed; connect again to a new one),
        ClosedError, TruncatedMessageError (the server gave up part-way through its
        reply), and whatever pickling raises."""
    @property
    def held(self) -> int:
        """Replies held by live views (``call(copy=False)``) and not released."""
    def stream(self, obj: Any, timeout: float | None = None) -> Iterator[Any]:
        """Call with ``obj`` and iterate over the reply's parts (``Request.reply(...,
        last=False)``), the final one included. An abandoned iteration is discarded by
        the next call (the old iterator then raises InvalidArgumentError). Raises as
        ``call`` (``timeout`` bounds each part). The parts are copies (no ``copy=``): a
        view held per part would keep the reply channel's space that the next parts
        need."""
    def call_async(
        self, obj: Any, timeout: float | None = None, retry: bool = False, copy: bool = True
    ) -> Coroutine[Any, Any, Any]:
        """``await client.call_async(obj)``: ``call`` without blocking the event loop
        (waits on ``fileno()``). Coroutines sharing a client (an ``rpc.Proxy``'s
        methods) take turns: a client makes one call at a time. ``copy=False``: the
        reply as a zero-copy view, as ``call(copy=False)``. Raises as ``call``."""
    def _send_call(self, obj: Any, timeout: float | None = None, retry: bool = False) -> int: ...
    def _next_part(self, timeout: float | None = None, seq: int | None = None, copy: bool = True) -> tuple[Any, bool] | None: ...
    def fileno(self) -> int:
        """Readiness descriptor: readable when a reply may be waiting (the reply
        channel's doorbell; see ``Receiver.fileno``)."""
    def _check_peer(self) -> None: ...
    def is_connected(self) -> bool:
        """True if the server is alive and serving (as iceoryx2's ``is_connected``)."""
    def close(self) -> None:
        """Close (idempotent): frees the slot and removes the reply channel. A call of
        another thread blocked on it ends with ClosedError within one wait slice."""
    @property
    def name(self) -> str:
        """The server's name."""
    @property
    def id(self) -> int:
        """This client's id (random, 32 bits; ``Request.client`` on the server)."""
    @property
    def slot(self) -> int | None:
        """This client's slot on the server (None once closed)."""
    @property
    def seq(self) -> int:
        """The last call's number."""
    @property
    def closed(self) -> bool:
        """True once closed."""
    @property
    def policy(self) -> str:
        """'spin', 'block' or 'adaptive(spin_us=N)'."""
    def set_policy(self, policy: str, spin_us: float = 20.0) -> None:
        """How calls wait for replies: ``"spin"``, ``"adaptive"`` (default), ``"block"``."""
    def __enter__(self) -> RpcClient: ...
    def __exit__(self, *args: object) -> bool: ...
    def __reduce__(self) -> tuple[Any, tuple[str]]: ...
