//! The command line's promises: every flag in `--help`, and one clear line with a non-zero exit
//! for each kind of bad start (missing or invalid component, duplicate routes, bad address).

use std::path::PathBuf;
use std::process::{Command, Output};

use anyhow::{Context, Result};

fn host() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pitaya-host"))
}

fn components_dir() -> PathBuf {
    std::env::var_os("PITAYA_COMPONENTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/release")
        })
}

fn echo_wasm() -> Result<PathBuf> {
    let path = components_dir().join("echo.wasm");
    anyhow::ensure!(
        path.exists(),
        "{} is missing: run `cargo xtask test`, which builds the components first",
        path.display()
    );
    Ok(path)
}

/// Runs the host and expects it to fail, returning its stderr's error lines.
fn fails(command: &mut Command) -> Result<String> {
    let Output { status, stderr, .. } = command.output().context("cannot run pitaya-host")?;
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    anyhow::ensure!(
        !status.success(),
        "expected a failure, got {status}; stderr: {stderr}"
    );
    Ok(stderr)
}

fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| line.starts_with("error:"))
        .collect()
}

/// The one `error:` line of `stderr`; fails the test, saying `what` it ran, if there is not
/// exactly one.
fn the_error_line<'a>(stderr: &'a str, what: &str) -> &'a str {
    let lines = error_lines(stderr);
    assert_eq!(lines.len(), 1, "{what}{stderr}");
    lines[0]
}

#[test]
fn help_describes_every_flag() -> Result<()> {
    let output = host().args(["serve", "--help"]).output()?;
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout)?;
    for flag in [
        "--tcp",
        "--ws",
        "--heartbeat",
        "--server-type",
        "--handshake-timeout",
        "--max-packet",
        "--max-inflated",
        "--send-queue",
        "--call-timeout-ms",
        "--max-memory-mib",
        "--compress",
        "--compress-handshake",
        "--push-route-codes",
        "--cache-dir",
        "--no-cache",
    ] {
        assert!(
            help.contains(flag),
            "--help does not mention {flag}:\n{help}"
        );
    }
    Ok(())
}

/// Every flag `serve --help` lists is in the README's table of options and in the
/// configuration reference, so neither falls behind the binary.
#[test]
fn every_flag_is_documented() -> Result<()> {
    let output = host().args(["serve", "--help"]).output()?;
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout)?;
    // An option's line starts with its names (`-h, --help`), then its value and description.
    let flags: Vec<&str> = help
        .lines()
        .flat_map(|line| {
            line.split_whitespace()
                .map(|word| word.trim_end_matches(','))
                .take_while(|word| word.starts_with('-'))
        })
        .filter(|word| word.starts_with("--") && *word != "--help")
        .collect();
    anyhow::ensure!(
        flags.len() > 30,
        "too few flags read from --help: {flags:?}"
    );
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for doc in ["README.md", "docs/configuration.md"] {
        let text = std::fs::read_to_string(root.join(doc)).with_context(|| doc.to_owned())?;
        let missing: Vec<&&str> = flags
            .iter()
            .filter(|flag| {
                !text.contains(&format!("`{flag}`")) && !text.contains(&format!("`{flag} "))
            })
            .collect();
        anyhow::ensure!(missing.is_empty(), "{doc} does not document {missing:?}");
    }
    Ok(())
}

#[test]
fn a_missing_component_is_one_clear_line() -> Result<()> {
    let stderr = fails(host().args(["serve", "--tcp", "127.0.0.1:0", "no/such/game.wasm"]))?;
    let line = the_error_line(&stderr, "");
    assert!(line.contains("no/such/game.wasm"), "{stderr}");
    assert!(line.contains("cannot read component"), "{stderr}");
    Ok(())
}

#[test]
fn an_invalid_component_is_one_clear_line() -> Result<()> {
    // Not WebAssembly; a core module (a build for the wrong target); a component cut short, whose
    // parser error wasmtime words over several lines.
    let component = std::fs::read(components_dir().join("echo.wasm"))?;
    for (what, bytes, says) in [
        (
            "not-wasm",
            &b"this is not webassembly"[..],
            "not a WebAssembly file",
        ),
        ("core", b"\0asm\x01\0\0\0", "--target wasm32-wasip2"),
        ("cut", &component[..component.len() / 2], ""),
    ] {
        let path =
            std::env::temp_dir().join(format!("pitaya-host-{what}-{}.wasm", std::process::id()));
        std::fs::write(&path, bytes)?;
        let stderr = fails(host().args(["serve", "--tcp", "127.0.0.1:0"]).arg(&path));
        std::fs::remove_file(&path)?;
        let stderr = stderr?;
        let line = the_error_line(&stderr, &format!("{what}: "));
        assert!(line.contains("invalid component"), "{what}: {stderr}");
        assert!(line.contains(&*path.to_string_lossy()), "{what}: {stderr}");
        assert!(line.contains(says), "{what}: {stderr}");
        // Nothing after the error line: a reason over several lines would continue it.
        assert!(stderr.trim_end().ends_with(line), "{what}: {stderr}");
    }
    Ok(())
}

