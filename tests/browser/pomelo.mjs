// Interop test with a client we did not write: NetEase's pomelo JavaScript client, as npm ships it.
//
// pitaya's wire protocol is pomelo's, so pomelo's own web client must connect to the host unchanged.
// `pomelo-cocos2d-js` bundles that client (pomelo-jsclient-websocket with pomelo-protocol) into one
// browser script; each client here is that script run in a fresh Node.js `vm` context (its own
// `window`, as in a browser tab) with the `ws` package as its WebSocket. It reads the route
// dictionary of the handshake, so its requests and notifies go out with route codes, and it
// resolves coded push routes through the dictionary too.
//
//   bash tests/browser/setup.sh && node tests/browser/pomelo.mjs
//
// Env: PITAYA_HOST_BIN (default <repo>/target/release/pitaya-host), PITAYA_COMPONENTS_DIR (default
// <repo>/target/wasm32-wasip2/release).
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import vm from 'node:vm';
import WebSocket from 'ws';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '../..');
const HOST_BIN = process.env.PITAYA_HOST_BIN || join(REPO, 'target/release/pitaya-host');
const COMPONENTS = process.env.PITAYA_COMPONENTS_DIR || join(REPO, 'target/wasm32-wasip2/release');
const POMELO = readFileSync(
  createRequire(import.meta.url).resolve('pomelo-cocos2d-js/dist/pomelo-cocos2d-js.js'), 'utf8');
const WAIT = 20_000; // the longest any one step may take (a busy CI machine is slow)
// Seconds; the host closes a connection silent for twice that. pomelo's client beats every 1.5
// intervals against the host (docs/protocol.md, Heartbeats), which leaves it half an interval to
// spare; 2 s makes that a second, for a stall of the Node.js client on a busy CI machine.
const HEARTBEAT = 2;

// Packet types (protocol.md §2), to tell the heartbeats apart in the frames a client sees.
const HEARTBEAT_PACKET = 3;
const DATA_PACKET = 4;
const KICK_PACKET = 5;
/** Whether a Data packet's message has a route code (flag bit 0x01, protocol.md §3). */
const coded = (packet) => packet[0] === DATA_PACKET && (packet[4] & 0x01) === 1;
/** Whether `packet` holds `text` (a route or a payload) as UTF-8. */
const holds = (packet, text) => Buffer.from(packet).includes(text);

let host = null;
const hostLog = [];
const results = [];

process.on('exit', () => { if (host && host.exitCode === null) host.kill('SIGKILL'); });

/** Starts the host and resolves with [host, port] of its WebSocket listener. */
function startHost() {
  const components = ['echo.wasm', 'chat.wasm', 'lab.wasm'].map((file) => join(COMPONENTS, file));
  for (const file of [HOST_BIN, ...components]) {
    if (!existsSync(file)) throw new Error(`missing ${file} (build with cargo xtask build)`);
  }
  // pomelo's client reads a kick's reason as JSON (an empty kick would throw in its handler) and
  // resolves coded push routes, so the host runs as a pomelo deployment would configure it.
  const args = ['serve', '--ws', '127.0.0.1:0', '--heartbeat', String(HEARTBEAT), '--kick-reasons',
    '--push-route', 'onMessage', '--push-route-codes', ...components];
  // Connection closes are logged at debug level, with their reason: the log printed on a failure
  // says why the host closed a connection.
  const env = { ...process.env, RUST_LOG: 'info,pitaya_host::server::connection=debug' };
  host = spawn(HOST_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  createInterface({ input: host.stderr }).on('line', (line) => hostLog.push(line) > 200 && hostLog.shift());
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error('no ws:// line from the host within 60 s')), 60_000);
    createInterface({ input: host.stdout }).on('line', (line) => {
      const match = /^ws:\/\/(\S+):(\d+)$/.exec(line.trim());
      if (match) { clearTimeout(timer); resolvePromise([match[1], match[2]]); }
    });
    host.on('error', (err) => { clearTimeout(timer); reject(err); });
    host.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`host exited (${signal ?? code}) before listening`));
    });
  });
}

/**
 * One pomelo client in a context of its own. Records what it hears (pushes, kicks, closes) and the
 * packets its socket sends and receives, which the client itself does not expose.
 */
