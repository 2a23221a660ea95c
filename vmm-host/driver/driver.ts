// The hypervisor driver interface. QEMU microvm is the first driver (qemu.ts); a Firecracker or
// Cloud Hypervisor driver is one more folder that implements `Driver` from a `VmSpec`. A driver
// starts a VM from a spec and hands back pids; the processes outlive the caller, so a restarted
// coved re-attaches by the pid files in the VM's folder.
import type { Accel } from '../../contract/protocol';

/** A shared host folder, as the hypervisor sees it. */
export interface ShareSpec {
  type: 'virtiofs' | '9p';
  hostPath: string;
  readonly: boolean;
}

/**
 * Guest RAM kept in a file. A template boots with `shared: true` (its RAM is the file, so saving
 * skips it); each clone maps the same file with `shared: false`, copy-on-write: the template file
 * never changes, and clean pages are shared between clones by the host's page cache.
 */
export interface MemoryFileSpec {
  path: string;
  shared: boolean;
}

/** What a VM is, independent of the hypervisor. */
export interface VmSpec {
  /** The VM's own folder: sockets, pid files, logs (the names of layout.ts `VM`). */
  dir: string;
  kernel: string;
  initrd: string;
  /** The root disk (qcow2). */
  disk: string;
  /** The per-boot config disk (raw, read-only to the guest). */
  configDisk: string;
  cpus: number;
  memoryMiB: number;
  accel: Accel;
  /** Host TSC kHz for `tsc_early_khz` under TCG; omitted when null. */
  tscKhz?: number | null;
  kernelArgsExtra?: string[];
  /**
   * MiB of qemu's TCG translation cache (tcg-cache.ts); ignored under KVM. Absent: the driver's
   * (COVE_TCG_TB_MIB, else DEFAULT_TCG_CACHE_MIB); null: QEMU's own default. Not guest state: a
   * saved VM restores with any size.
   */
  tcgCacheMiB?: number | null;
  /**
   * A virtio-balloon with free-page reporting: pages the guest frees go back to the host. Only for
   * guest RAM the VM owns (anonymous or a shared memfd): QEMU discards a reported page of a file
   * by punching a hole in the file, which for a clone's private mapping of a template's RAM file
   * would change every other clone's memory (docs/memory.md). Optional so that a VM saved
   * without it restores with the devices it was saved with.
   */
  balloon?: boolean;
  share: ShareSpec | null;
  /**
   * More 9p shares, tagged `cove-m<index>` (GUEST.extraMountTagPrefix): the caller passes every
   * slot (GUEST.extraMountSlots), empty folders for unused ones, so that the device list of a saved
   * VM never depends on what it shares.
   */
  extraShares?: Array<Omit<ShareSpec, 'type'>>;
  /**
   * `passt` (default where installed): the guest reaches the network but not the host's
   * loopback. `user`: qemu's slirp, which maps the gateway address to the host's 127.0.0.1.
   */
  network: 'passt' | 'user';
  memoryFile?: MemoryFileSpec | null;
  /**
   * A second virtio-serial port, `cove.data` (GUEST.dataPortName), on qemu's `data.sock`: the data
   * channel (agent/PROTOCOL.md). Optional so that a VM saved before it existed restores with the
   * devices it was saved with.
   */
  dataPort?: boolean;
  /**
   * The forwarding NIC (contract/guest.ts GUEST_FORWARD_NIC): host → guest TCP for forwarded ports
   * without the agent in the byte path (`forwardPort`). Optional so that a VM saved before it
   * existed restores with the devices it was saved with.
   */
  forwardNic?: boolean;
  /**
   * A third virtio-serial port, `cove.stdin` (GUEST.stdinPortName), on qemu's `stdin.sock`: a
   * command's stdin straight into the guest (PROTOCOL.md, "The stdin port"). Optional so that a VM
   * saved before it existed restores with the devices it was saved with.
   */
  stdinPort?: boolean;
}

