// The client side of coved's API, shared by the CLI and the extension: connects to
// $COVE_HOME/coved.sock, starting coved first when nothing answers there.
import * as child_process from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import WebSocket from 'ws';
import { ResponseError, type MessageConnection } from 'vscode-jsonrpc/node';
import { coveHome, homeFile } from './layout';
import { CoveError } from './errors';
import { ErrorCodes, MAX_FRAME_BYTES, type ErrorData } from './protocol';
import { connectionForSocket } from './transport';
import { isWaitTimeoutError, waitFor } from './wait';

export interface ConnectOptions extends StartOptions {
  home?: string;
  /** Start coved when it is not running (default true). */
  autoStart?: boolean;
  /** The script coved runs from; default: the one tsc emits beside this module (out/vmm-host/coved/main.js). */
  covedEntry?: string;
  /** How long to wait for a coved that was just started, in ms. */
  startTimeoutMs?: number;
}

function openSocket(sockPath: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws+unix://${sockPath}:/`, { maxPayload: 64 * MAX_FRAME_BYTES });
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

export interface StartOptions {
  /** The runtime that runs a script entry (default: this process's) and extra environment for coved. */
  execPath?: string;
  env?: NodeJS.ProcessEnv;
  /** Told the pid of the coved just started (or the spawn error), for a client's own log. */
  onStart?: (pid: number | undefined, entry: string) => void;
  onError?: (e: Error) => void;
}

/** A coved just started: its exit status once it has exited, and where its lines begin in coved.log. */
export interface StartedCoved {
  exitCode(): number | null;
  logOffset: number;
}

/**
 * The one coved starter (the CLI's and the extension's): starts `entry` detached, so coved outlives
 * this process, with its output in coved.log. A `.js` entry runs under this process's runtime (in
 * desktop VS Code that is Electron, which ELECTRON_RUN_AS_NODE makes a plain Node); anything else
 * is run as an executable.
 */
export function startCoved(home: string, entry: string, opts: StartOptions = {}): StartedCoved {
  if (!fs.existsSync(entry)) {
    throw new CoveError(ErrorCodes.missingTool, `coved is not running and cannot be started: ${entry} does not exist`, 'reinstall Cove, or point the cove.covedPath setting at a coved');
  }
  fs.mkdirSync(home, { recursive: true, mode: 0o700 });
  const log = fs.openSync(homeFile('covedLog', home), 'a', 0o600);
  let code: number | null = null;
  try {
    const logOffset = fs.fstatSync(log).size;
    const isScript = /\.[cm]?js$/.test(entry);
    const child = child_process.spawn(isScript ? (opts.execPath ?? process.execPath) : entry, isScript ? [entry] : [], {
      detached: true,
      stdio: ['ignore', log, log],
      env: { ...process.env, ELECTRON_RUN_AS_NODE: '1', ...opts.env, COVE_HOME: home },
    });
    child.on('error', (e) => opts.onError?.(e));
    // A signal counts as a failure too (128 + n, as a shell says).
    child.on('exit', (c, signal) => (code = c ?? (signal ? 128 : 1)));
    child.unref();
    opts.onStart?.(child.pid, entry);
    return { exitCode: () => code, logOffset };
  } finally {
    fs.closeSync(log);
  }
}

/** What coved wrote to coved.log from `offset` on: its last lines, without their timestamps. */
export function covedLogSince(home: string, offset: number, maxLines = 12): string[] {
  let text: string;
  try {
    const fd = fs.openSync(homeFile('covedLog', home), 'r');
    try {
      const size = fs.fstatSync(fd).size;
      const start = Math.max(offset, size - 64 * 1024);
      const buf = Buffer.alloc(Math.max(0, size - start));
      fs.readSync(fd, buf, 0, buf.length, start);
      text = buf.toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return [];
  }
  return text
    .split('\n')
    .map((l) => l.replace(/^\d{4}-\d\d-\d\dT[\d:.]+Z /, '').trimEnd())
    .filter((l) => l !== '')
    .slice(-maxLines);
}

/** Connects to coved, starting it if needed; the connection is listening when returned. */
export async function connect(opts: ConnectOptions = {}): Promise<MessageConnection> {
  const home = opts.home ?? coveHome();
  const sock = homeFile('covedSock', home);
  let ws: WebSocket;
  try {
    ws = await openSocket(sock);
  } catch (first) {
    if (opts.autoStart === false) {
      throw new CoveError(ErrorCodes.internal, `coved is not running (${(first as Error).message})`, 'run `cove doctor`, or start it with `npx cove daemon`');
    }
    // This is a file path, not an import: the contract does not load coved, it only starts it.
    const entry = opts.covedEntry ?? path.join(__dirname, '..', 'vmm-host', 'coved', 'main.js');
    const started = startCoved(home, entry, opts);
    const timeoutMs = opts.startTimeoutMs ?? 20_000;
    let answered: { ws: WebSocket } | { exited: number };
    try {
      // coved exits 0 when another coved holds the home (that one answers); any other exit is a
      // coved that cannot start, and what it logged says why.
      answered = await waitFor('coved to answer on its socket', timeoutMs, async () => {
        const code = started.exitCode();
        if (code !== null && code !== 0) return { exited: code };
        return { ws: await openSocket(sock) };
      }, 150);
    } catch (e) {
      const last = isWaitTimeoutError(e) ? e.lastError : e;
      throw new CoveError(
        ErrorCodes.internal,
        `coved did not start within ${Math.round(timeoutMs / 1000)} s (${last instanceof Error ? last.message : String(last)})`,
        `see its log: ${homeFile('covedLog', home)}`,
      );
    }
    if ('exited' in answered) {
      const lines = covedLogSince(home, started.logOffset);
      throw new CoveError(
        answered.exited === 2 ? ErrorCodes.invalidInput : ErrorCodes.internal,
        `coved could not start (exit status ${answered.exited})${lines.length > 0 ? `:\n${lines.join('\n')}` : ''}`,
        `fix what it says and run the command again; its whole log: ${homeFile('covedLog', home)}`,
      );
    }
    ws = answered.ws;
  }
  const conn = connectionForSocket(ws);
  conn.listen();
  return conn;
}

/** Turns a JSON-RPC error from coved back into a CoveError with its hint. */
export function asCoveError(e: unknown): unknown {
  if (e instanceof ResponseError) {
    const data = (e.data ?? {}) as ErrorData;
    return new CoveError(e.code as CoveError['code'], e.message, data.hint, data.consoleTail);
  }
  return e;
}
