// The Cove view: one item per sandbox (state, accel, mount type) with its extra shared folders and
// its forwarded ports below.
import * as vscode from 'vscode';
import { formatMountSpec } from '../../../contract/mount-spec';
import type { ExtraMount, PortForward, SandboxInfo } from '../../../contract/protocol';
import { escapeGuestText } from '../../../contract/escape';
import type { SandboxStore } from '../sandboxes';

export class SandboxNode extends vscode.TreeItem {
  constructor(readonly sandbox: SandboxInfo, isWindow: boolean) {
    super(sandbox.name, sandbox.ports.length + sandbox.mounts.length > 0 ? vscode.TreeItemCollapsibleState.Expanded : vscode.TreeItemCollapsibleState.None);
    const accel = sandbox.accel ? sandbox.accel.toUpperCase() : 'accel ?';
    const docker = sandbox.state === 'running' ? (sandbox.dockerReady ? 'docker ready' : 'docker starting') : undefined;
    this.description = [sandbox.state, accel, sandbox.mount, docker, isWindow ? 'this window' : undefined].filter(Boolean).join(' · ');
    this.contextValue = `sandbox-${sandbox.state}`;
    this.iconPath = iconFor(sandbox);
    this.id = `sandbox:${sandbox.name}`;
    const md = new vscode.MarkdownString(undefined, true);
    md.appendMarkdown(`**${sandbox.name}** — ${sandbox.state}\n\n`);
    md.appendMarkdown(`- workspace: \`${sandbox.workspace}\`\n- accel: ${accel}, mount: ${sandbox.mount}${sandbox.readonly ? ' (read-only)' : ''}\n`);
    md.appendMarkdown(`- ${sandbox.cpus} CPU, ${sandbox.memoryMiB} MiB, disk ${sandbox.diskGiB} GiB\n`);
    md.appendMarkdown(`- Docker context: \`${sandbox.context ?? '(no docker CLI)'}\`, \`${sandbox.dockerHost}\`\n`);
    if (sandbox.bootSeconds !== null) md.appendMarkdown(`- last start: ${sandbox.bootSeconds.toFixed(1)} s (${sandbox.bootKind ?? 'cold'})\n`);
    if (sandbox.keepAwake) md.appendMarkdown('- kept awake: never paused or put to sleep when idle\n');
    if (!sandbox.bindGuard) md.appendMarkdown('- bind guard off: containers may bind-mount paths that are not shared\n');
    if (sandbox.mountsNote) {
      md.appendMarkdown('\n$(info) ');
      md.appendText(sandbox.mountsNote);
      md.appendMarkdown('\n');
    }
    // Notes and problems can quote the guest: plain text (no Markdown links), control characters escaped.
    if (sandbox.warmNote) {
      md.appendMarkdown('\n$(info) ');
      md.appendText(escapeGuestText(sandbox.warmNote));
      md.appendMarkdown('\n');
    }
    if (sandbox.problem) {
      md.appendMarkdown('\n$(warning) ');
      md.appendText(escapeGuestText(sandbox.problem));
      md.appendMarkdown('\n');
    }
    this.tooltip = md;
  }
}

export class MountNode extends vscode.TreeItem {
  constructor(readonly sandbox: string, readonly mount: ExtraMount) {
    super(mount.guest, vscode.TreeItemCollapsibleState.None);
    this.description = `${mount.guest !== mount.host ? `from ${mount.host}` : 'shared'}${mount.readonly ? ' · read-only' : ''}${mount.kind === 'file' ? ' · file' : ''}`;
    this.contextValue = 'mount';
    this.iconPath = new vscode.ThemeIcon(mount.kind === 'file' ? 'file-symlink-file' : 'file-symlink-directory');
    this.id = `mount:${sandbox}:${mount.guest}`;
    this.tooltip = `Also shared with the sandbox: ${formatMountSpec(mount)} (cove up --mount)`;
  }
}

export class PortNode extends vscode.TreeItem {
  constructor(readonly sandbox: string, readonly port: PortForward) {
    super(`127.0.0.1:${port.hostPort} → ${port.guestPort}`, vscode.TreeItemCollapsibleState.None);
    this.description = port.error ? `failed: ${port.error}` : port.origin;
    this.contextValue = port.error ? 'port-failed' : 'port';
    this.iconPath = new vscode.ThemeIcon(port.error ? 'warning' : 'plug');
    this.id = `port:${sandbox}:${port.hostPort}`;
    this.tooltip = port.error ?? `Guest port ${port.guestPort} is forwarded to 127.0.0.1:${port.hostPort} (${port.origin})`;
    if (!port.error) this.command = { command: 'cove.openPortInBrowser', title: 'Open in Browser', arguments: [this] };
  }
}

function iconFor(s: SandboxInfo): vscode.ThemeIcon {
  switch (s.state) {
    case 'running':
      return new vscode.ThemeIcon('vm-running', new vscode.ThemeColor(s.dockerReady ? 'testing.iconPassed' : 'charts.yellow'));
    case 'creating':
    case 'starting':
    case 'stopping':
      return new vscode.ThemeIcon('loading~spin');
    case 'crashed':
      return new vscode.ThemeIcon('error', new vscode.ThemeColor('testing.iconFailed'));
    case 'paused':
      return new vscode.ThemeIcon('debug-pause');
    case 'asleep':
    case 'stopped':
      return new vscode.ThemeIcon('vm-outline');
  }
}

export class SandboxTreeProvider implements vscode.TreeDataProvider<SandboxNode | MountNode | PortNode>, vscode.Disposable {
  private readonly emitter = new vscode.EventEmitter<void>();
  readonly onDidChangeTreeData = this.emitter.event;
  private readonly sub: vscode.Disposable;

  constructor(private readonly store: SandboxStore) {
    this.sub = store.onDidChange(() => this.emitter.fire());
  }

  getTreeItem(e: SandboxNode | MountNode | PortNode): vscode.TreeItem {
    return e;
  }

  getChildren(e?: SandboxNode | MountNode | PortNode): Array<SandboxNode | MountNode | PortNode> {
    if (!e) {
      const mine = this.store.windowSandbox()?.name;
      return this.store.all().map((s) => new SandboxNode(s, s.name === mine));
    }
    if (e instanceof SandboxNode) {
      return [...e.sandbox.mounts.map((m) => new MountNode(e.sandbox.name, m)), ...e.sandbox.ports.map((p) => new PortNode(e.sandbox.name, p))];
    }
    return [];
  }

  dispose(): void {
    this.sub.dispose();
    this.emitter.dispose();
  }
}
