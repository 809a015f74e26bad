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
    let (status, content_type, body) = match servable(root, &page.path).await {
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

/// The file a request path names, if it may be served: a regular file inside `root` once the
/// path is decoded and symbolic links are followed (a folder means its `index.html`). Not a
/// link out of the folder, nor a FIFO or a device, whose open could block a thread for good.
async fn servable(root: &Path, path: &str) -> Option<PathBuf> {
    let (relative, folder) = relative_path(path)?;
    let root = tokio::fs::canonicalize(root).await.ok()?;
    let mut file = tokio::fs::canonicalize(root.join(relative)).await.ok()?;
    if folder || tokio::fs::metadata(&file).await.ok()?.is_dir() {
        file = tokio::fs::canonicalize(file.join("index.html"))
            .await
            .ok()?;
    }
    let regular = tokio::fs::metadata(&file).await.ok()?.is_file();
    (regular && file.starts_with(&root)).then_some(file)
}

/// The path below the web folder that a request path names, percent-decoded, and whether it
/// names a folder (ends in `/`); none when it would climb out or does not decode.
fn relative_path(path: &str) -> Option<(PathBuf, bool)> {
    let path = path.split(['?', '#']).next().unwrap_or("/");
    let path = percent_decode(path)?;
    let relative = PathBuf::from(path.trim_start_matches('/'));
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return None;
    }
    let folder = path.is_empty() || path.ends_with('/');
    Some((relative, folder))
}

/// `%XX` escapes decoded (RFC 3986 §2.1): browsers send a space or a non-ASCII name so. None
/// for a broken escape, a NUL, or bytes that are not UTF-8.
fn percent_decode(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = bytes.get(at + 1..at + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    if out.contains(&0) {
        return None;
    }
    String::from_utf8(out).ok()
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
        Some("txt") => "text/plain; charset=utf-8",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("mp3") => "audio/mpeg",
        Some("ogg") => "audio/ogg",
        Some("wav") => "audio/wav",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_decoded_and_stay_below_the_root() {
        let rel =
            |path: &str| relative_path(path).map(|(p, folder)| (p.display().to_string(), folder));
        assert_eq!(rel("/chat.html"), Some(("chat.html".into(), false)));
        assert_eq!(rel("/a/b.js?x=1#y"), Some(("a/b.js".into(), false)));
        assert_eq!(rel("/"), Some(("".into(), true)));
        assert_eq!(rel("/sub/"), Some(("sub/".into(), true)));
        assert_eq!(rel("/a%20b.js"), Some(("a b.js".into(), false)));
        assert_eq!(rel("/%C3%BC.js"), Some(("ü.js".into(), false)));
        for climbing in [
            "/../etc/passwd",
            "/a/../../x",
            "/%2e%2e/x",
            "/a/%2E%2E/%2e%2e/x",
            "/./x",
        ] {
            assert_eq!(rel(climbing), None, "{climbing}");
        }
        for broken in ["/%", "/%2", "/%zz", "/%+f", "/a%00b", "/%ff"] {
            assert_eq!(rel(broken), None, "{broken}");
        }
    }

    /// Only regular files inside the folder are served: not through a link out of it, and not a
    /// FIFO (reading one would block a thread until a writer came).
    #[tokio::test]
    async fn links_out_and_fifos_are_not_served() {
        let dir = std::env::temp_dir().join(format!("pitaya-http-{}", std::process::id()));
        // Left by an earlier run with the same pid, its links would stop this one's.
        let _ = std::fs::remove_dir_all(&dir);
        let root = dir.join("web");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("index.html"), "top").unwrap();
        std::fs::write(root.join("sub/index.html"), "sub").unwrap();
        std::fs::write(dir.join("secret.txt"), "secret").unwrap();
        std::os::unix::fs::symlink(dir.join("secret.txt"), root.join("out.txt")).unwrap();
        std::os::unix::fs::symlink(&dir, root.join("up")).unwrap();
        std::os::unix::fs::symlink(root.join("index.html"), root.join("in.html")).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(root.join("fifo"))
            .status()
            .unwrap();
        assert!(made.success());
        let served = |path: &'static str| {
            let root = root.clone();
            async move {
                servable(&root, path)
                    .await
                    .map(|f| std::fs::read_to_string(f).unwrap())
            }
        };
        assert_eq!(served("/").await.as_deref(), Some("top"));
        assert_eq!(served("/sub").await.as_deref(), Some("sub"));
        assert_eq!(served("/sub/").await.as_deref(), Some("sub"));
        assert_eq!(served("/in.html").await.as_deref(), Some("top"));
        assert_eq!(served("/index.html/").await, None);
        assert_eq!(served("/out.txt").await, None);
        assert_eq!(served("/up/secret.txt").await, None);
        assert_eq!(served("/fifo").await, None);
        assert_eq!(served("/missing").await, None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
