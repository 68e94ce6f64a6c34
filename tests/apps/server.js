// The test app: one dependency-free Node server whose behaviour is set by
// environment variables, so each test can play a different kind of release.
//
//   APP_VERSION         answered in the body ("version=v1") and x-version header
//   DELAY_MS            every request takes this long
//   START_MS            wait this long before listening (slow boot)
//   READY              "ipc": process.send('ready') once listening
//   CRASH_AT_START=1    exit(1) before listening
//   NEVER_LISTEN=1      never listen
//   EXIT_AFTER_MS       exit(3) this long after listening
//   GRACEFUL=1          SIGTERM/SIGINT: server.close(), then exit
//   SPAWN_SLEEPER=1     leave a grandchild `sleep` in the process group
const http = require('http');
const { spawn } = require('child_process');

const env = process.env;
const version = env.APP_VERSION || 'v1';
const delay = Number(env.DELAY_MS || 0);

if (env.CRASH_AT_START === '1') {
  console.error('boom: crashing at start on purpose');
  process.exit(1);
}
if (env.SPAWN_SLEEPER === '1') {
  const s = spawn('sleep', ['600'], { stdio: 'ignore' });
  console.log(`sleeper ${s.pid}`);
}

const server = http.createServer((req, res) => {
  let body = [];
  req.on('data', (c) => body.push(c));
  req.on('end', () => {
    const reply = () => {
      res.setHeader('x-version', version);
      res.setHeader('content-type', 'text/plain');
      if (req.url.startsWith('/echo-headers')) {
        res.end(JSON.stringify(req.headers));
        return;
      }
      if (req.url.startsWith('/env/')) {
        res.end(String(env[req.url.slice(5)] || ''));
        return;
      }
      res.end(`version=${version} instance=${env.BATON_INSTANCE} release=${env.BATON_RELEASE}\n`);
    };
    if (delay > 0 && req.url !== '/health') setTimeout(reply, delay);
    else reply();
  });
});

function listen() {
  if (env.NEVER_LISTEN === '1') {
    console.log('not listening, on purpose');
    setInterval(() => {}, 1000);
    return;
  }
  server.listen(Number(env.PORT), '127.0.0.1', () => {
    console.log(`listening on ${env.PORT} version=${version}`);
    if (env.READY === 'ipc') process.send('ready');
    if (env.EXIT_AFTER_MS) {
      setTimeout(() => {
        console.error('exiting after ready, on purpose');
        process.exit(3);
      }, Number(env.EXIT_AFTER_MS));
    }
  });
}

if (env.GRACEFUL === '1') {
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

setTimeout(listen, Number(env.START_MS || 0));
