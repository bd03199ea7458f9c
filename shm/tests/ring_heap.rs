//! The SPSC ring and the wait protocol over heap memory, in one process (also run under
//! valgrind memcheck by `ci/valgrind.sh`).
//!
//! Every ring test runs over three storage backends (one conformance suite):
//! - `segment_ring`: the production [`SegmentRing`] over a heap [`Segment`]
//!   (`Segment::heap_sized`), shared by both ends through an `Arc` (a heap segment is
//!   one allocation and cannot be reopened, so the two ends share one `SegmentRing`);
//! - `heap_ring`: a test-only store (a [`RingControl`] plus a zeroed, 4096-aligned
//!   heap data area) with [`SharedFutex`] as its `Park`;
//! - `shm_ring`: the same layout in a real `/dev/shm` file mapped shared
//!   ([`ShmFile`] + [`Region::map`], as segments are), removed when the store drops.
//!
//! `SHMPLANE_TEST_SMALL=1` shrinks the long streams (100 000 → 2 000 messages) for
//! valgrind.


use shmplane_shm::header::SegmentKind;
use shmplane_shm::kind::Params;
use shmplane_shm::layout::{ring_segment_len, EventCount, RingControl, CHANNEL_ROLES, DATA_ALIGN};

const RECORD_HEADER_BYTES: usize = shmplane_shm::layout::RECORD_HEADER;
use shmplane_shm::region::{Region, ShmFile};
use shmplane_shm::ring::{
    max_payload, record_size, ByteRingStore, Consumer, Producer, RingError, RingStore, MAX_TAG, PADDING_TAG, POISON_BAD_HEAD,
    POISON_BAD_RECORD,
};
use shmplane_shm::segment::Segment;
use shmplane_shm::store::SegmentRing;
use shmplane_shm::sync::{AtomicU32, AtomicU64, Ordering};
use shmplane_shm::wait::{wait_until, Park, SharedFutex, WaitError, WaitPolicy};
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------

/// A ring storage that can be split into a producer view and a consumer view.
trait Backend: ByteRingStore + Clone + Send + 'static {
    /// A fresh, zeroed ring of `capacity` data bytes.
    fn new(capacity: usize) -> Self;
}

/// The production store over a heap segment, shared by both ends.
#[derive(Clone)]
struct SegStore(Arc<SegmentRing>);

impl Backend for SegStore {
    fn new(capacity: usize) -> Self {
        let params = Params { p0: capacity as u64, p1: 0 };
        let segment = Segment::heap_sized(SegmentKind::Channel, params, CHANNEL_ROLES, ring_segment_len(capacity));
        SegStore(Arc::new(SegmentRing::new(segment)))
    }
}

// SAFETY: forwards to SegmentRing, which upholds the contract.
unsafe impl RingStore for SegStore {
    type Park = shmplane_shm::store::RingPark;
    fn control(&self) -> &RingControl {
        self.0.control()
    }
    fn capacity(&self) -> usize {
        self.0.capacity()
    }
    fn header(&self, offset: usize) -> &AtomicU64 {
        self.0.header(offset)
    }
    unsafe fn write(&self, offset: usize, src: &[u8]) {
        // SAFETY: the caller upholds the same contract, forwarded unchanged.
        unsafe { self.0.write(offset, src) }
    }
    unsafe fn read(&self, offset: usize, dst: *mut u8, len: usize) {
        // SAFETY: the caller upholds the same contract, forwarded unchanged.
        unsafe { self.0.read(offset, dst, len) }
    }
    fn park(&self) -> &shmplane_shm::store::RingPark {
        self.0.park()
    }
    fn prefetch(&self, offset: usize, write: bool) {
        self.0.prefetch(offset, write);
    }
}

// SAFETY: forwards to SegmentRing, which upholds the contract.
unsafe impl ByteRingStore for SegStore {
    fn data_ptr(&self) -> *mut u8 {
        self.0.data_ptr()
    }
}

/// The "heap region" backend: a control block and a separately allocated data area.
struct HeapRing {
    control: RingControl,
    data: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the data area is only accessed through atomics (headers) or through ranges
// the ring protocol gives to one thread at a time; the struct owns the allocation.
unsafe impl Send for HeapRing {}
// SAFETY: as above.
unsafe impl Sync for HeapRing {}

impl HeapRing {
    fn new(capacity: usize) -> HeapRing {
        assert!(capacity.is_power_of_two() && capacity >= 16);
        let layout = Layout::from_size_align(capacity, 4096).unwrap();
        // SAFETY: non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        let data = NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        HeapRing { control: RingControl::default(), data, layout }
    }
}

impl Drop for HeapRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.data.as_ptr(), self.layout) };
    }
}

#[derive(Clone)]
struct HeapStore(Arc<HeapRing>);

impl Backend for HeapStore {
    fn new(capacity: usize) -> Self {
        HeapStore(Arc::new(HeapRing::new(capacity)))
    }
}

// SAFETY: `capacity` is the allocation's size (a power of two >= 16, asserted in
// `new`); `header` asserts its offset; `read`/`write` assert their ranges.
unsafe impl RingStore for HeapStore {
    type Park = SharedFutex;
    fn control(&self) -> &RingControl {
        &self.0.control
    }
    fn capacity(&self) -> usize {
        self.0.layout.size()
    }
    fn header(&self, offset: usize) -> &AtomicU64 {
        assert!(offset < self.capacity() && offset % 8 == 0, "header offset {offset} out of range");
        // SAFETY: in bounds and 8-aligned (the area is 4096-aligned); the word is only
        // ever accessed atomically.
        unsafe { &*(self.0.data.as_ptr().add(offset) as *const AtomicU64) }
    }
    unsafe fn write(&self, offset: usize, src: &[u8]) {
        assert!(offset + src.len() <= self.capacity());
        // SAFETY: in bounds (asserted); the ring protocol gives the producer exclusive use.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.0.data.as_ptr().add(offset), src.len()) };
    }
    unsafe fn read(&self, offset: usize, dst: *mut u8, len: usize) {
        assert!(offset + len <= self.capacity());
        // SAFETY: in bounds (asserted); the range holds a record the consumer acquired;
        // `dst` is valid for `len` writes (the caller's contract).
        unsafe { std::ptr::copy_nonoverlapping(self.0.data.as_ptr().add(offset), dst, len) };
    }
    fn park(&self) -> &SharedFutex {
        &SharedFutex
    }
}

// SAFETY: the data area is the allocation `header`/`read`/`write` address.
unsafe impl ByteRingStore for HeapStore {
    fn data_ptr(&self) -> *mut u8 {
        self.0.data.as_ptr()
    }
}

/// The "/dev/shm" backend: a control block at offset 0 and the data area at 4096 of a
/// real shared-memory file mapped shared, as a segment's are.
struct ShmRing {
    region: Region,
    file: ShmFile,
    name: String,
    capacity: usize,
}

impl Drop for ShmRing {
    fn drop(&mut self) {
        self.file.unlink_if_same(&self.name);
    }
}

#[derive(Clone)]
struct ShmStore(Arc<ShmRing>);

impl Backend for ShmStore {
    fn new(capacity: usize) -> Self {
        use std::sync::atomic::{AtomicU32 as Counter, Ordering as O};
        static N: Counter = Counter::new(0);
        assert!(capacity.is_power_of_two() && capacity >= 16);
        let name = format!("ring-conformance-{}-{}", std::process::id(), N.fetch_add(1, O::Relaxed));
        let len = DATA_ALIGN + capacity;
        let file = ShmFile::create(&name, len as u64).expect("create a /dev/shm file");
        let region = Region::map(&file, len).expect("map it");
        ShmStore(Arc::new(ShmRing { region, file, name, capacity }))
    }
}

impl ShmStore {
    fn data(&self) -> *mut u8 {
        // SAFETY: the mapping is DATA_ALIGN + capacity bytes long.
        unsafe { self.0.region.as_ptr().add(DATA_ALIGN) }
    }
}

