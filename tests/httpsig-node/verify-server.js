// An independent HTTP Signature verifier: node's `http-signature` package
// (the library CloudAPI authenticates with) and its `sshpk` key parser.
//
// Usage: node verify-server.js KEYS.json
//   KEYS.json: {"<keyId>": "<OpenSSH public key line or PEM>", ...}
// Prints the base URL on stdout, then answers every request with
//   200 {"ok": true, "keyId", "algorithm"}  when parseRequest (clock skew
//        300 s, `date` required and signed) and verifySignature accept it,
//   401 {"ok": false, "error": "..."}       otherwise.
// Set NODE_PATH to the node_modules holding http-signature.
'use strict';

const fs = require('fs');
const http = require('http');
const httpSignature = require('http-signature');

const keys = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));

const server = http.createServer((req, res) => {
  const reply = (status, body) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  try {
    const parsed = httpSignature.parseRequest(req, { clockSkew: 300, headers: ['date'] });
    const pub = keys[parsed.keyId];
    if (!pub) {
      reply(401, { ok: false, error: 'unknown keyId ' + parsed.keyId });
      return;
    }
    if (!httpSignature.verifySignature(parsed, pub)) {
      reply(401, { ok: false, error: 'signature does not verify' });
      return;
    }
    reply(200, { ok: true, keyId: parsed.keyId, algorithm: parsed.algorithm });
  } catch (e) {
    reply(401, { ok: false, error: e.name + ': ' + e.message });
  }
});

server.listen(0, '127.0.0.1', () => {
  const addr = server.address();
  process.stdout.write('http://127.0.0.1:' + addr.port + '\n');
});
