//! The message format: how one message (bytes, an n-dimensional array, a pickled
//! object with out-of-band buffers) is laid out in the records of a ring, in any
//! number of records, and how a receiver validates it. Wire format version
//! [`WIRE_VERSION`]; the specification is `docs/wire-format.md`, and both languages use
//! this one implementation (the Python binding calls it).
//!
//! # Records
//! Every record's tag (31 bits, see `shmplane_shm::ring`) says what it is:
//!
//! ```text
//! kind (1 bytes, 2 array, 3 pickle)        a whole message in one record
//! kind | CHUNKED (0x100)                   first record of a chunked message:
//!                                          u64 total length, then the first bytes
//! CONTINUATION (0x200)                     u64 offset of its first byte, then bytes
//! ```
//!
//! A message's *logical payload* is the bytes themselves (bytes), or a multipart
//! payload: `u32 nparts, u32 0, u64 len[nparts]`, each part at the next 64-byte
//! boundary from the start of the payload. An array's parts are `[descriptor, data]`
//! (see [`ArrayMeta`]); a pickle's are `[pickle-5 stream, out-of-band buffer...]`.
//!
//! A logical payload larger than the chunk threshold (or than one record can hold)
//! travels as a run of records of [`chunk_size`] bytes, so that the receiver copies
//! one out while the sender copies the next in, and so that a message of any size
//! streams through a ring of any size. The first record always holds the whole
//! *prefix* (multipart header and array descriptor), so a receiver allocates its
//! destinations once, from the first record.
//!
//! # Truncation
//! A sender that abandons a chunked message (interrupted, timed out, a failing
//! callback) marks the ring's *cut* at its position (`Producer::cut`: no ring space
//! needed). A receiver that is part-way through a chunked message and finds a new
//! message's first record, nothing more at the cut, or a sender that closed or died,
//! reports the message truncated and leaves any new record in place. A receiver that
//! starts at a `CONTINUATION` (its predecessor died or gave up mid-message) skips it.
//!
//! Every length and count in a record is untrusted input: [`parse_head`] checks them
//! against the announced total before anything is allocated or copied.

pub use shmplane_shm::buf::OutBuf;
use shmplane_shm::layout::WIRE_VERSION as SHM_WIRE_VERSION;
use std::fmt;

/// Version of this message format (stored in every segment header). 2: lists and
/// tuples of numbers ([`TAG_NUMBERS`]).
pub const WIRE_VERSION: u32 = 2;
const _: () = assert!(WIRE_VERSION == SHM_WIRE_VERSION);

/// Tag of a message of raw bytes.
pub const TAG_BYTES: u32 = 1;
/// Tag of an n-dimensional array message.
pub const TAG_ARRAY: u32 = 2;
/// Tag of a pickled-object message.
pub const TAG_PICKLE: u32 = 3;
/// Tag of a list or tuple of numbers all of one type (Python's homogeneous fast path):
/// one part, an 8-byte header then the numbers (see [`Numbers`]).
pub const TAG_NUMBERS: u32 = 4;
/// Flag on the first record of a chunked message.
pub const CHUNKED: u32 = 0x100;
/// Tag of the second and later records of a chunked message.
pub const TAG_CONTINUATION: u32 = 0x200;
/// Flag on the first record of a message that carries an envelope: [`ENVELOPE_LEN`]
/// bytes after the chunk header (if any) and before the logical payload, opaque to the
/// message format (RPC puts its call header there: see [`crate::rpc`]).
pub const ENVELOPED: u32 = 0x400;
/// Bytes of an envelope.
pub const ENVELOPE_LEN: usize = 16;
// The ring counts the messages of lossy broadcasts by this tag.
const _: () = assert!(TAG_CONTINUATION == shmplane_shm::ring::CONTINUATION_TAG);

/// Logical payloads above this many bytes are chunked even if one record could hold
/// them (pipelining: the receiver copies out while the sender copies in).
pub const CHUNK_THRESHOLD: usize = 1 << 20;
/// Largest chunk record in bytes (its header and data): about 40 µs of `memcpy`, short
/// enough that a receiver keeping pace spins instead of sleeping between chunks.
pub const MAX_CHUNK_RECORD: usize = 1 << 20;
/// Fewest chunk records a ring holds: the pipeline's depth (8 records of 128 KiB in the
/// default 1 MiB ring).
pub const CHUNKS_PER_RING: usize = 8;

/// Most parts a multipart payload may have.
pub const MAX_PARTS: usize = 4096;
/// Alignment of each part within a multipart payload, in bytes.
pub const PART_ALIGN: usize = 64;
/// Most dimensions of an array (numpy's limit since 2.0).
pub const MAX_NDIM: usize = 64;
/// Longest dtype descriptor string in bytes.
pub const MAX_DESCR: usize = 64;

/// Bytes of the chunk header (total length, or a continuation's offset).
const CHUNK_HEADER: usize = 8;

/// What a message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Raw bytes.
    Bytes,
    /// An n-dimensional array: descriptor and data.
    Array,
    /// A pickle-5 stream and its out-of-band buffers (Python objects).
    Pickle,
    /// A list or tuple of numbers of one type (see [`Numbers`]).
    Numbers,
}

impl Kind {
    /// The record tag of a one-record message of this kind.
    pub const fn tag(self) -> u32 {
        match self {
            Kind::Bytes => TAG_BYTES,
            Kind::Array => TAG_ARRAY,
            Kind::Pickle => TAG_PICKLE,
            Kind::Numbers => TAG_NUMBERS,
        }
    }

    fn from_tag(tag: u32) -> Option<Kind> {
        match tag {
            TAG_BYTES => Some(Kind::Bytes),
            TAG_ARRAY => Some(Kind::Array),
            TAG_PICKLE => Some(Kind::Pickle),
            TAG_NUMBERS => Some(Kind::Numbers),
            _ => None,
        }
    }

    /// A lowercase name ("bytes", "array", "pickle", "numbers").
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Bytes => "bytes",
            Kind::Array => "array",
            Kind::Pickle => "pickle",
            Kind::Numbers => "numbers",
        }
    }

    const fn multipart(self) -> bool {
        !matches!(self, Kind::Bytes | Kind::Numbers)
    }
}

/// Memory order of an array's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Order {
    /// Row-major (C): the last index varies fastest.
    #[default]
    C,
    /// Column-major (Fortran): the first index varies fastest.
    F,
}

/// What an array message says about its data: numpy's `dtype.str` descriptor (`"<f8"`,
/// `"|u1"`, `"<M8[ns]"`, `"|S10"`, ...), the shape, and the memory order.
///
/// On the wire (part 0 of an array message):
///
/// ```text
/// u8 format (1), u8 order (b'C' or b'F'), u8 ndim (0..=64), u8 descr_len (1..=64),
/// u32 0, u64 shape[ndim], descr_len ASCII bytes
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArrayMeta {
    /// numpy's `dtype.str`: byte order (`<`, `>`, `|`), kind letter, item size.
    pub descr: String,
    /// Length of each dimension.
    pub shape: Vec<usize>,
    /// Memory order of the data.
    pub order: Order,
}

