//! A hook marker given arguments: the period belongs to `timers::every`, not to the marker.
use pitaya_guest::prelude::*;

#[derive(Default)]
struct Game;

#[component(name = "game")]
impl Game {
    #[timer(every = 50)]
    fn tick(&mut self) {}
}

fn main() {}
