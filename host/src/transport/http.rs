//! Plain HTTP on the WebSocket port: a request that is not a WebSocket upgrade is answered with
//! a file from the web folder (`--web DIR`), so one port serves a browser game's page and its
//! connection.

use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt};

use super::upgrade::{Conditions, Page};

/// Answers a plain GET (or HEAD) with a file from `root`, then closes. The request head has
/// been read already (by the WebSocket port's upgrade, which told it apart). The file is sent
/// a piece at a time, so a large one costs no more memory than a small one; a client that
/// stops reading for `stall` is dropped.
///
/// A browser that has the file already gets 304 when it has not changed (`ETag` and
/// `Last-Modified`, with `Cache-Control: no-cache` so that it always asks); a range gets 206
/// and that part only. A precompressed file (`game.wasm.br`, `app.js.gz`, as Unity's WebGL
/// builds ship) goes out with its `Content-Encoding` and the type of what it compresses, to a
/// client that says it inflates that coding (browsers offer `br` over HTTPS only); to others,
/// as the compressed file it is, which Unity's loader can inflate itself.
pub async fn serve_file(
    stream: &mut (impl AsyncWrite + Unpin),
    root: &Path,
    page: &Page,
    stall: Duration,
) -> io::Result<()> {
    let Some((path, mut file, len, modified)) = open_page(root, &page.path).await else {
        return send_short(stream, "404 Not Found", "", NOT_FOUND, stall).await;
    };
    let media = media_type(&path, page.conditions.accept_encoding.as_deref());
    let validators = Validators::new(len, modified, media.coding);
    let mut headers = validators.header_lines();
    if media.varies {
        headers.push_str("Vary: Accept-Encoding\r\n");
    }
    let (status, start, count) = match answer(&page.conditions, &validators, len, page.head_only) {
        Answer::NotModified => {
            let answer = format!("HTTP/1.1 304 Not Modified\r\n{headers}{CLOSING}\r\n");
            within(stall, stream.write_all(answer.as_bytes())).await?;
            return within(stall, stream.shutdown()).await;
        }
        Answer::Unsatisfiable => {
            let range = format!("Content-Range: bytes */{len}\r\n");
            return send_short(
                stream,
                "416 Range Not Satisfiable",
                &range,
                UNSATISFIABLE,
                stall,
            )
            .await;
        }
        Answer::Whole => ("200 OK", 0, len),
        Answer::Part { start, end } => {
            headers.push_str(&format!("Content-Range: bytes {start}-{end}/{len}\r\n"));
            ("206 Partial Content", start, end - start + 1)
        }
    };
    if let Some(coding) = media.coding {
        headers.push_str(&format!("Content-Encoding: {coding}\r\n"));
    }
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {}\r\nContent-Length: {count}\r\n\
         Accept-Ranges: bytes\r\n{headers}{CLOSING}\r\n",
        media.media_type
    );
    within(stall, stream.write_all(answer.as_bytes())).await?;
    // HEAD: the length of what a GET would get, and no body.
    if !page.head_only {
        if start > 0 {
            file.seek(io::SeekFrom::Start(start)).await?;
        }
        // No more than the length announced, should the file grow meanwhile.
        let mut file = file.take(count);
        let mut piece = vec![0; PIECE.min(usize::try_from(count).unwrap_or(PIECE))];
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

/// The body of a 416.
const UNSATISFIABLE: &[u8] = b"range not satisfiable\n";

/// The last header lines of every answer: the client asks again each time (and gets 304 while
/// the file is unchanged), and the connection closes after the answer.
const CLOSING: &str = "Cache-Control: no-cache\r\nConnection: close\r\n";

/// Writes an answer with a short text body, then closes.
async fn send_short(
    stream: &mut (impl AsyncWrite + Unpin),
    status: &str,
    headers: &str,
    body: &[u8],
    stall: Duration,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         {headers}{CLOSING}\r\n",
        body.len()
    );
    within(stall, stream.write_all(&[head.as_bytes(), body].concat())).await?;
    within(stall, stream.shutdown()).await
}

