//! `#[component]` end to end on the native target: the generated dispatch, argument forms,
//! payload and response encoding, errors, hooks and session functions, driven by `TestHost`.

use pitaya_guest::log;
use pitaya_guest::prelude::*;
use pitaya_guest::testing::TestHost;
use pitaya_guest::{HandlerInfo, HandlerKind};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A component that uses every handler form the macro accepts.
struct Lobby {
    greeting: String,
    calls: u32,
    closed: Vec<SessionId>,
}

#[derive(Deserialize)]
struct Hello {
    name: String,
}

#[derive(Serialize)]
struct Welcome {
    text: String,
    calls: u32,
}

#[component(name = "lobby")]
impl Lobby {
    /// The configuration is the greeting; an empty one means "hello", "fail" fails.
    #[init]
    fn setup(config: Raw) -> Result<Self, String> {
        let greeting = String::from_utf8(config.into_inner()).map_err(|e| e.to_string())?;
        if greeting == "fail" {
            return Err("the configuration says fail".into());
        }
        let greeting = if greeting.is_empty() {
            "hello".into()
        } else {
            greeting
        };
        Ok(Lobby {
            greeting,
            calls: 0,
            closed: Vec::new(),
        })
    }

    /// `&mut self`, the session, a JSON payload and a JSON response.
    #[request]
    fn hello(&mut self, session: &Session, hello: Hello) -> Result<Welcome> {
        self.calls += 1;
        session.bind(&hello.name)?;
        log::info!("{} said hello", hello.name);
        Ok(Welcome {
            text: format!("{}, {}", self.greeting, hello.name),
            calls: self.calls,
        })
    }

    /// `&self`, the payload before the session id, a renamed route.
    #[request(name = "whoAmI")]
    fn who_am_i(&self, tag: Option<String>, id: SessionId) -> Result<Value> {
        Ok(json!({ "id": id, "tag": tag, "calls": self.calls }))
    }

    /// No receiver, no session: a pure function of the payload, with its own error type.
    #[request]
    fn double(n: i64) -> Result<i64, Overflow> {
        n.checked_mul(2).ok_or(Overflow)
    }

    /// No arguments at all, raw response.
    #[request]
    fn ping() -> Result<Raw> {
        Ok(Raw::from("pong"))
    }

    /// A notify that fails on an empty message; the session by value.
    #[notify]
    fn shout(session: Session, text: String) -> Result<(), HandlerError> {
        if text.is_empty() {
            return Err(HandlerError::bad_request("nothing to shout"));
        }
        session.push("onShout", &text.to_uppercase());
        Ok(())
    }

    /// Session data round trip.
    #[request]
    fn remember(session: &Session, value: Value) -> Result<Option<Value>> {
        let previous = session.get("memory");
        session.set("memory", &value)?;
        Ok(previous)
    }

    /// Kicks the caller.
    #[notify]
    fn leave(session: &Session) {
        session.kick();
    }

    #[session_closed]
    fn closed(&mut self, session: SessionId) {
        self.closed.push(session);
    }

    #[request]
    fn closed_sessions(&self) -> Result<Vec<SessionId>> {
        Ok(self.closed_list())
    }

    /// Not a handler: plain methods stay in the block.
    fn closed_list(&self) -> Vec<SessionId> {
        self.closed.clone()
    }
}

#[derive(Debug)]
struct Overflow;

impl From<Overflow> for HandlerError {
    fn from(_: Overflow) -> Self {
        HandlerError::new("LOBBY-OVERFLOW", "the number is too large to double")
    }
}

