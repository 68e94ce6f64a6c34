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
//   HANG_INSTANCE=web#2 that instance accepts requests and never answers
//   LOG_REQUESTS=1      a log line (200 bytes and more) for every request
//   DRAIN_503=1         after SIGUSR2 (Baton's drain notice), answer 503, as
//                       seed 003's apps do while restarting
//   FAIL_PERCENT=20     answer 500 to that many of every 100 requests,
//                       spread evenly (the 5th, 10th, ... for 20), /health
//                       excepted
//   UNLISTEN=web#1      that instance closes its port once it has answered
//                       /health: ready, then every connect is refused
const http = require('http');
const { spawn } = require('child_process');

const env = process.env;
const version = env.APP_VERSION || 'v1';
const delay = Number(env.DELAY_MS || 0);
const failPercent = Number(env.FAIL_PERCENT || 0);
let answered = 0;
// Request n (from 1) fails when it crosses the next multiple of
// 100 / failPercent: failPercent of every 100, spread evenly.
const failing = (n) => {
  const k = (n - 1) % 100;
  return Math.floor(k * failPercent / 100) !== Math.floor((k + 1) * failPercent / 100);
};

if (env.CRASH_AT_START === '1') {
  console.error('boom: crashing at start on purpose');
  process.exit(1);
}
if (env.SPAWN_SLEEPER === '1') {
  const s = spawn('sleep', ['600'], { stdio: 'ignore' });
  console.log(`sleeper ${s.pid}`);
}

// Streaming endpoints answer before the request body is read in full.
function streaming(req, res) {
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/upload') {
    let bytes = 0;
    req.on('data', (c) => { bytes += c.length; });
    req.on('end', () => res.end(`received ${bytes}\n`));
    return true;
  }
  if (url.pathname === '/download') {
    const total = Number(url.searchParams.get('mb') || 1) * 1024 * 1024;
    const chunk = Buffer.alloc(64 * 1024, 120);
    let sent = 0;
    res.setHeader('content-length', String(total));
    const pump = () => {
      while (sent < total) {
        const piece = chunk.subarray(0, Math.min(chunk.length, total - sent));
        sent += piece.length;
        if (!res.write(piece)) { res.once('drain', pump); return; }
      }
      res.end();
    };
    pump();
    return true;
  }
  if (url.pathname === '/sse' || url.pathname === '/chunked') {
    const sse = url.pathname === '/sse';
    const count = Number(url.searchParams.get('n') || 5);
    res.writeHead(200, { 'content-type': sse ? 'text/event-stream' : 'text/plain' });
    let n = 0;
    const tick = setInterval(() => {
      n += 1;
      res.write(sse ? `data: event ${n} ${version} at ${Date.now()}\n\n` : `chunk ${n} at ${Date.now()}\n`);
      if (n === count) { clearInterval(tick); res.end(); }
    }, 300);
    req.on('close', () => clearInterval(tick));
    return true;
  }
  if (url.pathname === '/stall') {
    // Starts an answer, then goes silent for good.
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('partial\n');
    return true;
  }
  if (url.pathname === '/sse-slow') {
    // Two events 1.5 s apart, then the end: quiet longer than a short
    // read_timeout, as event streams are between events.
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write('data: one\n\n');
    setTimeout(() => { res.write('data: two\n\n'); res.end(); }, 1500);
    return true;
  }
  if (url.pathname === '/status') {
    // Answers with ?code=, and a body that only a status with a body carries.
    res.statusCode = Number(url.searchParams.get('code'));
    res.end('a body for a bodiless status\n');
    return true;
  }
  if (url.pathname === '/early') {
    // Answers before reading the request body, as an upload limit does.
    res.statusCode = 413;
    res.end('too large\n');
    return true;
  }
  if (url.pathname === '/hang' || url.pathname === '/duplex') {
    // /hang never answers; /duplex echoes the body as it comes. Both log
    // the request's arrival and its abort.
    const log = (what) => require('fs').appendFileSync('hang.log', `${what} ${req.method}\n`);
    log('arrived');
    res.on('close', () => { if (!res.writableEnded) log('aborted'); });
    if (url.pathname === '/duplex') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      req.on('data', (c) => res.write(c));
      req.on('end', () => res.end());
    }
    return true;
  }
  if (url.pathname === '/record') {
    // Counts each request that reached the app, with its body's length.
    let bytes = 0;
    req.on('data', (c) => { bytes += c.length; });
    req.on('end', () => {
      require('fs').appendFileSync('requests.log', `${req.method} ${env.BATON_INSTANCE} ${bytes}\n`);
      res.end('recorded\n');
    });
    return true;
  }
  if (url.pathname === '/reset') {
    require('fs').appendFileSync('posts.log', `${req.method} ${env.BATON_INSTANCE}\n`);
    req.socket.destroy();
    return true;
  }
  return false;
}

