// The tools users already run, unchanged (docs/ecosystem.md): on a host whose docker CLI has no
// compose or buildx, `cove up` gives it the image's; compose and buildx then work through the
// context; more folders and a file are shared (`--mount`), read-only where asked; a port published
// on the guest's 127.0.0.1 answers on the host's; changed mounts wait for the next start and say so.
import { strict as assert } from 'node:assert';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { makeBusyboxImage } from '../helpers/busybox-image';
import { DOCKER_CONFIG, SCRATCH, cove, covedPid, docker, ok, resetTestHome, run, waitUntil, workspace } from '../helpers/harness';

const NAME = 'eco';
const CONTEXT = `cove-${NAME}`;
const IMAGE = 'cove-test/busybox:latest';
const COMPOSE_PORT = 18431;
const LOOPBACK_PORT = 18432;

interface Info {
  state: string;
  bootKind: string | null;
  mounts: Array<{ host: string; guest: string; readonly: boolean; kind: string }>;
  mountsNote?: string;
}
const inspect = async (): Promise<Info> => JSON.parse(ok(await cove(['inspect', NAME, '--json']), 'cove inspect').stdout) as Info;
const exec = (script: string) => cove(['exec', NAME, '--', 'sh', '-c', script], 180_000);

/** GET http://127.0.0.1:port/path from the host, retried until it answers (forwards follow the guest's listeners). */
async function httpGet(port: number, urlPath: string, what: string): Promise<string> {
  let body = '';
  await waitUntil(`${what}: http://127.0.0.1:${port}${urlPath} to answer on the host`, 90_000, async () => {
    const r = await run('curl', ['-sf', '--max-time', '10', `http://127.0.0.1:${port}${urlPath}`], { timeoutMs: 20_000 });
    body = r.stdout;
    return r.code === 0;
  });
  return body;
}

