//! Clustering with other hosts and with Go pitaya servers: etcd discovery, NATS requests and
//! the protobuf messages of ../shared/cluster.md.
//!
//! This module speaks the contract (who is where, how to ask, how to answer); what a request
//! *does* (calling a component, binding a local session) lives with the server
//! (`server/remote.rs`), which owns the router.

pub mod discovery;
pub mod messages;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::RequestErrorKind;
use prost::Message as _;
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::runtime::HostContext;
use crate::session::{RemoteLink, RemoteOp, Session, SessionId};
pub use discovery::{ServerInfo, Servers};
use messages::{KickMsg, Msg, MsgType, Push, Request, Response, RpcType, SessionMsg};

/// A cluster request's metadata: a JSON object.
pub type Metadata = serde_json::Map<String, serde_json::Value>;

tokio::task_local! {
    /// The metadata of the cluster request this task serves. The calls the task makes
    /// meanwhile (an RPC, `sys.bindsession`, `sys.pushsession`) carry its keys on, as pitaya
    /// propagates a handler's context: a tracing span or a request id crosses every hop.
    static INCOMING: Arc<Metadata>;
}

/// Runs `serve` as the serving of a request that came with `metadata`, whose keys the calls
/// `serve` makes meanwhile carry on.
pub async fn serving<F: std::future::Future>(
    metadata: Option<Arc<Metadata>>,
    serve: F,
) -> F::Output {
    match metadata {
        Some(metadata) => INCOMING.scope(metadata, serve).await,
        None => serve.await,
    }
}

/// The metadata of the request the current task serves, if any, to hand to work done later
/// on its behalf.
pub fn incoming() -> Option<Arc<Metadata>> {
    INCOMING.try_with(Arc::clone).ok()
}

/// How a frontend picks among the servers of a type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardBy {
    /// Any server, at random (pitaya's default).
    #[default]
    Random,
    /// The same server for the same uid while the set of servers stays the same (sessions
    /// without a uid are spread at random).
    Uid,
}

/// How this host takes part in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Whether this host holds client connections.
    pub frontend: bool,
    /// The NATS server, e.g. `nats://127.0.0.1:4222`.
    pub nats: String,
    /// The etcd endpoint, e.g. `http://127.0.0.1:2379`.
    pub etcd: String,
    /// The etcd key prefix, `pitaya/` by default.
    pub prefix: String,
    /// How long a call to another server may take.
    pub request_timeout: Duration,
    /// How a frontend picks a server for a forwarded message.
    pub forward_by: ForwardBy,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            frontend: false,
            nats: "nats://127.0.0.1:4222".into(),
            etcd: "http://127.0.0.1:2379".into(),
            prefix: "pitaya/".into(),
            request_timeout: Duration::from_secs(5),
            forward_by: ForwardBy::Random,
        }
    }
}

/// Why the host could not join the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The NATS server could not be reached.
    #[error("cannot connect to NATS at {url}: {cause}")]
    Nats {
        /// The URL tried.
        url: String,
        /// What went wrong.
        cause: String,
    },
    /// The etcd server could not be reached or refused the registration.
    #[error("cannot register in etcd at {url}: {cause}")]
    Etcd {
        /// The URL tried.
        url: String,
        /// What went wrong.
        cause: String,
    },
    /// A NATS subscription failed.
    #[error("cannot subscribe to {subject}: {cause}")]
    Subscribe {
        /// The subject.
        subject: String,
        /// What went wrong.
        cause: String,
    },
    /// The etcd prefix contains whitespace.
    #[error("etcd-prefix {0:?} may not contain whitespace")]
    BadPrefix(String),
    /// The server type (or a uid) would break the etcd keys or NATS subjects.
    #[error("{what} {value:?} may not be empty or contain '/', whitespace, '*' or '>'")]
    BadName {
        /// `server type` or `uid`.
        what: &'static str,
        /// The value given.
        value: String,
    },
}