function pomeloClient(name) {
  const heard = [];
  const frames = { sent: [], received: [] };
  const waiters = new Set();
  const note = (event) => {
    heard.push(event);
    for (const waiter of waiters) waiter();
  };
  class Socket extends WebSocket {
    constructor(url) {
      super(url);
      this.addEventListener('message', (event) => {
        frames.received.push(new Uint8Array(event.data).slice());
        note({ frame: 'in' });
      });
    }
    send(data) {
      frames.sent.push(new Uint8Array(data).slice());
      super.send(data);
      note({ frame: 'out' });
    }
  }
  const storage = new Map();
  const context = {
    WebSocket: Socket,
    console: { log() {}, warn() {}, error: (...args) => note({ console: args.map(String).join(' ') }) },
    setTimeout, clearTimeout, setInterval, clearInterval,
    localStorage: { getItem: (k) => storage.get(k) ?? null, setItem: (k, v) => storage.set(k, String(v)) },
  };
  context.window = context;
  vm.createContext(context);
  vm.runInContext(POMELO, context, { filename: 'pomelo-cocos2d-js.js' });
  const pomelo = context.pomelo;
  for (const route of ['onMembers', 'onNewUser', 'onMessage', 'onKick']) {
    pomelo.on(route, (body) => note({ route, body }));
  }
  pomelo.on('close', () => note({ closed: true }));
  pomelo.on('heartbeat timeout', () => note({ heartbeatTimeout: true }));
  pomelo.on('error', (error) => note({ error: String(error) }));

  /** Resolves with the first value `find` returns that is not undefined, or fails after WAIT. */
  const until = (what, find) => new Promise((resolvePromise, reject) => {
    const waiter = () => {
      const found = find();
      if (found === undefined) return;
      waiters.delete(waiter);
      clearTimeout(timer);
      resolvePromise(found);
    };
    const timer = setTimeout(() => {
      waiters.delete(waiter);
      reject(new Error(`${name}: no ${what} within ${WAIT / 1000} s; heard ${JSON.stringify(heard.filter((e) => !e.frame))}`));
    }, WAIT);
    waiters.add(waiter);
    waiter();
  });
  return {
    name, pomelo, heard, frames, until,
    connect: ([host, port]) => new Promise((resolvePromise, reject) => {
      const timer = setTimeout(() => reject(new Error(`${name}: no handshake within ${WAIT / 1000} s`)), WAIT);
      pomelo.init({ host, port, user: { client: name } }, () => { clearTimeout(timer); resolvePromise(); });
    }),
    request: (route, body) => new Promise((resolvePromise, reject) => {
      const timer = setTimeout(() => reject(new Error(`${name}: no answer to ${route} within ${WAIT / 1000} s`)), WAIT);
      pomelo.request(route, body, (answer) => { clearTimeout(timer); resolvePromise(answer); });
    }),
    /** The first push heard on `route` that `matches`, waiting for it. */
    push: (route, matches = () => true) =>
      until(`${route} push`, () => heard.find((e) => e.route === route && matches(e.body))?.body),
  };
}

function expect(what, actual, wanted) {
  if (JSON.stringify(actual) !== JSON.stringify(wanted)) {
    throw new Error(`${what}: got ${JSON.stringify(actual)}, wanted ${JSON.stringify(wanted)}`);
  }
}

async function test(name, body) {
  try {
    await body();
    results.push(true);
    console.log(`ok   ${name}`);
  } catch (err) {
    results.push(false);
    console.log(`FAIL ${name}: ${err.message.split('\n')[0]}`);
  }
}