describe('the tools users already run', { timeout: 60 * 60_000 }, () => {
  let ws = '';
  let second = '';
  let readOnly = '';
  let third = '';
  let gitconfig = '';
  let upOutput = '';

  before(async () => {
    resetTestHome();
    ws = workspace('eco');
    second = workspace('eco-second');
    readOnly = workspace('eco-readonly');
    third = workspace('eco-third');
    gitconfig = path.join(workspace('eco-files'), 'gitconfig');
    fs.writeFileSync(gitconfig, '[user]\n\tname = Cove Test\n');
    fs.writeFileSync(path.join(readOnly, 'keep.txt'), 'unchanged\n');
    assert.ok(!fs.existsSync(path.join(DOCKER_CONFIG, 'cli-plugins')), 'the test starts with a docker CLI without plugins');
    const up = ok(
      await cove(['up', ws, '--name', NAME, '--mount', second, '--mount', `${readOnly}:/data/ro:ro`, '--mount', `${gitconfig}:/root/.gitconfig:ro`], 20 * 60_000),
      'cove up with three mounts',
    );
    upOutput = up.stdout;
    const tar = path.join(SCRATCH, 'busybox-eco.tar');
    makeBusyboxImage(tar, IMAGE);
    ok(await docker(CONTEXT, ['load', '-i', tar], 300_000), 'docker load busybox');
  });

  after(async () => {
    await cove(['rm', '--force', NAME], 180_000).catch(() => undefined);
    const pid = covedPid();
    if (pid) process.kill(pid, 'SIGTERM');
  });

  test('cove up gives a docker CLI without plugins the image compose and buildx, and cove doctor says where each came from', async () => {
    assert.match(upOutput, /installed the image's docker compose \S+ and buildx \S+ plugins into .*cli-plugins/, upOutput);
    for (const p of ['compose', 'buildx']) {
      assert.ok(fs.existsSync(path.join(DOCKER_CONFIG, 'cli-plugins', `docker-${p}`)), `docker-${p} in $DOCKER_CONFIG/cli-plugins`);
      ok(await docker(CONTEXT, [p, 'version']), `docker ${p} version`);
    }
    const doctor = (await cove(['doctor'], 120_000)).stdout;
    assert.match(doctor, /docker compose plugin: Cove's copy of the image's/, doctor);
    assert.match(doctor, /docker buildx plugin: Cove's copy of the image's/, doctor);
    // A second `up` has nothing to install and says nothing about plugins.
    const again = ok(await cove(['up', ws, '--name', NAME], 180_000), 'cove up again').stdout;
    assert.doesNotMatch(again, /installed the image's/);
  });

  test('compose up -d: a bind mount of the workspace, a port on 127.0.0.1 and a named volume, through the context', { timeout: 15 * 60_000 }, async () => {
    const dir = path.join(ws, 'web');
    fs.mkdirSync(path.join(dir, 'www'), { recursive: true });
    const page = `compose ${randomBytes(8).toString('hex')}\n`;
    fs.writeFileSync(path.join(dir, 'www', 'index.html'), page);
    fs.writeFileSync(
      path.join(dir, 'compose.yaml'),
      [
        'services:',
        '  web:',
        `    image: ${IMAGE}`,
        '    command: ["sh", "-c", "date > /data/started && httpd -f -p 80 -h /www"]',
        `    ports: ["127.0.0.1:${COMPOSE_PORT}:80"]`,
        '    volumes:',
        '      - ./www:/www:ro',
        '      - data:/data',
        'volumes:',
        '  data: {}',
        '',
      ].join('\n'),
    );
    const compose = (args: string[], timeoutMs = 300_000) => run('docker', ['--context', CONTEXT, 'compose', ...args], { timeoutMs, cwd: dir });
    ok(await compose(['up', '-d']), 'docker compose up -d');
    try {
      assert.equal(await httpGet(COMPOSE_PORT, '/index.html', 'the compose service'), page, 'the page from the bind-mounted workspace');
      const started = ok(await compose(['exec', '-T', 'web', 'cat', '/data/started']), 'compose exec').stdout;
      assert.ok(started.trim().length > 0, 'the named volume was written');
      const volumes = ok(await docker(CONTEXT, ['volume', 'ls', '--format', '{{.Name}}']), 'volume ls').stdout;
      assert.match(volumes, /web_data/, volumes);
    } finally {
      ok(await compose(['down', '--volumes']), 'docker compose down');
    }
  });

  test('buildx build --load: a multi-stage build through the context, then run', { timeout: 15 * 60_000 }, async () => {
    const dir = path.join(ws, 'build');
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'greeting.txt'), 'built by buildx\n');
    fs.writeFileSync(
      path.join(dir, 'Dockerfile'),
      [`FROM ${IMAGE} AS stage1`, 'COPY greeting.txt /stage1/greeting.txt', 'RUN tr a-z A-Z < /stage1/greeting.txt > /stage1/upper.txt', `FROM ${IMAGE}`, 'COPY --from=stage1 /stage1/upper.txt /upper.txt', 'CMD ["cat", "/upper.txt"]', ''].join('\n'),
    );
    const build = await run('docker', ['--context', CONTEXT, 'buildx', 'build', '--load', '-t', 'cove-test/multistage:1', dir], { timeoutMs: 600_000 });
    ok(build, 'docker buildx build --load');
    assert.doesNotMatch(build.stderr, /legacy builder is deprecated/);
    const out = ok(await docker(CONTEXT, ['run', '--rm', 'cove-test/multistage:1']), 'run the built image').stdout;
    assert.equal(out, 'BUILT BY BUILDX\n');
  });

  test('a second folder is read and written from a container at its host path, byte for byte; :ro refuses writes; a file is shared as itself', async () => {
    const info = await inspect();
    assert.deepEqual(
      info.mounts.map((m) => [m.host, m.guest, m.readonly, m.kind]),
      [
        [second, second, false, 'dir'],
        [readOnly, '/data/ro', true, 'dir'],
        [gitconfig, '/root/.gitconfig', true, 'file'],
      ],
    );
    const bytes = randomBytes(256 * 1024);
    fs.writeFileSync(path.join(second, 'from-host.bin'), bytes);
    const sum = ok(await docker(CONTEXT, ['run', '--rm', '-v', `${second}:${second}`, IMAGE, 'sh', '-c', `md5sum < ${second}/from-host.bin; head -c 131072 /dev/urandom > ${second}/from-guest.bin`]), 'container reads and writes the second folder').stdout;
    assert.equal(sum.split(/\s/)[0], createHash('md5').update(bytes).digest('hex'), 'the container read the host bytes');
    const back = fs.readFileSync(path.join(second, 'from-guest.bin'));
    assert.equal(back.length, 131072, 'the host sees what the container wrote');
    const inGuest = ok(await exec(`md5sum ${second}/from-guest.bin`), 'md5 in the guest').stdout;
    assert.equal(inGuest.split(/\s/)[0], createHash('md5').update(back).digest('hex'), 'byte for byte');
    // Read-only: refused in the guest (by qemu's 9p server and the guest mount), the host file unchanged.
    const write = await exec('echo changed > /data/ro/keep.txt; echo rc=$?');
    assert.match(write.stdout + write.stderr, /Read-only file system/);
    assert.equal(fs.readFileSync(path.join(readOnly, 'keep.txt'), 'utf8'), 'unchanged\n');
    const ro = await docker(CONTEXT, ['run', '--rm', '-v', '/data/ro:/x', IMAGE, 'sh', '-c', 'touch /x/new']);
    assert.notEqual(ro.code, 0, 'a container cannot write the read-only mount either');
    assert.ok(!fs.existsSync(path.join(readOnly, 'new')));
    // The file: its content at its guest path, not a folder, and nothing else of its host folder.
    assert.equal(ok(await exec('cat /root/.gitconfig'), 'cat the file mount').stdout, '[user]\n\tname = Cove Test\n');
    assert.match((await exec('test -f /root/.gitconfig && echo file')).stdout, /file/);
  });

  test('-p 127.0.0.1:PORT:80 in the guest answers on host 127.0.0.1:PORT with no manual step', async () => {
    const page = `loopback ${randomBytes(6).toString('hex')}\n`;
    fs.writeFileSync(path.join(ws, 'lo.html'), page);
    ok(await docker(CONTEXT, ['run', '-d', '--name', 'lo', '-p', `127.0.0.1:${LOOPBACK_PORT}:80`, '-v', `${ws}:/www:ro`, IMAGE, 'httpd', '-f', '-p', '80', '-h', '/www']), 'docker run -p 127.0.0.1:…');
    try {
      assert.equal(await httpGet(LOOPBACK_PORT, '/lo.html', 'the loopback-published port'), page);
      const ports = ok(await cove(['ports', NAME]), 'cove ports').stdout;
      assert.match(ports, new RegExp(`\\b${LOOPBACK_PORT}\\b`), ports);
    } finally {
      await docker(CONTEXT, ['rm', '-f', 'lo']);
    }
    await waitUntil('the forward to go with the container', 60_000, async () => !(await cove(['ports', NAME])).stdout.includes(String(LOOPBACK_PORT)));
  });

  test('changed mounts wait for the next start and say so; the start mounts them', { timeout: 20 * 60_000 }, async () => {
    const up = ok(await cove(['up', ws, '--name', NAME, '--mount', second, '--mount', third], 180_000), 'cove up with other mounts').stdout;
    assert.match(up, /the shared folders change on the next start: cove stop eco && cove start eco/, up);
    assert.match((await inspect()).mountsNote ?? '', /next start/);
    assert.notEqual((await exec(`test -d ${third} && mountpoint -q ${third} && echo mounted`)).stdout.trim(), 'mounted', 'not mounted yet');
    // A sleep and a wake keep the VM as it was started (its devices are saved with it).
    ok(await cove(['sleep', NAME], 300_000), 'cove sleep');
    ok(await docker(CONTEXT, ['ps']), 'docker ps wakes it');
    assert.equal((await exec('cat /root/.gitconfig')).stdout, '[user]\n\tname = Cove Test\n', 'the file mount is back after the wake');
    ok(await cove(['stop', NAME], 300_000), 'cove stop');
    ok(await cove(['start', NAME], 20 * 60_000), 'cove start');
    const info = await inspect();
    assert.equal(info.mountsNote, undefined);
    assert.equal(info.mounts.length, 2);
    fs.writeFileSync(path.join(third, 'third.txt'), 'third\n');
    assert.equal(ok(await exec(`cat ${third}/third.txt`), 'read the new mount').stdout, 'third\n');
    assert.notEqual((await exec('mountpoint -q /data/ro && echo mounted')).stdout.trim(), 'mounted', 'the dropped mount is gone');
  });

  test('bad mounts get a clear error and change nothing', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['--mount', '/no/such/folder'], /does not exist/],
      [['--mount', `${second}:/etc/ssl`], /would cover the guest's own \/etc/],
      [['--mount', `${second}:${ws}/inner`], /overlaps the workspace/],
      [['--mount', second, '--mount', `${third}:${second}/x`], /overlaps the mount of/],
      [['--mount', `${second}:relative`], /must be absolute/],
    ];
    for (const [args, pattern] of cases) {
      const r = await cove(['up', ws, '--name', NAME, ...args], 60_000);
      assert.notEqual(r.code, 0, `cove up ${args.join(' ')} fails`);
      assert.match(r.stderr, pattern, `cove up ${args.join(' ')}: ${r.stderr}`);
    }
    assert.equal((await inspect()).mounts.length, 2, 'the mounts are as they were');
  });
});
