// The bind-source guard on a real sandbox, through the host docker CLI and the `cove-bg` context
// (docs/ecosystem.md): a container that would bind a host path the sandbox does not share is
// refused at once with the guard's message; shared paths, named volumes and the guest's Docker
// socket pass; `--bind-guard off` lets anything through; and the command the message gives does
// share the folder. Hijacked streams with stdin EOF still work through the proxy.
import { strict as assert } from 'node:assert';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { makeBusyboxImage } from '../helpers/busybox-image';
import { SCRATCH, cove, covedPid, docker, ok, resetTestHome, type RunResult, workspace } from '../helpers/harness';

const NAME = 'bg';
const OFF = 'bg-off';
const CTX = `cove-${NAME}`;
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

interface Info {
  state: string;
  bindGuard: boolean;
  bootKind: string | null;
}
const inspect = async (name: string) => JSON.parse(ok(await cove(['inspect', name, '--json']), `cove inspect ${name}`).stdout) as Info;

/** The guard's message as the docker CLI prints it, for a sandbox with no extra mounts. */
function refusal(source: string, ws: string, name = NAME): string {
  return (
    `Error response from daemon: cove: the bind-mount source ${source} is not shared with sandbox ${name}, so the container would see the guest's own ${source}, not the host's; ` +
    `share it: cove up ${ws} --name ${name} --mount ${source}, then \`cove stop ${name} && cove start ${name}\` (mounts change on the next start); ` +
    `or let containers bind any guest path: cove up ${ws} --name ${name} --bind-guard=off`
  );
}