async function main() {
  const address = await startHost();
  const alice = pomeloClient('alice');
  const bob = pomeloClient('bob');

  await test('pomelo: handshake, and a request answered through the route dictionary', async () => {
    await alice.connect(address);
    await bob.connect(address);
    const body = { a: 1, text: 'héllo, 世界', list: [1, 2, { deep: null }] };
    expect('echo.echo answer', await alice.request('echo.echo', body), body);
    // The request went out as a route code, which the host took from its handshake's dictionary.
    const request = alice.frames.sent.find((p) => p[0] === DATA_PACKET);
    if (!coded(request) || holds(request, 'echo.echo')) {
      throw new Error(`the request did not use a route code: ${Buffer.from(request).toString('hex')}`);
    }
  });

  await test('pomelo: pushes to one client and to a group, one of them by route code', async () => {
    expect('alice joins', await alice.request('room.join', {}), { code: 0, result: 'success' });
    expect("alice's onMembers", (await alice.push('onMembers')).members.length, 1);
    expect('bob joins', await bob.request('room.join', {}), { code: 0, result: 'success' });
    expect("bob's onMembers", (await bob.push('onMembers')).members.length, 2);
    await alice.push('onNewUser');
    // onMessage goes out as its dictionary code; the client has to resolve it to call this listener.
    bob.pomelo.notify('room.message', { name: 'bob', content: 'hi alice' });
    expect("alice's onMessage", await alice.push('onMessage'), { name: 'bob', content: 'hi alice' });
    expect("bob's own onMessage", await bob.push('onMessage'), { name: 'bob', content: 'hi alice' });
    const push = alice.frames.received.find((p) => p[0] === DATA_PACKET && holds(p, 'hi alice'));
    if (!coded(push) || holds(push, 'onMessage')) {
      throw new Error(`onMessage did not come as a route code: ${Buffer.from(push).toString('hex')}`);
    }
  });

  await test('pomelo: an unknown route answers a pitaya error', async () => {
    const answer = await alice.request('nowhere.nothing', {});
    expect('error code', answer.code, 'PIT-404');
    if (typeof answer.msg !== 'string' || !answer.msg.includes('nowhere.nothing')) {
      throw new Error(`the error's msg does not name the route: ${JSON.stringify(answer)}`);
    }
  });

  await test("pomelo: the client's heartbeats keep it connected past twice the interval", async () => {
    // pomelo answers each server heartbeat with one of its own after the interval. Three from each
    // client take at least three intervals, more than the host's two without a packet before it
    // closes a connection; a request afterwards shows the session is still served.
    for (const client of [alice, bob]) {
      const start = client.frames.sent.filter((p) => p[0] === HEARTBEAT_PACKET).length;
      await client.until('three heartbeats sent',
        () => client.frames.sent.filter((p) => p[0] === HEARTBEAT_PACKET).length >= start + 3 || undefined);
    }
    for (const client of [alice, bob]) {
      const trouble = client.heard.find((e) => e.closed || e.heartbeatTimeout || e.error);
      if (trouble) throw new Error(`${client.name}: ${JSON.stringify(trouble)}`);
      expect(`${client.name}'s echo after the heartbeats`, await client.request('echo.echo', { n: 2 }), { n: 2 });
    }
  });

  await test('pomelo: a kick without a reason reaches the client as {}', async () => {
    // pomelo's client parses every kick's body as JSON, so an empty one would throw in its handler
    // (and end this process).
    const carol = pomeloClient('carol');
    await carol.connect(address);
    carol.pomelo.request('lab.kickMe', {}, () => {});
    expect("carol's onKick", await carol.push('onKick'), {});
    await carol.until('close', () => carol.heard.find((e) => e.closed));
  });

  await test('pomelo: a shutdown kicks each client with its reason, then closes', async () => {
    const exited = new Promise((resolvePromise) => host.on('exit', (code, signal) => resolvePromise(signal ?? code)));
    host.kill('SIGTERM');
    for (const client of [alice, bob]) {
      expect(`${client.name}'s onKick`, await client.push('onKick'), { reason: 'server shutting down' });
      await client.until('close', () => client.heard.find((e) => e.closed));
      if (!client.frames.received.some((p) => p[0] === KICK_PACKET)) throw new Error(`${client.name}: no Kick packet`);
    }
    expect('host exit', await exited, 0);
  });

  const failed = results.filter((ok) => !ok).length;
  console.log(`${results.length - failed} passed, ${failed} failed`);
  if (failed) {
    console.log('host log (last lines):');
    for (const line of hostLog.slice(-40)) console.log(`  ${line}`);
  }
  return failed ? 1 : 0;
}

const overall = setTimeout(() => { console.log('FAIL: the whole run took over 120 s'); process.exit(1); }, 120_000);
main().then((code) => {
  clearTimeout(overall);
  process.exit(code);
}, (err) => {
  console.log(`FAIL ${err.message}`);
  for (const line of hostLog.slice(-40)) console.log(`  ${line}`);
  process.exit(1);
});
