//! Plain HTTP on the WebSocket port: a request that is not a WebSocket upgrade is answered with
//! a file from the web folder (`--web DIR`), so one port serves a browser game's page and its
//! connection.

use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::upgrade::Page;

/// Answers a plain GET (or HEAD) with a file from `root`, then closes. The request head has
/// been read already (by the WebSocket port's upgrade, which told it apart). The file is sent
/// a piece at a time, so a large one costs no more memory than a small one; a client that
/// stops reading for `stall` is dropped.
pub async fn serve_file(
    stream: &mut (impl AsyncWrite + Unpin),
    root: &Path,
    page: &Page,
    stall: Duration,
) -> io::Result<()> {
    let Some((path, file, len)) = open_page(root, &page.path).await else {
        let answer = head("404 Not Found", "text/plain", NOT_FOUND.len() as u64);
        within(
            stall,
            stream.write_all(&[answer.as_bytes(), NOT_FOUND].concat()),
        )
        .await?;
        return within(stall, stream.shutdown()).await;
    };
    within(
        stall,
        stream.write_all(head("200 OK", content_type(&path), len).as_bytes()),
    )
    .await?;
    // HEAD: the length of what a GET would get, and no body.
    if !page.head_only {
        // No more than the length announced, should the file grow meanwhile.
        let mut file = file.take(len);
        let mut piece = vec![0; PIECE];
        loop {
            let n = file.read(&mut piece).await?;
            if n == 0 {
                break;
            }
            within(stall, stream.write_all(&piece[..n])).await?;
        }
    }
    within(stall, stream.shutdown()).await
}

/// Bytes of a file read and written at a time.
const PIECE: usize = 64 * 1024;

/// The body of a 404.
const NOT_FOUND: &[u8] = b"not found\n";

/// The head of an answer whose body is `len` bytes; the connection closes after it.
fn head(status: &str, content_type: &str, len: u64) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n\
         Cache-Control: no-cache\r\nConnection: close\r\n\r\n"
    )
}

/// `io` unless it stalls for `limit`.
async fn within<T>(limit: Duration, io: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(limit, io)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading"))?
}

/// The file a request path names, opened, with its path and length, if it may be served: a
/// regular file inside `root` once the path is decoded and symbolic links are followed (a
/// folder means its `index.html`). Not a link out of the folder, nor a hidden file, by the
/// name asked for or the one a link leads to, nor a FIFO or a device, whose open could block a
/// thread for good.
async fn open_page(root: &Path, path: &str) -> Option<(PathBuf, tokio::fs::File, u64)> {
    let (relative, folder) = relative_path(path)?;
    let root = tokio::fs::canonicalize(root).await.ok()?;
    let mut file = tokio::fs::canonicalize(root.join(relative)).await.ok()?;
    if folder || tokio::fs::metadata(&file).await.ok()?.is_dir() {
        file = tokio::fs::canonicalize(file.join("index.html"))
            .await
            .ok()?;
    }
    let inside = file.strip_prefix(&root).ok()?;
    if inside.components().any(unservable) {
        return None;
    }
    let (opened, len) = open_regular(file.clone()).await?;
    Some((file, opened, len))
}

/// Opens `path` if it is a regular file, with its length. Checked on the file opened, not by
/// name: the name may have been swapped since it was looked at for a FIFO, whose plain open
/// would block its thread until a writer came, so the open does not wait (`O_NONBLOCK`, which
/// changes nothing for a regular file's reads).
async fn open_regular(path: PathBuf) -> Option<(tokio::fs::File, u64)> {
    let (file, len) = tokio::task::spawn_blocking(move || open_regular_now(&path))
        .await
        .ok()??;
    Some((tokio::fs::File::from_std(file), len))
}

/// `open_regular`'s work, on the calling thread.
fn open_regular_now(path: &Path) -> Option<(std::fs::File, u64)> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let metadata = file.metadata().ok()?;
    metadata.is_file().then_some((file, metadata.len()))
}

/// Whether a path component rules the path out: anything but a plain name (`..`, `.`, a root),
/// or a hidden name (`.git`, `.env`, `.htpasswd`), since a web folder that is also a project
/// folder holds secrets under such names and a page never needs them. The one hidden name
/// served is `.well-known` (RFC 8615), which exists to be.
fn unservable(component: Component<'_>) -> bool {
    match component {
        Component::Normal(name) => {
            let name = name.as_encoded_bytes();
            name.starts_with(b".") && name != b".well-known"
        }
        _ => true,
    }
}

/// The path below the web folder that a request path names, percent-decoded, and whether it
/// names a folder (ends in `/`); none when it would climb out, names a hidden file or does not
/// decode.
fn relative_path(path: &str) -> Option<(PathBuf, bool)> {
    let path = path.split(['?', '#']).next().unwrap_or("/");
    let path = percent_decode(path)?;
    let relative = PathBuf::from(path.trim_start_matches('/'));
    if relative.components().any(unservable) {
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
        for hidden in [
            "/.env",
            "/.git/config",
            "/a/.htpasswd",
            "/%2egit/HEAD",
            "/.well-known/../.env",
        ] {
            assert_eq!(rel(hidden), None, "{hidden}");
        }
        assert_eq!(
            rel("/.well-known/security.txt"),
            Some((".well-known/security.txt".into(), false))
        );
        assert_eq!(rel("/a.b/c..d.js"), Some(("a.b/c..d.js".into(), false)));
        for broken in ["/%", "/%2", "/%zz", "/%+f", "/a%00b", "/%ff"] {
            assert_eq!(rel(broken), None, "{broken}");
        }
    }

    /// Only regular files inside the folder are served: not through a link out of it, not a
    /// FIFO (reading one would block a thread until a writer came), and not a hidden file, even
    /// through a link with a plain name.
    #[tokio::test]
    async fn links_out_fifos_and_hidden_files_are_not_served() {
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
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::write(root.join(".git/config"), "secret").unwrap();
        std::os::unix::fs::symlink(root.join(".git/config"), root.join("config.txt")).unwrap();
        std::os::unix::fs::symlink(root.join(".git"), root.join("git")).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(root.join("fifo"))
            .status()
            .unwrap();
        assert!(made.success());
        let served = |path: &'static str| {
            let root = root.clone();
            async move {
                let (_, mut file, _) = open_page(&root, path).await?;
                let mut text = String::new();
                file.read_to_string(&mut text).await.unwrap();
                Some(text)
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
        assert_eq!(served("/.git/config").await, None);
        assert_eq!(served("/config.txt").await, None);
        assert_eq!(served("/git/config").await, None);
        // Opened by name after the check (swapped in meanwhile), a FIFO is refused rather than
        // waited on. On a thread of its own, so that a regression fails here instead of
        // hanging the test run.
        let fifo = root.join("fifo");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(open_regular_now(&fifo).is_none()));
        let refused = rx.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(refused, Ok(true), "opening a FIFO waited for a writer");
        assert!(open_regular(root.join("index.html")).await.is_some());
        assert_eq!(served("/missing").await, None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
