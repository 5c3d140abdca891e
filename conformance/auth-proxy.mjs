// A loopback HTTP proxy that adds `Authorization: Bearer <token>` to every
// request, for conformance/run.sh.
//
// Why it exists: the conformance suite's server mode connects with a bare
// URL and has no option to send headers, so a server that requires a bearer
// token could not be tested at all. Everything else passes through untouched,
// including the Host and Origin headers (the dns-rebinding-protection
// scenario depends on them) and streamed SSE bodies.
//
// Usage: TOKEN=... node auth-proxy.mjs <target-url>
// Prints the port it listens on (127.0.0.1) as one line on stdout.

import http from 'node:http';

const target = new URL(process.argv[2] ?? '');
const token = process.env.TOKEN;
if (!token) {
  console.error('auth-proxy: TOKEN is not set');
  process.exit(2);
}

const server = http.createServer((req, res) => {
  const headers = { ...req.headers, authorization: `Bearer ${token}` };
  const upstream = http.request(
    {
      host: target.hostname.replace(/^\[|\]$/g, ''),
      port: target.port || 80,
      method: req.method,
      path: req.url,
      headers,
    },
    (up) => {
      res.writeHead(up.statusCode ?? 502, up.rawHeaders);
      res.flushHeaders();
      up.pipe(res);
    },
  );
  upstream.on('error', (e) => {
    if (!res.headersSent) {
      res.writeHead(502, { 'content-type': 'text/plain' });
    }
    res.end(`auth-proxy: ${e.message}`);
  });
  // A client that hangs up (e.g. cancels an SSE stream) ends the upstream too.
  res.on('close', () => upstream.destroy());
  req.pipe(upstream);
});

server.listen(0, '127.0.0.1', () => {
  console.log(server.address().port);
});
