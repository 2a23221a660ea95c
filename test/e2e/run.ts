// The end-to-end runner (`npm run test:e2e`): the extension in a real VS Code — code-server's
// server, as no desktop VS Code can be downloaded here — opened in headless Chromium.
//   1. extension tests: the mocha suite (test/e2e/suite) runs in the extension host against a real
//      sandbox, with the development extension and, installed, a stub that registers the Docker
//      extension's settings keys (the real one cannot be downloaded here);
//   2. the VSIX installs into code-server with --install-extension;
//   3. a UI smoke test, with the installed VSIX (so its bundled coved is the one started): command
//      palette → "Cove: Open in Sandbox" → the progress notification → text in the sandbox terminal,
//      with screenshots in test/e2e/artifacts/.
// State is isolated: COVE_HOME is .cove-test/e2e-home (its images, build cache and locks are the
// integration tests' through symlinks, so the image is built once), DOCKER_CONFIG is
// .cove-test/e2e-docker. Every VM and coved started is killed at the end, pass or fail.
import * as child_process from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { connect } from '../../contract/client';
import { Requests } from '../../contract/protocol';
import { makeBusyboxImage } from '../helpers/busybox-image';
import { waitFor } from '../helpers/wait';

const REPO = path.resolve(__dirname, '..', '..', '..');
const TEST_ROOT = path.join(REPO, '.cove-test');
const SHARED_HOME = path.join(TEST_ROOT, 'home');
const HOME = path.join(TEST_ROOT, 'e2e-home');
const DOCKER_CONFIG = path.join(TEST_ROOT, 'e2e-docker');
const RUN_DIR = path.join(TEST_ROOT, 'e2e-run');
const WORKSPACE = path.join(TEST_ROOT, 'e2e-ws', 'cove-e2e');
const ARTIFACTS = path.join(REPO, 'test', 'e2e', 'artifacts');
const EXTENSION = path.join(REPO, 'extension');
const STUB = path.join(REPO, 'test', 'e2e', 'fixtures', 'docker-settings-stub');
const SUITE = path.join(REPO, 'out', 'e2e', 'suite', 'index.js');
const CODE_SERVER_VERSION = process.env.COVE_CODE_SERVER_VERSION ?? '4.100.3';
const CODE_SERVER = path.join(REPO, '.tools', `code-server-${CODE_SERVER_VERSION}`);
const SERVER_MAIN = path.join(CODE_SERVER, 'lib', 'vscode', 'out', 'server-main.js');
const CHROMIUM = process.env.COVE_CHROMIUM ?? '/usr/bin/chromium';
const VSIX = path.join(REPO, 'dist', `cove-${(JSON.parse(fs.readFileSync(path.join(EXTENSION, 'package.json'), 'utf8')) as { version: string }).version}.vsix`);
const MIN = 60_000;

interface Result {
  title: string;
  state: 'passed' | 'failed' | 'skipped';
  ms?: number;
  error?: string;
}

/** The results the suite has appended to `file` so far: newline-delimited JSON, read with node:readline. */
async function readResults(file: string): Promise<Result[]> {
  if (!fs.existsSync(file)) return [];
  const out: Result[] = [];
  const lines = readline.createInterface({ input: fs.createReadStream(file), crlfDelay: Infinity });
  for await (const line of lines) if (line.trim() !== '') out.push(JSON.parse(line) as Result);
  return out;
}

const results: Result[] = [];
const cleanups: Array<() => Promise<void> | void> = [];
const t0 = Date.now();

