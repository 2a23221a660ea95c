// The agent's pure parts: /proc/net/tcp parsing, options, config checks, the banner sync.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { AGENT_BANNER_PREFIX, skipToBanner } from '../../contract/banner-sync';
import { applyAslr } from '../../agent/aslr';
import { ConfigError, loadConfig } from '../../agent/config';
import { parseOptions, UsageError } from '../../agent/options';
import { findVirtioPort, VersionLineWatch } from '../../agent/transport/port';
import { LoopbackOwners, parseProcNetTcp, reachablePorts } from '../../agent/watch/ports';
import { GUEST } from '../../contract/guest';
import { makeKeys } from './agent-harness';

const TCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
   2: 0F02000A:1388 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 100 0 0 10 0
   3: 0F02000A:D431 0202000A:0016 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0000000000000000 100 0 0 10 0
`;
const TCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:0051 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 7 1 0000000000000000 100 0 0 10 0
   3: 00000000000000000000000000000000:2382 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 8 1 0000000000000000 100 0 0 10 0
   4: B80D0120000000000000000001000000:0052 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 9 1 0000000000000000 100 0 0 10 0
`;

test('/proc/net/tcp{,6} parsing decodes listening sockets only', () => {
  assert.deepEqual(parseProcNetTcp(TCP, false), [
    { address: '0.0.0.0', port: 8080, loopback: false, inode: 1 },
    { address: '127.0.0.1', port: 3306, loopback: true, inode: 2 },
    { address: '10.0.2.15', port: 5000, loopback: false, inode: 3 },
  ]);
  assert.deepEqual(parseProcNetTcp(TCP6, true), [
    { address: '::', port: 8080, loopback: false, inode: 5 },
    { address: '::1', port: 80, loopback: true, inode: 6 },
    { address: '::ffff:127.0.0.1', port: 81, loopback: true, inode: 7 },
    { address: '::', port: 9090, loopback: false, inode: 8 },
    { address: '2001:db8::1', port: 82, loopback: false, inode: 9 },
  ]);
});

test('reachable ports: no loopback, one entry per port, wildcard preferred', () => {
  const raw = [...parseProcNetTcp(TCP, false), ...parseProcNetTcp(TCP6, true)];
  assert.deepEqual(reachablePorts(raw), [
    { proto: 'tcp', address: '2001:db8::1', port: 82 },
    { proto: 'tcp', address: '10.0.2.15', port: 5000 },
    { proto: 'tcp', address: '0.0.0.0', port: 8080 },
    { proto: 'tcp', address: '::', port: 9090 },
  ]);
});

test('reachable ports: loopback listeners of user services too, not the guest machinery, wildcard still preferred', () => {
  const raw = [...parseProcNetTcp(TCP, false), ...parseProcNetTcp(TCP6, true), { address: '127.0.0.1', port: 8080, loopback: true, inode: 10 }];
  // Inode 2 (127.0.0.1:3306) and 6 (::1:80) are user services; 7 (::ffff:127.0.0.1:81) is the guest's own.
  assert.deepEqual(reachablePorts(raw, (inode) => ![2, 6, 10].includes(inode)), [
    { proto: 'tcp', address: '::1', port: 80 },
    { proto: 'tcp', address: '2001:db8::1', port: 82 },
    { proto: 'tcp', address: '127.0.0.1', port: 3306 },
    { proto: 'tcp', address: '10.0.2.15', port: 5000 },
    { proto: 'tcp', address: '0.0.0.0', port: 8080 },
    { proto: 'tcp', address: '::', port: 9090 },
  ]);
});