#[test]
fn a_component_built_for_another_contract_version_says_so() -> Result<()> {
    // The smallest component that names the contract: it imports one interface of 0.1.0.
    let path = std::env::temp_dir().join(format!(
        "pitaya-host-old-contract-{}.wasm",
        std::process::id()
    ));
    // In binary: the header, a type section with one empty instance type, and an import
    // section importing `pitaya:host/log@0.1.0` as that type.
    let name = b"pitaya:host/log@0.1.0";
    let mut bytes = b"\0asm\x0d\x00\x01\x00\x07\x03\x01\x42\x00".to_vec();
    bytes.extend_from_slice(&[0x0a, 5 + name.len() as u8, 0x01, 0x00, name.len() as u8]);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(&[0x05, 0x00]);
    std::fs::write(&path, bytes)?;
    let stderr = fails(
        host()
            .args(["serve", "--no-cache", "--tcp", "127.0.0.1:0"])
            .arg(&path),
    );
    std::fs::remove_file(&path)?;
    let stderr = stderr?;
    let line = the_error_line(&stderr, "");
    assert!(
        line.contains("built for pitaya:host@0.1.0")
            && line.contains("rebuild it with this version's guest SDK"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn duplicate_routes_are_refused() -> Result<()> {
    let echo = echo_wasm()?;
    let stderr = fails(
        host()
            .args(["serve", "--tcp", "127.0.0.1:0"])
            .arg(&echo)
            .arg(&echo),
    )?;
    let line = the_error_line(&stderr, "");
    assert!(line.contains("duplicate route echo."), "{stderr}");
    Ok(())
}

#[test]
fn a_malformed_address_is_refused() -> Result<()> {
    let stderr = fails(host().args(["serve", "--tcp", "not-an-address", "x.wasm"]))?;
    let line = the_error_line(&stderr, "");
    assert!(line.contains("not-an-address"), "{stderr}");
    Ok(())
}

#[test]
fn an_address_in_use_is_one_clear_line() -> Result<()> {
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?.to_string();
    let stderr = fails(host().args(["serve", "--tcp", &addr]).arg(echo_wasm()?))?;
    let line = the_error_line(&stderr, "");
    assert!(
        line.contains(&format!("cannot listen on tcp {addr}")),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn a_bad_server_type_is_refused() -> Result<()> {
    let stderr = fails(host().args([
        "serve",
        "--server-type",
        "a.b",
        "--tcp",
        "127.0.0.1:0",
        "x.wasm",
    ]))?;
    assert!(
        error_lines(&stderr)[0].contains("--server-type"),
        "{stderr}"
    );
    Ok(())
}

/// A setting out of its range stops the host with one line naming it, before anything loads:
/// a value that would leave a useless server (no connection, no answer, a zero fuel or timer
/// budget), a
/// deadline past the clock's range (a huge shutdown timeout once panicked at SIGTERM), or a
/// packet size the protocol cannot express.
#[test]
fn a_setting_out_of_range_is_one_line_naming_it() -> Result<()> {
    let echo = echo_wasm()?;
    let missing = std::env::temp_dir().join("pitaya-host-no-such-folder");
    for (args, names) in [
        (
            vec!["--shutdown-timeout", "9223372036854775807"],
            "--shutdown-timeout",
        ),
        (vec!["--heartbeat", "100000"], "--heartbeat"),
        (vec!["--max-connections", "0"], "--max-connections"),
        (vec!["--max-response", "0"], "--max-response"),
        (vec!["--send-queue", "0"], "--send-queue"),
        (vec!["--max-packet", "16777216"], "--max-packet"),
        (vec!["--max-memory-mib", "0"], "--max-memory-mib"),
        (vec!["--max-memory-mib", "1"], "max-memory-mib is 1"),
        (vec!["--fuel", "0"], "--fuel"),
        (vec!["--limit", "echo=fuel:0"], "--limit echo=fuel:0"),
        (vec!["--timer-fires", "0"], "--timer-fires"),
        (
            vec!["--limit", "echo=timer-fires:1000001"],
            "--limit echo=timer-fires:1000001",
        ),
        (vec!["--tls-cert", "cert.pem"], "--tls-key"),
        (vec!["--web", missing.to_str().unwrap()], "--web"),
    ] {
        let stderr = fails(
            host()
                .args(["serve", "--tcp", "127.0.0.1:0"])
                .args(&args)
                .arg(&echo),
        )?;
        let line = the_error_line(&stderr, &format!("{args:?}: "));
        assert!(line.contains(names), "{args:?} must name {names}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    Ok(())
}

/// TLS may be split between the file and the flags like any other setting, and half of it in
/// the file is refused as it is on the command line, never served as plain text.
#[test]
fn tls_halves_combine_across_the_file_and_the_flags() -> Result<()> {
    let echo = echo_wasm()?;
    let dir = std::env::temp_dir().join(format!("pitaya-host-tls-split-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let key_only = dir.join("key-only.toml");
    std::fs::write(
        &key_only,
        "tcp = \"127.0.0.1:0\"\ntls-key = \"no-such-key.pem\"\n",
    )?;
    let cert_only = dir.join("cert-only.toml");
    std::fs::write(
        &cert_only,
        "tcp = \"127.0.0.1:0\"\ntls-cert = \"no-such-cert.pem\"\n",
    )?;
    // The flag's certificate and the file's key make a pair: what fails is reading them.
    let split = fails(
        host()
            .args(["serve", "--config"])
            .arg(&key_only)
            .args(["--tls-cert", "no-such-cert.pem"])
            .arg(&echo),
    );
    let half = fails(
        host()
            .args(["serve", "--config"])
            .arg(&cert_only)
            .arg(&echo),
    );
    std::fs::remove_dir_all(&dir)?;
    let split = split?;
    let line = the_error_line(&split, "");
    assert!(line.contains("no-such-cert.pem"), "{split}");
    let half = half?;
    let line = the_error_line(&half, "");
    assert!(line.contains("--tls-cert needs --tls-key"), "{half}");
    Ok(())
}

/// `new` refuses a name the host would refuse to serve.
#[test]
fn new_refuses_a_name_longer_than_the_host_serves() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("pitaya-host-new-long-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let name = "x".repeat(101);
    let stderr = fails(host().args(["new", &name]).current_dir(&dir));
    let created = dir.join(&name).exists();
    std::fs::remove_dir_all(&dir)?;
    let stderr = stderr?;
    the_error_line(&stderr, "");
    assert!(stderr.contains("at most 100"), "{stderr}");
    assert!(!created, "nothing is created for a refused name");
    Ok(())
}

/// A SIGTERM that comes while the components load (here: compiled afresh, no cache) is a
/// graceful shutdown once they have loaded, exit status 0, not a kill mid-load.
#[cfg(unix)]
#[test]
fn a_sigterm_while_loading_shuts_down_gracefully() -> Result<()> {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let mut child = host()
        .args(["serve", "--tcp", "127.0.0.1:0", "--no-cache"])
        .arg(components_dir().join("lab.wasm"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting pitaya-host")?;
    let mut lines = BufReader::new(child.stderr.take().context("no stderr")?).lines();
    let mut log = Vec::new();
    for line in lines.by_ref() {
        let line = line?;
        let loading = line.contains("loading components");
        log.push(line);
        if loading {
            break;
        }
    }
    // The line comes before the compiling starts.
    let pid = libc::pid_t::try_from(child.id())?;
    // SAFETY: kill has no memory effects; the pid is our child's.
    anyhow::ensure!(unsafe { libc::kill(pid, libc::SIGTERM) } == 0);
    log.extend(lines.map_while(Result::ok));
    let status = child.wait()?;
    let log = log.join("\n");
    anyhow::ensure!(status.success(), "exited with {status}:\n{log}");
    anyhow::ensure!(log.contains("SIGTERM: shutting down"), "{log}");
    Ok(())
}

/// The host's stderr up to the line that gives its connection cap (logged once the components
/// are loaded and checked); the host is then stopped.
#[cfg(unix)]
fn start_log(command: &mut Command) -> Result<Vec<String>> {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting pitaya-host")?;
    let mut log = Vec::new();
    for line in BufReader::new(child.stderr.take().context("no stderr")?).lines() {
        let line = line?;
        let done = line.contains("connections");
        log.push(line);
        if done {
            break;
        }
    }
    child.kill()?;
    child.wait()?;
    Ok(log)
}

/// Options for a component that is not loaded (a misspelt name) get one warning per name,
/// saying which options named it.
#[cfg(unix)]
#[test]
fn options_for_a_component_not_loaded_are_one_warning_naming_them() -> Result<()> {
    let log = start_log(
        host()
            .args(["serve", "--tcp", "127.0.0.1:0"])
            .args([
                "--grant",
                "ehco=clock",
                "--limit",
                "ehco=fuel:5,instances:2",
            ])
            .arg(echo_wasm()?),
    )?;
    let warnings: Vec<_> = log.iter().filter(|l| l.contains("not loaded")).collect();
    anyhow::ensure!(warnings.len() == 1, "{log:#?}");
    anyhow::ensure!(
        warnings[0].contains("component=\"ehco\"")
            && warnings[0].contains("options=\"--grant, --limit\""),
        "{log:#?}"
    );
    Ok(())
}

/// A RUST_LOG that is not a filter is said, not silently replaced by the default.
#[cfg(unix)]
#[test]
fn a_rust_log_that_is_not_a_filter_is_said() -> Result<()> {
    let log = start_log(
        host()
            .env("RUST_LOG", "garbage===")
            .args(["serve", "--tcp", "127.0.0.1:0"])
            .arg(echo_wasm()?),
    )?;
    anyhow::ensure!(
        log.iter()
            .any(|l| l.contains("RUST_LOG=\"garbage===\" is not a log filter")),
        "{log:#?}"
    );
    Ok(())
}

/// The configuration reference's table of start-up errors quotes what the host prints: each
/// mistake it lists, made here the same way, gives that line word for word.
#[test]
fn the_configuration_reference_quotes_the_errors_as_printed() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let reference = std::fs::read_to_string(root.join("docs/configuration.md"))?;
    let dir = std::env::temp_dir().join(format!("pitaya-host-doc-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let echo = echo_wasm()?;
    // A file to write in the working folder (name, text), and the arguments after `serve`.
    type Mistake = (
        Option<(&'static str, &'static str)>,
        &'static [&'static str],
    );
    const IN_FILE: &[&str] = &["--config", "host.toml"];
    let mistakes: &[Mistake] = &[
        (
            Some((
                "host.toml",
                "tcp = \"127.0.0.1:0\"\n\nheartbeat = \"often\"\n",
            )),
            IN_FILE,
        ),
        (
            Some((
                "host.toml",
                "tcp = \"127.0.0.1:0\"\n[[component]]\ngrants = [\"network\"]\n",
            )),
            IN_FILE,
        ),
        (
            Some(("host.toml", "tcp = \"127.0.0.1:0\"\ntimer-fires = 0\n")),
            IN_FILE,
        ),
        (
            Some((
                "host.toml",
                "[[component]]\npath = \"x.wasm\"\ninstances = 0\n",
            )),
            IN_FILE,
        ),
        (Some(("host.toml", "serializer = \"xml\"\n")), IN_FILE),
        (
            Some(("game.json", "{\"tcp\": \"127.0.0.1:3250\"}\n")),
            &["--config", "game.json"],
        ),
        (None, &["--config", "nope.toml"]),
        (None, &["--max-connections", "0"]),
        (None, &["--heartbeat", "100000"]),
        (None, &["--max-packet", "0"]),
        (None, &["--grant", "echo=network"]),
        (None, &["--limit", "echo=memory:5"]),
        (None, &["--limit", "lab=instances:0"]),
        (None, &["--limit", "echo=fuel:lots"]),
        (None, &["--init", "echo"]),
        (None, &["--server-type", "a.b"]),
        (None, &["--tls-cert", "nope.pem"]),
        (None, &["--web", "/srv/nope"]),
    ];
    for (file, args) in mistakes {
        if let Some((name, text)) = file {
            std::fs::write(dir.join(name), text)?;
        }
        let stderr = fails(host().current_dir(&dir).arg("serve").args(*args).arg(&echo))?;
        let line = the_error_line(&stderr, &format!("{args:?}"));
        anyhow::ensure!(
            reference.contains(line),
            "docs/configuration.md does not quote {args:?}'s error as printed: {line}"
        );
    }
    let stderr = fails(host().current_dir(&dir).args(["serve", "x.wasm"]))?;
    let line = the_error_line(&stderr, "a missing component");
    anyhow::ensure!(reference.contains(line), "not quoted as printed: {line}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
