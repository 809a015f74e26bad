// The tadpole pond demo: swim with everyone else through the `tadpole` component.
import { PitayaClient } from './pitaya.js';

const SPEED = 260;        // pond units per second at full speed
const SEND_EVERY = 50;    // ms between tadpole.move notifies while moving (20 Hz)
const LIMIT = 1000;       // the pond spans -LIMIT..LIMIT each way
const SAY_MS = 6000;      // how long a speech bubble stays

const canvas = document.getElementById('pond');
const ctx = canvas.getContext('2d');
const status = document.getElementById('status');
const nameField = document.getElementById('name');
const sayField = document.getElementById('say');

const params = new URLSearchParams(location.search);
const myName = params.get('name') || localStorage.getItem('tadpole.name') || `tad-${Math.floor(Math.random() * 900 + 100)}`;
nameField.value = myName;
nameField.addEventListener('keydown', (event) => {
  if (event.key !== 'Enter') return;
  localStorage.setItem('tadpole.name', nameField.value.trim());
  params.set('name', nameField.value.trim());
  location.search = params.toString();
});

/** State a test (or the console) can read: my id and every tadpole by id ({id, name, x, y, angle}). */
const pond = { me: null, tadpoles: new Map() };
window.pond = pond;

// The host serves this page on its WebSocket port; `?ws=ws://HOST:PORT/` points the page elsewhere.
const client = new PitayaClient({ url: params.get('ws') || `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/`, reconnect: true });
let lastSent = null; // the position last sent with tadpole.move

function setStatus(text, kind = '') {
  status.textContent = text;
  status.className = `status ${kind}`;
}

/** Merges a server view of a tadpole in; the drawing position (dx, dy) glides towards it. */
function upsert(t) {
  let mine = pond.tadpoles.get(t.id);
  if (!mine) {
    mine = { id: t.id, name: t.name, x: t.x, y: t.y, angle: t.angle, dx: t.x, dy: t.y, phase: Math.random() * 6, speed: 0 };
    pond.tadpoles.set(t.id, mine);
  }
  mine.name = t.name;
  // Others follow the server; mine is steered here, unless the server put it far elsewhere (clamped, reset).
  if (t.id !== pond.me || Math.hypot(t.x - mine.x, t.y - mine.y) > 200) Object.assign(mine, { x: t.x, y: t.y, angle: t.angle });
  return mine;
}

client.on('open', async () => {
  setStatus('joining…');
  try {
    const joined = await client.request('tadpole.join', { name: myName });
    pond.me = joined.id;
    pond.tadpoles.clear();
    for (const t of joined.tadpoles) upsert(t);
    const me = pond.tadpoles.get(pond.me) ?? upsert({ id: pond.me, name: myName, x: 0, y: 0, angle: 0 });
    lastSent = { x: me.x, y: me.y, angle: me.angle };
    setStatus(`swimming as ${myName}`, 'ok');
  } catch (err) {
    setStatus(`join failed: ${err.message}`, 'bad');
  }
});
client.on('close', ({ reason, willReconnect }) => {
  pond.me = null;
  setStatus(willReconnect ? `disconnected (${reason}), reconnecting…` : `disconnected (${reason})`, 'bad');
});
client.on('onPond', ({ tadpoles }) => {
  for (const t of tadpoles) upsert(t);
});
client.on('onLeave', ({ id }) => pond.tadpoles.delete(id));
client.on('onSay', ({ id, text }) => {
  const t = pond.tadpoles.get(id);
  if (t) Object.assign(t, { said: text, saidAt: performance.now() });
});

document.getElementById('sayForm').addEventListener('submit', (event) => {
  event.preventDefault();
  const text = sayField.value.trim();
  if (text && client.connected && pond.me !== null) {
    client.notify('tadpole.say', { text });
    Object.assign(pond.tadpoles.get(pond.me) ?? {}, { said: text, saidAt: performance.now() });
  }
  sayField.value = '';
  canvas.focus();
});

