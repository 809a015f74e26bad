//! Service discovery in etcd, as cluster.md §1 says: a leased key per server, a watch on the
//! prefix with a periodic full resync, and a revoke on shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use etcd_client::{Client, EventType, GetOptions, PutOptions, WatchOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::metrics::Metrics;

/// Seconds the registration lease lives without a keepalive.
const LEASE_TTL: i64 = 60;
/// How often the lease is kept alive.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(20);
/// How often the whole server list is read again, in case a watch event was missed.
const RESYNC_EVERY: Duration = Duration::from_secs(120);
/// How long a server that stopped answering stays out of the view unless etcd announces it
/// again (its key may live on until its lease expires).
const DEAD_FOR: Duration = Duration::from_secs(60);
/// The longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// One server of the cluster: the JSON value of its etcd key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// The server id (a fresh UUID per start).
    pub id: String,
    /// The server type, e.g. `connector` or `room`.
    #[serde(rename = "type")]
    pub server_type: String,
    /// Free-form string metadata.
    #[serde(default)]
    pub metadata: HashMap<String, String>,
    /// Whether it holds client connections.
    #[serde(default)]
    pub frontend: bool,
    /// The machine it runs on.
    #[serde(default)]
    pub hostname: String,
}

/// The servers currently known, by id.
#[derive(Debug, Default)]
pub struct Servers {
    by_id: RwLock<HashMap<String, ServerInfo>>,
    /// Servers that did not answer, and since when.
    dead: Mutex<HashMap<String, Instant>>,
    /// Frontend types heard from in forwarded requests (their `peer.service`), kept for good.
    heard: RwLock<Vec<String>>,
}

impl Servers {
    /// The live servers of one type.
    pub fn of_type(&self, server_type: &str) -> Vec<ServerInfo> {
        let dead = lock(&self.dead);
        let mut servers: Vec<ServerInfo> = read(&self.by_id)
            .values()
            .filter(|server| server.server_type == server_type)
            .filter(|server| {
                dead.get(&server.id)
                    .is_none_or(|since| since.elapsed() >= DEAD_FOR)
            })
            .cloned()
            .collect();
        // A stable order makes the choice by uid consistent across frontends.
        servers.sort_by(|a, b| a.id.cmp(&b.id));
        servers
    }

    /// The server with this id.
    pub fn get(&self, id: &str) -> Option<ServerInfo> {
        read(&self.by_id).get(id).cloned()
    }

    /// The types of every known frontend, and of every frontend a request came from.
    pub fn frontend_types(&self) -> Vec<String> {
        let mut types: Vec<String> = read(&self.by_id)
            .values()
            .filter(|server| server.frontend)
            .map(|server| server.server_type.clone())
            .chain(read(&self.heard).iter().cloned())
            .collect();
        types.sort();
        types.dedup();
        types
    }

    /// Notes the type of a frontend that forwarded a request. A frontend can call this host
    /// before etcd's watch has told it of that frontend; a push or kick by uid made meanwhile
    /// would otherwise find no frontend type to publish to.
    pub fn heard_from_frontend(&self, server_type: &str) {
        if read(&self.heard).iter().any(|known| known == server_type) {
            return;
        }
        let mut heard = write(&self.heard);
        if !heard.iter().any(|known| known == server_type) {
            heard.push(server_type.to_owned());
        }
    }

    /// Takes a server out of the view because it stopped answering (NATS had no responder).
    pub fn mark_dead(&self, id: &str) {
        lock(&self.dead).insert(id.to_owned(), Instant::now());
    }

    fn put(&self, server: ServerInfo) {
        lock(&self.dead).remove(&server.id);
        write(&self.by_id).insert(server.id.clone(), server);
    }

    fn delete(&self, id: &str) -> Option<ServerInfo> {
        write(&self.by_id).remove(id)
    }

