// Sandboxes end to end: a real VM booted by coved through the real `cove` CLI, driven with the host
// docker CLI through the `cove-t1` context, OpenSSH through the sandbox's ssh_config, and curl.
import { strict as assert } from 'node:assert';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { makeBusyboxImage } from '../helpers/busybox-image';
import { guestAslr } from '../../vmm-host/driver/guest-aslr';
import { findQemu, toolVersion } from '../../vmm-host/driver';
import { HOME, SCRATCH, TEST_ROOT, cove, covedPid, docker, ok, resetTestHome, run, testEnv, waitUntil, workspace } from '../helpers/harness';

const CTX = 'cove-t1';
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
let ws = '';
let imageTar = '';
let image = '';

describe('sandbox t1 (restored from the warm-start template, 9p)', { timeout: 45 * 60_000 }, () => {
  before(async () => {
    resetTestHome();
    ws = workspace('t1');
    fs.writeFileSync(path.join(ws, 'hello.txt'), 'hello from the host\n');
    imageTar = path.join(SCRATCH, 'busybox.tar');
    image = makeBusyboxImage(imageTar);
    // An unrelated context that removing the sandbox must leave alone.
    ok(await run('docker', ['context', 'create', 'bystander', '--docker', 'host=unix:///nonexistent.sock'], { timeoutMs: 30_000 }), 'docker context create bystander');
  });

  after(async () => {
    await cove(['rm', '--force', 't1'], 180_000).catch(() => undefined);
    await cove(['rm', '--force', 't2'], 180_000).catch(() => undefined);
    const pid = covedPid();
    if (pid) process.kill(pid, 'SIGTERM');
  });

  test('cove up boots a sandbox and the context reaches the guest dockerd', { timeout: 20 * 60_000 }, async () => {
    const r = ok(await cove(['up', ws, '--name', 't1'], 20 * 60_000), 'cove up');
    assert.match(r.stdout, /Docker context: cove-t1/);
    const host = ok(await run('docker', ['context', 'inspect', CTX, '--format', '{{.Endpoints.docker.Host}}'], { timeoutMs: 30_000 }), 'context inspect');
    assert.equal(host.stdout.trim(), `unix://${path.join(HOME, 'vms', 't1', 'docker.sock')}`);
    const v = ok(await docker(CTX, ['version', '--format', '{{.Server.Version}} {{.Server.Os}}']), 'docker version');
    assert.match(v.stdout.trim(), /^\d+\.\d+\.\d+\S* linux$/, 'the guest server answers through the context');
    const st = fs.statSync(path.join(HOME, 'vms', 't1', 'docker.sock'));
    assert.equal(st.mode & 0o777, 0o600, 'docker.sock is mode 0600');
  });

  test('an image loads through the context and a container runs', async () => {
    ok(await docker(CTX, ['load', '-i', imageTar], 300_000), 'docker load');
    const r = ok(await docker(CTX, ['run', '--rm', image, 'echo', 'container says hi'], 180_000), 'docker run');
    assert.equal(r.stdout.trim(), 'container says hi');
  });

  test('the folder is shared at the same path, byte for byte, both ways', async () => {
    const hostBytes = randomBytes(300_000);
    fs.writeFileSync(path.join(ws, 'from-host.bin'), hostBytes);
    const read = ok(await docker(CTX, ['run', '--rm', '-v', `${ws}:${ws}`, image, 'sh', '-c', `cat ${ws}/hello.txt; sha256sum ${ws}/from-host.bin`], 180_000), 'read through -v');
    assert.match(read.stdout, /hello from the host/);
    assert.match(read.stdout, new RegExp(sha256(hostBytes)));
    const write = ok(
      await docker(CTX, ['run', '--rm', '-v', `${ws}:${ws}`, image, 'sh', '-c', `head -c 200000 /dev/urandom > ${ws}/from-guest.bin && sha256sum ${ws}/from-guest.bin`], 180_000),
      'write through -v',
    );
    const guestSum = write.stdout.trim().split(/\s+/)[0];
    assert.equal(sha256(fs.readFileSync(path.join(ws, 'from-guest.bin'))), guestSum, 'the file the container wrote is on the host, byte for byte');
  });

  test('a published container port answers on host 127.0.0.1 with no manual step', async () => {
    ok(await docker(CTX, ['run', '-d', '--name', 'web', '-p', '8080:80', image, 'httpd', '-f', '-p', '80', '-h', '/www'], 180_000), 'docker run -p');
    const body = await waitUntil('curl 127.0.0.1:8080 to answer', 90_000, async () => {
      const r = await run('curl', ['-sf', '--max-time', '5', 'http://127.0.0.1:8080/'], { timeoutMs: 15_000 });
      return r.code === 0 ? r.stdout : null;
    });
    assert.equal(body, 'hello from cove\n');
    const ports = ok(await cove(['ports', 't1', '--json']), 'cove ports');
    assert.ok((JSON.parse(ports.stdout) as Array<{ hostPort: number }>).some((p) => p.hostPort === 8080));
    ok(await docker(CTX, ['rm', '-f', 'web']), 'docker rm web');
    await waitUntil('port 8080 to be released', 30_000, async () => {
      const r = await run('curl', ['-s', '--max-time', '3', 'http://127.0.0.1:8080/'], { timeoutMs: 10_000 });
      return r.code !== 0;
    });
  });

  test('ten parallel docker runs through the socket all succeed', async () => {
    const runs = await Promise.all(Array.from({ length: 10 }, (_, i) => docker(CTX, ['run', '--rm', image, 'echo', `run-${i}`], 600_000)));
    runs.forEach((r, i) => {
      ok(r, `parallel docker run ${i}`);
      assert.equal(r.stdout.trim(), `run-${i}`);
    });
  });

  test('docker exec -it gets a TTY', async () => {
    ok(await docker(CTX, ['run', '-d', '--name', 'tty', image, 'sleep', '3600'], 180_000), 'docker run tty');
    // `script` gives the docker CLI a terminal, as a person's shell would.
    const r = ok(await run('script', ['-qec', `docker --context ${CTX} exec -it tty sh -c 'tty; echo cols=$(stty size)'`, '/dev/null'], { timeoutMs: 120_000 }), 'docker exec -it');
    assert.match(r.stdout, /\/dev\/pts\/\d+/);
    ok(await docker(CTX, ['rm', '-f', 'tty']), 'docker rm tty');
  });

  test('docker build of a Dockerfile in the folder works', async () => {
    fs.writeFileSync(path.join(ws, 'Dockerfile'), `FROM ${image}\nCOPY hello.txt /hello.txt\nRUN echo built-in-sandbox > /built.txt\n`);
    ok(await docker(CTX, ['build', '-t', 'cove-test/built', ws], 600_000), 'docker build');
    const r = ok(await docker(CTX, ['run', '--rm', 'cove-test/built', 'cat', '/hello.txt', '/built.txt'], 180_000), 'run the built image');
    assert.equal(r.stdout, 'hello from the host\nbuilt-in-sandbox\n');
  });

  test('cove exec propagates the exit code and streams stdin', async () => {
    const r = await cove(['exec', 't1', '--', 'sh', '-c', 'exit 7']);
    assert.equal(r.code, 7, r.stderr);
    const cat = ok(await cove(['exec', 't1', '--', 'sh', '-c', 'pwd; cat'], 60_000, 'piped in\n'), 'cove exec cat');
    assert.equal(cat.stdout, `${ws}\npiped in\n`);
  });

  test('OpenSSH reaches the sandbox with its ssh_config', async () => {
    const cfg = path.join(HOME, 'vms', 't1', 'ssh_config');
    const r = ok(await run('ssh', ['-F', cfg, '-o', 'BatchMode=yes', 'cove-t1', `cat ${ws}/hello.txt`], { timeoutMs: 60_000 }), 'ssh');
    assert.equal(r.stdout, 'hello from the host\n');
  });

  test('cove publish forwards a guest port by hand; cove unpublish takes it back', async () => {
    // A loopback-only listener in the guest is not forwarded automatically; publish does it.
    ok(await docker(CTX, ['run', '-d', '--name', 'lo', '--network', 'host', image, 'httpd', '-f', '-p', '127.0.0.1:7777', '-h', '/www'], 180_000), 'docker run lo');
    ok(await cove(['publish', 't1', '-p', '18777:7777']), 'cove publish');
    const body = await waitUntil('curl 127.0.0.1:18777 to answer', 60_000, async () => {
      const r = await run('curl', ['-sf', '--max-time', '5', 'http://127.0.0.1:18777/'], { timeoutMs: 15_000 });
      return r.code === 0 ? r.stdout : null;
    });
    assert.equal(body, 'hello from cove\n');
    const bad = await cove(['publish', 't1', '-p', '18777']);
    assert.equal(bad.code, 2, 'a malformed port spec is a usage error');
    ok(await cove(['unpublish', 't1', '-p', '18777']), 'cove unpublish');
    const gone = await run('curl', ['-s', '--max-time', '3', 'http://127.0.0.1:18777/'], { timeoutMs: 10_000 });
    assert.notEqual(gone.code, 0, 'the port is closed after unpublish');
    ok(await docker(CTX, ['rm', '-f', 'lo']), 'docker rm lo');
  });

  test('cove cp copies files both ways, and cove logs shows the boot', async () => {
    const src = path.join(TEST_ROOT, 'cp-src.bin');
    const bytes = randomBytes(150_000);
    fs.writeFileSync(src, bytes);
    ok(await cove(['cp', src, 't1:/root/copied.bin']), 'cove cp to the guest');
    const sum = ok(await cove(['exec', 't1', '--', 'sha256sum', '/root/copied.bin']), 'sha256sum in guest');
    assert.equal(sum.stdout.split(/\s+/)[0], sha256(bytes));
    const back = path.join(TEST_ROOT, 'cp-back.bin');
    fs.rmSync(back, { force: true });
    ok(await cove(['cp', 't1:/root/copied.bin', back]), 'cove cp from the guest');
    assert.ok(fs.readFileSync(back).equals(bytes), 'the round trip is byte for byte');
    const outPort = ok(await cove(['exec', 't1', '--', 'grep', '-c', 'stdout: the stdin port', '/var/log/cove/cove-agent.log']), 'the agent log');
    assert.ok(Number(outPort.stdout.trim()) >= 1, 'the copy from the guest came over the stdin port as stdout');
    // One file goes by a single command over an exec stream (its stdin on the stdin port), without
    // SFTP; mode and times are kept. The small one above went the same way.
    const large = path.join(TEST_ROOT, 'cp-large.bin');
    const largeBytes = randomBytes(3 * 1024 * 1024);
    fs.writeFileSync(large, largeBytes);
    fs.chmodSync(large, 0o640);
    fs.utimesSync(large, new Date('2021-05-05T00:00:00Z'), new Date('2021-05-05T00:00:00Z'));
    ok(await cove(['cp', large, 't1:/root/']), 'cove cp of a 3 MiB file');
    const st = ok(await cove(['exec', 't1', '--', 'sh', '-c', 'sha256sum /root/cp-large.bin; stat -c "%a %Y" /root/cp-large.bin; ls -a /root | grep -c "^.cove-cp-"; grep -c "(stdin: the stdin port)" /var/log/cove/cove-agent.log']), 'check it in the guest');
    const [sumLine, statLine, temps, viaPort] = st.stdout.trim().split('\n');
    assert.equal(sumLine.split(/\s+/)[0], sha256(largeBytes));
    assert.equal(statLine, `640 ${Date.parse('2021-05-05T00:00:00Z') / 1000}`);
    assert.equal(temps, '0', 'no temporary file is left');
    assert.ok(Number(viaPort) >= 1, `its content went over an exec with the stdin port: ${st.stdout}`);
    // In a folder, SFTP makes the files and a large one's content goes by `cat` on an exec stream.
    const tree = path.join(TEST_ROOT, 'cp-tree');
    fs.rmSync(tree, { recursive: true, force: true });
    fs.mkdirSync(path.join(tree, 'sub'), { recursive: true });
    fs.copyFileSync(large, path.join(tree, 'sub', 'large.bin'));
    fs.writeFileSync(path.join(tree, 'small.txt'), 'small\n');
    ok(await cove(['cp', tree, 't1:/root/']), 'cove cp of a folder with a 3 MiB file');
    const treeSums = ok(await cove(['exec', 't1', '--', 'sh', '-c', 'cd /root/cp-tree && sha256sum sub/large.bin small.txt && (ls -a sub | grep -c "^.cove-cp-"; true)']), 'check the folder');
    const [largeSum, smallSum, treeTemps] = treeSums.stdout.trim().split('\n');
    assert.equal(largeSum.split(/\s+/)[0], sha256(largeBytes));
    assert.equal(smallSum.split(/\s+/)[0], sha256(Buffer.from('small\n')));
    assert.equal(treeTemps, '0', 'no temporary file is left in the folder');
    const both = await cove(['cp', 't1:/a', 't1:/b']);
    assert.equal(both.code, 2, 'guest-to-guest is refused as usage');
    const logs = ok(await cove(['logs', 't1']), 'cove logs');
    assert.match(logs.stdout, /cove: ready/);
    const doctor = await cove(['doctor', '--json']);
    const d = JSON.parse(doctor.stdout) as { accel: string; checks: Array<{ name: string; ok: boolean }> };
    assert.ok(d.accel === 'tcg' || d.accel === 'kvm');
    assert.ok(d.checks.find((c) => c.name === 'qemu')?.ok, 'doctor finds qemu');
    if (d.accel === 'tcg') assert.equal(d.checks.find((c) => c.name === 'TCG translation cache')?.ok, true, "doctor: QEMU's own translation cache size, nothing to warn of");

    // Address randomization: what this host's accelerator and QEMU call for, written by the clone's
    // rebirth, and the same in a container (the setting is the guest kernel's).
    const aslrCheck = d.checks.find((c) => c.name === 'guest address randomization') as { ok: boolean; detail: string } | undefined;
    assert.ok(aslrCheck?.ok, `doctor reports guest address randomization: ${JSON.stringify(aslrCheck)}`);
    const qemuLine = toolVersion(findQemu(testEnv()));
    const expected = guestAslr(d.accel, qemuLine, testEnv()) ? '2' : '0';
    assert.match(aslrCheck.detail, expected === '2' ? /^on\b/ : /^off\b/, `${d.accel} on ${qemuLine}`);
    const inGuest = ok(await cove(['exec', 't1', '--', 'cat', '/proc/sys/kernel/randomize_va_space']), 'read the sysctl');
    assert.equal(inGuest.stdout.trim(), expected, `the clone's kernel.randomize_va_space (${d.accel}, ${qemuLine})`);
    const inContainer = ok(await docker(CTX, ['run', '--rm', image, 'cat', '/proc/sys/kernel/randomize_va_space'], 180_000), 'read it in a container');
    assert.equal(inContainer.stdout.trim(), expected);
    const agentSaid = ok(await cove(['exec', 't1', '--', 'grep', '-c', `rebirth: address randomization: /proc/sys/kernel/randomize_va_space = ${expected}`, '/var/log/cove/cove-agent.log']), 'the agent log');
    assert.equal(agentSaid.stdout.trim(), '1', 'the rebirth set it');

    // The rebirth set the kernel's hostname without hostname(1), the reseed went to the one perl
    // helper the template's agent started (none was started for this clone), and the agent runs
    // without TurboFan for small functions (cove-init; docs/memory.md).
    const names = ok(await cove(['exec', 't1', '--', 'sh', '-c', 'hostname; cat /etc/hostname; pgrep -c -x perl; tr "\\0" " " < /proc/$(cat /run/cove/cove-agent.pid)/cmdline']), 'hostname, the perl helper, the agent');
    assert.deepEqual(names.stdout.trim().split('\n'), ['t1', 't1', '1', 'node --max-bytecode-size-for-early-opt=0 /opt/cove/agent.js']);
  });

  test('a named volume survives cove stop and cove start', async () => {
    ok(await docker(CTX, ['volume', 'create', 'keepme']), 'volume create');
    ok(await docker(CTX, ['run', '--rm', '-v', 'keepme:/data', image, 'sh', '-c', 'echo persisted > /data/f'], 180_000), 'write volume');
    ok(await cove(['stop', 't1'], 180_000), 'cove stop');
    const stopped = ok(await cove(['inspect', 't1', '--json']), 'inspect');
    assert.equal((JSON.parse(stopped.stdout) as { state: string }).state, 'stopped');
    const down = await docker(CTX, ['ps'], 30_000);
    assert.notEqual(down.code, 0, 'docker fails while the sandbox is stopped');
    assert.match(down.stderr, /sandbox t1 is stopped/, 'and says why');
    ok(await cove(['start', 't1'], 15 * 60_000), 'cove start');
    const r = ok(await docker(CTX, ['run', '--rm', '-v', 'keepme:/data', image, 'cat', '/data/f'], 180_000), 'read volume');
    assert.equal(r.stdout, 'persisted\n');
  });

  test('kill -9 of coved: the VM keeps running and a new coved re-attaches', async () => {
    ok(await docker(CTX, ['run', '-d', '--name', 'survivor', image, 'sleep', '3600'], 180_000), 'docker run survivor');
    const pid = covedPid();
    assert.ok(pid, 'coved is running');
    process.kill(pid, 'SIGKILL');
    await waitUntil('coved to be gone', 10_000, async () => {
      try {
        process.kill(pid, 0);
        return false;
      } catch {
        return true;
      }
    });
    ok(await cove(['ls']), 'cove ls starts coved again');
    assert.notEqual(covedPid(), pid);
    const ps = ok(await docker(CTX, ['ps', '--format', '{{.Names}}'], 120_000), 'docker ps after the restart');
    assert.match(ps.stdout, /survivor/);
  });

  test('a 9p sandbox shares its folder too', { timeout: 20 * 60_000 }, async () => {
    const ws2 = workspace('t2');
    const bytes = randomBytes(100_000);
    fs.writeFileSync(path.join(ws2, 'in.bin'), bytes);
    ok(await cove(['up', ws2, '--name', 't2', '--mount-type', '9p'], 15 * 60_000), 'cove up --mount-type 9p');
    const info = JSON.parse(ok(await cove(['inspect', 't2', '--json']), 'inspect t2').stdout) as { mount: string };
    assert.equal(info.mount, '9p');
    ok(await docker('cove-t2', ['load', '-i', imageTar], 300_000), 'docker load into t2');
    const r = ok(
      await docker('cove-t2', ['run', '--rm', '-v', `${ws2}:${ws2}`, image, 'sh', '-c', `sha256sum ${ws2}/in.bin; echo written-over-9p > ${ws2}/out.txt`], 180_000),
      'docker run over 9p',
    );
    assert.match(r.stdout, new RegExp(sha256(bytes)));
    assert.equal(fs.readFileSync(path.join(ws2, 'out.txt'), 'utf8'), 'written-over-9p\n');
    ok(await cove(['rm', '--force', 't2'], 180_000), 'cove rm t2');
    assert.ok(fs.existsSync(path.join(ws2, 'in.bin')), 'the workspace is untouched');
  });

  test('cove rm removes the sandbox folder and its context, and nothing else', async () => {
    const refused = await cove(['rm', 't1']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /is running/);
    assert.match(refused.stderr, /hint: .*cove stop t1/);
    ok(await cove(['rm', '--force', 't1'], 180_000), 'cove rm --force');
    assert.ok(!fs.existsSync(path.join(HOME, 'vms', 't1')), 'the sandbox folder is gone');
    const ctx = await run('docker', ['context', 'inspect', CTX], { timeoutMs: 30_000, env: testEnv() });
    assert.notEqual(ctx.code, 0, 'the context is gone');
    ok(await run('docker', ['context', 'inspect', 'bystander'], { timeoutMs: 30_000 }), 'the unrelated context is still there');
    assert.equal(fs.readFileSync(path.join(ws, 'hello.txt'), 'utf8'), 'hello from the host\n', 'workspace files are untouched');
    assert.ok(fs.existsSync(path.join(ws, 'from-guest.bin')));
  });
});
