//! The `lab` component: one handler per host API, for the host's integration tests. Payloads
//! and answers are JSON, except for `lab.protoAdd`'s (protobuf).
//!
//! - Sessions: `lab.bind` {"uid"} → {"ok":true} (or `LAB-BIND`), `lab.whoami` → {"session",
//!   "uid","remote","handshake"}, `lab.setData` {"key","value"} → {"ok":true}, `lab.getData`
//!   {"key"} → {"value"}, `lab.kickMe` {"reason"?} → {"ok":true}.
//! - Groups: `lab.join` {"group"} → {"count"}, `lab.leave` → {"removed"}, `lab.members` →
//!   {"members","count","containsMe"}, `lab.deleteGroup` → {"deleted"}, `lab.broadcast`
//!   {"group","route","body","exceptMe"} → {"queued"}.
//! - Users: `lab.pushUids` {"uids","route","body"} → {"offline"}, `lab.kickUid` {"uid",
//!   "reason"?} → {"kicked"}.
//! - Timers: `lab.every` {"ms","count"} pushes `onTick` {"n"} to the caller `count` times, then
//!   cancels itself; `lab.after` {"ms"} pushes `onAfter` {"timer"} once; both answer {"timer"}.
//!   `lab.cancel` {"timer"} → {"cancelled"}.
//! - Load and concurrency: `lab.work` {"iterations"} → {"done"}; `lab.overlaps` →
//!   {"overlaps","timerFires","calls"}, where an overlap is a call that started while another
//!   was running (the host must never let that happen).
//! - Hooks: `lab.secret` → {"secret":42}, refused with `LAB-AUTH` by a `#[before]` hook unless
//!   the session data key "auth" is set; an `#[after]` hook logs every call (failures at info
//!   level, successes at debug level). A handshake whose
//!   `user` has `"refuse": true` is refused ("refused by lab"). `#[shutdown]` logs "lab shutting
//!   down"; `#[session_closed]` logs "lab heard session N close", with " (uid U)" when the
//!   session had bound one.
//! - Hot reload: `lab.counter` → {"counter","generation"} counts calls; the state handed over
//!   keeps the counter and the new instance's generation is the old one's plus one
//!   (`lab.generation` → {"generation"}). A configuration {"fail":true} makes `init` fail.
//! - Sharded instances: `lab.instance` → {"instance","calls"}: a random id the instance picks
//!   in `init` (so two instances of lab answer different ids) and the handler calls this
//!   instance has served.
//! - Protobuf: `lab.protoAdd` takes `AddRequest { int32 a = 1; int32 b = 2; }` and answers
//!   `AddResponse { int32 sum = 1; }`. A negative `a` or `b` answers `LAB-NEGATIVE` "negative
//!   numbers are not added" with metadata {"field": "a" or "b"} (`a` when both are); a sum
//!   that does not fit in an int32 answers `LAB-OVERFLOW`; bytes that do not decode answer
//!   `PIT-400`. (Error answers are encoded by the host, in its serializer's form.)
//! - Cluster: `lab.rpc` {"route","body"} calls `route` on another server with `body` as JSON
//!   and answers {"reply"} (the remote answer), or the remote error as it came;
//!   `lab.server` → {"server": {"type","id"}} or {"server": null} when standalone.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::hint::black_box;
use std::time::Duration;

use pitaya_guest::prelude::*;
use pitaya_guest::{cluster, log, timers, users};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

struct Lab {
    /// Set while a handler or timer call runs: a call that finds it set is an overlap.
    busy: bool,
    overlaps: u64,
    calls: u64,
    timer_fires: u64,
    /// What each running timer is for.
    timers: HashMap<TimerId, Purpose>,
    /// 1 for a fresh instance, one more for each hot reload.
    generation: u32,
    counter: u64,
    /// Tells this instance from the component's other instances (`lab.instance`).
    instance: u64,
}

enum Purpose {
    /// `lab.every`: pushes `onTick` to `session`, `count` times in all.
    Ticks {
        session: SessionId,
        fired: u32,
        count: u32,
    },
    /// `lab.after`: pushes `onAfter` to `session` once.
    Once { session: SessionId },
}

