// What the exec relay's unit tests share (coved-exec-stdin-port, coved-exec-stdout-port): coved's
// `open` over an HTTP/2 session to a stand-in agent, and relays started in a scratch folder.
import * as fs from 'node:fs';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import * as path from 'node:path';
import { EXEC_STDERR_TARGET } from '../../contract/exec-stream';
import type { OpenedStream } from '../../vmm-host/coved/data-link';
import { startExecRelay } from '../../vmm-host/coved/exec-relay';

/** The stand-in agent's `exec-stderr`: answered, empty, ended. True when `headers` named it. */
export function servedStderr(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): boolean {
  if (headers[http2.constants.HTTP2_HEADER_AUTHORITY] !== EXEC_STDERR_TARGET) return false;
  stream.respond({ [http2.constants.HTTP2_HEADER_STATUS]: 200 });
  stream.resume();
  stream.end();
  return true;
}

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

/** The stand-in qemu and agent of one test file, the session to the agent and the relays, closed together. */
export class StandIns {
  relays: Relays | null = null;
  private servers: Array<net.Server | http2.Http2Server> = [];
  private session: http2.ClientHttp2Session | null = null;

  constructor(private readonly dir: string) {}

  /** Starts `qemu` on `stdinSock` and `agent` on `agentSock`, and connects coved's opener to the agent. */
  async listen(qemu: net.Server, stdinSock: string, agent: http2.Http2Server, agentSock: string): Promise<Relays> {
    this.servers = [qemu, agent];
    await new Promise<void>((r) => qemu.listen(stdinSock, r));
    await new Promise<void>((r) => agent.listen(agentSock, r));
    const { session, open } = agentOpener(agentSock);
    this.session = session;
    this.relays = new Relays(this.dir, open);
    return this.relays;
  }

  close(): void {
    this.relays?.closeAll();
    this.session?.close();
    for (const s of this.servers) s.close();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
