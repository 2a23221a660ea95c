// The host tools the image build runs, each with the Debian package that provides it.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MissingToolError } from './errors';

export const BUILD_TOOLS: { tool: string; aptPackage: string }[] = [
  { tool: 'debootstrap', aptPackage: 'debootstrap' },
  { tool: 'apt-get', aptPackage: 'apt' },
  { tool: 'dpkg-deb', aptPackage: 'dpkg' },
  { tool: 'mkfs.ext4', aptPackage: 'e2fsprogs' },
  { tool: 'qemu-img', aptPackage: 'qemu-utils' },
  { tool: 'xz', aptPackage: 'xz-utils' },
  { tool: 'zstd', aptPackage: 'zstd' },
  { tool: 'cpio', aptPackage: 'cpio' },
  { tool: 'busybox', aptPackage: 'busybox-static' },
  { tool: 'chroot', aptPackage: 'coreutils' },
];

const SEARCH = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

export function which(tool: string, env: NodeJS.ProcessEnv = process.env): string | null {
  const dirs = [...(env.PATH ?? '').split(':').filter(Boolean), ...SEARCH];
  for (const d of dirs) {
    const p = path.join(d, tool);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // Not here.
    }
  }
  return null;
}

/** Resolves every build tool or throws a MissingToolError naming the first missing one's package. */
export function requireBuildTools(): Record<string, string> {
  const found: Record<string, string> = {};
  for (const { tool, aptPackage } of BUILD_TOOLS) {
    const p = which(tool);
    if (!p) throw new MissingToolError(tool, aptPackage);
    found[tool] = p;
  }
  // The initramfs needs a static busybox: a dynamic one would need its libraries too.
  const bb = fs.readFileSync(found.busybox).subarray(0, 4096);
  if (bb.includes(Buffer.from('/lib64/ld-linux'))) throw new MissingToolError('busybox (static)', 'busybox-static');
  return found;
}
