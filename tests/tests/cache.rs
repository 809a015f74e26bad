//! The compiled-component cache (`--cache-dir`, `--no-cache`): a first start compiles and writes an
//! entry, a second start with the same directory loads it ("component loaded from cache"), a
//! corrupted entry is compiled again, still serves, and is rewritten, `--no-cache` leaves the
//! directory alone, and a cache that cannot be written is said, and not claimed written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use pitaya_tests::checks::ensure_echo;
use pitaya_tests::{Server, ServerOptions, TempDir, Transport};

const LOADED: &str = "component loaded from cache";
const COMPILED: &str = "component compiled and cached";
const NOT_CACHED: &str = "component compiled (not cached)";

/// Starts the host serving echo with the cache in `dir`, checks that echo answers, and returns
/// the server (for its log).
async fn start(dir: &Path, extra: &[&str]) -> Result<Server> {
    let mut options = ServerOptions::default()
        .components(&["echo.wasm"])
        .args("--cache-dir", dir.display())
        .tcp_only();
    for arg in extra {
        options = options.arg(arg);
    }
    let server = Server::start(options).await?;
    let mut c = server.connect_ready(Transport::Tcp).await?;
    let id = c.next_id();
    c.send_request(id, "echo.echo", b"{\"n\":1}").await?;
    ensure_echo(&c.wait_response(id).await?, id, b"{\"n\":1}")?;
    Ok(server)
}

/// The cache's entries.
fn entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        found.push(entry?.path());
    }
    Ok(found)
}

#[tokio::test]
async fn a_second_start_loads_from_the_cache_and_a_bad_entry_is_rewritten() -> Result<()> {
    let scratch = TempDir::new("cache")?;
    let dir = scratch.0.join("compiled");
    let wait = Duration::from_secs(10);

    let first = start(&dir, &[]).await?;
    first.wait_log(COMPILED, wait).await?;
    ensure!(
        first.log_line_containing(LOADED).is_none(),
        "an empty cache had a hit"
    );
    drop(first);
    let written = entries(&dir)?;
    ensure!(
        written.len() == 1 && written[0].extension().is_some_and(|e| e == "cwasm"),
        "expected one .cwasm entry, found {written:?}"
    );
    let entry = written[0].clone();

    let second = start(&dir, &[]).await?;
    second.wait_log(LOADED, wait).await?;
    ensure!(
        second.log_line_containing(COMPILED).is_none(),
        "the second start compiled again"
    );
    drop(second);

    // One flipped bit in the middle of the machine code.
    let mut bytes = std::fs::read(&entry)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&entry, &bytes)?;
    let corrupted = start(&dir, &[]).await?;
    corrupted.wait_log("cache entry corrupt", wait).await?;
    corrupted.wait_log(COMPILED, wait).await?;
    drop(corrupted);

    // Half an entry, as a write cut short would leave.
    let whole = std::fs::read(&entry)?;
    std::fs::write(&entry, &whole[..whole.len() / 2])?;
    let truncated = start(&dir, &[]).await?;
    truncated.wait_log("cache entry corrupt", wait).await?;
    drop(truncated);

    let rewritten = start(&dir, &[]).await?;
    rewritten.wait_log(LOADED, wait).await?;
    drop(rewritten);
    ensure!(
        entries(&dir)? == vec![entry.clone()],
        "stray files in the cache: {:?}",
        entries(&dir)?
    );

    // --no-cache neither reads nor writes.
    let other = scratch.0.join("unused");
    let uncached = start(&other, &["--no-cache"]).await?;
    ensure!(
        uncached.log_line_containing(LOADED).is_none()
            && uncached.log_line_containing(COMPILED).is_none(),
        "--no-cache used a cache\n{}",
        uncached.log_tail(20)
    );
    drop(uncached);
    ensure!(!other.exists(), "--no-cache created {}", other.display());
    Ok(())
}

/// A cache directory that cannot be made (under a regular file): the component is compiled and
/// served, a warning says the cache cannot be written, and the start-up line does not claim an
/// entry was written.
#[tokio::test]
async fn a_cache_that_cannot_be_written_is_said_and_not_claimed() -> Result<()> {
    let scratch = TempDir::new("cache-unwritable")?;
    let file = scratch.0.join("a-file");
    std::fs::write(&file, b"not a directory")?;
    let server = start(&file.join("compiled"), &[]).await?;
    server
        .wait_log(
            "cannot write the compiled-component cache",
            Duration::from_secs(10),
        )
        .await?;
    server.wait_log(NOT_CACHED, Duration::from_secs(10)).await?;
    ensure!(
        server.log_line_containing(COMPILED).is_none(),
        "the log claims an entry was written\n{}",
        server.log_tail(20)
    );
    Ok(())
}
