//! # shmplane
//!
//! Lock-free data exchange between processes on one machine through shared memory:
//! no serialisation of bulk data, no kernel copy, and no syscall on the fast path.
//!
//! Entry points:
//! - [`channel`] / [`channel_named`]: an SPSC channel of messages of any size,
//!   returning a [`Sender`] and a [`Receiver`]; [`Sender::create`] / [`Receiver::open`]
//!   (and the reverse) to connect unrelated processes by name. Bytes
//!   ([`Sender::send`]), n-dimensional arrays that Python receives as numpy arrays
//!   ([`Sender::send_array_of`]), and whole messages ([`Receiver::recv_frame`]).
//! - Zero-copy: [`Sender::loan`] → write in place → [`Loan::commit`];
//!   [`Receiver::peek`] → read in place → drop the [`Message`] to release it.
//! - Copies of an endpoint (a descriptor passed to a child, a fork) take turns: each
//!   message whole, nothing lost or repeated (`shmplane_shm::lease`).
//! - [`Mailbox`]: many producers, one consumer (MPSC): any process joins by name with
//!   [`Sender::open`]; [`Mailbox::pending`] is the one-load "is there a message?"
//!   check; one SPSC lane per producer, so a producer's death strands nothing else.
//! - [`RpcServer`] / [`RpcClient`]: request/response between processes, replies of
//!   any size in one message, each call run at most once however often it is retried.
//! - [`Slot`]: a latest value any process writes and any number read, through a
//!   crash-safe seqlock latch (the `multiprocessing.RawValue` replacement).
//! - [`Wait`] and [`WaitPolicy`]: how long blocking calls wait, a hook they run every
//!   wait slice, and whether they spin, adapt (default) or block on a futex.
//! - [`WaitSet`]: wait on many endpoints at once (spin, then `poll(2)` on their
//!   doorbells); [`Receiver::readiness_fd`] for your own event loop.
//! - [`frame`]: the message format (`docs/wire-format.md`), shared with Python.
//! - [`Error`]: every failure, each with what went wrong and what to do.
//! - [`gc`]: remove segments left behind by crashed processes.
//!
//! ```
//! let (mut tx, mut rx) = shmplane::channel(1 << 16)?;
//! tx.send(b"hello")?;
//! assert_eq!(rx.recv()?, b"hello");
//! # Ok::<(), shmplane::Error>(())
//! ```
//!
//! The ring is Agrona's `OneToOneRingBuffer` design with rtrb's cached indices; the wait
//! protocol is an eventcount over a shared futex; see `docs/design.md` and the
//! `shmplane-shm` crate for the algorithms and their sources.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod endpoint;
mod flavors;
pub mod frame;
mod slot;
mod wait;
mod waitset;

pub use bytemuck::{Pod, Zeroable};
pub use flavors::broadcast::{Publisher, Subscriber, DEFAULT_MAX_SUBSCRIBERS};
pub use flavors::mailbox::{Joiner, Mailbox, DEFAULT_LANE_CAPACITY, DEFAULT_MAX_SENDERS};
pub use flavors::rpc::{CallId, RpcClient, RpcReplyLoan, RpcServer};
/// RPC's wire details and limits: the call envelope, its flags, default capacities.
pub mod rpc {
    pub use crate::flavors::rpc::{
        decode_error, flags, reply_name, Envelope, DEFAULT_MAX_CLIENTS, DEFAULT_REPLY_CAPACITY, DEFAULT_REQUEST_CAPACITY, MAX_SERVER_NAME,
        SAVED_REPLY_LIMIT,
    };
}
pub use shmplane_shm::layout::MAX_SUBSCRIBERS;
/// Most senders (lanes) a mailbox can have at once: 511.
pub use shmplane_shm::layout::MAX_MAILBOX_LANES as MAX_SENDERS;
/// The largest slot value in bytes (256 MiB).
pub use shmplane_shm::layout::MAX_SLOT_BYTES;
pub use flavors::spsc::{channel, channel_named, Held, HoldToken, Incoming, Loan, Message, Receiver, Releaser, Sender, Viewed, DetachedLoan, DEFAULT_CAPACITY};
pub use frame::Frame;
pub use shmplane_shm::error::{Error, Result};
pub use shmplane_shm::store::PendingProbe;
pub use shmplane_shm::wait::{suspected_lost_wakes, WaitPolicy};
pub use slot::{ByteSlot, Slot};
pub use wait::Wait;
pub use waitset::{Armed, WaitSet, Waitable};

/// Largest payload of one record in a channel of `capacity_bytes` bytes (the largest
/// loan): the capacity minus 16 bytes (record header and the zero-ahead slot). Larger
/// messages are sent in chunks.
pub use shmplane_shm::ring::max_payload as max_message_len;

/// Remove every segment of this user that is stale: its creator died while
/// initialising it, an owner died without closing it, or every end was closed.
/// Returns the names removed.
///
/// # Examples
/// ```
/// let removed: Vec<String> = shmplane::gc();
/// assert!(removed.iter().all(|n| !n.is_empty()));
/// ```
pub fn gc() -> Vec<String> {
    shmplane_shm::gc::gc()
}

/// Deliberate sharing of segments between local users (off by default): see
/// [`shmplane_shm::region::set_sharing`], and its risks there.
pub use shmplane_shm::region::{set_sharing, sharing, Sharing};

/// Make shmplane's SIGBUS guard (`shmplane_shm::region::guard`: a segment file
/// truncated under a mapping becomes `Error::Corrupt`, never SIGBUS) the signal's
/// handler again, if another handler replaced it since; the one it replaced keeps
/// getting the faults that are not in shmplane's mappings. Done at every mapping, wait
/// slice and close; call it after installing a SIGBUS handler of your own.
pub fn reinstall_sigbus_guard() {
    shmplane_shm::region::guard::ensure_installed();
}

/// Remove the anonymous segments (generated names) of processes that no longer exist
/// and that no live process holds: what crashed processes left. Done once per process
/// at its first anonymous create; returns the names removed.
pub fn sweep_dead_anonymous() -> Vec<String> {
    shmplane_shm::gc::sweep_dead_anonymous()
}

/// What segments exist and who holds them (the `shmplane ls` / `inspect` commands):
/// read only, claims nothing.
pub mod survey {
    pub use shmplane_shm::survey::{names, survey, RoleSummary, SegmentSummary};
}

/// Fork detection for the Python bindings (not a stable API): the number of forks this
/// process went through as the child, once the hook is installed.
#[doc(hidden)]
pub mod process {
    pub use shmplane_shm::process::{fork_generation, install_fork_hook};
}
