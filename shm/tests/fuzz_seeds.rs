//! The header fuzz target's seeds are headers this build accepts: seeds of an older ABI
//! stop at the version check, so the fuzzer would never reach the checks after it (found
//! in review: the seeds carried ABI 10 through ABI 13). Regenerate them with this ABI's
//! version and `LAYOUT_HASH` when either changes.

use shmplane_shm::header::validate;
use shmplane_shm::layout::SegmentHeader;

#[test]
fn header_seeds_are_of_this_abi() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/header");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("the header seeds") {
        let path = entry.expect("a seed").path();
        let data = std::fs::read(&path).expect("a readable seed");
        let size = size_of::<SegmentHeader>();
        assert!(data.len() >= size + 8, "{}: a header and a file length", path.display());
        let mut header = SegmentHeader::default();
        // SAFETY: SegmentHeader is repr(C) and made only of atomic integers (any bit
        // pattern is valid); we own it exclusively and copy exactly its size from a
        // slice at least that long (as the fuzz target does).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), (&mut header as *mut SegmentHeader).cast::<u8>(), size) };
        let file_len = u64::from_le_bytes(data[size..size + 8].try_into().expect("8 bytes"));
        if let Err(e) = validate(&header, file_len, &[], &path.display().to_string()) {
            panic!("{}: {e} (regenerate the seed: ABI_VERSION and LAYOUT_HASH at offsets 8 and 16)", path.display());
        }
        seen += 1;
    }
    assert!(seen > 0, "no seeds in {}", dir.display());
}
