// Keeps a guest's console log from filling the host disk (docs/security.md). qemu writes the serial
// console to `console.log` with no limit and at its own file offset, so the file cannot be truncated
// or rotated under it; instead the space of everything but the last `keepBytes` is given back by
// punching a hole (fallocate(1) --punch-hole; node has no fallocate). The file keeps its size, the
// punched part reads as NUL bytes, and readers that look at the tail (`cove inspect`, boot progress)
// are unaffected; `cove logs` leaves the NULs out.
import * as child_process from 'node:child_process';
import * as fs from 'node:fs';
import { envWhole } from './env-parse';

const BLOCK = 4096;

export const DEFAULT_CONSOLE_KEEP_BYTES = 8 * 1024 * 1024;

/** `COVE_CONSOLE_MAX_BYTES`, else the default; coved refuses a value it cannot read at its start. */
export function consoleKeepBytes(env: NodeJS.ProcessEnv = process.env): number {
  return envWhole(env, 'COVE_CONSOLE_MAX_BYTES', DEFAULT_CONSOLE_KEEP_BYTES, BLOCK, 2 ** 50, `a whole number of bytes, at least ${BLOCK}`);
}

/** Files whose punch failed (a file system without hole punching), so it is reported once. */
const failed = new Set<string>();

/**
 * Gives back the disk space of `file` beyond its last `keepBytes` once it uses more than twice that.
 * Cheap when nothing is to be done (one stat); meant to run on coved's per-second tick.
 */
export function boundConsoleLog(file: string, log: (msg: string) => void, keepBytes = consoleKeepBytes()): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    return;
  }
  if (st.blocks * 512 <= 2 * keepBytes) return;
  const end = Math.floor((st.size - keepBytes) / BLOCK) * BLOCK;
  if (end <= 0) return;
  try {
    child_process.execFileSync('fallocate', ['--punch-hole', '--keep-size', '--offset', '0', '--length', String(end), file], { stdio: 'ignore', timeout: 10_000 });
    failed.delete(file);
  } catch (e) {
    if (!failed.has(file)) {
      failed.add(file);
      log(`the console log ${file} is ${st.size} bytes and its space could not be given back (${e instanceof Error ? e.message : String(e)}); the guest can fill this disk through its console`);
    }
  }
}
