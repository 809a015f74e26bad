//! A fake Go pitaya server, written from `shared/cluster.md` alone: etcd registration and discovery like a Go
//! server, and two roles on NATS. [`FakeFrontend`] (type `connector`) forwards Sys requests to a backend and
//! serves `sys.bindsession` / `sys.pushsession` / `sys.kick`; [`FakeBackend`] (type `room`) records every request
//! it gets, answers as the test says, and calls the sys routes of a frontend. Everything it sees is recorded
//! with a global order stamp, so a test can tell which of two events came first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use futures_util::StreamExt;
use prost::Message as _;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::messages::{
    BindMsg, KickAnswer, KickMsg, Msg, MsgType, Push, Request, Response, RpcType, Session,
};
use super::services::Services;

/// pitaya's default etcd prefix.
pub const DEFAULT_PREFIX: &str = "pitaya/";
/// The lease a Go server grants itself.
pub const LEASE_TTL: i64 = 60;
/// How long a fake peer waits for a NATS reply (pitaya's default request timeout).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

static STAMPS: AtomicU64 = AtomicU64::new(1);

/// A number larger than every stamp taken before it, in this process.
pub fn stamp() -> u64 {
    STAMPS.fetch_add(1, Ordering::SeqCst)
}

/// A fresh random UUID (version 4), as Go pitaya makes server ids.
pub fn new_server_id() -> String {
    let mut b = [0u8; 16];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("reading /dev/urandom");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Whether `s` looks like a UUID (8-4-4-4-12 hex digits).
pub fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The metadata a Go peer sends: a JSON object with its id and type and `reqTimeout` as a string.
pub fn metadata(id: &str, server_type: &str) -> Vec<u8> {
    json!({"peer.id": id, "peer.service": server_type, "reqTimeout": "5s"})
        .to_string()
        .into_bytes()
}

/// `pitaya/servers/<type>/<id>`: where a server takes requests.
pub fn server_subject(server_type: &str, id: &str) -> String {
    format!("pitaya/servers/{server_type}/{id}")
}

pub fn push_subject(frontend_type: &str, uid: &str) -> String {
    format!("pitaya/{frontend_type}/user/{uid}/push")
}

pub fn kick_subject(frontend_type: &str, uid: &str) -> String {
    format!("pitaya/{frontend_type}/user/{uid}/kick")
}

pub fn bindings_subject(server_type: &str) -> String {
    format!("pitaya/{server_type}/bindings")
}

// ------------------------------------------------------------------------------------------------ recording

/// Things seen so far, in order, with waits on new ones. Each item can be claimed once by [`Recorder::take`];
/// [`Recorder::all`] keeps showing every item.
pub struct Recorder<T> {
    items: Mutex<Vec<(T, bool)>>,
    count: watch::Sender<usize>,
}

impl<T: Clone + std::fmt::Debug> Default for Recorder<T> {
    fn default() -> Self {
        Self {
            items: Mutex::new(Vec::new()),
            count: watch::Sender::new(0),
        }
    }
}

impl<T: Clone + std::fmt::Debug> Recorder<T> {
    pub fn push(&self, t: T) {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        items.push((t, false));
        self.count.send_replace(items.len());
    }

    pub fn all(&self) -> Vec<T> {
        let items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        items.iter().map(|(t, _)| t.clone()).collect()
    }

    /// Waits for the first unclaimed item that `pick` accepts, claims it and returns it.
    pub async fn take(&self, what: &str, within: Duration, pick: impl Fn(&T) -> bool) -> Result<T> {
        let mut rx = self.count.subscribe();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            rx.borrow_and_update();
            {
                let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((t, claimed)) = items.iter_mut().find(|(t, c)| !*c && pick(t)) {
                    *claimed = true;
                    return Ok(t.clone());
                }
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                let seen = self.all();
                bail!("no {what} within {within:?}; seen so far: {seen:#?}");
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------ discovery

/// One server as found in etcd.
#[derive(Debug, Clone)]
pub struct ServerEntry {
    pub key: String,
    pub id: String,
    pub server_type: String,
    pub frontend: bool,
    pub hostname: String,
    /// The whole value, parsed.
    pub json: Value,
    /// The lease the key is attached to (0: none).
    pub lease: i64,
}

/// Every server under `<prefix>servers/`, parsed as a Go peer does; a value that is not the JSON of §1 is an
/// error (a Go peer would skip it, but in these tests it means someone wrote it wrong).
pub async fn list_servers(
    etcd: &mut etcd_client::Client,
    prefix: &str,
) -> Result<Vec<ServerEntry>> {
    let base = format!("{prefix}servers/");
    let resp = etcd
        .get(
            base.as_str(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .with_context(|| format!("reading {base} from etcd"))?;
    let mut out = Vec::new();
    for kv in resp.kvs() {
        let key = kv.key_str().context("etcd key is not UTF-8")?.to_owned();
        let text = kv.value_str().context("etcd value is not UTF-8")?;
        let json: Value = serde_json::from_str(text)
            .with_context(|| format!("the value of {key} is not JSON: {text:?}"))?;
        let field = |name: &str| {
            json[name]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("the value of {key} has no string {name:?}: {json}"))
        };
        out.push(ServerEntry {
            id: field("id")?,
            server_type: field("type")?,
            hostname: json["hostname"].as_str().unwrap_or_default().to_owned(),
            frontend: json["frontend"]
                .as_bool()
                .with_context(|| format!("the value of {key} has no boolean frontend: {json}"))?,
            lease: kv.lease(),
            key,
            json,
        });
    }
    Ok(out)
}

/// Waits until a server that `pick` accepts is registered under `prefix`.
pub async fn wait_server(
    etcd: &mut etcd_client::Client,
    prefix: &str,
    within: Duration,
    pick: impl Fn(&ServerEntry) -> bool,
) -> Result<ServerEntry> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let all = list_servers(etcd, prefix).await?;
        if let Some(e) = all.iter().find(|e| pick(e)) {
            return Ok(e.clone());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "no such server registered under {prefix}servers/ within {within:?}; registered: {all:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An etcd registration kept alive like a Go server's: lease TTL 60 s, a keepalive every 20 s (re-grant and
/// re-put when the lease is lost), revoked by [`Registration::revoke`].
pub struct Registration {
    etcd: etcd_client::Client,
    lease: Arc<Mutex<i64>>,
    pub key: String,
    keepalive: JoinHandle<()>,
}

impl Registration {
    pub async fn register(
        etcd_url: &str,
        prefix: &str,
        id: &str,
        server_type: &str,
        frontend: bool,
    ) -> Result<Self> {
        let mut etcd = etcd_client::Client::connect([etcd_url], None)
            .await
            .with_context(|| format!("connecting to etcd at {etcd_url}"))?;
        let key = format!("{prefix}servers/{server_type}/{id}");
        let value = json!({
            "id": id, "type": server_type, "metadata": {}, "frontend": frontend, "hostname": "fake-go-peer",
        })
        .to_string();
        let lease_id = grant_and_put(&mut etcd, &key, &value).await?;
        let lease = Arc::new(Mutex::new(lease_id));
        let keepalive = tokio::spawn(keep_alive(
            etcd.clone(),
            Arc::clone(&lease),
            key.clone(),
            value,
        ));
        Ok(Self {
            etcd,
            lease,
            key,
            keepalive,
        })
    }

    /// Revokes the lease: the key disappears at once.
    pub async fn revoke(mut self) -> Result<()> {
        self.keepalive.abort();
        let lease = *self.lease.lock().unwrap_or_else(|p| p.into_inner());
        self.etcd
            .lease_revoke(lease)
            .await
            .with_context(|| format!("revoking the lease of {}", self.key))?;
        Ok(())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}

async fn grant_and_put(etcd: &mut etcd_client::Client, key: &str, value: &str) -> Result<i64> {
    let lease = etcd
        .lease_grant(LEASE_TTL, None)
        .await
        .context("granting a lease")?
        .id();
    etcd.put(
        key,
        value,
        Some(etcd_client::PutOptions::new().with_lease(lease)),
    )
    .await
    .with_context(|| format!("putting {key}"))?;
    Ok(lease)
}

async fn keep_alive(
    mut etcd: etcd_client::Client,
    lease: Arc<Mutex<i64>>,
    key: String,
    value: String,
) {
    loop {
        let id = *lease.lock().unwrap_or_else(|p| p.into_inner());
        let alive = async {
            let (mut keeper, mut stream) = etcd.lease_keep_alive(id).await?;
            loop {
                keeper.keep_alive().await?;
                match stream.message().await? {
                    Some(r) if r.ttl() > 0 => {}
                    _ => return anyhow::Ok(()),
                }
                tokio::time::sleep(Duration::from_secs(20)).await;
            }
        };
        let _ = alive.await;
        // The lease is gone (expired or the stream broke): register again under a new one.
        match grant_and_put(&mut etcd, &key, &value).await {
            Ok(new) => *lease.lock().unwrap_or_else(|p| p.into_inner()) = new,
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

// ------------------------------------------------------------------------------------------------ NATS helpers

/// Subjects of messages that came with NATS headers: §2 says plain publish/request, no headers (older Go
/// peers' clients do not expect them).
#[derive(Default)]
pub struct HeaderLog(Mutex<Vec<String>>);

impl HeaderLog {
    fn note(&self, m: &async_nats::Message) {
        if m.headers
            .as_ref()
            .is_some_and(|h| h.iter().next().is_some())
        {
            let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
            v.push(m.subject.to_string());
        }
    }

    /// The subjects of every message received with headers so far.
    pub fn subjects(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Sends `req` to `subject` and decodes the reply as a `Response`; no responders and timeouts are errors.
pub async fn nats_request(
    nats: &async_nats::Client,
    subject: &str,
    req: &Request,
    within: Duration,
) -> Result<Response> {
    let fut = nats.request(subject.to_owned(), req.encode_to_vec().into());
    let reply = tokio::time::timeout(within, fut)
        .await
        .map_err(|_| anyhow!("no reply on {subject} within {within:?}"))?
        .with_context(|| format!("NATS request to {subject}"))?;
    Response::decode(reply.payload.as_ref()).with_context(|| {
        format!(
            "the reply on {subject} is not a Response: {:02x?}",
            reply.payload
        )
    })
}

/// Parses JSON bytes that must be an object.
pub fn json_object(bytes: &[u8], what: &str) -> Result<Value> {
    let v: Value = serde_json::from_slice(bytes)
        .with_context(|| format!("{what} is not JSON: {:?}", String::from_utf8_lossy(bytes)))?;
    ensure!(v.is_object(), "{what} is not a JSON object: {v}");
    Ok(v)
}

// ------------------------------------------------------------------------------------------------ frontend

/// A session the fake frontend holds (its client is imaginary).
#[derive(Debug, Clone)]
pub struct FakeSession {
    pub uid: String,
    pub data: Value,
}

/// A sys call the fake frontend served.
#[derive(Debug, Clone)]
pub struct SysCall {
    /// Taken when the call arrived.
    pub stamp: u64,
    pub request: Request,
    /// `msg.route`.
    pub route: String,
    /// The metadata, parsed (`Value::Null` when it was not JSON).
    pub metadata: Value,
    /// `msg.data` decoded as a Session (bindsession, pushsession).
    pub session: Option<Session>,
    /// `msg.data` decoded as a KickMsg (kick).
    pub kick: Option<KickMsg>,
    /// What the fake frontend answered.
    pub answer: Response,
}

/// Something published on a user subject and received by the fake frontend.
#[derive(Debug, Clone)]
pub enum UserEvent {
    Push { stamp: u64, push: Push },
    Kick { stamp: u64, kick: KickMsg },
}

/// The answer to a forwarded request, with the stamp taken when it arrived.
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub stamp: u64,
    pub response: Response,
}

struct FrontendState {
    id: String,
    server_type: String,
    nats: async_nats::Client,
    sessions: Mutex<HashMap<i64, FakeSession>>,
    sys_calls: Recorder<SysCall>,
    user_events: Recorder<UserEvent>,
    bindings: Recorder<BindMsg>,
    /// The push/kick subscriptions of bound uids.
    uid_tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Keys added to the metadata of forwards (tracing keys and the like, which a peer must pass through).
    extra_metadata: Mutex<serde_json::Map<String, Value>>,
    headers: HeaderLog,
}

/// A Go frontend as seen from the cluster: registered in etcd, serving its subject, forwarding Sys requests.
pub struct FakeFrontend {
    pub id: String,
    pub server_type: String,
    pub prefix: String,
    state: Arc<FrontendState>,
    tasks: Vec<JoinHandle<()>>,
    registration: Option<Registration>,
    etcd: etcd_client::Client,
}

impl Drop for FakeFrontend {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self
            .state
            .uid_tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            t.abort();
        }
    }
}

impl FakeFrontend {
    /// Subscribes its subjects, then registers (in that order, as §1 says).
    pub async fn start(services: &Services, server_type: &str, prefix: &str) -> Result<Self> {
        let id = new_server_id();
        let nats = services.nats.client().await?;
        let own = nats
            .subscribe(server_subject(server_type, &id))
            .await
            .context("subscribing the fake frontend's subject")?;
        let bindings = nats
            .subscribe(bindings_subject(server_type))
            .await
            .context("subscribing the bindings subject")?;
        nats.flush().await.context("flushing the subscriptions")?;
        let state = Arc::new(FrontendState {
            id: id.clone(),
            server_type: server_type.to_owned(),
            nats,
            sessions: Mutex::new(HashMap::new()),
            sys_calls: Recorder::default(),
            user_events: Recorder::default(),
            bindings: Recorder::default(),
            uid_tasks: Mutex::new(Vec::new()),
            extra_metadata: Mutex::new(serde_json::Map::new()),
            headers: HeaderLog::default(),
        });
        let tasks = vec![
            tokio::spawn(serve_frontend(Arc::clone(&state), own)),
            tokio::spawn(record_bindings(Arc::clone(&state), bindings)),
        ];
        let registration =
            Registration::register(&services.etcd.url, prefix, &id, server_type, true).await?;
        Ok(Self {
            id,
            server_type: server_type.to_owned(),
            prefix: prefix.to_owned(),
            state,
            tasks,
            registration: Some(registration),
            etcd: services.etcd.client().await?,
        })
    }

    /// A new session, as after a client's handshake.
    pub fn add_session(&self, id: i64, data: Value) {
        let mut s = self
            .state
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        s.insert(
            id,
            FakeSession {
                uid: String::new(),
                data,
            },
        );
    }

    /// A session already bound to `uid` (its bind happened before the test looks).
    pub fn add_bound_session(&self, id: i64, uid: &str, data: Value) {
        let mut s = self
            .state
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        s.insert(
            id,
            FakeSession {
                uid: uid.to_owned(),
                data,
            },
        );
    }

    pub fn session(&self, id: i64) -> Option<FakeSession> {
        let s = self
            .state
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        s.get(&id).cloned()
    }

    /// Servers of `server_type` in discovery.
    pub async fn servers_of(&mut self, server_type: &str) -> Result<Vec<ServerEntry>> {
        Ok(list_servers(&mut self.etcd, &self.prefix)
            .await?
            .into_iter()
            .filter(|e| e.server_type == server_type)
            .collect())
    }

    /// Forwards a client message of session `session_id` to server `target` like a Go frontend: a Sys request
    /// with the client's message id (0 for a notify), the full route, the payload as sent, the session's id,
    /// uid and data JSON, its own id and metadata.
    pub async fn forward(
        &self,
        target: &ServerEntry,
        session_id: i64,
        msg_id: u64,
        kind: MsgType,
        route: &str,
        data: &[u8],
    ) -> Result<Forwarded> {
        let session = self
            .session(session_id)
            .with_context(|| format!("the fake frontend has no session {session_id}"))?;
        let req = Request {
            r#type: RpcType::Sys as i32,
            session: Some(Session {
                id: session_id,
                uid: session.uid,
                data: session.data.to_string().into_bytes(),
            }),
            msg: Some(Msg {
                id: if kind == MsgType::Notify { 0 } else { msg_id },
                route: route.to_owned(),
                data: data.to_vec(),
                reply: String::new(),
                r#type: kind as i32,
            }),
            frontend_id: self.id.clone(),
            metadata: self.forward_metadata(),
        };
        let subject = server_subject(&target.server_type, &target.id);
        let response = nats_request(&self.state.nats, &subject, &req, REQUEST_TIMEOUT).await?;
        Ok(Forwarded {
            stamp: stamp(),
            response,
        })
    }

    /// Adds `key` to the metadata of every later forward, as Go frontends add tracing and timing keys.
    pub fn add_metadata(&self, key: &str, value: Value) {
        let mut extra = self
            .state
            .extra_metadata
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        extra.insert(key.to_owned(), value);
    }

    fn forward_metadata(&self) -> Vec<u8> {
        let mut md: serde_json::Map<String, Value> =
            serde_json::from_slice(&metadata(&self.id, &self.server_type))
                .expect("our own metadata is a JSON object");
        let extra = self
            .state
            .extra_metadata
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        md.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        Value::Object(md).to_string().into_bytes()
    }

    /// Subjects of messages it received with NATS headers (there should be none).
    pub fn messages_with_headers(&self) -> Vec<String> {
        self.state.headers.subjects()
    }

    pub fn sys_calls(&self) -> &Recorder<SysCall> {
        &self.state.sys_calls
    }

    /// Pushes and kicks received on the user subjects of bound uids.
    pub fn user_events(&self) -> &Recorder<UserEvent> {
        &self.state.user_events
    }

    /// BindMsgs seen on `pitaya/<type>/bindings` (its own included).
    pub fn bindings(&self) -> &Recorder<BindMsg> {
        &self.state.bindings
    }

    /// Waits for the next push to `uid`.
    pub async fn wait_push(&self, uid: &str, within: Duration) -> Result<(u64, Push)> {
        let ev = self
            .state
            .user_events
            .take(
                &format!("push to {uid}"),
                within,
                |e| matches!(e, UserEvent::Push { push, .. } if push.uid == uid),
            )
            .await?;
        match ev {
            UserEvent::Push { stamp, push } => Ok((stamp, push)),
            UserEvent::Kick { .. } => unreachable!("the pick accepts pushes only"),
        }
    }

    /// Waits for the next kick of `uid` on its kick subject.
    pub async fn wait_kick(&self, uid: &str, within: Duration) -> Result<KickMsg> {
        let ev = self
            .state
            .user_events
            .take(
                &format!("kick of {uid}"),
                within,
                |e| matches!(e, UserEvent::Kick { kick, .. } if kick.user_id == uid),
            )
            .await?;
        match ev {
            UserEvent::Kick { kick, .. } => Ok(kick),
            UserEvent::Push { .. } => unreachable!("the pick accepts kicks only"),
        }
    }

    /// Revokes its registration (as on a graceful shutdown).
    pub async fn deregister(&mut self) -> Result<()> {
        if let Some(r) = self.registration.take() {
            r.revoke().await?;
        }
        Ok(())
    }
}

async fn record_bindings(state: Arc<FrontendState>, mut sub: async_nats::Subscriber) {
    while let Some(m) = sub.next().await {
        state.headers.note(&m);
        if let Ok(b) = BindMsg::decode(m.payload.as_ref()) {
            state.bindings.push(b);
        }
    }
}

async fn serve_frontend(state: Arc<FrontendState>, mut sub: async_nats::Subscriber) {
    while let Some(m) = sub.next().await {
        let arrived = stamp();
        state.headers.note(&m);
        let Some(reply_to) = m.reply.clone() else {
            continue;
        };
        let (answer, call) = match Request::decode(m.payload.as_ref()) {
            Ok(req) => {
                let (answer, call) = frontend_sys_call(&state, arrived, req).await;
                (answer, Some(call))
            }
            Err(e) => (
                Response::error("PIT-400", &format!("undecodable request: {e}")),
                None,
            ),
        };
        // Recorded before the reply goes out, so a caller that saw the reply also sees the record.
        if let Some(mut call) = call {
            call.answer = answer.clone();
            state.sys_calls.push(call);
        }
        let _ = state
            .nats
            .publish(reply_to, answer.encode_to_vec().into())
            .await;
    }
}

fn ack() -> Response {
    Response::data(Response::data("ack").encode_to_vec())
}

fn session_not_found() -> Response {
    Response::error("PIT-000", "session not found")
}

async fn frontend_sys_call(
    state: &Arc<FrontendState>,
    arrived: u64,
    req: Request,
) -> (Response, SysCall) {
    let msg = req.msg.clone().unwrap_or_default();
    let mut call = SysCall {
        stamp: arrived,
        route: msg.route.clone(),
        metadata: serde_json::from_slice(&req.metadata).unwrap_or(Value::Null),
        session: None,
        kick: None,
        answer: Response::default(),
        request: req,
    };
    let answer = match msg.route.as_str() {
        "sys.bindsession" | "sys.pushsession" => match Session::decode(msg.data.as_slice()) {
            Err(e) => Response::error("PIT-400", &format!("bad Session: {e}")),
            Ok(s) => {
                call.session = Some(s.clone());
                if msg.route == "sys.bindsession" {
                    bind(state, &s).await
                } else {
                    push_session(state, &s)
                }
            }
        },
        "sys.kick" => match KickMsg::decode(msg.data.as_slice()) {
            Err(e) => Response::error("PIT-400", &format!("bad KickMsg: {e}")),
            Ok(k) => {
                call.kick = Some(k.clone());
                let mut sessions = state.sessions.lock().unwrap_or_else(|p| p.into_inner());
                let before = sessions.len();
                sessions.retain(|_, s| s.uid != k.user_id);
                if sessions.len() < before {
                    Response::data(KickAnswer { kicked: true }.encode_to_vec())
                } else {
                    session_not_found()
                }
            }
        },
        other => Response::error("PIT-404", &format!("pitaya/handler: {other} not found")),
    };
    (answer, call)
}

async fn bind(state: &Arc<FrontendState>, s: &Session) -> Response {
    {
        let mut sessions = state.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let Some(session) = sessions.get_mut(&s.id) else {
            return session_not_found();
        };
        session.uid = s.uid.clone();
    }
    // As a Go frontend: the uid's push and kick subjects, then the unique-session notice.
    let nats = &state.nats;
    let subs = (
        nats.subscribe(push_subject(&state.server_type, &s.uid))
            .await,
        nats.subscribe(kick_subject(&state.server_type, &s.uid))
            .await,
    );
    let (Ok(mut pushes), Ok(mut kicks)) = subs else {
        return Response::error("PIT-000", "subscribing the uid's subjects failed");
    };
    if nats.flush().await.is_err() {
        return Response::error("PIT-000", "flushing the uid's subscriptions failed");
    }
    let (push_state, kick_state) = (Arc::clone(state), Arc::clone(state));
    let t1 = tokio::spawn(async move {
        while let Some(m) = pushes.next().await {
            push_state.headers.note(&m);
            if let Ok(p) = Push::decode(m.payload.as_ref()) {
                push_state.user_events.push(UserEvent::Push {
                    stamp: stamp(),
                    push: p,
                });
            }
        }
    });
    let t2 = tokio::spawn(async move {
        while let Some(m) = kicks.next().await {
            kick_state.headers.note(&m);
            if let Ok(k) = KickMsg::decode(m.payload.as_ref()) {
                kick_state.user_events.push(UserEvent::Kick {
                    stamp: stamp(),
                    kick: k,
                });
            }
        }
    });
    state
        .uid_tasks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend([t1, t2]);
    let bind = BindMsg {
        uid: s.uid.clone(),
        fid: state.id.clone(),
    };
    let _ = nats
        .publish(
            bindings_subject(&state.server_type),
            bind.encode_to_vec().into(),
        )
        .await;
    ack()
}

fn push_session(state: &FrontendState, s: &Session) -> Response {
    let data = match json_object(&s.data, "pushed session data") {
        Ok(d) => d,
        Err(e) => return Response::error("PIT-400", &format!("{e:#}")),
    };
    let mut sessions = state.sessions.lock().unwrap_or_else(|p| p.into_inner());
    match sessions.get_mut(&s.id) {
        Some(session) => {
            session.data = data;
            ack()
        }
        None => session_not_found(),
    }
}

// ------------------------------------------------------------------------------------------------ backend

/// A request the fake backend received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Taken when it arrived.
    pub stamp: u64,
    pub request: Request,
    /// The raw metadata bytes, and parsed (`Value::Null` when not JSON).
    pub metadata_raw: Vec<u8>,
    pub metadata: Value,
    /// Where the answer goes (the NATS reply subject); `None` for a publish without reply.
    pub reply_to: Option<String>,
}

impl Received {
    pub fn msg(&self) -> Result<&Msg> {
        self.request.msg.as_ref().context("the request has no msg")
    }

    pub fn route(&self) -> &str {
        self.request
            .msg
            .as_ref()
            .map(|m| m.route.as_str())
            .unwrap_or("")
    }

    pub fn session(&self) -> Result<&Session> {
        self.request
            .session
            .as_ref()
            .context("the request has no session")
    }
}

/// Answers some requests at once; `None` leaves the request to the test ([`FakeBackend::take_request`] and
/// [`FakeBackend::respond`]).
pub type Responder = Box<dyn Fn(&Received) -> Option<Response> + Send + Sync>;

struct BackendState {
    headers: HeaderLog,
    nats: async_nats::Client,
    received: Recorder<Received>,
    responder: Mutex<Option<Responder>>,
}

/// A Go backend: registered in etcd, taking requests on its subject.
pub struct FakeBackend {
    pub id: String,
    pub server_type: String,
    pub prefix: String,
    state: Arc<BackendState>,
    task: JoinHandle<()>,
    registration: Option<Registration>,
    etcd: etcd_client::Client,
}

impl Drop for FakeBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeBackend {
    /// Subscribes `pitaya/servers/<type>/<id>`, then registers.
    pub async fn start(services: &Services, server_type: &str, prefix: &str) -> Result<Self> {
        let id = new_server_id();
        let nats = services.nats.client().await?;
        let sub = nats
            .subscribe(server_subject(server_type, &id))
            .await
            .context("subscribing the fake backend's subject")?;
        nats.flush().await.context("flushing the subscription")?;
        let state = Arc::new(BackendState {
            headers: HeaderLog::default(),
            nats,
            received: Recorder::default(),
            responder: Mutex::new(None),
        });
        let task = tokio::spawn(serve_backend(Arc::clone(&state), sub));
        let registration =
            Registration::register(&services.etcd.url, prefix, &id, server_type, false).await?;
        Ok(Self {
            id,
            server_type: server_type.to_owned(),
            prefix: prefix.to_owned(),
            state,
            task,
            registration: Some(registration),
            etcd: services.etcd.client().await?,
        })
    }

    /// Answers from now on every request for which `f` gives a response.
    pub fn set_responder(&self, f: impl Fn(&Received) -> Option<Response> + Send + Sync + 'static) {
        *self
            .state
            .responder
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Box::new(f));
    }

    /// Subjects of messages it received with NATS headers (there should be none).
    pub fn messages_with_headers(&self) -> Vec<String> {
        self.state.headers.subjects()
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.all()
    }

    /// Waits for the next unclaimed request with `msg.route == route`.
    pub async fn take_request(&self, route: &str, within: Duration) -> Result<Received> {
        self.state
            .received
            .take(&format!("request for {route}"), within, |r| {
                r.route() == route
            })
            .await
    }

    /// Answers `req`.
    pub async fn respond(&self, req: &Received, response: Response) -> Result<()> {
        let to = req
            .reply_to
            .clone()
            .context("the request came without a reply subject")?;
        self.state
            .nats
            .publish(to, response.encode_to_vec().into())
            .await
            .context("publishing the reply")?;
        self.state
            .nats
            .flush()
            .await
            .context("flushing the reply")?;
        Ok(())
    }

    /// The type of frontend `frontend_id`, from discovery (as a Go backend finds where to send sys calls).
    pub async fn frontend_type(&mut self, frontend_id: &str) -> Result<String> {
        let all = list_servers(&mut self.etcd, &self.prefix).await?;
        let e = all
            .iter()
            .find(|e| e.id == frontend_id)
            .with_context(|| format!("frontend {frontend_id} is not in discovery: {all:#?}"))?;
        ensure!(
            e.frontend,
            "server {frontend_id} is registered as a backend: {:?}",
            e.json
        );
        Ok(e.server_type.clone())
    }

    /// A User request to server `server_type`/`id` (no session), as a Go server sends `sys.*` and RPCs.
    pub async fn call_user(
        &self,
        server_type: &str,
        id: &str,
        route: &str,
        data: Vec<u8>,
    ) -> Result<Response> {
        let req = Request {
            r#type: RpcType::User as i32,
            session: None,
            msg: Some(Msg {
                id: 0,
                route: route.to_owned(),
                data,
                reply: String::new(),
                r#type: MsgType::Request as i32,
            }),
            frontend_id: String::new(),
            metadata: metadata(&self.id, &self.server_type),
        };
        nats_request(
            &self.state.nats,
            &server_subject(server_type, id),
            &req,
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// `sys.bindsession` on frontend `fe_type`/`fe_id`: the raw reply (`Response{data: Response{"ack"}}`).
    pub async fn bind_session(
        &self,
        fe_type: &str,
        fe_id: &str,
        session: i64,
        uid: &str,
    ) -> Result<Response> {
        let s = Session {
            id: session,
            uid: uid.to_owned(),
            data: Vec::new(),
        };
        self.call_user(fe_type, fe_id, "sys.bindsession", s.encode_to_vec())
            .await
    }

    /// `sys.pushsession`: replaces the session's data with `data`.
    pub async fn push_session(
        &self,
        fe_type: &str,
        fe_id: &str,
        session: i64,
        uid: &str,
        data: &Value,
    ) -> Result<Response> {
        let s = Session {
            id: session,
            uid: uid.to_owned(),
            data: data.to_string().into_bytes(),
        };
        self.call_user(fe_type, fe_id, "sys.pushsession", s.encode_to_vec())
            .await
    }

    /// `sys.kick` of `uid`.
    pub async fn kick(&self, fe_type: &str, fe_id: &str, uid: &str) -> Result<Response> {
        let k = KickMsg {
            user_id: uid.to_owned(),
        };
        self.call_user(fe_type, fe_id, "sys.kick", k.encode_to_vec())
            .await
    }

    /// Publishes Push{route, uid, data} on `pitaya/<fe_type>/user/<uid>/push`.
    pub async fn publish_push(
        &self,
        fe_type: &str,
        uid: &str,
        route: &str,
        data: &[u8],
    ) -> Result<()> {
        let p = Push {
            route: route.to_owned(),
            uid: uid.to_owned(),
            data: data.to_vec(),
        };
        self.state
            .nats
            .publish(push_subject(fe_type, uid), p.encode_to_vec().into())
            .await
            .context("publishing a Push")?;
        self.state.nats.flush().await.context("flushing the Push")?;
        Ok(())
    }

    /// Publishes KickMsg{uid} on `pitaya/<fe_type>/user/<uid>/kick`.
    pub async fn publish_kick(&self, fe_type: &str, uid: &str) -> Result<()> {
        let k = KickMsg {
            user_id: uid.to_owned(),
        };
        self.state
            .nats
            .publish(kick_subject(fe_type, uid), k.encode_to_vec().into())
            .await
            .context("publishing a KickMsg")?;
        self.state
            .nats
            .flush()
            .await
            .context("flushing the KickMsg")?;
        Ok(())
    }

    /// Revokes its registration (as on a graceful shutdown).
    pub async fn deregister(&mut self) -> Result<()> {
        if let Some(r) = self.registration.take() {
            r.revoke().await?;
        }
        Ok(())
    }
}

async fn serve_backend(state: Arc<BackendState>, mut sub: async_nats::Subscriber) {
    while let Some(m) = sub.next().await {
        let arrived = stamp();
        state.headers.note(&m);
        let Ok(request) = Request::decode(m.payload.as_ref()) else {
            if let Some(to) = m.reply {
                let e = Response::error("PIT-400", "undecodable request");
                let _ = state.nats.publish(to, e.encode_to_vec().into()).await;
            }
            continue;
        };
        let r = Received {
            stamp: arrived,
            metadata: serde_json::from_slice(&request.metadata).unwrap_or(Value::Null),
            metadata_raw: request.metadata.clone(),
            request,
            reply_to: m.reply.as_ref().map(|s| s.to_string()),
        };
        let auto = {
            let responder = state.responder.lock().unwrap_or_else(|p| p.into_inner());
            responder.as_ref().and_then(|f| f(&r))
        };
        let reply_to = r.reply_to.clone();
        state.received.push(r);
        if let (Some(resp), Some(to)) = (auto, reply_to) {
            let _ = state.nats.publish(to, resp.encode_to_vec().into()).await;
        }
    }
}

/// The `data` of a sys reply: `Response{data: X}`, where X is the encoded inner message; an error is an `Err`.
pub fn sys_reply_data(r: &Response) -> Result<&[u8]> {
    if let Some(e) = &r.error {
        bail!("error reply {}: {} {:?}", e.code, e.msg, e.metadata);
    }
    Ok(&r.data)
}

/// Checks that `r` is pitaya's sys ack: `Response{data: Response{data "ack"}}`.
pub fn ensure_ack(r: &Response) -> Result<()> {
    let inner = Response::decode(sys_reply_data(r)?)
        .with_context(|| format!("the sys reply's data is not a Response: {:02x?}", r.data))?;
    ensure!(
        inner == Response::data("ack"),
        "expected Response{{data: Response{{data \"ack\"}}}}, got data {:?}",
        inner
    );
    Ok(())
}
