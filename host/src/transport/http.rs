//! Plain HTTP on the WebSocket port: a request that is not a WebSocket upgrade is answered with
//! a file from the web folder (`--web DIR`), so one port serves a browser game's page and its
//! connection.

use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest request head read while deciding.
const MAX_HEAD: usize = 8 * 1024;

/// What a new connection on the WebSocket port asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Sniffed {
    /// A WebSocket upgrade: hand the untouched stream to the WebSocket handshake.
    WebSocket,
    /// A plain GET for this path.
    Get(String),
    /// Something else (another method, a malformed head).
    Other,
}

/// Peeks at the request head without consuming it.
pub async fn sniff(stream: &TcpStream, timeout: Duration) -> io::Result<Sniffed> {
    let mut buf = vec![0u8; MAX_HEAD];
    let peek = async {
        loop {
            let n = stream.peek(&mut buf).await?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut request = httparse::Request::new(&mut headers);
            match request.parse(&buf[..n]) {
                Ok(httparse::Status::Complete(_)) => {
                    let upgrade = request.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("upgrade")
                            && std::str::from_utf8(h.value)
                                .is_ok_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
                    });
                    return Ok(match (upgrade, request.method, request.path) {
                        (true, _, _) => Sniffed::WebSocket,
                        (false, Some("GET" | "HEAD"), Some(path)) => Sniffed::Get(path.to_owned()),
                        _ => Sniffed::Other,
                    });
                }
                Ok(httparse::Status::Partial) if n < MAX_HEAD => {
                    // Peek returns what is buffered; wait for more to arrive.
                    stream.readable().await?;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                _ => return Ok(Sniffed::Other),
            }
        }
    };
    tokio::time::timeout(timeout, peek)
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

/// Answers one plain HTTP request with a file from `root`, then closes.
pub async fn serve_file(mut stream: TcpStream, root: &Path, request: Sniffed) -> io::Result<()> {
    // Consume the head that was only peeked.
    let mut head = vec![0u8; MAX_HEAD];
    let _ = stream.read(&mut head).await?;
    let response = match request {
        Sniffed::Get(path) => match resolve(root, &path) {
            Some(file) => match tokio::fs::read(&file).await {
                Ok(body) => response("200 OK", content_type(&file), &body),
                Err(_) => response("404 Not Found", "text/plain", b"not found\n"),
            },
            None => response("404 Not Found", "text/plain", b"not found\n"),
        },
        _ => response(
            "405 Method Not Allowed",
            "text/plain",
            b"only GET, or a WebSocket upgrade\n",
        ),
    };
    stream.write_all(&response).await?;
    stream.shutdown().await
}

fn response(status: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Maps a request path to a file under `root`, refusing anything that would leave it.
fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let path = path.split(['?', '#']).next().unwrap_or("/");
    let relative = Path::new(path.trim_start_matches('/'));
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return None;
    }
    let mut file = root.join(relative);
    if path.ends_with('/') || file.is_dir() {
        file.push("index.html");
    }
    Some(file)
}

fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_root() {
        let root = Path::new("/srv/web");
        assert_eq!(resolve(root, "/chat.html"), Some(root.join("chat.html")));
        assert_eq!(resolve(root, "/a/b.js?x=1"), Some(root.join("a/b.js")));
        assert_eq!(resolve(root, "/"), Some(root.join("index.html")));
        assert_eq!(resolve(root, "/../etc/passwd"), None);
        assert_eq!(resolve(root, "/a/../../x"), None);
    }
}
