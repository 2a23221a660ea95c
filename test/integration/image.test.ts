// Builds the Docker tier image into COVE_HOME, checks the second build is cached, boots it with the
// QEMU driver (TCG unless the KVM probe says KVM works) and talks Docker over the agent channel:
// `docker version`, `docker info`, `docker load` of an image made here from busybox-static,
// `docker run --rm`. Every wait has a deadline; the VM is stopped even when a test fails.
import { keyPair } from '../../vmm-host/coved/keys';
import assert from 'node:assert/strict';
import { DEFAULT_NETWORK, writeConfigDisk } from '../../contract/config-disk';
import { waitFor } from '../../contract/wait';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import { Client } from 'ssh2';
import { checkKernelConfig } from '../../kernel/check';
import { IMAGE, VM, vmDir as layoutVmDir } from '../../contract/layout';
import { buildImage, verifyImage, type BuildImageResult } from '../../vmm-host/image';
import { findRepoRoot } from '../../vmm-host/image/recipe';
import {
  createOverlay,
  detectAccel,
  findVirtiofsd,
  readPid,
  type AccelResult,
  QemuDriver,
  processAlive,
  specFromLayout,
} from '../../vmm-host/driver';

const root = findRepoRoot(__dirname);
const home = process.env.COVE_TEST_HOME ? path.resolve(process.env.COVE_TEST_HOME) : path.join(root, '.cove-test', 'home');
const vmName = `image-it-${process.pid}`;
const vmDir = layoutVmDir(vmName, home);
const ws = path.join(home, '..', `ws-${vmName}`);
const BOOT_DEADLINE_MS = Number(process.env.COVE_TEST_BOOT_DEADLINE_MS ?? 300_000);

let built: BuildImageResult;
let accel: AccelResult;
let ssh: Client | null = null;

function log(line: string): void {
  process.stderr.write(`# ${line}\n`);
}

before(() => {
  fs.mkdirSync(home, { recursive: true });
});

after(async () => {
  ssh?.end();
  if (fs.existsSync(vmDir)) await new QemuDriver('tcg').stop(vmDir, { timeoutMs: 5000 }).catch(() => undefined);
  fs.rmSync(vmDir, { recursive: true, force: true });
  fs.rmSync(ws, { recursive: true, force: true });
});

test('builds the image (then again, cached)', { timeout: 40 * 60_000 }, async () => {
  let t = Date.now();
  built = await buildImage({
    home,
    onProgress: (step, fraction, message) => log(`build ${step} ${(fraction * 100).toFixed(0)}% ${message}`),
  });
  log(`first build: ${((Date.now() - t) / 1000).toFixed(1)} s, cached=${built.cached}, ${built.dir}`);
  t = Date.now();
  const again = await buildImage({ home });
  const secs = (Date.now() - t) / 1000;
  log(`second build: ${secs.toFixed(2)} s, cached=${again.cached}`);
  assert.equal(again.cached, true);
  assert.equal(again.dir, built.dir);
  for (const f of [IMAGE.kernel, IMAGE.kernelConfig, IMAGE.initrd, IMAGE.baseDisk, IMAGE.manifest]) {
    assert.ok(fs.existsSync(path.join(built.dir, f)), `${f} exists`);
  }
  assert.equal(fs.statSync(path.join(built.dir, IMAGE.baseDisk)).mode & 0o777, 0o444);
  const m = built.manifest;
  log(`versions: ${JSON.stringify(m.versions)}`);
  for (const k of ['docker', 'containerd', 'runc', 'buildx', 'compose', 'node'] as const) assert.ok(m.versions[k], `${k} version`);
  assert.equal(m.kernel.format, 'elf');
});

test('the kernel check passes on the built image kernel.config', () => {
  const { missing } = checkKernelConfig(fs.readFileSync(path.join(built.dir, IMAGE.kernelConfig), 'utf8'));
  assert.deepEqual(missing.map((f) => f.name), []);
});

test('verifyImage: full check passes; a truncated base disk is detected', async () => {
  const full = await verifyImage(built.dir, { full: true });
  assert.deepEqual(full.problems, []);
  const fake = fs.mkdtempSync(path.join(home, 'images', '.tmp-verify-'));
  try {
    for (const f of [IMAGE.kernel, IMAGE.kernelConfig, IMAGE.initrd, IMAGE.manifest]) fs.symlinkSync(path.join(built.dir, f), path.join(fake, f));
    const disk = path.join(fake, IMAGE.baseDisk);
    fs.closeSync(fs.openSync(disk, 'w'));
    fs.truncateSync(disk, built.manifest.files[IMAGE.baseDisk].size - 4096);
    const r = await verifyImage(fake);
    assert.equal(r.ok, false);
    assert.match(r.problems.join(' '), /base\.raw is \d+ bytes/);
  } finally {
    fs.rmSync(fake, { recursive: true, force: true });
  }
});

