//! A handler that would consume the component.
use pitaya_guest::prelude::*;

#[derive(Default)]
struct Room;

#[component(name = "room")]
impl Room {
    #[notify]
    fn close(self) {}
}

fn main() {}
