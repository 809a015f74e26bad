//! The hooks of `#[component]` end to end on the native target: `#[before]`/`#[after]` around
//! handlers, `#[timer]`, `#[validate_handshake]`, `#[shutdown]`, `#[export_state]` and
//! `#[import_state]`, driven by `TestHost` as the real host drives them.

use std::time::Duration;

use pitaya_guest::log::{self, Level};
use pitaya_guest::prelude::*;
use pitaya_guest::testing::TestHost;
use pitaya_guest::timers;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A component with every hook, recording what ran in `trail`.
struct Vault {
    trail: Vec<String>,
    gold: u64,
    ticks: Vec<TimerId>,
    generation: u32,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    gold: u64,
    generation: u32,
}

/// The user part of a handshake, decoded by the validation hook itself.
#[derive(Deserialize)]
struct Login {
    sys: Value,
    user: LoginUser,
}

#[derive(Deserialize)]
struct LoginUser {
    name: String,
}

#[component(name = "vault")]
impl Vault {
    #[init]
    fn init(config: Vec<u8>) -> Result<Self, String> {
        if config == b"fail" {
            return Err("configured to fail".into());
        }
        Ok(Vault {
            trail: Vec::new(),
            gold: 0,
            ticks: Vec::new(),
            generation: 1,
        })
    }

    #[request]
    fn deposit(&mut self, amount: u64) -> Result<u64> {
        self.trail.push(format!("deposit {amount}"));
        self.gold += amount;
        Ok(self.gold)
    }

    #[request]
    fn trail(&mut self) -> Result<Vec<String>> {
        Ok(std::mem::take(&mut self.trail))
    }

    #[request]
    fn generation(&self) -> Result<u32> {
        Ok(self.generation)
    }

    #[notify]
    fn touch(&mut self) {
        self.trail.push("touch".into());
    }

    #[request]
    fn hidden(&self) -> Result<&'static str> {
        Ok("internal detail")
    }

    #[request]
    fn start(&mut self, ms: u64) -> Result<TimerId> {
        Ok(timers::every(Duration::from_millis(ms)))
    }

    #[request]
    fn ticks(&mut self) -> Result<Vec<TimerId>> {
        Ok(std::mem::take(&mut self.ticks))
    }

    /// Only sessions with the data key `"key"` may open the vault; the trail shows the order.
    #[before]
    fn first(&mut self, handler: &str) -> Result<(), HandlerError> {
        self.trail.push(format!("before {handler}"));
        Ok(())
    }

    #[before]
    fn locked(&mut self, session: &Session, handler: &str) -> Result<(), HandlerError> {
        if handler == "deposit" && session.get_raw("key").is_none() {
            return Err(HandlerError::new("VAULT-LOCKED", "no key"));
        }
        Ok(())
    }

    #[after]
    fn audit(&mut self, session: SessionId, handler: &str, outcome: &Outcome) {
        let result = match outcome {
            Ok(bytes) => format!("ok {}", String::from_utf8_lossy(bytes)),
            Err(error) => format!("err {}", error.code),
        };
        self.trail
            .push(format!("after {handler} {session} {result}"));
    }

    /// Rewrites what `hidden` answers: the last word on the outcome.
    #[after]
    fn redact(&mut self, handler: &str, outcome: &mut Outcome) {
        if handler == "hidden" {
            *outcome = Err(HandlerError::new("VAULT-REDACTED", "not for you"));
        }
    }

    #[timer]
    fn tick(&mut self, timer: TimerId) -> Result<(), String> {
        self.ticks.push(timer);
        if self.ticks.len() == 3 {
            return Err("third tick".into());
        }
        Ok(())
    }

    #[validate_handshake]
    fn check(&mut self, session: &Session, login: Login) -> Result<(), String> {
        if login.user.name == "mallory" {
            return Err(format!("session {} is mallory", session.id()));
        }
        self.trail
            .push(format!("welcome {} {}", login.user.name, login.sys));
        Ok(())
    }

    #[shutdown]
    fn closing(&mut self) {
        log::info!("vault closing with {} gold", self.gold);
    }

    #[export_state]
    fn save(&self) -> Json<Saved> {
        Json(Saved {
            gold: self.gold,
            generation: self.generation,
        })
    }

    #[import_state]
    fn load(&mut self, Json(saved): Json<Saved>) -> Result<(), String> {
        if saved.gold == 13 {
            return Err("unlucky state".into());
        }
        self.gold = saved.gold;
        self.generation = saved.generation + 1;
        Ok(())
    }
}

