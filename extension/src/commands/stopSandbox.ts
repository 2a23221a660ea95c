// "Cove: Stop Sandbox": shuts the guest down cleanly; the window's Docker settings are restored.
import * as vscode from 'vscode';
import { Requests, type SandboxInfo } from '../../../contract/protocol';
import type { Ctx } from '../ctx';
import { pickSandbox } from './pick';

export function stopSandbox(ctx: Ctx) {
  return async (arg?: unknown): Promise<SandboxInfo | undefined> => {
    const sb = await pickSandbox(ctx, arg, ['running', 'paused', 'asleep', 'starting', 'crashed'], 'stop');
    if (!sb) return undefined;
    ctx.statusBar.setBusy(`stopping ${sb.name}`);
    try {
      const info = await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title: `Cove: stopping sandbox ${sb.name}` },
        async () => (await ctx.connection()).sendRequest(Requests.stop, { name: sb.name }),
      );
      ctx.store.update(info);
      await ctx.docker.sync(ctx.windowSandbox());
      return info;
    } catch (e) {
      ctx.showError(`stopping sandbox ${sb.name} failed`, e);
      return undefined;
    } finally {
      ctx.statusBar.setBusy(undefined);
    }
  };
}
