//! State handed from an old instance to a new one on hot reload: [`Json`], [`IntoState`] and
//! [`FromState`].
//!
//! `#[export_state]` returns the state (bytes, or a serde type wrapped in [`Json`]), and
//! `#[import_state]` takes it back in the same form. The two may be different builds of the
//! component: a `Json` state decodes into the new build's type as long as the fields still fit
//! (serde's `#[serde(default)]` helps with fields added since).

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Raw;
use crate::log::{self, Level};

/// A value handed over as JSON: what `#[export_state]` returns and `#[import_state]` takes when
/// the state is a serde type.
///
/// ```
/// use pitaya_guest::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Default, Serialize, Deserialize)]
/// struct Scores {
///     best: u64,
/// }
///
/// #[derive(Default)]
/// struct Arcade {
///     scores: Scores,
/// }
///
/// #[component(name = "arcade")]
/// impl Arcade {
///     #[export_state]
///     fn save(&mut self) -> Json<&Scores> {
///         Json(&self.scores)
///     }
///
///     #[import_state]
///     fn load(&mut self, Json(scores): Json<Scores>) {
///         self.scores = scores;
///     }
/// }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Json<T>(pub T);

/// What an `#[export_state]` hook may return: bytes (`Vec<u8>`, [`Raw`]), a serde value in
/// [`Json`], any of those in an `Option` (`None`: nothing to hand over) or in a `Result<_, E>`
/// with `E: Display` (an error is logged and nothing is handed over).
///
/// ```
/// use pitaya_guest::{IntoState, Json};
///
/// assert_eq!(Json(vec![1, 2]).into_state(), Some(b"[1,2]".to_vec()));
/// assert_eq!(Some(b"raw".to_vec()).into_state(), Some(b"raw".to_vec()));
/// assert_eq!(None::<Vec<u8>>.into_state(), None);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a valid return type for an #[export_state] hook",
    label = "an #[export_state] hook returns the state to hand over",
    note = "return bytes (`Vec<u8>`, `Raw`), a serde value wrapped in `Json(...)`, or one of those in an `Option` (`None`: nothing to hand over)"
)]
pub trait IntoState {
    /// The state's bytes, or `None` for nothing to hand over.
    fn into_state(self) -> Option<Vec<u8>>;
}

impl IntoState for Vec<u8> {
    fn into_state(self) -> Option<Vec<u8>> {
        Some(self)
    }
}

impl IntoState for Raw {
    fn into_state(self) -> Option<Vec<u8>> {
        Some(self.0)
    }
}

impl<T: Serialize> IntoState for Json<T> {
    fn into_state(self) -> Option<Vec<u8>> {
        match serde_json::to_vec(&self.0) {
            Ok(bytes) => Some(bytes),
            Err(error) => {
                log::log(
                    Level::Error,
                    &format!("cannot encode the exported state, handing over nothing: {error}"),
                );
                None
            }
        }
    }
}

impl<S: IntoState> IntoState for Option<S> {
    fn into_state(self) -> Option<Vec<u8>> {
        self.and_then(IntoState::into_state)
    }
}

impl<S: IntoState, E: fmt::Display> IntoState for Result<S, E> {
    fn into_state(self) -> Option<Vec<u8>> {
        match self {
            Ok(state) => state.into_state(),
            Err(error) => {
                log::log(
                    Level::Error,
                    &format!("exporting the state failed, handing over nothing: {error}"),
                );
                None
            }
        }
    }
}

/// What an `#[import_state]` hook may take: the bytes (`Vec<u8>`, [`Raw`]) or a serde value in
/// [`Json`]. State that does not decode is an import error: the old build keeps serving.
///
/// ```
/// use pitaya_guest::{FromState, Json};
///
/// let Json(numbers) = Json::<Vec<u8>>::from_state(b"[1,2]".to_vec()).unwrap();
/// assert_eq!(numbers, [1, 2]);
/// assert_eq!(Vec::<u8>::from_state(b"[1,2]".to_vec()).unwrap(), b"[1,2]");
/// assert!(Json::<u32>::from_state(b"{".to_vec()).is_err());
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an #[import_state] hook's argument",
    label = "an #[import_state] hook takes the state handed over",
    note = "take the bytes (`Vec<u8>`, `Raw`) or a serde value wrapped in `Json<...>`"
)]
pub trait FromState: Sized {
    /// Decodes the state, or says why it cannot.
    fn from_state(state: Vec<u8>) -> Result<Self, String>;
}

impl FromState for Vec<u8> {
    fn from_state(state: Vec<u8>) -> Result<Self, String> {
        Ok(state)
    }
}

impl FromState for Raw {
    fn from_state(state: Vec<u8>) -> Result<Self, String> {
        Ok(Raw(state))
    }
}

impl<T: DeserializeOwned> FromState for Json<T> {
    fn from_state(state: Vec<u8>) -> Result<Self, String> {
        serde_json::from_slice(&state)
            .map(Json)
            .map_err(|error| format!("the state handed over does not decode: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_exports_hand_over_nothing() {
        let failed: Result<Vec<u8>, String> = Err("no".into());
        assert_eq!(failed.into_state(), None);
        let map = std::collections::BTreeMap::from([((1, 2), 3)]);
        assert_eq!(Json(map).into_state(), None);
        assert_eq!(Some(Raw::from("x")).into_state(), Some(b"x".to_vec()));
    }

    #[test]
    fn state_that_does_not_decode_is_an_error() {
        let error = Json::<u32>::from_state(b"\"ten\"".to_vec()).unwrap_err();
        assert!(
            error.starts_with("the state handed over does not decode"),
            "{error}"
        );
    }
}