let draining = false;
const held = [];
if (env.DRAIN_503 === '1') process.on('SIGUSR2', () => { draining = true; });

const server = http.createServer((req, res) => {
  // A hung process: it accepts and reads, and never answers.
  if (env.HANG_INSTANCE && env.HANG_INSTANCE === env.BATON_INSTANCE) return;
  if (env.UNLISTEN && env.UNLISTEN === env.BATON_INSTANCE && req.url === '/health') {
    res.setHeader('connection', 'close');
    // The process stays up (nothing else would keep it alive).
    res.on('finish', () => { server.close(); setInterval(() => {}, 1 << 30); });
  }
  if (env.LOG_REQUESTS === '1') console.log(`${req.method} ${req.url} ${'x'.repeat(200)}`);
  if (streaming(req, res)) return;
  let body = [];
  req.on('data', (c) => body.push(c));
  req.on('end', () => {
    const reply = () => {
      res.setHeader('x-version', version);
      // The target as the app got it, for the routing tests.
      res.setHeader('x-path', req.url);
      if (draining && req.url !== '/health') {
        res.statusCode = 503;
        res.end('restarting\n');
        return;
      }
      if (failPercent > 0 && req.url !== '/health' && failing(++answered)) {
        res.statusCode = 500;
        res.end(`failing on purpose, version=${version}\n`);
        return;
      }
      res.setHeader('content-type', 'text/plain');
      if (req.url.startsWith('/echo-host')) {
        // The Host it got, where the probe reads a version.
        res.setHeader('x-version', req.headers.host);
        res.end(`${req.headers.host}\n`);
        return;
      }
      if (req.url.startsWith('/echo-headers')) {
        res.end(JSON.stringify(req.headers));
        return;
      }
      if (req.url.startsWith('/env/')) {
        res.end(String(env[req.url.slice(5)] || ''));
        return;
      }
      if (req.url.startsWith('/grow')) {
        // Holds `mb` more MiB, written so that they are resident.
        const mb = Number(new URL(req.url, 'http://x').searchParams.get('mb') || 0);
        for (let i = 0; i < mb; i++) held.push(Buffer.alloc(1 << 20, 1));
        res.end(`${env.BATON_INSTANCE}\n`);
        return;
      }
      if (req.url.startsWith('/burn')) {
        // Busy until this process has used `ms` of CPU time.
        const ms = Number(new URL(req.url, 'http://x').searchParams.get('ms') || 0);
        const from = process.cpuUsage();
        for (;;) {
          const used = process.cpuUsage(from);
          if ((used.user + used.system) / 1000 >= ms) break;
        }
        res.end('burnt\n');
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

// WebSocket echo on /ws (RFC 6455, text frames, enough for the tests):
// each message comes back as "version=<v> echo=<message>".
server.on('upgrade', (req, socket) => {
  const key = req.headers['sec-websocket-key'];
  const accept = require('crypto').createHash('sha1')
    .update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
  socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
    `Sec-WebSocket-Accept: ${accept}\r\n\r\n`);
  let buf = Buffer.alloc(0);
  const send = (opcode, payload) => {
    const head = payload.length < 126 ? Buffer.from([0x80 | opcode, payload.length])
      : Buffer.from([0x80 | opcode, 126, payload.length >> 8, payload.length & 255]);
    socket.write(Buffer.concat([head, payload]));
  };
  socket.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    while (buf.length >= 2) {
      const opcode = buf[0] & 15;
      let len = buf[1] & 127;
      let off = 2;
      if (len === 126) { len = buf.readUInt16BE(2); off = 4; }
      if (buf.length < off + 4 + len) return;
      const mask = buf.subarray(off, off + 4);
      const data = Buffer.from(buf.subarray(off + 4, off + 4 + len));
      for (let i = 0; i < data.length; i++) data[i] ^= mask[i % 4];
      buf = buf.subarray(off + 4 + len);
      if (opcode === 8) { send(8, data.subarray(0, 2)); socket.end(); return; }
      if (opcode === 9) { send(10, data); continue; }
      if (opcode === 1) send(1, Buffer.from(`version=${version} echo=${data.toString()}`));
    }
  });
  socket.on('error', () => {});
});

// Raw TCP echo on $PORT_ECHO, for Baton's L4 mode: "<version> <line>".
if (env.PORT_ECHO) {
  require('net').createServer((s) => {
    let pending = '';
    s.on('data', (d) => {
      pending += d.toString();
      let i;
      while ((i = pending.indexOf('\n')) >= 0) {
        s.write(`${version} ${pending.slice(0, i)}\n`);
        pending = pending.slice(i + 1);
      }
    });
    s.on('error', () => {});
  }).listen(Number(env.PORT_ECHO), '127.0.0.1');
}

setTimeout(listen, Number(env.START_MS || 0));
