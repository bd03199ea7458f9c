//! Record formats of Python objects on a channel (the record tag says which).
//!
//! - `TAG_BYTES`: the payload is the bytes.
//! - `TAG_NDARRAY`: multipart `[meta, data]`; `meta` is `b"<dtype.str>|<d0>,<d1>,..."`.
//! - `TAG_PICKLE`: multipart `[pickle-5 stream, out-of-band buffer, ...]`.
//!
//! Multipart payload (little-endian, offsets from the payload start):
//! `u32 nparts, u32 0, u64 len[nparts]`, then each part at the next 64-byte boundary.
//! A receiver parses it as untrusted input: every count and length is checked against
//! the record before any byte is read.

/// Record tag of a `bytes` payload.
pub const TAG_BYTES: u32 = 1;
/// Record tag of a C-contiguous ndarray.
pub const TAG_NDARRAY: u32 = 2;
/// Record tag of a pickle-5 stream with out-of-band buffers.
pub const TAG_PICKLE: u32 = 3;

/// Most parts a multipart record may have.
pub const MAX_PARTS: usize = 4096;
const PART_ALIGN: usize = 64;

/// A source part: address and length of a contiguous buffer the caller keeps alive.
#[derive(Clone, Copy, Debug)]
pub struct Part {
    /// Address of the first byte (as an integer, so it may cross `py.detach`).
    pub addr: usize,
    /// Length in bytes.
    pub len: usize,
}

fn header_len(n: usize) -> usize {
    8 + 8 * n
}

/// Payload length in bytes of a multipart record of `parts`, or `None` on overflow.
pub fn multipart_len(parts: &[Part]) -> Option<usize> {
    let mut at = header_len(parts.len());
    for p in parts {
        at = at.checked_next_multiple_of(PART_ALIGN)?.checked_add(p.len)?;
    }
    Some(at)
}

/// Write `parts` as a multipart payload into `dst` (exactly `multipart_len` bytes).
///
/// # Safety
/// Every part's `addr..addr+len` must be readable and stay alive and unmodified for the
/// duration of the call.
pub unsafe fn write_multipart(dst: &mut [u8], parts: &[Part]) {
    dst[0..4].copy_from_slice(&(parts.len() as u32).to_le_bytes());
    dst[4..8].copy_from_slice(&0u32.to_le_bytes());
    let mut at = header_len(parts.len());
    for (i, p) in parts.iter().enumerate() {
        dst[8 + 8 * i..16 + 8 * i].copy_from_slice(&(p.len as u64).to_le_bytes());
        let start = at.next_multiple_of(PART_ALIGN);
        dst[at..start].fill(0);
        // SAFETY: the caller guarantees the source is readable for `len` bytes.
        let src = unsafe { std::slice::from_raw_parts(p.addr as *const u8, p.len) };
        dst[start..start + p.len].copy_from_slice(src);
        at = start + p.len;
    }
}

/// Parse a multipart payload: the `(offset, len)` of each part.
///
/// # Errors
/// A description of the first inconsistency (untrusted input).
pub fn parse_multipart(payload: &[u8]) -> Result<Vec<(usize, usize)>, String> {
    let word = |at: usize, n: usize| payload.get(at..at + n).ok_or_else(|| format!("record of {} bytes is too short", payload.len()));
    let nparts = u32::from_le_bytes(word(0, 4)?.try_into().expect("4 bytes")) as usize;
    if nparts == 0 || nparts > MAX_PARTS {
        return Err(format!("multipart record claims {nparts} parts"));
    }
    let mut parts = Vec::with_capacity(nparts);
    let mut at = header_len(nparts);
    for i in 0..nparts {
        let len = u64::from_le_bytes(word(8 + 8 * i, 8)?.try_into().expect("8 bytes"));
        let len = usize::try_from(len).map_err(|_| format!("part {i} length {len} overflows"))?;
        let start = at.next_multiple_of(PART_ALIGN);
        let end = start.checked_add(len).filter(|&e| e <= payload.len());
        let Some(end) = end else {
            return Err(format!("part {i} ({len} bytes at {start}) exceeds the {}-byte record", payload.len()));
        };
        parts.push((start, len));
        at = end;
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_rejects_lies() {
        let a = b"meta".to_vec();
        let b = vec![7u8; 1000];
        let parts = [Part { addr: a.as_ptr() as usize, len: a.len() }, Part { addr: b.as_ptr() as usize, len: b.len() }];
        let n = multipart_len(&parts).unwrap();
        let mut buf = vec![0u8; n];
        // SAFETY: a and b outlive the call.
        unsafe { write_multipart(&mut buf, &parts) };
        let parsed = parse_multipart(&buf).unwrap();
        assert_eq!(&buf[parsed[0].0..parsed[0].0 + 4], b"meta");
        assert_eq!(&buf[parsed[1].0..parsed[1].0 + 1000], &b[..]);
        let mut lie = buf.clone();
        lie[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse_multipart(&lie).is_err());
        assert!(parse_multipart(&buf[..n - 1]).is_err());
        assert!(parse_multipart(&[0u8; 3]).is_err());
        assert!(parse_multipart(&[0u8; 8]).is_err());
    }
}
