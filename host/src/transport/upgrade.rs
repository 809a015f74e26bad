//! The server's half of the WebSocket opening handshake (RFC 6455 §4.2): what a request head
//! on the WebSocket port asks for (an upgrade, or a plain GET for `--web`), and the answer to
//! write. Pure: `ws` reads the bytes through the worker thread's scratch buffer, so that a
//! handshake in progress holds no buffer of its own unless its head arrives in pieces
//! (tungstenite's handshake held 8 KiB per connection while it ran, which a burst of connects
//! left behind in the allocator).

use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Longest request head accepted.
pub const MAX_HEAD: usize = 8 * 1024;

/// Most header lines a request head may have.
const MAX_HEADERS: usize = 64;

/// Why an upgrade did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// Reading the request or writing the answer failed, or the client left before its head
    /// was complete.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The request is not an acceptable WebSocket upgrade; the client was answered with an HTTP
    /// error saying why.
    #[error("refused: {0}")]
    Refused(&'static str),
    /// The request head and the answer did not pass within the handshake timeout.
    #[error("timed out")]
    TimedOut,
}

/// What a complete request head gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Switching protocols, with this `Sec-WebSocket-Accept` value.
    Accept(String),
    /// A plain GET or HEAD (no `Upgrade: websocket`): a file when the host serves a web folder,
    /// else [`NOT_AN_UPGRADE`].
    Get(Page),
    /// An HTTP error.
    Refuse(Refusal),
}

/// What a plain GET or HEAD asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The request's path, query included.
    pub path: String,
    /// HEAD: the answer has the headers and no body.
    pub head_only: bool,
    /// What the request makes its answer depend on, as sent.
    pub conditions: Conditions,
}

/// A GET's conditional, range and content-coding headers (RFC 9110 §13.1, §14.2, §12.5.3), as
/// sent: a browser that has a page asks whether it changed, a media element or a resumed
/// download asks for a part, and a browser says which compressed forms it inflates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    /// `If-None-Match`: entity tags, every such header's list joined.
    pub if_none_match: Option<String>,
    /// `If-Modified-Since`: an HTTP date.
    pub if_modified_since: Option<String>,
    /// `Range`: the bytes asked for.
    pub range: Option<String>,
    /// `If-Range`: the range only if the file is still this one (an entity tag or a date).
    pub if_range: Option<String>,
    /// `Accept-Encoding`: the content codings the client inflates, every such header's list
    /// joined.
    pub accept_encoding: Option<String>,
}

/// An HTTP error answer to a request head.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Refusal {
    /// The status, as in the status line (`400 Bad Request`).
    pub status: &'static str,
    /// Why, for the body and the log.
    pub reason: &'static str,
    /// Header lines the status calls for, each ending in CRLF (`Allow` for 405, `Upgrade` for
    /// 426), or none.
    pub headers: &'static str,
}

/// What the bytes read so far hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole head of `len` bytes (anything after it is the client's first frames).
    Complete { verdict: Verdict, len: usize },
    /// Not yet a whole head.
    Partial,
}

/// The answer to a plain GET where no web folder is served.
pub const NOT_AN_UPGRADE: Refusal = Refusal {
    status: "400 Bad Request",
    reason: "not a WebSocket upgrade: no Upgrade: websocket",
    headers: "",
};

const fn refuse(status: &'static str, reason: &'static str) -> Verdict {
    refuse_with(status, reason, "")
}

const fn refuse_with(status: &'static str, reason: &'static str, headers: &'static str) -> Verdict {
    Verdict::Refuse(Refusal {
        status,
        reason,
        headers,
    })
}

/// Judges the request head at the start of `bytes`.
pub fn parse(bytes: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(bytes) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Partial) if bytes.len() < MAX_HEAD => return Parsed::Partial,
        Ok(_) => {
            return Parsed::Complete {
                verdict: refuse(
                    "431 Request Header Fields Too Large",
                    "request head too large",
                ),
                len: bytes.len(),
            };
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Complete {
                verdict: refuse(
                    "431 Request Header Fields Too Large",
                    "too many header lines",
                ),
                len: bytes.len(),
            };
        }
        Err(_) => {
            return Parsed::Complete {
                verdict: refuse("400 Bad Request", "malformed request head"),
                len: bytes.len(),
            };
        }
    };
    Parsed::Complete {
        verdict: judge(&request),
        len,
    }
}

