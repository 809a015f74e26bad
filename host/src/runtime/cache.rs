//! The compiled-component cache: machine code that Cranelift made for a component, kept on disk
//! so that starting the host again (or reloading an unchanged file) skips compilation.
//!
//! An entry's name is a SHA-256 over the engine's compatibility hash and the component's bytes,
//! so a new build of the component, another wasmtime or other engine settings never meet an old
//! entry. The entry holds a checksum of its contents: a torn write, a bit flip or anything else
//! that is not what this host wrote is recompiled and written again, never loaded.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// What every entry starts with; the digit is the layout's version.
const MAGIC: &[u8] = b"pitaya-host compiled component 1\n";
/// The checksum that follows the magic.
const CHECKSUM_LEN: usize = 32;
/// An entry unused for this long is deleted when a new one is written: every rebuild of a
/// component makes a new entry, and nothing else would ever remove the old ones.
const UNUSED_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// A temporary file this old was left by a host that died while writing.
const ABANDONED_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Where compiled components are kept, for one engine configuration.
#[derive(Debug)]
pub(crate) struct CompileCache {
    dir: PathBuf,
    /// The engine's compatibility hash, digested: part of every entry's name.
    engine: [u8; 32],
}

/// How a component came to be compiled, for the log.
enum Source {
    Cache,
    /// Compiled now; `cached` if its entry was written for the next start.
    Compiled {
        cached: bool,
    },
}

/// Feeds everything `Hash` writes into SHA-256, so the engine's compatibility hash becomes a
/// stable name across processes (the std hashers promise no such stability).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        // Only the full digest is used, through `self.0`.
        0
    }
}

impl CompileCache {
    pub(crate) fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self {
            dir,
            engine: hasher.0.finalize().into(),
        }
    }

    /// The entry for a component's bytes.
    fn entry(&self, wasm: &[u8]) -> PathBuf {
        let mut key = Sha256::new();
        key.update(MAGIC);
        key.update(self.engine);
        key.update(wasm);
        let name: String = key
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        self.dir.join(format!("{name}.cwasm"))
    }

    /// The component compiled from `wasm`: from its entry when there is a good one, else
    /// compiled now and written to the cache for next time. `path` is for the log.
    pub(crate) fn component(
        &self,
        engine: &Engine,
        wasm: &[u8],
        path: &Path,
    ) -> wasmtime::Result<Component> {
        let started = Instant::now();
        let entry = self.entry(wasm);
        let (component, source) = match self.read(engine, &entry) {
            Some(component) => {
                // An entry's age is the time since it was last used, for `prune`.
                let _ = std::fs::File::options()
                    .write(true)
                    .open(&entry)
                    .and_then(|file| file.set_modified(SystemTime::now()));
                (component, Source::Cache)
            }
            None => {
                let component = Component::new(engine, wasm)?;
                let cached = self.write(&component, &entry);
                (component, Source::Compiled { cached })
            }
        };
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match source {
            Source::Cache => tracing::info!(
                path = %path.display(),
                entry = %entry.display(),
                ms = format_args!("{ms:.1}"),
                "component loaded from cache"
            ),
            Source::Compiled { cached: true } => tracing::info!(
                path = %path.display(),
                entry = %entry.display(),
                ms = format_args!("{ms:.1}"),
                "component compiled and cached"
            ),
            Source::Compiled { cached: false } => tracing::info!(
                path = %path.display(),
                ms = format_args!("{ms:.1}"),
                "component compiled (not cached)"
            ),
        }
        Ok(component)
    }

    /// A good entry's component; `None` (logged, unless there is simply no entry yet) when it
    /// must be compiled.
    fn read(&self, engine: &Engine, entry: &Path) -> Option<Component> {
        let bytes = match std::fs::read(entry) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
            Err(error) => {
                tracing::warn!(entry = %entry.display(), %error, "cannot read the cache entry; compiling");
                return None;
            }
        };
        let Some(code) = checked(&bytes) else {
            tracing::warn!(entry = %entry.display(), "cache entry corrupt; compiling again");
            return None;
        };
        // SAFETY: `deserialize` trusts its bytes to be what `Component::serialize` produced for
        // an engine like this one. The checksum shows they are the bytes this host wrote, which
        // came from `serialize`; the name includes the engine's compatibility hash; and wasmtime
        // checks its own header (version, target, settings) and fails cleanly on a mismatch.
        // Whoever can write the cache directory could as well replace the host or its
        // components, so a forged entry gains them nothing.
        match unsafe { Component::deserialize(engine, code) } {
            Ok(component) => Some(component),
            Err(error) => {
                tracing::warn!(entry = %entry.display(), error = %format_args!("{error:#}"), "cache entry unusable; compiling again");
                None
            }
        }
    }

    /// Writes `component` to its entry, atomically (a reader sees the old entry, none, or the
    /// whole new one); false, said in a warning, if it could not. A cache that cannot be written
    /// costs the next start a compilation, nothing more.
    fn write(&self, component: &Component, entry: &Path) -> bool {
        let outcome = component
            .serialize()
            .map_err(|error| format!("{error:#}"))
            .and_then(|code| write_entry(&self.dir, entry, &code).map_err(|e| e.to_string()));
        match outcome {
            Ok(()) => {
                prune(&self.dir, SystemTime::now());
                true
            }
            Err(error) => {
                tracing::warn!(dir = %self.dir.display(), %error, "cannot write the compiled-component cache");
                false
            }
        }
    }
}

