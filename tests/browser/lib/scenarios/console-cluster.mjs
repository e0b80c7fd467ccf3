// The console's nodes panel on a three-node cluster, live: signed in on one node, it lists the
// three members with exactly one leader; once the caller (the Rust test) kills the leader —
// after this writes --ready-file with the leader's id — the same page, never reloaded, must show
// another node as the leader.
import fs from 'node:fs';
import { STEP_MS } from '../harness.mjs';

export default {
  name: 'console-cluster',
  summary: "the console's nodes panel follows a three-node cluster and a leader change",
  usage: '--url URL --admin-key KEY --ready-file PATH',

  problems(opts) {
    return ['url', 'adminKey', 'readyFile'].filter((k) => !opts[k]).map((k) => `--${k} is required`);
  },

  report() {
    return {};
  },

  async run(h, opts, report) {
    const url = opts.url.replace(/\/$/, '');
    report.browserVersion = await h.start();
    const con = await h.openUrl('console', `${url}/console/`, { width: 1280, height: 900 });
    await con.page.fill('#admin-key', opts.adminKey);
    await con.page.click('#sign-in');
    const shown = () => ({
      rows: [...document.querySelectorAll('#members tbody tr')].map((tr) => tr.textContent.replace(/\s+/g, ' ').trim()),
      leaders: [...document.querySelectorAll('#members tbody tr.leader')].map((tr) => Number(tr.dataset.nodeId)),
    });
    await h.until(con, 'three members, one leader', STEP_MS.load, () => document.querySelectorAll('#members tbody tr').length === 3 && document.querySelectorAll('#members tbody tr.leader').length === 1, null, shown);
    const before = await con.page.evaluate(shown);
    report.before = before;
    fs.writeFileSync(opts.readyFile, `${before.leaders[0]}\n`);
    await h.screenshots('1-three-nodes');
    const killedAt = Date.now();
    await h.until(con, `a leader other than node ${before.leaders[0]}`, 30000, (old) => {
      const l = [...document.querySelectorAll('#members tbody tr.leader')].map((tr) => Number(tr.dataset.nodeId));
      return l.length === 1 && l[0] !== old;
    }, before.leaders[0], shown);
    report.after = await con.page.evaluate(shown);
    report.newLeaderShownMs = Date.now() - killedAt;
    await h.screenshots('2-new-leader');
  },
};
