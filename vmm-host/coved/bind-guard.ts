// The bind-source guard of a sandbox's Docker socket (docs/ecosystem.md): what a container may
// bind-mount from "the host" is only what the sandbox shares; anything else would silently be the
// guest's own path (or an empty folder dockerd makes), so it is refused with the `cove up --mount`
// that would share it.
import * as path from 'node:path';

/** What the guard of one sandbox allows; null from `Sandbox.bindPolicy()` when the guard is off. */
export interface BindPolicy {
  /** The sandbox's name, for the message. */
  sandbox: string;
  /** The workspace folder (host path = guest path). */
  workspace: string;
  /** Guest paths shared from the host: the workspace and every extra mount's guest path. */
  shared: string[];
  /** The sandbox's current extra mounts as `cove up --mount` values, so a hint can keep them. */
  mountSpecs: string[];
}

/**
 * Guest paths that are meant to be the guest's own, so a container may bind them as they are: the
 * guest's Docker socket (docker-outside-of-docker, the devcontainer CLI's docker feature), the
 * kernel's views (/proc, /sys, /dev, /lib/modules: monitoring agents, device access) and Docker's
 * and containerd's own state (cAdvisor, image tools). Nothing of the host is behind any of them.
 */
export const GUEST_OWN_PATHS: readonly string[] = [
  '/var/run/docker.sock',
  '/run/docker.sock',
  '/proc',
  '/sys',
  '/dev',
  '/lib/modules',
  '/var/lib/docker',
  '/var/lib/containerd',
  '/run/containerd',
  '/var/run/docker',
  '/run/docker',
];

/** The largest create request the guard reads (a container's config is a few KiB). */
export const MAX_CREATE_BODY_BYTES = 8 * 1024 * 1024;

/**
 * `POST /containers/create`, with or without an API version prefix; `url` may carry a query. The
 * path is matched as dockerd's router sees it: percent-decoded, with `.`, `..` and `//` resolved.
 */
export function isCreateRequest(method: string | undefined, url: string | undefined): boolean {
  if (method !== 'POST' || url === undefined) return false;
  let pathname = url.split('?')[0];
  try {
    pathname = decodeURIComponent(pathname);
  } catch {
    // Not a valid escape: Go's URL parser refuses it before any route is matched.
    return false;
  }
  return /^(?:\/v[0-9.]+)?\/containers\/create\/?$/.test(path.posix.normalize(pathname));
}

const inside = (p: string, dir: string) => p === dir || dir === '/' || p.startsWith(`${dir}/`);

/** A guest path as dockerd will use it: `..` and `.` resolved, no trailing slash. */
function normalise(p: string): string {
  const n = path.posix.normalize(p);
  return n.length > 1 && n.endsWith('/') ? n.slice(0, -1) : n;
}

/**
 * The value of `key` in a JSON object as Go's encoding/json finds it for dockerd: names match
 * without regard to case, and the last matching key wins. Go also folds the long s (ſ) to s.
 */
function field(obj: unknown, key: string): unknown {
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) return undefined;
  const fold = (s: string) => s.toLowerCase().replace(/ſ/g, 's');
  const want = fold(key);
  let value: unknown = undefined;
  for (const [k, v] of Object.entries(obj)) if (fold(k) === want) value = v;
  return value;
}

/** Every host-path source a create request binds: `HostConfig.Binds` and bind `HostConfig.Mounts`. */
export function bindSources(config: unknown): string[] {
  const hostConfig = field(config, 'HostConfig');
  const out: string[] = [];
  const binds = field(hostConfig, 'Binds');
  if (Array.isArray(binds)) {
    for (const b of binds as unknown[]) {
      if (typeof b !== 'string') continue;
      // `src:dst[:opts]`; a single part is only a container path (an anonymous volume), and a
      // source that is not absolute is a named volume.
      const parts = b.split(':');
      if (parts.length >= 2 && parts[0].startsWith('/')) out.push(parts[0]);
    }
  }
  const mounts = field(hostConfig, 'Mounts');
  if (Array.isArray(mounts)) {
    for (const m of mounts as unknown[]) {
      const source = field(m, 'Source');
      // dockerd itself refuses a bind whose source is not absolute.
      if (field(m, 'Type') === 'bind' && typeof source === 'string' && source.startsWith('/')) out.push(source);
    }
  }
  return out;
}

/** Whether a container may bind `source` (a guest path) under `policy`. */
export function allowedSource(source: string, policy: BindPolicy): boolean {
  const p = normalise(source);
  return [...policy.shared, ...GUEST_OWN_PATHS].some((dir) => inside(p, normalise(dir)));
}

/** A word for a POSIX shell, quoted only when it needs to be. */
function shellWord(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** `cove up` for this sandbox with its current mounts and `extra` arguments. */
function upCommand(policy: BindPolicy, extra: string[]): string {
  return ['cove', 'up', policy.workspace, '--name', policy.sandbox, ...policy.mountSpecs.flatMap((m) => ['--mount', m]), ...extra].map(shellWord).join(' ');
}

const guardOff = (policy: BindPolicy) => `or let containers bind any guest path: ${upCommand(policy, ['--bind-guard=off'])}`;

/** What the client is told when a container would bind `source`, which is not shared. */
export function refusalMessage(source: string, policy: BindPolicy): string {
  const p = normalise(source);
  const name = policy.sandbox;
  const share =
    p === '/'
      ? 'share the folders it needs'
      : `share it: ${upCommand(policy, ['--mount', p])}, then \`cove stop ${shellWord(name)} && cove start ${shellWord(name)}\` (mounts change on the next start)`;
  return `cove: the bind-mount source ${p} is not shared with sandbox ${name}, so the container would see the guest's own ${p}, not the host's; ${share}; ${guardOff(policy)}`;
}

/** What the client is told when a create request is too large for the guard to read. */
export function tooLargeMessage(policy: BindPolicy): string {
  return `cove: the container's create request is over ${MAX_CREATE_BODY_BYTES / 1024 / 1024} MiB, more than the bind guard of sandbox ${policy.sandbox} reads; ${guardOff(policy)}`;
}

/**
 * The guard's answer for one create request body: the message to refuse it with, or null to pass it
 * on. A body that is not JSON passes (dockerd answers with its own error).
 */
export function checkCreateBody(body: Buffer, policy: BindPolicy): string | null {
  let config: unknown;
  try {
    config = JSON.parse(body.toString('utf8'));
  } catch {
    return null;
  }
  const refused = bindSources(config).find((s) => !allowedSource(s, policy));
  return refused === undefined ? null : refusalMessage(refused, policy);
}
