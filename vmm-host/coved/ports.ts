// Forwards host 127.0.0.1 ports to guest ports over direct-tcpip channels: automatically for the
// listening ports the agent reports, and by hand for `cove publish`. Nothing is ever bound on an
// address other than 127.0.0.1. The agent may be hostile (docs/security.md), so automatic forwards
// are capped per sandbox, never take a host port something on the host already listens on (on any
// address), and never take a port of the never-forward list.
import * as fs from 'node:fs';
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

/** Limits on the forwards a guest can cause by listening; manual forwards are not limited. */
export interface PortPolicy {
  /** Most automatic forwards one sandbox has at once (bound or failed). */
  maxAuto: number;
  /** Host ports never forwarded automatically (a local database's, say). */
  neverForward: ReadonlySet<number>;
}

export const DEFAULT_MAX_AUTO_PORTS = 64;

/**
 * Reads `COVE_MAX_AUTO_PORTS` (a whole number, 0 turns automatic forwarding off) and
 * `COVE_NEVER_FORWARD` (ports and ranges, e.g. `5432,6379,8000-8010`); a value it cannot read is an
 * error that says so, since a silently ignored deny list protects nothing.
 */
export function portPolicyFromEnv(env: NodeJS.ProcessEnv = process.env): PortPolicy {
  const maxText = env.COVE_MAX_AUTO_PORTS;
  let maxAuto = DEFAULT_MAX_AUTO_PORTS;
  if (maxText !== undefined && maxText !== '') {
    if (!/^\d+$/.test(maxText)) throw new Error(`COVE_MAX_AUTO_PORTS must be a whole number, not ${JSON.stringify(maxText)}`);
    maxAuto = Number(maxText);
  }
  return { maxAuto, neverForward: parsePortList(env.COVE_NEVER_FORWARD ?? '', 'COVE_NEVER_FORWARD') };
}

/** Parses `5432,6379,8000-8010` into a set of ports. */
export function parsePortList(text: string, what: string): Set<number> {
  const out = new Set<number>();
  for (const part of text.split(/[\s,]+/).filter((p) => p !== '')) {
    const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(part);
    const lo = m ? Number(m[1]) : NaN;
    const hi = m?.[2] !== undefined ? Number(m[2]) : lo;
    if (!m || lo < 1 || hi > 65535 || hi < lo) throw new Error(`${what}: cannot read ${JSON.stringify(part)}; use ports and ranges such as 5432,8000-8010`);
    for (let p = lo; p <= hi; p++) out.add(p);
  }
  return out;
}

/**
 * True when a TCP socket on the host listens on `port` on any address of either family (read from
 * /proc/net/tcp and tcp6). Binding 127.0.0.1 alone would succeed beside a service on `::1` or on
 * another address, and clients of that service could then reach the guest instead.
 */
