//! The pond's behaviour, checked natively against the SDK's in-memory test host.

use std::time::Duration;

use pitaya_guest::SessionId;
use pitaya_guest::testing::{Push, TestHost};
use serde_json::{Value, json};

use super::Pond;

fn join(host: &mut TestHost<Pond>, session: SessionId, name: &str) -> Value {
    let answer = host
        .request(session, "join", json!({ "name": name }).to_string())
        .unwrap();
    serde_json::from_slice(&answer).unwrap()
}

fn routes(pushes: &[Push]) -> Vec<&str> {
    pushes.iter().map(|push| push.route.as_str()).collect()
}

/// One tick of the game loop.
fn tick(host: &mut TestHost<Pond>) {
    assert_eq!(host.advance(Duration::from_millis(50)), 1);
}

#[test]
fn join_answers_with_everyone_and_starts_the_loop() {
    let mut host = TestHost::<Pond>::new().unwrap();
    let (ana, bob) = (host.connect(), host.connect());
    let first = join(&mut host, ana, "ana");
    assert_eq!(first["id"], 1);
    assert_eq!(first["tadpoles"].as_array().unwrap().len(), 1);
    let second = join(&mut host, bob, "  ");
    let names: Vec<&str> = second["tadpoles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ana", "Guest 2"]);
    assert_eq!(host.group_members("pond"), [ana, bob]);
    assert_eq!(host.timers().len(), 1);
    assert_eq!(host.timers()[0].period, Some(Duration::from_millis(50)));
}

#[test]
fn moves_are_clamped_and_pushed_on_the_next_tick_only_when_changed() {
    let mut host = TestHost::<Pond>::new().unwrap();
    let ana = host.connect();
    join(&mut host, ana, "ana");
    tick(&mut host);
    assert_eq!(routes(&host.take_pushes(ana)), ["onPond"]);
    tick(&mut host);
    assert!(host.take_pushes(ana).is_empty());

    let far = json!({"x": 1e9, "y": -3.5, "angle": 4.0}).to_string();
    host.notify(ana, "move", far).unwrap();
    tick(&mut host);
    let pond = host.take_pushes(ana)[0].json();
    let me = &pond["tadpoles"][0];
    assert_eq!(
        (me["x"].as_f64(), me["y"].as_f64()),
        (Some(10_000.0), Some(-3.5))
    );
    let angle = me["angle"].as_f64().unwrap();
    assert!(
        (angle - (4.0 - std::f64::consts::TAU)).abs() < 1e-9,
        "{angle}"
    );

    // Garbage changes nothing: no news on the next tick.
    assert!(host.notify(ana, "move", r#"{"x":"left"}"#).is_err());
    tick(&mut host);
    assert!(host.take_pushes(ana).is_empty());
}

#[test]
fn strangers_cannot_move_or_speak() {
    let mut host = TestHost::<Pond>::new().unwrap();
    let (ana, eve) = (host.connect(), host.connect());
    join(&mut host, ana, "ana");
    host.take_pushes(ana);
    host.notify(eve, "move", r#"{"x":1,"y":2,"angle":0}"#)
        .unwrap();
    host.notify(eve, "say", r#"{"text":"hi"}"#).unwrap();
    assert!(host.take_pushes(ana).is_empty());
}

#[test]
fn say_is_broadcast_and_truncated() {
    let mut host = TestHost::<Pond>::new().unwrap();
    let (ana, bob) = (host.connect(), host.connect());
    join(&mut host, ana, "ana");
    join(&mut host, bob, "bob");
    let long = "é".repeat(300);
    host.notify(ana, "say", json!({ "text": long }).to_string())
        .unwrap();
    let said = host.take_pushes(bob)[0].json();
    assert_eq!(said["id"], 1);
    assert_eq!(said["text"].as_str().unwrap().chars().count(), 200);
}

#[test]
fn a_closed_session_leaves_and_the_last_one_stops_the_loop() {
    let mut host = TestHost::<Pond>::new().unwrap();
    let (ana, bob) = (host.connect(), host.connect());
    join(&mut host, ana, "ana");
    join(&mut host, bob, "bob");
    tick(&mut host);
    host.take_pushes(ana);
    host.close(bob);
    assert_eq!(host.take_pushes(ana)[0].json(), json!({"id": 2}));
    tick(&mut host);
    let pond = host.take_pushes(ana)[0].json();
    assert_eq!(pond["tadpoles"].as_array().unwrap().len(), 1);
    host.close(ana);
    assert!(host.timers().is_empty());
}

#[test]
fn reload_hands_the_pond_over_and_keeps_one_loop() {
    let mut host = TestHost::<Pond>::new().unwrap();
    let ana = host.connect();
    let before = join(&mut host, ana, "ana");
    let old_loop = host.timers();
    host.reload("").unwrap();
    // The old instance's loop stopped with it; the new instance started its own.
    let new_loop = host.timers();
    assert_eq!(new_loop.len(), 1);
    assert_ne!(new_loop[0].id, old_loop[0].id);
    tick(&mut host);
    let pushes = host.take_pushes(ana);
    assert_eq!(routes(&pushes), ["onPond"]);
    assert_eq!(pushes[0].json()["tadpoles"], before["tadpoles"]);
}
