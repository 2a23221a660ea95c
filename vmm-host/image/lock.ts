// The one cross-process lock (the image build's and coved's pid file): a file created with O_EXCL
// holding the owner's pid. A lock whose pid is no longer alive is stale and is taken over; a file
// with no pid yet is being written by its new owner and is given time before it counts as stale.
// Waiting is bounded and reports who holds the lock.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LockTimeoutError } from './errors';

export interface Lock {
  file: string;
  release(): void;
}

/** What one attempt found: the lock taken, or who holds it (null: a new owner is writing its pid). */
export type LockAttempt = { lock: Lock; holder?: undefined } | { lock?: undefined; holder: number | null };

export interface LockOptions {
  /** Whether `pid` is the live owner (default: any live process); e.g. checks its command line. */
  isAlive?: (pid: number) => boolean;
  /** How long a lock file without a pid is taken for one being written, in ms (default 5000). */
  emptyGraceMs?: number;
}

export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The pid in the lock file, or null when it holds none (yet), is unreadable or is gone. */
function readHolder(file: string): number | null {
  try {
    const text = fs.readFileSync(file, 'utf8').trim();
    if (!/^\d+$/.test(text)) return null;
    const pid = Number(text);
    return pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

function safeStat(file: string): fs.Stats | null {
  try {
    return fs.statSync(file);
  } catch {
    return null;
  }
}

/** How long a take-over guard may stand before it counts as left by a process that died. */
const GUARD_STALE_MS = 10_000;

/**
 * Removes a stale lock file. Only one process at a time may do it: it holds `<file>.takeover`
 * (O_EXCL) while it judges the file again and removes it. Without that, two processes that both
 * judged the same file stale could remove each other's fresh locks, and two would win. Returns
 * false when another process is doing the removal (try again shortly).
 */
function removeStale(file: string, isStale: (st: fs.Stats) => boolean): boolean {
  const guard = `${file}.takeover`;
  try {
    fs.closeSync(fs.openSync(guard, 'wx', 0o600));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    const st = safeStat(guard);
    if (st && Date.now() - st.mtimeMs > GUARD_STALE_MS) fs.rmSync(guard, { force: true });
    return false;
  }
  try {
    // Judged again under the guard: the file may have been replaced by a live owner meanwhile.
    const st = safeStat(file);
    if (st && isStale(st)) fs.rmSync(file, { force: true });
    return true;
  } finally {
    fs.rmSync(guard, { force: true });
  }
}

/** One non-blocking attempt: creates the lock, takes over a stale one, or says who holds it. */
export function tryLock(file: string, opts: LockOptions = {}): LockAttempt {
  const alive = opts.isAlive ?? pidAlive;
  const grace = opts.emptyGraceMs ?? 5000;
  // A file without a pid is being written for its first `grace` ms; one with a dead pid is stale.
  const isStale = (st: fs.Stats): boolean => {
    const holder = readHolder(file);
    if (holder === null) return Date.now() - st.mtimeMs > grace;
    return holder === process.pid || !alive(holder);
  };
  fs.mkdirSync(path.dirname(file), { recursive: true });
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      const fd = fs.openSync(file, 'wx', 0o600);
      try {
        fs.writeSync(fd, `${process.pid}\n`);
      } finally {
        fs.closeSync(fd);
      }
      let released = false;
      const lock: Lock = {
        file,
        release() {
          if (released) return;
          released = true;
          if (readHolder(file) === process.pid) fs.rmSync(file, { force: true });
        },
      };
      return { lock };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const st = safeStat(file);
    if (!st) continue;
    if (!isStale(st)) {
      const holder = readHolder(file);
      // No pid yet: a new owner is writing it.
      return { holder: holder !== null && holder !== process.pid && alive(holder) ? holder : null };
    }
    if (!removeStale(file, isStale)) return { holder: null };
  }
  return { holder: null };
}

/** Takes the lock, waiting (bounded) while another live process holds it. */
export async function acquireLock(
  file: string,
  opts: LockOptions & { timeoutMs: number; onWait?: (holderPid: number | null) => void },
): Promise<Lock> {
  const start = Date.now();
  let told = false;
  for (;;) {
    const a = tryLock(file, opts);
    if (a.lock) return a.lock;
    if (Date.now() - start > opts.timeoutMs) throw new LockTimeoutError(file, a.holder, Date.now() - start);
    if (!told) {
      told = true;
      opts.onWait?.(a.holder);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

/**
 * Takes the lock, or returns the pid of the live process that holds it, without waiting for that
 * process. A lock that is being written (no pid yet) is waited for, briefly, until it names its owner.
 */
export async function takeLockOrHolder(file: string, opts: LockOptions & { pollMs?: number } = {}): Promise<Lock | number> {
  for (;;) {
    const a = tryLock(file, opts);
    if (a.lock) return a.lock;
    if (a.holder !== null) return a.holder;
    await new Promise((r) => setTimeout(r, opts.pollMs ?? 50));
  }
}
