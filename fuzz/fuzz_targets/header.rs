//! Segment header validation (`shmplane_shm::header::validate`) over arbitrary header
//! bytes and file lengths: what `open` reads from a file another process wrote.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shmplane_shm::header::validate;
use shmplane_shm::layout::SegmentHeader;

fuzz_target!(|data: &[u8]| {
    let size = std::mem::size_of::<SegmentHeader>();
    if data.len() < size + 8 {
        return;
    }
    let mut header = SegmentHeader::default();
    // SAFETY: SegmentHeader is repr(C) and made only of atomic integers (any bit pattern
    // is valid; padding may hold anything); we own it exclusively and copy exactly its
    // size from a slice at least that long.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), (&mut header as *mut SegmentHeader).cast::<u8>(), size) };
    let file_len = u64::from_le_bytes(data[size..size + 8].try_into().unwrap());
    let _ = validate(&header, file_len, &[], "fuzz");
});
