// Watches the guest's listening TCP sockets (/proc/net/tcp and tcp6, state 0A) and reports the
// ones a host user would want to reach: bound to a wildcard or a non-loopback address (what
// docker-proxy binds for `-p 8080:80`), and bound to the guest's loopback (`-p 127.0.0.1:5432:5432`,
// a common compose habit) unless the guest's own machinery holds them: the agent's listeners for
// the host's allowed ports, containerd, dockerd. coved forwards each to host 127.0.0.1 only. A port
// is one port whatever the address family: 0.0.0.0:80 and [::]:80 are reported once.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ListeningPort } from '../../contract/events';
import type { EventHub } from '../hub';
import { errorText, log } from '../log';

const LISTEN = '0A';

interface RawListener {
  address: string;
  port: number;
  loopback: boolean;
  /** The socket's inode (to find the process that holds it). */
  inode: number;
}

/** Processes whose loopback listeners are the guest's own business, not a user's service. */
const GUEST_MACHINERY = new Set(['containerd', 'dockerd']);

/** Parses one /proc/net/tcp or tcp6 listing into its listening sockets. */
export function parseProcNetTcp(text: string, v6: boolean): RawListener[] {
  const out: RawListener[] = [];
  for (const line of text.split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 4 || fields[3] !== LISTEN) continue;
    const [hexAddr, hexPort] = fields[1].split(':');
    if (!hexAddr || !hexPort) continue;
    const port = parseInt(hexPort, 16);
    const decoded = v6 ? decodeV6(hexAddr) : decodeV4(hexAddr);
    if (!decoded) continue;
    out.push({ address: decoded.text, port, loopback: decoded.loopback, inode: Number(fields[9] ?? 0) });
  }
  return out;
}

/** The kernel prints an IPv4 address as one 32-bit word in host order (little-endian here). */
function decodeV4(hex: string): { text: string; loopback: boolean } | null {
  if (hex.length !== 8) return null;
  const bytes = Buffer.from(hex, 'hex').reverse();
  return { text: [...bytes].join('.'), loopback: bytes[0] === 127 };
}

/** IPv6: four 32-bit words, each in host order. */
function decodeV6(hex: string): { text: string; loopback: boolean } | null {
  if (hex.length !== 32) return null;
  const bytes = Buffer.alloc(16);
  for (let w = 0; w < 4; w++) Buffer.from(hex.slice(w * 8, w * 8 + 8), 'hex').reverse().copy(bytes, w * 4);
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  const allZero = (from: number, to: number): boolean => bytes.subarray(from, to).every((b) => b === 0);
  const mapped = allZero(0, 10) && bytes[10] === 0xff && bytes[11] === 0xff;
  if (mapped) {
    const v4 = [...bytes.subarray(12)];
    return { text: `::ffff:${v4.join('.')}`, loopback: v4[0] === 127 };
  }
  if (allZero(0, 16)) return { text: '::', loopback: false };
  const loopback = allZero(0, 15) && bytes[15] === 1;
  return { text: compressV6(groups), loopback };
}

