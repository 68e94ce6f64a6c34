// A dependency-free Node app for Baton: it listens on $PORT, which Baton
// hands it, and says which release and instance answered.
const http = require('http');

const port = Number(process.env.PORT || 3000);
const release = process.env.BATON_RELEASE || 'dev';
const instance = process.env.BATON_INSTANCE || 'local';
const version = process.env.APP_VERSION || 'v1';

const server = http.createServer((req, res) => {
  if (req.url === '/health') {
    res.end('ok\n');
    return;
  }
  res.setHeader('content-type', 'text/plain');
  res.setHeader('x-version', version);
  res.end(`hello from ${version} (release ${release}, ${instance})\n`);
});

server.listen(port, '127.0.0.1', () => {
  console.log(`listening on ${port} as ${instance}`);
});
