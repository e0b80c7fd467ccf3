// Pass/fail judgement of a <video>'s playback from raw samples taken by page/page.js.
// Pure: samples in, metrics and failure texts out, so thresholds can be unit-tested without a
// browser (checks.test.mjs).

// What "plays" means, from shared/ivs-local-media.md §4.3 (fake camera: luma mean ≈ 90, std ≈ 30;
// a black or ended track gives 0/0).
export const PLAYBACK = {
  windowMs: 3000, // sample over ~3 s ...
  samples: 4, // ... at 0, 1, 2, 3 s
  minAdvancedSeconds: 2, // currentTime must advance at least this much over the window
  // Not black: the best sample's picture must have at least this much contrast. Best, not every:
  // Chromium's fake camera draws a sweeping pie on flat green, and in the sweep's first moments a
  // grab's std-dev drops to ~8 (seen in 148), so a per-sample minimum would flake. A black, blank
  // or ended track gives 0 in every sample, and a frozen one fails the change check instead.
  minLumaStd: 5,
};

// Metrics for one <video> and the list of what failed (empty = pass).
export function judgePlayback(samples, limits = PLAYBACK) {
  if (!Array.isArray(samples) || samples.length < 2) {
    return { metrics: null, failures: ['fewer than 2 playback samples were taken'] };
  }
  const first = samples[0];
  const last = samples[samples.length - 1];
  const lumaStds = samples.map((s) => s.lumaStd);
  const hashes = samples.map((s) => s.hash);
  const metrics = {
    videoWidth: last.videoWidth,
    videoHeight: last.videoHeight,
    advancedSeconds: round(last.currentTime - first.currentTime, 3),
    windowSeconds: round((last.at - first.at) / 1000, 3),
    framesGrew: last.totalVideoFrames > first.totalVideoFrames,
    framesDecoded: last.totalVideoFrames - first.totalVideoFrames,
    lumaStd: round(Math.max(...lumaStds), 2),
    lumaMean: round(samples.reduce((a, s) => a + s.lumaMean, 0) / samples.length, 2),
    changed: first.hash != null && last.hash != null && first.hash !== last.hash,
    distinctPictures: new Set(hashes.filter((h) => h != null)).size,
  };

  const failures = [];
  if (!(metrics.videoWidth > 0)) failures.push('videoWidth is 0 (no decoded picture)');
  if (!(metrics.advancedSeconds >= limits.minAdvancedSeconds)) {
    failures.push(
      `currentTime advanced ${metrics.advancedSeconds} s in ${metrics.windowSeconds} s ` +
        `(need >= ${limits.minAdvancedSeconds})`,
    );
  }
  if (!metrics.framesGrew) {
    failures.push(`totalVideoFrames did not grow (${first.totalVideoFrames} -> ${last.totalVideoFrames})`);
  }
  if (!(metrics.lumaStd > limits.minLumaStd)) {
    failures.push(
      `picture looks black/flat: luma std-dev ${metrics.lumaStd} (need > ${limits.minLumaStd}; ` +
        `per sample ${lumaStds.map((v) => v.toFixed(1)).join(', ')})`,
    );
  }
  if (!metrics.changed) failures.push('picture did not change between the first and last sample (frozen)');
  return { metrics, failures };
}

function round(x, digits) {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
