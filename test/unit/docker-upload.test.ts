// Docker uploads on the stdin port, without a VM: coved's proxy sends a request with a large body on
// a channel of its own (openUpload) and everything else on the connection's channel; the split
// channel writes one way and reads the other; the agent's MuxServer, asked for the port on a CONNECT
// to docker.sock, echoes the ask and feeds dockerd from the port with `cat` (a regular file stands in
// for the char device, so `cat` sees its end at once; the real port is exercised on a VM in
// test/integration/data-channel.test.ts), and serves the stream as usual when it cannot have the port.
import { strict as assert } from 'node:assert';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { after, describe, test } from 'node:test';
import { MuxServer } from '../../agent/mux';
import { StdinPort } from '../../agent/stdin-port';
import { DOCKER_STDIN_PORT_HEADER } from '../../contract/data-channel';
import { UPLOAD_MIN_BYTES, startDockerProxy } from '../../vmm-host/coved/docker-proxy';
import { SplitChannel, StdinPortLease } from '../../vmm-host/coved/stdin-port';

const NONCE = '0123456789abcdef0123456789abcdef';
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A fake dockerd on a unix socket: answers every request with the sha256 of its body and its length. */
async function fakeDockerd(sockPath: string): Promise<{ server: http.Server; seen: Array<{ method: string; url: string; connection: number }> }> {
  const seen: Array<{ method: string; url: string; connection: number }> = [];
  const ids = new WeakMap<net.Socket, number>();
  let next = 0;
  const server = http.createServer((req, res) => {
    let id = ids.get(req.socket);
    if (id === undefined) ids.set(req.socket, (id = ++next));
    seen.push({ method: req.method ?? '', url: req.url ?? '', connection: id });
    const chunks: Buffer[] = [];
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const answer = JSON.stringify({ sha: sha(body), length: body.length });
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(answer) });
      res.end(answer);
    });
  });
  await new Promise<void>((r) => server.listen(sockPath, r));
  return { server, seen };
}

function request(sockPath: string, agent: http.Agent, method: string, url: string, body?: Buffer, chunked = false): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const headers: http.OutgoingHttpHeaders = chunked || !body ? {} : { 'Content-Length': body.length };
    const req = http.request({ socketPath: sockPath, agent, method, path: url, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    if (body && chunked) {
      // Several writes of unknown total length: Node sends them chunked, as the docker CLI does a load.
      for (let i = 0; i < body.length; i += 256 * 1024) req.write(body.subarray(i, i + 256 * 1024));
      req.end();
    } else req.end(body);
  });
}

