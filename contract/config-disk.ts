// The per-boot config disk (docs/guest.md): 1 MiB raw, the magic `COVECFG1\n`, the JSON document,
// NUL padding. The guest finds it among /dev/vd* by the magic.
import * as fs from 'node:fs';
import { GUEST_NETWORK } from './guest';

export const CONFIG_DISK_MAGIC = 'COVECFG1\n';
export const CONFIG_DISK_SIZE = 1024 * 1024;

export interface GuestMount {
  tag: string;
  type: 'virtiofs' | '9p';
  /** Where the guest mounts it: the same absolute path as on the host. */
  path: string;
  readonly: boolean;
  /**
   * A file mount: the share holds this one file (by this name); the guest mounts the share aside
   * (GUEST.filesAside), bind-mounts the file at `path`, and lets go of the aside mount.
   */
  file?: string;
}

export interface GuestConfig {
  version: 1;
  name: string;
  hostname: string;
  /** The guest's SSH host key (OpenSSH private key, ed25519). */
  hostKey: string;
  /** Public keys allowed to reach the agent (`ssh-ed25519 AAAA… comment`). */
  authorizedKeys: string[];
  mounts: GuestMount[];
  network: { address: string; gateway: string; dns: string };
  resizeRoot: boolean;
  insecureRegistries: string[];
  /**
   * Whether the guest randomizes where processes are mapped (`kernel.randomize_va_space` 2 or 0),
   * set by the agent at its start and on rebirth; absent: the kernel's default (on).
   */
  aslr?: boolean;
}

/** The guest's network as the config disk carries it (docs/guest.md). */
export const DEFAULT_NETWORK = {
  address: `${GUEST_NETWORK.address}/${GUEST_NETWORK.prefixLength}`,
  gateway: GUEST_NETWORK.gateway,
  dns: GUEST_NETWORK.dns,
} as const;

export function encodeConfigDisk(config: GuestConfig): Buffer {
  const body = Buffer.from(CONFIG_DISK_MAGIC + JSON.stringify(config), 'utf8');
  if (body.includes(0)) throw new Error('the guest config contains a NUL byte');
  if (body.length >= CONFIG_DISK_SIZE) throw new Error(`the guest config is ${body.length} bytes; the config disk holds ${CONFIG_DISK_SIZE - 1}`);
  const disk = Buffer.alloc(CONFIG_DISK_SIZE, 0);
  body.copy(disk);
  return disk;
}

export function decodeConfigDisk(disk: Buffer): GuestConfig {
  const magic = disk.subarray(0, CONFIG_DISK_MAGIC.length).toString('utf8');
  if (magic !== CONFIG_DISK_MAGIC) throw new Error('not a Cove config disk (bad magic)');
  let end = disk.indexOf(0, CONFIG_DISK_MAGIC.length);
  if (end < 0) end = disk.length;
  return JSON.parse(disk.subarray(CONFIG_DISK_MAGIC.length, end).toString('utf8')) as GuestConfig;
}

/** Writes the config disk (mode 0600: it holds the guest's private host key). */
export function writeConfigDisk(file: string, config: GuestConfig): void {
  const tmp = `${file}.tmp`;
  fs.writeFileSync(tmp, encodeConfigDisk(config), { mode: 0o600 });
  fs.renameSync(tmp, file);
}