    fn replace(&self, servers: HashMap<String, ServerInfo>) {
        *write(&self.by_id) = servers;
    }
}

/// Parses a key and its value into a server, checking that they agree.
fn parse(prefix: &str, key: &[u8], value: &[u8]) -> Option<ServerInfo> {
    let (server_type, id) = key_parts(prefix, key)?;
    let server: ServerInfo = serde_json::from_slice(value).ok()?;
    (server.id == id && server.server_type == server_type).then_some(server)
}

/// `<prefix>servers/<type>/<id>` → (type, id).
fn key_parts<'a>(prefix: &str, key: &'a [u8]) -> Option<(&'a str, &'a str)> {
    let key = std::str::from_utf8(key).ok()?;
    let rest = key.strip_prefix(prefix)?.strip_prefix("servers/")?;
    let (server_type, id) = rest.split_once('/')?;
    (!server_type.is_empty() && !id.is_empty() && !id.contains('/')).then_some((server_type, id))
}

/// A server's etcd key.
///
/// ```
/// use pitaya_host::cluster::{ServerInfo, discovery::server_key};
///
/// let me = ServerInfo {
///     id: "7f1c".into(),
///     server_type: "room".into(),
///     metadata: Default::default(),
///     frontend: false,
///     hostname: "box".into(),
/// };
/// assert_eq!(server_key("pitaya/", &me), "pitaya/servers/room/7f1c");
/// assert_eq!(
///     serde_json::to_string(&me).unwrap(),
///     r#"{"id":"7f1c","type":"room","metadata":{},"frontend":false,"hostname":"box"}"#
/// );
/// ```
pub fn server_key(prefix: &str, server: &ServerInfo) -> String {
    format!("{prefix}servers/{}/{}", server.server_type, server.id)
}

/// Our registration: kept alive by a task until [`Registration::revoke`].
pub struct Registration {
    client: Client,
    lease: Arc<std::sync::atomic::AtomicI64>,
    stop: Option<oneshot::Sender<()>>,
}

impl Registration {
    /// Puts our key under a fresh lease and keeps it alive (re-granting and re-putting it if
    /// the lease is lost). Fails only if the first registration fails.
    pub async fn start(
        mut client: Client,
        prefix: &str,
        me: &ServerInfo,
        metrics: Arc<Metrics>,
    ) -> Result<Self, etcd_client::Error> {
        let key = server_key(prefix, me);
        let value = serde_json::to_vec(me).expect("a server info always serializes");
        let lease = register(&mut client, &key, &value).await?;
        let lease_id = Arc::new(std::sync::atomic::AtomicI64::new(lease));
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(keep_alive(
            client.clone(),
            key,
            value,
            lease_id.clone(),
            stopped,
            metrics,
        ));
        Ok(Self {
            client,
            lease: lease_id,
            stop: Some(stop),
        })
    }

    /// Stops the keepalive and revokes the lease, so the key disappears at once.
    pub async fn revoke(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let lease = self.lease.load(std::sync::atomic::Ordering::Acquire);
        match tokio::time::timeout(Duration::from_secs(2), self.client.lease_revoke(lease)).await {
            Ok(Ok(_)) => tracing::info!("left the cluster (lease revoked)"),
            Ok(Err(error)) => tracing::warn!(%error, "could not revoke the etcd lease"),
            Err(_) => tracing::warn!("revoking the etcd lease timed out"),
        }
    }
}

async fn register(client: &mut Client, key: &str, value: &[u8]) -> Result<i64, etcd_client::Error> {
    let lease = client.lease_grant(LEASE_TTL, None).await?.id();
    client
        .put(key, value, Some(PutOptions::new().with_lease(lease)))
        .await?;
    Ok(lease)
}

