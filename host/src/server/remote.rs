//! The cluster seen from the server: answering the requests that arrive on this server's NATS
//! subject (forwarded client messages, `sys.*` calls from backends, RPCs from other servers),
//! kicking sessions a binding elsewhere replaced, and dropping stand-ins of frontends that left.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use prost::Message as _;
use tracing::Instrument;

use super::Shared;
use super::connection::{Failure, call_route, release};
use crate::cluster::messages::{
    BindMsg, ErrorMsg, KickAnswer, KickMsg, Msg, MsgType, Request, Response, RpcType, SessionMsg,
};
use crate::cluster::{Cluster, data_from_json};
use crate::session::RemoteOp;

/// How often stand-ins of sessions whose frontend left, or idle ones, are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// How long a stand-in lives without a message from its client. pitaya's contract never tells a
/// backend that a client left, so without this a backend would keep every session it ever saw.
const STAND_IN_IDLE: Duration = Duration::from_secs(30 * 60);

/// Answers every request on this server's subject, each in a task of its own: a frontend must
/// keep answering `sys.*` calls while its own forwards wait.
pub(super) async fn serve_requests(
    shared: Arc<Shared>,
    cluster: Arc<Cluster>,
    mut requests: async_nats::Subscriber,
) {
    while let Some(message) = requests.next().await {
        let Some(reply) = message.reply else {
            tracing::debug!("a request without a reply subject ignored");
            continue;
        };
        let shared = shared.clone();
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let response = match Request::decode(message.payload.as_ref()) {
                Ok(request) => answer(&shared, &cluster, request).await,
                Err(error) => Response::error(
                    "PIT-400",
                    format!("pitaya/remote: undecodable request: {error}"),
                ),
            };
            if let Err(error) = cluster
                .nats()
                .publish(reply, response.encode_to_vec().into())
                .await
            {
                tracing::warn!(%error, "cannot send a reply over NATS");
            }
        });
    }
}