function log(msg: string): void {
  process.stdout.write(`[e2e ${((Date.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${msg}\n`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


function env(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, COVE_HOME: HOME, DOCKER_CONFIG, ...extra };
  delete e.DOCKER_HOST;
  delete e.DOCKER_CONTEXT;
  delete e.COVE_COVED;
  return e;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function readPid(file: string): number | null {
  try {
    const n = Number(fs.readFileSync(file, 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

/** Removes every sandbox of the e2e home and stops its coved; then kills what is left by pid. */
async function stopEverything(): Promise<void> {
  try {
    const conn = await connect({ home: HOME, autoStart: false });
    try {
      for (const sb of await conn.sendRequest(Requests.list)) {
        log(`cleanup: removing sandbox ${sb.name} (${sb.state})`);
        await Promise.race([conn.sendRequest(Requests.remove, { name: sb.name, force: true }), sleep(3 * MIN)]).catch((e: unknown) => log(`cleanup: ${String(e)}`));
      }
      await Promise.race([conn.sendRequest(Requests.shutdown), sleep(10_000)]).catch(() => undefined);
    } finally {
      conn.dispose();
    }
  } catch {
    // No coved running for the e2e home.
  }
  const vms = path.join(HOME, 'vms');
  const pids: number[] = [];
  if (fs.existsSync(vms)) {
    for (const n of fs.readdirSync(vms)) for (const f of ['qemu.pid', 'virtiofsd.pid']) pids.push(readPid(path.join(vms, n, f)) ?? 0);
  }
  pids.push(readPid(path.join(HOME, 'coved.pid')) ?? 0);
  for (const pid of pids.filter((p) => p > 0 && pidAlive(p))) {
    log(`cleanup: killing leftover pid ${pid}`);
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
}

/** A fresh e2e home whose image store, build cache and locks are the integration tests' own. */
function prepareHome(): void {
  fs.rmSync(HOME, { recursive: true, force: true });
  fs.mkdirSync(HOME, { recursive: true, mode: 0o700 });
  for (const d of ['images', 'cache', 'locks']) {
    fs.mkdirSync(path.join(SHARED_HOME, d), { recursive: true });
    fs.symlinkSync(path.join(SHARED_HOME, d), path.join(HOME, d));
  }
  fs.rmSync(DOCKER_CONFIG, { recursive: true, force: true });
  fs.mkdirSync(DOCKER_CONFIG, { recursive: true });
}

function prepareWorkspace(): void {
  fs.rmSync(path.dirname(WORKSPACE), { recursive: true, force: true });
  fs.mkdirSync(path.join(WORKSPACE, '.vscode'), { recursive: true });
  fs.writeFileSync(path.join(WORKSPACE, 'hello.txt'), 'hello from the e2e workspace\n');
  // A setting of the user's own: Cove must merge into it and put it back.
  fs.writeFileSync(path.join(WORKSPACE, '.vscode', 'settings.json'), JSON.stringify({ 'containers.environment': { KEEP_ME: 'yes' } }, null, 2));
  try {
    makeBusyboxImage(path.join(WORKSPACE, 'busybox.tar'));
  } catch (e) {
    log(`no busybox image for the port test (${(e as Error).message}); it will be skipped`);
  }
}

const USER_SETTINGS = {
  'security.workspace.trust.enabled': false,
  'terminal.integrated.gpuAcceleration': 'off',
  'workbench.startupEditor': 'none',
  'workbench.tips.enabled': false,
  'extensions.autoCheckUpdates': false,
  'extensions.autoUpdate': false,
  'telemetry.telemetryLevel': 'off',
  'update.mode': 'none',
  'terminal.integrated.enablePersistentSessions': false,
  'window.confirmBeforeClose': 'never',
  'git.openRepositoryInParentFolders': 'never',
};

interface Server {
  url: string;
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

/** Starts VS Code's server from code-server with fresh user data and extensions folders. */
async function startServer(label: string, extensionsDir: string, extra: NodeJS.ProcessEnv): Promise<Server> {
  const dir = path.join(RUN_DIR, label);
  const userData = path.join(dir, 'user-data');
  const serverData = path.join(dir, 'server-data');
  for (const settingsDir of [path.join(userData, 'User'), path.join(serverData, 'data', 'User'), path.join(serverData, 'data', 'Machine')]) {
    fs.mkdirSync(settingsDir, { recursive: true });
    fs.writeFileSync(path.join(settingsDir, 'settings.json'), JSON.stringify(USER_SETTINGS, null, 2));
  }
  const port = await freePort();
  const logFile = path.join(dir, 'server.log');
  const out = fs.openSync(logFile, 'w');
  const child = child_process.spawn(
    process.execPath,
    [
      SERVER_MAIN,
      '--host', '127.0.0.1',
      '--port', String(port),
      '--enable-smoke-test-driver',
      '--without-connection-token',
      '--accept-server-license-terms',
      '--disable-telemetry',
      '--disable-workspace-trust',
      '--user-data-dir', userData,
      '--server-data-dir', serverData,
      '--extensions-dir', extensionsDir,
    ],
    { env: env(extra), stdio: ['ignore', out, out], detached: true },
  );
  fs.closeSync(out);
  const stop = async () => {
    if (child.exitCode === null && child.pid) {
      try {
        process.kill(-child.pid, 'SIGTERM');
      } catch {
        // Gone already.
      }
      await Promise.race([new Promise((r) => child.once('exit', r)), sleep(5000)]);
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // Gone.
      }
    }
  };
  cleanups.push(stop);
  const url = `http://127.0.0.1:${port}/`;
  await waitFor(`VS Code's server to answer on ${url} (log: ${logFile})`, 2 * MIN, () =>
    new Promise<boolean>((resolve) => {
      if (child.exitCode !== null) throw new Error(`the server exited with ${child.exitCode}: ${fs.readFileSync(logFile, 'utf8').slice(-2000)}`);
      http.get(url, (res) => (res.resume(), resolve((res.statusCode ?? 500) < 500))).on('error', () => resolve(false));
    }),
  );
  log(`${label}: VS Code server (code-server ${CODE_SERVER_VERSION}) on ${url}, log ${path.relative(REPO, logFile)}`);
  return { url, stop };
}

async function openBrowser(label: string): Promise<{ context: BrowserContext; page: Page }> {
  const context = await chromium.launchPersistentContext(path.join(RUN_DIR, label, 'chromium'), {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1440, height: 900 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  cleanups.push(() => context.close().catch(() => undefined));
  const page = context.pages()[0] ?? (await context.newPage());
  return { context, page };
}

function workbenchUrl(base: string, payload?: Array<[string, string]>): string {
  const q = new URLSearchParams({ folder: WORKSPACE });
  if (payload) q.set('payload', JSON.stringify(payload));
  return `${base}?${q.toString()}`;
}

/** Phase 1: the mocha suite inside the extension host. */
async function extensionTests(): Promise<void> {
  const resultsFile = path.join(RUN_DIR, 'results.jsonl');
  fs.rmSync(resultsFile, { force: true });
  const extensionsDir = path.join(RUN_DIR, 'tests', 'extensions');
  installStub(extensionsDir);
  const server = await startServer('tests', extensionsDir, { COVE_E2E_RESULTS: resultsFile, COVE_COVED: path.join(EXTENSION, 'dist', 'coved.js') });
  const { context, page } = await openBrowser('tests');
  // Set by the exit handler; a cast keeps TypeScript from narrowing it to null here.
  let exitCode = null as number | null;
  await page.exposeFunction('codeAutomationLog', (type: string, args: unknown[]) => {
    // The workbench's own errors, first line only (open-vsx.org is unreachable here: expected).
    const line = args.map((a) => (typeof a === 'string' ? a : JSON.stringify(a))).join(' ').split('\n')[0];
    if (type === 'error' && !/open-vsx\.org|Service Worker/.test(line)) process.stdout.write(`  [workbench] ${line}\n`);
  });
  await page.exposeFunction('codeAutomationExit', (code: number) => {
    exitCode = code;
  });
  // Live progress: each result the suite appends, as it comes.
  let shown = 0;
  let flushing: Promise<void> = Promise.resolve();
  const flush = () =>
    (flushing = flushing.then(async () => {
      const done = await readResults(resultsFile).catch(() => null);
      if (!done) return; // A line half written: read it on the next tick.
      for (const r of done.slice(shown)) {
        log(`tests: ${r.state === 'passed' ? '✔' : r.state === 'failed' ? '✖' : '-'} ${r.title}${r.ms !== undefined ? ` (${(r.ms / 1000).toFixed(1)} s)` : ''}`);
      }
      shown = Math.max(shown, done.length);
    }));
  const tail = setInterval(() => void flush(), 1000);
  cleanups.push(() => clearInterval(tail));
  // Paths on the server, as vscode-remote URIs whose authority is the server itself.
  const remote = (p: string) => `vscode-remote://${new URL(server.url).host}${p}`;
  const url = workbenchUrl(server.url, [
    ['extensionDevelopmentPath', remote(EXTENSION)],
    ['extensionTestsPath', remote(SUITE)],
    ['skipWelcome', 'true'],
  ]);
  log(`tests: opening the workbench with the extension under test and the suite ${path.relative(REPO, SUITE)}`);
  await page.goto(url);
  const deadlineMin = Number(process.env.COVE_E2E_OPEN_MINUTES ?? 40) + 25;
  try {
    await waitFor(`the extension tests to finish (codeAutomationExit); results in ${resultsFile}`, deadlineMin * MIN, () => exitCode !== null, 1000);
  } catch (e) {
    await page.screenshot({ path: path.join(ARTIFACTS, 'extension-tests-timeout.png') }).catch(() => undefined);
    results.push({ title: 'extension tests finish within the deadline', state: 'failed', error: (e as Error).message });
  }
  clearInterval(tail);
  await flush();
  const lines = await readResults(resultsFile);
  results.push(...lines);
  if (exitCode !== null && exitCode !== 0 && !lines.some((r) => r.state === 'failed')) {
    results.push({ title: 'extension host exits 0', state: 'failed', error: `the extension host exited with ${exitCode} (see ${path.join(RUN_DIR, 'tests', 'server.log')})` });
  }
  if (lines.length === 0) results.push({ title: 'the extension tests report results', state: 'failed', error: `no results in ${resultsFile}` });
  log(`tests: extension host exited with ${exitCode}`);
  await context.close().catch(() => undefined);
  await server.stop();
}

/** `code-server --install-extension VSIX` into a fresh extensions folder (offline). */
function codeServerInstall(vsix: string, extensionsDir: string): child_process.SpawnSyncReturns<string> {
  const dir = path.join(RUN_DIR, 'install');
  fs.mkdirSync(dir, { recursive: true });
  fs.mkdirSync(extensionsDir, { recursive: true });
  return child_process.spawnSync(
    process.execPath,
    [
      path.join(CODE_SERVER, 'out', 'node', 'entry.js'),
      '--config', path.join(dir, 'config.yaml'),
      '--user-data-dir', path.join(dir, 'user-data'),
      '--extensions-dir', extensionsDir,
      '--install-extension', vsix,
    ],
    { env: env(), encoding: 'utf8', timeout: 3 * MIN },
  );
}

/**
 * The stub that registers the Docker extension's settings keys, packaged and installed like any
 * extension (the workbench takes one extensionDevelopmentPath only: the extension under test).
 */
function installStub(extensionsDir: string): void {
  const vsix = path.join(RUN_DIR, 'docker-settings-stub.vsix');
  const vsce = path.join(REPO, 'node_modules', '.bin', 'vsce');
  const p = child_process.spawnSync(vsce, ['package', '--no-dependencies', '--skip-license', '--allow-missing-repository', '--out', vsix], { cwd: STUB, encoding: 'utf8', timeout: 2 * MIN });
  if (p.status !== 0) throw new Error(`packaging the settings stub failed: ${p.stdout}\n${p.stderr}`);
  const r = codeServerInstall(vsix, extensionsDir);
  if (r.status !== 0) throw new Error(`installing the settings stub failed: ${r.stdout}\n${r.stderr}`);
}

/** Phase 2: the VSIX installs into code-server offline. */
async function installVsix(extensionsDir: string): Promise<boolean> {
  const title = 'the VSIX installs into code-server with --install-extension';
  const started = Date.now();
  if (!fs.existsSync(VSIX)) {
    results.push({ title, state: 'failed', error: `${VSIX} is missing: run npm run package` });
    return false;
  }
  const r = codeServerInstall(VSIX, extensionsDir);
  const installed = fs.existsSync(extensionsDir) && fs.readdirSync(extensionsDir).find((d) => d.startsWith('cove.cove-'));
  const ok = r.status === 0 && !!installed && fs.existsSync(path.join(extensionsDir, installed, 'dist', 'coved.js'));
  results.push({ title, state: ok ? 'passed' : 'failed', ms: Date.now() - started, error: ok ? undefined : `exit ${r.status}: ${r.stdout}\n${r.stderr}` });
  log(`vsix: ${ok ? `installed as ${installed}` : 'install failed'} (${(fs.statSync(VSIX).size / 1024).toFixed(0)} KiB)`);
  return ok;
}

/** Text of the visible terminal (the DOM renderer, with GPU acceleration off). */
async function terminalText(page: Page): Promise<string> {
  // A string expression: this file is type-checked without the DOM library.
  return page.evaluate<string>(`Array.from(document.querySelectorAll('.xterm-rows')).map((e) => e.innerText).join('\\n')`);
}

/** Phase 3: a person's path through the UI, with the installed VSIX. */
async function uiSmoke(extensionsDir: string): Promise<void> {
  const title = 'UI: command palette → "Cove: Open in Sandbox" → progress notification → text in the sandbox terminal';
  const started = Date.now();
  const server = await startServer('ui', extensionsDir, {});
  const { context, page } = await openBrowser('ui');
  const shot = (name: string) => page.screenshot({ path: path.join(ARTIFACTS, name) }).catch((e: unknown) => log(`screenshot ${name} failed: ${String(e)}`));
  try {
    await page.goto(workbenchUrl(server.url));
    await page.waitForSelector('.monaco-workbench', { timeout: 2 * MIN });
    await page.waitForSelector('.statusbar-item[id="cove.cove.cove.status"], .statusbar-item:has-text("Cove")', { timeout: 2 * MIN });
    log('ui: workbench loaded and the Cove status bar item is shown');
    await page.keyboard.press('F1');
    await page.waitForSelector('.quick-input-widget:not([style*="display: none"]) input', { timeout: 30_000 });
    await page.keyboard.type('Cove: Open in Sandbox', { delay: 20 });
    const row = page.locator('.quick-input-list .monaco-list-row', { hasText: 'Open in Sandbox' }).first();
    await row.waitFor({ timeout: 30_000 });
    await shot('ui-1-command-palette.png');
    await page.keyboard.press('Enter');
    log('ui: ran "Cove: Open in Sandbox" from the command palette');
    const toast = page.locator('.notifications-toasts .notification-toast', { hasText: 'Cove: opening' }).first();
    await toast.waitFor({ timeout: MIN });
    const toastText = await toast.innerText();
    log(`ui: progress notification: ${toastText.replace(/\s+/g, ' ').slice(0, 160)}`);
    await sleep(3000);
    await shot('ui-2-progress-notification.png');
    // The boot: a stopped sandbox under TCG; then the sandbox terminal opens with a shell prompt.
    await waitFor('the sandbox terminal to show a shell prompt', 20 * MIN, async () => /root@cove-e2e/.test(await terminalText(page)), 2000);
    log('ui: the sandbox terminal shows the guest prompt');
    await page.locator('.terminal-wrapper .xterm').first().click();
    await page.keyboard.type('cat hello.txt; uname -n', { delay: 20 });
    await page.keyboard.press('Enter');
    await waitFor('"hello from the e2e workspace" in the terminal', 2 * MIN, async () => /hello from the e2e workspace/.test(await terminalText(page)), 1000);
    await shot('ui-3-sandbox-terminal.png');
    // The Cove view lists the sandbox with its state, accel and mount type.
    await page.locator('.activitybar .action-item [aria-label^="Cove"]').first().click();
    const item = page.locator('.part.sidebar .monaco-list-row', { hasText: 'cove-e2e' }).first();
    await item.waitFor({ timeout: 30_000 });
    let itemText = '';
    await waitFor('the Cove view to show the sandbox running, with accel and mount type', 30_000, async () => {
      itemText = (await item.innerText()).replace(/\s+/g, ' ');
      return /running · (TCG|KVM) · (virtiofs|9p)/.test(itemText);
    }).catch(() => {
      throw new Error(`the Cove view shows "${itemText}", not the running sandbox with accel and mount type`);
    });
    log(`ui: the Cove view lists: ${itemText}`);
    await shot('ui-4-cove-view.png');
    results.push({ title, state: 'passed', ms: Date.now() - started });
    log(`ui: terminal text read back; screenshots in ${path.relative(REPO, ARTIFACTS)}/`);
  } catch (e) {
    await shot('ui-failure.png');
    results.push({ title, state: 'failed', ms: Date.now() - started, error: (e as Error).message });
  } finally {
    await context.close().catch(() => undefined);
    await server.stop();
  }
}

async function main(): Promise<number> {
  for (const [what, p] of [
    ['code-server (run scripts/setup-e2e.sh)', SERVER_MAIN],
    ['chromium (run scripts/setup-e2e.sh)', CHROMIUM],
    ['the extension bundle (run npm run build:extension)', path.join(EXTENSION, 'dist', 'extension.js')],
    ['the e2e suite bundle (run npm run build:extension)', SUITE],
  ] as const) {
    if (!fs.existsSync(p)) {
      process.stderr.write(`e2e: ${what} is missing: ${p}\n0 passed, 1 failed\n`);
      return 1;
    }
  }
  await stopEverything(); // A previous run killed midway leaves its VMs.
  prepareHome();
  prepareWorkspace();
  fs.rmSync(RUN_DIR, { recursive: true, force: true });
  fs.mkdirSync(RUN_DIR, { recursive: true });
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  log(`COVE_HOME=${HOME} (images shared with ${SHARED_HOME}), DOCKER_CONFIG=${DOCKER_CONFIG}, workspace ${WORKSPACE}`);

  await extensionTests();
  // The UI phase uses the VSIX's own coved: stop the one the tests started (the sandbox stays).
  try {
    const conn = await connect({ home: HOME, autoStart: false });
    await Promise.race([conn.sendRequest(Requests.shutdown), sleep(10_000)]).catch(() => undefined);
    conn.dispose();
    await waitFor('the tests’ coved to exit', 30_000, () => !fs.existsSync(path.join(HOME, 'coved.pid')));
  } catch (e) {
    log(`stopping the tests' coved: ${(e as Error).message}`);
  }
  const uiExtensions = path.join(RUN_DIR, 'ui', 'extensions');
  if (await installVsix(uiExtensions)) await uiSmoke(uiExtensions);
  else results.push({ title: 'UI smoke test', state: 'skipped', error: 'skipped: the VSIX did not install' });
  return 0;
}

async function finish(): Promise<never> {
  for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => undefined);
  await stopEverything();
  const passed = results.filter((r) => r.state === 'passed').length;
  const failed = results.filter((r) => r.state === 'failed').length;
  const skipped = results.filter((r) => r.state === 'skipped').length;
  process.stdout.write('\n=== e2e results ===\n');
  for (const r of results) {
    const mark = r.state === 'passed' ? '✔' : r.state === 'failed' ? '✖' : '-';
    process.stdout.write(`${mark} ${r.title}${r.ms !== undefined ? ` (${(r.ms / 1000).toFixed(1)} s)` : ''}${r.state === 'skipped' && r.error ? ` — ${r.error}` : ''}\n`);
    if (r.state === 'failed' && r.error) process.stdout.write(`    ${r.error.split('\n').slice(0, 12).join('\n    ')}\n`);
  }
  process.stdout.write(`e2e took ${((Date.now() - t0) / 1000).toFixed(0)} s\n`);
  process.stdout.write(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`);
  process.exit(failed > 0 || passed === 0 ? 1 : 0);
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    results.push({ title: `interrupted by ${sig}`, state: 'failed' });
    void finish();
  });
}

main()
  .catch((e: unknown) => {
    results.push({ title: 'the e2e runner', state: 'failed', error: e instanceof Error ? (e.stack ?? e.message) : String(e) });
  })
  .finally(() => void finish());
