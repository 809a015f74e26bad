// pitaya.js: a small, dependency-free ES module client for the pitaya / pomelo wire protocol over WebSocket.
//
//   import { PitayaClient } from './pitaya.js';
//   const client = new PitayaClient({ url: 'ws://127.0.0.1:3251/', reconnect: true });
//   client.on('onMessage', (msg) => console.log(msg));
//   await client.connect();
//   const answer = await client.request('room.join', {});
//   client.notify('room.message', { name: 'alice', content: 'hi' });
//
// Packets: 1 type byte + 3-byte big-endian body length; messages: flag, varint id, route, JSON payload.

const PACKET = { HANDSHAKE: 1, ACK: 2, HEARTBEAT: 3, DATA: 4, KICK: 5 };
const MESSAGE = { REQUEST: 0, NOTIFY: 1, RESPONSE: 2, PUSH: 3 };
const FLAG = { ROUTE_CODE: 0x01, ZLIB: 0x10, ERROR: 0x20 };
const MAX_ID = 0xffffffff;

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

/** Builds a packet: type byte, 3-byte big-endian length, body. */
function packet(type, body = new Uint8Array(0)) {
  const out = new Uint8Array(4 + body.length);
  out.set([type, (body.length >> 16) & 0xff, (body.length >> 8) & 0xff, body.length & 0xff]);
  out.set(body, 4);
  return out;
}

/** Splits one frame into its packets (a frame may hold several). */
function splitPackets(bytes) {
  const packets = [];
  for (let at = 0; at < bytes.length;) {
    if (at + 4 > bytes.length) throw new Error('truncated packet header');
    const length = (bytes[at + 1] << 16) | (bytes[at + 2] << 8) | bytes[at + 3];
    if (at + 4 + length > bytes.length) throw new Error('truncated packet body');
    packets.push({ type: bytes[at], body: bytes.subarray(at + 4, at + 4 + length) });
    at += 4 + length;
  }
  return packets;
}

/** Protobuf-style varint of a non-negative integer up to 2^53 (arithmetic, not 32-bit bitwise ops). */
function varint(n) {
  const out = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    out.push(byte);
  } while (n > 0);
  return out;
}

/** Inflates zlib (or gzip) bytes with the browser's DecompressionStream. */
async function inflate(bytes) {
  const format = bytes[0] === 0x1f && bytes[1] === 0x8b ? 'gzip' : 'deflate';
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream(format));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Decodes a JSON payload; an empty payload is `null`. */
function decodeJson(bytes) {
  return bytes.length === 0 ? null : JSON.parse(fromUtf8.decode(bytes));
}

/** The error a failed request rejects with: `code`, `msg` and `metadata` as the server sent them. */
export class PitayaError extends Error {
  constructor(code, msg, metadata = {}) {
    super(`${code}: ${msg}`);
    this.name = 'PitayaError';
    this.code = code;
    this.msg = msg;
    this.metadata = metadata;
  }
}

/**
 * A pitaya / pomelo client over WebSocket.
 *
 * Events (`on(name, fn)`): `open` (handshake done, also after each reconnect), `close` ({code, reason,
 * willReconnect}), `kick` (the reason object, `{}` when the server sent none), `error` (an Error), and any
 * push route such as `onMessage` (the decoded JSON body).
 */
export class PitayaClient {
  /**
   * @param {object} [options]
   * @param {string} [options.url] WebSocket URL; defaults to `ws(s)://<this page's host>/`.
   * @param {object} [options.handshake] The handshake JSON sent to the server.
   * @param {boolean} [options.reconnect=false] Reconnect with exponential backoff when the connection is lost.
   * @param {number} [options.timeout=10000] Request (and handshake) timeout in milliseconds.
   */
  constructor(options = {}) {
    const here = globalThis.location;
    this.url = options.url ?? `${here?.protocol === 'https:' ? 'wss' : 'ws'}://${here?.host}/`;
    this.handshake = options.handshake ?? { sys: { type: 'js-websocket', version: '0.1.0' }, user: {} };
    this.reconnect = options.reconnect ?? false;
    this.timeout = options.timeout ?? 10000;
    /** route -> code, from the server's handshake. */
    this.dict = {};
    /** code -> route. */
    this.reverseDict = {};
    /** Heartbeat interval in seconds (0: none). */
    this.heartbeat = 0;
    this.connected = false;
    this._handlers = new Map();
    this._pending = new Map();
    this._nextId = 1;
    this._ws = null;
    this._chain = Promise.resolve();
    this._timers = {};
    this._attempts = 0;
    this._stopped = false;
    this._ready = null;
  }

