//! Hosts in a cluster with each other, over real NATS and etcd: two frontends (type `connector`, loading lab)
//! and two backends (type `room`, loading chat and lab). Forwarded requests, pushes and kicks by uid across
//! frontends, unique sessions, a backend killed mid-traffic, a type without servers, and forward timeouts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use futures_util::StreamExt;
use pitaya_tests::checks::{call, call_error, ensure_error, ensure_success};
use pitaya_tests::cluster::Services;
use pitaya_tests::cluster::messages::BindMsg;
use pitaya_tests::cluster::peer;
use pitaya_tests::{Client, ClusterOptions, Server, ServerOptions, Transport};
use prost::Message as _;
use serde_json::{Value, json};

/// The wait for one event; generous for a busy 2-core machine, still far below a hang.
const WAIT: Duration = Duration::from_secs(5);
/// The bound on a whole test.
const TEST_LIMIT: Duration = Duration::from_secs(100);
/// The frontends' forward timeout in the two-by-two cluster: short, so that requests stranded on a killed
/// backend end quickly.
const FORWARD_TIMEOUT_MS: u64 = 2000;

async fn backend(services: &Services, label: &str) -> Result<Server> {
    Server::start(
        ServerOptions::default()
            .components(&["chat.wasm", "lab.wasm"])
            .label(label)
            .cluster(services.host("room", false)),
    )
    .await
    .with_context(|| format!("starting backend {label}"))
}

async fn frontend(label: &str, cluster: ClusterOptions) -> Result<Server> {
    Server::start(
        ServerOptions::default()
            .components(&["lab.wasm"])
            .label(label)
            .cluster(cluster),
    )
    .await
    .with_context(|| format!("starting frontend {label}"))
}

/// `route` with `body` must succeed; its answer.
async fn ok(c: &mut Client, route: &str, body: Value) -> Result<Value> {
    call(c, route, &body).await
}

/// The uid of `c`'s session, from the frontend's own lab.
async fn uid_of(c: &mut Client) -> Result<Value> {
    Ok(ok(c, "lab.whoami", json!({})).await?["uid"].clone())
}

/// Two backends, then two frontends (so that the frontends find both backends on their first read).
/// Fields drop in order: the hosts before the services they use.
struct TwoByTwo {
    a: Server,
    b: Server,
    be1: Server,
    _be2: Server,
    services: Services,
}

