// The hostile-guest tier on real VMs: two sandboxes restored from the warm-start template, the real
// coved and `cove` CLI. Guest root is reached from a --privileged --pid=host container with nsenter
// (as any Docker user of the sandbox can), and from there the guest attacks the host: a folder of
// links that the old `cove cp` followed, a replaced agent socket that answers `cove cp` with
// traversal names and endless trees, and 10,000 listening ports with a port already in use on the
// host and one on the never-forward list. The other sandbox and coved must answer throughout. The
// forwarding NIC's slirp lets the guest reach nothing.
// docs/security.md lists each attack and points here.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { buildSync } from 'esbuild';
import { makeBusyboxImage } from '../helpers/busybox-image';
import { VM } from '../../contract/layout';
import { GUEST_FORWARD_NIC } from '../../contract/guest';
import { COVE_BIN, HOME, REPO, SCRATCH, cove, covedPid, docker, ok, resetTestHome, run, testEnv, waitUntil, withGuestDiagnostics, workspace } from '../helpers/harness';
import { treeOf } from './helpers';

const A = 'seca';
const B = 'secb';
/** Ports the storm listens on in the guest (10,000 from here). */
const STORM_BASE = 42_000;
const STORM_COUNT = 10_000;
/** Host ports taken on the host before the guest announces them: [::1] only, and 127.0.0.1. */
const IN_USE_V6 = 41_001;
const IN_USE_V4 = 41_002;
/** On coved's never-forward list. */
const NEVER = 41_003;
const CAP = 64;
/** What coved is told to keep of a console log (COVE_CONSOLE_MAX_BYTES). */
const CONSOLE_KEEP = 256 * 1024;

let wsA = '';
let image = '';

const exec = async (name: string, script: string, timeoutMs = 180_000) => ok(await cove(['exec', name, '--', 'sh', '-c', script], timeoutMs), `cove exec ${name}`).stdout;

/** Host TCP ports coved itself listens on (its sockets matched against /proc/net/tcp{,6}). */
function covedListeningPorts(): number[] {
  const pid = covedPid();
  if (!pid) return [];
  const inodes = new Set<string>();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]);
    } catch {
      // Closed meanwhile.
    }
  }
  const ports: number[] = [];
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const row of fs.readFileSync(file, 'utf8').split('\n').slice(1)) {
      const f = row.trim().split(/\s+/);
      if (f.length > 9 && f[3] === '0A' && inodes.has(f[9])) ports.push(parseInt(f[1].split(':')[1], 16));
    }
  }
  return ports.sort((a, b) => a - b);
}

/** A `cove` call with the given extra environment (the first call of the run starts coved with it). */
const coveEnv = (args: string[], env: NodeJS.ProcessEnv, timeoutMs = 300_000) => run(process.execPath, [COVE_BIN, ...args], { timeoutMs, env: testEnv(env) });

