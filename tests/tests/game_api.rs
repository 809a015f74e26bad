//! The game-server API seen through the `lab` component (lab.wasm): uid binding and duplicate logins, groups and
//! broadcasts, pushes to uids, kicks (with and without reasons), timers (rate, cancel, never concurrent with
//! handlers), handshake validation, session information and session data. Over TCP and WebSocket.
//!
//! The servers also serve echo.wasm, whose `echo.echo` is the barrier of `ensure_nothing_else`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use pitaya_tests::checks::{call, call_error, ensure_nothing_else, ensure_success};
use pitaya_tests::codec::PITAYA_HANDSHAKE;
use pitaya_tests::{Client, Incoming, Message, MessageType, Server, ServerOptions, Transport};
use serde_json::{Value, json};

const COMPONENTS: [&str; 2] = ["lab.wasm", "echo.wasm"];

/// A server with lab and echo, and `extra` flags.
async fn lab_server(extra: &[&str]) -> Result<Server> {
    let mut opts = ServerOptions::default().components(&COMPONENTS);
    for a in extra {
        opts = opts.arg(a);
    }
    Server::start(opts).await
}

/// A session id as a string, whether the server writes it as a number or a string.
fn id_key(v: &Value) -> Result<String> {
    match v {
        Value::Number(n) => Ok(n.to_string()),
        Value::String(s) => Ok(s.clone()),
        other => bail!("session id {other} is neither a number nor a string"),
    }
}

async fn session_id(c: &mut Client) -> Result<String> {
    let who = call(c, "lab.whoami", &json!({})).await?;
    id_key(&who["session"]).with_context(|| format!("whoami answered {who}"))
}

async fn bind(c: &mut Client, uid: &str) -> Result<()> {
    let r = call(c, "lab.bind", &json!({ "uid": uid })).await?;
    ensure!(r == json!({"ok": true}), "lab.bind {uid:?} answered {r}");
    Ok(())
}

/// Fails if a Kick arrived or the connection ended so far, after an echo barrier (so that anything the server
/// sent before has arrived).
async fn ensure_not_kicked(c: &mut Client, who: &str) -> Result<()> {
    ensure_nothing_else(c)
        .await
        .with_context(|| format!("{who} must still be served"))?;
    let kicks: Vec<_> = c
        .backlog()
        .iter()
        .filter(|e| matches!(e.what, Incoming::Kick(_)))
        .map(|e| format!("{:?}", e.what))
        .collect();
    ensure!(kicks.is_empty(), "{who} was kicked: {kicks:?}");
    c.ensure_open()
}

/// Waits for a Kick and then the close; returns the kick body.
async fn expect_kick(c: &mut Client, who: &str) -> Result<Vec<u8>> {
    let body = c
        .wait_kick()
        .await
        .with_context(|| format!("{who} must receive a Kick packet"))?;
    c.wait_closed()
        .await
        .with_context(|| format!("{who} must be closed after its Kick"))?;
    Ok(body)
}

// ------------------------------------------------------------------------------------------ duplicate login

/// A binds the uid, B binds the same uid: A gets a Kick (empty body by default) and is closed; B is served and
/// holds the uid.
async fn duplicate_login_kicks(server: &Server, ta: Transport, tb: Transport) -> Result<()> {
    let uid = format!("dup-{ta}-{tb}");
    let mut a = server.connect_ready(ta).await?;
    let mut b = server.connect_ready(tb).await?;
    bind(&mut a, &uid).await.context("A binding")?;
    let who = call(&mut a, "lab.whoami", &json!({})).await?;
    ensure!(who["uid"] == uid, "A's whoami after bind: {who}");

    bind(&mut b, &uid)
        .await
        .context("B binding the uid A holds")?;
    let body = expect_kick(&mut a, "A (the older session of the uid)").await?;
    ensure!(
        body.is_empty(),
        "without --kick-reasons a Kick has an empty body, got {:?}",
        String::from_utf8_lossy(&body)
    );

    let who = call(&mut b, "lab.whoami", &json!({})).await?;
    ensure!(
        who["uid"] == uid,
        "B's whoami after taking over the uid: {who}"
    );
    ensure_not_kicked(&mut b, "B").await
}

#[tokio::test]
async fn duplicate_login_kicks_the_older_session() -> Result<()> {
    let server = lab_server(&[]).await?;
    let mut failures = Vec::new();
    for (ta, tb) in [
        (Transport::Tcp, Transport::Tcp),
        (Transport::Ws, Transport::Ws),
        (Transport::Tcp, Transport::Ws),
        (Transport::Ws, Transport::Tcp),
    ] {
        if let Err(e) = duplicate_login_kicks(&server, ta, tb).await {
            failures.push(format!("A over {ta}, B over {tb}: {e:#}"));
        }
    }
    ensure!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n\n"),
        server.log_tail(30)
    );
    Ok(())
}

