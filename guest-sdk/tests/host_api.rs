//! The host functions the SDK wraps (sessions, groups, users, timers), checked against the
//! fake host of `pitaya_guest::testing`, from inside handlers as a component uses them.

use std::time::Duration;

use pitaya_guest::prelude::*;
use pitaya_guest::testing::{ActiveTimer, TestHost};
use pitaya_guest::{timers, users};
use serde::Deserialize;
use serde_json::{Value, json};

/// Handlers that call the host functions and answer what they returned.
#[derive(Default)]
struct Probe;

#[derive(Deserialize)]
struct Kick {
    uid: Option<String>,
    reason: Option<String>,
}

#[component(name = "probe")]
impl Probe {
    #[request]
    fn whoami(session: &Session) -> Result<Value> {
        Ok(json!({
            "remote": session.remote_address().map(|address| address.to_string()),
            "handshake": session.handshake(),
        }))
    }

    #[request]
    fn remember(session: &Session, bytes: usize) -> Result<()> {
        session.set("note", &"n".repeat(bytes))
    }

    #[request]
    fn kick(session: &Session, kick: Kick) -> Result<bool> {
        Ok(match (kick.uid, kick.reason) {
            (Some(uid), Some(reason)) => users::kick_with_reason(&uid, &reason),
            (Some(uid), None) => users::kick(&uid),
            (None, Some(reason)) => {
                session.kick_with_reason(&reason);
                true
            }
            (None, None) => {
                session.kick();
                true
            }
        })
    }

    #[notify]
    fn close(session: &Session) {
        session.close();
    }

    #[request]
    fn enter(session: &Session, group: String) -> Result<usize> {
        let group = Group::named(group);
        group.add(session);
        group.broadcast_except("onEnter", &session.id(), session);
        Ok(group.count())
    }
}

#[test]
fn sessions_know_their_address_and_handshake() {
    let mut host = TestHost::<Probe>::new().unwrap();
    let handshake = Handshake {
        sys: json!({"platform": "web"}),
        user: json!({"nickname": "ana"}),
    };
    let ana = host.connect_with(handshake.clone()).unwrap();
    let answer: Value = serde_json::from_slice(&host.request(ana, "whoami", "").unwrap()).unwrap();
    assert_eq!(
        answer,
        json!({"remote": "127.0.0.1:40001", "handshake": handshake})
    );
    host.disconnect(ana);
    assert_eq!(ana.session().remote_address(), None);
    assert_eq!(ana.session().handshake(), None);
}

#[test]
fn session_data_over_what_the_host_keeps_is_an_error() {
    let mut host = TestHost::<Probe>::new().unwrap();
    let ana = host.connect();
    // Encoded with its quotes and the key "note": 65,536 bytes in all, the most the host keeps.
    host.request(ana, "remember", "65530").unwrap();
    let error = host.request(ana, "remember", "65531").unwrap_err();
    assert_eq!(error.code, "PIT-500");
    assert!(
        error.message.contains("at most 64 KiB"),
        "{}",
        error.message
    );
}

