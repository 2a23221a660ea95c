// The hypervisor driver interface. QEMU microvm is the first driver (qemu.ts); Firecracker and
// Cloud Hypervisor would be others. A driver starts a VM from a spec and hands back pids; the
// processes outlive the caller, so a restarted coved re-attaches by pid file.
import type { Accel } from './accel';
import type { QemuSpec } from './qemu';

export interface DriverFeatures {
  name: string;
  accel: Accel;
  /** The host has /dev/vhost-vsock (an agent channel over vsock is possible). */
  vsock: boolean;
  /** A virtiofsd is installed (virtio-fs workspace mounts are possible). */
  virtiofs: boolean;
  '9p': boolean;
}

export interface VmPids {
  qemu: number;
  /** null when the spec had no virtio-fs mount. */
  virtiofsd: number | null;
  /** null when the VM uses qemu's built-in user networking instead of passt. */
  passt: number | null;
}

export interface StopOptions {
  /** How long to wait for the VM to exit after QMP quit before SIGTERM/SIGKILL. Default 10 s. */
  timeoutMs?: number;
  qmpTimeoutMs?: number;
}

export interface Driver {
  readonly features: DriverFeatures;
  /** Starts the VM; resolves once the hypervisor is running (the guest is still booting). */
  start(spec: QemuSpec): Promise<VmPids>;
  /** Stops the VM's processes; resolves when they are gone. Idempotent: a stopped VM is fine. */
  stop(vmDir: string, opts?: StopOptions): Promise<void>;
  isRunning(pid: number | null): boolean;
}
