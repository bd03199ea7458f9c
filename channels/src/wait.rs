//! How blocking calls wait: one loop for every endpoint, with a deadline and a
//! per-slice hook.
//!
//! Every blocking call (send waiting for room, receive waiting for a message or its
//! next chunk, a copy waiting for another copy's operation to end, a slot waiting for
//! an update) goes through [`wait_for`] or [`sleep_until`]: busy-poll (as long as the
//! endpoint's `WaitHistory` says it pays), then sleep on the shared futex
//! (`shmplane_shm::wait`), and at most every [`SLICE`](shmplane_shm::wait::SLICE)
//! (50 ms) run the endpoint's own check (is the peer alive? is the ring poisoned?) and
//! then the caller's [`Wait::with_hook`] hook. A peer's close wakes its sleeping peer,
//! which sees it at once (a one-load look before every sleep).
//! The Python binding's hook re-takes the GIL and checks for signals, so Ctrl-C ends
//! any wait within one slice; returning an error from a hook ends the wait with it.

use shmplane_shm::error::{Error, Result};
use shmplane_shm::layout::EventCount;
use shmplane_shm::wait::{wait_until_learning_then_sleep, Park, WaitError, WaitHistory, WaitPolicy, SLICE};
use std::fmt;
use std::time::{Duration, Instant};

/// The caller's side of a blocking call: how long it may wait (a deadline, forever, or
/// not at all) and a hook to run once per wait slice.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use shmplane::Wait;
/// let (mut tx, mut rx) = shmplane::channel(4096)?;
/// let mut checks = 0;
/// let mut hook = || { checks += 1; Ok(()) };
/// let r = rx.recv_with(Wait::timeout(Duration::from_millis(120)).with_hook(&mut hook));
/// assert!(matches!(r, Err(shmplane::Error::Timeout)));
/// assert!(checks >= 1); // called about every 50 ms while waiting
/// tx.send(b"x")?;
/// assert_eq!(rx.recv_with(Wait::no_wait())?, b"x");
/// # Ok::<(), shmplane::Error>(())
/// ```
pub struct Wait<'a> {
    pub(crate) deadline: Option<Instant>,
    pub(crate) block: bool,
    pub(crate) hook: Option<&'a mut dyn FnMut() -> Result<()>>,
}

impl fmt::Debug for Wait<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wait")
            .field("deadline", &self.deadline)
            .field("block", &self.block)
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

impl Wait<'static> {
    /// Wait as long as it takes.
    pub fn forever() -> Wait<'static> {
        Wait { deadline: None, block: true, hook: None }
    }

    /// Wait at most `timeout` from now. A timeout too large to be a point in time
    /// (years) waits forever.
    pub fn timeout(timeout: Duration) -> Wait<'static> {
        Wait { deadline: Instant::now().checked_add(timeout), block: true, hook: None }
    }

    /// Wait until `deadline`.
    pub fn until(deadline: Instant) -> Wait<'static> {
        Wait { deadline: Some(deadline), block: true, hook: None }
    }

    /// Do not wait: a call that would block fails at once (`Full`, `Empty`).
    pub fn no_wait() -> Wait<'static> {
        Wait { deadline: None, block: false, hook: None }
    }

    /// [`Wait::timeout`] for `Some`, [`Wait::forever`] for `None`.
    pub fn optional(timeout: Option<Duration>) -> Wait<'static> {
        timeout.map_or_else(Wait::forever, Wait::timeout)
    }
}

impl<'a> Wait<'a> {
    /// Run `hook` once per wait slice (about every 50 ms) while waiting; an error it
    /// returns ends the wait with that error (the Python binding checks for signals
    /// here and returns [`Error::Interrupted`]).
    pub fn with_hook<'b>(self, hook: &'b mut dyn FnMut() -> Result<()>) -> Wait<'b>
    where
        'a: 'b,
    {
        Wait { deadline: self.deadline, block: self.block, hook: Some(hook) }
    }

    /// True if the call may wait at all.
    pub fn blocks(&self) -> bool {
        self.block
    }

    /// The deadline, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The same deadline and hook, for a call made on the way (the wait goes on after
    /// it).
    pub(crate) fn reborrow(&mut self) -> Wait<'_> {
        let hook: Option<&mut dyn FnMut() -> Result<()>> = match &mut self.hook {
            Some(h) => Some(&mut **h),
            None => None,
        };
        Wait { deadline: self.deadline, block: self.block, hook }
    }

    /// The same hook, waiting at most `len` from now (and never past the deadline): a
    /// caller that must do something now and then while it waits (an RPC server paying
    /// owed replies).
    pub(crate) fn slice(&mut self, len: Duration) -> Wait<'_> {
        let end = Instant::now() + len;
        let deadline = Some(self.deadline.map_or(end, |d| d.min(end)));
        Wait { deadline, ..self.reborrow() }
    }

    /// Whether the deadline has passed (never without one).
    pub(crate) fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// The same hook, waiting forever: what the rest of a message that has begun waits
    /// with (a sender's chunks after a non-blocking first record, a receiver's chunks).
    pub(crate) fn rest(&mut self) -> Wait<'_> {
        let hook: Option<&mut dyn FnMut() -> Result<()>> = match &mut self.hook {
            Some(h) => Some(&mut **h),
            None => None,
        };
        Wait { deadline: None, block: true, hook }
    }

    /// A check for a loop that makes progress without waiting (skipping records):
    /// [`Error::Empty`] for a non-blocking call, [`Error::Timeout`] past the deadline,
    /// else the hook's verdict. Keeps endless input (a broken peer's records laid
    /// around the ring) from holding a call past its deadline or Ctrl-C.
    pub(crate) fn check_progress(&mut self) -> Result<()> {
        if !self.block {
            return Err(Error::Empty);
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Error::Timeout);
        }
        self.run_hook()
    }

    /// Run the hook, if any.
    pub(crate) fn run_hook(&mut self) -> Result<()> {
        match &mut self.hook {
            Some(h) => h(),
            None => Ok(()),
        }
    }
}