/// Deletes this cache's entries unused for [`UNUSED_FOR`] and its abandoned temporary files.
/// Only names this module makes are touched (`<64 hex digits>.cwasm` and
/// `<64 hex digits>.tmp.<pid>.<n>`), so a directory shared with other files loses none of them.
fn prune(dir: &Path, now: SystemTime) {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return;
    };
    for item in listing.flatten() {
        let name = item.file_name();
        let Some((key, rest)) = name.to_str().and_then(|name| name.split_once('.')) else {
            continue;
        };
        if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let limit = if rest == "cwasm" {
            UNUSED_FOR
        } else if rest.starts_with("tmp.") {
            ABANDONED_AFTER
        } else {
            continue;
        };
        let age = item
            .metadata()
            .and_then(|meta| meta.modified())
            .ok()
            .and_then(|modified| now.duration_since(modified).ok());
        if age.is_some_and(|age| age > limit) {
            let path = item.path();
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!(entry = %path.display(), "removed an unused cache entry"),
                Err(error) => {
                    tracing::debug!(entry = %path.display(), %error, "cannot remove an unused cache entry")
                }
            }
        }
    }
}

/// The code of an entry whose magic and checksum are right.
fn checked(bytes: &[u8]) -> Option<&[u8]> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let (checksum, code) = rest.split_at_checked(CHECKSUM_LEN)?;
    (Sha256::digest(code).as_slice() == checksum).then_some(code)
}

