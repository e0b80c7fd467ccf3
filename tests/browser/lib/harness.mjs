// The machinery every scenario shares: a loopback HTTP server for the test page and the SDK
// bundle, one headless Chromium, one isolated browser context per participant page, named steps
// with deadlines, artifacts (screenshots, per-page event and console logs) and cleanup that
// always closes Chromium. Scenarios (lib/scenarios/*.mjs) decide what to do with the pages.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { PageHandle } from './page-handle.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..');
const SDK_BUNDLE = path.join(ROOT, 'node_modules/amazon-ivs-web-broadcast/dist/amazon-ivs-web-broadcast.js');

// Chromium flags, from shared/ivs-local-media.md.
export const CHROMIUM_ARGS = [
  // A camera and microphone without hardware or a permission prompt: the fake device draws a
  // moving pattern, which is what makes "picture changes" checkable.
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  // Only loopback resolves: the SDK's telemetry and remote-config hosts fail before a packet
  // leaves the machine, and the SDK keeps its default (tested) behaviour rather than whatever a
  // remote config would switch on.
  '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost',
  // Viewers' <video> must start without a user gesture.
  '--autoplay-policy=no-user-gesture-required',
  // We run as root (CI); Chromium's sandbox refuses to start as root.
  '--no-sandbox',
  // A fresh profile comes from playwright itself: launch() always uses a new temporary
  // --user-data-dir and deletes it on close.
];

// Step timeouts, each also capped by what is left of --timeout-ms.
export const STEP_MS = {
  launch: 20000,
  load: 15000,
  join: 15000, // the SDK waits up to 12 s for a first STAGE_STATE before it gives up
  publish: 15000,
  firstFrame: 20000,
  leave: 5000,
  hostGone: 10000,
  screenshot: 5000,
};

export class HarnessError extends Error {}

const stderr = (line) => process.stderr.write(`${line}\n`);

export class Harness {
  constructor({ artifacts, timeoutMs, chromiumPath }) {
    this.artifacts = artifacts;
    this.timeoutMs = timeoutMs;
    this.chromiumPath = chromiumPath;
    this.deadline = Date.now() + timeoutMs;
    this.currentStep = 'starting';
    this.pages = [];
    this.browser = null;
    this.server = null;
    this.origin = null;
  }

  remaining() {
    return this.deadline - Date.now();
  }

