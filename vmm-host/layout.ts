// The one place where Cove's state on disk is named. Every file and folder under $COVE_HOME is a
// constant or a function here; docs/layout.md says the same for humans. Socket paths are kept short
// on purpose: a unix socket path is limited to 108 bytes on Linux (104 on macOS).
import * as os from 'node:os';
import * as path from 'node:path';

/** The root of all state: `$COVE_HOME`, else `~/.local/share/cove`. */
export function coveHome(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env.COVE_HOME;
  if (fromEnv && fromEnv.trim() !== '') return path.resolve(fromEnv);
  return path.join(os.homedir(), '.local', 'share', 'cove');
}

/** Files directly under $COVE_HOME. */
export const HOME = {
  /** coved's JSON-RPC-over-WebSocket socket (mode 0600). */
  covedSock: 'coved.sock',
  /** coved's pid file; also the lock that keeps one coved per user. */
  covedPid: 'coved.pid',
  /** coved's human log. */
  covedLog: 'coved.log',
  /** coved's JSON-lines event log. */
  covedEvents: 'coved.events.jsonl',
  /** The cached result of the KVM probe. */
  accelCache: 'accel.json',
  /** Built images, one folder each. */
  images: 'images',
  /** Sandboxes, one folder each. */
  vms: 'vms',
  /** Build caches (the debootstrapped root filesystem, downloaded kernel packages). */
  cache: 'cache',
  /** Lock files for cross-process operations (image build). */
  locks: 'locks',
} as const;

/** Files inside `images/<tier>-<hash>/`. */
export const IMAGE = {
  /** Uncompressed kernel (ELF with a PVH note) when it could be cut out, else the bzImage. */
  kernel: 'vmlinux',
  /** The kernel's configuration, as shipped by the kernel package. */
  kernelConfig: 'kernel.config',
  /** The initramfs: busybox plus the modules needed to find and mount the root disk. */
  initrd: 'initrd.img',
  /** The read-only base disk (raw ext4) that every sandbox overlays copy-on-write. */
  baseDisk: 'base.raw',
  /** Versions, sizes, checksums and the recipe hash. Written last: its presence marks a complete image. */
  manifest: 'manifest.json',
  /** The image build's log. */
  buildLog: 'build.log',
} as const;

/** Files inside `vms/<name>/`. */
export const VM = {
  /** The sandbox's configuration (cove's own JSON). */
  config: 'config.json',
  /** Runtime state written by coved: pids, accel, mount type, forwarded ports. */
  state: 'state.json',
  /** The sandbox's disk: a qcow2 overlay over the image's base disk. Docker data lives here. */
  disk: 'disk.qcow2',
  /** The per-boot configuration disk the guest reads (raw; magic `COVECFG1`). */
  configDisk: 'cfg.raw',
  /** The serial console of the guest. */
  consoleLog: 'console.log',
  /** qemu's own stderr. */
  qemuLog: 'qemu.log',
  /** virtiofsd's stderr. */
  virtiofsdLog: 'virtiofsd.log',
  /** passt's output (user-mode networking that keeps the host's loopback out of reach). */
  passtLog: 'passt.log',
  passtPid: 'passt.pid',
  /** passt's end of the guest network (qemu's `-netdev stream`). */
  netSock: 'net.sock',
  qemuPid: 'qemu.pid',
  virtiofsdPid: 'virtiofsd.pid',
  /** QMP control socket of qemu. */
  qmpSock: 'qmp.sock',
  /** The agent channel: qemu's end of the virtio-serial port. */
  agentSock: 'agent.sock',
  /** virtiofsd's vhost-user socket. */
  virtiofsSock: 'vfs.sock',
  /** The Docker socket on the host: each connection is one SSH streamlocal channel to the guest. */
  dockerSock: 'docker.sock',
  /** An SSH endpoint for any SSH client: each connection reaches the agent's SSH server. */
  sshSock: 'ssh.sock',
  /** The client key that coved and the CLI use to reach the agent. */
  clientKey: 'id_ed25519',
  clientPubKey: 'id_ed25519.pub',
  /** The guest's SSH host key (private; handed to the guest in the config disk). */
  hostKey: 'host_ed25519',
  /** The pinned public host key, in known_hosts form. */
  knownHosts: 'known_hosts',
  /** An OpenSSH config that reaches the sandbox through ssh.sock. */
  sshConfig: 'ssh_config',
} as const;

/** Paths inside the guest. */
export const GUEST = {
  /** The Docker socket dockerd listens on. */
  dockerSock: '/var/run/docker.sock',
  /** The agent's unix socket (the same SSH service as on the agent channel). */
  agentSock: '/run/cove/agent.sock',
  /** The config the init copied off the config disk. */
  config: '/run/cove/config.json',
  /** Written by the agent when dockerd answers /_ping. */
  readyMarker: '/run/cove/ready',
  /** The virtio-serial port name of the agent channel. */
  agentPortName: 'cove.agent',
  /** The mount tag of the workspace share (virtio-fs and 9p alike). */
  workspaceTag: 'cove-ws',
  /** The guest script that shuts the sandbox down cleanly. */
  poweroff: '/usr/sbin/cove-poweroff',
} as const;

export function imagesDir(home = coveHome()): string {
  return path.join(home, HOME.images);
}
export function imageDir(tier: string, hash: string, home = coveHome()): string {
  return path.join(imagesDir(home), `${tier}-${hash}`);
}
export function vmsDir(home = coveHome()): string {
  return path.join(home, HOME.vms);
}
export function vmDir(name: string, home = coveHome()): string {
  return path.join(vmsDir(home), name);
}
export function vmFile(name: string, file: keyof typeof VM, home = coveHome()): string {
  return path.join(vmDir(name, home), VM[file]);
}
export function homeFile(file: keyof typeof HOME, home = coveHome()): string {
  return path.join(home, HOME[file]);
}

/** The Docker context a sandbox gets on the host. */
export function contextName(vmName: string): string {
  return `cove-${vmName}`;
}
