// "Cove: Show Sandbox Logs": the guest's serial console (boot markers, service starts and exits);
// with no sandbox yet, the extension's own log.
import * as fs from 'node:fs';
import * as vscode from 'vscode';
import { vmFile } from '../../../contract/layout';
import type { Ctx } from '../ctx';
import { sandboxArg } from './pick';

export function showLogs(ctx: Ctx) {
  return async (arg?: unknown): Promise<vscode.TextEditor | undefined> => {
    const sb = sandboxArg(ctx, arg) ?? ctx.windowSandbox() ?? (ctx.store.all().length === 1 ? ctx.store.all()[0] : undefined);
    if (!sb) {
      ctx.log.show(true);
      return undefined;
    }
    const file = vmFile(sb.name, 'consoleLog', ctx.home);
    if (!fs.existsSync(file)) {
      void vscode.window.showInformationMessage(`Cove: sandbox ${sb.name} has no console log yet (it has not booted)`);
      ctx.log.show(true);
      return undefined;
    }
    const doc = await vscode.workspace.openTextDocument(vscode.Uri.file(file));
    const editor = await vscode.window.showTextDocument(doc, { preview: true });
    const end = new vscode.Position(doc.lineCount, 0);
    editor.revealRange(new vscode.Range(end, end));
    return editor;
  };
}
