//! Latest-value slots: one value any process may write and any number may read,
//! through the crash-safe seqlock latch of `shmplane_shm::seqlock`.

use bytemuck::Pod;
use shmplane_shm::error::{Error, Result};
use shmplane_shm::header::SegmentKind;
use shmplane_shm::kind::Params;
use shmplane_shm::layout::MAX_SLOT_BYTES;
use shmplane_shm::liveness::{writer_alive, writer_id};
use shmplane_shm::seqlock::{self, SlotStore};
use shmplane_shm::segment::Segment;
use shmplane_shm::store::SegmentSlot;
use crate::wait::{wait_for, Wait};
use shmplane_shm::bell::SlotBell;
use shmplane_shm::wait::{WaitHistory, WaitPolicy};
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

/// Words kept on the stack for reads of values up to this many bytes.
const STACK_WORDS: usize = 32;

/// The type fingerprint stored in a slot's header, so that opening a `Slot<f64>`
/// segment as a `Slot<[u8; 8]>` is an error, not a reinterpretation. FNV-1a (64-bit)
/// of a description that Python's `shmplane.RawValue`/`RawArray` compute the same way
/// for the types both languages share:
///
/// - a primitive number `P` (`i8`..`u64`, `f32`, `f64`): `"value:P"`, e.g. `Slot<f64>`
///   is `RawValue('d')`;
/// - an array `[P; N]` of one: `"array:P"` (the length is the segment's), e.g.
///   `Slot<[f64; 16]>` is `RawArray('d', 16)`;
/// - any other type: its Rust type name, size and alignment (Rust-only).
fn fingerprint<T: 'static>() -> u64 {
    let name = std::any::type_name::<T>();
    let description = if PRIMITIVES.contains(&name) {
        format!("value:{name}")
    } else if let Some(elem) = array_element(name) {
        format!("array:{elem}")
    } else {
        format!("{name}/{}/{}", size_of::<T>(), align_of::<T>())
    };
    fnv1a(description.as_bytes())
}

/// Rust names of the numbers Python's ctypes has too (`c_int8`..`c_uint64`, `c_float`,
/// `c_double`): the element names of cross-language descriptions.
const PRIMITIVES: [&str; 10] = ["i8", "u8", "i16", "u16", "i32", "u32", "i64", "u64", "f32", "f64"];

/// `P` of an array type name `[P; N]` whose element is one of [`PRIMITIVES`].
fn array_element(name: &str) -> Option<&str> {
    let inner = name.strip_prefix('[')?.strip_suffix(']')?;
    let (elem, len) = inner.split_once("; ")?;
    (PRIMITIVES.contains(&elem) && len.parse::<usize>().is_ok()).then_some(elem)
}

/// FNV-1a, 64-bit, never 0 (`shmplane/sharedctypes.py` has the same function).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

/// A latest value of type `T` in shared memory (a replacement for
/// `multiprocessing.RawValue`): `write` from any process, `read` from any number; readers
/// never see a torn value and never wait on a dead writer; they block a writer only
/// when starved (see `shmplane_shm::seqlock::read_words_or_lock`: after 16 lost races a
/// reader takes the writer lock for one read).
///
/// `T` is plain old data (`bytemuck::Pod`: no padding, no pointers), checked at compile
/// time; derive it with `#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]` and
/// `#[repr(C)]`. At most 256 MiB.
///
/// # Examples
/// ```
/// let slot = shmplane::Slot::<f64>::create("doc-slot", 1.5)?;
/// let other = shmplane::Slot::<f64>::open("doc-slot")?;   // e.g. in another process
/// slot.write(&2.5)?;
/// assert_eq!(other.read()?, 2.5);
/// assert!(shmplane::Slot::<u32>::open("doc-slot").is_err()); // another type
/// # Ok::<(), shmplane::Error>(())
/// ```
pub struct Slot<T: Pod> {
    raw: ByteSlot,
    _value: PhantomData<T>,
}

impl<T: Pod> Slot<T> {
    fn check_size() -> Result<()> {
        if size_of::<T>() > MAX_SLOT_BYTES {
            return Err(Error::InvalidArgument(format!(
                "a slot value is at most {MAX_SLOT_BYTES} bytes, this type has {}",
                size_of::<T>()
            )));
        }
        Ok(())
    }

    /// Create slot `name` holding `initial`. A stale slot of that name (every handle
    /// gone) is replaced. The segment is removed when the last handle closes.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::InvalidArgument`] (value over 256 MiB),
    /// [`Error::AlreadyExists`], [`Error::NoSpace`], [`Error::Os`].
    pub fn create(name: &str, initial: T) -> Result<Slot<T>> {
        Self::check_size()?;
        let raw = ByteSlot::create(name, bytemuck::bytes_of(&initial), fingerprint::<T>())?;
        Ok(Slot { raw, _value: PhantomData })
    }

