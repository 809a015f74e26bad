//! The host against a fake Go pitaya peer written from cluster.md alone: the host as a backend behind a fake
//! Go frontend, and the host as a frontend in front of a fake Go backend. Each message the host sends is
//! decoded with the tests' own protobuf definitions and checked field by field against §3 and §4.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures_util::StreamExt;
use pitaya_tests::checks::{call, ensure_error, ensure_success};
use pitaya_tests::cluster::messages::{BindMsg, KickAnswer, MsgType, Response, RpcType};
use pitaya_tests::cluster::peer::{
    self, DEFAULT_PREFIX, ServerEntry, SysCall, ensure_ack, wait_server,
};
use pitaya_tests::cluster::{FakeBackend, FakeFrontend, Services};
use pitaya_tests::{Server, ServerOptions, Transport};
use prost::Message as _;
use serde_json::{Value, json};

/// The wait for one event; generous for a busy 2-core machine, still far below a hang.
const WAIT: Duration = Duration::from_secs(5);
/// The bound on a whole test.
const TEST_LIMIT: Duration = Duration::from_secs(90);

fn json_of(bytes: &[u8], what: &str) -> Result<Value> {
    serde_json::from_slice(bytes)
        .with_context(|| format!("{what} is not JSON: {:?}", String::from_utf8_lossy(bytes)))
}

/// The data of a successful Sys reply, as JSON.
fn success_json(r: &Response, what: &str) -> Result<Value> {
    ensure!(r.error.is_none(), "{what}: error reply {:?}", r.error);
    json_of(&r.data, what)
}

/// What every message from the host must carry (§3 Metadata): a non-empty JSON object whose reqTimeout, when
/// present, is a string; peer.id and peer.service name the host.
fn ensure_metadata(raw: &[u8], host_id: &str, host_type: &str, what: &str) -> Result<Value> {
    let md = json_of(raw, &format!("{what}: metadata"))?;
    let obj = md
        .as_object()
        .with_context(|| format!("{what}: metadata is not a JSON object: {md}"))?;
    ensure!(
        !obj.is_empty(),
        "{what}: metadata is an empty object (a Go peer answers PIT-500)"
    );
    if let Some(t) = obj.get("reqTimeout") {
        let t = t.as_str().with_context(|| {
            format!("{what}: reqTimeout must be a string (a Go peer crashes otherwise): {md}")
        })?;
        ensure!(
            go_duration_ms(t).is_some(),
            "{what}: reqTimeout {t:?} is not a Go duration such as \"5s\""
        );
    }
    ensure!(
        md["peer.id"] == host_id,
        "{what}: peer.id should be the host's id {host_id}: {md}"
    );
    ensure!(
        md["peer.service"] == host_type,
        "{what}: peer.service should be {host_type}: {md}"
    );
    Ok(md)
}

/// Milliseconds in a Go `time.Duration` string such as `5s`, `1m30s`, `300ms` or `1.5h`; `None` when Go's
/// `time.ParseDuration` would refuse it.
fn go_duration_ms(s: &str) -> Option<f64> {
    const UNITS: [(&str, f64); 7] = [
        ("ns", 1e-6),
        ("us", 1e-3),
        ("µs", 1e-3),
        ("ms", 1.0),
        ("s", 1e3),
        ("m", 60e3),
        ("h", 3600e3),
    ];
    if s == "0" {
        return Some(0.0);
    }
    if s.is_empty() {
        return None;
    }
    let mut rest = s;
    let mut total = 0.0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&n| n > 0)?;
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        // Longest unit first, so that "ms" is not read as "m" then "s".
        let (unit, scale) = UNITS
            .iter()
            .filter(|(u, _)| rest.starts_with(u))
            .max_by_key(|(u, _)| u.len())?;
        total += number * scale;
        rest = &rest[unit.len()..];
    }
    Some(total)
}

#[test]
fn go_durations() {
    assert_eq!(go_duration_ms("5s"), Some(5000.0));
    assert_eq!(go_duration_ms("300ms"), Some(300.0));
    assert_eq!(go_duration_ms("1m30s"), Some(90_000.0));
    assert_eq!(go_duration_ms("5000"), None);
    assert_eq!(go_duration_ms("5 s"), None);
    assert_eq!(go_duration_ms(""), None);
}

/// A sys call from the host to the fake frontend is a User request with a msg and no session.
fn ensure_sys_call_shape(c: &SysCall, host_id: &str) -> Result<()> {
    ensure!(
        c.request.r#type == RpcType::User as i32,
        "{}: a sys call is a User request, got type {}",
        c.route,
        c.request.r#type
    );
    ensure!(
        c.request.msg.is_some(),
        "a request without msg crashes older Go peers: {:?}",
        c.request
    );
    ensure!(
        c.request.session.is_none(),
        "{}: a User request carries no session: {:?}",
        c.route,
        c.request
    );
    // Go's buildRequest names a frontend only when the caller is one; the host is a backend.
    ensure!(
        c.request.frontend_id.is_empty(),
        "{}: a backend's call names no frontend, got {:?}",
        c.route,
        c.request.frontend_id
    );
    ensure_metadata(&c.request.metadata, host_id, "room", &c.route)?;
    Ok(())
}

