// Host-side faults that need no running VM: a full host disk while building an image or creating a
// sandbox, and a damaged cached image. Each uses its own $COVE_HOME on a small tmpfs or a copy.
import { strict as assert } from 'node:assert';
import * as child_process from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { COVE_BIN, HOME, TEST_ROOT, ok, run, testEnv } from '../helpers/harness';

const isRoot = process.getuid?.() === 0;
const SKIP_NOT_ROOT = isRoot ? false : 'needs root: it mounts a small tmpfs to fill up (and the image build needs root)';
const FULL = path.join(TEST_ROOT, 'full');
const COPY = path.join(TEST_ROOT, 'copy');

function cove(home: string, args: string[], timeoutMs = 600_000) {
  return run(process.execPath, [COVE_BIN, ...args], { timeoutMs, env: testEnv({ COVE_HOME: home }) });
}
function stopCoved(home: string): void {
  try {
    process.kill(Number(fs.readFileSync(path.join(home, 'coved.pid'), 'utf8')), 'SIGKILL');
  } catch {
    /* not running */
  }
}
function newestImage(): string {
  const images = path.join(HOME, 'images');
  const dirs = fs.readdirSync(images).filter((d) => d.startsWith('docker-') && fs.existsSync(path.join(images, d, 'manifest.json')));
  dirs.sort((a, b) => fs.statSync(path.join(images, b, 'manifest.json')).mtimeMs - fs.statSync(path.join(images, a, 'manifest.json')).mtimeMs);
  assert.ok(dirs.length > 0, 'an image was built by an earlier test (image.test)');
  return path.join(images, dirs[0]);
}

describe('host disk full', { skip: SKIP_NOT_ROOT, timeout: 20 * 60_000 }, () => {
  before(() => {
    fs.mkdirSync(FULL, { recursive: true });
    child_process.execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64m,mode=0700', 'tmpfs', FULL]);
  });
  after(() => {
    stopCoved(path.join(FULL, 'home'));
    child_process.execFileSync('umount', ['-l', FULL]);
  });

  test('an image build on a disk without room fails clearly and leaves no image behind', async () => {
    const home = path.join(FULL, 'home');
    const r = await cove(home, ['image', 'build']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /not enough disk space in .*free .*need about/);
    assert.match(r.stderr, /hint: free some space/);
    const images = path.join(home, 'images');
    const left = fs.existsSync(images) ? fs.readdirSync(images) : [];
    // Only the failed build's log may stay (in a .tmp- folder that no later run uses and the next
    // build removes); no image folder, complete or not.
    for (const d of left) {
      assert.match(d, /^\.tmp-build-/, `${d} is not an image a later run could take`);
      assert.ok(fs.readdirSync(path.join(images, d)).every((f) => f === 'build.log'), `${d} holds nothing but the log`);
    }
    const list = JSON.parse(ok(await cove(home, ['image', 'ls', '--json']), 'cove image ls').stdout) as unknown[];
    assert.deepEqual(list, [], 'no image is listed');
  });

  test('creating a sandbox on a full disk fails clearly and leaves no sandbox behind', async () => {
    const home = path.join(FULL, 'home');
    // The image itself lives on the big disk; the sandbox folder would go on the full tmpfs.
    fs.rmSync(path.join(home, 'images'), { recursive: true, force: true });
    fs.symlinkSync(path.dirname(newestImage()), path.join(home, 'images'));
    ok(await cove(home, ['ls']), 'coved starts while there is room');
    const filler = path.join(FULL, 'filler');
    child_process.spawnSync('dd', ['if=/dev/zero', `of=${filler}`, 'bs=1M'], { stdio: 'ignore' });
    const ws = fs.mkdtempSync(path.join(TEST_ROOT, 'ws-full-'));
    const r = await cove(home, ['up', ws, '--name', 'nospace']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /full|no space|not enough disk space/i);
    assert.match(r.stderr, /hint:/);
    assert.ok(!fs.existsSync(path.join(home, 'vms', 'nospace')), 'no half-made sandbox folder');
    fs.rmSync(filler);
    const list = JSON.parse(ok(await cove(home, ['ls', '--json']), 'cove ls').stdout) as unknown[];
    assert.deepEqual(list, [], 'no sandbox is listed');
    fs.rmSync(ws, { recursive: true, force: true });
  });
});

describe('a damaged cached image', { skip: SKIP_NOT_ROOT, timeout: 30 * 60_000 }, () => {
  let image = '';
  before(() => {
    stopCoved(COPY);
    fs.rmSync(COPY, { recursive: true, force: true });
    fs.mkdirSync(path.join(COPY, 'images'), { recursive: true });
    image = path.join(COPY, 'images', path.basename(newestImage()));
    child_process.execFileSync('cp', ['-a', '--sparse=always', newestImage(), image]);
    // Share the debootstrap and kernel caches, so a rebuild is a re-pack.
    fs.symlinkSync(path.join(HOME, 'cache'), path.join(COPY, 'cache'));
  });
  after(() => {
    stopCoved(COPY);
    fs.rmSync(COPY, { recursive: true, force: true });
  });

  test('a sandbox made over it is refused with what to do', async () => {
    const manifest = JSON.parse(fs.readFileSync(path.join(image, 'manifest.json'), 'utf8')) as { files: Record<string, { sha256: string }> };
    // A sandbox folder as coved makes it (no VM needed to be refused).
    const vm = path.join(COPY, 'vms', 'old');
    fs.mkdirSync(vm, { recursive: true, mode: 0o700 });
    child_process.execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(vm, 'id_ed25519')]);
    child_process.execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(vm, 'host_ed25519')]);
    fs.writeFileSync(path.join(vm, 'known_hosts'), `cove-old ${fs.readFileSync(path.join(vm, 'host_ed25519.pub'), 'utf8')}`);
    fs.writeFileSync(
      path.join(vm, 'config.json'),
      JSON.stringify({ version: 1, name: 'old', workspace: TEST_ROOT, mount: '9p', readonly: false, cpus: 1, memoryMiB: 512, diskGiB: 4, image: path.basename(image), baseSha256: manifest.files['base.raw'].sha256, createdAt: new Date().toISOString(), published: [] }),
    );
    fs.truncateSync(path.join(image, 'base.raw'), 1024 * 1024);
    const r = await cove(COPY, ['start', 'old']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /image .* is damaged/);
    assert.match(r.stderr, /hint: rebuild it with `cove image build`/);
  });

  test('cove image build detects the damage and rebuilds; the old sandbox is still refused', async () => {
    const r = ok(await cove(COPY, ['image', 'build'], 20 * 60_000), 'cove image build');
    assert.match(r.stdout, /built the image/, 'it rebuilt rather than trusting the damaged cache');
    assert.match(r.stderr, /damaged/, 'and said why');
    const again = ok(await cove(COPY, ['image', 'build']), 'cove image build, again');
    assert.match(again.stdout, /used the cached image/);
    const start = await cove(COPY, ['start', 'old']);
    assert.equal(start.code, 1);
    assert.match(start.stderr, /rebuilt after sandbox old was made over it/);
  });
});