  // Runs `fn(budgetMs)` as a named step: the name goes into any error, and the step fails when it
  // takes longer than `ms` or than what is left of the overall timeout.
  async step(label, ms, fn) {
    this.currentStep = label;
    // Leave a little of the overall deadline, so that a step which runs into it still reports
    // itself (with the page's context) rather than the bare overall timeout.
    const budget = Math.min(ms, this.remaining() - 300);
    if (budget <= 0) throw new HarnessError(`${label}: no time left of --timeout-ms ${this.timeoutMs}`);
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => {
        const why = budget < ms ? ` (the rest of --timeout-ms ${this.timeoutMs})` : '';
        reject(new HarnessError(`${label}: timed out after ${budget} ms${why}`));
      }, budget);
    });
    try {
      return await Promise.race([fn(budget), timeout]);
    } catch (e) {
      if (e instanceof HarnessError) throw e;
      throw new HarnessError(`${label}: ${oneLine(e)}`);
    } finally {
      clearTimeout(timer);
    }
  }

  async start() {
    fs.mkdirSync(this.artifacts, { recursive: true });
    await this.step('serving the test page', STEP_MS.load, () => this.#serve());
    await this.step(`launching ${this.chromiumPath}`, STEP_MS.launch, async () => {
      if (!fs.existsSync(this.chromiumPath)) {
        throw new HarnessError(`${this.chromiumPath} does not exist: run tests/browser/setup.sh`);
      }
      this.browser = await chromium.launch({
        executablePath: this.chromiumPath,
        headless: true,
        args: CHROMIUM_ARGS,
        // media.mjs handles signals itself so that it can still print its JSON line.
        handleSIGINT: false,
        handleSIGTERM: false,
        handleSIGHUP: false,
      });
    });
    return this.browser.version();
  }

  async #serve() {
    if (!fs.existsSync(SDK_BUNDLE)) {
      throw new HarnessError(`${SDK_BUNDLE} is missing: run tests/browser/setup.sh`);
    }
    const files = {
      '/': ['text/html', fs.readFileSync(path.join(ROOT, 'page/index.html'))],
      '/page.js': ['text/javascript', fs.readFileSync(path.join(ROOT, 'page/page.js'))],
      '/sdk.js': ['text/javascript', fs.readFileSync(SDK_BUNDLE)],
    };
    this.server = http.createServer((req, res) => {
      const file = files[new URL(req.url, 'http://x').pathname];
      if (!file) return res.writeHead(404).end();
      res.writeHead(200, { 'Content-Type': file[0], 'Cache-Control': 'no-store' }).end(file[1]);
    });
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', resolve);
    });
    this.origin = `http://127.0.0.1:${this.server.address().port}`;
  }

  // One participant = one browser context (separate cookies/storage, like separate browsers).
  async openPage(name) {
    return this.step(`${name}: loading the test page`, STEP_MS.load, async (budget) => {
      const context = await this.browser.newContext({ viewport: { width: 700, height: 640 } });
      await context.grantPermissions(['camera', 'microphone'], { origin: this.origin });
      const handle = new PageHandle(name, context, await context.newPage(), this.origin);
      this.pages.push(handle);
      await handle.observe();
      await handle.page.goto(`${this.origin}/?name=${encodeURIComponent(name)}`, { timeout: budget });
      await handle.page.waitForFunction(() => window.harness, null, { timeout: budget });
      const loadError = await handle.page.evaluate(() => window.harness.loadError);
      if (loadError) throw new HarnessError(`${name}: ${loadError}`);
      return handle;
    });
  }

  // A page the node itself serves (the embedded web pages), in its own browser context with camera
  // and microphone allowed for that origin. `waitFor` is not for these; use `until`.
  async openUrl(name, url, viewport = { width: 1000, height: 760 }) {
    return this.step(`${name}: loading ${url}`, STEP_MS.load, async (budget) => {
      const origin = new URL(url).origin;
      const context = await this.browser.newContext({ viewport });
      await context.grantPermissions(['camera', 'microphone'], { origin });
      // Loopback failures of the node's own origin are reported too (origin: none of ours).
      const handle = new PageHandle(name, context, await context.newPage(), 'about:none');
      this.pages.push(handle);
      await handle.observe();
      await handle.page.goto(url, { timeout: budget });
      return handle;
    });
  }

  // Waits until `fn(arg)` is truthy in the page (polled), as a named step that fails with the
  // page's recent console and the value of `describe` (if given) at the time.
  async until(handle, label, ms, fn, arg = null, describe = null) {
    const step = `${handle.name}: ${label}`;
    try {
      return await this.step(step, ms, (budget) =>
        Promise.race([handle.page.waitForFunction(fn, arg, { timeout: budget, polling: 100 }), handle.broken]),
      );
    } catch (e) {
      let seen = '';
      if (describe) seen = await handle.page.evaluate(describe, arg).then((v) => `; page shows: ${JSON.stringify(v)}`, () => '');
      const tail = handle.console.slice(-4).join(' | ');
      throw new HarnessError(`${e.message}${seen}${tail ? `; last console: ${tail}` : ''}`);
    }
  }

  // Waits until page.js's `harness.status(what, arg).done`. Fails early with the page's fatal
  // outcome or a failure only Node saw (events socket, crash), else on timeout; every failure
  // message carries the page's recent history (PageHandle.recent).
  async waitFor(handle, label, what, arg, ms) {
    const step = `${handle.name}: ${label}`;
    const args = [what, arg ?? null];
    let status;
    try {
      await this.step(step, ms, (budget) =>
        Promise.race([
          handle.page.waitForFunction(
            ([w, a]) => {
              const s = window.harness.status(w, a);
              return s.done || s.fatal != null;
            },
            args,
            { timeout: budget, polling: 100 },
          ),
          handle.broken,
        ]),
      );
      status = await handle.page.evaluate(([w, a]) => window.harness.status(w, a), args);
    } catch (e) {
      throw new HarnessError(`${e.message}; ${handle.recent()}`);
    }
    if (!status.done) throw new HarnessError(`${step}: ${status.fatal}; ${handle.recent()}`);
  }

  // Screenshots are diagnostics: a failure to take one is logged, never fails the run.
  // `timeoutMs` defaults to what the overall deadline allows; failure shots pass their own.
  async screenshots(tag, timeoutMs = Math.min(STEP_MS.screenshot, this.remaining())) {
    await Promise.all(
      this.pages.map(async ({ name, page }) => {
        const file = path.join(this.artifacts, `${name}-${tag}.png`);
        try {
          await page.screenshot({ path: file, timeout: Math.max(1, timeoutMs) });
        } catch (e) {
          stderr(`[${name}] screenshot ${file} failed: ${oneLine(e)}`);
        }
      }),
    );
  }

  // Always called, whatever happened: a polite leave() on every page (so the emulator sees the
  // sockets close and the WHIP DELETEs), Chromium closed, then the pages' logs written. If close
  // hangs, playwright's exit hook still kills the browser when the process exits.
  async close() {
    if (this.browser) {
      const leaves = this.pages.map(({ page }) => page.evaluate(() => window.harness?.leave?.()).catch(() => {}));
      await Promise.race([Promise.all(leaves), grace(1500)]);
      await Promise.race([this.browser.close().catch(() => {}), grace(10000)]);
    }
    if (this.server) {
      this.server.closeAllConnections?.();
      this.server.close();
    }
    for (const h of this.pages) {
      try {
        h.writeLogs(this.artifacts);
      } catch (e) {
        stderr(`writing the logs of ${h.name} failed: ${oneLine(e)}`);
      }
    }
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A bound on cleanup that does not itself keep the process alive once cleanup is done.
const grace = (ms) => new Promise((r) => setTimeout(r, ms).unref());

export function oneLine(e) {
  const text = e instanceof Error ? e.message : String(e);
  // Playwright appends multi-line call logs; the first line says what happened.
  return text.split('\n')[0];
}