/// Tells a plain GET from an upgrade, and checks an upgrade as RFC 6455 §4.2.1 asks.
fn judge(request: &httparse::Request<'_, '_>) -> Verdict {
    let values = |name: &'static str| {
        request
            .headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
    };
    // Upgrade is a list (RFC 9110 §7.8): `h2c, websocket` asks for WebSocket too.
    let upgrade = values("upgrade").any(|v| {
        v.split(',')
            .any(|token| token.trim().eq_ignore_ascii_case("websocket"))
    });
    if !upgrade {
        return match (request.method, request.path) {
            (Some(method @ ("GET" | "HEAD")), Some(path)) => {
                let first = |name| values(name).next().map(str::to_owned);
                let list = |name| {
                    let items: Vec<&str> = values(name).collect();
                    (!items.is_empty()).then(|| items.join(", "))
                };
                Verdict::Get(Page {
                    path: path.to_owned(),
                    head_only: method == "HEAD",
                    conditions: Conditions {
                        if_none_match: list("if-none-match"),
                        if_modified_since: first("if-modified-since"),
                        range: first("range"),
                        if_range: first("if-range"),
                        accept_encoding: list("accept-encoding"),
                    },
                })
            }
            _ => refuse_with(
                "405 Method Not Allowed",
                "only GET, or a WebSocket upgrade",
                "Allow: GET, HEAD\r\n",
            ),
        };
    }
    if request.method != Some("GET") {
        return refuse_with(
            "405 Method Not Allowed",
            "a WebSocket upgrade is a GET",
            "Allow: GET\r\n",
        );
    }
    if request.version != Some(1) {
        return refuse("400 Bad Request", "a WebSocket upgrade needs HTTP/1.1");
    }
    if values("host").next().is_none() {
        return refuse("400 Bad Request", "no Host");
    }
    // The protocol switches after the request (RFC 9110 §7.8), so a body would be read as
    // WebSocket frames.
    let body = values("transfer-encoding").next().is_some()
        || values("content-length").any(|v| v.trim() != "0");
    if body {
        return refuse("400 Bad Request", "a WebSocket upgrade has no body");
    }
    let connection_upgrade = values("connection").any(|v| {
        v.split(',')
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
    });
    if !connection_upgrade {
        return refuse("400 Bad Request", "no Connection: Upgrade");
    }
    if !values("sec-websocket-version").any(|v| v.trim() == "13") {
        // RFC 6455 §4.4: the answer names the version this server speaks; RFC 9110
        // §15.5.22: and the protocol to upgrade to.
        return refuse_with(
            "426 Upgrade Required",
            "only WebSocket version 13 is spoken",
            "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
        );
    }
    match values("sec-websocket-key").next().map(str::trim) {
        Some(key) if is_valid_key(key) => Verdict::Accept(derive_accept_key(key.as_bytes())),
        _ => refuse("400 Bad Request", "no valid Sec-WebSocket-Key"),
    }
}

/// A key is 16 bytes in base64: 22 characters, the last with its low four bits zero, then `==`.
fn is_valid_key(key: &str) -> bool {
    let key = key.as_bytes();
    let base64 = |c: &u8| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/';
    key.len() == 24
        && key[..22].iter().all(base64)
        && matches!(key[21], b'A' | b'Q' | b'g' | b'w')
        && &key[22..] == b"=="
}

/// The answer that completes an upgrade.
pub fn switching_protocols(accept: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )
}

