// The extension's entry: builds the one context object, registers the commands, connects to coved
// (starting it when it is not running) and returns the API the end-to-end tests use.
import * as vscode from 'vscode';
import type { SandboxInfo } from '../../contract/protocol';
import { activateReporting } from './activation';
import { registerCommands } from './commands/registerCommands';
import { Ctx } from './ctx';

/** What `activate` returns: read-only views for tests and other extensions. */
export interface CoveApi {
  readonly home: string;
  sandboxes(): SandboxInfo[];
  windowSandbox(): SandboxInfo | undefined;
  /** Resolves once coved has answered and the sandbox list is loaded. */
  ready(): Promise<void>;
  /** The text a sandbox terminal has shown so far, or undefined for another terminal. */
  terminalOutput(t: vscode.Terminal): string | undefined;
  /** The sandbox a terminal's shell runs in. */
  terminalSandbox(t: vscode.Terminal): string | undefined;
  /** The sandbox this window's Docker tooling points at, if any. */
  dockerTarget(): string | undefined;
  lastError(): string | undefined;
  /** Whether a connection to coved is up. */
  connected(): boolean;
}

let ctx: Ctx | undefined;

export function activate(context: vscode.ExtensionContext): Promise<CoveApi> {
  // Everything, the context object included, runs inside the reporting handler (defect #7: with
  // `new Ctx` before the try, its errors never reached the user).
  return activateReporting(
    () => {
      ctx = new Ctx(context);
      const c = ctx;
      context.subscriptions.push({ dispose: () => c.dispose() });
      registerCommands(c);
      const loaded = c.connection().then(
        () => new Promise<void>((resolve) => (c.store.isLoaded ? resolve() : c.store.onDidChange(() => c.store.isLoaded && resolve()))),
        (e: unknown) => {
          c.showError('connecting to coved', e);
        },
      );
      const api: CoveApi = {
        get home() {
          return c.home;
        },
        sandboxes: () => c.store.all(),
        windowSandbox: () => c.windowSandbox(),
        ready: () => loaded,
        terminalOutput: (t) => c.terminals.ptyOf(t)?.output(),
        terminalSandbox: (t) => c.terminals.ptyOf(t)?.sandbox,
        dockerTarget: () => c.docker.activeSandbox,
        lastError: () => c.lastError,
        connected: () => c.coved.connected,
      };
      return api;
    },
    (message) => void vscode.window.showErrorMessage(message),
  ).catch((e: unknown) => {
    // Whatever was built before the failure is torn down, not left half alive.
    ctx?.dispose();
    ctx = undefined;
    throw e;
  });
}

export function deactivate(): void {
  ctx?.dispose();
  ctx = undefined;
}
