// Browser test of the web demos: starts pitaya-host with --web (a copy of examples/web, with a precompressed build
// beside it) and the chat + tadpole components, drives chat.html and tadpole.html in headless Chromium (two browser
// contexts each), saves screenshots, and loads a page whose module is a .js.gz, as Unity's WebGL builds ship.
//
//   bash tests/browser/setup.sh && node tests/browser/run.mjs
//
// Env: PITAYA_HOST_BIN (default <repo>/target/release/pitaya-host), PITAYA_COMPONENTS_DIR (default
// <repo>/target/wasm32-wasip2/release), CHROMIUM (default /usr/bin/chromium), PITAYA_HOST_ARGS (more `serve` flags,
// e.g. "--compress --compress-handshake --push-route-codes").
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { gzipSync } from 'node:zlib';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const HOST_BIN = process.env.PITAYA_HOST_BIN || join(REPO, 'target/release/pitaya-host');
const COMPONENTS = process.env.PITAYA_COMPONENTS_DIR || join(REPO, 'target/wasm32-wasip2/release');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const WEB = mkdtempSync(join(tmpdir(), 'pitaya-web-'));
const SHOTS = join(REPO, 'target/screenshots');
const WAIT = 30_000; // the longest any single wait in a test may take (a busy CI machine is slow)
// Chromium usually starts in under a second here, but a CI run once saw it take over 15 s on a busy machine.
const LAUNCH_WAIT = 90_000;
const TOTAL = 300_000; // the whole run: two launch attempts and the tests
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

let host = null;
let hostLog = [];
let browser = null;
const results = [];

function killHost() {
  if (!host || host.exitCode !== null || host.signalCode !== null) return;
  host.kill('SIGTERM');
  const child = host;
  setTimeout(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); }, 3000).unref();
}
process.on('exit', () => {
  if (host && host.exitCode === null) host.kill('SIGKILL');
  rmSync(WEB, { recursive: true, force: true });
});

/** The web folder: the demos, and a page whose module is served from a gzipped build file. */
function makeWebFolder() {
  cpSync(join(REPO, 'examples/web'), WEB, { recursive: true });
  mkdirSync(join(WEB, 'Build'));
  writeFileSync(join(WEB, 'Build/pitaya.js.gz'), gzipSync(readFileSync(join(WEB, 'pitaya.js'))));
  writeFileSync(join(WEB, 'build.html'), `<!doctype html>
<meta charset="utf-8">
<p id="status">loading</p>
<script type="module">
import { PitayaClient } from './Build/pitaya.js.gz';
document.getElementById('status').textContent = typeof PitayaClient === 'function' ? 'loaded' : 'broken';
</script>
`);
}
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => { killHost(); process.exit(130); });

/** Starts the host and resolves with the `IP:PORT` of its WebSocket (and web) listener. */
function startHost() {
  const components = ['chat.wasm', 'tadpole.wasm'].map((file) => join(COMPONENTS, file));
  for (const file of [HOST_BIN, ...components]) {
    if (!existsSync(file)) throw new Error(`missing ${file} (build with cargo xtask build)`);
  }
  const extra = (process.env.PITAYA_HOST_ARGS || '').split(/\s+/).filter(Boolean);
  const args = ['serve', '--tcp', '127.0.0.1:0', '--ws', '127.0.0.1:0', '--web', WEB, ...extra, ...components];
  host = spawn(HOST_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  createInterface({ input: host.stderr }).on('line', (line) => hostLog.push(line) > 200 && hostLog.shift());
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error('no ws:// line from the host within 60 s')), 60_000);
    createInterface({ input: host.stdout }).on('line', (line) => {
      const match = /^ws:\/\/(\S+)$/.exec(line.trim());
      if (match) { clearTimeout(timer); resolvePromise(match[1]); }
    });
    host.on('error', (err) => { clearTimeout(timer); reject(err); });
    host.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`host exited (${signal ?? code}) before listening`));
    });
  });
}

