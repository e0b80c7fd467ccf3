#!/usr/bin/env node
// Browser test harness: drives the real, unmodified IVS Web Broadcast SDK (pinned in package.json)
// in headless Debian Chromium against stagefleet's IVS Real-Time emulator. A Rust integration test
// (tests/media_browser.rs) mints the tokens, spawns this, and reads the one JSON line it prints.
//
//   node tests/browser/media.mjs --host-token T --viewer-token T [--viewer-token T ...]
//        [--artifacts DIR] [--timeout-ms 60000] [--scenario publish-play] [--chromium PATH]
//   node tests/browser/media.mjs --host-token T --ready-file F --viewer-tokens-file G ...
//        (writes F once the host publishes, then waits for G: one viewer token per line)
//   node tests/browser/media.mjs --selftest [--artifacts DIR]
//
// stdout: exactly one JSON line, {"ok":bool, ..., "error":null|"text"}; everything else
// (page console errors, failed loopback requests, diagnostics) goes to stderr.
// Exit code: 0 all checks passed, 1 a check or step failed, 2 bad command line.
// Chromium is closed on every path: success, failure, --timeout-ms, SIGINT/SIGTERM/SIGHUP.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const HERE = path.dirname(fileURLToPath(import.meta.url));

// The one stdout line; exit only once it is flushed (stdout may be a pipe to the Rust test).
function finish(result, code) {
  process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(code));
}

// Loaded dynamically so that a missing node_modules still yields the JSON line and a hint.
let Harness, HarnessError, oneLine, sleep, publishPlay, selftest, pages, fanoutClient, consoleCluster, consoleActions;
try {
  ({ Harness, HarnessError, oneLine, sleep } = await import('./lib/harness.mjs'));
  publishPlay = (await import('./lib/scenarios/publish-play.mjs')).default;
  selftest = (await import('./lib/scenarios/selftest.mjs')).default;
  pages = (await import('./lib/scenarios/pages.mjs')).default;
  fanoutClient = (await import('./lib/scenarios/fanout-client.mjs')).default;
  consoleCluster = (await import('./lib/scenarios/console-cluster.mjs')).default;
  consoleActions = (await import('./lib/scenarios/console-actions.mjs')).default;
} catch (e) {
  const hint = e.code === 'ERR_MODULE_NOT_FOUND' ? ' (run: bash tests/browser/setup.sh)' : '';
  finish({ ok: false, error: `cannot load the harness: ${e.message.split('\n')[0]}${hint}` }, 1);
  await new Promise(() => {}); // finish() exits
}

// A scenario: problems(opts) -> usage errors, report(opts) -> initial report fields,
// run(harness, opts, report, failures) -> fills report, pushes check failures, throws on a
// failed step. Add new ones here (e.g. viewer-joins-first, mute, replica in a second stage).
const SCENARIOS = Object.fromEntries([publishPlay, selftest, pages, fanoutClient, consoleCluster, consoleActions].map((s) => [s.name, s]));
const DEFAULT_SCENARIO = publishPlay.name;

function usage() {
  const lines = Object.values(SCENARIOS).map((s) => `  --scenario ${s.name.padEnd(13)} ${s.usage}\n      ${s.summary}`);
  return [
    'usage: node tests/browser/media.mjs [--scenario NAME | --selftest] [tokens] [options]',
    ...lines,
    'options:',
    '  --artifacts DIR     screenshots and per-page logs (default tests/browser/artifacts/<scenario>)',
    '  --timeout-ms N      overall deadline (default 60000)',
    '  --chromium PATH     browser binary (default $STAGEFLEET_CHROMIUM or /usr/bin/chromium)',
  ].join('\n');
}

