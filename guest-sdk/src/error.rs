//! `HandlerError`: the typed failure a handler answers with, and the conversions that make `?` work.

use std::fmt;

/// A handler's failure, sent to the client as a pitaya error response
/// (`{"code": ..., "msg": ..., "metadata": {...}}`).
///
/// Components use their own codes (`ROOM-FULL`, `ECHO-FAIL`); the `PIT-` codes are pitaya's and
/// the SDK uses them for failures it detects itself (see the constructors below).
///
/// ```
/// use pitaya_guest::HandlerError;
///
/// let error = HandlerError::new("ROOM-FULL", "the room has 8 players already")
///     .with_metadata("capacity", "8");
/// assert_eq!(error.code, "ROOM-FULL");
/// assert_eq!(error.metadata, [("capacity".to_string(), "8".to_string())]);
/// ```
///
/// `?` converts a few common errors for you:
/// - [`serde_json::Error`] becomes `PIT-400` (in a handler, JSON is nearly always decoded from
///   what the client sent), except I/O errors which become `PIT-500`;
/// - [`BindError`](crate::BindError) becomes `PIT-500`;
/// - with the `protobuf` feature, `prost::DecodeError` becomes `PIT-400`.
///
/// ```
/// use pitaya_guest::prelude::*;
///
/// fn level(request: &serde_json::Value) -> Result<u32, HandlerError> {
///     let level: u32 = serde_json::from_value(request["level"].clone())?;
///     Ok(level)
/// }
///
/// let error = level(&serde_json::json!({"level": "high"})).unwrap_err();
/// assert_eq!(error.code, "PIT-400");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    /// A code such as `ROOM-FULL`, or one of pitaya's `PIT-...` codes.
    pub code: String,
    /// A human-readable message for the client.
    pub message: String,
    /// Extra key/value pairs sent along with the error, in order.
    pub metadata: Vec<(String, String)>,
}

impl HandlerError {
    /// The code of a request the component cannot understand, such as an undecodable payload.
    pub const BAD_REQUEST: &'static str = "PIT-400";
    /// The code of a handler that does not exist.
    pub const NOT_FOUND: &'static str = "PIT-404";
    /// The code of a failure inside the component.
    pub const INTERNAL: &'static str = "PIT-500";

    /// An error with a code and a message and no metadata.
    ///
    /// ```
    /// let error = pitaya_guest::HandlerError::new("ROOM-FULL", "the room is full");
    /// assert_eq!(error.to_string(), "ROOM-FULL: the room is full");
    /// ```
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        HandlerError {
            code: code.into(),
            message: message.into(),
            metadata: Vec::new(),
        }
    }

    /// Adds one metadata entry; call it again for more.
    ///
    /// ```
    /// let error = pitaya_guest::HandlerError::new("ECHO-FAIL", "echo.fail always fails")
    ///     .with_metadata("route", "echo.fail");
    /// assert_eq!(error.metadata.len(), 1);
    /// ```
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    /// A `PIT-400` error: the client sent something the component cannot use.
    ///
    /// ```
    /// let error = pitaya_guest::HandlerError::bad_request("the name is empty");
    /// assert_eq!(error.code, "PIT-400");
    /// ```
    pub fn bad_request(message: impl Into<String>) -> Self {
        HandlerError::new(Self::BAD_REQUEST, message)
    }

    /// A `PIT-404` error: no such handler (or no such thing the request names).
    ///
    /// ```
    /// let error = pitaya_guest::HandlerError::not_found("no such room");
    /// assert_eq!(error.code, "PIT-404");
    /// ```
    pub fn not_found(message: impl Into<String>) -> Self {
        HandlerError::new(Self::NOT_FOUND, message)
    }

    /// A `PIT-500` error: something went wrong inside the component.
    ///
    /// ```
    /// let error = pitaya_guest::HandlerError::internal("the score table is corrupt");
    /// assert_eq!(error.code, "PIT-500");
    /// ```
    pub fn internal(message: impl Into<String>) -> Self {
        HandlerError::new(Self::INTERNAL, message)
    }

    /// The error for a payload that does not decode: `PIT-400` `invalid payload: ...`.
    pub(crate) fn invalid_payload(reason: impl fmt::Display) -> Self {
        HandlerError::bad_request(format!("invalid payload: {reason}"))
    }

    /// The error for a handler name the component does not serve, worded like pitaya's.
    ///
    /// ```
    /// let error = pitaya_guest::HandlerError::unknown_handler("room", "foo");
    /// assert_eq!(error.code, "PIT-404");
    /// assert_eq!(error.message, "pitaya/handler: room.foo not found");
    /// ```
    pub fn unknown_handler(component: &str, handler: &str) -> Self {
        HandlerError::not_found(format!("pitaya/handler: {component}.{handler} not found"))
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for HandlerError {}

impl From<serde_json::Error> for HandlerError {
    /// Decoding errors (syntax, data, end of input) are the client's: `PIT-400`. An I/O error can
    /// only come from the component's own reader or writer: `PIT-500`.
    fn from(error: serde_json::Error) -> Self {
        match error.classify() {
            serde_json::error::Category::Io => HandlerError::internal(error.to_string()),
            _ => HandlerError::invalid_payload(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_and_metadata_keep_order() {
        let error = HandlerError::new("A", "b")
            .with_metadata("k1", "v1")
            .with_metadata("k2", "v2");
        assert_eq!(error.code, "A");
        assert_eq!(error.message, "b");
        assert_eq!(
            error.metadata,
            [("k1".into(), "v1".into()), ("k2".into(), "v2".into())]
        );
    }

    #[test]
    fn json_decode_error_is_bad_request() {
        let json_error = serde_json::from_slice::<u32>(b"{").unwrap_err();
        let error = HandlerError::from(json_error);
        assert_eq!(error.code, "PIT-400");
        assert!(error.message.starts_with("invalid payload: "), "{error}");
    }

    #[test]
    fn json_io_error_is_internal() {
        struct Broken;
        impl std::io::Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk on fire"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let json_error = serde_json::to_writer(Broken, &1).unwrap_err();
        assert_eq!(HandlerError::from(json_error).code, "PIT-500");
    }

    #[test]
    fn unknown_handler_is_worded_like_pitaya() {
        let error = HandlerError::unknown_handler("room", "nope");
        assert_eq!(error.code, "PIT-404");
        assert_eq!(error.message, "pitaya/handler: room.nope not found");
    }
}
