// Free-space checks: up front (an estimate) and after the fact (ENOSPC anywhere).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DiskFullError } from './errors';

export function freeBytes(dir: string): number {
  let d = dir;
  for (;;) {
    try {
      const s = fs.statfsSync(d);
      return s.bavail * s.bsize;
    } catch {
      const parent = path.dirname(d);
      if (parent === d) return 0;
      d = parent;
    }
  }
}

export function requireFreeSpace(dir: string, neededBytes: number): void {
  const free = freeBytes(dir);
  if (free < neededBytes) throw new DiskFullError(dir, free, neededBytes);
}
