//! Protobuf payloads (the `protobuf` feature): [`Proto`] wraps a prost message so a handler
//! takes it as its payload or answers with it.
//!
//! Messages are plain Rust structs deriving [`prost::Message`]; no `.proto` compiler is needed.
//! The derive names the `prost` crate by path, `::prost` unless told otherwise, so a component
//! either tells it to use the SDK's re-export with `#[prost(prost_path = "::pitaya_guest::prost")]`
//! on each message (no dependency to add), or adds `prost = "0.14"` to its own `Cargo.toml` (the
//! same version as the SDK's, so the `Message` trait is the same).

use std::ops::{Deref, DerefMut};

use prost::Message;

use crate::HandlerError;
use crate::payload::{FromPayload, IntoResponse};

/// A protobuf message as a handler's payload or response, encoded and decoded with prost.
///
/// As a handler argument, the payload is decoded as `T` (an empty payload is the message with
/// every field at its default, as protobuf has it); bytes that do not decode answer `PIT-400`
/// `invalid payload: ...` without calling the handler. As a response, the message is encoded
/// with [`Message::encode_to_vec`]. It derefs to `T`.
///
/// ```
/// use pitaya_guest::prelude::*;
/// use pitaya_guest::prost::Message;
/// use pitaya_guest::testing::TestHost;
///
/// /// `message AddRequest { int32 a = 1; int32 b = 2; }`
/// #[derive(Clone, PartialEq, pitaya_guest::prost::Message)]
/// #[prost(prost_path = "::pitaya_guest::prost")]
/// struct AddRequest {
///     #[prost(int32, tag = "1")]
///     a: i32,
///     #[prost(int32, tag = "2")]
///     b: i32,
/// }
///
/// /// `message AddResponse { int32 sum = 1; }`
/// #[derive(Clone, PartialEq, pitaya_guest::prost::Message)]
/// #[prost(prost_path = "::pitaya_guest::prost")]
/// struct AddResponse {
///     #[prost(int32, tag = "1")]
///     sum: i32,
/// }
///
/// #[derive(Default)]
/// struct Calc;
///
/// #[component(name = "calc")]
/// impl Calc {
///     #[request]
///     fn add(Proto(request): Proto<AddRequest>) -> Result<Proto<AddResponse>> {
///         Ok(Proto(AddResponse { sum: request.a + request.b }))
///     }
/// }
///
/// let mut host = TestHost::<Calc>::new().unwrap();
/// let client = host.connect();
/// let request = AddRequest { a: 2, b: 3 }.encode_to_vec();
/// let answer = host.request(client, "add", request).unwrap();
/// assert_eq!(AddResponse::decode(&answer[..]).unwrap(), AddResponse { sum: 5 });
/// assert_eq!(host.request(client, "add", [0xff]).unwrap_err().code, "PIT-400");
/// ```
///
/// `Proto` implements neither `Serialize` nor `Deserialize`, which is what lets it sit beside
/// the JSON payloads (any serde type) and [`Raw`](crate::Raw).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Proto<T>(pub T);

impl<T> Proto<T> {
    /// The message.
    ///
    /// ```
    /// use pitaya_guest::Proto;
    ///
    /// let number: i32 = Proto(7).into_inner();
    /// assert_eq!(number, 7);
    /// ```
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Proto<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for Proto<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T> From<T> for Proto<T> {
    fn from(message: T) -> Self {
        Proto(message)
    }
}

impl<T: Message + Default> FromPayload for Proto<T> {
    fn from_payload(payload: Vec<u8>) -> Result<Self, HandlerError> {
        T::decode(payload.as_slice())
            .map(Proto)
            .map_err(HandlerError::invalid_payload)
    }
}

impl<T: Message> IntoResponse for Proto<T> {
    fn into_response(self) -> Result<Vec<u8>, HandlerError> {
        Ok(self.0.encode_to_vec())
    }
}

impl From<prost::DecodeError> for HandlerError {
    /// A message that does not decode came from the client: `PIT-400` `invalid payload: ...`.
    ///
    /// ```
    /// use pitaya_guest::HandlerError;
    /// use pitaya_guest::prost::Message;
    ///
    /// fn count(bytes: &[u8]) -> Result<u64, HandlerError> {
    ///     Ok(u64::decode(bytes)?)
    /// }
    ///
    /// assert_eq!(count(&[0x08, 0x2a]).unwrap(), 42);
    /// assert_eq!(count(&[0x08]).unwrap_err().code, "PIT-400");
    /// ```
    fn from(error: prost::DecodeError) -> Self {
        HandlerError::invalid_payload(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RequestReturn;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Move {
        #[prost(int32, tag = "1")]
        x: i32,
        #[prost(string, tag = "2")]
        name: String,
        #[prost(int64, repeated, tag = "3")]
        path: Vec<i64>,
    }

    fn sample() -> Move {
        Move {
            x: -3,
            name: "ana".into(),
            path: vec![1, 2, 300],
        }
    }

    #[test]
    fn round_trip() {
        let bytes = Proto(sample()).into_response().unwrap();
        assert_eq!(bytes, sample().encode_to_vec());
        let decoded = Proto::<Move>::from_payload(bytes).unwrap();
        assert_eq!(decoded.into_inner(), sample());
    }

    #[test]
    fn empty_payload_is_the_default_message() {
        let decoded = Proto::<Move>::from_payload(Vec::new()).unwrap();
        assert_eq!(*decoded, Move::default());
        assert!(Proto(Move::default()).into_response().unwrap().is_empty());
    }

    #[test]
    fn bad_bytes_are_pit_400() {
        // Field 1 as a varint, then the end of the input before the varint's end.
        let error = Proto::<Move>::from_payload(vec![0x08, 0xff]).unwrap_err();
        assert_eq!(error.code, "PIT-400");
        assert!(error.message.starts_with("invalid payload: "), "{error}");
        // A string field that is not UTF-8.
        let error = Proto::<Move>::from_payload(vec![0x12, 0x01, 0xff]).unwrap_err();
        assert_eq!(error.code, "PIT-400");
        // JSON is not protobuf.
        let error = Proto::<Move>::from_payload(br#"{"x":1}"#.to_vec()).unwrap_err();
        assert_eq!(error.code, "PIT-400");
    }

    #[test]
    fn decode_error_converts_to_pit_400() {
        let decode_error = Move::decode(&[0x08][..]).unwrap_err();
        let error = HandlerError::from(decode_error);
        assert_eq!(error.code, "PIT-400");
        assert!(error.message.starts_with("invalid payload: "), "{error}");
    }

    #[test]
    fn request_return_encodes_proto_answers() {
        let answer: Result<Proto<Move>, HandlerError> = Ok(Proto(sample()));
        assert_eq!(answer.into_reply().unwrap(), sample().encode_to_vec());
    }

    #[test]
    fn deref_and_from() {
        let mut message = Proto::from(sample());
        message.x += 1;
        assert_eq!(message.x, -2);
        assert_eq!(message.name, "ana");
    }
}
