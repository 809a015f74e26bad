//! Two #[shutdown] hooks: a component has one.
use pitaya_guest::prelude::*;

#[derive(Default)]
struct Room;

#[component(name = "room")]
impl Room {
    #[shutdown]
    fn stop(&mut self) {}

    #[shutdown]
    fn stop_again(&mut self) {}
}

fn main() {}
