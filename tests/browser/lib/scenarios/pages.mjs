// The embedded web pages, as users meet them, against a running stagefleet node (its built-in
// emulator carries the media): the console refuses a wrong key and signs in with the admin key;
// the broadcaster page refuses a wrong key, signs in with a host key and goes live; the console
// adds a replica stage; three viewer pages join with no key and each plays the host's fake camera;
// the console's audience count follows through its subscriptions; a second replica comes, the
// console drains the first with "move viewers", and every viewer on it follows to another stage
// without a reload and plays again. The viewer page's HTML and scripts must hold no key.
import { HarnessError, STEP_MS } from '../harness.mjs';
import { judgePlayback } from '../checks.mjs';
import { samplePlayback } from '../video.mjs';
import { graphql, poll, signIn } from '../pages-kit.mjs';

const VIEWERS = 3;
const WRONG_KEY = 'sf_this-key-does-not-exist-0000000000';

export default {
  name: 'pages',
  summary: 'console, broadcaster and three viewer pages; a drained stage moves its viewers',
  usage: '--url URL --admin-key KEY --host-key KEY --broadcast ID',

  problems(opts) {
    return ['url', 'adminKey', 'hostKey', 'broadcast'].filter((k) => !opts[k]).map((k) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} is required`);
  },

  report() {
    return { viewers: [], console: {}, host: {}, viewerPage: {} };
  },

  async run(h, opts, report, failures) {
    const url = opts.url.replace(/\/$/, '');
    const b = opts.broadcast;
    const api = graphql(url, opts.adminKey);
    const stages = async () =>
      (await api('query($b: ID!) { broadcast(id: $b) { stages { id role status viewers publishers } } }', { b })).broadcast.stages;
    const until = (label, ms, probe) => poll(h, label, ms, probe);

    // --- 0. the viewer page and every file it loads hold no key
    report.viewerPage = await h.step('viewer page: fetching its files', STEP_MS.load, () => crawl(url, '/watch/'));
    for (const [file, text] of Object.entries(report.viewerPage.texts)) {
      for (const [what, key] of [['admin key', opts.adminKey], ['host key', opts.hostKey]]) {
        if (text.includes(key)) failures.push(`viewer page: ${file} contains the ${what}`);
      }
      if (/sf_[A-Za-z0-9_-]{16,}/.test(text)) failures.push(`viewer page: ${file} contains something shaped like an API key`);
    }
    report.viewerPage = { files: Object.keys(report.viewerPage.texts) };

    report.browserVersion = await h.start();

    // --- 1. console: a wrong key is refused plainly; the admin key signs in
    const con = await h.openUrl('console', `${url}/console/`, { width: 1280, height: 900 });
    con.page.on('dialog', (d) => d.accept().catch(() => {})); // "End this broadcast?" and the like: yes
    report.console.wrongKeyMessage = await signIn(h, con, '#admin-key', '#sign-in', WRONG_KEY, '#signin-error');
    if (!/not valid/i.test(report.console.wrongKeyMessage)) {
      failures.push(`console: a wrong key showed "${report.console.wrongKeyMessage}", not a clear "not valid"`);
    }
    await con.page.fill('#admin-key', opts.adminKey);
    await con.page.click('#sign-in');
    await h.until(con, `listing broadcast ${b}`, STEP_MS.load, (id) => document.querySelector(`#broadcasts [data-broadcast-id="${id}"]`), b);
    await con.page.click(`#broadcasts [data-broadcast-id="${b}"] [data-action="select"]`);
    await h.until(con, 'showing the audience', STEP_MS.load, () => /^\d+$/.test(document.querySelector('#stat-viewers')?.textContent.trim() ?? ''));
    // A reload (cached page revalidated with its ETag) keeps working and keeps the tab signed in.
    await con.page.reload();
    await h.until(con, 'signed in again after a reload', STEP_MS.load, () => !document.querySelector('#console')?.hidden && /^\d+$/.test(document.querySelector('#stat-viewers')?.textContent.trim() ?? ''));

    // --- 2. broadcaster: a wrong key is refused; the host key signs in and goes live
    const host = await h.openUrl('host', `${url}/broadcast/?broadcast=${encodeURIComponent(b)}`);
    report.host.wrongKeyMessage = await signIn(h, host, '#host-key', '#sign-in', WRONG_KEY, '#signin-error');
    if (!/not valid/i.test(report.host.wrongKeyMessage)) {
      failures.push(`broadcaster: a wrong key showed "${report.host.wrongKeyMessage}", not a clear "not valid"`);
    }
    await host.page.fill('#host-key', opts.hostKey);
    await host.page.click('#sign-in');
    const hostState = () => ({ state: document.querySelector('main').dataset.state, status: document.querySelector('#host-status').textContent });
    await h.until(host, 'camera ready ("Go live" enabled)', STEP_MS.publish, () => !document.querySelector('#go-live').disabled, null, hostState);

    // --- 2b. a viewer who comes before the host is told so, and plays once the host is live
    const viewerState = () => ({ state: document.querySelector('main').dataset.state, status: document.querySelector('#status').textContent, history: window.stagefleetViewer?.history });
    const early = await h.openUrl('viewer1', `${url}/watch/?broadcast=${encodeURIComponent(b)}`, { width: 640, height: 600 });
    await h.until(early, 'waiting for the host', STEP_MS.join, () => document.querySelector('main').dataset.state === 'waiting-host', null, viewerState);
    report.earlyViewerStatus = await early.page.textContent('#status');
    await early.page.evaluate(() => (window.loadedOnce = performance.now()));
    const liveAt = Date.now();
    await host.page.click('#go-live');
    await h.until(host, 'live on the origin', STEP_MS.publish, () => document.querySelector('main').dataset.state === 'live', null, hostState);
    report.host.goLiveMs = Date.now() - liveAt;
    report.host.status = await host.page.textContent('#host-status');

    // --- 3. the console adds a replica; the emulator replicates the host into it
    const before = new Set((await stages()).map((s) => s.id));
    await con.page.click('#add-replica');
    let replica1 = null;
    await until('console: first replica READY', 20000, async () => {
      replica1 = (await stages()).find((s) => !before.has(s.id) && s.role === 'REPLICA' && s.status === 'READY');
      return replica1;
    });
    report.replica1 = replica1.id;

    // --- 4. two more viewers, no key: each of the three plays the host (the first without a reload)
    const viewers = [early];
    for (let i = 2; i <= VIEWERS; i++) {
      viewers.push(await h.openUrl(`viewer${i}`, `${url}/watch/?broadcast=${encodeURIComponent(b)}`, { width: 640, height: 600 }));
    }
    await Promise.all(
      viewers.map(async (v) => {
        await v.page.evaluate(() => (window.loadedOnce ??= performance.now())); // gone if the page reloads
        await h.until(v, 'playing the host', STEP_MS.firstFrame, () => document.querySelector('main').dataset.state === 'playing', null, viewerState);
      }),
    );
    await Promise.all(
      viewers.map(async (v) => {
        const stage = await v.page.evaluate(() => document.querySelector('main').dataset.stageId);
        const { metrics, failures: f } = judgePlayback(await samplePlayback(v.page, `#videos figure[data-stage="${stage}"] video`));
        report.viewers.push({ name: v.name, stage, playback: metrics });
        failures.push(...f.map((t) => `${v.name} (stage ${stage}): ${t}`));
      }),
    );
    await h.screenshots('1-playing');

    // --- 5. the console counted them, live
    await h.until(con, `audience ${VIEWERS} through subscriptions`, 10000, (n) => Number(document.querySelector('#stat-viewers').textContent) === n, VIEWERS,
      () => document.querySelector('#stat-viewers').textContent);
    report.console.audienceShown = Number(await con.page.textContent('#stat-viewers'));
    report.sessionsAtStart = await Promise.all(viewers.map((v) => v.page.evaluate(() => window.stagefleetViewer.sessionId)));

    // --- 5b. the network drops for a moment: the page says it is reconnecting, then plays on in the same seat
    const flaky = viewers[1];
    await flaky.context.setOffline(true);
    await h.until(flaky, 'reconnecting while offline', 10000, () => document.querySelector('main').dataset.state === 'reconnecting', null, viewerState);
    report.reconnectingStatus = await flaky.page.textContent('#status');
    await flaky.context.setOffline(false);
    await h.until(flaky, 'playing again after the network came back', 20000, () => document.querySelector('main').dataset.state === 'playing', null, viewerState);
    report.sessionAfterReconnect = await flaky.page.evaluate(() => window.stagefleetViewer.sessionId);

    // --- 6. a second replica; the console drains the first with "move viewers"
    const before2 = new Set((await stages()).map((s) => s.id));
    await api('mutation($b: ID!) { createStage(broadcastId: $b) { id } }', { b });
    let replica2 = null;
    await until('second replica READY', 20000, async () => {
      replica2 = (await stages()).find((s) => !before2.has(s.id) && s.status === 'READY');
      return replica2;
    });
    report.replica2 = replica2.id;
    const onReplica1 = report.viewers.filter((v) => v.stage === replica1.id).map((v) => v.name);
    report.movedViewers = onReplica1;
    if (onReplica1.length === 0) throw new HarnessError(`no viewer sits on ${replica1.id}: ${JSON.stringify(report.viewers.map((v) => [v.name, v.stage]))}`);
    const row = `#stages tr[data-stage-id="${replica1.id}"]`;
    await con.page.check(`${row} [data-action="move-viewers"]`);
    await con.page.click(`${row} [data-action="drain"]`);
    await Promise.all(
      viewers
        .filter((v) => onReplica1.includes(v.name))
        .map(async (v) => {
          const r = report.viewers.find((x) => x.name === v.name);
          await h.until(v, `moving off ${replica1.id}`, 20000, (old) => {
            const m = document.querySelector('main');
            return m.dataset.stageId !== old && m.dataset.state === 'playing';
          }, replica1.id, viewerState);
          r.stageAfterMove = await v.page.evaluate(() => document.querySelector('main').dataset.stageId);
          r.reloaded = !(await v.page.evaluate(() => window.loadedOnce != null));
          if (r.reloaded) failures.push(`${v.name}: the page reloaded to move`);
          const { metrics, failures: f } = judgePlayback(await samplePlayback(v.page, `#videos figure[data-stage="${r.stageAfterMove}"] video`));
          r.playbackAfterMove = metrics;
          failures.push(...f.map((t) => `${v.name} after the move to ${r.stageAfterMove}: ${t}`));
        }),
    );
    await h.screenshots('2-after-move');

    // --- 7. on a phone: no sideways scrolling, and every control has a label; the phone viewer comes
    // just after someone else took the last free seat and must be told the audience is full
    report.phone = {};
    for (const [name, path] of [['home', '/'], ['watch', `/watch/?broadcast=${encodeURIComponent(b)}`], ['broadcast', '/broadcast/'], ['console', '/console/']]) {
      if (name === 'watch') await api('mutation($b: ID!) { joinBroadcast(broadcastId: $b, userId: "filler") { session { id } } }', { b });
      const p = await h.openUrl(`phone-${name}`, `${url}${path}`, { width: 375, height: 740 });
      await p.page.waitForLoadState('networkidle').catch(() => {});
      const audit = await p.page.evaluate(() => {
        const unlabeled = [...document.querySelectorAll('input, select, textarea, button')]
          .filter((el) => el.type !== 'hidden' && !el.closest('[hidden]'))
          .filter((el) => !(el.labels?.length || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby') || (el.tagName === 'BUTTON' && el.textContent.trim())))
          .map((el) => el.id || el.outerHTML.slice(0, 60));
        return { scrollWidth: document.documentElement.scrollWidth, unlabeled };
      });
      if (name === 'watch') {
        await h.until(p, 'told the audience is full', STEP_MS.join, () => document.querySelector('main').dataset.state === 'full', null, viewerState);
        report.fullStatus = await p.page.textContent('#status');
      }
      report.phone[name] = audit;
      if (audit.scrollWidth > 376) failures.push(`${path} on a 375 px phone scrolls sideways (${audit.scrollWidth} px wide)`);
      if (audit.unlabeled.length) failures.push(`${path}: controls without a label: ${audit.unlabeled.join(', ')}`);
      await p.page.screenshot({ path: `${h.artifacts}/phone-${name}.png`, fullPage: true }).catch(() => {});
      await p.context.close();
      h.pages.splice(h.pages.indexOf(p), 1);
      p.writeLogs(h.artifacts);
    }

    // --- 8. the host ends: the host page is off air, every viewer waits for the host again
    await host.page.click('#end');
    await h.until(host, 'off air', STEP_MS.leave, () => document.querySelector('main').dataset.state === 'off-air', null, hostState);
    await Promise.all(viewers.map((v) => h.until(v, 'waiting after the host ended', STEP_MS.hostGone, () => document.querySelector('main').dataset.state === 'waiting-host', null, viewerState)));
    report.origins = (await stages()).filter((s) => s.role === 'ORIGIN');
    // Presence by subscription: no page had to take a new seat, however many leases went by.
    report.sessionsAtEnd = await Promise.all(viewers.map((v) => v.page.evaluate(() => window.stagefleetViewer.sessionId)));

    // --- 9. the console ends the broadcast: every viewer is told it ended
    await con.page.click(`#broadcasts button[data-action="end"][data-broadcast-id="${b}"]`);
    await Promise.all(viewers.map((v) => h.until(v, 'told the broadcast ended', STEP_MS.hostGone, () => document.querySelector('main').dataset.state === 'ended', null, viewerState)));
    report.endedStatus = await viewers[0].page.textContent('#status');
    await h.screenshots('3-ended');
  },
};

// Every file a page loads from the node: its HTML, then scripts, styles and module imports.
async function crawl(url, start) {
  const texts = {};
  const queue = [start];
  while (queue.length) {
    const path = queue.shift();
    if (path in texts) continue;
    const res = await fetch(`${url}${path}`);
    if (!res.ok) throw new HarnessError(`GET ${path}: HTTP ${res.status}`);
    const text = await res.text();
    texts[path] = text;
    const refs = [...text.matchAll(/(?:src|href)="(\/[^"]*\.(?:js|css))"|from '(\/?[^']+\.js)'/g)].map((m) => m[1] ?? m[2]);
    for (const r of refs) queue.push(new URL(r, `${url}${path}`).pathname);
  }
  return { texts };
}
