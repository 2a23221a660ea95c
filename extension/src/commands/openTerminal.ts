// "Cove: Open Sandbox Terminal" and the "Cove Sandbox" terminal profile: a shell in the guest,
// in the workspace path. When no sandbox runs for the window, it is opened first.
import * as vscode from 'vscode';
import type { SandboxInfo } from '../../../contract/protocol';
import type { Ctx } from '../ctx';
import { isUp, UP_STATES } from '../states';
import { pickSandbox, sandboxArg } from './pick';

async function runningSandbox(ctx: Ctx, arg: unknown): Promise<SandboxInfo | undefined> {
  if (!sandboxArg(ctx, arg)) {
    if (!ctx.store.isLoaded) await ctx.store.refresh(await ctx.connection());
    const mine = ctx.windowSandbox();
    // A paused or sleeping sandbox wakes when the terminal connects.
    if (!isUp(mine)) {
      if (ctx.store.all().some((s) => isUp(s)) && !mine) return pickSandbox(ctx, undefined, UP_STATES, 'open a terminal in');
      return (await vscode.commands.executeCommand<SandboxInfo | undefined>('cove.openInSandbox')) ?? undefined;
    }
  }
  return pickSandbox(ctx, arg, UP_STATES, 'open a terminal in');
}

export function openTerminal(ctx: Ctx) {
  return async (arg?: unknown): Promise<vscode.Terminal | undefined> => {
    try {
      const sb = await runningSandbox(ctx, arg);
      if (!sb) return undefined;
      return ctx.terminals.open(sb);
    } catch (e) {
      ctx.showError('opening a sandbox terminal failed', e);
      return undefined;
    }
  };
}

export function terminalProfileProvider(ctx: Ctx): vscode.TerminalProfileProvider {
  return {
    async provideTerminalProfile(): Promise<vscode.TerminalProfile | undefined> {
      try {
        const sb = await runningSandbox(ctx, undefined);
        if (!sb) throw new Error('no sandbox is running for this window: run "Cove: Open in Sandbox" first');
        return new vscode.TerminalProfile(ctx.terminals.options(sb));
      } catch (e) {
        ctx.showError('opening a sandbox terminal failed', e);
        throw e;
      }
    },
  };
}
