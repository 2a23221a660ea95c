// The relay pieces coved builds the Docker socket and port forwards from: half-close carried both
// ways, and a close that does not wait on an idle client (a stop or rm must never hang on one).
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { closingServer, dockerUnavailable, listenPrivate, pipeBothWays, startRelay } from '../../vmm-host/coved/relay';

const within = <T>(p: Promise<T>, ms: number, what: string) =>
  Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms))]);

test('close() ends idle connections instead of waiting for them', async () => {
  const server = closingServer(net.createServer(() => undefined));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  await new Promise((r) => client.on('connect', r));
  const closed = new Promise<void>((r) => server.close(() => r()));
  await within(closed, 2000, 'server close with an idle client');
  await within(new Promise((r) => client.on('close', r)), 2000, 'the idle client being ended');
});

test('a relay carries half-close both ways and answers with 503 when the guest is away', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-relay-'));
  try {
    // The "guest": echoes what it got once the client has finished sending, then ends.
    const guest = net.createServer({ allowHalfOpen: true }, (c) => {
      let got = '';
      c.on('data', (d: Buffer) => (got += d.toString()));
      c.on('end', () => c.end(`echo:${got}`));
    });
    await new Promise<void>((r) => guest.listen(path.join(dir, 'guest.sock'), () => r()));
    let up = true;
    const relay = await startRelay({
      path: path.join(dir, 'relay.sock'),
      log: () => undefined,
      open: () => (up ? Promise.resolve(net.connect({ path: path.join(dir, 'guest.sock'), allowHalfOpen: true })) : Promise.reject(new Error('sandbox x is stopped'))),
      unavailable: (conn, err) => dockerUnavailable(conn, err.message),
    });
    assert.equal(fs.statSync(path.join(dir, 'relay.sock')).mode & 0o777, 0o600);
    const talk = (text: string) =>
      new Promise<string>((resolve) => {
        const c = net.connect({ path: path.join(dir, 'relay.sock'), allowHalfOpen: true });
        let out = '';
        c.on('data', (d: Buffer) => (out += d.toString()));
        c.on('end', () => resolve(out));
        c.end(text); // Half-close: the answer still comes back.
      });
    assert.equal(await within(talk('ping'), 5000, 'the echo through the relay'), 'echo:ping');
    up = false;
    const reply = await within(talk('GET /_ping HTTP/1.1\r\n\r\n'), 5000, 'the 503');
    assert.match(reply, /^HTTP\/1\.1 503/);
    assert.match(reply, /sandbox x is stopped/);
    await within(new Promise<void>((r) => relay.close(() => r())), 2000, 'relay close');
    guest.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("a guest side that fails right after its last bytes: a slow client still gets every byte (an exec's exit status is last)", async () => {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as net.AddressInfo).port;
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const client = net.connect(port, '127.0.0.1');
  try {
    const conn = await accepted;
    // The guest side: 32 MiB, more than the socket buffers hold while the client does not read, then
    // an error (a stream reset) before any end.
    const guest = new PassThrough();
    pipeBothWays(conn, guest);
    const payload = Buffer.alloc(32 * 1024 * 1024, 7);
    guest.on('error', () => undefined);
    guest.write(payload);
    await new Promise((r) => setImmediate(r));
    guest.destroy(new Error('reset by the guest'));
    // Only now does the client start to read.
    await new Promise((r) => setTimeout(r, 200));
    let got = 0;
    client.on('data', (d: Buffer) => (got += d.length));
    await within(new Promise((r) => client.once('close', r)), 10_000, 'the client to read to the end');
    assert.equal(got, payload.length, 'every byte reached the client');
  } finally {
    client.destroy();
    server.close();
  }
});

test("listens that overlap (a sandbox's relays start together) make 0600 sockets and leave the process umask as it was", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-umask-'));
  // Read by setting it (umask() without an argument is deprecated): set one, put the old one back.
  const umaskNow = (): number => {
    const u = process.umask(0o022);
    process.umask(u);
    return u;
  };
  const before = umaskNow();
  const servers = [0, 1, 2].map(() => net.createServer());
  try {
    await Promise.all(servers.map((s, i) => listenPrivate(s, path.join(dir, `s${i}.sock`))));
    assert.equal(umaskNow(), before, 'the umask is back');
    for (let i = 0; i < 3; i++) assert.equal(fs.statSync(path.join(dir, `s${i}.sock`)).mode & 0o777, 0o600);
    fs.mkdirSync(path.join(dir, 'after'), { mode: 0o700 });
    assert.equal(fs.statSync(path.join(dir, 'after')).mode & 0o777, 0o700 & ~before, 'a folder made afterwards has its own mode');
  } finally {
    for (const s of servers) s.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
