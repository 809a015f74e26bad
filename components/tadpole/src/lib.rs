//! The `tadpole` component: the classic multiplayer tadpole pond, served to a browser page.
//!
//! - `tadpole.join` (request) {"name"} puts the caller in the pond (the host group `pond`) and
//!   answers {"id", "tadpoles": [{"id","name","x","y","angle"}, ...]}, everyone there.
//! - `tadpole.move` (notify) {"x","y","angle"} moves the caller's tadpole (kept within the
//!   world; anything that is not a finite number is ignored).
//! - `tadpole.say` (notify) {"text"} pushes `onSay` {"id","text"} (at most 200 characters) to
//!   the pond.
//! - A 20 Hz timer pushes `onPond` {"tadpoles"} to the pond when anything changed, and a closed
//!   session's tadpole leaves with `onLeave` {"id"}. On hot reload the pond is handed over.

use std::collections::BTreeMap;
use std::f64::consts::{PI, TAU};
use std::time::Duration;

use pitaya_guest::prelude::*;
use pitaya_guest::{log, timers};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Everyone who gets the pond's news.
const POND: Group = Group::new("pond");
/// The game loop's period: 20 Hz.
const TICK: Duration = Duration::from_millis(50);
/// Positions stay within this distance of the centre on both axes.
const WORLD: f64 = 10_000.0;
const MAX_NAME: usize = 32;
const MAX_TEXT: usize = 200;

#[derive(Default)]
struct Pond {
    tadpoles: BTreeMap<SessionId, Tadpole>,
    /// Whether the next tick has news to push.
    changed: bool,
    /// The game loop, running while the pond has tadpoles.
    ticker: Option<TimerId>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Tadpole {
    id: SessionId,
    name: String,
    x: f64,
    y: f64,
    angle: f64,
}

#[derive(Deserialize)]
struct Join {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct Move {
    x: f64,
    y: f64,
    angle: f64,
}

#[derive(Deserialize)]
struct Say {
    text: String,
}

#[component(name = "tadpole")]
impl Pond {
    /// Joins the pond (joining again only renames) and answers with everyone in it.
    #[request]
    fn join(&mut self, session: &Session, Join { name }: Join) -> Result<Value> {
        let id = session.id();
        let name = match name.trim() {
            "" => format!("Guest {id}"),
            name => name.chars().take(MAX_NAME).collect(),
        };
        let (x, y) = spawn_point(id);
        let tadpole = self.tadpoles.entry(id).or_insert(Tadpole {
            id,
            name: String::new(),
            x,
            y,
            angle: 0.0,
        });
        tadpole.name = name;
        POND.add(session);
        self.changed = true;
        self.ticker.get_or_insert_with(|| timers::every(TICK));
        Ok(json!({ "id": id, "tadpoles": self.list() }))
    }

    /// Moves the caller's tadpole; garbage and callers who never joined are ignored.
    #[notify(name = "move")]
    fn swim(&mut self, session: SessionId, Move { x, y, angle }: Move) {
        let Some(tadpole) = self.tadpoles.get_mut(&session) else {
            return;
        };
        if [x, y, angle].iter().all(|n| n.is_finite()) {
            tadpole.x = x.clamp(-WORLD, WORLD);
            tadpole.y = y.clamp(-WORLD, WORLD);
            tadpole.angle = (angle + PI).rem_euclid(TAU) - PI;
            self.changed = true;
        }
    }

    #[notify]
    fn say(&self, session: SessionId, Say { text }: Say) {
        if self.tadpoles.contains_key(&session) {
            let text: String = text.chars().take(MAX_TEXT).collect();
            POND.broadcast("onSay", &json!({ "id": session, "text": text }));
        }
    }

    /// The game loop: pushes the pond when it changed.
    #[timer]
    fn tick(&mut self, timer: TimerId) {
        // One loop per pond. Timers die with the instance that set them, so after a restart
        // or a reload this instance runs only the loop it started itself; any other is stopped.
        if *self.ticker.get_or_insert(timer) != timer {
            timer.cancel();
            return;
        }
        if self.changed {
            self.changed = false;
            POND.broadcast("onPond", &json!({ "tadpoles": self.list() }));
        }
    }

    /// A closed session's tadpole leaves (the host already took it out of the group).
    #[session_closed]
    fn left(&mut self, session: SessionId) {
        if self.tadpoles.remove(&session).is_some() {
            POND.broadcast("onLeave", &json!({ "id": session }));
            self.changed = true;
        }
        if self.tadpoles.is_empty()
            && let Some(ticker) = self.ticker.take()
        {
            ticker.cancel();
        }
    }

    #[export_state]
    fn save(&self) -> Json<Vec<&Tadpole>> {
        Json(self.list())
    }

    #[import_state]
    fn load(&mut self, Json(tadpoles): Json<Vec<Tadpole>>) {
        log::info!("taking over a pond of {} tadpoles", tadpoles.len());
        self.tadpoles = tadpoles.into_iter().map(|t| (t.id, t)).collect();
        if !self.tadpoles.is_empty() {
            self.changed = true;
            self.ticker = Some(timers::every(TICK));
        }
    }

    fn list(&self) -> Vec<&Tadpole> {
        self.tadpoles.values().collect()
    }
}

/// Where a new tadpole appears: scattered around the centre, the same place for the same id.
fn spawn_point(id: SessionId) -> (f64, f64) {
    let hash = id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let x = (hash >> 16) % 400;
    let y = (hash >> 40) % 400;
    (x as f64 - 200.0, y as f64 - 200.0)
}

#[cfg(test)]
mod tests;