// ---- steering: the tadpole swims towards the mouse (faster the farther it is from the centre); arrow keys or WASD steer directly ----
let aim = null; // the pointer's offset from the screen centre, where my tadpole is drawn
const keys = new Set();
const KEYS = { ArrowUp: [0, -1], ArrowDown: [0, 1], ArrowLeft: [-1, 0], ArrowRight: [1, 0], w: [0, -1], s: [0, 1], a: [-1, 0], d: [1, 0] };
let camera = { x: 0, y: 0 };

canvas.addEventListener('pointermove', (event) => {
  aim = { x: event.clientX - canvas.clientWidth / 2, y: event.clientY - canvas.clientHeight / 2 };
});
canvas.addEventListener('pointerleave', () => { aim = null; });
addEventListener('keydown', (event) => {
  if (event.target instanceof HTMLInputElement || !KEYS[event.key]) return;
  keys.add(event.key);
  aim = null;
  event.preventDefault();
});
addEventListener('keyup', (event) => keys.delete(event.key));
addEventListener('blur', () => keys.clear());

function steer(me, dt) {
  let vx = 0, vy = 0;
  for (const key of keys) { vx += KEYS[key][0]; vy += KEYS[key][1]; }
  if (vx || vy) {
    const n = Math.hypot(vx, vy);
    vx = (vx / n) * SPEED; vy = (vy / n) * SPEED;
  } else if (aim) {
    const d = Math.hypot(aim.x, aim.y);
    if (d > 12) {
      const s = SPEED * Math.min(1, d / 200);
      vx = (aim.x / d) * s; vy = (aim.y / d) * s;
    }
  }
  me.speed = Math.hypot(vx, vy);
  if (!me.speed) return;
  me.x = Math.max(-LIMIT, Math.min(LIMIT, me.x + vx * dt));
  me.y = Math.max(-LIMIT, Math.min(LIMIT, me.y + vy * dt));
  me.angle = Math.atan2(vy, vx);
}

// ---- networking: send my position at most 20 times a second, only when it changed ----
setInterval(() => {
  const me = pond.tadpoles.get(pond.me);
  if (!me || !client.connected || !lastSent) return;
  if (Math.abs(me.x - lastSent.x) < 0.5 && Math.abs(me.y - lastSent.y) < 0.5 && Math.abs(me.angle - lastSent.angle) < 0.01) return;
  lastSent = { x: Math.round(me.x * 10) / 10, y: Math.round(me.y * 10) / 10, angle: Math.round(me.angle * 1000) / 1000 };
  client.notify('tadpole.move', lastSent);
}, SEND_EVERY);

// ---- drawing ----
function resize() {
  const ratio = devicePixelRatio || 1;
  canvas.width = canvas.clientWidth * ratio;
  canvas.height = canvas.clientHeight * ratio;
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
}
addEventListener('resize', resize);
resize();

function drawTadpole(t, now, isMe) {
  const { dx: x, dy: y, angle } = t;
  const back = angle + Math.PI;
  // The tail: a tapering wiggle behind the head, faster when swimming.
  ctx.beginPath();
  for (let i = 0; i <= 14; i++) {
    const along = 9 + i * 3.2;
    const side = Math.sin(t.phase - i * 0.5) * i * 0.7;
    const px = x + Math.cos(back) * along - Math.sin(back) * side;
    const py = y + Math.sin(back) * along + Math.cos(back) * side;
    i ? ctx.lineTo(px, py) : ctx.moveTo(px, py);
  }
  ctx.strokeStyle = isMe ? 'rgba(255, 214, 102, .85)' : 'rgba(210, 236, 250, .75)';
  ctx.lineWidth = 3.5;
  ctx.lineCap = 'round';
  ctx.stroke();
  ctx.beginPath();
  ctx.ellipse(x, y, 12, 9.5, angle, 0, Math.PI * 2);
  ctx.fillStyle = isMe ? '#ffd666' : '#d2ecfa';
  ctx.fill();
  ctx.font = '12px system-ui, sans-serif';
  ctx.textAlign = 'center';
  ctx.fillStyle = isMe ? '#ffe7a3' : '#a9cde2';
  ctx.fillText(t.name, x, y + 30);
  if (t.said && now - t.saidAt < SAY_MS) {
    ctx.globalAlpha = Math.min(1, (SAY_MS - (now - t.saidAt)) / 800);
    ctx.font = '13px system-ui, sans-serif';
    const w = ctx.measureText(t.said).width + 14;
    ctx.fillStyle = 'rgba(255, 255, 255, .92)';
    ctx.beginPath();
    ctx.roundRect(x - w / 2, y - 48, w, 22, 8);
    ctx.fill();
    ctx.fillStyle = '#12354a';
    ctx.fillText(t.said, x, y - 32);
    ctx.globalAlpha = 1;
  }
}