/// With `--duplicate-login refuse`: B's bind fails with LAB-BIND, A keeps the uid and is not kicked; once A has
/// closed, B can bind the uid.
async fn duplicate_login_refused(server: &Server, ta: Transport, tb: Transport) -> Result<()> {
    let uid = format!("refuse-{ta}-{tb}");
    let mut a = server.connect_ready(ta).await?;
    let mut b = server.connect_ready(tb).await?;
    bind(&mut a, &uid).await.context("A binding")?;
    call_error(&mut b, "lab.bind", &json!({ "uid": uid }), "LAB-BIND")
        .await
        .context("B binding a uid held by A, with --duplicate-login refuse")?;
    ensure_not_kicked(&mut a, "A").await?;
    let who = call(&mut a, "lab.whoami", &json!({})).await?;
    ensure!(who["uid"] == uid, "A lost its uid: {who}");
    let who = call(&mut b, "lab.whoami", &json!({})).await?;
    ensure!(who["uid"].is_null(), "B's refused bind left a uid: {who}");

    a.close().await.context("A closing")?;
    drop(a);
    // The uid is released when the server has cleaned up A's session: retry until the bind succeeds.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        let id = b.next_id();
        b.send_request(id, "lab.bind", json!({ "uid": uid }).to_string().as_bytes())
            .await?;
        let m = b.wait_response(id).await?;
        if !m.error {
            ensure!(
                m.json()? == json!({"ok": true}),
                "lab.bind answered {}",
                m.text()
            );
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "B still cannot bind {uid:?} 5 s after A closed: {}",
            m.text()
        );
    }
    let who = call(&mut b, "lab.whoami", &json!({})).await?;
    ensure!(who["uid"] == uid, "B's whoami after binding: {who}");
    Ok(())
}

#[tokio::test]
async fn duplicate_login_refused_when_configured() -> Result<()> {
    let server = lab_server(&["--duplicate-login", "refuse"]).await?;
    let mut failures = Vec::new();
    for (ta, tb) in [
        (Transport::Tcp, Transport::Tcp),
        (Transport::Ws, Transport::Ws),
        (Transport::Tcp, Transport::Ws),
    ] {
        if let Err(e) = duplicate_login_refused(&server, ta, tb).await {
            failures.push(format!("A over {ta}, B over {tb}: {e:#}"));
        }
    }
    ensure!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n\n"),
        server.log_tail(30)
    );
    Ok(())
}

// ------------------------------------------------------------------------------------------ groups

async fn join(c: &mut Client, group: &str) -> Result<u64> {
    let r = call(c, "lab.join", &json!({ "group": group })).await?;
    r["count"]
        .as_u64()
        .with_context(|| format!("lab.join answered {r}"))
}

struct Members {
    ids: BTreeSet<String>,
    count: u64,
    contains_me: bool,
}

async fn members(c: &mut Client, group: &str) -> Result<Members> {
    let r = call(c, "lab.members", &json!({ "group": group })).await?;
    let list = r["members"]
        .as_array()
        .with_context(|| format!("lab.members without a members array: {r}"))?;
    let ids = list.iter().map(id_key).collect::<Result<BTreeSet<_>>>()?;
    ensure!(ids.len() == list.len(), "duplicate members in {r}");
    let count = r["count"]
        .as_u64()
        .with_context(|| format!("lab.members without a count: {r}"))?;
    let contains_me = r["containsMe"]
        .as_bool()
        .with_context(|| format!("lab.members without containsMe: {r}"))?;
    ensure!(
        count == ids.len() as u64,
        "lab.members count {count} differs from the list's length: {r}"
    );
    Ok(Members {
        ids,
        count,
        contains_me,
    })
}

/// Three members; a broadcast with exceptMe reaches the two others, not the sender; without it, all three.
async fn broadcast(server: &Server, ts: [Transport; 3]) -> Result<()> {
    let group = format!("bc-{}-{}-{}", ts[0], ts[1], ts[2]);
    let mut cs = Vec::new();
    for (i, &t) in ts.iter().enumerate() {
        let mut c = server.connect_ready(t).await?;
        let n = join(&mut c, &group).await?;
        ensure!(
            n == i as u64 + 1,
            "join number {} answered count {n}",
            i + 1
        );
        cs.push(c);
    }

    let body = json!({"text": "to the others", "n": 1});
    let r = call(
        &mut cs[0],
        "lab.broadcast",
        &json!({"group": group, "route": "onGroup", "body": body, "exceptMe": true}),
    )
    .await?;
    ensure!(
        r == json!({"queued": 2}),
        "broadcast with exceptMe to 3 members answered {r}"
    );
    for (i, c) in cs.iter_mut().enumerate().skip(1) {
        let m = c
            .wait_push("onGroup")
            .await
            .with_context(|| format!("member {i} waiting for the exceptMe broadcast"))?;
        ensure!(m.json()? == body, "member {i} got {}", m.text());
    }
    ensure_nothing_else(&mut cs[0])
        .await
        .context("the sender must not receive its own broadcast with exceptMe")?;

    let body = json!({"text": "to everyone", "n": 2});
    let r = call(
        &mut cs[0],
        "lab.broadcast",
        &json!({"group": group, "route": "onGroup", "body": body, "exceptMe": false}),
    )
    .await?;
    ensure!(
        r == json!({"queued": 3}),
        "broadcast to 3 members answered {r}"
    );
    for (i, c) in cs.iter_mut().enumerate() {
        let m = c
            .wait_push("onGroup")
            .await
            .with_context(|| format!("member {i} waiting for the broadcast to all"))?;
        ensure!(m.json()? == body, "member {i} got {}", m.text());
    }
    for (i, c) in cs.iter_mut().enumerate() {
        ensure_nothing_else(c)
            .await
            .with_context(|| format!("member {i}"))?;
    }
    Ok(())
}

#[tokio::test]
async fn group_broadcast_with_and_without_except_me() -> Result<()> {
    let server = lab_server(&[]).await?;
    let mut failures = Vec::new();
    for ts in [
        [Transport::Tcp; 3],
        [Transport::Ws; 3],
        [Transport::Ws, Transport::Tcp, Transport::Ws],
    ] {
        if let Err(e) = broadcast(&server, ts).await {
            failures.push(format!("members over {ts:?}: {e:#}"));
        }
    }
    ensure!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n\n"),
        server.log_tail(30)
    );
    Ok(())
}

