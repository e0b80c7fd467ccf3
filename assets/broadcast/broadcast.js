// The broadcaster page: sign in with a host key, preview the camera, "Go live" publishes with the
// IVS Web Broadcast SDK to every stage `hostTokens` returns (the origins; every stage with client
// fan-out), reports `hostPublishing`, and follows the fleet: a new origin (or, with client
// fan-out, any new stage) gets published to as it appears. "End" stops publishing everywhere.
//
// `main#host` carries `data-state`: signed-out, ready, going-live, live, off-air.
import { gql, Live } from '/js/gql.js';
import { loadSdk, showBackend, h, fill, storedKey, explain } from '/js/site.js';

const $ = (id) => document.getElementById(id);
const main = $('host');
const picker = $('broadcast');
const statusEl = $('host-status');
const preview = $('preview');

const STAGE_FIELDS = 'id slot role status viewers capacity publishers replication { participantId state lastError }';
const HOST_TOKENS = `mutation($b: ID!, $u: String!) { hostTokens(broadcastId: $b, userId: $u) {
  participantId token stage { id slot role whipUrl } } }`;
const PUBLISHING = `mutation($b: ID!, $p: String!, $on: Boolean!) {
  hostPublishing(broadcastId: $b, participantId: $p, publishing: $on) { id } }`;

const userId = sessionStorage.getItem('stagefleet.host') || `host-${crypto.randomUUID().slice(0, 8)}`;
sessionStorage.setItem('stagefleet.host', userId);

let key = null;
let role = null;
let live = null;
let media = null; // the camera+microphone MediaStream
let localStreams = [];
let IVS = null;
let onAir = false;
const conns = new Map(); // stage id -> { ivs, participantId, state }
let stopFollow = [];
const host = { state: 'signed-out', stages: {} };
window.stagefleetHost = host; // read-only view for tests

function setState(state, text, kind = 'info') {
  host.state = state;
  main.dataset.state = state;
  statusEl.className = `msg ${kind}`;
  statusEl.textContent = text;
}

function broadcastId() {
  return picker.value || null;
}

// ---- sign in ------------------------------------------------------------------------------

async function signIn(candidate, quiet = false) {
  const err = $('signin-error');
  err.textContent = '';
  let me;
  try {
    ({ me } = await gql('{ me { role } }', {}, { key: candidate }));
  } catch (e) {
    if (!quiet) err.textContent = explain(e);
    storedKey.clear('host');
    return;
  }
  if (me.role !== 'HOST' && me.role !== 'ADMIN') {
    err.textContent = `This is a ${me.role ?? 'missing'} key; going live needs a HOST or ADMIN key.`;
    return;
  }
  key = candidate;
  role = me.role;
  storedKey.set('host', key);
  $('host-key').value = '';
  $('signin').hidden = true;
  $('studio').hidden = false;
  $('who').textContent = `Signed in with a ${role.toLowerCase()} key as ${userId}.`;
  $('start-form').hidden = role !== 'ADMIN';
  live = new Live({
    key,
    onStatus: (s, why) => {
      if (s === 'refused') signOut(`The node refused the key: ${why}`);
    },
  });
  main.dataset.state = 'ready';
  host.state = 'ready';
  await Promise.all([listBroadcasts(), startCamera()]);
}

function signOut(message = '') {
  if (onAir) endLive();
  live?.close();
  live = null;
  key = null;
  storedKey.clear('host');
  $('studio').hidden = true;
  $('signin').hidden = false;
  $('signin-error').textContent = message;
  setState('signed-out', '');
}

$('signin-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  signIn($('host-key').value.trim());
});
$('sign-out').addEventListener('click', () => signOut());

// ---- broadcasts ---------------------------------------------------------------------------

async function listBroadcasts(select = null) {
  const want = select || broadcastId() || new URLSearchParams(location.search).get('broadcast');
  const { broadcasts } = await gql('{ broadcasts { id name state fanout } }', {}, { key });
  const usable = broadcasts.filter((b) => b.state === 'LIVE' || b.state === 'STARTING');
  fill(
    picker,
    usable.length ? null : h('option', { value: '' }, 'No live broadcast — ask an admin to start one'),
    usable.map((b) => h('option', { value: b.id, selected: b.id === want, dataset: { fanout: b.fanout } }, `${b.name || b.id} (${b.id}, ${b.state.toLowerCase()})`)),
  );
  followBroadcast();
}

picker.addEventListener('change', () => {
  if (onAir) endLive();
  followBroadcast();
});

$('start-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const btn = $('start');
  btn.disabled = true;
  try {
    const { startBroadcast: b } = await gql('mutation($n: String!) { startBroadcast(name: $n) { id } }', { n: $('new-name').value.trim() }, { key });
    await listBroadcasts(b.id);
    setState(host.state, `Broadcast ${b.id} started. Go live when ready.`, 'ok');
  } catch (e) {
    setState(host.state, `Could not start a broadcast: ${explain(e)}`, 'error');
  } finally {
    btn.disabled = false;
  }
});

