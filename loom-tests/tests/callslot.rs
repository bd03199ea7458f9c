//! loom models of an RPC call slot (`shmplane_shm::callslot`): a client posts a request
//! in its lane's slot, marks the lane pending and notifies the mailbox's event count;
//! the server (the mailbox's consumer) finds the bit, takes the request with a CAS,
//! and writes its reply over it; the client waits for the reply on its reply
//! channel's event count, which the server notifies. A lost pending bit or a lost
//! wake-up is a loom deadlock; a torn request or reply fails an assertion. Also the
//! race between a client withdrawing its request and the server taking it (exactly
//! one wins, and a withdrawn request never runs), and a client that dies part-way
//! through a post. Run by `ci/loom.sh` (LOOM_MAX_PREEMPTIONS=2).
#![cfg(shmplane_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{block_on, FutexModel};
use shmplane_shm::callslot::{self, Poll, Taken};
use shmplane_shm::layout::{CallSlot, EventCount, MailboxControl, CALL_SLOT_BYTES};
use shmplane_shm::mailbox::{clear_pending, mark_pending, pending_word};

struct Shared {
    slot: CallSlot,
    mailbox: MailboxControl,
    /// The client's reply channel's event count (where it sleeps for its reply).
    replies: EventCount,
    park: FutexModel,
}

fn shared() -> Arc<Shared> {
    Arc::new(Shared { slot: CallSlot::default(), mailbox: MailboxControl::default(), replies: EventCount::default(), park: FutexModel::default() })
}

/// Request and reply records of call `seq`: the envelope (call `seq` of client 7), then
/// 8 bytes of payload, every byte `seq` (request) or `seq | 0x80` (reply), so that a
/// torn copy shows.
fn record(seq: u64, reply: bool) -> [u8; 24] {
    let mut r = [seq as u8 | if reply { 0x80 } else { 0 }; 24];
    r[..8].copy_from_slice(&seq.to_le_bytes());
    r[8..12].copy_from_slice(&7u32.to_le_bytes());
    r[12..16].copy_from_slice(&0u32.to_le_bytes());
    r
}

/// What the client does to call (`RpcClient::post`): post, mark pending while still
/// posted, notify the mailbox.
fn post(s: &Shared, seq: u64) {
    assert!(callslot::withdraw(&s.slot), "the slot is the client's");
    if !callslot::post(&s.slot, seq, 1, &record(seq, false)) {
        mark_pending(&s.mailbox, 0, || callslot::posted(&s.slot));
        s.mailbox.data_ready.value.notify(&s.park);
    }
}

/// The server's look (`Mailbox::find_ready` with call slots): the lane's bit, then its
/// slot; a lane found empty has its bit cleared and is looked at again.
fn find(s: &Shared) -> Option<Taken> {
    if pending_word(&s.mailbox, 0) & 1 == 0 {
        return None;
    }
    if let Some(t) = take_whole(s) {
        return Some(t);
    }
    if clear_pending(&s.mailbox, 0, || callslot::posted(&s.slot)) {
        return find(s);
    }
    None
}

/// The server takes the posted request, if any, and checks that it came whole.
fn take_whole(s: &Shared) -> Option<Taken> {
    let mut buf = [0u8; CALL_SLOT_BYTES];
    let t = callslot::take(&s.slot, &mut buf)?.expect("a valid length");
    assert_eq!(&buf[..t.len], &record(t.seq, false), "torn request");
    Some(t)
}

/// The server: take `calls` requests in turn and reply to each in the slot, waking
/// the client.
fn serve(s: &Arc<Shared>, calls: u64) {
    let mut ctx = s.clone();
    for _ in 0..calls {
        let t = block_on(&mut ctx, |s| (&s.mailbox.data_ready.value, &s.park), |s| find(s));
        callslot::complete(&ctx.slot, t.seq, Some((2, &record(t.seq, true))), false);
        ctx.replies.notify(&ctx.park);
    }
}

/// The client's wait for the reply of call `seq`.
fn await_reply(s: &mut Arc<Shared>, seq: u64) {
    let got = block_on(s, |s| (&s.replies, &s.park), |s| {
        let mut buf = [0u8; CALL_SLOT_BYTES];
        match callslot::reply(&s.slot, seq, &mut buf) {
            Poll::Pending => None,
            Poll::Reply { tag, len } => Some((tag, buf[..len].to_vec())),
            Poll::Elsewhere => panic!("call {seq}: the reply went elsewhere"),
        }
    });
    assert_eq!(got, (2, record(seq, true).to_vec()), "torn reply");
}

