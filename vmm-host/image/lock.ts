// A cross-process lock: a file created with O_EXCL holding the owner's pid. A lock whose pid is no
// longer alive is stale and is taken over. Waiting is bounded and reports who holds the lock.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LockTimeoutError } from './errors';

export interface Lock {
  file: string;
  release(): void;
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

function readHolder(file: string): number | null {
  try {
    const pid = Number.parseInt(fs.readFileSync(file, 'utf8').trim(), 10);
    return Number.isNaN(pid) ? null : pid;
  } catch {
    return null;
  }
}

export async function acquireLock(
  file: string,
  opts: { timeoutMs: number; onWait?: (holderPid: number | null) => void },
): Promise<Lock> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const start = Date.now();
  let told = false;
  for (;;) {
    try {
      const fd = fs.openSync(file, 'wx', 0o644);
      fs.writeSync(fd, `${process.pid}\n`);
      fs.closeSync(fd);
      let released = false;
      return {
        file,
        release() {
          if (released) return;
          released = true;
          if (readHolder(file) === process.pid) fs.rmSync(file, { force: true });
        },
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const holder = readHolder(file);
    if (holder === null) {
      // Being written right now, or an empty leftover: give a writer a moment, then treat as stale.
      const st = safeStat(file);
      if (st && Date.now() - st.mtimeMs > 5000) fs.rmSync(file, { force: true });
    } else if (!pidAlive(holder) || holder === process.pid) {
      fs.rmSync(file, { force: true });
      continue;
    }
    if (Date.now() - start > opts.timeoutMs) throw new LockTimeoutError(file, holder, Date.now() - start);
    if (!told) {
      told = true;
      opts.onWait?.(holder);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

function safeStat(file: string): fs.Stats | null {
  try {
    return fs.statSync(file);
  } catch {
    return null;
  }
}
