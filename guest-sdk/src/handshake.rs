//! `Handshake`: what a client sent when it connected, as a `#[validate_handshake]` hook and
//! [`Session::handshake`](crate::Session::handshake) see it.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A client's handshake: `{"sys": {...}, "user": {...}}`.
///
/// `sys` is what the client library says about itself (pitaya clients send `platform`,
/// `libVersion`, `clientBuildNumber`, `clientVersion`); `user` is whatever the game's client
/// chose to send (a token, a nickname). A part the client left out reads as an empty object.
///
/// ```
/// use pitaya_guest::Handshake;
/// use serde_json::json;
///
/// let handshake: Handshake = serde_json::from_value(json!({
///     "sys": {"platform": "web", "libVersion": "0.3.5"},
///     "user": {"token": "abc"}
/// }))
/// .unwrap();
/// assert_eq!(handshake.sys["platform"], "web");
/// assert_eq!(handshake.user["token"], "abc");
///
/// let bare: Handshake = serde_json::from_str("{}").unwrap();
/// assert_eq!(bare, Handshake::default());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Handshake {
    /// The client library's part: its platform and versions.
    #[serde(default = "empty_object")]
    pub sys: Value,
    /// The game client's part, free-form.
    #[serde(default = "empty_object")]
    pub user: Value,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

impl Default for Handshake {
    /// Both parts empty objects, as when a client sends `{}`.
    fn default() -> Self {
        Handshake {
            sys: empty_object(),
            user: empty_object(),
        }
    }
}

impl Handshake {
    /// A handshake with the given `user` part and an empty `sys` part (handy in tests).
    ///
    /// ```
    /// use pitaya_guest::Handshake;
    /// use serde_json::json;
    ///
    /// let handshake = Handshake::with_user(json!({"nickname": "ana"}));
    /// assert_eq!(handshake.user["nickname"], "ana");
    /// assert_eq!(handshake.sys, json!({}));
    /// ```
    pub fn with_user(user: Value) -> Self {
        Handshake {
            user,
            ..Handshake::default()
        }
    }

    /// Decodes the `user` part as a type of the game's own.
    ///
    /// ```
    /// use pitaya_guest::Handshake;
    /// use serde_json::json;
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Login {
    ///     token: String,
    /// }
    ///
    /// let handshake = Handshake::with_user(json!({"token": "abc"}));
    /// let login: Login = handshake.user_as().unwrap();
    /// assert_eq!(login.token, "abc");
    /// assert!(Handshake::default().user_as::<Login>().is_err());
    /// ```
    pub fn user_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.user)
    }
}