async fn two_by_two() -> Result<TwoByTwo> {
    let services = Services::start().await?;
    let (be1, be2) = tokio::try_join!(backend(&services, "be1"), backend(&services, "be2"))?;
    let fe = || {
        services
            .host("connector", true)
            .request_timeout_ms(FORWARD_TIMEOUT_MS)
    };
    let (a, b) = tokio::try_join!(frontend("fe-a", fe()), frontend("fe-b", fe()))?;
    ensure!(
        be1.id()? != be2.id()? && a.id()? != b.id()?,
        "two hosts share an id"
    );
    Ok(TwoByTwo {
        a,
        b,
        be1,
        _be2: be2,
        services,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_frontends_two_backends() -> Result<()> {
    tokio::time::timeout(TEST_LIMIT, async {
        let cluster = two_by_two().await?;
        join_through_a_frontend(&cluster)
            .await
            .context("room.room.join")?;
        push_and_kick_across_frontends(&cluster)
            .await
            .context("push and kick by uid")?;
        unique_sessions(&cluster).await.context("unique sessions")?;
        backend_killed_mid_traffic(&cluster)
            .await
            .context("a backend killed mid-traffic")?;
        Ok(())
    })
    .await
    .context("the test took too long")?
}

/// pitaya's chat join, forwarded: the backend binds the session to its id and pushes onMembers through the
/// frontend.
async fn join_through_a_frontend(cl: &TwoByTwo) -> Result<()> {
    let mut c = cl.a.connect_ready(Transport::Tcp).await?;
    let answer = ok(&mut c, "room.room.join", json!({})).await?;
    ensure!(
        answer == json!({"code": 0, "result": "success"}),
        "join answer {answer}"
    );
    // The uid is the session id the backend's component sees, which the contract leaves to the backend;
    // the frontend must hold the same uid, and the push must reach this client.
    let uid = uid_of(&mut c).await?;
    let uid = uid
        .as_str()
        .filter(|u| !u.is_empty())
        .with_context(|| format!("room.join should bind the session; the frontend says uid {uid}"))?
        .to_owned();
    let members = c.wait_push("onMembers").await?.json()?;
    ensure!(
        members["members"]
            .as_array()
            .is_some_and(|m| m.contains(&json!(uid))),
        "onMembers should list {uid}: {members}"
    );
    Ok(())
}

async fn push_and_kick_across_frontends(cl: &TwoByTwo) -> Result<()> {
    let mut alice = cl.a.connect_ready(Transport::Tcp).await?;
    let mut bob = cl.b.connect_ready(Transport::Ws).await?;
    ok(&mut alice, "room.lab.bind", json!({"uid": "alice"})).await?;
    ok(&mut bob, "room.lab.bind", json!({"uid": "bob"})).await?;
    ensure!(
        uid_of(&mut alice).await? == "alice",
        "alice's frontend did not bind her"
    );
    ensure!(
        uid_of(&mut bob).await? == "bob",
        "bob's frontend did not bind him"
    );

    // A backend pushes to a uid bound on the other frontend.
    let body = json!({"from": "alice", "n": 1});
    ok(
        &mut alice,
        "room.lab.pushUids",
        json!({"uids": ["bob"], "route": "onHello", "body": body}),
    )
    .await?;
    let p = bob
        .wait_push("onHello")
        .await
        .context("bob waiting for onHello")?;
    ensure!(p.json()? == body, "onHello body {}", p.text());

    // A backend kicks a uid bound on the other frontend.
    ok(&mut alice, "room.lab.kickUid", json!({"uid": "bob"})).await?;
    bob.wait_kick().await.context("bob waiting for his kick")?;
    bob.wait_closed().await?;
    alice.ensure_open().context("alice's connection")?;
    ok(&mut alice, "lab.whoami", json!({})).await?;
    Ok(())
}

/// Binding a uid already bound elsewhere kicks the older session: on the other frontend (BindMsg), through a
/// backend or the frontend's own component, and on the same frontend.
async fn unique_sessions(cl: &TwoByTwo) -> Result<()> {
    let watcher = cl.services.nats.client().await?;
    let mut bindings = watcher
        .subscribe(peer::bindings_subject("connector"))
        .await
        .context("subscribing the bindings subject")?;
    watcher.flush().await?;
    let a_id = cl.a.id()?.to_owned();
    for (uid, route) in [("carol", "room.lab.bind"), ("dave", "lab.bind")] {
        // A probe session on B, kicked by a notice we publish: the barrier below.
        let probe_uid = format!("probe-{uid}");
        let mut probe = cl.b.connect_ready(Transport::Tcp).await?;
        ok(&mut probe, "lab.bind", json!({"uid": probe_uid})).await?;

        let mut older = cl.a.connect_ready(Transport::Tcp).await?;
        ok(&mut older, route, json!({"uid": uid})).await?;
        // BindMsg carries no time: a frontend that handles A's notice only after its own, newer bind kicks
        // the newer session too. So B binds only once it has handled A's notice: we wait until the notice is
        // out on NATS, then publish one for the probe's uid, which NATS delivers to B after A's; when B kicks
        // the probe, it has handled A's notice.
        loop {
            let m = tokio::time::timeout(WAIT, bindings.next())
                .await
                .with_context(|| format!("no BindMsg{{{uid}, A}} after {route} on A"))?
                .context("the bindings subscription ended")?;
            let b = BindMsg::decode(m.payload.as_ref()).context("not a BindMsg")?;
            if b.uid == uid && b.fid == a_id {
                break;
            }
        }
        let notice = BindMsg {
            uid: probe_uid.clone(),
            fid: peer::new_server_id(),
        };
        watcher
            .publish(
                peer::bindings_subject("connector"),
                notice.encode_to_vec().into(),
            )
            .await?;
        watcher.flush().await?;
        probe
            .wait_kick()
            .await
            .with_context(|| format!("B did not kick {probe_uid} on another frontend's BindMsg"))?;

        let mut newer = cl.b.connect_ready(Transport::Tcp).await?;
        ok(&mut newer, route, json!({"uid": uid})).await?;
        older
            .wait_kick()
            .await
            .with_context(|| format!("the older {uid} (on A) after {route} on B"))?;
        older.wait_closed().await?;
        ensure!(
            uid_of(&mut newer).await? == uid,
            "the newer {uid} session lost its uid"
        );
        newer.ensure_open()?;
    }
    let mut older = cl.a.connect_ready(Transport::Tcp).await?;
    ok(&mut older, "room.lab.bind", json!({"uid": "erin"})).await?;
    let mut newer = cl.a.connect_ready(Transport::Tcp).await?;
    ok(&mut newer, "room.lab.bind", json!({"uid": "erin"})).await?;
    older
        .wait_kick()
        .await
        .context("the older erin after a second bind on the same frontend")?;
    ensure!(uid_of(&mut newer).await? == "erin");
    Ok(())
}

/// How each request of a batch ended.
#[derive(Debug, Default)]
struct Outcomes {
    ok: usize,
    /// Error code → count.
    errors: BTreeMap<String, usize>,
}

/// Sends `n` pipelined `room.lab.work` requests; returns their ids.
async fn send_work(c: &mut Client, n: usize, iterations: u64) -> Result<Vec<u64>> {
    let mut ids = Vec::new();
    let body = json!({"iterations": iterations}).to_string();
    for _ in 0..n {
        let id = c.next_id();
        c.send_request(id, "room.lab.work", body.as_bytes()).await?;
        ids.push(id);
    }
    Ok(ids)
}

/// Waits for every response in `ids`: each must be `{"done": iterations}` or an error response.
async fn collect(
    c: &mut Client,
    ids: &[u64],
    iterations: u64,
    within: Duration,
    out: &mut Outcomes,
) -> Result<()> {
    for &id in ids {
        let m = c
            .wait_response_within(id, within)
            .await
            .with_context(|| format!("request {id} got no answer at all"))?;
        if m.error {
            let v = m.json()?;
            let code = v["code"]
                .as_str()
                .with_context(|| format!("error without code: {v}"))?;
            *out.errors.entry(code.to_owned()).or_default() += 1;
        } else {
            ensure_success(&m, id)?;
            ensure!(
                m.json()? == json!({"done": iterations}),
                "answer {}",
                m.text()
            );
            out.ok += 1;
        }
    }
    Ok(())
}

async fn backend_killed_mid_traffic(cl: &TwoByTwo) -> Result<()> {
    const ITERATIONS: u64 = 300_000;
    let mut clients = vec![
        cl.a.connect_ready(Transport::Tcp).await?,
        cl.b.connect_ready(Transport::Ws).await?,
    ];
    // Warm: both backends serve.
    for c in &mut clients {
        let ids = send_work(c, 8, ITERATIONS).await?;
        let mut o = Outcomes::default();
        collect(c, &ids, ITERATIONS, WAIT, &mut o).await?;
        ensure!(o.errors.is_empty(), "errors before the kill: {o:?}");
    }

    let mut in_flight = Vec::new();
    for c in &mut clients {
        in_flight.push(send_work(c, 16, ITERATIONS).await?);
    }
    cl.be1.signal(libc::SIGKILL)?;
    cl.be1.wait_exit(WAIT).await?;
    for (c, ids) in clients.iter_mut().zip(&mut in_flight) {
        ids.extend(send_work(c, 16, ITERATIONS).await?);
    }
    // Stranded requests end with the forward timeout at the latest.
    let within = Duration::from_millis(FORWARD_TIMEOUT_MS) + WAIT;
    let mut around = Outcomes::default();
    for (c, ids) in clients.iter_mut().zip(&in_flight) {
        collect(c, ids, ITERATIONS, within, &mut around).await?;
    }
    eprintln!("requests around the kill: {around:?}");

    // From now on every request is served, by the backend left.
    for c in &mut clients {
        for _ in 0..20 {
            let mut after = Outcomes::default();
            let ids = send_work(c, 1, ITERATIONS).await?;
            collect(c, &ids, ITERATIONS, within, &mut after).await?;
            ensure!(
                after.errors.is_empty(),
                "a request after the kill failed: {after:?} (around the kill: {around:?})"
            );
        }
        c.ensure_open().context("a client connection dropped")?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_without_servers_answers_an_error_quickly() -> Result<()> {
    tokio::time::timeout(TEST_LIMIT, async {
        let services = Services::start().await?;
        let fe = frontend("fe", services.host("connector", true)).await?;
        let mut c = fe.connect_ready(Transport::Tcp).await?;
        let started = Instant::now();
        let id = c.next_id();
        c.send_request(id, "nosuch.lab.whoami", b"{}").await?;
        let m = c.wait_response_within(id, Duration::from_secs(3)).await?;
        let elapsed = started.elapsed();
        let v = m.json().context("error payload")?;
        let code = v["code"].as_str().unwrap_or_default().to_owned();
        ensure!(
            m.error && (code == "PIT-404" || code == "PIT-500"),
            "expected a PIT-404 or PIT-500 error, got {} {}",
            if m.error { "error" } else { "success" },
            m.text()
        );
        ensure_error(&m, id, &code)?;
        ensure!(
            elapsed < Duration::from_secs(3),
            "the error took {elapsed:?}"
        );
        // The same answer for a backend type that is known but has no server left is covered by
        // cluster_discovery; here the connection must simply carry on.
        ensure!(ok(&mut c, "lab.whoami", json!({})).await?["uid"].is_null());
        Ok(())
    })
    .await
    .context("the test took too long")?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_handler_times_out_with_pit_408() -> Result<()> {
    tokio::time::timeout(TEST_LIMIT, async {
        let services = Services::start().await?;
        // The backend's own call deadline is far beyond the frontend's forward timeout, so the frontend
        // gives up first.
        let be = Server::start(
            ServerOptions::default()
                .components(&["lab.wasm"])
                .label("slow-room")
                .args("--call-timeout-ms", 30_000)
                .cluster(services.host("room", false)),
        )
        .await?;
        let fe = frontend(
            "fe",
            services.host("connector", true).request_timeout_ms(300),
        )
        .await?;
        let mut c = fe.connect_ready(Transport::Tcp).await?;
        // A quick one works, so the timeout below is about slowness and nothing else.
        ensure!(
            ok(&mut c, "room.lab.work", json!({"iterations": 10})).await? == json!({"done": 10})
        );

        let started = Instant::now();
        let v = call_error(
            &mut c,
            "room.lab.work",
            &json!({"iterations": 20_000_000_000u64}),
            "PIT-408",
        )
        .await?;
        let elapsed = started.elapsed();
        ensure!(
            elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
            "PIT-408 after {elapsed:?} with --request-timeout-ms 300: {v}"
        );
        // The frontend is fine; its own component answers at once.
        ok(&mut c, "lab.whoami", json!({})).await?;
        drop(be);
        Ok(())
    })
    .await
    .context("the test took too long")?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_by_uid_keeps_a_user_on_one_backend() -> Result<()> {
    tokio::time::timeout(TEST_LIMIT, async {
        let services = Services::start().await?;
        let (_be1, _be2) = tokio::try_join!(backend(&services, "be1"), backend(&services, "be2"))?;
        let fe = frontend("fe", services.host("connector", true).forward_by("uid")).await?;
        let mut c = fe.connect_ready(Transport::Tcp).await?;
        ok(&mut c, "lab.bind", json!({"uid": "zed"})).await?;
        // lab.counter counts per backend instance: one backend for all calls means 1, 2, 3, ... with no
        // repeats (with two backends, calls split between them would count 1, 1, 2, ... ).
        let mut counts = Vec::new();
        for _ in 0..12 {
            let v = ok(&mut c, "room.lab.counter", json!({})).await?;
            counts.push(
                v["counter"]
                    .as_u64()
                    .with_context(|| format!("no counter in {v}"))?,
            );
        }
        let expected: Vec<u64> = (1..=12).collect();
        ensure!(
            counts == expected,
            "with --forward-by uid one user's calls should reach one backend: counters {counts:?}"
        );
        Ok(())
    })
    .await
    .context("the test took too long")?
}
