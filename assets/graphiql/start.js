// GraphiQL for this node. Queries and mutations go over HTTP POST; subscriptions over the same
// URL as a WebSocket. Put your key in the headers panel as {"Authorization": "Bearer sf_…"}:
// it stays in this tab (GraphiQL keeps editor state in localStorage; clear it on shared machines).
const url = new URL('/graphql', window.location.href);
const ws = new URL(url);
ws.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
const fetcher = GraphiQL.createFetcher({ url: url.href, subscriptionUrl: ws.href });
ReactDOM.createRoot(document.getElementById('graphiql')).render(
  React.createElement(GraphiQL, { fetcher, defaultEditorToolsVisibility: true }),
);