/// A call to another server that failed: the error the client (or the calling component) gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// A pitaya code such as `PIT-408`.
    pub code: String,
    /// A readable message.
    pub message: String,
    /// Extra details from the remote handler.
    pub metadata: Vec<(String, String)>,
}

impl CallError {
    fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            metadata: Vec::new(),
        }
    }
}

/// The subscriptions this host serves; the server module runs their loops.
pub struct Subscriptions {
    /// Requests to this server (`pitaya/servers/<type>/<id>`).
    pub requests: async_nats::Subscriber,
    /// Bindings announced by frontends of this type (frontends only).
    pub bindings: Option<async_nats::Subscriber>,
}

/// This host's seat in the cluster.
pub struct Cluster {
    /// This server, as registered.
    pub me: ServerInfo,
    config: ClusterConfig,
    nats: async_nats::Client,
    etcd: etcd_client::Client,
    /// Every server known, this one included.
    pub servers: Arc<Servers>,
    registration: tokio::sync::Mutex<Option<discovery::Registration>>,
    context: Arc<HostContext>,
    /// The uids whose push and kick subjects this frontend listens to, and for which session.
    users: Mutex<HashMap<String, (SessionId, tokio::task::AbortHandle)>>,
    /// When each stand-in last served a forwarded message (a backend never hears of a
    /// client's disconnection, so idle stand-ins expire).
    stand_ins_used: Mutex<HashMap<SessionId, std::time::Instant>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

/// Checks a name that becomes part of etcd keys and NATS subjects.
///
/// ```
/// use pitaya_host::cluster::check_name;
///
/// assert!(check_name("server type", "room").is_ok());
/// assert!(check_name("uid", "a/b").is_err());
/// ```
pub fn check_name(what: &'static str, value: &str) -> Result<(), ClusterError> {
    let bad = value.is_empty()
        || value
            .chars()
            .any(|c| c == '/' || c == '*' || c == '>' || c.is_whitespace());
    if bad {
        Err(ClusterError::BadName {
            what,
            value: value.to_owned(),
        })
    } else {
        Ok(())
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// How a Go peer writes a duration: `5s`, `1.5s`, `250ms`.
fn go_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else if ms >= 1000 {
        format!("{}s", duration.as_secs_f64())
    } else {
        format!("{ms}ms")
    }
}

impl Cluster {
    /// Connects to NATS and etcd and subscribes this server's subjects. The host is not
    /// visible to others until [`Cluster::register`].
    pub async fn connect(
        server_type: &str,
        config: ClusterConfig,
        context: Arc<HostContext>,
    ) -> Result<(Arc<Self>, Subscriptions), ClusterError> {
        check_name("server type", server_type)?;
        if config.prefix.chars().any(char::is_whitespace) {
            return Err(ClusterError::BadPrefix(config.prefix.clone()));
        }
        let metrics = context.metrics.clone();
        let events = metrics.clone();
        let nats = async_nats::ConnectOptions::new()
            .name("pitaya-host")
            .request_timeout(Some(config.request_timeout))
            .event_callback(move |event| {
                let metrics = events.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!("NATS connected");
                            metrics.cluster_up("nats", true);
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!(
                                "NATS disconnected; reconnecting, requests fail fast meanwhile"
                            );
                            metrics.cluster_up("nats", false);
                        }
                        other => tracing::info!(event = %other, "NATS"),
                    }
                }
            })
            .connect(config.nats.as_str())
            .await
            .map_err(|cause| ClusterError::Nats {
                url: config.nats.clone(),
                cause: cause.to_string(),
            })?;
        metrics.cluster_up("nats", true);
        let etcd_options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(5));
        let etcd = etcd_client::Client::connect([config.etcd.as_str()], Some(etcd_options))
            .await
            .map_err(|cause| ClusterError::Etcd {
                url: config.etcd.clone(),
                cause: cause.to_string(),
            })?;
        let me = ServerInfo {
            id: uuid::Uuid::new_v4().to_string(),
            server_type: server_type.to_owned(),
            metadata: HashMap::new(),
            frontend: config.frontend,
            hostname: hostname(),
        };
        let subscribe = |subject: String| {
            let nats = nats.clone();
            async move {
                nats.subscribe(subject.clone())
                    .await
                    .map_err(|cause| ClusterError::Subscribe {
                        subject,
                        cause: cause.to_string(),
                    })
            }
        };
        // Subscribed before the key is put: a peer may call as soon as it sees us.
        let requests = subscribe(format!("pitaya/servers/{}/{}", me.server_type, me.id)).await?;
        let bindings = if config.frontend {
            Some(subscribe(format!("pitaya/{}/bindings", me.server_type)).await?)
        } else {
            None
        };
        // The server has the subscriptions once it answers a PING: only then may the key go
        // into etcd.
        nats.flush().await.map_err(|cause| ClusterError::Nats {
            url: config.nats.clone(),
            cause: cause.to_string(),
        })?;
        let cluster = Arc::new(Self {
            me,
            config,
            nats,
            etcd,
            servers: Arc::new(Servers::default()),
            registration: tokio::sync::Mutex::new(None),
            context,
            users: Mutex::new(HashMap::new()),
            stand_ins_used: Mutex::new(HashMap::new()),
            metrics,
        });
        Ok((cluster, Subscriptions { requests, bindings }))
    }

    /// Reads the other servers, starts watching them, and puts this one's key in etcd. Once
    /// it returns, the host knows the cluster as it was and others can call it.
    pub async fn register(&self) -> Result<(), ClusterError> {
        let etcd_error = |cause: etcd_client::Error| ClusterError::Etcd {
            url: self.config.etcd.clone(),
            cause: cause.to_string(),
        };
        let mut etcd = self.etcd.clone();
        // The watch first, then the read: a server that joins in between is seen by the watch,
        // and one that joined before is in the read. Only then is this host registered, so
        // nothing calls it while its view of the cluster has a hole (a push by uid found no
        // frontend to publish to when it did).
        let (established, watching) = tokio::sync::oneshot::channel();
        let watch = tokio::spawn(discovery::watch(
            self.etcd.clone(),
            self.config.prefix.clone(),
            self.servers.clone(),
            self.metrics.clone(),
            established,
        ));
        // Dropped unsent when the watch cannot start: the read below then says why.
        if tokio::time::timeout(self.config.request_timeout, watching)
            .await
            .is_err()
        {
            tracing::warn!("the etcd watch did not start in time; registering anyway");
        }
        let joined = async {
            discovery::load(&mut etcd, &self.config.prefix, &self.servers).await?;
            discovery::Registration::start(
                self.etcd.clone(),
                &self.config.prefix,
                &self.me,
                self.metrics.clone(),
            )
            .await
        };
        let registration = match joined.await {
            Ok(registration) => registration,
            Err(error) => {
                // Not joined: nothing is left watching for a host that will not serve.
                watch.abort();
                return Err(etcd_error(error));
            }
        };
        *self.registration.lock().await = Some(registration);
        tracing::info!(
            id = self.me.id,
            server_type = self.me.server_type,
            frontend = self.me.frontend,
            "joined the cluster"
        );
        Ok(())
    }

    /// Leaves the cluster: revokes the lease so peers drop this server at once.
    pub async fn leave(&self) {
        if let Some(registration) = self.registration.lock().await.take() {
            registration.revoke().await;
        }
        // NATS may be down: pending publishes get a moment, not a hang.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.nats.flush()).await;
    }

    /// The NATS client (the server module replies with it).
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// The metadata sent with every request: a JSON object, never empty, with `reqTimeout`
    /// as a string (Go peers crash on any other type). Within the serving of a cluster request
    /// it carries that request's keys on, `req-route`, `request.id` and `req-start-time`
    /// included (the route, id and start of the call that began the chain, which a Go server
    /// logs and times its answer by), with this server as the peer.
    fn metadata(&self, route: &str) -> Vec<u8> {
        let mut metadata = incoming().map(|m| Metadata::clone(&m)).unwrap_or_default();
        metadata.insert("peer.id".into(), self.me.id.clone().into());
        metadata.insert("peer.service".into(), self.me.server_type.clone().into());
        metadata.insert(
            "reqTimeout".into(),
            go_duration(self.config.request_timeout).into(),
        );
        metadata
            .entry("req-route")
            .or_insert_with(|| route.to_owned().into());
        metadata
            .entry("request.id")
            .or_insert_with(|| uuid::Uuid::new_v4().to_string().into());
        metadata.entry("req-start-time").or_insert_with(|| {
            // Go's time.Now().UnixNano(), a number; 0 for a clock set before 1970.
            let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            u64::try_from(since.map_or(0, |t| t.as_nanos()))
                .unwrap_or(u64::MAX)
                .into()
        });
        serde_json::Value::Object(metadata).to_string().into_bytes()
    }

    /// Forwards a client's message to a server of `server_type` and returns the answer (the
    /// data of the Response, as the remote handler encoded it).
    pub async fn forward(
        &self,
        server_type: &str,
        session: &Session,
        id: u64,
        route: &str,
        payload: &[u8],
        notify: bool,
    ) -> Result<Vec<u8>, CallError> {
        let uid = session.uid();
        let request = Request {
            r#type: RpcType::Sys as i32,
            session: Some(SessionMsg {
                id: i64::try_from(session.id()).unwrap_or(i64::MAX),
                uid: uid.clone().unwrap_or_default(),
                data: data_to_json(&session.data()),
            }),
            msg: Some(Msg {
                id: if notify { 0 } else { id },
                route: route.to_owned(),
                data: payload.to_vec(),
                reply: String::new(),
                r#type: if notify {
                    MsgType::Notify
                } else {
                    MsgType::Request
                } as i32,
            }),
            frontend_id: self.me.id.clone(),
            metadata: self.metadata(route),
        };
        self.call_type(server_type, uid.as_deref(), &request).await
    }

    /// Calls `route` (`type.component.handler`, or `component.handler` on this server's own
    /// type) on a server of that type, as pitaya's RPC does: a User request, no session.
    pub async fn rpc(&self, route: &str, payload: &[u8]) -> Result<Vec<u8>, CallError> {
        let parts: Vec<&str> = route.split('.').collect();
        let server_type = match parts.as_slice() {
            [server_type, component, handler]
                if !server_type.is_empty() && !component.is_empty() && !handler.is_empty() =>
            {
                *server_type
            }
            [component, handler] if !component.is_empty() && !handler.is_empty() => {
                self.me.server_type.as_str()
            }
            _ => {
                return Err(CallError::new(
                    "PIT-400",
                    format!("pitaya/remote: malformed route {route:?}"),
                ));
            }
        };
        let request = self.user_request(route, payload.to_vec());
        self.call_type(server_type, None, &request).await
    }

    /// A User request with no session, as pitaya's RPC and `sys.*` calls send it: like Go's
    /// `buildRequest`, it names a frontend only when this server is one.
    fn user_request(&self, route: &str, data: Vec<u8>) -> Request {
        let frontend_id = if self.me.frontend {
            self.me.id.clone()
        } else {
            String::new()
        };
        Request {
            r#type: RpcType::User as i32,
            session: None,
            msg: Some(Msg {
                id: 0,
                route: route.to_owned(),
                data,
                reply: String::new(),
                r#type: MsgType::Request as i32,
            }),
            frontend_id,
            metadata: self.metadata(route),
        }
    }

    /// Sends `request` to one server of `server_type`. A server that has no responder on NATS
    /// (it died, its key not yet expired) leaves the view and the next one is tried: nobody
    /// received the request, so trying again cannot run it twice.
    async fn call_type(
        &self,
        server_type: &str,
        uid: Option<&str>,
        request: &Request,
    ) -> Result<Vec<u8>, CallError> {
        if self.nats.connection_state() != async_nats::connection::State::Connected {
            self.metrics.forward("unavailable");
            return Err(CallError::new(
                "PIT-500",
                "pitaya/remote: the cluster is unreachable (NATS disconnected)",
            ));
        }
        let payload = bytes::Bytes::from(request.encode_to_vec());
        loop {
            let servers = self.servers.of_type(server_type);
            let Some(server) = self.choose(&servers, uid) else {
                self.metrics.forward("no_server");
                return Err(CallError::new(
                    "PIT-500",
                    format!("pitaya/remote: no servers available of type {server_type}"),
                ));
            };
            let subject = format!("pitaya/servers/{}/{}", server.server_type, server.id);
            match self.request(subject, payload.clone()).await {
                Err(Failed::NoResponders) => {
                    tracing::warn!(
                        id = server.id,
                        server_type,
                        "no responder: dropping the server"
                    );
                    self.servers.mark_dead(&server.id);
                }
                Err(Failed::Other(error)) => {
                    let outcome = if error.code == "PIT-408" {
                        "timeout"
                    } else {
                        "error"
                    };
                    self.metrics.forward(outcome);
                    return Err(error);
                }
                Ok(data) => {
                    self.metrics.forward("ok");
                    return Ok(data);
                }
            }
        }
    }

    fn choose<'a>(&self, servers: &'a [ServerInfo], uid: Option<&str>) -> Option<&'a ServerInfo> {
        if servers.is_empty() {
            return None;
        }
        let index = match (self.config.forward_by, uid) {
            (ForwardBy::Uid, Some(uid)) => {
                use std::hash::{BuildHasher, BuildHasherDefault};
                // A fixed hasher: every frontend must pick the same server for a uid.
                let hash =
                    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
                        .hash_one(uid);
                (hash % servers.len() as u64) as usize
            }
            _ => rand_index(servers.len()),
        };
        servers.get(index)
    }

    /// One NATS request with this host's timeout; the Response decoded.
    async fn request(&self, subject: String, payload: bytes::Bytes) -> Result<Vec<u8>, Failed> {
        let request = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(self.config.request_timeout));
        match self.nats.send_request(subject, request).await {
            Ok(message) => match Response::decode(message.payload.as_ref()) {
                Ok(Response {
                    error: Some(error), ..
                }) => Err(Failed::Other(CallError {
                    code: error.code,
                    message: error.msg,
                    metadata: error.metadata.into_iter().collect(),
                })),
                Ok(Response { data, .. }) => Ok(data),
                Err(error) => Err(Failed::Other(CallError::new(
                    "PIT-500",
                    format!("pitaya/remote: undecodable response: {error}"),
                ))),
            },
            Err(error) => Err(match error.kind() {
                RequestErrorKind::NoResponders => Failed::NoResponders,
                RequestErrorKind::TimedOut => Failed::Other(CallError::new(
                    "PIT-408",
                    "pitaya/remote: the request timed out",
                )),
                _ => Failed::Other(CallError::new(
                    "PIT-500",
                    format!("pitaya/remote: request failed: {error}"),
                )),
            }),
        }
    }

    /// A `sys.*` call to a frontend: a User request on its own subject.
    async fn sys_call(
        &self,
        frontend_id: &str,
        frontend_type: Option<&str>,
        route: &str,
        data: Vec<u8>,
    ) -> Result<Vec<u8>, CallError> {
        let frontend_type = match frontend_type {
            Some(known) => known.to_owned(),
            None => match self.servers.get(frontend_id) {
                Some(frontend) => frontend.server_type,
                None => {
                    return Err(CallError::new(
                        "PIT-404",
                        format!("pitaya/remote: frontend {frontend_id} not found"),
                    ));
                }
            },
        };
        let request = self.user_request(route, data);
        let subject = format!("pitaya/servers/{frontend_type}/{frontend_id}");
        match self.request(subject, request.encode_to_vec().into()).await {
            Ok(data) => Ok(data),
            Err(Failed::NoResponders) => {
                self.servers.mark_dead(frontend_id);
                Err(CallError::new(
                    "PIT-500",
                    "pitaya/remote: the frontend is gone",
                ))
            }
            Err(Failed::Other(error)) => Err(error),
        }
    }

    /// Publishes a push for `uid` on the user subject of every frontend type (a backend does
    /// not know which frontend holds a uid it has never served).
    pub fn push_to_user(
        &self,
        uid: &str,
        route: &str,
        payload: &[u8],
        frontend_type: Option<&str>,
    ) -> bool {
        let push = Push {
            route: route.to_owned(),
            uid: uid.to_owned(),
            data: payload.to_vec(),
        }
        .encode_to_vec();
        self.publish_user(uid, "push", push, frontend_type)
    }

    /// Publishes a kick for `uid` on the user subject of every frontend type (or the given one).
    pub fn kick_user(&self, uid: &str, frontend_type: Option<&str>) -> bool {
        let kick = KickMsg {
            user_id: uid.to_owned(),
        }
        .encode_to_vec();
        self.publish_user(uid, "kick", kick, frontend_type)
    }

    fn publish_user(
        &self,
        uid: &str,
        what: &str,
        payload: Vec<u8>,
        frontend_type: Option<&str>,
    ) -> bool {
        if check_name("uid", uid).is_err() {
            tracing::debug!(
                uid,
                "a uid that cannot be a NATS subject token is not published"
            );
            return false;
        }
        let types = match frontend_type {
            Some(found) => vec![found.to_owned()],
            None => self.servers.frontend_types(),
        };
        let payload = bytes::Bytes::from(payload);
        for frontend_type in &types {
            let subject = format!("pitaya/{frontend_type}/user/{uid}/{what}");
            let nats = self.nats.clone();
            let payload = payload.clone();
            self.context.runtime.spawn(async move {
                if let Err(error) = nats.publish(subject, payload).await {
                    tracing::warn!(%error, "NATS publish failed");
                }
            });
        }
        !types.is_empty()
    }

    /// Creates the stand-in of a session another frontend holds, with the task that carries
    /// out its ops (bind, data, push, kick) in order.
    pub fn remote_session(
        self: &Arc<Self>,
        frontend_id: &str,
        frontend_type: Option<String>,
        frontend_session: i64,
    ) -> Arc<Session> {
        let (ops, queue) = mpsc::unbounded_channel();
        let session = self.context.registry.create_remote(RemoteLink {
            frontend_id: frontend_id.to_owned(),
            frontend_type: frontend_type.clone(),
            frontend_session,
            ops,
        });
        tokio::spawn(run_remote_ops(
            self.clone(),
            frontend_id.to_owned(),
            frontend_type,
            frontend_session,
            queue,
        ));
        session
    }

    /// Binds a remote session's uid at its frontend (`sys.bindsession`) and waits for the
    /// answer, so the handler learns whether the frontend took it.
    pub async fn bind_remote(&self, link: &RemoteLink, uid: &str) -> Result<(), CallError> {
        let session = SessionMsg {
            id: link.frontend_session,
            uid: uid.to_owned(),
            data: Vec::new(),
        };
        self.sys_call(
            &link.frontend_id,
            link.frontend_type.as_deref(),
            "sys.bindsession",
            session.encode_to_vec(),
        )
        .await
        .map(drop)
    }

    /// Listens to the push and kick subjects of `uid`, bound to local session `session`
    /// (replacing the listener of an older session of the uid). Returns once subscribed, so
    /// a push published after it is not lost.
    pub async fn listen_user(self: &Arc<Self>, uid: String, session: SessionId) {
        if check_name("uid", &uid).is_err() {
            tracing::warn!(
                uid,
                "this uid cannot be a NATS subject: pushes and kicks by uid will not reach it"
            );
            return;
        }
        let base = format!("pitaya/{}/user/{uid}", self.me.server_type);
        let pushes = self.nats.subscribe(format!("{base}/push")).await;
        let kicks = self.nats.subscribe(format!("{base}/kick")).await;
        let (mut pushes, mut kicks) = match (pushes, kicks) {
            (Ok(pushes), Ok(kicks)) => (pushes, kicks),
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(uid, %error, "cannot subscribe to the user's subjects");
                return;
            }
        };
        // `subscribe` returns once the subscription is queued, not once the server has it: a
        // backend that publishes right after the bind's answer would find nobody listening.
        // Not while NATS is away (the flush would wait for its return, and the bind with it; the
        // client subscribes again when it reconnects), and bounded in any case.
        if self.nats.connection_state() == async_nats::connection::State::Connected {
            match tokio::time::timeout(self.config.request_timeout, self.nats.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(uid, %error, "NATS flush failed after subscribing")
                }
                Err(_) => tracing::warn!(uid, "NATS flush timed out after subscribing"),
            }
        }
        let context = self.context.clone();
        let listener_uid = uid.clone();
        let task = tokio::spawn(async move {
            use futures_util::StreamExt;
            let uid = listener_uid;
            loop {
                tokio::select! {
                    message = pushes.next() => {
                        let Some(message) = message else { break };
                        let Ok(push) = Push::decode(message.payload.as_ref()) else {
                            tracing::debug!(uid, "undecodable push ignored");
                            continue;
                        };
                        if let Some(target) = context.registry.get(session)
                            && let Ok(packet) = context.encode_push(&push.route, &push.data)
                            && target.send(packet).is_ok()
                        {
                            context.metrics.pushes.inc();
                        }
                    }
                    message = kicks.next() => {
                        if message.is_none() { break }
                        if let Some(target) = context.registry.get(session) {
                            tracing::info!(uid, session, "kicked through the cluster");
                            let _ = target.send_last(context.kick_packet(Some("kicked")));
                        }
                    }
                }
            }
        });
        let previous = lock(&self.users).insert(uid, (session, task.abort_handle()));
        if let Some((_, previous)) = previous {
            previous.abort();
        }
    }

    /// Notes that a stand-in serves a message now.
    pub fn touch_stand_in(&self, session: SessionId) {
        lock(&self.stand_ins_used).insert(session, std::time::Instant::now());
    }

    /// Forgets a released stand-in's use.
    pub fn forget_stand_in(&self, session: SessionId) {
        lock(&self.stand_ins_used).remove(&session);
    }

    /// The stand-ins that served nothing for `idle`.
    pub fn idle_stand_ins(&self, idle: Duration) -> std::collections::HashSet<SessionId> {
        lock(&self.stand_ins_used)
            .iter()
            .filter(|(_, used)| used.elapsed() >= idle)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Stops listening for `uid` if the listener is the closed session's.
    pub fn forget_user(&self, uid: &str, session: SessionId) {
        let mut users = lock(&self.users);
        if users.get(uid).is_some_and(|(owner, _)| *owner == session)
            && let Some((_, task)) = users.remove(uid)
        {
            task.abort();
        }
    }

    /// Tells the other frontends of this type that this one now holds `uid`, so they kick
    /// their session of it (unique sessions across frontends).
    pub fn announce_bind(&self, uid: &str) {
        let message = messages::BindMsg {
            uid: uid.to_owned(),
            fid: self.me.id.clone(),
        }
        .encode_to_vec();
        let subject = format!("pitaya/{}/bindings", self.me.server_type);
        let nats = self.nats.clone();
        self.context.runtime.spawn(async move {
            if let Err(error) = nats.publish(subject, message.into()).await {
                tracing::warn!(%error, "NATS publish failed");
            }
        });
    }

    /// What a local bind means to the cluster: listen to the uid's subjects and, unless a
    /// local session of the uid was just replaced, announce the binding. Returns once the
    /// subscriptions are in place, so a push by uid sent after the bind reaches the session.
    pub async fn bound(self: &Arc<Self>, uid: String, session: SessionId, replaced_local: bool) {
        if !self.config.frontend {
            return;
        }
        if !replaced_local {
            self.announce_bind(&uid);
        }
        self.listen_user(uid, session).await;
    }
}

