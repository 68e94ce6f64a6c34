// A recording backend for the framing suite (tests/framing.rs).
//
// Every byte Baton sends is appended to $RECORD_LOG as it arrives (one JSON
// line per read: the connection's number and the bytes in hex), before
// anything answers it. Requests then go on, byte for byte, to a Node HTTP
// server (llhttp, as a real app parses them), which answers each with what
// it understood: method, target, raw header lines and body length. A
// request for /answer/<hex> is answered instead with those exact
// bytes (and /answer-close/ closes after them), for the cases that test what Baton does with an instance's answer.
'use strict';
const fs = require('fs');
const http = require('http');
const net = require('net');

const log = process.env.RECORD_LOG;
let connections = 0;

const inner = http.createServer((req, res) => {
  let length = 0;
  req.on('data', (chunk) => { length += chunk.length; });
  req.on('end', () => {
    const seen = JSON.stringify({
      method: req.method,
      url: req.url,
      headers: req.rawHeaders,
      body: length,
      trailers: req.rawTrailers,
    });
    res.setHeader('content-type', 'application/json');
    res.end(seen);
  });
});

inner.listen(0, '127.0.0.1', () => {
  const innerPort = inner.address().port;
  net.createServer((client) => {
    const id = connections++;
    const upstream = net.connect(innerPort, '127.0.0.1');
    client.on('data', (data) => {
      fs.appendFileSync(log, JSON.stringify({ conn: id, data: data.toString('hex') }) + '\n');
      const asked = /^(?:GET|HEAD) \/answer(-close)?\/([0-9a-f]+) HTTP\/1\.1\r\n/
        .exec(data.toString('latin1'));
      if (asked) {
        const answer = Buffer.from(asked[2], 'hex');
        if (asked[1]) client.end(answer); else client.write(answer);
        return;
      }
      upstream.write(data);
    });
    upstream.on('data', (data) => client.write(data));
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  }).listen(Number(process.env.PORT), '127.0.0.1');
});