function parseCli(argv) {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      scenario: { type: 'string' },
      selftest: { type: 'boolean', default: false },
      'host-token': { type: 'string' },
      'viewer-token': { type: 'string', multiple: true, default: [] },
      'ready-file': { type: 'string' },
      'viewer-tokens-file': { type: 'string' },
      url: { type: 'string' },
      'admin-key': { type: 'string' },
      'host-key': { type: 'string' },
      broadcast: { type: 'string' },
      artifacts: { type: 'string' },
      'timeout-ms': { type: 'string', default: '60000' },
      chromium: { type: 'string', default: process.env.STAGEFLEET_CHROMIUM || '/usr/bin/chromium' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.selftest && values.scenario && values.scenario !== 'selftest') {
    throw new Error('--selftest and --scenario conflict');
  }
  const scenario = values.selftest ? 'selftest' : (values.scenario ?? DEFAULT_SCENARIO);
  if (!SCENARIOS[scenario]) throw new Error(`unknown scenario ${scenario} (known: ${Object.keys(SCENARIOS).join(', ')})`);
  const timeoutMs = Number(values['timeout-ms']);
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) throw new Error('--timeout-ms must be a positive integer');
  return {
    help: values.help,
    scenario,
    hostToken: values['host-token'],
    viewerTokens: values['viewer-token'],
    readyFile: values['ready-file'],
    viewerTokensFile: values['viewer-tokens-file'],
    url: values.url,
    adminKey: values['admin-key'],
    hostKey: values['host-key'],
    broadcast: values.broadcast,
    artifacts: path.resolve(values.artifacts ?? path.join(HERE, 'artifacts', scenario)),
    timeoutMs,
    chromiumPath: values.chromium,
  };
}

async function main() {
  let opts;
  try {
    opts = parseCli(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`${usage()}\n`);
    return finish({ ok: false, error: `bad command line: ${oneLine(e)}` }, 2);
  }
  if (opts.help) {
    process.stderr.write(`${usage()}\n`);
    return process.exit(0);
  }
  const scenario = SCENARIOS[opts.scenario];
  const problems = scenario.problems(opts);
  if (problems.length) {
    process.stderr.write(`${usage()}\n`);
    return finish({ ok: false, scenario: scenario.name, error: `bad command line: ${problems.join('; ')}` }, 2);
  }

  const started = Date.now();
  const h = new Harness({ artifacts: opts.artifacts, timeoutMs: opts.timeoutMs, chromiumPath: opts.chromiumPath });
  const report = { scenario: scenario.name, ...scenario.report(opts) };
  const failures = [];

  // The scenario races the overall deadline and signals; whichever ends first, cleanup follows.
  let interrupt;
  const interrupted = new Promise((_, reject) => (interrupt = reject));
  let signals = 0;
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(sig, () => {
      // A second signal means "now": process.exit still runs playwright's hook that kills Chromium.
      if (++signals > 1) process.exit(1);
      interrupt(new HarnessError(`received ${sig} during "${h.currentStep}"`));
    });
  }
  const deadline = sleep(opts.timeoutMs).then(() => {
    throw new HarnessError(`overall --timeout-ms ${opts.timeoutMs} reached during "${h.currentStep}"`);
  });
  const run = scenario.run(h, opts, report, failures);
  run.catch(() => {}); // when the deadline wins, the scenario's later failure is expected noise

  let error = null;
  try {
    await Promise.race([run, deadline, interrupted]);
  } catch (e) {
    error = e instanceof HarnessError ? e.message : `harness bug: ${e.stack ?? e}`;
  }
  // What each page showed when it went wrong; bounded, since the deadline may be spent already.
  if ((error || failures.length) && signals === 0) await h.screenshots('failure', 3000);
  await Promise.race([h.close(), sleep(15000)]);

  const errors = [...failures, ...(error ? [error] : [])];
  const result = {
    ok: errors.length === 0,
    ...report,
    elapsedMs: Date.now() - started,
    artifacts: opts.artifacts,
    error: errors.length ? errors.join('; ') : null,
  };
  try {
    fs.mkdirSync(opts.artifacts, { recursive: true });
    fs.writeFileSync(path.join(opts.artifacts, 'result.json'), `${JSON.stringify(result, null, 2)}\n`);
  } catch {
    // the artifacts directory may be what failed; the stdout line is what counts
  }
  finish(result, result.ok ? 0 : 1);
}

// A throw in an event handler must still end in the JSON line (playwright's exit hook kills Chromium).
process.on('uncaughtException', (e) => finish({ ok: false, error: `harness bug: ${e.stack ?? e}` }, 1));
process.on('unhandledRejection', (e) => finish({ ok: false, error: `harness bug: ${e?.stack ?? e}` }, 1));
main().catch((e) => finish({ ok: false, error: `harness bug: ${e.stack ?? e}` }, 1));
