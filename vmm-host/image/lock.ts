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

/**
 * Removes the lock file only if it is still the one judged stale (same inode): two processes that
 * both judged it stale must not remove the lock the faster one has just created. The file is
 * renamed aside first, so the check and the removal are one step for everyone else.
 */
function removeStale(file: string, staleIno: number): void {
  const aside = `${file}.stale-${process.pid}-${Date.now()}`;
  try {
    fs.renameSync(file, aside);
  } catch {
    return;
  }
  const st = safeStat(aside);
  if (st && st.ino !== staleIno) {
    // Not the stale file: a new owner's lock. Put it back unless yet another owner took the name.
    try {
      fs.linkSync(aside, file);
    } catch {
      /* Taken meanwhile: that owner's lock stands. */
    }
  }
  fs.rmSync(aside, { force: true });
}

/** One non-blocking attempt: creates the lock, takes over a stale one, or says who holds it. */
export function tryLock(file: string, opts: LockOptions = {}): LockAttempt {
  const alive = opts.isAlive ?? pidAlive;
  const grace = opts.emptyGraceMs ?? 5000;
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
    const holder = readHolder(file);
    if (holder === null) {
      // Just created and not written yet, or left empty by an owner that died right then.
      if (Date.now() - st.mtimeMs <= grace) return { holder: null };
      removeStale(file, st.ino);
      continue;
    }
    if (holder !== process.pid && alive(holder)) return { holder };
    removeStale(file, st.ino);
  }
  return { holder: readHolder(file) };
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
