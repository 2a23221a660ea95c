// Warm start and sleep (docs/warm-start.md), end to end with real clients: new sandboxes restored
// from the image's template, put to sleep and woken by the docker CLI and by curl on a forwarded
// port, paused when idle, and every way a saved state can be wrong falling back to a cold boot.
import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { makeBusyboxImage } from '../helpers/busybox-image';
import { HOME, SCRATCH, cove, covedPid, docker, ok, processesOf, resetTestHome, run, waitUntil, workspace } from '../helpers/harness';

interface Info {
  name: string;
  state: string;
  bootKind: string | null;
  warmNote?: string;
  workspace: string;
  mount: string;
  dir: string;
  image: string;
  pids: { qemu: number | null; passt: number | null };
}

const inspect = async (name: string): Promise<Info> => JSON.parse(ok(await cove(['inspect', name, '--json']), `cove inspect ${name}`).stdout) as Info;
const list = async (): Promise<Info[]> => JSON.parse(ok(await cove(['ls', '--json']), 'cove ls').stdout) as Info[];
const exec = async (name: string, script: string) => ok(await cove(['exec', name, '--', 'sh', '-c', script], 180_000), `cove exec ${name}`).stdout;
const fingerprint = (knownHosts: string) => createHash('sha256').update(fs.readFileSync(knownHosts, 'utf8').trim().split(/\s+/)[2]).digest('hex');

/** The template folder a sandbox was made from. */
function templateDirOf(info: Info): string {
  const config = JSON.parse(fs.readFileSync(path.join(info.dir, 'config.json'), 'utf8')) as { template?: string };
  assert.ok(config.template, `${info.name} was made from a template`);
  return path.join(HOME, 'images', info.image, 'templates', config.template);
}

