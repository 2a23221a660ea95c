// "Cove: Publish Port…": forwards a guest port to 127.0.0.1 on the host by hand.
import * as vscode from 'vscode';
import { Requests, type PortForward } from '../../../contract/protocol';
import type { Ctx } from '../ctx';
import { openPortInBrowser } from '../ports';
import { PortNode } from '../tree/sandboxTree';
import { pickSandbox } from './pick';

/** `8080`, or `HOST:GUEST` like `9000:80`. */
export function parsePortSpec(spec: string): { hostPort: number; guestPort: number } | string {
  const m = /^\s*(?:(\d{1,5})\s*:\s*)?(\d{1,5})\s*$/.exec(spec);
  if (!m) return 'a port (8080) or HOST:GUEST (9000:80)';
  const guestPort = Number(m[2]);
  const hostPort = m[1] ? Number(m[1]) : guestPort;
  for (const p of [hostPort, guestPort]) if (p < 1 || p > 65535) return `${p} is not a port: 1 to 65535`;
  return { hostPort, guestPort };
}

export function publishPort(ctx: Ctx) {
  return async (arg?: unknown, specArg?: string): Promise<PortForward | undefined> => {
    const sb = await pickSandbox(ctx, arg, ['running'], 'publish a port of');
    if (!sb) return undefined;
    const spec =
      specArg ??
      (await vscode.window.showInputBox({
        title: `Cove: publish a port of sandbox ${sb.name}`,
        prompt: 'The guest port, or HOST:GUEST. The host side listens on 127.0.0.1 only.',
        placeHolder: '8080 or 9000:80',
        validateInput: (v) => {
          const r = parsePortSpec(v);
          return typeof r === 'string' ? r : undefined;
        },
      }));
    if (spec === undefined) return undefined;
    const parsed = parsePortSpec(spec);
    if (typeof parsed === 'string') {
      void vscode.window.showErrorMessage(`Cove: ${spec} is not a port spec: use ${parsed}`);
      return undefined;
    }
    try {
      const port = await (await ctx.connection()).sendRequest(Requests.publish, { name: sb.name, ...parsed });
      void ctx.store.refresh();
      if (!specArg) {
        void vscode.window
          .showInformationMessage(`Cove: port ${port.guestPort} of ${sb.name} is published on 127.0.0.1:${port.hostPort}`, 'Open in Browser')
          .then((pick) => (pick ? openPortInBrowser(port.hostPort) : undefined));
      }
      return port;
    } catch (e) {
      ctx.showError(`publishing port ${spec} of ${sb.name} failed`, e);
      return undefined;
    }
  };
}

export function openPort() {
  return async (arg?: unknown): Promise<void> => {
    if (arg instanceof PortNode) await openPortInBrowser(arg.port.hostPort);
    else if (typeof arg === 'number') await openPortInBrowser(arg);
  };
}
