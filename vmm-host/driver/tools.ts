// Finds the host programs the QEMU driver runs; a missing one is an error naming its apt package.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MissingToolError } from '../image/errors';

export interface QemuTools {
  qemu: string;
  qemuImg: string;
  /** null when no virtiofsd is installed (9p is used then). */
  virtiofsd: string | null;
}

const BIN_DIRS = ['/usr/local/bin', '/usr/bin', '/bin', '/usr/local/sbin', '/usr/sbin'];
const VIRTIOFSD = ['/usr/libexec/virtiofsd', '/usr/lib/qemu/virtiofsd', '/usr/libexec/qemu/virtiofsd', '/usr/local/libexec/virtiofsd'];

/** Whether `p` is a file this process may execute. */
export function executable(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

function search(name: string, env: NodeJS.ProcessEnv): string | null {
  for (const d of [...(env.PATH ?? '').split(':').filter(Boolean), ...BIN_DIRS]) {
    const p = path.join(d, name);
    if (executable(p)) return p;
  }
  return null;
}

export function findQemu(env: NodeJS.ProcessEnv = process.env): string {
  const p = env.COVE_QEMU && executable(env.COVE_QEMU) ? env.COVE_QEMU : search('qemu-system-x86_64', env);
  if (!p) throw new MissingToolError('qemu-system-x86_64', 'qemu-system-x86');
  return p;
}

export function findQemuImg(env: NodeJS.ProcessEnv = process.env): string {
  const p = search('qemu-img', env);
  if (!p) throw new MissingToolError('qemu-img', 'qemu-utils');
  return p;
}

export function findVirtiofsd(env: NodeJS.ProcessEnv = process.env): string | null {
  if (env.COVE_VIRTIOFSD && executable(env.COVE_VIRTIOFSD)) return env.COVE_VIRTIOFSD;
  return VIRTIOFSD.find(executable) ?? search('virtiofsd', env);
}

export function requireVirtiofsd(env: NodeJS.ProcessEnv = process.env): string {
  const p = findVirtiofsd(env);
  if (!p) throw new MissingToolError('virtiofsd', 'qemu-system-common (QEMU ≤ 7.2) or virtiofsd');
  return p;
}

export function findQemuTools(env: NodeJS.ProcessEnv = process.env): QemuTools {
  return { qemu: findQemu(env), qemuImg: findQemuImg(env), virtiofsd: findVirtiofsd(env) };
}

/** passt (user-mode networking without the host-loopback mapping of qemu's slirp), or null. */
export function findPasst(env: NodeJS.ProcessEnv = process.env): string | null {
  if (env.COVE_PASST && executable(env.COVE_PASST)) return env.COVE_PASST;
  return search('passt', env);
}
