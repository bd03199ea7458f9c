//! Record formats of Python objects on a channel (the record tag says which).
//!
//! A message's *logical payload* is one of:
//! - `TAG_BYTES`: the bytes themselves.
//! - `TAG_NDARRAY`: multipart `[meta, data]`; `meta` is `b"<dtype.str>|<d0>,<d1>,..."`.
//! - `TAG_PICKLE`: multipart `[pickle-5 stream, out-of-band buffer, ...]`.
//!
//! Multipart layout (little-endian, offsets from the payload start):
//! `u32 nparts, u32 0, u64 len[nparts]`, then each part at the next 64-byte boundary.
//!
//! # Chunking (pipelined large messages)
//! A logical payload above [`CHUNK_THRESHOLD`] is sent as several records so that the
//! receiver copies chunk *k* out while the sender copies chunk *k+1* in: on two cores
//! an 8 MB transfer then costs about one `memcpy` instead of two in a row. The first
//! record has tag `base | CHUNKED` and payload `u64 total_len` + the first bytes; the
//! rest have tag [`TAG_CONTINUATION`]. A receiver treats every length as untrusted
//! input: counts and lengths are checked against `total_len` before a byte is copied.

/// Record tag of a `bytes` payload.
pub const TAG_BYTES: u32 = 1;
/// Record tag of a C-contiguous ndarray.
pub const TAG_NDARRAY: u32 = 2;
/// Record tag of a pickle-5 stream with out-of-band buffers.
pub const TAG_PICKLE: u32 = 3;
/// Flag on the first record of a chunked message.
pub const CHUNKED: u32 = 0x100;
/// Tag of the second and later records of a chunked message.
pub const TAG_CONTINUATION: u32 = 0x200;

/// Logical payloads larger than this many bytes are chunked.
pub const CHUNK_THRESHOLD: usize = 1 << 20;
/// Chunk size in bytes (smaller if the ring is small): about 20 µs of `memcpy`, short
/// enough that a receiver keeping pace spins instead of sleeping between chunks.
pub const CHUNK: usize = 256 << 10;

/// Most parts a multipart payload may have.
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

#[derive(Debug)]
enum Src {
    Addr(usize),
    Inline(Vec<u8>),
    Zero,
}

/// A logical payload as pieces laid end to end, to copy from in any slices.
#[derive(Debug)]
pub struct Layout {
    pieces: Vec<(usize, usize, Src)>,
    total: usize,
}

impl Layout {
    /// The concatenation of `parts`.
    pub fn raw(parts: &[Part]) -> Layout {
        let mut at = 0;
        let pieces = parts
            .iter()
            .map(|p| {
                let piece = (at, p.len, Src::Addr(p.addr));
                at += p.len;
                piece
            })
            .collect();
        Layout { pieces, total: at }
    }

    /// The multipart encoding of `parts`, or `None` if it overflows `usize`.
    pub fn multipart(parts: &[Part]) -> Option<Layout> {
        let mut header = Vec::with_capacity(header_len(parts.len()));
        header.extend_from_slice(&u32::try_from(parts.len()).ok()?.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        for p in parts {
            header.extend_from_slice(&(p.len as u64).to_le_bytes());
        }
        let mut at = header.len();
        let mut pieces = vec![(0, at, Src::Inline(header))];
        for p in parts {
            let start = at.checked_next_multiple_of(PART_ALIGN)?;
            if start > at {
                pieces.push((at, start - at, Src::Zero));
            }
            pieces.push((start, p.len, Src::Addr(p.addr)));
            at = start.checked_add(p.len)?;
        }
        Some(Layout { pieces, total: at })
    }

    /// Length of the logical payload in bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Copy logical bytes `offset..offset + dst.len()` into `dst`.
    ///
    /// # Safety
    /// Every `Part` address given at construction must still be readable for its length.
    pub unsafe fn gather(&self, offset: usize, dst: &mut [u8]) {
        let end = offset + dst.len();
        for (at, len, src) in &self.pieces {
            let (lo, hi) = ((*at).max(offset), (at + len).min(end));
            if lo >= hi {
                continue;
            }
            let out = &mut dst[lo - offset..hi - offset];
            match src {
                // SAFETY: the caller keeps the part readable; lo..hi lies inside it.
                Src::Addr(a) => out.copy_from_slice(unsafe {
                    std::slice::from_raw_parts((a + (lo - at)) as *const u8, hi - lo)
                }),
                Src::Inline(v) => out.copy_from_slice(&v[lo - at..hi - at]),
                Src::Zero => out.fill(0),
            }
        }
    }
}

/// Where received logical bytes go: `(logical start, len, destination address)`.
#[derive(Debug, Default)]
pub struct Scatter {
    targets: Vec<(usize, usize, usize)>,
}

impl Scatter {
    /// Send logical bytes `start..start+len` to the buffer at `addr`.
    pub fn push(&mut self, start: usize, len: usize, addr: usize) {
        self.targets.push((start, len, addr));
    }

