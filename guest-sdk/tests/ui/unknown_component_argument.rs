//! A misspelt argument of #[component].
use pitaya_guest::prelude::*;

#[derive(Default)]
struct Room;

#[component(nmae = "room")]
impl Room {
    #[request]
    fn join(&mut self) -> Result<()> {
        Ok(())
    }
}

fn main() {}
