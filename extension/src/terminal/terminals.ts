// Sandbox terminals: created by "Cove: Open Sandbox Terminal" and by the "Cove Sandbox" terminal
// profile. A terminal's pseudoterminal is reachable from it, so the tests can read its output back.
import * as vscode from 'vscode';
import type { SandboxInfo } from '../../../contract/protocol';
import { SandboxPty } from './sandboxPty';

export class SandboxTerminals {
  constructor(
    private readonly home: () => string,
    private readonly log: vscode.LogOutputChannel,
  ) {}

  options(sb: SandboxInfo): vscode.ExtensionTerminalOptions {
    const pty = new SandboxPty(sb.name, this.home(), sb.workspace, this.log);
    return { name: `Cove: ${sb.name}`, pty, iconPath: new vscode.ThemeIcon('vm') };
  }

  open(sb: SandboxInfo): vscode.Terminal {
    const t = vscode.window.createTerminal(this.options(sb));
    t.show();
    return t;
  }

  ptyOf(t: vscode.Terminal): SandboxPty | undefined {
    const pty = (t.creationOptions as vscode.ExtensionTerminalOptions).pty;
    return pty instanceof SandboxPty ? pty : undefined;
  }

  /** The open terminals of sandbox `name`. */
  of(name: string): vscode.Terminal[] {
    return vscode.window.terminals.filter((t) => this.ptyOf(t)?.sandbox === name);
  }
}
