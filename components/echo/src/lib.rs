//! The `echo` component: answers, pushes and fails on demand, for the host's tests and examples.
//!
//! - `echo.echo` (request) answers with the request's payload, byte for byte.
//! - `echo.notify` (notify) pushes the payload back to the sender as `onEcho`.
//! - `echo.fail` (request) always fails with `ECHO-FAIL`.

use pitaya_guest::prelude::*;

/// Stateless: every handler works from its arguments alone.
#[derive(Default)]
struct Echo;

#[component(name = "echo")]
impl Echo {
    /// Answers with the payload unchanged (raw bytes, which need not be JSON).
    #[request]
    fn echo(payload: Raw) -> Result<Raw> {
        Ok(payload)
    }

    /// Pushes the payload back to the sender on `onEcho`.
    #[notify]
    fn notify(session: &Session, payload: Raw) {
        session.push_raw("onEcho", &payload);
    }

    /// Always fails, so tests can check how errors reach the client.
    #[request]
    fn fail() -> Result<()> {
        Err(HandlerError::new("ECHO-FAIL", "echo.fail always fails")
            .with_metadata("route", "echo.fail"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pitaya_guest::testing::TestHost;

    #[test]
    fn echo_answers_the_bytes_unchanged() {
        let mut host = TestHost::<Echo>::new().unwrap();
        let client = host.connect();
        let bytes = [0xff, 0x00, b'{'];
        assert_eq!(host.request(client, "echo", bytes).unwrap(), bytes);
    }

    #[test]
    fn notify_pushes_on_echo_to_the_sender_only() {
        let mut host = TestHost::<Echo>::new().unwrap();
        let (sender, other) = (host.connect(), host.connect());
        host.notify(sender, "notify", r#"{"a":1}"#).unwrap();
        let pushes = host.take_pushes(sender);
        assert_eq!(pushes.len(), 1);
        assert_eq!(pushes[0].route, "onEcho");
        assert_eq!(pushes[0].payload, br#"{"a":1}"#);
        assert!(host.take_pushes(other).is_empty());
    }

    #[test]
    fn fail_fails_with_echo_fail() {
        let mut host = TestHost::<Echo>::new().unwrap();
        let client = host.connect();
        let error = host.request(client, "fail", "{}").unwrap_err();
        assert_eq!(
            error,
            HandlerError::new("ECHO-FAIL", "echo.fail always fails")
                .with_metadata("route", "echo.fail")
        );
    }

    #[test]
    fn info_lists_the_handlers() {
        use pitaya_guest::{HandlerInfo, HandlerKind};
        assert_eq!(Echo::NAME, "echo");
        assert_eq!(
            Echo::HANDLERS,
            [
                HandlerInfo {
                    name: "echo",
                    kind: HandlerKind::Request
                },
                HandlerInfo {
                    name: "notify",
                    kind: HandlerKind::Notify
                },
                HandlerInfo {
                    name: "fail",
                    kind: HandlerKind::Request
                },
            ]
        );
    }
}
