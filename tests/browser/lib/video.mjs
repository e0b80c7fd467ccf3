// Playback samples of a <video> on any page (the embedded pages have no test hooks): size, clock,
// decoded frames and a 160x90 grab's luma and hash, the inputs of checks.mjs's judgePlayback.
import { PLAYBACK } from './checks.mjs';

// Runs inside the page (serialized by playwright): `samples` samples over `windowMs`.
async function measureInPage([selector, windowMs, samples]) {
  const video = document.querySelector(selector);
  if (!video) throw new Error(`no element matches ${selector}`);
  const canvas = document.createElement('canvas');
  canvas.width = 160;
  canvas.height = 90;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  const grab = () => {
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
    return { lumaMean: mean, lumaStd: Math.sqrt(Math.max(0, sumSq / n - mean * mean)), hash: (hash >>> 0).toString(16) };
  };
  const out = [];
  for (let i = 0; i < samples; i++) {
    if (i) await new Promise((r) => setTimeout(r, windowMs / (samples - 1)));
    const q = video.getVideoPlaybackQuality();
    out.push({
      at: performance.now(),
      videoWidth: video.videoWidth,
      videoHeight: video.videoHeight,
      currentTime: video.currentTime,
      totalVideoFrames: q.totalVideoFrames,
      readyState: video.readyState,
      paused: video.paused,
      ...grab(),
    });
  }
  return out;
}

/** Samples the first `<video>` matching `selector` on `page` over PLAYBACK.windowMs. */
export function samplePlayback(page, selector) {
  return page.evaluate(measureInPage, [selector, PLAYBACK.windowMs, PLAYBACK.samples]);
}
