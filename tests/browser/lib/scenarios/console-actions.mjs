// The console's admin actions on a single node, each checked against the node over GraphQL by the
// caller (the Rust test) from this report: start a broadcast from the form, add a replica stage and
// delete it, save the fleet policy (and see a bad value refused with the server's reason), create
// an API key (shown once) and revoke another.
import { HarnessError, STEP_MS } from '../harness.mjs';
import { graphql, poll } from '../pages-kit.mjs';

export default {
  name: 'console-actions',
  summary: "the console's actions: start a broadcast, add and delete a stage, the policy, API keys",
  usage: '--url URL --admin-key KEY',

  problems(opts) {
    return ['url', 'adminKey'].filter((k) => !opts[k]).map((k) => `--${k} is required`);
  },

  report() {
    return {};
  },

  async run(h, opts, report) {
    const url = opts.url.replace(/\/$/, '');
    const api = graphql(url, opts.adminKey);
    report.browserVersion = await h.start();
    const con = await h.openUrl('console', `${url}/console/`, { width: 1280, height: 900 });
    con.page.on('dialog', (d) => d.accept().catch(() => {}));
    await con.page.fill('#admin-key', opts.adminKey);
    await con.page.click('#sign-in');
    await h.until(con, 'signed in', STEP_MS.load, () => !document.querySelector('#console').hidden);
    const text = (sel) => con.page.textContent(sel).then((t) => t.trim());

    // --- start a broadcast from the form; it is listed and selected
    await con.page.fill('#start-id', 'from-console');
    await con.page.fill('#start-name', 'Started in the console');
    await con.page.click('#start-broadcast');
    await h.until(con, 'the new broadcast listed and shown', STEP_MS.load, () =>
      document.querySelector('#broadcast-list tr[data-broadcast-id="from-console"]') && document.querySelector('#detail')?.dataset.broadcastId === 'from-console');
    report.startMessage = await text('#start-msg');

    // --- add a replica, then delete it
    await con.page.click('#add-replica');
    const replica = await poll(h, 'a replica in the stages table', STEP_MS.load, () =>
      con.page.evaluate(() => document.querySelector('#stages tr[data-role="REPLICA"]')?.dataset.stageId));
    report.replica = replica;
    await con.page.click(`button[data-action="delete"][data-stage-id="${replica}"]`);
    await h.until(con, `${replica} gone from the table`, 15000, (id) => !document.querySelector(`#stages tr[data-stage-id="${id}"]`), replica);
    report.stageMessage = await text('#stage-msg');

    // --- the policy: a bad value is refused with the server's reason, a good one is saved
    await h.until(con, 'the policy loaded', STEP_MS.load, () => document.querySelector('#policy-seatsPerStage').value !== '');
    await con.page.fill('#policy-maxStages', '0');
    await con.page.click('#policy-save');
    await h.until(con, 'a refusal for maxStages 0', STEP_MS.load, () => /maxStages/.test(document.querySelector('#policy-msg').textContent));
    report.policyRefused = await text('#policy-msg');
    await con.page.click('#policy-reload');
    await h.until(con, 'the policy reloaded', STEP_MS.load, () => document.querySelector('#policy-maxStages').value !== '0');
    await con.page.fill('#policy-seatsPerStage', '777');
    await con.page.click('#policy-save');
    await h.until(con, 'the policy saved', STEP_MS.load, () => document.querySelector('#policy-msg').textContent.trim() !== '' && !/maxStages/.test(document.querySelector('#policy-msg').textContent));
    report.policySaved = await text('#policy-msg');

    // --- API keys: create one (shown once), revoke another
    await con.page.fill('#key-name', 'made-in-console');
    await con.page.selectOption('#key-role', 'HOST');
    await con.page.click('#create-key');
    await h.until(con, 'the new key shown', STEP_MS.load, () => /^sf_/.test(document.querySelector('#new-key-value')?.textContent ?? ''));
    report.newKey = await text('#new-key-value');
    const { apiKeys } = await api('{ apiKeys { id name } }');
    const victim = apiKeys.find((k) => k.name === 'to-revoke');
    if (!victim) throw new HarnessError('the caller was to create a key named "to-revoke"');
    await h.until(con, 'the key to revoke listed', STEP_MS.load, (id) => document.querySelector(`#key-list tr[data-key-id="${id}"]`), victim.id);
    await con.page.click(`button[data-action="revoke"][data-key-id="${victim.id}"]`);
    await h.until(con, 'the revoked key gone from the list', STEP_MS.load, (id) => !document.querySelector(`#key-list tr[data-key-id="${id}"]`), victim.id);
    report.revoked = victim.id;
    await h.screenshots('1-after-actions');
  },
};
