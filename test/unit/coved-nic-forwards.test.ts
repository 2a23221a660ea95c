// coved's forwards over the forwarding NIC (vmm-host/coved/nic-forwards.ts) and the port forwarder's
// choice of path, on real sockets without a VM: a stand-in for qemu's hostfwd listens on the host
// port it is given and answers like the guest's service.
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { test } from 'node:test';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { EventHub } from '../../agent/hub';
import { NicForwards, type HostForwarder } from '../../vmm-host/coved/nic-forwards';
import { PortForwarder, bindsEveryAddress, type TcpOpener } from '../../vmm-host/coved/ports';

/** A stand-in for slirp's hostfwd: each forward is a real listener that answers `guest port N`. */
function fakeQemu(opts: { failures?: number } = {}) {
  const servers = new Map<number, net.Server>();
  const calls: string[] = [];
  let failures = opts.failures ?? 0;
  const forwarder: HostForwarder = {
    async forwardPort(hostPort, guestPort) {
      calls.push(`add ${guestPort}`);
      if (failures-- > 0) throw new Error(`Could not set up host forwarding rule 'tcp:127.0.0.1:${hostPort}'`);
      const server = net.createServer((c) => c.end(`guest port ${guestPort}\n`));
      await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: hostPort }, () => resolve()));
      servers.set(hostPort, server);
    },
    async unforwardPort(hostPort) {
      calls.push('remove');
      const s = servers.get(hostPort);
      servers.delete(hostPort);
      if (s) await new Promise<void>((r) => s.close(() => r()));
    },
  };
  const closeAll = async () => {
    for (const s of servers.values()) await new Promise<void>((r) => s.close(() => r()));
  };
  return { forwarder, calls, servers, closeAll };
}

function readAll(c: net.Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    c.on('data', (d) => (text += d.toString()));
    c.on('end', () => {
      // The NIC's sockets allow half-open connections: this side ends too, as a relay would.
      c.end();
      resolve(text);
    });
    c.on('error', reject);
  });
}

test('one hostfwd per guest port, made on the first connection and reused; a new VM starts with none', async () => {
  const q = fakeQemu();
  const logs: string[] = [];
  const nic = new NicForwards(q.forwarder, (m) => logs.push(m));
  try {
    assert.equal(await readAll(await nic.connect(100, 80)), 'guest port 80\n');
    assert.equal(await readAll(await nic.connect(100, 80)), 'guest port 80\n');
    assert.deepEqual(q.calls, ['add 80'], 'the second connection reuses the forward');
    assert.equal(q.servers.size, 1);
    // Another qemu (the VM restarted): its forwards are made anew.
    assert.equal(await readAll(await nic.connect(200, 80)), 'guest port 80\n');
    assert.deepEqual(q.calls, ['add 80', 'add 80']);
    nic.release(80);
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(q.calls, ['add 80', 'add 80', 'remove']);
    assert.match(logs.join('\n'), /forwarding NIC: 127\.0\.0\.1:\d+ -> guest port 80/);
  } finally {
    await q.closeAll();
  }
});

test('a host port taken before qemu binds it is retried with another; three failures reject with qemu\'s reason', async () => {
  const once = fakeQemu({ failures: 1 });
  try {
    const nic = new NicForwards(once.forwarder, () => undefined);
    assert.equal(await readAll(await nic.connect(1, 5432)), 'guest port 5432\n');
    assert.deepEqual(once.calls, ['add 5432', 'add 5432']);
  } finally {
    await once.closeAll();
  }
  const never = fakeQemu({ failures: 99 });
  const nic = new NicForwards(never.forwarder, () => undefined);
  await assert.rejects(nic.connect(1, 5432), /Could not set up host forwarding rule/);
  assert.equal(never.calls.length, 3);
  // A failure is not remembered: the next connection tries again.
  await assert.rejects(nic.connect(1, 5432), /Could not set up host forwarding rule/);
  assert.equal(never.calls.length, 6);
});

test('the forwarder says which guest ports listen on every IPv4 address, and releases a guest port with its last forward', async () => {
  assert.equal(bindsEveryAddress('0.0.0.0'), true);
  assert.equal(bindsEveryAddress('127.0.0.1'), false);
  // A v6-only `::` listener would not take a connection to the NIC's IPv4 address.
  assert.equal(bindsEveryAddress('::'), false);
  const guest = net.createServer((c) => c.end('hi\n'));
  await new Promise<void>((r) => guest.listen({ host: '127.0.0.1', port: 0 }, () => r()));
  const guestPort = (guest.address() as net.AddressInfo).port;
  const seen: string[] = [];
  const released: number[] = [];
  const opener: TcpOpener = {
    forwardTcp: (_host, port, everyAddress) => {
      seen.push(`${port} ${everyAddress}`);
      return Promise.resolve(net.connect({ host: '127.0.0.1', port: guestPort }));
    },
    release: (port) => released.push(port),
  };
  const fwd = new PortForwarder(opener, () => undefined, () => undefined, { maxAuto: 64, neverForward: new Set() });
  const free = async () => {
    const s = net.createServer();
    await new Promise<void>((r) => s.listen({ host: '127.0.0.1', port: 0 }, () => r()));
    const p = (s.address() as net.AddressInfo).port;
    await new Promise<void>((r) => s.close(() => r()));
    return p;
  };
  const [a, b] = [await free(), await free()];
  try {
    fwd.syncAuto([{ proto: 'tcp', address: '0.0.0.0', port: a }]);
    await new Promise((r) => setTimeout(r, 50));
    // A manual forward of the same guest port, and one of a port the guest binds on its loopback.
    await fwd.add(b, a, 'manual');
    assert.equal(await readAll(net.connect({ host: '127.0.0.1', port: a })), 'hi\n');
    assert.equal(await readAll(net.connect({ host: '127.0.0.1', port: b })), 'hi\n');
    fwd.addAuto({ proto: 'tcp', address: '127.0.0.1', port: a + 0 });
    assert.deepEqual(seen, [`${a} true`, `${a} true`]);
    // The guest now listens on `a` only on its loopback: the next connection is told so.
    fwd.removeAuto({ proto: 'tcp', address: '0.0.0.0', port: a });
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(released, [], 'the manual forward still goes to that guest port');
    assert.equal(await readAll(net.connect({ host: '127.0.0.1', port: b })), 'hi\n');
    assert.deepEqual(seen.at(-1), `${a} false`);
    await fwd.remove(b);
    assert.deepEqual(released, [a], 'released with the last forward to it');
  } finally {
    await fwd.closeAll();
    await new Promise<void>((r) => guest.close(() => r()));
  }
});

test("the agent's hello names the forwarding NIC's address only when the init recorded one that is an IPv4 address", () => {
  const run = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-fwd-'));
  try {
    const hub = new EventHub(run);
    assert.equal(hub.hello().forwardAddress, undefined, 'no NIC set up: nothing said');
    fs.writeFileSync(path.join(run, 'forward-address'), '10.0.3.15\n');
    assert.equal(hub.hello().forwardAddress, '10.0.3.15');
    fs.writeFileSync(path.join(run, 'forward-address'), '10.0.3.15; rm -rf /\n');
    assert.equal(hub.hello().forwardAddress, undefined);
  } finally {
    fs.rmSync(run, { recursive: true, force: true });
  }
});
