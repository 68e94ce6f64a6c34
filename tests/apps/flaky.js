// A target for testing `baton probe` itself: it fails exactly FAIL_COUNT
// requests (500) starting at request FAIL_FROM, refuses connections for
// OUTAGE_MS after request OUTAGE_AT (the listener is closed and reopened),
// and answers v2 instead of v1 from request SWITCH_AT on. Requests are
// counted in arrival order; keep-alive sockets are closed with the outage.
// With CLOSE_EVERY=N, every Nth answer says `Connection: close` and its
// socket closes after it, as a server going away between requests does.
const http = require('http');
const env = process.env;
const port = Number(env.PORT);
const failFrom = Number(env.FAIL_FROM || 0);
const failCount = Number(env.FAIL_COUNT || 0);
const outageAt = Number(env.OUTAGE_AT || 0);
const outageMs = Number(env.OUTAGE_MS || 0);
const switchAt = Number(env.SWITCH_AT || 0);
const closeEvery = Number(env.CLOSE_EVERY || 0);

let n = 0;
const sockets = new Set();
const server = http.createServer((req, res) => {
  n += 1;
  const version = switchAt && n >= switchAt ? 'v2' : 'v1';
  res.setHeader('x-version', version);
  if (closeEvery && n % closeEvery === 0) res.setHeader('connection', 'close');
  if (failCount && n >= failFrom && n < failFrom + failCount) {
    res.statusCode = 500;
    res.end('failing on purpose\n');
  } else {
    res.end(`version=${version} n=${n}\n`);
  }
  if (outageMs && n === outageAt) {
    server.close();
    for (const s of sockets) s.destroy();
    console.log(`outage from ${Date.now()}`);
    setTimeout(() => server.listen(port, '127.0.0.1', () => console.log(`back at ${Date.now()}`)), outageMs);
  }
});
server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
server.listen(port, '127.0.0.1', () => console.log(`listening on ${port}`));