/// What identifies the version of a file a client may hold already (RFC 9110 §8.8).
#[derive(Debug)]
struct Validators {
    /// A strong entity tag made of the length and the modification time, as nginx makes its
    /// own: a file rewritten changes one or the other. A file sent with a content coding is
    /// another representation than the same bytes sent as they are, so its tag names the coding
    /// (§8.8.3).
    etag: String,
    /// The modification time, to the second, as an HTTP date; none when the file system keeps
    /// none.
    last_modified: Option<(SystemTime, String)>,
}

impl Validators {
    fn new(len: u64, modified: Option<SystemTime>, coding: Option<&str>) -> Self {
        let since_epoch = modified.and_then(|m| m.duration_since(UNIX_EPOCH).ok());
        let version = match since_epoch {
            Some(t) => format!("{len:x}-{:x}.{:x}", t.as_secs(), t.subsec_nanos()),
            None => format!("{len:x}"),
        };
        let etag = match coding {
            Some(coding) => format!("\"{version}-{coding}\""),
            None => format!("\"{version}\""),
        };
        let last_modified = since_epoch.map(|t| {
            let second = UNIX_EPOCH + Duration::from_secs(t.as_secs());
            (second, httpdate::fmt_http_date(second))
        });
        Self {
            etag,
            last_modified,
        }
    }

    fn header_lines(&self) -> String {
        let mut lines = format!("ETag: {}\r\n", self.etag);
        if let Some((_, date)) = &self.last_modified {
            lines.push_str(&format!("Last-Modified: {date}\r\n"));
        }
        lines
    }

    /// Whether an `If-None-Match` list names this version (weak comparison, §13.1.2).
    fn none_match_hits(&self, tags: &str) -> bool {
        let ours = opaque(&self.etag);
        tags.split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || opaque(tag) == ours)
    }

    /// Whether an `If-Range` validator is this version (strong comparison, §13.1.5): an
    /// entity tag that is ours and not weak, or exactly our `Last-Modified` date.
    fn if_range_holds(&self, validator: &str) -> bool {
        let validator = validator.trim();
        if validator.starts_with('"') || validator.starts_with("W/") {
            return validator == self.etag;
        }
        matches!(&self.last_modified, Some((_, date)) if date == validator)
    }
}

/// An entity tag without its weakness mark.
fn opaque(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

/// What a GET or HEAD of a file gets, given what it asked and the file as it is.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// 200: the whole file.
    Whole,
    /// 304: the client's copy is this version.
    NotModified,
    /// 206: bytes `start..=end` of the file.
    Part { start: u64, end: u64 },
    /// 416: no byte of the range is in the file.
    Unsatisfiable,
}

/// RFC 9110's order (§13.2.2) for a GET or HEAD: `If-None-Match`, else `If-Modified-Since`,
/// then `Range` (a GET's only, §14.2) unless `If-Range` names another version. A `Range` the
/// host does not serve (another unit, several ranges, a malformed one) is ignored, as §14.2
/// allows: the whole file.
fn answer(conditions: &Conditions, file: &Validators, len: u64, head_only: bool) -> Answer {
    if let Some(tags) = &conditions.if_none_match {
        if file.none_match_hits(tags) {
            return Answer::NotModified;
        }
    } else if let (Some(since), Some((modified, _))) =
        (&conditions.if_modified_since, &file.last_modified)
        && let Ok(since) = httpdate::parse_http_date(since.trim())
        && *modified <= since
    {
        return Answer::NotModified;
    }
    let Some(range) = conditions.range.as_deref().filter(|_| !head_only) else {
        return Answer::Whole;
    };
    if let Some(validator) = &conditions.if_range
        && !file.if_range_holds(validator)
    {
        return Answer::Whole;
    }
    byte_range(range, len).unwrap_or(Answer::Whole)
}

