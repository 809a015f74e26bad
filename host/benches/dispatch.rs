//! Criterion benches of one warm call into the `echo` component, per call: `echo.echo` (no host
//! call) and `echo.notify` (one host call: a push to the caller, encoded and queued), each
//! measured two ways, both on the bench's own thread as a connection's task runs them. `direct`
//! calls the instance itself; `dispatch` goes through `ComponentHandle::call` as a connection
//! does, so the shard's lock and the run-to-the-end box are included. Needs
//! `target/wasm32-wasip2/release/echo.wasm` (`cargo xtask build`; or `PITAYA_COMPONENTS_DIR`).
//! Run with `cargo bench -p pitaya-host --bench dispatch`.

use std::collections::VecDeque;
use std::hint::black_box;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use pitaya_host::ComponentOptions;
use pitaya_host::protocol::ClientHandshake;
use pitaya_host::runtime::{HostContext, Runtime};
use pitaya_host::session::{SendQueue, Session};

/// The request payload: a small JSON body, as in docs/performance.md's load runs.
const BODY: &[u8] = br#"{"a":1}"#;

fn echo_wasm() -> PathBuf {
    std::env::var_os("PITAYA_COMPONENTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/release")
        })
        .join("echo.wasm")
}

/// A connected session whose pushes land in its send queue, drained by the bench.
struct Client {
    session: Arc<Session>,
    queue: SendQueue,
    taken: VecDeque<Bytes>,
}

impl Client {
    /// Empties the send queue, as the connection would by writing it out.
    fn drain(&mut self) {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let _ = self.queue.take(&mut self.taken, &mut cx);
        let written: usize = self.taken.drain(..).map(|packet| packet.len()).sum();
        self.queue.release(written);
    }
}

fn context(runtime: &tokio::runtime::Runtime) -> (Arc<HostContext>, Client) {
    let context = Arc::new(HostContext::detached(runtime.handle().clone()));
    let queue = SendQueue::new(1024, 4 << 20);
    let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
    let session = context
        .registry
        .create(peer, ClientHandshake::default(), queue.clone());
    (
        context,
        Client {
            session,
            queue,
            taken: VecDeque::new(),
        },
    )
}

fn warm_calls(c: &mut Criterion) {
    let wasm = echo_wasm();
    if !wasm.is_file() {
        // Named on purpose (as `cargo xtask test` does, which runs each bench once): an error,
        // not a bench that measured nothing and passed.
        assert!(
            std::env::var_os("PITAYA_COMPONENTS_DIR").is_none(),
            "{} does not exist",
            wasm.display()
        );
        eprintln!(
            "{} does not exist: run `cargo xtask build` (or set PITAYA_COMPONENTS_DIR); nothing measured",
            wasm.display()
        );
        return;
    }
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (context, mut client) = context(&tokio);
    let runtime = Runtime::new(context, false, Some(4)).expect("the engine");
    let id = client.session.id();

    let mut direct = runtime
        .direct(wasm.clone(), ComponentOptions::default())
        .expect("echo starts");
    // What is measured must work: echo answers with its payload.
    assert!(
        matches!(tokio.block_on(direct.call(id, "echo", BODY)), Ok(Ok(out)) if out == BODY),
        "echo.echo did not echo"
    );
    let mut group = c.benchmark_group("direct");
    group.bench_function("echo.echo", |b| {
        b.iter(|| black_box(tokio.block_on(direct.call(id, "echo", black_box(BODY)))))
    });
    group.bench_function("echo.notify", |b| {
        b.iter(|| {
            let result = tokio.block_on(direct.call(id, "notify", black_box(BODY)));
            client.drain();
            black_box(result)
        })
    });
    group.finish();
    assert!(
        matches!(tokio.block_on(direct.call(id, "notify", BODY)), Ok(Ok(_)))
            && !client.queue.is_empty(),
        "echo.notify did not push"
    );
    client.drain();

    let handle = runtime
        .load(wasm, 0, &|_, _| ComponentOptions::default())
        .expect("echo loads");
    let payload = Bytes::from_static(BODY);
    assert!(
        matches!(tokio.block_on(handle.call(id, "echo".to_owned(), payload.clone())), Ok(Ok(out)) if out == BODY),
        "echo.echo did not echo through the shard"
    );
    let mut group = c.benchmark_group("dispatch");
    group.bench_function("echo.echo", |b| {
        b.iter(|| black_box(tokio.block_on(handle.call(id, "echo".to_owned(), payload.clone()))))
    });
    group.bench_function("echo.notify", |b| {
        b.iter(|| {
            let result = tokio.block_on(handle.call(id, "notify".to_owned(), payload.clone()));
            client.drain();
            black_box(result)
        })
    });
    group.finish();
}

criterion_group!(benches, warm_calls);
criterion_main!(benches);
