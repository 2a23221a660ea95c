// coved's port forwarder on real sockets (no VM): the "guest" end is a real TCP server on this
// host, reached the way the agent link reaches the guest, as one stream per connection.
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { test } from 'node:test';
import { PortForwarder, type TcpOpener } from '../../vmm-host/coved/ports';

/** A TCP server on 127.0.0.1 that answers every connection with `text`; resolves with its port. */
async function listen(text: string | null, port = 0): Promise<{ server: net.Server; port: number }> {
  const server = net.createServer((c) => {
    if (text !== null) c.end(text);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port, exclusive: true }, () => resolve());
  });
  return { server, port: (server.address() as net.AddressInfo).port };
}

const close = (s: net.Server) => new Promise<void>((r) => s.close(() => r()));

/** Reads everything 127.0.0.1:port sends until it closes. */
function fetchText(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect({ host: '127.0.0.1', port });
    let text = '';
    c.on('data', (d) => (text += d.toString()));
    c.on('end', () => resolve(text));
    c.on('error', reject);
  });
}

/** The guest side: every forwarded connection reaches the same local "guest service". */
function opener(guestServicePort: number): TcpOpener {
  return { forwardTcp: (host) => Promise.resolve(net.connect({ host, port: guestServicePort })) };
}

test('a publish whose bind failed succeeds once the host port is freed (defect #2)', async () => {
  const guest = await listen('hello from the guest service\n');
  // Something else holds the host port first.
  const squatter = await listen(null);
  const hostPort = squatter.port;
  const events: string[] = [];
  const fwd = new PortForwarder(opener(guest.port), (p, action) => events.push(`${action} ${p.hostPort}`), () => undefined);
  try {
    const first = await fwd.add(hostPort, 80, 'manual');
    assert.match(first.error ?? '', /already in use/);
    assert.deepEqual(fwd.list().map((p) => p.error !== undefined), [true], 'the failure is listed with its reason');

    await close(squatter.server);
    const second = await fwd.add(hostPort, 80, 'manual');
    assert.equal(second.error, undefined, `the second publish failed: ${second.error}`);
    assert.deepEqual(fwd.list(), [{ hostPort, guestPort: 80, origin: 'manual' }]);
    assert.equal(await fetchText(hostPort), 'hello from the guest service\n');
    assert.deepEqual(events, [`failed ${hostPort}`, `forwarded ${hostPort}`]);
  } finally {
    await fwd.closeAll();
    await close(guest.server);
  }
});

test('an automatic forward whose bind failed is bound again on the next report', async () => {
  const guest = await listen('auto\n');
  const squatter = await listen(null);
  const port = squatter.port;
  const fwd = new PortForwarder(opener(guest.port), () => undefined, () => undefined);
  try {
    const first = await fwd.add(port, port, 'auto');
    assert.ok(first.error);
    await close(squatter.server);
    fwd.syncAuto([{ proto: 'tcp', port, address: '0.0.0.0' }]);
    // The bind runs in the background: poll the list.
    for (let i = 0; i < 100 && fwd.list()[0]?.error !== undefined; i++) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(fwd.list(), [{ hostPort: port, guestPort: port, origin: 'auto' }]);
    assert.equal(await fetchText(port), 'auto\n');
  } finally {
    await fwd.closeAll();
    await close(guest.server);
  }
});

test('a working forward is not bound twice: a second publish returns it', async () => {
  const guest = await listen('x');
  const fwd = new PortForwarder(opener(guest.port), () => undefined, () => undefined);
  try {
    const free = await listen(null);
    const port = free.port;
    await close(free.server);
    const a = await fwd.add(port, 81, 'manual');
    const b = await fwd.add(port, 81, 'manual');
    assert.equal(a.error, undefined);
    assert.deepEqual(b, a);
    assert.equal(fwd.list().length, 1);
  } finally {
    await fwd.closeAll();
    await close(guest.server);
  }
});