  /**
   * Opens the connection and completes the handshake.
   * @returns {Promise<object>} the server's handshake reply. With `reconnect`, a failed attempt is also retried
   *   in the background (listen for `open`).
   */
  connect() {
    this._stopped = false;
    if (this._ws) return this._ready;
    clearTimeout(this._timers.reconnect);
    const ws = new WebSocket(this.url);
    ws.binaryType = 'arraybuffer';
    this._ws = ws;
    this._ready = new Promise((resolve, reject) => {
      this._handshakeDone = { resolve, reject };
      this._timers.handshake = setTimeout(() => this._drop(ws, 4000, 'handshake timed out'), this.timeout);
    });
    ws.onopen = () => ws.send(packet(PACKET.HANDSHAKE, utf8.encode(JSON.stringify(this.handshake))));
    ws.onmessage = (event) => {
      if (!(event.data instanceof ArrayBuffer)) return; // the protocol uses binary frames only
      let packets;
      try {
        packets = splitPackets(new Uint8Array(event.data));
      } catch (err) {
        return this._drop(ws, 4002, err.message);
      }
      // Decoding may await an inflate: chain every packet so they are handled in arrival order.
      for (const p of packets) {
        this._chain = this._chain.then(() => this._onPacket(ws, p)).catch((err) => this._drop(ws, 4002, err.message));
      }
    };
    // Closing goes through the chain too, so a kick or push still being inflated is handled first.
    ws.onclose = (event) => {
      this._chain = this._chain.then(() => this._drop(ws, event.code, event.reason || 'connection closed'));
    };
    ws.onerror = () => {}; // onclose follows and says the rest
    return this._ready;
  }