impl ArrayMeta {
    /// An array description, validated.
    ///
    /// # Errors
    /// A description of what is wrong (unknown descriptor, too many dimensions, a size
    /// that overflows).
    pub fn new(descr: &str, shape: &[usize], order: Order) -> Result<ArrayMeta, String> {
        let meta = ArrayMeta { descr: descr.to_owned(), shape: shape.to_vec(), order };
        meta.nbytes()?;
        Ok(meta)
    }

    /// Bytes of one element, from the descriptor (`U` counts 4 bytes a character, as
    /// numpy does).
    ///
    /// # Errors
    /// A descriptor this format does not carry.
    pub fn itemsize(&self) -> Result<usize, String> {
        itemsize(&self.descr)
    }

    /// Number of elements (the product of the shape; 1 for a 0-d array).
    ///
    /// # Errors
    /// The product overflows.
    pub fn len(&self) -> Result<usize, String> {
        self.shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| format!("shape {:?} has more elements than memory can hold", self.shape))
    }

    /// True for an array without elements.
    pub fn is_empty(&self) -> bool {
        self.shape.contains(&0)
    }

    /// Bytes of data the array needs.
    ///
    /// # Errors
    /// An unknown descriptor, more than [`MAX_NDIM`] dimensions, or a size that
    /// overflows.
    pub fn nbytes(&self) -> Result<usize, String> {
        if self.shape.len() > MAX_NDIM {
            return Err(format!("array has {} dimensions, at most {MAX_NDIM} are supported", self.shape.len()));
        }
        self.len()?
            .checked_mul(self.itemsize()?)
            .filter(|&n| n <= isize::MAX as usize)
            .ok_or_else(|| format!("array of shape {:?} and dtype {} is too large", self.shape, self.descr))
    }

    /// The wire encoding (part 0 of an array message).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 8 * self.shape.len() + self.descr.len());
        out.extend_from_slice(&[
            1,
            match self.order {
                Order::C => b'C',
                Order::F => b'F',
            },
            self.shape.len() as u8,
            self.descr.len() as u8,
        ]);
        out.extend_from_slice(&[0; 4]);
        for &d in &self.shape {
            out.extend_from_slice(&(d as u64).to_le_bytes());
        }
        out.extend_from_slice(self.descr.as_bytes());
        out
    }

    /// Parse and validate a wire descriptor (untrusted input).
    ///
    /// # Errors
    /// A description of the first inconsistency.
    pub fn decode(bytes: &[u8]) -> Result<ArrayMeta, String> {
        let [format, order, ndim, dlen, _, _, _, _, ..] = *bytes else {
            return Err(format!("array descriptor of {} bytes is cut short", bytes.len()));
        };
        if format != 1 {
            return Err(format!("array descriptor format {format} is not 1"));
        }
        let order = match order {
            b'C' => Order::C,
            b'F' => Order::F,
            o => return Err(format!("array order {o:#x} is neither 'C' nor 'F'")),
        };
        let (ndim, dlen) = (ndim as usize, dlen as usize);
        if ndim > MAX_NDIM || dlen == 0 || dlen > MAX_DESCR {
            return Err(format!("array descriptor claims {ndim} dimensions and a {dlen}-byte dtype"));
        }
        if bytes[4..8] != [0; 4] {
            return Err("array descriptor has a non-zero reserved word".into());
        }
        let want = 8 + 8 * ndim + dlen;
        if bytes.len() != want {
            return Err(format!("array descriptor is {} bytes, its fields say {want}", bytes.len()));
        }
        let shape = (0..ndim)
            .map(|i| {
                let d = u64::from_le_bytes(bytes[8 + 8 * i..16 + 8 * i].try_into().expect("8 bytes"));
                usize::try_from(d).map_err(|_| format!("dimension {i} of length {d} overflows"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let descr = std::str::from_utf8(&bytes[8 + 8 * ndim..])
            .ok()
            .filter(|d| d.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or("array dtype is not printable ASCII")?
            .to_owned();
        let meta = ArrayMeta { descr, shape, order };
        meta.nbytes()?;
        Ok(meta)
    }
}

/// Item size in bytes of a numpy `dtype.str` descriptor: `[<>|=]` + kind letter +
/// decimal size, with an optional `[unit]` for datetimes (`M`, `m`).
fn itemsize(descr: &str) -> Result<usize, String> {
    let bad = || format!("dtype {descr:?} is not a plain numpy dtype descriptor (like \"<f8\" or \"|u1\")");
    let b = descr.as_bytes();
    if !descr.is_ascii() || b.len() < 3 || b.len() > MAX_DESCR || !matches!(b[0], b'<' | b'>' | b'|' | b'=') {
        return Err(bad());
    }
    let kind = b[1];
    let rest = &descr[2..];
    let (digits, unit) = match rest.find('[') {
        Some(i) if matches!(kind, b'M' | b'm') && rest.ends_with(']') => (&rest[..i], &rest[i + 1..rest.len() - 1]),
        Some(_) => return Err(bad()),
        None => (rest, ""),
    };
    if !unit.bytes().all(|c| c.is_ascii_alphanumeric()) || digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let n: usize = digits.parse().map_err(|_| bad())?;
    let size = match kind {
        b'b' | b'i' | b'u' | b'f' | b'c' | b'M' | b'm' if n > 0 && n <= 32 => n,
        b'S' | b'V' | b'a' => n,
        b'U' => n.checked_mul(4).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    Ok(size)
}

/// Largest payload of one record in a ring of `capacity` bytes.
pub fn max_record(capacity: usize) -> usize {
    shmplane_shm::ring::max_payload(capacity)
}

/// Chunk size (bytes of data per continuation record) for a ring of `capacity` bytes
/// (a power of two): records of exactly `capacity / k` bytes (8-byte record header,
/// 8-byte chunk header, data) with `k` = [`CHUNKS_PER_RING`] or more, so records of
/// at most [`MAX_CHUNK_RECORD`] tile the ring with no padding record at the wrap and
/// `k - 1` are in flight. Measured against a quarter-ring chunk of 256 KiB, whose
/// records left a quarter of a 1 MiB ring as padding every lap: an 8 MB transfer went
/// from 751 to 599 µs here.
pub fn chunk_size(capacity: usize) -> usize {
    let records = CHUNKS_PER_RING.max(capacity / MAX_CHUNK_RECORD);
    (capacity / records).saturating_sub(RECORD_AND_CHUNK_HEADER).max(64) & !7
}

/// A chunk record's overhead: the ring's record header and the chunk header.
const RECORD_AND_CHUNK_HEADER: usize = shmplane_shm::layout::RECORD_HEADER + CHUNK_HEADER;

/// An element type with a numpy descriptor, for [`crate::Sender::send_array_of`] and
/// [`Array::to_vec`]. Implemented for the fixed-size integers and floats, with
/// this machine's byte order.
pub trait Element: bytemuck::Pod {
    /// numpy's `dtype.str` of this type on this machine (`"<f8"` for `f64`).
    const DESCR: &'static str;
}

macro_rules! element {
    ($($t:ty => $descr:literal),* $(,)?) => {$(
        impl Element for $t {
            const DESCR: &'static str =
                if cfg!(target_endian = "little") { concat!("<", $descr) } else { concat!(">", $descr) };
        }
    )*};
}

impl Element for u8 {
    const DESCR: &'static str = "|u1";
}

impl Element for i8 {
    const DESCR: &'static str = "|i1";
}

element!(u16 => "u2", i16 => "i2", u32 => "u4", i32 => "i4", u64 => "u8", i64 => "i8", f32 => "f4", f64 => "f8");

/// A received array: its description and its data bytes (in `meta.order`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Array {
    /// Descriptor, shape and order.
    pub meta: ArrayMeta,
    /// The elements' bytes.
    pub data: Vec<u8>,
}

impl Array {
    /// The elements as `T`, in memory order.
    ///
    /// # Errors
    /// The array's dtype is not `T`'s (see [`Element::DESCR`]).
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>, String> {
        let native = |d: &str| d.replacen('=', if cfg!(target_endian = "little") { "<" } else { ">" }, 1);
        if native(&self.meta.descr) != T::DESCR {
            return Err(format!("array of dtype {} read as {}", self.meta.descr, T::DESCR));
        }
        Ok(bytemuck::pod_collect_to_vec(&self.data))
    }
}

/// A whole received message (see [`crate::Receiver::recv_frame`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Bytes.
    Bytes(Vec<u8>),
    /// An n-dimensional array.
    Array(Array),
    /// A pickle-5 stream and its out-of-band buffers (sent by Python).
    Pickle {
        /// The pickle stream.
        stream: Vec<u8>,
        /// The out-of-band buffers, in order.
        buffers: Vec<Vec<u8>>,
    },
    /// A list or tuple of numbers of one type (sent by Python).
    Numbers(Numbers),
}

/// Bytes of the header of a numbers payload.
pub const NUMBERS_HEADER: usize = 8;

/// What a numbers message came from: a Python `list` or `tuple`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Container {
    /// A `list`.
    List,
    /// A `tuple`.
    Tuple,
}

/// The type of every number of a numbers message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumberType {
    /// IEEE 754 binary64 (Python `float`), little-endian.
    F64,
    /// Two's complement 64-bit integer (a Python `int` in `i64` range), little-endian.
    I64,
}

/// A list or tuple of numbers of one type, as Python's homogeneous fast path sends it.
///
/// On the wire (the message's one part):
///
/// ```text
/// u8 container (0 list, 1 tuple), u8 type (b'd' f64, b'q' i64), 6 zero bytes,
/// then the numbers, 8 bytes each, little-endian
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Numbers {
    /// List or tuple.
    pub container: Container,
    /// The type of the numbers.
    pub ty: NumberType,
    /// The numbers' bytes (8 each, little-endian), without the header.
    pub data: Vec<u8>,
}

impl Numbers {
    /// The header of a payload of `container` and `ty`.
    pub fn header(container: Container, ty: NumberType) -> [u8; NUMBERS_HEADER] {
        let c = match container {
            Container::List => 0,
            Container::Tuple => 1,
        };
        let t = match ty {
            NumberType::F64 => b'd',
            NumberType::I64 => b'q',
        };
        [c, t, 0, 0, 0, 0, 0, 0]
    }

    /// Check a numbers payload (memory another process wrote): its container, type and
    /// the numbers' bytes.
    ///
    /// # Errors
    /// A description of what is wrong: shorter than the header, an unknown container or
    /// type, non-zero reserved bytes, or a length that is not whole numbers.
    pub fn parse(payload: &[u8]) -> Result<(Container, NumberType, &[u8]), String> {
        let Some((head, data)) = payload.split_first_chunk::<NUMBERS_HEADER>() else {
            return Err(format!("a numbers message of {} bytes is shorter than its header", payload.len()));
        };
        let container = match head[0] {
            0 => Container::List,
            1 => Container::Tuple,
            c => return Err(format!("a numbers message with unknown container {c}")),
        };
        let ty = match head[1] {
            b'd' => NumberType::F64,
            b'q' => NumberType::I64,
            t => return Err(format!("a numbers message with unknown type {t}")),
        };
        if head[2..].iter().any(|&b| b != 0) {
            return Err("a numbers message with non-zero reserved header bytes".into());
        }
        if data.len() % 8 != 0 {
            return Err(format!("a numbers message carries {} bytes, not whole 8-byte numbers", data.len()));
        }
        Ok((container, ty, data))
    }

    /// The numbers as `f64`.
    ///
    /// # Errors
    /// They are `i64`s.
    pub fn f64s(&self) -> Result<Vec<f64>, String> {
        match self.ty {
            NumberType::F64 => Ok(self.data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect()),
            NumberType::I64 => Err("a list of ints read as floats".into()),
        }
    }

    /// The numbers as `i64`.
    ///
    /// # Errors
    /// They are `f64`s.
    pub fn i64s(&self) -> Result<Vec<i64>, String> {
        match self.ty {
            NumberType::I64 => Ok(self.data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect()),
            NumberType::F64 => Err("a list of floats read as ints".into()),
        }
    }
}

// ------------------------------------------------------------------ sending side

/// A piece of a logical payload.
#[derive(Clone, Debug)]
enum Src<'a> {
    Slice(&'a [u8]),
    Owned(Vec<u8>),
    Zero,
    /// Bytes the sender writes in place (a loan): `gather` leaves them as they are.
    Lent(usize),
    /// Bytes made on demand, as each record is written ([`Outgoing::numbers_filled`]).
    Fill(Filler<'a>),
}

/// The pieces of an [`Outgoing`] (logical offset, source): one inline (bytes,
/// numbers, RPC requests and replies: a send allocates nothing), or several.
#[derive(Clone, Debug)]
enum Pieces<'a> {
    One((usize, Src<'a>)),
    Many(Vec<(usize, Src<'a>)>),
}

impl<'a> Pieces<'a> {
    fn as_slice(&self) -> &[(usize, Src<'a>)] {
        match self {
            Pieces::One(p) => std::slice::from_ref(p),
            Pieces::Many(v) => v,
        }
    }
}

/// `fill(offset, dst)` writes bytes `offset..offset + dst.len()` of a piece into `dst`.
#[derive(Clone, Copy)]
struct Filler<'a>(&'a (dyn Fn(usize, &mut [u8]) + Sync));

impl fmt::Debug for Filler<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Filler")
    }
}

/// A message to send: its kind and its logical payload as pieces laid end to end, to
/// copy from in any slices (see [`Outgoing::gather`]). Cloning copies only the
/// multipart header (the data is borrowed).
#[derive(Clone, Debug)]
pub struct Outgoing<'a> {
    kind: Kind,
    pieces: Pieces<'a>,
    total: usize,
    prefix: usize,
    envelope: Option<[u8; ENVELOPE_LEN]>,
}

impl<'a> Outgoing<'a> {
    /// A bytes message.
    pub fn bytes(data: &'a [u8]) -> Outgoing<'a> {
        Outgoing { kind: Kind::Bytes, total: data.len(), pieces: Pieces::One((0, Src::Slice(data))), prefix: 0, envelope: None }
    }

    /// A numbers message: `payload` is a [`Numbers`] header and the numbers.
    ///
    /// # Errors
    /// A description of what is wrong with the payload ([`Numbers::parse`]).
    pub fn numbers(payload: &'a [u8]) -> Result<Outgoing<'a>, String> {
        Numbers::parse(payload)?;
        Ok(Outgoing { kind: Kind::Numbers, total: payload.len(), pieces: Pieces::One((0, Src::Slice(payload))), prefix: 0, envelope: None })
    }

    /// A numbers message of `count` numbers whose bytes are made as each record is
    /// written: `fill(offset, dst)` writes bytes `offset..offset + dst.len()` of the
    /// numbers (after the header; any byte range, also one that splits a number) into
    /// `dst`, which may be the ring itself. A sender that encodes a large list straight
    /// into the ring a chunk at a time, while the receiver decodes the chunks before it.
    ///
    /// # Errors
    /// A bad header, or a size that overflows.
    pub fn numbers_filled(
        header: [u8; NUMBERS_HEADER],
        count: usize,
        fill: &'a (dyn Fn(usize, &mut [u8]) + Sync),
    ) -> Result<Outgoing<'a>, String> {
        Numbers::parse(&header)?;
        let total = count.checked_mul(8).and_then(|b| b.checked_add(NUMBERS_HEADER)).ok_or_else(|| "message too large".to_owned())?;
        let pieces = Pieces::Many(vec![(0, Src::Owned(header.to_vec())), (NUMBERS_HEADER, Src::Fill(Filler(fill)))]);
        Ok(Outgoing { kind: Kind::Numbers, total, pieces, prefix: 0, envelope: None })
    }

    /// An array message of `data` described by `meta`.
    ///
    /// # Errors
    /// A description of what is wrong: `data` is not the size `meta` implies.
    pub fn array(meta: &ArrayMeta, data: &'a [u8]) -> Result<Outgoing<'a>, String> {
        let nbytes = meta.nbytes()?;
        if nbytes != data.len() {
            return Err(format!(
                "array of shape {:?} and dtype {} needs {nbytes} bytes of data, got {}",
                meta.shape,
                meta.descr,
                data.len()
            ));
        }
        Outgoing::multipart(Kind::Array, vec![Src::Owned(meta.encode()), Src::Slice(data)], 1)
    }

    /// An array message whose data the sender writes in place (a loan: see
    /// `Sender::loan_message`): its data is the last part, at [`Outgoing::prefix`]
    /// bytes into the logical payload, and `gather` leaves it untouched.
    ///
    /// # Errors
    /// A size that overflows.
    pub fn array_lent(meta: &ArrayMeta) -> Result<Outgoing<'static>, String> {
        let nbytes = meta.nbytes()?;
        Outgoing::multipart(Kind::Array, vec![Src::Owned(meta.encode()), Src::Lent(nbytes)], 1)
    }

    /// A pickled-object message: the pickle-5 stream and its out-of-band buffers.
    ///
    /// # Errors
    /// More than [`MAX_PARTS`] parts, or a size that overflows.
    pub fn pickle(stream: &'a [u8], buffers: &[&'a [u8]]) -> Result<Outgoing<'a>, String> {
        let parts = std::iter::once(stream).chain(buffers.iter().copied()).map(Src::Slice).collect();
        Outgoing::multipart(Kind::Pickle, parts, 0)
    }

    /// A message of `kind` whose logical payload is `payload` as laid out by another
    /// `Outgoing` (its first `prefix` bytes the prefix): what an RPC server saved of a
    /// reply, to send again.
    pub(crate) fn logical(kind: Kind, payload: &'a [u8], prefix: usize) -> Outgoing<'a> {
        Outgoing { kind, total: payload.len(), pieces: Pieces::One((0, Src::Slice(payload))), prefix, envelope: None }
    }

    /// A multipart payload whose first `prefix_parts` parts belong to the prefix.
    fn multipart(kind: Kind, parts: Vec<Src<'a>>, prefix_parts: usize) -> Result<Outgoing<'a>, String> {
        if parts.is_empty() || parts.len() > MAX_PARTS {
            return Err(format!("a message has 1..={MAX_PARTS} parts, not {}", parts.len()));
        }
        let len_of = |s: &Src<'_>| match s {
            Src::Slice(b) => b.len(),
            Src::Owned(v) => v.len(),
            Src::Zero => 0,
            Src::Lent(n) => *n,
            Src::Fill(_) => unreachable!("multipart messages are not filled"),
        };
        let mut header = Vec::with_capacity(8 + 8 * parts.len());
        header.extend_from_slice(&(parts.len() as u32).to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        for p in &parts {
            header.extend_from_slice(&(len_of(p) as u64).to_le_bytes());
        }
        let overflow = || "message too large".to_owned();
        let mut at = header.len();
        let mut prefix = 0;
        let mut pieces = vec![(0, Src::Owned(header))];
        for (i, p) in parts.into_iter().enumerate() {
            let start = at.checked_next_multiple_of(PART_ALIGN).ok_or_else(overflow)?;
            if start > at {
                pieces.push((at, Src::Zero));
            }
            if i == prefix_parts {
                prefix = start;
            }
            let len = len_of(&p);
            pieces.push((start, p));
            at = start.checked_add(len).ok_or_else(overflow)?;
        }
        Ok(Outgoing { kind, pieces: Pieces::Many(pieces), total: at, prefix, envelope: None })
    }

    /// The message's kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// This message with `envelope` in front of its logical payload (first record,
    /// flag [`ENVELOPED`]): the receiver finds it in [`Head::envelope`].
    #[must_use]
    pub fn with_envelope(mut self, envelope: [u8; ENVELOPE_LEN]) -> Outgoing<'a> {
        self.envelope = Some(envelope);
        self
    }

    /// The envelope, if the message has one.
    pub fn envelope(&self) -> Option<&[u8; ENVELOPE_LEN]> {
        self.envelope.as_ref()
    }

    /// Bytes of envelope in the first record (0 or [`ENVELOPE_LEN`]).
    pub fn envelope_len(&self) -> usize {
        if self.envelope.is_some() { ENVELOPE_LEN } else { 0 }
    }

    /// The tag of the message's first record if it goes whole in one record (its
    /// kind's tag, with [`ENVELOPED`] if it has an envelope).
    pub fn tag(&self) -> u32 {
        self.kind.tag() | if self.envelope.is_some() { ENVELOPED } else { 0 }
    }

    /// Write the envelope (if any) at the start of `dst`; returns the bytes written.
    pub fn put_envelope(&self, dst: &mut [u8]) -> usize {
        match &self.envelope {
            Some(e) => {
                dst[..ENVELOPE_LEN].copy_from_slice(e);
                ENVELOPE_LEN
            }
            None => 0,
        }
    }

    /// Length of the logical payload in bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes at the start of the logical payload that the first record must hold (the
    /// multipart header, and an array's descriptor).
    pub fn prefix(&self) -> usize {
        self.prefix
    }

    /// The logical payload as one slice, if it is one (a bytes or numbers message made
    /// from a slice): a writer can copy it from there, with no staging buffer.
    #[inline]
    pub fn contiguous(&self) -> Option<&'a [u8]> {
        match self.pieces.as_slice() {
            [(0, Src::Slice(b))] => Some(b),
            _ => None,
        }
    }

    /// Copy logical bytes `offset..offset + dst.len()` into `dst`.
    ///
    /// # Panics
    /// If the range is outside the payload.
    pub fn gather(&self, offset: usize, dst: &mut [u8]) {
        let end = offset + dst.len();
        assert!(end <= self.total, "gather past the payload");
        let pieces = self.pieces.as_slice();
        if let [(0, Src::Slice(b))] = pieces {
            dst.copy_from_slice(&b[offset..end]);
            return;
        }
        for (i, (at, src)) in pieces.iter().enumerate() {
            let next = pieces.get(i + 1).map_or(self.total, |p| p.0);
            let (lo, hi) = ((*at).max(offset), next.min(end));
            if lo >= hi {
                continue;
            }
            let out = &mut dst[lo - offset..hi - offset];
            match src {
                Src::Slice(b) => out.copy_from_slice(&b[lo - at..hi - at]),
                Src::Owned(v) => out.copy_from_slice(&v[lo - at..hi - at]),
                Src::Zero => out.fill(0),
                Src::Lent(_) => {}
                Src::Fill(f) => (f.0)(lo - at, out),
            }
        }
    }
}

/// How a message is cut into records: `None` if it goes whole in one record of its
/// kind's tag, else `Some((first, chunk))`: the first record carries the total, the
/// envelope (if any) and `first` payload bytes, each continuation up to `chunk`. `position` is the producer's
/// position: the first record is sized to end on a tile boundary (see [`chunk_size`]),
/// so the continuations tile the ring whatever the previous messages left (no padding
/// record at the wrap, all the ring usable). `whole`: the receiver views messages in
/// place (the ring's `whole` word): exactly the messages up to [`max_whole`] go whole,
/// also those over [`CHUNK_THRESHOLD`] (chunking overlaps the two copies of a large
/// message, but a chunked message cannot be viewed whole), and larger ones are chunked
/// even under the threshold (received by copy, they pin no ring space).
///
/// # Errors
/// The prefix does not fit one record of this ring (a ring too small for the message's
/// header: more out-of-band buffers than it can describe).
pub fn plan(msg: &Outgoing<'_>, capacity: usize, position: u64, whole: bool) -> Result<Option<(usize, usize)>, String> {
    let max = max_record(capacity);
    let env = msg.envelope_len();
    let one = if whole { msg.total + env <= max_whole(capacity) } else { msg.total + env <= max && msg.total <= CHUNK_THRESHOLD };
    if one {
        return Ok(None);
    }
    let chunk = chunk_size(capacity);
    let tile = chunk + RECORD_AND_CHUNK_HEADER;
    // The first record runs up to the next tile boundary; if that is less than an
    // eighth of a tile (or the prefix), to the boundary after, or, where that would
    // cross the end of the ring (the record then starts at 0 after a padding record),
    // one whole tile.
    let offset = (position % capacity as u64) as usize;
    let mut first = tile - offset % tile;
    if first < tile / 8 + RECORD_AND_CHUNK_HEADER {
        first = if offset + first < capacity { first + tile } else { tile };
    }
    while first - RECORD_AND_CHUNK_HEADER - env < msg.prefix {
        first += tile;
    }
    let first = (first - RECORD_AND_CHUNK_HEADER - env).min(msg.total);
    if first + CHUNK_HEADER + env > max {
        return Err(format!(
            "the {}-byte header of this message does not fit one {max}-byte record; use a larger channel",
            msg.prefix
        ));
    }
    Ok(Some((first, chunk)))
}

/// Bytes of a ring of `capacity` that a message of `total` payload bytes sent in chunks
/// occupies if none of it is given back before its end (its receiver holds an earlier
/// record, so the space of the chunks it copies out is not given back either): the
/// data, a record and chunk header and alignment per chunk, and padding at a wrap.
pub fn chunked_footprint(total: usize, capacity: usize) -> usize {
    let chunk = chunk_size(capacity).max(1);
    total.saturating_add((total / chunk + 2).saturating_mul(RECORD_AND_CHUNK_HEADER + 8)).saturating_add(chunk)
}

/// Largest message (payload and envelope, in bytes) sent whole to a receiver that
/// views messages in place: a quarter of the ring. A receiver that keeps the previous
/// view while it receives the next (`x = rx.recv(copy=False)` in a loop) then always
/// finds room: the view held, the padding a wrap may leave (less than one record) and
/// the next message take at most three quarters of the ring.
pub const fn max_whole(capacity: usize) -> usize {
    capacity / 4
}

/// Write the chunk header of a first record (the total) or a continuation (its
/// offset) into the first 8 bytes of `dst`.
pub fn chunk_header(value: usize, dst: &mut [u8]) {
    dst[..CHUNK_HEADER].copy_from_slice(&(value as u64).to_le_bytes());
}

/// Bytes of chunk header in front of chunked records' data.
pub const fn chunk_header_len() -> usize {
    CHUNK_HEADER
}

// ---------------------------------------------------------------- receiving side

/// What the first record of a message announces, validated: its kind, the length of
/// its logical payload, and the parts a receiver gets (their logical offsets and
/// lengths), with the array description of an array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    kind: Kind,
    total: usize,
    chunked: bool,
    /// Bytes of chunk header before the logical payload in the first record.
    skip: usize,
    parts: Parts,
    /// Boxed: the head travels by value on every receive; arrays are the rare case.
    array: Option<Box<ArrayMeta>>,
    envelope: Option<[u8; ENVELOPE_LEN]>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Parts {
    One(usize, usize),
    Many(Vec<(usize, usize)>),
}

impl Head {
    /// The head of a one-record bytes message of `len` bytes (nothing to parse).
    pub(crate) fn bytes(len: usize) -> Head {
        Head { kind: Kind::Bytes, total: len, chunked: false, skip: 0, parts: Parts::One(0, len), array: None, envelope: None }
    }

    /// The head of a one-record bytes message of `len` bytes (envelope included) with
    /// `envelope` in front.
    pub(crate) fn enveloped_bytes(len: usize, envelope: [u8; ENVELOPE_LEN]) -> Head {
        let total = len - ENVELOPE_LEN;
        Head { kind: Kind::Bytes, total, chunked: false, skip: ENVELOPE_LEN, parts: Parts::One(0, total), array: None, envelope: Some(envelope) }
    }

    /// The message's kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Length of the logical payload in bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    /// True if the message spans several records.
    pub fn is_chunked(&self) -> bool {
        self.chunked
    }

    /// The envelope the sender put in front of the payload ([`Outgoing::with_envelope`]).
    pub fn envelope(&self) -> Option<&[u8; ENVELOPE_LEN]> {
        self.envelope.as_ref()
    }

    /// The array description of an array message.
    pub fn array(&self) -> Option<&ArrayMeta> {
        self.array.as_deref()
    }

    /// Number of parts the receiver gets: 1 for bytes (the bytes) and arrays (the
    /// data), 1 + the buffers for a pickle (the stream, then each buffer).
    pub fn part_count(&self) -> usize {
        match &self.parts {
            Parts::One(..) => 1,
            Parts::Many(v) => v.len(),
        }
    }

    /// Length in bytes of part `i`.
    ///
    /// # Panics
    /// If `i >= part_count()`.
    pub fn part_len(&self, i: usize) -> usize {
        self.part(i).1
    }

    /// (logical offset, length) of part `i`.
    pub fn part(&self, i: usize) -> (usize, usize) {
        match &self.parts {
            Parts::One(o, l) if i == 0 => (*o, *l),
            Parts::One(..) => panic!("part {i} of a one-part message"),
            Parts::Many(v) => v[i],
        }
    }

    /// Bytes of chunk header and envelope in the first record before the logical
    /// payload.
    pub(crate) fn skip(&self) -> usize {
        self.skip
    }
}

/// Why a record cannot start a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// A continuation record whose message began before this receiver: skip it.
    Orphan,
    /// Bytes that no correct sender writes.
    Corrupt(String),
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::Orphan => f.write_str("a record of a message that began before this receiver"),
            HeadError::Corrupt(what) => f.write_str(what),
        }
    }
}

