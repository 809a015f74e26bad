//! A #[validate_handshake] hook that returns nothing, so it could never refuse a client.
use pitaya_guest::prelude::*;

#[derive(Default)]
struct Gate;

#[component(name = "gate")]
impl Gate {
    #[validate_handshake]
    fn check(&mut self, handshake: Handshake) {
        let _ = handshake;
    }
}

fn main() {}
