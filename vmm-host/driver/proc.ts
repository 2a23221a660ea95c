// Host process checks that survive pid reuse: a pid only counts as ours when its command line
// names what we expect (a sandbox's own folder, say), and a zombie counts as gone.
import * as fs from 'node:fs';
import { waitFor } from '../../contract/wait';

export function processAlive(pid: number | null | undefined, mustContain?: string): boolean {
  if (!pid || pid <= 0) return false;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The state is the field after the parenthesised command name.
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    if (state === 'Z' || state === 'X') return false;
    if (mustContain === undefined) return true;
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(mustContain);
  } catch {
    return false;
  }
}

/**
 * Sends `sig` to `pid` only while it is still the process we mean: its command line must contain
 * `mustContain` (the sandbox folder, which qemu's, virtiofsd's and passt's arguments all name).
 * A pid recorded for a process that has since died may belong to anyone, another sandbox's qemu
 * included.
 */
export function signal(pid: number | null | undefined, sig: NodeJS.Signals, mustContain: string): void {
  if (!pid || !processAlive(pid, mustContain)) return;
  try {
    process.kill(pid, sig);
  } catch {
    /* already gone */
  }
}

/** Waits until the process is gone or the deadline passes; true when it is gone. */
export async function waitGone(pid: number | null | undefined, timeoutMs: number, mustContain?: string): Promise<boolean> {
  return waitFor(`process ${pid ?? '-'} to exit`, timeoutMs, () => !processAlive(pid, mustContain), 100).catch(() => false);
}

/** The pid in a pid file, or null when there is none or it is not a positive integer. */
export function readPid(file: string): number | null {
  try {
    const pid = Number.parseInt(fs.readFileSync(file, 'utf8').trim(), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/** The programs a VM runs as host processes: what may be left of one after coved died mid-start. */
const VM_PROGRAMS = /^(qemu-system-|passt|virtiofsd)/;

/**
 * Every live qemu, passt or virtiofsd whose command line names a file in `dir`. A coved killed while
 * it started a helper (between the fork and the pid file) leaves one that no pid file names.
 */
export function vmProcessesIn(dir: string): number[] {
  const inDir = `${dir.replace(/\/+$/, '')}/`;
  const found: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) continue;
    try {
      const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      if (VM_PROGRAMS.test(argv[0].slice(argv[0].lastIndexOf('/') + 1)) && argv.some((a) => a.includes(inDir)) && processAlive(pid)) found.push(pid);
    } catch {
      // Gone meanwhile.
    }
  }
  return found;
}
