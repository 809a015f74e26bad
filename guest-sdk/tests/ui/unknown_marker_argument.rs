//! An argument that handler markers do not take.
use pitaya_guest::prelude::*;

#[derive(Default)]
struct Room;

#[component(name = "room")]
impl Room {
    #[request(route = "room.enter")]
    fn join(&mut self) -> Result<()> {
        Ok(())
    }
}

fn main() {}
