// The extension's one context object: settings, the log channel, the coved connection, the sandbox
// list and everything built on them. Two cleanup lists: the extension's lifetime
// (`extensionDisposables`) and one coved connection's (kept by CovedConnection).
import * as vscode from 'vscode';
import type { MessageConnection } from 'vscode-jsonrpc/node';
import { asCoveError } from '../../contract/client';
import { messageOf } from '../../contract/errors';
import type { SandboxInfo } from '../../contract/protocol';
import { Config } from './config';
import { CovedConnection } from './coved';
import { DockerIntegration } from './docker';
import { showError } from './errors';
import { watchPorts } from './ports';
import { SandboxStore } from './sandboxes';
import { StatusBar } from './statusBar';
import { SandboxTerminals } from './terminal/terminals';
import { SandboxTreeProvider } from './tree/sandboxTree';

export class Ctx {
  readonly config = new Config();
  readonly log: vscode.LogOutputChannel;
  readonly coved: CovedConnection;
  readonly store: SandboxStore;
  readonly docker: DockerIntegration;
  readonly terminals: SandboxTerminals;
  readonly statusBar: StatusBar;
  readonly tree: SandboxTreeProvider;
  /** The last error a command showed (the tests read it). */
  lastError: string | undefined;
  private readonly extensionDisposables: vscode.Disposable[] = [];

  constructor(readonly extension: vscode.ExtensionContext) {
    this.log = this.own(vscode.window.createOutputChannel('Cove', { log: true }));
    this.coved = this.own(new CovedConnection(() => ({ home: this.home, entry: this.config.covedPath(extension.extensionPath), env: this.config.idleEnv }), this.log));
    this.store = this.own(new SandboxStore(this.coved, extension.workspaceState, this.log));
    this.docker = this.own(new DockerIntegration(extension.environmentVariableCollection, extension.workspaceState, this.log, () => this.config.dockerSettings));
    this.terminals = new SandboxTerminals(() => this.home, this.log);
    this.statusBar = this.own(new StatusBar(this.store, () => this.coved.connected));
    this.tree = this.own(new SandboxTreeProvider(this.store));
    this.own(vscode.window.createTreeView('cove.sandboxes', { treeDataProvider: this.tree, showCollapseAll: false }));
    this.own(watchPorts(this.store, this.log));

    this.own(
      this.coved.onDidConnect((conn) => {
        this.statusBar.update();
        void this.store.attach(conn);
      }),
    );
    this.own(this.coved.onDidDisconnect(() => this.statusBar.update()));
    this.own(
      this.store.onDidChange(() => {
        this.statusBar.update();
        // Only once coved has answered: an empty list before that says nothing about the sandbox.
        if (this.store.isLoaded) void this.docker.sync(this.store.windowSandbox());
      }),
    );
    this.own(
      vscode.workspace.onDidChangeConfiguration((e) => {
        if (Config.needsReconnect.some((k) => e.affectsConfiguration(k))) {
          this.log.info('cove.home or cove.covedPath changed: reconnecting');
          this.coved.restart().catch((err: unknown) => {
            this.showError('connecting to coved', err);
          });
        }
        if (e.affectsConfiguration('cove.dockerSettings')) void this.docker.sync(this.store.windowSandbox());
      }),
    );
  }

  get home(): string {
    return this.config.home;
  }

  /** Registers `d` for disposal when the extension deactivates. */
  own<T extends vscode.Disposable>(d: T): T {
    this.extensionDisposables.push(d);
    return d;
  }

  /** Connects (starting coved when needed) and returns the connection. */
  connection(): Promise<MessageConnection> {
    return this.coved.get();
  }

  /** Shows an error with what to do next; does not wait for the user. */
  showError(what: string, e: unknown): void {
    const err = asCoveError(e);
    this.lastError = `${what}: ${messageOf(err)}`;
    void showError({ log: this.log, home: this.home }, what, err);
  }

  windowSandbox(): SandboxInfo | undefined {
    return this.store.windowSandbox();
  }

  dispose(): void {
    for (const d of this.extensionDisposables.splice(0).reverse()) {
      try {
        d.dispose();
      } catch (e) {
        this.log.warn(`dispose: ${messageOf(e)}`);
      }
    }
  }
}
