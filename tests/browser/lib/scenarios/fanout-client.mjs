// Client fan-out through the broadcaster page: with `fanout: CLIENT` the host publishes to every
// stage itself. The page goes live on the origin; a stage added afterwards is published to by the
// page on its own (it follows `stageEvents`), the stage becomes READY only then, and a viewer
// seated there plays the host.
import { HarnessError, STEP_MS } from '../harness.mjs';
import { judgePlayback } from '../checks.mjs';
import { samplePlayback } from '../video.mjs';
import { graphql, poll } from '../pages-kit.mjs';

export default {
  name: 'fanout-client',
  summary: 'the broadcaster page publishes to a stage added while it is live (fanout CLIENT)',
  usage: '--url URL --admin-key KEY --host-key KEY --broadcast ID (a CLIENT fan-out broadcast, one seat per stage)',

  problems(opts) {
    return ['url', 'adminKey', 'hostKey', 'broadcast'].filter((k) => !opts[k]).map((k) => `--${k} is required`);
  },

  report() {
    return { host: {} };
  },

  async run(h, opts, report, failures) {
    const url = opts.url.replace(/\/$/, '');
    const b = opts.broadcast;
    const api = graphql(url, opts.adminKey);
    const stages = async () =>
      (await api('query($b: ID!) { broadcast(id: $b) { stages { id status publishers viewers } } }', { b })).broadcast.stages;
    report.browserVersion = await h.start();

    // --- 1. the host goes live on the origin
    const host = await h.openUrl('host', `${url}/broadcast/?broadcast=${encodeURIComponent(b)}`);
    await host.page.fill('#host-key', opts.hostKey);
    await host.page.click('#sign-in');
    const hostState = () => ({ state: document.querySelector('main').dataset.state, status: document.querySelector('#host-status').textContent, stages: window.stagefleetHost?.stages });
    await h.until(host, 'camera ready', STEP_MS.publish, () => !document.querySelector('#go-live').disabled, null, hostState);
    await host.page.click('#go-live');
    await h.until(host, 'live on the origin', STEP_MS.publish, () => document.querySelector('main').dataset.state === 'live', null, hostState);

    // --- 2. a stage added while live: the page publishes there by itself, and only then is it READY
    const added = (await api('mutation($b: ID!) { createStage(broadcastId: $b) { id } }', { b })).createStage.id;
    report.added = added;
    await h.until(host, `publishing on ${added} too`, 20000, (id) => window.stagefleetHost.stages[id] === 'published' && document.querySelector('main').dataset.state === 'live', added, hostState);
    report.host.stages = await host.page.evaluate(() => window.stagefleetHost.stages);
    report.host.status = await host.page.textContent('#host-status');
    const ready = await poll(h, `${added} READY`, 15000, async () => (await stages()).find((s) => s.id === added && s.status === 'READY'));
    report.addedPublishers = ready.publishers.length;

    // --- 2b. WHIP settings for OBS: one server and bearer token per stage the host feeds
    await host.page.click('#obs');
    await h.until(host, 'WHIP settings for both stages', STEP_MS.load, () => document.querySelectorAll('#obs-out .panel').length === 2);
    report.obs = await host.page.evaluate(() =>
      [...document.querySelectorAll('#obs-out .panel')].map((p) => [...p.querySelectorAll('.mono')].map((m) => m.textContent)),
    );

    // --- 3. the origin's one seat is taken; the next viewer sits on the added stage and plays
    await api('mutation($b: ID!) { joinBroadcast(broadcastId: $b, userId: "first") { session { stageId } } }', { b });
    const v = await h.openUrl('viewer', `${url}/watch/?broadcast=${encodeURIComponent(b)}`, { width: 640, height: 600 });
    await h.until(v, 'playing', STEP_MS.firstFrame, () => document.querySelector('main').dataset.state === 'playing', null, () => document.querySelector('#status').textContent);
    report.viewerStage = await v.page.evaluate(() => document.querySelector('main').dataset.stageId);
    if (report.viewerStage !== added) throw new HarnessError(`the viewer sits on ${report.viewerStage}, not ${added}`);
    const { metrics, failures: f } = judgePlayback(await samplePlayback(v.page, `#videos figure[data-stage="${added}"] video`));
    report.playback = metrics;
    failures.push(...f.map((t) => `viewer on ${added}: ${t}`));
    await h.screenshots('1-playing');
  },
};