// ---- camera -------------------------------------------------------------------------------

async function startCamera() {
  const constraints = {
    video: { deviceId: $('camera').value ? { exact: $('camera').value } : undefined, width: { ideal: 1280 }, height: { ideal: 720 } },
    audio: { deviceId: $('microphone').value ? { exact: $('microphone').value } : undefined },
  };
  try {
    const next = await navigator.mediaDevices.getUserMedia(constraints);
    for (const t of media?.getTracks() ?? []) t.stop();
    media = next;
    preview.srcObject = media;
    await listDevices();
    if (IVS || onAir) refreshStreams();
    $('go-live').disabled = onAir || !broadcastId();
    if (!onAir) setState('ready', 'Camera ready. Press “Go live” when you are.');
  } catch (e) {
    $('go-live').disabled = true;
    setState('ready', `The camera or microphone is not available: ${e.message}. Allow access and reload.`, 'error');
  }
}

async function listDevices() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  const used = Object.fromEntries(media.getTracks().map((t) => [t.kind, t.getSettings().deviceId]));
  for (const [id, kind] of [['camera', 'videoinput'], ['microphone', 'audioinput']]) {
    const own = devices.filter((d) => d.kind === kind);
    fill($(id), own.map((d, i) => h('option', { value: d.deviceId, selected: d.deviceId === used[kind === 'videoinput' ? 'video' : 'audio'] }, d.label || `${kind} ${i + 1}`)));
  }
}

$('camera').addEventListener('change', startCamera);
$('microphone').addEventListener('change', startCamera);

function refreshStreams() {
  if (!IVS) return;
  localStreams = media.getTracks().map((t) => new IVS.LocalStageStream(t));
  for (const c of conns.values()) c.ivs.refreshStrategy();
}

// ---- going live ---------------------------------------------------------------------------

$('go-live').addEventListener('click', goLive);
$('end').addEventListener('click', endLive);

async function goLive() {
  const b = broadcastId();
  if (!b || !media) return;
  $('go-live').disabled = true;
  setState('going-live', 'Going live…');
  try {
    IVS ??= await loadSdk();
  } catch (e) {
    $('go-live').disabled = false;
    return setState('ready', e.message, 'error');
  }
  refreshStreams();
  onAir = true;
  $('end').disabled = false;
  picker.disabled = true;
  try {
    await publishEverywhere();
  } catch (e) {
    setState('going-live', `Could not get host tokens: ${explain(e)}`, 'error');
  }
  return undefined;
}

// Publishes to every stage hostTokens names that this page does not publish to yet.
async function publishEverywhere() {
  if (!onAir) return;
  const b = broadcastId();
  const { hostTokens } = await gql(HOST_TOKENS, { b, u: userId }, { key });
  for (const t of hostTokens) {
    if (conns.has(t.stage.id)) continue;
    publishTo(b, t);
  }
}

function publishTo(b, t) {
  const { Stage, SubscribeType, StageEvents } = IVS;
  const strategy = {
    stageStreamsToPublish: () => localStreams,
    shouldPublishParticipant: () => true,
    shouldSubscribeToParticipant: () => SubscribeType.NONE,
  };
  const c = { ivs: new Stage(t.token, strategy), participantId: t.participantId, state: 'joining', slot: t.stage.slot };
  conns.set(t.stage.id, c);
  mark(t.stage.id, 'joining');
  c.ivs.on(StageEvents.STAGE_PARTICIPANT_PUBLISH_STATE_CHANGED, (p, state) => {
    if (!p.isLocal) return;
    mark(t.stage.id, state);
    if (state === 'published') {
      gql(PUBLISHING, { b, p: t.participantId, on: true }, { key }).catch((e) => setState(host.state, `hostPublishing: ${explain(e)}`, 'warn'));
    }
  });
  c.ivs.join().catch((e) => mark(t.stage.id, `failed: ${e.message ?? e}`));
}

function mark(stageId, state) {
  const c = conns.get(stageId);
  if (c) c.state = state;
  host.stages[stageId] = state;
  const states = [...conns.values()].map((x) => x.state);
  if (onAir && states.length && states.every((s) => s === 'published')) {
    setState('live', `You are live on ${states.length} stage${states.length > 1 ? 's' : ''}.`, 'ok');
    $('on-air').hidden = false;
  } else if (onAir && states.some((s) => s === 'errored' || String(s).startsWith('failed'))) {
    setState('going-live', `Publishing failed on a stage (${states.join(', ')}); it is retried.`, 'warn');
  }
  renderMine();
}