fn json_of(bytes: Vec<u8>) -> Value {
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn info_lists_handlers_in_order_with_kinds_and_names() {
    assert_eq!(Lobby::NAME, "lobby");
    let handlers: Vec<(&str, HandlerKind)> = Lobby::HANDLERS
        .iter()
        .map(|HandlerInfo { name, kind }| (*name, *kind))
        .collect();
    assert_eq!(
        handlers,
        [
            ("hello", HandlerKind::Request),
            ("whoAmI", HandlerKind::Request),
            ("double", HandlerKind::Request),
            ("ping", HandlerKind::Request),
            ("shout", HandlerKind::Notify),
            ("remember", HandlerKind::Request),
            ("leave", HandlerKind::Notify),
            ("closed_sessions", HandlerKind::Request),
        ]
    );
}

#[test]
fn init_gets_the_configuration_and_its_error_stops_loading() {
    let error = TestHost::<Lobby>::with_config("fail").err().unwrap();
    assert_eq!(error, "the configuration says fail");

    let mut host = TestHost::<Lobby>::with_config("ahoy").unwrap();
    let ana = host.connect();
    let welcome = json_of(host.request(ana, "hello", r#"{"name":"ana"}"#).unwrap());
    assert_eq!(welcome, json!({"text": "ahoy, ana", "calls": 1}));
}

#[test]
fn json_request_and_response_with_session_and_state() {
    let mut host = TestHost::<Lobby>::new().unwrap();
    let (ana, bob) = (host.connect(), host.connect());
    let first = json_of(host.request(ana, "hello", r#"{"name":"ana"}"#).unwrap());
    assert_eq!(first, json!({"text": "hello, ana", "calls": 1}));
    let second = json_of(host.request(bob, "hello", r#"{"name":"bob"}"#).unwrap());
    assert_eq!(second["calls"], 2);
    assert_eq!(host.uid(ana).as_deref(), Some("ana"));
    let logs = host.take_logs();
    assert_eq!(logs.len(), 2);
    assert_eq!(logs[0], (log::Level::Info, "ana said hello".to_string()));
}

#[test]
fn payload_and_session_in_any_order_and_renamed_routes() {
    let mut host = TestHost::<Lobby>::new().unwrap();
    let ana = host.connect();
    let answer = json_of(host.request(ana, "whoAmI", r#""red""#).unwrap());
    assert_eq!(answer, json!({"id": 1, "tag": "red", "calls": 0}));
    // An empty payload reads as null, which an Option accepts.
    let answer = json_of(host.request(ana, "whoAmI", "").unwrap());
    assert_eq!(answer["tag"], Value::Null);
    // The function's own name is not a route.
    assert_eq!(
        host.request(ana, "who_am_i", "").unwrap_err().code,
        "PIT-404"
    );
}

#[test]
fn undecodable_payload_is_pit_400_and_the_handler_does_not_run() {
    let mut host = TestHost::<Lobby>::new().unwrap();
    let ana = host.connect();
    for payload in ["{", r#"{"nom":"ana"}"#, "", "\u{1}"] {
        let error = host.request(ana, "hello", payload).unwrap_err();
        assert_eq!(error.code, "PIT-400", "{payload:?}");
        assert!(error.message.starts_with("invalid payload: "), "{error}");
    }
    // The handler never ran: the next call is the first.
    let welcome = json_of(host.request(ana, "hello", r#"{"name":"ana"}"#).unwrap());
    assert_eq!(welcome["calls"], 1);
}

#[test]
fn unknown_handler_is_pit_404() {
    let mut host = TestHost::<Lobby>::new().unwrap();
    let ana = host.connect();
    let error = host.request(ana, "nope", "{}").unwrap_err();
    assert_eq!(
        error,
        HandlerError::not_found("pitaya/handler: connector.lobby.nope not found")
    );
    assert_eq!(host.notify(ana, "nope", "{}").unwrap_err().code, "PIT-404");
}

#[test]
fn free_functions_custom_errors_and_raw_responses() {
    let mut host = TestHost::<Lobby>::new().unwrap();
    let ana = host.connect();
    assert_eq!(host.request(ana, "double", "21").unwrap(), b"42");
    let error = host
        .request(ana, "double", i64::MAX.to_string())
        .unwrap_err();
    assert_eq!(error.code, "LOBBY-OVERFLOW");
    assert_eq!(host.request(ana, "ping", "ignored").unwrap(), b"pong");
}

#[test]
fn notify_pushes_and_reports_errors() {
    let mut host = TestHost::<Lobby>::new().unwrap();
    let ana = host.connect();
    host.notify(ana, "shout", r#""hey""#).unwrap();
    let pushes = host.take_pushes(ana);
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].route, "onShout");
    assert_eq!(pushes[0].json(), json!("HEY"));
    assert_eq!(
        host.notify(ana, "shout", r#""""#).unwrap_err().code,
        "PIT-400"
    );
    // The test host refuses a request to a notify handler, as the real host does.
    assert_eq!(
        host.request(ana, "shout", r#""x""#).unwrap_err().code,
        "PIT-400"
    );
}

#[test]
fn session_data_is_json_text() {
    let mut host = TestHost::<Lobby>::new().unwrap();
    let ana = host.connect();
    assert_eq!(
        json_of(host.request(ana, "remember", r#"{"a":1}"#).unwrap()),
        Value::Null
    );
    assert_eq!(host.data(ana, "memory").as_deref(), Some(r#"{"a":1}"#));
    let previous = json_of(host.request(ana, "remember", "[2]").unwrap());
    assert_eq!(previous, json!({"a": 1}));
}

#[test]
fn kick_and_close_reach_the_session_closed_hook() {
    let mut host = TestHost::<Lobby>::new().unwrap();
    let (ana, bob) = (host.connect(), host.connect());
    host.notify(ana, "leave", "").unwrap();
    assert!(host.was_kicked(ana));
    assert!(!host.is_connected(ana));
    host.close(bob);
    let cid = host.connect();
    let closed = json_of(host.request(cid, "closed_sessions", "").unwrap());
    assert_eq!(closed, json!([1, 2]));
}

#[test]
fn binding_twice_to_another_uid_is_an_error() {
    let mut host = TestHost::<Lobby>::new().unwrap();
    let ana = host.connect();
    host.request(ana, "hello", r#"{"name":"ana"}"#).unwrap();
    // Binding the same uid again succeeds; another uid is refused, as a bad request (the
    // client asked for it), not a server fault.
    host.request(ana, "hello", r#"{"name":"ana"}"#).unwrap();
    let error = host.request(ana, "hello", r#"{"name":"eve"}"#).unwrap_err();
    assert_eq!(error.code, "PIT-400");
    assert!(error.message.contains("already bound"), "{error}");
}

#[test]
fn sessions_that_closed_read_empty_and_ignore_writes() {
    let mut host = TestHost::<Lobby>::new().unwrap();
    let ana = host.connect();
    let session = Session::from_id(ana);
    session.set_raw("k", "1");
    host.disconnect(ana);
    assert!(!session.is_connected());
    assert_eq!(session.get_raw("k"), None);
    assert!(!session.push("onX", &1));
    assert_eq!(
        session.bind("ana"),
        Err(pitaya_guest::BindError::SessionClosed)
    );
    // Never-connected ids behave the same.
    assert!(!SessionId(999).session().push_raw("onX", b""));
}

/// A component without `#[init]` is built with `Default`, even if the host never called init.
#[derive(Default)]
struct Counter {
    count: u32,
}

#[component]
impl Counter {
    #[request]
    fn next(&mut self) -> Result<u32> {
        self.count += 1;
        Ok(self.count)
    }
}

#[test]
fn default_name_and_default_state() {
    assert_eq!(Counter::NAME, "counter");
    let mut host = TestHost::<Counter>::new().unwrap();
    let ana = host.connect();
    assert_eq!(host.request(ana, "next", "").unwrap(), b"1");
    assert_eq!(host.request(ana, "next", "").unwrap(), b"2");
    // A new test host starts from a fresh instance.
    let mut host = TestHost::<Counter>::new().unwrap();
    let ana = host.connect();
    assert_eq!(host.request(ana, "next", "").unwrap(), b"1");
}

#[test]
fn unencodable_session_value_and_push_fail_softly() {
    let mut host = TestHost::<Counter>::new().unwrap();
    let ana = host.connect();
    let session = Session::from_id(ana);
    let map = std::collections::BTreeMap::from([((1, 2), 3)]);
    assert_eq!(session.set("map", &map).unwrap_err().code, "PIT-500");
    assert!(!session.push("onMap", &map));
    assert!(host.take_pushes(ana).is_empty());
    let logs = host.take_logs();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].0, log::Level::Error);
    // A stored value of another type reads as None, with a warning.
    session.set_raw("n", "\"text\"");
    assert_eq!(session.get::<u32>("n"), None);
    assert_eq!(host.take_logs()[0].0, log::Level::Warn);
}