/// The state handed to the next build on hot reload.
#[derive(Serialize, Deserialize)]
struct Saved {
    generation: u32,
    counter: u64,
}

#[derive(Deserialize)]
struct Uid {
    uid: String,
}

#[derive(Deserialize)]
struct Key {
    key: String,
}

#[derive(Deserialize)]
struct KeyValue {
    key: String,
    value: Value,
}

#[derive(Deserialize)]
struct GroupName {
    group: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Broadcast {
    group: String,
    route: String,
    body: Value,
    #[serde(default)]
    except_me: bool,
}

#[derive(Deserialize)]
struct PushUids {
    uids: Vec<String>,
    route: String,
    body: Value,
}

#[derive(Deserialize)]
struct Rpc {
    route: String,
    #[serde(default)]
    body: Value,
}

#[derive(Deserialize)]
struct Kick {
    uid: Option<String>,
    reason: Option<String>,
}

#[derive(Deserialize)]
struct Every {
    ms: u32,
    count: u32,
}

#[derive(Deserialize)]
struct After {
    ms: u32,
}

#[derive(Deserialize)]
struct Cancel {
    timer: TimerId,
}

#[derive(Deserialize)]
struct Work {
    iterations: u64,
}

/// `lab.protoAdd`'s request: `message AddRequest { int32 a = 1; int32 b = 2; }`.
#[derive(Clone, PartialEq, pitaya_guest::prost::Message)]
#[prost(prost_path = "::pitaya_guest::prost")]
struct AddRequest {
    #[prost(int32, tag = "1")]
    a: i32,
    #[prost(int32, tag = "2")]
    b: i32,
}

/// `lab.protoAdd`'s answer: `message AddResponse { int32 sum = 1; }`.
#[derive(Clone, PartialEq, pitaya_guest::prost::Message)]
#[prost(prost_path = "::pitaya_guest::prost")]
struct AddResponse {
    #[prost(int32, tag = "1")]
    sum: i32,
}

#[component(name = "lab")]
impl Lab {
    /// A configuration `{"fail": true}` makes loading fail; anything else (or none) is fine.
    #[init]
    fn init(config: Vec<u8>) -> Result<Self, String> {
        if !config.iter().all(u8::is_ascii_whitespace) {
            let config: Value = serde_json::from_slice(&config)
                .map_err(|error| format!("the configuration is not JSON: {error}"))?;
            if config["fail"] == true {
                return Err("configured to fail".into());
            }
        }
        Ok(Lab {
            busy: false,
            overlaps: 0,
            calls: 0,
            timer_fires: 0,
            timers: HashMap::new(),
            generation: 1,
            counter: 0,
            // std seeds its hasher keys from WASI random, which each instance draws anew.
            instance: std::collections::hash_map::RandomState::new().hash_one(0_u8),
        })
    }

    #[request]
    fn bind(session: &Session, Uid { uid }: Uid) -> Result<Value> {
        session
            .bind(&uid)
            .map_err(|error| HandlerError::new("LAB-BIND", error.to_string()))?;
        Ok(json!({ "ok": true }))
    }

    #[request]
    fn whoami(session: &Session) -> Result<Value> {
        Ok(json!({
            "session": session.id(),
            "uid": session.uid(),
            "remote": session.remote_address().map(|address| address.to_string()),
            "handshake": session.handshake(),
        }))
    }

    #[request(name = "setData")]
    fn set_data(session: &Session, KeyValue { key, value }: KeyValue) -> Result<Value> {
        session.set(&key, &value)?;
        Ok(json!({ "ok": true }))
    }

    #[request(name = "getData")]
    fn get_data(session: &Session, Key { key }: Key) -> Result<Value> {
        Ok(json!({ "value": session.get::<Value>(&key) }))
    }

    #[request]
    fn join(session: &Session, GroupName { group }: GroupName) -> Result<Value> {
        let group = Group::named(group);
        group.add(session);
        Ok(json!({ "count": group.count() }))
    }

    #[request]
    fn leave(session: &Session, GroupName { group }: GroupName) -> Result<Value> {
        Ok(json!({ "removed": Group::named(group).remove(session) }))
    }

