// What the harness reads from a participant token (a JWT; the signature is the emulator's
// business), and a quick look at whether the token's endpoints answer at all, so that a failure
// message can say "nothing listens on events_url" instead of only "join timed out".
import net from 'node:net';

// The JWT payload, or null when `token` is not a JWT with a JSON payload.
export function decodeToken(token) {
  const parts = String(token).split('.');
  if (parts.length !== 3) return null;
  try {
    return JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
  } catch {
    return null;
  }
}

// Problems the SDK would only report slowly or obscurely; empty when none are seen.
export function tokenProblems(label, token) {
  const claims = decodeToken(token);
  if (!claims) return [`${label} is not a JWT`];
  const problems = [];
  if (typeof claims.exp === 'number' && claims.exp * 1000 <= Date.now()) {
    problems.push(`${label} expired at ${new Date(claims.exp * 1000).toISOString()}`);
  }
  // Without events_url the SDK hangs for ~60 s instead of failing.
  if (!claims.events_url) problems.push(`${label} has no events_url claim`);
  if (!claims.whip_url) problems.push(`${label} has no whip_url claim`);
  return problems;
}

// "events_url ws://127.0.0.1:9/events: connection refused" style notes for the token's endpoints.
export async function probeEndpoints(token) {
  const claims = decodeToken(token) ?? {};
  const notes = [];
  for (const key of ['events_url', 'whip_url']) {
    if (!claims[key]) continue;
    notes.push(`${key} ${claims[key]}: ${await probe(claims[key])}`);
  }
  return notes;
}

function probe(url, timeoutMs = 1000) {
  let host;
  let port;
  try {
    const u = new URL(url);
    host = u.hostname.replace(/^\[|\]$/g, '');
    port = Number(u.port) || (u.protocol === 'wss:' || u.protocol === 'https:' ? 443 : 80);
  } catch {
    return Promise.resolve('not a URL');
  }
  // The harness only ever talks to this machine; it does not probe anything else.
  if (!(host === 'localhost' || host.startsWith('127.') || host === '::1')) {
    return Promise.resolve('not probed (not a loopback address)');
  }
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (text) => {
      socket.destroy();
      resolve(text);
    };
    socket.setTimeout(timeoutMs, () => done(`no TCP answer within ${timeoutMs} ms`));
    socket.once('connect', () => done('accepts TCP connections'));
    socket.once('error', (e) => done(e.code === 'ECONNREFUSED' ? 'connection refused (nothing listens)' : e.code ?? e.message));
  });
}