/// The answer to a refused request; the connection closes after it.
pub fn refusal(refusal: Refusal) -> String {
    format!(
        "HTTP/1.1 {}\r\n{}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{}\n",
        refusal.status,
        refusal.headers,
        refusal.reason.len() + 1,
        refusal.reason
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6455 §1.3's example request.
    const EXAMPLE: &str = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    fn verdict(head: &str) -> Verdict {
        match parse(head.as_bytes()) {
            Parsed::Complete { verdict, len } => {
                assert_eq!(len, head.len());
                verdict
            }
            Parsed::Partial => panic!("partial: {head:?}"),
        }
    }

    fn status(head: &str) -> &'static str {
        match verdict(head) {
            Verdict::Refuse(refusal) => refusal.status,
            other => panic!("{other:?}: {head:?}"),
        }
    }

    #[test]
    fn the_rfc_example_is_accepted_with_the_rfc_answer() {
        assert_eq!(
            verdict(EXAMPLE),
            Verdict::Accept("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into())
        );
        let answer = switching_protocols("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(answer.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(answer.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(answer.ends_with("\r\n\r\n"));
    }

    #[test]
    fn every_prefix_of_a_head_is_partial_and_what_follows_it_is_not_part_of_it() {
        for end in 0..EXAMPLE.len() {
            assert_eq!(parse(&EXAMPLE.as_bytes()[..end]), Parsed::Partial, "{end}");
        }
        let with_frame = [EXAMPLE.as_bytes(), &[0x82, 0x00]].concat();
        assert!(matches!(
            parse(&with_frame),
            Parsed::Complete { verdict: Verdict::Accept(_), len } if len == EXAMPLE.len()
        ));
    }

    #[test]
    fn header_names_and_tokens_are_matched_as_http_says() {
        let browser = "GET / HTTP/1.1\r\nhost: a\r\nconnection: keep-alive, Upgrade\r\n\
            upgrade: WebSocket\r\nsec-websocket-version: 13\r\n\
            sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        assert!(matches!(verdict(browser), Verdict::Accept(_)));
    }

    #[test]
    fn what_is_not_an_upgrade_is_refused_with_a_status() {
        let with = |from: &str, to: &str| EXAMPLE.replacen(from, to, 1);
        assert_eq!(status(&with("GET", "POST")), "405 Method Not Allowed");
        assert_eq!(status(&with("HTTP/1.1", "HTTP/1.0")), "400 Bad Request");
        assert_eq!(
            status(&with("Host: server.example.com\r\n", "")),
            "400 Bad Request"
        );
        assert_eq!(
            verdict(&with("Upgrade: websocket", "Upgrade: h2c")),
            Verdict::Get(Page {
                path: "/chat".into(),
                head_only: false,
                conditions: Conditions::default(),
            })
        );
        assert_eq!(
            status(&with("Connection: Upgrade", "Connection: close")),
            "400 Bad Request"
        );
        assert_eq!(
            status(&with(
                "Sec-WebSocket-Version: 13",
                "Sec-WebSocket-Version: 8"
            )),
            "426 Upgrade Required"
        );
        for key in [
            "dGhlIHNhbXBsZSBub25jZQ=",
            "dGhlIHNhbXBsZSBub25jZR==",
            "dGhlIHNhbXBsZSBub25j!Q==",
        ] {
            assert_eq!(
                status(&with("dGhlIHNhbXBsZSBub25jZQ==", key)),
                "400 Bad Request",
                "{key}"
            );
        }
        assert_eq!(
            status("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"),
            "405 Method Not Allowed"
        );
        assert_eq!(status("\x16\x03\x01\x02\x00\r\n\r\n"), "400 Bad Request");
    }

    #[test]
    fn upgrade_is_a_list_and_an_upgrade_has_no_body() {
        let with = |from: &str, to: &str| EXAMPLE.replacen(from, to, 1);
        assert!(matches!(
            verdict(&with("Upgrade: websocket", "Upgrade: h2c, WebSocket")),
            Verdict::Accept(_)
        ));
        let with_length = with("Host:", "Content-Length: 5\r\nHost:");
        assert_eq!(status(&with_length), "400 Bad Request");
        let chunked = with("Host:", "Transfer-Encoding: chunked\r\nHost:");
        assert_eq!(status(&chunked), "400 Bad Request");
        assert!(matches!(
            verdict(&with("Host:", "Content-Length: 0\r\nHost:")),
            Verdict::Accept(_)
        ));
    }

    #[test]
    fn a_plain_get_is_told_apart_from_an_upgrade() {
        assert_eq!(
            verdict("GET /chat.html?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Verdict::Get(Page {
                path: "/chat.html?x=1".into(),
                head_only: false,
                conditions: Conditions::default(),
            })
        );
        assert_eq!(
            verdict("HEAD / HTTP/1.0\r\n\r\n"),
            Verdict::Get(Page {
                path: "/".into(),
                head_only: true,
                conditions: Conditions::default(),
            })
        );
        let conditional = "GET /a.js HTTP/1.1\r\nIf-None-Match: \"x\"\r\nRange: bytes=0-9\r\n\
             if-none-match: W/\"y\", \"z\"\r\nIf-Modified-Since: Sat, 28 Nov 2026 01:00:00 GMT\r\n\
             If-Range: \"x\"\r\nAccept-Encoding: gzip, br\r\n\r\n";
        assert_eq!(
            verdict(conditional),
            Verdict::Get(Page {
                path: "/a.js".into(),
                head_only: false,
                conditions: Conditions {
                    if_none_match: Some("\"x\", W/\"y\", \"z\"".into()),
                    if_modified_since: Some("Sat, 28 Nov 2026 01:00:00 GMT".into()),
                    range: Some("bytes=0-9".into()),
                    if_range: Some("\"x\"".into()),
                    accept_encoding: Some("gzip, br".into()),
                },
            })
        );
    }

    #[test]
    fn a_head_too_large_is_refused_before_it_is_all_read() {
        let long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
        assert!(matches!(
            parse(long.as_bytes()),
            Parsed::Complete { verdict: Verdict::Refuse(r), .. } if r.status.starts_with("431")
        ));
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X{i}: a\r\n"))
            .collect();
        assert_eq!(
            status(&format!("GET / HTTP/1.1\r\n{many}\r\n")),
            "431 Request Header Fields Too Large"
        );
    }

    #[test]
    fn a_refusal_says_why_and_426_names_the_version() {
        let Verdict::Refuse(version) = verdict(&EXAMPLE.replacen("Version: 13", "Version: 8", 1))
        else {
            panic!("version 8 accepted");
        };
        let answer = refusal(version);
        assert!(answer.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(answer.contains("\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"));
        assert!(answer.contains("\r\nContent-Length: 36\r\n"));
        assert!(answer.ends_with("\r\n\r\nonly WebSocket version 13 is spoken\n"));
        assert!(
            !refusal(Refusal {
                status: "400 Bad Request",
                reason: "x",
                headers: ""
            })
            .contains("Version")
        );
        let Verdict::Refuse(post) = verdict(&EXAMPLE.replacen("GET", "POST", 1)) else {
            panic!("POST accepted");
        };
        assert!(refusal(post).contains("\r\nAllow: GET\r\n"));
    }
}