async fn answer(shared: &Arc<Shared>, cluster: &Arc<Cluster>, request: Request) -> Response {
    let Some(msg) = request.msg else {
        return Response::error("PIT-400", "pitaya/remote: request without a message");
    };
    let span = tracing::info_span!(
        "remote request",
        route = msg.route,
        from = request.frontend_id
    );
    let kind = RpcType::try_from(request.r#type);
    let metadata = match serde_json::from_slice(&request.metadata) {
        Ok(serde_json::Value::Object(metadata)) => Some(Arc::new(metadata)),
        _ => None,
    };
    let frontend_type = metadata.as_deref().and_then(sender_type);
    let serve = async move {
        match (kind, msg.route.as_str()) {
            (Ok(RpcType::User), "sys.bindsession") => {
                bind_session(shared, cluster, &msg.data).await
            }
            (Ok(RpcType::User), "sys.pushsession") => push_session(shared, &msg.data),
            (Ok(RpcType::User), "sys.kick") => kick(shared, &msg.data),
            (Ok(RpcType::Sys), _) => {
                let session = request.session.unwrap_or_default();
                serve_sys(
                    shared,
                    cluster,
                    &request.frontend_id,
                    frontend_type,
                    session,
                    msg,
                )
                .await
            }
            (Ok(RpcType::User), _) => serve_user(shared, msg).await,
            (Err(_), _) => Response::error("PIT-400", "pitaya/remote: unknown request type"),
        }
    };
    crate::cluster::serving(metadata, serve.instrument(span)).await
}

/// The sender's server type, from the request metadata's `peer.service`.
fn sender_type(metadata: &crate::cluster::Metadata) -> Option<String> {
    let found = metadata.get("peer.service")?.as_str()?;
    crate::cluster::check_name("server type", found)
        .is_ok()
        .then(|| found.to_owned())
}

fn session_not_found() -> Response {
    Response::error("PIT-000", "session not found")
}

fn ack() -> Response {
    Response::sys(Response::data(b"ack".to_vec()))
}

/// `sys.bindsession` on a frontend: bind, listen to the uid's subjects, keep sessions unique.
async fn bind_session(shared: &Arc<Shared>, cluster: &Arc<Cluster>, data: &[u8]) -> Response {
    let Ok(message) = SessionMsg::decode(data) else {
        return Response::error("PIT-400", "pitaya/remote: undecodable session");
    };
    let session = u64::try_from(message.id)
        .ok()
        .and_then(|id| shared.registry.get(id))
        .filter(|session| !session.is_remote());
    let Some(session) = session else {
        return session_not_found();
    };
    if session.uid().as_deref() != Some(message.uid.as_str()) {
        let refuse = shared.config.refuse_duplicate_login;
        match shared.registry.bind(session.id(), &message.uid, refuse) {
            Ok(older) => {
                let replaced_local = older.is_some();
                if let Some(older) = older {
                    tracing::info!(
                        uid = message.uid,
                        old = older.id(),
                        new = session.id(),
                        "uid bound again, kicking the older session"
                    );
                    let _ =
                        older.send_last(shared.context.kick_packet(Some("logged in elsewhere")));
                }
                if !replaced_local {
                    cluster.announce_bind(&message.uid);
                }
            }
            Err(error) => return Response::error("PIT-000", error.to_string()),
        }
    }
    // Subscribed before the answer: the backend may push to the uid right after it.
    cluster.listen_user(message.uid, session.id()).await;
    ack()
}

/// `sys.pushsession` on a frontend: the session's whole data, replaced.
fn push_session(shared: &Shared, data: &[u8]) -> Response {
    let Ok(message) = SessionMsg::decode(data) else {
        return Response::error("PIT-400", "pitaya/remote: undecodable session");
    };
    match u64::try_from(message.id)
        .ok()
        .and_then(|id| shared.registry.get(id))
    {
        Some(session) if !session.is_remote() => {
            session.replace_data(data_from_json(&message.data));
            ack()
        }
        _ => session_not_found(),
    }
}

/// `sys.kick` on a frontend.
fn kick(shared: &Shared, data: &[u8]) -> Response {
    let Ok(message) = KickMsg::decode(data) else {
        return Response::error("PIT-400", "pitaya/remote: undecodable kick");
    };
    match shared.registry.by_uid(&message.user_id) {
        Some(session) if !session.is_remote() => {
            let _ = session.send_last(shared.context.kick_packet(Some("kicked")));
            Response::sys(KickAnswer { kicked: true })
        }
        _ => session_not_found(),
    }
}

/// A client message a frontend forwarded: run it for the session's stand-in, carry out what
/// the handler did to the session (bind, data, pushes) at the frontend, then answer.
async fn serve_sys(
    shared: &Arc<Shared>,
    cluster: &Arc<Cluster>,
    frontend_id: &str,
    frontend_type: Option<String>,
    from: SessionMsg,
    msg: Msg,
) -> Response {
    if let Some(frontend_type) = &frontend_type {
        cluster.servers.heard_from_frontend(frontend_type);
    }
    let stand_in = shared
        .registry
        .remote(frontend_id, from.id)
        .unwrap_or_else(|| cluster.remote_session(frontend_id, frontend_type, from.id));
    // The frontend's view of the session is the truth.
    if !from.uid.is_empty()
        && stand_in.uid().as_deref() != Some(from.uid.as_str())
        && let Ok(Some(older)) = shared.registry.bind(stand_in.id(), &from.uid, false)
        && older.is_remote()
    {
        cluster.forget_stand_in(older.id());
        release(shared, &older).await;
    }
    stand_in.replace_data(data_from_json(&from.data));
    cluster.touch_stand_in(stand_in.id());
    let is_request = msg.r#type != MsgType::Notify as i32;
    let outcome = call_route(
        shared,
        &stand_in,
        &msg.route,
        msg.id,
        Bytes::from(msg.data),
        is_request,
        false,
    )
    .await;
    if let Some(link) = stand_in.remote_link() {
        let (done, flushed) = tokio::sync::oneshot::channel();
        if link.ops.send(RemoteOp::Flush(done)).is_ok()
            && tokio::time::timeout(cluster_timeout(shared), flushed)
                .await
                .is_err()
        {
            tracing::warn!("the session's ops did not reach its frontend in time");
        }
    }
    match outcome {
        Ok(data) if is_request => Response::data(data),
        Ok(_) => Response::data(b"ack".to_vec()),
        Err(failure) => error_response(failure),
    }
}

/// An RPC from another server: the handler runs with no session (id 0).
async fn serve_user(shared: &Arc<Shared>, msg: Msg) -> Response {
    let outcome =
        super::connection::call_sessionless(shared, &msg.route, Bytes::from(msg.data)).await;
    match outcome {
        Ok(data) => Response::data(data),
        Err(failure) => error_response(failure),
    }
}

fn error_response((code, msg, metadata): Failure) -> Response {
    Response {
        data: Vec::new(),
        error: Some(ErrorMsg {
            code,
            msg,
            metadata: metadata.into_iter().collect(),
        }),
    }
}

fn cluster_timeout(shared: &Shared) -> Duration {
    shared
        .config
        .cluster
        .as_ref()
        .map_or(Duration::from_secs(5), |config| config.request_timeout)
}

/// Kicks local sessions of uids that another frontend of this type has just bound.
pub(super) async fn serve_bindings(
    shared: Arc<Shared>,
    cluster: Arc<Cluster>,
    mut bindings: async_nats::Subscriber,
) {
    while let Some(message) = bindings.next().await {
        let Ok(bind) = BindMsg::decode(message.payload.as_ref()) else {
            continue;
        };
        if bind.fid == cluster.me.id {
            continue;
        }
        if let Some(session) = shared.registry.by_uid(&bind.uid)
            && !session.is_remote()
        {
            tracing::info!(
                uid = bind.uid,
                session = session.id(),
                frontend = bind.fid,
                "uid bound on another frontend, kicking this session"
            );
            let _ = session.send_last(shared.context.kick_packet(Some("logged in elsewhere")));
        }
    }
}

/// Drops the stand-ins of sessions whose frontend has left the cluster, and those idle for
/// [`STAND_IN_IDLE`].
pub(super) async fn sweep_stand_ins(shared: Arc<Shared>, cluster: Arc<Cluster>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let idle = cluster.idle_stand_ins(STAND_IN_IDLE);
        for stand_in in shared.registry.remotes(None) {
            let gone = stand_in
                .remote_link()
                .is_some_and(|link| cluster.servers.get(&link.frontend_id).is_none());
            if gone || idle.contains(&stand_in.id()) {
                cluster.forget_stand_in(stand_in.id());
                release(&shared, &stand_in).await;
            }
        }
    }
}