async fn keep_alive(
    mut client: Client,
    key: String,
    value: Vec<u8>,
    lease: Arc<std::sync::atomic::AtomicI64>,
    mut stop: oneshot::Receiver<()>,
    metrics: Arc<Metrics>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut registered = true;
    loop {
        if !registered {
            match register(&mut client, &key, &value).await {
                Ok(id) => {
                    lease.store(id, std::sync::atomic::Ordering::Release);
                    tracing::info!(key, "registered in etcd again");
                    backoff = Duration::from_millis(100);
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "etcd registration failed");
                    metrics.cluster_up("etcd", false);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = &mut stop => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        metrics.cluster_up("etcd", true);
        let id = lease.load(std::sync::atomic::Ordering::Acquire);
        let (mut keeper, mut answers) = match client.lease_keep_alive(id).await {
            Ok(pair) => pair,
            Err(error) => {
                tracing::warn!(%error, "etcd keepalive failed");
                registered = false;
                continue;
            }
        };
        let mut tick = tokio::time::interval(KEEPALIVE_EVERY);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => {
                    if let Err(error) = keeper.keep_alive().await {
                        tracing::warn!(%error, "etcd keepalive failed");
                        break;
                    }
                }
                answer = answers.message() => match answer {
                    Ok(Some(answer)) if answer.ttl() > 0 => {}
                    Ok(_) | Err(_) => {
                        tracing::warn!("the etcd lease was lost; registering again");
                        break;
                    }
                },
            }
        }
        // Whatever ended the keepalive, the lease may be gone: register again.
        registered = false;
    }
}

/// Reads every server into `servers` once (after [`watch`] is in place: see there).
pub async fn load(
    client: &mut Client,
    prefix: &str,
    servers: &Servers,
) -> Result<(), etcd_client::Error> {
    resync(client, prefix, &format!("{prefix}servers/"), servers).await?;
    Ok(())
}

/// Keeps `servers` current from etcd: a watch on the prefix, plus a full read every two
/// minutes. Errors are retried with backoff for as long as the host runs.
///
/// The first watch starts at etcd's current revision, and `established` hears once it is in
/// place (or is dropped if it cannot be): the caller then reads every server with [`load`],
/// and between the two nothing is missed. (A watch that starts at a past revision is, in
/// etcd, caught up by a background loop that runs every 100 ms, and sees nothing, not even
/// new events, until then: a host registered in that window served requests blind to servers
/// that had just joined.) Later watches, after a full read, start at the revision after it.
pub async fn watch(
    mut client: Client,
    prefix: String,
    servers: Arc<Servers>,
    metrics: Arc<Metrics>,
    established: oneshot::Sender<()>,
) {
    let mut established = Some(established);
    let root = format!("{prefix}servers/");
    let mut backoff = Duration::from_millis(100);
    loop {
        let read = if established.is_some() {
            // Not read yet: the caller reads once this watch is in place.
            Ok(None)
        } else {
            resync(&mut client, &prefix, &root, &servers)
                .await
                .map(Some)
        };
        let revision = match read {
            Ok(revision) => revision,
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff, "reading servers from etcd failed");
                metrics.cluster_up("etcd", false);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let mut options = WatchOptions::new().with_prefix();
        if let Some(revision) = revision {
            options = options.with_start_revision(revision + 1);
        }
        let mut stream = match client.watch(root.as_str(), Some(options)).await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "watching etcd failed");
                // The caller then reads without waiting for a watch; the next one starts after
                // a full read of its own.
                established.take();
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        if let Some(established) = established.take() {
            let _ = established.send(());
        }
        let resync_at = tokio::time::sleep(RESYNC_EVERY);
        tokio::pin!(resync_at);
        loop {
            tokio::select! {
                _ = &mut resync_at => break,
                message = stream.message() => match message {
                    Ok(Some(response)) => {
                        for event in response.events() {
                            let Some(kv) = event.kv() else { continue };
                            match event.event_type() {
                                EventType::Put => {
                                    if let Some(server) = parse(&prefix, kv.key(), kv.value()) {
                                        tracing::info!(id = server.id, server_type = server.server_type, "server joined");
                                        servers.put(server);
                                    }
                                }
                                EventType::Delete => {
                                    if let Some((_, id)) = key_parts(&prefix, kv.key())
                                        && let Some(server) = servers.delete(id)
                                    {
                                        tracing::info!(id, server_type = server.server_type, "server left");
                                    }
                                }
                            }
                        }
                    }
                    Ok(None) | Err(_) => {
                        tracing::warn!("the etcd watch ended; reading the servers again");
                        break;
                    }
                },
            }
        }
    }
}

