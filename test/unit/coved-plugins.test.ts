// The host's docker CLI plugins (vmm-host/coved/plugins.ts), against a stand-in docker CLI that,
// like the real one, runs `docker-<plugin>` from the first plugin folder that has it. The real
// docker CLI and the image's real plugins are tested in test/integration/ecosystem.test.ts.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { IMAGE } from '../../contract/layout';
import { ensurePlugins } from '../../vmm-host/coved/plugins';

function setup() {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-plugins-'));
  const dockerConfig = path.join(root, 'docker-config');
  const docker = path.join(root, 'docker');
  // `docker PLUGIN version`: runs $DOCKER_CONFIG/cli-plugins/docker-PLUGIN, else fails as the real CLI does.
  fs.writeFileSync(docker, '#!/bin/sh\nf="$DOCKER_CONFIG/cli-plugins/docker-$1"\n[ -x "$f" ] || { echo "docker: unknown command: docker $1" >&2; exit 1; }\nexec "$f" "$@"\n', { mode: 0o755 });
  const image = path.join(root, 'image');
  fs.mkdirSync(path.join(image, IMAGE.cliPlugins), { recursive: true });
  fs.writeFileSync(path.join(image, IMAGE.manifest), JSON.stringify({ versions: { compose: '2.26.1-4', buildx: '0.13.1' } }));
  for (const p of ['compose', 'buildx']) {
    fs.writeFileSync(path.join(image, IMAGE.cliPlugins, `docker-${p}`), `#!/bin/sh\necho "image ${p}"\n`, { mode: 0o555 });
  }
  const env = { ...process.env, DOCKER_CONFIG: dockerConfig };
  return { root, dockerConfig, docker, image, env };
}

test('plugins: installs the image copies where the docker CLI has none, once, with a marker', async () => {
  const s = setup();
  const r = await ensurePlugins({ dockerBin: s.docker, imageDir: s.image, check: false, env: s.env });
  assert.deepEqual(r.installed, ['compose', 'buildx']);
  assert.equal(r.dir, path.join(s.dockerConfig, 'cli-plugins'));
  assert.deepEqual(r.plugins.map((p) => [p.name, p.source, p.version]), [['compose', 'cove', '2.26.1-4'], ['buildx', 'cove', '0.13.1']]);
  assert.equal(fs.statSync(path.join(r.dir, 'docker-compose')).mode & 0o777, 0o755);
  assert.deepEqual(fs.readdirSync(r.dir).sort(), ['.docker-buildx.cove.json', '.docker-compose.cove.json', 'docker-buildx', 'docker-compose']);
  const again = await ensurePlugins({ dockerBin: s.docker, imageDir: s.image, check: false, env: s.env });
  assert.deepEqual(again.installed, [], 'nothing to install the second time');
  fs.rmSync(s.root, { recursive: true, force: true });
});

test("plugins: never replaces the user's own plugin, even a broken one; check installs nothing", async () => {
  const s = setup();
  const dir = path.join(s.dockerConfig, 'cli-plugins');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'docker-compose'), '#!/bin/sh\necho "my compose"\n', { mode: 0o755 });
  fs.writeFileSync(path.join(dir, 'docker-buildx'), 'not a program', { mode: 0o644 });
  const check = await ensurePlugins({ dockerBin: s.docker, imageDir: s.image, check: true, env: s.env });
  assert.deepEqual(check.installed, []);
  assert.deepEqual(check.plugins.map((p) => [p.name, p.source]), [['compose', 'user'], ['buildx', 'missing']]);
  const r = await ensurePlugins({ dockerBin: s.docker, imageDir: s.image, check: false, env: s.env });
  assert.deepEqual(r.installed, []);
  assert.equal(fs.readFileSync(path.join(dir, 'docker-compose'), 'utf8'), '#!/bin/sh\necho "my compose"\n', "the user's compose is untouched");
  assert.equal(fs.readFileSync(path.join(dir, 'docker-buildx'), 'utf8'), 'not a program', "the user's (broken) buildx is untouched");
  assert.match(r.plugins[1].note ?? '', /exists and is not Cove's: left as it is/);
  fs.rmSync(s.root, { recursive: true, force: true });
});

test('plugins: a copy that does not run on this host is taken back out; an image without plugins says to rebuild', async () => {
  const s = setup();
  fs.writeFileSync(path.join(s.image, IMAGE.cliPlugins, 'docker-compose'), '#!/bin/sh\necho "GLIBC_2.38 not found" >&2; exit 1\n', { mode: 0o555 });
  const r = await ensurePlugins({ dockerBin: s.docker, imageDir: s.image, check: false, env: s.env });
  assert.deepEqual(r.installed, ['buildx']);
  assert.equal(r.plugins[0].source, 'missing');
  assert.match(r.plugins[0].note ?? '', /does not run on this host/);
  assert.ok(!fs.existsSync(path.join(r.dir, 'docker-compose')), 'the copy that does not run is gone');
  const bare = await ensurePlugins({ dockerBin: s.docker, imageDir: null, check: false, env: { ...s.env, DOCKER_CONFIG: path.join(s.root, 'other') } });
  assert.deepEqual(bare.installed, []);
  assert.match(bare.plugins[0].note ?? '', /cove image build/);
  fs.rmSync(s.root, { recursive: true, force: true });
});
