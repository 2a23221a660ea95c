// The Docker sidebar as its users run it: `@microsoft/vscode-container-client` (the library behind
// the Docker / Container Tools extension) lists the sandbox's containers and images with this
// window's settings, read the way that extension reads them: its DockerClient runs the command in
// `containers.containerCommand` (default `docker`), through the shell-less stream runner, with
// process.env overlaid by `containers.environment` (Container Tools) or `docker.environment` (the
// Docker extension before it). "Cove: Open in Sandbox" writes those settings; nothing else here
// points docker at the sandbox (the runner clears DOCKER_HOST and DOCKER_CONTEXT).
// It runs after sandbox.test.js, which stops the sandbox last: it opens the same sandbox again (the
// settings must come back on a second open) and stops it at the end, as it found it.
import { DockerClient, ShellStreamCommandRunnerFactory, type CommandResponseBase, type PromiseCommandResponse } from '@microsoft/vscode-container-client';
import * as assert from 'node:assert/strict';
import * as child_process from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import * as vscode from 'vscode';
import type { SandboxInfo } from '../../../contract/protocol';
import type { CoveApi } from '../../../extension/src/extension';
// The project's one polling wait; esbuild bundles it into the suite (extension/scripts/bundle.mjs).
import { waitFor } from '../../helpers/wait';
import { within } from './within';

const MIN = 60_000;
const IMAGE = 'cove-test/busybox:latest';
const CONTAINER = 'e2e-sidebar';
/** Restarting the stopped sandbox: a boot from its own disk under TCG. */
const OPEN_DEADLINE = 15 * MIN;

const workspace = fs.realpathSync(vscode.workspace.workspaceFolders?.[0]?.uri.fsPath ?? '.');
let api: CoveApi;
let sandbox: SandboxInfo;


type EnvSetting = 'containers.environment' | 'docker.environment';

/** The environment the extension's command runner gets: process.env, then the setting's entries. */
function extensionEnv(setting: EnvSetting | undefined): NodeJS.ProcessEnv {
  const env = { ...process.env };
  if (setting) {
    const [section, key] = setting.split('.');
    Object.assign(env, vscode.workspace.getConfiguration(section).get<NodeJS.ProcessEnv>(key, {}));
  }
  return env;
}

/** The DockerClient as Container Tools configures it: the command from `containers.containerCommand`. */
function client(): DockerClient {
  const c = new DockerClient();
  c.commandName = vscode.workspace.getConfiguration('containers').get<string>('containerCommand') || 'docker';
  return c;
}

/**
 * Runs one of the client's commands as the extension does (no shell, strict parsing), within a
 * deadline; a failure carries the command line and what it wrote to stderr.
 */
async function runCommand<T>(what: string, setting: EnvSetting | undefined, response: Promise<PromiseCommandResponse<T>>, ms = 3 * MIN): Promise<T> {
  let stderr = '';
  const stdErrPipe = new PassThrough();
  stdErrPipe.on('data', (d: Buffer) => (stderr += d.toString()));
  const cancel = new vscode.CancellationTokenSource();
  const factory = new ShellStreamCommandRunnerFactory({ env: extensionEnv(setting), shell: false, strict: true, stdErrPipe, cancellationToken: cancel.token });
  const resp = await response;
  const t = setTimeout(() => cancel.cancel(), ms);
  try {
    return await factory.getCommandRunner()(resp);
  } catch (e) {
    // The runner settles on the process's exit, which can come before the last of its stderr.
    await new Promise((r) => setTimeout(r, 200));
    const why = cancel.token.isCancellationRequested ? `did not finish within ${ms / 1000} s` : `failed: ${e instanceof Error ? e.message : String(e)}`;
    throw new Error(`${what} (\`${commandLine(resp)}\`, env from ${setting ?? 'process.env only'}) ${why}; stderr: ${stderr.trim()}`, { cause: e });
  } finally {
    clearTimeout(t);
    cancel.dispose();
  }
}

function commandLine(r: CommandResponseBase): string {
  return [r.command, ...r.args.map((a) => (typeof a === 'string' ? a : a.value))].join(' ');
}