describe('the bind-source guard on a real sandbox', { timeout: 60 * 60_000 }, () => {
  let ws = '';
  let wsOff = '';
  let image = '';
  let imageTar = '';
  /** A host folder that exists but is not shared with the sandbox (yet). */
  let unshared = '';

  before(() => {
    resetTestHome();
    ws = workspace(NAME);
    wsOff = workspace(OFF);
    imageTar = path.join(SCRATCH, 'busybox-bg.tar');
    image = makeBusyboxImage(imageTar);
    unshared = path.join(SCRATCH, 'unshared');
    fs.rmSync(unshared, { recursive: true, force: true });
    fs.mkdirSync(unshared);
    fs.writeFileSync(path.join(unshared, 'host.txt'), 'from the host folder\n');
  });

  after(async () => {
    for (const n of [NAME, OFF]) await cove(['rm', '--force', n], 180_000).catch(() => undefined);
    const pid = covedPid();
    if (pid) process.kill(pid, 'SIGTERM');
  });

  test('cove up makes the sandbox with the guard on', { timeout: 25 * 60_000 }, async () => {
    ok(await cove(['up', ws, '--name', NAME], 20 * 60_000), 'cove up');
    assert.equal((await inspect(NAME)).bindGuard, true, 'the guard is on by default');
    ok(await docker(CTX, ['load', '-i', imageTar], 300_000), 'docker load');
  });

  /** Runs `docker run --rm ARGS image true` and checks it is refused with `source`'s message, quickly. */
  async function refused(args: string[], source: string): Promise<void> {
    const before = ok(await docker(CTX, ['ps', '-aq']), 'docker ps -aq').stdout;
    const t0 = Date.now();
    const r: RunResult = await docker(CTX, ['run', '--rm', ...args, image, 'true'], 120_000);
    const seconds = (Date.now() - t0) / 1000;
    assert.notEqual(r.code, 0, `docker run ${args.join(' ')} was refused`);
    assert.ok(r.stderr.includes(refusal(source, ws)), `the docker CLI shows the guard's message:\n${r.stderr}`);
    assert.equal(ok(await docker(CTX, ['ps', '-aq']), 'docker ps -aq').stdout, before, 'no container was made');
    assert.ok(seconds < 30, `refused in ${seconds.toFixed(1)} s`);
    process.stdout.write(`# docker run ${args.join(' ')}: refused in ${seconds.toFixed(1)} s\n`);
  }

  test('-v /etc/ssl:/x is refused at once with the message', async () => {
    await refused(['-v', '/etc/ssl:/x'], '/etc/ssl');
  });

  test('-v with a host folder that is not shared is refused', async () => {
    await refused(['-v', `${unshared}:/x`], unshared);
  });

  test('--mount type=bind,source=/etc is refused', async () => {
    await refused(['--mount', 'type=bind,source=/etc,target=/x'], '/etc');
  });

  test('a path that climbs out of the workspace is refused as where it lands', async () => {
    await refused(['-v', `${ws}/../../../etc:/x`], path.resolve(ws, '../../../etc'));
  });

  test('a bind inside the workspace works: what the container writes is on the host, byte for byte', async () => {
    fs.mkdirSync(path.join(ws, 'out'), { recursive: true });
    const r = ok(await docker(CTX, ['run', '--rm', '-v', `${ws}/out:/out`, image, 'sh', '-c', 'head -c 100000 /dev/urandom > /out/r.bin && sha256sum /out/r.bin'], 180_000), 'docker run -v ws/out');
    assert.equal(sha256(fs.readFileSync(path.join(ws, 'out', 'r.bin'))), r.stdout.trim().split(/\s+/)[0]);
  });

  test('named volumes and the guest Docker socket pass', async () => {
    const r = ok(
      await docker(CTX, ['run', '--rm', '-v', 'bgdata:/data', '-v', '/var/run/docker.sock:/var/run/docker.sock', image, 'sh', '-c', 'test -S /var/run/docker.sock && echo sock; echo v > /data/v && cat /data/v'], 180_000),
      'docker run with a volume and the Docker socket',
    );
    assert.equal(r.stdout, 'sock\nv\n');
  });

  test('hijacked streams through the proxy: docker run -i and docker exec -i see stdin EOF', async () => {
    const input = randomBytes(48_000).toString('base64');
    const run = ok(await docker(CTX, ['run', '--rm', '-i', image, 'sh', '-c', 'cat; echo END'], 180_000, input), 'docker run -i');
    assert.equal(run.stdout, `${input}END\n`);
    ok(await docker(CTX, ['run', '-d', '--name', 'idle', image, 'sleep', '3600'], 180_000), 'docker run -d');
    const exec = ok(await docker(CTX, ['exec', '-i', 'idle', 'sh', '-c', 'wc -c; echo END'], 180_000, 'twelve bytes'), 'docker exec -i');
    assert.equal(exec.stdout.replace(/\s+/g, ' ').trim(), '12 END');
    ok(await docker(CTX, ['rm', '-f', 'idle']), 'docker rm idle');
  });

  test('cove up --bind-guard=off on the sandbox lets any path through, and on again restores the guard', async () => {
    ok(await cove(['up', ws, '--name', NAME, '--bind-guard=off']), 'cove up --bind-guard=off');
    assert.equal((await inspect(NAME)).bindGuard, false);
    ok(await docker(CTX, ['run', '--rm', '-v', '/etc/ssl:/x', image, 'ls', '/x'], 180_000), 'docker run -v /etc/ssl with the guard off');
    ok(await cove(['up', ws, '--name', NAME, '--bind-guard=on']), 'cove up --bind-guard=on');
    await refused(['-v', '/etc/ssl:/x'], '/etc/ssl');
  });

  test('a sandbox made with cove up --bind-guard=off lets -v /etc/ssl:/x through', { timeout: 25 * 60_000 }, async () => {
    ok(await cove(['up', wsOff, '--name', OFF, '--bind-guard=off'], 20 * 60_000), 'cove up --bind-guard=off');
    assert.equal((await inspect(OFF)).bindGuard, false);
    ok(await docker(`cove-${OFF}`, ['load', '-i', imageTar], 300_000), 'docker load');
    ok(await docker(`cove-${OFF}`, ['run', '--rm', '-v', '/etc/ssl:/x', image, 'ls', '/x'], 180_000), 'docker run -v /etc/ssl');
    ok(await cove(['rm', '--force', OFF], 180_000), 'cove rm');
  });

  test("the message's own command shares the folder: after the restart the container sees the host's file", { timeout: 25 * 60_000 }, async () => {
    const r = await docker(CTX, ['run', '--rm', '-v', `${unshared}:/x`, image, 'cat', '/x/host.txt'], 120_000);
    const m = /share it: (cove up [^,]+), then `cove stop (\S+) && cove start (\S+)`/.exec(r.stderr);
    assert.ok(m, r.stderr);
    const [, upCommand, stopName, startName] = m;
    // The paths here hold no spaces, so the words are the arguments.
    ok(await cove(upCommand.split(' ').slice(1)), upCommand);
    ok(await cove(['stop', stopName], 300_000), 'cove stop');
    ok(await cove(['start', startName], 20 * 60_000), 'cove start');
    const after = ok(await docker(CTX, ['run', '--rm', '-v', `${unshared}:/x`, image, 'cat', '/x/host.txt'], 180_000), 'docker run -v (now shared)');
    assert.equal(after.stdout, 'from the host folder\n');
  });
});
