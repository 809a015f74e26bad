//! What the hooks of `#[component]` may return, and what `#[after]` hooks see.
//!
//! Like the handler traits in `payload`, these are what the generated code calls on a hook's
//! return type; their `#[diagnostic::on_unimplemented]` messages are what a user sees when a
//! hook's signature is wrong.

use std::fmt;

use crate::HandlerError;

/// What a handler call ended with: the response bytes (empty for a notify) or the error. An
/// `#[after]` hook sees it as `&Outcome`, or rewrites it through `&mut Outcome`.
///
/// ```
/// use pitaya_guest::{HandlerError, Outcome};
///
/// fn describe(outcome: &Outcome) -> String {
///     match outcome {
///         Ok(bytes) => format!("ok, {} bytes", bytes.len()),
///         Err(error) => format!("failed with {}", error.code),
///     }
/// }
/// assert_eq!(describe(&Err(HandlerError::not_found("no"))), "failed with PIT-404");
/// ```
pub type Outcome = Result<Vec<u8>, HandlerError>;

/// What the `#[timer]`, `#[shutdown]`, `#[import_state]` and `#[validate_handshake]` hooks may
/// return: `()` or `Result<(), E>` where `E: Display`.
///
/// What happens to an error depends on the hook: `#[validate_handshake]` refuses the client
/// with it, `#[import_state]` keeps the old build serving, the others log it.
///
/// ```
/// use pitaya_guest::HookReturn;
///
/// assert_eq!(().into_hook_result(), Ok(()));
/// let failed: Result<(), String> = Err("bad state".into());
/// assert_eq!(failed.into_hook_result(), Err("bad state".to_string()));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a valid return type for this hook",
    label = "this hook returns nothing or `Result<(), E>` where `E: Display`"
)]
pub trait HookReturn {
    /// `Ok`, or the error's text.
    fn into_hook_result(self) -> Result<(), String>;
}

impl HookReturn for () {
    fn into_hook_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: fmt::Display> HookReturn for Result<(), E> {
    fn into_hook_result(self) -> Result<(), String> {
        self.map_err(|error| error.to_string())
    }
}

/// What a `#[before]` hook returns: `Result<(), E>` where `E` converts into [`HandlerError`].
/// An error is the call's answer, and the handler does not run.
///
/// ```
/// use pitaya_guest::{BeforeReturn, HandlerError};
///
/// let refused: Result<(), HandlerError> = Err(HandlerError::new("AUTH", "log in first"));
/// assert_eq!(refused.into_verdict().unwrap_err().code, "AUTH");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a valid return type for a #[before] hook",
    label = "a #[before] hook returns `Result<(), HandlerError>`",
    note = "`Ok(())` lets the call through; an error is the call's answer and the handler does not run"
)]
pub trait BeforeReturn {
    /// `Ok` to let the call through, or the error to answer with.
    fn into_verdict(self) -> Result<(), HandlerError>;
}

impl<E: Into<HandlerError>> BeforeReturn for Result<(), E> {
    fn into_verdict(self) -> Result<(), HandlerError> {
        self.map_err(Into::into)
    }
}

/// What an `#[after]` hook may take as the outcome: `&Outcome` to look at it, `&mut Outcome` to
/// change what the caller gets.
///
/// ```
/// use pitaya_guest::{HandlerError, Outcome, OutcomeArg};
///
/// let mut outcome: Outcome = Ok(b"{}".to_vec());
/// let seen: &Outcome = OutcomeArg::from_outcome(&mut outcome);
/// assert!(seen.is_ok());
/// let changed: &mut Outcome = OutcomeArg::from_outcome(&mut outcome);
/// *changed = Err(HandlerError::internal("hidden"));
/// assert!(outcome.is_err());
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an #[after] hook's outcome argument",
    label = "the outcome is a `pitaya_guest::Outcome`, `Result<Vec<u8>, HandlerError>`",
    note = "take the outcome as `&Outcome`, or as `&mut Outcome` to change what the caller gets"
)]
pub trait OutcomeArg<'a> {
    /// The outcome, borrowed as the hook takes it.
    fn from_outcome(outcome: &'a mut Outcome) -> Self;
}

impl<'a> OutcomeArg<'a> for &'a Outcome {
    fn from_outcome(outcome: &'a mut Outcome) -> Self {
        outcome
    }
}

impl<'a> OutcomeArg<'a> for &'a mut Outcome {
    fn from_outcome(outcome: &'a mut Outcome) -> Self {
        outcome
    }
}