  /**
   * Sends a request and waits for its response.
   * @param {string} route e.g. `room.join`
   * @param {*} [body={}] JSON-encoded
   * @param {{timeout?: number}} [options]
   * @returns {Promise<*>} the decoded response; rejects with a {@link PitayaError}: the server's error (a
   *   response with flag 0x20: `code`, `msg`, `metadata`), or code `TIMEOUT` or `CLOSED`.
   */
  request(route, body = {}, options = {}) {
    if (!this.connected) return Promise.reject(new PitayaError('CLOSED', 'not connected'));
    const id = this._nextId;
    this._nextId = id >= MAX_ID ? 1 : id + 1;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new PitayaError('TIMEOUT', `request ${route} timed out`));
      }, options.timeout ?? this.timeout);
      this._pending.set(id, { resolve, reject, timer });
      try {
        this._sendMessage(MESSAGE.REQUEST, id, route, body);
      } catch (err) {
        clearTimeout(timer);
        this._pending.delete(id);
        reject(err);
      }
    });
  }

  /**
   * Sends a notify: no response, not even an error.
   * @param {string} route
   * @param {*} [body={}]
   * @throws {PitayaError} `CLOSED` when not connected.
   */
  notify(route, body = {}) {
    if (!this.connected) throw new PitayaError('CLOSED', 'not connected');
    this._sendMessage(MESSAGE.NOTIFY, 0, route, body);
  }

  /**
   * Listens to a push route (`onMessage`) or an event (`open`, `close`, `kick`, `error`).
   * @param {string} name
   * @param {function(*): void} handler
   * @returns {PitayaClient} this
   */
  on(name, handler) {
    if (!this._handlers.has(name)) this._handlers.set(name, new Set());
    this._handlers.get(name).add(handler);
    return this;
  }

  /**
   * Removes a handler added with {@link PitayaClient#on}; without a handler, removes all of that name.
   * @param {string} name
   * @param {function(*): void} [handler]
   * @returns {PitayaClient} this
   */
  off(name, handler) {
    if (handler) this._handlers.get(name)?.delete(handler);
    else this._handlers.delete(name);
    return this;
  }

  /** Closes the connection for good (no reconnect); pending requests reject with `CLOSED`. */
  close() {
    this._stopped = true;
    clearTimeout(this._timers.reconnect);
    if (this._ws) this._drop(this._ws, 1000, 'closed by client');
  }

  // ---- internals ----

  _emit(name, value) {
    for (const handler of [...(this._handlers.get(name) ?? [])]) {
      try {
        handler(value);
      } catch (err) {
        console.error(`pitaya: a handler of ${name} threw`, err);
      }
    }
  }

  /** Decodes JSON; an undecodable payload is an `error` event and `undefined`, not a broken connection. */
  _tryDecode(bytes, what) {
    try {
      return decodeJson(bytes);
    } catch (err) {
      this._emit('error', new Error(`undecodable ${what} payload: ${err.message}`));
      return undefined;
    }
  }

  _send(bytes) {
    if (this._ws?.readyState === WebSocket.OPEN) this._ws.send(bytes);
  }

  _sendMessage(type, id, route, body) {
    const code = this.dict[route];
    const flag = (type << 1) | (code !== undefined ? FLAG.ROUTE_CODE : 0);
    const head = [flag];
    if (type === MESSAGE.REQUEST) head.push(...varint(id));
    if (code !== undefined) {
      head.push((code >> 8) & 0xff, code & 0xff);
    } else {
      const name = utf8.encode(route);
      if (name.length > 255) throw new PitayaError('PIT-400', 'route longer than 255 bytes');
      head.push(name.length, ...name);
    }
    const payload = utf8.encode(JSON.stringify(body ?? {}));
    const message = new Uint8Array(head.length + payload.length);
    message.set(head);
    message.set(payload, head.length);
    this._send(packet(PACKET.DATA, message));
  }

  async _onPacket(ws, { type, body }) {
    if (ws !== this._ws) return; // a packet of a connection already dropped
    this._alive();
    switch (type) {
      case PACKET.HANDSHAKE: return this._onHandshake(ws, body[0] === 0x78 ? await inflate(body) : body);
      case PACKET.HEARTBEAT: return;
      case PACKET.DATA: return this._onMessage(body);
      case PACKET.KICK:
        this._kicked = true;
        this._emit('kick', this._tryDecode(body, 'kick') ?? {});
        return;
      default: throw new Error(`unknown packet type ${type}`);
    }
  }

  _onHandshake(ws, body) {
    const reply = decodeJson(body);
    if (ws !== this._ws) return;
    if (reply?.code !== 200) return this._drop(ws, 4001, `handshake refused: ${reply?.code}`);
    const serializer = reply.sys?.serializer ?? 'json';
    if (serializer !== 'json') return this._drop(ws, 4001, `unsupported serializer ${serializer}`);
    this.dict = reply.sys?.dict ?? {};
    this.reverseDict = Object.fromEntries(Object.entries(this.dict).map(([route, code]) => [code, route]));
    this.heartbeat = reply.sys?.heartbeat ?? 0;
    clearTimeout(this._timers.handshake);
    this._send(packet(PACKET.ACK));
    if (this.heartbeat > 0) {
      this._timers.beat = setInterval(() => this._send(packet(PACKET.HEARTBEAT)), this.heartbeat * 1000);
    }
    this._alive();
    this.connected = true;
    this._attempts = 0;
    this._handshakeDone.resolve(reply);
    this._emit('open', reply);
  }

  async _onMessage(bytes) {
    const flag = bytes[0];
    const type = (flag >> 1) & 7;
    let at = 1;
    let id = 0;
    if (type === MESSAGE.REQUEST || type === MESSAGE.RESPONSE) {
      for (let scale = 1; ; scale *= 128) {
        if (at >= bytes.length) throw new Error('truncated message id');
        const byte = bytes[at++];
        id += (byte & 0x7f) * scale;
        if (!(byte & 0x80)) break;
      }
    }
    let route = null;
    if (type !== MESSAGE.RESPONSE) {
      if (flag & FLAG.ROUTE_CODE) {
        const code = (bytes[at] << 8) | bytes[at + 1];
        route = this.reverseDict[code];
        if (route === undefined) throw new Error(`unknown route code ${code}`);
        at += 2;
      } else {
        const length = bytes[at++];
        route = fromUtf8.decode(bytes.subarray(at, at + length));
        at += length;
      }
    }
    let payload = bytes.subarray(at);
    if (flag & FLAG.ZLIB) payload = await inflate(payload);
    if (type === MESSAGE.RESPONSE) return this._onResponse(id, flag, payload);
    if (type === MESSAGE.PUSH) {
      const value = this._tryDecode(payload, route);
      return value === undefined ? undefined : this._emit(route, value);
    }
    throw new Error(`unexpected message type ${type}`);
  }

  _onResponse(id, flag, payload) {
    const pending = this._pending.get(id);
    if (!pending) return; // timed out already
    this._pending.delete(id);
    clearTimeout(pending.timer);
    let value;
    try {
      value = decodeJson(payload);
    } catch (err) {
      return pending.reject(new PitayaError('PIT-000', `undecodable response: ${err.message}`));
    }
    if (flag & FLAG.ERROR) pending.reject(new PitayaError(value?.code ?? 'PIT-000', value?.msg ?? '', value?.metadata ?? {}));
    else pending.resolve(value);
  }

  /** Something arrived: the server is alive for another 2 heartbeat intervals. */
  _alive() {
    clearTimeout(this._timers.dead);
    if (this.heartbeat > 0) {
      const ws = this._ws;
      this._timers.dead = setTimeout(() => this._drop(ws, 4003, 'server silent for 2 heartbeats'), this.heartbeat * 2000);
    }
  }

  /** Ends connection `ws` (once), fails what waits on it, and schedules a reconnect if wanted. */
  _drop(ws, code, reason) {
    if (ws !== this._ws) return;
    this._ws = null;
    const wasConnected = this.connected;
    this.connected = false;
    for (const name of ['handshake', 'beat', 'dead']) {
      clearTimeout(this._timers[name]);
      clearInterval(this._timers[name]);
    }
    try {
      ws.close(code >= 4000 || code === 1000 ? code : 1000, reason.slice(0, 60));
    } catch { /* already closed */ }
    for (const { reject, timer } of this._pending.values()) {
      clearTimeout(timer);
      reject(new PitayaError('CLOSED', reason));
    }
    this._pending.clear();
    const willReconnect = this.reconnect && !this._stopped && !this._kicked;
    this._kicked = false;
    if (!wasConnected) this._handshakeDone.reject(new PitayaError('CLOSED', reason));
    this._emit('close', { code, reason, willReconnect });
    if (willReconnect) {
      const delay = Math.min(30000, 500 * 2 ** this._attempts++) * (0.75 + Math.random() / 2);
      this._timers.reconnect = setTimeout(() => this.connect().catch(() => {}), delay);
    }
  }
}

export default PitayaClient;