/// A `Range` of one byte range (§14.1.2): `bytes=A-B`, `bytes=A-` or `bytes=-N` (the last N).
/// None for what is not one: another unit, several ranges, or a malformed one.
fn byte_range(range: &str, len: u64) -> Option<Answer> {
    let (unit, spec) = range.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return None;
    }
    let (first, last) = spec.trim().split_once('-')?;
    let number = |digits: &str| {
        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse::<u64>().ok())
            .flatten()
    };
    let (start, end) = match (first.trim(), last.trim()) {
        ("", suffix) => {
            let suffix = number(suffix)?;
            if suffix == 0 || len == 0 {
                return Some(Answer::Unsatisfiable);
            }
            (len.saturating_sub(suffix), len - 1)
        }
        (first, "") => (number(first)?, u64::MAX),
        (first, last) => {
            let (first, last) = (number(first)?, number(last)?);
            if last < first {
                return None;
            }
            (first, last)
        }
    };
    if start >= len {
        return Some(Answer::Unsatisfiable);
    }
    Some(Answer::Part {
        start,
        end: end.min(len - 1),
    })
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
async fn open_page(
    root: &Path,
    path: &str,
) -> Option<(PathBuf, tokio::fs::File, u64, Option<SystemTime>)> {
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
    let (opened, len, modified) = open_regular(file.clone()).await?;
    Some((file, opened, len, modified))
}

/// Opens `path` if it is a regular file, with its length. Checked on the file opened, not by
/// name: the name may have been swapped since it was looked at for a FIFO, whose plain open
/// would block its thread until a writer came, so the open does not wait (`O_NONBLOCK`, which
/// changes nothing for a regular file's reads).
async fn open_regular(path: PathBuf) -> Option<(tokio::fs::File, u64, Option<SystemTime>)> {
    let (file, len, modified) = tokio::task::spawn_blocking(move || open_regular_now(&path))
        .await
        .ok()??;
    Some((tokio::fs::File::from_std(file), len, modified))
}

/// `open_regular`'s work, on the calling thread.
fn open_regular_now(path: &Path) -> Option<(std::fs::File, u64, Option<SystemTime>)> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let metadata = file.metadata().ok()?;
    let modified = metadata.modified().ok();
    metadata
        .is_file()
        .then_some((file, metadata.len(), modified))
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

/// How a file goes out: its media type, and its content coding when it is sent as a
/// precompressed copy of a file of another type.
#[derive(Debug, PartialEq, Eq)]
struct Media {
    media_type: &'static str,
    coding: Option<&'static str>,
    /// Whether the answer depends on the client's `Accept-Encoding` (`Vary`, for caches).
    varies: bool,
}

/// How `file` goes out to a client that accepts the codings `accepted`: a precompressed copy of
/// a file of a known type (`game.wasm.br`) as that type with its coding (`application/wasm`,
/// `br`), which the browser inflates, when the client accepts the coding; else, like a
/// compressed file of no known inner type (`saves.tar.gz`), as the file it is.
fn media_type(file: &Path, accepted: Option<&str>) -> Media {
    let extension = |path: &Path| {
        path.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
    };
    let plain = |media_type| Media {
        media_type,
        coding: None,
        varies: false,
    };
    let (coding, alone) = match extension(file).as_deref() {
        Some("gz") => ("gzip", "application/gzip"),
        Some("br") => ("br", "application/octet-stream"),
        Some(other) => return plain(known_type(other).unwrap_or("application/octet-stream")),
        None => return plain("application/octet-stream"),
    };
    let inner = file
        .file_stem()
        .and_then(|stem| extension(Path::new(stem)))
        .and_then(|e| known_type(&e));
    match inner {
        Some(inner) if accepted.is_some_and(|list| accepts(list, coding)) => Media {
            media_type: inner,
            coding: Some(coding),
            varies: true,
        },
        Some(_) => Media {
            varies: true,
            ..plain(alone)
        },
        None => plain(alone),
    }
}

/// Whether an `Accept-Encoding` list (RFC 9110 §12.5.3) accepts `coding`: named, or `*`, with
/// a weight other than 0; the coding's own entry wins over `*`.
fn accepts(list: &str, coding: &str) -> bool {
    let mut any = false;
    for item in list.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or_default().trim();
        let refused = parts.any(|parameter| {
            parameter.split_once('=').is_some_and(|(key, weight)| {
                key.trim().eq_ignore_ascii_case("q")
                    && weight.trim().parse::<f64>().is_ok_and(|q| q == 0.0)
            })
        });
        if name.eq_ignore_ascii_case(coding)
            || (coding == "gzip" && name.eq_ignore_ascii_case("x-gzip"))
        {
            return !refused;
        }
        if name == "*" {
            any = !refused;
        }
    }
    any
}

