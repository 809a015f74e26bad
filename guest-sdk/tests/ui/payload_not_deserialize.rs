//! A payload type without `serde::Deserialize`.
use pitaya_guest::prelude::*;

struct JoinRequest {
    name: String,
}

#[derive(Default)]
struct Room;

#[component(name = "room")]
impl Room {
    #[request]
    fn join(&mut self, request: JoinRequest) -> Result<String> {
        Ok(request.name)
    }
}

fn main() {}
