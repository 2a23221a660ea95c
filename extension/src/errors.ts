// Errors shown to the user: what went wrong and what to do next, with buttons that do it. coved's
// errors carry their hint and, for a failed boot, the console tail.
import { escapeGuestLines } from '../../contract/escape';
import * as fs from 'node:fs';
import * as vscode from 'vscode';
import { asCoveError } from '../../contract/client';
import { isCoveError, messageOf } from '../../contract/errors';
import { ErrorCodes } from '../../contract/protocol';
import { homeFile } from '../../contract/layout';

export interface ErrorContext {
  log: vscode.LogOutputChannel;
  home: string;
}

/** Shows `e` as an error notification that says what to do; resolves when it is dismissed. */
export async function showError(ctx: ErrorContext, what: string, raw: unknown): Promise<void> {
  const e = asCoveError(raw);
  const message = messageOf(e).replace(/\.$/, '');
  let hint = isCoveError(e) ? e.hint : undefined;
  // The console tail is the guest's own text: control characters escaped before it is shown.
  const consoleTail = isCoveError(e) && e.consoleTail ? escapeGuestLines(e.consoleTail) : undefined;
  const actions: Array<{ title: string; run: () => unknown }> = [];

  if (isCoveError(e)) {
    switch (e.code) {
      case ErrorCodes.missingTool:
        hint ??= 'install QEMU: sudo apt-get install qemu-system-x86 qemu-utils';
        break;
      case ErrorCodes.imageBuild:
        hint ??= 'the guest image could not be built; its log is in the images folder';
        actions.push({ title: 'Show coved Log', run: () => openFile(homeFile('covedLog', ctx.home)) });
        break;
      case ErrorCodes.boot:
        hint ??= 'the VM did not boot; the console tail shows where it stopped';
        break;
      case ErrorCodes.noSpace:
        hint ??= 'free some disk space and try again';
        break;
      case ErrorCodes.internal:
        if (/coved/.test(message)) {
          actions.push({ title: 'Show coved Log', run: () => openFile(homeFile('covedLog', ctx.home)) });
          actions.push({ title: 'Retry', run: () => vscode.commands.executeCommand('cove.refresh') });
        }
        break;
    }
  } else if (/ENOENT|ECONNREFUSED|connection.*(closed|disposed)/i.test(message)) {
    hint ??= 'coved is not reachable; the extension restarts it — try again in a moment, or see coved.log';
    actions.push({ title: 'Show coved Log', run: () => openFile(homeFile('covedLog', ctx.home)) });
  }
  if (consoleTail) {
    ctx.log.error(`${what}: console tail:\n${consoleTail}`);
    actions.unshift({ title: 'Show Console Tail', run: () => showText(consoleTail) });
  }
  actions.push({ title: 'Show Log', run: () => ctx.log.show(true) });

  ctx.log.error(`${what}: ${message}${hint ? ` (${hint})` : ''}`);
  const text = `Cove: ${what}: ${message}${hint ? `. ${capitalize(hint)}` : ''}`;
  const picked = await vscode.window.showErrorMessage(text, ...actions.map((a) => a.title));
  await actions.find((a) => a.title === picked)?.run();
}

function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

async function openFile(file: string): Promise<void> {
  if (!fs.existsSync(file)) {
    void vscode.window.showWarningMessage(`Cove: ${file} does not exist yet`);
    return;
  }
  await vscode.window.showTextDocument(vscode.Uri.file(file), { preview: true });
}

async function showText(text: string): Promise<void> {
  const doc = await vscode.workspace.openTextDocument({ content: text, language: 'log' });
  await vscode.window.showTextDocument(doc, { preview: true });
}
