// Ports the agent reports: coved forwards them to 127.0.0.1; the user is offered the browser.
import * as vscode from 'vscode';
import type { PortEvent } from '../../contract/protocol';
import type { SandboxStore } from './sandboxes';

export function portUrl(hostPort: number): vscode.Uri {
  return vscode.Uri.parse(`http://127.0.0.1:${hostPort}/`);
}

export async function openPortInBrowser(hostPort: number): Promise<boolean> {
  return vscode.env.openExternal(await vscode.env.asExternalUri(portUrl(hostPort)));
}

export function watchPorts(store: SandboxStore, log: vscode.LogOutputChannel): vscode.Disposable {
  return store.onPort((e: PortEvent) => {
    const { name, port, action } = e;
    log.info(`sandbox ${name}: port ${port.guestPort} → 127.0.0.1:${port.hostPort} ${action} (${port.origin})${port.error ? `: ${port.error}` : ''}`);
    // Only this window's sandbox: other windows tell their own users.
    if (store.windowSandbox()?.name !== name) return;
    if (action === 'forwarded' && port.origin === 'auto') {
      void vscode.window
        .showInformationMessage(`Cove: port ${port.guestPort} in sandbox ${name} is forwarded to 127.0.0.1:${port.hostPort}`, 'Open in Browser')
        .then((pick) => (pick ? openPortInBrowser(port.hostPort) : undefined));
    } else if (action === 'failed') {
      void vscode.window.showWarningMessage(
        `Cove: port ${port.guestPort} in sandbox ${name} could not be forwarded to 127.0.0.1:${port.hostPort}: ${port.error ?? 'unknown error'}. Publish it on another host port with "Cove: Publish Port…"`,
      );
    }
  });
}
