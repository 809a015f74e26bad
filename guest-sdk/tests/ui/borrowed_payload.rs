//! Borrowed payload types: payloads are decoded into owned values.
use pitaya_guest::prelude::*;

#[derive(Default)]
struct Room;

#[component(name = "room")]
impl Room {
    #[request]
    fn join(&mut self, session: &Session, name: &str) -> Result<String> {
        let _ = session;
        Ok(name.to_string())
    }

    #[notify]
    fn message(&mut self, bytes: &[u8]) {
        let _ = bytes;
    }
}

fn main() {}
