//! A request handler that returns its answer without `Result`.
use pitaya_guest::prelude::*;

#[derive(serde::Serialize)]
struct JoinResponse {
    code: i32,
}

#[derive(Default)]
struct Room;

#[component(name = "room")]
impl Room {
    #[request]
    fn join(&mut self) -> JoinResponse {
        JoinResponse { code: 0 }
    }
}

fn main() {}
