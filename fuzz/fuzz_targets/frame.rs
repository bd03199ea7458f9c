//! The message-format decoders (`shmplane::frame`) over arbitrary bytes: a record's
//! prefix as a peer may have written it. They must return an error, never panic or
//! read out of bounds, and any head they accept must describe parts inside the message.
//! Also RPC's envelope (tag flag 0x400) and its error replies (`kind\0message\0trace`),
//! and the numbers payload (`Numbers::parse`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use shmplane::frame::{parse_head, parse_multipart, ArrayMeta, Numbers, MAX_PREFIX};

fuzz_target!(|data: &[u8]| {
    if data.len() < 12 {
        return;
    }
    let tag = u32::from_le_bytes(data[0..4].try_into().unwrap());
    // The record's length as the header claims it: at least the prefix we have.
    let claimed = u64::from_le_bytes(data[4..12].try_into().unwrap()) as usize;
    let body = &data[12..];
    let prefix = &body[..body.len().min(MAX_PREFIX)];
    let len = claimed.max(prefix.len());
    if let Ok(head) = parse_head(tag, len, prefix) {
        for i in 0..head.part_count() {
            let _ = head.part_len(i);
        }
        let _ = head.total();
        let _ = head.array();
        if let Some(env) = head.envelope() {
            let _ = shmplane::rpc::Envelope::decode(env);
        }
    }
    let _ = shmplane::rpc::decode_error(body);
    if let Ok((_, _, numbers)) = Numbers::parse(body) {
        assert!(numbers.len() % 8 == 0 && numbers.len() + 8 == body.len());
    }
    let _ = parse_multipart(prefix, len, claimed);
    let _ = ArrayMeta::decode(body);
});
