//! The SIGBUS guard of shared mappings: a segment file that another process truncates
//! (or shrinks) while this one has it mapped never kills this process.
//!
//! Touching a page of a shared file mapping that lies beyond the file's end raises
//! `SIGBUS` (`mmap(2)`). Any process of the same user may `ftruncate` a segment file,
//! so without a guard a bug or a hostile peer elsewhere crashes every process that
//! has the segment mapped, in whatever access comes next — including the close at exit.
//! Sealing (`F_SEAL_SHRINK`) would forbid the truncation, but only `memfd`s can be
//! sealed and a `memfd` has no name in `/dev/shm` for unrelated processes to open.
//!
//! So each mapping is registered here, and a `SIGBUS` handler turns a fault inside one
//! into a *trip*: the handler replaces every registered mapping of the same file with
//! private zero pages (`mmap(MAP_FIXED | MAP_ANONYMOUS)` over the same range, so every
//! pointer stays valid), marks them tripped and returns; the faulting access is retried
//! and reads zeros (or writes into memory nobody else sees). From then on this process
//! reads and writes none of that file: operations check [`Guard::tripped`] where a
//! result leaves them (a committed message, a copied-out payload, a number read from a
//! slot) and in every wait slice, and report the segment corrupt. A fault outside every
//! registered mapping goes to the handler that was installed before (Rust's stack
//! overflow handler, Python's `faulthandler`, or the default action), as if this one
//! did not exist. The same technique (replace the vanished pages, flag, continue) is
//! what the JVM and LMDB-style stores use for truncated mapped files.
//!
//! Async-signal safety: the handler only loads and stores atomics and makes raw
//! `mmap`/`sigaction` system calls. A registered entry cannot be recycled while a
//! handler uses it: the handler counts itself into the entry's state first, and
//! [`Guard`]'s drop (before the `munmap`) waits for that count to drain.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Registered mappings a process may hold at once (a mailbox consumer reading every
/// lane holds about three per lane; Linux's default `vm.max_map_count` is 65,530).
/// Registering more fails with an error. The table is `.bss`: only the entries used
/// are ever touched.
pub const MAX_MAPPINGS: usize = 65536;

/// Entry states: free, closing (being unregistered), or `LIVE + n` with `n` handlers
/// inside.
const FREE: u32 = 0;
const LIVE: u32 = 1;
const CLOSING: u32 = u32::MAX;

struct Entry {
    state: AtomicU32,
    start: AtomicU64,
    len: AtomicU64,
    /// The file's identity (`st_dev`, `st_ino`): a trip covers every mapping of it.
    dev: AtomicU64,
    ino: AtomicU64,
    writable: AtomicU32,
}

impl Entry {
    const fn new() -> Entry {
        Entry {
            state: AtomicU32::new(FREE),
            start: AtomicU64::new(0),
            len: AtomicU64::new(0),
            dev: AtomicU64::new(0),
            ino: AtomicU64::new(0),
            writable: AtomicU32::new(0),
        }
    }

    /// Count a handler into a live entry; false if the entry is free or closing.
    fn enter(&self) -> bool {
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            if s == FREE || s == CLOSING {
                return false;
            }
            // ORDERING: Acquire, partner of `register`'s Release store of LIVE: the
            // range and identity fields read next are the registered ones (and cannot
            // change until this count is given back).
            match self.state.compare_exchange_weak(s, s + 1, Ordering::Acquire, Ordering::Acquire) {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
    }

    fn leave(&self) {
        // ORDERING: Release, partner of `Guard::drop`'s Acquire wait for LIVE: this
        // handler's use of the entry happens-before the entry is recycled.
        self.state.fetch_sub(1, Ordering::Release);
    }
}

static TABLE: [Entry; MAX_MAPPINGS] = [const { Entry::new() }; MAX_MAPPINGS];
/// Each entry's tripped flag (0, or 1 once tripped), apart from the entries: read on
/// every operation, it must not share lines with the words registration writes.
static TRIPPED: [AtomicU32; MAX_MAPPINGS] = [const { AtomicU32::new(0) }; MAX_MAPPINGS];
/// Entries ever used: the handler scans `TABLE[..HIGH]`.
static HIGH: AtomicU64 = AtomicU64::new(0);
/// Trips so far in this process (any file).
static TRIPS: AtomicU64 = AtomicU64::new(0);
/// The `SIGBUS` action that was installed before ours, in one word (so a handler never
/// reads half of an update): its handler address (`SIG_DFL` is 0, `SIG_IGN` 1) shifted
/// left by one, and whether it takes `SA_SIGINFO` arguments in bit 0.
static PREVIOUS: AtomicU64 = AtomicU64::new(0);
/// Serialises registration's slot search and the handler's (re)installation: a spin
/// lock, not a `Mutex`, so that a fork child (which inherits it as it was) can reset it
/// in its `pthread_atfork` handler.
static INSTALL: AtomicU32 = AtomicU32::new(0);
/// A foreign fault handed to the previous handler, which returned: its address and how
/// many times in a row it came back. A handler that returns without curing the fault
/// (a disabled `faulthandler` whose pointer we kept) would otherwise loop forever.
static LAST_FOREIGN: AtomicU64 = AtomicU64::new(0);
static FOREIGN_REPEATS: AtomicU32 = AtomicU32::new(0);
/// Set while a sent `SIGBUS` is handed to the previous handler: one that re-raises it
/// (`faulthandler` after its dump) then gets the default action.
static PASSING_SENT: AtomicU32 = AtomicU32::new(0);

/// Take `INSTALL` (never from the handler).
fn lock_install() -> InstallGuard {
    // ORDERING: Acquire, partner of `InstallGuard::drop`'s Release.
    while INSTALL.compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed).is_err() {
        std::thread::yield_now();
    }
    InstallGuard
}