/// Reads every server; returns the revision the read saw.
async fn resync(
    client: &mut Client,
    prefix: &str,
    root: &str,
    servers: &Servers,
) -> Result<i64, etcd_client::Error> {
    let response = client
        .get(root, Some(GetOptions::new().with_prefix()))
        .await?;
    let found = response
        .kvs()
        .iter()
        .filter_map(|kv| parse(prefix, kv.key(), kv.value()))
        .map(|server| (server.id.clone(), server))
        .collect();
    servers.replace(found);
    Ok(response.header().map_or(0, |header| header.revision()))
}

// As in session.rs: a poisoned lock still holds a usable map.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_is_the_documented_json() {
        let me = ServerInfo {
            id: "abc".into(),
            server_type: "room".into(),
            metadata: HashMap::new(),
            frontend: false,
            hostname: "box".into(),
        };
        assert_eq!(
            serde_json::to_string(&me).unwrap(),
            r#"{"id":"abc","type":"room","metadata":{},"frontend":false,"hostname":"box"}"#
        );
        assert_eq!(server_key("pitaya/", &me), "pitaya/servers/room/abc");
    }

    #[test]
    fn keys_and_values_must_agree() {
        let value = br#"{"id":"abc","type":"room","metadata":{},"frontend":false,"hostname":"h","extra":1}"#;
        assert!(parse("pitaya/", b"pitaya/servers/room/abc", value).is_some());
        assert!(parse("pitaya/", b"pitaya/servers/room/other", value).is_none());
        assert!(parse("pitaya/", b"pitaya/servers/connector/abc", value).is_none());
        assert!(parse("other/", b"pitaya/servers/room/abc", value).is_none());
        assert!(parse("pitaya/", b"pitaya/servers/room/abc", b"not json").is_none());
    }

    #[test]
    fn a_dead_server_leaves_the_view_until_announced_again() {
        let servers = Servers::default();
        let server = |id: &str| ServerInfo {
            id: id.into(),
            server_type: "room".into(),
            metadata: HashMap::new(),
            frontend: false,
            hostname: String::new(),
        };
        servers.put(server("b"));
        servers.put(server("a"));
        let ids = |s: &Servers| {
            s.of_type("room")
                .into_iter()
                .map(|s| s.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&servers), ["a", "b"]);
        servers.mark_dead("a");
        assert_eq!(ids(&servers), ["b"]);
        servers.put(server("a"));
        assert_eq!(ids(&servers), ["a", "b"]);
        assert!(servers.of_type("connector").is_empty());
    }

    #[test]
    fn frontend_types_include_those_heard_from_before_etcd_told() {
        let servers = Servers::default();
        assert!(servers.frontend_types().is_empty());
        servers.heard_from_frontend("connector");
        servers.heard_from_frontend("connector");
        assert_eq!(servers.frontend_types(), ["connector"]);
        servers.put(ServerInfo {
            id: "gate-1".into(),
            server_type: "gate".into(),
            metadata: HashMap::new(),
            frontend: true,
            hostname: String::new(),
        });
        servers.put(ServerInfo {
            id: "fe-1".into(),
            server_type: "connector".into(),
            metadata: HashMap::new(),
            frontend: true,
            hostname: String::new(),
        });
        assert_eq!(servers.frontend_types(), ["connector", "gate"]);
    }
}
