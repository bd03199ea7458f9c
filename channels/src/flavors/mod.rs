//! One module per primitive behind the public types (as crossbeam-channel's
//! `flavors/`), sharing the message format ([`crate::frame`]), the wait loop
//! ([`crate::wait`]) and the role handling ([`crate::endpoint`]).

pub mod spsc;
pub mod mailbox;
pub mod broadcast;
pub mod rpc;
