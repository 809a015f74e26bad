//! A component with neither `Default` nor an #[init] hook cannot be built.
use pitaya_guest::prelude::*;

struct Room {
    capacity: usize,
}

#[component(name = "room")]
impl Room {
    #[request]
    fn capacity(&self) -> Result<usize> {
        Ok(self.capacity)
    }
}

fn main() {}