function endLive() {
  onAir = false;
  const b = broadcastId();
  for (const [stageId, c] of conns) {
    try {
      c.ivs.leave();
    } catch {
      // already gone
    }
    gql(PUBLISHING, { b, p: c.participantId, on: false }, { key }).catch(() => {});
    delete host.stages[stageId];
  }
  conns.clear();
  $('on-air').hidden = true;
  $('end').disabled = true;
  $('go-live').disabled = !media;
  picker.disabled = false;
  setState('off-air', 'You are off air. Viewers see that the host left.');
  renderMine();
}

// ---- the live panel -------------------------------------------------------------------------

let stages = [];

function renderMine() {
  fill(
    $('stages'),
    stages.map((s) => {
      const mine = host.stages[s.id];
      const repl = s.replication.map((r) => r.state.toLowerCase()).join(', ');
      return h(
        'tr',
        { dataset: { stageId: s.id } },
        h('td', {}, `${s.slot}`),
        h('td', {}, s.role.toLowerCase()),
        h('td', {}, h('span', { class: `badge ${s.status.toLowerCase()}` }, s.status)),
        h('td', {}, `${s.viewers} / ${s.capacity}`),
        h('td', {}, mine ?? (repl ? `replicated: ${repl}` : '—')),
      );
    }),
  );
}

function logEvent(ev) {
  const when = new Date(ev.atMs).toLocaleTimeString();
  const what = `${ev.stageId} ${ev.step.toLowerCase().replace('_', ' ')}${ev.reason ? ` (${ev.reason})` : ''}`;
  $('events').prepend(h('li', {}, `${when} ${what}`));
  while ($('events').children.length > 100) $('events').lastChild.remove();
}

function followBroadcast() {
  for (const stop of stopFollow) stop();
  stopFollow = [];
  fill($('events'));
  stages = [];
  renderMine();
  const b = broadcastId();
  $('go-live').disabled = !b || !media || onAir;
  if (!b || !live) return;
  const fanout = picker.selectedOptions[0]?.dataset.fanout;
  stopFollow.push(
    live.subscribe('subscription($b: ID!) { stats(broadcastId: $b) { viewers capacity joinsPerSecond } }', { b }, {
      next: ({ stats }) => {
        $('audience').textContent = stats.viewers;
        $('capacity').textContent = stats.capacity;
        $('jps').textContent = stats.joinsPerSecond.toFixed(1);
      },
    }),
    live.subscribe(`subscription($b: ID!) { broadcast(id: $b) { state stages { ${STAGE_FIELDS} } } }`, { b }, {
      next: ({ broadcast }) => {
        stages = broadcast.stages;
        renderMine();
        if (broadcast.state === 'ENDED' || broadcast.state === 'ENDING') {
          if (onAir) endLive();
          setState('off-air', 'The broadcast has ended.');
        }
      },
    }),
    live.subscribe('subscription($b: ID!) { stageEvents(broadcastId: $b) { atMs stageId step reason current stage { role } } }', { b }, {
      next: ({ stageEvents: ev }) => {
        if (!ev.current) logEvent(ev);
        // A new origin (or any new stage with client fan-out) needs this host's media too.
        const wanted = fanout === 'CLIENT' || ev.stage?.role === 'ORIGIN';
        if (onAir && wanted && ev.step === 'CREATED' && !conns.has(ev.stageId)) publishEverywhere().catch(() => {});
        if (ev.step === 'DELETED' && conns.has(ev.stageId)) {
          conns.get(ev.stageId).ivs.leave();
          conns.delete(ev.stageId);
          delete host.stages[ev.stageId];
        }
      },
    }),
  );
}

// ---- OBS ----------------------------------------------------------------------------------

$('obs').addEventListener('click', async () => {
  const out = $('obs-out');
  const b = broadcastId();
  if (!b) return fill(out, h('p', { class: 'msg warn' }, 'Pick a broadcast first.'));
  try {
    const { hostTokens } = await gql(HOST_TOKENS, { b, u: `${userId}-obs` }, { key });
    fill(
      out,
      hostTokens.map((t) =>
        h('div', { class: 'panel' }, h('p', {}, `Stage ${t.stage.slot} (${t.stage.role.toLowerCase()})`),
          h('label', {}, 'Server'), h('p', { class: 'mono' }, t.stage.whipUrl || 'https://global.whip.live-video.net'),
          h('label', {}, 'Bearer token'), h('p', { class: 'mono' }, t.token)),
      ),
      h('p', { class: 'muted' }, 'After OBS starts streaming, the fleet sees it publish within a few seconds.'),
    );
  } catch (e) {
    fill(out, h('p', { class: 'msg error' }, explain(e)));
  }
  return undefined;
});

addEventListener('pagehide', () => {
  if (onAir) endLive();
});

showBackend();
const saved = storedKey.get('host');
if (saved) signIn(saved, true);