function compressV6(groups: string[]): string {
  // Replace the longest run of zero groups with '::', as inet_ntop does.
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < groups.length; ) {
    if (groups[i] !== '0') { i++; continue; }
    let j = i;
    while (j < groups.length && groups[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  if (bestStart < 0) return groups.join(':');
  return `${groups.slice(0, bestStart).join(':')}::${groups.slice(bestStart + bestLen).join(':')}`;
}

const WILDCARD_RANK: Record<string, number> = { '0.0.0.0': 0, '::': 1 };
const rankOf = (l: { address: string; loopback?: boolean }) => WILDCARD_RANK[l.address] ?? (l.loopback ? 3 : 2);

/**
 * Reduces raw listeners to the ports to report, one per port number (a wildcard address first, a
 * loopback one last); a loopback listener counts only when `ownLoopback` says it is not the guest's
 * own.
 */
export function reachablePorts(raw: RawListener[], ownLoopback: (inode: number) => boolean = () => true): ListeningPort[] {
  const byPort = new Map<number, ListeningPort & { loopback: boolean }>();
  for (const l of raw) {
    if (l.loopback && ownLoopback(l.inode)) continue;
    const have = byPort.get(l.port);
    if (!have || rankOf(l) < rankOf(have)) byPort.set(l.port, { proto: 'tcp', address: l.address, port: l.port, loopback: l.loopback });
  }
  return [...byPort.values()].map(({ proto, address, port }) => ({ proto, address, port })).sort((a, b) => a.port - b.port);
}

/**
 * Tells whether a loopback listener belongs to the guest's own machinery (this agent, containerd,
 * dockerd), by the process holding its inode. Answers are kept per inode: a scan of /proc runs
 * only when a new loopback listener appears.
 */
export class LoopbackOwners {
  private readonly known = new Map<number, boolean>();

  constructor(
    private readonly procRoot: string,
    private readonly selfPid = process.pid,
  ) {}

  isOwn(inode: number): boolean {
    const cached = this.known.get(inode);
    if (cached !== undefined) return cached;
    const own = this.scan(inode);
    this.known.set(inode, own);
    return own;
  }

  /** Forgets inodes that no longer listen. */
  keepOnly(inodes: Set<number>): void {
    for (const i of this.known.keys()) if (!inodes.has(i)) this.known.delete(i);
  }

  private scan(inode: number): boolean {
    const target = `socket:[${inode}]`;
    let pids: string[];
    try {
      pids = fs.readdirSync(this.procRoot).filter((d) => /^\d+$/.test(d));
    } catch {
      return true; // Cannot tell: keep it private, as before.
    }
    for (const pid of pids) {
      let fds: string[];
      try {
        fds = fs.readdirSync(path.join(this.procRoot, pid, 'fd'));
      } catch {
        continue; // Gone, or not ours to look at.
      }
      for (const fd of fds) {
        let link: string;
        try {
          link = fs.readlinkSync(path.join(this.procRoot, pid, 'fd', fd));
        } catch {
          continue;
        }
        if (link !== target) continue;
        if (Number(pid) === this.selfPid) return true;
        try {
          return GUEST_MACHINERY.has(fs.readFileSync(path.join(this.procRoot, pid, 'comm'), 'utf8').trim());
        } catch {
          return true;
        }
      }
    }
    // No holder found (it went away between the two reads): not reported; the next poll looks again.
    this.known.delete(inode);
    return true;
  }
}

export function readListeningPorts(procNet: string, owners?: LoopbackOwners): ListeningPort[] {
  const raw: RawListener[] = [];
  for (const [file, v6] of [['tcp', false], ['tcp6', true]] as const) {
    let text: string;
    try {
      text = fs.readFileSync(path.join(procNet, file), 'utf8');
    } catch {
      continue; // No IPv6 in this kernel, or no such file in a test directory.
    }
    raw.push(...parseProcNetTcp(text, v6));
  }
  if (!owners) return reachablePorts(raw);
  owners.keepOnly(new Set(raw.filter((l) => l.loopback).map((l) => l.inode)));
  return reachablePorts(raw, (inode) => owners.isOwn(inode));
}

export function watchPorts(hub: EventHub, procNet: string, pollMs: number): () => void {
  let failedOnce = false;
  const owners = new LoopbackOwners(path.dirname(procNet));
  const tick = (): void => {
    let now: ListeningPort[];
    try {
      now = readListeningPorts(procNet, owners);
    } catch (err) {
      if (!failedOnce) log(`ports: cannot read ${procNet}: ${errorText(err)}`);
      failedOnce = true;
      return;
    }
    const before = new Map(hub.ports.map((p) => [p.port, p]));
    const after = new Map(now.map((p) => [p.port, p]));
    hub.ports = now;
    for (const [port, p] of before) {
      if (!after.has(port)) {
        log(`ports: removed tcp ${p.address}:${port}`);
        hub.emit({ type: 'port', action: 'removed', ...p });
      }
    }
    for (const [port, p] of after) {
      if (!before.has(port)) {
        log(`ports: added tcp ${p.address}:${port}`);
        hub.emit({ type: 'port', action: 'added', ...p });
      }
    }
  };
  tick();
  const timer = setInterval(tick, pollMs);
  timer.unref();
  return () => clearInterval(timer);
}
