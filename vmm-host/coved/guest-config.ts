// Plain functions over a sandbox's config: the guest config disk it boots with, and the VmSpec the
// driver runs it from. No state, no I/O beyond writing the config disk.
import * as path from 'node:path';
import { DEFAULT_NETWORK, writeConfigDisk } from '../../contract/config-disk';
import { GUEST } from '../../contract/guest';
import type { ExtraMount, MountType } from '../../contract/protocol';
import { specFromLayout, type AccelResult, type VmSpec } from '../driver';
import type { SandboxKeys } from './keys';
import { EMPTY_SLOT, guestMounts, slotShares } from './mounts';

/** What `vms/<name>/config.json` holds: what the user asked for. */
export interface SandboxConfig {
  version: 1;
  name: string;
  workspace: string;
  mount: MountType;
  readonly: boolean;
  cpus: number;
  memoryMiB: number;
  diskGiB: number;
  /** The image folder name (`docker-<hash>`) whose base disk the overlay is made over. */
  image: string;
  /** The base disk's sha256 when the overlay was made: an overlay is only valid over that base. */
  baseSha256?: string;
  /**
   * The warm-start template (`templates/<id>` in the image folder) whose frozen disk this sandbox's
   * disk is an overlay over; absent for a sandbox made by a cold boot.
   */
  template?: string;
  createdAt: string;
  /** Ports added with `cove publish`, kept across restarts. */
  published: Array<{ hostPort: number; guestPort: number }>;
  /** Host 127.0.0.1 ports the guest may reach, at guest 127.0.0.1 on the same port. */
  allowHostPorts?: number[];
  /** Never paused or put to sleep when idle. */
  keepAwake?: boolean;
  /** More shared folders and files; they change on the next start. */
  mounts?: ExtraMount[];
  /** false: the Docker socket lets containers bind-mount any path. Absent: on. */
  bindGuard?: boolean;
}

/**
 * Writes the config disk a sandbox boots (or is reborn) with: its identity, its folder, and whether
 * its processes are mapped at random addresses (`guestAslr` in the driver).
 */
export function writeSandboxConfigDisk(file: string, c: SandboxConfig, keys: SandboxKeys, mount: MountType, aslr: boolean): void {
  writeConfigDisk(file, {
    version: 1,
    name: c.name,
    hostname: c.name,
    hostKey: keys.hostPrivate,
    authorizedKeys: [keys.clientPublic],
    mounts: [{ tag: GUEST.workspaceTag, type: mount, path: c.workspace, readonly: c.readonly }, ...guestMounts(c.mounts ?? [])],
    network: DEFAULT_NETWORK,
    resizeRoot: true,
    insecureRegistries: [],
    aslr,
  });
}

export interface SpecInput {
  config: SandboxConfig;
  imageDir: string;
  vmDir: string;
  accel: AccelResult;
  mount: MountType;
  network: 'passt' | 'user';
  /** A template's RAM file, mapped copy-on-write (a clone restored from it, and its sleeps). */
  memoryFile?: string | null;
}

export function sandboxSpec(i: SpecInput): VmSpec {
  return specFromLayout({
    imageDir: i.imageDir,
    vmDir: i.vmDir,
    cpus: i.config.cpus,
    memoryMiB: i.config.memoryMiB,
    accel: i.accel.accel,
    tscKhz: i.accel.tscKhz,
    share: { type: i.mount, hostPath: path.resolve(i.config.workspace), readonly: i.config.readonly },
    extraShares: slotShares(i.vmDir, i.config.mounts ?? [], path.join(i.vmDir, EMPTY_SLOT)),
    network: i.network,
    memoryFile: i.memoryFile ? { path: i.memoryFile, shared: false } : null,
    // Freed guest pages go back to the host, except in a clone: QEMU would discard them from the
    // template's RAM file, which every clone maps (docs/memory.md).
    balloon: !i.memoryFile,
    dataPort: true,
    forwardNic: true,
    stdinPort: true,
  });
}
