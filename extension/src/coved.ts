// The connection to coved: found at $COVE_HOME/coved.sock, started from the bundled coved (or
// `cove.covedPath`) when nothing answers there, and re-established when coved restarts. Handlers
// that belong to one connection are registered through `onDidConnect` and disposed on its close.
import * as child_process from 'node:child_process';
import * as fs from 'node:fs';
import * as vscode from 'vscode';
import type { MessageConnection } from 'vscode-jsonrpc/node';
import { connect } from '../../contract/client';
import { CoveError, messageOf } from '../../contract/errors';
import { ErrorCodes, Requests } from '../../contract/protocol';
import { homeFile } from '../../contract/layout';

const START_TIMEOUT_MS = 30_000;
const RECONNECT_MIN_MS = 1_000;
const RECONNECT_MAX_MS = 15_000;

export interface CovedTarget {
  home: string;
  /** The coved entry to start when none is running. */
  entry: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class CovedConnection implements vscode.Disposable {
  private conn: MessageConnection | undefined;
  private pending: Promise<MessageConnection> | undefined;
  /** Disposed when the current connection closes: the client's lifetime, not the extension's. */
  private clientDisposables: vscode.Disposable[] = [];
  private reconnectTimer: NodeJS.Timeout | undefined;
  private reconnectDelay = RECONNECT_MIN_MS;
  private disposed = false;
  private readonly connectEmitter = new vscode.EventEmitter<MessageConnection>();
  private readonly disconnectEmitter = new vscode.EventEmitter<void>();
  /** Fires with each new connection; register notification handlers with `addClientDisposable`. */
  readonly onDidConnect = this.connectEmitter.event;
  readonly onDidDisconnect = this.disconnectEmitter.event;

  constructor(
    private readonly target: () => CovedTarget,
    private readonly log: vscode.LogOutputChannel,
  ) {}

  get connected(): boolean {
    return this.conn !== undefined;
  }

  addClientDisposable(d: vscode.Disposable): void {
    this.clientDisposables.push(d);
  }

  /** The live connection; connects (starting coved when needed) if there is none. */
  get(): Promise<MessageConnection> {
    if (this.conn) return Promise.resolve(this.conn);
    if (!this.pending) {
      this.pending = this.connectNow().finally(() => (this.pending = undefined));
    }
    return this.pending;
  }

  /** Drops the connection and connects again (after a settings change). */
  async restart(): Promise<void> {
    this.closeClient();
    await this.get();
  }

  private async connectNow(): Promise<MessageConnection> {
    const { home, entry } = this.target();
    let conn: MessageConnection;
    try {
      conn = await connect({ home, autoStart: false });
    } catch {
      this.log.info(`coved is not running for ${home}: starting ${entry}`);
      this.start(home, entry);
      conn = await this.waitForCoved(home);
    }
    if (this.disposed) {
      conn.dispose();
      throw new Error('the Cove extension is shutting down');
    }
    this.conn = conn;
    this.reconnectDelay = RECONNECT_MIN_MS;
    conn.onClose(() => this.lost(conn));
    conn.onError(([e]) => this.log.warn(`coved connection error: ${messageOf(e)}`));
    try {
      const v = await conn.sendRequest(Requests.version);
      this.log.info(`connected to coved ${v.version} (pid ${v.pid}, protocol ${v.protocol}, home ${v.home})`);
    } catch (e) {
      this.log.warn(`coved did not answer cove/version: ${messageOf(e)}`);
    }
    this.connectEmitter.fire(conn);
    return conn;
  }

  /** Starts coved detached, so it outlives this window; its output goes to coved.log. */
  private start(home: string, entry: string): void {
    if (!fs.existsSync(entry)) {
      throw new CoveError(ErrorCodes.missingTool, `coved is not running and cannot be started: ${entry} does not exist`, 'reinstall the Cove extension, or point the cove.covedPath setting at a coved');
    }
    fs.mkdirSync(home, { recursive: true, mode: 0o700 });
    const logFd = fs.openSync(homeFile('covedLog', home), 'a', 0o600);
    try {
      const isScript = /\.[cm]?js$/.test(entry);
      // In desktop VS Code process.execPath is Electron: ELECTRON_RUN_AS_NODE makes it a plain Node.
      const child = child_process.spawn(isScript ? process.execPath : entry, isScript ? [entry] : [], {
        detached: true,
        stdio: ['ignore', logFd, logFd],
        env: { ...process.env, COVE_HOME: home, ELECTRON_RUN_AS_NODE: '1' },
      });
      child.on('error', (e) => this.log.error(`coved could not be started: ${e.message}`));
      child.unref();
      this.log.info(`started coved (pid ${child.pid}); its log: ${homeFile('covedLog', home)}`);
    } finally {
      fs.closeSync(logFd);
    }
  }

  private async waitForCoved(home: string): Promise<MessageConnection> {
    const deadline = Date.now() + START_TIMEOUT_MS;
    let last: unknown;
    while (Date.now() < deadline) {
      await sleep(200);
      try {
        return await connect({ home, autoStart: false });
      } catch (e) {
        last = e;
      }
    }
    throw new CoveError(
      ErrorCodes.internal,
      `coved did not start within ${START_TIMEOUT_MS / 1000} s (${messageOf(last)})`,
      `see its log: ${homeFile('covedLog', home)}`,
    );
  }

  private lost(conn: MessageConnection): void {
    if (this.conn !== conn) return;
    this.log.warn('the connection to coved closed; reconnecting');
    this.closeClient();
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.disposed || this.reconnectTimer) return;
    const delay = this.reconnectDelay;
    this.reconnectDelay = Math.min(this.reconnectDelay * 2, RECONNECT_MAX_MS);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      this.get().catch((e) => {
        this.log.warn(`reconnecting to coved failed: ${messageOf(e)}; next try in ${this.reconnectDelay / 1000} s`);
        this.scheduleReconnect();
      });
    }, delay);
  }

  private closeClient(): void {
    const conn = this.conn;
    this.conn = undefined;
    for (const d of this.clientDisposables.splice(0)) d.dispose();
    if (conn) {
      conn.dispose();
      this.disconnectEmitter.fire();
    }
  }

  dispose(): void {
    this.disposed = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.closeClient();
    this.connectEmitter.dispose();
    this.disconnectEmitter.dispose();
  }
}