/// Two calls in a row: each request reaches the server whole, each reply the client,
/// with both sides sleeping on their event counts; no wake-up or pending bit is lost
/// (the second post races the server clearing the bit the first left).
#[test]
fn two_calls_through_the_slot() {
    loom::model(|| calls_to(serve, 2));
}

/// A client making `calls` calls in a row to a server thread running `server`.
fn calls_to(server: fn(&Arc<Shared>, u64), calls: u64) {
    let s = shared();
    let t = {
        let s = s.clone();
        thread::spawn(move || server(&s, calls))
    };
    let mut c = s.clone();
    for seq in 1..=calls {
        post(&c, seq);
        await_reply(&mut c, seq);
    }
    t.join().unwrap();
    assert!(callslot::writable(&s.slot));
}

/// A server that polls the slot (`Mailbox`'s polled set, `callslot::POLLED`): after
/// each call it marks the slot polled and looks at it directly once (its busy-poll
/// phase, one look in the model); finding nothing, it takes the flag back with
/// `unpoll` (announcing a request posted meanwhile with the lane's pending bit) and
/// sleeps as `serve` does. The client's posts race the unpoll: a post that saw the
/// flag skipped the bit and the notify, so a lost request is a loom deadlock.
fn serve_polling(s: &Arc<Shared>, calls: u64) {
    let mut ctx = s.clone();
    let mut polled = false;
    for _ in 0..calls {
        let direct = if polled { take_whole(&ctx) } else { None };
        let t = match direct {
            Some(t) => t,
            None => match find(&ctx) {
                Some(t) => t,
                None => {
                    if polled && callslot::unpoll(&ctx.slot) {
                        mark_pending(&ctx.mailbox, 0, || true);
                    }
                    block_on(&mut ctx, |s| (&s.mailbox.data_ready.value, &s.park), |s| find(s))
                }
            },
        };
        callslot::complete(&ctx.slot, t.seq, Some((2, &record(t.seq, true))), true);
        polled = true;
        ctx.replies.notify(&ctx.park);
    }
}

/// Calls to a server that polls the slot between them: each request is found (through
/// the polled slot or, after the server unpolled it, its pending bit), each reply
/// comes; a post racing the unpoll loses nothing.
#[test]
fn calls_to_a_polling_server() {
    loom::model(|| calls_to(serve_polling, 3));
}

/// A client withdrawing its request races the server taking it: exactly one wins. If
/// the server took it, the call runs and its reply comes; if the client withdrew it,
/// it never runs, and the client's next call goes through the slot.
#[test]
fn withdraw_races_take() {
    loom::model(|| {
        let s = shared();
        post(&s, 1);
        let server = {
            let s = s.clone();
            thread::spawn(move || {
                let mut buf = [0u8; CALL_SLOT_BYTES];
                match callslot::take(&s.slot, &mut buf) {
                    Some(t) => {
                        let t = t.unwrap();
                        assert_eq!(&buf[..t.len], &record(1, false));
                        callslot::complete(&s.slot, t.seq, Some((2, &record(1, true))), false);
                        true
                    }
                    None => false,
                }
            })
        };
        let withdrawn = callslot::withdraw(&s.slot);
        let ran = server.join().unwrap();
        // The client either withdrew it (it did not run) or found it taken (then the
        // server completes it and the slot is the client's again).
        assert!(withdrawn != ran || (withdrawn && ran && callslot::writable(&s.slot)), "withdrawn {withdrawn}, ran {ran}");
        if !withdrawn {
            let mut buf = [0u8; CALL_SLOT_BYTES];
            assert_eq!(callslot::reply(&s.slot, 1, &mut buf), Poll::Reply { tag: 2, len: 24 });
        }
        assert!(callslot::writable(&s.slot));
    });
}

/// A client that dies part-way through a post (the record written, `REQUEST` never
/// stored) leaves nothing for the server; the next client's call goes through.
#[test]
fn a_post_cut_short_leaves_nothing() {
    loom::model(|| {
        let s = shared();
        // The dead client's words, without the state that would publish them.
        let dead = {
            let s = s.clone();
            thread::spawn(move || {
                s.slot.meta.store(callslot::meta(9, 0, 1, 8), shmplane_shm::sync::Ordering::Relaxed);
                s.slot.data[0].store(u64::MAX, shmplane_shm::sync::Ordering::Relaxed);
            })
        };
        dead.join().unwrap();
        let server = {
            let s = s.clone();
            thread::spawn(move || serve(&s, 1))
        };
        let mut c = s.clone();
        post(&c, 1);
        await_reply(&mut c, 1);
        server.join().unwrap();
    });
}