/// How one NATS request failed.
enum Failed {
    /// Nobody listens on the subject: the server is gone.
    NoResponders,
    /// Anything else, as the caller will see it.
    Other(CallError),
}

/// Carries out a remote session's ops in order; ends when the stand-in is gone.
async fn run_remote_ops(
    cluster: Arc<Cluster>,
    frontend_id: String,
    known_type: Option<String>,
    frontend_session: i64,
    mut ops: mpsc::UnboundedReceiver<RemoteOp>,
) {
    let frontend_type = || {
        known_type.clone().or_else(|| {
            cluster
                .servers
                .get(&frontend_id)
                .map(|server| server.server_type)
        })
    };
    while let Some(op) = ops.recv().await {
        match op {
            RemoteOp::Data {
                uid,
                json,
                incoming,
            } => {
                let session = SessionMsg {
                    id: frontend_session,
                    uid,
                    data: json,
                };
                let call = cluster.sys_call(
                    &frontend_id,
                    known_type.as_deref(),
                    "sys.pushsession",
                    session.encode_to_vec(),
                );
                if let Err(error) = serving(incoming, call).await {
                    tracing::warn!(
                        frontend = frontend_id,
                        code = error.code,
                        error = error.message,
                        "sys.pushsession failed"
                    );
                }
            }
            RemoteOp::Push {
                uid,
                route,
                payload,
            } => {
                cluster.push_to_user(&uid, &route, &payload, frontend_type().as_deref());
            }
            RemoteOp::Kick(uid) => {
                cluster.kick_user(&uid, frontend_type().as_deref());
            }
            RemoteOp::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Session data as Go peers keep it: a JSON object. Values are JSON text by SDK convention;
/// one that is not JSON travels as a string.
///
/// ```
/// use std::collections::HashMap;
/// use pitaya_host::cluster::{data_from_json, data_to_json};
///
/// let data = HashMap::from([("level".to_string(), "3".to_string())]);
/// assert_eq!(data_to_json(&data), br#"{"level":3}"#);
/// assert_eq!(data_from_json(br#"{"level":3}"#), data);
/// ```
pub fn data_to_json(data: &HashMap<String, String>) -> Vec<u8> {
    let object: serde_json::Map<String, serde_json::Value> = data
        .iter()
        .map(|(key, value)| {
            let value = serde_json::from_str(value)
                .unwrap_or_else(|_| serde_json::Value::String(value.clone()));
            (key.clone(), value)
        })
        .collect();
    serde_json::Value::Object(object).to_string().into_bytes()
}

/// The inverse of [`data_to_json`]; anything but a JSON object is empty data.
pub fn data_from_json(json: &[u8]) -> HashMap<String, String> {
    match serde_json::from_slice::<serde_json::Value>(json) {
        Ok(serde_json::Value::Object(object)) => object
            .into_iter()
            .map(|(key, value)| (key, value.to_string()))
            .collect(),
        _ => HashMap::new(),
    }
}

fn rand_index(len: usize) -> usize {
    use std::hash::{BuildHasher, RandomState};
    // RandomState is randomly keyed per instance: enough spread for picking a server.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (RandomState::new().hash_one(seed) % len as u64) as usize
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_go_writes_them() {
        assert_eq!(go_duration(Duration::from_secs(5)), "5s");
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn session_data_round_trips_through_json() {
        let mut data = HashMap::new();
        data.insert("level".to_owned(), "3".to_owned());
        data.insert("name".to_owned(), "\"ann\"".to_owned());
        data.insert("raw".to_owned(), "not json".to_owned());
        let json = data_to_json(&data);
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"level": 3, "name": "ann", "raw": "not json"})
        );
        let back = data_from_json(&json);
        assert_eq!(back["level"], "3");
        assert_eq!(back["name"], "\"ann\"");
        assert_eq!(back["raw"], "\"not json\"");
        assert!(data_from_json(b"null").is_empty());
        assert_eq!(data_to_json(&HashMap::new()), b"{}");
    }

    #[test]
    fn names_that_break_subjects_are_refused() {
        assert!(check_name("server type", "room").is_ok());
        for bad in ["", "a/b", "a b", "a*", "a>"] {
            assert!(check_name("server type", bad).is_err(), "{bad:?}");
        }
    }
}