struct InstallGuard;

impl Drop for InstallGuard {
    fn drop(&mut self) {
        // ORDERING: Release, partner of `lock_install`'s Acquire.
        INSTALL.store(0, Ordering::Release);
    }
}

/// The fork child's handler: only the forking thread exists in the child, so a lock or
/// handler count that another thread held at the fork is nobody's now.
extern "C" fn after_fork_in_child() {
    // ORDERING: Relaxed: single-threaded here (the child's only thread).
    INSTALL.store(0, Ordering::Relaxed);
    PASSING_SENT.store(0, Ordering::Relaxed);
    let high = HIGH.load(Ordering::Relaxed) as usize;
    for e in &TABLE[..high] {
        let s = e.state.load(Ordering::Relaxed);
        if s > LIVE && s != CLOSING {
            e.state.store(LIVE, Ordering::Relaxed);
        }
    }
}

/// A registered mapping. Drop it before unmapping.
#[derive(Debug)]
pub struct Guard {
    index: usize,
}

impl Guard {
    /// Register the mapping `[start, start + len)` of the file `(dev, ino)`, installing
    /// the handler (again, if another handler replaced ours since: Python's
    /// `faulthandler.enable()` does).
    ///
    /// # Errors
    /// A message if [`MAX_MAPPINGS`] are registered, or `sigaction` fails.
    pub fn register(start: *mut u8, len: usize, dev: u64, ino: u64, writable: bool) -> Result<Guard, String> {
        let _serial = lock_install();
        install()?;
        let high = HIGH.load(Ordering::Relaxed) as usize;
        let index = (0..high)
            // ORDERING: Acquire, partner of `Guard::drop`'s Release store of FREE: the
            // entry's last use happens-before it is filled again.
            .find(|&i| TABLE[i].state.load(Ordering::Acquire) == FREE)
            .or_else(|| (high < MAX_MAPPINGS).then_some(high))
            .ok_or_else(|| format!("more than {MAX_MAPPINGS} shared mappings in one process"))?;
        let e = &TABLE[index];
        e.start.store(start as u64, Ordering::Relaxed);
        e.len.store(len as u64, Ordering::Relaxed);
        e.dev.store(dev, Ordering::Relaxed);
        e.ino.store(ino, Ordering::Relaxed);
        e.writable.store(u32::from(writable), Ordering::Relaxed);
        TRIPPED[index].store(0, Ordering::Relaxed);
        // ORDERING: Release, partner of the handler's Acquire in `Entry::enter`: the
        // fields above are visible to a handler that finds the entry live.
        e.state.store(LIVE, Ordering::Release);
        if index == high {
            // ORDERING: Release, partner of the handler's Acquire load of HIGH (the
            // entry's LIVE store is ordered before it).
            HIGH.store(high as u64 + 1, Ordering::Release);
        }
        Ok(Guard { index })
    }

    /// True once the file was found truncated under this mapping: its pages are
    /// private zeros now, and nothing read from them or written to them is shared.
    #[inline(always)]
    pub fn tripped(&self) -> bool {
        // ORDERING: Relaxed: set before the handler replaced the pages (SeqCst) and
        // read by the thread that faulted, or by others after the `mmap` (a system
        // call) made the zero pages theirs too; a late view only delays the report.
        TRIPPED[self.index].load(Ordering::Relaxed) != 0
    }

