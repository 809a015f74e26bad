//! A misspelt marker is an unknown attribute.
use pitaya_guest::prelude::*;

#[derive(Default)]
struct Room;

#[component(name = "room")]
impl Room {
    #[reqest]
    fn join(&mut self) -> Result<()> {
        Ok(())
    }
}

fn main() {}
