//! Rust side of the cross-language slot test (`pybindings/tests/test_rawvalue.py`):
//! opens a Python `RawArray('d', 16)` as `Slot<[f64; 16]>` and a `RawValue('q')` as
//! `Slot<i64>` by name, prints what it reads, and writes back.
//!
//! Run: `cargo run -p shmplane --example slot_interop -- ARRAY_NAME VALUE_NAME`

fn main() -> Result<(), shmplane::Error> {
    let mut args = std::env::args().skip(1);
    let (array, value) = (args.next().expect("array name"), args.next().expect("value name"));
    let a = shmplane::Slot::<[f64; 16]>::open(&array)?;
    let v = shmplane::Slot::<i64>::open(&value)?;
    println!("{} {}", a.read()?[0], v.read()?);
    a.write(&[7.0; 16])?;
    v.write(&-9)?;
    // The wrong length or type is refused, not reinterpreted.
    assert!(matches!(shmplane::Slot::<[f64; 8]>::open(&array), Err(shmplane::Error::WrongKind { .. })));
    assert!(matches!(shmplane::Slot::<u64>::open(&value), Err(shmplane::Error::WrongKind { .. })));
    Ok(())
}
