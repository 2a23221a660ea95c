// Forwards host 127.0.0.1 ports to guest ports over direct-tcpip channels: automatically for the
// listening ports the agent reports, and by hand for `cove publish`. Nothing is ever bound on an
// address other than 127.0.0.1.
import * as net from 'node:net';
import type { ListeningPort } from '../../contract/events';
import type { PortForward } from '../../contract/protocol';
import type { Duplex } from 'node:stream';
import { closingServer, pipeBothWays } from './relay';

export const HOST_BIND_ADDRESS = '127.0.0.1';

interface Forward {
  info: PortForward;
  /** Where the guest end connects. */
  guestHost: string;
  server: net.Server | null;
}

/** The guest address to connect to for a socket bound to `address`. */
export function guestTarget(address: string): string {
  if (address === '0.0.0.0' || address === '') return '127.0.0.1';
  if (address === '::' || address === '::0') return '::1';
  return address;
}

/** What the forwarder needs from the agent link: a stream to a guest TCP address. */
export interface TcpOpener {
  forwardTcp(host: string, port: number): Promise<Duplex>;
}

export class PortForwarder {
  private readonly forwards = new Map<number, Forward>();

  constructor(
    private readonly link: TcpOpener,
    private readonly onChange: (port: PortForward, action: 'forwarded' | 'removed' | 'failed') => void,
    private readonly log: (msg: string) => void,
  ) {}

  list(): PortForward[] {
    return [...this.forwards.values()].map((f) => ({ ...f.info })).sort((a, b) => a.hostPort - b.hostPort);
  }

  /** True when nothing forwards `hostPort`, or its last bind failed and may now succeed. */
  private needsBind(hostPort: number): boolean {
    const f = this.forwards.get(hostPort);
    return f === undefined || (f.server === null && f.info.error !== undefined);
  }

  /** Makes the automatic forwards match the guest's listening ports; manual ones are untouched. */
  syncAuto(ports: ListeningPort[]): void {
    const wanted = new Map<number, ListeningPort>();
    for (const p of ports) if (!wanted.has(p.port)) wanted.set(p.port, p);
    for (const [hostPort, f] of this.forwards) {
      if (f.info.origin === 'auto' && !wanted.has(hostPort)) void this.remove(hostPort);
    }
    for (const p of wanted.values()) if (this.needsBind(p.port)) void this.add(p.port, p.port, 'auto', guestTarget(p.address));
  }

  addAuto(p: ListeningPort): void {
    if (this.needsBind(p.port)) void this.add(p.port, p.port, 'auto', guestTarget(p.address));
  }

  removeAuto(p: ListeningPort): void {
    const f = this.forwards.get(p.port);
    if (f && f.info.origin === 'auto' && f.info.guestPort === p.port) void this.remove(p.port);
  }

  /** Binds 127.0.0.1:hostPort; resolves with the forward, whose `error` says why binding failed. */
  async add(hostPort: number, guestPort: number, origin: 'auto' | 'manual', guestHost = '127.0.0.1'): Promise<PortForward> {
    const existing = this.forwards.get(hostPort);
    // A forward whose bind failed holds nothing: it is replaced by this attempt, which binds anew
    // (the port may have been freed since), instead of answering with the old failure forever.
    if (existing && !this.needsBind(hostPort)) {
      if (origin === 'manual' && existing.info.origin === 'auto' && existing.info.guestPort === guestPort) {
        existing.info.origin = 'manual';
      }
      return { ...existing.info };
    }
    const f: Forward = { info: { hostPort, guestPort, origin }, guestHost, server: null };
    this.forwards.set(hostPort, f);
    const server = closingServer(net.createServer({ allowHalfOpen: true }, (conn) => {
      conn.on('error', () => conn.destroy());
      this.link.forwardTcp(f.guestHost, guestPort).then(
        (ch) => pipeBothWays(conn, ch),
        (err: Error) => {
          this.log(`port ${hostPort}: cannot reach guest ${f.guestHost}:${guestPort}: ${err.message}`);
          conn.destroy();
        },
      );
    }));
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host: HOST_BIND_ADDRESS, port: hostPort, exclusive: true }, () => resolve());
      });
      if (this.forwards.get(hostPort) !== f) {
        server.close();
        return { ...f.info };
      }
      f.server = server;
      this.log(`forwarding 127.0.0.1:${hostPort} -> guest ${f.guestHost}:${guestPort} (${origin})`);
      this.onChange({ ...f.info }, 'forwarded');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      f.info.error =
        code === 'EADDRINUSE'
          ? `host port ${hostPort} is already in use on 127.0.0.1`
          : code === 'EACCES'
            ? `host port ${hostPort} needs privileges to bind`
            : (e as Error).message;
      this.log(`port ${hostPort}: ${f.info.error}`);
      this.onChange({ ...f.info }, 'failed');
    }
    return { ...f.info };
  }

  async remove(hostPort: number): Promise<boolean> {
    const f = this.forwards.get(hostPort);
    if (!f) return false;
    this.forwards.delete(hostPort);
    if (f.server) await new Promise<void>((r) => f.server!.close(() => r()));
    this.log(`stopped forwarding 127.0.0.1:${hostPort}`);
    this.onChange({ ...f.info }, 'removed');
    return true;
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.forwards.keys()].map((p) => this.remove(p)));
  }
}
