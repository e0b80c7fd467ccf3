// The one GraphQL client the pages share: queries and mutations over HTTP POST, subscriptions over
// one graphql-transport-ws WebSocket per page that reconnects by itself and re-subscribes what was
// open. Errors come back as GqlError with the server's `extensions.code` (see ErrorCode in
// schema.graphql), or NETWORK when the node could not be reached at all.

export class GqlError extends Error {
  constructor(code, message, errors = []) {
    super(message);
    this.name = 'GqlError';
    this.code = code;
    this.errors = errors;
  }
}

const ENDPOINT = '/graphql';

function firstError(errors) {
  const e = errors[0] || {};
  return new GqlError(e.extensions?.code || 'INTERNAL', e.message || 'the request failed', errors);
}

/** Runs a query or mutation; resolves to `data`, rejects with a GqlError. */
export async function gql(query, variables = {}, { key } = {}) {
  const headers = { 'content-type': 'application/json' };
  if (key) headers.authorization = `Bearer ${key}`;
  let res;
  try {
    res = await fetch(ENDPOINT, { method: 'POST', headers, body: JSON.stringify({ query, variables }) });
  } catch (e) {
    throw new GqlError('NETWORK', `the node cannot be reached (${e.message})`);
  }
  let body;
  try {
    body = await res.json();
  } catch {
    throw new GqlError('NETWORK', `the node answered HTTP ${res.status} without a GraphQL body`);
  }
  if (body.errors?.length) throw firstError(body.errors);
  return body.data;
}

/** Like `gql`, for a request that must still go out while the page unloads (e.g. `leave`). */
export function gqlOnUnload(query, variables = {}) {
  try {
    fetch(ENDPOINT, {
      method: 'POST',
      keepalive: true,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query, variables }),
    }).catch(() => {});
  } catch {
    // the page is going away; nothing to report to
  }
}

// Close codes after which reconnecting cannot help: the key was refused.
const FATAL_CLOSE = new Set([4401, 4403]);

/**
 * One WebSocket for all of a page's subscriptions.
 *
 *   const live = new Live({ key, onStatus: (s, why) => ... });
 *   const stop = live.subscribe(doc, vars, { next(data) {}, error(e) {}, complete() {} });
 *
 * `onStatus` gets 'connecting', 'open', 'reconnecting' (with the reason) or 'refused' (the key
 * was not accepted; no retry). Subscriptions open during a drop are sent again after the
 * reconnect: each then starts over with its first message (the current state).
 */
export class Live {
  constructor({ key = null, onStatus = () => {} } = {}) {
    this.key = key;
    this.onStatus = onStatus;
    this.ops = new Map(); // id -> { payload, sink }
    this.nextId = 1;
    this.ws = null;
    this.acked = false;
    this.closed = false;
    this.backoffMs = 500;
    this.timer = null;
    // A device that loses its network may keep a dead socket open for minutes: drop it at once
    // (the page says "reconnecting"), and try again the moment the network is back.
    addEventListener('offline', () => this.ws?.close(4000, 'the network is offline'));
    addEventListener('online', () => {
      if (this.ws || this.closed || this.ops.size === 0) return;
      clearTimeout(this.timer);
      this.backoffMs = 500;
      this.#connect();
    });
  }

  subscribe(query, variables, sink) {
    const id = String(this.nextId++);
    this.ops.set(id, { payload: { query, variables }, sink });
    if (this.acked) this.#send({ id, type: 'subscribe', payload: { query, variables } });
    else this.#connect();
    return () => {
      if (!this.ops.delete(id)) return;
      if (this.acked) this.#send({ id, type: 'complete' });
    };
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    this.ops.clear();
    if (this.ws) this.ws.close(1000, 'page closed');
  }

  #send(msg) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  #connect() {
    if (this.ws || this.closed) return;
    this.onStatus('connecting');
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${ENDPOINT}`;
    const ws = new WebSocket(url, 'graphql-transport-ws');
    this.ws = ws;
    ws.onopen = () => ws.send(JSON.stringify({ type: 'connection_init', payload: this.key ? { token: this.key } : {} }));
    ws.onmessage = (ev) => this.#onMessage(ev.data);
    ws.onclose = (ev) => this.#onClose(ev);
  }

  #onMessage(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    const op = msg.id != null ? this.ops.get(msg.id) : null;
    switch (msg.type) {
      case 'connection_ack':
        this.acked = true;
        this.backoffMs = 500;
        this.onStatus('open');
        for (const [id, o] of this.ops) this.#send({ id, type: 'subscribe', payload: o.payload });
        break;
      case 'ping':
        this.#send({ type: 'pong' });
        break;
      case 'next':
        if (!op) break;
        if (msg.payload?.errors?.length) op.sink.error?.(firstError(msg.payload.errors));
        else op.sink.next?.(msg.payload.data);
        break;
      case 'error':
        if (!op) break;
        this.ops.delete(msg.id);
        op.sink.error?.(firstError(Array.isArray(msg.payload) ? msg.payload : [msg.payload]));
        break;
      case 'complete':
        if (!op) break;
        this.ops.delete(msg.id);
        op.sink.complete?.();
        break;
    }
  }

  #onClose(ev) {
    this.ws = null;
    this.acked = false;
    if (this.closed) return;
    const why = ev.reason || `connection closed (${ev.code})`;
    if (FATAL_CLOSE.has(ev.code)) {
      this.onStatus('refused', why.replace(/^Forbidden: /, ''));
      for (const [, o] of this.ops) o.sink.error?.(new GqlError('UNAUTHENTICATED', why));
      this.ops.clear();
      return;
    }
    if (this.ops.size === 0) return; // reconnect on the next subscribe
    this.onStatus('reconnecting', why);
    this.timer = setTimeout(() => this.#connect(), this.backoffMs);
    this.backoffMs = Math.min(this.backoffMs * 2, 8000);
  }
}