describe('docker uploads: coved', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-upload-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('a large or chunked body takes an upload channel of its own, closed after its answer; the rest keep the connection channel', async () => {
    const dockerd = await fakeDockerd(path.join(dir, 'dockerd.sock'));
    const opened = { plain: 0, upload: 0 };
    const connect = () => net.connect(path.join(dir, 'dockerd.sock'));
    const proxyPath = path.join(dir, 'docker.sock');
    const proxy = await startDockerProxy({
      path: proxyPath,
      open: () => (opened.plain++, Promise.resolve(connect())),
      openUpload: () => (opened.upload++, Promise.resolve(connect())),
      unavailable: (e) => e.message,
      policy: () => null,
      log: () => undefined,
    });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      assert.equal((await request(proxyPath, agent, 'GET', '/_ping')).status, 200);
      const big = randomBytes(3 * 1024 * 1024 + 17);
      const load = await request(proxyPath, agent, 'POST', '/v1.45/images/load', big, true);
      assert.deepEqual(JSON.parse(load.body), { sha: sha(big), length: big.length }, 'the chunked body reached dockerd byte for byte');
      const exact = randomBytes(UPLOAD_MIN_BYTES);
      assert.deepEqual(JSON.parse((await request(proxyPath, agent, 'PUT', '/containers/c/archive?path=/', exact)).body), { sha: sha(exact), length: exact.length });
      const small = randomBytes(1000);
      assert.deepEqual(JSON.parse((await request(proxyPath, agent, 'POST', '/containers/c/start', small)).body), { sha: sha(small), length: small.length });
      assert.equal((await request(proxyPath, agent, 'GET', '/_ping')).status, 200);
      assert.deepEqual(opened, { plain: 1, upload: 2 }, 'the two uploads on their own channels, everything else on the one connection channel');
      const conns = dockerd.seen.map((s) => s.connection);
      assert.equal(conns[0], conns[3], 'the small POST went on the connection channel');
      assert.equal(conns[0], conns[4], 'and so did the ping after the uploads');
      assert.notEqual(conns[1], conns[2], 'each upload had a channel of its own');
      assert.ok(!conns.slice(3).includes(conns[1]) && !conns.slice(3).includes(conns[2]), 'upload channels are not reused');
    } finally {
      agent.destroy();
      await new Promise((r) => proxy.close(r));
      await new Promise((r) => dockerd.server.close(r));
    }
  });

  test('the split channel writes to the sink, reads from the source, and closes both; the lease is one holder at a time', async () => {
    const got: Buffer[] = [];
    const sinkServer = net.createServer((s) => s.on('data', (d: Buffer) => got.push(d)));
    const sinkPath = path.join(dir, 'sink.sock');
    await new Promise<void>((r) => sinkServer.listen(sinkPath, r));
    const sink = net.connect(sinkPath);
    await new Promise((r) => sink.once('connect', r));
    const source = new PassThrough();
    const ch = new SplitChannel(sink, source);
    ch.write('request ');
    ch.write('bytes');
    source.end('the answer');
    const read: Buffer[] = [];
    ch.on('data', (d: Buffer) => read.push(d));
    await new Promise((r) => ch.once('end', r));
    assert.equal(Buffer.concat(read).toString(), 'the answer');
    const until = Date.now() + 5000;
    while (Buffer.concat(got).toString() !== 'request bytes' && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    assert.equal(Buffer.concat(got).toString(), 'request bytes');
    ch.destroy();
    await new Promise((r) => setImmediate(r));
    assert.ok(sink.destroyed && source.destroyed, 'both ends closed');
    await new Promise((r) => sinkServer.close(r));

    const lease = new StdinPortLease();
    assert.equal(lease.take(), true);
    assert.equal(lease.take(), false, 'held');
    lease.release();
    assert.equal(lease.take(), true, 'free again');
  });
});

