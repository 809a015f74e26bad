//! The host's etcd registration read back as a Go peer reads it (cluster.md §1): key, JSON value field by
//! field, a lease of 60 s, gone at once after SIGTERM, a custom prefix, a fresh id per start; and the host's
//! watch: a backend that registers after the frontend started is used, one that leaves is no longer waited for.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use pitaya_tests::cluster::messages::{MsgType, Response};
use pitaya_tests::cluster::peer::{DEFAULT_PREFIX, LEASE_TTL, ServerEntry, is_uuid, list_servers};
use pitaya_tests::cluster::{FakeBackend, FakeFrontend, Services};
use pitaya_tests::{Client, Server, ServerOptions, Transport};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(5);
const TEST_LIMIT: Duration = Duration::from_secs(90);

async fn host(
    services: &Services,
    ty: &str,
    frontend: bool,
    prefix: Option<&str>,
) -> Result<Server> {
    let mut cluster = services.host(ty, frontend);
    if let Some(p) = prefix {
        cluster = cluster.prefix(p);
    }
    Server::start(
        ServerOptions::default()
            .components(&["lab.wasm"])
            .label(ty)
            .cluster(cluster),
    )
    .await
}

/// The entry of `server` under `prefix`, checked field by field against §1.
async fn check_entry(
    etcd: &mut etcd_client::Client,
    prefix: &str,
    server: &Server,
    ty: &str,
    frontend: bool,
) -> Result<ServerEntry> {
    let id = server.id()?;
    ensure!(is_uuid(id), "the server id {id:?} is not a UUID");
    let all = list_servers(etcd, prefix).await?;
    let key = format!("{prefix}servers/{ty}/{id}");
    let e = all
        .iter()
        .find(|e| e.key == key)
        .with_context(|| format!("no key {key} in etcd; found {all:#?}"))?;
    let obj = e
        .json
        .as_object()
        .context("the value is not a JSON object")?;
    ensure!(
        obj["id"] == id,
        "value.id {} differs from the key's id {id}",
        obj["id"]
    );
    ensure!(
        obj["type"] == ty,
        "value.type {} differs from the key's type {ty}",
        obj["type"]
    );
    ensure!(
        obj["frontend"] == Value::Bool(frontend),
        "value.frontend should be {frontend}: {}",
        e.json
    );
    ensure!(
        obj.get("metadata").is_some_and(Value::is_object),
        "value.metadata should be an object: {}",
        e.json
    );
    ensure!(
        obj.get("hostname")
            .and_then(Value::as_str)
            .is_some_and(|h| !h.is_empty()),
        "value.hostname should be a non-empty string: {}",
        e.json
    );
    ensure!(e.lease != 0, "{key} is not attached to a lease");
    let ttl = etcd
        .lease_time_to_live(e.lease, None)
        .await
        .context("reading the lease")?;
    ensure!(
        ttl.granted_ttl() == LEASE_TTL,
        "the lease was granted {} s, not {LEASE_TTL}",
        ttl.granted_ttl()
    );
    ensure!(ttl.ttl() > 0, "the lease has expired");
    Ok(e.clone())
}

