// The one place where Cove's state on disk is named. Every file and folder under $COVE_HOME is a
// constant or a function here; docs/layout.md says the same for humans. It is part of the contract
// because coved, the CLI and the extension all find coved's socket and a sandbox's files here; the
// paths inside the guest are in guest.ts. Socket paths are kept short
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
  /** Short-lived VM folders with short socket paths: a template's VM while it is being made. */
  run: 'run',
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
  /** The image's own Docker CLI plugins (docker-compose, docker-buildx), for a host that lacks them. */
  cliPlugins: 'cli-plugins',
  /** Versions, sizes, checksums and the recipe hash. Written last: its presence marks a complete image. */
  manifest: 'manifest.json',
  /** The image build's log. */
  buildLog: 'build.log',
  /** Warm-start templates, one folder per machine shape (see TEMPLATE). */
  templates: 'templates',
} as const;

/**
 * Files inside `images/<tier>-<hash>/templates/<key>-<serial>/`: one docker-ready VM, saved once
 * and restored by every new sandbox of that shape (docs/warm-start.md). Never written after it is
 * complete: sandboxes' disks are overlays over its disk, and their RAM maps its RAM file.
 */
export const TEMPLATE = {
  /** What the template is bound to and how it was made. Written last: its presence marks it complete. */
  manifest: 'template.json',
  /** The saved device and CPU state (guest RAM is not in it: it is the RAM file). */
  state: 'vmstate',
  /** Guest RAM: clones map it copy-on-write. */
  ram: 'ram',
  /** The frozen disk (a qcow2 over the image's base disk); clones' disks are overlays over it. */
  disk: 'disk.qcow2',
  /** The template's config disk: its own identity, no workspace mounted. */
  configDisk: 'cfg.raw',
  /** Present when a restore from this template failed: no new sandbox uses it. */
  bad: 'bad',
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
  /** A sleeping sandbox's saved VM state, and what it is bound to (sleep.json, written last). */
  sleepState: 'sleep.vmstate',
  sleepManifest: 'sleep.json',
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
  /** The data channel: qemu's end of the second virtio-serial port (agent/PROTOCOL.md, "The data channel"). */
  dataSock: 'data.sock',
  /** qemu's end of the stdin port: one `cove exec` command's stdin at a time (coved/exec-relay.ts). */
  stdinSock: 'stdin.sock',
  /** virtiofsd's vhost-user socket. */
  virtiofsSock: 'vfs.sock',
  /** The Docker socket on the host: each connection is one SSH streamlocal channel to the guest. */
  dockerSock: 'docker.sock',
  /** An SSH endpoint for any SSH client: each connection reaches the agent's SSH server. */
  sshSock: 'ssh.sock',
  /** `cove exec` without a terminal: HTTP/2 exec streams relayed to the data channel (coved/exec-relay.ts). */
  execSock: 'exec.sock',
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
