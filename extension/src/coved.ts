// The connection to coved: found at $COVE_HOME/coved.sock, started from the bundled coved (or
// `cove.covedPath`) by the CLI's starter (contract/client.ts) when nothing answers there, and re-established when coved restarts. Handlers
// that belong to one connection are registered through `onDidConnect` and disposed on its close.
import * as vscode from 'vscode';
import type { MessageConnection } from 'vscode-jsonrpc/node';
import { connect } from '../../contract/client';
import { messageOf } from '../../contract/errors';
import { Requests } from '../../contract/protocol';
import { homeFile } from '../../contract/layout';

const START_TIMEOUT_MS = 30_000;
const RECONNECT_MIN_MS = 1_000;
const RECONNECT_MAX_MS = 15_000;

export interface CovedTarget {
  home: string;
  /** The coved entry to start when none is running. */
  entry: string;
  /** Extra environment for a coved started from here (its idle policy). */
  env?: NodeJS.ProcessEnv;
}

export class CovedConnection implements vscode.Disposable {
  private conn: MessageConnection | undefined;
  private pending: Promise<MessageConnection> | undefined;
  /** Disposed when the current connection closes: the client's lifetime, not the extension's. */
  // vscode-jsonrpc's disposables are not vscode's class: keep the shape both have.
  private clientDisposables: { dispose(): unknown }[] = [];
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

  addClientDisposable(d: { dispose(): unknown }): void {
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
    const { home, entry, env } = this.target();
    // The CLI's starter: connects, or starts `entry` and waits for it to answer.
    const conn = await connect({
      home,
      covedEntry: entry,
      env,
      startTimeoutMs: START_TIMEOUT_MS,
      onStart: (pid) => this.log.info(`coved was not running for ${home}: started ${entry} (pid ${pid}); its log: ${homeFile('covedLog', home)}`),
      onError: (e) => this.log.error(`coved could not be started: ${e.message}`),
    });
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
      this.get().catch((e: unknown) => {
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