    /// Open existing slot `name`, checking that it holds a `T`: its type fingerprint
    /// and its size. A Python `RawValue('d')` opens as `Slot<f64>`, a `RawArray('d', 16)`
    /// as `Slot<[f64; 16]>` (see the type fingerprint notes on [`ByteSlot`]).
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Corrupt`], [`Error::Incompatible`],
    /// [`Error::WrongKind`] (a channel, or a slot of another type or size), [`Error::Os`].
    pub fn open(name: &str) -> Result<Slot<T>> {
        Self::check_size()?;
        let mut raw = ByteSlot::open(name, fingerprint::<T>())?;
        if raw.len() != size_of::<T>() {
            let found = format!("a slot of {} bytes", raw.len());
            let path = raw.store.as_ref().map(|s| s.segment().path().to_owned()).unwrap_or_default();
            raw.close();
            return Err(Error::WrongKind { path, expected: "a slot of the requested type and size", found });
        }
        Ok(Slot { raw, _value: PhantomData })
    }

    /// Replace the value; returns the new version. Concurrent writers serialize; a
    /// writer that died holding the write side is replaced.
    ///
    /// # Errors
    /// [`Error::Closed`].
    ///
    /// # Examples
    /// ```
    /// let slot = shmplane::Slot::<[u32; 4]>::create("doc-slot-write", [0; 4])?;
    /// let v1 = slot.version()?;
    /// let v2 = slot.write(&[1, 2, 3, 4])?;
    /// assert!(v2 > v1);
    /// assert_eq!(slot.read()?, [1, 2, 3, 4]);
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    #[inline]
    pub fn write(&self, value: &T) -> Result<u64> {
        self.raw.write(bytemuck::bytes_of(value))
    }

    /// A consistent copy of the value (never torn; waits for a writer only when starved).
    ///
    /// # Errors
    /// [`Error::Closed`].
    ///
    /// # Examples
    /// ```
    /// let slot = shmplane::Slot::<u64>::create("doc-slot-read", 7)?;
    /// assert_eq!(slot.read()?, 7);
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    #[inline]
    pub fn read(&self) -> Result<T> {
        Ok(self.read_versioned()?.0)
    }

    /// The value and its version, read together.
    ///
    /// # Errors
    /// [`Error::Closed`].
    ///
    /// # Examples
    /// ```
    /// let slot = shmplane::Slot::<u8>::create("doc-slot-readv", 1)?;
    /// let (value, version) = slot.read_versioned()?;
    /// assert_eq!((value, version), (1, slot.version()?));
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    #[inline]
    pub fn read_versioned(&self) -> Result<(T, u64)> {
        let mut value = T::zeroed();
        let version = self.raw.read_into(bytemuck::bytes_of_mut(&mut value))?;
        Ok((value, version))
    }

    /// One read attempt: `None` if a write was half-done at that instant (retry).
    ///
    /// # Errors
    /// [`Error::Closed`].
    ///
    /// # Examples
    /// ```
    /// let slot = shmplane::Slot::<i32>::create("doc-slot-try", -1)?;
    /// assert_eq!(slot.try_read()?, Some(-1)); // no writer running
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn try_read(&self) -> Result<Option<T>> {
        let mut value = T::zeroed();
        Ok(self.raw.try_read_into(bytemuck::bytes_of_mut(&mut value))?.map(|_| value))
    }

    /// The current version: one atomic load; it grows with every completed write (a
    /// whole read may already return the value of a write still finishing, whose
    /// version is then one more; a writer that died half-way through a write holds it
    /// back until the next writer or `wait_for_update` repairs that write).
    ///
    /// # Errors
    /// [`Error::Closed`].
    ///
    /// # Examples
    /// ```
    /// let slot = shmplane::Slot::<f32>::create("doc-slot-version", 0.0)?;
    /// let v = slot.version()?;
    /// slot.write(&1.0)?;
    /// assert_ne!(slot.version()?, v);
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    #[inline]
    pub fn version(&self) -> Result<u64> {
        self.raw.version()
    }

    /// Wait until the version is greater than `since` (versions only grow), at most
    /// `timeout` (`None`: forever), sleeping on a futex per the wait policy; returns the
    /// new version. `since` may be a version returned by a read
    /// ([`Slot::read_versioned`]): that read's value is then never reported as new.
    ///
    /// # Errors
    /// [`Error::Timeout`], [`Error::Closed`].
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let slot = shmplane::Slot::<u64>::create("doc-slot-wait", 0)?;
    /// let v = slot.version()?;
    /// assert!(matches!(slot.wait_for_update(v, Some(Duration::from_millis(5))), Err(shmplane::Error::Timeout)));
    /// slot.write(&1)?;
    /// assert!(slot.wait_for_update(v, None)? > v);
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn wait_for_update(&self, since: u64, timeout: Option<Duration>) -> Result<u64> {
        self.raw.wait_for_update(since, timeout)
    }

