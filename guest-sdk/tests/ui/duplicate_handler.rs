//! Two handlers with the same route name.
use pitaya_guest::prelude::*;

#[derive(Default)]
struct Room;

#[component(name = "room")]
impl Room {
    #[request]
    fn join(&mut self) -> Result<()> {
        Ok(())
    }

    #[notify(name = "join")]
    fn enter(&mut self) {}
}

fn main() {}
