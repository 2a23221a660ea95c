// Dev Containers as their users run them: the real `@devcontainers/cli` (its bin from node_modules)
// against one sandbox, through the `cove-dc` context (DOCKER_CONTEXT plus the harness's
// DOCKER_CONFIG: the CLI runs the host docker CLI, and its compose and buildx plugins, with its own
// environment). Three configs from test/fixtures/devcontainer/, each copied into the sandbox's
// shared folder: an image config, a Dockerfile config with a local feature, and a compose config
// with a second service. For each, `devcontainer up`, then `devcontainer exec` reads a file the
// test wrote in the workspace and writes one the test reads back on the host, byte for byte.
import { strict as assert } from 'node:assert';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { makeBusyboxImage } from '../helpers/busybox-image';
import { DOCKER_CONFIG, REPO, SCRATCH, cove, covedPid, docker, ok, resetTestHome, run, testEnv, workspace, type RunResult } from '../helpers/harness';

const NAME = 'dc';
const CTX = `cove-${NAME}`;
const DEVCONTAINER = path.join(REPO, 'node_modules', '@devcontainers', 'cli', 'devcontainer.js');
const FIXTURES = path.join(REPO, 'test', 'fixtures', 'devcontainer');
/** The CLI's own state (compose override files, feature build contexts), kept out of /tmp. */
const USER_DATA = path.join(SCRATCH, 'devcontainer-data');
const MIN = 60_000;
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let ws = '';
let image = '';

/** `devcontainer ARGS` with the host docker CLI pointed at the sandbox by DOCKER_CONTEXT. */
function devcontainer(args: string[], timeoutMs: number): Promise<RunResult> {
  return run(process.execPath, [DEVCONTAINER, ...args], { timeoutMs, env: testEnv({ DOCKER_CONTEXT: CTX }) });
}

interface UpResult {
  outcome: string;
  containerId: string;
  remoteWorkspaceFolder: string;
  composeProjectName?: string;
}

/** A copy of one fixture inside the sandbox's shared folder, so its bind mounts are shared paths. */
function fixtureCopy(config: string): string {
  const dir = path.join(ws, config);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.cpSync(path.join(FIXTURES, config), dir, { recursive: true });
  return dir;
}

async function up(folder: string, timeoutMs: number): Promise<UpResult> {
  const r = ok(
    await devcontainer(
      [
        'up',
        '--workspace-folder', folder,
        '--user-data-folder', USER_DATA,
        // The fixture copies sit inside this repository's Git tree: without this the CLI would mount
        // the repository root, which is not the sandbox's shared folder.
        '--mount-workspace-git-root', 'false',
        '--log-format', 'json',
      ],
      timeoutMs,
    ),
    `devcontainer up ${path.basename(folder)}`,
  );
  // The result is the last line of stdout; the log lines before it are JSON too.
  const last = r.stdout.trim().split('\n').pop() ?? '';
  const res = JSON.parse(last) as UpResult;
  assert.equal(res.outcome, 'success', `devcontainer up: ${last}`);
  assert.match(res.containerId, /^[0-9a-f]{64}$/, `devcontainer up returned no container id: ${last}`);
  return res;
}

/**
 * The round trip through the workspace: the test writes a text file and random bytes on the host;
 * `devcontainer exec` reads both and writes random bytes of its own, whose checksum it prints; the
 * test reads that file on the host. Returns what the exec printed after the checksums.
 */
async function roundTrip(folder: string, res: UpResult, extra: string): Promise<string> {
  const text = `written on the host for ${path.basename(folder)}\n`;
  const hostBytes = randomBytes(256 * 1024);
  fs.writeFileSync(path.join(folder, 'from-host.txt'), text);
  fs.writeFileSync(path.join(folder, 'from-host.bin'), hostBytes);
  fs.rmSync(path.join(folder, 'from-container.bin'), { force: true });
  const wf = res.remoteWorkspaceFolder;
  const script = [
    `cd '${wf}'`,
    'cat from-host.txt',
    'sha256sum from-host.bin',
    'head -c 200000 /dev/urandom > from-container.bin',
    'sha256sum from-container.bin',
    'echo "---"',
    extra,
  ].join(' && ');
  const r = ok(
    await devcontainer(['exec', '--workspace-folder', folder, '--user-data-folder', USER_DATA, '--mount-workspace-git-root', 'false', 'sh', '-c', script], 5 * MIN),
    `devcontainer exec in ${path.basename(folder)}`,
  );
  const [before, after = ''] = r.stdout.split('---\n');
  const lines = before.split('\n');
  assert.equal(`${lines[0]}\n`, text, `the container read another text than the host wrote: ${r.stdout}`);
  assert.equal(lines[1].split(/\s+/)[0], sha256(hostBytes), 'the container read the host file, byte for byte');
  const containerSum = lines[2].split(/\s+/)[0];
  assert.match(containerSum, /^[0-9a-f]{64}$/, `no checksum of the container's file: ${r.stdout}`);
  const back = fs.readFileSync(path.join(folder, 'from-container.bin'));
  assert.equal(back.length, 200_000);
  assert.equal(sha256(back), containerSum, 'the file the container wrote is on the host, byte for byte');
  return after;
}