/// The media types of what a browser game's folder holds, by extension (lower case).
fn known_type(extension: &str) -> Option<&'static str> {
    Some(match extension {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "xml" => "application/xml",
        "wasm" => "application/wasm",
        // Unity's WebGL data file, and other packed assets.
        "data" | "bin" | "unityweb" => "application/octet-stream",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "ktx2" => "image/ktx2",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "wav" => "audio/wav",
        "m4a" => "audio/mp4",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "glb" => "model/gltf-binary",
        "gltf" => "model/gltf+json",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conditions(
        if_none_match: Option<&str>,
        if_modified_since: Option<&str>,
        range: Option<&str>,
        if_range: Option<&str>,
    ) -> Conditions {
        Conditions {
            if_none_match: if_none_match.map(Into::into),
            if_modified_since: if_modified_since.map(Into::into),
            range: range.map(Into::into),
            if_range: if_range.map(Into::into),
            accept_encoding: None,
        }
    }

    #[test]
    fn byte_ranges_are_read_as_rfc_9110_writes_them() {
        let part = |start, end| Some(Answer::Part { start, end });
        assert_eq!(byte_range("bytes=0-9", 100), part(0, 9));
        assert_eq!(byte_range("bytes=90-", 100), part(90, 99));
        assert_eq!(byte_range("bytes=90-1000", 100), part(90, 99));
        assert_eq!(byte_range("bytes=-10", 100), part(90, 99));
        assert_eq!(byte_range("bytes=-1000", 100), part(0, 99));
        assert_eq!(byte_range("Bytes = 5-5", 100), part(5, 5));
        assert_eq!(byte_range("bytes=99-99", 100), part(99, 99));
        for unsatisfiable in ["bytes=100-", "bytes=100-200", "bytes=-0"] {
            assert_eq!(
                byte_range(unsatisfiable, 100),
                Some(Answer::Unsatisfiable),
                "{unsatisfiable}"
            );
        }
        // An empty file has no byte to give.
        assert_eq!(byte_range("bytes=0-", 0), Some(Answer::Unsatisfiable));
        assert_eq!(byte_range("bytes=-5", 0), Some(Answer::Unsatisfiable));
        for ignored in [
            "items=0-9",
            "bytes=0-9,20-29",
            "bytes=9-0",
            "bytes=-",
            "bytes=a-9",
            "bytes=+1-9",
            "bytes=0x1-9",
            "bytes 0-9",
            "bytes=99999999999999999999999-",
            "",
        ] {
            assert_eq!(byte_range(ignored, 100), None, "{ignored}");
        }
    }

    #[test]
    fn validators_answer_304_and_if_range_guards_the_range() {
        let modified = UNIX_EPOCH + Duration::new(1_795_000_000, 123_456_789);
        let file = Validators::new(100, Some(modified), None);
        assert_eq!(file.etag, "\"64-6afd86c0.75bcd15\"");
        // The same bytes sent with a content coding are another representation.
        let coded = Validators::new(100, Some(modified), Some("br"));
        assert_eq!(coded.etag, "\"64-6afd86c0.75bcd15-br\"");
        let date = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(1_795_000_000));
        assert_eq!(file.last_modified.as_ref().map(|(_, d)| d), Some(&date));
        let answer = |c: Conditions| answer(&c, &file, 100, false);
        let etag = file.etag.clone();
        // If-None-Match: weak comparison, any tag of the list, or `*`.
        for tags in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"other\", {etag}"),
            "*".into(),
        ] {
            assert_eq!(
                answer(conditions(Some(&tags), None, None, None)),
                Answer::NotModified,
                "{tags}"
            );
        }
        assert_eq!(
            answer(conditions(Some("\"other\""), None, None, None)),
            Answer::Whole
        );
        // If-Modified-Since: not modified since the date; ignored beside If-None-Match, or when
        // it is no date.
        assert_eq!(
            answer(conditions(None, Some(&date), None, None)),
            Answer::NotModified
        );
        let earlier = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(1_794_999_999));
        assert_eq!(
            answer(conditions(None, Some(&earlier), None, None)),
            Answer::Whole
        );
        assert_eq!(
            answer(conditions(Some("\"other\""), Some(&date), None, None)),
            Answer::Whole
        );
        assert_eq!(
            answer(conditions(None, Some("yesterday"), None, None)),
            Answer::Whole
        );
        // Range, guarded by If-Range: a strong match of the tag, or the date exactly.
        let part = Answer::Part { start: 0, end: 9 };
        let range = Some("bytes=0-9");
        assert_eq!(answer(conditions(None, None, range, None)), part);
        assert_eq!(answer(conditions(None, None, range, Some(&etag))), part);
        assert_eq!(answer(conditions(None, None, range, Some(&date))), part);
        for stale in [format!("W/{etag}"), "\"other\"".into(), earlier.clone()] {
            assert_eq!(
                answer(conditions(None, None, range, Some(&stale))),
                Answer::Whole,
                "{stale}"
            );
        }
        // 304 comes before the range; HEAD has no range.
        assert_eq!(
            answer(conditions(Some(&etag), None, range, None)),
            Answer::NotModified
        );
        assert_eq!(
            super::answer(&conditions(None, None, range, None), &file, 100, true),
            Answer::Whole
        );
        // A file system that keeps no times: a tag of the length alone, and no date.
        let timeless = Validators::new(100, None, None);
        assert_eq!(timeless.etag, "\"64\"");
        assert!(timeless.last_modified.is_none());
        assert_eq!(
            super::answer(
                &conditions(None, Some(&date), None, None),
                &timeless,
                100,
                false
            ),
            Answer::Whole
        );
    }

    #[test]
    fn precompressed_files_keep_the_type_of_what_they_compress() {
        let coded = |media_type, coding| Media {
            media_type,
            coding: Some(coding),
            varies: true,
        };
        let plain = |media_type, varies| Media {
            media_type,
            coding: None,
            varies,
        };
        let media = |name: &str| media_type(Path::new(name), Some("gzip, deflate, br, zstd"));
        assert_eq!(media("Build/game.wasm.br"), coded("application/wasm", "br"));
        assert_eq!(
            media("Build/game.framework.js.gz"),
            coded("text/javascript; charset=utf-8", "gzip")
        );
        assert_eq!(
            media("Build/game.data.br"),
            coded("application/octet-stream", "br")
        );
        assert_eq!(
            media("Build/GAME.WASM.GZ"),
            coded("application/wasm", "gzip")
        );
        assert_eq!(media("saves.tar.gz"), plain("application/gzip", false));
        assert_eq!(media("x.br"), plain("application/octet-stream", false));
        assert_eq!(
            media("index.html"),
            plain("text/html; charset=utf-8", false)
        );
        assert_eq!(media("Logo.PNG"), plain("image/png", false));
        assert_eq!(media("README"), plain("application/octet-stream", false));
        // A client that does not inflate the coding gets the compressed file as it is.
        let wasm = Path::new("game.wasm.br");
        for accepted in [None, Some("gzip, deflate"), Some("br;q=0, *"), Some("")] {
            assert_eq!(
                media_type(wasm, accepted),
                plain("application/octet-stream", true),
                "{accepted:?}"
            );
        }
        let gzipped = Path::new("app.js.gz");
        for accepted in ["x-gzip", "*", "br, GZIP;q=0.5", "br;q=0, *;q=0.1"] {
            assert_eq!(
                media_type(gzipped, Some(accepted)),
                coded("text/javascript; charset=utf-8", "gzip"),
                "{accepted}"
            );
        }
        assert_eq!(
            media_type(gzipped, Some("gzip;q=0, *")),
            plain("application/gzip", true)
        );
    }

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
                let (_, mut file, _, _) = open_page(&root, path).await?;
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
