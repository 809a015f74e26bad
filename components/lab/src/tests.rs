//! The lab's handlers, checked natively against the SDK's in-memory test host.

use std::time::Duration;

use pitaya_guest::HandlerError;
use pitaya_guest::Handshake;
use pitaya_guest::SessionId;
use pitaya_guest::log::Level;
use pitaya_guest::prost::Message;
use pitaya_guest::testing::TestHost;
use serde_json::{Value, json};

use super::{AddRequest, AddResponse, Lab};

fn call(host: &mut TestHost<Lab>, session: SessionId, handler: &str, body: Value) -> Value {
    let answer = host.request(session, handler, body.to_string()).unwrap();
    serde_json::from_slice(&answer).unwrap()
}

#[test]
fn init_fails_only_when_configured_to() {
    assert!(TestHost::<Lab>::new().is_ok());
    assert!(TestHost::<Lab>::with_config(r#"{"fail":false}"#).is_ok());
    assert_eq!(
        TestHost::<Lab>::with_config(r#"{"fail":true}"#).err(),
        Some("configured to fail".to_string())
    );
    let error = TestHost::<Lab>::with_config("fail").err().unwrap();
    assert!(
        error.starts_with("the configuration is not JSON"),
        "{error}"
    );
}

#[test]
fn bind_whoami_and_session_data() {
    let mut host = TestHost::<Lab>::new().unwrap();
    let handshake = Handshake {
        sys: json!({"platform": "test"}),
        user: json!({"name": "ana"}),
    };
    let ana = host.connect_with(handshake).unwrap();
    assert_eq!(
        call(&mut host, ana, "whoami", json!({})),
        json!({
            "session": 1,
            "uid": null,
            "remote": "127.0.0.1:40001",
            "handshake": {"sys": {"platform": "test"}, "user": {"name": "ana"}},
        })
    );
    assert_eq!(
        call(&mut host, ana, "bind", json!({"uid": "ana"})),
        json!({"ok": true})
    );
    assert_eq!(call(&mut host, ana, "whoami", json!({}))["uid"], "ana");
    let error = host
        .request(ana, "bind", json!({"uid": "eve"}).to_string())
        .unwrap_err();
    assert_eq!(error.code, "LAB-BIND");
    assert!(error.message.contains("already bound"), "{error}");

    let value = json!({"level": 3, "tags": ["a"]});
    assert_eq!(
        call(
            &mut host,
            ana,
            "setData",
            json!({"key": "k", "value": value})
        ),
        json!({"ok": true})
    );
    assert_eq!(
        call(&mut host, ana, "getData", json!({"key": "k"})),
        json!({ "value": value })
    );
    assert_eq!(
        call(&mut host, ana, "getData", json!({"key": "nope"})),
        json!({"value": null})
    );
}

#[test]
fn groups_join_leave_list_broadcast_and_delete() {
    let mut host = TestHost::<Lab>::new().unwrap();
    let (ana, bob) = (host.connect(), host.connect());
    let g = json!({"group": "g"});
    assert_eq!(call(&mut host, ana, "join", g.clone()), json!({"count": 1}));
    assert_eq!(call(&mut host, bob, "join", g.clone()), json!({"count": 2}));
    assert_eq!(
        call(&mut host, ana, "members", g.clone()),
        json!({"members": [1, 2], "count": 2, "containsMe": true})
    );
    let everyone = json!({"group": "g", "route": "onX", "body": {"a": 1}});
    assert_eq!(
        call(&mut host, ana, "broadcast", everyone),
        json!({"queued": 2})
    );
    let others = json!({"group": "g", "route": "onX", "body": [2], "exceptMe": true});
    assert_eq!(
        call(&mut host, ana, "broadcast", others),
        json!({"queued": 1})
    );
    assert_eq!(host.take_pushes(ana).len(), 1);
    let to_bob = host.take_pushes(bob);
    assert_eq!(to_bob[0].json(), json!({"a": 1}));
    assert_eq!(to_bob[1].json(), json!([2]));

    assert_eq!(
        call(&mut host, bob, "leave", g.clone()),
        json!({"removed": true})
    );
    assert_eq!(
        call(&mut host, bob, "leave", g.clone()),
        json!({"removed": false})
    );
    assert_eq!(
        call(&mut host, bob, "members", g.clone())["containsMe"],
        false
    );
    assert_eq!(
        call(&mut host, bob, "deleteGroup", g.clone()),
        json!({"deleted": true})
    );
    assert_eq!(
        call(&mut host, bob, "deleteGroup", g.clone()),
        json!({"deleted": false})
    );
    assert_eq!(
        call(&mut host, bob, "members", g),
        json!({"members": [], "count": 0, "containsMe": false})
    );
}

#[test]
fn users_push_and_kick_by_uid() {
    let mut host = TestHost::<Lab>::new().unwrap();
    let (ana, bob) = (host.connect(), host.connect());
    call(&mut host, ana, "bind", json!({"uid": "ana"}));
    let push = json!({"uids": ["ana", "zed"], "route": "onY", "body": {"hi": true}});
    assert_eq!(
        call(&mut host, bob, "pushUids", push),
        json!({"offline": ["zed"]})
    );
    assert_eq!(host.take_pushes(ana)[0].json(), json!({"hi": true}));
    assert_eq!(
        call(&mut host, bob, "kickUid", json!({"uid": "zed"})),
        json!({"kicked": false})
    );
    assert_eq!(
        call(
            &mut host,
            bob,
            "kickUid",
            json!({"uid": "ana", "reason": "r"})
        ),
        json!({"kicked": true})
    );
    assert_eq!(host.kick_reason(ana).as_deref(), Some("r"));
}

#[test]
fn kick_me_kicks_the_caller_with_or_without_a_reason() {
    let mut host = TestHost::<Lab>::new().unwrap();
    let (ana, bob) = (host.connect(), host.connect());
    assert_eq!(
        call(&mut host, ana, "kickMe", json!({"reason": "bye"})),
        json!({"ok": true})
    );
    assert_eq!(host.kick_reason(ana).as_deref(), Some("bye"));
    assert_eq!(host.request(bob, "kickMe", "").unwrap(), br#"{"ok":true}"#);
    assert!(host.was_kicked(bob));
    assert_eq!(host.kick_reason(bob), None);
}

#[test]
fn every_ticks_count_times_then_cancels_itself() {
    let mut host = TestHost::<Lab>::new().unwrap();
    let ana = host.connect();
    let answer = call(&mut host, ana, "every", json!({"ms": 50, "count": 3}));
    let timer = answer["timer"].as_u64().unwrap();
    assert_eq!(host.advance(Duration::from_secs(1)), 3);
    let ticks: Vec<Value> = host
        .take_pushes(ana)
        .iter()
        .map(|push| {
            assert_eq!(push.route, "onTick");
            push.json()
        })
        .collect();
    assert_eq!(ticks, [json!({"n": 1}), json!({"n": 2}), json!({"n": 3})]);
    assert!(host.timers().is_empty());
    assert_eq!(
        call(&mut host, ana, "cancel", json!({ "timer": timer })),
        json!({"cancelled": false})
    );
    let error = host
        .request(ana, "every", json!({"ms": 5, "count": 0}).to_string())
        .unwrap_err();
    assert_eq!(error.code, "PIT-400");
}

#[test]
fn after_fires_once_and_cancel_stops_a_timer() {
    let mut host = TestHost::<Lab>::new().unwrap();
    let ana = host.connect();
    let once = call(&mut host, ana, "after", json!({"ms": 100}))["timer"].clone();
    let other = call(&mut host, ana, "after", json!({"ms": 100}))["timer"].clone();
    assert_eq!(
        call(&mut host, ana, "cancel", json!({ "timer": other })),
        json!({"cancelled": true})
    );
    assert_eq!(host.advance(Duration::from_millis(99)), 0);
    assert_eq!(host.advance(Duration::from_millis(1)), 1);
    let pushes = host.take_pushes(ana);
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].route, "onAfter");
    assert_eq!(pushes[0].json(), json!({ "timer": once }));
}

#[test]
fn work_and_the_concurrency_witness() {
    let mut host = TestHost::<Lab>::new().unwrap();
    let ana = host.connect();
    assert_eq!(
        call(&mut host, ana, "work", json!({"iterations": 100_000})),
        json!({"done": 100_000})
    );
    call(&mut host, ana, "every", json!({"ms": 10, "count": 2}));
    host.advance(Duration::from_millis(100));
    assert_eq!(
        call(&mut host, ana, "overlaps", json!({})),
        json!({"overlaps": 0, "timerFires": 2, "calls": 3})
    );
}

#[test]
fn secret_needs_auth_and_every_call_is_logged() {
    let mut host = TestHost::<Lab>::new().unwrap();
    let ana = host.connect();
    let error = host.request(ana, "secret", "{}").unwrap_err();
    assert_eq!(error.code, "LAB-AUTH");
    host.set_data(ana, "auth", "true");
    assert_eq!(
        call(&mut host, ana, "secret", json!({})),
        json!({"secret": 42})
    );
    let logs = host.take_logs();
    assert_eq!(logs.len(), 2);
    assert_eq!(logs[0].0, Level::Info);
    assert!(
        logs[0].1.starts_with("lab.secret for session 1: LAB-AUTH"),
        "{logs:?}"
    );
    assert_eq!(
        logs[1],
        (
            Level::Debug,
            "lab.secret for session 1: ok, 13 bytes".into()
        )
    );
    // A refused call was still a call, and it left the instance not busy.
    assert_eq!(call(&mut host, ana, "overlaps", json!({}))["overlaps"], 0);
}

#[test]
fn handshakes_asking_to_be_refused_are() {
    let mut host = TestHost::<Lab>::new().unwrap();
    let refused = host.connect_with(Handshake::with_user(json!({"refuse": true})));
    assert_eq!(refused, Err("refused by lab".to_string()));
    assert!(
        host.connect_with(Handshake::with_user(json!({"refuse": false})))
            .is_ok()
    );
    assert!(host.connect_with(Handshake::default()).is_ok());
}

#[test]
fn reload_keeps_the_counter_and_counts_generations() {
    let mut host = TestHost::<Lab>::new().unwrap();
    let ana = host.connect();
    assert_eq!(
        call(&mut host, ana, "counter", json!({})),
        json!({"counter": 1, "generation": 1})
    );
    host.reload("").unwrap();
    assert_eq!(
        call(&mut host, ana, "counter", json!({})),
        json!({"counter": 2, "generation": 2})
    );
    assert_eq!(
        host.reload(r#"{"fail":true}"#),
        Err("configured to fail".to_string())
    );
    assert_eq!(
        call(&mut host, ana, "generation", json!({})),
        json!({"generation": 2})
    );
    host.reload("{}").unwrap();
    assert_eq!(
        call(&mut host, ana, "generation", json!({})),
        json!({"generation": 3})
    );
}

#[test]
fn shutdown_is_logged() {
    let mut host = TestHost::<Lab>::new().unwrap();
    host.shutdown();
    assert_eq!(
        host.take_logs(),
        [(Level::Info, "lab shutting down".to_string())]
    );
}

/// Calls `lab.protoAdd` with `a` and `b`, and decodes the sum.
fn proto_add(
    host: &mut TestHost<Lab>,
    session: SessionId,
    a: i32,
    b: i32,
) -> Result<i32, HandlerError> {
    let answer = host.request(session, "protoAdd", AddRequest { a, b }.encode_to_vec())?;
    Ok(AddResponse::decode(answer.as_slice()).unwrap().sum)
}

#[test]
fn proto_add_adds_in_protobuf() {
    let mut host = TestHost::<Lab>::new().unwrap();
    let ana = host.connect();
    assert_eq!(proto_add(&mut host, ana, 2, 3), Ok(5));
    assert_eq!(proto_add(&mut host, ana, 0, 0), Ok(0));
    assert_eq!(proto_add(&mut host, ana, i32::MAX, 0), Ok(i32::MAX));
    // The wire bytes: field 1 (varint) = 42, as any protobuf client would read them.
    let answer = host.request(ana, "protoAdd", [0x08, 40, 0x10, 2]).unwrap();
    assert_eq!(answer, [0x08, 42]);
    // An empty payload is a request with both fields at 0, and a zero sum encodes as nothing.
    assert_eq!(host.request(ana, "protoAdd", "").unwrap(), b"");
}

#[test]
fn proto_add_refuses_negative_numbers_naming_the_field() {
    let mut host = TestHost::<Lab>::new().unwrap();
    let ana = host.connect();
    let negative = |field: &str| {
        HandlerError::new("LAB-NEGATIVE", "negative numbers are not added")
            .with_metadata("field", field)
    };
    assert_eq!(proto_add(&mut host, ana, -1, 2), Err(negative("a")));
    assert_eq!(proto_add(&mut host, ana, 1, -2), Err(negative("b")));
    assert_eq!(proto_add(&mut host, ana, i32::MIN, -1), Err(negative("a")));
    assert_eq!(proto_add(&mut host, ana, 0, i32::MIN), Err(negative("b")));
}

#[test]
fn proto_add_refuses_sums_past_int32_and_bad_bytes() {
    let mut host = TestHost::<Lab>::new().unwrap();
    let ana = host.connect();
    let error = proto_add(&mut host, ana, i32::MAX, 1).unwrap_err();
    assert_eq!(error.code, "LAB-OVERFLOW");
    // A varint cut short, and JSON where protobuf is expected.
    for bad in [&[0x08, 0xff][..], br#"{"a":1,"b":2}"#] {
        let error = host.request(ana, "protoAdd", bad).unwrap_err();
        assert_eq!(error.code, "PIT-400", "{bad:?}");
        assert!(error.message.starts_with("invalid payload: "), "{error}");
    }
    // Refusals and bad payloads are logged by the `#[after]` hook like any other failure.
    let logs = host.take_logs();
    assert_eq!(logs.len(), 3, "{logs:?}");
    assert!(
        logs.iter()
            .all(|(level, line)| *level == Level::Info && line.starts_with("lab.protoAdd")),
        "{logs:?}"
    );
}

#[test]
fn proto_add_leaves_the_json_handlers_alone() {
    let mut host = TestHost::<Lab>::new().unwrap();
    let ana = host.connect();
    assert_eq!(proto_add(&mut host, ana, 1, 1), Ok(2));
    assert_eq!(
        call(&mut host, ana, "counter", json!({})),
        json!({"counter": 1, "generation": 1})
    );
    assert_eq!(
        call(&mut host, ana, "overlaps", json!({})),
        json!({"overlaps": 0, "timerFires": 0, "calls": 3})
    );
}

#[test]
fn an_instance_keeps_its_id_and_a_new_one_picks_another() {
    // The test host holds one instance per thread; a reload starts a new one.
    let mut host = TestHost::<Lab>::new().unwrap();
    let ana = host.connect();
    let first = call(&mut host, ana, "instance", json!({}));
    let again = call(&mut host, ana, "instance", json!({}));
    assert_eq!(first["instance"], again["instance"]);
    assert_eq!(
        (first["calls"].as_u64(), again["calls"].as_u64()),
        (Some(1), Some(2))
    );
    host.reload("").unwrap();
    let fresh = call(&mut host, ana, "instance", json!({}));
    assert_ne!(first["instance"], fresh["instance"]);
    assert_eq!(fresh["calls"].as_u64(), Some(1));
}