/// Most bytes of a first record that [`parse_head`] needs to see: the chunk header,
/// the largest multipart header and an array descriptor.
pub const MAX_PREFIX: usize =
    CHUNK_HEADER + ENVELOPE_LEN + (8 + 8 * MAX_PARTS).next_multiple_of(PART_ALIGN) + (8 + 8 * MAX_NDIM + MAX_DESCR);

/// Parse the first record of a message: its `tag`, its payload length `len`, and
/// `prefix`, the record's first `min(len, MAX_PREFIX)` payload bytes (copied out of
/// the ring: the bytes are untrusted and a peer might change them).
///
/// # Errors
/// [`HeadError::Orphan`] for a continuation; [`HeadError::Corrupt`] for an
/// unknown tag or any inconsistency.
pub fn parse_head(tag: u32, len: usize, prefix: &[u8]) -> Result<Head, HeadError> {
    let corrupt = |what: String| Err(HeadError::Corrupt(what));
    if tag == TAG_CONTINUATION {
        return Err(HeadError::Orphan);
    }
    let chunked = tag & CHUNKED != 0;
    let enveloped = tag & ENVELOPED != 0;
    let Some(kind) = Kind::from_tag(tag & !(CHUNKED | ENVELOPED)) else {
        return corrupt(format!("unknown record tag {tag:#x}"));
    };
    if prefix.len() != len.min(MAX_PREFIX) {
        return corrupt(format!("first record of {len} bytes came with {} bytes of prefix", prefix.len()));
    }
    let head_len = if chunked { CHUNK_HEADER } else { 0 } + if enveloped { ENVELOPE_LEN } else { 0 };
    if len < head_len {
        return corrupt(format!("first record of {len} bytes is shorter than its {head_len}-byte header"));
    }
    let total = if chunked {
        let total = u64::from_le_bytes(prefix[..CHUNK_HEADER].try_into().expect("8 bytes"));
        match usize::try_from(total).ok().filter(|&t| t >= len - head_len && t <= isize::MAX as usize) {
            Some(t) => t,
            None => return corrupt(format!("chunked message claims {total} bytes in a first record of {len}")),
        }
    } else {
        len - head_len
    };
    let envelope = enveloped.then(|| {
        let at = head_len - ENVELOPE_LEN;
        <[u8; ENVELOPE_LEN]>::try_from(&prefix[at..head_len]).expect("16 bytes")
    });
    let skip = head_len;
    let data = &prefix[skip..];
    let first_len = len - skip;
    if !kind.multipart() {
        return Ok(Head { kind, total, chunked, skip, parts: Parts::One(0, total), array: None, envelope });
    }
    let parts = parse_multipart(data, first_len, total).map_err(HeadError::Corrupt)?;
    match kind {
        Kind::Array => {
            let [(mo, ml), (doff, dl)] = parts[..] else {
                return corrupt(format!("array message has {} parts, expected 2", parts.len()));
            };
            let Some(meta_bytes) = data.get(mo..mo + ml).filter(|_| mo + ml <= first_len) else {
                return corrupt("array descriptor is not in the message's first record".into());
            };
            let meta = ArrayMeta::decode(meta_bytes).map_err(HeadError::Corrupt)?;
            let nbytes = meta.nbytes().map_err(HeadError::Corrupt)?;
            if nbytes != dl {
                return corrupt(format!("array of shape {:?} and dtype {} carries {dl} bytes", meta.shape, meta.descr));
            }
            Ok(Head { kind, total, chunked, skip, parts: Parts::One(doff, dl), array: Some(Box::new(meta)), envelope })
        }
        _ => Ok(Head { kind, total, chunked, skip, parts: Parts::Many(parts), array: None, envelope }),
    }
}

