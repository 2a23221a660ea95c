// The guest agent in a real sandbox, over the real virtio-serial port (qemu's agent.sock): exec,
// a PTY resize, SFTP, concurrent streamlocal to dockerd, port events, and the port's reconnect
// semantics — a host that vanishes mid-stream, and an agent restarted by the init. Boots the
// Docker tier image (rebuilt if the agent bundle changed); the VM is stopped even when a test fails.
import { keyPair } from '../../vmm-host/coved/keys';
import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { DEFAULT_NETWORK, writeConfigDisk } from '../../contract/config-disk';
import { after, before, test } from 'node:test';
import { Client, type ClientChannel, type SFTPWrapper } from 'ssh2';
import { skipToBanner } from '../../contract/banner-sync';
import { EVENTS_SUBSYSTEM } from '../../contract/events';
import { IMAGE, VM, vmDir as layoutVmDir } from '../../contract/layout';
import { buildImage } from '../../vmm-host/image';
import { findRepoRoot } from '../../vmm-host/image/recipe';
import { QemuDriver, createOverlay, detectAccel, processAlive, readPid, specFromLayout } from '../../vmm-host/driver';
import { collect, LineReader, within } from '../unit/agent-harness';
import { waitFor } from '../../contract/wait';
import { agentEventProblems } from '../../contract/events-check';

const root = findRepoRoot(__dirname);
const home = process.env.COVE_TEST_HOME ? path.resolve(process.env.COVE_TEST_HOME) : path.join(root, '.cove-test', 'home');
const vmName = `agent-it-${process.pid}`;
const vmDir = layoutVmDir(vmName, home);
const BOOT_DEADLINE_MS = Number(process.env.COVE_TEST_BOOT_DEADLINE_MS ?? 300_000);
const clientKey = keyPair();
let agentSock = '';
let ssh: Client | null = null;

function log(line: string): void {
  process.stderr.write(`# ${line}\n`);
}
const consoleText = (): string => {
  const f = path.join(vmDir, VM.consoleLog);
  return fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : '';
};

/** One host connection to the port: the way coved makes it (banner sync, strictVendor off). */
function connectPort(): Promise<{ client: Client; sock: net.Socket }> {
  return within(
    new Promise((resolve, reject) => {
      const sock = net.createConnection(agentSock);
      const client = new Client();
      client.once('ready', () => resolve({ client, sock }));
      client.once('error', reject);
      client.connect({ sock: skipToBanner(sock), username: 'root', privateKey: clientKey.private, strictVendor: false, readyTimeout: 60_000 });
    }),
    90_000,
    'an SSH handshake with the agent over the port',
  );
}

/** Ends the shared link and waits until its socket to qemu is closed. */
async function closeShared(): Promise<void> {
  const c = ssh;
  ssh = null;
  if (!c) return;
  const closed = new Promise<void>((resolve) => c.once('close', () => resolve()));
  c.end();
  await within(closed, 30_000, 'the shared SSH link to close');
}

function exec(c: Client, cmd: string, stdin?: string | Buffer): Promise<ReturnType<typeof collect> extends Promise<infer R> ? R : never> {
  return within(
    new Promise((resolve, reject) => c.exec(cmd, (err, s) => (err ? reject(err) : resolve(collect(s, stdin ?? ''))))),
    180_000,
    `\`${cmd}\` in the guest`,
  );
}

before(async () => {
  fs.mkdirSync(home, { recursive: true });
  const built = await buildImage({ home, onProgress: (step, fraction, message) => log(`build ${step} ${(fraction * 100).toFixed(0)}% ${message}`) });
  const accel = await detectAccel({ home, imageDir: built.dir, log });
  fs.rmSync(vmDir, { recursive: true, force: true });
  fs.mkdirSync(vmDir, { recursive: true });
  await createOverlay(path.join(built.dir, IMAGE.baseDisk), path.join(vmDir, VM.disk), 8 * 1024 ** 3);
  const hostKey = keyPair();
  writeConfigDisk(path.join(vmDir, VM.configDisk), {
    version: 1,
    name: vmName,
    hostname: 'agent-it',
    hostKey: hostKey.private,
    authorizedKeys: [clientKey.public],
    mounts: [],
    network: { ...DEFAULT_NETWORK },
    resizeRoot: true,
    insecureRegistries: [],
  });
  await new QemuDriver(accel.accel).start(specFromLayout({ imageDir: built.dir, vmDir, cpus: 2, memoryMiB: 1024, accel: accel.accel, tscKhz: accel.tscKhz, share: null, network: 'user' }));
  agentSock = path.join(vmDir, VM.agentSock);
  await waitFor(
    'the guest console line "cove: ready"',
    BOOT_DEADLINE_MS,
    () => {
      const pid = readPid(path.join(vmDir, VM.qemuPid));
      if (pid !== null && !processAlive(pid)) {
        const qemuLog = path.join(vmDir, VM.qemuLog);
        throw new Error(`qemu exited during boot; qemu.log:\n${fs.existsSync(qemuLog) ? fs.readFileSync(qemuLog, 'utf8') : ''}\nconsole:\n${consoleText()}`);
      }
      return consoleText().includes('cove: ready');
    },
    // qemu exiting ends the wait at once, with its log.
    { intervalMs: 100, onError: 'throw' },
  ).catch((e: unknown) => {
    log(`console.log:\n${consoleText()}`);
    throw e;
  });
  ssh = (await connectPort()).client;
});

