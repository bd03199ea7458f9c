//! # shmplane-shm
//!
//! The shared-memory core of shmplane: every `unsafe` block and every atomic of the
//! project lives in this crate. The safe public API is the `shmplane` crate.
//!
//! - [`bell`]: doorbells (named FIFOs) for waits through select/poll/epoll/asyncio.
//! - [`buf`]: write-only destinations of received bytes.
//! - [`sync`]: the atomics shim (std or loom under `cfg(shmplane_loom)`).
//! - [`layout`]: `#[repr(C)]` descriptors of every shared layout, with const asserts.
//! - [`region`]: named `/dev/shm` files, shared mappings, heap regions.
//! - [`kind`]: one spec per segment kind: roles, parameters, size, validation.
//! - [`header`]: writing and validating segment headers (untrusted input).
//! - [`segment`]: create/open/close a segment and claim its roles.
//! - [`gc`]: stale segments and their removal.
//! - [`lease`]: which copy of an endpoint (fork, pickled handle) may operate now.
//! - [`process`]: fork detection and asymmetric fences (`membarrier`).
//! - [`wait`]: spin → shared-futex wait protocol, with doorbells for OS-level waiters.
//! - [`ring`]: the SPSC variable-size record ring.
//! - [`seqlock`]: the crash-safe seqlock latch of latest-value slots.
//! - [`liveness`]: endpoint ownership and dead-peer detection.
//! - [`mailbox`]: the pending summary over a mailbox's lanes.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

#[cfg(not(shmplane_loom))]
pub mod bell;
pub mod broadcast;
pub mod buf;
pub mod callslot;
pub mod error;
#[cfg(not(shmplane_loom))]
pub mod gc;
pub mod header;
pub mod kind;
pub mod layout;
pub mod lease;
pub mod liveness;
pub mod mailbox;
#[cfg(not(shmplane_loom))]
pub mod process;
#[cfg(not(shmplane_loom))]
pub mod region;
pub mod ring;
pub mod seqlock;
#[cfg(not(shmplane_loom))]
pub mod segment;
#[cfg(not(shmplane_loom))]
pub mod store;
#[cfg(not(shmplane_loom))]
pub mod survey;
pub mod sync;
pub mod wait;

pub use error::{Error, Result};