    /// Copy `src`, which holds logical bytes `offset..offset + src.len()`, to the
    /// destinations it overlaps (bytes between parts are skipped).
    ///
    /// # Safety
    /// Every destination must be writable for its length and not accessed by anything
    /// else during the call.
    pub unsafe fn scatter(&self, offset: usize, src: &[u8]) {
        let end = offset + src.len();
        for &(at, len, addr) in &self.targets {
            let (lo, hi) = (at.max(offset), (at + len).min(end));
            if lo < hi {
                // SAFETY: per the contract; lo..hi lies inside both ranges.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        src.as_ptr().add(lo - offset),
                        (addr + (lo - at)) as *mut u8,
                        hi - lo,
                    )
                };
            }
        }
    }
}

/// Parse the multipart header of a payload of `total` bytes whose first bytes are
/// `prefix` (the whole header must be in `prefix`): the `(offset, len)` of each part.
///
/// # Errors
/// A description of the first inconsistency (untrusted input).
pub fn parse_multipart(prefix: &[u8], total: usize) -> Result<Vec<(usize, usize)>, String> {
    let word = |at: usize, n: usize| {
        prefix.get(at..at + n).ok_or_else(|| format!("multipart header cut short at {} bytes", prefix.len()))
    };
    let nparts = u32::from_le_bytes(word(0, 4)?.try_into().expect("4 bytes")) as usize;
    if nparts == 0 || nparts > MAX_PARTS {
        return Err(format!("multipart payload claims {nparts} parts"));
    }
    let mut parts = Vec::with_capacity(nparts);
    let mut at = header_len(nparts);
    for i in 0..nparts {
        let len = u64::from_le_bytes(word(8 + 8 * i, 8)?.try_into().expect("8 bytes"));
        let len = usize::try_from(len).map_err(|_| format!("part {i} length {len} overflows"))?;
        let start = at.next_multiple_of(PART_ALIGN);
        let Some(end) = start.checked_add(len).filter(|&e| e <= total) else {
            return Err(format!("part {i} ({len} bytes at {start}) exceeds the {total}-byte payload"));
        };
        parts.push((start, len));
        at = end;
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(parts: &[Part]) -> Vec<u8> {
        let layout = Layout::multipart(parts).unwrap();
        let mut buf = vec![0xAAu8; layout.total()];
        // Gather in uneven slices, as chunking does.
        let mut at = 0;
        for step in [1, 7, 100, usize::MAX].iter().cycle() {
            let n = (*step).min(buf.len() - at);
            // SAFETY: the parts' vectors outlive the call.
            unsafe { layout.gather(at, &mut buf[at..at + n]) };
            at += n;
            if at == buf.len() {
                break;
            }
        }
        buf
    }

    #[test]
    fn multipart_roundtrip_through_chunks() {
        let a = b"meta".to_vec();
        let b: Vec<u8> = (0..1000).map(|i| i as u8).collect();
        let parts = [Part { addr: a.as_ptr() as usize, len: a.len() }, Part { addr: b.as_ptr() as usize, len: b.len() }];
        let buf = encode(&parts);
        let parsed = parse_multipart(&buf, buf.len()).unwrap();
        let (mut ma, mut mb) = (vec![0u8; 4], vec![0u8; 1000]);
        let mut s = Scatter::default();
        s.push(parsed[0].0, parsed[0].1, ma.as_mut_ptr() as usize);
        s.push(parsed[1].0, parsed[1].1, mb.as_mut_ptr() as usize);
        for (i, chunk) in buf.chunks(33).enumerate() {
            // SAFETY: ma and mb are writable and untouched during the call.
            unsafe { s.scatter(i * 33, chunk) };
        }
        assert_eq!((ma, mb), (a, b));
    }

    #[test]
    fn parse_rejects_lies() {
        let a = [7u8; 100];
        let buf = encode(&[Part { addr: a.as_ptr() as usize, len: a.len() }]);
        let mut lie = buf.clone();
        lie[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse_multipart(&lie, lie.len()).is_err());
        assert!(parse_multipart(&buf, buf.len() - 1).is_err());
        assert!(parse_multipart(&buf[..10], buf.len()).is_err());
        assert!(parse_multipart(&[0u8; 3], 3).is_err());
        assert!(parse_multipart(&[0u8; 8], 8).is_err());
    }
}
