//! Writes the seed inputs of the `slot`, `mailbox` and `rpc` fuzz targets that come
//! from valid segments (the `regression-*` seeds are crashes found, kept as found):
//!
//! ```text
//! cd fuzz && cargo run --release --example seeds
//! ```
//!
//! - `slot`: the shared words of real slots (the production seqlock over a heap slot
//!   segment) after writes, and after a writer stopped in either phase, in the target's
//!   input format, followed by a few operations.
//! - `mailbox`: the differences between a fresh mailbox segment and the same segment
//!   after real producers used it (messages queued, a chunked one cut part-way; a
//!   producer that closed; producers that are gone), as the target's patches.
//! - `rpc`: operation sequences of a well-behaved client: calls answered small and
//!   large, a retry of an answered call, a resend of a lost large reply.
use shmplane::Mailbox;
use shmplane_shm::header::SegmentKind;
use shmplane_shm::kind::Params;
use shmplane_shm::layout::ROLE_TABLE_OFFSET;
use shmplane_shm::segment::Segment;
use shmplane_shm::seqlock::{self, CrashPoint, SlotStore};
use shmplane_shm::store::SegmentSlot;
use shmplane_shm::sync::Ordering;
use std::path::Path;

fn save(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds").join(target);
    std::fs::create_dir_all(&dir).expect("seed dir");
    std::fs::write(dir.join(name), bytes).expect("seed");
    println!("seeds/{target}/{name}: {} bytes", bytes.len());
}

/// A slot of `words` words in the slot target's format: its shared words, then `ops`.
fn slot_input(slot: &SegmentSlot, words: usize, ops: &[u8]) -> Vec<u8> {
    // ORDERING: Relaxed: one thread, after its own writes.
    let r = Ordering::Relaxed;
    let w = &slot.control().writer.value;
    let mut out = vec![(words - 1) as u8, 1];
    out.extend(slot.seq().load(r).to_le_bytes());
    out.extend(w.done.load(r).to_le_bytes());
    out.extend(w.owner.load(r).to_le_bytes());
    let ev = &slot.control().updated.value;
    out.push(ev.epoch.load(r) as u8);
    let waiters = ev.waiters.load(r);
    out.extend([(waiters >> 24) as u8, waiters as u8]);
    for copy in 0..2 {
        for w in slot.copy_lines(copy) {
            out.extend(w.load(r).to_le_bytes());
        }
    }
    out.extend(ops);
    out
}

fn slots() {
    // Operations: (first, len, op) triples: a read, a locked read, an element read, a
    // write, an update, a repair.
    let ops = [0, 0, 0, 0, 1, 1, 0, 0, 3, 0, 0, 4, 0, 1, 5, 0, 0, 6];
    for words in [1, 3, 5, 9, 16] {
        let new = || {
            let slot = SegmentSlot::new(Segment::heap(SegmentKind::Slot, Params { p0: (words * 8) as u64, p1: 0 }).expect("slot"));
            // As a slot segment is made: version 1, copy 1's canaries.
            seqlock::init(&slot, &vec![0; words]);
            slot
        };
        let value = |v: u64| vec![v; words];
        let slot = new();
        seqlock::write(&slot, &value(1), 77, |_| true);
        seqlock::write(&slot, &value(2), 77, |_| true);
        save("slot", &format!("written-twice-{words}w"), &slot_input(&slot, words, &ops));
        for (crash, tag) in [
            (CrashPoint::InCopy0(words / 2), "phase1"),
            (CrashPoint::InRelease(words / 14), "release0"),
            (CrashPoint::InCopy1(words / 2), "phase2"),
        ] {
            let slot = new();
            seqlock::write(&slot, &value(1), 77, |_| true);
            assert!(seqlock::write_until(&slot, &value(2), 88, |_| true, Some(crash)).is_none());
            save("slot", &format!("writer-died-in-{tag}-{words}w"), &slot_input(&slot, words, &ops));
        }
    }
}

