// The viewer page: anyone can open /watch/?broadcast=<id> — no key, no secret. It joins the
// broadcast (a seat on a stage with room), plays the hosts' streams from that stage with the IVS
// Web Broadcast SDK, and keeps the seat by keeping its `assignment` subscription open (no
// heartbeat loop). When the server moves the seat (its stage drains) the page switches stages
// without a reload: it joins the new stage first and leaves the old one once video flows there.
//
// `main#viewer` carries `data-state` (loading, choose, joining, waiting-host, playing, not-live,
// full, region-full, reconnecting, ended, error) and `data-stage-id`, for people and tests alike.
import { gql, gqlOnUnload, Live } from '/js/gql.js';
import { loadSdk, showBackend, h, fill, explain, liveItems } from '/js/site.js';

const params = new URLSearchParams(location.search);
const broadcastId = params.get('broadcast') || params.get('b');
const main = document.getElementById('viewer');
const statusEl = document.getElementById('status');
const videos = document.getElementById('videos');
const unmuteBtn = document.getElementById('unmute');
const retryBtn = document.getElementById('retry');
const seatEl = document.getElementById('seat');

// A viewer id per tab (not a secret): a reload rejoins the same seat.
const userId = sessionStorage.getItem('stagefleet.viewer') || `viewer-${crypto.randomUUID()}`;
sessionStorage.setItem('stagefleet.viewer', userId);

const JOIN = `mutation($b: ID!, $u: String!) { joinBroadcast(broadcastId: $b, userId: $u) {
  session { id } stage { id slot } token } }`;
const ASSIGNMENT = `subscription($s: ID!) { assignment(sessionId: $s) {
  kind reason token stage { id slot } } }`;

const live = new Live({
  onStatus: (s, why) => {
    if (s === 'reconnecting') setState('reconnecting', `Connection to the node lost (${why}); reconnecting…`);
  },
});

let IVS = null;
let sessionId = null;
let stopAssignment = null;
let current = null; // { stageId, ivs, tiles: Map(participantId -> tile) }
let muted = true;
let retryTimer = null;
let ended = false;
const viewer = { moves: 0, stageId: null, sessionId: null, state: 'loading', history: [] };
window.stagefleetViewer = viewer; // read-only view for tests and curious people

function setState(state, text, kind = 'info') {
  viewer.state = state;
  viewer.history.push(state);
  console.debug(`[stagefleet] ${state}: ${text}`);
  main.dataset.state = state;
  statusEl.className = `msg ${kind}`;
  statusEl.textContent = text;
}

function afterPlaying() {
  if (!current) return;
  // Playing = a host's video has decoded data on the stage this page sits on now.
  const playing = [...current.tiles.values()].some((t) => t.video.srcObject?.getVideoTracks().length && t.video.readyState >= 2);
  if (playing) setState('playing', `Live — stage ${current.slot}.`, 'ok');
  else setState('waiting-host', 'Waiting for the host to start…');
}

async function chooseBroadcast() {
  setState('choose', 'Pick a broadcast to watch.');
  document.getElementById('choose').hidden = false;
  const list = document.getElementById('live-list');
  try {
    const { broadcasts } = await gql('{ broadcasts(state: LIVE) { id name viewers } }');
    fill(list, liveItems(broadcasts));
  } catch (e) {
    setState('error', explain(e), 'error');
  }
}

function retryIn(seconds, fn) {
  clearTimeout(retryTimer);
  retryTimer = setTimeout(fn, seconds * 1000);
}

async function join() {
  if (ended) return;
  setState('joining', 'Finding you a seat…');
  let d;
  try {
    d = await gql(JOIN, { b: broadcastId, u: userId });
  } catch (e) {
    return refused(e);
  }
  const j = d.joinBroadcast;
  sessionId = j.session.id;
  viewer.sessionId = sessionId;
  document.getElementById('player').hidden = false;
  follow();
  await seat(j.stage, j.token);
}

