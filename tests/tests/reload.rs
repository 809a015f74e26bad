//! Hot reload (`--watch` and SIGHUP) of the `lab` component under load: 200 clients keep calling
//! `lab.counter` while the served file is replaced; nobody sees an error or a dropped connection, the
//! generation goes from 1 to 2 and the counter keeps counting (the state is handed over); SIGHUP makes
//! generation 3; a broken file leaves generation 3 serving and logs "reload failed". A reload that adds
//! a handler codes its routes after the old ones.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use pitaya_tests::checks::{call, ensure_success};
use pitaya_tests::codec::Route;
use pitaya_tests::server::components_dir;
use pitaya_tests::{Client, Message, Server, ServerOptions, TempDir, Transport};
use serde_json::json;

/// Writes `bytes` to a temporary name next to `target`, then renames it over `target` (atomic replace).
fn replace_file(target: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = target.with_extension("wasm.tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, target)
        .with_context(|| format!("renaming {} over {}", tmp.display(), target.display()))
}

/// One `lab.counter` answer.
#[derive(Debug, Clone, Copy)]
struct Count {
    counter: u64,
    generation: u64,
}

fn parse_count(m: &pitaya_tests::Message, id: u64) -> Result<Count> {
    ensure_success(m, id)?;
    let v = m.json()?;
    let counter = v["counter"]
        .as_u64()
        .with_context(|| format!("lab.counter answered {v}"))?;
    let generation = v["generation"]
        .as_u64()
        .with_context(|| format!("lab.counter answered {v}"))?;
    Ok(Count {
        counter,
        generation,
    })
}

async fn counter(c: &mut Client) -> Result<Count> {
    let id = c.next_id();
    c.send_request(id, "lab.counter", b"{}").await?;
    let m = c.wait_response(id).await?;
    parse_count(&m, id)
}

/// A client's loop: keeps up to 2 `lab.counter` requests in flight until `stop`; returns every answer in
/// order. Any error response, timeout or close fails it.
async fn load(
    mut c: Client,
    idx: usize,
    stop: Arc<AtomicBool>,
    max_generation: Arc<AtomicU64>,
) -> Result<(Client, Vec<Count>)> {
    const DEPTH: usize = 2;
    let mut inflight = VecDeque::new();
    let mut answers = Vec::new();
    loop {
        if !stop.load(Ordering::Relaxed) {
            while inflight.len() < DEPTH {
                let id = c.next_id();
                c.send_request(id, "lab.counter", b"{}")
                    .await
                    .with_context(|| format!("client {idx} sending request {id}"))?;
                inflight.push_back(id);
            }
        }
        let Some(id) = inflight.pop_front() else {
            break;
        };
        let m = c.wait_response(id).await.with_context(|| {
            format!(
                "client {idx} ({}) waiting for request {id} after {} answers",
                c.transport(),
                answers.len()
            )
        })?;
        let count = parse_count(&m, id)
            .with_context(|| format!("client {idx} ({}), request {id}", c.transport()))?;
        max_generation.fetch_max(count.generation, Ordering::Relaxed);
        answers.push(count);
    }
    Ok((c, answers))
}

/// A host started with `--watch` on a copy of the component `file` in a folder of its own:
/// the folder (kept for as long as the test needs the copy), the copy's path, the build's
/// bytes and the host.
async fn watching(tag: &str, file: &str) -> Result<(TempDir, PathBuf, Vec<u8>, Server)> {
    let original = components_dir().join(file);
    ensure!(
        original.is_file(),
        "the component {} does not exist: run `cargo xtask test` (or build it and set PITAYA_COMPONENTS_DIR)",
        original.display()
    );
    let build = std::fs::read(&original)?;
    let dir = TempDir::new(tag)?;
    let served = dir.0.join(file);
    std::fs::write(&served, &build)?;
    let server = Server::start(
        ServerOptions::default()
            .components(&[served.to_str().context("temp path is not UTF-8")?])
            .arg("--watch"),
    )
    .await?;
    Ok((dir, served, build, server))
}

#[tokio::test]
async fn hot_reload_under_load_keeps_clients_and_state() -> Result<()> {
    const CLIENTS: usize = 200;
    let (_dir, served, build, server) = watching("reload", "lab.wasm").await?;

    // 200 sessions, half TCP, half WebSocket, connected 25 at a time.
    let mut clients = Vec::with_capacity(CLIENTS);
    for chunk in 0..CLIENTS / 25 {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..25 {
            let idx = chunk * 25 + i;
            let t = if idx % 2 == 0 {
                Transport::Tcp
            } else {
                Transport::Ws
            };
            let addr = server.addr(t);
            set.spawn(async move {
                let mut c = Client::connect(t, addr).await?;
                c.handshake(pitaya_tests::codec::PITAYA_HANDSHAKE).await?;
                anyhow::Ok((idx, c))
            });
        }
        while let Some(r) = set.join_next().await {
            clients.push(r?.context("connecting the load clients")?);
        }
    }
    clients.sort_by_key(|(i, _)| *i);

    let first = {
        let c = &mut clients[0].1;
        counter(c).await.context("the first lab.counter")?
    };
    ensure!(
        first.generation == 1,
        "a fresh build must be generation 1, got {first:?}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let max_generation = Arc::new(AtomicU64::new(1));
    let started = Instant::now();
    let finished = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for (idx, c) in clients {
        let (stop, max_generation, finished) = (
            Arc::clone(&stop),
            Arc::clone(&max_generation),
            Arc::clone(&finished),
        );
        tasks.spawn(async move {
            let r = load(c, idx, stop, max_generation).await;
            finished.fetch_add(1, Ordering::Relaxed);
            r
        });
    }

    // About 1 s of load on generation 1, then the swap.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let swapped_at = Instant::now();
    replace_file(&served, &build).context("swapping in the new build")?;
    // Wait until some client sees generation 2 (the reload compiles the component: allow 20 s), then keep
    // the load on until about 3 s in total, and at least 0.5 s on generation 2.
    let deadline = swapped_at + Duration::from_secs(20);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let seen_gen2 = loop {
        tick.tick().await;
        if max_generation.load(Ordering::Relaxed) >= 2 {
            break Some(swapped_at.elapsed());
        }
        if Instant::now() >= deadline || finished.load(Ordering::Relaxed) == CLIENTS {
            break None;
        }
    };
    let until = (started + Duration::from_secs(3)).max(Instant::now() + Duration::from_millis(500));
    if seen_gen2.is_some() {
        tokio::time::sleep_until(until.into()).await;
    }
    stop.store(true, Ordering::Relaxed);

    let mut failures = Vec::new();
    let mut all = Vec::new();
    let mut survivors = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r? {
            Ok((c, answers)) => {
                survivors.push(c);
                all.push(answers);
            }
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    let load_time = started.elapsed();
    if seen_gen2.is_none() {
        failures.push(format!(
            "no lab.counter answer carried generation 2 within 20 s of renaming a new build over {}",
            served.display()
        ));
    }

    // Per client: generations never go back, counters strictly increase.
    let mut per_gen = [0usize; 3];
    let (mut max_gen1, mut min_gen2) = (0u64, u64::MAX);
    let mut seen = HashSet::new();
    let mut duplicates = 0;
    for (i, answers) in all.iter().enumerate() {
        for w in answers.windows(2) {
            if w[1].generation < w[0].generation {
                failures.push(format!(
                    "a client saw generation {} after {}",
                    w[1].generation, w[0].generation
                ));
                break;
            }
            if w[1].counter <= w[0].counter {
                failures.push(format!(
                    "a client's counter went from {} to {} (generations {} → {})",
                    w[0].counter, w[1].counter, w[0].generation, w[1].generation
                ));
                break;
            }
        }
        if answers.is_empty() {
            failures.push(format!("load client {i} got no answer at all"));
        }
        for a in answers {
            match a.generation {
                1 => {
                    per_gen[1] += 1;
                    max_gen1 = max_gen1.max(a.counter);
                }
                2 => {
                    per_gen[2] += 1;
                    min_gen2 = min_gen2.min(a.counter);
                }
                g => {
                    per_gen[0] += 1;
                    if per_gen[0] == 1 {
                        failures.push(format!(
                            "generation {g} during the first swap (expected 1 or 2): {a:?}"
                        ));
                    }
                }
            }
            if !seen.insert(a.counter) {
                duplicates += 1;
            }
        }
    }
    let total: usize = all.iter().map(Vec::len).sum();
    eprintln!(
        "reload under load: {} clients finished, {total} answers in {load_time:.1?} ({} on generation 1, {} on \
         generation 2, {} other); generation 2 first seen {seen_gen2:?} after the rename; max counter on \
         generation 1 = {max_gen1}, min on generation 2 = {min_gen2}",
        survivors.len(),
        per_gen[1],
        per_gen[2],
        per_gen[0]
    );
    if per_gen[1] == 0 || per_gen[2] == 0 {
        failures.push(format!(
            "expected answers on generation 1 and on generation 2, got {} and {}",
            per_gen[1], per_gen[2]
        ));
    }
    if per_gen[2] > 0 && min_gen2 <= max_gen1 {
        failures.push(format!(
            "the counter restarted across the reload: generation 2 answered {min_gen2} after generation 1 \
             reached {max_gen1} (state not handed over)"
        ));
    }
    if duplicates > 0 {
        failures.push(format!("{duplicates} counter values were answered twice"));
    }
    for c in survivors.iter_mut() {
        if let Err(e) = c.ensure_open() {
            failures.push(format!("a load client was disconnected: {e:#}"));
            break;
        }
    }
    ensure!(
        failures.is_empty(),
        "{} of {CLIENTS} load clients failed or misbehaved:\n{}\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        server.log_tail(40)
    );
    let last_counter = seen.iter().copied().max().unwrap_or(0);
    drop(survivors);

    // SIGHUP: generation 3, the counter goes on.
    let mut c = server.connect_ready(Transport::Tcp).await?;
    server.signal(libc::SIGHUP)?;
    let hup_at = Instant::now();
    let mut prev = last_counter;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tick.tick().await;
        let n = counter(&mut c).await.context("lab.counter after SIGHUP")?;
        ensure!(
            n.counter > prev,
            "the counter went from {prev} to {} around the SIGHUP reload",
            n.counter
        );
        prev = n.counter;
        match n.generation {
            3 => break,
            2 => ensure!(
                hup_at.elapsed() < Duration::from_secs(20),
                "still generation 2 20 s after SIGHUP\n{}",
                server.log_tail(30)
            ),
            g => bail!("generation {g} after SIGHUP, expected 2 then 3"),
        }
    }
    eprintln!("SIGHUP: generation 3 after {:.1?}", hup_at.elapsed());

    // A broken build: the old one keeps serving, stderr says "reload failed".
    let mark = server.log_len();
    replace_file(&served, b"this is not a WebAssembly component\0\x01\x02")?;
    server
        .wait_log_from(mark, "reload failed", Duration::from_secs(20))
        .await
        .context("renaming a garbage file over the served component")?;
    let n = counter(&mut c)
        .await
        .context("lab.counter after the failed reload")?;
    ensure!(
        n.generation == 3 && n.counter > prev,
        "after the failed reload lab.counter answered {n:?}, expected generation 3 and a counter above {prev}"
    );
    let g = call(&mut c, "lab.generation", &json!({})).await?;
    ensure!(g == json!({"generation": 3}), "lab.generation answered {g}");
    let mut fresh = server.connect_ready(Transport::Ws).await?;
    let n = counter(&mut fresh)
        .await
        .context("a new session after the failed reload")?;
    ensure!(n.generation == 3, "a new session sees {n:?}");
    ensure!(
        server.is_running(),
        "the server died: {}",
        server.exit_status()
    );
    Ok(())
}

/// A reload that adds a handler gives its routes the next free codes: a client that connects
/// after the reload is offered them, with every code it shares with a client connected before
/// unchanged, so the earlier client's dictionary stays true.
#[tokio::test]
async fn a_reload_codes_the_routes_it_adds_after_the_old_ones() -> Result<()> {
    let first = std::fs::read(components_dir().join("echo.wasm")).context("echo.wasm")?;
    let next = std::fs::read(components_dir().join("echo_next.wasm")).context("echo_next.wasm")?;
    let dir = TempDir::new("reload-dict")?;
    let served = dir.0.join("echo.wasm");
    std::fs::write(&served, &first)?;
    let served = served.to_str().context("temp path is not UTF-8")?;
    let server = Server::start(ServerOptions::default().components(&[served])).await?;
    let (mut before, old) = server.connect_ready_with_reply(Transport::Tcp).await?;
    ensure!(
        old.dict.contains_key("echo.echo") && !old.dict.contains_key("echo.reverse"),
        "the first build's dictionary: {:?}",
        old.dict
    );

    replace_file(Path::new(served), &next)?;
    let from = server.log_len();
    server.signal(libc::SIGHUP)?;
    let reloaded = server
        .wait_log_from(from, "component reloaded", Duration::from_secs(30))
        .await?;
    // `echo.reverse` and `connector.echo.reverse`.
    ensure!(reloaded.contains("new_routes_coded=2"), "{reloaded}");

    let (mut after, new) = server.connect_ready_with_reply(Transport::Ws).await?;
    for (route, code) in &old.dict {
        ensure!(
            new.dict.get(route) == Some(code),
            "{route} was {code} and is now {:?}",
            new.dict.get(route)
        );
    }
    let reverse = *new
        .dict
        .get("echo.reverse")
        .context("echo.reverse has no code")?;
    ensure!(
        usize::from(reverse) > old.dict.len(),
        "echo.reverse got code {reverse}, among the old ones"
    );
    let id = after.next_id();
    after
        .send_message(&Message::request(id, Route::Code(reverse), b"abc"))
        .await?;
    let m = after.wait_response(id).await?;
    ensure_success(&m, id)?;
    ensure!(m.payload == b"cba", "by code: {:?}", m.text());
    // The client connected before sends the new route as a string.
    let id = before.next_id();
    before.send_request(id, "echo.reverse", b"xyz").await?;
    let m = before.wait_response(id).await?;
    ensure_success(&m, id)?;
    ensure!(m.payload == b"zyx", "by name: {:?}", m.text());
    Ok(())
}

/// `--watch` says when a component's file goes away (the loaded build keeps serving), and
/// reloads it when it comes back.
#[tokio::test]
async fn a_watched_file_that_goes_away_is_logged_and_reloaded_when_back() -> Result<()> {
    let (_dir, served, build, server) = watching("watch-gone", "echo.wasm").await?;
    std::fs::remove_file(&served)?;
    server
        .wait_log("file gone", Duration::from_secs(10))
        .await
        .context("the host must say the file went away")?;
    let mut c = server.connect_ready(Transport::Tcp).await?;
    let answer = c.request("echo.echo", b"still here").await?;
    ensure_success(&answer, answer.id)?;
    let from = server.log_len();
    std::fs::write(&served, &build)?;
    server
        .wait_log_from(from, "component reloaded", Duration::from_secs(20))
        .await
        .context("the file's return must reload it")?;
    Ok(())
}