/** Opens `url` in a fresh browser context (its own storage and cookies), collecting page errors. */
async function openPage(url) {
  const context = await browser.newContext({ viewport: { width: 960, height: 640 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.errors = [];
  page.on('pageerror', (err) => page.errors.push(err.message));
  page.on('console', (msg) => msg.type() === 'error' && page.errors.push(msg.text()));
  await page.goto(url, { timeout: WAIT });
  return page;
}

/** Awaits `promise`, naming the step in its error. */
async function step(what, promise) {
  try {
    return await promise;
  } catch (err) {
    throw new Error(`${what}: ${err.message.split('\n')[0]}`);
  }
}

async function test(name, body) {
  const pages = [];
  try {
    await body(pages);
    results.push(true);
    console.log(`ok   ${name}`);
  } catch (err) {
    results.push(false);
    console.log(`FAIL ${name}: ${err.message.split('\n')[0]}`);
    for (const page of pages) {
      const status = await page.locator('#status').textContent({ timeout: 1000 }).catch(() => '?');
      console.log(`     ${page.url().replace(/^https?:\/\/[^/]+/, '')}: status "${status}"`);
      for (const e of page.errors) console.log(`     page error: ${e}`);
    }
  } finally {
    for (const page of pages) await page.context().close().catch(() => {});
  }
}

async function chatTest(base) {
  await test('chat: a message sent on one page appears on the other', async (pages) => {
    const alice = await openPage(`${base}/chat.html`);
    pages.push(alice);
    await step('alice joins', alice.locator('#status.ok').waitFor());
    const bob = await openPage(`${base}/chat.html`);
    pages.push(bob);
    await step('bob joins', bob.locator('#status.ok').waitFor());
    // Bob's onMembers lists both; Alice learns of Bob through onNewUser.
    await step('bob lists 2 members', bob.waitForFunction(() => document.querySelectorAll('#members li').length === 2));
    await step('alice lists 2 members', alice.waitForFunction(() => document.querySelectorAll('#members li').length === 2));

    const hello = `hello from alice ${Date.now()}`;
    await alice.fill('#name', 'alice');
    await alice.fill('#input', hello);
    await alice.click('#send');
    await step("alice's message in bob's log", bob.locator('#log li', { hasText: hello }).waitFor());
    await step("alice's message in her own log", alice.locator('#log li', { hasText: hello }).waitFor());

    const reply = 'hi alice, bob here';
    await bob.fill('#name', 'bob');
    await bob.fill('#input', reply);
    await bob.press('#input', 'Enter');
    await step("bob's reply in alice's log", alice.locator('#log li', { hasText: reply }).waitFor());
    await step("bob's reply in his own log", bob.locator('#log li', { hasText: reply }).waitFor());
    await bob.screenshot({ path: join(SHOTS, 'chat.png') });
  });
}

async function tadpoleTests(base) {
  let pond = null; // the two pages, shared by the second test
  await test('tadpole: a tadpole moved on one page moves on the other', async (pages) => {
    const a = await openPage(`${base}/tadpole.html?name=alice`);
    pages.push(a);
    const b = await openPage(`${base}/tadpole.html?name=bob`);
    pages.push(b);
    const joined = () => window.pond && window.pond.me !== null && window.pond.tadpoles.has(window.pond.me);
    await step('A joins the pond', a.waitForFunction(joined));
    await step('B joins the pond', b.waitForFunction(joined));
    const aId = await a.evaluate(() => window.pond.me);
    const seenByB = (id) => {
      const t = window.pond.tadpoles.get(id);
      return t ? { x: t.x, y: t.y } : null;
    };
    await step('B sees A', b.waitForFunction(seenByB, aId));
    const before = await b.evaluate(seenByB, aId);

    // Point A's mouse away from the centre of its screen, towards the middle of the pond: A swims that way.
    const sx = before.x > 0 ? -1 : 1, sy = before.y > 0 ? -1 : 1;
    await a.mouse.move(480 + sx * 240, 320 + sy * 120, { steps: 4 });
    await step('B sees A move', b.waitForFunction(({ id, x, y }) => {
      const t = window.pond.tadpoles.get(id);
      return t && Math.hypot(t.x - x, t.y - y) > 60;
    }, { id: aId, ...before }));
    const after = await b.evaluate(seenByB, aId);
    if (Math.sign(after.x - before.x) !== sx || Math.sign(after.y - before.y) !== sy) {
      throw new Error(`A swam the wrong way: ${JSON.stringify({ before, after, sx, sy })}`);
    }
    await a.mouse.move(480, 320); // stop near the centre
    pond = { a, b, aId, pages };
    pages.length = 0; // keep them open for the next test
  });

  await test('tadpole: say reaches the other page', async (pages) => {
    if (!pond) throw new Error('skipped: the pages of the previous test are not there');
    const { a, b, aId } = pond;
    pages.push(...pond.pages);
    await a.fill('#say', 'hello pond');
    await a.press('#say', 'Enter');
    await step("B gets A's onSay", b.waitForFunction((id) => window.pond.tadpoles.get(id)?.said === 'hello pond', aId));
    // Steer B next to A (pointer events aimed at A on each poll) so that the screenshot shows both.
    await step('B swims to A', b.waitForFunction((id) => {
      const { me, tadpoles } = window.pond;
      const self = tadpoles.get(me), other = tadpoles.get(id);
      const canvas = document.getElementById('pond');
      const dx = other.x - self.x, dy = other.y - self.y, d = Math.hypot(dx, dy);
      if (d < 160) {
        canvas.dispatchEvent(new PointerEvent('pointerleave'));
        return true;
      }
      const reach = Math.min(d, 250);
      canvas.dispatchEvent(new PointerEvent('pointermove', {
        clientX: innerWidth / 2 + (dx / d) * reach, clientY: innerHeight / 2 + (dy / d) * reach,
      }));
      return false;
    }, aId, { polling: 100 }));
    await b.fill('#say', 'hi alice!');
    await b.press('#say', 'Enter');
    await step("A gets B's onSay", a.waitForFunction(() => [...window.pond.tadpoles.values()].some((t) => t.id !== window.pond.me && t.said === 'hi alice!')));
    await a.screenshot({ path: join(SHOTS, 'tadpole.png') });
  });
}

// Starting the browser is the harness, not the thing under test, so a start that fails is tried once more.
async function launchBrowser() {
  for (let attempt = 1; ; attempt++) {
    const started = Date.now();
    try {
      const launched = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: LAUNCH_WAIT });
      console.log(`chromium started in ${Date.now() - started} ms`);
      return launched;
    } catch (err) {
      if (attempt >= 2) throw err;
      console.log(`chromium did not start (attempt ${attempt}, ${Date.now() - started} ms): ${err.message.split('\n')[0]}; trying once more`);
    }
  }
}

async function buildTest(base) {
  await test('web: a gzipped build loads as a module, and a reload revalidates it (304)', async (pages) => {
    const page = await step('open build.html', openPage(`${base}/build.html`));
    pages.push(page);
    await step('the module from Build/pitaya.js.gz runs', page.locator('#status', { hasText: 'loaded' }).waitFor());
    const statuses = [];
    page.on('response', (response) => statuses.push(`${new URL(response.url()).pathname} ${response.status()}`));
    await step('reload', page.reload({ timeout: WAIT }));
    await step('the module runs again', page.locator('#status', { hasText: 'loaded' }).waitFor());
    if (!statuses.includes('/Build/pitaya.js.gz 304')) {
      throw new Error(`the build file was not revalidated: ${statuses.join(', ')}`);
    }
  });
}

async function main() {
  const watchdog = setTimeout(() => {
    console.log(`FAIL the whole run took longer than ${TOTAL / 1000} s`);
    console.log(`${results.filter(Boolean).length} passed, ${results.filter((r) => !r).length + 1} failed`);
    killHost();
    process.exit(1);
  }, TOTAL);
  mkdirSync(SHOTS, { recursive: true });
  try {
    makeWebFolder();
    const addr = await startHost();
    const base = `http://${addr}`;
    console.log(`host listening on ${base}`);
    browser = await launchBrowser();
    await chatTest(base);
    await tadpoleTests(base);
    await buildTest(base);
  } catch (err) {
    console.log(`FAIL setup: ${err.message}`);
    results.push(false);
  } finally {
    await browser?.close().catch(() => {});
    killHost();
    clearTimeout(watchdog);
  }
  const passed = results.filter(Boolean).length;
  const failed = results.length - passed;
  if (failed && hostLog.length) console.log(`host log (last lines):\n${hostLog.slice(-15).join('\n')}`);
  console.log(`${passed} passed, ${failed} failed`);
  process.exitCode = failed ? 1 : 0;
}

await main();
