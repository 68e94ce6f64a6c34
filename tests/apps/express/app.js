// An Express 4 app, as the shops moving from pm2 run them: listens on
// $PORT, answers its version, a health route, and one env variable.
const express = require('express');

const app = express();
const version = process.env.APP_VERSION || 'v1';

app.get('/health', (req, res) => res.send('ok\n'));
app.get('/env/:name', (req, res) => res.send(String(process.env[req.params.name] || '')));
app.use((req, res) => {
  res.set('x-version', version);
  res.send(`version=${version} instance=${process.env.BATON_INSTANCE} express=${req.path}\n`);
});

app.listen(Number(process.env.PORT), '127.0.0.1');
