//! Two payload arguments: a payload is one value.
use pitaya_guest::prelude::*;

#[derive(Default)]
struct Room;

#[component(name = "room")]
impl Room {
    #[request]
    fn join(&mut self, name: String, age: u32) -> Result<String> {
        Ok(format!("{name} {age}"))
    }
}

fn main() {}