    /// Set how `wait_for_update` waits (default: [`WaitPolicy::Adaptive`]).
    ///
    /// # Examples
    /// ```
    /// let mut slot = shmplane::Slot::<u8>::create("doc-slot-policy", 0)?;
    /// slot.set_wait_policy(shmplane::WaitPolicy::Block);
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn set_wait_policy(&mut self, policy: WaitPolicy) {
        self.raw.set_wait_policy(policy);
    }

    /// The slot's name (`None` once closed).
    ///
    /// # Examples
    /// ```
    /// let slot = shmplane::Slot::<u8>::create("doc-slot-name", 0)?;
    /// assert_eq!(slot.name(), Some("doc-slot-name"));
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn name(&self) -> Option<&str> {
        self.raw.name()
    }

    /// Close this handle; the segment is removed when the last handle closes.
    /// Idempotent; also done on drop.
    ///
    /// # Examples
    /// ```
    /// let mut slot = shmplane::Slot::<u8>::create("doc-slot-close", 0)?;
    /// slot.close();
    /// assert!(matches!(slot.read(), Err(shmplane::Error::Closed)));
    /// assert!(matches!(shmplane::Slot::<u8>::open("doc-slot-close"), Err(shmplane::Error::NotFound { .. })));
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn close(&mut self) {
        self.raw.close();
    }
}

/// Run `f` on a zeroed scratch buffer of `words` words: on the stack when small (a
/// scalar read must not pay for zeroing 256 bytes), on the heap otherwise.
#[inline(always)]
fn with_words<R>(words: usize, f: impl FnOnce(&mut [u64]) -> R) -> R {
    if words <= 2 {
        f(&mut [0u64; 2][..words])
    } else if words <= STACK_WORDS {
        f(&mut [0u64; STACK_WORDS][..words])
    } else {
        f(&mut vec![0u64; words])
    }
}

impl<T: Pod> fmt::Debug for Slot<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot").field("type", &std::any::type_name::<T>()).field("raw", &self.raw).finish()
    }
}

/// A latest value of `len` raw bytes, sized at run time (the Python binding's
/// `RawValue`/`RawArray` storage). Same algorithm and guarantees as [`Slot`]; the
/// `fingerprint` stored at creation (any non-zero `u64` describing the value's type)
/// must match on open.
///
/// Type fingerprints of [`Slot`] and of Python's `RawValue`/`RawArray` are FNV-1a
/// (64-bit) of a description both languages compute alike for the types they share:
/// `"value:f64"` for a `Slot<f64>` / `RawValue('d')`, `"array:f64"` for a
/// `Slot<[f64; N]>` / `RawArray('d', N)` (the length is checked from the segment), and
/// likewise for `i8`..`u64` and `f32`. Other Rust types use their type name, size and
/// alignment; other ctypes types their ctypes description: those are one-language.
///
/// # Examples
/// ```
/// let a = shmplane::ByteSlot::create("doc-byteslot", &[1, 2, 3], 42)?;
/// let b = shmplane::ByteSlot::open("doc-byteslot", 42)?;
/// a.write(&[4, 5, 6])?;
/// let mut out = [0u8; 3];
/// b.read_into(&mut out)?;
/// assert_eq!(out, [4, 5, 6]);
/// assert!(shmplane::ByteSlot::open("doc-byteslot", 43).is_err());
/// # Ok::<(), shmplane::Error>(())
/// ```
pub struct ByteSlot {
    store: Option<SegmentSlot>,
    /// The mapping's SIGBUS-guard flag (valid while `store` is `Some`).
    trip: shmplane_shm::region::TripFlag,
    len: usize,
    /// How `wait_for_update` waits (a handle shared between threads may change it).
    policy: std::sync::Mutex<WaitPolicy>,
    /// What recent `wait_for_update`s were like (adaptive spinning); a thread that
    /// finds it in use by another waits without it.
    history: std::sync::Mutex<WaitHistory>,
    /// This handle's doorbell, once it was waited on through the OS (`update_fd`), and
    /// the fork generation that made it (a fork child makes its own).
    bell: std::sync::Mutex<Option<(u64, SlotBell)>>,
}

