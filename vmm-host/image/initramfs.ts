// The initramfs: busybox-static, tier-docker/initramfs/init, and the decompressed modules needed to
// find and mount the root disk, loaded by /init with insmod in /etc/modules.order.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { CpioEntry, S_IFCHR, S_IFDIR, S_IFREG, cpioNewc } from './cpio';
import { moduleClosure, moduleName, parseModulesBuiltin, parseModulesDep } from './modules';

export interface InitramfsInput {
  /** tier-docker/initramfs (holds `init`). */
  initramfsDir: string;
  busybox: string;
  /** lib/modules/<release> with modules.dep (after depmod). */
  modulesDir: string;
  modules: string[];
}

export function decompressModule(file: string): Buffer {
  if (file.endsWith('.xz')) return execFileSync('xz', ['-d', '-c', file], { maxBuffer: 256 << 20 });
  if (file.endsWith('.zst')) return execFileSync('zstd', ['-d', '-c', '-q', file], { maxBuffer: 256 << 20 });
  if (file.endsWith('.gz')) return zlib.gunzipSync(fs.readFileSync(file));
  return fs.readFileSync(file);
}

export function buildInitramfs(input: InitramfsInput): { image: Buffer; modules: string[] } {
  const dep = parseModulesDep(fs.readFileSync(path.join(input.modulesDir, 'modules.dep'), 'utf8'));
  const builtinFile = path.join(input.modulesDir, 'modules.builtin');
  const builtin = fs.existsSync(builtinFile) ? parseModulesBuiltin(fs.readFileSync(builtinFile, 'utf8')) : new Set<string>();
  const order = moduleClosure(dep, input.modules, builtin);
  const entries: CpioEntry[] = [];
  for (const d of ['bin', 'dev', 'etc', 'lib', 'lib/modules', 'proc', 'sys', 'run', 'newroot']) {
    entries.push({ name: d, mode: S_IFDIR | 0o755 });
  }
  entries.push({ name: 'dev/console', mode: S_IFCHR | 0o600, rdevMajor: 5, rdevMinor: 1 });
  entries.push({ name: 'dev/null', mode: S_IFCHR | 0o666, rdevMajor: 1, rdevMinor: 3 });
  entries.push({ name: 'bin/busybox', mode: S_IFREG | 0o755, data: fs.readFileSync(input.busybox) });
  entries.push({ name: 'init', mode: S_IFREG | 0o755, data: fs.readFileSync(path.join(input.initramfsDir, 'init')) });
  const names: string[] = [];
  for (const rel of order) {
    const ko = `${moduleName(rel)}.ko`;
    names.push(ko);
    entries.push({ name: `lib/modules/${ko}`, mode: S_IFREG | 0o644, data: decompressModule(path.join(input.modulesDir, rel)) });
  }
  entries.push({ name: 'etc/modules.order', mode: S_IFREG | 0o644, data: Buffer.from(names.join('\n') + '\n') });
  return { image: zlib.gzipSync(cpioNewc(entries), { level: 6 }), modules: names };
}