#[test]
fn kicks_carry_their_reason_and_close_does_not_kick() {
    let mut host = TestHost::<Probe>::new().unwrap();
    let (ana, bob, cid, dan) = (
        host.connect(),
        host.connect(),
        host.connect(),
        host.connect(),
    );
    host.request(ana, "kick", r#"{"reason":"afk"}"#).unwrap();
    assert!(host.was_kicked(ana));
    assert_eq!(host.kick_reason(ana).as_deref(), Some("afk"));

    host.request(bob, "kick", "{}").unwrap();
    assert!(host.was_kicked(bob));
    assert_eq!(host.kick_reason(bob), None);

    host.notify(cid, "close", "").unwrap();
    assert!(host.was_closed(cid));
    assert!(!host.was_kicked(cid));
    assert!(!host.is_connected(cid));

    dan.session().bind("dan").unwrap();
    let eve = host.connect();
    let kicked = host
        .request(eve, "kick", r#"{"uid":"dan","reason":"banned"}"#)
        .unwrap();
    assert_eq!(kicked, b"true");
    assert_eq!(host.kick_reason(dan).as_deref(), Some("banned"));
    let kicked = host.request(eve, "kick", r#"{"uid":"dan"}"#).unwrap();
    assert_eq!(kicked, b"false");
}

#[test]
fn groups_hold_live_sessions_in_order() {
    let mut host = TestHost::<Probe>::new().unwrap();
    let (ana, bob, cid) = (host.connect(), host.connect(), host.connect());
    let lobby = Group::new("lobby");
    assert!(lobby.create());
    assert!(!lobby.create());
    assert!(lobby.is_empty());

    assert_eq!(host.request(ana, "enter", r#""lobby""#).unwrap(), b"1");
    assert_eq!(host.request(bob, "enter", r#""lobby""#).unwrap(), b"2");
    assert_eq!(host.request(bob, "enter", r#""lobby""#).unwrap(), b"2");
    let to_ana = host.take_pushes(ana);
    assert_eq!(to_ana.len(), 2);
    assert_eq!(to_ana[0].route, "onEnter");
    assert_eq!(to_ana[0].json(), json!(2));
    assert!(host.take_pushes(bob).is_empty());

    assert_eq!(lobby.members(), [ana, bob]);
    assert!(lobby.contains(ana) && !lobby.contains(cid));
    assert_eq!(lobby.broadcast_raw("onRaw", b"x"), 2);
    assert_eq!(lobby.broadcast_raw_except("onRaw", b"y", ana), 1);
    assert_eq!(host.take_pushes(bob)[1].payload, b"y");

    // A closed session leaves by itself; a removed one is gone, and removing twice is false.
    host.close(bob);
    assert_eq!(lobby.members(), [ana]);
    assert!(lobby.remove(ana));
    assert!(!lobby.remove(ana));
    assert!(!lobby.add(bob));
    assert_eq!(host.groups(), ["lobby"]);
    assert!(lobby.delete());
    assert!(!lobby.delete());
    assert!(host.groups().is_empty());

    // A broadcast that cannot be encoded reaches no one and is logged.
    lobby.add(cid);
    let map = std::collections::BTreeMap::from([((1, 2), 3)]);
    assert_eq!(lobby.broadcast("onMap", &map), 0);
    assert!(host.take_pushes(cid).is_empty());
    assert_eq!(host.take_logs().len(), 1);
}

#[test]
fn users_are_reached_by_uid_and_a_second_login_kicks_the_first() {
    let mut host = TestHost::<Probe>::new().unwrap();
    let (ana, bob) = (host.connect(), host.connect());
    ana.session().bind("ana").unwrap();
    assert_eq!(users::session("ana").map(|s| s.id()), Some(ana));
    assert!(users::session("bob").is_none());

    let offline = users::push(["ana", "bob"], "onInvite", &json!({"table": 7}));
    assert_eq!(offline, ["bob"]);
    assert_eq!(host.take_pushes(ana)[0].json(), json!({"table": 7}));
    let offline = users::push_raw(vec!["ana".to_string()], "onPing", b"{}");
    assert!(offline.is_empty());

    // The default duplicate-login policy: the older session is kicked, the bind succeeds.
    bob.session().bind("ana").unwrap();
    assert!(host.was_kicked(ana));
    assert_eq!(users::session("ana").map(|s| s.id()), Some(bob));
    assert_eq!(
        bob.session().bind("bob"),
        Err(pitaya_guest::BindError::AlreadyBound("ana".into()))
    );
    assert_eq!(
        bob.session().bind(""),
        Err(pitaya_guest::BindError::InvalidUid)
    );
}

#[test]
fn timers_are_listed_cancelled_and_rounded_up_to_milliseconds() {
    let mut host = TestHost::<Probe>::new().unwrap();
    let once = timers::after(Duration::from_micros(1500));
    let every = timers::every(Duration::ZERO);
    assert_eq!(
        host.timers(),
        [
            ActiveTimer {
                id: once,
                period: None,
                due_in: Duration::from_millis(2),
            },
            ActiveTimer {
                id: every,
                period: Some(Duration::from_millis(1)),
                due_in: Duration::from_millis(1),
            },
        ]
    );
    assert!(every.cancel());
    assert!(!every.cancel());
    host.advance(Duration::from_millis(2));
    assert!(host.timers().is_empty());
    assert!(!timers::cancel(once));
}
