// The status bar item: this window's sandbox and its state; a click opens a terminal or the sandbox.
import { escapeGuestText } from '../../contract/escape';
import * as vscode from 'vscode';
import type { SandboxInfo } from '../../contract/protocol';
import type { SandboxStore } from './sandboxes';
import { isUp } from './states';

export class StatusBar implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem('cove.status', vscode.StatusBarAlignment.Left, 10);
  private busy: string | undefined;

  constructor(
    private readonly store: SandboxStore,
    private readonly connected: () => boolean,
  ) {
    this.item.name = 'Cove Sandbox';
    this.update();
    this.item.show();
  }

  /** Shows a long operation (`opening`, `stopping`) until `setBusy(undefined)`. */
  setBusy(what: string | undefined): void {
    this.busy = what;
    this.update();
  }

  update(): void {
    const sb = this.store.windowSandbox();
    this.item.backgroundColor = undefined;
    if (!this.connected()) {
      this.item.text = '$(debug-disconnect) Cove';
      this.item.tooltip = 'coved is not reachable; the extension keeps trying. Click to open the sandbox.';
      this.item.command = 'cove.openInSandbox';
      return;
    }
    if (this.busy) {
      this.item.text = `$(sync~spin) Cove: ${this.busy}`;
      this.item.tooltip = `Cove: ${this.busy}`;
      this.item.command = 'cove.showLogs';
      return;
    }
    if (!sb) {
      this.item.text = '$(vm-outline) Cove';
      this.item.tooltip = 'No sandbox for this window. Click to open this folder in a sandbox.';
      this.item.command = 'cove.openInSandbox';
      return;
    }
    const accel = sb.accel ? ` (${sb.accel.toUpperCase()})` : '';
    const icons: Partial<Record<SandboxInfo['state'], string>> = { running: '$(vm-running)', paused: '$(debug-pause)', asleep: '$(vm-outline)', crashed: '$(error)', stopped: '$(vm-outline)' };
    const icon = icons[sb.state] ?? '$(sync~spin)';
    this.item.text = `${icon} Cove: ${sb.name} ${sb.state}${sb.state === 'running' ? accel : ''}`;
    this.item.tooltip = `Sandbox ${sb.name}: ${sb.state}${accel}, ${sb.mount}; Docker context ${sb.context ?? sb.dockerHost}${sb.problem ? `\n${escapeGuestText(sb.problem)}` : ''}`;
    // A paused or sleeping sandbox wakes when its terminal connects.
    this.item.command = isUp(sb) ? 'cove.openTerminal' : 'cove.openInSandbox';
    if (sb.state === 'crashed') this.item.backgroundColor = new vscode.ThemeColor('statusBarItem.errorBackground');
  }

  dispose(): void {
    this.item.dispose();
  }
}
