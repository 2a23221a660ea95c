// The HTTP client bench/ runs on both sides of a comparison (host node and guest node alike), so
// only the path between them differs: COUNT sequential GETs of URL, each on a new connection (as a
// CLI invocation makes), over a unix socket when SOCKET is given. Prints one JSON line:
// {"ms":[per-request milliseconds],"bytes":<body bytes of the last request>}.
// With KEEPALIVE=1 in the environment all requests share one kept-alive connection instead, which
// separates the cost of opening a connection from the cost of a request on an open one.
// usage: node probe.js URL COUNT [SOCKET]
'use strict';
const http = require('http');
const [url, countArg, socketPath] = process.argv.slice(2);
const count = Number(countArg || 1);
const u = new URL(url);
const agent = process.env.KEEPALIVE === '1' ? new http.Agent({ keepAlive: true, maxSockets: 1 }) : false;
function once() {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const opts = socketPath ? { socketPath, path: u.pathname + u.search, agent } : { host: u.hostname, port: u.port, path: u.pathname + u.search, agent };
    const req = http.get(opts, (res) => {
      let bytes = 0;
      res.on('data', (d) => (bytes += d.length));
      res.on('end', () => {
        if (res.statusCode !== 200) return reject(new Error(`${url}: HTTP ${res.statusCode}`));
        resolve({ ms: Number(process.hrtime.bigint() - t0) / 1e6, bytes });
      });
      res.on('error', reject);
    });
    req.setTimeout(120000, () => req.destroy(new Error(`${url}: no answer within 120 s`)));
    req.on('error', reject);
  });
}
(async () => {
  await once(); // warm-up: not counted (first connection, JIT)
  const ms = [];
  let bytes = 0;
  for (let i = 0; i < count; i++) {
    const r = await once();
    ms.push(r.ms);
    bytes = r.bytes;
  }
  console.log(JSON.stringify({ ms, bytes }));
  if (agent) agent.destroy();
})().catch((e) => {
  console.error(e.message);
  process.exit(1);
});