/// Parse a multipart header from `prefix` (the payload's first bytes, of which
/// `first_len` came in the first record) for a payload of `total` bytes: the
/// `(offset, len)` of each part.
///
/// # Errors
/// A description of the first inconsistency (untrusted input).
pub fn parse_multipart(prefix: &[u8], first_len: usize, total: usize) -> Result<Vec<(usize, usize)>, String> {
    let word = |at: usize, n: usize| {
        prefix
            .get(at..at + n)
            .filter(|_| at + n <= first_len)
            .ok_or_else(|| format!("multipart header cut short at {} bytes", prefix.len().min(first_len)))
    };
    let nparts = u32::from_le_bytes(word(0, 4)?.try_into().expect("4 bytes")) as usize;
    if nparts == 0 || nparts > MAX_PARTS {
        return Err(format!("multipart payload claims {nparts} parts"));
    }
    if u32::from_le_bytes(word(4, 4)?.try_into().expect("4 bytes")) != 0 {
        return Err("multipart header has a non-zero reserved word".into());
    }
    let mut parts = Vec::with_capacity(nparts);
    let mut at = 8 + 8 * nparts;
    for i in 0..nparts {
        let len = u64::from_le_bytes(word(8 + 8 * i, 8)?.try_into().expect("8 bytes"));
        let len = usize::try_from(len).map_err(|_| format!("part {i} length {len} overflows"))?;
        // `at` may sit near usize::MAX when a peer claims such a total: round checked.
        let Some(end) = at
            .checked_next_multiple_of(PART_ALIGN)
            .and_then(|start| start.checked_add(len))
            .filter(|&e| e <= total)
        else {
            let start = at.saturating_add(PART_ALIGN - 1) / PART_ALIGN * PART_ALIGN;
            return Err(format!("part {i} ({len} bytes at {start}) exceeds the {total}-byte payload"));
        };
        parts.push((end - len, len));
        at = end;
    }
    if at != total {
        return Err(format!("parts end at byte {at} of a {total}-byte payload"));
    }
    Ok(parts)
}