/// The mailbox target's patches turning `before` into `after` (runs of changed bytes,
/// at most 255 each, offsets relative to the role table).
fn patches(before: &[u8], after: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = ROLE_TABLE_OFFSET;
    while i < after.len() {
        if before[i] == after[i] {
            i += 1;
            continue;
        }
        let start = i;
        // A run: changed bytes, bridging gaps of up to 8 equal ones.
        let mut end = i + 1;
        while end < after.len() && end - start < 255 && (end..(end + 8).min(after.len())).any(|j| before[j] != after[j]) {
            end += 1;
        }
        let off = (start - ROLE_TABLE_OFFSET) as u16;
        out.extend(off.to_le_bytes());
        out.push((end - start) as u8);
        out.extend(&after[start..end]);
        i = end;
    }
    out
}

fn image(segment: &Segment) -> Vec<u8> {
    let region = segment.region();
    // SAFETY: the mapping is `len` bytes; the harness alone uses the segment now.
    unsafe { std::slice::from_raw_parts(region.as_ptr(), region.len()) }.to_vec()
}

fn mailboxes() {
    // Every operation of the target, a few times.
    let ops: Vec<u8> = vec![0, 2, 2, 1, 3, 4, 5, 7, 2, 6, 8, 2];
    type Case = (&'static str, fn(&mut Mailbox));
    let cases: [Case; 3] = [
        ("queued-small-then-chunked-cut", |mb| {
            let mut tx = mb.sender().expect("sender");
            tx.send(b"first").expect("send");
            // Larger than the lane: its first chunks go, then nobody drains: cut.
            assert!(tx.send_timeout(&[7u8; 6000], std::time::Duration::from_millis(5)).is_err());
            std::mem::forget(tx); // its process dies: nothing more of it runs
        }),
        ("producer-closed-after-sending", |mb| {
            let mut tx = mb.sender().expect("sender");
            tx.send(b"last words").expect("send");
            tx.close();
        }),
        ("two-producers-one-received", |mb| {
            let mut a = mb.sender().expect("sender");
            let mut b = mb.sender().expect("sender");
            a.send(b"from a").expect("send");
            b.send(b"from b").expect("send");
            assert!(mb.try_recv().is_ok());
            std::mem::forget((a, b));
        }),
    ];
    for (i, (tag, run)) in cases.into_iter().enumerate() {
        let name = format!("fuzz-seeds-{}-{i}", std::process::id());
        let mut mailbox = Mailbox::create(&name, 4096, 2).expect("mailbox");
        let probe = Segment::open(&name, SegmentKind::Mailbox).expect("open");
        let before = image(&probe);
        run(&mut mailbox);
        let after = image(&probe);
        let mut input = vec![ops.len() as u8];
        input.extend(&ops);
        input.extend(patches(&before, &after));
        save("mailbox", tag, &input);
        drop(mailbox);
        let _ = std::fs::remove_file(shmplane_shm::region::shm_path(&name));
        shmplane_shm::bell::remove(&name);
    }
}

fn rpcs() {
    // Operations are byte triples (see the target): send = (0, id/seq byte, flags and
    // size), serve = (4, ..), serve and reply = (5, 1, ..).
    // (A large request does not fit a lane without waiting: all sends here are small;
    // odd calls get the large replies, which the server keeps for a resend.)
    let send = |id: u8, seq: u8, flags: u8| [0u8, (seq << 2) | id, flags];
    let serve_and_reply = [5u8, 1, 0];
    let mut calls = Vec::new();
    for seq in 1..=3 {
        calls.extend(send(0, seq, 0));
        calls.extend(serve_and_reply);
    }
    save("rpc", "three-calls-answered", &calls);
    let mut retry = Vec::new();
    retry.extend(send(1, 2, 0));
    retry.extend(serve_and_reply);
    retry.extend(send(1, 2, 0));
    retry.extend([4u8, 0, 0]);
    save("rpc", "retry-of-an-answered-call", &retry);
    let mut resend = Vec::new();
    resend.extend(send(0, 1, 0));
    resend.extend(serve_and_reply);
    resend.extend(send(0, 1, 4));
    resend.extend([4u8, 0, 0]);
    save("rpc", "resend-of-a-large-reply", &resend);
}

fn main() {
    slots();
    mailboxes();
    rpcs();
}
