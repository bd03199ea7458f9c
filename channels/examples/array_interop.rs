//! Rust side of the cross-language array test (`pybindings/tests/test_interop.py`),
//! and a short example of the array API.
//!
//! - `send NAME`: open channel `NAME` as its sender and send a `(1000, 3)` `f64` array
//!   (element `[i, j]` is `i * 3 + j`), a Fortran-order `(2, 3)` `i32` array, and the
//!   bytes `b"done"`.
//! - `recv NAME`: open channel `NAME` as its receiver and print one line per message
//!   until `b"done"`: `descr order shape checksum`, where the checksum is FNV-1a of the
//!   data bytes in memory order (Python computes the same over `arr.tobytes(order)`).
//!
//! Run: `cargo run -p shmplane --example array_interop -- send|recv NAME`

use shmplane::frame::{ArrayMeta, Order};
use shmplane::{Frame, Receiver, Sender, Wait};
use std::time::Duration;

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

fn main() -> Result<(), shmplane::Error> {
    let mut args = std::env::args().skip(1);
    let (mode, name) = (args.next().expect("send or recv"), args.next().expect("channel name"));
    match mode.as_str() {
        "send" => {
            let mut tx = Sender::open(&name)?;
            let xyz: Vec<f64> = (0..3000).map(f64::from).collect();
            tx.send_array_of(&[1000, 3], &xyz)?;
            // Column-major data: [[1, 2, 3], [4, 5, 6]] stored as 1, 4, 2, 5, 3, 6.
            let f: Vec<i32> = vec![1, 4, 2, 5, 3, 6];
            let meta = ArrayMeta::new(<i32 as shmplane::frame::Element>::DESCR, &[2, 3], Order::F)
                .map_err(shmplane::Error::InvalidArgument)?;
            tx.send_array(&meta, bytemuck::cast_slice(&f))?;
            tx.send(b"done")?;
        }
        "recv" => {
            let mut rx = Receiver::open(&name)?;
            loop {
                match rx.recv_frame(Wait::timeout(Duration::from_secs(20)))? {
                    Frame::Bytes(b) if b == b"done" => break,
                    Frame::Array(a) => {
                        let order = if a.meta.order == Order::F { "F" } else { "C" };
                        let shape: Vec<String> = a.meta.shape.iter().map(usize::to_string).collect();
                        println!("{} {order} {} {:016x}", a.meta.descr, shape.join(","), fnv1a(&a.data));
                    }
                    other => println!("other {other:?}"),
                }
            }
        }
        _ => panic!("mode must be send or recv"),
    }
    Ok(())
}