describe('a hostile guest against the host, on real VMs', { timeout: 40 * 60_000 }, () => {
  before(async () => {
    resetTestHome();
    wsA = workspace('sec-a');
    const wsB = workspace('sec-b');
    // coved starts with this call, so its environment holds the never-forward list.
    ok(await coveEnv(['up', wsA, '--name', A, '--keep-awake'], { COVE_NEVER_FORWARD: String(NEVER), COVE_CONSOLE_MAX_BYTES: String(CONSOLE_KEEP) }, 20 * 60_000), `cove up ${A}`);
    ok(await cove(['up', wsB, '--name', B, '--keep-awake'], 20 * 60_000), `cove up ${B}`);
    const tar = path.join(SCRATCH, 'busybox.tar');
    image = makeBusyboxImage(tar);
    ok(await docker(`cove-${A}`, ['load', '-i', tar], 300_000), 'docker load');
  });

  after(async () => {
    for (const n of [A, B]) await cove(['rm', '--force', n], 180_000).catch(() => undefined);
    const pid = covedPid();
    if (pid) process.kill(pid, 'SIGTERM');
  });

  test('cove cp of a guest folder with etc-link -> /etc, sub/loop -> .. and a dangling link makes what docker cp makes, and exits 0', async () => {
    await exec(A, 'rm -rf /tmp/t && mkdir -p /tmp/t/sub && echo one > /tmp/t/file && ln -s /etc /tmp/t/etc-link && ln -s .. /tmp/t/sub/loop && ln -s /nonexistent /tmp/t/dangling');
    const out = path.join(SCRATCH, 'cp-out');
    fs.rmSync(out, { recursive: true, force: true });
    fs.mkdirSync(out);
    const canary = path.join(SCRATCH, 'canary.txt');
    fs.writeFileSync(canary, 'canary\n');
    const r = await cove(['cp', `${A}:/tmp/t`, out], 120_000);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(treeOf(out), ['d t', 'd t/sub', 'f t/file', 'l t/dangling -> /nonexistent', 'l t/etc-link -> /etc', 'l t/sub/loop -> ..']);
    assert.equal(fs.readFileSync(path.join(out, 't', 'file'), 'utf8'), 'one\n');
    assert.equal(fs.readFileSync(canary, 'utf8'), 'canary\n');
  });

  test('cove cp host to guest sends a host link as a link, never what it points to', async () => {
    const secret = path.join(SCRATCH, 'host-secret.txt');
    fs.writeFileSync(secret, 'HOST SECRET 7f3a\n');
    const src = path.join(SCRATCH, 'to-guest');
    fs.rmSync(src, { recursive: true, force: true });
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, 'a.txt'), 'a\n');
    fs.symlinkSync(secret, path.join(src, 'secret-link'));
    ok(await cove(['cp', src, `${A}:/tmp/in`], 120_000), 'cove cp to the guest');
    const listing = await exec(A, 'readlink /tmp/in/secret-link; cat /tmp/in/a.txt; grep -rs "HOST SECRET" /tmp/in || echo no-secret');
    assert.deepEqual(listing.trim().split('\n'), [secret, 'a', 'no-secret']);
  });

  test('cove cp of one guest file over exec streams: a malformed header or a file over the limit is refused and keeps nothing; a setuid bit is not kept', async () => {
    // Guest root puts its own `stat` over the real one, so the header GET_FILE_SCRIPT prints before
    // the bytes says what the guest likes; the file itself is 1 MiB.
    await exec(A, 'head -c 1048576 /dev/zero > /tmp/lie.bin && printf "#!/bin/sh\\ncat /tmp/lie.head\\n" > /tmp/fake-stat && chmod 755 /tmp/fake-stat && mount --bind /tmp/fake-stat /usr/bin/stat');
    const out = path.join(SCRATCH, 'lie-out');
    fs.rmSync(out, { recursive: true, force: true });
    fs.mkdirSync(out);
    const dst = path.join(out, 'lie.bin');
    try {
      const cases: Array<{ head: string; env?: NodeJS.ProcessEnv; says: RegExp }> = [
        { head: '644 0 0; rm -rf ~', says: /the guest answered the copy of "\/tmp\/lie\.bin" with a malformed header/ },
        { head: '', says: /the guest answered the copy of "\/tmp\/lie\.bin" with a malformed header/ },
        // More bytes than the limit: the copy stops there, whatever the guest says of the file.
        { head: '644 0 0', env: { COVE_CP_MAX_BYTES: String(512 * 1024) }, says: /the copy is larger than 524288 bytes; it stopped in "\/tmp\/lie\.bin", which was not kept/ },
      ];
      for (const c of cases) {
        await exec(A, `printf '%s\\n' '${c.head}' > /tmp/lie.head`);
        const r = await coveEnv(['cp', `${A}:/tmp/lie.bin`, dst], c.env ?? {}, 120_000);
        assert.equal(r.code, 1, `${c.head}: ${r.stderr}`);
        assert.match(r.stderr, c.says, c.head);
        assert.deepEqual(fs.readdirSync(out), [], `${c.head}: nothing is left under the name or a temporary one`);
      }
      // A setuid mode: the bytes are kept, the setuid bit is not.
      await exec(A, `printf '%s\\n' '4755 0 86400' > /tmp/lie.head`);
      ok(await cove(['cp', `${A}:/tmp/lie.bin`, dst], 120_000), 'cove cp with a setuid mode in the header');
      const st = fs.statSync(dst);
      assert.equal(st.mode & 0o7777, 0o755);
      assert.equal(st.size, 1048576);
      assert.equal(st.mtimeMs, 86_400_000);
    } finally {
      await exec(A, 'umount /usr/bin/stat; rm -f /tmp/lie.bin /tmp/lie.head; rm -f /tmp/fake-stat');
    }
    assert.match(await exec(A, 'stat -c %s /etc/hostname'), /^\d+\n$/, 'the real stat is back');
  });

  test('a replaced agent socket: traversal names, a host link in the destination, a loop and an endless file are refused; the canary is unchanged', { timeout: 15 * 60_000 }, async () => {
    // Guest root takes over /run/cove/agent.sock with its own SSH server (the sandbox's host key).
    const bundle = path.join(wsA, 'hostile-agent.js');
    buildSync({
      entryPoints: [path.join(REPO, 'test', 'security', 'hostile-agent-main.ts')],
      bundle: true,
      platform: 'node',
      target: 'node20',
      format: 'cjs',
      outfile: bundle,
      external: ['*.node', 'cpu-features'],
      logLevel: 'error',
    });
    const ctx = `cove-${A}`;
    ok(
      await docker(ctx, ['run', '-d', '--name', 'hostile', '--privileged', '--pid', 'host', image, 'nsenter', '-t', '1', '-m', '-u', '-i', '-n', '--', '/usr/bin/node', bundle], 180_000),
      'start the hostile agent as guest root',
    );
    try {
      await waitUntil('the hostile agent to listen', 120_000, async () => (await docker(ctx, ['logs', 'hostile'], 30_000)).stdout.includes('hostile agent listening'), 1000);
      const out = path.join(SCRATCH, 'hostile-out', 'a', 'b');
      fs.rmSync(path.join(SCRATCH, 'hostile-out'), { recursive: true, force: true });
      fs.mkdirSync(out, { recursive: true });
      // `<out>/traversal/../../cove-canary.txt` is this file.
      const canary = path.join(SCRATCH, 'hostile-out', 'a', 'cove-canary.txt');
      fs.writeFileSync(canary, 'canary\n');

      const trav = await cove(['cp', `${A}:/hostile/traversal`, out], 120_000);
      assert.equal(trav.code, 1, trav.stderr);
      assert.match(trav.stderr, /the guest listed the name "\.\.\/\.\.\/cove-canary\.txt" in "\/hostile\/traversal"; only a single plain path component is accepted/);
      assert.equal(fs.readFileSync(canary, 'utf8'), 'canary\n', 'the canary beside the destination is unchanged');

      const victim = path.join(SCRATCH, 'hostile-out', 'victim');
      fs.mkdirSync(victim);
      fs.mkdirSync(path.join(out, 'write-through'));
      fs.symlinkSync(victim, path.join(out, 'write-through', 'sub'));
      const wt = await cove(['cp', `${A}:/hostile/write-through`, out], 120_000);
      assert.equal(wt.code, 1, wt.stderr);
      assert.match(wt.stderr, /write-through\/sub" already exists on the host and is not a folder/);
      assert.deepEqual(fs.readdirSync(victim), [], 'nothing written through the host link');

      const deep = await cove(['cp', `${A}:/hostile/deep`, out], 300_000);
      assert.equal(deep.code, 1, deep.stderr);
      assert.match(deep.stderr, /folders deep \(a loop\?\)/);

      const huge = await run(process.execPath, [COVE_BIN, 'cp', `${A}:/hostile/huge`, out], { timeoutMs: 300_000, env: testEnv({ COVE_CP_MAX_BYTES: String(4 * 1024 * 1024) }) });
      assert.equal(huge.code, 1, huge.stderr);
      assert.match(huge.stderr, /larger than 4194304 bytes; it stopped in "\/hostile\/huge\/huge\.bin", which was not kept/);
      assert.ok(!fs.existsSync(path.join(out, 'huge', 'huge.bin')));
      assert.deepEqual(treeOf(path.join(SCRATCH, 'hostile-out')).filter((l) => l.includes('.cove-cp-')), [], 'no temporary file is left');

      const esc = await cove(['cp', `${A}:/hostile/escape`, out], 120_000);
      assert.equal(esc.code, 1);
      // eslint-disable-next-line no-control-regex
      assert.ok(!/[\u0000-\u0008\u000b-\u001f]/.test(esc.stderr), `no control character reaches the terminal: ${JSON.stringify(esc.stderr)}`);
    } finally {
      await docker(ctx, ['stop', '-t', '10', 'hostile'], 60_000).catch(() => undefined);
      await docker(ctx, ['rm', '-f', 'hostile'], 60_000).catch(() => undefined);
      fs.rmSync(bundle, { force: true });
    }
    // The real agent's socket is back: cove exec works again.
    await waitUntil('cove exec to reach the real agent again', 120_000, async () => (await cove(['exec', A, '--', 'true'], 60_000)).code === 0, 2000);
  });

  test('a guest writing its console without end takes no more host disk than the bound', { timeout: 15 * 60_000 }, async () => {
    const file = path.join(HOME, 'vms', A, VM.consoleLog);
    const t0 = Date.now();
    // 4 MiB through the serial port, as guest root, then a marker line.
    await exec(A, "head -c 4194304 /dev/zero | tr '\\0' x > /dev/ttyS0; echo; echo cove-console-flood-end > /dev/ttyS0", 600_000);
    const seconds = (Date.now() - t0) / 1000;
    await new Promise((r) => setTimeout(r, 3000));
    const st = fs.statSync(file);
    process.stdout.write(`console: ${st.size} bytes written in ${seconds.toFixed(1)} s, ${st.blocks * 512} bytes on disk\n`);
    assert.ok(st.size > 4 * 1024 * 1024, 'the flood reached the console log');
    assert.ok(st.blocks * 512 <= 2 * CONSOLE_KEEP + 256 * 1024, `the console log takes ${st.blocks * 512} bytes of disk`);
    const logs = await cove(['logs', A], 120_000);
    assert.equal(logs.code, 0);
    assert.match(logs.stdout, /cove-console-flood-end/);
    assert.ok(!logs.stdout.includes('\0'), 'cove logs leaves out the punched part');
  });

  test('the forwarding NIC carries only what the host opens: from the guest, its slirp reaches neither the host loopback nor beyond', async () => {
    const net = await import('node:net');
    const host = net.createServer((c) => c.end('the host service\n')).listen({ host: '127.0.0.1', port: 0 });
    await new Promise((res) => (host.listening ? res(null) : host.once('listening', res)));
    const port = (host.address() as import('node:net').AddressInfo).port;
    try {
      assert.equal((await exec(A, 'cat /run/cove/forward-address')).trim(), GUEST_FORWARD_NIC.address, 'the NIC is up in the guest');
      // slirp without restrict=on maps its host address to the host's 127.0.0.1, and routes anything else out.
      const probe = `const net = require('net');
const tryConnect = (host, port) => new Promise((res) => {
  const c = net.connect({ host, port, localAddress: '${GUEST_FORWARD_NIC.address}' });
  const done = (what) => { c.destroy(); res(what); };
  c.setTimeout(8000, () => done('timeout'));
  c.on('data', (d) => done('answered: ' + d.toString().trim()));
  c.on('error', (e) => done(e.code));
  c.on('end', () => done('closed'));
});
(async () => {
  for (const [h, p] of [['${GUEST_FORWARD_NIC.host}', ${port}], ['10.0.3.3', 53], ['1.1.1.1', 80]]) console.log(h, await tryConnect(h, p));
})();`;
      fs.writeFileSync(path.join(wsA, 'nic-probe.js'), probe);
      // Guest root routes an outside address through the NIC, as a hostile guest would.
      const route = `1.1.1.1/32 via ${GUEST_FORWARD_NIC.host} dev $(ip -o -4 addr show to ${GUEST_FORWARD_NIC.address} | cut -d' ' -f2)`;
      const out = await exec(A, `ip route replace ${route} && node ${path.join(wsA, 'nic-probe.js')}; ip route del 1.1.1.1/32`, 120_000);
      process.stdout.write(`forwarding NIC from the guest: ${out.trim().replace(/\n/g, '; ')}\n`);
      const lines = out.trim().split('\n');
      assert.equal(lines.length, 3, out);
      for (const line of lines) assert.doesNotMatch(line, /answered|closed/, `the guest reached something through the forwarding NIC: ${line}`);
    } finally {
      host.close();
      fs.rmSync(path.join(wsA, 'nic-probe.js'), { force: true });
    }
  });

  test('10,000 listening ports: at most 64 forwards; a port in use on the host and a never-forward port are not taken; the other sandbox and coved answer', { timeout: 20 * 60_000 }, () => withGuestDiagnostics(B, async () => {
    const net = await import('node:net');
    const v6 = net.createServer().listen({ host: '::1', port: IN_USE_V6, ipv6Only: true });
    const v4 = net.createServer((c) => c.end('the host service\n')).listen({ host: '127.0.0.1', port: IN_USE_V4 });
    await Promise.all([v6, v4].map((s) => new Promise((res) => (s.listening ? res(null) : s.once('listening', res)))));
    const logFile = path.join(HOME, 'coved.log');
    const logFrom = fs.statSync(logFile).size;
    const newLog = () => fs.readFileSync(logFile, 'utf8').slice(logFrom);
    const script = path.join(wsA, 'storm.js');
    // A guest process (any container with --network host could do the same) listens on the three
    // probe ports first, then on 10,000 more.
    fs.writeFileSync(
      script,
      `const net = require('net');
const listen = (p) => new Promise((res) => net.createServer((c) => c.end('guest ' + p + '\\n')).on('error', res).listen(p, '0.0.0.0', res));
(async () => {
  for (const p of [${IN_USE_V6}, ${IN_USE_V4}, ${NEVER}]) await listen(p);
  await new Promise((r) => setTimeout(r, 8000));
  for (let i = 0; i < ${STORM_COUNT}; i++) await listen(${STORM_BASE} + i);
  require('fs').writeFileSync(${JSON.stringify(path.join(wsA, 'storm.done'))}, '');
})();
`,
    );
    try {
      const done = path.join(wsA, 'storm.done');
      fs.rmSync(done, { force: true });
      await exec(A, `ulimit -n 65536; nohup /usr/bin/node ${script} > /tmp/storm.log 2>&1 & echo $! > /tmp/storm.pid`);
      // The three probe ports are reported as the guest's port events arrive, one by one: wait for
      // each of them (reading the log as soon as the first appears raced the other two).
      const inUseV6 = `port ${IN_USE_V6}: not forwarded, a host program already listens on it`;
      const inUseV4 = `port ${IN_USE_V4}: not forwarded, a host program already listens on it`;
      const never = `port ${NEVER}: not forwarded automatically (it is on the never-forward list`;
      await waitUntil('coved to refuse the port in use on [::1]', 120_000, async () => newLog().includes(inUseV6), 1000);
      await waitUntil('coved to refuse the port in use on 127.0.0.1', 60_000, async () => newLog().includes(inUseV4), 1000);
      await waitUntil('coved to refuse the never-forward port', 60_000, async () => newLog().includes(never), 1000);

      // While the guest opens 10,000 ports: coved and the other sandbox answer. (The storming guest
      // itself may be too busy for a new SSH session, so its progress is read off the shared folder.)
      const slowest = { ls: 0, exec: 0 };
      const t0 = Date.now();
      while (!fs.existsSync(done) && Date.now() - t0 < 10 * 60_000) {
        let t = Date.now();
        ok(await cove(['ls', '--json'], 60_000), 'cove ls during the storm');
        slowest.ls = Math.max(slowest.ls, Date.now() - t);
        t = Date.now();
        ok(await cove(['exec', B, '--', 'true'], 60_000), `cove exec ${B} during the storm`);
        slowest.exec = Math.max(slowest.exec, Date.now() - t);
      }
      assert.ok(fs.existsSync(done), 'the guest opened its 10,000 ports within 10 minutes');
      await waitUntil('coved to report the cap', 300_000, async () => newLog().includes(`the guest listens on more than ${CAP} ports`), 2000);
      // Let the rest of the port events arrive (500 a second at most).
      await new Promise((r) => setTimeout(r, 25_000));
      const ports = covedListeningPorts().filter((p) => p >= 41_000 && p < STORM_BASE + STORM_COUNT);
      process.stdout.write(`storm: coved listens on ${ports.length} storm ports; slowest cove ls ${slowest.ls} ms, cove exec ${B} ${slowest.exec} ms\n`);
      assert.ok(ports.length <= CAP, `${ports.length} listeners, over the cap of ${CAP}`);
      assert.ok(ports.length >= CAP - 3, `the cap was reached (${ports.length})`);
      assert.ok(!ports.includes(IN_USE_V6) && !ports.includes(IN_USE_V4) && !ports.includes(NEVER));
      assert.equal(newLog().split('\n').filter((l) => l.includes(`more than ${CAP} ports`)).length, 1, 'the cap is reported once');
      assert.ok(slowest.ls < 10_000 && slowest.exec < 30_000, `coved answered slowly: ${JSON.stringify(slowest)}`);
      // The host service on 127.0.0.1 still answers itself, not the guest.
      assert.equal(await new Promise<string>((res) => net.connect({ host: '127.0.0.1', port: IN_USE_V4 }).on('data', (d) => res(d.toString()))), 'the host service\n');
      ok(await docker(`cove-${B}`, ['version', '--format', '{{.Server.Version}}'], 120_000), 'the other sandbox answers docker');
    } finally {
      await cove(['exec', A, '--', 'sh', '-c', 'kill $(cat /tmp/storm.pid) 2>/dev/null; true'], 120_000).catch(() => undefined);
      v6.close();
      v4.close();
      fs.rmSync(script, { force: true });
      fs.rmSync(path.join(wsA, 'storm.done'), { force: true });
    }
  }));
});