/// join counts, members / count / containsMe, leave (twice, and by a non-member), deleteGroup (twice), a join
/// after the delete.
async fn membership(server: &Server, t: Transport) -> Result<()> {
    let group = format!("members-{t}");
    let mut a = server.connect_ready(t).await?;
    let mut b = server.connect_ready(t).await?;
    let mut c = server.connect_ready(t).await?;
    let (ida, idb) = (session_id(&mut a).await?, session_id(&mut b).await?);
    ensure!(ida != idb, "two sessions share the id {ida}");

    let m = members(&mut c, &group)
        .await
        .context("members of a group nobody joined")?;
    ensure!(
        m.count == 0 && !m.contains_me,
        "a fresh group has members {:?}",
        m.ids
    );

    ensure!(join(&mut a, &group).await? == 1, "first join count");
    ensure!(join(&mut b, &group).await? == 2, "second join count");
    let m = members(&mut c, &group).await?;
    ensure!(
        m.ids == BTreeSet::from([ida.clone(), idb.clone()]) && m.count == 2,
        "members {:?} (count {}), expected A {ida} and B {idb}",
        m.ids,
        m.count
    );
    ensure!(!m.contains_me, "containsMe is true for a non-member");
    let m = members(&mut a, &group).await?;
    ensure!(m.contains_me, "containsMe is false for member A");

    let r = call(&mut b, "lab.leave", &json!({ "group": group })).await?;
    ensure!(r == json!({"removed": true}), "B leaving answered {r}");
    let r = call(&mut b, "lab.leave", &json!({ "group": group })).await?;
    ensure!(
        r == json!({"removed": false}),
        "B leaving again answered {r}"
    );
    let r = call(&mut c, "lab.leave", &json!({ "group": group })).await?;
    ensure!(
        r == json!({"removed": false}),
        "non-member C leaving answered {r}"
    );
    let r = call(
        &mut c,
        "lab.leave",
        &json!({"group": format!("{group}-none")}),
    )
    .await?;
    ensure!(
        r == json!({"removed": false}),
        "leaving a group that does not exist answered {r}"
    );
    let m = members(&mut b, &group).await?;
    ensure!(
        m.ids == BTreeSet::from([ida.clone()]) && !m.contains_me,
        "after B left: members {:?}, containsMe {}",
        m.ids,
        m.contains_me
    );

    let r = call(&mut c, "lab.deleteGroup", &json!({ "group": group })).await?;
    ensure!(r == json!({"deleted": true}), "deleteGroup answered {r}");
    let m = members(&mut a, &group).await?;
    ensure!(
        m.count == 0 && m.ids.is_empty() && !m.contains_me,
        "after deleteGroup: members {:?}, containsMe {}",
        m.ids,
        m.contains_me
    );
    let r = call(&mut c, "lab.deleteGroup", &json!({ "group": group })).await?;
    ensure!(
        r == json!({"deleted": false}),
        "deleting a deleted group answered {r}"
    );
    ensure!(join(&mut c, &group).await? == 1, "join after delete count");
    ensure_nothing_else(&mut a).await?;
    ensure_nothing_else(&mut c).await
}

#[tokio::test]
async fn group_members_count_contains_leave_delete() -> Result<()> {
    let server = lab_server(&[]).await?;
    server.each_transport(|t| membership(&server, t)).await
}

/// A, B, C, D join; C closes gracefully, D's connection is dropped: the group shrinks to A and B (polled with
/// a deadline, since the cleanup is asynchronous).
async fn closed_sessions_leave(server: &Server, t: Transport) -> Result<()> {
    let group = format!("closing-{t}");
    let mut cs = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..4 {
        let mut c = server.connect_ready(t).await?;
        ids.push(session_id(&mut c).await?);
        join(&mut c, &group).await?;
        cs.push(c);
    }
    let m = members(&mut cs[0], &group).await?;
    ensure!(m.count == 4, "4 joined, members {:?}", m.ids);

    let d = cs.pop().expect("4 clients");
    drop(d);
    let mut c = cs.pop().expect("3 clients");
    c.close().await.context("C closing")?;
    drop(c);

    let want = BTreeSet::from([ids[0].clone(), ids[1].clone()]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tick.tick().await;
        let m = members(&mut cs[0], &group).await?;
        if m.ids == want {
            ensure!(m.count == 2, "count {} for members {:?}", m.count, m.ids);
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "5 s after C closed and D was dropped the group still lists {:?} (C = {}, D = {})",
            m.ids,
            ids[2],
            ids[3]
        );
    }
    ensure_nothing_else(&mut cs[1]).await
}

#[tokio::test]
async fn closed_session_leaves_its_groups() -> Result<()> {
    let server = lab_server(&[]).await?;
    server
        .each_transport(|t| closed_sessions_leave(&server, t))
        .await
}

// ------------------------------------------------------------------------------------------ uids and kicks

/// pushUids to two bound sessions and one unknown uid: the unknown one is reported offline, the two others
/// get the push, the caller gets nothing.
async fn push_uids(server: &Server, t: Transport) -> Result<()> {
    let (ua, ub, nobody) = (
        format!("pu-a-{t}"),
        format!("pu-b-{t}"),
        format!("pu-nobody-{t}"),
    );
    let mut a = server.connect_ready(t).await?;
    let mut b = server.connect_ready(Transport::Tcp).await?;
    let mut c = server.connect_ready(t).await?;
    bind(&mut a, &ua).await?;
    bind(&mut b, &ub).await?;
    let body = json!({"hello": "uids", "list": [1, 2]});
    let r = call(
        &mut c,
        "lab.pushUids",
        &json!({"uids": [ua, nobody, ub], "route": "onUids", "body": body}),
    )
    .await?;
    ensure!(
        r == json!({ "offline": [nobody] }),
        "pushUids answered {r}, expected only {nobody:?} offline"
    );
    for (who, cl) in [("A", &mut a), ("B", &mut b)] {
        let m = cl
            .wait_push("onUids")
            .await
            .with_context(|| format!("{who} waiting for the pushUids push"))?;
        ensure!(m.json()? == body, "{who} got {}", m.text());
        ensure_nothing_else(cl).await.context(who)?;
    }
    ensure_nothing_else(&mut c)
        .await
        .context("the caller of pushUids, not among the uids")
}

