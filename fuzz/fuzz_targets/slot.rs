//! A slot segment (`shmplane_shm::seqlock` over the production `SegmentSlot` layout)
//! whose shared words a hostile or broken peer wrote: the writer's sequence, the
//! completion mark, the writer-owner word, the `updated` event count and both copies
//! of the value, line versions included. Readers, writers, element updates and the repair of an abandoned
//! write must never panic, read outside the value or hang: a forged owner is waited
//! for only while it lives, and the harness's liveness says a forged owner lives for
//! a bounded number of looks (a bounded wait), then dies. After a write or update
//! completes, the slot must be consistent (lock free, `done == seq`, even) and a read
//! must return what was written. Lines a peer zeroed (a version of 0 in copy 0, copy 1
//! without its canary) read as `seqlock::ZEROED`, never as data.
//!
//! Input: byte 0 picks the value's size (1 to 17 words: one to three lines of seven
//! words per copy), byte 1 how many looks a forged owner lives; then the shared image
//! (sequence, completion mark, owner, event count words, copy 0's lines, copy 1's
//! lines: each line's version and its seven words), then operations.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shmplane_shm::header::SegmentKind;
use shmplane_shm::kind::Params;
use shmplane_shm::segment::Segment;
use shmplane_shm::seqlock::{self, CrashPoint, SlotStore};
use shmplane_shm::store::SegmentSlot;
use shmplane_shm::sync::Ordering;
use std::cell::Cell;

/// Writer ids the harness's own writers use: `FIRST_ID + op index` (never 0).
const FIRST_ID: u64 = 1;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }
    fn word(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.byte();
        }
        u64::from_le_bytes(b)
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let words = 1 + usize::from(input.byte() % 17);
    let forged_lives = u32::from(input.byte() % 4);
    let segment = Segment::heap(SegmentKind::Slot, Params { p0: (words * 8) as u64, p1: 0 }).expect("a valid slot");
    let slot = SegmentSlot::new(segment);
    // ORDERING: Relaxed: one thread; the image is in place before any operation.
    let r = Ordering::Relaxed;
    // The shared image, as a peer left it.
    slot.seq().store(input.word(), r);
    let w = &slot.control().writer.value;
    w.done.store(input.word(), r);
    w.owner.store(input.word(), r);
    let ev = &slot.control().updated.value;
    ev.epoch.store(input.byte().into(), r);
    ev.waiters.store(u32::from(input.byte()) << 24 | u32::from(input.byte()), r);
    for copy in 0..2 {
        for (k, w) in slot.copy_lines(copy).iter().enumerate() {
            let x = input.word();
            // Copy 1's line markers: mostly the canary every slot has (an even word), so
            // that the reads of copy 1 behind it are reached; else what a peer forged.
            let canary = copy == 1 && k % (shmplane_shm::layout::SLOT_LINE_WORDS + 1) == shmplane_shm::layout::SLOT_MARKER_WORD && x % 2 == 0;
            w.store(if canary { shmplane_shm::layout::SLOT_CANARY } else { x }, r);
        }
    }
    // The real decoder of an owner id (pid, start time bits, thread): any id decodes.
    let _ = shmplane_shm::liveness::writer_alive(w.owner.load(r));

    // Liveness as the harness sees it: its own live writer is alive; ids of its writers
    // that stopped mid-write are dead; any other (forged) id lives for `forged_lives`
    // looks in all, then is dead.
    let crashed = Cell::new(Vec::<u64>::new());
    let looks = Cell::new(0u32);
    let me = Cell::new(FIRST_ID);
    let alive = |id: u64| {
        if id == me.get() {
            return true;
        }
        let dead = crashed.take();
        let known_dead = dead.contains(&id);
        crashed.set(dead);
        if known_dead || (FIRST_ID..FIRST_ID + 256).contains(&id) {
            return false;
        }
        looks.set(looks.get() + 1);
        looks.get() <= forged_lives
    };

    let mut buf = vec![0u64; words];
    let mut bytes = vec![0u8; words * 8];
    for op in 0..64u64 {
        if input.0.is_empty() {
            break;
        }
        me.set(FIRST_ID + op);
        let first = usize::from(input.byte()) % words;
        let len = 1 + usize::from(input.byte()) % (words - first);
        match input.byte() % 9 {
            0 => {
                let _ = seqlock::try_read(&slot, &mut buf);
            }
            1 => {
                let _ = seqlock::read_words_or_lock(&slot, first, &mut buf[..len], 2, || me.get(), alive);
            }
            2 => {
                let _ = seqlock::version(&slot);
            }
            3 => {
                let _ = seqlock::read_committed_word(&slot, first);
            }
            4 => {
                let value: Vec<u64> = (0..words as u64).map(|i| op << 8 | i).collect();
                let v = seqlock::write(&slot, &value, me.get(), alive);
                assert_consistent(&slot, v);
                if v == 0 {
                    // A forged sequence of 2^64 - 2 wrapped the write's release to 0:
                    // line versions of 0 read as zeroed (never as data).
                    assert_eq!(seqlock::try_read(&slot, &mut buf), Some(seqlock::ZEROED), "a wrapped write");
                } else {
                    assert_eq!(seqlock::try_read(&slot, &mut buf), Some(v), "a read right after a write");
                    assert_eq!(buf, value, "a read returns what was written");
                }
            }
            5 => {
                let mut part = vec![0u64; len];
                let v = seqlock::update(&slot, first, &mut part, me.get(), alive, |p| {
                    for x in p.iter_mut() {
                        *x = x.wrapping_add(1);
                    }
                });
                assert_consistent(&slot, v);
            }
            6 => {
                if seqlock::repair_abandoned(&slot, || me.get(), alive) {
                    assert_eq!(w.done.load(r), slot.seq().load(r), "repaired");
                }
            }
            7 => {
                let _ = seqlock::read_bytes_or_lock(&slot, &mut bytes[..len * 8 - 3], 2, || me.get(), alive);
            }
            _ => {
                // A writer of ours killed mid-write: its id is dead from now on.
                let crash = match input.byte() % 3 {
                    0 => CrashPoint::InCopy0(first),
                    1 => CrashPoint::InCopy1(first),
                    _ => CrashPoint::InRelease(first / 7),
                };
                let value = vec![op; words];
                if seqlock::write_until(&slot, &value, me.get(), alive, Some(crash)).is_none() {
                    let mut dead = crashed.take();
                    dead.push(me.get());
                    crashed.set(dead);
                }
            }
        }
    }
});

/// After a completed write of version `v`: lock free, no write under way, even sequence.
fn assert_consistent(slot: &SegmentSlot, v: u64) {
    let w = &slot.control().writer.value;
    // ORDERING: Relaxed: one thread (the write above is this thread's).
    let seq = slot.seq().load(Ordering::Relaxed);
    assert_eq!(w.owner.load(Ordering::Relaxed), 0, "lock released");
    assert_eq!(w.done.load(Ordering::Relaxed), seq, "write complete");
    assert_eq!(seq % 2, 0, "readers on a complete copy");
    assert_eq!(seq / 2, v, "version of the write");
}
