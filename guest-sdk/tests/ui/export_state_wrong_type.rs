//! An #[export_state] hook that returns a serde value without saying how to encode it.
use pitaya_guest::prelude::*;

#[derive(Default)]
struct Room {
    topic: String,
}

#[component(name = "room")]
impl Room {
    #[export_state]
    fn save(&self) -> String {
        self.topic.clone()
    }
}

fn main() {}