describe('docker uploads: the agent', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-upload-agent-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** A MuxServer on a unix socket and an HTTP/2 client session to it. */
  async function muxWith(port: StdinPort | null): Promise<{ dockerd: Awaited<ReturnType<typeof fakeDockerd>>; session: http2.ClientHttp2Session; close: () => Promise<void> }> {
    const dockerSock = path.join(dir, `dockerd-${Math.random().toString(16).slice(2)}.sock`);
    const dockerd = await fakeDockerd(dockerSock);
    const mux = new MuxServer(dockerSock, null, port, process.env.PATH ?? '/usr/bin:/bin');
    const muxPath = path.join(dir, `mux-${Math.random().toString(16).slice(2)}.sock`);
    const server = net.createServer((s) => mux.serve(s, 'test'));
    await new Promise<void>((r) => server.listen(muxPath, r));
    const session = http2.connect('http://agent', { createConnection: () => net.connect(muxPath) });
    return {
      dockerd,
      session,
      close: async () => {
        session.close();
        mux.endAll();
        await new Promise((r) => server.close(r));
        await new Promise((r) => dockerd.server.close(r));
      },
    };
  }

  /** CONNECT to docker.sock with `extra` headers: the answer's headers and everything it sent. */
  function connectDocker(session: http2.ClientHttp2Session, extra: http2.OutgoingHttpHeaders, body?: Buffer): Promise<{ headers: http2.IncomingHttpHeaders; answer: string }> {
    return new Promise((resolve, reject) => {
      const stream = session.request({ ':method': 'CONNECT', ':authority': 'docker.sock', ...extra }, { endStream: false });
      let headers: http2.IncomingHttpHeaders = {};
      const chunks: Buffer[] = [];
      stream.on('response', (h) => (headers = h));
      stream.on('data', (d: Buffer) => {
        chunks.push(d);
        // dockerd answers with a Content-Length; the whole answer is here once its body is.
        const text = Buffer.concat(chunks).toString();
        const headEnd = text.indexOf('\r\n\r\n');
        const m = /\r\nContent-Length: (\d+)\r\n/i.exec(text.slice(0, headEnd + 2));
        if (headEnd >= 0 && m && text.length >= headEnd + 4 + Number(m[1])) {
          stream.close();
          resolve({ headers, answer: text });
        }
      });
      stream.on('error', reject);
      stream.on('close', () => resolve({ headers, answer: Buffer.concat(chunks).toString() }));
      if (body) stream.write(body);
    });
  }

  test('asked for the port, it echoes the ask and dockerd gets the request from the port, not the stream', async () => {
    const payload = randomBytes(2 * 1024 * 1024);
    const requestBytes = Buffer.concat([Buffer.from(`POST /images/load HTTP/1.1\r\nHost: docker\r\nContent-Length: ${payload.length}\r\n\r\n`), payload]);
    const dev = path.join(dir, 'port');
    fs.writeFileSync(dev, Buffer.concat([Buffer.from(NONCE), requestBytes]));
    const m = await muxWith(new StdinPort(() => dev));
    try {
      const r = await connectDocker(m.session, { [DOCKER_STDIN_PORT_HEADER]: NONCE });
      assert.equal(r.headers[':status'], 200);
      assert.equal(r.headers[DOCKER_STDIN_PORT_HEADER], NONCE, 'the ask is echoed');
      assert.match(r.answer, /^HTTP\/1\.1 200 OK/);
      const body = JSON.parse(r.answer.slice(r.answer.indexOf('\r\n\r\n') + 4)) as { sha: string; length: number };
      assert.deepEqual(body, { sha: sha(payload), length: payload.length }, 'dockerd read the request off the port, byte for byte');
      assert.deepEqual(m.dockerd.seen.map((s) => `${s.method} ${s.url}`), ['POST /images/load']);
    } finally {
      await m.close();
    }
  });

  test('without a port, or with a bad nonce, no echo: the stream carries the request as usual', async () => {
    const ping = Buffer.from('GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n');
    for (const [port, nonce] of [[null, NONCE], [new StdinPort(() => path.join(dir, 'port')), 'not-a-nonce']] as const) {
      const m = await muxWith(port);
      try {
        const r = await connectDocker(m.session, { [DOCKER_STDIN_PORT_HEADER]: nonce }, ping);
        assert.equal(r.headers[':status'], 200);
        assert.equal(r.headers[DOCKER_STDIN_PORT_HEADER], undefined, 'no echo');
        assert.match(r.answer, /^HTTP\/1\.1 200 OK/);
        assert.deepEqual(m.dockerd.seen.map((s) => `${s.method} ${s.url}`), ['GET /_ping']);
      } finally {
        await m.close();
      }
    }
  });

  test('a port that does not begin with the nonce: the stream is reset and dockerd gets nothing', async () => {
    const dev = path.join(dir, 'port-wrong');
    fs.writeFileSync(dev, `${'f'.repeat(32)}GET /_ping HTTP/1.1\r\n\r\n`);
    const m = await muxWith(new StdinPort(() => dev));
    try {
      const r = await connectDocker(m.session, { [DOCKER_STDIN_PORT_HEADER]: NONCE });
      assert.equal(r.headers[DOCKER_STDIN_PORT_HEADER], NONCE, 'the port was taken');
      assert.equal(r.answer, '', 'no answer: the request was not passed on');
      assert.deepEqual(m.dockerd.seen, []);
    } finally {
      await m.close();
    }
  });
});