export interface DriverFeatures {
  name: string;
  accel: Accel;
  /** The host has /dev/vhost-vsock (an agent channel over vsock is possible). */
  vsock: boolean;
  /** A usable virtiofsd is installed (virtio-fs shares are possible). */
  virtiofs: boolean;
  '9p': boolean;
  /** The host, not the guest, enforces read-only shares (9p `readonly=on`; the C virtiofsd cannot). */
  readonlyShares: { virtiofs: boolean; '9p': boolean };
  /** A running VM can be saved to a file and restored from it (warm start, sleep). */
  snapshots: boolean;
  /**
   * Whether a VM with this kind of share can be saved: `always`, only while the guest has it
   * `unmounted`, or `never` (QEMU 7.2 refuses any vhost-user-fs device).
   */
  saveWithShare: { virtiofs: 'always' | 'unmounted' | 'never'; '9p': 'always' | 'unmounted' | 'never' };
  /** Guest RAM in a file that clones map copy-on-write (restore loads pages on demand). */
  memoryFile: boolean;
  /** The hypervisor's own version, as it reports it (part of what a saved state is bound to). */
  version: string;
  /** What a newer hypervisor would add on this host, for `cove doctor`; empty when nothing. */
  upgradeNote: string;
}

export interface VmPids {
  qemu: number;
  /** null when the spec had no virtio-fs share. */
  virtiofsd: number | null;
  /** null when the VM uses qemu's built-in user networking instead of passt. */
  passt: number | null;
}

export interface StopOptions {
  /** How long to wait for the VM to exit after a polite quit, before SIGTERM then SIGKILL. */
  timeoutMs?: number;
}

export interface SaveOptions {
  /** Leave RAM that is a shared memory file out of the state (a template). */
  skipSharedMemory: boolean;
}

export interface SaveResult {
  bytes: number;
  seconds: number;
}

export interface RestoreOptions {
  /** The state file written by `save`. */
  stateFile: string;
  /** The state was saved with `skipSharedMemory` (RAM comes from the spec's memory file). */
  skipSharedMemory: boolean;
  /** Deadline for loading the state. */
  timeoutMs?: number;
  /** Runs after the state is loaded and before the VM runs; throwing stops the VM instead. */
  beforeRun?: () => Promise<void>;
}

export interface Driver {
  readonly features: DriverFeatures;
  /**
   * Makes the VM's disk: a copy-on-write overlay over `base` of `sizeBytes`. Idempotent: an
   * existing disk is kept as it is (it holds the sandbox's Docker data).
   */
  create(spec: VmSpec, base: { file: string; format: 'raw' | 'qcow2' }, sizeBytes: number): Promise<{ created: boolean }>;
  /**
   * Boots the VM; resolves once the hypervisor runs (the guest is still booting). Idempotent: a
   * VM already running from `spec.dir` is returned as it is.
   */
  start(spec: VmSpec): Promise<VmPids>;
  /** Starts the VM from a saved state instead of booting it; resolves when the guest runs again. */
  restore(spec: VmSpec, opts: RestoreOptions): Promise<VmPids>;
  /** Stops the vCPUs; the VM keeps its memory and devices. */
  pause(dir: string): Promise<void>;
  resume(dir: string): Promise<void>;
  /** Why the VM cannot be saved right now (empty when it can), as the hypervisor says it. */
  saveBlockers(dir: string): Promise<string[]>;
  /** Saves a paused VM's state to `stateFile`; the VM stays paused. */
  save(dir: string, stateFile: string, opts: SaveOptions): Promise<SaveResult>;
  /**
   * Ends the VM's processes: a polite quit, then SIGTERM, then SIGKILL, each with a deadline; then
   * its helpers. Safe on a stopped VM, and on recorded pids that now belong to someone else.
   */
  stop(dir: string, opts?: StopOptions): Promise<void>;
  /**
   * Makes host 127.0.0.1:`hostPort` reach the guest's `guestPort` on the forwarding NIC (a VM whose
   * spec has `forwardNic`); rejects when the host port cannot be bound. Only the host side exists
   * after this: whether the guest answers is the guest's business. Ends with the VM.
   */
  forwardPort(dir: string, hostPort: number, guestPort: number): Promise<void>;
  /** Undoes `forwardPort` (open connections stay); resolves also when there was no such forward. */
  unforwardPort(dir: string, hostPort: number): Promise<void>;
  /** The VM's live pids, read from its folder (null where a process is gone). */
  pids(dir: string): { qemu: number | null; virtiofsd: number | null; passt: number | null };
}
