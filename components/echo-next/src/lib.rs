//! A later build of the `echo` component, for the host's hot-reload tests: the same name and
//! `echo.echo`, and a handler the first build lacks.
//!
//! - `echo.echo` (request) answers with the request's payload, byte for byte.
//! - `echo.reverse` (request) answers with the payload's bytes in reverse order.

use pitaya_guest::prelude::*;

/// Stateless: every handler works from its arguments alone.
#[derive(Default)]
struct EchoNext;

#[component(name = "echo")]
impl EchoNext {
    /// Answers with the payload unchanged.
    #[request]
    fn echo(payload: Raw) -> Result<Raw> {
        Ok(payload)
    }

    /// Answers with the payload reversed, byte by byte.
    #[request]
    fn reverse(payload: Raw) -> Result<Raw> {
        let mut bytes = payload.0;
        bytes.reverse();
        Ok(Raw(bytes))
    }
}
