//! The chat room's behaviour, checked natively against the SDK's in-memory test host.

use pitaya_guest::testing::{Push, TestHost};
use serde_json::{Value, json};

use super::Room;

fn routes(pushes: &[Push]) -> Vec<&str> {
    pushes.iter().map(|push| push.route.as_str()).collect()
}

fn join(host: &mut TestHost<Room>, session: pitaya_guest::SessionId) -> Value {
    let response = host.request(session, "join", "{}").unwrap();
    serde_json::from_slice(&response).unwrap()
}

#[test]
fn join_binds_the_session_id_and_answers_success() {
    let mut host = TestHost::<Room>::new().unwrap();
    let ana = host.connect();
    assert_eq!(
        join(&mut host, ana),
        json!({"code": 0, "result": "success"})
    );
    assert_eq!(host.uid(ana).as_deref(), Some("1"));
    let pushes = host.take_pushes(ana);
    assert_eq!(routes(&pushes), ["onMembers"]);
    assert_eq!(pushes[0].json(), json!({"members": ["1"]}));
}

#[test]
fn join_keeps_a_bound_uid_and_tells_the_others() {
    let mut host = TestHost::<Room>::new().unwrap();
    let (first, second) = (host.connect(), host.connect());
    join(&mut host, first);
    host.take_pushes(first);
    // A session bound before it joins keeps its uid; the "SDK" binds through the fake host.
    pitaya_guest::Session::from_id(second).bind("bob").unwrap();
    join(&mut host, second);

    let to_first = host.take_pushes(first);
    assert_eq!(routes(&to_first), ["onNewUser"]);
    assert_eq!(to_first[0].json(), json!({"content": "New user: bob"}));
    let to_second = host.take_pushes(second);
    assert_eq!(routes(&to_second), ["onMembers"]);
    assert_eq!(to_second[0].json(), json!({"members": ["1", "bob"]}));
}

#[test]
fn joining_twice_does_not_duplicate() {
    let mut host = TestHost::<Room>::new().unwrap();
    let (ana, bob) = (host.connect(), host.connect());
    join(&mut host, ana);
    join(&mut host, bob);
    join(&mut host, bob);
    let to_ana = host.take_pushes(ana);
    assert_eq!(routes(&to_ana), ["onMembers", "onNewUser"]);
    let to_bob = host.take_pushes(bob);
    assert_eq!(to_bob[1].json(), json!({"members": ["1", "2"]}));
}

#[test]
fn message_goes_to_every_member_unchanged() {
    let mut host = TestHost::<Room>::new().unwrap();
    let (ana, bob, outsider) = (host.connect(), host.connect(), host.connect());
    join(&mut host, ana);
    join(&mut host, bob);
    host.take_pushes(ana);
    host.take_pushes(bob);

    let message = br#"{"name":"ana","content":"hi"}"#;
    host.notify(ana, "message", message).unwrap();
    for member in [ana, bob] {
        let pushes = host.take_pushes(member);
        assert_eq!(routes(&pushes), ["onMessage"]);
        assert_eq!(pushes[0].payload, message);
    }
    assert!(host.take_pushes(outsider).is_empty());
}

#[test]
fn the_room_is_a_host_group() {
    let mut host = TestHost::<Room>::new().unwrap();
    let (ana, bob) = (host.connect(), host.connect());
    join(&mut host, ana);
    join(&mut host, bob);
    assert_eq!(host.group_members("room"), [ana, bob]);
}

#[test]
fn closed_and_vanished_sessions_leave_the_room() {
    let mut host = TestHost::<Room>::new().unwrap();
    let (ana, bob, cid, dan) = (
        host.connect(),
        host.connect(),
        host.connect(),
        host.connect(),
    );
    for member in [ana, bob, cid] {
        join(&mut host, member);
    }
    host.close(bob);
    // Gone without the component being told: the host's group drops it all the same.
    host.disconnect(cid);
    host.notify(ana, "message", "x").unwrap();
    join(&mut host, dan);
    let to_dan = host.take_pushes(dan);
    assert_eq!(to_dan[0].json(), json!({"members": ["1", "4"]}));
}

#[test]
fn unknown_handler_is_not_found() {
    let mut host = TestHost::<Room>::new().unwrap();
    let ana = host.connect();
    let error = host.request(ana, "leave", "{}").unwrap_err();
    assert_eq!(error.code, "PIT-404");
    assert_eq!(
        error.message,
        "pitaya/handler: connector.room.leave not found"
    );
}
