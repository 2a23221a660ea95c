// End-to-end: the extension in a real VS Code extension host against a real booted sandbox. One
// sandbox serves the whole file, in order: open → terminals → Docker in the window → ports → stop.
// Under TCG everything in the guest is slow: each wait has an explicit deadline and says what it
// waited for.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { connect } from '../../../contract/client';
import { Requests, type SandboxInfo } from '../../../contract/protocol';
import type { CoveApi } from '../../../extension/src/extension';
// The project's one polling wait; esbuild bundles it into the suite (extension/scripts/bundle.mjs).
import { waitFor } from '../../helpers/wait';
import { within } from './within';

const MIN = 60_000;
/** A cold image build, then a TCG boot: the first open may take this long. */
const OPEN_DEADLINE = Number(process.env.COVE_E2E_OPEN_MINUTES ?? 40) * MIN;


/** Strips terminal escape sequences so output can be matched as text. */
function plain(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][A-Z0-9]|\r/g, '');
}

function get(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http.get(url, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });
}

/** Runs a command line in a host (non-sandbox) integrated terminal; returns what it printed. */
async function inHostTerminal(name: string, command: string, ms: number): Promise<string> {
  const out = path.join(os.tmpdir(), `cove-e2e-${process.pid}-${Date.now()}.out`);
  const t = vscode.window.createTerminal({ name, cwd: workspace });
  try {
    t.sendText(`{ ${command} ; } > ${out}.tmp 2>&1; mv ${out}.tmp ${out}`);
    return await waitFor(`"${command}" to finish in terminal ${name}`, ms, () => fs.existsSync(out) && fs.readFileSync(out, 'utf8'));
  } finally {
    t.dispose();
    fs.rmSync(out, { force: true });
  }
}

const workspace = fs.realpathSync(vscode.workspace.workspaceFolders?.[0]?.uri.fsPath ?? '.');
let api: CoveApi;
let sandbox: SandboxInfo;
let terminal: vscode.Terminal;