// SAFETY: the mapping holds the control block (atomics only, at offset 0) and
// `capacity` data bytes at DATA_ALIGN; `header` asserts its offset; `read`/`write`
// assert their ranges.
unsafe impl RingStore for ShmStore {
    type Park = SharedFutex;
    fn control(&self) -> &RingControl {
        // SAFETY: RingControl is atomics-only; offset 0 is page-aligned; it fits below
        // DATA_ALIGN.
        unsafe { self.0.region.at(0) }
    }
    fn capacity(&self) -> usize {
        self.0.capacity
    }
    fn header(&self, offset: usize) -> &AtomicU64 {
        assert!(offset < self.capacity() && offset % 8 == 0, "header offset {offset} out of range");
        // SAFETY: in bounds and 8-aligned; the word is only ever accessed atomically.
        unsafe { &*(self.data().add(offset) as *const AtomicU64) }
    }
    unsafe fn write(&self, offset: usize, src: &[u8]) {
        assert!(offset + src.len() <= self.capacity());
        // SAFETY: in bounds (asserted); the ring protocol gives the producer exclusive use.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.data().add(offset), src.len()) };
    }
    unsafe fn read(&self, offset: usize, dst: *mut u8, len: usize) {
        assert!(offset + len <= self.capacity());
        // SAFETY: in bounds (asserted); a record the consumer acquired; `dst` is valid.
        unsafe { std::ptr::copy_nonoverlapping(self.data().add(offset), dst, len) };
    }
    fn park(&self) -> &SharedFutex {
        &SharedFutex
    }
}

// SAFETY: `data` is the data area `header`/`read`/`write` address.
unsafe impl ByteRingStore for ShmStore {
    fn data_ptr(&self) -> *mut u8 {
        self.data()
    }
}

