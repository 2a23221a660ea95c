// The shares of the guest config, mounted exactly as the init mounts them (cove-init: mkdir -p,
// virtiofs, else 9p with the same options) and listed, one path a line in mount order, in
// /run/cove/mounts, which the init starts and the control ops keep up to date.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { GuestMount } from '../contract/config-disk';
import { GUEST } from '../contract/guest';
import { runCommand } from './system';

/**
 * The 9p options of cove-init (tier-docker/rootfs/usr/lib/cove/init-lib.sh has the same string),
 * after `ro`/`rw`. cache=none on purpose: it is the one 9p mode in which the guest sees a host edit
 * at once; loose (and the bitmask modes with metadata caching) keep a file's old content for good,
 * and readahead (mmap likewise) keeps the pages of any inode held open, as a container's file bind
 * mount holds one, and was not shown safe there. msize=512000: as far as we know the most the
 * kernel's virtio transport takes. Measured in docs/workspace-fs.md; re-measure before changing.
 */
export const NINEP_OPTIONS = 'trans=virtio,version=9p2000.L,msize=512000,cache=none';

export interface MountOutcome {
  path: string;
  /** How it got mounted, or null when it did not. */
  fs: 'virtiofs' | '9p' | null;
  /** Why it did not (each attempt's error), when it did not. */
  reason?: string;
}

/** Mounts one share at its path: virtiofs when asked, else (or when that fails) 9p. */
export async function mountShare(systemPath: string, m: GuestMount, filesAside: string = GUEST.filesAside): Promise<MountOutcome> {
  if (m.file !== undefined) return mountFile(systemPath, m, filesAside);
  try {
    fs.mkdirSync(m.path, { recursive: true });
  } catch (err) {
    return { path: m.path, fs: null, reason: `cannot create the mount point: ${(err as Error).message}` };
  }
  const ro = m.readonly ? 'ro' : 'rw';
  const reasons: string[] = [];
  if (m.type === 'virtiofs') {
    const r = await runCommand(systemPath, 'mount', ['-t', 'virtiofs', '-o', ro, m.tag, m.path]);
    if (r.code === 0) return { path: m.path, fs: 'virtiofs' };
    reasons.push(`virtiofs: ${oneLine(r.stderr) || `mount exited ${r.code}`}`);
  }
  const r = await runCommand(systemPath, 'mount', ['-t', '9p', '-o', `${ro},${NINEP_OPTIONS}`, m.tag, m.path]);
  if (r.code === 0) return { path: m.path, fs: '9p' };
  reasons.push(`9p: ${oneLine(r.stderr) || `mount exited ${r.code}`}`);
  return { path: m.path, fs: null, reason: `tag ${m.tag}: ${reasons.join('; ')}` };
}

/**
 * A file mount (cove-init's cove_mount_file does the same): the share, which holds just the one
 * file, goes aside, the file is bind-mounted at its path (a file made there first when missing),
 * and the aside mount goes again: the bind mount alone holds the share, so unmounting the path
 * lets go of it (and a save can go ahead).
 */
async function mountFile(systemPath: string, m: GuestMount, filesAside: string): Promise<MountOutcome> {
  const aside = path.join(filesAside, m.tag);
  const fail = (reason: string): MountOutcome => ({ path: m.path, fs: null, reason: `tag ${m.tag}: ${reason}` });
  try {
    fs.mkdirSync(aside, { recursive: true });
    fs.mkdirSync(path.dirname(m.path), { recursive: true });
    const st = fs.statSync(m.path, { throwIfNoEntry: false });
    if (st?.isDirectory()) return fail(`${m.path} is a folder in the guest; a file cannot be mounted there`);
    if (!st) fs.closeSync(fs.openSync(m.path, 'a', 0o644));
  } catch (err) {
    return fail(`cannot create the mount point: ${(err as Error).message}`);
  }
  const ro = m.readonly ? 'ro' : 'rw';
  let r = await runCommand(systemPath, 'mount', ['-t', '9p', '-o', `${ro},${NINEP_OPTIONS}`, m.tag, aside]);
  if (r.code !== 0) return fail(`9p: ${oneLine(r.stderr) || `mount exited ${r.code}`}`);
  r = await runCommand(systemPath, 'mount', ['--bind', path.join(aside, m.file ?? ''), m.path]);
  const bound = r.code === 0;
  const why = oneLine(r.stderr) || `mount --bind exited ${r.code}`;
  await runCommand(systemPath, 'umount', [aside]);
  return bound ? { path: m.path, fs: '9p' } : fail(`bind: ${why}`);
}