test('boots and runs Docker over the agent channel', { timeout: 15 * 60_000 }, async () => {
  accel = await detectAccel({ home, imageDir: built.dir, log });
  log(`accel: ${accel.accel} (${accel.reason})`);
  fs.rmSync(vmDir, { recursive: true, force: true });
  fs.mkdirSync(vmDir, { recursive: true });
  fs.mkdirSync(ws, { recursive: true });
  fs.writeFileSync(path.join(ws, 'hello.txt'), 'hello from the host\n');
  await createOverlay(path.join(built.dir, IMAGE.baseDisk), path.join(vmDir, VM.disk), 16 * 1024 ** 3);
  // ssh2's generator now and then writes a key its own parser (the agent's) rejects: keyPair checks.
  const hostKey = keyPair();
  const clientKey = keyPair();
  const mountType = findVirtiofsd() ? 'virtiofs' : '9p';
  writeConfigDisk(path.join(vmDir, VM.configDisk), {
    version: 1,
    name: vmName,
    hostname: 'cove-it',
    hostKey: hostKey.private,
    authorizedKeys: [`${clientKey.public} cove`],
    mounts: [{ tag: 'cove-ws', type: mountType, path: ws, readonly: false }],
    network: { ...DEFAULT_NETWORK },
    resizeRoot: true,
    insecureRegistries: [],
  });

  const t0 = Date.now();
  const pids = await new QemuDriver(accel.accel).start(specFromLayout({
    imageDir: built.dir,
    vmDir,
    cpus: 2,
    memoryMiB: 1024,
    accel: accel.accel,
    tscKhz: accel.tscKhz,
    share: { type: mountType, hostPath: ws, readonly: false },
    network: 'user',
  }));
  log(`qemu pid ${pids.qemu}, virtiofsd pid ${pids.virtiofsd}, mount ${mountType}`);
  const consoleLog = path.join(vmDir, VM.consoleLog);
  const readConsole = () => (fs.existsSync(consoleLog) ? fs.readFileSync(consoleLog, 'utf8') : '');
  try {
    await waitFor('the guest console line "cove: ready" (dockerd answered /_ping)', BOOT_DEADLINE_MS, () => {
      if (!processAlive(readPid(path.join(vmDir, VM.qemuPid)))) throw new Error(`qemu exited during boot; console:\n${readConsole()}`);
      return readConsole().includes('cove: ready');
    }, { intervalMs: 200, onError: 'throw' });
  } catch (e) {
    log(`console.log:\n${readConsole()}`);
    throw e;
  }
  log(`boot to dockerd /_ping: ${((Date.now() - t0) / 1000).toFixed(1)} s (host clock)`);
  for (const line of readConsole().split('\n').filter((l) => l.startsWith('cove:'))) log(`  ${line}`);

  ssh = await connectAgent(path.join(vmDir, VM.agentSock), clientKey.private);
  const version = await exec(ssh, "docker version --format '{{.Server.Version}}'");
  assert.equal(version.code, 0, version.stderr);
  assert.match(version.stdout.trim(), /^\d+\.\d+\.\d+/);
  log(`docker server ${version.stdout.trim()}`);

  const info = await exec(ssh, "docker info --format '{{json .}}'");
  assert.equal(info.code, 0, info.stderr);
  const i = JSON.parse(info.stdout) as { CgroupDriver: string; CgroupVersion: string; Driver: string };
  assert.equal(i.CgroupDriver, 'cgroupfs');
  assert.equal(i.CgroupVersion, '2');
  assert.equal(i.Driver, 'overlay2');

  const hello = await exec(ssh, `cat '${ws}/hello.txt'`);
  assert.equal(hello.stdout, 'hello from the host\n');

  const tarball = busyboxImageTar('/bin/busybox', 'cove-test/busybox:latest');
  let t = Date.now();
  const load = await exec(ssh, 'docker load', tarball);
  assert.equal(load.code, 0, load.stderr);
  assert.match(load.stdout, /cove-test\/busybox:latest/);
  log(`docker load (${(tarball.length / 1e6).toFixed(1)} MB): ${((Date.now() - t) / 1000).toFixed(1)} s`);
  t = Date.now();
  const run = await exec(ssh, 'docker run --rm cove-test/busybox echo hi');
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout.trim(), 'hi');
  log(`docker run --rm echo hi: ${((Date.now() - t) / 1000).toFixed(1)} s`);

  // Clean shutdown: cove-poweroff over SSH, then qemu must exit by itself.
  t = Date.now();
  void exec(ssh, '/usr/sbin/cove-poweroff').catch(() => undefined);
  await waitFor('qemu to exit after cove-poweroff', 60_000, () => !processAlive(pids.qemu), { intervalMs: 200 });
  log(`poweroff: ${((Date.now() - t) / 1000).toFixed(1)} s`);
  assert.match(readConsole(), /cove: power off/);
});