/// SIGTERM, then the key must be gone as soon as the process has exited (the lease was revoked, not left
/// to expire in 60 s).
async fn terminate_and_check_gone(
    etcd: &mut etcd_client::Client,
    prefix: &str,
    server: &Server,
    key: &str,
) -> Result<()> {
    server.signal(libc::SIGTERM)?;
    let status = server.wait_exit(Duration::from_secs(10)).await?;
    ensure!(
        status.success(),
        "a graceful shutdown should exit 0: {status}"
    );
    let all = list_servers(etcd, prefix).await?;
    ensure!(
        all.iter().all(|e| e.key != key),
        "{key} is still in etcd after the host exited: the lease was not revoked"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_registers_like_a_go_server_and_revokes_on_sigterm() -> Result<()> {
    tokio::time::timeout(TEST_LIMIT, async {
        let services = Services::start().await?;
        let (be, fe) = tokio::try_join!(
            host(&services, "room", false, None),
            host(&services, "connector", true, None)
        )?;
        let mut etcd = services.etcd.client().await?;
        let be_entry = check_entry(&mut etcd, DEFAULT_PREFIX, &be, "room", false).await?;
        let fe_entry = check_entry(&mut etcd, DEFAULT_PREFIX, &fe, "connector", true).await?;
        ensure!(
            be_entry.id != fe_entry.id,
            "two servers share the id {}",
            be_entry.id
        );

        terminate_and_check_gone(&mut etcd, DEFAULT_PREFIX, &be, &be_entry.key).await?;
        terminate_and_check_gone(&mut etcd, DEFAULT_PREFIX, &fe, &fe_entry.key).await?;

        // A second start gets a fresh id.
        let again = host(&services, "room", false, None).await?;
        let again_entry = check_entry(&mut etcd, DEFAULT_PREFIX, &again, "room", false).await?;
        ensure!(
            again_entry.id != be_entry.id,
            "a restart reused the server id {}",
            be_entry.id
        );
        Ok(())
    })
    .await
    .context("the test took too long")?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_etcd_prefix_is_honoured() -> Result<()> {
    tokio::time::timeout(TEST_LIMIT, async {
        let services = Services::start().await?;
        let be = host(&services, "room", false, Some("game/")).await?;
        let mut etcd = services.etcd.client().await?;
        let entry = check_entry(&mut etcd, "game/", &be, "room", false).await?;
        let default = list_servers(&mut etcd, DEFAULT_PREFIX).await?;
        ensure!(
            default.is_empty(),
            "with --etcd-prefix game/ nothing belongs under pitaya/: {default:#?}"
        );

        // A frontend with the same prefix finds it; its forwards work.
        let fe = host(&services, "connector", true, Some("game/")).await?;
        check_entry(&mut etcd, "game/", &fe, "connector", true).await?;
        let mut c = fe.connect_ready(Transport::Tcp).await?;
        let v = pitaya_tests::checks::call(
            &mut c,
            "room.lab.work",
            &serde_json::json!({"iterations": 3}),
        )
        .await?;
        ensure!(v == serde_json::json!({"done": 3}), "{v}");
        terminate_and_check_gone(&mut etcd, "game/", &be, &entry.key).await?;
        Ok(())
    })
    .await
    .context("the test took too long")?
}

/// Sends `route` until it is answered by a success, within `within`; each attempt must be answered (success
/// or error) within `per_attempt`.
async fn until_success(
    c: &mut Client,
    route: &str,
    within: Duration,
    per_attempt: Duration,
) -> Result<Vec<u8>> {
    let deadline = Instant::now() + within;
    loop {
        let id = c.next_id();
        c.send_request(id, route, b"{}").await?;
        let m = c.wait_response_within(id, per_attempt).await?;
        if !m.error {
            return Ok(m.payload);
        }
        if Instant::now() >= deadline {
            bail!("{route} still fails after {within:?}: {}", m.text());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_frontend_watches_servers_come_and_go() -> Result<()> {
    tokio::time::timeout(TEST_LIMIT, async {
        let services = Services::start().await?;
        let fe = host(&services, "connector", true, None).await?;
        let mut c = fe.connect_ready(Transport::Tcp).await?;

        // No room server yet: an error, quickly.
        let id = c.next_id();
        c.send_request(id, "room.room.join", b"{}").await?;
        let m = c.wait_response_within(id, Duration::from_secs(3)).await?;
        ensure!(
            m.error,
            "a forward with no room server succeeded: {}",
            m.text()
        );

        // A Go backend registers: the watch (PUT) makes the frontend use it.
        let mut be = FakeBackend::start(&services, "room", DEFAULT_PREFIX).await?;
        be.set_responder(|_| Some(Response::data("\"here\"")));
        let payload = until_success(&mut c, "room.room.join", WAIT, Duration::from_secs(3)).await?;
        ensure!(
            payload == b"\"here\"",
            "{:?}",
            String::from_utf8_lossy(&payload)
        );

        // It revokes its lease (DELETE) but keeps answering on NATS: only the watch can tell the frontend to
        // stop choosing it, and then the forward is an error, quickly.
        be.deregister().await?;
        let deadline = Instant::now() + WAIT;
        loop {
            let id = c.next_id();
            let started = Instant::now();
            c.send_request(id, "room.room.join", b"{}").await?;
            let m = c.wait_response_within(id, Duration::from_secs(3)).await?;
            if m.error {
                ensure!(
                    started.elapsed() < Duration::from_secs(3),
                    "the error took {:?}",
                    started.elapsed()
                );
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "the frontend still forwards to a server whose key was deleted: {}",
                    m.text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    })
    .await
    .context("the test took too long")?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subject_is_served_as_soon_as_the_key_is_there() -> Result<()> {
    tokio::time::timeout(TEST_LIMIT, async {
        let services = Services::start().await?;
        let fe = FakeFrontend::start(&services, "connector", DEFAULT_PREFIX).await?;
        fe.add_session(1, serde_json::json!({"ipversion": "ipv4"}));
        let mut etcd = services.etcd.client().await?;
        let mut watch = etcd
            .watch(
                "pitaya/servers/room/",
                Some(etcd_client::WatchOptions::new().with_prefix()),
            )
            .await
            .context("watching pitaya/servers/room/")?;
        // The request goes out on the key's PUT, while the host may still be starting: §1 says subscribe
        // before put, so it must not meet "no responders".
        let first_request = async {
            let entry = loop {
                let resp = tokio::time::timeout(Duration::from_secs(60), watch.message())
                    .await
                    .context("no PUT under pitaya/servers/room/")??
                    .context("the etcd watch ended")?;
                let put = resp.events().iter().find_map(|e| {
                    (e.event_type() == etcd_client::EventType::Put)
                        .then(|| e.kv())
                        .flatten()
                });
                if let Some(kv) = put {
                    let value: Value = serde_json::from_slice(kv.value())
                        .context("the host's value is not JSON")?;
                    break ServerEntry {
                        key: kv.key_str()?.to_owned(),
                        id: value["id"].as_str().context("no id")?.to_owned(),
                        server_type: "room".into(),
                        frontend: false,
                        hostname: String::new(),
                        json: value,
                        lease: kv.lease(),
                    };
                }
            };
            let r = fe
                .forward(
                    &entry,
                    1,
                    1,
                    MsgType::Request,
                    "room.lab.work",
                    br#"{"iterations":1}"#,
                )
                .await
                .context("the first request after the key appeared")?;
            anyhow::Ok((entry, r))
        };
        let (be, (entry, r)) =
            tokio::try_join!(host(&services, "room", false, None), first_request)?;
        ensure!(
            entry.id == be.id()?,
            "the PUT was not the host's: {entry:?}"
        );
        ensure!(r.response.error.is_none(), "{:?}", r.response);
        Ok(())
    })
    .await
    .context("the test took too long")?
}
