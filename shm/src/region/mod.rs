//! Memory regions that hold segments: a shared mapping of a `/dev/shm` file, or heap
//! memory with the same interface (tests, loom-free unit tests, valgrind).

mod file;
pub mod guard;

pub use file::{set_sharing, sharing, shm_path, validate_name, Sharing, ShmFile, PREFIX, SHM_DIR};
pub(crate) use file::{create_mode, untrusted};

use crate::error::{Error, Result};
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

/// Alignment in bytes of every region's first byte.
pub const REGION_ALIGN: usize = 4096;

/// A contiguous range of memory a segment lives in. Raw pointer only: peers may write
/// any byte at any time, so no `&[u8]` is ever formed over the whole region.
#[derive(Debug)]
pub struct Region {
    ptr: NonNull<u8>,
    len: usize,
    backing: Backing,
}

#[derive(Debug)]
enum Backing {
    Heap(Layout),
    /// A shared file mapping and its SIGBUS guard (dropped first: unregistered before
    /// the unmap).
    Mapped(guard::Guard, #[allow(dead_code)] memmap2::MmapRaw),
}

// SAFETY: Region is a pointer to memory that is designed for concurrent access through
// atomics; it owns the mapping/allocation and frees it once, on drop.
unsafe impl Send for Region {}
// SAFETY: as above; shared access goes through atomics or protocol-exclusive ranges.
unsafe impl Sync for Region {}

impl Region {
    /// A zeroed, [`REGION_ALIGN`]-aligned heap region of `len` bytes (`len > 0`).
    ///
    /// # Panics
    /// If `len == 0` or the allocation fails.
    pub fn heap(len: usize) -> Region {
        let layout = Layout::from_size_align(len, REGION_ALIGN).expect("region layout");
        assert!(len > 0, "empty region");
        // SAFETY: layout has non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Region { ptr, len, backing: Backing::Heap(layout) }
    }

    /// Map the first `len` bytes of `file` shared and read-write, with the page tables
    /// populated up front (`MAP_POPULATE`): the file's memory was reserved at creation,
    /// so this costs one pass at attach instead of a minor fault per 4 KiB page on the
    /// first lap of the ring in each process (measured: ~20 ms per fresh 8 MB).
    ///
    /// # Errors
    /// [`Error::Os`] if `mmap` fails.
    pub fn map(file: &ShmFile, len: usize) -> Result<Region> {
        let map = memmap2::MmapOptions::new()
            .len(len)
            .populate()
            .map_raw(file.as_file())
            .map_err(|source| Error::Os { op: "mmap", path: file.path().to_owned(), source })?;
        Region::guarded(file, map, true)
    }

    /// Register `map` of `file` with the SIGBUS guard ([`guard`]).
    fn guarded(file: &ShmFile, map: memmap2::MmapRaw, writable: bool) -> Result<Region> {
        use std::os::unix::fs::MetadataExt;
        let ptr = NonNull::new(map.as_mut_ptr()).expect("mmap returned null");
        let len = map.len();
        let meta = file.as_file().metadata().map_err(|source| Error::Os { op: "fstat", path: file.path().to_owned(), source })?;
        let guard = guard::Guard::register(ptr.as_ptr(), len, meta.dev(), meta.ino(), writable)
            .map_err(|what| Error::Os { op: "SIGBUS guard", path: file.path().to_owned(), source: std::io::Error::other(what) })?;
        Ok(Region { ptr, len, backing: Backing::Mapped(guard, map) })
    }

    /// Map the first `len` bytes of `file` shared and read-only (populated): a second
    /// look at a segment, for zero-copy views of received messages.
    ///
    /// # Errors
    /// [`Error::Os`] if `mmap` fails.
    pub fn map_read_only(file: &ShmFile, len: usize) -> Result<Region> {
        let map = memmap2::MmapOptions::new()
            .len(len)
            .populate()
            .map_raw_read_only(file.as_file())
            .map_err(|source| Error::Os { op: "mmap (read-only)", path: file.path().to_owned(), source })?;
        Region::guarded(file, map, false)
    }

    /// First byte of the region ([`REGION_ALIGN`]-aligned).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True once the file under this mapping was found truncated (a `SIGBUS` in it,
    /// see [`guard`]): its pages are private zeros now; nothing read from them is a
    /// peer's and nothing written to them reaches one. Always false for heap regions.
    #[inline(always)]
    pub fn tripped(&self) -> bool {
        match &self.backing {
            Backing::Heap(_) => false,
            Backing::Mapped(guard, _) => guard.tripped(),
        }
    }

    /// [`Region::tripped`] as a copyable flag for hot paths (one load). It speaks for
    /// this region only while the region lives: keep it beside an owner of the region.
    pub fn trip_flag(&self) -> TripFlag {
        match &self.backing {
            Backing::Heap(_) => TripFlag::never(),
            Backing::Mapped(guard, _) => guard.trip_flag(),
        }
    }

    /// True if the region has no bytes (never, for a constructed region).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A `&T` at byte `offset`, for `T` made only of atomics.
    ///
    /// # Safety
    /// `T` must consist only of atomics (and padding), `offset` must be aligned for `T`,
    /// and `offset + size_of::<T>() <= len`. Callers in this crate pass layout
    /// descriptors from [`crate::layout`] at their fixed offsets.
    pub unsafe fn at<T>(&self, offset: usize) -> &T {
        debug_assert!(offset + size_of::<T>() <= self.len && offset % align_of::<T>() == 0);
        // SAFETY: per the contract: in bounds, aligned, and atomics-only so concurrent
        // writes by peers are not data races; lives as long as &self.
        unsafe { &*(self.ptr.as_ptr().add(offset) as *const T) }
    }
}

pub use guard::TripFlag;

impl Drop for Region {
    fn drop(&mut self) {
        if let Backing::Mapped(..) = self.backing {
            // Another SIGBUS handler may have replaced the guard's since (Python's
            // faulthandler at exit): a close that finds the file truncated must not die.
            guard::ensure_installed();
        }
        if let Backing::Heap(layout) = self.backing {
            // SAFETY: allocated in `heap` with this layout, freed once.
            unsafe { dealloc(self.ptr.as_ptr(), layout) };
        }
        // Mapped: MmapRaw unmaps on drop.
    }
}
