//! An #[after] hook that returns a value nobody would see.
use pitaya_guest::prelude::*;

#[derive(Default)]
struct Room;

#[component(name = "room")]
impl Room {
    #[after]
    fn log(&mut self, handler: &str, outcome: &Outcome) -> bool {
        let _ = handler;
        outcome.is_ok()
    }
}

fn main() {}