    #[request]
    fn members(session: &Session, GroupName { group }: GroupName) -> Result<Value> {
        let group = Group::named(group);
        Ok(json!({
            "members": group.members(),
            "count": group.count(),
            "containsMe": group.contains(session),
        }))
    }

    #[request(name = "deleteGroup")]
    fn delete_group(GroupName { group }: GroupName) -> Result<Value> {
        Ok(json!({ "deleted": Group::named(group).delete() }))
    }

    #[request]
    fn broadcast(session: &Session, request: Broadcast) -> Result<Value> {
        let group = Group::named(request.group);
        let queued = if request.except_me {
            group.broadcast_except(&request.route, &request.body, session)
        } else {
            group.broadcast(&request.route, &request.body)
        };
        Ok(json!({ "queued": queued }))
    }

    #[request(name = "pushUids")]
    fn push_uids(request: PushUids) -> Result<Value> {
        let offline = users::push(&request.uids, &request.route, &request.body);
        Ok(json!({ "offline": offline }))
    }

    #[request(name = "kickUid")]
    fn kick_uid(request: Kick) -> Result<Value> {
        let uid = request
            .uid
            .ok_or_else(|| HandlerError::bad_request("lab.kickUid needs a uid"))?;
        let kicked = match request.reason {
            Some(reason) => users::kick_with_reason(&uid, &reason),
            None => users::kick(&uid),
        };
        Ok(json!({ "kicked": kicked }))
    }

    #[request]
    fn rpc(Rpc { route, body }: Rpc) -> Result<Value> {
        let reply: Value = cluster::rpc(&route, &body)?;
        Ok(json!({ "reply": reply }))
    }

    #[request]
    fn server() -> Result<Value> {
        let server = cluster::server().map(|s| json!({ "type": s.server_type, "id": s.id }));
        Ok(json!({ "server": server }))
    }

    /// Kicks the caller; the answer may or may not reach the client before the kick does.
    #[request(name = "kickMe")]
    fn kick_me(session: &Session, request: Option<Kick>) -> Result<Value> {
        match request.and_then(|request| request.reason) {
            Some(reason) => session.kick_with_reason(&reason),
            None => session.kick(),
        }
        Ok(json!({ "ok": true }))
    }

    #[request]
    fn every(&mut self, session: &Session, Every { ms, count }: Every) -> Result<Value> {
        if count == 0 {
            return Err(HandlerError::bad_request("count must be at least 1"));
        }
        let timer = timers::every(Duration::from_millis(ms.into()));
        let session = session.id();
        let purpose = Purpose::Ticks {
            session,
            fired: 0,
            count,
        };
        self.timers.insert(timer, purpose);
        Ok(json!({ "timer": timer }))
    }

    #[request]
    fn after(&mut self, session: &Session, After { ms }: After) -> Result<Value> {
        let timer = timers::after(Duration::from_millis(ms.into()));
        let purpose = Purpose::Once {
            session: session.id(),
        };
        self.timers.insert(timer, purpose);
        Ok(json!({ "timer": timer }))
    }

    #[request]
    fn cancel(&mut self, Cancel { timer }: Cancel) -> Result<Value> {
        self.timers.remove(&timer);
        Ok(json!({ "cancelled": timer.cancel() }))
    }

    /// Keeps the instance busy for a while, with arithmetic the optimiser cannot skip.
    #[request]
    fn work(Work { iterations }: Work) -> Result<Value> {
        let mut value: u64 = 1;
        for i in 0..iterations {
            value = black_box(
                value
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(i),
            );
        }
        black_box(value);
        Ok(json!({ "done": iterations }))
    }

    #[request]
    fn overlaps(&self) -> Result<Value> {
        Ok(json!({
            "overlaps": self.overlaps,
            "timerFires": self.timer_fires,
            "calls": self.calls,
        }))
    }

    /// Guarded by the `auth` hook below.
    #[request]
    fn secret() -> Result<Value> {
        Ok(json!({ "secret": 42 }))
    }

