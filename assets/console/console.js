// The operator console: behind an admin key kept in this tab's session storage (never in a URL).
// Broadcasts and their stages, live numbers with hand-drawn SVG charts, the scaler's last decision,
// the stage event log, the cluster's nodes, the fleet policy and API keys. Server data is only
// ever put in the page as text (h(), textContent), never as HTML.
import { gql, Live } from '/js/gql.js';
import { h, fill, storedKey, explain, showBackend } from '/js/site.js';

const $ = (id) => document.getElementById(id);
const SVG_NS = 'http://www.w3.org/2000/svg';
const KEY_NAME = 'admin';
const BROADCASTS_EVERY_MS = 5000;
const SCALER_EVERY_MS = 3000;
const CHART_TICK_MS = 2000;
const CHART_WINDOW_MS = 5 * 60 * 1000;
const EVENTS_KEPT = 200;

// ---------------------------------------------------------------------------------------------
// Small helpers

/** Shows `text` in a message area: kind 'ok' | 'info' | 'warn' | 'error' ('' clears it). */
function say(el, kind, text = '') {
  // The role (status or alert) stays what the page gave it: live regions must exist before they speak.
  el.className = kind ? `msg ${kind}` : 'msg';
  el.textContent = text;
}

function fmtTime(value) {
  if (value == null || value === '') return '—';
  const d = typeof value === 'number' ? new Date(value) : new Date(value);
  return Number.isNaN(d.getTime()) ? String(value) : d.toLocaleString();
}

function fmtClock(ms) {
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? String(ms) : d.toLocaleTimeString([], { hour12: false });
}

function isoOf(ms) {
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? null : d.toISOString();
}

function fmtInt(n) {
  return n == null ? '—' : Number(n).toLocaleString();
}

function fmtRate(x) {
  if (x == null) return '—';
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
}

const BROADCAST_BADGE = { LIVE: 'live', STARTING: 'creating', ENDING: 'draining', ENDED: '' };
const STAGE_BADGE = { CREATING: 'creating', WAITING: 'waiting', READY: 'ready', DRAINING: 'draining', DELETING: 'deleting' };
const REPLICATION_BADGE = { PENDING: 'pending', ACTIVE: 'active', FAILED: 'failed' };
const STEP_BADGE = {
  CREATING: 'creating', CREATED: 'waiting', READY: 'ready', WAITING: 'waiting', DRAINING: 'draining',
  REPLICATION: 'pending', CREATE_FAILED: 'failed', DELETING: 'deleting', DELETE_FAILED: 'failed',
  DELETED: 'deleting', RECLAIMED: 'pending',
};

function badge(text, cls) {
  return h('span', { class: cls ? `badge ${cls}` : 'badge' }, text);
}

function setBadge(el, text, cls) {
  el.className = cls ? `badge ${cls}` : 'badge';
  el.textContent = text;
}

/** A capacity bar for `used` of `total` seats, with a text equivalent for screen readers. */
function capacityBar(used, total) {
  const pct = total > 0 ? Math.min(100, Math.round((used / total) * 100)) : 0;
  const bar = h('div', {
    class: total > 0 && used >= total ? 'bar full' : 'bar',
    role: 'meter',
    'aria-valuemin': 0,
    'aria-valuemax': total,
    'aria-valuenow': used,
    'aria-label': `${used} of ${total} seats taken`,
  });
  const span = h('span');
  span.style.width = `${pct}%`;
  bar.append(span);
  return bar;
}

/**
 * Keeps a tbody's rows in step with `items` by key, updating rows in place so that focus, a
 * checkbox's state or a disabled button survive a refresh.
 */
function syncRows(tbody, items, keyOf, create) {
  const rows = tbody._rows || (tbody._rows = new Map());
  const seen = new Set();
  let prev = null;
  for (const item of items) {
    const key = keyOf(item);
    seen.add(key);
    let row = rows.get(key);
    if (!row) {
      row = create(item);
      rows.set(key, row);
    }
    row.update(item);
    const want = prev ? prev.nextSibling : tbody.firstChild;
    if (want !== row.tr) tbody.insertBefore(row.tr, want);
    prev = row.tr;
  }
  for (const [key, row] of rows) {
    if (!seen.has(key)) {
      row.tr.remove();
      rows.delete(key);
    }
  }
}

/** Shows one muted row saying `text` while a table has nothing else to show. */
function emptyRow(tbody, cols, text, isEmpty) {
  for (const tr of tbody.querySelectorAll('tr.empty')) tr.remove();
  if (isEmpty) tbody.append(h('tr', { class: 'empty' }, h('td', { colspan: cols, class: 'muted' }, text)));
}

function clearRows(tbody) {
  tbody._rows?.clear();
  tbody.replaceChildren();
}

// ---------------------------------------------------------------------------------------------
// Session: the key, the socket, the timers

const session = {
  key: null,
  live: null,
  timers: [],
  nodeStop: null,
  node: null, // last NodeStatus
};

function authFailed(e) {
  return e?.code === 'UNAUTHENTICATED';
}