describe('Cove extension, end to end', function () {
  before(async function () {
    this.timeout(2 * MIN);
    const ext = vscode.extensions.getExtension<CoveApi>('cove.cove');
    assert.ok(ext, 'the Cove extension (cove.cove) is not loaded in this extension host');
    api = await within('the extension to activate', MIN, ext.activate());
    await within('the extension to reach coved (it starts one when none runs)', MIN, api.ready());
  });

  it('"Cove: Open in Sandbox" boots the sandbox of the workspace folder', async function () {
    this.timeout(OPEN_DEADLINE + MIN);
    const info = await within('cove.openInSandbox (image build if needed, then boot under TCG)', OPEN_DEADLINE, vscode.commands.executeCommand<SandboxInfo | undefined>('cove.openInSandbox'));
    assert.ok(info, `cove.openInSandbox returned nothing; the error shown was: ${api.lastError()}`);
    sandbox = info;
    assert.equal(info.state, 'running');
    assert.equal(info.workspace, workspace);
    assert.ok(info.dockerReady, 'dockerd in the guest does not answer /_ping');
    assert.ok(info.accel === 'tcg' || info.accel === 'kvm', `accel is ${info.accel}`);
    assert.equal(api.windowSandbox()?.name, info.name, 'the window does not treat the new sandbox as its own');
    assert.ok(fs.existsSync(path.join(api.home, 'vms', info.name, 'console.log')), 'the sandbox has no console log');
  });

  it('a sandbox terminal starts in the workspace and runs cat and docker ps', async function () {
    this.timeout(6 * MIN);
    // "Open in Sandbox" opens one (cove.openTerminalOnStart); the command opens another.
    terminal = await within('cove.openTerminal', MIN, vscode.commands.executeCommand<vscode.Terminal>('cove.openTerminal'));
    assert.ok(terminal, `cove.openTerminal returned nothing: ${api.lastError()}`);
    assert.equal(api.terminalSandbox(terminal), sandbox.name);
    const out = () => plain(api.terminalOutput(terminal) ?? '');
    await waitFor('the guest shell prompt', 2 * MIN, () => /[#$] ?$/m.test(out()));
    terminal.sendText('pwd; cat hello.txt; docker ps --format "ps:{{.Names}}"; echo "done-$((6*7))"');
    const text = await waitFor('pwd, cat and docker ps output in the sandbox terminal', 3 * MIN, () => /done-42/.test(out()) && out());
    assert.match(text, new RegExp(`^${workspace.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'), 'the shell did not start in the workspace path');
    assert.match(text, /hello from the e2e workspace/, 'cat of the workspace file did not print it');
    assert.doesNotMatch(text, /Cannot connect to the Docker daemon|command not found/, 'docker ps failed in the guest');
  });

  it('the sandbox terminal shows the shell exit status', async function () {
    this.timeout(3 * MIN);
    const t = await within('cove.openTerminal', MIN, vscode.commands.executeCommand<vscode.Terminal>('cove.openTerminal'));
    const out = () => plain(api.terminalOutput(t) ?? '');
    await waitFor('the guest shell prompt', 2 * MIN, () => /[#$] ?$/m.test(out()));
    t.sendText('exit 3');
    await waitFor('the exit status line', MIN, () => /exited: exit code 3/.test(out()));
    t.dispose();
  });

  it('the "Cove Sandbox" terminal profile opens a shell in the guest', async function () {
    this.timeout(3 * MIN);
    const before = new Set(vscode.window.terminals);
    // What the terminal dropdown does when the user picks the contributed profile.
    await vscode.commands.executeCommand('workbench.action.terminal.newWithProfile', {
      config: { extensionIdentifier: 'cove.cove', id: 'cove.sandboxTerminal', title: 'Cove Sandbox' },
    });
    const t = await waitFor('a terminal from the Cove Sandbox profile', MIN, () => vscode.window.terminals.find((x) => !before.has(x) && api.terminalSandbox(x) === sandbox.name));
    const out = () => plain(api.terminalOutput(t) ?? '');
    await waitFor('the guest shell prompt', 2 * MIN, () => /[#$] ?$/m.test(out()));
    t.sendText('uname -n; echo "profile-$((6*7))"');
    await waitFor('uname output in the profile terminal', MIN, () => /profile-42/.test(out()));
    assert.match(out(), new RegExp(`^${sandbox.name}$`, 'm'), 'the profile terminal does not run in the guest');
    t.dispose();
  });

  it("the window's Docker tooling points at the sandbox: a terminal's docker info reports the guest engine", async function () {
    this.timeout(5 * MIN);
    assert.equal(api.dockerTarget(), sandbox.name);
    const cfg = vscode.workspace.getConfiguration();
    const env = cfg.inspect<Record<string, string>>('containers.environment')?.workspaceValue;
    assert.equal(env?.DOCKER_CONTEXT, sandbox.context, 'containers.environment does not name the sandbox context');
    assert.equal(env?.DOCKER_HOST, sandbox.dockerHost);
    assert.equal(env?.KEEP_ME, 'yes', "the user's own containers.environment entries were lost");
    assert.equal(cfg.inspect('docker.context')?.workspaceValue, sandbox.context);
    const out = await inHostTerminal('e2e docker info', 'echo "ctx=$DOCKER_CONTEXT host=$DOCKER_HOST"; docker info --format "name={{.Name}} os={{.OperatingSystem}}"', 3 * MIN);
    assert.match(out, new RegExp(`ctx=${sandbox.context} host=${sandbox.dockerHost}`), `the terminal's environment is not the sandbox's: ${out}`);
    assert.match(out, new RegExp(`name=${sandbox.name} os=`), `docker info in a window terminal did not reach the guest engine: ${out}`);
  });

  it('a port a container publishes is forwarded to the host and listed', async function () {
    this.timeout(8 * MIN);
    const tar = path.join(workspace, 'busybox.tar');
    if (!fs.existsSync(tar)) {
      // The runner makes it from busybox-static; without it there is no image to run offline.
      console.log(`skipped: ${tar} is missing, so no container image can be loaded offline`);
      this.skip();
    }
    const out = () => plain(api.terminalOutput(terminal) ?? '');
    terminal.sendText('docker load -q -i busybox.tar && docker run -d --name e2e-web -p 18080:80 cove-test/busybox:latest httpd -f -p 80 -h /www && docker ps --format "ps:{{.Names}}"; echo "ran-$((6*7))"');
    await waitFor('docker load and docker run in the sandbox terminal', 5 * MIN, () => /ran-42/.test(out()));
    assert.match(out(), /ps:e2e-web/, 'docker ps in the sandbox terminal does not list the container');
    const port = await waitFor('the agent to report port 18080 and coved to forward it', 2 * MIN, () =>
      api.sandboxes().find((s) => s.name === sandbox.name)?.ports.find((p) => p.hostPort === 18080 && !p.error),
    );
    assert.equal(port.origin, 'auto');
    const body = await waitFor('http://127.0.0.1:18080/ to answer', MIN, () => get('http://127.0.0.1:18080/').catch(() => ''));
    assert.match(body, /hello from cove/);
  });

  it('reconnects when coved restarts (starting it again), and the sandbox keeps running', async function () {
    this.timeout(3 * MIN);
    const pidFile = path.join(api.home, 'coved.pid');
    const before = fs.readFileSync(pidFile, 'utf8').trim();
    const conn = await connect({ home: api.home, autoStart: false });
    await conn.sendRequest(Requests.shutdown).catch(() => undefined);
    conn.dispose();
    const after = await waitFor('the extension to start a new coved', 2 * MIN, () => {
      const p = fs.existsSync(pidFile) ? fs.readFileSync(pidFile, 'utf8').trim() : '';
      return p !== '' && p !== before && p;
    });
    assert.notEqual(after, before);
    await waitFor('the extension to reconnect', MIN, () => api.connected());
    await vscode.commands.executeCommand('cove.refresh');
    await waitFor('the extension to list the running sandbox again', MIN, () => api.sandboxes().find((s) => s.name === sandbox.name && s.state === 'running'));
  });

  it('"Cove: Stop Sandbox" stops it and restores the Docker settings of the window', async function () {
    this.timeout(4 * MIN);
    for (const t of vscode.window.terminals) t.dispose();
    const info = await within('cove.stopSandbox', 3 * MIN, vscode.commands.executeCommand<SandboxInfo | undefined>('cove.stopSandbox', sandbox.name));
    assert.ok(info, `cove.stopSandbox returned nothing: ${api.lastError()}`);
    assert.equal(info.state, 'stopped');
    await waitFor('the Docker settings to be restored', 30_000, () => api.dockerTarget() === undefined);
    const cfg = vscode.workspace.getConfiguration();
    assert.deepEqual(cfg.inspect('containers.environment')?.workspaceValue, { KEEP_ME: 'yes' }, 'containers.environment was not restored');
    assert.equal(cfg.inspect('docker.context')?.workspaceValue, undefined, 'docker.context was not removed');
    assert.equal(cfg.inspect('docker.environment')?.workspaceValue, undefined, 'docker.environment was not removed');
    const out = await inHostTerminal('e2e env after stop', 'echo "ctx=[$DOCKER_CONTEXT] host=[$DOCKER_HOST]"', MIN);
    assert.match(out, /ctx=\[\] host=\[\]/, `new terminals still get the sandbox's Docker environment: ${out}`);
  });
});
