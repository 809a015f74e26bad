//! A request handler that answers nothing.
use pitaya_guest::prelude::*;

#[derive(Default)]
struct Room;

#[component(name = "room")]
impl Room {
    #[request]
    fn join(&mut self, session: &Session) {
        let _ = session;
    }
}

fn main() {}