#[tokio::test]
async fn push_uids_reaches_online_uids_and_reports_offline_ones() -> Result<()> {
    let server = lab_server(&[]).await?;
    server.each_transport(|t| push_uids(&server, t)).await
}

/// kickUid of a bound uid: kicked, its session gets a Kick and is closed; of an unknown uid: not kicked.
async fn kick_uid(server: &Server, t: Transport) -> Result<()> {
    let uid = format!("kick-{t}");
    let mut a = server.connect_ready(t).await?;
    let mut b = server.connect_ready(t).await?;
    bind(&mut a, &uid).await?;
    let r = call(&mut b, "lab.kickUid", &json!({ "uid": uid })).await?;
    ensure!(
        r == json!({"kicked": true}),
        "kickUid of a bound uid answered {r}"
    );
    let body = expect_kick(&mut a, "the kicked uid's session").await?;
    ensure!(
        body.is_empty(),
        "without --kick-reasons the Kick body is empty, got {:?}",
        String::from_utf8_lossy(&body)
    );
    let r = call(
        &mut b,
        "lab.kickUid",
        &json!({"uid": format!("{uid}-nobody")}),
    )
    .await?;
    ensure!(
        r == json!({"kicked": false}),
        "kickUid of an unknown uid answered {r}"
    );
    ensure_not_kicked(&mut b, "the kicking session").await
}

#[tokio::test]
async fn kick_uid_kicks_that_session() -> Result<()> {
    let server = lab_server(&[]).await?;
    server.each_transport(|t| kick_uid(&server, t)).await
}