// Specks floating in the water, the same on every page (a fixed pseudo-random sequence).
const MOTES = [];
for (let i = 0, seed = 7; i < 400; i++) {
  const next = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
  MOTES.push([next() * 2 * LIMIT - LIMIT, next() * 2 * LIMIT - LIMIT, 0.8 + next() * 1.8]);
}

let lastFrame = performance.now();
function frame(now) {
  const dt = Math.min(0.1, (now - lastFrame) / 1000);
  lastFrame = now;
  const me = pond.tadpoles.get(pond.me);
  if (me) steer(me, dt);
  for (const t of pond.tadpoles.values()) {
    const glide = t === me ? 1 : Math.min(1, dt * 12);
    const moved = Math.hypot(t.x - t.dx, t.y - t.dy);
    if (t !== me) t.speed = t.speed * 0.9 + (moved / Math.max(dt, 0.001)) * 0.1;
    t.dx += (t.x - t.dx) * glide;
    t.dy += (t.y - t.dy) * glide;
    t.phase += dt * (3 + Math.min(t.speed, SPEED) / 18);
  }
  if (me) camera = { x: me.dx, y: me.dy };

  const w = canvas.clientWidth, h = canvas.clientHeight;
  ctx.fillStyle = '#0d2b3e';
  ctx.fillRect(0, 0, w, h);
  ctx.save();
  ctx.translate(w / 2 - camera.x, h / 2 - camera.y);
  // Grid and pond edge, so that movement shows.
  ctx.strokeStyle = 'rgba(255, 255, 255, .05)';
  ctx.lineWidth = 1;
  ctx.beginPath();
  for (let g = -LIMIT; g <= LIMIT; g += 100) {
    ctx.moveTo(g, -LIMIT); ctx.lineTo(g, LIMIT);
    ctx.moveTo(-LIMIT, g); ctx.lineTo(LIMIT, g);
  }
  ctx.stroke();
  ctx.fillStyle = 'rgba(180, 220, 245, .18)';
  for (const [mx, my, r] of MOTES) {
    ctx.beginPath();
    ctx.arc(mx, my, r, 0, Math.PI * 2);
    ctx.fill();
  }
  ctx.strokeStyle = 'rgba(159, 211, 245, .35)';
  ctx.lineWidth = 3;
  ctx.strokeRect(-LIMIT, -LIMIT, 2 * LIMIT, 2 * LIMIT);
  for (const t of pond.tadpoles.values()) if (t !== me) drawTadpole(t, now, false);
  if (me) drawTadpole(me, now, true);
  ctx.restore();
  ctx.fillStyle = 'rgba(207, 227, 239, .6)';
  ctx.font = '12px system-ui, sans-serif';
  ctx.textAlign = 'right';
  ctx.fillText(`${pond.tadpoles.size} tadpole${pond.tadpoles.size === 1 ? '' : 's'} · ${Math.round(camera.x)}, ${Math.round(camera.y)}`, w - 12, h - 14);
  requestAnimationFrame(frame);
}
requestAnimationFrame(frame);

client.connect().catch(() => {}); // failures show through the close event
