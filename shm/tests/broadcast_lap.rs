//! A lossy subscriber whose head record (a continuation of the message it is part-way
//! through) was reclaimed must not be moved on silently (found by review): the lap
//! passes no message start (`missed == 0`), which between messages means "only padding
//! was reclaimed", but part-way through a message means its rest was lost. The caller
//! (the receiver's chunk loop) says which with `Consumer::set_mid_message`.
use shmplane_shm::header::SegmentKind;
use shmplane_shm::kind::Params;
use shmplane_shm::layout::BROADCAST_LOSSY;
use shmplane_shm::ring::{Consumer, Producer, RingError, CONTINUATION_TAG};
use shmplane_shm::segment::Segment;
use shmplane_shm::store::SegmentRing;

#[test]
fn a_lapped_continuation_is_reported_not_skipped() {
    let name = format!("test-lapskip-{}", std::process::id());
    const CAP: usize = 1 << 16;
    let seg = Segment::create(&name, SegmentKind::Broadcast, Params { p0: CAP as u64, p1: 4 | BROADCAST_LOSSY }).unwrap();
    let sub_seg = seg.reopen().unwrap();
    let mut p = Producer::attach(SegmentRing::broadcast(seg, None)).unwrap();
    let store = SegmentRing::broadcast(sub_seg, Some(0));
    store.join_subscriber();
    let mut c = Consumer::attach(store).unwrap();
    let chunk = CAP / 8 - 8; // records of CAP / 8 bytes: A (first), B, C (continuations)
    let send = |p: &mut Producer<SegmentRing>, len: usize, tag: u32| {
        let claim = p.try_claim(len).unwrap().expect("lossy: never full");
        p.write(&claim, 0, &vec![0u8; len]); // zero-filled: no stale header survives
        p.commit(claim, len, tag);
    };
    send(&mut p, chunk, 1 | 0x100); // A at 0: the message's first record
    send(&mut p, chunk, CONTINUATION_TAG); // B at CAP/8
    send(&mut p, chunk, CONTINUATION_TAG); // C at CAP/4
    let a = c.try_peek().unwrap().unwrap();
    c.release_read(a).unwrap(); // head = CAP/8 (B), A counted as received
    c.set_mid_message(true); // as the receiver does while it reads the rest
    // Small zero-filled records over B's header (the publisher reclaims A and B only).
    while p.position() <= (CAP + CAP / 8 + 8) as u64 {
        send(&mut p, 1000, 1);
    }
    let oldest = shmplane_shm::broadcast::oldest_position(&c.store().broadcast_control().unwrap().oldest.value);
    assert_eq!(oldest, (CAP / 4) as u64, "oldest is C");
    // Either the peek reports the lap, or the record it offers (B's stale header, or C
    // reached by a silent skip) fails the check after reading.
    match c.try_peek() {
        Err(RingError::Lagged { .. }) => {}
        Ok(Some(r)) => {
            let (len, tag) = (r.len(), r.tag());
            assert!(
                matches!(c.release_read(r), Err(RingError::Lagged { .. })),
                "a lapped record of {len} bytes tagged {tag:#x} was accepted"
            );
        }
        other => panic!("{other:?}"),
    }
    c.set_mid_message(false);
    drop((p, c));
    let _ = std::fs::remove_file(format!("/dev/shm/shmplane.{name}"));
    shmplane_shm::bell::remove(&name);
}

/// A lossy publisher that died between storing its position and updating the newest
/// pair left the pair one record behind: the next publisher brings it up to date when
/// it attaches (found by review), so joiners start at the tail with an exact count.
#[test]
fn a_new_lossy_publisher_repairs_a_stale_newest_pair() {
    let name = format!("test-newest-{}", std::process::id());
    const CAP: usize = 1 << 16;
    let seg = Segment::create(&name, SegmentKind::Broadcast, Params { p0: CAP as u64, p1: 4 | BROADCAST_LOSSY }).unwrap();
    let again = seg.reopen().unwrap();
    let mut p = Producer::attach(SegmentRing::broadcast(seg, None)).unwrap();
    for tag in [1, 1, 0x101, CONTINUATION_TAG, 1] {
        let claim = p.try_claim(100).unwrap().expect("lossy: never full");
        p.commit(claim, 100, tag);
    }
    let tail = p.position();
    let newest = &p.store().broadcast_control().unwrap().newest.value;
    assert_eq!(shmplane_shm::broadcast::read_pair(newest), (tail, 4));
    // As if the publisher died before its last `published`: one record behind.
    shmplane_shm::broadcast::write_pair(newest, tail - 112, 3);
    drop(p);
    let p = Producer::attach(SegmentRing::broadcast(again, None)).unwrap();
    let newest = &p.store().broadcast_control().unwrap().newest.value;
    assert_eq!(shmplane_shm::broadcast::read_pair(newest), (tail, 4));
    drop(p);
    let _ = std::fs::remove_file(format!("/dev/shm/shmplane.{name}"));
    shmplane_shm::bell::remove(&name);
}