fn trail(host: &mut TestHost<Vault>, session: SessionId) -> Vec<String> {
    let bytes = host.request(session, "trail", "").unwrap();
    let mut trail: Vec<String> = serde_json::from_slice(&bytes).unwrap();
    // The `trail` call's own before hook.
    assert_eq!(trail.pop().as_deref(), Some("before trail"));
    trail
}

fn login(name: &str) -> Handshake {
    Handshake {
        sys: json!({"platform": "test"}),
        user: json!({ "name": name }),
    }
}

#[test]
fn before_hooks_run_in_order_and_a_refusal_answers_instead_of_the_handler() {
    let mut host = TestHost::<Vault>::new().unwrap();
    let ana = host.connect_with(login("ana")).unwrap();
    let error = host.request(ana, "deposit", "5").unwrap_err();
    assert_eq!(error, HandlerError::new("VAULT-LOCKED", "no key"));
    host.set_data(ana, "key", "true");
    assert_eq!(host.request(ana, "deposit", "5").unwrap(), b"5");
    assert_eq!(
        trail(&mut host, ana),
        [
            "welcome ana {\"platform\":\"test\"}",
            "before deposit",
            "after deposit 1 err VAULT-LOCKED",
            "before deposit",
            "deposit 5",
            "after deposit 1 ok 5",
        ]
    );
}

#[test]
fn after_hooks_see_decode_errors_and_notifies_and_may_rewrite_the_outcome() {
    let mut host = TestHost::<Vault>::new().unwrap();
    let ana = host.connect_with(login("ana")).unwrap();
    host.set_data(ana, "key", "true");
    trail(&mut host, ana);
    assert_eq!(
        host.request(ana, "deposit", "\"lots\"").unwrap_err().code,
        "PIT-400"
    );
    host.notify(ana, "touch", "").unwrap();
    let error = host.request(ana, "hidden", "").unwrap_err();
    assert_eq!(error.code, "VAULT-REDACTED");
    let trail = trail(&mut host, ana);
    // The first `trail` call's after hook, which ran once that call had answered.
    assert!(
        trail[0].starts_with("after trail 1 ok [\"welcome ana"),
        "{trail:?}"
    );
    assert_eq!(
        trail[1..],
        [
            "before deposit",
            "after deposit 1 err PIT-400",
            "before touch",
            "touch",
            "after touch 1 ok ",
            "before hidden",
            "after hidden 1 ok \"internal detail\"",
        ]
    );
}

#[test]
fn unknown_handlers_are_answered_without_running_the_hooks() {
    let mut host = TestHost::<Vault>::new().unwrap();
    let ana = host.connect_with(login("ana")).unwrap();
    trail(&mut host, ana);
    let error = host.request(ana, "steal", "").unwrap_err();
    assert_eq!(
        error.message,
        "pitaya/handler: connector.vault.steal not found"
    );
    let trail = trail(&mut host, ana);
    assert_eq!(trail.len(), 1, "{trail:?}");
}

#[test]
fn validate_handshake_is_declared_and_refuses_with_the_hooks_reason() {
    const { assert!(Vault::VALIDATES_HANDSHAKE) };
    let mut host = TestHost::<Vault>::new().unwrap();
    assert_eq!(
        host.connect_with(login("mallory")),
        Err("session 1 is mallory".to_string())
    );
    assert!(!host.is_connected(SessionId(1)));
    // A handshake that does not decode as the hook's type is refused, saying why.
    let reason = host.connect_with(Handshake::default()).unwrap_err();
    assert!(
        reason.starts_with("invalid handshake: ") && reason.contains("name"),
        "{reason}"
    );
    let ana = host.connect_with(login("ana")).unwrap();
    assert_eq!(ana, SessionId(3));
}

#[test]
#[should_panic(expected = "refused a client with an empty handshake")]
fn connect_panics_when_the_default_handshake_is_refused() {
    let mut host = TestHost::<Vault>::new().unwrap();
    host.connect();
}

#[test]
fn timers_reach_the_timer_hook_with_their_ids_at_a_fixed_rate() {
    let mut host = TestHost::<Vault>::new().unwrap();
    let ana = host.connect_with(login("ana")).unwrap();
    let fast: TimerId = serde_json::from_slice(&host.request(ana, "start", "10").unwrap()).unwrap();
    let slow: TimerId = serde_json::from_slice(&host.request(ana, "start", "25").unwrap()).unwrap();
    assert_eq!(host.advance(Duration::from_millis(50)), 7);
    let ticks: Vec<TimerId> =
        serde_json::from_slice(&host.request(ana, "ticks", "").unwrap()).unwrap();
    // 10 20 25 30 40 50 50: equal times fire in id order.
    assert_eq!(ticks, [fast, fast, slow, fast, fast, fast, slow]);
    // The hook's error (on the third tick) is logged, not lost.
    let logs = host.take_logs();
    assert!(
        logs.iter()
            .any(|(level, line)| *level == Level::Error && line.contains("third tick")),
        "{logs:?}"
    );
    assert!(timers::cancel(fast));
    assert!(host.fire_timer(slow));
    assert!(!host.fire_timer(fast));
}

