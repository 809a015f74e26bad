//! A #[before] hook that says yes or no with a bool instead of an error.
use pitaya_guest::prelude::*;

#[derive(Default)]
struct Room;

#[component(name = "room")]
impl Room {
    #[before]
    fn check(&mut self, handler: &str) -> bool {
        handler != "secret"
    }
}

fn main() {}