/** Runs a query or mutation with the admin key; a refused key signs the page out. */
async function api(query, variables = {}) {
  try {
    return await gql(query, variables, { key: session.key });
  } catch (e) {
    if (authFailed(e) && session.key) signOut(`The node no longer accepts this key: ${explain(e)}`);
    throw e;
  }
}

/**
 * Disables `button` while `work()` runs, then shows what it returned (a string) or the error in
 * `msgEl`. Returns work's result, or undefined after an error.
 */
async function act(button, msgEl, work) {
  if (button) button.disabled = true;
  if (msgEl) say(msgEl, 'info', 'Working…');
  try {
    const r = await work();
    if (msgEl) {
      if (typeof r === 'string') say(msgEl, 'ok', r);
      else if (r && typeof r === 'object' && r.text) say(msgEl, r.kind || 'ok', r.text);
      else say(msgEl, '');
    }
    return r;
  } catch (e) {
    if (msgEl && session.key) say(msgEl, 'error', explain(e));
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

/**
 * The role of `key`: 'ADMIN' | 'HOST' | 'VIEWER', null when the node sees no key, or '' for a valid
 * key of another role that an older node could not name. Throws GqlError (UNAUTHENTICATED for a
 * wrong key).
 */
async function roleOf(key) {
  try {
    const d = await gql('{ me { role } }', {}, { key });
    return d.me?.role ?? null;
  } catch (e) {
    // A node without `me` answers BAD_REQUEST (unknown field): ask for something only an admin may.
    if (e.code !== 'BAD_REQUEST') throw e;
    try {
      await gql('{ apiKeys { id } }', {}, { key });
      return 'ADMIN';
    } catch (e2) {
      if (e2.code === 'FORBIDDEN') return '';
      throw e2;
    }
  }
}

async function signIn(key, { silent = false } = {}) {
  const err = $('signin-error');
  const button = $('sign-in');
  say(err, '');
  button.disabled = true;
  try {
    const role = await roleOf(key);
    if (role !== 'ADMIN') {
      storedKey.clear(KEY_NAME);
      say(
        err,
        'error',
        role
          ? `This is a ${role.toUpperCase()} key; the console needs an admin key.`
          : role === ''
            ? 'This key is not an admin key; the console needs an admin key.'
            : 'The node saw no key; the console needs an admin key.',
      );
      return false;
    }
    storedKey.set(KEY_NAME, key);
    start(key, { focus: !silent });
    return true;
  } catch (e) {
    if (authFailed(e)) storedKey.clear(KEY_NAME);
    say(err, 'error', silent && authFailed(e) ? `The key saved in this tab was refused. ${explain(e)}` : explain(e));
    return false;
  } finally {
    button.disabled = false;
  }
}

function start(key, { focus = true } = {}) {
  session.key = key;
  $('admin-key').value = '';
  $('signin').hidden = true;
  $('console').hidden = false;
  $('signed-in-role').textContent = 'admin';
  session.live = new Live({ key, onStatus: liveStatus });
  watchNode();
  refreshBroadcasts({ autoSelect: true });
  loadPolicy();
  loadKeys();
  session.timers.push(setInterval(() => refreshBroadcasts(), BROADCASTS_EVERY_MS));
  session.timers.push(setInterval(() => refreshScaler(), SCALER_EVERY_MS));
  if (focus) $('sign-out').focus();
}

function signOut(message = '') {
  const live = session.live;
  session.key = null;
  session.live = null;
  for (const t of session.timers) clearInterval(t);
  session.timers = [];
  unselect();
  session.nodeStop = null;
  session.node = null;
  live?.close();
  storedKey.clear(KEY_NAME);
  // Forget everything shown for this key.
  clearRows($('broadcast-list'));
  clearRows($('key-list'));
  clearRows($('members').tBodies[0]);
  hideNewKey();
  for (const id of ['broadcasts-error', 'broadcasts-msg', 'start-msg', 'policy-msg', 'keys-msg', 'key-create-msg', 'nodes-msg']) say($(id), '');
  $('console').hidden = true;
  $('signin').hidden = false;
  say($('signin-error'), message ? 'error' : '', message);
  $('admin-key').focus();
}

function liveStatus(status, why) {
  const el = $('live-status');
  el.dataset.status = status;
  switch (status) {
    case 'connecting':
      el.textContent = 'connecting…';
      break;
    case 'open':
      el.textContent = 'live';
      break;
    case 'reconnecting':
      el.textContent = `reconnecting… (${why})`;
      break;
    case 'refused':
      el.textContent = `refused: ${why}`;
      if (session.key) signOut(`The node refused this key on the live connection: ${why}. Sign in again.`);
      break;
    default:
      el.textContent = status;
  }
}

// ---------------------------------------------------------------------------------------------
// Nodes

const NODE_SUB = `subscription { node { nodeId leaderId isLeader term lastAppliedIndex ivsBackend subscribers
  members { nodeId raftAddr voter lag } } }`;

function watchNode() {
  session.nodeStop = session.live.subscribe(NODE_SUB, {}, {
    next: (d) => showNode(d.node),
    error: (e) => say($('nodes-msg'), 'error', explain(e)),
  });
}

function showNode(n) {
  session.node = n;
  say($('nodes-msg'), '');
  $('node-id').textContent = `${n.nodeId}${n.isLeader ? ' (leader)' : ''}`;
  $('node-leader').textContent = n.leaderId == null ? 'none known' : String(n.leaderId);
  $('node-term').textContent = String(n.term);
  $('node-applied').textContent = n.lastAppliedIndex == null ? '—' : String(n.lastAppliedIndex);
  $('node-ivs').textContent = n.ivsBackend;
  $('node-subscribers').textContent = String(n.subscribers);
  const members = [...n.members].sort((a, b) => a.nodeId - b.nodeId);
  syncRows($('members').tBodies[0], members, (m) => m.nodeId, () => {
    const node = h('td');
    const addr = h('td', { class: 'mono' });
    const voter = h('td');
    const lag = h('td');
    const tr = h('tr', {}, node, addr, voter, lag);
    return {
      tr,
      update(m) {
        // The node status of this update, not of the one that made the row.
        const now = session.node;
        tr.dataset.nodeId = m.nodeId;
        tr.classList.toggle('leader', m.nodeId === now.leaderId);
        fill(
          node,
          String(m.nodeId),
          m.nodeId === now.leaderId ? [' ', badge('leader', 'live')] : null,
          m.nodeId === now.nodeId ? h('span', { class: 'muted small' }, ' (this node)') : null,
        );
        addr.textContent = m.raftAddr;
        voter.textContent = m.voter ? 'voter' : 'learner';
        lag.textContent = m.lag == null ? '—' : String(m.lag);
      },
    };
  });
}

// ---------------------------------------------------------------------------------------------
// Broadcasts

const BROADCASTS_Q = '{ broadcasts { id name state viewers capacity fanout createdAt } }';
let broadcastsAsked = 0;
let broadcastsShown = 0;

async function refreshBroadcasts({ autoSelect = false } = {}) {
  if (!session.key) return;
  const seq = ++broadcastsAsked;
  {
    try {
      const d = await api(BROADCASTS_Q);
      if (!session.key || seq < broadcastsShown) return; // a newer answer is already shown
      broadcastsShown = seq;
      showBroadcasts(d.broadcasts);
      if (autoSelect && !selected.id) {
        const first = d.broadcasts.find((b) => b.state === 'LIVE') || d.broadcasts[0];
        if (first) select(first.id);
      }
      say($('broadcasts-error'), '');
    } catch (e) {
      if (!session.key) return;
      say($('broadcasts-error'), 'error', `The broadcasts could not be loaded: ${explain(e)}`);
    }
  }
}

function showBroadcasts(list) {
  $('broadcasts-empty').hidden = list.length > 0;
  syncRows($('broadcast-list'), list, (b) => b.id, (b0) => {
    const pick = h('button', {
      type: 'button',
      class: 'linklike mono',
      'data-action': 'select',
      'data-broadcast-id': b0.id,
      'aria-label': `Show broadcast ${b0.id}`,
      onclick: () => select(b0.id),
    }, b0.id);
    const name = h('td');
    const state = h('td');
    const seats = h('td');
    const fanout = h('td');
    const created = h('td', { class: 'small' });
    const end = h('button', {
      type: 'button',
      class: 'danger small-btn',
      'data-action': 'end',
      'data-broadcast-id': b0.id,
      'aria-label': `End broadcast ${b0.id}`,
      onclick: () => endBroadcast(b0.id, end),
    }, 'End');
    const actions = h('td', {}, end);
    const tr = h('tr', { 'data-broadcast-id': b0.id }, h('td', {}, pick), name, state, seats, fanout, created, actions);
    return {
      tr,
      update(b) {
        tr.dataset.state = b.state;
        tr.classList.toggle('selected', b.id === selected.id);
        if (b.id === selected.id) tr.setAttribute('aria-current', 'true');
        else tr.removeAttribute('aria-current');
        name.textContent = b.name || '—';
        fill(state, badge(b.state, BROADCAST_BADGE[b.state]));
        fill(seats, h('div', {}, `${b.viewers} / ${b.capacity}`), capacityBar(b.viewers, b.capacity));
        fanout.textContent = b.fanout;
        created.textContent = fmtTime(b.createdAt);
        end.hidden = b.state !== 'LIVE' && b.state !== 'STARTING';
      },
    };
  });
}

async function endBroadcast(id, button) {
  if (!confirm(`End broadcast ${id}? Every viewer leaves and its stages are deleted.`)) return;
  await act(button, $('broadcasts-msg'), async () => {
    const d = await api('mutation($id: ID!) { endBroadcast(id: $id) { id state } }', { id });
    refreshBroadcasts();
    return `Broadcast ${d.endBroadcast.id} is ${d.endBroadcast.state}.`;
  });
}

async function startBroadcast(ev) {
  ev.preventDefault();
  const id = $('start-id').value.trim();
  const name = $('start-name').value.trim();
  const fanout = $('start-fanout').value;
  const msg = $('start-msg');
  if (id && !/^[A-Za-z0-9_-]{1,64}$/.test(id)) {
    say(msg, 'error', 'The id may hold only A–Z, a–z, 0–9, _ and -, up to 64 characters (or leave it empty).');
    $('start-id').focus();
    return;
  }
  const vars = { name, fanout };
  if (id) vars.id = id;
  await act($('start-broadcast'), msg, async () => {
    const d = await api(
      'mutation($id: ID, $name: String!, $fanout: Fanout!) { startBroadcast(id: $id, name: $name, fanout: $fanout) { id state } }',
      vars,
    );
    const b = d.startBroadcast;
    $('start-id').value = '';
    $('start-name').value = '';
    await refreshBroadcasts();
    select(b.id);
    return `Broadcast ${b.id} is ${b.state}.`;
  });
}

// ---------------------------------------------------------------------------------------------
// The selected broadcast: live numbers, charts, stages, events, scaler

const selected = {
  id: null,
  stops: [],
  stats: null,
  broadcast: null,
  eventKeys: new Set(),
  charts: null,
};

function unselect() {
  for (const stop of selected.stops) stop();
  selected.stops = [];
  selected.id = null;
  selected.stats = null;
  selected.broadcast = null;
  selected.eventKeys = new Set();
  selected.charts?.audience.reset();
  selected.charts?.jps.reset();
  clearRows($('stage-list'));
  $('events').replaceChildren();
  $('detail').hidden = true;
}

function select(id) {
  if (!session.live) return;
  if (selected.id === id) {
    $('detail').scrollIntoView?.({ block: 'nearest' });
    return;
  }
  unselect();
  selected.id = id;
  selected.charts ??= {
    audience: new Chart($('chart-audience'), { what: 'Audience', format: (v) => String(Math.round(v)) }),
    jps: new Chart($('chart-jps'), { what: 'Joins per second', format: fmtRate }),
  };
  for (const tr of $('broadcast-list').children) {
    const on = tr.dataset.broadcastId === id;
    tr.classList.toggle('selected', on);
    if (on) tr.setAttribute('aria-current', 'true');
    else tr.removeAttribute('aria-current');
  }
  $('detail').hidden = false;
  $('detail').dataset.broadcastId = id;
  $('detail-id').textContent = id;
  setBadge($('detail-state'), '…', '');
  $('detail-info').textContent = '';
  say($('detail-msg'), '');
  say($('stage-msg'), '');
  for (const s of ['viewers', 'capacity', 'stages', 'admitted', 'jps']) $(`stat-${s}`).textContent = '—';
  $('stat-more').textContent = '';
  $('stat-refusals').textContent = '';
  fill($('scaler'), h('p', { class: 'muted' }, 'Loading…'));

  const live = session.live;
  const mine = () => selected.id === id;
  selected.stops.push(
    live.subscribe(STATS_SUB, { id }, {
      next: (d) => mine() && showStats(d.stats),
      error: (e) => mine() && say($('detail-msg'), 'error', `Live numbers: ${explain(e)}`),
    }),
    live.subscribe(BROADCAST_SUB, { id }, {
      next: (d) => mine() && showBroadcast(d.broadcast),
      error: (e) => mine() && say($('detail-msg'), 'error', `Broadcast: ${explain(e)}`),
      complete: () => mine() && say($('detail-msg'), 'info', `Broadcast ${id} is no longer kept by the node.`),
    }),
    live.subscribe(EVENTS_SUB, { id }, {
      next: (d) => mine() && addEvent(d.stageEvents),
      error: (e) => mine() && say($('detail-msg'), 'error', `Stage events: ${explain(e)}`),
    }),
  );
  const tick = setInterval(() => {
    if (!mine() || !selected.stats) return;
    selected.charts.audience.add(selected.stats.viewers);
    selected.charts.jps.add(selected.stats.joinsPerSecond);
  }, CHART_TICK_MS);
  selected.stops.push(() => clearInterval(tick));
  refreshScaler();
}

const STATS_SUB = `subscription($id: ID!) { stats(broadcastId: $id) { broadcastId viewers capacity stagesCreating
  stagesActive stagesDeleting admittedTotal joinsPerSecond refusals { reason count } appliedIndex changedAtMs } }`;

function showStats(s) {
  selected.stats = s;
  $('stat-viewers').textContent = String(s.viewers);
  $('stat-capacity').textContent = String(s.capacity);
  $('stat-stages').textContent = String(s.stagesActive);
  $('stat-admitted').textContent = String(s.admittedTotal);
  $('stat-jps').textContent = fmtRate(s.joinsPerSecond);
  const extra = [];
  if (s.stagesCreating) extra.push(`${s.stagesCreating} stage(s) being created`);
  if (s.stagesDeleting) extra.push(`${s.stagesDeleting} being deleted`);
  extra.push(`as of log index ${s.appliedIndex}`);
  const delay = Date.now() - s.changedAtMs;
  if (s.changedAtMs > 0 && delay >= 0 && delay < 60000) extra.push(`last change ${delay} ms ago`);
  $('stat-more').textContent = extra.join(' · ');
  $('stat-refusals').textContent = s.refusals.length
    ? `Refused over the last 10 s: ${s.refusals.map((r) => `${r.reason} ${r.count}`).join(', ')}`
    : '';
  selected.charts.audience.add(s.viewers);
  selected.charts.jps.add(s.joinsPerSecond);
}

const BROADCAST_SUB = `subscription($id: ID!) { broadcast(id: $id) { id name state viewers capacity fanout hosts
  stages { id slot role status viewers capacity draining fedBy publishers
    replication { participantId state attempts lastError } } } }`;

function showBroadcast(b) {
  selected.broadcast = b;
  setBadge($('detail-state'), b.state, BROADCAST_BADGE[b.state]);
  const bits = [];
  if (b.name) bits.push(b.name);
  bits.push(`fan-out ${b.fanout}`);
  bits.push(`${b.viewers} of ${b.capacity} seats taken`);
  bits.push(b.hosts.length ? `hosts: ${b.hosts.join(', ')}` : 'no hosts yet');
  $('detail-info').textContent = bits.join(' · ');
  const live = b.state === 'LIVE';
  $('add-replica').disabled = !live;
  $('add-origin').disabled = !live;
  const stages = [...b.stages].sort((x, y) => x.slot - y.slot);
  syncRows($('stage-list'), stages, (s) => s.id, stageRow);
  emptyRow($('stage-list'), 6, 'No stages.', !stages.length);
}

function stageRow(s0) {
  const id = s0.id;
  const running = new Set();
  const idCell = h('td', { class: 'mono' }, id);
  const role = h('td');
  const status = h('td');
  const seats = h('td');
  const media = h('td', { class: 'small' });
  const moveId = `move-${id.replace(/[^A-Za-z0-9_-]/g, '_')}`;
  const move = h('input', {
    type: 'checkbox',
    id: moveId,
    'data-action': 'move-viewers',
    'data-stage-id': id,
  });
  const moveLabel = h('label', { for: moveId, class: 'inline' }, move, ' move viewers now');
  const drain = h('button', {
    type: 'button',
    class: 'secondary small-btn',
    'data-action': 'drain',
    'data-stage-id': id,
    'aria-label': `Drain stage ${id}`,
    onclick: () => drainStage(id, move.checked, drain, running),
  }, 'Drain');
  const del = h('button', {
    type: 'button',
    class: 'danger small-btn',
    'data-action': 'delete',
    'data-stage-id': id,
    'aria-label': `Delete stage ${id}`,
    onclick: () => deleteStage(id, del, running),
  }, 'Delete');
  const actions = h('td', {}, h('div', { class: 'stage-actions' }, drain, moveLabel, del));
  const tr = h('tr', { 'data-stage-id': id }, idCell, role, status, seats, media, actions);
  let last = s0;
  const row = {
    tr,
    update(s) {
      last = s;
      tr.dataset.status = s.status;
      tr.dataset.role = s.role;
      fill(role, s.role, s.fedBy != null ? h('span', { class: 'muted small' }, ` from slot ${s.fedBy}`) : null);
      fill(status, badge(s.status, STAGE_BADGE[s.status]));
      fill(seats, h('div', {}, `${s.viewers} / ${s.capacity}`), capacityBar(s.viewers, s.capacity));
      const parts = [];
      if (s.publishers.length) parts.push(h('div', {}, 'publishing: ', h('span', { class: 'mono' }, s.publishers.join(', '))));
      for (const r of s.replication) {
        parts.push(
          h(
            'div',
            { 'data-participant-id': r.participantId },
            h('span', { class: 'mono' }, r.participantId),
            ' ',
            badge(r.state, REPLICATION_BADGE[r.state]),
            r.attempts ? ` ${r.attempts} attempt(s)` : null,
            r.lastError ? h('span', { class: 'muted' }, ` — ${r.lastError}`) : null,
          ),
        );
      }
      if (!parts.length) parts.push(h('span', { class: 'muted' }, '—'));
      fill(media, parts);
      row.refreshButtons();
    },
    refreshButtons() {
      drain.disabled = running.has('drain') || last.draining || last.status === 'DELETING';
      del.disabled = running.has('delete') || last.status === 'DELETING';
      move.disabled = drain.disabled;
    },
  };
  running.row = row;
  return row;
}

async function drainStage(id, moveViewers, button, running) {
  running.add('drain');
  running.row.refreshButtons();
  await act(null, $('stage-msg'), async () => {
    try {
      const d = await api(
        'mutation($id: ID!, $move: Boolean!) { drainStage(id: $id, moveViewers: $move) { viewersMoved stage { id status } } }',
        { id, move: moveViewers },
      );
      const r = d.drainStage;
      return `Stage ${id} is ${r.stage.status}${moveViewers ? `; ${r.viewersMoved} viewer(s) moved` : ''}.`;
    } finally {
      running.delete('drain');
      running.row.refreshButtons();
    }
  });
}

async function deleteStage(id, button, running) {
  if (!confirm(`Delete stage ${id} in IVS?`)) return;
  const del = 'mutation($id: ID!, $force: Boolean!) { deleteStage(id: $id, force: $force) { id sessionsEnded } }';
  running.add('delete');
  running.row.refreshButtons();
  await act(null, $('stage-msg'), async () => {
    try {
      let d;
      try {
        d = await api(del, { id, force: false });
      } catch (e) {
        if (e.code !== 'STAGE_HAS_VIEWERS') throw e;
        const n = selected.broadcast?.stages.find((s) => s.id === id)?.viewers;
        const ok = confirm(
          `Stage ${id} seats ${n == null ? 'viewers' : `${n} viewer(s)`}. Delete it anyway and end their sessions?`,
        );
        if (!ok) return { kind: 'warn', text: `Stage ${id} was not deleted: it seats viewers (${e.message}).` };
        d = await api(del, { id, force: true });
      }
      const r = d.deleteStage;
      return `Stage ${r.id} is being deleted${r.sessionsEnded ? `; ${r.sessionsEnded} session(s) ended` : ''}.`;
    } finally {
      running.delete('delete');
      running.row.refreshButtons();
    }
  });
}

async function createStage(role, button) {
  const id = selected.id;
  if (!id) return;
  await act(button, $('stage-msg'), async () => {
    const d = await api(
      'mutation($id: ID!, $role: StageRole!) { createStage(broadcastId: $id, role: $role) { id role status } }',
      { id, role },
    );
    const s = d.createStage;
    refreshBroadcasts();
    return `Stage ${s.id} (${s.role}) created: ${s.status}.`;
  });
  if (selected.broadcast) button.disabled = selected.broadcast.state !== 'LIVE';
}

const EVENTS_SUB = `subscription($id: ID!) { stageEvents(broadcastId: $id) { index atMs stageId step reason current } }`;

function addEvent(ev) {
  const key = `${ev.index}|${ev.stageId}|${ev.step}|${ev.reason ?? ''}`;
  if (selected.eventKeys.has(key)) return; // sent again after a reconnect
  selected.eventKeys.add(key);
  const li = h(
    'li',
    { class: ev.current ? 'current' : null, 'data-step': ev.step, 'data-stage-id': ev.stageId },
    h('time', { datetime: isoOf(ev.atMs) }, fmtClock(ev.atMs)),
    ' ',
    h('span', { class: 'mono' }, ev.stageId),
    ' ',
    badge(ev.step, STEP_BADGE[ev.step]),
    ev.reason ? h('span', {}, ` ${ev.reason}`) : null,
    ev.current ? h('span', { class: 'muted' }, ' (state at subscription)') : null,
  );
  const log = $('events');
  log.prepend(li);
  while (log.children.length > EVENTS_KEPT) log.lastElementChild.remove();
  if (selected.eventKeys.size > EVENTS_KEPT * 4) selected.eventKeys = new Set([...selected.eventKeys].slice(-EVENTS_KEPT * 2));
}

const SCALER_Q = `{ scaler { broadcastId at joinRate readyTimeMs freeReadySeats pendingSeats headroom added limitedBy
  undrained drained } }`;

async function refreshScaler() {
  const id = selected.id;
  if (!session.key || !id) return;
  let list;
  try {
    list = (await api(SCALER_Q)).scaler;
  } catch (e) {
    if (selected.id === id && session.key) fill($('scaler'), h('p', { class: 'msg error' }, explain(e)));
    return;
  }
  if (selected.id !== id) return;
  const d = list.find((x) => x.broadcastId === id);
  if (!d) {
    let why;
    if (session.node && !session.node.isLeader) {
      why = `This node does not lead (leader: ${session.node.leaderId ?? 'none known'}); only the leader's scaler decides.`;
    } else if (selected.broadcast && selected.broadcast.state !== 'LIVE') {
      why = 'No decision: the broadcast is not live.';
    } else if (!list.length) {
      why = 'No decision yet (or autoscale is off on this node).';
    } else {
      why = 'No decision for this broadcast yet.';
    }
    if ($('scaler').textContent !== why) fill($('scaler'), h('p', { class: 'muted', 'data-scaler': 'none' }, why));
    return;
  }
  const row = (k, v) => h('div', {}, h('dt', {}, k), h('dd', {}, v));
  fill(
    $('scaler'),
    h(
      'dl',
      { class: 'facts', 'data-scaler': 'decision' },
      row('At', fmtTime(d.at)),
      row('Join rate', `${fmtRate(d.joinRate)} /s`),
      row('Stage ready time', `${Math.round(d.readyTimeMs)} ms`),
      row('Free ready seats', fmtInt(d.freeReadySeats)),
      row('Seats being created', fmtInt(d.pendingSeats)),
      row('Headroom kept', fmtInt(d.headroom)),
      row('Added', d.added.length ? d.added.join(', ') : 'nothing'),
      row('Held back by', d.limitedBy || 'nothing'),
      row('Taken back from draining', d.undrained.length ? d.undrained.join(', ') : '—'),
      row('Drained', d.drained || '—'),
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// Charts: a line over the last five minutes, drawn as SVG by hand

class Chart {
  constructor(svg, { what, format }) {
    this.svg = svg;
    this.what = what;
    this.format = format;
    this.samples = [];
    this.title = svg.querySelector('title');
    this.desc = svg.querySelector('desc');
    this.plot = document.createElementNS(SVG_NS, 'g');
    svg.append(this.plot);
    // Drawn in CSS pixels at the width it is shown, so labels stay readable on a phone.
    this.width = 600;
    if (window.ResizeObserver) {
      new ResizeObserver(() => {
        const w = Math.round(svg.clientWidth);
        if (w > 0 && w !== this.width) {
          this.width = w;
          this.draw();
        }
      }).observe(svg);
    }
    this.draw();
  }

  reset() {
    this.samples = [];
    this.draw();
  }

  add(v) {
    const t = Date.now();
    this.samples.push({ t, v: Number(v) || 0 });
    while (this.samples.length && this.samples[0].t < t - CHART_WINDOW_MS - CHART_TICK_MS) this.samples.shift();
    this.draw();
  }

  draw() {
    const W = Math.max(200, this.width), H = 180, L = 48, R = 8, T = 12, B = 22;
    this.svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    const now = Date.now();
    const from = now - CHART_WINDOW_MS;
    const vs = this.samples.map((s) => s.v);
    const top = niceMax(Math.max(0, ...vs));
    const x = (t) => L + ((t - from) / CHART_WINDOW_MS) * (W - L - R);
    const y = (v) => T + (1 - v / top) * (H - T - B);
    const el = (name, attrs, text) => {
      const e = document.createElementNS(SVG_NS, name);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
      if (text != null) e.textContent = text;
      return e;
    };
    const parts = [
      el('rect', { x: L, y: T, width: W - L - R, height: H - T - B, class: 'chart-bg' }),
      el('line', { x1: L, y1: y(top / 2), x2: W - R, y2: y(top / 2), class: 'chart-grid' }),
      el('line', { x1: L, y1: y(0), x2: W - R, y2: y(0), class: 'chart-axis' }),
      el('line', { x1: L, y1: T, x2: L, y2: y(0), class: 'chart-axis' }),
      el('text', { x: L - 6, y: T + 4, 'text-anchor': 'end', class: 'chart-label' }, this.format(top)),
      el('text', { x: L - 6, y: y(0) + 4, 'text-anchor': 'end', class: 'chart-label' }, '0'),
      el('text', { x: L, y: H - 4, 'text-anchor': 'start', class: 'chart-label' }, '−5 min'),
      el('text', { x: W - R, y: H - 4, 'text-anchor': 'end', class: 'chart-label' }, 'now'),
    ];
    const pts = this.samples.filter((s) => s.t >= from - CHART_TICK_MS);
    if (pts.length) {
      // a step line: a value holds until the next sample
      let d = '';
      pts.forEach((s, i) => {
        const px = Math.max(L, x(s.t)).toFixed(1);
        const py = y(s.v).toFixed(1);
        if (i === 0) d += `M${px},${py}`;
        else d += `H${px}V${py}`;
      });
      d += `H${x(now).toFixed(1)}`;
      parts.push(el('path', { d, class: 'chart-line' }));
      const lastS = pts[pts.length - 1];
      parts.push(el('circle', { cx: x(now).toFixed(1), cy: y(lastS.v).toFixed(1), r: 3, class: 'chart-dot' }));
    }
    this.plot.replaceChildren(...parts);
    if (pts.length) {
      const max = Math.max(...pts.map((s) => s.v));
      const last = pts[pts.length - 1].v;
      this.desc.textContent = `Now ${this.format(last)}; highest in the window ${this.format(max)}; axis up to ${this.format(top)}.`;
    } else {
      this.desc.textContent = 'No samples yet.';
    }
  }
}

/** A round axis top at or above `v` (1, 2, 5 × 10^n). */
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// ---------------------------------------------------------------------------------------------
// Policy

const POLICY_FIELDS = ['placement', 'seatsPerStage', 'maxStages', 'sessionLeaseSecs', 'maxSeatsPerClient', 'regionSubscriptionQuota'];
const POLICY_TYPES = { placement: 'Placement' };
const POLICY_SEL = POLICY_FIELDS.join(' ');
let policy = null;

function showPolicy(p) {
  policy = p;
  for (const f of POLICY_FIELDS) $(`policy-${f}`).value = String(p[f]);
}

async function loadPolicy(button = null) {
  const msg = $('policy-msg');
  await act(button, button ? msg : null, async () => {
    try {
      const d = await api(`{ fleetPolicy { ${POLICY_SEL} } }`);
      showPolicy(d.fleetPolicy);
      return button ? 'Reloaded.' : undefined;
    } catch (e) {
      if (!button && session.key) say(msg, 'error', `The policy could not be loaded: ${explain(e)}`);
      throw e;
    }
  });
}

async function savePolicy(ev) {
  ev.preventDefault();
  const msg = $('policy-msg');
  if (!policy) {
    say(msg, 'error', 'The policy has not been loaded yet; reload it first.');
    return;
  }
  const changed = {};
  for (const f of POLICY_FIELDS) {
    const input = $(`policy-${f}`);
    if (f === 'placement') {
      if (input.value !== policy[f]) changed[f] = input.value;
      continue;
    }
    const raw = input.value.trim();
    if (!/^\d+$/.test(raw)) {
      say(msg, 'error', `${input.labels[0]?.firstChild?.textContent.trim() || f}: enter a whole number.`);
      input.focus();
      return;
    }
    const n = Number(raw);
    if (n !== policy[f]) changed[f] = n;
  }
  const names = Object.keys(changed);
  if (!names.length) {
    say(msg, 'info', 'Nothing changed.');
    return;
  }
  // Only the changed arguments go out (the names come from POLICY_FIELDS, never from the page).
  const decl = names.map((f) => `$${f}: ${POLICY_TYPES[f] || 'Int'}`).join(', ');
  const args = names.map((f) => `${f}: $${f}`).join(', ');
  const before = policy;
  await act($('policy-save'), msg, async () => {
    const d = await api(`mutation(${decl}) { setPolicy(${args}) { ${POLICY_SEL} } }`, changed);
    showPolicy(d.setPolicy);
    return `Saved: ${names.map((f) => `${f} ${before[f]} → ${d.setPolicy[f]}`).join(', ')}.`;
  });
}

// ---------------------------------------------------------------------------------------------
// API keys

async function loadKeys() {
  try {
    const d = await api('{ apiKeys { id name role createdAt } }');
    showKeys(d.apiKeys);
  } catch (e) {
    if (session.key) say($('keys-msg'), 'error', `The keys could not be loaded: ${explain(e)}`);
  }
}

function showKeys(keys) {
  syncRows($('key-list'), keys, (k) => k.id, (k0) => {
    const name = h('td');
    const role = h('td');
    const id = h('td', { class: 'mono small' });
    const created = h('td', { class: 'small' });
    const revoke = h('button', {
      type: 'button',
      class: 'danger small-btn',
      'data-action': 'revoke',
      'data-key-id': k0.id,
      onclick: () => revokeKey(k0.id, revoke),
    }, 'Revoke');
    const tr = h('tr', { 'data-key-id': k0.id }, name, role, id, created, h('td', {}, revoke));
    return {
      tr,
      update(k) {
        name.textContent = k.name;
        role.textContent = k.role;
        id.textContent = k.id;
        created.textContent = fmtTime(k.createdAt);
        revoke.setAttribute('aria-label', `Revoke key ${k.name} (${k.id})`);
      },
    };
  });
  emptyRow($('key-list'), 5, 'No keys.', !keys.length);
}

async function revokeKey(id, button) {
  const name = $('key-list')._rows?.get(id)?.tr.cells[0].textContent || id;
  if (!confirm(`Revoke the key “${name}” (${id})? Whoever uses it is refused at once.`)) return;
  await act(button, $('keys-msg'), async () => {
    const d = await api('mutation($id: ID!) { revokeApiKey(id: $id) { id name } }', { id });
    await loadKeys();
    return `Revoked ${d.revokeApiKey.name} (${d.revokeApiKey.id}).`;
  });
}

async function createKey(ev) {
  ev.preventDefault();
  const name = $('key-name').value.trim();
  const role = $('key-role').value;
  const msg = $('key-create-msg');
  if (!name) {
    say(msg, 'error', 'Give the key a name.');
    $('key-name').focus();
    return;
  }
  hideNewKey();
  await act($('create-key'), msg, async () => {
    const d = await api(
      'mutation($name: String!, $role: Role!) { createApiKey(name: $name, role: $role) { key apiKey { id name role } } }',
      { name, role },
    );
    $('key-name').value = '';
    const k = d.createApiKey;
    $('new-key-name').textContent = `${k.apiKey.name} (${k.apiKey.role}, id ${k.apiKey.id})`;
    $('new-key-value').textContent = k.key;
    $('copy-key').hidden = !navigator.clipboard?.writeText;
    $('copy-status').textContent = '';
    $('new-key').hidden = false;
    await loadKeys();
    return undefined;
  });
}

function hideNewKey() {
  $('new-key').hidden = true;
  $('new-key-value').textContent = '';
  $('new-key-name').textContent = '';
  $('copy-status').textContent = '';
}

async function copyKey() {
  try {
    await navigator.clipboard.writeText($('new-key-value').textContent);
    $('copy-status').textContent = 'Copied.';
  } catch (e) {
    $('copy-status').textContent = `Could not copy (${e.message}); select the key and copy it by hand.`;
  }
}

// ---------------------------------------------------------------------------------------------
// Wiring

function init() {
  showBackend();
  $('signin-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const key = $('admin-key').value.trim();
    if (!key) {
      say($('signin-error'), 'error', 'Enter the admin key.');
      $('admin-key').focus();
      return;
    }
    signIn(key);
  });
  $('sign-out').addEventListener('click', () => signOut());
  $('start-form').addEventListener('submit', startBroadcast);
  $('policy-form').addEventListener('submit', savePolicy);
  $('policy-reload').addEventListener('click', (ev) => loadPolicy(ev.currentTarget));
  $('key-form').addEventListener('submit', createKey);
  $('copy-key').addEventListener('click', copyKey);
  $('dismiss-key').addEventListener('click', hideNewKey);
  for (const b of [$('add-replica'), $('add-origin')]) b.addEventListener('click', () => createStage(b.dataset.role, b));

  const saved = storedKey.get(KEY_NAME);
  if (saved) signIn(saved, { silent: true });
  else $('admin-key').focus();
}

init();