#[test]
fn shutdown_runs_the_hook() {
    let mut host = TestHost::<Vault>::new().unwrap();
    host.shutdown();
    assert_eq!(
        host.take_logs(),
        [(Level::Info, "vault closing with 0 gold".to_string())]
    );
}

#[test]
fn reload_hands_the_state_over_and_keeps_the_old_instance_when_it_fails() {
    let mut host = TestHost::<Vault>::new().unwrap();
    let ana = host.connect_with(login("ana")).unwrap();
    host.set_data(ana, "key", "true");
    host.request(ana, "deposit", "10").unwrap();
    assert_eq!(
        host.export_state(),
        Some(br#"{"gold":10,"generation":1}"#.to_vec())
    );

    host.reload("").unwrap();
    assert_eq!(host.request(ana, "generation", "").unwrap(), b"2");
    assert_eq!(host.request(ana, "deposit", "3").unwrap(), b"13");

    // init fails: the old instance serves on.
    assert_eq!(host.reload("fail"), Err("configured to fail".to_string()));
    // import fails (13 gold is unlucky): the old instance serves on.
    assert_eq!(host.reload(""), Err("unlucky state".to_string()));
    assert_eq!(host.request(ana, "generation", "").unwrap(), b"2");
    assert_eq!(host.request(ana, "deposit", "1").unwrap(), b"14");
    host.reload("").unwrap();
    assert_eq!(host.request(ana, "generation", "").unwrap(), b"3");
}

/// A component with no hooks at all: the trait's defaults.
#[derive(Default)]
struct Plain;

#[component(name = "plain")]
impl Plain {
    #[request]
    fn ping() -> Result<&'static str> {
        Ok("pong")
    }
}

#[test]
fn without_hooks_everyone_is_let_in_and_nothing_is_handed_over() {
    const { assert!(!Plain::VALIDATES_HANDSHAKE) };
    let mut host = TestHost::<Plain>::new().unwrap();
    let refusable = host
        .connect_with(Handshake::with_user(json!({"refuse": true})))
        .unwrap();
    assert_eq!(host.request(refusable, "ping", "").unwrap(), b"\"pong\"");
    assert_eq!(host.export_state(), None);
    host.reload("").unwrap();
    // A timer with no hook to hear it is a warning.
    let timer = timers::after(Duration::ZERO);
    assert!(host.fire_timer(timer));
    let logs = host.take_logs();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].0, Level::Warn);
    assert!(logs[0].1.contains("no #[timer] hook"), "{logs:?}");
}

/// Bytes as state, and a hook that takes the timer id by another path.
#[derive(Default)]
struct Tape {
    bytes: Vec<u8>,
    fired: u32,
}

#[component(name = "tape")]
impl Tape {
    #[request]
    fn record(&mut self, bytes: Raw) -> Result<usize> {
        self.bytes.extend_from_slice(&bytes);
        Ok(self.bytes.len())
    }

    #[request]
    fn fired(&self) -> Result<u32> {
        Ok(self.fired)
    }

    #[timer]
    fn count(&mut self) {
        self.fired += 1;
    }

    #[export_state]
    fn save(&mut self) -> Option<Raw> {
        (!self.bytes.is_empty()).then(|| Raw(std::mem::take(&mut self.bytes)))
    }

    #[import_state]
    fn load(&mut self, bytes: Vec<u8>) {
        self.bytes = bytes;
    }
}

#[test]
fn bytes_state_and_a_timer_hook_without_the_id() {
    let mut host = TestHost::<Tape>::new().unwrap();
    let ana = host.connect();
    assert_eq!(host.export_state(), None);
    host.request(ana, "record", "abc").unwrap();
    host.reload("").unwrap();
    assert_eq!(host.request(ana, "record", "d").unwrap(), b"4");
    let timer = timers::every(Duration::from_millis(100));
    assert_eq!(host.advance(Duration::from_secs(1)), 10);
    assert_eq!(host.request(ana, "fired", "").unwrap(), b"10");
    let active = host.timers();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].id, timer);
    assert_eq!(active[0].due_in, Duration::from_millis(100));
}

