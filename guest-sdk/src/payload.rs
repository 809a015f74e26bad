//! How handler arguments are decoded from payload bytes and handler results encoded back.
//!
//! Payloads are JSON by default (any serde type), or [`Raw`] bytes taken as they are, or
//! protobuf messages in `Proto` (the `protobuf` feature, in `proto.rs`). The
//! traits here are what `#[component]` calls on each handler's argument and return types; their
//! `#[diagnostic::on_unimplemented]` messages are what a user sees when a signature is wrong.

use std::fmt;
use std::ops::{Deref, DerefMut};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::HandlerError;

/// Payload bytes taken as they are, without JSON decoding or encoding.
///
/// As a handler argument it receives the payload exactly as the client sent it; as a response
/// it is sent exactly as given. It derefs to `[u8]`.
///
/// ```
/// use pitaya_guest::prelude::*;
///
/// #[derive(Default)]
/// struct Echo;
///
/// #[component(name = "echo")]
/// impl Echo {
///     /// Answers with the request's bytes, unchanged.
///     #[request]
///     fn echo(payload: Raw) -> Result<Raw> {
///         Ok(payload)
///     }
/// }
///
/// let raw = Raw::from("hello");
/// assert_eq!(raw.len(), 5);
/// assert_eq!(&raw[..], b"hello");
/// ```
///
/// `Raw` deliberately implements neither `Serialize` nor `Deserialize`: that is what lets a
/// payload be "any serde type, or `Raw`".
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Raw(pub Vec<u8>);

impl Raw {
    /// The bytes, as a vector.
    ///
    /// ```
    /// let bytes: Vec<u8> = pitaya_guest::Raw::from("hi").into_inner();
    /// assert_eq!(bytes, b"hi");
    /// ```
    pub fn into_inner(self) -> Vec<u8> {
        self.0
    }
}

impl fmt::Debug for Raw {
    /// Shows text payloads as text, which is what they nearly always are (JSON).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(text) => f.debug_tuple("Raw").field(&text).finish(),
            Err(_) => f.debug_tuple("Raw").field(&self.0).finish(),
        }
    }
}

impl Deref for Raw {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl DerefMut for Raw {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl AsRef<[u8]> for Raw {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Raw {
    fn from(bytes: Vec<u8>) -> Self {
        Raw(bytes)
    }
}

impl From<&[u8]> for Raw {
    fn from(bytes: &[u8]) -> Self {
        Raw(bytes.to_vec())
    }
}

impl From<String> for Raw {
    fn from(text: String) -> Self {
        Raw(text.into_bytes())
    }
}

impl From<&str> for Raw {
    fn from(text: &str) -> Self {
        Raw(text.as_bytes().to_vec())
    }
}

impl From<Raw> for Vec<u8> {
    fn from(raw: Raw) -> Self {
        raw.0
    }
}

/// A type a handler can take as its payload argument.
///
/// Implemented for every `T: serde::de::DeserializeOwned` (decoded as JSON), for [`Raw`]
/// (the bytes as sent) and, with the `protobuf` feature, for `Proto<M>` (a protobuf message).
/// A payload that does not decode makes the call fail with `PIT-400` `invalid payload: ...`;
/// the handler is not called. An empty payload decodes as JSON `null`, so `Option<T>`, `()` and
/// `serde_json::Value` accept it.
///
/// ```
/// use pitaya_guest::{FromPayload, Raw};
///
/// let point: (i32, i32) = FromPayload::from_payload(b"[1,2]".to_vec()).unwrap();
/// assert_eq!(point, (1, 2));
///
/// let nothing: Option<String> = FromPayload::from_payload(Vec::new()).unwrap();
/// assert_eq!(nothing, None);
///
/// let raw = Raw::from_payload(b"not json".to_vec()).unwrap();
/// assert_eq!(&raw[..], b"not json");
///
/// let error = u32::from_payload(b"\"ten\"".to_vec()).unwrap_err();
/// assert_eq!(error.code, "PIT-400");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a handler's payload",
    label = "this type cannot be decoded from a payload",
    note = "a payload argument is any type implementing `serde::Deserialize` (decoded from JSON, and owned: `String`, not `&str`), `pitaya_guest::Raw` for the bytes as sent, or `pitaya_guest::Proto<M>` for a protobuf message (feature `protobuf`)",
    note = "the calling session is taken as `&Session` or `SessionId`"
)]
pub trait FromPayload: Sized {
    /// Decodes the payload, or says why it cannot (`PIT-400`).
    fn from_payload(payload: Vec<u8>) -> Result<Self, HandlerError>;
}

impl<T: DeserializeOwned> FromPayload for T {
    fn from_payload(payload: Vec<u8>) -> Result<Self, HandlerError> {
        // An empty payload is what clients send when there is nothing to say; reading it as
        // `null` lets `Option<T>`, `()` and `Value` accept it, and gives other types an error
        // that names what was expected.
        let bytes: &[u8] = if payload.is_empty() {
            b"null"
        } else {
            &payload
        };
        serde_json::from_slice(bytes).map_err(HandlerError::invalid_payload)
    }
}

impl FromPayload for Raw {
    fn from_payload(payload: Vec<u8>) -> Result<Self, HandlerError> {
        Ok(Raw(payload))
    }
}

/// A type a request handler can answer with (the `T` of its `Result<T, HandlerError>`).
///
/// Implemented for every `T: serde::Serialize` (encoded as JSON), for [`Raw`] (sent as is) and,
/// with the `protobuf` feature, for `Proto<M>` (a protobuf message, encoded).
///
/// ```
/// use pitaya_guest::{IntoResponse, Raw};
///
/// assert_eq!(serde_json::json!({"code": 0}).into_response().unwrap(), br#"{"code":0}"#);
/// assert_eq!(Raw::from("as is").into_response().unwrap(), b"as is");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a handler's response",
    label = "this type cannot be encoded as a response",
    note = "a response is any type implementing `serde::Serialize` (encoded as JSON), `pitaya_guest::Raw` for bytes sent as they are, or `pitaya_guest::Proto<M>` for a protobuf message (feature `protobuf`)"
)]
pub trait IntoResponse {
    /// Encodes the response; a value that cannot be encoded is a `PIT-500` error.
    fn into_response(self) -> Result<Vec<u8>, HandlerError>;
}