/// The check a writer runs every wait slice while another live writer holds the lock:
/// the segment file first (a writer that tripped on a truncated file mid-write keeps
/// its id in the shared lock word for as long as it lives, since its unlock went to the
/// private pages that replaced its mapping: without this, every other writer would
/// wait for it forever), then `wait`'s deadline and hook.
fn lock_wait_check(store: &SegmentSlot, wait: &mut Wait<'_>) -> Result<()> {
    store.segment().check_intact()?;
    wait.check_progress()
}

impl ByteSlot {
    /// Create slot `name` holding `initial` (its length is the slot's, at most 256 MiB).
    ///
    /// # Errors
    /// As [`Slot::create`].
    pub fn create(name: &str, initial: &[u8], fingerprint: u64) -> Result<ByteSlot> {
        if initial.len() > MAX_SLOT_BYTES {
            return Err(Error::InvalidArgument(format!("a slot value is at most {MAX_SLOT_BYTES} bytes")));
        }
        let len = initial.len();
        // The initial value, versions and canaries go in before the header is
        // published: an opener never sees the slot without its value (version 1).
        let seg = Segment::create_with(name, SegmentKind::Slot, Params { p0: len as u64, p1: fingerprint }, |seg| {
            let store = SegmentSlot::new(seg);
            with_words(store.words(), |words| {
                bytemuck::cast_slice_mut::<u64, u8>(words)[..len].copy_from_slice(initial);
                seqlock::init(&store, words);
            });
            store.into_segment()
        })?;
        ByteSlot::attach(seg)
    }

    /// Open slot `name`, checking its type `fingerprint`.
    ///
    /// # Errors
    /// As [`Slot::open`].
    pub fn open(name: &str, fingerprint: u64) -> Result<ByteSlot> {
        let seg = Segment::open(name, SegmentKind::Slot)?;
        if seg.info().param1 != fingerprint {
            return Err(Error::WrongKind {
                path: seg.path().to_owned(),
                expected: "slot of the requested type",
                found: format!("slot of another type ({} bytes)", seg.info().param0),
            });
        }
        ByteSlot::attach(seg)
    }

    /// Adopt a descriptor of a slot segment (passed from another process).
    ///
    /// # Errors
    /// As [`Slot::open`].
    pub fn from_fd(fd: std::os::fd::OwnedFd, name: Option<String>) -> Result<ByteSlot> {
        ByteSlot::attach(Segment::from_fd(fd, name, SegmentKind::Slot)?)
    }

    fn attach(seg: Segment) -> Result<ByteSlot> {
        seg.hold_shared()?;
        let len = seg.info().param0 as usize;
        let trip = seg.region().trip_flag();
        Ok(ByteSlot { store: Some(SegmentSlot::new(seg)), trip, len, policy: Default::default(), history: Default::default(), bell: Default::default() })
    }

    fn store(&self) -> Result<&SegmentSlot> {
        match &self.store {
            Some(s) => Ok(s),
            None => Err(Error::Closed),
        }
    }

    /// `value`, or [`Error::Corrupt`] if the segment file was truncated under this
    /// process (what was read is zeros, what was written reached nobody). One load.
    #[inline(always)]
    fn intact<T>(&self, store: &SegmentSlot, value: T) -> Result<T> {
        if self.trip.get() {
            return Err(store.segment().truncated_error());
        }
        Ok(value)
    }

    /// `version` (what a read or write returned), or [`Error::Corrupt`] if the segment
    /// file was truncated under this process, or if the lines read held zeros where a
    /// slot never does ([`seqlock::ZEROED`]: a cut inside a mapped page raises no
    /// SIGBUS, so only the zeros tell).
    #[inline(always)]
    fn intact_version(&self, store: &SegmentSlot, version: u64) -> Result<u64> {
        if version == seqlock::ZEROED {
            return Err(ByteSlot::zeroed_error(store));
        }
        self.intact(store, version)
    }

    /// [`Error::Corrupt`] for a slot whose lines read as zeros.
    #[cold]
    fn zeroed_error(store: &SegmentSlot) -> Error {
        let seg = store.segment();
        if seg.check_intact().is_err() {
            return seg.truncated_error();
        }
        Error::Corrupt {
            path: seg.path().to_owned(),
            what: "its value reads as zeros where a slot never holds them (the segment file was cut inside a page and \
                   grown again, or overwritten by another process): close the handle and create the slot again"
                .into(),
        }
    }

    /// Before a write of words `first .. first + n`: [`Error::Corrupt`] if the slot's
    /// control block or the lines the write changes read as zeros (`seqlock::writable`):
    /// a write would start the versions again from nothing, or leave a value only
    /// readers find corrupt. Loads of the lines the write moves anyway.
    #[inline]
    fn writable(store: &SegmentSlot, first: usize, n: usize) -> Result<()> {
        if !seqlock::writable(store, first, n) {
            return Err(ByteSlot::zeroed_error(store));
        }
        Ok(())
    }