/** Connects ssh2 over qemu's agent socket; retries the handshake (bounded) while the agent starts. */
async function connectAgent(sock: string, privateKey: string): Promise<Client> {
  let lastError: Error | null = null;
  for (let attempt = 1; attempt <= 4; attempt++) {
    try {
      return await new Promise<Client>((resolve, reject) => {
        const c = new Client();
        c.on('ready', () => resolve(c));
        c.on('error', (e) => reject(e));
        c.connect({ sock: net.createConnection(sock), username: 'root', privateKey, readyTimeout: 30_000 });
      });
    } catch (e) {
      lastError = e as Error;
      log(`agent SSH handshake attempt ${attempt} failed: ${lastError.message}`);
    }
  }
  throw new Error(`no SSH handshake with the agent on ${sock} after 4 attempts: ${lastError?.message}`);
}

function exec(c: Client, cmd: string, stdin?: Buffer, timeoutMs = 180_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs / 1000} s waiting for \`${cmd}\` in the guest`)), timeoutMs);
    c.exec(cmd, (err, stream) => {
      if (err) {
        clearTimeout(timer);
        return reject(err);
      }
      let stdout = '';
      let stderr = '';
      let code = -1;
      stream.on('data', (d: Buffer) => (stdout += d.toString()));
      stream.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      stream.on('exit', (c2: number | null) => (code = c2 ?? -1));
      stream.on('close', () => {
        clearTimeout(timer);
        resolve({ code, stdout, stderr });
      });
      if (stdin) stream.end(stdin);
      else stream.end();
    });
  });
}

// A docker-archive (`docker save` format) made here: one layer with busybox and a few applet links.

function tarEntry(name: string, body: Buffer, mode: number, type: '0' | '2' | '5' = '0', linkname = ''): Buffer {
  const h = Buffer.alloc(512, 0);
  h.write(name, 0, 100, 'utf8');
  h.write(`${mode.toString(8).padStart(7, '0')}\0`, 100, 'ascii');
  h.write('0000000\0', 108, 'ascii');
  h.write('0000000\0', 116, 'ascii');
  h.write(`${(type === '0' ? body.length : 0).toString(8).padStart(11, '0')}\0`, 124, 'ascii');
  h.write(`${(0).toString(8).padStart(11, '0')}\0`, 136, 'ascii');
  h.write('        ', 148, 'ascii');
  h.write(type, 156, 'ascii');
  h.write(linkname, 157, 100, 'utf8');
  h.write('ustar\0', 257, 'ascii');
  h.write('00', 263, 'ascii');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'ascii');
  if (type !== '0') return h;
  return Buffer.concat([h, body, Buffer.alloc((512 - (body.length % 512)) % 512)]);
}

function tar(entries: Buffer[]): Buffer {
  return Buffer.concat([...entries, Buffer.alloc(1024)]);
}

function busyboxImageTar(busybox: string, tag: string): Buffer {
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  const layer = tar([
    tarEntry('bin/', Buffer.alloc(0), 0o755, '5'),
    tarEntry('bin/busybox', fs.readFileSync(busybox), 0o755),
    ...['sh', 'echo', 'ls', 'cat'].map((a) => tarEntry(`bin/${a}`, Buffer.alloc(0), 0o777, '2', 'busybox')),
  ]);
  const layerId = sha(layer);
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: [`sha256:${layerId}`] },
      history: [{ created_by: 'cove image.test.ts' }],
    }),
  );
  const configName = `${sha(config)}.json`;
  const manifest = Buffer.from(JSON.stringify([{ Config: configName, RepoTags: [tag], Layers: [`${layerId}/layer.tar`] }]));
  return tar([
    tarEntry(`${layerId}/`, Buffer.alloc(0), 0o755, '5'),
    tarEntry(`${layerId}/layer.tar`, layer, 0o644),
    tarEntry(configName, config, 0o644),
    tarEntry('manifest.json', manifest, 0o644),
  ]);
}
