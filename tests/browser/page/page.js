// Runs inside each Chromium page. It owns one IVS `Stage` and the page's <video>, and exposes
// `window.harness` for media.mjs to drive over CDP. It never decides pass/fail: it records what
// happened (with timestamps) and takes raw samples; lib/checks.mjs judges them in Node.
//
// Long-running SDK calls (join) are started here but not awaited by media.mjs's evaluate():
// outcomes land in `harness.state`, which Node polls with its own deadline. That keeps a hung SDK
// from hanging the CDP call, and lets a fatal outcome (join rejected, stage left) end a wait early.
'use strict';

(() => {
  const name = new URLSearchParams(location.search).get('name') || 'page';
  document.title = name;
  document.getElementById('label').textContent = name;
  const video = document.getElementById('video');
  const statusEl = document.getElementById('status');

  const state = {
    events: [],
    fatal: null, // first unrecoverable outcome, as text
    joinCalledAt: null, // performance.now() of the join() call
    joinedAt: null, // join() resolved
    publishedAt: null, // local publish state reached "published" (host)
    remoteId: null, // participant whose video is attached (viewer)
    streamsAddedAt: null,
    firstFrameAt: null,
    gone: {}, // participant id -> {how, wall}: left or streams removed (viewer)
  };

  // Every note also goes to Node at once (exposed binding), so the log survives a hung page.
  function note(kind, text = '') {
    const entry = { t: Math.round(performance.now()), wall: Date.now(), kind, text };
    state.events.push(entry);
    if (typeof window.harnessNote === 'function') window.harnessNote(entry).catch(() => {});
    statusEl.textContent = state.events
      .slice(-14)
      .map((e) => `${(e.t / 1000).toFixed(2).padStart(7)}s ${e.kind} ${e.text}`)
      .join('\n');
  }

  function fatal(text) {
    if (state.fatal == null) state.fatal = text;
    note('FATAL', text);
  }

  if (typeof window.IVSBroadcastClient === 'undefined') {
    window.harness = { loadError: 'IVSBroadcastClient global missing: /sdk.js did not load' };
    return;
  }
  const { Stage, LocalStageStream, SubscribeType, StageEvents, StreamType, StageLeftReason } =
    window.IVSBroadcastClient;

  // Short text for SDK event arguments (participants, streams, errors, plain values).
  function describe(v) {
    if (v == null || typeof v !== 'object') return String(v);
    if (Array.isArray(v)) return `[${v.map(describe).join(',')}]`;
    if ('isLocal' in v && 'id' in v) {
      return `${v.isLocal ? 'local' : 'remote'}:${v.id}${v.isPublishing ? '(publishing)' : ''}`;
    }
    if ('streamType' in v) return String(v.streamType);
    if (v instanceof Error || 'code' in v) {
      // StageError's `details` is a big JSON blob; its cause fields are the useful part
      // (e.g. "JOIN_ERROR: TOKEN_INVALID_SIGNATURE" from the events socket).
      let d = v.details;
      if (typeof d === 'string') {
        try {
          d = JSON.parse(d); // 1.41.0 gives a JSON string of an array
        } catch {
          // keep the string; no cause fields then
        }
      }
      if (Array.isArray(d)) d = d[0];
      const cause = d && typeof d === 'object' ? [d.causeDetails, d.causeLocation].filter(Boolean).join(' @') : '';
      const head = v.code != null ? `${v.name ?? 'Error'}(code=${v.code}, ${v.category})` : (v.name ?? 'Error');
      return `${head} ${v.message ?? ''}${cause ? ` [cause: ${cause}]` : ''}`;
    }
    try {
      return JSON.stringify(v).slice(0, 300);
    } catch {
      return Object.prototype.toString.call(v);
    }
  }

  let stage = null;

  function watch(s) {
    // Log every SDK event: when the emulator gets the protocol wrong, this is the trail to read.
    for (const ev of Object.values(StageEvents)) {
      s.on(ev, (...args) => note(ev, args.map(describe).join(' ')));
    }
    s.on(StageEvents.STAGE_LEFT, (reason) => {
      if (reason !== StageLeftReason.USER_INITIATED) fatal(`stage left: ${reason}`);
    });
  }

  function join(s) {
    stage = s;
    watch(s);
    state.joinCalledAt = performance.now();
    note('join-called');
    s.join().then(
      () => {
        state.joinedAt = performance.now();
        note('join-resolved', `${Math.round(state.joinedAt - state.joinCalledAt)} ms`);
      },
      (e) => fatal(`join() rejected: ${describe(e)}`),
    );
  }

  async function camera() {
    // 640x360 is what the doc's observations used; the fake device honours it.
    return navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 360 } },
      audio: true,
    });
  }

  // First decoded frame: requestVideoFrameCallback where it fires, else a 20 ms poll of the
  // decoded-frame counter (whichever comes first).
  function watchFirstFrame() {
    const mark = (how) => {
      if (state.firstFrameAt != null) return;
      state.firstFrameAt = performance.now();
      note('first-frame', `${how} ${video.videoWidth}x${video.videoHeight}`);
    };
    if ('requestVideoFrameCallback' in video) video.requestVideoFrameCallback(() => mark('rVFC'));
    const poll = setInterval(() => {
      if (video.getVideoPlaybackQuality().totalVideoFrames > 0) mark('poll');
      if (state.firstFrameAt != null) clearInterval(poll);
    }, 20);
  }

  // 160x90 grab of the <video>: luma mean/std-dev (BT.601) and an FNV-1a hash of the pixels.
  const canvas = document.createElement('canvas');
  canvas.width = 160;
  canvas.height = 90;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });

  function grab() {
    if (video.readyState < 2 || video.videoWidth === 0) return { lumaMean: 0, lumaStd: 0, hash: null };
    ctx.drawImage(video, 0, 0, canvas.width, canvas.height);
    const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    let sum = 0;
    let sumSq = 0;
    let hash = 0x811c9dc5;
    for (let i = 0; i < px.length; i += 4) {
      const y = 0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2];
      sum += y;
      sumSq += y * y;
      for (let c = 0; c < 3; c++) hash = Math.imul(hash ^ px[i + c], 0x01000193);
    }
    const n = px.length / 4;
    const mean = sum / n;
    return {
      lumaMean: mean,
      lumaStd: Math.sqrt(Math.max(0, sumSq / n - mean * mean)),
      hash: (hash >>> 0).toString(16),
    };
  }

  function sample() {
    const q = video.getVideoPlaybackQuality();
    return {
      at: performance.now(),
      videoWidth: video.videoWidth,
      videoHeight: video.videoHeight,
      currentTime: video.currentTime,
      totalVideoFrames: q.totalVideoFrames,
      droppedVideoFrames: q.droppedVideoFrames,
      readyState: video.readyState,
      paused: video.paused,
      ...grab(),
    };
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  window.harness = {
    name,
    state,
    sdkVersion: window.IVSBroadcastClient.__version,

    // Publishes the fake camera and microphone; subscribes to nobody.
    async startHost(token) {
      const media = await camera();
      video.srcObject = media; // local preview, so the host's screenshot shows what it sends
      const streams = media.getTracks().map((t) => new LocalStageStream(t));
      const strategy = {
        stageStreamsToPublish: () => streams,
        shouldPublishParticipant: () => true,
        shouldSubscribeToParticipant: () => SubscribeType.NONE,
      };
      const s = new Stage(token, strategy);
      s.on(StageEvents.STAGE_PARTICIPANT_PUBLISH_STATE_CHANGED, (p, publishState) => {
        if (!p.isLocal) return;
        if (publishState === 'published' && state.publishedAt == null) state.publishedAt = performance.now();
        // The SDK emits no ERROR event for a refused WHIP publish; this state is the only sign.
        if (publishState === 'errored') fatal('local publish state went to "errored" (WHIP publish failed?)');
      });
      join(s);
      const settings = media.getVideoTracks()[0].getSettings();
      return { width: settings.width, height: settings.height };
    },

    // Subscribes AUDIO_VIDEO to everyone, publishes nothing, shows the first remote video it gets
    // (from `hostId` only, when given).
    startViewer(token, hostId) {
      const strategy = {
        stageStreamsToPublish: () => [],
        shouldPublishParticipant: () => false,
        shouldSubscribeToParticipant: () => SubscribeType.AUDIO_VIDEO,
      };
      const s = new Stage(token, strategy);
      s.on(StageEvents.STAGE_PARTICIPANT_STREAMS_ADDED, (p, streams) => {
        if (p.isLocal || (hostId && p.id !== hostId) || state.remoteId != null) return;
        const v = streams.find((st) => st.streamType === StreamType.VIDEO);
        if (!v) return;
        state.remoteId = p.id;
        state.streamsAddedAt = performance.now();
        video.srcObject = new MediaStream([v.mediaStreamTrack]);
        watchFirstFrame();
        video.play().catch((e) => note('play-rejected', describe(e)));
      });
      const gone = (how) => (p) => {
        if (!p.isLocal && !(p.id in state.gone)) state.gone[p.id] = { how, wall: Date.now() };
      };
      s.on(StageEvents.STAGE_PARTICIPANT_SUBSCRIBE_STATE_CHANGED, (p, subscribeState) => {
        if (subscribeState === 'errored') fatal(`subscribe to ${p.id} went to "errored" (WHIP subscribe failed?)`);
      });
      s.on(StageEvents.STAGE_PARTICIPANT_LEFT, gone('left'));
      s.on(StageEvents.STAGE_PARTICIPANT_STREAMS_REMOVED, gone('streams-removed'));
      join(s);
    },

    // Conditions media.mjs waits for, with the page's fatal outcome if any: a wait ends when
    // either is set, so a failure is reported at once instead of as a bare timeout.
    status(what, arg) {
      const done = {
        joined: () => state.joinedAt != null,
        published: () => state.publishedAt != null,
        'first-frame': () => state.firstFrameAt != null,
        gone: () => arg in state.gone,
      }[what];
      if (!done) throw new Error(`unknown condition ${what}`);
      return { done: done(), fatal: state.fatal };
    },

    leave() {
      if (stage) stage.leave();
      note('leave-called');
      return Date.now();
    },

    // `count` raw samples spread over `windowMs`, timed in the page so CDP latency can't skew them.
    async measure(windowMs, count) {
      const samples = [];
      for (let i = 0; i < count; i++) {
        if (i > 0) await sleep(windowMs / (count - 1));
        samples.push(sample());
      }
      return samples;
    },

    // No network: the SDK loaded, its objects construct, and the fake camera plays into <video>.
    async selftest() {
      const media = await camera();
      const track = media.getVideoTracks()[0];
      const settings = track.getSettings();
      const local = new LocalStageStream(track);
      video.srcObject = media;
      watchFirstFrame();
      await video.play();
      return {
        sdkVersion: window.IVSBroadcastClient.__version,
        stageIsConstructor: typeof Stage === 'function',
        localStreamType: local.streamType,
        audioTracks: media.getAudioTracks().length,
        camera: { width: settings.width, height: settings.height, frameRate: settings.frameRate },
      };
    },
  };
  note('ready', `sdk ${window.harness.sdkVersion}`);
})();
