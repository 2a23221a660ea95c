// What this host's qemu (and virtiofsd) can do, read once per binary: the features record callers
// read instead of assuming. Saving a VM with a virtio-fs share needs QEMU >= 8.2 and the Rust
// virtiofsd >= 1.11; QEMU 7.2 refuses any vhost-user-fs device, and saves 9p only while unmounted.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import type { Accel } from '../../contract/protocol';
import type { DriverFeatures } from './driver';
import { findQemu, findVirtiofsd } from './tools';

const versions = new Map<string, string>();

/** The first line of `bin --version`, cached per binary and modification time. */
export function toolVersion(bin: string): string {
  let key = bin;
  try {
    key = `${bin}|${fs.statSync(bin).mtimeMs}`;
  } catch {
    // Reported by the call below.
  }
  const hit = versions.get(key);
  if (hit !== undefined) return hit;
  let v = 'unknown';
  try {
    v = execFileSync(bin, ['--version'], { timeout: 10_000, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim().split('\n')[0] ?? 'unknown';
  } catch {
    // An unusable binary: reported where it is run.
  }
  versions.set(key, v);
  return v;
}

/** [major, minor] of the first dotted number in a version line, or null. */
export function parseVersion(line: string): [number, number] | null {
  const m = /(\d+)\.(\d+)/.exec(line);
  return m ? [Number(m[1]), Number(m[2])] : null;
}

const atLeast = (v: [number, number] | null, major: number, minor: number) => v !== null && (v[0] > major || (v[0] === major && v[1] >= minor));

export function qemuFeatures(accel: Accel, env: NodeJS.ProcessEnv = process.env): DriverFeatures {
  let qemuVersion = 'not found';
  try {
    qemuVersion = toolVersion(findQemu(env));
  } catch {
    // No qemu: the start reports it with the package to install.
  }
  const virtiofsd = findVirtiofsd(env);
  // The C virtiofsd (QEMU <= 7.2's) prints "virtiofsd version 7.2…", the Rust one "virtiofsd 1.13.2".
  const vfsLine = virtiofsd ? toolVersion(virtiofsd) : '';
  const rustVirtiofsd = /virtiofsd\s+v?1\.\d+/.test(vfsLine) && !/version\s+\d+\.\d+/.test(vfsLine);
  const qv = parseVersion(qemuVersion);
  const saveVirtiofs = atLeast(qv, 8, 2) && rustVirtiofsd && atLeast(parseVersion(vfsLine), 1, 11);
  const virtiofsUsable = virtiofsd !== null && (rustVirtiofsd || process.getuid?.() === 0);
  let upgradeNote = '';
  if (!saveVirtiofs) {
    upgradeNote =
      `${qemuVersion.replace(/^QEMU emulator version /, 'QEMU ')} cannot save a VM with a virtio-fs share, so warm start and sleep share the folder over 9p; ` +
      'QEMU >= 8.2 with the Rust virtiofsd >= 1.11 (Debian: qemu-system-x86 from bookworm-backports, virtiofsd from trixie) would keep virtio-fs';
  }
  return {
    name: 'qemu-microvm',
    accel,
    vsock: fs.existsSync('/dev/vhost-vsock'),
    virtiofs: virtiofsUsable,
    '9p': true,
    readonlyShares: { virtiofs: rustVirtiofsd, '9p': true },
    snapshots: qv !== null,
    saveWithShare: { virtiofs: saveVirtiofs ? 'always' : 'never', '9p': 'unmounted' },
    memoryFile: true,
    version: qemuVersion,
    upgradeNote,
  };
}
