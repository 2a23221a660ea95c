// `HOST[:GUEST][:ro]`, the form of `cove up --mount` and the `cove.mounts` setting, parsed and
// written in one place. Paths cannot hold ':' (docker's own -v form has the same limit).
import * as path from 'node:path';
import type { ExtraMount, MountRequest } from './protocol';

export class MountSpecError extends Error {}

/** Parses one spec; a relative HOST is taken from `cwd`, `~/` from `home`. */
export function parseMountSpec(spec: string, cwd: string, home: string): MountRequest {
  const parts = spec.split(':');
  let readonly = false;
  const last = parts[parts.length - 1];
  if (parts.length > 1 && (last === 'ro' || last === 'rw')) {
    readonly = last === 'ro';
    parts.pop();
  }
  if (parts.length > 2 || parts[0] === '') {
    throw new MountSpecError(`--mount ${JSON.stringify(spec)} is not HOST[:GUEST][:ro] (a path cannot hold ':')`);
  }
  const expand = (p: string) => (p === '~' ? home : p.startsWith('~/') ? path.join(home, p.slice(2)) : p);
  const host = path.resolve(cwd, expand(parts[0]));
  const guest = parts.length > 1 ? parts[1] : undefined;
  if (guest !== undefined && !path.isAbsolute(guest)) throw new MountSpecError(`--mount ${JSON.stringify(spec)}: the guest path ${JSON.stringify(guest)} must be absolute`);
  return { host, ...(guest !== undefined ? { guest: path.posix.normalize(guest) } : {}), ...(readonly ? { readonly } : {}) };
}

/** The spec that gives back `m`: `HOST`, `HOST:GUEST` when they differ, `:ro` when read-only. */
export function formatMountSpec(m: Pick<ExtraMount, 'host' | 'guest' | 'readonly'>): string {
  return `${m.host}${m.guest !== m.host ? `:${m.guest}` : ''}${m.readonly ? ':ro' : ''}`;
}