    /// Value length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-length value.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The type fingerprint stored at creation (0 once closed).
    pub fn fingerprint(&self) -> u64 {
        self.store.as_ref().map_or(0, |s| s.segment().info().param1)
    }

    /// Replace the value (`src.len() == len()`); returns the new version.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (wrong length), [`Error::Closed`].
    pub fn write(&self, src: &[u8]) -> Result<u64> {
        self.write_with(src, Wait::forever())
    }

    /// [`ByteSlot::write`] that waits for the writer lock as `wait` says: while another
    /// live writer holds it (one stopped mid-write holds it as long as it is stopped),
    /// `wait`'s deadline and hook are checked every wait slice, and either ends the
    /// write with nothing written.
    ///
    /// # Errors
    /// As [`ByteSlot::write`]; [`Error::Timeout`] past the deadline, the hook's error,
    /// or [`Error::Empty`] for [`Wait::no_wait`], once the lock stayed taken for a slice.
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-write-with-{}", std::process::id());
    /// use std::time::Duration;
    /// let slot = shmplane::ByteSlot::create(&name, &[0u8; 4], 1)?;
    /// let v = slot.write_with(&[1, 2, 3, 4], shmplane::Wait::timeout(Duration::from_secs(1)))?;
    /// assert_eq!(slot.version()?, v);
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn write_with(&self, src: &[u8], mut wait: Wait<'_>) -> Result<u64> {
        if src.len() != self.len {
            return Err(Error::InvalidArgument(format!("value of {} bytes for a {}-byte slot", src.len(), self.len)));
        }
        let store = self.store()?;
        ByteSlot::writable(store, 0, store.words())?;
        let version = with_words(store.words(), |words| {
            bytemuck::cast_slice_mut::<u64, u8>(words)[..src.len()].copy_from_slice(src);
            seqlock::write_checked(store, words, writer_id(), writer_alive, || lock_wait_check(store, &mut wait))
        })?;
        self.intact_version(store, version)
    }

    /// Write `src` at byte `offset`, leaving the other bytes as they are, as one
    /// consistent write (an element or a slice of an array value). Writers of
    /// different parts never lose each other's updates: the bytes around `src` are
    /// re-read holding the writer lock. Returns the new version.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (range outside the value), [`Error::Closed`].
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-write-at-{}", std::process::id());
    /// let slot = shmplane::ByteSlot::create(&name, &[0u8; 8], 1)?;
    /// slot.write_at(2, &[7, 7])?;
    /// let mut out = [9u8; 3];
    /// slot.read_at(1, &mut out)?;
    /// assert_eq!(out, [0, 7, 7]);
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn write_at(&self, offset: usize, src: &[u8]) -> Result<u64> {
        self.write_strided(offset, src.len().max(1), src.len(), src)
    }

    /// Write `src` as elements of `elem` bytes, element `k` at byte `offset + k *
    /// stride` (`stride >= elem`), as one consistent write: slice assignment with a
    /// step. Bytes between the elements keep their value. Returns the new version.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`src.len()` not a multiple of `elem`, `stride <
    /// elem`, or a range outside the value), [`Error::Closed`].
    pub fn write_strided(&self, offset: usize, stride: usize, elem: usize, src: &[u8]) -> Result<u64> {
        self.write_strided_with(offset, stride, elem, src, Wait::forever())
    }

    /// [`ByteSlot::write_strided`] that waits for the writer lock as `wait` says (see
    /// [`ByteSlot::write_with`]).
    ///
    /// # Errors
    /// As [`ByteSlot::write_strided`] and [`ByteSlot::write_with`].
    pub fn write_strided_with(&self, offset: usize, stride: usize, elem: usize, src: &[u8], mut wait: Wait<'_>) -> Result<u64> {
        let bad = |what: &str| Err(Error::InvalidArgument(format!("slot write: {what}")));
        if offset > self.len {
            return bad(&format!("offset {offset} is past the {}-byte value", self.len));
        }
        if elem == 0 {
            return if src.is_empty() { self.version() } else { bad("zero-sized elements") };
        }
        if src.len() % elem != 0 || stride < elem {
            return bad("the data is not whole elements or the stride is shorter than an element");
        }
        let n = src.len() / elem;
        if n == 0 {
            return self.version();
        }
        let end = (n - 1).checked_mul(stride).and_then(|x| x.checked_add(elem)).and_then(|x| x.checked_add(offset));
        let Some(end) = end.filter(|&e| e <= self.len) else {
            return bad(&format!("bytes {offset}.. of {n} elements are outside the {}-byte value", self.len));
        };
        let store = self.store()?;
        let first = offset / 8;
        let skip = offset % 8;
        ByteSlot::writable(store, first, end.div_ceil(8) - first)?;
        let version = with_words(end.div_ceil(8) - first, |words| {
            seqlock::update_checked(store, first, words, writer_id(), writer_alive, || lock_wait_check(store, &mut wait), |w| {
                let bytes = bytemuck::cast_slice_mut::<u64, u8>(w);
                for (k, chunk) in src.chunks_exact(elem).enumerate() {
                    let at = skip + k * stride;
                    bytes[at..at + elem].copy_from_slice(chunk);
                }
            })
        })?;
        self.intact_version(store, version)
    }