    #[request]
    fn counter(&mut self) -> Result<Value> {
        self.counter += 1;
        Ok(json!({ "counter": self.counter, "generation": self.generation }))
    }

    #[request]
    fn generation(&self) -> Result<Value> {
        Ok(json!({ "generation": self.generation }))
    }

    #[request]
    fn instance(&self) -> Result<Value> {
        Ok(json!({ "instance": self.instance, "calls": self.calls }))
    }

    /// Adds two non-negative numbers, in protobuf.
    #[request(name = "protoAdd")]
    fn proto_add(Proto(AddRequest { a, b }): Proto<AddRequest>) -> Result<Proto<AddResponse>> {
        for (field, value) in [("a", a), ("b", b)] {
            if value < 0 {
                return Err(
                    HandlerError::new("LAB-NEGATIVE", "negative numbers are not added")
                        .with_metadata("field", field),
                );
            }
        }
        let sum = a.checked_add(b).ok_or_else(|| {
            HandlerError::new(
                "LAB-OVERFLOW",
                format!("{a} + {b} does not fit in an int32"),
            )
        })?;
        Ok(Proto(AddResponse { sum }))
    }

    /// Every handler call starts here: counts it, and notes an overlap.
    #[before]
    fn enter(&mut self) -> Result<(), HandlerError> {
        self.calls += 1;
        self.start();
        Ok(())
    }

    /// `lab.secret` needs the session data key "auth".
    #[before]
    fn auth(&mut self, session: &Session, handler: &str) -> Result<(), HandlerError> {
        if handler == "secret" && session.get_raw("auth").is_none() {
            return Err(HandlerError::new(
                "LAB-AUTH",
                "lab.secret needs the session data key \"auth\"",
            ));
        }
        Ok(())
    }

    /// Every handler call ends here, refused or not, and is logged: failures at info level,
    /// the (many) successes at debug level.
    #[after]
    fn leave_call(&mut self, session: SessionId, handler: &str, outcome: &Outcome) {
        self.busy = false;
        match outcome {
            Ok(answer) => log::debug!(
                "lab.{handler} for session {session}: ok, {} bytes",
                answer.len()
            ),
            Err(error) => log::info!("lab.{handler} for session {session}: {error}"),
        }
    }

    #[timer]
    fn fired(&mut self, timer: TimerId) {
        self.start();
        self.timer_fires += 1;
        match self.timers.get_mut(&timer) {
            Some(Purpose::Ticks {
                session,
                fired,
                count,
            }) => {
                *fired += 1;
                session.session().push("onTick", &json!({ "n": *fired }));
                if *fired >= *count {
                    timer.cancel();
                    self.timers.remove(&timer);
                }
            }
            Some(Purpose::Once { session }) => {
                session
                    .session()
                    .push("onAfter", &json!({ "timer": timer }));
                self.timers.remove(&timer);
            }
            // A timer of an instance this one replaced (its purpose went with it).
            None => log::warn!("timer {timer} fired, but this instance did not start it"),
        }
        self.busy = false;
    }

    #[validate_handshake]
    fn admit(&mut self, handshake: Handshake) -> Result<(), String> {
        if handshake.user["refuse"] == true {
            return Err("refused by lab".into());
        }
        Ok(())
    }

    #[shutdown]
    fn stop(&mut self) {
        log::info!("lab shutting down");
    }

    #[session_closed]
    fn closed(&mut self, session: SessionId) {
        // The closed session's uid can still be read while this hook runs.
        match session.session().uid() {
            Some(uid) => log::info!("lab heard session {session} close (uid {uid})"),
            None => log::info!("lab heard session {session} close"),
        }
    }

    #[export_state]
    fn save(&self) -> Json<Saved> {
        Json(Saved {
            generation: self.generation,
            counter: self.counter,
        })
    }

    #[import_state]
    fn load(&mut self, Json(saved): Json<Saved>) {
        self.generation = saved.generation.saturating_add(1);
        self.counter = saved.counter;
    }

    /// Marks the start of a handler or timer call.
    fn start(&mut self) {
        if self.busy {
            self.overlaps += 1;
        }
        self.busy = true;
    }
}

#[cfg(test)]
mod tests;
