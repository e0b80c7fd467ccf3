// Default scenario: the host page publishes Chromium's fake camera and microphone through the real
// IVS Web Broadcast SDK; every viewer page (subscribe-only token) must play it; then the host
// leaves and every viewer must see it go. Checks per shared/ivs-local-media.md §4.3.
import fs from 'node:fs';
import { HarnessError, STEP_MS, sleep } from '../harness.mjs';
import { PLAYBACK, judgePlayback } from '../checks.mjs';
import { decodeToken, probeEndpoints, tokenProblems } from '../token.mjs';

export default {
  name: 'publish-play',
  summary: 'host publishes the fake camera, each viewer plays it, host leaves',
  usage:
    '--host-token TOKEN (--viewer-token TOKEN [--viewer-token TOKEN ...] | --ready-file PATH --viewer-tokens-file PATH)',

  problems(opts) {
    const p = [];
    if (!opts.hostToken) p.push('--host-token is required');
    if (opts.viewerTokens.length === 0 && !opts.viewerTokensFile) {
      p.push('at least one --viewer-token (or --viewer-tokens-file) is required');
    }
    if (opts.viewerTokensFile && opts.viewerTokens.length) p.push('--viewer-token and --viewer-tokens-file conflict');
    return p;
  },

  // The report is filled in as steps pass, so a failure still prints what was measured.
  report(opts) {
    return { viewers: opts.viewerTokens.map((_, i) => viewerReport(i)) };
  },

  async run(h, opts, report, failures) {
    // --- 0. tokens: catch what the SDK would only report slowly (or never)
    const problems = [
      ...tokenProblems('--host-token', opts.hostToken),
      ...opts.viewerTokens.flatMap((t, i) => tokenProblems(`--viewer-token #${i + 1}`, t)),
    ];
    const hostId = decodeToken(opts.hostToken)?.jti;
    if (!hostId) problems.push('--host-token has no jti claim (the participant id)');
    if (problems.length) throw new HarnessError(`checking tokens: ${problems.join('; ')}`);

    // --- 1. one browser, one page per participant
    report.browserVersion = await h.start();
    const host = await h.openPage('host');
    report.sdkVersion = await host.page.evaluate(() => window.harness.sdkVersion);

    // --- 2. the host joins and publishes
    const camera = await h.step('host: getUserMedia and join()', STEP_MS.join, () =>
      host.page.evaluate((t) => window.harness.startHost(t), opts.hostToken),
    );
    report.hostCamera = camera;
    await joined(h, host, opts.hostToken);
    await h.waitFor(host, 'publishing (local publish state "published")', 'published', null, STEP_MS.publish);

    // --- 2b. viewers' tokens may come only now: the caller (the Rust test) waits for the host to
    // publish before it asks stagefleet for seats, as real viewers arrive after the host is live.
    if (opts.readyFile) fs.writeFileSync(opts.readyFile, `${hostId}\n`);
    if (opts.viewerTokensFile) {
      opts.viewerTokens = await h.step('waiting for --viewer-tokens-file', STEP_MS.tokens ?? 60000, () =>
        readTokens(opts.viewerTokensFile),
      );
      const problems = opts.viewerTokens.flatMap((t, i) => tokenProblems(`viewer token #${i + 1}`, t));
      if (problems.length) throw new HarnessError(`checking viewer tokens: ${problems.join('; ')}`);
      report.viewers = opts.viewerTokens.map((_, i) => viewerReport(i));
    }
    const viewers = await Promise.all(report.viewers.map((v) => h.openPage(v.name)));

    // --- 3. each viewer joins and must decode a first frame of the host's video
    await Promise.all(
      viewers.map(async (v, i) => {
        const token = opts.viewerTokens[i];
        await h.step(`${v.name}: new Stage() and join()`, STEP_MS.join, () =>
          v.page.evaluate(([t, id]) => window.harness.startViewer(t, id), [token, hostId]),
        );
        await joined(h, v, token);
        await h.waitFor(v, `first video frame from ${hostId}`, 'first-frame', null, STEP_MS.firstFrame);
        const s = await v.page.evaluate(() => {
          const { joinCalledAt, joinedAt, firstFrameAt } = window.harness.state;
          return { joinCalledAt, joinedAt, firstFrameAt };
        });
        report.viewers[i].firstFrameMs = Math.round(s.firstFrameAt - s.joinCalledAt);
        report.viewers[i].joinMs = Math.round(s.joinedAt - s.joinCalledAt);
      }),
    );

    // --- 4. playback over ~3 s: size, clock, decoded frames, not black, moving
    await Promise.all(
      viewers.map(async (v, i) => {
        const samples = await h.step(`${v.name}: sampling playback`, PLAYBACK.windowMs + 5000, () =>
          v.page.evaluate(([w, n]) => window.harness.measure(w, n), [PLAYBACK.windowMs, PLAYBACK.samples]),
        );
        const { metrics, failures: f } = judgePlayback(samples);
        Object.assign(report.viewers[i], metrics);
        failures.push(...f.map((text) => `${v.name}: ${text}`));
      }),
    );
    await h.screenshots('1-playing');

    // --- 5. the host leaves; every viewer must see it go (participant left or streams removed)
    for (const v of viewers) {
      const early = await v.page.evaluate((id) => window.harness.state.gone[id] ?? null, hostId);
      if (early) failures.push(`${v.name}: host ${hostId} was reported gone (${early.how}) before it left`);
    }
    const leftAt = await h.step('host: leave()', STEP_MS.leave, () =>
      host.page.evaluate(() => window.harness.leave()),
    );
    await Promise.all(
      viewers.map(async (v, i) => {
        try {
          await h.waitFor(v, `seeing host ${hostId} leave`, 'gone', hostId, STEP_MS.hostGone);
          const gone = await v.page.evaluate((id) => window.harness.state.gone[id], hostId);
          Object.assign(report.viewers[i], { sawHostLeave: true, hostGoneMs: gone.wall - leftAt, hostGoneHow: gone.how });
        } catch (e) {
          report.viewers[i].sawHostLeave = false;
          failures.push(e.message);
        }
      }),
    );
    await h.screenshots('2-host-left');
  },
};