impl<T: Serialize> IntoResponse for T {
    fn into_response(self) -> Result<Vec<u8>, HandlerError> {
        serde_json::to_vec(&self)
            .map_err(|error| HandlerError::internal(format!("cannot encode the response: {error}")))
    }
}

impl IntoResponse for Raw {
    fn into_response(self) -> Result<Vec<u8>, HandlerError> {
        Ok(self.0)
    }
}

/// What a `#[request]` handler may return: `Result<T, E>` where `T` is an [`IntoResponse`]
/// (any `Serialize` type, [`Raw`], or `Proto<M>` with the `protobuf` feature) and `E` converts
/// into [`HandlerError`].
///
/// ```
/// use pitaya_guest::{HandlerError, RequestReturn};
///
/// let answer: Result<u32, HandlerError> = Ok(7);
/// assert_eq!(answer.into_reply().unwrap(), b"7");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a valid return type for a #[request] handler",
    label = "a #[request] handler returns `Result<T, HandlerError>`",
    note = "wrap the answer in `Ok(...)`: `T` is any `serde::Serialize` type (sent as JSON), `pitaya_guest::Raw` or `pitaya_guest::Proto<M>` (protobuf)",
    note = "a handler that answers nothing is a #[notify] handler"
)]
pub trait RequestReturn {
    /// The response bytes, or the error to send instead.
    fn into_reply(self) -> Result<Vec<u8>, HandlerError>;
}

impl<T: IntoResponse, E: Into<HandlerError>> RequestReturn for Result<T, E> {
    fn into_reply(self) -> Result<Vec<u8>, HandlerError> {
        self.map_err(Into::into)?.into_response()
    }
}

/// What a `#[notify]` handler may return: `()`, or `Result<(), E>` where `E` converts into
/// [`HandlerError`]. Nobody receives a notify's result; the host logs its errors.
///
/// ```
/// use pitaya_guest::{HandlerError, NotifyReturn};
///
/// assert!(().into_outcome().is_ok());
/// let failed: Result<(), HandlerError> = Err(HandlerError::bad_request("empty message"));
/// assert_eq!(failed.into_outcome().unwrap_err().code, "PIT-400");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a valid return type for a #[notify] handler",
    label = "a #[notify] handler returns nothing or `Result<(), HandlerError>`",
    note = "nobody receives what a notify handler returns; a handler that answers is a #[request] handler"
)]
pub trait NotifyReturn {
    /// `Ok` or the error for the host to log.
    fn into_outcome(self) -> Result<(), HandlerError>;
}

