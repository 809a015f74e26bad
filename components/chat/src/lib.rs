//! The `room` component: pitaya's demo chat room, and the showcase of the guest SDK.
//!
//! - `room.join` (request) puts the caller in the room (binding its uid to its session id if it
//!   has none), pushes it `onMembers`, tells the others `onNewUser`, and answers success.
//! - `room.message` (notify) pushes the message, as sent, to every member as `onMessage`.
//! - A closed session leaves the room.

use pitaya_guest::log;
use pitaya_guest::prelude::*;
use serde::Serialize;
use serde_json::json;

/// The members of the room, in the order they joined.
#[derive(Default)]
struct Room {
    members: Vec<Member>,
}

/// A session in the room, with its uid kept to list members without asking the host.
struct Member {
    session: SessionId,
    uid: String,
}

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
    fn join(&mut self, session: &Session) -> Result<JoinResponse> {
        let uid = match session.uid() {
            Some(uid) => uid,
            None => {
                let uid = session.id().to_string();
                session.bind(&uid)?;
                uid
            }
        };
        let id = session.id();
        if !self.members.iter().any(|member| member.session == id) {
            let member = Member {
                session: id,
                uid: uid.clone(),
            };
            self.members.push(member);
            let news = json!({ "content": format!("New user: {uid}") });
            self.broadcast("onNewUser", news.to_string().as_bytes(), Some(id));
            log::info!("{uid} joined the room, now {} members", self.members.len());
        }
        let uids: Vec<&str> = self.members.iter().map(|m| m.uid.as_str()).collect();
        session.push("onMembers", &json!({ "members": uids }));
        Ok(JoinResponse {
            code: 0,
            result: "success",
        })
    }

    /// Sends the message, byte for byte, to every member, the sender included.
    #[notify]
    fn message(&mut self, message: Raw) {
        self.broadcast("onMessage", &message, None);
    }

    /// A closed session leaves the room.
    #[session_closed]
    fn left(&mut self, session: SessionId) {
        self.members.retain(|member| member.session != session);
    }

    /// Pushes to every member but `except`. Members whose push fails because their session
    /// has gone leave the room (a full send queue alone does not make a member leave).
    fn broadcast(&mut self, route: &str, payload: &[u8], except: Option<SessionId>) {
        self.members.retain(|member| {
            let session = member.session.session();
            Some(member.session) == except
                || session.push_raw(route, payload)
                || session.is_connected()
        });
    }
}

#[cfg(test)]
mod tests;
