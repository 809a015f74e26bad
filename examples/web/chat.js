// The chat demo: joins the `room` component on load and shows its members and messages.
import { PitayaClient } from './pitaya.js';

const $ = (id) => document.getElementById(id);
const nameField = $('name'), input = $('input'), send = $('send'), log = $('log'), status = $('status');
const members = new Set();

nameField.value = localStorage.getItem('chat.name') || `guest-${Math.floor(Math.random() * 9000 + 1000)}`;
nameField.addEventListener('change', () => localStorage.setItem('chat.name', nameField.value.trim()));

function setStatus(text, kind = '') {
  status.textContent = text;
  status.className = `status ${kind}`;
}

function addLine(who, text, system = false) {
  const li = document.createElement('li');
  if (system) li.className = 'system';
  if (who) {
    const b = document.createElement('span');
    b.className = 'who';
    b.textContent = who;
    li.append(b);
  }
  li.append(text);
  const atBottom = log.parentElement.scrollTop + log.parentElement.clientHeight >= log.parentElement.scrollHeight - 4;
  log.append(li);
  if (atBottom) li.scrollIntoView({ block: 'end' });
}

function showMembers() {
  $('members').replaceChildren(...[...members].map((uid) => {
    const li = document.createElement('li');
    li.textContent = uid;
    return li;
  }));
}

function setEnabled(on) {
  input.disabled = send.disabled = !on;
}

// The host serves this page on its WebSocket port; `?ws=ws://HOST:PORT/` points the page elsewhere.
const client = new PitayaClient({
  url: new URLSearchParams(location.search).get('ws') || `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/`,
  handshake: { sys: { type: 'js-websocket', version: '0.1.0' }, user: {} },
  reconnect: true,
});

client.on('onMembers', ({ members: uids }) => {
  members.clear();
  for (const uid of uids) members.add(String(uid));
  showMembers();
});
client.on('onNewUser', ({ content }) => {
  addLine('', content, true);
  const uid = /New user: (.+)$/.exec(content)?.[1];
  if (uid) members.add(uid), showMembers();
});
client.on('onMessage', ({ name, content }) => addLine(`${name}:`, content));

// Join on every (re)connection.
client.on('open', async () => {
  setStatus('joining…');
  try {
    await client.request('room.join', {});
    setStatus('connected', 'ok');
    setEnabled(true);
    input.focus();
  } catch (err) {
    setStatus(`join failed: ${err.message}`, 'bad');
  }
});
client.on('close', ({ reason, willReconnect }) => {
  setEnabled(false);
  setStatus(willReconnect ? `disconnected (${reason}), reconnecting…` : `disconnected (${reason})`, 'bad');
});
client.on('kick', ({ reason }) => addLine('', `Kicked by the server${reason ? `: ${reason}` : ''}.`, true));

$('compose').addEventListener('submit', (event) => {
  event.preventDefault();
  const content = input.value.trim();
  if (!content || !client.connected) return;
  client.notify('room.message', { name: nameField.value.trim() || 'anonymous', content });
  input.value = '';
});

client.connect().catch(() => {}); // failures show through the close event