/// A component whose calls panic on demand, to see the test host replace it as the real host
/// replaces an instance that trapped.
struct Brittle {
    config: String,
    calls: u32,
}

#[component(name = "brittle")]
impl Brittle {
    #[init]
    fn init(config: Vec<u8>) -> Result<Self, String> {
        // The instance's first timer: a new instance (after a trap or a reload) starts one too.
        timers::every(Duration::from_secs(60));
        Ok(Brittle {
            config: String::from_utf8(config).map_err(|e| e.to_string())?,
            calls: 0,
        })
    }

    #[request]
    fn bump(&mut self) -> Result<u32> {
        self.calls += 1;
        Ok(self.calls)
    }

    #[request]
    fn config(&self) -> Result<String> {
        Ok(self.config.clone())
    }

    #[request]
    fn boom(&mut self) -> Result<()> {
        panic!("boom in a handler")
    }

    #[request]
    fn start(ms: u64) -> Result<TimerId> {
        Ok(timers::after(Duration::from_millis(ms)))
    }

    #[timer]
    fn tick(&mut self) {
        panic!("boom in a timer")
    }

    #[validate_handshake]
    fn check(&mut self, handshake: Handshake) -> Result<(), String> {
        if handshake.user["panic"] == true {
            panic!("boom in a validator");
        }
        Ok(())
    }

    #[export_state]
    fn save(&self) -> Json<u32> {
        Json(self.calls)
    }

    #[import_state]
    fn load(&mut self, Json(calls): Json<u32>) {
        if calls == 13 {
            panic!("boom in an import");
        }
        self.calls = calls;
    }
}

fn bump(host: &mut TestHost<Brittle>, session: SessionId) -> u32 {
    serde_json::from_slice(&host.request(session, "bump", "").unwrap()).unwrap()
}

#[test]
fn a_panic_answers_pit_503_and_replaces_the_instance_but_not_the_hosts_state() {
    let mut host = TestHost::<Brittle>::with_config("cfg").unwrap();
    let ana = host.connect();
    ana.session().set("score", &7).unwrap();
    Group::new("room").add(ana.session());
    assert_eq!(bump(&mut host, ana), 1);
    assert_eq!(host.timers().len(), 1);

    let error = host.request(ana, "boom", "").unwrap_err();
    assert_eq!(error.code, "PIT-503");
    assert_eq!(
        error.message,
        "pitaya/handler: connector.brittle.boom unavailable: the component trapped"
    );
    let logs = host.take_logs();
    assert!(
        logs.contains(&(Level::Error, "component panicked: boom in a handler".into())),
        "{logs:?}"
    );
    // A fresh instance: memory gone, init run again with the same configuration, its old timer
    // stopped and its own started; the host's state kept.
    assert_eq!(bump(&mut host, ana), 1);
    assert_eq!(host.request(ana, "config", "").unwrap(), br#""cfg""#);
    let timers = host.timers();
    assert_eq!(timers.len(), 1, "{timers:?}");
    assert!(host.is_connected(ana));
    assert_eq!(host.data(ana, "score").as_deref(), Some("7"));
    assert_eq!(host.group_members("room"), [ana]);

    // A timer's fire that panics replaces the instance too: every timer it had stops.
    bump(&mut host, ana);
    host.request(ana, "start", "5").unwrap();
    assert_eq!(host.advance(Duration::from_millis(10)), 1);
    assert_eq!(bump(&mut host, ana), 1);
    assert_eq!(host.timers().len(), 1);

    // A validator that panics refuses the client, as the host does.
    let refused = host.connect_with(Handshake::with_user(json!({"panic": true})));
    assert_eq!(
        refused,
        Err("the component failed to validate the handshake".to_string())
    );
    assert!(host.connect_with(Handshake::default()).is_ok());
}

#[test]
fn a_reload_stops_the_timers_of_the_instance_that_lost() {
    let mut host = TestHost::<Brittle>::new().unwrap();
    let ana = host.connect();
    let old = host.timers();
    host.reload("").unwrap();
    let new = host.timers();
    assert_eq!(new.len(), 1, "{new:?}");
    assert_ne!(old[0].id, new[0].id, "the old instance's timer must stop");

    // A reload whose import panics fails, and the new instance's timer stops, the old one's not.
    while bump(&mut host, ana) < 13 {}
    assert_eq!(host.reload(""), Err("import-state panicked".to_string()));
    assert_eq!(host.timers(), new);
    assert_eq!(bump(&mut host, ana), 14);
}