fn write_entry(dir: &Path, entry: &Path, code: &[u8]) -> std::io::Result<()> {
    // Processes sharing the directory each write their own temporary file.
    static WRITES: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(dir)?;
    let temporary = entry.with_extension(format!(
        "tmp.{}.{}",
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(MAGIC)?;
        file.write_all(&Sha256::digest(code))?;
        file.write_all(code)?;
        file.sync_all()?;
        std::fs::rename(&temporary, entry)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// The default cache directory: `$XDG_CACHE_HOME/pitaya-host`, else `$HOME/.cache/pitaya-host`;
/// none when neither variable is set (or they are not absolute, as the XDG rules require).
pub fn default_dir() -> Option<PathBuf> {
    let absolute = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    absolute("XDG_CACHE_HOME")
        .or_else(|| absolute("HOME").map(|home| home.join(".cache")))
        .map(|base| base.join("pitaya-host"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_reads_back_only_when_whole_and_unchanged() {
        let code = b"some machine code".to_vec();
        let mut entry = MAGIC.to_vec();
        entry.extend_from_slice(&Sha256::digest(&code));
        entry.extend_from_slice(&code);
        assert_eq!(checked(&entry), Some(&code[..]));

        let mut flipped = entry.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(checked(&flipped), None);
        assert_eq!(checked(&entry[..entry.len() - 1]), None);
        assert_eq!(checked(&entry[..MAGIC.len() + 3]), None);
        assert_eq!(checked(b""), None);
        assert_eq!(checked(&entry[1..]), None);
    }

    /// The smallest valid component: the preamble and no sections.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";

    /// A fresh directory under the system temp dir, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            Self(
                std::env::temp_dir()
                    .join(format!("pitaya-cache-{tag}-{}-{nanos}", std::process::id())),
            )
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_compiled_component_is_read_back_from_its_entry() {
        let scratch = Scratch::new("roundtrip");
        let engine = Engine::default();
        let cache = CompileCache::new(scratch.0.clone(), &engine);
        let entry = cache.entry(EMPTY_COMPONENT);
        assert!(cache.read(&engine, &entry).is_none());
        cache
            .component(&engine, EMPTY_COMPONENT, Path::new("empty.wasm"))
            .unwrap();
        assert!(entry.is_file());
        assert!(cache.read(&engine, &entry).is_some());
        // Nothing but the entry is left behind.
        assert_eq!(std::fs::read_dir(&scratch.0).unwrap().count(), 1);
        // Loading an entry makes it recently used, so pruning spares it.
        let long_ago = SystemTime::now() - Duration::from_secs(40 * 24 * 3600);
        let file = std::fs::File::options().write(true).open(&entry).unwrap();
        file.set_modified(long_ago).unwrap();
        cache
            .component(&engine, EMPTY_COMPONENT, Path::new("empty.wasm"))
            .unwrap();
        let used = std::fs::metadata(&entry).unwrap().modified().unwrap();
        assert!(used > long_ago + Duration::from_secs(24 * 3600));
    }

    #[test]
    fn a_bad_entry_is_compiled_and_written_again() {
        let scratch = Scratch::new("bad");
        let engine = Engine::default();
        let cache = CompileCache::new(scratch.0.clone(), &engine);
        let entry = cache.entry(EMPTY_COMPONENT);
        std::fs::create_dir_all(&scratch.0).unwrap();
        // Whole and checksummed, but not wasmtime's: as an entry from some other program.
        let code = b"not machine code".to_vec();
        let mut forged = MAGIC.to_vec();
        forged.extend_from_slice(&Sha256::digest(&code));
        forged.extend_from_slice(&code);
        for bad in [forged, b"garbage".to_vec(), Vec::new()] {
            std::fs::write(&entry, &bad).unwrap();
            assert!(cache.read(&engine, &entry).is_none());
            cache
                .component(&engine, EMPTY_COMPONENT, Path::new("empty.wasm"))
                .unwrap();
            assert!(cache.read(&engine, &entry).is_some());
        }
    }

    #[test]
    fn writing_an_entry_removes_only_this_caches_long_unused_files() {
        let scratch = Scratch::new("prune");
        std::fs::create_dir_all(&scratch.0).unwrap();
        let key = "ab".repeat(32);
        let age = |days: u64| SystemTime::now() - Duration::from_secs(days * 24 * 3600);
        let files = [
            (format!("{key}.cwasm"), 40, false),
            (format!("{}.cwasm", "cd".repeat(32)), 10, true),
            (format!("{key}.tmp.1.0"), 2, false),
            (format!("{}.tmp.1.0", "cd".repeat(32)), 0, true),
            ("notes.cwasm".to_owned(), 400, true),
            (format!("{key}.txt"), 400, true),
            ("other".to_owned(), 400, true),
        ];
        for (name, days, _) in &files {
            let file = std::fs::File::create(scratch.0.join(name)).unwrap();
            file.set_modified(age(*days)).unwrap();
        }
        let engine = Engine::default();
        let cache = CompileCache::new(scratch.0.clone(), &engine);
        cache
            .component(&engine, EMPTY_COMPONENT, Path::new("empty.wasm"))
            .unwrap();
        for (name, days, kept) in &files {
            assert_eq!(
                scratch.0.join(name).exists(),
                *kept,
                "{name}, {days} days old"
            );
        }
        assert!(cache.entry(EMPTY_COMPONENT).is_file());
    }

    #[test]
    fn an_unwritable_cache_still_compiles() {
        let scratch = Scratch::new("unwritable");
        std::fs::write(&scratch.0, b"a file where the directory should be").unwrap();
        let engine = Engine::default();
        let cache = CompileCache::new(scratch.0.join("cache"), &engine);
        assert!(
            cache
                .component(&engine, EMPTY_COMPONENT, Path::new("empty.wasm"))
                .is_ok()
        );
        let _ = std::fs::remove_file(&scratch.0);
    }

    #[test]
    fn entries_differ_by_engine_and_by_bytes() {
        let plain = Engine::default();
        let mut config = wasmtime::Config::new();
        config.consume_fuel(true);
        let fuel = Engine::new(&config).unwrap();
        let dir = PathBuf::from("/cache");
        let (a, b) = (
            CompileCache::new(dir.clone(), &plain),
            CompileCache::new(dir.clone(), &fuel),
        );
        assert_ne!(a.entry(b"x"), b.entry(b"x"));
        assert_ne!(a.entry(b"x"), a.entry(b"y"));
        assert_eq!(
            a.entry(b"x"),
            CompileCache::new(dir, &Engine::default()).entry(b"x")
        );
    }
}
