// Faults, hostile input and isolation, each injected for real on a booted sandbox: the sandbox
// recovers (or says clearly that it cannot), and workspace files and Docker volumes are intact.
// docs/reliability.md lists each case and points here.
import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { GUEST_NETWORK } from '../../contract/guest';
import { makeBusyboxImage } from '../helpers/busybox-image';
import { HOME, SCRATCH, TEST_ROOT, cove, covedPid, docker, ok, resetTestHome, run, waitUntil, withGuestDiagnostics, workspace } from '../helpers/harness';

const NAME = 'f1';
/** A host port the sandbox is allowed to reach (at the guest's own 127.0.0.1). */
const ALLOWED_PORT = 18555;
const CTX = `cove-${NAME}`;
const VMDIR = path.join(HOME, 'vms', NAME);
let ws = '';
let imageTar = '';
let image = '';

const pidOf = (file: string) => Number(fs.readFileSync(path.join(VMDIR, file), 'utf8').trim());
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};
const inspect = async (name = NAME) => JSON.parse(ok(await cove(['inspect', name, '--json']), `cove inspect ${name}`).stdout) as {
  state: string;
  problem?: string;
  consoleTail?: string;
  pids: { qemu: number | null; virtiofsd: number | null };
};

/** Starts a container that appends a line to a workspace file every 0.2 s, and checks it grows. */
async function startWriter(): Promise<void> {
  ok(await docker(CTX, ['run', '-d', '--name', 'writer', '-v', `${ws}:${ws}`, image, 'sh', '-c', `i=0; while true; do i=$((i+1)); echo line-$i >> ${ws}/writer.log; sleep 0.2; done`], 180_000), 'docker run writer');
  await waitUntil('the writer to write through the mount', 60_000, async () => fs.existsSync(path.join(ws, 'writer.log')) && fs.statSync(path.join(ws, 'writer.log')).size > 0);
}

/** Every line the writer wrote is whole and in order: nothing lost or torn on the host. */
function checkWriterLog(): number {
  const lines = fs.readFileSync(path.join(ws, 'writer.log'), 'utf8').split('\n').filter((l) => l !== '');
  lines.forEach((l, i) => assert.equal(l, `line-${i + 1}`, `writer.log line ${i + 1} is intact`));
  return lines.length;
}

/** A test on the running sandbox: its failure report carries coved's, the console's and the guest's logs. */
function vmTest(name: string, opts: { timeout?: number }, body: () => Promise<void>): void {
  void test(name, opts, () => withGuestDiagnostics(NAME, body));
}

async function dockerWorksWithin(ms: number, what: string): Promise<number> {
  const t0 = Date.now();
  await waitUntil(what, ms, async () => (await docker(CTX, ['ps'], 30_000)).code === 0, 1000);
  return (Date.now() - t0) / 1000;
}

