// A singleton for the tests (seed 000's schedule instance): it refuses to
// run beside another copy (a lock file in $LOCK_DIR), and writes a tick
// with its release every 50 ms.
const fs = require('fs');
const path = require('path');
const lock = path.join(process.env.LOCK_DIR, 'scheduler.lock');
try {
  fs.writeFileSync(lock, String(process.pid), { flag: 'wx' });
} catch (e) {
  console.error('two schedulers at once!');
  process.exit(1);
}
const bye = () => { fs.unlinkSync(lock); process.exit(0); };
process.on('SIGTERM', bye);
process.on('SIGINT', bye);
// With GROW_MB, the first copy to run holds that much memory (max_memory).
const grown = path.join(process.env.LOCK_DIR, 'grown');
if (process.env.GROW_MB && !fs.existsSync(grown)) {
  fs.writeFileSync(grown, String(process.pid));
  global.ballast = Buffer.alloc(Number(process.env.GROW_MB) << 20, 1);
}
console.log(`scheduler up, release ${process.env.BATON_RELEASE}, role ${process.env.BATON_ROLE}`);
// Ready for `[process.scheduler.readiness] kind = "node-ipc"`.
if (process.send) process.send('ready');
setInterval(() => {
  fs.appendFileSync(path.join(process.env.LOCK_DIR, 'ticks.log'), `${process.env.BATON_RELEASE} ${Date.now()}\n`);
}, 50);
