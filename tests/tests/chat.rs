//! The chat flow against the `room` component (chat.wasm) with clients A, B, C, D: joins, member lists,
//! new-user notices, broadcasts, and a closed session leaving the room. Over TCP, over WebSocket, and mixed.

use std::collections::BTreeSet;

use anyhow::{Context, Result, ensure};
use pitaya_tests::checks::{ensure_nothing_else, ensure_success};
use pitaya_tests::{Client, Server, Transport};
use serde_json::{Value, json};

/// `room.join` with `{}`: checks the answer and returns the members of the joiner's onMembers push.
async fn join(c: &mut Client, who: &str) -> Result<BTreeSet<String>> {
    let id = c.next_id();
    c.send_request(id, "room.join", b"{}").await?;
    let m = c
        .wait_response(id)
        .await
        .with_context(|| format!("{who} joining"))?;
    ensure_success(&m, id).with_context(|| format!("{who} joining"))?;
    ensure!(
        m.json()? == json!({"code":0,"result":"success"}),
        "{who}: unexpected join answer {}",
        m.text()
    );
    let push = c
        .wait_push("onMembers")
        .await
        .with_context(|| format!("{who}'s onMembers"))?;
    let v = push.json()?;
    let members = v["members"]
        .as_array()
        .with_context(|| format!("{who}: onMembers without a members array: {v}"))?;
    let set: BTreeSet<String> = members
        .iter()
        .map(|m| {
            m.as_str()
                .map(str::to_owned)
                .with_context(|| format!("{who}: member {m} is not a string"))
        })
        .collect::<Result<_>>()?;
    ensure!(
        set.len() == members.len(),
        "{who}: duplicate members in {v}"
    );
    Ok(set)
}

/// The one uid in `after` that is not in `before`, after checking `after` = `before` + it.
fn new_uid(who: &str, before: &BTreeSet<String>, after: &BTreeSet<String>) -> Result<String> {
    let added: Vec<_> = after.difference(before).cloned().collect();
    ensure!(
        added.len() == 1 && before.is_subset(after) && after.len() == before.len() + 1,
        "{who}'s onMembers should list {before:?} plus {who}, got {after:?}"
    );
    let uid = added[0].clone();
    ensure!(
        uid.parse::<u64>().is_ok(),
        "{who}'s uid {uid:?} is not a session id"
    );
    Ok(uid)
}

async fn expect_new_user(c: &mut Client, who: &str, uid: &str) -> Result<()> {
    let m = c
        .wait_push("onNewUser")
        .await
        .with_context(|| format!("{who} waiting for onNewUser of {uid}"))?;
    let v = m.json()?;
    ensure!(
        v == json!({"content": format!("New user: {uid}")}),
        "{who}: unexpected onNewUser {v}"
    );
    Ok(())
}

async fn expect_message(c: &mut Client, who: &str, body: &Value) -> Result<()> {
    let m = c
        .wait_push("onMessage")
        .await
        .with_context(|| format!("{who} waiting for onMessage {body}"))?;
    ensure!(
        m.json()? == *body,
        "{who}: onMessage body {} differs from the sent {body}",
        m.text()
    );
    Ok(())
}

/// A, B, C join; A's message reaches all three; C closes; B's message reaches A and B; D sees A, B and itself.
async fn chat_flow(server: &Server, [ta, tb, tc, td]: [Transport; 4]) -> Result<()> {
    let mut a = server.connect_ready(ta).await?;
    let mut b = server.connect_ready(tb).await?;
    let mut c = server.connect_ready(tc).await?;

    let none = BTreeSet::new();
    let members_a = join(&mut a, "A").await?;
    let uid_a = new_uid("A", &none, &members_a)?;

    let members_b = join(&mut b, "B").await?;
    let uid_b = new_uid("B", &members_a, &members_b)?;
    expect_new_user(&mut a, "A", &uid_b).await?;

    let members_c = join(&mut c, "C").await?;
    let uid_c = new_uid("C", &members_b, &members_c)?;
    expect_new_user(&mut a, "A", &uid_c).await?;
    expect_new_user(&mut b, "B", &uid_c).await?;

    let hello = json!({"name": "A", "content": "hello from A"});
    a.send_notify("room.message", hello.to_string().as_bytes())
        .await?;
    expect_message(&mut a, "A", &hello).await?;
    expect_message(&mut b, "B", &hello).await?;
    expect_message(&mut c, "C", &hello).await?;
    ensure_nothing_else(&mut c).await.context("C")?;

    c.close().await.context("C closing")?;
    drop(c);

    let bye = json!({"name": "B", "content": "C has gone"});
    b.send_notify("room.message", bye.to_string().as_bytes())
        .await?;
    expect_message(&mut a, "A", &bye).await?;
    expect_message(&mut b, "B", &bye).await?;

    let mut d = server.connect_ready(td).await?;
    let members_d = join(&mut d, "D").await?;
    let before_d: BTreeSet<String> = [uid_a.clone(), uid_b.clone()].into();
    ensure!(
        !members_d.contains(&uid_c),
        "D's onMembers {members_d:?} still lists the closed session C ({uid_c})"
    );
    let uid_d = new_uid("D", &before_d, &members_d)?;
    ensure!(uid_d != uid_c, "D got the closed session's uid");
    expect_new_user(&mut a, "A", &uid_d).await?;
    expect_new_user(&mut b, "B", &uid_d).await?;

    ensure_nothing_else(&mut a).await.context("A")?;
    ensure_nothing_else(&mut b).await.context("B")?;
    ensure_nothing_else(&mut d).await.context("D")?;
    Ok(())
}

/// Each run gets its own server, so that its room starts empty.
async fn run(transports: [Transport; 4]) -> Result<()> {
    let server = Server::start_default().await?;
    server
        .transports(&[transports[0]], |_| chat_flow(&server, transports))
        .await
        .with_context(|| format!("chat flow with A, B, C, D over {transports:?}"))
}

#[tokio::test]
async fn chat_over_tcp() -> Result<()> {
    run([Transport::Tcp; 4]).await
}

#[tokio::test]
async fn chat_over_websocket() -> Result<()> {
    run([Transport::Ws; 4]).await
}

#[tokio::test]
async fn chat_over_mixed_transports() -> Result<()> {
    run([Transport::Tcp, Transport::Ws, Transport::Tcp, Transport::Ws]).await
}