async function refused(e) {
  switch (e.code) {
    case 'CAPACITY_EXHAUSTED':
      setState('full', 'The audience is full right now. Trying again in 5 s…', 'warn');
      return retryIn(5, join);
    case 'REGION_FULL':
      setState('region-full', 'The streaming region is at its limit right now. Trying again in 10 s…', 'warn');
      return retryIn(10, join);
    case 'RATE_LIMITED':
    case 'UNAVAILABLE':
    case 'NETWORK':
      setState('reconnecting', `${explain(e)} Trying again in 3 s…`, 'warn');
      return retryIn(3, join);
    case 'BROADCAST_NOT_LIVE': {
      const state = await gql('query($b: ID!) { broadcast(id: $b) { state } }', { b: broadcastId })
        .then((d) => d.broadcast?.state)
        .catch(() => null);
      if (state === 'STARTING') {
        setState('not-live', 'The broadcast has not started yet. Waiting…');
        return retryIn(3, join);
      }
      return end('This broadcast has ended.');
    }
    case 'BROADCAST_NOT_FOUND':
      setState('error', `There is no broadcast "${broadcastId}".`, 'error');
      return undefined;
    default:
      setState('error', `Could not join: ${explain(e)}`, 'error');
      retryBtn.hidden = false;
      return undefined;
  }
}

function follow() {
  stopAssignment?.();
  stopAssignment = live.subscribe(ASSIGNMENT, { s: sessionId }, {
    next: ({ assignment: a }) => {
      console.debug(`[stagefleet] assignment ${a.kind} ${a.reason ?? ''} ${a.stage?.id ?? ''}`);
      if (a.kind === 'ENDED') return onEnded(a.reason);
      if (a.kind === 'MOVED') viewer.moves += 1;
      if (a.stage) seat(a.stage, a.token, a.kind === 'MOVED');
      return undefined;
    },
    error: (e) => {
      // The session is gone (e.g. it lapsed while this tab slept): take a new seat.
      if (e.code === 'SESSION_NOT_FOUND') join();
      else setState('error', `Lost the seat: ${explain(e)}`, 'error');
    },
  });
}

function onEnded(reason) {
  stopAssignment = null;
  switch (reason) {
    case 'EXPIRED':
    case 'UNUSED':
    case 'UNKNOWN':
      return join(); // the seat lapsed: take a new one
    case 'BROADCAST_ENDED':
      return end('The broadcast has ended. Thanks for watching!');
    case 'EVICTED':
      retryBtn.hidden = false;
      return end('An operator closed the stage you were on.', false);
    default:
      return end('You left the broadcast.', false);
  }
}

function end(text, final = true) {
  ended = final;
  setState('ended', text, final ? 'info' : 'warn');
  // Forget the stage first: leave() emits its last events synchronously, and they must not
  // turn the page back into "waiting for the host".
  const last = current;
  current = null;
  leaveStage(last);
  fill(videos);
}

// Takes (or keeps) the seat on `stage`: joins it with `token`; the stage played so far is left once
// video flows on the new one (or after 8 s), so a move shows no black gap.
async function seat(stage, token, moved = false) {
  // The same seat again (e.g. the first message after a reconnect): nothing to switch.
  if (current?.stageId === stage.id) return afterPlaying();
  IVS ??= await loadSdk().catch((e) => {
    setState('error', e.message, 'error');
    return null;
  });
  if (!IVS || current?.stageId === stage.id) return undefined;
  const old = current;
  const next = openStage(stage, token);
  current = next;
  viewer.stageId = stage.id;
  main.dataset.stageId = stage.id;
  seatEl.textContent = `Stage ${stage.slot}`;
  if (moved) setState('moving', `Moving you to stage ${stage.slot}…`);
  try {
    await next.ivs.join();
  } catch (e) {
    if (current !== next) return undefined;
    setState('reconnecting', `Could not connect to the stage (${e.message ?? e}); retrying…`, 'warn');
    current = old;
    leaveStage(next);
    retryIn(3, () => seat(stage, token, moved));
    return undefined;
  }
  if (old) {
    await Promise.race([next.firstVideo, new Promise((r) => setTimeout(r, 8000))]);
    leaveStage(old);
  }
  if (current === next) afterPlaying();
  return undefined;
}

