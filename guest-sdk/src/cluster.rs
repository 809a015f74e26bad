//! The cluster this component's host belongs to: who this server is, and calls to handlers
//! of other server types (pitaya's RPC).
//!
//! Pushes and kicks by uid ([`users`](crate::users)) already reach players on any frontend of
//! the cluster; this module is for server-to-server calls.
//!
//! ```
//! use pitaya_guest::prelude::*;
//! use pitaya_guest::cluster;
//!
//! #[derive(Default)]
//! struct Shop;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Balance {
//!     coins: u64,
//! }
//!
//! #[component(name = "shop")]
//! impl Shop {
//!     /// Asks the `bank` servers for the player's balance.
//!     #[request]
//!     fn balance(session: &Session) -> Result<Balance> {
//!         let uid = session.uid().unwrap_or_default();
//!         cluster::rpc("bank.account.balance", &serde_json::json!({ "uid": uid }))
//!     }
//! }
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{HandlerError, sys};

/// This server in its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// The server type, e.g. `room`.
    pub server_type: String,
    /// This server's id, fresh on every start.
    pub id: String,
}

/// Who this server is, or `None` when the host is not in a cluster.
///
/// ```
/// assert_eq!(pitaya_guest::cluster::server(), None); // no cluster in a doc test
/// ```
pub fn server() -> Option<ServerInfo> {
    sys::cluster_server().map(|(server_type, id)| ServerInfo { server_type, id })
}

/// Calls `route` (`servertype.component.handler`, or `component.handler` on this server's
/// own type) on a server of that type, with `request` encoded as JSON, and decodes its JSON
/// answer. The handler runs there with no session. The remote handler's error comes back as
/// it is; `PIT-408` if it does not answer in time, `PIT-500` if no server of the type is up.
///
/// ```
/// use pitaya_guest::cluster;
///
/// let answer: pitaya_guest::Result<serde_json::Value> =
///     cluster::rpc("bank.account.balance", &serde_json::json!({ "uid": "ana" }));
/// assert_eq!(answer.unwrap_err().code, "PIT-500"); // no cluster in a doc test
/// ```
pub fn rpc<T, R>(route: &str, request: &T) -> Result<R, HandlerError>
where
    T: Serialize + ?Sized,
    R: DeserializeOwned,
{
    let payload = serde_json::to_vec(request).map_err(|error| {
        HandlerError::new(
            "PIT-500",
            format!("cannot encode the request to {route}: {error}"),
        )
    })?;
    let answer = rpc_raw(route, &payload)?;
    serde_json::from_slice(&answer).map_err(|error| {
        HandlerError::new(
            "PIT-500",
            format!("cannot decode the answer of {route}: {error}"),
        )
    })
}

/// [`rpc`] with bytes in and out, as they are (protobuf, or anything else).
///
/// ```
/// let answer = pitaya_guest::cluster::rpc_raw("bank.account.balance", b"{}");
/// assert!(answer.is_err());
/// ```
pub fn rpc_raw(route: &str, payload: &[u8]) -> Result<Vec<u8>, HandlerError> {
    sys::cluster_rpc(route, payload)
}
