// What the exec relay's unit tests share (coved-exec-stdin-port, coved-exec-stdout-port): coved's
// `open` over an HTTP/2 session to a stand-in agent, and relays started in a scratch folder.
import * as http2 from 'node:http2';
import * as net from 'node:net';
import * as path from 'node:path';
import type { OpenedStream } from '../../vmm-host/coved/data-link';
import { startExecRelay } from '../../vmm-host/coved/exec-relay';

/** A session to the stand-in agent listening on `agentSock`, and coved's `open` of a stream on it. */
export function agentOpener(agentSock: string): { session: http2.ClientHttp2Session; open: (authority: string, headers: http2.OutgoingHttpHeaders) => Promise<OpenedStream> } {
  const session = http2.connect('http://agent', { createConnection: () => net.connect(agentSock) });
  session.on('error', () => undefined);
  const open = (authority: string, headers: http2.OutgoingHttpHeaders): Promise<OpenedStream> =>
    new Promise((resolve, reject) => {
      const stream = session.request({ ':method': 'CONNECT', ':authority': authority, ...headers });
      let trailers: http2.IncomingHttpHeaders | null = null;
      stream.on('trailers', (t: http2.IncomingHttpHeaders) => {
        trailers = t;
      });
      stream.once('response', (h) => resolve({ stream, headers: h, trailers: () => trailers }));
      stream.once('error', reject);
    });
  return { session, open };
}

/** Relays started by `startRelay`, each on its own exec.sock in `dir`; close them with `closeAll`. */
export class Relays {
  private readonly servers: net.Server[] = [];

  constructor(
    private readonly dir: string,
    private readonly open: (authority: string, headers: http2.OutgoingHttpHeaders) => Promise<OpenedStream>,
  ) {}

  /** A new relay; with `stdinSock`, for a VM with the stdin port. Resolves with its exec.sock. */
  async start(stdinSock?: string): Promise<string> {
    const execSock = path.join(this.dir, `exec-${this.servers.length}.sock`);
    this.servers.push(await startExecRelay({ path: execSock, log: () => undefined, open: this.open, useSsh: () => false, ...(stdinSock ? { stdinSock } : {}) }));
    return execSock;
  }

  closeAll(): void {
    for (const s of this.servers) s.close();
  }
}