impl NotifyReturn for () {
    fn into_outcome(self) -> Result<(), HandlerError> {
        Ok(())
    }
}

impl<E: Into<HandlerError>> NotifyReturn for Result<(), E> {
    fn into_outcome(self) -> Result<(), HandlerError> {
        self.map_err(Into::into)
    }
}

/// What an `#[init]` hook may return: `Result<C, E>` where `E: Display`; the error's text stops
/// the component loading.
///
/// ```
/// use pitaya_guest::InitReturn;
///
/// let built: Result<u8, String> = Err("no such map".into());
/// assert_eq!(InitReturn::<u8>::into_component(built).unwrap_err(), "no such map");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a valid return type for an #[init] hook",
    label = "an #[init] hook returns `Self` or `Result<Self, E>` where `E: Display`"
)]
pub trait InitReturn<C> {
    /// The component, or why it could not be built.
    fn into_component(self) -> Result<C, String>;
}

impl<C, E: fmt::Display> InitReturn<C> for Result<C, E> {
    fn into_component(self) -> Result<C, String> {
        self.map_err(|error| error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Join {
        name: String,
    }

    #[test]
    fn json_payload_decodes() {
        let join = Join::from_payload(br#"{"name":"ana"}"#.to_vec()).unwrap();
        assert_eq!(join.name, "ana");
    }

    #[test]
    fn bad_json_payload_is_pit_400() {
        let error = Join::from_payload(b"{\"name\":".to_vec()).unwrap_err();
        assert_eq!(error.code, "PIT-400");
        assert!(error.message.starts_with("invalid payload: "), "{error}");
    }

    #[test]
    fn wrong_shape_is_pit_400_naming_the_field() {
        let error = Join::from_payload(b"{}".to_vec()).unwrap_err();
        assert_eq!(error.code, "PIT-400");
        assert!(error.message.contains("name"), "{error}");
    }

    #[test]
    fn empty_payload_reads_as_null() {
        assert_eq!(Option::<Join>::from_payload(Vec::new()).unwrap(), None);
        assert_eq!(
            serde_json::Value::from_payload(Vec::new()).unwrap(),
            serde_json::Value::Null
        );
        <()>::from_payload(Vec::new()).unwrap();
        assert_eq!(Join::from_payload(Vec::new()).unwrap_err().code, "PIT-400");
    }

    #[test]
    fn raw_payload_is_unchanged_even_if_not_json() {
        let bytes = vec![0xff, 0x00, b'{'];
        assert_eq!(
            Raw::from_payload(bytes.clone()).unwrap().into_inner(),
            bytes
        );
    }

    #[test]
    fn responses_encode_as_json_or_raw() {
        assert_eq!("hi".into_response().unwrap(), b"\"hi\"");
        assert_eq!(().into_response().unwrap(), b"null");
        assert_eq!(Raw(vec![1, 2]).into_response().unwrap(), [1, 2]);
    }

    #[test]
    fn unencodable_response_is_pit_500() {
        // JSON object keys must be strings; a tuple key cannot be encoded.
        let map = std::collections::BTreeMap::from([((1, 2), "x")]);
        assert_eq!(map.into_response().unwrap_err().code, "PIT-500");
    }

    #[test]
    fn request_return_passes_errors_through() {
        let failed: Result<Raw, HandlerError> = Err(HandlerError::new("X", "y"));
        assert_eq!(
            failed.into_reply().unwrap_err(),
            HandlerError::new("X", "y")
        );
        let from_json: Result<u8, serde_json::Error> = serde_json::from_str("x");
        assert_eq!(from_json.into_reply().unwrap_err().code, "PIT-400");
    }

    #[test]
    fn raw_debug_shows_text() {
        assert_eq!(format!("{:?}", Raw::from("{}")), r#"Raw("{}")"#);
        assert_eq!(format!("{:?}", Raw(vec![0xff])), "Raw([255])");
    }
}
