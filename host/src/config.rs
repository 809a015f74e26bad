//! The TOML configuration file: every setting the `serve` flags have, plus per-component
//! settings (path, `init` configuration, limits, grants). Flags given on the command line win
//! over the file; the file wins over the built-in defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key, or a value of the wrong type.
    #[error("{path}:{line}: {key}{message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line of the offending key or value (1-based).
        line: usize,
        /// `key: ` when the key is known, else empty.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The whole file. Keys are the long flag names (`call-timeout-ms`, `server-type`, ...).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// `--tcp`.
    pub tcp: Option<SocketAddr>,
    /// `--ws`.
    pub ws: Option<SocketAddr>,
    /// `--web`, relative to the file's folder.
    pub web: Option<PathBuf>,
    /// `--metrics`.
    pub metrics: Option<SocketAddr>,
    /// `--tls-cert`, relative to the file's folder.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`, relative to the file's folder.
    pub tls_key: Option<PathBuf>,
    /// `--heartbeat`.
    pub heartbeat: Option<u64>,
    /// `--server-type`.
    pub server_type: Option<String>,
    /// `--handshake-timeout`.
    pub handshake_timeout: Option<u64>,
    /// `--max-packet`.
    pub max_packet: Option<usize>,
    /// `--max-inflated`.
    pub max_inflated: Option<usize>,
    /// `--send-queue`.
    pub send_queue: Option<usize>,
    /// `--send-queue-bytes`.
    pub send_queue_bytes: Option<usize>,
    /// `--max-response`.
    pub max_response: Option<usize>,
    /// `--call-timeout-ms`.
    pub call_timeout_ms: Option<u64>,
    /// `--max-memory-mib`.
    pub max_memory_mib: Option<usize>,
    /// `--fuel`.
    pub fuel: Option<u64>,
    /// `--timer-fires`.
    #[serde(default, deserialize_with = "timer_fires")]
    pub timer_fires: Option<u32>,
    /// `--serializer`: `json` or `protobuf`.
    #[serde(default, deserialize_with = "serializer_name")]
    pub serializer: Option<String>,
    /// `--compress`.
    pub compress: Option<bool>,
    /// `--compress-handshake`.
    pub compress_handshake: Option<bool>,
    /// `--push-route-codes`.
    pub push_route_codes: Option<bool>,
    /// `--push-route`, as a list.
    pub push_routes: Option<Vec<String>>,
    /// `--kick-reasons`.
    pub kick_reasons: Option<bool>,
    /// `--duplicate-login`.
    pub duplicate_login: Option<DuplicateLogin>,
    /// `--rate-limit`.
    pub rate_limit: Option<u32>,
    /// `--max-connections`.
    pub max_connections: Option<usize>,
    /// `--watch`.
    pub watch: Option<bool>,
    /// `--shutdown-timeout`.
    pub shutdown_timeout: Option<u64>,
    /// `--cluster`.
    pub cluster: Option<bool>,
    /// `--frontend`.
    pub frontend: Option<bool>,
    /// `--nats`.
    pub nats: Option<String>,
    /// `--etcd`.
    pub etcd: Option<String>,
    /// `--etcd-prefix`.
    pub etcd_prefix: Option<String>,
    /// `--request-timeout-ms`.
    pub request_timeout_ms: Option<u64>,
    /// `--forward-by`: `random` or `uid`.
    pub forward_by: Option<String>,
    /// `--cache-dir`, relative to the file's folder.
    pub cache_dir: Option<PathBuf>,
    /// `--no-cache`.
    pub no_cache: Option<bool>,
    /// The components to serve, in order (before any given on the command line).
    #[serde(default)]
    pub component: Vec<FileComponent>,
}

/// `--duplicate-login`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DuplicateLogin {
    /// The older session is kicked.
    Kick,
    /// The new binding fails.
    Refuse,
}

/// One `[[component]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileComponent {
    /// The `.wasm` file, relative to the config file's folder.
    pub path: PathBuf,
    /// Bytes for `init`: a string is passed as it is; a table or array is passed as JSON.
    pub config: Option<toml::Value>,
    /// Overrides `call-timeout-ms` for this component.
    pub call_timeout_ms: Option<u64>,
    /// Overrides `max-memory-mib` for this component.
    pub max_memory_mib: Option<usize>,
    /// Overrides `fuel` for this component.
    pub fuel: Option<u64>,
    /// Overrides `timer-fires` for this component.
    #[serde(default, deserialize_with = "timer_fires")]
    pub timer_fires: Option<u32>,
    /// How many instances serve this component (1 when absent), sessions shared out by id.
    #[serde(default, deserialize_with = "instance_count")]
    pub instances: Option<usize>,
    /// Capabilities: `clock`, `stdio`.
    #[serde(default)]
    pub grants: Vec<Grant>,
    /// Environment variables the component sees.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// A capability in `grants`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Grant {
    /// The real clocks.
    Clock,
    /// The host's stdout and stderr.
    Stdio,
}

