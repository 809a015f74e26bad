//! Plain HTTP on the WebSocket port: a request that is not a WebSocket upgrade is answered with
//! a file from the web folder (`--web DIR`), so one port serves a browser game's page and its
//! connection.

use std::io;
use std::path::{Component, Path, PathBuf};

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::upgrade::Page;

/// Answers a plain GET (or HEAD) with a file from `root`, then closes. The request head has
/// been read already (by the WebSocket port's upgrade, which told it apart).
pub async fn serve_file(
    stream: &mut (impl AsyncWrite + Unpin),
    root: &Path,
    page: &Page,
) -> io::Result<()> {
    let (status, content_type, body) = match resolve(root, &page.path) {
        Some(file) => match tokio::fs::read(&file).await {
            Ok(body) => ("200 OK", content_type(&file), body),
            Err(_) => ("404 Not Found", "text/plain", b"not found\n".to_vec()),
        },
        None => ("404 Not Found", "text/plain", b"not found\n".to_vec()),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-cache\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    // HEAD: the length of what a GET would get, and no body.
    if !page.head_only {
        out.extend_from_slice(&body);
    }
    stream.write_all(&out).await?;
    stream.shutdown().await
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
