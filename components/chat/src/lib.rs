//! The `room` component: pitaya's demo chat room, and the showcase of the guest SDK.
//!
//! - `room.join` (request) puts the caller in the room (binding its uid to its session id if it
//!   has none), pushes it `onMembers`, tells the others `onNewUser`, and answers success.
//! - `room.message` (notify) pushes the message, as sent, to every member as `onMessage`.
//!
//! The room is a host group, so the component keeps no state at all: the host holds the
//! members, a closed session leaves the group by itself, and a broadcast is encoded once.

use pitaya_guest::log;
use pitaya_guest::prelude::*;
use serde::Serialize;
use serde_json::json;

/// The members of the room, kept by the host.
const ROOM: Group = Group::new("room");

/// Stateless: the room lives in the host's group.
#[derive(Default)]
struct Room;

/// What `room.join` answers, as in pitaya's demo.
#[derive(Serialize)]
struct JoinResponse {
    code: i32,
    result: &'static str,
}

#[component(name = "room")]
impl Room {
    /// Joins the room. Joining again changes nothing but sends `onMembers` again.
    #[request]
    fn join(session: &Session) -> Result<JoinResponse> {
        let uid = match session.uid() {
            Some(uid) => uid,
            None => {
                let uid = session.id().to_string();
                session.bind(&uid)?;
                uid
            }
        };
        if !ROOM.contains(session) {
            ROOM.add(session);
            let news = json!({ "content": format!("New user: {uid}") });
            ROOM.broadcast_except("onNewUser", &news, session);
            log::info!("{uid} joined the room, now {} members", ROOM.count());
        }
        let members: Vec<String> = ROOM
            .members()
            .into_iter()
            .filter_map(|member| member.session().uid())
            .collect();
        session.push("onMembers", &json!({ "members": members }));
        Ok(JoinResponse {
            code: 0,
            result: "success",
        })
    }

    /// Sends the message, byte for byte, to every member, the sender included.
    #[notify]
    fn message(message: Raw) {
        ROOM.broadcast_raw("onMessage", &message);
    }
}

#[cfg(test)]
mod tests;
