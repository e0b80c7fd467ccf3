// What the scenarios that drive stagefleet's own pages share: GraphQL to the node (as the admin,
// for setup and cross-checks), polling a condition as a named step, and a sign-in form.
import { HarnessError, STEP_MS } from './harness.mjs';

/** `api(query, variables)` against `${url}/graphql` with `key`; resolves to `data`. */
export function graphql(url, key) {
  return async (query, variables = {}) => {
    const res = await fetch(`${url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
      body: JSON.stringify({ query, variables }),
    });
    const body = await res.json();
    if (body.errors?.length) throw new HarnessError(`GraphQL: ${body.errors[0].message}`);
    return body.data;
  };
}

/** Polls `probe()` every 150 ms as the named step until it returns something truthy (returned). */
export function poll(h, label, ms, probe) {
  return h.step(label, ms, async () => {
    for (;;) {
      const v = await probe();
      if (v) return v;
      await new Promise((r) => setTimeout(r, 150));
    }
  });
}

/** Types a key into a sign-in form and returns the message the page shows (for a wrong key). */
export async function signIn(h, handle, input, button, key, messageSel) {
  await handle.page.fill(input, key);
  await handle.page.click(button);
  await h.until(handle, 'a message for the wrong key', STEP_MS.load, (sel) => document.querySelector(sel)?.textContent.trim(), messageSel);
  return (await handle.page.textContent(messageSel)).trim();
}
