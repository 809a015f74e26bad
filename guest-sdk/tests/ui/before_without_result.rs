//! A #[before] hook that returns nothing, so it could never refuse a call.
use pitaya_guest::prelude::*;

#[derive(Default)]
struct Room;

#[component(name = "room")]
impl Room {
    #[before]
    fn check(&mut self, session: &Session) {
        let _ = session;
    }
}

fn main() {}
