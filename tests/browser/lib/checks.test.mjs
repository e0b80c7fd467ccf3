// Unit tests for the playback judgement (no browser): `npm test` in tests/browser.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { judgePlayback } from './checks.mjs';

// Four samples one second apart, as page.js takes them.
function samples({ fps = 15, advance = 1, std = 30, frozen = false, width = 640 } = {}) {
  return [0, 1, 2, 3].map((i) => ({
    at: 1000 + i * 1000,
    videoWidth: width,
    videoHeight: width ? 360 : 0,
    currentTime: 5 + i * advance,
    totalVideoFrames: 10 + i * fps,
    lumaMean: 90,
    lumaStd: std,
    hash: frozen ? 'abc' : `h${i}`,
  }));
}

test('live fake-camera playback passes', () => {
  const { metrics, failures } = judgePlayback(samples());
  assert.deepEqual(failures, []);
  assert.equal(metrics.advancedSeconds, 3);
  assert.equal(metrics.framesGrew, true);
  assert.equal(metrics.changed, true);
  assert.equal(metrics.distinctPictures, 4);
});

test('stalled clock fails with the measured advance', () => {
  const { failures } = judgePlayback(samples({ advance: 0.5 }));
  assert.equal(failures.length, 1);
  assert.match(failures[0], /advanced 1\.5 s/);
});

test('black picture fails', () => {
  const { failures } = judgePlayback(samples({ std: 0 }));
  assert.ok(failures.some((f) => f.includes('black')));
});

test('one low-contrast sample (pie sweep just starting) is not black', () => {
  const s = samples();
  s[2].lumaStd = 1;
  assert.deepEqual(judgePlayback(s).failures, []);
});

test('frozen picture and no new frames fail', () => {
  const { failures } = judgePlayback(samples({ fps: 0, frozen: true }));
  assert.ok(failures.some((f) => f.includes('totalVideoFrames did not grow')));
  assert.ok(failures.some((f) => f.includes('frozen')));
});

test('no video at all fails on width', () => {
  const { failures } = judgePlayback(samples({ width: 0 }));
  assert.ok(failures.some((f) => f.includes('videoWidth is 0')));
});

test('too few samples is a failure, not a crash', () => {
  assert.deepEqual(judgePlayback([]).failures, ['fewer than 2 playback samples were taken']);
});