    /// This mapping's tripped flag, for callers that check it without going through
    /// the region (hot paths cache it). It is this mapping's only while the guard lives.
    pub fn trip_flag(&self) -> TripFlag {
        TripFlag(&TRIPPED[self.index])
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let e = &TABLE[self.index];
        // Wait for handlers inside (a fault in this mapping on another thread, which
        // can only be an access racing the unmap: never in this crate).
        loop {
            // ORDERING: Acquire, partner of `Entry::leave`'s Release.
            match e.state.compare_exchange(LIVE, CLOSING, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => break,
                Err(_) => std::hint::spin_loop(),
            }
        }
        // ORDERING: Release: the entry's last use happens-before a new registration
        // (which reads FREE under INSTALL and then writes the fields).
        e.state.store(FREE, Ordering::Release);
    }
}

/// A mapping's tripped flag ([`Guard::trip_flag`], `Region::trip_flag`): one load.
#[derive(Clone, Copy, Debug)]
pub struct TripFlag(&'static AtomicU32);

impl TripFlag {
    /// A flag that never trips (heap regions).
    pub fn never() -> TripFlag {
        static NEVER: AtomicU32 = AtomicU32::new(0);
        TripFlag(&NEVER)
    }

    /// True once tripped ([`Guard::tripped`]).
    #[inline(always)]
    pub fn get(self) -> bool {
        // ORDERING: Relaxed (see `Guard::tripped`).
        self.0.load(Ordering::Relaxed) != 0
    }
}

/// Files found truncated in this process so far.
pub fn trips() -> u64 {
    TRIPS.load(Ordering::Relaxed)
}

/// Make the guard's handler the `SIGBUS` action again if another one replaced it since
/// (Python's `faulthandler.enable()` or `disable()`, a `signal.signal(SIGBUS, ...)`):
/// one `sigaction` read when nothing changed. Called at every mapping, in every wait
/// slice and when a mapping is dropped.
pub fn ensure_installed() {
    let _serial = lock_install();
    let _ = install();
}

/// Install [`on_sigbus`] unless it is the current `SIGBUS` action; the current one
/// becomes the one faults outside our mappings go to. Called under `INSTALL`.
fn install() -> Result<(), String> {
    // SAFETY: sigaction with a null new action only reads the current one into `cur`.
    let mut cur: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `cur` is a valid out-pointer.
    if unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut cur) } != 0 {
        return Err(format!("sigaction(SIGBUS): {}", std::io::Error::last_os_error()));
    }
    let ours = on_sigbus as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) as usize;
    if cur.sa_sigaction == ours {
        return Ok(());
    }
    static HOOKED: AtomicU32 = AtomicU32::new(0);
    // ORDERING: Relaxed: only decides who calls pthread_atfork (under INSTALL).
    if HOOKED.swap(1, Ordering::Relaxed) == 0 {
        // SAFETY: the child handler only stores atomics.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    }
    let siginfo = u64::from(cur.sa_flags & libc::SA_SIGINFO != 0);
    // ORDERING: SeqCst, read by the handler (any thread): one word, never torn.
    PREVIOUS.store(((cur.sa_sigaction as u64) << 1) | siginfo, Ordering::SeqCst);
    // SAFETY: zeroed is a valid sigaction (empty mask); fields set below.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = ours;
    // SA_ONSTACK: run on the thread's alternate stack where it has one (Rust's main
    // thread does, for stack overflows); SA_NODEFER: a fault inside a chained handler
    // is delivered, not left pending.
    act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
    // SAFETY: a valid action with a handler of the SA_SIGINFO signature.
    if unsafe { libc::sigaction(libc::SIGBUS, &act, std::ptr::null_mut()) } != 0 {
        return Err(format!("sigaction(SIGBUS): {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

const PAGE: usize = 4096;

/// The `SIGBUS` handler (see the module docs).
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    if code <= 0 {
        sent(sig, info, ctx);
        return;
    }
    // BUS_ADRERR: an access to a page beyond the file's end.
    if code == libc::BUS_ADRERR && trip(addr) {
        return;
    }
    chain(sig, info, ctx, addr);
}

/// A sent `SIGBUS` (kill(2), raise(3)): nothing to retry. Handed to the previous
/// handler, as without us; if that one raises it again (Python's `faulthandler` after
/// its dump, with ours reinstated), the default action ends the process.
fn sent(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let (handler, siginfo) = previous();
    if handler == libc::SIG_IGN {
        return;
    }
    // ORDERING: Relaxed: a flag of this signal's delivery (re-entry is the same thread).
    if handler == libc::SIG_DFL || PASSING_SENT.swap(1, Ordering::Relaxed) == 1 {
        PASSING_SENT.store(0, Ordering::Relaxed);
        default_action(sig, true);
        return;
    }
    call(handler, siginfo, sig, info, ctx);
    PASSING_SENT.store(0, Ordering::Relaxed);
}

/// Trip every mapping of the file mapped at `addr`; false if no registered mapping
/// holds `addr`.
fn trip(addr: usize) -> bool {
    // ORDERING: Acquire, partner of `register`'s Release store of HIGH.
    let high = HIGH.load(Ordering::Acquire) as usize;
    let Some(hit) = (0..high).find(|&i| {
        let e = &TABLE[i];
        if !e.enter() {
            return false;
        }
        let start = e.start.load(Ordering::Relaxed) as usize;
        let inside = addr >= start && addr - start < e.len.load(Ordering::Relaxed) as usize;
        if !inside {
            e.leave();
        }
        inside
    }) else {
        return false;
    };
    let (dev, ino) = (TABLE[hit].dev.load(Ordering::Relaxed), TABLE[hit].ino.load(Ordering::Relaxed));
    let mut ok = true;
    let mut newly = false;
    for e in &TABLE[..high] {
        let same = std::ptr::eq(e, &TABLE[hit]);
        if !same && !e.enter() {
            continue;
        }
        let i = (e as *const Entry as usize - TABLE.as_ptr() as usize) / size_of::<Entry>();
        // ORDERING: SeqCst swap, before the pages are replaced: a thread that sees the
        // zero pages (after this handler's mmap) and then loads the flag sees it; the
        // swap lets one handler only replace a mapping (a second replacement would wipe
        // what threads wrote to the first one's private pages meanwhile).
        if e.dev.load(Ordering::Relaxed) == dev && e.ino.load(Ordering::Relaxed) == ino && TRIPPED[i].swap(1, Ordering::SeqCst) == 0 {
            newly = true;
            ok &= zero_pages(e.start.load(Ordering::Relaxed) as usize, e.len.load(Ordering::Relaxed) as usize, e.writable.load(Ordering::Relaxed) != 0);
        }
        if !same {
            e.leave();
        }
    }
    TABLE[hit].leave();
    if newly {
        TRIPS.fetch_add(1, Ordering::Relaxed);
    }
    ok
}

/// Replace `[start, start + len)` with private zero pages.
fn zero_pages(start: usize, len: usize, writable: bool) -> bool {
    let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
    let len = len.div_ceil(PAGE) * PAGE;
    // SAFETY: the range is a registered mapping of this process, live (its entry is
    // entered), so replacing it with anonymous memory of the same size and
    // protection affects only that mapping; MAP_FIXED keeps its address.
    let p = unsafe {
        libc::mmap(start as *mut libc::c_void, len, prot, libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    };
    p as usize == start
}

/// The previous action's handler address and whether it takes `SA_SIGINFO` arguments.
fn previous() -> (usize, bool) {
    // ORDERING: SeqCst, partner of `install`'s store.
    let p = PREVIOUS.load(Ordering::SeqCst);
    ((p >> 1) as usize, p & 1 == 1)
}

/// Hand a fault outside our mappings to the action installed before ours. A handler
/// that returns without curing it gets the fault again; the second repeat at the same
/// address takes the default action instead (a stale pointer to a handler that was
/// disabled since would loop forever).
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void, addr: usize) {
    let (handler, siginfo) = previous();
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // Ignoring a fault is undefined: the default action, as without us.
        default_action(sig, false);
        return;
    }
    // ORDERING: Relaxed: a heuristic; a race between threads only moves the default
    // action one fault earlier or later.
    if LAST_FOREIGN.swap(addr as u64, Ordering::Relaxed) == addr as u64 {
        if FOREIGN_REPEATS.fetch_add(1, Ordering::Relaxed) >= 1 {
            FOREIGN_REPEATS.store(0, Ordering::Relaxed);
            default_action(sig, false);
            return;
        }
    } else {
        FOREIGN_REPEATS.store(0, Ordering::Relaxed);
    }
    call(handler, siginfo, sig, info, ctx);
}

/// Call a previous handler with the signature its flags say.
fn call(handler: usize, siginfo: bool, sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    if siginfo {
        // SAFETY: the previous action was installed with SA_SIGINFO, so `handler` is a
        // function of this signature.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = unsafe { std::mem::transmute(handler) };
        f(sig, info, ctx);
    } else {
        // SAFETY: without SA_SIGINFO the handler takes the signal number only.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(sig);
    }
}

/// Reinstate the default action of `sig`; `again`: raise it now (a sent signal),
/// else return and let the faulting access be retried, which raises it.
fn default_action(sig: libc::c_int, again: bool) {
    // SAFETY: a zeroed sigaction is SIG_DFL with an empty mask.
    let act: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a valid action; sigaction is async-signal-safe.
    unsafe { libc::sigaction(sig, &act, std::ptr::null_mut()) };
    if again {
        // SAFETY: raise is async-signal-safe; SA_NODEFER lets it through at once.
        unsafe { libc::raise(sig) };
    }
}
