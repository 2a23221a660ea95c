// Runs the real guest agent (the esbuild bundle, as in the image) on this host with a temporary
// config, a unix socket, a FIFO pair standing in for the virtio-serial port and a fake dockerd,
// and gives the tests SSH clients to it.
import { skipToBanner } from '../../contract/banner-sync';
import { keyPair } from '../../vmm-host/coved/keys';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Duplex } from 'node:stream';
import { Client, utils, type ClientChannel, type ExecOptions, type ParsedKey } from 'ssh2';

export const REPO = path.resolve(__dirname, '..', '..', '..');
export const BUNDLE = path.join(REPO, 'out', 'bundle', 'agent.js');

/** Rejects with `message` when `promise` takes longer than `ms`. */
export function within<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${message}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Polls `test` every 50 ms until it returns a truthy value or `ms` pass. */
export async function waitFor<T>(test: () => T | Promise<T>, ms: number, message: string): Promise<NonNullable<T>> {
  const until = Date.now() + ms;
  for (;;) {
    const value = await test();
    if (value) return value;
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms: ${message}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

let bundled = false;
/**
 * Bundles the agent exactly as the image build does (once per test process) and copies the bundle
 * to `dest`. Test files run in parallel processes, so building and copying happen under a lock
 * file: no process copies a bundle another is writing.
 */
export async function copyBundle(dest: string): Promise<void> {
  const lock = path.join(REPO, 'out', '.agent-bundle.lock');
  fs.mkdirSync(path.dirname(lock), { recursive: true });
  let fd = -1;
  await waitFor(
    () => {
      try {
        fd = fs.openSync(lock, 'wx');
        return true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        // A lock left by a killed test run is stale after a minute.
        if (Date.now() - fs.statSync(lock, { throwIfNoEntry: false })!.mtimeMs > 60_000) fs.rmSync(lock, { force: true });
        return false;
      }
    },
    60_000,
    `the bundle lock ${lock}`,
  );
  try {
    if (!bundled) {
      execFileSync(process.execPath, ['scripts/bundle.mjs'], { cwd: REPO, stdio: 'inherit' });
      bundled = true;
    }
    fs.copyFileSync(BUNDLE, dest);
  } finally {
    fs.closeSync(fd);
    fs.rmSync(lock, { force: true });
  }
}

export interface Keys {
  hostPrivate: string;
  clientPrivate: string;
  clientPublic: string;
}

export function makeKeys(): Keys {
  const host = keyPair();
  const client = keyPair('cove-test');
  return { hostPrivate: host.private, clientPrivate: client.private, clientPublic: client.public };
}

export interface RunningAgent {
  dir: string;
  keys: Keys;
  socket: string;
  portIn: string;
  portOut: string;
  /** The data channel's FIFO pair (startAgent with `data`). */
  dataIn: string;
  dataOut: string;
  dockerSock: string;
  readyMarker: string;
  child: ChildProcess;
  log(): string;
  stop(): Promise<number | null>;
}

export async function startAgent(options: { port?: boolean; data?: boolean; env?: NodeJS.ProcessEnv } = {}): Promise<RunningAgent> {
  // Short paths: a unix socket path is limited to 108 bytes.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-agent-'));
  const keys = makeKeys();
  const config = path.join(dir, 'config.json');
  fs.writeFileSync(config, JSON.stringify({ version: 1, name: 't', hostKey: keys.hostPrivate, authorizedKeys: [keys.clientPublic] }), { mode: 0o600 });
  const socket = path.join(dir, 'agent.sock');
  const portIn = path.join(dir, 'port.in');
  const portOut = path.join(dir, 'port.out');
  if (options.port) execFileSync('mkfifo', [portIn, portOut]);
  const dataIn = path.join(dir, 'data.in');
  const dataOut = path.join(dir, 'data.out');
  if (options.data) execFileSync('mkfifo', [dataIn, dataOut]);
  const dockerSock = path.join(dir, 'docker.sock');
  // Run a copy outside the repository, as in the image: nothing may come from node_modules.
  const bundle = path.join(dir, 'agent.js');
  await copyBundle(bundle);
  const readyMarker = path.join(dir, 'run', 'ready');
  // A stand-in for kernel.randomize_va_space: tests run as root, and a config with `aslr` must never reach the host's.
  const aslrSysctl = path.join(dir, 'randomize_va_space');
  fs.writeFileSync(aslrSysctl, '2\n');
  // And one for the kernel's hostname, which a rebirth sets.
  const hostnameSysctl = path.join(dir, 'hostname-sysctl');
  fs.writeFileSync(hostnameSysctl, 'template\n');
  let logText = '';
  const child = spawn(process.execPath, [bundle], {
    cwd: dir,
    env: {
      ...process.env,
      COVE_AGENT_CONFIG: config,
      COVE_AGENT_SOCK: socket,
      COVE_AGENT_PORT: options.port ? portIn : 'none',
      COVE_AGENT_PORT_OUT: options.port ? portOut : '',
      COVE_AGENT_DATA_PORT: options.data ? dataIn : 'none',
      COVE_AGENT_DATA_PORT_OUT: options.data ? dataOut : '',
      COVE_AGENT_DOCKER_SOCK: dockerSock,
      COVE_AGENT_READY_MARKER: readyMarker,
      COVE_AGENT_POLL_MS: '200',
      COVE_AGENT_ASLR_SYSCTL: aslrSysctl,
      COVE_AGENT_HOSTNAME_SYSCTL: hostnameSysctl,
      ...options.env,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  child.stderr.on('data', (d: Buffer) => (logText += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  // The socket file appears at bind(), a moment before listen(): wait for the agent to say so.
  await waitFor(() => logText.includes(`listening on unix:${socket}`) || child.exitCode !== null, 10_000, 'the agent to listen on its socket');
  if (child.exitCode !== null) throw new Error(`the agent exited ${child.exitCode}:\n${logText}`);
  return {
    dir,
    keys,
    socket,
    portIn,
    portOut,
    dataIn,
    dataOut,
    dockerSock,
    readyMarker,
    child,
    log: () => logText,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      const code = await within(exited, 5000, 'the agent to exit on SIGTERM');
      fs.rmSync(dir, { recursive: true, force: true });
      return code;
    },
  };
}

/** Connects an SSH client over the agent's unix socket (or a given stream). */
export function connect(
  agent: RunningAgent,
  opts: {
    privateKey?: string;
    sock?: Duplex;
    /** The host key the agent must present (a private key; its public half is compared); any when absent. */
    expectHostKey?: string;
    /** Called with the public host key blob the agent presented. */
    onHostKey?: (key: Buffer) => void;
  } = {},
): Promise<Client> {
  const client = new Client();
  const expected = opts.expectHostKey ? publicBlob(opts.expectHostKey) : null;
  return within(
    new Promise<Client>((resolve, reject) => {
      client.once('ready', () => resolve(client));
      client.once('error', reject);
      client.connect({
        sock: opts.sock ?? net.connect(agent.socket),
        username: 'root',
        privateKey: opts.privateKey ?? agent.keys.clientPrivate,
        readyTimeout: 10_000,
        // ssh2's client only opens streamlocal channels to servers it believes are OpenSSH.
        strictVendor: false,
        hostVerifier: (key: Buffer) => {
          opts.onHostKey?.(key);
          return expected === null || key.equals(expected);
        },
      });
    }),
    15_000,
    'the SSH handshake with the agent',
  );
}

/** The SSH public key blob of an OpenSSH private key. */
export function publicBlob(privateKey: string): Buffer {
  const parsed = utils.parseKey(privateKey);
  if (parsed instanceof Error) throw parsed;
  // ssh2's types say one key, but a text can parse to several; the first is the one.
  const keys: unknown = parsed;
  return (Array.isArray(keys) ? (keys[0] as ParsedKey) : parsed).getPublicSSH();
}

export interface ExecResult {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

export function collect(stream: ClientChannel, stdin?: string | Buffer): Promise<ExecResult> {
  return new Promise((resolve) => {
    let stdout = '';
    let stderr = '';
    let code: number | null = null;
    let signal: string | null = null;
    stream.on('data', (d: Buffer) => (stdout += d.toString()));
    stream.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    stream.on('exit', (c: number | null, s?: string) => {
      code = c;
      signal = s ?? null;
    });
    stream.on('close', () => resolve({ code, signal, stdout, stderr }));
    if (stdin !== undefined) stream.end(stdin);
  });
}

export function exec(client: Client, command: string, opts: ExecOptions & { stdin?: string | Buffer } = {}): Promise<ExecResult> {
  return within(
    new Promise<ExecResult>((resolve, reject) => {
      client.exec(command, opts, (err, stream) => (err ? reject(err) : resolve(collect(stream, opts.stdin))));
    }),
    15_000,
    `exec ${JSON.stringify(command)}`,
  );
}

/** A unix HTTP server standing in for dockerd: answers /_ping with OK. */
export function fakeDockerd(socketPath: string): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    if (req.url === '/_ping') {
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      res.end('OK');
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  return new Promise((resolve) => server.listen(socketPath, () => resolve(server)));
}

/** Reads JSON lines from a channel. */
export class LineReader {
  private buffer = '';
  private readonly lines: unknown[] = [];
  private waiter: (() => void) | undefined;

  constructor(stream: ClientChannel) {
    stream.on('data', (d: Buffer) => {
      this.buffer += d.toString();
      let nl: number;
      while ((nl = this.buffer.indexOf('\n')) >= 0) {
        this.lines.push(JSON.parse(this.buffer.slice(0, nl)));
        this.buffer = this.buffer.slice(nl + 1);
      }
      this.waiter?.();
    });
  }

  /** Every line received so far. */
  get all(): unknown[] {
    return this.lines;
  }

  /** Waits for a line after index `from` that satisfies `match`. */
  async next(match: (line: Record<string, unknown>) => boolean, ms: number, message: string, from = 0): Promise<Record<string, unknown>> {
    return within(
      (async () => {
        for (;;) {
          const found = this.lines.slice(from).find((l) => match(l as Record<string, unknown>));
          if (found) return found as Record<string, unknown>;
          await new Promise<void>((resolve) => (this.waiter = resolve));
        }
      })(),
      ms,
      message,
    );
  }
}

/** The test's end of the FIFO pair that stands in for the virtio-serial port. */
export function openPortPair(portIn: string, portOut: string): Duplex {
  // The agent holds port.in open for reading (or is blocked opening it), so this open succeeds.
  const wfd = fs.openSync(portIn, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  const rfd = fs.openSync(portOut, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const writer = new net.Socket({ fd: wfd, readable: false, writable: true });
  const reader = new net.Socket({ fd: rfd, readable: true, writable: false });
  const duplex = new Duplex({
    read() {
      reader.resume();
    },
    write(chunk: Buffer, _enc, cb) {
      writer.write(chunk, cb);
    },
    final(cb) {
      writer.end();
      cb();
    },
    destroy(err, cb) {
      writer.destroy();
      reader.destroy();
      cb(err);
    },
  });
  reader.on('data', (d: Buffer) => {
    if (!duplex.push(d)) reader.pause();
  });
  reader.on('error', (err) => duplex.destroy(err));
  writer.on('error', (err) => duplex.destroy(err));
  return duplex;
}

/**
 * The host's end of a running agent's port (a FIFO pair), opened once the agent has opened its
 * end, with any stale bytes ahead of the agent's banner skipped.
 */
export function openAgentPort(agent: Pick<RunningAgent, 'portIn' | 'portOut'>): Promise<Duplex> {
  return waitFor(
    () => {
      try {
        return skipToBanner(openPortPair(agent.portIn, agent.portOut));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENXIO') return null; // The agent has not opened the port yet.
        throw err;
      }
    },
    10_000,
    'the agent to open the port',
  );
}

/**
 * A unix socket standing in for qemu's chardev socket of the agent's data port: one host at a time,
 * its bytes bridged to the FIFO pair (a host that leaves closes the writer, so the agent reads EOF).
 * `current()` is the host connection now open, so a test can cut it as a vanished coved would.
 */
export async function serveDataPort(agent: Pick<RunningAgent, 'dataIn' | 'dataOut'>, sockPath: string): Promise<{ server: net.Server; current: () => net.Socket | null }> {
  let current: net.Socket | null = null;
  const server = net.createServer((conn) => {
    current = conn;
    conn.on('error', () => undefined);
    conn.pause();
    // The agent may not have the FIFO open yet (it opens it at start, and again after an error).
    void waitFor(
      () => {
        try {
          return openPortPair(agent.dataIn, agent.dataOut);
        } catch {
          return null;
        }
      },
      10_000,
      'the agent to open its data port',
    ).then((port) => {
      conn.pipe(port);
      port.pipe(conn);
      port.on('error', () => undefined);
      conn.once('close', () => port.destroy());
      if (conn.destroyed) port.destroy();
    });
  });
  server.maxConnections = 1;
  await new Promise<void>((r) => server.listen(sockPath, r));
  return { server, current: () => current };
}