    /// Read bytes `offset .. offset + dst.len()` consistently (one element or a slice
    /// of an array value without copying the rest); returns the version read.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (range outside the value), [`Error::Closed`].
    #[inline]
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) -> Result<u64> {
        let end = offset.checked_add(dst.len()).filter(|&e| e <= self.len);
        if end.is_none() {
            return Err(Error::InvalidArgument(format!(
                "slot read: bytes {offset}..+{} are outside the {}-byte value",
                dst.len(),
                self.len
            )));
        }
        let store = self.store()?;
        let first = offset / 8;
        let skip = offset % 8;
        let version = with_words((skip + dst.len()).div_ceil(8), |words| {
            let tries = seqlock::read_tries(words.len());
            let version = seqlock::read_words_or_lock(store, first, words, tries, writer_id, writer_alive);
            dst.copy_from_slice(&bytemuck::cast_slice::<u64, u8>(words)[skip..skip + dst.len()]);
            version
        });
        self.intact_version(store, version)
    }

    /// A number of `size` bytes (1, 2, 4 or 8) at byte `offset`, naturally aligned
    /// (`offset % size == 0`), as of some completed write: one atomic load of a
    /// committed word, no sequence and no retry (`seqlock::read_committed_word`), so it
    /// costs what reading a plain shared number does. Returned zero-extended in the low
    /// bits (`u32::from_ne_bytes` of a 4-byte number's bytes, and so on). Successive
    /// reads never go back to an older write; after [`ByteSlot::version`] reports a
    /// write, they return it or a later one.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (a size other than 1, 2, 4, 8, a misaligned offset,
    /// or past the value), [`Error::Closed`].
    #[inline]
    pub fn read_number(&self, offset: usize, size: usize) -> Result<u64> {
        let store = self.store()?;
        let ok = size.is_power_of_two()
            && size <= 8
            && offset & (size - 1) == 0
            && offset.checked_add(size).is_some_and(|end| end <= self.len);
        if !ok {
            return Err(Error::InvalidArgument(format!(
                "slot read: {size} bytes at {offset} are not an aligned number inside the {}-byte value",
                self.len
            )));
        }
        let Some(word) = seqlock::read_committed_word(store, offset / 8) else {
            return Err(ByteSlot::zeroed_error(store));
        };
        self.intact(store, ByteSlot::number_in_word(word, offset % 8, size))
    }

    /// The number of `size` bytes (1, 2, 4 or 8) at byte `at` of `word` (a word of a
    /// value, native order; `at + size <= 8`), zero-extended in the low bits: a shift and
    /// a mask, no byte copy. What [`ByteSlot::read_number`] returns for a word it read.
    #[inline]
    pub fn number_in_word(word: u64, at: usize, size: usize) -> u64 {
        debug_assert!(matches!(size, 1 | 2 | 4 | 8) && at + size <= 8);
        let shifted = if cfg!(target_endian = "little") { word >> (8 * at) } else { word >> (8 * (8 - at - size)) };
        if size == 8 { shifted } else { shifted & ((1u64 << (8 * size)) - 1) }
    }

    /// Word `index` (bytes `8 * index ..`, native order) as of some completed write,
    /// one atomic load of a committed word (see [`ByteSlot::read_number`], which
    /// checks sizes and alignment): the bare hot path of the Python binding's element
    /// reads. `None` if the handle is closed, `index` is past the value, or the segment
    /// file was found truncated under this process (the full path reports it).
    #[inline]
    pub fn committed_word(&self, index: usize) -> Option<u64> {
        let store = self.store.as_ref()?;
        if index >= store.words() {
            return None;
        }
        // A zeroed line (`None`) is left to the full path, which reports it.
        let word = seqlock::read_committed_word(store, index)?;
        // Read first: a read that found the file truncated trips the flag.
        (!self.trip.get()).then_some(word)
    }

    /// Word `index` (bytes `8 * index ..`, native order) of the value, read
    /// consistently: the fast path for scalars up to 8 bytes (no scratch buffer).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (past the value), [`Error::Closed`].
    #[inline]
    pub fn read_word(&self, index: usize) -> Result<u64> {
        let store = self.store()?;
        if index >= store.words() {
            return Err(Error::InvalidArgument(format!("word {index} is past the {}-byte value", self.len)));
        }
        let mut w = [0u64; 1];
        let version = seqlock::read_words_or_lock(store, index, &mut w, seqlock::READ_TRIES, writer_id, writer_alive);
        self.intact_version(store, version).map(|_| w[0])
    }

    /// Read a consistent copy into `dst` (`dst.len() == len()`); returns its version.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (wrong length), [`Error::Closed`].
    #[inline]
    pub fn read_into(&self, dst: &mut [u8]) -> Result<u64> {
        if dst.len() != self.len {
            return Err(Error::InvalidArgument(format!("buffer of {} bytes for a {}-byte slot", dst.len(), self.len)));
        }
        let store = self.store()?;
        // Straight into `dst`, no word buffer between (the binding's `snapshot()` is a
        // new array filled this way).
        let tries = seqlock::read_tries(store.words());
        let version = seqlock::read_bytes_or_lock(store, dst, tries, writer_id, writer_alive);
        self.intact_version(store, version)
    }

    /// One read attempt into `dst`: `None` if a write was half-done at that instant.
    ///
    /// # Errors
    /// As [`ByteSlot::read_into`].
    #[inline]
    pub fn try_read_into(&self, dst: &mut [u8]) -> Result<Option<u64>> {
        self.read_with(dst, seqlock::try_read)
    }

    #[inline]
    fn read_with(
        &self,
        dst: &mut [u8],
        read: impl FnOnce(&SegmentSlot, &mut [u64]) -> Option<u64>,
    ) -> Result<Option<u64>> {
        if dst.len() != self.len {
            return Err(Error::InvalidArgument(format!("buffer of {} bytes for a {}-byte slot", dst.len(), self.len)));
        }
        let store = self.store()?;
        let version = with_words(store.words(), |words| {
            let version = read(store, words);
            if version.is_some() {
                dst.copy_from_slice(&bytemuck::cast_slice::<u64, u8>(words)[..self.len]);
            }
            version
        });
        match version {
            Some(v) => self.intact_version(store, v).map(Some),
            None => self.intact(store, None),
        }
    }

    /// The current version (one atomic load).
    ///
    /// # Errors
    /// [`Error::Closed`], [`Error::Corrupt`] (the segment file was truncated).
    #[inline]
    pub fn version(&self) -> Result<u64> {
        let store = self.store()?;
        self.intact_version(store, seqlock::version(store))
    }

    /// Wait until the version is greater than `since` (see [`Slot::wait_for_update`]).
    ///
    /// # Errors
    /// [`Error::Timeout`], [`Error::Closed`].
    pub fn wait_for_update(&self, since: u64, timeout: Option<Duration>) -> Result<u64> {
        self.wait_for_update_with(since, Wait::optional(timeout))
    }

    /// [`ByteSlot::wait_for_update`] with a [`Wait`] (a deadline and a per-slice hook).
    ///
    /// # Errors
    /// [`Error::Timeout`], [`Error::Empty`] (non-blocking and unchanged), the hook's
    /// error, [`Error::Closed`].
    pub fn wait_for_update_with(&self, since: u64, mut wait: Wait<'_>) -> Result<u64> {
        let mut store = self.store()?;
        // A write a dead writer left half done holds `version` back: finish it first.
        seqlock::repair_abandoned(store, writer_id, writer_alive);
        // Changed already: not a wait (and not one that `wait_until` counts as short).
        let v = seqlock::version(store);
        if v > since {
            // (A zeroed control block reads as `ZEROED`, above every `since`: reported.)
            return self.intact_version(store, v);
        }
        if !wait.blocks() {
            return self.intact(store, ()).and(Err(Error::Empty));
        }
        store.segment().check_intact()?;
        let mut mine = match self.history.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        let mut scratch = WaitHistory::default();
        wait_for(
            &mut store,
            |s| (&s.control().updated.value, s.park()),
            (self.wait_policy(), mine.as_deref_mut().unwrap_or(&mut scratch)),
            &mut wait,
            |s| {
                let v = seqlock::version(*s);
                Ok((v > since).then_some(v))
            },
            |_| false,
            |s| {
                // Once per wait slice: a writer that died mid-write is not waited for;
                // a segment file truncated under us ends the wait.
                s.segment().check_intact()?;
                seqlock::repair_abandoned(*s, writer_id, writer_alive);
                Ok(())
            },
        )
        .and_then(|v| self.intact_version(store, v))
    }

    /// Set how `wait_for_update` waits (any thread, any time; a wait in progress keeps
    /// the policy it started with).
    pub fn set_wait_policy(&self, policy: WaitPolicy) {
        *self.policy.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = policy;
    }

    /// How `wait_for_update` waits (default: [`WaitPolicy::Adaptive`]).
    pub fn wait_policy(&self) -> WaitPolicy {
        *self.policy.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The slot's name (`None` once closed).
    pub fn name(&self) -> Option<&str> {
        self.store.as_ref().and_then(|s| s.segment().name())
    }

    /// The descriptor holding this handle (to pass to a child), `None` once closed.
    pub fn fd(&self) -> Option<std::os::fd::RawFd> {
        self.store.as_ref().and_then(|s| s.segment().fd())
    }

    /// Close this handle; the segment is removed with the last one. Idempotent.
    pub fn close(&mut self) {
        if let Some(s) = self.store.take() {
            let bell = self.bell.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner).take();
            if let Some((generation, b)) = bell {
                // A forked parent's doorbell is the parent's to remove.
                if generation == shmplane_shm::process::fork_generation() {
                    b.close(&s.control().bells.value);
                }
            }
            s.into_segment().close_shared();
        }
    }

    /// A descriptor that `select`, `poll`, `epoll` and asyncio's `add_reader` can wait
    /// on for the version to move away from `since`: readable at once if it already
    /// has, else at the next write. Call it again before each wait (it re-arms). It is
    /// the read end of this handle's own doorbell FIFO
    /// (`/dev/shm/shmplane.<name>@w<pid>.<n>`, removed at close), entered in the slot's
    /// table so that writers ring it; `None` when all
    /// [`SLOT_BELLS`](shmplane_shm::layout::SLOT_BELLS) entries are taken by other
    /// readers (wait with [`ByteSlot::wait_for_update`] or poll then).
    ///
    /// # Errors
    /// [`Error::Closed`]; [`Error::InvalidArgument`] (the slot has no name);
    /// [`Error::Os`] (the FIFO could not be made).
    ///
    /// # Examples
    /// ```
    /// let slot = shmplane::ByteSlot::create("doc-byteslot-fd", &[0u8; 8], 1)?;
    /// let v = slot.version()?;
    /// let fd = slot.update_fd(v)?.expect("a free doorbell entry");
    /// let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    /// // SAFETY (doc example): `p` is one valid pollfd for the duration of each call.
    /// assert_eq!(unsafe { libc::poll(&mut p, 1, 0) }, 0);
    /// slot.write(&[1u8; 8])?;
    /// assert_eq!(unsafe { libc::poll(&mut p, 1, 1000) }, 1);
    /// # Ok::<(), shmplane::Error>(())
    /// ```
    pub fn update_fd(&self, since: u64) -> Result<Option<std::os::fd::RawFd>> {
        let store = self.store()?;
        let mut bell = self.bell.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let generation = shmplane_shm::process::fork_generation();
        if bell.as_ref().is_some_and(|(g, _)| *g != generation) {
            *bell = None; // the parent's (inherited by fork): close our descriptor only
        }
        if bell.is_none() {
            let name = store
                .segment()
                .name()
                .ok_or_else(|| Error::InvalidArgument("waiting through the OS needs a named slot".into()))?;
            *bell = SlotBell::create(name, &store.control().bells.value)?.map(|b| (generation, b));
        }
        let Some((_, b)) = bell.as_ref() else { return Ok(None) };
        // As `wait_for_update_with` per slice: a writer that died mid-write is not waited for.
        seqlock::repair_abandoned(store, writer_id, writer_alive);
        b.drain();
        store.control().updated.value.arm_doorbell();
        if seqlock::version(store) > since {
            b.ring();
        }
        Ok(Some(b.fd()))
    }
}

impl Drop for ByteSlot {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for ByteSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteSlot").field("name", &self.name()).field("len", &self.len).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::fingerprint;

    /// Pinned values: `pybindings/tests/test_rawvalue.py` checks that Python computes the
    /// same ones for `RawValue('d')`, `RawArray('d', n)`, `RawValue('q')` and
    /// `RawArray('B', n)`, so that either language can open the other's slots.
    #[test]
    fn cross_language_fingerprints_are_pinned() {
        assert_eq!(fingerprint::<f64>(), 0x473fa9b0ea2fb518);
        assert_eq!(fingerprint::<[f64; 16]>(), 0x60976123783e405c);
        assert_eq!(fingerprint::<i64>(), 0x60cf9ab0f88bb8b9);
        assert_eq!(fingerprint::<[u8; 3]>(), 0x2a80921bbd95e6d1);
        assert_ne!(fingerprint::<[f64; 16]>(), fingerprint::<f64>());
        #[derive(Clone, Copy)]
        struct Other(#[allow(dead_code)] f64);
        assert_ne!(fingerprint::<Other>(), fingerprint::<f64>());
    }
}
