//! An #[import_state] hook that does not take the state.
use pitaya_guest::prelude::*;

#[derive(Default)]
struct Room;

#[component(name = "room")]
impl Room {
    #[import_state]
    fn load(&mut self) -> Result<(), String> {
        Ok(())
    }
}

fn main() {}
