//! A notify handler that returns a value nobody would receive.
use pitaya_guest::prelude::*;

#[derive(Default)]
struct Room;

#[component(name = "room")]
impl Room {
    #[notify]
    fn ping(&mut self) -> u32 {
        1
    }
}

fn main() {}
