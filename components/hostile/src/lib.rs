//! The `hostile` component: each handler misbehaves in one way the sandbox must contain.
//! The host's sandbox tests call these; they are also a catalogue of what the host stops.
//!
//! - `hostile.spin` loops forever: stopped by the call deadline (epoch interruption).
//! - `hostile.hog` allocates without end: stopped by the instance's memory cap.
//! - `hostile.trap` panics: a trap.
//! - `hostile.deep` recurses without end: a stack overflow trap.
//! - `hostile.big` answers with 100 MB: refused (memory cap, or the host's reply size cap).
//! - `hostile.ok` answers `{}`: proves the component is serving again afterwards.

use std::hint::black_box;

use pitaya_guest::prelude::*;

#[derive(Default)]
struct Hostile;

#[component(name = "hostile")]
impl Hostile {
    #[request]
    fn spin() -> Result<Raw> {
        let mut n: u64 = 0;
        loop {
            n = black_box(n.wrapping_add(1));
        }
    }

    #[request]
    fn hog() -> Result<Raw> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(black_box(vec![1u8; 1 << 20]));
        }
    }

    #[request]
    fn trap() -> Result<Raw> {
        panic!("hostile.trap panics on purpose")
    }

    #[request]
    fn deep() -> Result<Raw> {
        Ok(Raw(vec![recurse(black_box(1)) as u8]))
    }

    #[request]
    fn big() -> Result<Raw> {
        Ok(Raw(black_box(vec![b'x'; 100 << 20])))
    }

    #[request]
    fn ok() -> Result<Raw> {
        Ok(Raw(b"{}".to_vec()))
    }
}

/// Not a tail call, so the compiler cannot turn it into a loop.
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 16]);
    recurse(depth + 1).wrapping_add(frame[black_box(3)])
}
