//! A marker outside a #[component] block.
use pitaya_guest::prelude::*;

#[request]
fn join() -> Result<()> {
    Ok(())
}

fn main() {}