/// With `--kick-reasons`: kickMe with a reason sends exactly `{"reason":"bye"}`; without a reason, `{}` (as
/// pomelo does: its web client parses every kick's body as JSON); kickUid with a reason sends it too.
async fn kick_reasons_on(server: &Server, t: Transport) -> Result<()> {
    let mut c = server.connect_ready(t).await?;
    let id = c.next_id();
    c.send_request(id, "lab.kickMe", br#"{"reason":"bye"}"#)
        .await?;
    let body = expect_kick(&mut c, "kickMe with a reason").await?;
    let v: Value = serde_json::from_slice(&body).with_context(|| {
        format!(
            "the Kick body is not JSON: {:?}",
            String::from_utf8_lossy(&body)
        )
    })?;
    ensure!(
        v == json!({"reason": "bye"}),
        "Kick body {v}, expected exactly {{\"reason\":\"bye\"}}"
    );

    let mut c = server.connect_ready(t).await?;
    let id = c.next_id();
    c.send_request(id, "lab.kickMe", b"{}").await?;
    let body = expect_kick(&mut c, "kickMe without a reason").await?;
    ensure!(
        body == b"{}"[..],
        "a kick without a reason has the body {{}}, got {:?}",
        String::from_utf8_lossy(&body)
    );

    let uid = format!("reason-{t}");
    let mut a = server.connect_ready(t).await?;
    let mut b = server.connect_ready(t).await?;
    bind(&mut a, &uid).await?;
    let r = call(
        &mut b,
        "lab.kickUid",
        &json!({"uid": uid, "reason": "cheating"}),
    )
    .await?;
    ensure!(r == json!({"kicked": true}), "kickUid answered {r}");
    let body = expect_kick(&mut a, "kickUid with a reason").await?;
    let v: Value = serde_json::from_slice(&body).with_context(|| {
        format!(
            "the Kick body is not JSON: {:?}",
            String::from_utf8_lossy(&body)
        )
    })?;
    ensure!(
        v == json!({"reason": "cheating"}),
        "kickUid's Kick body {v}"
    );
    Ok(())
}

#[tokio::test]
async fn kick_carries_the_reason_with_kick_reasons() -> Result<()> {
    let server = lab_server(&["--kick-reasons"]).await?;
    server.each_transport(|t| kick_reasons_on(&server, t)).await
}

/// Without `--kick-reasons`, kickMe with a reason still sends an empty Kick body (pitaya style).
async fn kick_reasons_off(server: &Server, t: Transport) -> Result<()> {
    let mut c = server.connect_ready(t).await?;
    let id = c.next_id();
    c.send_request(id, "lab.kickMe", br#"{"reason":"bye"}"#)
        .await?;
    let body = expect_kick(&mut c, "kickMe with a reason").await?;
    ensure!(
        body.is_empty(),
        "without --kick-reasons the Kick body must be empty, got {:?}",
        String::from_utf8_lossy(&body)
    );
    Ok(())
}

#[tokio::test]
async fn kick_body_is_empty_without_kick_reasons() -> Result<()> {
    let server = lab_server(&[]).await?;
    server
        .each_transport(|t| kick_reasons_off(&server, t))
        .await
}

// ------------------------------------------------------------------------------------------ timers

/// Sends a request and waits for its response; also returns when the response arrived.
async fn request_at(c: &mut Client, route: &str, body: &Value) -> Result<(Message, Instant)> {
    let id = c.next_id();
    c.send_request(id, route, body.to_string().as_bytes())
        .await?;
    let what = format!("the response to {route} (request {id})");
    let (m, at) = c
        .wait_for(&what, c.wait, |e| match e {
            Incoming::Data(m) if m.kind == MessageType::Response && m.id == id => Some(m.clone()),
            _ => None,
        })
        .await?;
    ensure_success(&m, id).with_context(|| format!("{route} {body}"))?;
    Ok((m, at))
}

/// lab.every 50 ms × 100: 100 ticks numbered 1..100; each 1-second window after the first tick holds 20 ± 1;
/// none after the 100th.
async fn twenty_hertz(server: &Server, t: Transport) -> Result<()> {
    let mut c = server.connect_ready(t).await?;
    let r = call(&mut c, "lab.every", &json!({"ms": 50, "count": 100})).await?;
    ensure!(!r["timer"].is_null(), "lab.every answered {r}");
    let mut at = Vec::with_capacity(100);
    for k in 1..=100u64 {
        let (m, when) = c
            .wait_push_within("onTick", Duration::from_secs(3))
            .await
            .with_context(|| format!("tick {k} of 100"))?;
        let v = m.json()?;
        ensure!(v["n"] == k, "tick {k} carries {v}");
        at.push(when);
    }
    let t0 = at[0];
    let offsets: Vec<f64> = at
        .iter()
        .map(|a| a.duration_since(t0).as_secs_f64())
        .collect();
    let mut windows = Vec::new();
    for w in 0..5u32 {
        let (lo, hi) = (f64::from(w), f64::from(w + 1));
        windows.push(offsets.iter().filter(|&&o| o >= lo && o < hi).count());
    }
    let bad: Vec<_> = windows
        .iter()
        .enumerate()
        .filter(|(_, n)| !(19..=21).contains(*n))
        .collect();
    ensure!(
        bad.is_empty(),
        "ticks per 1-s window after the first tick: {windows:?}, expected 20 ± 1 each; \
         last tick at +{:.3} s; arrival offsets (s): {:.3?}",
        offsets[99],
        offsets
    );
    // The timer stops after 100: a later one-shot timer fires, and no tick came in between.
    call(&mut c, "lab.after", &json!({"ms": 150})).await?;
    c.wait_push("onAfter")
        .await
        .context("the one-shot after the ticks")?;
    let extra: Vec<_> = c
        .unclaimed_messages()
        .into_iter()
        .filter(|m| m.route == Some("onTick".into()))
        .map(|m| m.text())
        .collect();
    ensure!(extra.is_empty(), "ticks after the 100th: {extra:?}");
    eprintln!(
        "{t}: ticks per second {windows:?}, last tick at +{:.3} s",
        offsets[99]
    );
    Ok(())
}

#[tokio::test]
async fn timer_at_20_hz_delivers_100_ticks_at_a_steady_rate() -> Result<()> {
    let server = lab_server(&[]).await?;
    // Both transports at once, on two sessions: 5 s instead of 10.
    let (tcp, ws) = tokio::join!(
        twenty_hertz(&server, Transport::Tcp),
        twenty_hertz(&server, Transport::Ws)
    );
    let failures: Vec<_> = [("TCP", tcp), ("WebSocket", ws)]
        .into_iter()
        .filter_map(|(t, r)| r.err().map(|e| format!("over {t}: {e:#}")))
        .collect();
    ensure!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n\n"),
        server.log_tail(30)
    );
    Ok(())
}

/// lab.after fires once with its timer id, not earlier than asked; a cancelled one never fires; cancelling
/// twice or an unknown id answers false; a cancelled periodic timer sends no tick after the cancel's answer.
async fn after_and_cancel(server: &Server, t: Transport) -> Result<()> {
    let mut c = server.connect_ready(t).await?;
    let sent = Instant::now();
    let r = call(&mut c, "lab.after", &json!({"ms": 100})).await?;
    let t1 = r["timer"].clone();
    ensure!(!t1.is_null(), "lab.after answered {r}");
    let (m, at) = c
        .wait_push_within("onAfter", Duration::from_secs(3))
        .await
        .context("the 100 ms one-shot")?;
    ensure!(
        m.json()? == json!({ "timer": t1 }),
        "onAfter carries {}",
        m.text()
    );
    let after = at.duration_since(sent);
    ensure!(
        after >= Duration::from_millis(90),
        "a 100 ms one-shot fired after {after:?}"
    );

    let r = call(&mut c, "lab.after", &json!({"ms": 300})).await?;
    let t2 = r["timer"].clone();
    ensure!(t2 != t1, "two timers share the id {t1}");
    let r = call(&mut c, "lab.cancel", &json!({ "timer": t2 })).await?;
    ensure!(
        r == json!({"cancelled": true}),
        "cancelling a pending timer answered {r}"
    );
    let r = call(&mut c, "lab.cancel", &json!({ "timer": t2 })).await?;
    ensure!(
        r == json!({"cancelled": false}),
        "cancelling it again answered {r}"
    );
    let r = call(&mut c, "lab.cancel", &json!({"timer": 987_654_321u64})).await?;
    ensure!(
        r == json!({"cancelled": false}),
        "cancelling an unknown timer answered {r}"
    );
    let r = call(&mut c, "lab.cancel", &json!({ "timer": t1 })).await?;
    ensure!(
        r == json!({"cancelled": false}),
        "cancelling a fired one-shot answered {r}"
    );
    // A later one-shot: had the cancelled one fired (at 300 ms), it would have come first.
    let r = call(&mut c, "lab.after", &json!({"ms": 600})).await?;
    let t3 = r["timer"].clone();
    let (m, _) = c
        .wait_push_within("onAfter", Duration::from_secs(3))
        .await
        .context("the 600 ms one-shot")?;
    ensure!(
        m.json()? == json!({ "timer": t3 }),
        "expected the onAfter of timer {t3}, got {} (the cancelled timer was {t2})",
        m.text()
    );

    let r = call(&mut c, "lab.every", &json!({"ms": 20, "count": 1000})).await?;
    let te = r["timer"].clone();
    for k in 1..=3 {
        c.wait_push_within("onTick", Duration::from_secs(3))
            .await
            .with_context(|| format!("tick {k} of the timer to cancel"))?;
    }
    let (m, cancel_at) = request_at(&mut c, "lab.cancel", &json!({ "timer": te })).await?;
    ensure!(
        m.json()? == json!({"cancelled": true}),
        "cancelling a running periodic timer answered {}",
        m.text()
    );
    call(&mut c, "lab.after", &json!({"ms": 200})).await?;
    c.wait_push("onAfter")
        .await
        .context("the one-shot after the cancel")?;
    let late = c
        .backlog()
        .iter()
        .filter(|e| {
            e.at > cancel_at
                && matches!(&e.what, Incoming::Data(m) if m.route == Some("onTick".into()))
        })
        .count();
    ensure!(
        late == 0,
        "{late} ticks arrived after the answer to lab.cancel"
    );
    Ok(())
}

#[tokio::test]
async fn after_fires_once_and_cancel_stops_timers() -> Result<()> {
    let server = lab_server(&[]).await?;
    server
        .each_transport(|t| after_and_cancel(&server, t))
        .await
}

/// A 1 ms timer × 1500 on one session while 4 other sessions call lab.work for about 1.5 s: every call
/// succeeds (no PIT-503), ticks arrive meanwhile, and lab.overlaps reports no call that started while another
/// ran.
#[tokio::test]
async fn timer_never_runs_concurrently_with_handlers() -> Result<()> {
    const TICKS: u64 = 1500;
    let server = lab_server(&[]).await?;
    let mut timer = server.connect_ready(Transport::Tcp).await?;
    let r = call(&mut timer, "lab.every", &json!({"ms": 1, "count": TICKS})).await?;
    ensure!(!r["timer"].is_null(), "lab.every answered {r}");

    let hammer_for = Duration::from_millis(1500);
    let mut hammers = Vec::new();
    for i in 0..4 {
        let t = if i % 2 == 0 {
            Transport::Tcp
        } else {
            Transport::Ws
        };
        let mut c = server.connect_ready(t).await?;
        hammers.push(tokio::spawn(async move {
            let start = Instant::now();
            let mut calls = 0u64;
            while start.elapsed() < hammer_for {
                let r = call(&mut c, "lab.work", &json!({"iterations": 20000}))
                    .await
                    .with_context(|| format!("hammer {i} ({t}), call {}", calls + 1))?;
                ensure!(
                    r == json!({"done": 20000}),
                    "hammer {i}: lab.work answered {r}"
                );
                calls += 1;
            }
            anyhow::Ok(calls)
        }));
    }
    let mut work_calls = 0;
    let mut failures = Vec::new();
    for h in hammers {
        match h.await? {
            Ok(n) => work_calls += n,
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    let hammer_end = Instant::now();
    ensure!(
        failures.is_empty(),
        "lab.work failed while the timer ran:\n{}\n{}",
        failures.join("\n"),
        server.log_tail(30)
    );

    let ticks_during = timer
        .backlog()
        .iter()
        .filter(|e| {
            e.at < hammer_end
                && matches!(&e.what, Incoming::Data(m) if m.route == Some("onTick".into()))
        })
        .count();
    // Let the timer finish (it may lag behind its rate under load).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = 0;
    while last < TICKS {
        let left = deadline.saturating_duration_since(Instant::now());
        let (m, _) = timer
            .wait_push_within("onTick", left)
            .await
            .with_context(|| format!("ticks of the 1 ms timer: got up to n = {last} of {TICKS}"))?;
        let n = m.json()?["n"]
            .as_u64()
            .with_context(|| format!("onTick without n: {}", m.text()))?;
        ensure!(n > last, "tick n = {n} after n = {last}");
        last = n;
    }
    let r = call(&mut timer, "lab.overlaps", &json!({})).await?;
    eprintln!(
        "{work_calls} lab.work calls by 4 sessions, {ticks_during} ticks during them; lab.overlaps = {r}"
    );
    ensure!(
        r["overlaps"] == 0,
        "calls of the component started while another ran: {r}"
    );
    let fires = r["timerFires"]
        .as_u64()
        .with_context(|| format!("no timerFires in {r}"))?;
    let calls = r["calls"]
        .as_u64()
        .with_context(|| format!("no calls in {r}"))?;
    ensure!(
        fires >= 1,
        "timerFires is {fires} although ticks arrived: {r}"
    );
    ensure!(
        calls >= work_calls,
        "the component counted {calls} calls, the hammers made {work_calls}: {r}"
    );
    ensure!(
        ticks_during > 0,
        "no tick arrived during the 1.5 s of lab.work calls: the timer was starved"
    );
    Ok(())
}

// ------------------------------------------------------------------------------------------ handshake, session

fn handshake_json(user: &Value) -> String {
    json!({
        "sys": {"platform": "linux", "libVersion": "0.3.5-release", "clientBuildNumber": "20", "clientVersion": "2.1"},
        "user": user,
    })
    .to_string()
}

/// A handshake whose user data has `"refuse":true` gets code 400 and is closed; a normal one still works.
async fn refused_handshake(server: &Server, t: Transport) -> Result<()> {
    let mut c = server.connect(t).await?;
    c.send_handshake(&handshake_json(&json!({"refuse": true, "age": 3})))
        .await?;
    let reply = c
        .wait_handshake()
        .await
        .context("the server must answer a refused handshake")?;
    ensure!(
        reply.code == 400,
        "a handshake the component refuses must get code 400, got {}",
        reply.json
    );
    c.wait_closed()
        .await
        .context("the server must close after refusing the handshake")?;
    let answered: Vec<_> = c.unclaimed_messages();
    ensure!(
        answered.is_empty(),
        "messages after a refused handshake: {answered:?}"
    );

    let mut ok = server.connect(t).await?;
    ok.handshake(&handshake_json(&json!({"refuse": false})))
        .await
        .context("a handshake with refuse false")?;
    ensure_nothing_else(&mut ok).await
}

#[tokio::test]
async fn handshake_refused_by_the_component_gets_400_and_close() -> Result<()> {
    let server = lab_server(&[]).await?;
    server
        .each_transport(|t| refused_handshake(&server, t))
        .await
}

/// A component hears a session close only if it admitted it: the sessions lab's validator
/// refused close unheard, and one it admitted and served is heard with its own id.
#[tokio::test]
async fn a_refused_session_closes_unheard() -> Result<()> {
    let server = lab_server(&[]).await?;
    for t in [Transport::Tcp, Transport::Ws] {
        let mut refused = server.connect(t).await?;
        refused
            .send_handshake(&handshake_json(&json!({"refuse": true})))
            .await?;
        refused.wait_handshake().await?;
        // The server closes the socket after the session's cleanup, hooks included, is done.
        refused
            .wait_closed()
            .await
            .with_context(|| format!("{t}: the refused client must be closed"))?;
    }
    ensure!(
        server.log_line_containing("lab heard session").is_none(),
        "lab heard a refused session close\n{}",
        server.log_tail(20)
    );
    let mut admitted = server.connect(Transport::Tcp).await?;
    admitted
        .handshake(&handshake_json(&json!({"refuse": false})))
        .await?;
    let who = call(&mut admitted, "lab.whoami", &json!({})).await?;
    admitted.close().await?;
    let heard = server
        .wait_log("lab heard session", Duration::from_secs(5))
        .await
        .context("lab must hear the admitted session close")?;
    ensure!(
        heard.contains(&format!("lab heard session {} close", who["session"])),
        "lab heard {heard:?}, but the admitted session was {}",
        who["session"]
    );
    Ok(())
}

/// A component's `#[session_closed]` hook can still read who left: lab's hook logs the closed
/// session's uid, over both transports, whether the client closed or was kicked.
#[tokio::test]
async fn the_close_hook_still_reads_the_sessions_uid() -> Result<()> {
    let server = lab_server(&[]).await?;
    for (t, uid) in [(Transport::Tcp, "ana"), (Transport::Ws, "bea")] {
        let mut c = server.connect_ready(t).await?;
        let bound = call(&mut c, "lab.bind", &json!({ "uid": uid })).await?;
        ensure!(
            bound == json!({"ok": true}),
            "{t}: lab.bind answered {bound}"
        );
        let who = call(&mut c, "lab.whoami", &json!({})).await?;
        c.close().await?;
        let heard = format!("lab heard session {} close (uid {uid})", who["session"]);
        server
            .wait_log(&heard, Duration::from_secs(5))
            .await
            .with_context(|| format!("{t}: the hook must read the uid\n{}", server.log_tail(20)))?;
    }
    let mut kicked = server.connect_ready(Transport::Tcp).await?;
    call(&mut kicked, "lab.bind", &json!({"uid": "cy"})).await?;
    let who = call(&mut kicked, "lab.whoami", &json!({})).await?;
    call(&mut kicked, "lab.kickMe", &json!({})).await.ok();
    let heard = format!("lab heard session {} close (uid cy)", who["session"]);
    server
        .wait_log(&heard, Duration::from_secs(5))
        .await
        .with_context(|| format!("a kicked session's uid\n{}", server.log_tail(20)))?;
    Ok(())
}

/// whoami: the session id (distinct per session), uid null then bound, the remote address as seen by the
/// server (127.0.0.1 and our port), and the handshake's sys and user data.
async fn whoami(server: &Server, t: Transport) -> Result<()> {
    let user = json!({"age": 30, "name": "who", "tags": ["a", "b"], "nested": {"x": null}});
    let mut c = server.connect(t).await?;
    c.handshake(&handshake_json(&user)).await?;
    let who = call(&mut c, "lab.whoami", &json!({})).await?;
    id_key(&who["session"]).with_context(|| format!("whoami: {who}"))?;
    ensure!(who["uid"].is_null(), "uid before any bind: {who}");
    let remote = c.local_addr.to_string();
    ensure!(
        who["remote"] == remote,
        "whoami remote {}, but this client is {remote}",
        who["remote"]
    );
    ensure!(
        who["handshake"]["user"] == user,
        "whoami handshake.user {}, sent {user}",
        who["handshake"]["user"]
    );
    let sys = &who["handshake"]["sys"];
    for (k, v) in [
        ("platform", "linux"),
        ("libVersion", "0.3.5-release"),
        ("clientBuildNumber", "20"),
        ("clientVersion", "2.1"),
    ] {
        ensure!(
            sys[k] == v,
            "whoami handshake.sys.{k} is {}, sent {v:?}: {who}",
            sys[k]
        );
    }

    let uid = format!("whoami-{t}");
    bind(&mut c, &uid).await?;
    let who2 = call(&mut c, "lab.whoami", &json!({})).await?;
    ensure!(who2["uid"] == uid, "uid after bind: {who2}");
    ensure!(
        who2["session"] == who["session"],
        "the session id changed: {who} then {who2}"
    );

    let mut other = server.connect_ready(t).await?;
    let who3 = call(&mut other, "lab.whoami", &json!({})).await?;
    ensure!(
        who3["session"] != who["session"],
        "two sessions share the id: {who3}"
    );
    ensure!(
        who3["remote"] == other.local_addr.to_string(),
        "other's remote: {who3}"
    );
    let pitaya: Value = serde_json::from_str(PITAYA_HANDSHAKE)?;
    ensure!(
        who3["handshake"]["user"] == pitaya["user"],
        "other's handshake.user: {who3}"
    );
    Ok(())
}

#[tokio::test]
async fn whoami_shows_session_remote_and_handshake_data() -> Result<()> {
    let server = lab_server(&[]).await?;
    server.each_transport(|t| whoami(&server, t)).await
}

/// lab.secret is refused with LAB-AUTH by the component's before-hook until session data "auth" is set; the
/// data belongs to that session only; setData / getData round-trip JSON values.
async fn before_hook(server: &Server, t: Transport) -> Result<()> {
    let mut c = server.connect_ready(t).await?;
    call_error(&mut c, "lab.secret", &json!({}), "LAB-AUTH")
        .await
        .context("lab.secret before auth")?;
    let r = call(&mut c, "lab.getData", &json!({"key": "auth"})).await?;
    ensure!(r == json!({"value": null}), "getData of an unset key: {r}");
    let r = call(
        &mut c,
        "lab.setData",
        &json!({"key": "auth", "value": true}),
    )
    .await?;
    ensure!(r == json!({"ok": true}), "setData answered {r}");
    let r = call(&mut c, "lab.getData", &json!({"key": "auth"})).await?;
    ensure!(r == json!({"value": true}), "getData after setData: {r}");
    let r = call(&mut c, "lab.secret", &json!({}))
        .await
        .context("lab.secret after auth")?;
    ensure!(r == json!({"secret": 42}), "lab.secret answered {r}");

    let profile = json!({"level": 7, "items": ["sword", {"shield": 2}], "name": "h\u{e9}ros"});
    call(
        &mut c,
        "lab.setData",
        &json!({"key": "profile", "value": profile}),
    )
    .await?;
    let r = call(&mut c, "lab.getData", &json!({"key": "profile"})).await?;
    ensure!(
        r == json!({ "value": profile }),
        "getData of a JSON value: {r}"
    );

    let mut other = server.connect_ready(t).await?;
    call_error(&mut other, "lab.secret", &json!({}), "LAB-AUTH")
        .await
        .context("another session's lab.secret: session data is per session")?;
    let r = call(&mut other, "lab.getData", &json!({"key": "profile"})).await?;
    ensure!(
        r == json!({"value": null}),
        "another session sees the data: {r}"
    );
    ensure_nothing_else(&mut c).await
}

#[tokio::test]
async fn before_hook_refuses_until_session_data_allows() -> Result<()> {
    let server = lab_server(&[]).await?;
    server.each_transport(|t| before_hook(&server, t)).await
}

/// What a component keeps in the host's memory is bounded: a group name is at most 256 bytes
/// (a longer one makes no group), and a session's data at most 64 KiB (a value that would pass
/// it is not stored, and what was stored stays).
#[tokio::test]
async fn group_names_and_session_data_are_bounded() -> Result<()> {
    let server = lab_server(&[]).await?;
    let mut c = server.connect_ready(Transport::Tcp).await?;
    ensure!(
        join(&mut c, &"g".repeat(256)).await? == 1,
        "a 256-byte name"
    );
    ensure!(
        join(&mut c, &"g".repeat(257)).await? == 0,
        "a 257-byte name"
    );
    let set = |key: &str, bytes: usize| json!({"key": key, "value": "x".repeat(bytes)});
    let length = |answer: Value| answer["value"].as_str().map(str::len);
    call(&mut c, "lab.setData", &set("a", 40_000)).await?;
    // With "a", 80,000 bytes and more: over.
    call(&mut c, "lab.setData", &set("b", 40_000)).await?;
    let b = call(&mut c, "lab.getData", &json!({"key": "b"})).await?;
    ensure!(length(b).is_none(), "the value over the bound was stored");
    let a = call(&mut c, "lab.getData", &json!({"key": "a"})).await?;
    ensure!(length(a) == Some(40_000), "the value stored before went");
    call(&mut c, "lab.setData", &set("b", 20_000)).await?;
    let b = call(&mut c, "lab.getData", &json!({"key": "b"})).await?;
    ensure!(length(b) == Some(20_000), "60,000 bytes in all fit");
    server
        .wait_log("session data refused", Duration::from_secs(10))
        .await?;
    Ok(())
}

/// A uid is at most 256 bytes (a longer one is refused as invalid), and a kick's reason reaches
/// the client cut to 1 KiB, saying how much was cut: both are strings a component chooses, and
/// the host keeps, logs and sends them.
#[tokio::test]
async fn uids_and_kick_reasons_are_bounded() -> Result<()> {
    let server = lab_server(&["--kick-reasons"]).await?;
    let mut c = server.connect_ready(Transport::Tcp).await?;
    call_error(
        &mut c,
        "lab.bind",
        &json!({"uid": "u".repeat(257)}),
        "LAB-BIND",
    )
    .await?;
    bind(&mut c, &"u".repeat(256)).await?;
    let id = c.next_id();
    let kick = json!({"reason": "r".repeat(5000)});
    c.send_request(id, "lab.kickMe", kick.to_string().as_bytes())
        .await?;
    let body = expect_kick(&mut c, "the session kicked with a long reason").await?;
    let reason: Value = serde_json::from_slice(&body).context("the kick body")?;
    let reason = reason["reason"].as_str().context("the kick's reason")?;
    ensure!(
        reason == format!("{}… (3976 more bytes cut)", "r".repeat(1024)),
        "the kick's reason: {} bytes",
        reason.len()
    );
    Ok(())
}