/// The offset a continuation record announces, from its first 8 payload bytes.
///
/// # Errors
/// A record too short to carry one.
pub fn continuation_offset(first8: &[u8]) -> Result<usize, String> {
    first8
        .get(..CHUNK_HEADER)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .and_then(|o| usize::try_from(o).ok())
        .ok_or_else(|| "continuation record without its offset".into())
}

/// Where received logical bytes go: one destination per part of a [`Head`] (or one for
/// the whole logical payload). Destinations are write-only ([`OutBuf`]): the Python
/// binding hands in fresh objects whose bytes are not initialised yet.
pub struct Scatter<'d> {
    targets: Targets<'d>,
}

/// One target inline (bytes, an array, a whole payload: no allocation per message).
enum Targets<'d> {
    One(usize, OutBuf<'d>),
    Many(Vec<(usize, OutBuf<'d>)>),
}

impl<'d> Scatter<'d> {
    /// Destinations for `head`'s parts, in order.
    ///
    /// # Errors
    /// A wrong number of destinations or one of the wrong length.
    pub fn new(head: &Head, dests: Vec<OutBuf<'d>>) -> Result<Scatter<'d>, String> {
        if dests.len() != head.part_count() {
            return Err(format!("{} destinations for a message of {} parts", dests.len(), head.part_count()));
        }
        if let [_] = &dests[..] {
            // One part (bytes, a whole payload): inline, as `Scatter::whole`.
            let d = dests.into_iter().next().expect("one destination");
            let (offset, len) = head.part(0);
            if d.len() != len {
                return Err(format!("a {}-byte destination for a {len}-byte part", d.len()));
            }
            return Ok(Scatter { targets: Targets::One(offset, d) });
        }
        let mut targets = Vec::with_capacity(dests.len());
        for (i, d) in dests.into_iter().enumerate() {
            let (offset, len) = head.part(i);
            if d.len() != len {
                return Err(format!("a {}-byte destination for a {len}-byte part", d.len()));
            }
            targets.push((offset, d));
        }
        Ok(Scatter { targets: Targets::Many(targets) })
    }

    /// One destination for the whole logical payload of `head`.
    ///
    /// # Errors
    /// `dst` is not `head.total()` bytes long.
    pub fn whole(head: &Head, dst: OutBuf<'d>) -> Result<Scatter<'d>, String> {
        if dst.len() != head.total() {
            return Err(format!("a {}-byte destination for a {}-byte message", dst.len(), head.total()));
        }
        Ok(Scatter { targets: Targets::One(0, dst) })
    }

    /// Route logical bytes `offset..offset + len`: `fill(at, dst)` must write `dst.len()`
    /// bytes of the source, starting at byte `at` of it, into `dst`. Bytes between
    /// parts (alignment padding) are skipped.
    #[inline]
    pub fn scatter_with(&mut self, offset: usize, len: usize, mut fill: impl FnMut(usize, &mut OutBuf<'_>)) {
        let end = offset + len;
        let mut route = |at: usize, dst: &mut OutBuf<'_>| {
            let (lo, hi) = (at.max(offset), (at + dst.len()).min(end));
            if lo < hi {
                fill(lo - offset, &mut dst.range(lo - at, hi - at));
            }
        };
        match &mut self.targets {
            Targets::One(at, dst) => route(*at, dst),
            Targets::Many(targets) => {
                for (at, dst) in targets {
                    route(*at, dst);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_payloads_are_checked() {
        let mut ok = Numbers::header(Container::Tuple, NumberType::I64).to_vec();
        ok.extend_from_slice(&(-5i64).to_le_bytes());
        let (c, t, data) = Numbers::parse(&ok).unwrap();
        assert_eq!((c, t, data.len()), (Container::Tuple, NumberType::I64, 8));
        assert!(Outgoing::numbers(&ok).is_ok());
        let n = Numbers { container: c, ty: t, data: data.to_vec() };
        assert_eq!(n.i64s().unwrap(), vec![-5]);
        assert!(n.f64s().is_err());
        for bad in [
            &ok[..7],                         // shorter than the header
            &ok[..ok.len() - 1],              // not whole numbers
            &[2, b'd', 0, 0, 0, 0, 0, 0][..], // unknown container
            &[0, b'x', 0, 0, 0, 0, 0, 0][..], // unknown type
            &[0, b'd', 0, 0, 0, 0, 0, 1][..], // reserved bytes set
        ] {
            assert!(Numbers::parse(bad).is_err(), "{bad:?}");
            assert!(Outgoing::numbers(bad).is_err());
        }
        assert_eq!(Kind::from_tag(TAG_NUMBERS), Some(Kind::Numbers));
        assert_eq!(parse_head(TAG_NUMBERS, ok.len(), &ok).unwrap().part_len(0), ok.len());
    }

    fn flat(msg: &Outgoing<'_>) -> Vec<u8> {
        let mut buf = vec![0xAA; msg.total()];
        let mut at = 0;
        for step in [1, 7, 100, usize::MAX].iter().cycle() {
            let n = (*step).min(buf.len() - at);
            msg.gather(at, &mut buf[at..at + n]);
            at += n;
            if at == buf.len() {
                break;
            }
        }
        buf
    }

    fn receive(tag: u32, payload: &[u8]) -> (Head, Vec<Vec<u8>>) {
        let head = parse_head(tag, payload.len(), &payload[..payload.len().min(MAX_PREFIX)]).unwrap();
        let mut bufs: Vec<Vec<u8>> = (0..head.part_count()).map(|i| vec![0; head.part_len(i)]).collect();
        let mut s = Scatter::new(&head, bufs.iter_mut().map(|b| b.as_mut_slice().into()).collect()).unwrap();
        for (i, chunk) in payload.chunks(33).enumerate() {
            s.scatter_with(i * 33, chunk.len(), |at, dst| {
                let n = dst.len();
                dst.write(&chunk[at..at + n]);
            });
        }
        drop(s);
        (head, bufs)
    }

    #[test]
    fn array_roundtrip_through_uneven_chunks() {
        let data: Vec<u8> = (0..24_000).map(|i| i as u8).collect();
        let meta = ArrayMeta::new("<f8", &[1000, 3], Order::F).unwrap();
        let msg = Outgoing::array(&meta, &data).unwrap();
        assert_eq!(msg.prefix() % PART_ALIGN, 0);
        let (head, bufs) = receive(TAG_ARRAY, &flat(&msg));
        assert_eq!(head.array(), Some(&meta));
        assert_eq!(bufs, vec![data]);
    }

    #[test]
    fn pickle_roundtrip() {
        let (s, a, b) = (b"stream".to_vec(), vec![1u8; 100], vec![]);
        let msg = Outgoing::pickle(&s, &[&a, &b]).unwrap();
        let (head, bufs) = receive(TAG_PICKLE, &flat(&msg));
        assert_eq!(head.kind(), Kind::Pickle);
        assert_eq!(bufs, vec![s, a, b]);
    }

    #[test]
    fn chunk_records_tile_the_ring() {
        for (cap, chunk) in [(4096, 496), (65536, 8176), (1 << 20, 131_056), (1 << 24, 1_048_560), (1 << 31, 1_048_560)] {
            assert_eq!(chunk_size(cap), chunk, "capacity {cap}");
            // record = 8-byte header + 8-byte chunk header + data: an exact divisor.
            assert_eq!(cap % (chunk + 16), 0, "capacity {cap}");
        }
        let data = vec![0u8; 3 << 20];
        assert_eq!(plan(&Outgoing::bytes(&data), 1 << 20, 0, false), Ok(Some((131_056, 131_056))));
        assert_eq!(plan(&Outgoing::bytes(&data[..1 << 20]), 1 << 22, 0, false), Ok(None));
        // A receiver that views in place: whole if it fits one record, else chunked.
        assert_eq!(plan(&Outgoing::bytes(&data[..(1 << 20) + 8]), 1 << 22, 0, false).map(|p| p.is_some()), Ok(true));
        assert_eq!(plan(&Outgoing::bytes(&data[..(1 << 20) + 8]), 1 << 23, 0, true), Ok(None));
        assert_eq!(plan(&Outgoing::bytes(&data), 1 << 20, 0, true).map(|p| p.is_some()), Ok(true));
        // Whole only up to a quarter of the ring, chunked above even under 1 MiB.
        assert_eq!(plan(&Outgoing::bytes(&data[..1 << 20]), 1 << 22, 0, true), Ok(None));
        assert_eq!(plan(&Outgoing::bytes(&data[..20_000]), 1 << 16, 0, true).map(|p| p.is_some()), Ok(true));
        assert_eq!(plan(&Outgoing::bytes(&data[..20_000]), 1 << 16, 0, false), Ok(None));
        assert_eq!(plan(&Outgoing::bytes(&data[..(1 << 20) + 8]), 1 << 22, 0, true).map(|p| p.is_some()), Ok(true));
        // From a position off the tiles, the first record ends on the next boundary (or
        // the one after, if that leaves less than half a tile).
        assert_eq!(plan(&Outgoing::bytes(&data), 1 << 20, 400, false), Ok(Some((131_072 - 400 - 16, 131_056))));
        assert_eq!(plan(&Outgoing::bytes(&data), 1 << 20, 131_000, false), Ok(Some((72 + 131_072 - 16, 131_056))));
        // In the last tile of the ring, close to its end: one tile from offset 0.
        assert_eq!(plan(&Outgoing::bytes(&data), 1 << 20, (1 << 20) - 72, false), Ok(Some((131_056, 131_056))));
    }

    #[test]
    fn itemsizes() {
        for (d, n) in [("<f8", 8), ("|u1", 1), ("|b1", 1), ("<c16", 16), ("<M8[ns]", 8), ("|S10", 10), ("<U3", 12), ("|V0", 0)] {
            assert_eq!(itemsize(d), Ok(n), "{d}");
        }
        for d in ["f8", "<O8", "<f", "<f8[ns]", "<M8[n s]", "<x4", "", "<i0", "‹é", "<fé"] {
            assert!(itemsize(d).is_err(), "{d}");
        }
    }

    /// The decoders of untrusted bytes never panic: random and mutated inputs (a
    /// deterministic generator, so CI runs the same cases; `fuzz/` has the coverage-guided
    /// fuzzer of the same entry points).
    #[test]
    fn decoders_never_panic_on_garbage() {
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let meta = ArrayMeta::new("<f8", &[3, 4], Order::C).unwrap();
        let data = [0u8; 96];
        let seeds = [
            flat(&Outgoing::array(&meta, &data).unwrap()),
            flat(&Outgoing::pickle(b"stream", &[b"a", b"bb"]).unwrap()),
            meta.encode(),
        ];
        for round in 0..20_000 {
            let mut buf = if round % 2 == 0 {
                seeds[round % seeds.len()].clone()
            } else {
                (0..next() % 200).map(|_| next() as u8).collect()
            };
            for _ in 0..(next() % 4) {
                if !buf.is_empty() {
                    let i = (next() as usize) % buf.len();
                    buf[i] = next() as u8;
                }
            }
            let tag = [TAG_BYTES, TAG_ARRAY, TAG_PICKLE, TAG_ARRAY | CHUNKED, TAG_CONTINUATION, next() as u32][round % 6];
            let len = if round % 3 == 0 { buf.len() } else { (next() as usize) % 100_000 };
            let prefix = &buf[..buf.len().min(len.min(MAX_PREFIX))];
            let _ = parse_head(tag, len, prefix);
            let _ = ArrayMeta::decode(&buf);
            let _ = parse_multipart(&buf, buf.len(), (next() as usize) % 1000);
            let _ = continuation_offset(&buf);
        }
    }

    #[test]
    fn multipart_totals_near_usize_max_are_refused_not_overflowed() {
        // Found by cargo-fuzz: a part ending one byte below usize::MAX made the next
        // part's aligned start overflow (a panic in a decoder of shared memory).
        let mut buf = vec![0u8; 8 + 16];
        buf[0..4].copy_from_slice(&2u32.to_le_bytes());
        buf[8..16].copy_from_slice(&((usize::MAX - 24usize.next_multiple_of(PART_ALIGN) - 1) as u64).to_le_bytes());
        buf[16..24].copy_from_slice(&1u64.to_le_bytes());
        let err = parse_multipart(&buf, buf.len(), usize::MAX).unwrap_err();
        assert!(err.contains("exceeds"), "{err}");
    }

    #[test]
    fn lies_are_refused() {
        let data = [7u8; 100];
        let msg = Outgoing::pickle(&data, &[]).unwrap();
        let buf = flat(&msg);
        let mut lie = buf.clone();
        lie[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse_head(TAG_PICKLE, lie.len(), &lie).is_err());
        assert!(parse_head(TAG_PICKLE, buf.len() - 1, &buf[..buf.len() - 1]).is_err());
        assert!(parse_head(TAG_PICKLE, 3, &[0; 3]).is_err());
        assert!(parse_head(TAG_PICKLE, 8, &[0; 8]).is_err());
        assert!(parse_head(0x7F, 0, &[]).is_err());
        assert_eq!(parse_head(TAG_CONTINUATION, 8, &[0; 8]), Err(HeadError::Orphan));
        let meta = ArrayMeta::new("<f8", &[2], Order::C).unwrap();
        let mut enc = meta.encode();
        enc[2] = 65;
        assert!(ArrayMeta::decode(&enc).is_err());
    }
}
