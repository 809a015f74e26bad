//! The session taken as `&mut Session`: a session handle is taken by shared reference.
use pitaya_guest::prelude::*;

#[derive(Default)]
struct Room;

#[component(name = "room")]
impl Room {
    #[request]
    fn join(&mut self, session: &mut Session) -> Result<()> {
        let _ = session;
        Ok(())
    }
}

fn main() {}