/** Removes every container (and compose network) the CLI made for `folder`. */
async function removeContainers(folder: string, composeProject?: string): Promise<void> {
  const filters = [`label=devcontainer.local_folder=${folder}`];
  if (composeProject) filters.push(`label=com.docker.compose.project=${composeProject}`);
  for (const f of filters) {
    const ids = (await docker(CTX, ['ps', '-aq', '--filter', f], 2 * MIN)).stdout.split('\n').filter(Boolean);
    if (ids.length > 0) ok(await docker(CTX, ['rm', '-f', ...ids], 3 * MIN), `docker rm -f (${f})`);
  }
  if (composeProject) await docker(CTX, ['network', 'rm', `${composeProject}_default`], MIN).catch(() => undefined);
}

async function composeProjectOf(containerId: string): Promise<string> {
  const r = ok(await docker(CTX, ['inspect', '--format', '{{index .Config.Labels "com.docker.compose.project"}}', containerId], MIN), 'docker inspect the compose container');
  return r.stdout.trim();
}

describe('Dev Containers CLI through the sandbox context', { timeout: 60 * MIN }, () => {
  before(async () => {
    resetTestHome();
    ws = workspace(NAME);
    fs.rmSync(USER_DATA, { recursive: true, force: true });
    assert.ok(fs.existsSync(DEVCONTAINER), `${DEVCONTAINER} is missing: run npm ci (it is a devDependency)`);
    const tar = path.join(SCRATCH, 'busybox.tar');
    image = makeBusyboxImage(tar);
    ok(await cove(['up', ws, '--name', NAME], 20 * MIN), 'cove up');
    ok(await docker(CTX, ['load', '-i', tar], 5 * MIN), 'docker load of the busybox image');
  });

  after(async () => {
    await cove(['rm', '--force', NAME], 3 * MIN).catch(() => undefined);
    const pid = covedPid();
    if (pid) process.kill(pid, 'SIGTERM');
  });

  test('(a) an image config: devcontainer up and exec, files both ways', { timeout: 20 * MIN }, async () => {
    const folder = fixtureCopy('image');
    try {
      const res = await up(folder, 15 * MIN);
      assert.equal(res.remoteWorkspaceFolder, '/workspaces/image');
      const inspect = ok(await docker(CTX, ['inspect', '--format', '{{.Config.Image}}', res.containerId], MIN), 'docker inspect');
      assert.equal(inspect.stdout.trim(), image, 'the dev container runs the busybox image loaded into the sandbox');
      const out = await roundTrip(folder, res, 'echo "config=$COVE_CONFIG"');
      assert.equal(out, 'config=image\n');
    } finally {
      await removeContainers(folder);
    }
  });

  test('(b) a Dockerfile config with a local feature: the feature installs, files both ways', { timeout: 30 * MIN }, async () => {
    const folder = fixtureCopy('dockerfile');
    try {
      const res = await up(folder, 25 * MIN);
      assert.equal(res.remoteWorkspaceFolder, '/workspaces/dockerfile');
      const out = await roundTrip(folder, res, 'cat /built.txt /usr/local/share/cove-feature/installed && echo "config=$COVE_CONFIG feature=$COVE_FEATURE"');
      assert.equal(out, 'built-by-dockerfile\nhello from the local feature\n0\nconfig=dockerfile feature=installed\n', "the Dockerfile's RUN, the feature's install.sh (as root, with its option) and its containerEnv");
    } finally {
      await removeContainers(folder);
    }
  });

  test('(c) a compose config with a second service: the service answers, files both ways', { timeout: 30 * MIN }, async () => {
    // `cove up` installs the image's compose plugin where the host's docker CLI has none; the CLI
    // runs `docker compose` (or docker-compose) through the same context.
    const compose = await run('docker', ['compose', 'version'], { timeoutMs: MIN });
    assert.equal(compose.code, 0, `the host docker CLI has no compose plugin after cove up (looked in ${path.join(DOCKER_CONFIG, 'cli-plugins')}): ${compose.stderr.trim()}`);
    const folder = fixtureCopy('compose');
    let project: string | undefined;
    try {
      const res = await up(folder, 25 * MIN);
      project = res.composeProjectName ?? (await composeProjectOf(res.containerId));
      assert.equal(res.remoteWorkspaceFolder, '/workspaces/app');
      // The second service by its name on the compose network; httpd may still be starting.
      const out = await roundTrip(folder, res, 'for i in $(seq 60); do wget -qO- http://web/ && break; sleep 1; done; echo "config=$COVE_CONFIG"');
      assert.equal(out, 'hello from cove\nconfig=compose\n', 'the app container reaches the web service by name');
      const ps = ok(await docker(CTX, ['ps', '--filter', `label=com.docker.compose.project=${project}`, '--format', '{{.Label "com.docker.compose.service"}}'], MIN), 'docker ps of the project');
      assert.deepEqual(ps.stdout.trim().split('\n').sort(), ['app', 'web']);
    } finally {
      project ??= await composeProjectOf(`${path.basename(folder)}_devcontainer-app-1`).catch(() => undefined);
      await removeContainers(folder, project);
    }
  });
});