/// Reads `instances`, refusing a count the host would not start: the message then names the
/// key (a message with backquotes would not, see [`invalid`]).
fn instance_count<'de, D: serde::Deserializer<'de>>(input: D) -> Result<Option<usize>, D::Error> {
    let value = toml::Value::deserialize(input)?;
    let count = value.as_integer().and_then(|n| usize::try_from(n).ok());
    match count {
        Some(count) if (1..=crate::runtime::MAX_INSTANCES).contains(&count) => Ok(Some(count)),
        _ => Err(serde::de::Error::custom(format!(
            "must be a whole number from 1 to {}, got {value}",
            crate::runtime::MAX_INSTANCES
        ))),
    }
}

/// Reads `timer-fires`, refusing a budget the host would not take, with the key named.
fn timer_fires<'de, D: serde::Deserializer<'de>>(input: D) -> Result<Option<u32>, D::Error> {
    let value = toml::Value::deserialize(input)?;
    let max = crate::runtime::MAX_TIMER_FIRES;
    match value.as_integer().and_then(|n| u32::try_from(n).ok()) {
        Some(fires) if (1..=max).contains(&fires) => Ok(Some(fires)),
        _ => Err(serde::de::Error::custom(format!(
            "must be a whole number from 1 to {max}, got {value}"
        ))),
    }
}

/// Reads `serializer`, refusing a name the host does not know, with the key named.
fn serializer_name<'de, D: serde::Deserializer<'de>>(input: D) -> Result<Option<String>, D::Error> {
    let value = toml::Value::deserialize(input)?;
    match value.as_str() {
        Some(name @ ("json" | "protobuf")) => Ok(Some(name.to_owned())),
        _ => Err(serde::de::Error::custom(format!(
            "must be \"json\" or \"protobuf\", got {value}"
        ))),
    }
}

impl FileComponent {
    /// The bytes `init` receives.
    pub fn init_bytes(&self) -> Vec<u8> {
        match &self.config {
            None => Vec::new(),
            Some(toml::Value::String(text)) => text.clone().into_bytes(),
            Some(other) => serde_json::to_vec(other).unwrap_or_default(),
        }
    }
}

impl FileConfig {
    /// Reads and checks a configuration file. Relative paths in it are made relative to the
    /// file's folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_owned(),
            cause,
        })?;
        let mut config = Self::parse(&text).map_err(|error| invalid(path, &text, &error))?;
        let base = path.parent().unwrap_or(Path::new(""));
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        config.web.as_mut().map(rebase);
        config.tls_cert.as_mut().map(rebase);
        config.tls_key.as_mut().map(rebase);
        config.cache_dir.as_mut().map(rebase);
        for component in &mut config.component {
            rebase(&mut component.path);
        }
        Ok(config)
    }

    /// Parses configuration text.
    ///
    /// ```
    /// use pitaya_host::config::FileConfig;
    ///
    /// let config = FileConfig::parse("heartbeat = 10\n[[component]]\npath = \"chat.wasm\"\n").unwrap();
    /// assert_eq!(config.heartbeat, Some(10));
    /// assert_eq!(config.component[0].path.to_str(), Some("chat.wasm"));
    /// assert!(FileConfig::parse("hartbeat = 10").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }
}

