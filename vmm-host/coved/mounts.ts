// Extra mounts (`cove up --mount`): checked once when asked for, prepared on the host at each start.
// Every extra mount is a 9p share of its own in one of the VM's fixed mount slots; a file is shared
// as a hard link of it in the sandbox's folder (`files/<slot>/<name>`), whose slot the guest
// mounts aside and bind-mounts the one file at its path.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { invalidInput } from '../../contract/errors';
import { formatMountSpec } from '../../contract/mount-spec';
import { GUEST } from '../../contract/guest';
import type { ExtraMount } from '../../contract/protocol';

export const mountSpec = formatMountSpec;

/** The empty folder unused slots export, in a sandbox's folder and in a template's. */
export const EMPTY_SLOT = 'empty';

/** Guest paths a mount may not cover or sit in: the guest's own system and Docker's state. */
const GUEST_SYSTEM = ['/bin', '/boot', '/dev', '/etc', '/lib', '/lib64', '/proc', '/run', '/sbin', '/sys', '/usr', '/var/lib/docker', '/var/lib/containerd', '/var/run', '/opt/cove'];

const inside = (a: string, b: string) => a === b || a.startsWith(b === '/' ? '/' : `${b}/`);

function checkPath(what: string, p: string): void {
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(p)) throw invalidInput(`the ${what} ${JSON.stringify(p)} contains control characters`, 'rename it');
  if (p.includes(':')) throw invalidInput(`the ${what} ${JSON.stringify(p)} contains ':'`, "docker's -v syntax cannot carry ':' in a path; rename it");
  if (p.includes(',')) throw invalidInput(`the ${what} ${JSON.stringify(p)} contains ','`, 'qemu option values cannot carry it safely here; rename it');
  if (!path.isAbsolute(p)) throw invalidInput(`the ${what} ${JSON.stringify(p)} is not absolute`, 'pass an absolute path');
}

/**
 * Checks the mounts a client asked for: at most `GUEST.extraMountSlots`, each an existing host
 * folder or regular file outside Cove's state, a guest path that is neither a guest system path nor
 * overlapping the workspace or another mount. Returns them resolved, in the order given.
 */
export function checkMounts(raw: unknown, workspace: string, home: string): ExtraMount[] {
  if (!Array.isArray(raw)) throw invalidInput('"mounts" must be a list of { host, guest?, readonly? }');
  if (raw.length > GUEST.extraMountSlots) {
    throw invalidInput(`${raw.length} mounts asked for; a sandbox takes at most ${GUEST.extraMountSlots}`, 'share a common parent folder instead');
  }
  const out: ExtraMount[] = [];
  for (const item of raw as unknown[]) {
    if (typeof item !== 'object' || item === null || Array.isArray(item)) throw invalidInput('each of "mounts" must be an object { host, guest?, readonly? }');
    const r = item as Record<string, unknown>;
    if (typeof r.host !== 'string' || r.host.length > 4096) throw invalidInput('a mount\'s "host" must be a path');
    if (r.guest !== undefined && (typeof r.guest !== 'string' || r.guest.length > 4096)) throw invalidInput('a mount\'s "guest" must be a path');
    if (r.readonly !== undefined && typeof r.readonly !== 'boolean') throw invalidInput('a mount\'s "readonly" must be true or false');
    checkPath('mount source', r.host);
    const host = path.resolve(r.host);
    const guest = path.posix.normalize(r.guest ?? host);
    checkPath('mount target', guest);
    let st: fs.Stats;
    try {
      st = fs.statSync(host);
    } catch {
      throw invalidInput(`the mount source ${host} does not exist`, 'create it first or check the path');
    }
    if (!st.isDirectory() && !st.isFile()) throw invalidInput(`the mount source ${host} is neither a folder nor a regular file`, 'share a folder or a file');
    if (host === '/') throw invalidInput('the mount source is / (the whole host file system)', 'share the folders you need');
    const h = path.resolve(home);
    if (inside(host, h) || inside(h, host)) {
      throw invalidInput(`the mount source ${host} contains or is inside Cove's own state (${h})`, "sharing it would hand the guest other sandboxes' keys");
    }
    if (guest === '/' || GUEST_SYSTEM.some((s) => inside(guest, s) || (guest !== '/' && inside(s, guest)))) {
      throw invalidInput(`the mount target ${guest} would cover the guest's own ${GUEST_SYSTEM.find((s) => inside(guest, s) || inside(s, guest)) ?? '/'}`, 'give another guest path: --mount HOST:GUEST');
    }
    for (const other of [{ guest: workspace, what: 'the workspace' }, ...out.map((m) => ({ guest: m.guest, what: `the mount of ${m.host}` }))]) {
      if (inside(guest, other.guest) || inside(other.guest, guest)) {
        throw invalidInput(`the mount target ${guest} overlaps ${other.what} (${other.guest})`, 'give another guest path: --mount HOST:GUEST, or drop the mount');
      }
    }
    out.push({ host, guest, readonly: r.readonly === true, kind: st.isDirectory() ? 'dir' : 'file' });
  }
  return out;
}

