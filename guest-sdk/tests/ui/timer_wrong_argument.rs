//! A #[timer] hook that takes the timer's id as a bare number.
use pitaya_guest::prelude::*;

#[derive(Default)]
struct Game;

#[component(name = "game")]
impl Game {
    #[timer]
    fn tick(&mut self, timer: u64) {
        let _ = timer;
    }
}

fn main() {}
