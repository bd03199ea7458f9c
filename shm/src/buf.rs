//! Write-only destinations for received bytes.
//!
//! A receiver copies messages into memory its caller allocated: Rust slices, or, from
//! the Python binding, fresh `bytes` objects whose contents are still uninitialised and
//! numpy arrays made by `np.empty`. [`OutBuf`] is such a destination as a raw pointer
//! and a length: it is only ever written, never read, so no `&mut [u8]` (which would
//! claim initialised bytes) is formed over memory that is not.

use std::marker::PhantomData;
use std::ptr::NonNull;

/// `len` writable bytes at a pointer, borrowed for `'a`; possibly uninitialised.
#[derive(Debug)]
pub struct OutBuf<'a> {
    ptr: NonNull<u8>,
    len: usize,
    _borrow: PhantomData<&'a mut [u8]>,
}

// SAFETY: an OutBuf is an exclusive borrow of its bytes (like `&mut [u8]`, which is Send).
unsafe impl Send for OutBuf<'_> {}

impl<'a> From<&'a mut [u8]> for OutBuf<'a> {
    fn from(s: &'a mut [u8]) -> OutBuf<'a> {
        OutBuf { len: s.len(), ptr: NonNull::from(s).cast(), _borrow: PhantomData }
    }
}

impl<'a> OutBuf<'a> {
    /// A destination of `len` bytes at `ptr`.
    ///
    /// # Safety
    /// - `ptr` is valid for writes of `len` bytes for `'a` (non-null, even if `len == 0`);
    /// - nothing else reads or writes those bytes during `'a`;
    /// - their contents may be uninitialised: they are only written through this value.
    pub unsafe fn from_raw(ptr: *mut u8, len: usize) -> OutBuf<'a> {
        // SAFETY: non-null per the caller's contract.
        OutBuf { ptr: unsafe { NonNull::new_unchecked(ptr) }, len, _borrow: PhantomData }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty destination.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes `start..end` as a destination of their own, borrowed from this one.
    ///
    /// # Panics
    /// If the range is not inside the destination.
    pub fn range(&mut self, start: usize, end: usize) -> OutBuf<'_> {
        assert!(start <= end && end <= self.len, "destination range {start}..{end} of {} bytes", self.len);
        // SAFETY: in bounds (asserted); the sub-range is borrowed exclusively from self.
        OutBuf { ptr: unsafe { self.ptr.add(start) }, len: end - start, _borrow: PhantomData }
    }

    /// Copy `src` to the start of this destination.
    ///
    /// # Panics
    /// If `src` is longer than the destination.
    pub fn write(&mut self, src: &[u8]) {
        assert!(src.len() <= self.len, "{} bytes into a {}-byte destination", src.len(), self.len);
        // SAFETY: the destination is valid for `len` writes (its constructor's
        // contract or a `&mut [u8]`) and cannot overlap the shared `src`.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr(), src.len()) };
    }

    /// The first byte, for copies done by [`crate::ring::RingStore::read`].
    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}