after(async () => {
  ssh?.end();
  if (fs.existsSync(vmDir)) await new QemuDriver('tcg').stop(vmDir, { timeoutMs: 5000 }).catch(() => undefined);
  fs.rmSync(vmDir, { recursive: true, force: true });
});

test('exec, stdin and exit codes over the port', async () => {
  assert.equal((await exec(ssh!, 'exit 7')).code, 7);
  const r = await exec(ssh!, 'echo out; echo err >&2; wc -c', 'x'.repeat(100_000));
  assert.equal(r.stdout, 'out\n100000\n');
  assert.equal(r.stderr, 'err\n');
});

test('hello, with dockerd running, valid against the schema', async () => {
  const stream = await within(
    new Promise<ClientChannel>((resolve, reject) => ssh!.subsys(EVENTS_SUBSYSTEM, (err, s) => (err ? reject(err) : resolve(s)))),
    30_000,
    'the event stream',
  );
  const events = new LineReader(stream);
  const hello = await events.next(() => true, 30_000, 'hello');
  assert.deepEqual(agentEventProblems(hello), []);
  assert.equal(hello.type, 'hello');
  assert.equal(hello.dockerd, 'running');
  assert.ok(fs.existsSync(agentSock));
  // A port published in the guest on 0.0.0.0 (node is in the image) is reported, then removed.
  const from = events.all.length;
  const listener = await within(
    new Promise<ClientChannel>((resolve, reject) =>
      ssh!.exec(`exec node -e "require('net').createServer().listen(18089, '0.0.0.0'); setTimeout(() => {}, 600000)"`, (err, s) => (err ? reject(err) : resolve(s))),
    ),
    30_000,
    'starting a listener in the guest',
  );
  await events.next((e) => e.type === 'port' && e.action === 'added' && e.port === 18089, 60_000, 'port 18089 added', from);
  listener.signal('TERM');
  await events.next((e) => e.type === 'port' && e.action === 'removed' && e.port === 18089, 60_000, 'port 18089 removed', from);
  for (const e of events.all) assert.deepEqual(agentEventProblems(e), [], JSON.stringify(e));
  stream.close();
});

test('a PTY sees its size and a window change', async () => {
  const stream = await new Promise<ClientChannel>((resolve, reject) => ssh!.shell({ term: 'xterm', rows: 30, cols: 90 }, (err, s) => (err ? reject(err) : resolve(s))));
  let out = '';
  stream.on('data', (d: Buffer) => (out += d.toString()));
  stream.write('stty size\n');
  await waitFor('the pty size 30 90', 60_000, () => /30 90/.test(out), 50).catch((e: unknown) => {
    throw new Error(`${(e as Error).message} (got ${JSON.stringify(out.slice(-200))})`, { cause: e });
  });
  stream.setWindow(50, 160, 0, 0);
  await waitFor(
    'the pty size 50 160',
    60_000,
    async () => {
      stream.write('stty size\n');
      await new Promise((resolve) => setTimeout(resolve, 500));
      return /50 160/.test(out);
    },
    { intervalMs: 50, onError: 'throw' },
  );
  stream.end('exit\n');
});

