// `--selftest`: everything except the emulator. Chromium starts with the harness's flags, the page
// loads the pinned SDK from node_modules, its classes construct, and the fake camera gives a
// 640x360 track that passes the same playback checks a viewer must pass. For CI diagnostics:
// when the real scenario fails, this says whether the browser side is sound.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { STEP_MS } from '../harness.mjs';
import { PLAYBACK, judgePlayback } from '../checks.mjs';

const PINNED_SDK = JSON.parse(
  fs.readFileSync(path.join(path.dirname(fileURLToPath(import.meta.url)), '../../package.json'), 'utf8'),
).dependencies['amazon-ivs-web-broadcast'];

export default {
  name: 'selftest',
  summary: 'no emulator: Chromium flags, SDK load, fake camera 640x360 playing and not black',
  usage: '(no tokens)',

  problems() {
    return [];
  },

  report() {
    return {};
  },

  async run(h, opts, report, failures) {
    report.browserVersion = await h.start();
    const p = await h.openPage('selftest');

    const info = await h.step('selftest: SDK objects and fake camera', STEP_MS.join, () =>
      p.page.evaluate(() => window.harness.selftest()),
    );
    Object.assign(report, info);
    if (info.sdkVersion !== PINNED_SDK) failures.push(`SDK reports ${info.sdkVersion}, package.json pins ${PINNED_SDK}`);
    if (!info.stageIsConstructor) failures.push('IVSBroadcastClient.Stage is not a constructor');
    if (info.localStreamType !== 'video') failures.push(`LocalStageStream(video track).streamType is ${info.localStreamType}`);
    if (info.audioTracks < 1) failures.push('the fake microphone gave no audio track');
    if (info.camera.width !== 640 || info.camera.height !== 360) {
      failures.push(`fake camera track is ${info.camera.width}x${info.camera.height}, wanted 640x360`);
    }

    await h.waitFor(p, 'first camera frame in <video>', 'first-frame', null, STEP_MS.firstFrame);
    const samples = await h.step('selftest: sampling playback', PLAYBACK.windowMs + 5000, () =>
      p.page.evaluate(([w, n]) => window.harness.measure(w, n), [PLAYBACK.windowMs, PLAYBACK.samples]),
    );
    const { metrics, failures: f } = judgePlayback(samples);
    report.playback = metrics;
    failures.push(...f.map((text) => `selftest: ${text}`));
    await h.screenshots('playing');
  },
};