describe('warm start and sleep', { timeout: 60 * 60_000 }, () => {
  let wsA = '';
  let wsB = '';
  let nameA = '';
  let imageTar = '';
  let image = '';

  before(() => {
    resetTestHome();
    wsA = workspace('warm-a');
    wsB = workspace('warm-b');
    fs.writeFileSync(path.join(wsA, 'only-a.txt'), 'a\n');
    fs.writeFileSync(path.join(wsB, 'only-b.txt'), 'b\n');
    imageTar = path.join(SCRATCH, 'busybox-warm.tar');
    image = makeBusyboxImage(imageTar);
  });

  after(async () => {
    for (const s of await list().catch(() => [])) await cove(['rm', '--force', s.name], 180_000).catch(() => undefined);
    const pid = covedPid();
    if (pid) process.kill(pid, 'SIGTERM');
  });

  test('two sandboxes restored from one template differ in host key, hostname and RNG, and each sees only its own folder', { timeout: 25 * 60_000 }, async () => {
    // Two `up` requests for one folder without a name (what the extension sends) make one sandbox.
    const [a1, a2] = await Promise.all([cove(['up', wsA], 20 * 60_000), cove(['up', wsA], 20 * 60_000)]);
    ok(a1, 'first cove up A');
    ok(a2, 'second cove up A');
    ok(await cove(['up', wsB, '--name', 'wb'], 20 * 60_000), 'cove up B');
    const all = await list();
    assert.equal(all.filter((s) => s.workspace === wsA).length, 1, `one sandbox for ${wsA}: ${JSON.stringify(all.map((s) => s.name))}`);
    nameA = all.find((s) => s.workspace === wsA)!.name;
    const a = await inspect(nameA);
    const b = await inspect('wb');
    assert.equal(a.bootKind, 'template', `A was restored from the template (${a.warmNote ?? ''})`);
    assert.equal(b.bootKind, 'template', `B was restored from the template (${b.warmNote ?? ''})`);
    assert.equal(templateDirOf(a), templateDirOf(b), 'both from the same template');
    // Host keys: each its own, neither the template's. OpenSSH through ssh_config pins the new one.
    const fa = fingerprint(path.join(a.dir, 'known_hosts'));
    const fb = fingerprint(path.join(b.dir, 'known_hosts'));
    const ft = fingerprint(path.join(templateDirOf(a), 'known_hosts'));
    assert.notEqual(fa, fb);
    assert.ok(fa !== ft && fb !== ft, 'no clone keeps the template host key');
    const sshA = ok(await run('ssh', ['-F', path.join(a.dir, 'ssh_config'), `cove-${nameA}`, 'hostname'], { timeoutMs: 120_000 }), 'OpenSSH into A');
    assert.equal(sshA.stdout.trim(), nameA, 'OpenSSH accepts the reborn host key; the hostname is the sandbox name');
    assert.equal((await exec('wb', 'hostname')).trim(), 'wb');
    const rndA = (await exec(nameA, 'head -c 16 /dev/urandom | od -An -tx1')).trim();
    const rndB = (await exec('wb', 'head -c 16 /dev/urandom | od -An -tx1')).trim();
    assert.match(rndA, /^[0-9a-f ]{47}$/);
    assert.notEqual(rndA, rndB, 'the kernel RNG was reseeded in each clone');
    // Each sees its own folder at the host path, and not the other's.
    assert.match(await exec(nameA, `cat ${wsA}/only-a.txt; ls ${wsB} 2>&1 || true`), /^a\n.*No such file/s);
    assert.match(await exec('wb', `cat ${wsB}/only-b.txt; ls ${wsA} 2>&1 || true`), /^b\n.*No such file/s);
    // The clock was stepped to the host's.
    const guestNow = Number((await exec('wb', 'date +%s')).trim());
    assert.ok(Math.abs(guestNow - Date.now() / 1000) < 30, `guest clock ${guestNow} is near the host's`);
    const v = ok(await docker(`cove-${nameA}`, ['version', '--format', '{{.Server.Version}}']), 'docker version through A');
    assert.match(v.stdout, /^\d+\./);
  });

  test('asleep with a running container and a named volume: docker ps wakes it, container running, data intact', { timeout: 15 * 60_000 }, async () => {
    const ctx = `cove-${nameA}`;
    ok(await docker(ctx, ['load', '-i', imageTar], 300_000), 'docker load');
    ok(
      await docker(ctx, ['run', '-d', '--name', 'web', '-p', '18099:8080', '-v', 'warmdata:/data', image, 'sh', '-c', 'echo kept > /data/x; mkdir -p /www; echo served > /www/index.html; exec httpd -f -p 8080 -h /www'], 180_000),
      'docker run -d',
    );
    await waitUntil('the published port to answer', 120_000, async () => (await run('curl', ['-s', '-m', '5', 'http://127.0.0.1:18099/'], { timeoutMs: 10_000 })).stdout.includes('served'));
    ok(await cove(['sleep', nameA], 300_000), 'cove sleep');
    const asleep = await inspect(nameA);
    assert.equal(asleep.state, 'asleep');
    assert.deepEqual(processesOf(asleep.dir), [], 'no VM process is left for an asleep sandbox');
    const ps = ok(await docker(ctx, ['ps', '--format', '{{.Names}} {{.Status}}'], 180_000), 'docker ps wakes it');
    assert.match(ps.stdout, /^web Up/m, 'the container is still running');
    const data = ok(await docker(ctx, ['run', '--rm', '-v', 'warmdata:/data', image, 'cat', '/data/x'], 180_000), 'read the volume');
    assert.equal(data.stdout.trim(), 'kept');
    const woke = await inspect(nameA);
    assert.equal(woke.state, 'running');
    assert.equal(woke.bootKind, 'wake');
    assert.match(await exec(nameA, `cat ${wsA}/only-a.txt`), /^a$/m, 'the folder is mounted again after the wake');
  });

  test('a forwarded port wakes an asleep sandbox and answers, also after coved restarted', { timeout: 15 * 60_000 }, async () => {
    ok(await cove(['sleep', nameA], 300_000), 'cove sleep');
    assert.equal((await inspect(nameA)).state, 'asleep');
    const r = await run('curl', ['-s', '-m', '120', 'http://127.0.0.1:18099/'], { timeoutMs: 150_000 });
    assert.equal(r.stdout.trim(), 'served', `curl got ${JSON.stringify(r.stdout)} (${r.stderr})`);
    // Asleep across a coved restart: the restarted coved listens on the forwarded port again.
    ok(await cove(['sleep', nameA], 300_000), 'cove sleep again');
    const pid = covedPid();
    assert.ok(pid, 'coved is running');
    process.kill(pid, 'SIGTERM');
    await waitUntil('coved to exit', 30_000, async () => !fs.existsSync(`/proc/${pid}`), 200);
    assert.equal((await inspect(nameA)).state, 'asleep', 'still asleep after coved restarted');
    const again = await waitUntil('the forwarded port to answer after the restart', 150_000, async () => {
      const c = await run('curl', ['-s', '-m', '120', 'http://127.0.0.1:18099/'], { timeoutMs: 150_000 });
      return c.stdout.trim() === 'served' ? c : null;
    }, 1000);
    assert.ok(again);
    assert.equal((await inspect(nameA)).state, 'running');
  });

  test('a share that is busy in the guest cannot be saved: the sandbox stays paused and says why', { timeout: 10 * 60_000 }, async () => {
    const ctx = `cove-${nameA}`;
    ok(await docker(ctx, ['run', '-d', '--name', 'holder', '-v', `${wsA}:${wsA}`, image, 'sleep', '600'], 180_000), 'a container bind-mounts the folder');
    try {
      const r = await cove(['sleep', nameA], 300_000);
      assert.notEqual(r.code, 0, 'cove sleep refuses');
      assert.match(r.stderr, /cannot be saved to disk now: the shared folder is in use/);
      const info = await inspect(nameA);
      assert.equal(info.state, 'paused', 'it stays paused instead');
      assert.match(info.warmNote ?? '', /in use/);
      assert.match(await exec(nameA, `cat ${wsA}/only-a.txt`), /^a$/m, 'the folder is still mounted');
      assert.equal((await inspect(nameA)).state, 'running', 'the connection resumed it');
    } finally {
      await docker(ctx, ['rm', '-f', 'holder'], 180_000);
    }
  });

  test('an idle sandbox is paused, and the next connection resumes it', { timeout: 10 * 60_000 }, async () => {
    // A coved whose idle policy is seconds, not minutes: the CLI starts it with this environment.
    const pid = covedPid();
    if (pid) process.kill(pid, 'SIGTERM');
    await waitUntil('coved to exit', 30_000, async () => covedPid() === null || !fs.existsSync(`/proc/${covedPid()}`));
    // A quiet guest counts up to 90 % of a CPU here: this test is about pausing and resuming, not about
    // how busy a TCG guest looks on a loaded CI machine.
    const env = { COVE_PAUSE_AFTER: '4', COVE_SLEEP_AFTER: '0', COVE_QUIET_CPU: '0.9' };
    const ls = async () => JSON.parse(ok(await run(process.execPath, [path.join(__dirname, '..', '..', '..', 'bin', 'cove'), 'inspect', 'wb', '--json'], { timeoutMs: 60_000, env: { ...process.env, COVE_HOME: HOME, DOCKER_CONFIG: `${HOME}-docker`, ...env } }), 'inspect').stdout) as Info;
    const paused = await waitUntil('wb to be paused when idle', 120_000, async () => ((await ls()).state === 'paused' ? true : null));
    assert.ok(paused);
    const r = ok(await docker('cove-wb', ['version', '--format', '{{.Server.Version}}'], 60_000), 'docker version on a paused sandbox');
    assert.match(r.stdout, /^\d+\./);
    assert.equal((await ls()).state, 'running', 'the connection resumed it');
    const guestNow = Number((await exec('wb', 'date +%s')).trim());
    assert.ok(Math.abs(guestNow - Date.now() / 1000) < 30, 'the guest clock was stepped after the pause');
    const again = covedPid();
    if (again) process.kill(again, 'SIGTERM');
    await waitUntil('coved to exit', 30_000, async () => !fs.existsSync(path.join(HOME, 'coved.pid')) || !fs.existsSync(`/proc/${covedPid()}`));
  });

  test('a damaged saved state falls back to a cold boot with a one-line reason; the volume survives', { timeout: 20 * 60_000 }, async () => {
    ok(await cove(['sleep', nameA], 300_000), 'cove sleep');
    const dir = (await inspect(nameA)).dir;
    const state = path.join(dir, 'sleep.vmstate');
    const fd = fs.openSync(state, 'r+');
    fs.writeSync(fd, Buffer.alloc(4096, 0xa5), 0, 4096, Math.floor(fs.statSync(state).size / 2));
    fs.closeSync(fd);
    const start = ok(await cove(['start', nameA], 20 * 60_000), 'cove start');
    assert.ok(start.code === 0);
    const info = await inspect(nameA);
    assert.equal(info.state, 'running');
    assert.equal(info.bootKind, 'cold');
    assert.match(info.warmNote ?? '', /damaged/);
    assert.ok(!(info.warmNote ?? '').includes('\n'), 'one line');
    const data = ok(await docker(`cove-${nameA}`, ['run', '--rm', '-v', 'warmdata:/data', image, 'cat', '/data/x'], 180_000), 'read the volume after the fallback');
    assert.equal(data.stdout.trim(), 'kept');
  });

  test('a state saved by another qemu falls back to a cold boot with the reason', { timeout: 20 * 60_000 }, async () => {
    ok(await cove(['sleep', 'wb'], 300_000), 'cove sleep wb');
    const manifest = path.join((await inspect('wb')).dir, 'sleep.json');
    const m = JSON.parse(fs.readFileSync(manifest, 'utf8')) as { hypervisor: string };
    m.hypervisor = 'QEMU emulator version 6.0.0';
    fs.writeFileSync(manifest, JSON.stringify(m));
    ok(await docker('cove-wb', ['version', '--format', '{{.Server.Version}}'], 20 * 60_000), 'docker version wakes it');
    const info = await inspect('wb');
    assert.equal(info.bootKind, 'cold');
    assert.match(info.warmNote ?? '', /saved by QEMU emulator version 6\.0\.0/);
  });

  test('a damaged template: the new sandbox boots cold with the reason, and the template is not used again', { timeout: 20 * 60_000 }, async () => {
    // Every template there is (the one the next sandbox picks among them), each restored afterwards.
    const states = fs
      .readdirSync(path.join(HOME, 'images'))
      .flatMap((img) => {
        const root = path.join(HOME, 'images', img, 'templates');
        return fs.existsSync(root) ? fs.readdirSync(root).map((t) => path.join(root, t)) : [];
      })
      .filter((t) => fs.existsSync(path.join(t, 'template.json')));
    assert.ok(states.length > 0, 'there is a template');
    const originals = new Map(states.map((t) => [t, fs.readFileSync(path.join(t, 'vmstate'))]));
    try {
      for (const [t, original] of originals) {
        const bad = Buffer.from(original);
        bad[Math.floor(bad.length / 2)] ^= 0xff;
        fs.writeFileSync(path.join(t, 'vmstate'), bad);
      }
      const wsC = workspace('warm-c');
      ok(await cove(['up', wsC, '--name', 'wc'], 20 * 60_000), 'cove up C');
      const c = await inspect('wc');
      assert.equal(c.bootKind, 'cold', `C booted cold (${c.warmNote ?? 'no note'})`);
      assert.match(c.warmNote ?? '', /damaged/);
      assert.ok(fs.existsSync(path.join(templateDirOf(c), 'bad')), 'the template is marked bad');
      ok(await docker('cove-wc', ['version'], 120_000), 'docker version through C');
    } finally {
      // The rest of the run (e2e) keeps using the templates.
      for (const [t, original] of originals) {
        fs.writeFileSync(path.join(t, 'vmstate'), original);
        fs.rmSync(path.join(t, 'bad'), { force: true });
      }
      await cove(['rm', '--force', 'wc'], 180_000).catch(() => undefined);
    }
  });

  test('kill -9 of coved during a restore leaves no broken sandbox', { timeout: 20 * 60_000 }, async () => {
    const wsD = workspace('warm-d');
    const stateFile = path.join(HOME, 'vms', 'wd', 'state.json');
    const up = cove(['up', wsD, '--name', 'wd'], 20 * 60_000);
    const caught = await waitUntil('the restore of wd to be in flight', 10 * 60_000, async () => {
      try {
        const st = JSON.parse(fs.readFileSync(stateFile, 'utf8')) as { pending?: string };
        return st.pending === 'rebirth' ? true : null;
      } catch {
        return null;
      }
    }, 20);
    assert.ok(caught);
    const pid = covedPid();
    assert.ok(pid, 'coved is running');
    process.kill(pid, 'SIGKILL');
    const r = await up;
    assert.notEqual(r.code, 0, 'the interrupted cove up reports a failure');
    // The restarted coved answers at once and recovers in the background: wait for wd's recovery.
    const d = await waitUntil('wd to be recovered', 120_000, async () => (await list()).find((s) => s.name === 'wd' && s.state !== 'starting') ?? null, 500);
    assert.ok(d.state === 'stopped', `the half-restored VM was stopped, not kept (state ${d.state})`);
    assert.deepEqual(processesOf(d.dir), [], 'no VM process of the interrupted restore is left');
    ok(await cove(['start', 'wd'], 20 * 60_000), 'cove start wd');
    const again = await inspect('wd');
    assert.equal(again.state, 'running');
    assert.equal((await exec('wd', 'hostname')).trim(), 'wd');
    ok(await docker('cove-wd', ['version'], 120_000), 'docker version through wd');
  });

  test('coved killed in the middle of a stop: the restarted coved finishes it with a clean guest power-off', { timeout: 10 * 60_000 }, async () => {
    const d = await inspect('wd');
    assert.equal(d.state, 'running');
    const pid = covedPid();
    assert.ok(pid, 'coved is running');
    process.kill(pid, 'SIGKILL');
    // What coved leaves on disk when it dies between "stopping" and the guest's power-off.
    const stateFile = path.join(d.dir, 'state.json');
    const st = JSON.parse(fs.readFileSync(stateFile, 'utf8')) as { state: string };
    fs.writeFileSync(stateFile, JSON.stringify({ ...st, state: 'stopping' }));
    await list(); // Starts coved, which recovers wd in the background.
    await waitUntil('the recovered stop to finish', 5 * 60_000, async () => ((await inspect('wd')).state === 'stopped' ? true : null), 1000);
    const console = fs.readFileSync(path.join(d.dir, 'console.log'), 'utf8');
    assert.match(console, /cove: power off/, 'the guest powered itself off (not QMP quit while the agent link was still connecting)');
  });
});