test('loopback owners: a listener is the guest own when this process or containerd/dockerd holds it', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-proc-'));
  const proc = (pid: number, comm: string, inodes: number[]) => {
    fs.mkdirSync(path.join(root, String(pid), 'fd'), { recursive: true });
    fs.writeFileSync(path.join(root, String(pid), 'comm'), `${comm}\n`);
    inodes.forEach((i, n) => fs.symlinkSync(`socket:[${i}]`, path.join(root, String(pid), 'fd', String(n + 3))));
  };
  proc(10, 'node', [100]);
  proc(11, 'containerd', [101]);
  proc(12, 'docker-proxy', [102]);
  proc(13, 'postgres', [103]);
  const owners = new LoopbackOwners(root, 10);
  assert.deepEqual([100, 101, 102, 103, 104].map((i) => owners.isOwn(i)), [true, true, false, false, true]);
  fs.rmSync(root, { recursive: true, force: true });
});

test('options: defaults come from the guest contract; flags beat the environment', () => {
  const d = parseOptions([], {});
  assert.equal(d.configPath, GUEST.config);
  assert.equal(d.socketPath, GUEST.agentSock);
  assert.equal(d.dockerSock, GUEST.dockerSock);
  assert.equal(d.readyMarker, GUEST.readyMarker);
  assert.equal(d.port, 'auto');
  assert.equal(d.runDir, '/run/cove');
  assert.equal(d.urandom, '/dev/urandom');
  assert.equal(d.etcDir, '/etc');
  assert.equal(d.systemPath, '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin');
  const c = parseOptions(['--run-dir', '/r', '--urandom=/u'], { COVE_AGENT_ETC: '/e', COVE_AGENT_SYSTEM_PATH: '/stubs' });
  assert.deepEqual([c.runDir, c.urandom, c.etcDir, c.systemPath], ['/r', '/u', '/e', '/stubs']);
  const o = parseOptions(['--socket', 'none', '--port=/dev/vport0p1', '--poll-ms', '250'], { COVE_AGENT_SOCK: '/x.sock', COVE_AGENT_CONFIG: '/c.json' });
  assert.equal(o.socketPath, null);
  assert.equal(o.port, '/dev/vport0p1');
  assert.equal(o.pollMs, 250);
  assert.equal(o.configPath, '/c.json');
  assert.throws(() => parseOptions(['--nope'], {}), UsageError);
  assert.throws(() => parseOptions(['--poll-ms', 'x'], {}), UsageError);
});

