//! The one error type of shmplane (re-exported by the `shmplane` crate).

use std::io;

/// Every failure shmplane reports. Each message says what went wrong and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No segment with this name exists.
    #[error("no shmplane segment named {name:?} (looked for {path}); create it first or check the name")]
    NotFound {
        /// The name as given.
        name: String,
        /// The file looked for.
        path: String,
    },
    /// A live segment with this name exists already.
    #[error("a shmplane segment named {name:?} already exists and is in use ({path}); pick another name or open it instead")]
    AlreadyExists {
        /// The name as given.
        name: String,
        /// The existing file.
        path: String,
    },
    /// The name cannot be a segment name.
    #[error("invalid segment name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// An argument is out of range (capacity, size, tag, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The segment's bytes are not a valid shmplane segment (garbage, truncated,
    /// half-initialised by a creator that died, or a ring a peer corrupted).
    #[error("corrupt shmplane segment {path}: {what}")]
    Corrupt {
        /// The segment file.
        path: String,
        /// What check failed.
        what: String,
    },
    /// A shmplane segment of another ABI version or layout.
    #[error("incompatible shmplane segment {path}: {what}; use the same shmplane version on both sides")]
    Incompatible {
        /// The segment file.
        path: String,
        /// What differs.
        what: String,
    },
    /// A shmplane segment of another kind (a slot opened as a channel, ...).
    #[error("shmplane segment {path} is a {found}, not a {expected}")]
    WrongKind {
        /// The segment file.
        path: String,
        /// Kind the caller asked for.
        expected: &'static str,
        /// Kind found in the header.
        found: String,
    },
    /// A message this endpoint cannot carry, or this process cannot take: messages of
    /// any size stream through a ring, but a loan (one record), a message's header, a
    /// lossy broadcast's message (one record or half the ring) and a received message
    /// too large to allocate have limits.
    #[error("message of {len} bytes is larger than this channel's maximum of {max} bytes; create the channel with a larger capacity")]
    TooLarge {
        /// Message length in bytes.
        len: usize,
        /// Largest message in bytes.
        max: usize,
    },
    /// `try_send`: no room now.
    #[error("channel is full")]
    Full,
    /// `try_recv`: nothing to receive now.
    #[error("channel is empty")]
    Empty,
    /// A timed operation ran out of time.
    #[error("timed out")]
    Timeout,
    /// The process owning the other end died without closing it.
    #[error("the {role} ({}) died without closing its end", peer_label(*.pid))]
    PeerDead {
        /// Role of the peer.
        role: &'static str,
        /// Its process id (0 if unknown).
        pid: u32,
    },
    /// The other end was closed and nothing is left to receive.
    #[error("the {role} closed its end")]
    Disconnected {
        /// Role of the peer.
        role: &'static str,
    },
    /// Every slot of a role that many handles share is taken (a broadcast's
    /// subscribers, a mailbox's senders).
    #[error("all {count} {role} slots of {path} are taken; close one, or create the segment with more")]
    AllTaken {
        /// The role ("subscriber", "sender").
        role: &'static str,
        /// The segment file.
        path: String,
        /// How many slots it has.
        count: usize,
    },
    /// Another live endpoint holds this role.
    #[error("the {role} role of {path} is already taken by pid {pid}; only one {role} may be attached at a time")]
    RoleTaken {
        /// The role asked for.
        role: &'static str,
        /// The segment file.
        path: String,
        /// Owner's process id (0 if unknown).
        pid: u32,
    },
    /// The sender abandoned a chunked message part-way (interrupted, or it died); the
    /// partial message was dropped and the next one is intact.
    #[error("the sender abandoned a message after {received} of {total} bytes; it was dropped, the next message is intact")]
    Truncated {
        /// Bytes received.
        received: usize,
        /// Bytes announced.
        total: usize,
    },
    /// A subscriber of a lossy broadcast fell a lap behind: the publisher overwrote
    /// `missed` messages before this subscriber read them. It continues from the
    /// oldest message still held (the semantics of tokio's `broadcast` channel).
    #[error("fell behind a lossy broadcast: {missed} messages were overwritten before they were read; receiving continues from the oldest message held")]
    Lagged {
        /// Messages lost to this subscriber.
        missed: u64,
    },
    /// An RPC server's handler failed on this call (or the server could not answer
    /// it); the server goes on serving.
    #[error("the server's handler raised {kind}: {message}")]
    Remote {
        /// The error's type name (a Python exception's class name).
        kind: String,
        /// Its message.
        message: String,
        /// Its formatted traceback (empty if the server had none).
        traceback: String,
    },
    /// This endpoint was closed.
    #[error("this endpoint is closed")]
    Closed,
    /// Every copy entry of a role is in use by a live process (see
    /// `shmplane_shm::lease`): too many processes use copies of one endpoint.
    #[error("the {role} of {path} is in use through copies of it in {} processes already (pids {pids:?}); close the copies that are not needed", pids.len())]
    TooManyCopies {
        /// The role.
        role: &'static str,
        /// The segment file.
        path: String,
        /// Processes whose copies hold the entries.
        pids: Vec<u32>,
    },
    /// A wait was ended by the caller's per-slice hook (see `shmplane::Wait::with_hook`;
    /// the Python binding's hook does this when a signal handler raised).
    #[error("the wait was interrupted")]
    Interrupted,
    /// `/dev/shm` has no room for the segment.
    #[error("not enough shared memory for {bytes} bytes at {path}: /dev/shm is full; free space or choose a smaller capacity")]
    NoSpace {
        /// The segment file.
        path: String,
        /// Bytes requested.
        bytes: u64,
    },
    /// The segment belongs to another user, or others may write it: opening it would
    /// trust data a stranger can forge (or read) (see `ShmFile::open`).
    #[error("{path} is not this user's private segment ({why}); refusing to use it. Only segments created by this user with mode 0600 are opened")]
    NotOurs {
        /// The segment file.
        path: String,
        /// What is wrong: its owner or its mode.
        why: String,
    },
    /// Any other operating-system error.
    #[error("{op} {path}: {source}")]
    Os {
        /// The failing operation.
        op: &'static str,
        /// The segment file.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// `Result<T, shmplane::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// "pid N", or what pid 0 means in a role entry: every process that held the end's
/// descriptor closed or lost it before one of them used it.
fn peer_label(pid: u32) -> String {
    if pid == 0 {
        "its process is unknown: no process that held it used it".to_owned()
    } else {
        format!("pid {pid}")
    }
}
