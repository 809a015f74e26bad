//! The cluster test kit checked against itself, without the host: real NATS and etcd start and answer, and the
//! fake Go frontend and backend find each other in etcd and run every call of cluster.md §4 between them. If
//! these fail, the host tests that use the kit prove nothing.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use pitaya_tests::cluster::messages::{KickAnswer, MsgType, Response, RpcType};
use pitaya_tests::cluster::peer::{self, DEFAULT_PREFIX, ensure_ack, list_servers};
use pitaya_tests::cluster::{FakeBackend, FakeFrontend, Services};
use prost::Message as _;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_frontend_and_fake_backend_talk_as_the_contract_says() -> Result<()> {
    tokio::time::timeout(Duration::from_secs(60), scenario())
        .await
        .context("the scenario took over 60 s")?
}

async fn scenario() -> Result<()> {
    let services = Services::start().await?;
    let mut be = FakeBackend::start(&services, "room", DEFAULT_PREFIX).await?;
    let mut fe = FakeFrontend::start(&services, "connector", DEFAULT_PREFIX).await?;

    // Discovery: both entries, with leases, as §1 says.
    let mut etcd = services.etcd.client().await?;
    let all = list_servers(&mut etcd, DEFAULT_PREFIX).await?;
    ensure!(all.len() == 2, "expected two servers, got {all:#?}");
    for e in &all {
        ensure!(e.lease != 0, "{} has no lease", e.key);
        ensure!(
            e.key == format!("pitaya/servers/{}/{}", e.server_type, e.id),
            "key {}",
            e.key
        );
        ensure!(peer::is_uuid(&e.id), "id {} is not a UUID", e.id);
    }
    let rooms = fe.servers_of("room").await?;
    ensure!(
        rooms.len() == 1 && rooms[0].id == be.id && !rooms[0].frontend,
        "{rooms:#?}"
    );
    let target = rooms[0].clone();
    ensure!(be.frontend_type(&fe.id).await? == "connector");

    // A forwarded request while the backend binds the session first: bindsession must be served (and
    // stamped) before the forward's reply arrives.
    fe.add_session(7, json!({"ipversion": "ipv4"}));
    let forward = fe.forward(
        &target,
        7,
        12,
        MsgType::Request,
        "room.room.join",
        br#"{"a":1}"#,
    );
    let backend_side = async {
        let r = be.take_request("room.room.join", WAIT).await?;
        ensure!(r.request.r#type == RpcType::Sys as i32);
        let m = r.msg()?;
        ensure!(m.id == 12 && m.data == br#"{"a":1}"# && m.r#type == MsgType::Request as i32);
        let s = r.session()?;
        ensure!(s.id == 7 && s.uid.is_empty());
        ensure!(
            serde_json::from_slice::<serde_json::Value>(&s.data)? == json!({"ipversion": "ipv4"})
        );
        ensure!(r.request.frontend_id == fe.id);
        ensure!(r.metadata["reqTimeout"] == "5s" && r.metadata["peer.id"] == fe.id.as_str());
        ensure_ack(&be.bind_session("connector", &fe.id, 7, "u1").await?)?;
        be.respond(&r, Response::data(r#"{"code":0}"#)).await
    };
    let (fwd, ()) = tokio::try_join!(forward, backend_side)?;
    ensure!(
        fwd.response == Response::data(r#"{"code":0}"#),
        "{:?}",
        fwd.response
    );
    let bind = fe
        .sys_calls()
        .take("bindsession", WAIT, |c| c.route == "sys.bindsession")
        .await?;
    ensure!(
        bind.stamp < fwd.stamp,
        "bindsession {} after the reply {}",
        bind.stamp,
        fwd.stamp
    );
    ensure!(bind.session.as_ref().map(|s| (s.id, s.uid.as_str())) == Some((7, "u1")));
    ensure!(fe.session(7).context("session 7")?.uid == "u1");
    let b = fe
        .bindings()
        .take("BindMsg", WAIT, |b| b.uid == "u1")
        .await?;
    ensure!(b.fid == fe.id);

    // pushsession replaces the data.
    ensure_ack(
        &be.push_session(
            "connector",
            &fe.id,
            7,
            "u1",
            &json!({"ipversion":"ipv4","lvl":2}),
        )
        .await?,
    )?;
    ensure!(fe.session(7).context("session 7")?.data == json!({"ipversion":"ipv4","lvl":2}));

    // Push and kick on the user subjects.
    be.publish_push("connector", "u1", "onHi", br#"{"hi":1}"#)
        .await?;
    let (_, p) = fe.wait_push("u1", WAIT).await?;
    ensure!(p.route == "onHi" && p.data == br#"{"hi":1}"#, "{p:?}");
    be.publish_kick("connector", "u1").await?;
    fe.wait_kick("u1", WAIT).await?;

    // sys.kick answers KickAnswer{true}; then the session is gone, and unknown sessions are PIT-000.
    let k = be.kick("connector", &fe.id, "u1").await?;
    ensure!(KickAnswer::decode(peer::sys_reply_data(&k)?)? == KickAnswer { kicked: true });
    let unknown = be.bind_session("connector", &fe.id, 7, "u1").await?;
    ensure!(
        unknown.error.as_ref().map(|e| e.code.as_str()) == Some("PIT-000"),
        "{unknown:?}"
    );

    // A notify, answered by a responder with `ack`.
    be.set_responder(|r| {
        (r.msg().ok()?.r#type == MsgType::Notify as i32).then(|| Response::data("ack"))
    });
    fe.add_session(8, json!({"ipversion": "ipv4"}));
    let n = fe
        .forward(&target, 8, 99, MsgType::Notify, "room.room.message", b"{}")
        .await?;
    ensure!(n.response == Response::data("ack"));
    let r = be.take_request("room.room.message", WAIT).await?;
    ensure!(r.msg()?.id == 0, "a notify carries id 0");

    // Revoking removes the keys at once.
    be.deregister().await?;
    fe.deregister().await?;
    let left = list_servers(&mut etcd, DEFAULT_PREFIX).await?;
    ensure!(left.is_empty(), "keys left after revoking: {left:#?}");
    Ok(())
}
