// "Cove: Delete Sandbox": removes the sandbox (its disk, Docker data and context), never the folder.
import * as vscode from 'vscode';
import { Requests } from '../../../contract/protocol';
import type { Ctx } from '../ctx';
import { pickSandbox } from './pick';

export function deleteSandbox(ctx: Ctx) {
  return async (arg?: unknown, opts?: { confirm?: boolean }): Promise<boolean> => {
    const sb = await pickSandbox(ctx, arg, 'any', 'delete');
    if (!sb) return false;
    if (opts?.confirm !== false) {
      const ok = await vscode.window.showWarningMessage(
        `Delete sandbox ${sb.name}?`,
        { modal: true, detail: `Its disk, with its Docker images, containers and volumes, is removed${sb.state === 'running' ? ' (it is stopped first)' : ''}. The folder ${sb.workspace} is not touched.` },
        'Delete',
      );
      if (ok !== 'Delete') return false;
    }
    ctx.statusBar.setBusy(`deleting ${sb.name}`);
    try {
      await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `Cove: deleting sandbox ${sb.name}` }, async () =>
        (await ctx.connection()).sendRequest(Requests.remove, { name: sb.name, force: true }),
      );
      for (const t of ctx.terminals.of(sb.name)) t.dispose();
      await ctx.store.refresh();
      await ctx.docker.sync(ctx.windowSandbox());
      return true;
    } catch (e) {
      ctx.showError(`deleting sandbox ${sb.name} failed`, e);
      return false;
    } finally {
      ctx.statusBar.setBusy(undefined);
    }
  };
}