// Waits for the page's join() to resolve, and insists it resolved the proper way.
// On failure, adds whether the token's events_url/whip_url answer at all.
async function joined(h, handle, token) {
  try {
    await h.waitFor(handle, 'join()', 'joined', null, STEP_MS.join);
    // The SDK also resolves join() after a 12 s fallback when no STAGE_STATE ever came; it then
    // knows no other participant, so what follows would fail obscurely. Say it here.
    if (!handle.wsIn.some((t) => t === 'aws:ivs:STAGE_STATE' || t === 'STAGE_STATE')) {
      throw new HarnessError(
        `${handle.name}: join(): resolved without any STAGE_STATE on the events socket ` +
          `(the SDK's 12 s fallback); ${handle.recent()}`,
      );
    }
  } catch (e) {
    const notes = await probeEndpoints(token);
    if (notes.length) e.message += `; ${notes.join('; ')}`;
    throw e;
  }
}

function viewerReport(i) {
  return {
    name: `viewer${i + 1}`,
    videoWidth: null,
    videoHeight: null,
    advancedSeconds: null,
    framesGrew: null,
    lumaStd: null,
    changed: null,
    firstFrameMs: null,
    sawHostLeave: null,
  };
}

// The tokens file is written whole (renamed into place) by the caller: one token per line.
async function readTokens(file) {
  for (;;) {
    if (fs.existsSync(file)) {
      const tokens = fs.readFileSync(file, 'utf8').split('\n').map((l) => l.trim()).filter(Boolean);
      if (tokens.length === 0) throw new HarnessError(`${file} holds no token`);
      return tokens;
    }
    await sleep(50);
  }
}