export type UnmountOutcome = 'unmounted' | 'busy' | 'not-mounted' | { error: string };

/** Unmounts one path; never lazily (a lazy unmount would let saving go ahead with the share in use). */
export async function unmountPath(systemPath: string, where: string): Promise<UnmountOutcome> {
  const r = await runCommand(systemPath, 'umount', [where]);
  if (r.code === 0) return 'unmounted';
  if (/busy/i.test(r.stderr)) return 'busy';
  if (/not mounted|no mount point specified|not found/i.test(r.stderr)) return 'not-mounted';
  return { error: oneLine(r.stderr) || `umount exited ${r.code}` };
}

/** The paths listed in the mounts file, in mount order. */
export function readMountList(runDir: string): string[] {
  try {
    return fs
      .readFileSync(path.join(runDir, 'mounts'), 'utf8')
      .split('\n')
      .filter((l) => l !== '');
  } catch {
    return [];
  }
}

export function writeMountList(runDir: string, paths: string[]): void {
  const file = path.join(runDir, 'mounts');
  fs.writeFileSync(`${file}.tmp`, paths.map((p) => `${p}\n`).join(''));
  fs.renameSync(`${file}.tmp`, file);
}

/** The failed-mount record the init also writes: one `path<TAB>reason` line per failed mount. */
export function writeMountFailures(runDir: string, failures: MountOutcome[]): void {
  const file = path.join(runDir, 'mount-failed');
  if (failures.length === 0) {
    fs.rmSync(file, { force: true });
    return;
  }
  fs.writeFileSync(file, failures.map((f) => `${f.path}\t${f.reason ?? 'unknown'}\n`).join(''));
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}

/** One mountinfo line's device (major:minor) and mount point, the fields a share is known by. */
function mountsIn(mountinfo: string): Array<{ dev: string; point: string }> {
  return mountinfo
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      const f = l.split(' ');
      return { dev: f[2] ?? '', point: (f[4] ?? '').replace(/\\040/g, ' ') };
    });
}

/**
 * Other mount namespaces (containers' bind mounts) that hold the share mounted at `where`: the
 * guest's own unmount would succeed, yet the share would stay in use (QEMU 7.2 still refuses to
 * save 9p) and could not be mounted at `where` again until they let go. Returns "pid N (comm)" for
 * one process of each such namespace; empty when the share is ours alone or not mounted.
 */
export function shareHeldElsewhere(where: string, procRoot = '/proc'): string[] {
  let own: string;
  let dev: string | undefined;
  try {
    own = fs.readlinkSync(path.join(procRoot, 'self', 'ns', 'mnt'));
    dev = mountsIn(fs.readFileSync(path.join(procRoot, 'self', 'mountinfo'), 'utf8')).find((m) => m.point === where)?.dev;
  } catch {
    return [];
  }
  if (!dev) return [];
  const seen = new Set<string>([own]);
  const holders: string[] = [];
  for (const pid of fs.readdirSync(procRoot)) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const ns = fs.readlinkSync(path.join(procRoot, pid, 'ns', 'mnt'));
      if (seen.has(ns)) continue;
      seen.add(ns);
      if (mountsIn(fs.readFileSync(path.join(procRoot, pid, 'mountinfo'), 'utf8')).some((m) => m.dev === dev)) {
        holders.push(`pid ${pid} (${fs.readFileSync(path.join(procRoot, pid, 'comm'), 'utf8').trim()})`);
      }
    } catch {
      // The process went away meanwhile.
    }
  }
  return holders;
}