describe('The Docker sidebar (vscode-container-client) with the window settings', function () {
  before(async function () {
    this.timeout(OPEN_DEADLINE + 2 * MIN);
    const ext = vscode.extensions.getExtension<CoveApi>('cove.cove');
    assert.ok(ext, 'the Cove extension (cove.cove) is not loaded in this extension host');
    api = await within('the extension to activate', MIN, ext.activate());
    await within('the extension to reach coved', MIN, api.ready());
    // The sandbox of sandbox.test.js, which stopped it last; a fresh run opens (or boots) it.
    const info = await within('cove.openInSandbox (starting the stopped sandbox again)', OPEN_DEADLINE, vscode.commands.executeCommand<SandboxInfo | undefined>('cove.openInSandbox'));
    assert.ok(info, `cove.openInSandbox returned nothing; the error shown was: ${api.lastError()}`);
    assert.equal(info.state, 'running');
    sandbox = info;
    await waitFor('the window Docker settings to point at the sandbox again', 30_000, () => api.dockerTarget() === sandbox.name);
    // The image: sandbox.test.js loaded it in the port test (it survives stop and start); load it
    // when that test was skipped or this file runs alone.
    const tar = path.join(workspace, 'busybox.tar');
    const have = await runCommand('docker image ls', 'containers.environment', client().listImages({}));
    if (!have.some((i) => i.image.originalName === IMAGE) && fs.existsSync(tar)) {
      const r = child_process.spawnSync('docker', ['load', '-q', '-i', tar], { env: extensionEnv('containers.environment'), encoding: 'utf8', timeout: 5 * MIN });
      assert.equal(r.status, 0, `docker load of ${tar} through the window settings failed: ${r.stderr}`);
    }
  });

  after(async function () {
    this.timeout(5 * MIN);
    if (!sandbox) return;
    await runCommand('docker rm -f', 'containers.environment', client().removeContainers({ containers: [CONTAINER], force: true })).catch(() => undefined);
    // As sandbox.test.js left it: stopped, with the window's Docker settings restored.
    await within('cove.stopSandbox', 3 * MIN, vscode.commands.executeCommand('cove.stopSandbox', sandbox.name));
  });

  it('the settings Open in Sandbox wrote reach the engine in the guest', async function () {
    this.timeout(3 * MIN);
    const cfg = vscode.workspace.getConfiguration();
    assert.equal(cfg.get<Record<string, string>>('containers.environment')?.DOCKER_HOST, sandbox.dockerHost, 'containers.environment does not point at the sandbox');
    const info = await runCommand('docker info', 'containers.environment', client().info({}));
    assert.equal(info.osType, 'linux');
    const version = await runCommand('docker version', 'containers.environment', client().version({}));
    assert.match(version.server ?? '', /^\d+\.\d+/, 'the guest dockerd did not report its API version');
    // The context the settings name is in this window's Docker config, pointing at the sandbox socket.
    assert.ok(sandbox.context, 'the sandbox has no Docker context');
    const contexts = await runCommand('docker context inspect', 'containers.environment', client().inspectContexts({ contexts: [sandbox.context] }));
    assert.equal(contexts[0]?.name, sandbox.context);
  });

  it('lists a container the test started and the busybox image, with either extension setting', async function () {
    this.timeout(8 * MIN);
    const dc = client();
    const id = await runCommand(
      'docker run -d',
      'containers.environment',
      dc.runContainer({ imageRef: IMAGE, name: CONTAINER, detached: true, labels: { 'cove.e2e': 'sidebar' }, command: ['sleep', '3600'] }),
      5 * MIN,
    );
    assert.match(id ?? '', /^[0-9a-f]{12,64}$/, `docker run returned no container id: ${id}`);
    for (const setting of ['containers.environment', 'docker.environment'] as const) {
      const containers = await runCommand('docker container ls', setting, dc.listContainers({ all: true }));
      const c = containers.find((x) => x.name === CONTAINER);
      assert.ok(c, `the sidebar (${setting}) does not list ${CONTAINER}: ${containers.map((x) => x.name).join(', ')}`);
      assert.equal(c.state, 'running');
      assert.equal(c.image.originalName, IMAGE);
      assert.equal(c.labels['cove.e2e'], 'sidebar');
      const images = await runCommand('docker image ls', setting, dc.listImages({}));
      assert.ok(
        images.some((i) => i.image.originalName === IMAGE),
        `the sidebar (${setting}) does not list ${IMAGE}: ${images.map((i) => i.image.originalName).join(', ')}`,
      );
    }
    // Without the settings (the runner clears DOCKER_HOST and DOCKER_CONTEXT), the same client
    // does not see the sandbox: the settings are what point the sidebar at it.
    const bare = await runCommand('docker container ls', undefined, dc.listContainers({ all: true }), MIN).catch(() => []);
    assert.ok(!bare.some((x) => x.name === CONTAINER), 'the container is listed without the window settings too');
  });
});