describe('faults, hostile input and isolation', { timeout: 60 * 60_000 }, () => {
  before(async () => {
    resetTestHome();
    ws = workspace(NAME);
    fs.writeFileSync(path.join(ws, 'keep.txt'), 'workspace file that must survive\n');
    imageTar = path.join(SCRATCH, 'busybox.tar');
    image = makeBusyboxImage(imageTar);
  });

  after(async () => {
    for (const n of [NAME, 'f2']) await cove(['rm', '--force', n], 180_000).catch(() => undefined);
    const pid = covedPid();
    if (pid) process.kill(pid, 'SIGTERM');
  });

  test('hostile names and folders get a clear error and create nothing', async () => {
    const file = path.join(TEST_ROOT, 'a-file');
    fs.writeFileSync(file, 'x');
    const cases: Array<[string[], RegExp]> = [
      [['up', '/nonexistent/folder', '--name', 'h1'], /does not exist/],
      [['up', file, '--name', 'h1'], /is not a folder/],
      [['up', '/', '--name', 'h1'], /whole host file system/],
      [['up', ws, '--name', '../x'], /not allowed/],
      [['up', ws, '--name', 'a/b'], /not allowed/],
      [['up', ws, '--name', 'x'.repeat(300)], /300 characters/],
      [['up', ws, '--name', 'ünï'], /not allowed/],
      [['up', ws, '--name', 'a;touch /tmp/cove-pwned'], /not allowed/],
      [['up', ws, '--name', ''], /empty/],
      [['up', ws, '--memory', 'lots'], /size/],
      [['up', ws, '--cpus', '-1'], /cpus|option/],
      [['up', ws, '--mount-type', 'nfs'], /virtiofs or 9p/],
      [['up', HOME], /Cove's own state/],
      [['inspect', 'ghost'], /no sandbox named ghost/],
      [['frobnicate'], /unknown command/],
    ];
    for (const [args, pattern] of cases) {
      const r = await cove(args);
      assert.notEqual(r.code, 0, `cove ${args.join(' ')} fails`);
      assert.match(r.stderr, pattern, `cove ${args.join(' ')} says why`);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    }
    assert.ok(!fs.existsSync('/tmp/cove-pwned'));
    const vms = path.join(HOME, 'vms');
    assert.deepEqual(fs.existsSync(vms) ? fs.readdirSync(vms) : [], [], 'no sandbox folder was made');
  });

  test('two clients creating the same sandbox at once get one sandbox', { timeout: 25 * 60_000 }, async () => {
    // virtio-fs on purpose: QEMU 7.2 cannot save it, so this sandbox boots cold (the run's one cold
    // boot through coved), and the virtiofsd faults below have a virtiofsd to kill.
    const args = ['up', ws, '--name', NAME, '--mount-type', 'virtiofs', '--disk', '8G', '--allow-host-port', String(ALLOWED_PORT)];
    const [a, b] = await Promise.all([cove(args, 20 * 60_000), cove(args, 20 * 60_000)]);
    ok(a, 'first cove up');
    ok(b, 'second cove up');
    const list = JSON.parse(ok(await cove(['ls', '--json']), 'cove ls').stdout) as Array<{ name: string; state: string }>;
    assert.deepEqual(list.map((s) => [s.name, s.state]), [[NAME, 'running']]);
    ok(await docker(CTX, ['load', '-i', imageTar], 300_000), 'docker load');
  });

  test("sockets are 0600 in 0700 folders, and nothing listens on TCP but published ports and qemu's forwards of them, on 127.0.0.1", async () => {
    const walk = (dir: string): string[] =>
      fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(dir, e.name)) : e.isSocket() ? [path.join(dir, e.name)] : []));
    // coved's own socket and everything in this sandbox's folder (other tests' VMs are not ours).
    const sockets = [path.join(HOME, 'coved.sock'), ...walk(VMDIR)];
    assert.ok(sockets.length >= 6, `found ${sockets.length} sockets`);
    for (const s of sockets) {
      assert.equal(fs.statSync(s).mode & 0o077, 0, `${s} is not open to others`);
      assert.equal(fs.statSync(path.dirname(s)).mode & 0o077, 0, `${path.dirname(s)} is not open to others`);
    }
    const ours = () => [covedPid(), ...['qemu.pid', 'virtiofsd.pid'].map((f) => (fs.existsSync(path.join(VMDIR, f)) ? pidOf(f) : null))].filter((p): p is number => !!p);
    const listeners = async () => {
      const r = ok(await run('ss', ['-ltnpH'], { timeoutMs: 10_000 }), 'ss -ltnp');
      return r.stdout.split('\n').filter((l) => ours().some((p) => l.includes(`pid=${p},`))).map((l) => l.trim().split(/\s+/)[3]);
    };
    assert.deepEqual(await listeners(), [], 'no TCP listener before any port is published');
    ok(await docker(CTX, ['run', '-d', '--name', 'pub', '-p', '8181:80', image, 'httpd', '-f', '-p', '80', '-h', '/www'], 180_000), 'docker run -p');
    const after = await waitUntil('the published port to be forwarded', 60_000, async () => {
      const l = await listeners();
      return l.length > 0 ? l : null;
    });
    assert.deepEqual(after, ['127.0.0.1:8181'], 'only the published port, only on 127.0.0.1');
    // A connection through it makes qemu's forward on the forwarding NIC: on 127.0.0.1 too.
    await waitUntil('the published port to answer', 120_000, async () => (await run('curl', ['-s', '-o', '/dev/null', '--max-time', '30', 'http://127.0.0.1:8181/'], { timeoutMs: 60_000 })).code === 0, 2000);
    const withNic = await listeners();
    assert.equal(withNic.length, 2, `coved's listener and qemu's forward: ${withNic.join(', ')}`);
    for (const l of withNic) assert.match(l, /^127\.0\.0\.1:\d+$/, 'every listener is on 127.0.0.1');
  });

  test('a client without the pinned key is refused by the agent', async () => {
    const key = path.join(TEST_ROOT, 'stranger_key');
    fs.rmSync(key, { force: true });
    fs.rmSync(`${key}.pub`, { force: true });
    ok(await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key], { timeoutMs: 30_000 }), 'ssh-keygen');
    // The sandbox's own ssh_config, with the stranger's key in place of the sandbox key.
    const cfgText = fs.readFileSync(path.join(VMDIR, 'ssh_config'), 'utf8').replace(/^\s*IdentityFile .*$/m, `  IdentityFile ${key}`);
    const strangerCfg = path.join(TEST_ROOT, 'stranger_ssh_config');
    fs.writeFileSync(strangerCfg, cfgText);
    const refused = await run('ssh', ['-F', strangerCfg, '-o', 'BatchMode=yes', `cove-${NAME}`, 'true'], { timeoutMs: 60_000 });
    assert.equal(refused.code, 255, refused.stderr);
    assert.match(refused.stderr, /Permission denied/);
  });

  vmTest('kill -9 of the agent: it is restarted and docker works again within seconds', {}, async () => {
    await startWriter();
    const before = checkWriterLog();
    // The exec that kills the agent runs under it, so its own session ends with it.
    await cove(['exec', NAME, '--', 'sh', '-c', 'kill -9 $(cat /run/cove/cove-agent.pid)'], 60_000);
    const seconds = await dockerWorksWithin(60_000, 'docker ps through the context after the agent was killed');
    process.stdout.write(`# docker answered ${seconds.toFixed(1)} s after the agent was killed\n`);
    const ps = ok(await docker(CTX, ['ps', '--format', '{{.Names}}']), 'docker ps');
    assert.match(ps.stdout, /writer/, 'the container kept running');
    assert.ok(checkWriterLog() >= before, 'the workspace file is intact and still growing');
  });

  vmTest('kill -9 of dockerd: restarted with back-off, restart-always containers return, volumes intact', {}, async () => {
    ok(await docker(CTX, ['volume', 'create', 'precious']), 'volume create');
    ok(await docker(CTX, ['run', '--rm', '-v', 'precious:/data', image, 'sh', '-c', 'echo treasure > /data/t'], 180_000), 'fill volume');
    ok(await docker(CTX, ['run', '-d', '--restart', 'always', '--name', 'phoenix', image, 'sleep', '3600'], 180_000), 'restart-always container');
    ok(await cove(['exec', NAME, '--', 'sh', '-c', 'kill -9 $(cat /run/cove/dockerd.pid)']), 'kill dockerd');
    await waitUntil('the restart-always container to be up again', 240_000, async () => {
      const r = await docker(CTX, ['ps', '--filter', 'name=phoenix', '--format', '{{.Status}}'], 30_000);
      return r.code === 0 && /^Up/.test(r.stdout.trim());
    }, 2000);
    const logs = ok(await cove(['logs', NAME]), 'cove logs');
    assert.match(logs.stdout, /service dockerd exited 137, restart in \d+s/);
    const v = ok(await docker(CTX, ['run', '--rm', '-v', 'precious:/data', image, 'cat', '/data/t'], 180_000), 'read volume');
    assert.equal(v.stdout, 'treasure\n');
  });

  vmTest('the VM stalls for 60 s (SIGSTOP): afterwards the socket and forwarded ports work without user action', { timeout: 10 * 60_000 }, async () => {
    ok(await docker(CTX, ['run', '-d', '--name', 'stallweb', '-p', '8282:80', image, 'httpd', '-f', '-p', '80', '-h', '/www'], 180_000), 'docker run -p 8282');
    const curl = async () => (await run('curl', ['-sf', '--max-time', '10', 'http://127.0.0.1:8282/'], { timeoutMs: 20_000 })).stdout;
    assert.equal(await waitUntil('the forwarded port before the stall', 60_000, curl), 'hello from cove\n');
    const qemu = pidOf('qemu.pid');
    process.kill(qemu, 'SIGSTOP');
    try {
      await new Promise((r) => setTimeout(r, 60_000));
    } finally {
      process.kill(qemu, 'SIGCONT');
    }
    const seconds = await dockerWorksWithin(120_000, 'docker ps after SIGCONT');
    assert.equal(await waitUntil('the forwarded port after the stall', 120_000, curl), 'hello from cove\n');
    process.stdout.write(`# docker answered ${seconds.toFixed(1)} s after SIGCONT\n`);
    assert.equal((await inspect()).state, 'running');
  });

  vmTest('kill -9 of virtiofsd: reported clearly; a restart restores the mount', { timeout: 15 * 60_000 }, async () => {
    const vfs = pidOf('virtiofsd.pid');
    process.kill(vfs, 'SIGKILL');
    const info = await waitUntil('cove inspect to report the dead virtiofsd', 30_000, async () => {
      const i = await inspect();
      return i.problem && /virtiofsd/.test(i.problem) ? i : null;
    });
    assert.match(info.problem ?? '', /cove stop.*cove start/, 'the report says what to do');
    assert.equal(fs.readFileSync(path.join(ws, 'keep.txt'), 'utf8'), 'workspace file that must survive\n');
    checkWriterLog();
    ok(await cove(['stop', NAME], 300_000), 'cove stop');
    ok(await cove(['start', NAME], 15 * 60_000), 'cove start');
    const r = ok(await docker(CTX, ['run', '--rm', '-v', `${ws}:${ws}`, image, 'cat', `${ws}/keep.txt`], 180_000), 'read through the mount after restart');
    assert.equal(r.stdout, 'workspace file that must survive\n');
    assert.equal((await inspect()).problem, undefined, 'the problem is cleared');
  });

  vmTest('kill -9 of qemu: shown as crashed with the console tail; cove start brings it back with its Docker data', { timeout: 15 * 60_000 }, async () => {
    process.kill(pidOf('qemu.pid'), 'SIGKILL');
    const info = await waitUntil('the sandbox to show as crashed', 30_000, async () => {
      const i = await inspect();
      return i.state === 'crashed' ? i : null;
    });
    assert.ok((info.consoleTail ?? '').includes('cove:'), 'the console tail is shown');
    assert.match(info.problem ?? '', /exited unexpectedly/);
    const down = await docker(CTX, ['ps'], 30_000);
    assert.notEqual(down.code, 0);
    assert.match(down.stderr, /crashed/, 'docker says the sandbox crashed');
    const vfs = info.pids.virtiofsd;
    if (vfs) await waitUntil('virtiofsd of the crashed VM to exit', 30_000, async () => !alive(vfs));
    ok(await cove(['start', NAME], 15 * 60_000), 'cove start');
    const v = ok(await docker(CTX, ['run', '--rm', '-v', 'precious:/data', image, 'cat', '/data/t'], 180_000), 'read volume after the crash');
    assert.equal(v.stdout, 'treasure\n');
    assert.equal(fs.readFileSync(path.join(ws, 'keep.txt'), 'utf8'), 'workspace file that must survive\n');
  });

  vmTest('the guest disk fills up: a clear error, and docker works again after cleanup', { timeout: 15 * 60_000 }, async () => {
    // Reserve what is free at once (fallocate), then write out whatever is left.
    const fillScript = "avail=$(df -k / | awk 'NR==2 {print $4}'); fallocate -l $((avail * 1024 - 4096)) /big; dd if=/dev/zero of=/big2 bs=1M 2>/dev/null; df -h /; exit 0";
    const fill = await docker(CTX, ['run', '--name', 'filler', image, 'sh', '-c', fillScript], 600_000);
    assert.equal(fill.code, 0, fill.stderr);
    const full = await docker(CTX, ['run', '--rm', image, 'sh', '-c', 'dd if=/dev/zero of=/x bs=1M count=64 && echo wrote'], 180_000);
    // Either docker cannot create the container or the write inside it fails: both name the cause.
    assert.ok(full.code !== 0 || !/wrote/.test(full.stdout), 'a write on a full disk does not succeed');
    assert.match(full.stderr + full.stdout, /no space left on device/i);
    ok(await docker(CTX, ['rm', '-f', 'filler'], 180_000), 'docker rm filler');
    const r = ok(await docker(CTX, ['run', '--rm', image, 'sh', '-c', 'dd if=/dev/zero of=/x bs=1M count=16 2>/dev/null && echo wrote'], 180_000), 'docker after cleanup');
    assert.equal(r.stdout.trim(), 'wrote');
  });

  test('a --privileged container reaches no host file outside the shared folder, nor coved', async () => {
    const secretName = `cove-secret-${randomBytes(6).toString('hex')}`;
    const secret = path.join(path.dirname(ws), secretName);
    fs.writeFileSync(secret, 'host secret\n');
    // The probe binds the guest's own / on purpose, which the bind guard (a guard against a mistake,
    // not the boundary under test here) refuses: off for this test, on again after.
    ok(await cove(['up', ws, '--name', NAME, '--bind-guard', 'off'], 180_000), 'bind guard off');
    try {
      const script = [
        `cat ${ws}/../${secretName} 2>/dev/null && echo LEAK-traversal`,
        `cat /proc/1/root${ws}/../${secretName} 2>/dev/null && echo LEAK-proc`,
        `mkdir -p /m && (mount -t virtiofs cove-ws /m 2>/dev/null || mount -t 9p -o trans=virtio cove-ws /m 2>/dev/null); cat /m/../${secretName} 2>/dev/null && echo LEAK-remount`,
        `find /host -xdev -name '${secretName}' 2>/dev/null | grep -q . && echo LEAK-find`,
        `ls /host${path.dirname(HOME)} 2>/dev/null | grep -q . && ls -la /host${HOME} 2>/dev/null | grep -q coved && echo LEAK-coved`,
        `cat ${ws}/keep.txt >/dev/null && echo SHARED-OK`,
      ].join('; ');
      const r = ok(await docker(CTX, ['run', '--rm', '--privileged', '--pid', 'host', '-v', '/:/host', '-v', `${ws}:${ws}`, image, 'sh', '-c', script], 300_000), 'privileged probe');
      assert.doesNotMatch(r.stdout, /LEAK/, r.stdout);
      assert.match(r.stdout, /SHARED-OK/, 'the shared folder itself is readable');
    } finally {
      fs.rmSync(secret, { force: true });
      ok(await cove(['up', ws, '--name', NAME, '--bind-guard', 'on'], 180_000), 'bind guard on again');
    }
  });

  test("a service on the host's 127.0.0.1 is out of the guest's reach; an allowed port is reachable", async () => {
    const server = net.createServer((c) => c.end('host-loopback-secret\n'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as net.AddressInfo).port;
    const allowed = net.createServer((c) => c.end('allowed-host-service\n'));
    await new Promise<void>((r) => allowed.listen(ALLOWED_PORT, '127.0.0.1', () => r()));
    try {
      const probe = `nc -w 5 ${GUEST_NETWORK.gateway} ${port} </dev/null; nc -w 5 ${GUEST_NETWORK.dns} ${port} </dev/null; echo probed`;
      for (const mode of [[], ['--network', 'host']]) {
        const r = ok(await docker(CTX, ['run', '--rm', '--privileged', ...mode, image, 'sh', '-c', probe], 180_000), `probe ${mode.join(' ') || 'bridge'}`);
        assert.match(r.stdout, /probed/);
        assert.doesNotMatch(r.stdout, /host-loopback-secret/, `a ${mode.join(' ') || 'bridge'} container reached the host's loopback`);
      }
      const info = JSON.parse(ok(await cove(['inspect', NAME, '--json']), 'inspect').stdout) as { network: string; allowHostPorts: number[] };
      assert.equal(info.network, 'passt');
      assert.deepEqual(info.allowHostPorts, [ALLOWED_PORT]);
      // The allowed port is at the guest's own loopback (as a registry at localhost:PORT would be).
      const r = ok(await docker(CTX, ['run', '--rm', '--network', 'host', image, 'sh', '-c', `nc -w 5 127.0.0.1 ${ALLOWED_PORT} </dev/null; nc -w 5 127.0.0.1 ${port} </dev/null; echo probed`], 180_000), 'allowed probe');
      assert.match(r.stdout, /allowed-host-service/);
      assert.doesNotMatch(r.stdout, /host-loopback-secret/, 'only the allowed port');
    } finally {
      server.close();
      allowed.close();
    }
  });

  test('a read-only folder: writes fail in the guest, even from a privileged container, and the host file is unchanged', { timeout: 20 * 60_000 }, async () => {
    const ro = workspace('f2');
    fs.writeFileSync(path.join(ro, 'ro.txt'), 'original\n');
    ok(await cove(['up', ro, '--name', 'f2', '--readonly'], 15 * 60_000), 'cove up --readonly');
    ok(await docker('cove-f2', ['load', '-i', imageTar], 300_000), 'docker load f2');
    const r = await docker(
      'cove-f2',
      ['run', '--rm', '--privileged', '-v', `${ro}:${ro}`, image, 'sh', '-c', `echo changed > ${ro}/ro.txt && echo WROTE; mount -o remount,rw ${ro} 2>/dev/null; echo changed > ${ro}/ro.txt && echo WROTE-AFTER-REMOUNT; touch ${ro}/new && echo CREATED; exit 0`],
      300_000,
    );
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout, /WROTE|CREATED/, r.stdout);
    assert.equal(fs.readFileSync(path.join(ro, 'ro.txt'), 'utf8'), 'original\n');
    assert.ok(!fs.existsSync(path.join(ro, 'new')));
    ok(await cove(['rm', '--force', 'f2'], 180_000), 'cove rm f2');
  });

  vmTest('every fault left the workspace and the sandbox whole', {}, async () => {
    assert.equal(fs.readFileSync(path.join(ws, 'keep.txt'), 'utf8'), 'workspace file that must survive\n');
    checkWriterLog();
    assert.equal((await inspect()).state, 'running');
  });

  // Last: it ends the sandbox (the way back, `cove start`, is the kill -9 of qemu case's).
  vmTest('a guest kernel crash ends the VM at once: crashed, with the kernel\'s own line', { timeout: 5 * 60_000 }, async () => {
    const oops = ok(await cove(['exec', NAME, '--', 'cat', '/proc/sys/kernel/panic_on_oops'], 120_000), 'read panic_on_oops');
    assert.equal(oops.stdout.trim(), '1', 'an oops becomes a panic (oops=panic), so no half-alive guest is left');
    // The exec cannot finish: the VM is gone under it.
    await cove(['exec', NAME, '--', 'sh', '-c', 'echo c > /proc/sysrq-trigger'], 60_000).catch(() => undefined);
    const info = await waitUntil('the sandbox to show as crashed', 60_000, async () => {
      const i = await inspect();
      return i.state === 'crashed' ? i : null;
    });
    assert.match(info.problem ?? '', /^the guest kernel crashed: Kernel panic - not syncing: sysrq triggered crash/);
    const down = await docker(CTX, ['ps'], 30_000);
    assert.notEqual(down.code, 0);
    assert.match(down.stderr, /guest kernel crashed/, 'docker says why');
  });
});
