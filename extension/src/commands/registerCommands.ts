// Every command of the extension, registered in one place; one file per command.
import * as vscode from 'vscode';
import type { Ctx } from '../ctx';
import { deleteSandbox } from './deleteSandbox';
import { openInSandbox } from './openInSandbox';
import { openTerminal, terminalProfileProvider } from './openTerminal';
import { openPort, publishPort } from './publishPort';
import { showLogs } from './showLogs';
import { stopSandbox } from './stopSandbox';

export function registerCommands(ctx: Ctx): void {
  const commands: Record<string, (...args: never[]) => unknown> = {
    'cove.openInSandbox': openInSandbox(ctx),
    'cove.stopSandbox': stopSandbox(ctx),
    'cove.deleteSandbox': deleteSandbox(ctx),
    'cove.openTerminal': openTerminal(ctx),
    'cove.showLogs': showLogs(ctx),
    'cove.publishPort': publishPort(ctx),
    'cove.openPortInBrowser': openPort(),
    'cove.refresh': async () => ctx.store.refresh(await ctx.connection()),
  };
  for (const [id, fn] of Object.entries(commands)) ctx.own(vscode.commands.registerCommand(id, fn as (...args: unknown[]) => unknown));
  ctx.own(vscode.window.registerTerminalProfileProvider('cove.sandboxTerminal', terminalProfileProvider(ctx)));
}