/// Instantiate each generic test for both backends.
macro_rules! for_each_backend {
    ($($name:ident),* $(,)?) => {
        mod segment_ring {
            $( #[test] fn $name() { super::$name::<super::SegStore>(); } )*
        }
        mod heap_ring {
            $( #[test] fn $name() { super::$name::<super::HeapStore>(); } )*
        }
        mod shm_ring {
            $( #[test] fn $name() { super::$name::<super::ShmStore>(); } )*
        }
    };
}

for_each_backend!(
    fill_drain_varied_sizes_wraps_many_times,
    max_payload_boundary,
    max_payload_at_every_offset,
    zero_length_messages,
    full_then_room_after_release,
    tags_round_trip,
    partial_commit_and_abandoned_claim,
    zero_copy_payload_slices,
    stream_two_threads_block,
    stream_two_threads_adaptive,
    stream_two_threads_mixed,
    corrupt_header_without_committed_bit,
    corrupt_header_length_past_end,
    corrupt_consumer_position_poisons_producer,
    corrupt_consumer_position_reads_as_ready,
    restarted_producer_steps_over_unrecorded_commit,
    restarted_producer_steps_over_unrecorded_padding,
    restarted_producer_rejects_impossible_positions,
    restarted_consumer_resumes_at_head,
    wait_until_woken_by_commit_block,
    wait_until_woken_by_commit_adaptive,
    wait_until_producer_woken_by_release,
    stream_two_threads_with_holds,
    rewind_if_empty_starts_large_records_at_offset_zero,
    spacers_let_equal_records_start_at_offset_zero_every_time,
    spacers_are_validated_and_wake_nobody,
    data_ready_over_a_misaligned_consumer_position,
);

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn small() -> bool {
    std::env::var_os("SHMPLANE_TEST_SMALL").is_some_and(|v| v == "1")
}

/// Messages of the long two-thread streams.
fn stream_count() -> u64 {
    if small() {
        2_000
    } else {
        100_000
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Message `seq`: its sequence number (as much of it as fits) then a pattern that
/// depends on `seq`, so a torn, stale or misplaced record fails the check.
fn pattern(seq: u64, len: usize) -> Vec<u8> {
    let seed = splitmix(seq);
    let mut v: Vec<u8> = (0..len).map(|i| (seed as usize).wrapping_add(i.wrapping_mul(131)) as u8).collect();
    let n = len.min(8);
    v[..n].copy_from_slice(&seq.to_le_bytes()[..n]);
    v
}

fn tag_for(seq: u64) -> u32 {
    (splitmix(seq ^ 0xA5A5) as u32) % (MAX_TAG + 1)
}

fn tail<S: RingStore>(s: &S) -> u64 {
    s.control().tail.value.load(Ordering::Acquire)
}

fn head<S: RingStore>(s: &S) -> u64 {
    s.control().head.value.position.load(Ordering::Acquire)
}

fn poisoned<S: RingStore>(s: &S) -> u32 {
    shmplane_shm::ring::poisoned(s)
}

fn ring<B: Backend>(capacity: usize) -> (Producer<B>, Consumer<B>) {
    let store = B::new(capacity);
    (Producer::attach(store.clone()).unwrap(), Consumer::attach(store).unwrap())
}

/// Try to send message `seq` of `len` bytes; false if the ring is full now.
fn try_send<B: Backend>(p: &mut Producer<B>, seq: u64, len: usize) -> bool {
    match p.try_claim(len).unwrap() {
        None => false,
        Some(claim) => {
            assert_eq!(claim.len(), len);
            assert_eq!(claim.payload_offset() % 8, 0);
            p.write(&claim, 0, &pattern(seq, len));
            p.commit(claim, len, tag_for(seq));
            true
        }
    }
}

/// Try to receive message `seq` of `len` bytes, checking everything; false if empty.
fn try_recv<B: Backend>(c: &mut Consumer<B>, seq: u64, len: usize) -> bool {
    match c.try_peek().unwrap() {
        None => false,
        Some(r) => {
            assert_eq!(r.len(), len, "length of message {seq}");
            assert_eq!(r.tag(), tag_for(seq), "tag of message {seq}");
            assert_eq!(r.payload_offset() % 8, 0);
            let mut buf = vec![0u8; len];
            c.read(&r, 0, &mut buf);
            assert!(buf == pattern(seq, len), "content of message {seq} ({len} bytes)");
            c.release(r);
            true
        }
    }
}

// ---------------------------------------------------------------------------------------
// Single-thread ring tests
// ---------------------------------------------------------------------------------------

/// Fill until full, drain part, refill, ... with sizes that make records straddle the
/// end of the data area (padding records) on most laps, for many laps.
fn fill_drain_varied_sizes_wraps_many_times<B: Backend>() {
    let cap = 4096;
    let (mut p, mut c) = ring::<B>(cap);
    let max = p.max_payload();
    let sizes = |seq: u64| -> usize {
        match seq % 11 {
            0 => 0,
            1 => 1,
            2 => 7,
            3 => 8,
            4 => 9,
            5 => max,
            6 => max / 2 + 3,
            _ => (splitmix(seq) % 1500) as usize,
        }
    };
    let (mut sent, mut received) = (0u64, 0u64);
    let mut paddings = 0u64;
    let rounds = if small() { 300 } else { 3000 };
    for round in 0..rounds {
        // Fill until the ring refuses.
        loop {
            let len = sizes(sent);
            let before = tail(p.store());
            if !try_send(&mut p, sent, len) {
                break;
            }
            let after = tail(p.store());
            let record = (8 + len as u64).next_multiple_of(8);
            if after - before > record {
                // A padding record was published in front of the message.
                assert_eq!((after - record) % cap as u64, 0, "message after padding starts at offset 0");
                paddings += 1;
            }
            sent += 1;
        }
        // Drain a varying share of what is queued (everything every 4th round).
        let queued = sent - received;
        let take = if round % 4 == 3 { queued } else { queued.div_ceil(2) };
        for _ in 0..take {
            assert!(try_recv(&mut c, received, sizes(received)), "message {received} missing");
            received += 1;
        }
        if take == 0 {
            // Refused with nothing queued: the producer published a padding record at
            // the wrap and needs the consumer to skip it (try_peek does, returning None).
            let before = head(c.store());
            assert!(c.try_peek().unwrap().is_none());
            assert!(head(c.store()) > before, "refused on an empty ring without a padding record");
        }
    }
    while try_recv(&mut c, received, sizes(received)) {
        received += 1;
    }
    assert_eq!(received, sent);
    assert!(c.try_peek().unwrap().is_none());
    let laps = tail(p.store()) / cap as u64;
    assert!(laps >= rounds as u64 / 4, "only {laps} laps of the ring");
    assert!(paddings >= rounds as u64 / 8, "only {paddings} padding records");
    assert_eq!(head(c.store()), tail(p.store()), "consumer caught up with the producer");
    assert_eq!(poisoned(c.store()), 0);
}

/// Send message `seq`; if the ring refuses only because the producer just published a
/// padding record at the wrap, let the consumer skip it (its `try_peek` returns None)
/// and try once more.
fn send_skipping_padding<B: Backend>(p: &mut Producer<B>, c: &mut Consumer<B>, seq: u64, len: usize) {
    if !try_send(p, seq, len) {
        let before = head(c.store());
        assert!(c.try_peek().unwrap().is_none(), "message {seq}: refused but something is queued");
        assert!(head(c.store()) > before, "message {seq}: refused without a padding record");
        assert!(try_send(p, seq, len), "message {seq} ({len} bytes) refused on an empty ring");
    }
}

/// `max_payload` is accepted, one more byte is `TooLarge`, on several capacities.
fn max_payload_boundary<B: Backend>() {
    for cap in [64usize, 4096, 1 << 16] {
        let (mut p, mut c) = ring::<B>(cap);
        let max = p.max_payload();
        assert_eq!(max, cap - 16);
        assert_eq!(max, max_payload(cap));
        assert_eq!(p.try_claim(max + 1), Err(RingError::TooLarge { len: max + 1, max }));
        assert_eq!(p.try_claim(usize::MAX), Err(RingError::TooLarge { len: usize::MAX, max }));
        for seq in 0..4 {
            send_skipping_padding(&mut p, &mut c, seq, max);
            // Nothing else fits next to a maximal record, not even an empty one.
            assert!(p.try_claim(0).unwrap().is_none());
            assert_eq!(p.try_claim(max + 1), Err(RingError::TooLarge { len: max + 1, max }));
            assert!(try_recv(&mut c, seq, max));
        }
        assert!(c.try_peek().unwrap().is_none());
        assert_eq!(poisoned(c.store()), 0);
    }
}

/// A maximal record can be sent from every 8-aligned starting offset (with a padding
/// record in front of it from most offsets).
fn max_payload_at_every_offset<B: Backend>() {
    let cap = 256;
    let (mut p, mut c) = ring::<B>(cap);
    let max = p.max_payload();
    let mut seq = 0;
    for target in (0..cap as u64).step_by(8) {
        // Step to `target` with empty (8-byte) records, consumed at once.
        while tail(p.store()) % cap as u64 != target {
            assert!(try_send(&mut p, seq, 0));
            assert!(try_recv(&mut c, seq, 0));
            seq += 1;
        }
        send_skipping_padding(&mut p, &mut c, seq, max);
        assert!(try_recv(&mut c, seq, max), "max payload from offset {target}");
        seq += 1;
    }
    assert!(tail(p.store()) > 10 * cap as u64);
}

fn zero_length_messages<B: Backend>() {
    let cap = 128;
    let (mut p, mut c) = ring::<B>(cap);
    // An empty record is 8 bytes (header only); plus the zero-ahead slot.
    let mut n = 0;
    while try_send(&mut p, n, 0) {
        n += 1;
    }
    assert_eq!(n, (cap / 8 - 1) as u64, "empty records that fit in {cap} bytes");
    for seq in 0..n {
        let r = c.try_peek().unwrap().expect("an empty record");
        assert!(r.is_empty());
        assert_eq!(r.len(), 0);
        assert_eq!(r.tag(), tag_for(seq));
        assert!(c.payload(&r).is_empty());
        c.release(r);
    }
    assert!(c.try_peek().unwrap().is_none());
    // Many laps of empty records (the header word of an empty record with tag 0 is
    // just the committed bit: still non-zero).
    for seq in 0..1000u64 {
        let claim = p.try_claim(0).unwrap().unwrap();
        assert!(claim.is_empty());
        p.commit(claim, 0, 0);
        let r = c.try_peek().unwrap().unwrap_or_else(|| panic!("empty record {seq}"));
        assert_eq!((r.len(), r.tag()), (0, 0));
        c.release(r);
    }
}

fn full_then_room_after_release<B: Backend>() {
    let cap = 1024;
    let (mut p, mut c) = ring::<B>(cap);
    let len = 120; // 128-byte records: 7 fit with the 8-byte zero-ahead slot
    let mut sent = 0;
    while try_send(&mut p, sent, len) {
        sent += 1;
    }
    assert_eq!(sent, 7);
    // Still full on repeated tries.
    for _ in 0..3 {
        assert!(p.try_claim(len).unwrap().is_none());
    }
    // "Full" depends on the size: a 120-byte record (112 payload) still fits.
    let smaller = p.try_claim(len - 8).unwrap().expect("a smaller record fits");
    drop(smaller); // abandoned: publishes nothing
    let r = c.try_peek().unwrap().unwrap();
    assert!(p.try_claim(len).unwrap().is_none(), "peek alone frees nothing");
    c.release(r);
    assert!(try_send(&mut p, sent, len), "room after one release");
    sent += 1;
    assert!(p.try_claim(len).unwrap().is_none(), "full again");
    for seq in 1..sent {
        assert!(try_recv(&mut c, seq, len));
    }
    assert!(c.try_peek().unwrap().is_none());
}

fn tags_round_trip<B: Backend>() {
    let (mut p, mut c) = ring::<B>(4096);
    let tags = [0, 1, 2, 0xFFFF, 0x8000_0000 - 2, MAX_TAG, 12345, 0x4000_0000];
    for (i, &tag) in tags.iter().enumerate() {
        let claim = p.try_claim(i).unwrap().unwrap();
        p.write(&claim, 0, &pattern(i as u64, i));
        p.commit(claim, i, tag);
    }
    for (i, &tag) in tags.iter().enumerate() {
        let r = c.try_peek().unwrap().unwrap();
        assert_eq!(r.tag(), tag);
        assert_eq!(r.len(), i);
        assert_eq!(c.payload(&r), &pattern(i as u64, i)[..]);
        c.release(r);
    }
    assert_eq!(MAX_TAG, PADDING_TAG - 1);
}

/// `commit` with a shorter length publishes only that much; a claim dropped without a
/// commit publishes nothing and its space is claimed again.
fn partial_commit_and_abandoned_claim<B: Backend>() {
    let (mut p, mut c) = ring::<B>(4096);
    let claim = p.try_claim(1000).unwrap().unwrap();
    let offset = claim.payload_offset();
    drop(claim);
    assert!(c.try_peek().unwrap().is_none(), "an abandoned claim publishes nothing");
    let claim = p.try_claim(1000).unwrap().unwrap();
    assert_eq!(claim.payload_offset(), offset, "the abandoned space is claimed again");
    p.write(&claim, 0, &pattern(7, 1000));
    p.commit(claim, 10, 3);
    let r = c.try_peek().unwrap().unwrap();
    assert_eq!((r.len(), r.tag()), (10, 3));
    assert_eq!(c.payload(&r), &pattern(7, 1000)[..10]);
    c.release(r);
    // The next record starts right after the 10-byte one (24 bytes), not after 1000.
    assert_eq!(tail(p.store()), 24);
    assert!(try_send(&mut p, 8, 5));
    assert!(try_recv(&mut c, 8, 5));
}

/// `payload_mut` / `payload` (zero-copy) and `write`/`read` at offsets agree.
fn zero_copy_payload_slices<B: Backend>() {
    let (mut p, mut c) = ring::<B>(4096);
    for seq in 0..200u64 {
        let len = (splitmix(seq) % 700) as usize;
        let claim = p.try_claim(len).unwrap().unwrap();
        let data = pattern(seq, len);
        if seq % 2 == 0 {
            p.payload_mut(&claim).copy_from_slice(&data);
        } else {
            let mid = len / 3;
            p.write(&claim, mid, &data[mid..]);
            p.write(&claim, 0, &data[..mid]);
        }
        p.commit(claim, len, tag_for(seq));
        let r = c.try_peek().unwrap().unwrap();
        assert_eq!(c.payload(&r), &data[..]);
        let mut part = vec![0u8; len / 2];
        c.read(&r, len - len / 2, &mut part);
        assert_eq!(part, data[len - len / 2..]);
        c.release(r);
    }
}

// ---------------------------------------------------------------------------------------
// Two-thread streams with the wait protocol
// ---------------------------------------------------------------------------------------

/// Length of stream message `seq`: mostly small, some large, a few maximal.
fn stream_len(seq: u64, max: usize) -> usize {
    let r = splitmix(seq);
    match r % 64 {
        0 => max,
        1..=4 => (r >> 8) as usize % 4000,
        5 => 0,
        _ => (r >> 8) as usize % 300,
    }
}

fn stream<B: Backend>(
    producer_policy: impl Fn(u64) -> WaitPolicy + Send + 'static,
    consumer_policy: impl Fn(u64) -> WaitPolicy,
) {
    let n = stream_count();
    let (mut p, mut c) = ring::<B>(1 << 14);
    let max = p.max_payload();
    let watchdog = Instant::now() + Duration::from_secs(120);
    let producer = thread::spawn(move || {
        for seq in 0..n {
            let len = stream_len(seq, max);
            let claim = wait_until(
                &mut p,
                |p| (&p.store().control().space_ready.value, p.store().park()),
                producer_policy(seq),
                Some(watchdog),
                |p| p.try_claim(len),
                |_| Ok(()),
            )
            .unwrap_or_else(|e| panic!("producer, message {seq}: {e:?}"));
            let data = pattern(seq, len);
            if seq % 3 == 0 {
                p.payload_mut(&claim).copy_from_slice(&data);
            } else {
                p.write(&claim, 0, &data);
            }
            p.commit(claim, len, tag_for(seq));
        }
        p
    });
    let mut bytes = 0u64;
    for seq in 0..n {
        let r = wait_until(
            &mut c,
            |c| (&c.store().control().data_ready.value, c.store().park()),
            consumer_policy(seq),
            Some(watchdog),
            |c| c.try_peek(),
            |_| Ok(()),
        )
        .unwrap_or_else(|e| panic!("consumer, message {seq}: {e:?}"));
        let len = stream_len(seq, max);
        assert_eq!(r.len(), len, "length of message {seq}");
        assert_eq!(r.tag(), tag_for(seq), "tag of message {seq}");
        if seq % 2 == 0 {
            assert!(c.payload(&r) == pattern(seq, len), "content of message {seq}");
        } else {
            let mut buf = vec![0u8; len];
            c.read(&r, 0, &mut buf);
            assert!(buf == pattern(seq, len), "content of message {seq}");
        }
        bytes += len as u64;
        c.release(r);
    }
    let p = producer.join().expect("producer thread");
    assert!(c.try_peek().unwrap().is_none(), "nothing after the last message");
    assert_eq!(tail(p.store()), head(c.store()));
    assert!(bytes > 0);
    // Nobody is left announced as a sleeper.
    assert_eq!(c.store().control().data_ready.value.sleepers(), 0);
    assert_eq!(c.store().control().space_ready.value.sleepers(), 0);
}

/// A producer thread streams while the consumer holds up to 5 records (zero-copy views
/// kept past their receive), released in random order and none older than 8 records,
/// and receives the rest by copy behind them: a held record's bytes never change, and
/// everything arrives once, in order.
fn stream_two_threads_with_holds<B: Backend>() {
    use shmplane_shm::ring::Hold;
    let n = stream_count();
    let (mut p, mut c) = ring::<B>(1 << 14);
    let watchdog = Instant::now() + Duration::from_secs(120);
    let len_of = |seq: u64| (splitmix(seq) >> 8) as usize % 600;
    let producer = thread::spawn(move || {
        for seq in 0..n {
            let len = len_of(seq);
            let claim = wait_until(
                &mut p,
                |p| (&p.store().control().space_ready.value, p.store().park()),
                WaitPolicy::Adaptive { spin: Duration::from_micros(5) },
                Some(watchdog),
                |p| p.try_claim(len),
                |_| Ok(()),
            )
            .unwrap_or_else(|e| panic!("producer, message {seq}: {e:?}"));
            p.write(&claim, 0, &pattern(seq, len));
            p.commit(claim, len, tag_for(seq));
        }
    });
    let mut held: Vec<(u64, Hold, usize)> = Vec::new();
    let check = |c: &Consumer<B>, seq: u64, hold: &Hold, offset: usize| {
        let len = len_of(seq);
        let mut buf = vec![0u8; len];
        // SAFETY: `offset` is the held record's payload offset in the data area, `len`
        // its payload length; the producer does not write held space.
        unsafe { c.store().read(offset, buf.as_mut_ptr(), len) };
        assert!(buf == pattern(seq, len), "held message {seq} changed (hold {hold:?})");
    };
    let mut rng = 0x1234_5678u64;
    for seq in 0..n {
        let r = wait_until(
            &mut c,
            |c| (&c.store().control().data_ready.value, c.store().park()),
            WaitPolicy::Adaptive { spin: Duration::from_micros(5) },
            Some(watchdog),
            |c| c.try_peek(),
            |_| Ok(()),
        )
        .unwrap_or_else(|e| panic!("consumer, message {seq}: {e:?}"));
        assert_eq!(r.len(), len_of(seq), "length of message {seq}");
        rng = splitmix(rng);
        if rng % 3 == 0 && held.len() < 5 {
            let offset = r.payload_offset();
            let hold = c.hold(r);
            check(&c, seq, &hold, offset);
            held.push((seq, hold, offset));
        } else {
            let mut buf = vec![0u8; r.len()];
            c.read(&r, 0, &mut buf);
            assert!(buf == pattern(seq, len_of(seq)), "content of message {seq}");
            c.release(r);
        }
        while let Some(i) = held.iter().position(|(s, ..)| seq - s >= 8).or_else(|| (rng % 5 == 0 && !held.is_empty()).then(|| (rng >> 8) as usize % held.len())) {
            let (s, hold, offset) = held.swap_remove(i);
            check(&c, s, &hold, offset);
            assert!(c.release_hold(hold));
            assert!(!c.release_hold(hold), "released twice");
            rng = splitmix(rng);
        }
        assert_eq!(c.holds(), held.len());
    }
    for (s, hold, offset) in held.drain(..) {
        check(&c, s, &hold, offset);
        assert!(c.release_hold(hold));
    }
    producer.join().expect("producer thread");
    assert!(c.try_peek().unwrap().is_none(), "nothing after the last message");
    assert_eq!(tail(c.store()), head(c.store()), "every record given back");
}

/// `Producer::rewind_if_empty`: only on an empty ring, only for a record that fits
/// before the producer's offset; the consumer skips the padding and reads the record
/// at offset 0.
fn rewind_if_empty_starts_large_records_at_offset_zero<B: Backend>() {
    let (mut p, mut c) = ring::<B>(4096);
    assert!(try_send(&mut p, 0, 1000));
    // Not empty: no rewind.
    assert!(!p.rewind_if_empty(900).unwrap());
    assert!(try_recv(&mut c, 0, 1000));
    // Empty, but the record does not fit before the offset (1008): no rewind.
    assert!(!p.rewind_if_empty(1200).unwrap());
    // Empty and it fits before: padded to the end, the record lands at 0.
    assert!(p.rewind_if_empty(900).unwrap());
    let claim = p.try_claim(900).unwrap().expect("room after the rewind");
    assert_eq!(claim.payload_offset(), RECORD_HEADER_BYTES);
    p.write(&claim, 0, &pattern(1, 900));
    p.commit(claim, 900, tag_for(1));
    assert!(try_recv(&mut c, 1, 900));
    assert_eq!(tail(p.store()), head(c.store()));
    assert_eq!(tail(p.store()), 4096 + 912);
    // At offset 0 already: nothing to do.
    assert!(try_send(&mut p, 2, 4096 - 912 - 8 - 16));
    assert!(try_recv(&mut c, 2, 4096 - 912 - 8 - 16));
}

fn stream_two_threads_block<B: Backend>() {
    stream::<B>(|_| WaitPolicy::Block, |_| WaitPolicy::Block);
}

fn stream_two_threads_adaptive<B: Backend>() {
    stream::<B>(|_| WaitPolicy::default(), |_| WaitPolicy::default());
}

fn stream_two_threads_mixed<B: Backend>() {
    let adaptive = WaitPolicy::Adaptive { spin: Duration::from_micros(2) };
    stream::<B>(
        move |seq| if seq % 2 == 0 { WaitPolicy::Block } else { adaptive },
        move |seq| if seq % 3 == 0 { adaptive } else { WaitPolicy::Block },
    );
}

// ---------------------------------------------------------------------------------------
/// `Producer::commit_spaced` for large records: equal records then start at offset 0
/// every time (without the spacer they alternate between two places) when the consumer
/// has stepped over the rewind's padding before the record is committed, and the
/// consumer steps over each spacer with its record, released or held.
fn spacers_let_equal_records_start_at_offset_zero_every_time<B: Backend>() {
    let (mut p, mut c) = ring::<B>(1 << 19);
    let len = 100_000; // at least SPACED_MIN
    let mut offsets = Vec::new();
    for seq in 0..10u64 {
        p.rewind_if_empty(len).unwrap();
        // A consumer waiting for the record steps over the rewind's padding (which
        // wakes it) before the record comes: only then is there room for the spacer.
        assert!(c.try_peek().unwrap().is_none());
        let claim = p.try_claim(len).unwrap().expect("room");
        offsets.push(claim.payload_offset());
        p.write(&claim, 0, &pattern(seq, len));
        p.commit_spaced(claim, len, tag_for(seq));
        assert!(c.has_data());
        if seq % 2 == 0 {
            assert!(try_recv(&mut c, seq, len));
        } else {
            let r = c.try_peek().unwrap().expect("the record");
            let hold = c.hold(r);
            assert!(c.release_hold(hold));
        }
        // The spacer went with the record: the ring is empty.
        assert_eq!(head(c.store()), tail(p.store()));
        assert!(!c.has_data() && !shmplane_shm::ring::data_ready(c.store()));
    }
    assert!(offsets[1..].iter().all(|&o| o == RECORD_HEADER_BYTES), "{offsets:?}");
    // Without spacers, equal records alternate.
    let mut plain = Vec::new();
    for seq in 0..4u64 {
        p.rewind_if_empty(len).unwrap();
        let claim = p.try_claim(len).unwrap().expect("room");
        plain.push(claim.payload_offset());
        p.write(&claim, 0, &pattern(seq, len));
        p.commit(claim, len, tag_for(seq));
        assert!(try_recv(&mut c, seq, len));
    }
    assert!(plain.windows(2).any(|w| w[0] != w[1]), "{plain:?}");
}

/// Spacers: no spacer without room for it; a restarted producer steps over a record's
/// spacer; a spacer may be the end's padding; two in a row are corrupt.
fn spacers_are_validated_and_wake_nobody<B: Backend>() {
    // A record below SPACED_MIN: no spacer.
    let (mut p, mut c) = ring::<B>(4096);
    let claim = p.try_claim(100).unwrap().expect("room");
    p.write(&claim, 0, &pattern(9, 100));
    p.commit_spaced(claim, 100, tag_for(9));
    assert_eq!(tail(p.store()), record_size(100) as u64, "no spacer");
    assert!(try_recv(&mut c, 9, 100));
    // A record filling all but the zero-ahead slot: no room for a spacer.
    let cap = 1usize << 18;
    let (mut p, mut c) = ring::<B>(cap);
    let len = p.max_payload();
    let claim = p.try_claim(len).unwrap().expect("room");
    p.commit_spaced(claim, len, tag_for(0));
    assert_eq!(tail(p.store()) % cap as u64, cap as u64 - 8, "no spacer");
    let r = c.try_peek().unwrap().expect("the record");
    c.release(r);
    // A spacer as the last 8 bytes of the data area: then the record at 0.
    let claim = p.try_claim(8).unwrap().expect("room");
    assert_eq!(claim.payload_offset(), RECORD_HEADER_BYTES, "padded to the end");
    p.write(&claim, 0, &pattern(1, 8));
    p.commit(claim, 8, tag_for(1));
    assert!(try_recv(&mut c, 1, 8));
    let (mut p, mut c) = ring::<B>(cap);
    assert!(try_send(&mut p, 9, 8)); // 0..16
    assert!(try_recv(&mut c, 9, 8));
    let len = cap - 16 - 8 - 8; // record 16..cap - 8, its spacer to the end
    let claim = p.try_claim(len).unwrap().expect("room");
    p.write(&claim, 0, &pattern(0, len));
    p.commit_spaced(claim, len, tag_for(0));
    assert_eq!(tail(p.store()) % cap as u64, 0, "spacer at the end");
    assert!(try_recv(&mut c, 0, len));
    assert!(try_send(&mut p, 1, 10));
    assert!(try_recv(&mut c, 1, 10));
    assert_eq!(head(c.store()), tail(p.store()));
    // A producer that died after publishing a spaced record, before storing `tail`:
    // its successor steps over the record and the spacer.
    let store = c.store().clone();
    let before = tail(&store);
    let big = 70_000;
    let claim = p.try_claim(big).unwrap().expect("room");
    p.write(&claim, 0, &pattern(2, big));
    p.commit_spaced(claim, big, tag_for(2));
    assert_eq!(tail(p.store()), before + record_size(big) as u64 + 8, "spaced");
    store.control().tail.value.store(before, Ordering::Release);
    drop(p);
    assert!(try_recv(&mut c, 2, big)); // the consumer is past the spacer already
    let mut p = Producer::attach(store.clone()).unwrap();
    assert!(try_send(&mut p, 3, 10));
    assert!(try_recv(&mut c, 3, 10));
    // Two spacers in a row (a broken peer): corrupt.
    let (mut p, mut c) = ring::<B>(4096);
    assert!(try_send(&mut p, 0, 10));
    assert!(try_recv(&mut c, 0, 10));
    let spacer = (1u64 << 63) | (u64::from(shmplane_shm::ring::PADDING_TAG) << 32);
    let at = (head(c.store()) % 4096) as usize;
    c.store().header(at + 8).store(spacer, Ordering::Relaxed);
    c.store().header(at).store(spacer, Ordering::Release);
    assert!(matches!(c.try_peek(), Err(RingError::Corrupt { .. })));
}

// Corruption
// ---------------------------------------------------------------------------------------

/// Garbage in the header word at the consumer position: `Corrupt`, ring poisoned.
fn corrupt_header_without_committed_bit<B: Backend>() {
    let (mut p, mut c) = ring::<B>(4096);
    assert!(try_send(&mut p, 0, 10));
    assert!(try_recv(&mut c, 0, 10));
    assert!(try_send(&mut p, 1, 10));
    let at = (head(c.store()) % 4096) as usize;
    assert_eq!(at, 24);
    // Committed bit clear, otherwise plausible.
    c.store().header(at).store(0x0000_0005_0000_000A, Ordering::Release);
    match c.try_peek() {
        Err(RingError::Corrupt { position, value, .. }) => {
            assert_eq!(position, 24);
            assert_eq!(value, 0x0000_0005_0000_000A);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(poisoned(c.store()), POISON_BAD_RECORD);
    // It stays corrupt: the consumer does not skip the bad record.
    assert!(matches!(c.try_peek(), Err(RingError::Corrupt { .. })));
    assert_eq!(head(c.store()), 24);
}

/// A committed header whose length runs past the end of the data area.
fn corrupt_header_length_past_end<B: Backend>() {
    for (cap, word_len, pos_fill) in [(4096usize, 0xFFFF_FFF0u64, 0usize), (4096, 4089, 0), (4096, 201, 3880)] {
        let (mut p, mut c) = ring::<B>(cap);
        if pos_fill > 0 {
            assert!(try_send(&mut p, 0, pos_fill));
            assert!(try_recv(&mut c, 0, pos_fill));
        }
        let at = (head(c.store()) % cap as u64) as usize;
        // Record size = 8 + len rounded up; past `cap - at` is impossible.
        assert!((8 + word_len as usize).next_multiple_of(8) > cap - at);
        let garbage = (1u64 << 63) | (5u64 << 32) | word_len;
        c.store().header(at).store(garbage, Ordering::Release);
        assert!(
            matches!(c.try_peek(), Err(RingError::Corrupt { value, .. }) if value == garbage),
            "length {word_len} at offset {at} accepted"
        );
        assert_eq!(poisoned(c.store()), POISON_BAD_RECORD);
    }
    // The boundary: a record that ends exactly at the end of the data area is valid.
    let (mut p, mut c) = ring::<B>(4096);
    assert!(try_send(&mut p, 0, 3880));
    assert!(try_recv(&mut c, 0, 3880));
    c.store().header(3888).store((1u64 << 63) | 200, Ordering::Release);
    let r = c.try_peek().unwrap().expect("a record up to the end is valid");
    assert_eq!(r.len(), 200);
    c.release(r);
    assert_eq!(poisoned(c.store()), 0);
}

/// An impossible consumer position read by a producer that needs room.
fn corrupt_consumer_position_poisons_producer<B: Backend>() {
    let (mut p, c) = ring::<B>(256);
    let mut seq = 0;
    while try_send(&mut p, seq, 40) {
        seq += 1;
    }
    let t = tail(p.store());
    // Beyond the producer's own position: no correct consumer writes that.
    c.store().control().head.value.position.store(t + 8, Ordering::Release);
    assert!(matches!(p.try_claim(40), Err(RingError::Corrupt { .. })));
    assert_eq!(poisoned(p.store()), POISON_BAD_HEAD);
    // Misaligned.
    let (mut p, c) = ring::<B>(256);
    let mut seq = 0;
    while try_send(&mut p, seq, 40) {
        seq += 1;
    }
    c.store().control().head.value.position.store(4, Ordering::Release);
    assert!(matches!(p.try_claim(40), Err(RingError::Corrupt { .. })));
    assert_eq!(poisoned(p.store()), POISON_BAD_HEAD);
}

/// `data_ready` (a look without the role: `poll`, a mailbox lane's new producer) at a
/// stored consumer position no consumer writes: ready (the receive reports it), never
/// a header read off its alignment (found by the Python segment fuzzer: a panic).
fn corrupt_consumer_position_reads_as_ready<B: Backend>() {
    let (_p, c) = ring::<B>(256);
    assert!(!shmplane_shm::ring::data_ready(c.store()));
    for bad in [4, 0xFFFF_FFFF, u64::MAX, (1 << 62) + 8] {
        c.store().control().head.value.position.store(bad, Ordering::Release);
        assert!(shmplane_shm::ring::data_ready(c.store()), "head {bad:#x}");
    }
}

// ---------------------------------------------------------------------------------------
// Restart (crash) recovery
// ---------------------------------------------------------------------------------------

/// A producer that died after publishing a record's header but before storing `tail`:
/// the next producer steps over the record instead of overwriting it.
fn restarted_producer_steps_over_unrecorded_commit<B: Backend>() {
    let (mut p, mut c) = ring::<B>(4096);
    assert!(try_send(&mut p, 0, 10));
    let old_tail = tail(p.store());
    assert!(try_send(&mut p, 1, 300));
    let store = p.store().clone();
    drop(p);
    store.control().tail.value.store(old_tail, Ordering::Release);
    let mut p2 = Producer::attach(store).unwrap();
    assert!(try_send(&mut p2, 2, 20));
    assert!(try_recv(&mut c, 0, 10));
    assert!(try_recv(&mut c, 1, 300), "the crashed producer's last record survives");
    assert!(try_recv(&mut c, 2, 20));
    assert!(c.try_peek().unwrap().is_none());
    assert_eq!(tail(p2.store()), head(c.store()));
}

/// Same, when the unrecorded publish was the padding record at the wrap.
fn restarted_producer_steps_over_unrecorded_padding<B: Backend>() {
    let cap = 256;
    let (mut p, mut c) = ring::<B>(cap);
    assert!(try_send(&mut p, 0, 200)); // 208 bytes: position 208
    assert!(try_recv(&mut c, 0, 200));
    let old_tail = tail(p.store());
    assert_eq!(old_tail, 208);
    // 100 bytes do not fit in the 48 left before the end: padding, then the record.
    assert!(try_send(&mut p, 1, 100));
    assert_eq!(tail(p.store()), 256 + 112);
    // Crash right after publishing the padding record: the record at 0 never existed.
    let store = p.store().clone();
    drop(p);
    store.header(0).store(0, Ordering::Relaxed);
    store.control().tail.value.store(old_tail, Ordering::Release);
    let mut p2 = Producer::attach(store).unwrap();
    assert!(try_send(&mut p2, 2, 100));
    assert!(try_recv(&mut c, 2, 100));
    assert!(c.try_peek().unwrap().is_none());
}

fn restarted_producer_rejects_impossible_positions<B: Backend>() {
    // Misaligned tail.
    let store = B::new(256);
    store.control().tail.value.store(12, Ordering::Relaxed);
    store.control().head.value.position.store(8, Ordering::Relaxed);
    assert!(matches!(Producer::attach(store), Err(RingError::Corrupt { .. })));
    // More than a capacity between head and tail.
    let store = B::new(256);
    store.control().tail.value.store(1024, Ordering::Relaxed);
    store.control().head.value.position.store(512, Ordering::Relaxed);
    assert!(matches!(Producer::attach(store), Err(RingError::Corrupt { .. })));
    // Garbage at the producer position.
    let store = B::new(256);
    store.header(0).store(0x1234, Ordering::Relaxed);
    assert!(matches!(Producer::attach(store), Err(RingError::Corrupt { .. })));
    // Misaligned consumer position.
    let store = B::new(256);
    store.control().head.value.position.store(3, Ordering::Relaxed);
    assert!(matches!(Consumer::attach(store), Err(RingError::Corrupt { .. })));
}

/// A new consumer resumes at the stored head: released records are not seen again,
/// unreleased ones are.
fn restarted_consumer_resumes_at_head<B: Backend>() {
    let (mut p, mut c) = ring::<B>(4096);
    for seq in 0..5 {
        assert!(try_send(&mut p, seq, 50));
    }
    assert!(try_recv(&mut c, 0, 50));
    assert!(try_recv(&mut c, 1, 50));
    let r = c.try_peek().unwrap().unwrap(); // message 2, never released
    assert_eq!(r.len(), 50);
    let store = c.store().clone();
    drop(c);
    let mut c2 = Consumer::attach(store).unwrap();
    for seq in 2..5 {
        assert!(try_recv(&mut c2, seq, 50));
    }
}

// ---------------------------------------------------------------------------------------
// Wait protocol
// ---------------------------------------------------------------------------------------

/// Deadline of every wait a test makes on another thread: a bug fails the test
/// instead of hanging it. Never a measure of speed.
const WATCHDOG: Duration = Duration::from_secs(60);

/// This thread's kernel thread id.
fn gettid() -> libc::pid_t {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// Wait until thread `tid` of this process is asleep in `futex(2)` on `word`, as
/// `/proc/self/task/TID/syscall` shows it (the system call a blocked thread is in,
/// then its arguments: the futex address first). A test of a wake must see the waiter
/// asleep first: one that is still on its way finds the news before it sleeps, and the
/// wake goes untested. Panics after [`WATCHDOG`].
fn await_futex_sleep(tid: libc::pid_t, word: &AtomicU32) {
    let want = word as *const AtomicU32 as usize;
    let deadline = Instant::now() + WATCHDOG;
    loop {
        let path = format!("/proc/self/task/{tid}/syscall");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e} (did the waiter end?)"));
        let mut fields = text.split_ascii_whitespace();
        let nr = fields.next().and_then(|f| f.parse::<libc::c_long>().ok());
        let addr = fields.next().and_then(|f| usize::from_str_radix(f.trim_start_matches("0x"), 16).ok());
        if nr == Some(libc::SYS_futex) && addr == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "watchdog: thread {tid} never slept on the futex ({path}: {text:?})");
        thread::sleep(Duration::from_millis(1));
    }
}

/// A `Park` that sleeps on the futex without the timeout it is given (the waiter's
/// slice): a waiter parked with it ends its sleep only when woken, so a lost wake
/// hangs it (and the test's watchdog fails the test) instead of costing one slice
/// while the test passes.
struct Untimed;

impl Park for Untimed {
    fn park(&self, word: &AtomicU32, expected: u32, _timeout: Option<Duration>) {
        SharedFutex.park(word, expected, None);
    }

    fn unpark_all(&self, word: &AtomicU32) {
        SharedFutex.unpark_all(word);
    }
}

/// The consumer sleeps on the futex (seen in `futex(2)` on the data event's word, with
/// no timeout: only a wake ends that sleep), then a commit wakes it: the commit's
/// notify saw the sleeper (it bumped the epoch) and its wake reached it.
fn woken_by_commit<B: Backend>(policy: WaitPolicy) {
    let (mut p, mut c) = ring::<B>(4096);
    let (tid_tx, tid) = std::sync::mpsc::channel();
    let (done_tx, done) = std::sync::mpsc::channel();
    thread::spawn(move || {
        tid_tx.send(gettid()).unwrap();
        let got = wait_until(
            &mut c,
            |c| (&c.store().control().data_ready.value, &Untimed),
            policy,
            None,
            |c| c.try_peek(),
            |_| Ok::<(), RingError>(()),
        );
        let r = got.expect("an untimed wait ends with the record");
        let len = r.len();
        c.release(r);
        let _ = done_tx.send((len, c));
    });
    await_futex_sleep(tid.recv().unwrap(), &p.store().control().data_ready.value.epoch);
    let epoch = p.store().control().data_ready.value.epoch.load(Ordering::Relaxed);
    assert!(try_send(&mut p, 0, 42));
    assert_ne!(p.store().control().data_ready.value.epoch.load(Ordering::Relaxed), epoch, "the commit did not notify the sleeper");
    let (len, c) = done.recv_timeout(WATCHDOG).expect("watchdog: the commit's wake never reached the sleeping consumer");
    assert_eq!(len, 42);
    assert_eq!(c.store().control().data_ready.value.sleepers(), 0);
}

fn wait_until_woken_by_commit_block<B: Backend>() {
    woken_by_commit::<B>(WaitPolicy::Block);
}

fn wait_until_woken_by_commit_adaptive<B: Backend>() {
    woken_by_commit::<B>(WaitPolicy::default());
}

/// The producer sleeps on the futex waiting for room (seen in `futex(2)` on the space
/// event's word, untimed), then a release wakes it.
fn wait_until_producer_woken_by_release<B: Backend>() {
    let (mut p, mut c) = ring::<B>(1024);
    let len = 248; // 256-byte records: 3 fit, the 4th needs one release
    let mut sent = 0;
    while try_send(&mut p, sent, len) {
        sent += 1;
    }
    assert_eq!(sent, 3);
    let (tid_tx, tid) = std::sync::mpsc::channel();
    let (done_tx, done) = std::sync::mpsc::channel();
    thread::spawn(move || {
        tid_tx.send(gettid()).unwrap();
        let claim = wait_until(
            &mut p,
            |p| (&p.store().control().space_ready.value, &Untimed),
            WaitPolicy::Block,
            None,
            |p| p.try_claim(len),
            |_| Ok(()),
        )
        .expect("an untimed wait ends with room");
        p.write(&claim, 0, &pattern(sent, len));
        p.commit(claim, len, tag_for(sent));
        let _ = done_tx.send(p);
    });
    await_futex_sleep(tid.recv().unwrap(), &c.store().control().space_ready.value.epoch);
    let epoch = c.store().control().space_ready.value.epoch.load(Ordering::Relaxed);
    assert!(try_recv(&mut c, 0, len));
    assert_ne!(c.store().control().space_ready.value.epoch.load(Ordering::Relaxed), epoch, "the release did not notify the sleeper");
    let p = done.recv_timeout(WATCHDOG).expect("watchdog: the release's wake never reached the sleeping producer");
    for seq in 1..=sent {
        assert!(try_recv(&mut c, seq, len));
    }
    assert_eq!(p.store().control().space_ready.value.sleepers(), 0);
}

/// A thread asleep on the futex without a timeout (seen in `futex(2)` on the epoch) is
/// woken by `notify`: the wake really reaches the sleeper (a lost one hangs it, and the
/// watchdog fails the test).
#[test]
fn eventcount_notify_wakes_sleeper() {
    let ev = Arc::new(EventCount::default());
    let flag = Arc::new(AtomicU32::new(0));
    let (tid_tx, tid) = std::sync::mpsc::channel();
    let (done_tx, done) = std::sync::mpsc::channel();
    {
        let (ev, flag) = (ev.clone(), flag.clone());
        thread::spawn(move || {
            tid_tx.send(gettid()).unwrap();
            let mut sleeps = 0;
            loop {
                if flag.load(Ordering::Acquire) == 1 {
                    break;
                }
                let epoch = ev.prepare_wait();
                if flag.load(Ordering::Acquire) == 1 {
                    ev.finish_wait();
                    break;
                }
                ev.sleep(&Untimed, epoch, None);
                ev.finish_wait();
                sleeps += 1;
            }
            let _ = done_tx.send(sleeps);
        });
    }
    await_futex_sleep(tid.recv().unwrap(), &ev.epoch);
    assert_eq!(ev.sleepers(), 1);
    let epoch = ev.epoch.load(Ordering::Relaxed);
    flag.store(1, Ordering::Release);
    ev.notify(&SharedFutex);
    assert_eq!(ev.epoch.load(Ordering::Relaxed), epoch.wrapping_add(1), "notify with a sleeper bumps the epoch");
    let sleeps = done.recv_timeout(WATCHDOG).expect("watchdog: notify did not wake the sleeper");
    assert!(sleeps >= 1, "the sleeper really slept");
    assert_eq!(ev.sleepers(), 0);
}

/// `notify` with nobody announced bumps nothing (and so makes no syscall).
#[test]
fn eventcount_notify_without_waiters_is_silent() {
    let ev = EventCount::default();
    for _ in 0..10 {
        ev.notify(&SharedFutex);
    }
    assert_eq!(ev.epoch.load(Ordering::Relaxed), 0);
    let e = ev.prepare_wait();
    assert_eq!(ev.sleepers(), 1);
    ev.notify(&SharedFutex);
    assert_eq!(ev.epoch.load(Ordering::Relaxed), e.wrapping_add(1));
    // The epoch moved: a sleep on the old value, even an untimed one, returns
    // without a wake.
    let ev = returns("a sleep on an old epoch", move || {
        ev.sleep(&SharedFutex, e, None);
        ev
    });
    ev.finish_wait();
    assert_eq!(ev.sleepers(), 0);
    ev.prepare_wait();
    ev.reset_waiters();
    assert_eq!(ev.sleepers(), 0);
    // The epoch wraps.
    ev.epoch.store(u32::MAX, Ordering::Relaxed);
    ev.prepare_wait();
    ev.notify(&SharedFutex);
    ev.finish_wait();
    assert_eq!(ev.epoch.load(Ordering::Relaxed), 0);
}

/// The lost-wake race, many times: two threads hand a counter back and forth through
/// two event counts, and each goes to sleep *without a timeout* as soon as its peer's
/// counter is not there yet, so every round races a notify against a sleeper on its
/// way down. One lost wake leaves both asleep forever, which the watchdog turns into a
/// failure. Covers the light/heavy fence pair (`membarrier`) that `notify` relies on in
/// production, and the RMW fallback when run with `SHMPLANE_NO_MEMBARRIER=1`.
#[test]
fn eventcount_pingpong_sleeping_never_loses_a_wake() {
    let rounds: u32 = if small() { 300 } else { 20_000 };
    struct Side {
        ev: EventCount,
        count: AtomicU32,
    }
    let sides = Arc::new([Side { ev: EventCount::default(), count: AtomicU32::new(0) }, Side {
        ev: EventCount::default(),
        count: AtomicU32::new(0),
    }]);
    // Wait, sleeping at once, until `side.count >= want`.
    fn wait_for(side: &Side, want: u32) {
        loop {
            let epoch = side.ev.prepare_wait();
            if side.count.load(Ordering::Acquire) >= want {
                side.ev.finish_wait();
                return;
            }
            side.ev.sleep(&SharedFutex, epoch, None);
            side.ev.finish_wait();
        }
    }
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    for me in 0..2usize {
        let (sides, done_tx) = (sides.clone(), done_tx.clone());
        thread::spawn(move || {
            for round in 1..=rounds {
                // Thread `me` waits on `sides[me]` and hands over through the other.
                if me == 1 {
                    wait_for(&sides[1], round);
                }
                sides[1 - me].count.store(round, Ordering::Release);
                sides[1 - me].ev.notify(&SharedFutex);
                if me == 0 {
                    wait_for(&sides[0], round);
                }
            }
            done_tx.send(me).unwrap();
        });
    }
    for _ in 0..2 {
        let done = done_rx.recv_timeout(Duration::from_secs(120));
        assert!(done.is_ok(), "watchdog: a wake was lost (both threads asleep)");
    }
    assert_eq!(sides[0].count.load(Ordering::Relaxed), rounds);
    assert_eq!(sides[1].count.load(Ordering::Relaxed), rounds);
    if !shmplane_shm::process::heavy_fence_works() {
        // Notifiers use the full fence then, and sleeps are capped at 1 ms: a lost wake
        // could not hang here, only the RMW form (checked by loom) was exercised.
        eprintln!("membarrier unavailable or disabled: exercised the full-fence fallback");
    }
}

/// Run `f` on another thread and return its result: for a call that must return by
/// itself (no wake coming). Panics if it has not returned within [`WATCHDOG`] (the
/// thread is left blocked).
fn returns<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(WATCHDOG).unwrap_or_else(|_| panic!("watchdog: {what} never returned"))
}

/// `SharedFutex::park` returns at once when the word differs (even untimed), sleeps
/// while it matches until `unpark_all` (seen asleep in `futex(2)` on the word), and
/// returns by itself after its timeout when nobody wakes it.
#[test]
fn shared_futex_park_semantics() {
    let word = Arc::new(AtomicU32::new(5));
    let w = word.clone();
    returns("an untimed park on a changed word", move || SharedFutex.park(&w, 4, None));
    let (w, (tid_tx, tid)) = (word.clone(), std::sync::mpsc::channel());
    let (done_tx, done) = std::sync::mpsc::channel();
    thread::spawn(move || {
        tid_tx.send(gettid()).unwrap();
        SharedFutex.park(&w, 5, None);
        let _ = done_tx.send(());
    });
    await_futex_sleep(tid.recv().unwrap(), &word);
    SharedFutex.unpark_all(&word);
    done.recv_timeout(WATCHDOG).expect("watchdog: unpark_all did not wake the parked thread");
    let w = word.clone();
    returns("a timed park nobody wakes", move || SharedFutex.park(&w, 5, Some(Duration::from_millis(30))));
    SharedFutex.unpark_all(&word); // nobody parked: harmless
}

/// Sleeps of waiters parked with [`CountingPark`] (one test uses it).
static COUNTED_SLEEPS: AtomicU32 = AtomicU32::new(0);

/// Counts sleeps in [`COUNTED_SLEEPS`], sleeping on the futex with the timeout given.
struct CountingPark;

impl Park for CountingPark {
    fn park(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        COUNTED_SLEEPS.fetch_add(1, Ordering::Relaxed);
        SharedFutex.park(word, expected, timeout);
    }

    fn unpark_all(&self, word: &AtomicU32) {
        SharedFutex.unpark_all(word);
    }
}

#[test]
fn wait_until_times_out_on_empty_ring() {
    for policy in [WaitPolicy::Block, WaitPolicy::default(), WaitPolicy::Spin] {
        let (_p, mut c) = ring::<HeapStore>(4096);
        let before = COUNTED_SLEEPS.load(Ordering::Relaxed);
        let mut checks = 0;
        let got = wait_until(
            &mut c,
            |c| (&c.store().control().data_ready.value, &CountingPark),
            policy,
            Some(Instant::now() + Duration::from_millis(120)),
            |c| c.try_peek(),
            |_| {
                checks += 1;
                Ok(())
            },
        );
        assert!(matches!(got, Err(WaitError::TimedOut)), "{policy:?}: {got:?}");
        // A dead peer is the better answer than a timeout: the check runs at the end.
        assert!(checks >= 1, "{policy:?}: no liveness check before the timeout");
        // Spin never sleeps; the others sleep on the futex until the deadline.
        let sleeps = COUNTED_SLEEPS.load(Ordering::Relaxed) - before;
        assert_eq!(sleeps == 0, policy == WaitPolicy::Spin, "{policy:?}: {sleeps} sleeps");
        assert_eq!(c.store().control().data_ready.value.sleepers(), 0);
    }
}

/// The per-slice check runs while waiting and its error ends the wait (how a dead peer
/// is reported).
#[test]
fn wait_until_per_slice_error_ends_wait() {
    for policy in [WaitPolicy::Block, WaitPolicy::default(), WaitPolicy::Spin] {
        let (_p, mut c) = ring::<SegStore>(4096);
        let start = Instant::now();
        let mut checks = 0;
        let got = wait_until(
            &mut c,
            |c| (&c.store().control().data_ready.value, c.store().park()),
            policy,
            Some(start + Duration::from_secs(10)),
            |c| c.try_peek().map_err(|e| e.to_string()),
            |_| {
                checks += 1;
                if checks >= 3 {
                    Err("peer dead".to_owned())
                } else {
                    Ok(())
                }
            },
        );
        assert_eq!(got, Err(WaitError::Failed("peer dead".to_owned())), "{policy:?}");
        // Ended by the check's error, not by the deadline (that would be TimedOut).
        assert_eq!(checks, 3);
        assert_eq!(c.store().control().data_ready.value.sleepers(), 0);
    }
}

// ---------------------------------------------------------------------------------------
// Panics on misuse
// ---------------------------------------------------------------------------------------

#[test]
#[should_panic(expected = "reserved tag")]
fn commit_with_padding_tag_panics() {
    let (mut p, _c) = ring::<HeapStore>(4096);
    let claim = p.try_claim(8).unwrap().unwrap();
    p.commit(claim, 8, PADDING_TAG);
}

#[test]
#[should_panic(expected = "beyond the claim")]
fn commit_longer_than_claim_panics() {
    let (mut p, _c) = ring::<HeapStore>(4096);
    let claim = p.try_claim(8).unwrap().unwrap();
    p.commit(claim, 9, 0);
}

#[test]
#[should_panic(expected = "write past the claim")]
fn write_past_claim_panics() {
    let (mut p, _c) = ring::<HeapStore>(4096);
    let claim = p.try_claim(8).unwrap().unwrap();
    p.write(&claim, 4, &[0; 5]);
}

#[test]
#[should_panic(expected = "stale claim")]
fn commit_stale_claim_panics() {
    let (mut p, _c) = ring::<HeapStore>(4096);
    let first = p.try_claim(8).unwrap().unwrap();
    let second = p.try_claim(8).unwrap().unwrap();
    p.commit(first, 8, 0);
    p.commit(second, 8, 0);
}

#[test]
#[should_panic(expected = "read past the record")]
fn read_past_record_panics() {
    let (mut p, mut c) = ring::<HeapStore>(4096);
    assert!(try_send(&mut p, 0, 8));
    let r = c.try_peek().unwrap().unwrap();
    let mut buf = [0u8; 2];
    c.read(&r, 7, &mut buf);
}

#[test]
#[should_panic(expected = "release out of order")]
fn release_twice_panics() {
    let (mut p, mut c) = ring::<HeapStore>(4096);
    assert!(try_send(&mut p, 0, 8));
    let r1 = c.try_peek().unwrap().unwrap();
    let r2 = c.try_peek().unwrap().unwrap();
    c.release(r1);
    c.release(r2);
}

// ---------------------------------------------------------------------------------------
// Regressions: bugs these tests found, fixed
// ---------------------------------------------------------------------------------------

/// Regression (shm/src/ring.rs, `Producer::attach`, fixed): a producer that dies after publishing a
/// record's header but before storing `ctl.tail` leaves `tail` one record behind. If the
/// consumer has already consumed and released that record (it can: the header store is
/// the publish), `head > tail` and every later `Producer::attach` fails with `Corrupt`
/// ("stored producer position"): the channel can never get a sender again. `attach`
/// steps over the unrecorded record *before* comparing with `head`.
#[test]
fn restarted_producer_after_consumer_consumed_unrecorded_commit() {
    let (mut p, mut c) = ring::<HeapStore>(4096);
    assert!(try_send(&mut p, 0, 10));
    let old_tail = tail(p.store());
    assert!(try_send(&mut p, 1, 300));
    let store = p.store().clone();
    drop(p);
    store.control().tail.value.store(old_tail, Ordering::Release);
    // The consumer is fast: it takes both records before the producer restarts.
    assert!(try_recv(&mut c, 0, 10));
    assert!(try_recv(&mut c, 1, 300));
    let mut p2 = Producer::attach(store).expect("a restarted producer attaches");
    assert!(try_send(&mut p2, 2, 20));
    assert!(try_recv(&mut c, 2, 20));
}

/// Found by `fuzz/fuzz_targets/mailbox.rs`: `data_ready` (a look without a role: a
/// producer joining a mailbox lane, `poll`) indexed the header at a consumer position
/// that no consumer leaves (not 8-aligned) and panicked. It says "look", and the
/// consumer that looks reports the ring corrupt.
fn data_ready_over_a_misaligned_consumer_position<B: Backend>() {
    let store = B::new(4096);
    store.control().head.value.position.store(4, Ordering::Release);
    assert!(shmplane_shm::ring::data_ready(&store));
    assert!(matches!(Consumer::attach(store), Err(RingError::Corrupt { .. })));
}
