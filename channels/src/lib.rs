//! # shmplane
//!
//! Lock-free data exchange between processes on one machine through shared memory:
//! no serialisation of bulk data, no kernel copy, and no syscall on the fast path.
//!
//! Entry points:
//! - [`channel`] / [`channel_named`]: an SPSC channel of variable-size byte records,
//!   returning a [`Sender`] and a [`Receiver`]; [`Sender::create`] / [`Receiver::open`]
//!   (and the reverse) to connect unrelated processes by name.
//! - Zero-copy: [`Sender::loan`] → write in place → [`Loan::commit`];
//!   [`Receiver::peek`] → read in place → drop the [`Message`] to release it.
//! - [`Slot`]: a latest value any process writes and any number read, through a
//!   crash-safe seqlock latch (the `multiprocessing.RawValue` replacement).
//! - [`WaitPolicy`]: spin, adaptive (default) or block on a futex while waiting.
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
//! protocol is an eventcount over a shared futex; see `DESIGN.md` and the `shmplane-shm`
//! crate for the algorithms and their sources.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod channel;
mod endpoint;
mod slot;

pub use channel::{channel, channel_named, Loan, Message, Receiver, Sender};
pub use slot::{ByteSlot, Slot};
pub use bytemuck::{Pod, Zeroable};
pub use shmplane_shm::error::{Error, Result};
pub use shmplane_shm::wait::WaitPolicy;

/// Largest payload a record may carry in a channel of `capacity_bytes` bytes: the
/// capacity minus 16 bytes (record header and the zero-ahead slot).
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
    shmplane_shm::segment::gc()
}

/// Fork detection for the Python bindings (not a stable API): the number of forks this
/// process went through as the child, once the hook is installed.
#[doc(hidden)]
pub mod process {
    pub use shmplane_shm::sync::{fork_generation, install_fork_hook};
}
