// What every page needs from the node besides the API: where to load the IVS Web Broadcast SDK
// from, which IVS the node drives (shown on every page), and small DOM helpers.
import { gql } from './gql.js';

let sitePromise = null;

/** `{ version, sdkUrl, ivs, emulator }` from the node (asked once per page). */
export function site() {
  sitePromise ??= gql('{ site { version sdkUrl ivs emulator } }').then((d) => d.site);
  return sitePromise;
}

let sdkPromise = null;

/** Loads the SDK from the node's `sdk_url` once; resolves to `IVSBroadcastClient`. */
export function loadSdk() {
  sdkPromise ??= site().then(
    (s) =>
      new Promise((resolve, reject) => {
        if (window.IVSBroadcastClient) return resolve(window.IVSBroadcastClient);
        const script = document.createElement('script');
        script.src = s.sdkUrl;
        script.onload = () =>
          window.IVSBroadcastClient
            ? resolve(window.IVSBroadcastClient)
            : reject(new Error(`${s.sdkUrl} loaded but defines no IVSBroadcastClient`));
        script.onerror = () => reject(new Error(`the IVS Web Broadcast SDK could not be loaded from ${s.sdkUrl}`));
        document.head.append(script);
      }),
  );
  return sdkPromise;
}

/** Fills every `[data-ivs]` element with which IVS this node drives. */
export async function showBackend() {
  try {
    const s = await site();
    for (const el of document.querySelectorAll('[data-ivs]')) {
      el.textContent = s.emulator ? `IVS: ${s.ivs} (local, no AWS)` : `IVS: ${s.ivs}`;
      el.classList.toggle('emulator', s.emulator);
    }
  } catch {
    // the page shows its own connection error
  }
}

/** `h('button', { class: 'x', onclick }, 'text', child)`: an element, children as text or nodes. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) if (c != null) el.append(c instanceof Node ? c : String(c));
  return el;
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c != null));
}

/** A sign-in key kept in this tab's session storage (never in a URL, gone when the tab closes). */
export const storedKey = {
  get: (name) => sessionStorage.getItem(`stagefleet.key.${name}`),
  set: (name, key) => sessionStorage.setItem(`stagefleet.key.${name}`, key),
  clear: (name) => sessionStorage.removeItem(`stagefleet.key.${name}`),
};

/** What a user should read for an error code. */
export function explain(e) {
  const text = {
    UNAUTHENTICATED: 'That key is not valid. Check it and sign in again.',
    FORBIDDEN: 'That key may not do this.',
    NETWORK: 'The node cannot be reached. Is it running?',
    UNAVAILABLE: 'The node cannot take changes right now; retry in a moment.',
    RATE_LIMITED: 'Too many attempts from here; retry in a moment.',
  }[e?.code];
  return text ? `${text} (${e.message})` : e?.message || String(e);
}

/** List items for the live broadcasts, each linking to its viewer page. */
export function liveItems(broadcasts) {
  if (!broadcasts.length) return [h('li', {}, 'Nothing is live right now.')];
  return broadcasts.map((b) =>
    h('li', {}, h('a', { href: `/watch/?broadcast=${encodeURIComponent(b.id)}` }, b.name || b.id), ` — ${b.viewers} watching`),
  );
}