// ------------------------------------------------------------------------------------------------ host as backend

struct BackendSetup {
    _services: Services,
    fe: FakeFrontend,
    host: Server,
    target: ServerEntry,
}

async fn host_backend_behind_fake_frontend() -> Result<BackendSetup> {
    let services = Services::start().await?;
    let fe = FakeFrontend::start(&services, "connector", DEFAULT_PREFIX).await?;
    let host = Server::start(
        ServerOptions::default()
            .components(&["chat.wasm", "lab.wasm"])
            .label("room")
            .cluster(services.host("room", false)),
    )
    .await?;
    let id = host.id()?.to_owned();
    let mut etcd = services.etcd.client().await?;
    let target = wait_server(&mut etcd, DEFAULT_PREFIX, WAIT, |e| e.id == id).await?;
    Ok(BackendSetup {
        _services: services,
        fe,
        host,
        target,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_backend_answers_forwarded_requests() -> Result<()> {
    tokio::time::timeout(TEST_LIMIT, async {
        let BackendSetup {
            _services,
            fe,
            host,
            target,
        } = host_backend_behind_fake_frontend().await?;
        ensure!(
            target.server_type == "room" && !target.frontend,
            "{target:?}"
        );
        fe.add_session(7, json!({"ipversion": "ipv4"}));

        let r = fe
            .forward(
                &target,
                7,
                1,
                MsgType::Request,
                "room.lab.work",
                br#"{"iterations":10}"#,
            )
            .await?;
        ensure!(success_json(&r.response, "room.lab.work")? == json!({"done": 10}));

        // A notify is answered with the bytes `ack`.
        let n = fe
            .forward(
                &target,
                7,
                0,
                MsgType::Notify,
                "room.room.message",
                br#"{"name":"x","content":"hi"}"#,
            )
            .await?;
        ensure!(
            n.response == Response::data("ack"),
            "a notify should be answered with data ack: {:?}",
            n.response
        );

        // An unknown handler is PIT-404, as an error (not data).
        let e = fe
            .forward(&target, 7, 2, MsgType::Request, "room.lab.nope", b"{}")
            .await?;
        let err = e
            .response
            .error
            .as_ref()
            .context("room.lab.nope should answer an error")?;
        ensure!(err.code == "PIT-404", "room.lab.nope: {err:?}");

        // The session the backend's component sees is the one in the request: uid and data as the frontend
        // holds them.
        fe.add_bound_session(
            9,
            "pre-bound",
            json!({"ipversion": "ipv4", "level": 5, "auth": "yes"}),
        );
        let r = fe
            .forward(
                &target,
                9,
                4,
                MsgType::Request,
                "room.lab.getData",
                br#"{"key":"level"}"#,
            )
            .await?;
        ensure!(success_json(&r.response, "room.lab.getData")? == json!({"value": 5}));
        let r = fe
            .forward(&target, 9, 5, MsgType::Request, "room.lab.whoami", b"{}")
            .await?;
        let who = success_json(&r.response, "room.lab.whoami")?;
        ensure!(
            who["uid"] == "pre-bound",
            "the backend should see the request's uid: {who}"
        );
        // lab.secret's hook reads session data: refused without "auth", served with it.
        let r = fe
            .forward(&target, 9, 6, MsgType::Request, "room.lab.secret", b"{}")
            .await?;
        ensure!(success_json(&r.response, "room.lab.secret")? == json!({"secret": 42}));
        let r = fe
            .forward(&target, 7, 7, MsgType::Request, "room.lab.secret", b"{}")
            .await?;
        let err = r
            .response
            .error
            .as_ref()
            .context("lab.secret without auth should be refused")?;
        ensure!(err.code == "LAB-AUTH", "lab.secret without auth: {err:?}");

        // Keys a Go frontend adds when timing and tracing (v2 and v3 spellings) are passed over, not refused.
        fe.add_metadata("request.id", json!("4f1b2c3d"));
        fe.add_metadata("req-route", json!("room.lab.work"));
        fe.add_metadata("req-start-time", json!(1_764_150_000_000_000_000u64));
        fe.add_metadata(
            "otel-span",
            json!({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}),
        );
        fe.add_metadata("opentracing-span", json!({"uber-trace-id": "1:2:0:1"}));
        let r = fe
            .forward(
                &target,
                7,
                8,
                MsgType::Request,
                "room.lab.work",
                br#"{"iterations":2}"#,
            )
            .await?;
        ensure!(
            success_json(&r.response, "room.lab.work with tracing metadata")? == json!({"done": 2})
        );

        // A component error keeps its code.
        let e = fe
            .forward(&target, 7, 3, MsgType::Request, "room.lab.kickUid", b"{}")
            .await?;
        let err = e
            .response
            .error
            .as_ref()
            .context("lab.kickUid without uid should answer an error")?;
        ensure!(err.code == "PIT-400", "lab.kickUid without uid: {err:?}");
        let with_headers = fe.messages_with_headers();
        ensure!(
            with_headers.is_empty(),
            "§2: no NATS headers, but these came with some: {with_headers:?}"
        );
        drop(host);
        Ok(())
    })
    .await
    .context("the test took too long")?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_backend_binds_pushes_session_data_and_uids_through_the_frontend() -> Result<()> {
    tokio::time::timeout(TEST_LIMIT, async {
        let BackendSetup {
            _services,
            fe,
            host,
            target,
        } = host_backend_behind_fake_frontend().await?;
        let host_id = host.id()?.to_owned();
        fe.add_session(7, json!({"ipversion": "ipv4"}));

        // lab.bind: sys.bindsession reaches the frontend before the reply to the forwarded request.
        let r = fe
            .forward(
                &target,
                7,
                1,
                MsgType::Request,
                "room.lab.bind",
                br#"{"uid":"u-42"}"#,
            )
            .await?;
        ensure!(success_json(&r.response, "room.lab.bind")? == json!({"ok": true}));
        let bind = fe
            .sys_calls()
            .take("sys.bindsession", WAIT, |c| c.route == "sys.bindsession")
            .await?;
        ensure!(
            bind.stamp < r.stamp,
            "sys.bindsession arrived after the reply to room.lab.bind (stamps {} and {})",
            bind.stamp,
            r.stamp
        );
        ensure_sys_call_shape(&bind, &host_id)?;
        let s = bind
            .session
            .as_ref()
            .context("bindsession without a Session")?;
        ensure!(
            s.id == 7 && s.uid == "u-42",
            "bindsession should carry Session{{7, u-42}}: {s:?}"
        );
        ensure_ack(&bind.answer)?;
        ensure!(fe.session(7).context("session 7")?.uid == "u-42");

        // lab.setData: sys.pushsession carries the whole session data.
        let r = fe
            .forward(
                &target,
                7,
                2,
                MsgType::Request,
                "room.lab.setData",
                br#"{"key":"score","value":12}"#,
            )
            .await?;
        ensure!(success_json(&r.response, "room.lab.setData")? == json!({"ok": true}));
        let push = fe
            .sys_calls()
            .take("sys.pushsession", WAIT, |c| c.route == "sys.pushsession")
            .await?;
        ensure_sys_call_shape(&push, &host_id)?;
        // The contract does not order pushsession and the reply; say which came first.
        eprintln!(
            "sys.pushsession arrived {} the reply to room.lab.setData",
            if push.stamp < r.stamp {
                "before"
            } else {
                "after"
            }
        );
        let s = push
            .session
            .as_ref()
            .context("pushsession without a Session")?;
        ensure!(
            s.id == 7 && s.uid == "u-42",
            "pushsession should name session 7 / u-42: {s:?}"
        );
        let data = json_of(&s.data, "pushsession data")?;
        ensure!(
            data == json!({"ipversion": "ipv4", "score": 12}),
            "pushsession should carry the whole session data: {data}"
        );
        ensure!(fe.session(7).context("session 7")?.data == data);

        // The backend reads session data from the request: the frontend's copy now has score.
        let r = fe
            .forward(
                &target,
                7,
                3,
                MsgType::Request,
                "room.lab.getData",
                br#"{"key":"score"}"#,
            )
            .await?;
        ensure!(success_json(&r.response, "room.lab.getData")? == json!({"value": 12}));

        // A push to a bound uid: Push{route, uid, data} on pitaya/connector/user/u-42/push.
        let r = fe
            .forward(
                &target,
                7,
                4,
                MsgType::Request,
                "room.lab.pushUids",
                br#"{"uids":["u-42"],"route":"onPing","body":{"x":1}}"#,
            )
            .await?;
        success_json(&r.response, "room.lab.pushUids")?;
        let (_, p) = fe.wait_push("u-42", WAIT).await?;
        ensure!(p.route == "onPing" && p.uid == "u-42", "{p:?}");
        ensure!(json_of(&p.data, "push data")? == json!({"x": 1}), "{p:?}");

        // A kick by uid: KickMsg on pitaya/connector/user/u-42/kick.
        let r = fe
            .forward(
                &target,
                7,
                5,
                MsgType::Request,
                "room.lab.kickUid",
                br#"{"uid":"u-42"}"#,
            )
            .await?;
        success_json(&r.response, "room.lab.kickUid")?;
        let k = fe.wait_kick("u-42", WAIT).await?;
        ensure!(k.user_id == "u-42");

        // pitaya's own flow: room.join binds a session without uid (to the id the component sees, which
        // the contract leaves to the backend), then pushes onMembers to that uid through the frontend.
        fe.add_session(8, json!({"ipversion": "ipv4"}));
        let r = fe
            .forward(&target, 8, 1, MsgType::Request, "room.room.join", b"{}")
            .await?;
        ensure!(
            success_json(&r.response, "room.room.join")? == json!({"code": 0, "result": "success"})
        );
        let bind = fe
            .sys_calls()
            .take("sys.bindsession of session 8", WAIT, |c| {
                c.route == "sys.bindsession" && c.session.as_ref().is_some_and(|s| s.id == 8)
            })
            .await?;
        ensure!(
            bind.stamp < r.stamp,
            "room.join's bindsession arrived after its reply"
        );
        let uid = bind
            .session
            .as_ref()
            .map(|s| s.uid.clone())
            .unwrap_or_default();
        ensure!(!uid.is_empty(), "room.join bound an empty uid");
        ensure!(fe.session(8).context("session 8")?.uid == uid);
        let (_, members) = fe.wait_push(&uid, WAIT).await?;
        ensure!(members.route == "onMembers", "{members:?}");
        let m = json_of(&members.data, "onMembers")?;
        ensure!(
            m["members"]
                .as_array()
                .is_some_and(|a| a.contains(&json!(uid))),
            "onMembers should list {uid}: {m}"
        );

        // Every sys call carried metadata a Go frontend accepts.
        for c in fe.sys_calls().all() {
            ensure_sys_call_shape(&c, &host_id)?;
        }
        let with_headers = fe.messages_with_headers();
        ensure!(
            with_headers.is_empty(),
            "§2: no NATS headers, but these came with some: {with_headers:?}"
        );
        drop(host);
        Ok(())
    })
    .await
    .context("the test took too long")?
}

/// §3 Metadata, "pass unknown keys through": the calls a backend makes while it serves a forwarded
/// request (here `sys.bindsession`, and `sys.pushsession` sent later from a queue) carry that
/// request's keys on, as pitaya propagates a handler's context, with the host as the peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_passes_the_metadata_it_was_called_with_on() -> Result<()> {
    tokio::time::timeout(TEST_LIMIT, async {
        let BackendSetup {
            _services,
            fe,
            host,
            target,
        } = host_backend_behind_fake_frontend().await?;
        let host_id = host.id()?.to_owned();
        fe.add_session(9, json!({"ipversion": "ipv4"}));
        let trace =
            json!({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"});
        fe.add_metadata("otel-span", trace.clone());
        fe.add_metadata("x-game", json!("carry-me"));
        fe.add_metadata("req-route", json!("connector.room.begin"));
        let calls = [
            ("room.lab.bind", &br#"{"uid":"u-9"}"#[..], "sys.bindsession"),
            (
                "room.lab.setData",
                br#"{"key":"k","value":1}"#,
                "sys.pushsession",
            ),
        ];
        for (id, (route, body, sys)) in (1..).zip(calls) {
            let r = fe
                .forward(&target, 9, id, MsgType::Request, route, body)
                .await?;
            success_json(&r.response, route)?;
            let call = fe
                .sys_calls()
                .take(sys, WAIT, |c| {
                    c.route == sys && c.session.as_ref().is_some_and(|s| s.id == 9)
                })
                .await?;
            ensure_sys_call_shape(&call, &host_id)?;
            let md = &call.metadata;
            ensure!(
                md["otel-span"] == trace && md["x-game"] == "carry-me",
                "{sys}, made while serving {route}, must carry the keys it came with: {md}"
            );
            ensure!(
                md["req-route"] == "connector.room.begin",
                "{sys} must keep the route that began the chain: {md}"
            );
        }
        drop(host);
        Ok(())
    })
    .await
    .context("the test took too long")?
}

// ------------------------------------------------------------------------------------------------ host as frontend

struct FrontendSetup {
    _services: Services,
    be: FakeBackend,
    host: Server,
}

async fn host_frontend_before_fake_backend() -> Result<FrontendSetup> {
    let services = Services::start().await?;
    // Registered before the host starts, so the host's first read of discovery finds it.
    let be = FakeBackend::start(&services, "room", DEFAULT_PREFIX).await?;
    let host = Server::start(
        ServerOptions::default()
            .components(&["lab.wasm"])
            .label("connector")
            .cluster(services.host("connector", true)),
    )
    .await?;
    Ok(FrontendSetup {
        _services: services,
        be,
        host,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_frontend_forwards_to_a_go_backend() -> Result<()> {
    tokio::time::timeout(TEST_LIMIT, async {
        let FrontendSetup {
            _services,
            be,
            host,
        } = host_frontend_before_fake_backend().await?;
        let host_id = host.id()?.to_owned();
        let mut c = host.connect_ready(Transport::Tcp).await?;

        // The forwarded request, field by field.
        let id = c.next_id();
        c.send_request(id, "room.room.join", br#"{"a":1}"#).await?;
        let r = match be.take_request("room.room.join", WAIT).await {
            Ok(r) => r,
            Err(e) => {
                let got = c.unclaimed_messages();
                anyhow::bail!("{e:#}\nthe client got meanwhile: {got:#?}");
            }
        };
        ensure!(
            r.request.r#type == RpcType::Sys as i32,
            "a forward is a Sys request: {:?}",
            r.request
        );
        let m = r.msg()?;
        ensure!(
            m.id == id,
            "msg.id should be the client's message id {id}: {m:?}"
        );
        ensure!(
            m.route == "room.room.join",
            "msg.route should be the full route: {m:?}"
        );
        ensure!(
            m.data == br#"{"a":1}"#,
            "msg.data should be the payload as sent: {m:?}"
        );
        ensure!(
            m.r#type == MsgType::Request as i32,
            "msg.type should be Request: {m:?}"
        );
        let s = r.session()?;
        ensure!(s.uid.is_empty(), "an unbound session has no uid: {s:?}");
        let data = json_of(&s.data, "session data")?;
        ensure!(
            data.is_object() && data["ipversion"] == "ipv4",
            "session data should hold ipversion ipv4: {data}"
        );
        ensure!(
            r.request.frontend_id == host_id,
            "frontendID should be the host's id {host_id}: {:?}",
            r.request.frontend_id
        );
        let md = ensure_metadata(&r.metadata_raw, &host_id, "connector", "forwarded request")?;
        eprintln!("the host frontend's metadata: {md}");
        // What a Go frontend adds at the start of a chain, and a Go backend logs and times by.
        ensure!(
            md["req-route"] == "room.room.join",
            "req-route should be the client's route: {md}"
        );
        ensure!(
            md["request.id"].as_str().is_some_and(|id| !id.is_empty()),
            "request.id should be a string: {md}"
        );
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as f64;
        ensure!(
            md["req-start-time"]
                .as_u64()
                .is_some_and(|t| (now_ns - t as f64).abs() < 60e9),
            "req-start-time should be the time in nanoseconds, as a number: {md}"
        );
        // Go writes and reads it as a time.Duration string; the host's default timeout is 5 s.
        let timeout = md["reqTimeout"]
            .as_str()
            .with_context(|| format!("reqTimeout must be present, as a string: {md}"))?;
        ensure!(
            go_duration_ms(timeout) == Some(5000.0),
            "reqTimeout {timeout:?} should be a Go duration of 5 s (such as \"5s\")"
        );
        let sid = s.id;

        // The backend's data reaches the client unchanged.
        be.respond(&r, Response::data(r#"{"code":0,"result":"success"}"#))
            .await?;
        let answer = c.wait_response(id).await?;
        ensure_success(&answer, id)?;
        ensure!(
            answer.payload == br#"{"code":0,"result":"success"}"#,
            "payload {:?}",
            answer.text()
        );

        // The backend's error reaches the client as an error payload, metadata included.
        let id = c.next_id();
        c.send_request(id, "room.room.full", b"{}").await?;
        let r = be.take_request("room.room.full", WAIT).await?;
        ensure!(
            r.session()?.id == sid,
            "the same client is the same session"
        );
        let mut err = Response::error("ROOM-FULL", "the room is full");
        err.error
            .as_mut()
            .expect("built with an error")
            .metadata
            .insert("k".into(), "v".into());
        be.respond(&r, err).await?;
        let answer = c.wait_response(id).await?;
        let v = ensure_error(&answer, id, "ROOM-FULL")?;
        ensure!(
            v == json!({"code": "ROOM-FULL", "msg": "the room is full", "metadata": {"k": "v"}}),
            "{v}"
        );

        // A notify: Msg type Notify with id 0; the client gets nothing back.
        c.send_notify("room.room.message", br#"{"m":1}"#).await?;
        let r = be.take_request("room.room.message", WAIT).await?;
        let m = r.msg()?;
        ensure!(
            m.r#type == MsgType::Notify as i32 && m.id == 0,
            "a notify is type Notify with id 0: {m:?}"
        );
        ensure!(m.data == br#"{"m":1}"#);
        be.respond(&r, Response::data("ack")).await?;
        // Its own type's routes are served locally, with or without the type.
        let own = call(&mut c, "connector.lab.whoami", &json!({})).await?;
        ensure!(
            own["session"] == sid,
            "connector.lab.whoami should be served locally: {own}"
        );
        let whoami = call(&mut c, "lab.whoami", &json!({})).await?;
        ensure!(
            whoami["session"] == sid,
            "lab.whoami (local) and the forwarded session id differ: {whoami} vs {sid}"
        );
        let extra = c.unclaimed_messages();
        ensure!(
            extra.is_empty(),
            "the client got something for its notify: {extra:#?}"
        );
        let forwarded: Vec<String> = be.received().iter().map(|r| r.route().to_owned()).collect();
        ensure!(
            forwarded == ["room.room.join", "room.room.full", "room.room.message"],
            "the fake backend should have received exactly the room routes: {forwarded:?}"
        );
        let with_headers = be.messages_with_headers();
        ensure!(
            with_headers.is_empty(),
            "§2: no NATS headers, but these came with some: {with_headers:?}"
        );
        drop(host);
        Ok(())
    })
    .await
    .context("the test took too long")?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_backend_binds_pushes_and_kicks_through_the_host_frontend() -> Result<()> {
    tokio::time::timeout(TEST_LIMIT, async {
        let FrontendSetup {
            _services,
            mut be,
            host,
        } = host_frontend_before_fake_backend().await?;
        let watcher = _services.nats.client().await?;
        let mut bindings = watcher
            .subscribe(peer::bindings_subject("connector"))
            .await
            .context("subscribing the bindings subject")?;
        watcher.flush().await?;
        let host_id = host.id()?.to_owned();
        let fe_type = be.frontend_type(&host_id).await?;
        ensure!(fe_type == "connector", "the host registered as {fe_type}");
        let mut c = host.connect_ready(Transport::Tcp).await?;

        // The backend binds the session before it replies (the trap of §5: the frontend must keep serving).
        let id = c.next_id();
        c.send_request(id, "room.room.bindme", b"{}").await?;
        let r = be.take_request("room.room.bindme", WAIT).await?;
        let sid = r.session()?.id;
        let bound = be.bind_session(&fe_type, &host_id, sid, "bob").await?;
        ensure_ack(&bound).context("sys.bindsession while the forward waits")?;
        be.respond(&r, Response::data(r#"{"bound":true}"#)).await?;
        let answer = c.wait_response(id).await?;
        ensure_success(&answer, id)?;
        ensure!(answer.payload == br#"{"bound":true}"#);
        let who = call(&mut c, "lab.whoami", &json!({})).await?;
        ensure!(
            who["uid"] == "bob",
            "after sys.bindsession the session's uid should be bob: {who}"
        );
        // No local duplicate: the host publishes BindMsg{bob, its id} for the other frontends.
        let m = tokio::time::timeout(WAIT, bindings.next())
            .await
            .context("no BindMsg on pitaya/connector/bindings after the bind")?
            .context("the bindings subscription ended")?;
        let b =
            BindMsg::decode(m.payload.as_ref()).context("the bindings message is not a BindMsg")?;
        ensure!(
            b.uid == "bob" && b.fid == host_id,
            "BindMsg should be {{bob, {host_id}}}: {b:?}"
        );

        // A Push on the user subject reaches the client.
        be.publish_push(&fe_type, "bob", "onHi", br#"{"hi":1}"#)
            .await?;
        let p = c.wait_push("onHi").await?;
        ensure!(p.payload == br#"{"hi":1}"#, "push payload {:?}", p.text());

        // sys.pushsession replaces the data: the frontend's own component sees it, and so does the next forward.
        let ack = be
            .push_session(
                &fe_type,
                &host_id,
                sid,
                "bob",
                &json!({"ipversion": "ipv4", "level": 3}),
            )
            .await?;
        ensure_ack(&ack).context("sys.pushsession")?;
        let got = call(&mut c, "lab.getData", &json!({"key": "level"})).await?;
        ensure!(
            got == json!({"value": 3}),
            "lab.getData after sys.pushsession: {got}"
        );
        let id = c.next_id();
        c.send_request(id, "room.room.peek", b"{}").await?;
        let r = be.take_request("room.room.peek", WAIT).await?;
        let s = r.session()?;
        ensure!(
            s.uid == "bob",
            "the forward after the bind should carry uid bob: {s:?}"
        );
        let data = json_of(&s.data, "session data")?;
        ensure!(
            data["level"] == 3 && data["ipversion"] == "ipv4",
            "session data after sys.pushsession: {data}"
        );
        be.respond(&r, Response::data("{}")).await?;
        ensure_success(&c.wait_response(id).await?, id)?;

        // Data the frontend's own component sets travels with the next forward.
        call(
            &mut c,
            "lab.setData",
            &json!({"key": "color", "value": "red"}),
        )
        .await?;
        let id = c.next_id();
        c.send_request(id, "room.room.peek", b"{}").await?;
        let r = be.take_request("room.room.peek", WAIT).await?;
        let data = json_of(&r.session()?.data, "session data")?;
        ensure!(
            data == json!({"ipversion": "ipv4", "level": 3, "color": "red"}),
            "the forward after lab.setData should carry the whole session data: {data}"
        );
        be.respond(&r, Response::data("{}")).await?;
        ensure_success(&c.wait_response(id).await?, id)?;

        // Unknown sessions are PIT-000.
        for (what, reply) in [
            (
                "bindsession",
                be.bind_session(&fe_type, &host_id, 987_654_321, "x")
                    .await?,
            ),
            (
                "pushsession",
                be.push_session(&fe_type, &host_id, 987_654_321, "x", &json!({}))
                    .await?,
            ),
        ] {
            let e = reply
                .error
                .as_ref()
                .with_context(|| format!("sys.{what} of an unknown session succeeded"))?;
            ensure!(
                e.code == "PIT-000",
                "sys.{what} of an unknown session: {e:?}"
            );
        }

        // KickMsg on the kick subject kicks the client.
        be.publish_kick(&fe_type, "bob").await?;
        c.wait_kick().await.context("KickMsg on the kick subject")?;
        c.wait_closed().await?;

        // sys.kick answers KickAnswer{true} and kicks the client.
        let mut c2 = host.connect_ready(Transport::Ws).await?;
        let id = c2.next_id();
        c2.send_request(id, "room.room.bindme", b"{}").await?;
        let r = be.take_request("room.room.bindme", WAIT).await?;
        ensure_ack(
            &be.bind_session(&fe_type, &host_id, r.session()?.id, "eve")
                .await?,
        )?;
        be.respond(&r, Response::data("{}")).await?;
        ensure_success(&c2.wait_response(id).await?, id)?;
        let kicked = be.kick(&fe_type, &host_id, "eve").await?;
        let answer = KickAnswer::decode(peer::sys_reply_data(&kicked)?).with_context(|| {
            format!(
                "sys.kick's reply data is not a KickAnswer: {:02x?}",
                kicked.data
            )
        })?;
        ensure!(answer == KickAnswer { kicked: true }, "{answer:?}");
        c2.wait_kick().await.context("sys.kick")?;
        c2.wait_closed().await?;

        // Another frontend of the type binds a uid the host holds (its BindMsg): the host kicks its session.
        let mut c3 = host.connect_ready(Transport::Tcp).await?;
        let id = c3.next_id();
        c3.send_request(id, "room.room.bindme", b"{}").await?;
        let r = be.take_request("room.room.bindme", WAIT).await?;
        ensure_ack(
            &be.bind_session(&fe_type, &host_id, r.session()?.id, "zoe")
                .await?,
        )?;
        be.respond(&r, Response::data("{}")).await?;
        ensure_success(&c3.wait_response(id).await?, id)?;
        let other = BindMsg {
            uid: "zoe".into(),
            fid: peer::new_server_id(),
        };
        watcher
            .publish(
                peer::bindings_subject("connector"),
                other.encode_to_vec().into(),
            )
            .await?;
        watcher.flush().await?;
        c3.wait_kick()
            .await
            .context("a BindMsg of another frontend for zoe")?;
        c3.wait_closed().await?;
        let with_headers = be.messages_with_headers();
        ensure!(
            with_headers.is_empty(),
            "§2: no NATS headers, but these came with some: {with_headers:?}"
        );
        drop(host);
        Ok(())
    })
    .await
    .context("the test took too long")?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_rpc_is_a_user_request_to_the_go_backend() -> Result<()> {
    tokio::time::timeout(TEST_LIMIT, async {
        let FrontendSetup {
            _services,
            be,
            host,
        } = host_frontend_before_fake_backend().await?;
        let host_id = host.id()?.to_owned();
        let mut c = host.connect_ready(Transport::Tcp).await?;
        let me = call(&mut c, "lab.server", &json!({})).await?;
        ensure!(
            me == json!({"server": {"type": "connector", "id": host_id}}),
            "lab.server: {me}"
        );

        // §4 Server-to-server: type User, a msg with the route and data, no session, the usual metadata.
        let id = c.next_id();
        let body = json!({"route": "room.remote.sum", "body": {"a": 1, "b": 2}});
        c.send_request(id, "lab.rpc", body.to_string().as_bytes())
            .await?;
        let r = be.take_request("room.remote.sum", WAIT).await?;
        ensure!(
            r.request.r#type == RpcType::User as i32,
            "an rpc is a User request: {:?}",
            r.request
        );
        ensure!(
            r.request.session.is_none(),
            "a User request carries no session: {:?}",
            r.request
        );
        ensure_metadata(&r.metadata_raw, &host_id, "connector", "rpc")?;
        ensure!(
            json_of(&r.msg()?.data, "rpc data")? == json!({"a": 1, "b": 2}),
            "rpc data {:?}",
            String::from_utf8_lossy(&r.msg()?.data)
        );
        be.respond(&r, Response::data(r#"{"sum":3}"#)).await?;
        let answer = c.wait_response(id).await?;
        ensure_success(&answer, id)?;
        ensure!(
            answer.json()? == json!({"reply": {"sum": 3}}),
            "{}",
            answer.text()
        );

        // The remote error comes back as it came.
        let id = c.next_id();
        c.send_request(id, "lab.rpc", body.to_string().as_bytes())
            .await?;
        let r = be.take_request("room.remote.sum", WAIT).await?;
        be.respond(&r, Response::error("SUM-NO", "no sums today"))
            .await?;
        let answer = c.wait_response(id).await?;
        let v = ensure_error(&answer, id, "SUM-NO")?;
        ensure!(v["msg"] == "no sums today", "{v}");
        let with_headers = be.messages_with_headers();
        ensure!(
            with_headers.is_empty(),
            "§2: no NATS headers, but these came with some: {with_headers:?}"
        );
        Ok(())
    })
    .await
    .context("the test took too long")?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_that_cannot_reach_the_frontend_is_not_a_success() -> Result<()> {
    tokio::time::timeout(TEST_LIMIT, async {
        let services = Services::start().await?;
        // The frontend is live on NATS but not (yet) in the backend's discovery: registered elsewhere, as a
        // frontend whose PUT the backend has not seen. The forward carries its id and type all the same.
        let fe = FakeFrontend::start(&services, "connector", "elsewhere/").await?;
        let host = Server::start(
            ServerOptions::default()
                .components(&["lab.wasm"])
                .label("room")
                .cluster(services.host("room", false)),
        )
        .await?;
        let id = host.id()?.to_owned();
        let mut etcd = services.etcd.client().await?;
        let target = wait_server(&mut etcd, DEFAULT_PREFIX, WAIT, |e| e.id == id).await?;
        fe.add_session(3, json!({"ipversion": "ipv4"}));
        let r = fe
            .forward(
                &target,
                3,
                1,
                MsgType::Request,
                "room.lab.bind",
                br#"{"uid":"ghost"}"#,
            )
            .await?;
        let bound = fe
            .sys_calls()
            .all()
            .into_iter()
            .any(|c| c.route == "sys.bindsession");
        // Either the backend found the frontend anyway (its id and type are in the request), or the handler
        // learnt that the bind failed. A success the frontend never heard of leaves the user unbound.
        ensure!(
            r.response.error.is_some() || bound,
            "room.lab.bind answered {:?} but no sys.bindsession reached the frontend",
            String::from_utf8_lossy(&r.response.data)
        );
        Ok(())
    })
    .await
    .context("the test took too long")?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_right_after_startup_reaches_the_frontend() -> Result<()> {
    tokio::time::timeout(TEST_LIMIT, async {
        let services = Services::start().await?;
        // The frontend is registered before the backend starts, so the backend's first read of discovery
        // must find it; the backend is used the moment it says it is ready.
        let fe = FakeFrontend::start(&services, "connector", DEFAULT_PREFIX).await?;
        let host = Server::start(
            ServerOptions::default()
                .components(&["lab.wasm"])
                .label("room")
                .cluster(services.host("room", false)),
        )
        .await?;
        let target = ServerEntry {
            key: format!("pitaya/servers/room/{}", host.id()?),
            id: host.id()?.to_owned(),
            server_type: "room".into(),
            frontend: false,
            hostname: String::new(),
            json: Value::Null,
            lease: 0,
        };
        fe.add_session(5, json!({"ipversion": "ipv4"}));
        let r = fe
            .forward(
                &target,
                5,
                1,
                MsgType::Request,
                "room.lab.bind",
                br#"{"uid":"early"}"#,
            )
            .await?;
        ensure!(success_json(&r.response, "room.lab.bind")? == json!({"ok": true}));
        let r = fe
            .forward(
                &target,
                5,
                2,
                MsgType::Request,
                "room.lab.pushUids",
                br#"{"uids":["early"],"route":"onEarly","body":{}}"#,
            )
            .await?;
        let answer = success_json(&r.response, "room.lab.pushUids")?;
        let (_, p) = fe.wait_push("early", WAIT).await.with_context(|| {
            format!("a push by uid right after the backend said cluster:// (it answered {answer})")
        })?;
        ensure!(p.route == "onEarly", "{p:?}");
        Ok(())
    })
    .await
    .context("the test took too long")?
}
