//! Protobuf payloads end to end on the native target (the `protobuf` feature): `Proto<M>` as a
//! handler's payload and answer, next to JSON and `Raw`, driven by `TestHost`.
//!
//! Run with `cargo test -p pitaya-guest --features protobuf`; without the feature there is
//! nothing here.

#![cfg(feature = "protobuf")]

use pitaya_guest::prelude::*;
use pitaya_guest::prost::Message;
use pitaya_guest::testing::TestHost;

/// `message AddRequest { int32 a = 1; int32 b = 2; }`, derived through the SDK's re-export.
#[derive(Clone, PartialEq, pitaya_guest::prost::Message)]
#[prost(prost_path = "::pitaya_guest::prost")]
struct AddRequest {
    #[prost(int32, tag = "1")]
    a: i32,
    #[prost(int32, tag = "2")]
    b: i32,
}

/// `message AddResponse { int32 sum = 1; }`
#[derive(Clone, PartialEq, pitaya_guest::prost::Message)]
#[prost(prost_path = "::pitaya_guest::prost")]
struct AddResponse {
    #[prost(int32, tag = "1")]
    sum: i32,
}

/// A message with strings, repeated and nested fields.
#[derive(Clone, PartialEq, pitaya_guest::prost::Message)]
#[prost(prost_path = "::pitaya_guest::prost")]
struct Roster {
    #[prost(string, tag = "1")]
    room: String,
    #[prost(message, repeated, tag = "2")]
    players: Vec<Player>,
}

#[derive(Clone, PartialEq, pitaya_guest::prost::Message)]
#[prost(prost_path = "::pitaya_guest::prost")]
struct Player {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(uint32, repeated, tag = "2")]
    scores: Vec<u32>,
}

#[derive(Default)]
struct Calc {
    /// Handler calls that got as far as the handler's body.
    calls: u32,
}

#[component(name = "calc")]
impl Calc {
    #[request]
    fn add(&mut self, Proto(request): Proto<AddRequest>) -> Result<Proto<AddResponse>> {
        self.calls += 1;
        if request.a < 0 {
            return Err(HandlerError::new("CALC-NEGATIVE", "negative").with_metadata("field", "a"));
        }
        Ok(Proto(AddResponse {
            sum: request.a + request.b,
        }))
    }

    /// Protobuf in, JSON out.
    #[request]
    fn count(&mut self, roster: Proto<Roster>) -> Result<usize> {
        self.calls += 1;
        Ok(roster.players.len())
    }

    /// Protobuf in and out, with the session, in the other order.
    #[request]
    fn sorted(mut roster: Proto<Roster>, session: SessionId) -> Result<Proto<Roster>> {
        roster.room = format!("{} for {session}", roster.room);
        roster.players.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(roster)
    }

    /// A notify taking protobuf, pushing protobuf back.
    #[notify]
    fn shout(session: &Session, Proto(request): Proto<AddRequest>) {
        let answer = AddResponse {
            sum: request.a * request.b,
        };
        session.push_raw("onShout", &answer.encode_to_vec());
    }

    #[request]
    fn calls(&self) -> Result<u32> {
        Ok(self.calls)
    }
}

fn add(host: &mut TestHost<Calc>, session: SessionId, a: i32, b: i32) -> Result<AddResponse> {
    let answer = host.request(session, "add", AddRequest { a, b }.encode_to_vec())?;
    Ok(AddResponse::decode(answer.as_slice()).expect("a protobuf AddResponse"))
}

#[test]
fn proto_request_and_answer_round_trip() {
    let mut host = TestHost::<Calc>::new().unwrap();
    let ana = host.connect();
    assert_eq!(add(&mut host, ana, 2, 3).unwrap(), AddResponse { sum: 5 });
    assert_eq!(add(&mut host, ana, 0, -7).unwrap(), AddResponse { sum: -7 });
    let answer = host
        .request(ana, "add", AddRequest { a: 40, b: 2 }.encode_to_vec())
        .unwrap();
    assert_eq!(answer, [0x08, 42]);
}

#[test]
fn empty_payload_is_the_default_message() {
    let mut host = TestHost::<Calc>::new().unwrap();
    let ana = host.connect();
    // A protobuf message with every field at its default encodes as nothing, both ways.
    assert_eq!(host.request(ana, "add", "").unwrap(), b"");
}

#[test]
fn bad_bytes_are_pit_400_and_the_handler_is_not_called() {
    let mut host = TestHost::<Calc>::new().unwrap();
    let ana = host.connect();
    let bad_payloads: [&[u8]; 3] = [&[0x08, 0xff], &[0x0a, 0x05, 1], br#"{"a":1,"b":2}"#];
    for bad in bad_payloads {
        let error = host.request(ana, "add", bad).unwrap_err();
        assert_eq!(error.code, "PIT-400", "{bad:?}");
        assert!(error.message.starts_with("invalid payload: "), "{error}");
        let error = host.notify(ana, "shout", bad).unwrap_err();
        assert_eq!(error.code, "PIT-400", "{bad:?}");
    }
    assert!(host.take_pushes(ana).is_empty());
    assert_eq!(host.request(ana, "calls", "").unwrap(), b"0");
}

#[test]
fn handler_errors_pass_through_unchanged() {
    let mut host = TestHost::<Calc>::new().unwrap();
    let ana = host.connect();
    let error = add(&mut host, ana, -1, 1).unwrap_err();
    assert_eq!(
        error,
        HandlerError::new("CALC-NEGATIVE", "negative").with_metadata("field", "a")
    );
}

#[test]
fn nested_messages_mix_with_json_answers() {
    let mut host = TestHost::<Calc>::new().unwrap();
    let ana = host.connect();
    let roster = Roster {
        room: "lobby".into(),
        players: vec![
            Player {
                name: "zed".into(),
                scores: vec![3, 1],
            },
            Player {
                name: "ana".into(),
                scores: vec![],
            },
        ],
    };
    assert_eq!(
        host.request(ana, "count", roster.encode_to_vec()).unwrap(),
        b"2"
    );
    let answer = host.request(ana, "sorted", roster.encode_to_vec()).unwrap();
    let sorted = Roster::decode(answer.as_slice()).unwrap();
    assert_eq!(sorted.room, format!("lobby for {ana}"));
    let names: Vec<&str> = sorted.players.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["ana", "zed"]);
    assert_eq!(sorted.players[1].scores, [3, 1]);
}

#[test]
fn notify_takes_proto_and_pushes_proto() {
    let mut host = TestHost::<Calc>::new().unwrap();
    let ana = host.connect();
    host.notify(ana, "shout", AddRequest { a: 6, b: 7 }.encode_to_vec())
        .unwrap();
    let pushes = host.take_pushes(ana);
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].route, "onShout");
    assert_eq!(
        AddResponse::decode(pushes[0].payload.as_slice()).unwrap(),
        AddResponse { sum: 42 }
    );
}
