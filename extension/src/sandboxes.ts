// What this window knows of coved's sandboxes: the list, kept current by coved's notifications,
// and which sandbox belongs to this window (the one whose workspace is one of its folders).
import * as fs from 'node:fs';
import * as vscode from 'vscode';
import type { MessageConnection } from 'vscode-jsonrpc/node';
import { messageOf } from '../../contract/errors';
import { Notifications, Requests, type PortEvent, type ProgressEvent, type SandboxInfo } from '../../contract/protocol';
import type { CovedConnection } from './coved';
import { isUp } from './states';

const WINDOW_SANDBOX_KEY = 'cove.windowSandbox';

export class SandboxStore implements vscode.Disposable {
  private readonly byName = new Map<string, SandboxInfo>();
  private loaded = false;
  private readonly changeEmitter = new vscode.EventEmitter<void>();
  private readonly portEmitter = new vscode.EventEmitter<PortEvent>();
  private readonly progressEmitter = new vscode.EventEmitter<ProgressEvent>();
  readonly onDidChange = this.changeEmitter.event;
  readonly onPort = this.portEmitter.event;
  readonly onProgress = this.progressEmitter.event;

  constructor(
    private readonly coved: CovedConnection,
    private readonly state: vscode.Memento,
    private readonly log: vscode.LogOutputChannel,
  ) {}

  /** Subscribes to a fresh connection's notifications and loads the list. */
  async attach(conn: MessageConnection): Promise<void> {
    this.coved.addClientDisposable(conn.onNotification(Notifications.sandboxChanged, (e) => this.update(e.sandbox)));
    this.coved.addClientDisposable(
      conn.onNotification(Notifications.sandboxRemoved, (e) => {
        this.byName.delete(e.name);
        this.changeEmitter.fire();
      }),
    );
    this.coved.addClientDisposable(conn.onNotification(Notifications.progress, (e) => this.progressEmitter.fire(e)));
    this.coved.addClientDisposable(
      conn.onNotification(Notifications.port, (e) => {
        this.portEmitter.fire(e);
        void this.refreshOne(e.name);
      }),
    );
    await this.refresh(conn);
  }

  async refresh(conn?: MessageConnection): Promise<void> {
    try {
      const c = conn ?? (await this.coved.get());
      const list = await c.sendRequest(Requests.list);
      this.byName.clear();
      for (const s of list) this.byName.set(s.name, s);
      this.loaded = true;
    } catch (e) {
      this.log.warn(`listing sandboxes failed: ${messageOf(e)}`);
    }
    this.changeEmitter.fire();
  }

  private async refreshOne(name: string): Promise<void> {
    try {
      const c = await this.coved.get();
      this.update(await c.sendRequest(Requests.inspect, { name }));
    } catch {
      // The sandbox went away meanwhile; sandbox/removed says so.
    }
  }

  update(info: SandboxInfo): void {
    this.byName.set(info.name, info);
    this.changeEmitter.fire();
  }

  /** Whether the list reflects coved (false before the first answer and while disconnected). */
  get isLoaded(): boolean {
    return this.loaded && this.coved.connected;
  }

  all(): SandboxInfo[] {
    return [...this.byName.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  get(name: string): SandboxInfo | undefined {
    return this.byName.get(name);
  }

  /** The sandbox sharing `dir` (compared by real path), if any. */
  forFolder(dir: string): SandboxInfo | undefined {
    const real = realpath(dir);
    return this.all().find((s) => s.workspace === real || s.workspace === dir);
  }

  /** This window's sandbox: the one last opened here, else the first that shares one of its folders. */
  windowSandbox(): SandboxInfo | undefined {
    const remembered = this.state.get<string>(WINDOW_SANDBOX_KEY);
    const folders = (vscode.workspace.workspaceFolders ?? []).filter((f) => f.uri.scheme === 'file').map((f) => realpath(f.uri.fsPath));
    const mine = this.all().filter((s) => folders.includes(s.workspace));
    return mine.find((s) => s.name === remembered) ?? mine.find((s) => isUp(s)) ?? mine[0];
  }

  rememberWindowSandbox(name: string): Thenable<void> {
    return this.state.update(WINDOW_SANDBOX_KEY, name);
  }

  dispose(): void {
    this.changeEmitter.dispose();
    this.portEmitter.dispose();
    this.progressEmitter.dispose();
  }
}

export function realpath(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return p;
  }
}
