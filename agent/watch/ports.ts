// Watches the guest's listening TCP sockets (/proc/net/tcp and tcp6, state 0A) and reports the
// ones reachable from outside the guest: bound to a wildcard or a non-loopback address, which is
// what docker-proxy binds for `-p`. A port is one port whatever the address family: 0.0.0.0:80 and
// [::]:80 are reported once.
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
}

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
    out.push({ address: decoded.text, port, loopback: decoded.loopback });
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

/** Reduces raw listeners to the externally reachable ports, one per port number. */
export function reachablePorts(raw: RawListener[]): ListeningPort[] {
  const byPort = new Map<number, ListeningPort>();
  for (const l of raw) {
    if (l.loopback) continue;
    const have = byPort.get(l.port);
    const rank = WILDCARD_RANK[l.address] ?? 2;
    if (!have || rank < (WILDCARD_RANK[have.address] ?? 2)) byPort.set(l.port, { proto: 'tcp', address: l.address, port: l.port });
  }
  return [...byPort.values()].sort((a, b) => a.port - b.port);
}

export function readListeningPorts(procNet: string): ListeningPort[] {
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
  return reachablePorts(raw);
}

export function watchPorts(hub: EventHub, procNet: string, pollMs: number): () => void {
  let failedOnce = false;
  const tick = (): void => {
    let now: ListeningPort[];
    try {
      now = readListeningPorts(procNet);
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