export function hostListening(port: number, procNet = '/proc/net'): boolean {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  for (const file of ['tcp', 'tcp6']) {
    let text: string;
    try {
      text = fs.readFileSync(`${procNet}/${file}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      // Field 1 is local_address:port in hex, field 3 the state; 0A is LISTEN.
      if (f.length > 3 && f[3] === '0A' && f[1].endsWith(hex)) return true;
    }
  }
  return false;
}

/** What the forwarder needs from the sandbox: a stream to a guest TCP address. */
export interface TcpOpener {
  /**
   * `everyAddress`: the guest last reported a listener on `port` bound to every IPv4 address, so
   * the port is reachable from outside the guest (the forwarding NIC), not only on `host`.
   */
  forwardTcp(host: string, port: number, everyAddress: boolean): Promise<Duplex>;
  /** No forward goes to guest `port` any more: what was kept for it can go. */
  release?(port: number): void;
}

/** A listener bound to this address takes connections on every IPv4 address of the guest. */
export function bindsEveryAddress(address: string): boolean {
  return address === '0.0.0.0' || address === '';
}

export class PortForwarder {
  private readonly forwards = new Map<number, Forward>();
  /** Ports refused already, so each refusal is reported once and never retried in a loop. */
  private readonly refused = new Set<number>();
  /** Ports announced beyond the cap, forwarded in turn as automatic forwards go away. */
  private readonly waiting = new Map<number, ListeningPort>();
  /** Set while the guest announces more ports than the cap, so the cap is reported once. */
  private overCap = false;
  /** The addresses the guest listens on, by port, as last reported (manual forwards use them too). */
  private readonly listening = new Map<number, Set<string>>();
  private readonly policy: PortPolicy;

  constructor(
    private readonly link: TcpOpener,
    private readonly onChange: (port: PortForward, action: 'forwarded' | 'removed' | 'failed') => void,
    private readonly log: (msg: string) => void,
    policy?: PortPolicy,
  ) {
    this.policy = policy ?? portPolicyFromEnv();
  }

  private autoCount(): number {
    let n = 0;
    for (const f of this.forwards.values()) if (f.info.origin === 'auto') n++;
    return n;
  }

  /**
   * Whether an automatic forward of `port` may be made now; reports a refusal the first time only.
   * A port refused because it is in use or listed stays refused until the guest stops listening on it.
   */
  private mayAuto(p: ListeningPort): boolean {
    const port = p.port;
    if (!this.needsBind(port)) return false;
    if (this.refused.has(port)) return false;
    if (this.policy.neverForward.has(port)) {
      this.refused.add(port);
      this.log(`port ${port}: not forwarded automatically (it is on the never-forward list, COVE_NEVER_FORWARD); \`cove publish\` forwards it by hand`);
      return false;
    }
    const existing = this.forwards.get(port);
    if (!existing && this.autoCount() >= this.policy.maxAuto) {
      this.waiting.set(port, p);
      if (!this.overCap) {
        this.overCap = true;
        this.log(`the guest listens on more than ${this.policy.maxAuto} ports; port ${port} and further ones are not forwarded until forwarded ones close (COVE_MAX_AUTO_PORTS raises the cap)`);
      }
      return false;
    }
    if (hostListening(port)) {
      this.refused.add(port);
      this.log(`port ${port}: not forwarded, a host program already listens on it; \`cove publish NAME -p OTHER:${port}\` forwards it to another host port`);
      this.onChange({ hostPort: port, guestPort: port, origin: 'auto', error: `host port ${port} is already in use on the host` }, 'failed');
      return false;
    }
    return true;
  }

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
    this.listening.clear();
    for (const p of ports) this.noteListening(p);
    const wanted = new Map<number, ListeningPort>();
    for (const p of ports) if (!wanted.has(p.port)) wanted.set(p.port, p);
    for (const [hostPort, f] of this.forwards) {
      if (f.info.origin === 'auto' && !wanted.has(hostPort)) void this.remove(hostPort);
    }
    for (const port of this.refused) if (!wanted.has(port)) this.refused.delete(port);
    this.waiting.clear();
    if (this.autoCount() < this.policy.maxAuto) this.overCap = false;
    for (const p of wanted.values()) this.addAuto(p);
  }

  private noteListening(p: ListeningPort): void {
    let addresses = this.listening.get(p.port);
    if (!addresses) this.listening.set(p.port, (addresses = new Set()));
    addresses.add(p.address);
  }

  /** Whether the guest listens on `port` on every IPv4 address, as last reported. */
  private everyAddress(port: number): boolean {
    return [...(this.listening.get(port) ?? [])].some(bindsEveryAddress);
  }

  addAuto(p: ListeningPort): void {
    this.noteListening(p);
    if (this.mayAuto(p)) void this.add(p.port, p.port, 'auto', guestTarget(p.address));
  }

  removeAuto(p: ListeningPort): void {
    const addresses = this.listening.get(p.port);
    addresses?.delete(p.address);
    if (addresses?.size === 0) this.listening.delete(p.port);
    this.refused.delete(p.port);
    this.waiting.delete(p.port);
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
      this.link.forwardTcp(f.guestHost, guestPort, this.everyAddress(guestPort)).then(
        (ch) => pipeBothWays(conn, ch),
        (err: unknown) => {
          this.log(`port ${hostPort}: cannot reach guest ${f.guestHost}:${guestPort}: ${err instanceof Error ? err.message : String(err)}`);
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
    const server = f.server;
    if (server) await new Promise<void>((r) => server.close(() => r()));
    this.log(`stopped forwarding 127.0.0.1:${hostPort}`);
    this.onChange({ ...f.info }, 'removed');
    if (![...this.forwards.values()].some((o) => o.info.guestPort === f.info.guestPort)) this.link.release?.(f.info.guestPort);
    if (f.info.origin === 'auto' && this.autoCount() < this.policy.maxAuto) {
      this.overCap = false;
      // A port that waited for room takes the freed place.
      const next = this.waiting.values().next();
      if (!next.done) {
        this.waiting.delete(next.value.port);
        this.addAuto(next.value);
      }
    }
    return true;
  }

  async closeAll(): Promise<void> {
    // Nothing waiting may take a freed place while everything closes, or it would stay bound.
    this.waiting.clear();
    this.refused.clear();
    this.overCap = false;
    await Promise.all([...this.forwards.keys()].map((p) => this.remove(p)));
  }
}
