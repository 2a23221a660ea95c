// Kernel modules: the dependency closure for the initramfs (computed here, from modules.dep, so the
// initramfs needs no modprobe), and the trimmed module tree that goes into the root filesystem.
import * as fs from 'node:fs';
import * as path from 'node:path';

/** `ext4`, `virtio-blk` and `kernel/fs/ext4/ext4.ko.xz` all name module `ext4`/`virtio_blk`. */
export function moduleName(fileOrName: string): string {
  return path.basename(fileOrName).replace(/\.ko(\.(xz|zst|gz))?$/, '').replace(/-/g, '_');
}

export interface ModuleDep {
  /** Module name → its file, relative to lib/modules/<release>. */
  files: Map<string, string>;
  /** Module name → names of the modules it needs. */
  deps: Map<string, string[]>;
}

export function parseModulesDep(text: string): ModuleDep {
  const files = new Map<string, string>();
  const deps = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const i = line.indexOf(':');
    if (i < 0) continue;
    const file = line.slice(0, i).trim();
    if (!file) continue;
    const name = moduleName(file);
    files.set(name, file);
    deps.set(name, line.slice(i + 1).trim().split(/\s+/).filter(Boolean).map(moduleName));
  }
  return { files, deps };
}

/** Names of modules built into the kernel (modules.builtin), which need no loading. */
export function parseModulesBuiltin(text: string): Set<string> {
  return new Set(text.split('\n').map((l) => l.trim()).filter(Boolean).map(moduleName));
}

/**
 * The files to load, in load order (every module after all of its dependencies), for the wanted
 * modules and everything they need. Built-in modules are skipped; an unknown module is an error.
 */
export function moduleClosure(dep: ModuleDep, wanted: string[], builtin: Set<string> = new Set()): string[] {
  const order: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (name: string, chain: string[]) => {
    const s = state.get(name);
    if (s === 'done') return;
    if (s === 'visiting') throw new Error(`module dependency cycle: ${[...chain, name].join(' -> ')}`);
    if (!dep.files.has(name)) {
      if (builtin.has(name)) {
        state.set(name, 'done');
        return;
      }
      throw new Error(`module ${name} not found in modules.dep${chain.length ? ` (needed by ${chain[chain.length - 1]})` : ''}`);
    }
    state.set(name, 'visiting');
    for (const d of dep.deps.get(name) ?? []) visit(d, [...chain, name]);
    state.set(name, 'done');
    const file = dep.files.get(name);
    if (file !== undefined) order.push(file);
  };
  for (const w of wanted) visit(moduleName(w), []);
  return order;
}

/** Copies lib/modules/<release> without the excluded subtrees (paths relative to the release dir). */
export function copyModuleTree(src: string, dst: string, excludeDirs: string[]): { files: number; bytes: number } {
  const excluded = new Set(excludeDirs.map((d) => d.replace(/\/+$/, '')));
  let files = 0;
  let bytes = 0;
  const walk = (rel: string) => {
    const from = path.join(src, rel);
    const to = path.join(dst, rel);
    fs.mkdirSync(to, { recursive: true });
    for (const ent of fs.readdirSync(from, { withFileTypes: true })) {
      const r = rel ? `${rel}/${ent.name}` : ent.name;
      if (excluded.has(r)) continue;
      if (ent.isDirectory()) walk(r);
      else if (ent.isSymbolicLink()) {
        // build/ and source/ point into linux-headers; they would dangle in the guest.
        continue;
      } else {
        fs.copyFileSync(path.join(from, ent.name), path.join(to, ent.name));
        files++;
        bytes += fs.statSync(path.join(to, ent.name)).size;
      }
    }
  };
  walk('');
  return { files, bytes };
}
