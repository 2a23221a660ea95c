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

export interface ConnectOptions {
  home?: string;
  /** Start coved when it is not running (default true). */
  autoStart?: boolean;
  /** The script coved runs from; default: the one tsc emits beside this module (out/vmm-host/coved/main.js). */
  covedEntry?: string;
  /** How long to wait for a coved that was just started, in ms. */
  startTimeoutMs?: number;
  /** The runtime that runs coved (default: this process's) and extra environment for it. */
  execPath?: string;
  env?: NodeJS.ProcessEnv;
}

function openSocket(sockPath: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws+unix://${sockPath}:/`, { maxPayload: 64 * MAX_FRAME_BYTES });
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

/** Starts coved detached, so it outlives this process; its output goes to coved.log. */
export function startCoved(home: string, entry: string, opts: { execPath?: string; env?: NodeJS.ProcessEnv } = {}): void {
  fs.mkdirSync(home, { recursive: true, mode: 0o700 });
  const log = fs.openSync(homeFile('covedLog', home), 'a', 0o600);
  const child = child_process.spawn(opts.execPath ?? process.execPath, [entry], {
    detached: true,
    stdio: ['ignore', log, log],
    env: { ...process.env, ...opts.env, COVE_HOME: home },
  });
  child.unref();
  fs.closeSync(log);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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
    startCoved(home, entry, { execPath: opts.execPath, env: opts.env });
    const deadline = Date.now() + (opts.startTimeoutMs ?? 20_000);
    for (;;) {
      await sleep(150);
      try {
        ws = await openSocket(sock);
        break;
      } catch (e) {
        if (Date.now() > deadline) {
          throw new CoveError(
            ErrorCodes.internal,
            `coved did not start within ${Math.round((opts.startTimeoutMs ?? 20_000) / 1000)} s (${(e as Error).message})`,
            `see its log: ${homeFile('covedLog', home)}`,
          );
        }
      }
    }
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