/// Wait until `poll` returns `Some`, following `policy` as the endpoint's `history`
/// tunes it (adaptive spinning), sleeping on the event count that `event` picks out of
/// `ctx`; every slice run `check` (the endpoint's liveness check), then the caller's
/// hook. `closed` is a cheap look (one load) at whether the peer closed: when `poll`
/// finds nothing and `closed` says yes, `check` runs at once instead of at the next
/// slice, so a close (which wakes sleepers) is reported without delay. The caller
/// handles [`Wait::no_wait`] itself.
///
/// # Errors
/// [`Error::Timeout`] once the deadline passed; the first error of `poll`, `check` or
/// the hook.
pub(crate) fn wait_for<C, T, P: Park>(
    ctx: &mut C,
    event: impl Fn(&C) -> (&EventCount, &P),
    policy: (WaitPolicy, &mut WaitHistory),
    wait: &mut Wait<'_>,
    poll: impl FnMut(&mut C) -> Result<Option<T>>,
    closed: impl Fn(&C) -> bool,
    check: impl Fn(&mut C) -> Result<()>,
) -> Result<T> {
    wait_for_then_sleep(ctx, event, policy, wait, poll, closed, check, |_| {})
}

/// [`wait_for`] that runs `before_sleep` once, when busy-polling ends and before the
/// first sleep (see `shmplane_shm::wait::wait_until_learning_then_sleep`).
///
/// # Errors
/// As [`wait_for`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn wait_for_then_sleep<C, T, P: Park>(
    ctx: &mut C,
    event: impl Fn(&C) -> (&EventCount, &P),
    (policy, history): (WaitPolicy, &mut WaitHistory),
    wait: &mut Wait<'_>,
    mut poll: impl FnMut(&mut C) -> Result<Option<T>>,
    closed: impl Fn(&C) -> bool,
    check: impl Fn(&mut C) -> Result<()>,
    before_sleep: impl FnOnce(&mut C),
) -> Result<T> {
    let deadline = wait.deadline;
    let poll = |c: &mut C| match poll(c)? {
        None if closed(c) => {
            check(c)?;
            poll(c)
        }
        ready => Ok(ready),
    };
    wait_until_learning_then_sleep(
        ctx,
        event,
        policy,
        history,
        deadline,
        poll,
        |c| {
            check(c)?;
            wait.run_hook()
        },
        before_sleep,
    )
    .map_err(|e| match e {
        WaitError::TimedOut => Error::Timeout,
        WaitError::Failed(e) => e,
    })
}

/// Wait until `poll` returns `Some` when there is nothing to sleep on (a copy waiting
/// for another copy's operation to end): poll, then sleep 10 µs doubling up to 1 ms,
/// with the deadline and the hook checked every slice.
///
/// # Errors
/// [`Error::Timeout`]; the first error of `poll` or the hook.
pub(crate) fn sleep_until<T>(wait: &mut Wait<'_>, mut poll: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let mut nap = Duration::from_micros(10);
    let mut next_slice = Instant::now() + SLICE;
    loop {
        if let Some(v) = poll()? {
            return Ok(v);
        }
        let now = Instant::now();
        if wait.deadline.is_some_and(|d| now >= d) {
            return Err(Error::Timeout);
        }
        if now >= next_slice {
            wait.run_hook()?;
            next_slice = now + SLICE;
        }
        let mut sleep = nap;
        if let Some(d) = wait.deadline {
            sleep = sleep.min(d.saturating_duration_since(now));
        }
        std::thread::sleep(sleep);
        nap = (nap * 2).min(Duration::from_millis(1));
    }
}
