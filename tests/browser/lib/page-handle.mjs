// One participant page as Node sees it: its SDK event log (pushed by page.js), its console,
// failed requests to loopback (the emulator), and its events-socket traffic. It turns these into
// stderr lines, artifact logs, and the context that makes a failure message self-explanatory.
import fs from 'node:fs';
import path from 'node:path';

const stderr = (line) => process.stderr.write(`${line}\n`);
const stamp = () => new Date().toISOString();

export class PageHandle {
  constructor(name, context, page, origin) {
    this.name = name;
    this.context = context;
    this.page = page;
    this.origin = origin; // the harness's own server: its requests are not the emulator's
    this.events = []; // page.js notes: {t, wall, kind, text}
    this.console = []; // everything, for <name>-console.log
    this.httpErrors = []; // failed loopback requests, newest last
    this.wsIn = []; // events-socket frame types received
    this.wsOut = []; // ... and sent
    this.blocked = new Set(); // non-loopback URLs already reported as blocked
    this.wsFailures = 0; // events-socket failures in a row
    // Rejected when the page hits a failure only Node can see; waits race it.
    this.broken = new Promise((_, reject) => (this.breaks = reject));
    this.broken.catch(() => {});
  }

  // Wire the listeners; call before the page loads.
  async observe() {
    const { name, page } = this;
    await this.context.exposeFunction('harnessNote', (entry) => void this.events.push(entry));
    page.on('console', (msg) => {
      // "Failed to load resource" carries its URL only in the location.
      const where = msg.location()?.url;
      const text = where && !msg.text().includes(where) ? `${msg.text()} (${where})` : msg.text();
      this.console.push(`${stamp()} ${msg.type()}: ${text}`);
      if (msg.type() !== 'error') return;
      if (where && !isLoopback(where) && text.includes('ERR_NAME_NOT_RESOLVED')) {
        // The SDK's telemetry/remote config, stopped by --host-resolver-rules as intended.
        // It retries all the time: say so once per URL.
        if (!this.blocked.has(where)) stderr(`[${name}] blocked as intended (not loopback): ${where}`);
        this.blocked.add(where);
      } else {
        stderr(`[${name}] console.error: ${text}`);
      }
    });
    page.on('pageerror', (e) => {
      this.console.push(`${stamp()} pageerror: ${e.stack ?? e}`);
      stderr(`[${name}] uncaught: ${String(e.message ?? e).split('\n')[0]}`);
    });
    page.on('crash', () => {
      stderr(`[${name}] page crashed`);
      this.breaks(new Error('the page crashed'));
    });
    // Failures talking to the emulator (loopback) matter; the blocked telemetry hosts don't.
    page.on('response', (res) => {
      if (res.status() < 400 || !isLoopback(res.url()) || res.url().startsWith(this.origin)) return;
      // Chromium's console already reports these on stderr ("Failed to load resource: ... 503").
      this.#httpError(`${res.request().method()} ${res.url()} -> HTTP ${res.status()}`, false);
    });
    page.on('requestfailed', (req) => {
      if (!isLoopback(req.url())) return;
      this.#httpError(`request failed: ${req.method()} ${req.url()} ${req.failure()?.errorText ?? ''}`);
    });
    // The SDK retries a failed events socket with backoff for a long time (join() never rejects
    // when nothing listens). Against a local emulator a failed connection or handshake is a bug,
    // not weather: two failures in a row end the page's current wait with Chromium's reason
    // (e.g. connection refused, or the token subprotocol not echoed).
    page.on('websocket', (ws) => {
      const url = ws.url().split('?')[0];
      this.console.push(`${stamp()} websocket open ${url}`);
      ws.on('framereceived', (f) => {
        this.wsFailures = 0;
        this.wsIn.push(frameType(f.payload));
      });
      ws.on('framesent', (f) => this.wsOut.push(frameType(f.payload)));
      ws.on('socketerror', (e) => {
        stderr(`[${name}] websocket ${url}: ${e}`);
        if (++this.wsFailures >= 2) {
          this.breaks(new Error(`the events socket ${url} failed ${this.wsFailures} times in a row, last: ${e}`));
        }
      });
      ws.on('close', () => this.console.push(`${stamp()} websocket closed ${url}`));
    });
  }

  #httpError(line, toStderr = true) {
    this.httpErrors.push(line);
    this.console.push(`${stamp()} ${line}`);
    if (toStderr) stderr(`[${this.name}] ${line}`);
  }

  // What the page was doing lately, for error messages.
  recent(n = 6) {
    const tail = this.events
      .filter((e) => e.kind !== 'FATAL') // already the headline
      .slice(-n)
      .map((e) => `${(e.t / 1000).toFixed(2)}s ${e.kind} ${e.text}`.trim().slice(0, 240));
    const parts = [tail.length ? `last page events: ${tail.join(' | ')}` : 'no SDK events on the page'];
    if (this.wsIn.length || this.wsOut.length || this.events.some((e) => e.kind === 'join-called')) {
      parts.push(`events socket frames received: ${tally(this.wsIn)}; sent: ${tally(this.wsOut)}`);
    }
    if (this.httpErrors.length) parts.push(`last failed loopback request: ${this.httpErrors.at(-1)}`);
    return parts.join('; ');
  }

  writeLogs(dir) {
    fs.writeFileSync(path.join(dir, `${this.name}-events.json`), `${JSON.stringify(this.events, null, 1)}\n`);
    fs.writeFileSync(path.join(dir, `${this.name}-console.log`), `${this.console.join('\n')}\n`);
  }
}

// The `type` of an events-socket frame (JSON text), for a short tally in error messages.
function frameType(payload) {
  try {
    return JSON.parse(String(payload)).type ?? '(no type)';
  } catch {
    return '(not JSON)';
  }
}

function tally(types) {
  if (!types.length) return 'none';
  const counts = new Map();
  for (const t of types) counts.set(t, (counts.get(t) ?? 0) + 1);
  return [...counts].map(([t, n]) => (n > 1 ? `${t} x${n}` : t)).join(', ');
}

function isLoopback(url) {
  try {
    const host = new URL(url).hostname;
    return host === 'localhost' || host.startsWith('127.') || host === '[::1]';
  } catch {
    return false;
  }
}