/// Turns a TOML error into one line naming the file, the line and (when it can be found) the key.
fn invalid(path: &Path, text: &str, error: &toml::de::Error) -> ConfigError {
    let start = error.span().map_or(0, |span| span.start).min(text.len());
    let line = text[..start].matches('\n').count() + 1;
    let line_text = text.lines().nth(line - 1).unwrap_or("");
    // For a wrong type the span covers the value, so the key is what stands before the `=`;
    // on a table's header line it is the table's name. It is left out where the message names
    // it already (an unknown or duplicate key).
    let key = match line_text.split_once('=') {
        Some((key, _)) => key.trim(),
        None => line_text
            .trim()
            .trim_matches(|c| c == '[' || c == ']')
            .trim(),
    };
    let key = if key.is_empty() || error.message().contains(&format!("`{key}`")) {
        String::new()
    } else {
        format!("{key}: ")
    };
    let mut message = error.message().trim().to_owned();
    if text.trim_start().starts_with('{') {
        // TOML has no top-level braces, so this is most likely a JSON file.
        message.push_str(" (the configuration file is TOML, `key = value` lines, not JSON)");
    }
    ConfigError::Invalid {
        path: path.to_owned(),
        line,
        key,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        let error = FileConfig::parse(text).unwrap_err();
        invalid(Path::new("host.toml"), text, &error).to_string()
    }

    #[test]
    fn a_wrong_value_names_its_key_and_an_unknown_key_once() {
        for (text, key) in [
            ("heartbeat = -1", "heartbeat: "),
            ("tcp = 3250", "tcp: "),
            ("rate-limit = -5", "rate-limit: "),
            ("[component]\npath = \"x.wasm\"", "component: "),
        ] {
            let error = error_of(text);
            assert!(error.starts_with(&format!("host.toml:1: {key}")), "{error}");
        }
        let unknown = error_of("hartbeat = 10");
        assert!(
            unknown.starts_with("host.toml:1: unknown field `hartbeat`"),
            "{unknown}"
        );
    }

    #[test]
    fn a_json_file_is_told_to_be_toml() {
        let error = error_of(r#"{"heartbeat": 10}"#);
        assert!(error.starts_with("host.toml:1: "), "{error}");
        assert!(error.ends_with("not JSON)"), "{error}");
        assert!(!error_of("heartbeat = {").contains("JSON"));
    }

    #[test]
    fn every_key_parses() {
        let config = FileConfig::parse(
            r#"
            tcp = "127.0.0.1:0"
            heartbeat = 5
            duplicate-login = "refuse"
            compress = true
            [[component]]
            path = "chat.wasm"
            config = { rooms = 3 }
            grants = ["clock"]
            env = { MODE = "ranked" }
            instances = 2
            "#,
        )
        .unwrap();
        assert_eq!(config.component[0].instances, Some(2));
        assert_eq!(config.heartbeat, Some(5));
        assert_eq!(config.duplicate_login, Some(DuplicateLogin::Refuse));
        assert_eq!(config.component[0].init_bytes(), br#"{"rooms":3}"#);
        assert_eq!(config.component[0].grants, [Grant::Clock]);
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let message = error_of("heartbeat = 5\nheartbat = 6\n");
        assert!(message.starts_with("host.toml:2: "), "{message}");
        assert!(message.contains("unknown field `heartbat`"), "{message}");
    }

    #[test]
    fn instances_is_optional() {
        let config = FileConfig::parse("[[component]]\npath = \"a.wasm\"\n").unwrap();
        assert_eq!(config.component[0].instances, None);
    }

    #[test]
    fn a_bad_instance_count_is_named_with_its_line() {
        for (value, expected) in [
            ("0", "must be a whole number from 1 to 256, got 0"),
            ("-1", "must be a whole number from 1 to 256, got -1"),
            ("257", "must be a whole number from 1 to 256, got 257"),
            (
                "\"two\"",
                "must be a whole number from 1 to 256, got \"two\"",
            ),
            ("1.5", "must be a whole number from 1 to 256, got 1.5"),
        ] {
            let message = error_of(&format!(
                "[[component]]\npath = \"a.wasm\"\ninstances = {value}\n"
            ));
            assert!(
                message.starts_with("host.toml:3: instances: "),
                "{value}: {message}"
            );
            assert!(message.contains(expected), "{value}: {message}");
        }
    }

    /// The keys serde expects where `text` has an unknown one (its message lists them all).
    fn keys_expected(text: &str) -> Vec<String> {
        let message = FileConfig::parse(text).unwrap_err().message().to_owned();
        let list = message.split_once("expected one of").expect(&message).1;
        list.split(',')
            .map(|key| key.trim().trim_matches('`').to_owned())
            .collect()
    }

    #[test]
    fn the_example_file_parses_and_shows_every_key() {
        let example = include_str!("../../examples/host.toml");
        FileConfig::parse(example).unwrap_or_else(|error| panic!("examples/host.toml: {error}"));
        // Its commented-out settings are valid too, once taken in.
        let taken_in: String = example
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(setting)
                    if setting.split_once(" = ").is_some_and(|(key, _)| {
                        key.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                    }) =>
                {
                    format!("{setting}\n")
                }
                _ => format!("{line}\n"),
            })
            .collect();
        let config = FileConfig::parse(&taken_in).unwrap_or_else(|error| {
            panic!("a setting commented out in examples/host.toml is not valid: {error}")
        });
        assert_eq!(config.cluster, Some(true), "the cluster keys are shown");
        let shown = |key: &str| {
            taken_in
                .lines()
                .any(|line| line.split_once(" = ").is_some_and(|(k, _)| k == key))
        };
        let top = keys_expected("no-such-key = 1");
        let component = keys_expected("[[component]]\npath = \"a.wasm\"\nno-such-key = 1");
        assert!(
            top.len() > 30 && component.len() > 5,
            "{top:?} {component:?}"
        );
        for key in top.iter().chain(&component) {
            assert!(
                key == "component" || shown(key),
                "examples/host.toml does not show `{key}`"
            );
        }
    }

    #[test]
    fn an_unknown_serializer_is_named_with_its_line() {
        let message = error_of("heartbeat = 5\nserializer = \"xml\"\n");
        assert_eq!(
            message,
            "host.toml:2: serializer: must be \"json\" or \"protobuf\", got \"xml\""
        );
        let config = FileConfig::parse("serializer = \"protobuf\"").unwrap();
        assert_eq!(config.serializer.as_deref(), Some("protobuf"));
    }

    #[test]
    fn a_wrong_type_is_named_with_its_line() {
        let message = error_of("tcp = \"127.0.0.1:0\"\n\nheartbeat = \"often\"\n");
        assert!(message.starts_with("host.toml:3: heartbeat: "), "{message}");
        assert!(message.contains("invalid type"), "{message}");
    }
}