/** The host folder a slot exports: the folder itself, or the file's own folder of one hard link. */
export function slotSource(sandboxDir: string, slot: number, m: ExtraMount): string {
  return m.kind === 'dir' ? m.host : path.join(sandboxDir, 'files', String(slot));
}

/**
 * The VM's extra 9p devices: one per slot (GUEST.extraMountSlots), the mounts first, then `empty`
 * (an empty folder, read-only) for the rest. Read-only is a property of qemu's 9p server, not of
 * the saved device, so a template's slots and a clone's may differ in it.
 */
export function slotShares(vmDir: string, mounts: ExtraMount[], empty: string): Array<{ hostPath: string; readonly: boolean }> {
  return Array.from({ length: GUEST.extraMountSlots }, (_, i) => {
    const m = mounts.at(i);
    return m ? { hostPath: slotSource(vmDir, i, m), readonly: m.readonly } : { hostPath: empty, readonly: true };
  });
}

/** The guest's view of the extra mounts, for the config disk. */
export function guestMounts(mounts: ExtraMount[]): Array<{ tag: string; type: '9p'; path: string; readonly: boolean; file?: string }> {
  return mounts.map((m, i) => ({
    tag: `${GUEST.extraMountTagPrefix}${i}`,
    type: '9p' as const,
    path: m.guest,
    readonly: m.readonly,
    ...(m.kind === 'file' ? { file: path.basename(m.guest) } : {}),
  }));
}

/**
 * Makes each file mount's hard link afresh (an editor that saves by renaming breaks the old one) and
 * checks every folder still exists. Throws with what to do when a source is gone or a file cannot
 * be linked (another file system than Cove's state).
 */
export function prepareMounts(sandboxDir: string, mounts: ExtraMount[], name: string): void {
  const files = path.join(sandboxDir, 'files');
  fs.rmSync(files, { recursive: true, force: true });
  fs.mkdirSync(path.join(sandboxDir, EMPTY_SLOT), { recursive: true, mode: 0o755 });
  mounts.forEach((m, slot) => {
    let st: fs.Stats;
    try {
      st = fs.statSync(m.host);
    } catch {
      throw invalidInput(
        `the shared ${m.kind === 'dir' ? 'folder' : 'file'} ${m.host} of sandbox ${name} is gone`,
        `create it again, or drop the mount: \`cove up <folder> --name ${name}\` with the other --mount values (or --no-mounts), then start it`,
      );
    }
    if ((m.kind === 'dir') !== st.isDirectory()) throw invalidInput(`the shared path ${m.host} of sandbox ${name} is no longer a ${m.kind === 'dir' ? 'folder' : 'file'}`, 'share it again with cove up --mount');
    if (m.kind === 'dir') return;
    const dir = slotSource(sandboxDir, slot, m);
    fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
    try {
      fs.linkSync(m.host, path.join(dir, path.basename(m.guest)));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw invalidInput(
        `cannot share the file ${m.host} as itself (${code === 'EXDEV' ? "it is on another file system than Cove's state" : String(code)})`,
        `share its folder instead: --mount ${path.dirname(m.host)}`,
      );
    }
  });
}
