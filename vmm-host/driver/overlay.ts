// The sandbox disk: a qcow2 overlay over the image's read-only base disk (or a template's frozen
// disk, itself an overlay), so a new sandbox copies nothing. Idempotent: an existing disk is kept (it holds the sandbox's Docker data).
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { DriverError } from './errors';
import { findQemuImg } from './tools';

const exec = promisify(execFile);

export interface OverlayResult {
  created: boolean;
}

export async function createOverlay(baseDisk: string, disk: string, sizeBytes: number, baseFormat: 'raw' | 'qcow2' = 'raw'): Promise<OverlayResult> {
  if (fs.existsSync(disk)) return { created: false };
  const base = path.resolve(baseDisk);
  if (!fs.existsSync(base)) throw new DriverError(`the base disk ${base} does not exist`, 'build the image again');
  const baseSize = baseFormat === 'raw' ? fs.statSync(base).size : 0;
  const size = Math.max(sizeBytes, baseSize);
  const tmp = `${disk}.tmp`;
  try {
    await exec(findQemuImg(), ['create', '-q', '-f', 'qcow2', '-b', base, '-F', baseFormat, tmp, String(size)], { timeout: 60_000 });
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    const msg = ((e as { stderr?: string }).stderr || (e as Error).message).trim();
    throw new DriverError(`qemu-img could not create ${disk}: ${msg}`, 'check free disk space and that the image folder is intact', { cause: e });
  }
  fs.renameSync(tmp, disk);
  return { created: true };
}
