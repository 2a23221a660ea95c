// Choosing what a command acts on: a tree item or a name passed in, else this window's sandbox,
// else a quick pick.
import * as vscode from 'vscode';
import type { SandboxInfo, SandboxState } from '../../../contract/protocol';
import type { Ctx } from '../ctx';
import { SandboxNode } from '../tree/sandboxTree';

/** The sandbox a command was invoked on: a tree item, a name, or nothing. */
export function sandboxArg(ctx: Ctx, arg: unknown): SandboxInfo | undefined {
  if (arg instanceof SandboxNode) return ctx.store.get(arg.sandbox.name) ?? arg.sandbox;
  if (typeof arg === 'string') return ctx.store.get(arg);
  if (arg && typeof arg === 'object' && typeof (arg as { name?: unknown }).name === 'string') return ctx.store.get((arg as { name: string }).name);
  return undefined;
}

export async function pickSandbox(ctx: Ctx, arg: unknown, states: readonly SandboxState[] | 'any', verb: string): Promise<SandboxInfo | undefined> {
  const given = sandboxArg(ctx, arg);
  if (given) return given;
  if (!ctx.store.isLoaded) await ctx.store.refresh(await ctx.connection());
  const ok = (s: SandboxInfo) => states === 'any' || states.includes(s.state);
  const mine = ctx.windowSandbox();
  if (mine && ok(mine)) return mine;
  const candidates = ctx.store.all().filter(ok);
  if (candidates.length === 0) {
    void vscode.window.showInformationMessage(
      states === 'any' ? 'Cove: there is no sandbox yet. Run "Cove: Open in Sandbox" first' : `Cove: no sandbox is ${states.join(' or ')} to ${verb}`,
    );
    return undefined;
  }
  if (candidates.length === 1) return candidates[0];
  const picked = await vscode.window.showQuickPick(
    candidates.map((s) => ({ label: s.name, description: `${s.state} · ${s.workspace}`, sandbox: s })),
    { title: `Cove: the sandbox to ${verb}`, placeHolder: 'Sandbox' },
  );
  return picked?.sandbox;
}

/** The workspace folder to open: the one given, the only one, or one the user picks. */
export async function pickFolder(arg: unknown): Promise<vscode.WorkspaceFolder | vscode.Uri | undefined> {
  if (arg instanceof vscode.Uri) return arg;
  const folders = (vscode.workspace.workspaceFolders ?? []).filter((f) => f.uri.scheme === 'file');
  if (folders.length === 1) return folders[0];
  if (folders.length > 1) return vscode.window.showWorkspaceFolderPick({ placeHolder: 'The folder to open in a sandbox' });
  const chosen = await vscode.window.showOpenDialog({ canSelectFolders: true, canSelectFiles: false, openLabel: 'Open in Sandbox' });
  return chosen?.[0];
}
