// The landing page: what is live (with links to watch it) and the fleet's totals.
import { gql } from './gql.js';
import { showBackend, h, fill, explain, liveItems } from './site.js';

showBackend();
const list = document.getElementById('live-list');
gql('{ broadcasts(state: LIVE) { id name viewers } stats { broadcastsLive stagesActive viewers capacity } }')
  .then(({ broadcasts, stats }) => {
    fill(list, liveItems(broadcasts));
    document.getElementById('totals').textContent =
      `${stats.broadcastsLive} live broadcast(s), ${stats.stagesActive} active stage(s), ${stats.viewers} of ${stats.capacity} seats taken.`;
  })
  .catch((e) => fill(list, h('li', { class: 'msg error' }, `Could not load: ${explain(e)}`)));
