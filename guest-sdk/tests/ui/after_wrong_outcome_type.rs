//! An #[after] hook that takes the outcome as something it is not.
use pitaya_guest::prelude::*;

#[derive(Default)]
struct Room;

#[component(name = "room")]
impl Room {
    #[request]
    fn join(&mut self) -> Result<()> {
        Ok(())
    }

    #[after]
    fn log(&mut self, outcome: &Result<String, HandlerError>) {
        let _ = outcome;
    }
}

fn main() {}