function openStage(stage, token) {
  const { Stage, SubscribeType, StageEvents, StreamType } = IVS;
  const strategy = {
    stageStreamsToPublish: () => [],
    shouldPublishParticipant: () => false,
    shouldSubscribeToParticipant: () => SubscribeType.AUDIO_VIDEO,
  };
  const s = { stageId: stage.id, slot: stage.slot, ivs: new Stage(token, strategy), tiles: new Map() };
  let sawVideo;
  s.firstVideo = new Promise((r) => (sawVideo = r));
  s.ivs.on(StageEvents.STAGE_PARTICIPANT_STREAMS_ADDED, (participant, streams) => {
    if (participant.isLocal) return;
    const tile = tileFor(s, participant);
    const ms = tile.video.srcObject || new MediaStream();
    for (const st of streams) ms.addTrack(st.mediaStreamTrack);
    tile.video.srcObject = ms;
    tile.video.muted = muted;
    tile.video.play().catch(() => {});
    if (streams.some((st) => st.streamType === StreamType.VIDEO)) {
      tile.video.addEventListener(
        'loadeddata',
        () => {
          sawVideo();
          if (current === s) afterPlaying();
        },
        { once: true },
      );
    }
    if (current === s) afterPlaying();
  });
  s.ivs.on(StageEvents.STAGE_PARTICIPANT_STREAMS_REMOVED, (participant, streams) => {
    const tile = s.tiles.get(participant.id);
    if (!tile?.video.srcObject) return;
    for (const st of streams) tile.video.srcObject.removeTrack(st.mediaStreamTrack);
    if (!tile.video.srcObject.getTracks().length) dropTile(s, participant.id);
    if (current === s) afterPlaying();
  });
  s.ivs.on(StageEvents.STAGE_PARTICIPANT_LEFT, (participant) => {
    dropTile(s, participant.id);
    if (current === s) afterPlaying();
  });
  s.ivs.on(StageEvents.STAGE_CONNECTION_STATE_CHANGED, (state) => {
    if (current !== s || ended) return;
    if (state === 'disconnected' || state === 'errored') setState('reconnecting', 'Reconnecting to the stage…', 'warn');
    else if (state === 'connected') afterPlaying();
  });
  return s;
}

function tileFor(s, participant) {
  let tile = s.tiles.get(participant.id);
  if (tile) return tile;
  const name = participant.userId || participant.attributes?.userId || 'Host';
  const video = h('video', { autoplay: true, playsinline: true, muted: true, 'aria-label': `${name}'s video` });
  video.muted = true;
  const el = h('figure', { class: 'tile', dataset: { participant: participant.id, stage: s.stageId } }, video, h('figcaption', { class: 'muted' }, name));
  tile = { el, video };
  s.tiles.set(participant.id, tile);
  videos.append(el);
  return tile;
}

function dropTile(s, participantId) {
  const tile = s.tiles.get(participantId);
  if (!tile) return;
  tile.video.srcObject = null;
  tile.el.remove();
  s.tiles.delete(participantId);
}

function leaveStage(s) {
  if (!s) return;
  for (const id of [...s.tiles.keys()]) dropTile(s, id);
  try {
    s.ivs.leave();
  } catch {
    // already gone
  }
}

unmuteBtn.addEventListener('click', () => {
  muted = !muted;
  unmuteBtn.textContent = muted ? 'Unmute' : 'Mute';
  for (const v of videos.querySelectorAll('video')) v.muted = muted;
});

retryBtn.addEventListener('click', () => {
  retryBtn.hidden = true;
  ended = false;
  join();
});

document.getElementById('leave').addEventListener('click', async () => {
  clearTimeout(retryTimer);
  const id = sessionId;
  sessionId = null;
  ended = true;
  stopAssignment?.();
  stopAssignment = null;
  if (id) await gql('mutation($s: ID!) { leave(sessionId: $s) { id } }', { s: id }).catch(() => {});
  end('You left the broadcast.', false);
  retryBtn.hidden = false;
  ended = false;
});

// Leaving the page frees the seat at once (the lease would free it anyway).
addEventListener('pagehide', () => {
  if (sessionId && !ended) gqlOnUnload('mutation($s: ID!) { leave(sessionId: $s) { id } }', { s: sessionId });
});

showBackend();
if (!broadcastId) {
  chooseBroadcast();
} else {
  document.getElementById('title').textContent = `Watching ${broadcastId}`;
  gql('query($b: ID!) { broadcast(id: $b) { name } }', { b: broadcastId })
    .then((d) => {
      if (d.broadcast?.name) document.getElementById('title').textContent = d.broadcast.name;
    })
    .catch(() => {});
  join();
}