test('the virtio-serial port is found by its name', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-vports-'));
  try {
    fs.mkdirSync(path.join(dir, 'vport0p0'));
    fs.writeFileSync(path.join(dir, 'vport0p0', 'name'), 'org.qemu.guest_agent.0\n');
    fs.mkdirSync(path.join(dir, 'vport0p1'));
    fs.writeFileSync(path.join(dir, 'vport0p1', 'name'), `${GUEST.agentPortName}\n`);
    assert.equal(findVirtioPort(dir, GUEST.agentPortName), '/dev/vport0p1');
    assert.equal(findVirtioPort(dir, 'other'), null);
    assert.equal(findVirtioPort(path.join(dir, 'missing'), GUEST.agentPortName), null);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('config: clear errors for a missing file, no keys, a bad key', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-cfg-'));
  try {
    const file = path.join(dir, 'config.json');
    assert.throws(() => loadConfig(file), (e: Error) => e instanceof ConfigError && /cannot read the agent config/.test(e.message));
    const keys = makeKeys();
    fs.writeFileSync(file, JSON.stringify({ hostKey: keys.hostPrivate, authorizedKeys: [] }));
    assert.throws(() => loadConfig(file), /no authorizedKeys/);
    fs.writeFileSync(file, JSON.stringify({ hostKey: keys.hostPrivate, authorizedKeys: ['ssh-ed25519 nonsense'] }));
    assert.throws(() => loadConfig(file), /authorizedKeys\[0\]/);
    fs.writeFileSync(file, JSON.stringify({ hostKey: keys.hostPrivate, authorizedKeys: [keys.clientPublic] }));
    assert.equal(loadConfig(file).authorizedKeys.length, 1);
    assert.equal(loadConfig(file).hostname, 'cove', 'no hostname or name: the init\'s default');
    const base = { hostKey: keys.hostPrivate, authorizedKeys: [keys.clientPublic] };
    const bad = (extra: object, expected: RegExp): void => {
      fs.writeFileSync(file, JSON.stringify({ ...base, ...extra }));
      assert.throws(() => loadConfig(file), expected);
    };
    bad({ hostname: 'a b' }, /not a valid hostname/);
    bad({ mounts: {} }, /mounts in .* is not a list/);
    bad({ mounts: [null] }, /mounts\[0\] .* is not an object/);
    bad({ mounts: [{ path: 'relative' }] }, /mounts\[0\] .* no usable path/);
    bad({ mounts: [{ path: '/w', type: 'nfs' }] }, /virtiofs or 9p/);
    bad({ aslr: 'off' }, /aslr in .* is not true or false/);
    bad({ aslr: 0 }, /aslr in .* is not true or false/);
    fs.writeFileSync(file, JSON.stringify({ ...base, name: 'n1', mounts: [{ path: '/w' }] }));
    const c = loadConfig(file);
    assert.equal(c.hostname, 'n1');
    assert.equal(c.aslr, undefined, 'a config that does not say leaves the kernel as it is');
    for (const aslr of [true, false]) {
      fs.writeFileSync(file, JSON.stringify({ ...base, aslr }));
      assert.equal(loadConfig(file).aslr, aslr);
    }
    assert.deepEqual(c.mounts, [{ tag: 'cove-ws', type: 'virtiofs', path: '/w', readonly: false }]);
    // A JSON error never quotes the text, which holds the private key.
    fs.writeFileSync(file, `{"hostKey": "${'s'.repeat(40)}"`);
    assert.throws(() => loadConfig(file), (e: Error) => /is not JSON/.test(e.message) && !e.message.includes('sss'));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('applyAslr writes 2 or 0 to the sysctl, nothing when the config does not say, and returns an Error the agent logs when refused', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-aslr-'));
  try {
    const file = path.join(dir, 'randomize_va_space');
    fs.writeFileSync(file, 'untouched');
    assert.equal(applyAslr(undefined, file), null);
    assert.equal(fs.readFileSync(file, 'utf8'), 'untouched');
    assert.equal(applyAslr(false, file), '0');
    assert.equal(fs.readFileSync(file, 'utf8'), '0\n');
    assert.equal(applyAslr(true, file), '2');
    assert.equal(fs.readFileSync(file, 'utf8'), '2\n');
    const refused = applyAslr(false, path.join(dir, 'missing', 'randomize_va_space'));
    assert.ok(refused instanceof Error && /cannot set .* to 0: ENOENT/.test(refused.message), String(refused));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('skipToBanner drops stale bytes, even with the banner split across chunks', async () => {
  const inner = new PassThrough();
  const outer = skipToBanner(inner);
  let got = '';
  outer.on('data', (d: Buffer) => (got += d.toString('latin1')));
  const banner = `${AGENT_BANNER_PREFIX}0.1.0\r\n`;
  inner.write(Buffer.from([0xde, 0xad, 0x0d, 0xbe, 0xef]));
  inner.write(`stale ${banner.slice(0, 7)}`);
  inner.write(`${banner.slice(7)}kexinit...`);
  inner.end();
  await new Promise((resolve) => outer.on('end', resolve));
  assert.equal(got, `${banner}kexinit...`);
});

test('VersionLineWatch finds a new client version line, even split across reads, never the own one', () => {
  const w = new VersionLineWatch();
  // The connection's own version line, split over two reads, is not a new host.
  w.feed(Buffer.from('SSH-2.0'));
  assert.equal(w.find(Buffer.from('-ssh2js1.17.0\r\n\x00\x00\x01')), null);
  w.feed(Buffer.from('-ssh2js1.17.0\r\n\x00\x00\x01'));
  assert.equal(w.find(Buffer.from('binary')), null);
  w.feed(Buffer.from('binary...SSH-2'));
  // A new host's line split across reads: it began 5 bytes before this chunk.
  assert.equal(w.find(Buffer.from('.0-OpenSSH_9.2\r\n')), -5);
  w.reset();
  assert.equal(w.find(Buffer.from('xxSSH-2.0-a')), 2);
});