test('sftp put and get over the port', async () => {
  const sftp = await new Promise<SFTPWrapper>((resolve, reject) => ssh!.sftp((err, s) => (err ? reject(err) : resolve(s))));
  const bytes = crypto.randomBytes(2 * 1024 * 1024);
  await within(new Promise<void>((resolve, reject) => sftp.writeFile('/tmp/it.bin', bytes, (err) => (err ? reject(err) : resolve()))), 120_000, 'sftp put');
  const back = await within(new Promise<Buffer>((resolve, reject) => sftp.readFile('/tmp/it.bin', (err, b) => (err ? reject(err) : resolve(b)))), 120_000, 'sftp get');
  assert.ok(back.equals(bytes));
  assert.equal((await exec(ssh!, 'sha256sum /tmp/it.bin')).stdout.split(' ')[0], crypto.createHash('sha256').update(bytes).digest('hex'));
  sftp.end();
});

test('concurrent streamlocal channels to /var/run/docker.sock', async () => {
  const answers = await Promise.all(
    Array.from({ length: 8 }, () =>
      within(
        new Promise<string>((resolve, reject) =>
          ssh!.openssh_forwardOutStreamLocal('/var/run/docker.sock', (err, s) => {
            if (err) return reject(err);
            let text = '';
            s.on('data', (d: Buffer) => (text += d.toString()));
            s.on('end', () => resolve(text));
            s.end('GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n');
          }),
        ),
        60_000,
        'a /_ping through streamlocal',
      ),
    ),
  );
  for (const a of answers) assert.match(a, /^HTTP\/1\.[01] 200 OK[\s\S]*\r\n\r\nOK$/);
});

test('a host that vanishes mid-stream, then a new host: fresh session', async () => {
  // qemu's end of the port takes one host at a time: let the shared link go first.
  await closeShared();
  for (let round = 1; round <= 3; round++) {
    log(`vanish round ${round}: connecting`);
    const { client, sock } = await connectPort();
    client.on('error', (err) => log(`vanish round ${round}: ${err.message}`));
    const stream = await new Promise<ClientChannel>((resolve, reject) => client.exec('yes streaming-bytes', (err, s) => (err ? reject(err) : resolve(s))));
    await new Promise<void>((resolve) => stream.once('data', () => resolve()));
    sock.destroy(); // No SSH disconnect: as if coved were killed. The agent's writes are in flight.
    client.end();
    await new Promise((resolve) => setTimeout(resolve, 100 * round));
  }
  log('vanish: connecting the next host');
  ssh = (await connectPort()).client;
  assert.equal((await exec(ssh, 'echo fresh')).stdout, 'fresh\n');
  await waitFor('the orphaned `yes` commands to die of SIGPIPE', 30_000, async () => (await exec(ssh!, 'pgrep -x yes || true')).stdout === '', { intervalMs: 50, onError: 'throw' });
});

test('the agent restarted by the init serves the next host', async () => {
  // The exec's shell is a child of the agent: $PPID is the agent's pid.
  void exec(ssh!, 'kill -KILL $PPID').catch(() => undefined);
  await new Promise((resolve) => setTimeout(resolve, 1000));
  await closeShared();
  ssh = await waitFor(
    'the restarted agent',
    120_000,
    async () => {
      try {
        const { client } = await connectPort();
        return client;
      } catch (err) {
        log(`reconnect after agent restart: ${(err as Error).message}`);
        return null;
      }
    },
    50,
  );
  assert.equal((await exec(ssh, 'echo after-restart')).stdout, 'after-restart\n');
});

test('the agent log records the sessions, and the init restarted the agent once', async () => {
  if (!ssh) ssh = (await connectPort()).client;
  const r = await exec(ssh, 'cat /var/log/cove/cove-agent.log');
  assert.equal(r.code, 0, `reading the agent log: ${r.stderr}`);
  for (const line of r.stdout.split('\n').slice(-80)) log(`agent.log: ${line}`);
  const agentConsole = consoleText().split('\n').filter((l) => /cove-agent/.test(l));
  for (const line of agentConsole) log(`console: ${line}`);
  // What the tests above did shows in the log: key authentication, the port they published, the
  // reconnecting hosts; and the kill in the previous test was seen by the init, which restarted it.
  assert.match(r.stdout, /authenticated as "root"/);
  assert.match(r.stdout, /ports: added tcp [^\n]*:18089/);
  assert.match(r.stdout, /ports: removed tcp [^\n]*:18089/);
  assert.ok((r.stdout.match(/connection opened/g) ?? []).length >= 5, 'one connection per host, the vanished ones included');
  assert.equal(agentConsole.filter((l) => /service cove-agent started/.test(l)).length, 2, 'started at boot and once after the kill');
  assert.ok(agentConsole.some((l) => /service cove-agent exited \d+, restart in/.test(l)), 'the init saw the agent exit');
});
